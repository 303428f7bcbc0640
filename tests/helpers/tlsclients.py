#!/usr/bin/env python3
"""TLS visitors for the zero-failure load test.

Runs N client processes until STOPFILE exists (or --seconds pass). Each one loops: a new TCP
connection to the next of the targets (each process goes round them all, starting at its own), a full TLS handshake (no
certificate check: the lab's web server is self-signed), `GET / HTTP/1.1` with
`Connection: close`, and reads to EOF. A request counts as good only when the response is
complete: status 200 and the body the server sends (--expect). Anything else - refused, reset,
timed out, a handshake that fails, a TLS session that ends with no or a partial response - is a
failure, logged with the wall-clock time and the client's local port (to match it with the
proxy's log and the conntrack table).

Prints one summary line "requests N failed M seconds S" and, per failure, a line
"FAIL <time> <target> <local port> <what>". Exit status 1 when anything failed.
"""
import argparse
import multiprocessing
import os
import socket
import ssl
import sys
import time

from lab import parse_addrs, recv_all


def client(idx, args, queue):
    targets = parse_addrs(args.targets)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    expect = args.expect.encode()
    ok = 0
    fails = []
    deadline = time.monotonic() + args.seconds
    n = idx
    while time.monotonic() < deadline and not os.path.exists(args.stopfile):
        host, port = targets[n % len(targets)]
        n += 1
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        request = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()
        what = None
        lport = 0
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        try:
            s.connect((host, port))
            lport = s.getsockname()[1]
            with ctx.wrap_socket(s, server_hostname=None) as t:
                t.sendall(request)
                data = recv_all(t, 65536)
            head, _, body = data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                what = "response %r" % head[:40]
            elif body != expect:
                what = "body %r" % body[:40]
        except (OSError, ssl.SSLError) as e:
            what = "%s: %s" % (type(e).__name__, e)
            try:
                lport = lport or s.getsockname()[1]  # a refused connect keeps its port
            except OSError:
                pass
        finally:
            s.close()
        if what is None:
            ok += 1
        else:
            fails.append("FAIL %.3f %s:%d %d %s" % (time.time(), host, port, lport, what))
    queue.put((ok, fails))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", required=True, help="ADDR:PORT[,ADDR:PORT...]")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--stopfile", required=True)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--expect", default="ok\n", help="the response body")
    args = ap.parse_args()
    queue = multiprocessing.Queue()
    t0 = time.monotonic()
    procs = [multiprocessing.Process(target=client, args=(i, args, queue))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    secs = time.monotonic() - t0
    ok = sum(r[0] for r in results)
    fails = sorted(f for r in results for f in r[1])
    print("requests %d failed %d seconds %.1f" % (ok + len(fails), len(fails), secs))
    for f in fails:
        print(f)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
