#!/usr/bin/env python3
"""loginmany - many IMAP LOGINs inside one connection (issue 12: "30 failed
LOGINs inside one connection, the same"), for tests/cyrus/watch.sh.

    loginmany.py PORT SRC USER LOG PASSWORD...

Connects from SRC (a 127.x.y.z address), then sends one LOGIN per
PASSWORD on that one connection. After each, it waits (at most 10 s)
until the attempt log LOG has one more attempt line than before, so the
guard has the outcome before the next try, as authguard-watch would have
it a few milliseconds later. Prints one "STATUS MS" line per LOGIN
(STATUS: OK, NO, BAD, ERR-...; MS: the LOGIN's round trip).
"""
import imaplib
import socket
import sys
import time


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for l in f if l.startswith(b"time="))
    except OSError:
        return 0


class IMAP(imaplib.IMAP4):
    def __init__(self, src, port):
        self.src = src
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0))


def main():
    if len(sys.argv) < 6:
        sys.stderr.write(__doc__)
        return 2
    port, src, user, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    try:
        conn = IMAP(src, port)
    except (OSError, imaplib.IMAP4.error):
        print("ERR-connect 0", flush=True)
        return 1
    for pw in sys.argv[5:]:
        before = lines(log)
        t0 = time.monotonic()
        try:
            conn.login(user, pw)
            status = "OK"
        except imaplib.IMAP4.abort:
            status = "ERR-closed"
        except imaplib.IMAP4.error as e:
            status = "BAD" if "command error" in str(e) else "NO"
        except OSError:
            status = "ERR-closed"
        ms = int((time.monotonic() - t0) * 1000)
        end = time.monotonic() + 10
        while lines(log) <= before and time.monotonic() < end:
            time.sleep(0.01)
        print("%s %d" % (status, ms), flush=True)
        if status != "NO":
            break
    try:
        conn.logout()
    except (OSError, imaplib.IMAP4.error):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
