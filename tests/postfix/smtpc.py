#!/usr/bin/env python3
"""smtpc.py - a small SMTP AUTH client for tests/postfix/run.sh.

  smtpc.py PORT ATTEMPT...

Each ATTEMPT is SRC,MECH,USER,PASSWORD[,RCPT]: a new connection to
127.0.0.1:PORT from the loopback address SRC (every 127/8 address is this
host, so each is a real, distinct TCP source), EHLO, AUTH MECH as USER
with PASSWORD. With RCPT, an authenticated session then sends one mail
to RCPT. Prints one line per attempt: the AUTH reply code and, for a
mail, "sent" and the reply to the end of data; "error TEXT" when the
connection failed. Every wait is bounded (10 s a step).
"""
import base64
import smtplib
import sys


def attempt(port, src, mech, user, pw, rcpt):
    s = smtplib.SMTP(timeout=10, source_address=(src, 0))
    try:
        s.connect("127.0.0.1", port)
        s.ehlo("client.test")
        if mech == "PLAIN":
            code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(
                ("\0%s\0%s" % (user, pw)).encode()).decode())
        elif mech == "LOGIN":
            code, _ = s.docmd("AUTH", "LOGIN " + base64.b64encode(user.encode()).decode())
            if code == 334:
                code, _ = s.docmd(base64.b64encode(pw.encode()).decode())
        else:
            raise ValueError("mechanism " + mech)
        out = str(code)
        if code == 235 and rcpt:
            s.mail("%s@mail.test" % user)
            rc, _ = s.rcpt(rcpt)
            if rc != 250:
                return out + " rcpt %d" % rc
            dc, dm = s.data(b"Subject: authguard test\r\n\r\nrelayed through AUTH\r\n")
            out += " sent %d %s" % (dc, dm.decode(errors="replace").replace(" ", "_"))
        return out
    finally:
        try:
            s.quit()
        except Exception:
            s.close()


def main():
    port = int(sys.argv[1])
    for a in sys.argv[2:]:
        f = a.split(",")
        src, mech, user, pw = f[:4]
        rcpt = f[4] if len(f) > 4 else None
        try:
            print(attempt(port, src, mech, user, pw, rcpt), flush=True)
        except Exception as e:  # noqa: BLE001 - the test reads the line
            print("error %s" % str(e).replace("\n", " "), flush=True)


main()
