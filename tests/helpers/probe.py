#!/usr/bin/env python3
"""Probe client for the integration tests (python3 stdlib only).

Connects to ADDR:PORT, sends a ClientHello (or any bytes) following a split plan, optionally
more data, half-closes, reads the reply until EOF and prints what happened as `key value`
lines on stdout:
  connect_ms, split (the send boundaries), sent, sent_sha256, reply_bytes, reply_sha256,
  reply (repr, shortened), end (fin|reset), elapsed_ms; local_port first
Exit status: 0 done (and --expect matched), 1 failure or timeout, 2 usage, 3 connection refused.

Split plans (--plan):
  whole          one send()
  bytes          one byte per send(), --delay seconds apart (default 0.0003)
  offsets:A,B    split at byte offsets A, B, ... (--delay default 0.05 between sends)
  alpn           split at three offsets inside the ALPN extension of the hello
  records:N      re-record the hello: the handshake message is cut into N TLS records, each
                 with its own record header; sent with one send()
  records:N+bytes / records:N+alpn   re-record, then split the new bytes byte by byte / in
                 the ALPN extension
TCP_NODELAY is on, so with a delay between them separate sends leave as separate segments.
"""

import argparse
import codecs
import hashlib
import os
import random
import socket
import struct
import sys
import threading
import time

from lab import HelloError, extensions_at, parse_addr, read_hello, rerecord


def unescape(text):
	"""'GET / HTTP/1.0\\r\\n\\r\\n' as typed in a shell script -> bytes"""
	return codecs.escape_decode(text.encode())[0]


def alpn_offsets(data):
	"""Three offsets in data (the wire bytes) that fall inside the ALPN extension: inside its
	type, inside the protocol list length, and in the middle of the protocol names."""
	_, hs, _, recs = read_hello(data)
	p, end = extensions_at(hs)
	p += 2
	while p + 4 <= end:
		etype = int.from_bytes(hs[p:p + 2], "big")
		elen = int.from_bytes(hs[p + 2:p + 4], "big")
		if etype == 16:
			hs_offs = [p + 1, p + 5, p + 4 + elen // 2 + 1]
			break
		p += 4 + elen
	else:
		raise HelloError("the hello has no ALPN extension")

	def wire(off):
		# handshake offset -> offset in data, through the record headers
		for _, start, rlen in recs:
			if off < rlen:
				return start + off
			off -= rlen
		raise HelloError("offset past the records")
	return sorted(set(wire(o) for o in hs_offs))


def rewrite_hello(data, protos=None, pad=0):
	"""Rewrite the hello: protos (a list of byte strings) replaces the ALPN list (empty: drop
	the extension; None: keep it); pad > 0 puts a padding extension (RFC 7685) of that many
	bytes in front of the others. Every length around is fixed. Returns one record (which may
	exceed 16 KiB: cut it with records:N)."""
	version, hs, used, _ = read_hello(data)
	p, end = extensions_at(hs)
	ext_start = p + 2
	out = []
	if pad:
		out.append((21).to_bytes(2, "big") + pad.to_bytes(2, "big") + bytes(pad))
	placed = False
	q = ext_start
	while q + 4 <= end:
		etype = int.from_bytes(hs[q:q + 2], "big")
		raw = hs[q:q + 4 + int.from_bytes(hs[q + 2:q + 4], "big")]
		q += len(raw)
		if etype == 16 and protos is not None:
			placed = True
			if not protos:
				continue
			lst = b"".join(len(x).to_bytes(1, "big") + x for x in protos)
			raw = (16).to_bytes(2, "big") + (len(lst) + 2).to_bytes(2, "big") + \
				len(lst).to_bytes(2, "big") + lst
		out.append(raw)
	if protos and not placed:
		raise HelloError("the hello has no ALPN extension to rewrite")
	ext_bytes = b"".join(out)
	body = hs[4:p] + len(ext_bytes).to_bytes(2, "big") + ext_bytes
	msg = hs[0:1] + len(body).to_bytes(3, "big") + body
	return b"\x16" + version + len(msg).to_bytes(2, "big") + msg + data[used:]


def plan_chunks(data, plan):
	"""-> list of byte strings to send one by one"""
	if plan.startswith("records:"):
		spec, _, rest = plan[len("records:"):].partition("+")
		data = rerecord(data, int(spec))
		plan = rest or "whole"
	if plan == "whole":
		return [data]
	if plan == "bytes":
		return [data[i:i + 1] for i in range(len(data))]
	if plan == "alpn":
		offs = alpn_offsets(data)
	elif plan.startswith("offsets:"):
		offs = sorted(int(x) for x in plan[len("offsets:"):].split(","))
	else:
		raise HelloError("unknown plan %r" % plan)
	chunks = []
	prev = 0
	for o in offs + [len(data)]:
		if o > prev:
			chunks.append(data[prev:o])
			prev = o
	return chunks


class Reader(threading.Thread):
	def __init__(self, sock, keep):
		super().__init__(daemon=True)
		self.sock = sock
		self.keep = keep
		self.hash = hashlib.sha256()
		self.count = 0
		self.head = bytearray()
		self.end = None
		self.error = None
		self.done_at = None

	def run(self):
		try:
			while True:
				data = self.sock.recv(1 << 18)
				if not data:
					self.end = "fin"
					break
				self.count += len(data)
				self.hash.update(data)
				if len(self.head) < self.keep:
					self.head += data[:self.keep - len(self.head)]
		except ConnectionResetError:
			self.end = "reset"
		except OSError as e:
			self.error = str(e)
		self.done_at = time.monotonic()


def main():
	p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	p.add_argument("--connect", type=parse_addr, required=True)
	src = p.add_mutually_exclusive_group()
	src.add_argument("--file", help="bytes to send (a captured ClientHello)")
	src.add_argument("--data", help="bytes to send, with \\r\\n style escapes")
	p.add_argument("--plan", default="whole")
	p.add_argument("--set-alpn", help="rewrite the hello's ALPN list first (comma-separated, "
		"\\x escapes; empty: no ALPN extension)")
	p.add_argument("--pad", type=int, default=0,
		help="first add a padding extension of this many bytes in front of the others")
	p.add_argument("--delay", type=float, help="seconds between sends")
	p.add_argument("--first-after", type=float, default=0,
		help="seconds between the connect and the first send")
	p.add_argument("--extra", help="sent in the same send() as the end of the hello (escapes)")
	p.add_argument("--bulk", type=int, default=0, help="then send this many random bytes")
	p.add_argument("--hold", type=float, default=0, help="wait this long before half-closing")
	p.add_argument("--after-hold",
		help="sent once --hold is over, before half-closing (escapes)")
	p.add_argument("--no-shut", action="store_true", help="do not half-close; read until EOF")
	p.add_argument("--reset-after", type=float,
		help="after sending, wait this long and reset the connection (RST) instead of closing")
	p.add_argument("--send-after-eof", help="once the reply ended, send this, then half-close")
	p.add_argument("--pause-after-eof", type=float, default=0,
		help="seconds to wait between the reply's end and --send-after-eof")
	p.add_argument("--save-sent", help="write every byte sent (not --bulk) to this file")
	p.add_argument("--expect", help="the reply must be exactly this (escapes)")
	p.add_argument("--timeout", type=float, default=10)
	args = p.parse_args()

	t0 = time.monotonic()
	deadline = t0 + args.timeout
	if args.file:
		with open(args.file, "rb") as f:
			data = f.read()
	else:
		data = unescape(args.data or "")
	try:
		if args.set_alpn is not None or args.pad:
			protos = None
			if args.set_alpn is not None:
				protos = [unescape(x) for x in args.set_alpn.split(",") if x]
			data = rewrite_hello(data, protos, args.pad)
		chunks = plan_chunks(data, args.plan) if data else []
	except HelloError as e:
		print("probe: plan %s: %s" % (args.plan, e), file=sys.stderr)
		return 2
	delay = args.delay
	if delay is None:
		delay = 0.0003 if args.plan.endswith("bytes") else 0.05
	extra = unescape(args.extra) if args.extra else b""
	if extra:
		if chunks:
			chunks[-1] = chunks[-1] + extra
		else:
			chunks = [extra]

	host, port = args.connect
	family = socket.AF_INET6 if ":" in host else socket.AF_INET
	s = socket.socket(family, socket.SOCK_STREAM)
	s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
	s.settimeout(max(0.1, deadline - time.monotonic()))
	try:
		s.connect((host, port))
	except ConnectionRefusedError:
		print("refused")
		return 3
	except OSError as e:
		print("probe: connect %s:%d: %s" % (host, port, e), file=sys.stderr)
		return 1
	print("connect_ms %.1f" % ((time.monotonic() - t0) * 1000))
	print("local_port %d" % s.getsockname()[1])
	reader = Reader(s, 4096)
	reader.start()

	sent = bytearray()
	shash = hashlib.sha256()
	nsent = 0
	status = 0
	try:
		print("split %s" % ",".join(str(len(c)) for c in chunks) if len(chunks) < 20
			else "split %d sends" % len(chunks))
		if args.first_after:
			time.sleep(args.first_after)
		for i, c in enumerate(chunks):
			if i and delay:
				time.sleep(delay)
			s.sendall(c)
			sent += c
		shash.update(sent)
		nsent = len(sent)
		if args.bulk:
			rnd = random.Random(os.getpid())
			left = args.bulk
			while left > 0:
				c = rnd.randbytes(min(left, 1 << 18))
				s.sendall(c)
				shash.update(c)
				nsent += len(c)
				left -= len(c)
		if args.hold:
			time.sleep(args.hold)
		if args.after_hold:
			late = unescape(args.after_hold)
			s.sendall(late)
			sent += late
			shash.update(late)
			nsent += len(late)
		if args.reset_after is not None:
			time.sleep(args.reset_after)
			# SO_LINGER 0: close sends RST. SHUT_RD first wakes the reader thread, whose
			# recv would otherwise keep the socket open past close.
			s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
			s.shutdown(socket.SHUT_RD)
			reader.join(2)
			s.close()
			print("sent %d" % nsent)
			print("end reset-sent")
			return 0
		if not args.no_shut and not args.send_after_eof:
			s.shutdown(socket.SHUT_WR)
		if args.send_after_eof:
			reader.join(max(0, deadline - time.monotonic()))
			if reader.is_alive():
				raise TimeoutError("no EOF from the server before --send-after-eof")
			time.sleep(args.pause_after_eof)
			late = unescape(args.send_after_eof)
			s.sendall(late)
			sent += late
			shash.update(late)
			nsent += len(late)
			s.shutdown(socket.SHUT_WR)
	except (OSError, TimeoutError) as e:
		print("probe: after sending %d bytes: %s" % (nsent, e), file=sys.stderr)
		status = 1
	reader.join(max(0, deadline - time.monotonic()))
	if reader.is_alive():
		print("probe: timeout: the reply did not end within %.1fs (got %d bytes: %r)"
			% (args.timeout, reader.count, bytes(reader.head[:200])), file=sys.stderr)
		status = 1
	if args.save_sent:
		with open(args.save_sent, "wb") as f:
			f.write(sent)
	print("sent %d" % nsent)
	print("sent_sha256 %s" % shash.hexdigest())
	print("reply_bytes %d" % reader.count)
	print("reply_sha256 %s" % reader.hash.hexdigest())
	print("reply %r" % bytes(reader.head[:200]))
	print("end %s" % (reader.end or reader.error or "none"))
	print("elapsed_ms %.1f" % (((reader.done_at or time.monotonic()) - t0) * 1000))
	if reader.error:
		print("probe: read: %s" % reader.error, file=sys.stderr)
		status = 1
	if args.expect is not None and bytes(reader.head) != unescape(args.expect):
		print("probe: expected reply %r, got %r"
			% (unescape(args.expect), bytes(reader.head)), file=sys.stderr)
		status = 1
	s.close()
	return status


if __name__ == "__main__":
	sys.exit(main())
