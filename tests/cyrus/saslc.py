#!/usr/bin/env python3
"""saslc - an IMAP and POP3 client (Python's imaplib and poplib) for the
Cyrus imapd test.

One connection per attempt, from a chosen loopback source address (Linux
lets a socket bind any address of 127.0.0.0/8, so one client plays many
attackers and the mailboxes' owners; Cyrus gives libsasl2 the address it
sees, and the guard takes it from there).

As a program it reads requests on stdin, one per line, tab-separated:

    PROTO <TAB> METHOD <TAB> SRC <TAB> USER <TAB> PASSWORD

    PROTO   imap or pop3
    METHOD  PLAIN: a SASL mechanism (IMAP AUTHENTICATE PLAIN, POP3 AUTH
            PLAIN with the initial response): the wrapped mechanism path
            LOGIN: IMAP LOGIN, or POP3 USER + PASS: libsasl2's
            sasl_checkpass(), the canonuser path
    SRC     the client's source address (127.x.y.z)

and answers each with one line on stdout, flushed at once:

    STATUS MS

STATUS is OK, NO (the server refused: IMAP NO, POP3 -ERR), BAD, or
ERR-<what> (no connection, no greeting, timeout, connection closed); MS
is the authentication's round trip in milliseconds (integer).

    saslc.py IMAP_PORT POP3_PORT [TIMEOUT_SECONDS]
"""
import base64
import imaplib
import poplib
import socket
import sys
import time

HOST = "127.0.0.1"


class IMAP(imaplib.IMAP4):
    def __init__(self, src, port, timeout):
        self.src = src
        super().__init__(HOST, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0))


class POP3(poplib.POP3):
    def __init__(self, src, port, timeout):
        self.src = src
        super().__init__(HOST, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0))


def plain(user, password):
    return ("\0%s\0%s" % (user, password)).encode()


def imap(port, method, src, user, password, timeout):
    try:
        conn = IMAP(src, port, timeout)
    except socket.timeout:
        return "ERR-greeting-timeout", 0.0
    except (OSError, imaplib.IMAP4.error):
        return "ERR-connect", 0.0
    t0 = time.monotonic()
    try:
        try:
            if method == "PLAIN":
                conn.authenticate("PLAIN", lambda _: plain(user, password))
            else:
                conn.login(user, password)
            status = "OK"
        except imaplib.IMAP4.abort:
            status = "ERR-closed"
        except imaplib.IMAP4.error as e:
            status = "BAD" if "command error" in str(e) else "NO"
        return status, time.monotonic() - t0
    except socket.timeout:
        return "ERR-timeout", time.monotonic() - t0
    except OSError:
        return "ERR-closed", time.monotonic() - t0
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def pop3(port, method, src, user, password, timeout):
    try:
        conn = POP3(src, port, timeout)
    except socket.timeout:
        return "ERR-greeting-timeout", 0.0
    except (OSError, poplib.error_proto):
        return "ERR-connect", 0.0
    t0 = time.monotonic()
    try:
        try:
            if method == "PLAIN":
                conn._shortcmd("AUTH PLAIN " + base64.b64encode(plain(user, password)).decode())
            else:
                conn.user(user)
                conn.pass_(password)
            status = "OK"
        except poplib.error_proto as e:
            status = "NO" if str(e).startswith("b'-ERR") else "ERR-proto"
        return status, time.monotonic() - t0
    except socket.timeout:
        return "ERR-timeout", time.monotonic() - t0
    except OSError:
        return "ERR-closed", time.monotonic() - t0
    finally:
        try:
            conn.quit()
        except (OSError, poplib.error_proto):
            pass


def main():
    if len(sys.argv) not in (3, 4):
        sys.stderr.write("usage: saslc.py IMAP_PORT POP3_PORT [TIMEOUT_SECONDS] < requests\n")
        return 2
    ports = {"imap": int(sys.argv[1]), "pop3": int(sys.argv[2])}
    timeout = float(sys.argv[3]) if len(sys.argv) == 4 else 10.0
    for line in sys.stdin:
        f = line.rstrip("\n").split("\t")
        if len(f) != 5 or f[0] not in ports or f[1] not in ("PLAIN", "LOGIN"):
            print("ERR-request 0", flush=True)
            continue
        fn = imap if f[0] == "imap" else pop3
        status, secs = fn(ports[f[0]], f[1], f[2], f[3], f[4], timeout)
        print("%s %d" % (status, int(secs * 1000)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
