#!/usr/bin/env python3
"""Idle relayed connections for tools/bench/run (python3 stdlib only).

Opens N TCP connections to ADDR:PORT and sends on each the bytes of a captured ClientHello
(a whole one, so that a proxy in the path routes the connection and relays it), then waits
until the server's first bytes (its ServerHello) come back on every connection: only then is
each connection known to be relayed end to end. It then prints `held N` (and writes N into
--ready) and stays idle until killed, never sending anything more; on SIGTERM it reports how
many connections the server closed meanwhile, closes them all and exits.

Exit status 1 when not every connection reached the relayed state within --timeout seconds
(the reason is printed).
"""

import argparse
import asyncio
import resource
import signal
import sys


async def run(args, hello):
	sem = asyncio.Semaphore(args.parallel)
	conns = []
	failures = []
	closed = 0

	async def one(i):
		nonlocal closed
		async with sem:
			try:
				r, w = await asyncio.wait_for(
					asyncio.open_connection(args.host, args.port), args.timeout)
				w.write(hello)
				await w.drain()
				# The server's first bytes: the ServerHello came through the relay.
				first = await asyncio.wait_for(r.read(1), args.timeout)
				if not first:
					failures.append("%d: closed by the server before it answered" % i)
					w.close()
					return
				conns.append((r, w))
			except (OSError, asyncio.TimeoutError) as e:
				failures.append("%d: %r" % (i, e))

	loop = asyncio.get_running_loop()
	stop = asyncio.Event()
	for sig in (signal.SIGTERM, signal.SIGINT):
		loop.add_signal_handler(sig, stop.set)

	await asyncio.gather(*(one(i) for i in range(args.count)))
	if failures:
		print("idle: %d of %d connections did not get relayed, first: %s"
		      % (len(failures), args.count, failures[0]), file=sys.stderr, flush=True)
		for _, w in conns:
			w.close()
		return 1
	print("held %d" % len(conns), flush=True)
	if args.ready:
		with open(args.ready, "w") as f:
			f.write("%d\n" % len(conns))

	async def watch(r):
		nonlocal closed
		try:
			while await r.read(65536):
				pass
		except OSError:
			pass
		closed += 1

	watchers = [asyncio.ensure_future(watch(r)) for r, _ in conns]
	await stop.wait()
	print("closed_by_server %d" % closed, flush=True)
	for t in watchers:
		t.cancel()
	for _, w in conns:
		w.close()
	return 0


def main():
	p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	p.add_argument("--host", required=True)
	p.add_argument("--port", type=int, default=443)
	p.add_argument("--hello", required=True, help="file with a captured ClientHello")
	p.add_argument("--count", type=int, default=10000)
	p.add_argument("--parallel", type=int, default=256, help="connects in flight at once")
	p.add_argument("--timeout", type=float, default=60)
	p.add_argument("--ready", help="file written once every connection is relayed")
	args = p.parse_args()
	with open(args.hello, "rb") as f:
		hello = f.read()
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	want = args.count + 64
	if soft < want:
		resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, want), max(hard, want)))
	return asyncio.run(run(args, hello))


if __name__ == "__main__":
	sys.exit(main())
