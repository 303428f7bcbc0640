#!/usr/bin/env python3
"""New-connection churn for the zero-downtime test.

serve: a backend that answers every connection with a banner naming itself and the number of
       bytes it received, once it holds one whole TLS record (the captured ClientHellos are one
       record each), then closes.
run:   opens new connections at a fixed rate to each target until STOPFILE exists, sends a
       captured ClientHello (alternating an ACME one and a web one), and checks the answer:
       a web hello must always reach the web backend; an ACME hello reaches the ACME backend
       while the redirect is on and the web backend while it is off. Anything else - refused,
       reset, timed out, a wrong or missing banner - is a failure. Prints counts and exits 1
       when anything failed.
"""
import argparse
import asyncio
import os
import socket
import sys
import time

from lab import parse_addrs


async def serve(args):
    banner = args.banner.encode() + b"\n"
    answered = [0]

    async def handle(reader, writer):
        buf = b""
        try:
            while len(buf) < 5 or len(buf) < 5 + int.from_bytes(buf[3:5], "big"):
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                if not chunk:
                    break
                buf += chunk
            writer.write(banner + str(len(buf)).encode() + b"\n")
            await writer.drain()
            answered[0] += 1
            if args.count_file:
                with open(args.count_file + ".tmp", "w") as f:
                    f.write(str(answered[0]))
                os.replace(args.count_file + ".tmp", args.count_file)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    if args.host == "::":
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    server = await asyncio.start_server(handle, sock=sock, backlog=4096)
    if args.ready:
        open(args.ready, "w").close()
    async with server:
        await server.serve_forever()


async def run(args):
    hellos = [("acme", open(args.acme_hello, "rb").read()),
              ("web", open(args.web_hello, "rb").read())]
    targets = parse_addrs(args.targets)
    stats = {"ok": 0, "acme_on_web": 0}
    failures = {}
    tasks = set()

    def fail(kind, detail, t0=None):
        failures[kind] = failures.get(kind, 0) + 1
        if sum(failures.values()) <= 20:
            when = f" (started at {t0:.3f})" if t0 is not None else ""
            print(f"failure at {time.time():.3f}{when}: {kind}: {detail}", file=sys.stderr,
                  flush=True)

    async def one(host, port, kind, hello):
        t0 = time.time()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), args.timeout)
        except ConnectionRefusedError:
            return fail("refused", f"{host}:{port}")
        except asyncio.TimeoutError:
            return fail("connect-timeout", f"{host}:{port}")
        except OSError as e:
            return fail("connect-error", f"{host}:{port}: {e}")
        try:
            writer.write(hello)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), args.timeout)
        except asyncio.TimeoutError:
            return fail("answer-timeout", f"{host}:{port} {kind}", t0)
        except OSError as e:
            return fail("reset", f"{host}:{port} {kind}: {e}", t0)
        finally:
            writer.close()
        lines = answer.decode(errors="replace").split()
        if len(lines) != 2 or lines[1] != str(len(hello)):
            return fail("bad-answer", f"{host}:{port} {kind}: {answer!r}")
        who = lines[0]
        if who == kind.upper():
            stats["ok"] += 1
        elif kind == "acme" and who == "WEB":
            stats["acme_on_web"] += 1  # the redirect was off at that moment: fine
        else:
            fail("wrong-backend", f"{host}:{port} {kind} hello answered by {who}")

    interval = 1.0 / args.rate
    start = time.monotonic()
    n = 0
    while not os.path.exists(args.stopfile):
        if time.monotonic() - start > args.max_seconds:
            fail("max-seconds", "the stop file never appeared")
            break
        host, port = targets[n % len(targets)]
        kind, hello = hellos[(n // len(targets)) % 2]
        t = asyncio.ensure_future(one(host, port, kind, hello))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif n % 64 == 0:
            await asyncio.sleep(0)
    if tasks:
        await asyncio.wait(tasks)
    elapsed = time.monotonic() - start
    nfail = sum(failures.values())
    print(f"churn: {n} connections in {elapsed:.1f} s ({n / elapsed:.0f}/s): "
          f"{stats['ok']} routed by ALPN, {stats['acme_on_web']} ACME hellos answered by the "
          f"web server (redirect off), {nfail} failed {failures or ''}", flush=True)
    return 1 if nfail else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="::")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--banner", required=True)
    s.add_argument("--ready", help="create this file once listening")
    s.add_argument("--count-file", help="keep the number of answered connections here")
    r = sub.add_parser("run")
    r.add_argument("--targets", required=True)
    r.add_argument("--rate", type=float, default=600)
    r.add_argument("--acme-hello", required=True)
    r.add_argument("--web-hello", required=True)
    r.add_argument("--stopfile", required=True)
    r.add_argument("--timeout", type=float, default=5)
    r.add_argument("--max-seconds", type=float, default=600)
    a = p.parse_args()
    if a.cmd == "serve":
        asyncio.run(serve(a))
        return 0
    return asyncio.run(run(a))


if __name__ == "__main__":
    sys.exit(main())
