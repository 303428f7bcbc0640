#!/usr/bin/env python3
"""Slowloris holder for the integration tests (python3 stdlib only).

Opens N connections to ADDR:PORT, sends the first 3 bytes of a TLS handshake record on each
(never the rest) and keeps them open. Once every connection is open and its 3 bytes sent it
prints `held N` (and writes N into --ready); it then waits --duration seconds (or until
killed) and prints how many connections the server closed meanwhile. Exit 1 when not every
connection could be opened.
"""

import argparse
import asyncio
import resource
import sys

from lab import parse_addr


async def run(args):
	host, port = args.connect
	sem = asyncio.Semaphore(args.parallel)
	conns = []
	failures = []

	async def one(i):
		async with sem:
			try:
				conn = asyncio.open_connection(host, port)
				r, w = await asyncio.wait_for(conn, 10)
				w.write(b"\x16\x03\x01")
				await w.drain()
				conns.append((r, w))
			except (OSError, asyncio.TimeoutError) as e:
				failures.append("%d: %r" % (i, e))

	await asyncio.gather(*(one(i) for i in range(args.count)))
	if failures:
		print("holder: %d of %d connections failed, first: %s"
			% (len(failures), args.count, failures[0]), file=sys.stderr)
	print("held %d" % len(conns), flush=True)
	if args.ready:
		with open(args.ready, "w") as f:
			f.write("%d\n" % len(conns))

	closed = 0

	async def watch(r):
		nonlocal closed
		try:
			await r.read(1)
		except OSError:
			pass
		closed += 1

	watchers = [asyncio.ensure_future(watch(r)) for r, _ in conns]
	await asyncio.sleep(args.duration)
	print("closed_by_server %d" % closed, flush=True)
	for t in watchers:
		t.cancel()
	for _, w in conns:
		w.close()
	return 1 if failures else 0


def main():
	p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	p.add_argument("--connect", type=parse_addr, required=True)
	p.add_argument("--count", type=int, default=2000)
	p.add_argument("--parallel", type=int, default=200, help="connects in flight at once")
	p.add_argument("--duration", type=float, default=60)
	p.add_argument("--ready", help="file written once every connection is held")
	args = p.parse_args()
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	want = args.count + 64
	if soft < want:
		resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
	try:
		return asyncio.run(run(args))
	except KeyboardInterrupt:
		return 0


if __name__ == "__main__":
	sys.exit(main())
