#!/usr/bin/env python3
"""Recording backend for the integration tests (python3 stdlib only).

Listens on one or more ADDR:PORT (use [::]:PORT for a dual-stack socket) and records every
byte each connection delivers into DIR/cSEQ.bin (created at accept, appended as bytes
arrive). When a connection ends, DIR/cSEQ.done is written with one line of JSON:
{"seq", "peer", "recv_bytes", "recv_sha256", "sent_bytes", "sent_sha256", "end", "mode"}.

How the backend behaves is read from DIR/mode at every accept, so that one backend process
can serve every test case (no restart, no port reuse race). The mode file holds one word,
optionally followed by an argument:
  on-eof [S]    (default) record until the client's EOF, then (after S seconds, default 0)
                send the banner and close. This is the half-close test as well: the client
                shut its write side and can still read the reply.
  on-hello      send the banner as soon as a whole TLS ClientHello (or, for data that is not
                a TLS handshake record, any data) has arrived; keep recording until EOF; close.
  after N       like on-hello, but after N bytes.
  shut-first    like on-hello, then shutdown(SHUT_WR) at once: the client sees EOF first and
                can still send; record until the client's EOF, then close.
  echo          send back every byte received; on EOF shut the write side and close.
  bulk N        send N pseudo-random bytes while receiving; neither side is stored, only
                counted and hashed (sha256) into the .done file; close once both are done.
  silent        record until EOF, close without sending anything.
The banner is NAME followed by a newline.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import socket
import sys

from lab import hello_walk, parse_addr


def hello_complete(buf):
	"""True once buf holds a whole ClientHello message (reassembled over TLS records),
	or when buf does not start like a TLS handshake record (anything then counts)."""
	return bool(buf) and hello_walk(buf)[3] in ("done", "other")


class Backend:
	def __init__(self, name, directory):
		self.name = name
		self.dir = directory
		self.seq = 0

	def mode(self):
		try:
			with open(os.path.join(self.dir, "mode")) as f:
				words = f.read().split()
		except FileNotFoundError:
			words = []
		return words or ["on-eof"]

	async def handle(self, reader, writer):
		self.seq += 1
		seq = self.seq
		mode = self.mode()
		peer = writer.get_extra_info("peername")
		base = os.path.join(self.dir, "c%05d" % seq)
		rec = open(base + ".bin", "wb")
		rhash = hashlib.sha256()
		shash = hashlib.sha256()
		got = bytearray()
		st = {"recv": 0, "sent": 0, "end": "fin", "replied": False}
		banner = (self.name + "\n").encode()

		def send(data):
			writer.write(data)
			shash.update(data)
			st["sent"] += len(data)

		async def bulk_sender(total):
			rnd = random.Random(seq)
			left = total
			while left > 0:
				chunk = rnd.randbytes(min(left, 1 << 18))
				send(chunk)
				left -= len(chunk)
				await writer.drain()
			# The client reads until EOF: our write side ends here.
			writer.write_eof()

		sender = None
		if mode[0] == "bulk":
			sender = asyncio.ensure_future(bulk_sender(int(mode[1])))
		try:
			while True:
				try:
					data = await reader.read(1 << 18)
				except ConnectionResetError:
					st["end"] = "reset"
					break
				if not data:
					break
				st["recv"] += len(data)
				rhash.update(data)
				if mode[0] == "bulk":
					continue
				rec.write(data)
				rec.flush()
				if mode[0] == "echo":
					send(data)
					await writer.drain()
					continue
				replies_early = mode[0] in ("on-hello", "shut-first", "after")
				if not st["replied"] and replies_early:
					got += data
					if mode[0] == "after":
						ready = len(got) >= int(mode[1])
					else:
						ready = hello_complete(got)
					if ready:
						st["replied"] = True
						send(banner)
						await writer.drain()
						if mode[0] == "shut-first":
							writer.write_eof()
			if sender is not None:
				await sender
			elif st["end"] == "fin":
				if mode[0] == "on-eof":
					if len(mode) > 1:
						await asyncio.sleep(float(mode[1]))
					send(banner)
				if mode[0] in ("on-eof", "echo", "on-hello", "after"):
					await writer.drain()
		except (ConnectionResetError, BrokenPipeError) as e:
			st["end"] = "error: %s" % e
		finally:
			rec.close()
			try:
				writer.close()
				await writer.wait_closed()
			except (ConnectionResetError, BrokenPipeError):
				pass
			meta = {"seq": seq, "peer": "%s:%s" % (peer[0], peer[1]),
				"mode": " ".join(mode), "end": st["end"],
				"recv_bytes": st["recv"], "recv_sha256": rhash.hexdigest(),
				"sent_bytes": st["sent"], "sent_sha256": shash.hexdigest()}
			tmp = base + ".done.tmp"
			with open(tmp, "w") as f:
				f.write(json.dumps(meta) + "\n")
			# Rename so that a test polling for .done never reads half a file.
			os.rename(tmp, base + ".done")


async def serve(args):
	be = Backend(args.name, args.dir)
	servers = []
	for host, port in args.listen:
		family = socket.AF_INET6 if ":" in host else socket.AF_INET
		s = socket.socket(family, socket.SOCK_STREAM)
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		if family == socket.AF_INET6:
			# [::] must take IPv4 too (the proxy's default fallback is 127.0.0.1:443).
			s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
		s.bind((host, port))
		s.listen(4096)
		# start_server listens again, with its own backlog (default 100): a burst of
		# connects from the proxy would overflow it and wait for SYN retransmits.
		srv = await asyncio.start_server(be.handle, sock=s, limit=1 << 20, backlog=4096)
		servers.append(srv)
	if args.ready:
		with open(args.ready, "w") as f:
			f.write("%d\n" % os.getpid())
	await asyncio.gather(*(srv.serve_forever() for srv in servers))


def main():
	p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	p.add_argument("--listen", type=parse_addr, action="append", required=True,
		help="ADDR:PORT or [ADDR]:PORT, repeatable")
	p.add_argument("--name", required=True, help="banner, e.g. ACME or WEB")
	p.add_argument("--dir", required=True, help="where the connections are recorded")
	p.add_argument("--ready", help="file written (with our pid) once every socket listens")
	args = p.parse_args()
	os.makedirs(args.dir, exist_ok=True)
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
	try:
		asyncio.run(serve(args))
	except KeyboardInterrupt:
		pass
	except OSError as e:
		print("backend %s: %s" % (args.name, e), file=sys.stderr)
		sys.exit(1)


if __name__ == "__main__":
	main()
