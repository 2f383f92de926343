#!/usr/bin/env python3
"""imapc - an IMAP client (Python's imaplib) for the Dovecot tests and benchmarks.

One connection per login: greeting, ID ("x-originating-ip" ADDR) so that
Dovecot (which trusts the loopback through login_trusted_networks) sees the
claimed client address, LOGIN, LOGOUT.

As a program it reads requests on stdin, one per line, tab-separated:

    ADDR <TAB> USER <TAB> PASSWORD

and answers each with one line on stdout, flushed at once:

    STATUS MS

STATUS is OK or NO (the LOGIN reply), BAD, or ERR-<what> (no connection, no
greeting, ID refused, timeout, connection closed); MS is the LOGIN round trip
in milliseconds (integer). A connection that failed before the LOGIN is
tried again, twice at most (reported on stderr: nothing was attempted). Used as a bash coprocess by run.sh, so one Python
start serves a whole run.

    imapc.py PORT [TIMEOUT_SECONDS]
"""
import imaplib
import socket
import sys
import time

HOST = "127.0.0.1"


def login(port, addr, user, password, timeout=10.0):
    """One login as ADDR. Returns (status, seconds the LOGIN took)."""
    try:
        conn = imaplib.IMAP4(HOST, port, timeout=timeout)
    except socket.timeout:
        return "ERR-greeting-timeout", 0.0
    except (OSError, imaplib.IMAP4.error):
        return "ERR-connect", 0.0
    elapsed = 0.0
    try:
        try:
            typ, _ = conn.xatom("ID", '("x-originating-ip" "%s")' % addr)
        except imaplib.IMAP4.error:
            typ = "BAD"
        if typ != "OK":
            return "ERR-ID-%s" % typ, 0.0
        t0 = time.monotonic()
        try:
            conn.login(user, password)
            status = "OK"
        except imaplib.IMAP4.abort:
            status = "ERR-closed"
        except imaplib.IMAP4.error as e:
            # imaplib raises on both; a BAD reply says "command error"
            status = "BAD" if "command error" in str(e) else "NO"
        elapsed = time.monotonic() - t0
        return status, elapsed
    except socket.timeout:
        return "ERR-timeout", elapsed
    except (OSError, imaplib.IMAP4.abort):
        return "ERR-closed", elapsed
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def login_retry(port, addr, user, password, timeout=10.0, tries=3):
    """login(), tried again (up to TRIES in all) when the server never got
    as far as the LOGIN: no connection, no greeting, ID not answered. On a
    loaded machine a fresh imap-login process can wait seconds for Dovecot's
    auth process before it greets. Nothing was attempted, so nothing is
    counted twice; each retry is reported on stderr."""
    for n in range(tries):
        status, secs = login(port, addr, user, password, timeout)
        if not status.startswith(("ERR-connect", "ERR-greeting", "ERR-ID")):
            break
        sys.stderr.write("imapc: [%s] %s: %s, try %d of %d\n" % (addr, user, status, n + 1, tries))
        time.sleep(0.2)
    return status, secs


def main():
    if len(sys.argv) not in (2, 3):
        sys.stderr.write("usage: imapc.py PORT [TIMEOUT_SECONDS] < requests\n")
        return 2
    port = int(sys.argv[1])
    timeout = float(sys.argv[2]) if len(sys.argv) == 3 else 10.0
    for line in sys.stdin:
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 3:
            print("ERR-request 0", flush=True)
            continue
        status, secs = login_retry(port, fields[0], fields[1], fields[2], timeout)
        print("%s %d" % (status, int(secs * 1000)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
