#!/usr/bin/env python3
"""imapload - attackers and owners against a Dovecot on loopback, for bench/dovecot.sh.

    imapload.py PORT SECONDS ATTACKERS MODE OWNERS MAILBOXES [OWNER_THREAD]

ATTACKERS threads log in with wrong passwords as fast as the server answers,
each connection claiming an address with ID x-originating-ip (tests/dovecot/
imapc.py). MODE says which address:

  botnet   a fresh address every attempt, one per /24 (10.x.y.1), guessing
           the MAILBOXES (m01.. and the owners' own mailboxes)
  fixed    each attacker keeps one address (172.16.<n>.9) and guesses the
           mailboxes in turn

One owner thread (unless OWNER_THREAD is 0) logs in with the right
password, one login after the other, in turn as o1..oOWNERS from each one's
home address (198.51.100.<k>). Prints one line of key=value figures:

  owner_ok owner_tried owner_p50_ms owner_p99_ms owner_max_ms owner_per_s
  attack_tried attack_per_s attack_no attack_err seconds

Latencies are of answered LOGINs (OK or NO); a connection that failed (an
ERR-... from imapc) counts as tried, not granted, and in *_err.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "dovecot"))
import imapc  # noqa: E402


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    if len(sys.argv) not in (7, 8):
        sys.stderr.write(__doc__)
        return 2
    port, seconds, attackers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    mode, owners, mailboxes = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
    owner_thread = len(sys.argv) < 8 or sys.argv[7] != "0"
    if mode not in ("botnet", "fixed"):
        sys.stderr.write("imapload: MODE is botnet or fixed\n")
        return 2
    boxes = ["o%d" % k for k in range(1, owners + 1)]
    boxes += ["m%02d" % k for k in range(1, max(0, mailboxes - owners) + 1)]
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    seq = [0]
    stats = {"tried": 0, "no": 0, "err": 0}
    owner_ms = []
    owner_ok = [0]
    owner_tried = [0]

    def attacker(n):
        i = 0
        while time.monotonic() < stop:
            with lock:
                seq[0] += 1
                k = seq[0]
            if mode == "botnet":
                addr = "10.%d.%d.1" % ((k >> 8) & 255, k & 255)
            else:
                addr = "172.16.%d.9" % n
            user = boxes[(k + n) % len(boxes)]
            status, _ = imapc.login(port, addr, user, "guess-%d" % i, 30.0)
            i += 1
            with lock:
                stats["tried"] += 1
                if status == "NO":
                    stats["no"] += 1
                elif status != "OK":
                    stats["err"] += 1

    def owner():
        k = 0
        while time.monotonic() < stop:
            u = k % owners + 1
            status, secs = imapc.login(port, "198.51.100.%d" % u, "o%d" % u, "pw-o%d" % u, 30.0)
            owner_tried[0] += 1
            if status in ("OK", "NO"):  # answered: its latency counts
                owner_ms.append(secs * 1000)
            if status == "OK":
                owner_ok[0] += 1
            k += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(1, attackers + 1)]
    if owners and owner_thread:
        threads.append(threading.Thread(target=owner))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    print("owner_ok=%d owner_tried=%d owner_p50_ms=%.1f owner_p99_ms=%.1f owner_max_ms=%.1f "
          "owner_per_s=%.1f attack_tried=%d attack_per_s=%.1f attack_no=%d attack_err=%d seconds=%.1f"
          % (owner_ok[0], owner_tried[0], percentile(owner_ms, 0.5), percentile(owner_ms, 0.99),
             max(owner_ms) if owner_ms else 0.0, owner_tried[0] / took,
             stats["tried"], stats["tried"] / took, stats["no"], stats["err"], took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
