#!/usr/bin/env python3
"""tests/sync/refuse_proxy.py - a loopback proxy in front of a real
redis-server that refuses chosen XADD commands as Redis does when it is
out of memory, and passes everything else through unchanged.

    refuse_proxy.py LISTEN_PORT REDIS_PORT N[,N...] PORT_FILE [M[,M...]]

The Nth XADD (counted over all connections, from 1) is answered with
Redis's OOM error and never reaches Redis; later ones go through. The Mth
reaches Redis, but its client's connection is closed before the reply
(and what it sent after it is dropped), as when a link is lost with a
batch on it. One
thread per client connection; each command is sent on and its whole reply
read back before the next one is looked at, so replies keep their order
under pipelining. Only what hiredis sends is understood (RESP arrays of
bulk strings); a client that sends anything else is dropped. The port it
listens on is written to PORT_FILE once it accepts connections.
"""
import socket
import sys
import threading

OOM = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        i = self.buf.index(b"\r\n")
        out, self.buf = self.buf[:i], self.buf[i + 2:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_command(c):
    """One client command: (its raw bytes, its arguments)."""
    head = c.line()
    if not head.startswith(b"*"):
        raise ValueError("not an array")
    raw, args = head + b"\r\n", []
    for _ in range(int(head[1:])):
        ln = c.line()
        if not ln.startswith(b"$"):
            raise ValueError("not a bulk string")
        body = c.exactly(int(ln[1:]) + 2)
        raw += ln + b"\r\n" + body
        args.append(body[:-2])
    return raw, args


def read_reply(c):
    """One whole RESP2 reply from Redis, as raw bytes."""
    ln = c.line()
    raw = ln + b"\r\n"
    kind = ln[:1]
    if kind == b"$" and int(ln[1:]) >= 0:
        raw += c.exactly(int(ln[1:]) + 2)
    elif kind == b"*" and int(ln[1:]) > 0:
        for _ in range(int(ln[1:])):
            raw += read_reply(c)
    return raw


lock = threading.Lock()
xadds = 0


def serve(client, redis_port, refuse, cut):
    global xadds
    up = socket.create_connection(("127.0.0.1", redis_port))
    cc, uc = Conn(client), Conn(up)
    try:
        while True:
            raw, args = read_command(cc)
            if args and args[0].upper() == b"XADD":
                with lock:
                    xadds += 1
                    n = xadds
                if n in refuse:
                    client.sendall(OOM)
                    continue
                if n in cut:
                    up.sendall(raw)
                    read_reply(uc)
                    raise EOFError
            up.sendall(raw)
            client.sendall(read_reply(uc))
    except (EOFError, ValueError, OSError):
        pass
    finally:
        client.close()
        up.close()


def main():
    listen_port, redis_port = int(sys.argv[1]), int(sys.argv[2])
    refuse = {int(x) for x in sys.argv[3].split(",") if x}
    cut = {int(x) for x in sys.argv[5].split(",") if x} if len(sys.argv) > 5 else set()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(16)
    with open(sys.argv[4], "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    while True:
        client, _ = srv.accept()
        threading.Thread(target=serve, args=(client, redis_port, refuse, cut),
                         daemon=True).start()


if __name__ == "__main__":
    main()
