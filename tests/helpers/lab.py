"""What the integration tests' Python helpers share (python3 stdlib only): addresses as the
test scripts write them, reading to EOF, and the TLS record walk and re-recording of a
ClientHello.

The helpers (backend.py, churn.py, holder.py, probe.py, tlsclients.py) import it from the
directory they are in, the tests' inline Python through PYTHONPATH (lib.sh sets it); the C
side's counterpart is tests/hello_builder.c."""

import argparse


def parse_addr(text):
	"""'1.2.3.4:80' or '[::]:80' -> (host, port); an argparse type."""
	if text.startswith("["):
		host, _, port = text[1:].partition("]:")
	else:
		host, _, port = text.rpartition(":")
	if not host or not port:
		raise argparse.ArgumentTypeError("want ADDR:PORT or [ADDR]:PORT, got %r" % text)
	return host, int(port)


def parse_addrs(text):
	"""'A:P,[B]:Q' -> [(host, port), ...]"""
	return [parse_addr(t) for t in text.split(",")]


def recv_all(sock, size=4096):
	"""Everything sock (a socket, or an SSL socket) receives until the peer's EOF."""
	data = b""
	while True:
		b = sock.recv(size)
		if not b:
			return data
		data += b


class HelloError(Exception):
	pass


def hello_walk(data):
	"""Walk the TLS records at the start of data, gathering the first handshake message (a
	ClientHello may span several records). Returns (hs, recs, end, stop):
	  hs    the message bytes gathered, of a record that is not whole yet too
	  recs  (record start, payload start, payload length) of each handshake record walked
	  end   the offset after the last record walked
	  stop  "done": hs holds the whole message (more bytes of its record may follow it);
	        "other": the record at end is not a handshake record (its first byte, the content
	        type, says so as soon as it arrives); "short": data ends before the message."""
	hs = bytearray()
	recs = []
	pos = 0
	while pos < len(data):
		if data[pos] != 0x16:
			return bytes(hs), recs, pos, "other"
		if pos + 5 > len(data):
			break
		rlen = int.from_bytes(data[pos + 3:pos + 5], "big")
		recs.append((pos, pos + 5, rlen))
		hs += data[pos + 5:pos + 5 + rlen]
		pos += 5 + rlen
		if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
			return bytes(hs), recs, pos, "done"
	return bytes(hs), recs, pos, "short"


def read_hello(data):
	"""The ClientHello at the start of data, which must be whole and end with its last record.
	Returns (record version, handshake message, bytes of data its records take, recs as
	hello_walk gives them); HelloError otherwise."""
	hs, recs, end, stop = hello_walk(data)
	if recs and recs[-1][1] + recs[-1][2] > len(data):
		raise HelloError("record at offset %d runs past the end" % recs[-1][0])
	if stop != "done":
		raise HelloError("no complete ClientHello in the handshake records"
			" (at offset %d)" % end)
	if len(hs) != 4 + int.from_bytes(hs[1:4], "big"):
		raise HelloError("a record holds more than the hello")
	return bytes(data[1:3]), hs, end, recs


def rerecord(data, n):
	"""Cut the ClientHello message into n TLS records. Bytes after the hello are kept."""
	version, hs, used, _ = read_hello(data)
	if n < 1 or n > len(hs):
		raise HelloError("cannot cut %d bytes of handshake into %d records" % (len(hs), n))
	out = bytearray()
	step, extra = divmod(len(hs), n)
	pos = 0
	for i in range(n):
		size = step + (1 if i < extra else 0)
		out += b"\x16" + version + size.to_bytes(2, "big") + hs[pos:pos + size]
		pos += size
	return bytes(out) + data[used:]


def extensions_at(hs):
	"""Where the extensions block of the handshake message hs is: (offset of its length field,
	offset after its end)."""
	p = 4 + 2 + 32  # handshake header, legacy_version, random
	p += 1 + hs[p]  # session id
	p += 2 + int.from_bytes(hs[p:p + 2], "big")  # cipher suites
	p += 1 + hs[p]  # compression methods
	return p, p + 2 + int.from_bytes(hs[p:p + 2], "big")
