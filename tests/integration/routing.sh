#!/bin/bash
# Routing through the proxy, over a veth pair between two network namespaces, IPv4 and IPv6:
# - every captured ClientHello (tests/data/*.bin) reaches the right backend with every byte
#   intact, sent whole, byte by byte, split inside the ALPN extension, and re-recorded over
#   several TLS records;
# - bytes that are not TLS go to the fallback unchanged; data sent with the hello is kept;
#   half-close works both ways; 200 MB each way arrive intact, moved by splice(2) (strace
#   counts the workers' calls), and intact again through the recv/send fallback (the test
#   build's "nosplice" hook, as after splice refused a socket);
# - 2000 connections that send 3 bytes and stall do not delay a normal one; the hello
#   deadline sends a stalled connection to the fallback with the bytes it sent;
# - a client silent for a while after its connect is still routed (the listener defers
#   accepting until the first bytes, TCP_DEFER_ACCEPT), also across a stop: with the default
#   grace it was accepted before the listener closed, and with -grace 0.5 there is no deferral;
# - real clients (openssl s_client, curl) reach TLS backends (openssl s_server).
# Clients connect to the listener (port 21443) on the server's veth addresses.

. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools openssl curl strace

A=$LAB_DIR/acme
W=$LAB_DIR/web
backend_start ACME "$A" 127.0.0.1:31443
ACME_PID=$BACKEND_PID
# Dual-stack, so that the proxy's default fallback 127.0.0.1:443 reaches it.
backend_start WEB "$W" "[::]:443"
WEB_PID=$BACKEND_PID

if ! proxy_start; then
	not_ok "the proxy starts"
	lab_finish
fi

# expect_route DESC NAME PROBE-ARGS...: a probe (which must pass --save-sent $LAB_DIR/sent)
# reaches the backend NAME (ACME or WEB) and no other, gets its banner, and the backend
# recorded exactly the bytes the client sent, up to the client's EOF.
expect_route() {
	local desc=$1 name=$2 dir other base
	shift 2
	if [ "$name" = ACME ]; then dir=$A other=$W; else dir=$W other=$A; fi
	bk_reset "$A" "$W"
	rm -f "$LAB_DIR/sent"
	probe --expect "$name\\n" "$@"
	if [ "$PROBE_RC" != 0 ]; then
		not_ok "$desc: expected the reply '$name', got probe exit $PROBE_RC:" \
			"$(probe_summary '^(probe|reply |end|refused)')"
		return
	fi
	if ! wait_for 5 bk_has_done "$dir" 1; then
		not_ok "$desc: expected the $name backend to see the connection end, got" \
			"$(bk_conns "$dir") connection(s), $(bk_done "$dir") ended"
		return
	fi
	if [ "$(bk_conns "$other")" != 0 ]; then
		not_ok "$desc: expected no connection at the other backend, got" \
			"$(bk_conns "$other")"
		return
	fi
	base=$(bk_last "$dir")
	if ! cmp -s "$LAB_DIR/sent" "$base.bin"; then
		not_ok "$desc: expected the $(stat -c %s "$LAB_DIR/sent") bytes sent at $name," \
			"got $(stat -c %s "$base.bin") bytes" \
			"($(cmp "$LAB_DIR/sent" "$base.bin" 2>&1 | head -n 1))"
		return
	fi
	if [ "$(bk_meta "$base" end)" != fin ]; then
		not_ok "$desc: expected the backend to see EOF (fin), got '$(bk_meta "$base" end)'"
		return
	fi
	ok "$desc"
}

PLANS="whole bytes alpn records:4 records:3+alpn"

# ROUTING_ONLY="slow deadline" runs only those parts (by hand, when debugging one).
part() {
	[ -z "${ROUTING_ONLY:-}" ] && return 0
	case " $ROUTING_ONLY " in *" $1 "*) return 0 ;; esac
	return 1
}

part hellos && {
echo "# captured ClientHellos, IPv4 and IPv6, several ways of cutting them"
for f in "$TESTDATA"/*.bin; do
	hello=$(basename "$f" .bin)
	case $hello in *acme*) name=ACME ;; *) name=WEB ;; esac
	for addr in "$SRV4" "$SRV6"; do
		for plan in $PLANS; do
			expect_route "$hello $plan over $addr -> $name, bytes intact" "$name" \
				--connect "$(hostport "$addr" "$LISTEN_PORT")" --file "$f" \
				--plan "$plan" --save-sent "$LAB_DIR/sent"
		done
	done
done

}

part hellos && {
	log=$(grep ' conn ' "$LAB_DIR/proxy.log")
	assert_match "the proxy logs one line per connection, with sni, alpn and route=acme" \
		'conn 198\.51\.100\.2:[0-9]+ sni=example\.test alpn=acme-tls/1 route=acme ' "$log"
	assert_match "... and the IPv6 client's address, and route=fallback for a web hello" \
		'conn \[2001:db8:1::2\]:[0-9]+ .*alpn=h2,http/1\.1 route=fallback' "$log"
}

part variants && {
echo "# rewritten hellos: where acme-tls/1 sits in the list, near misses, big and malformed"
OA=$TESTDATA/openssl-acme.bin
for addr in "$SRV4" "$SRV6"; do
	hp=$(hostport "$addr" "$LISTEN_PORT")
	vcase() {
		local desc=$1 name=$2
		shift 2
		expect_route "$desc over $addr -> $name" "$name" --connect "$hp" \
			--save-sent "$LAB_DIR/sent" "$@"
	}
	vcase "ALPN h2,acme-tls/1 (acme-tls/1 not first)" ACME --file "$OA" --set-alpn h2,acme-tls/1
	vcase "ALPN acme-tls/1,h2, split in the ALPN extension" ACME --file "$OA" \
		--set-alpn acme-tls/1,h2 --plan alpn
	vcase "no ALPN extension" WEB --file "$OA" --set-alpn=
	vcase "ALPN acme-tls/10" WEB --file "$OA" --set-alpn acme-tls/10
	vcase "ALPN ACME-TLS/1" WEB --file "$OA" --set-alpn ACME-TLS/1
	vcase "ALPN acme-tls" WEB --file "$OA" --set-alpn acme-tls
	vcase "ALPN acme-tls/1 plus a NUL byte" WEB --file "$OA" --set-alpn 'acme-tls/1\x00'
	vcase "acme hello cut into 1-byte records" ACME --file "$OA" --plan records:330
	vcase "chromium hello cut into 1-byte records (11664 bytes)" WEB \
		--file "$TESTDATA/chromium.bin" --plan records:1944
	vcase "acme hello padded to 12 KB, 3 records, split in the ALPN extension" ACME \
		--file "$OA" --pad 12000 --plan records:3+alpn
	vcase "a handshake record holding a ServerHello" WEB \
		--data '\x16\x03\x01\x00\x04\x02\x00\x00\x00'
	vcase "an alert record" WEB --data '\x15\x03\x01\x00\x02\x02\x28'
	vcase "an empty handshake record, then a hello start" WEB \
		--data '\x16\x03\x01\x00\x00\x16\x03\x01\x00\x04\x01\x00\x00\x00'
	vcase "a hello too short to hold its fields" WEB \
		--data '\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00'
	vcase "an SSLv2-style hello" WEB --data '\x80\x2e\x01\x00\x02'
done
}

part other && {
echo "# other data, half-close"
for addr in "$SRV4" "$SRV6"; do
	hp=$(hostport "$addr" "$LISTEN_PORT")
	expect_route "not TLS (GET / HTTP/1.0) over $addr -> WEB unchanged" WEB \
		--connect "$hp" --data 'GET / HTTP/1.0\r\n\r\n' --save-sent "$LAB_DIR/sent"
	expect_route "not TLS, byte by byte, over $addr -> WEB unchanged" WEB \
		--connect "$hp" --data 'GET / HTTP/1.0\r\n\r\n' --plan bytes --delay 0.01 \
		--save-sent "$LAB_DIR/sent"
	expect_route "acme hello and more data in the same segment over $addr: all of it at ACME" \
		ACME --connect "$hp" --file "$TESTDATA/openssl-acme.bin" \
		--extra '\x17\x03\x03\x00\x05early data after the hello' --save-sent "$LAB_DIR/sent"
	expect_route "web hello and more data in the same segment over $addr: all of it at WEB" \
		WEB --connect "$hp" --file "$TESTDATA/chromium.bin" --plan records:2 \
		--extra '\x14\x03\x03\x00\x01\x01more' --save-sent "$LAB_DIR/sent"
	# A client that resets: a normal end, logged as information, naming the side.
	probe --connect "$hp" --file "$TESTDATA/curl.bin" --reset-after 0.3
	port=$(probe_val local_port)
	reset_logged() { grep -q "conn [^ ]*:$port .*: client: Connection reset by peer" \
		"$LAB_DIR/proxy.log"; }
	if [ "$PROBE_RC" != 0 ] || [ -z "$port" ]; then
		not_ok "a client that resets over $addr: expected the probe to run, got exit" \
			"$PROBE_RC: $(probe_summary '^(probe|end)')"
	elif wait_for 5 reset_logged; then
		assert_eq "a client that resets over $addr: the line is information, not a warning" \
			"" "$(grep "conn [^ ]*:$port " "$LAB_DIR/proxy.log" | grep 'warning:')"
	else
		not_ok "a client that resets over $addr: expected 'client: Connection reset by" \
			"peer' for port $port in the log within 5 s, got:" \
			"$(grep "conn [^ ]*:$port " "$LAB_DIR/proxy.log")"
	fi
	# The backends reply only once they saw EOF, so every case above shows this direction;
	# here the backend waits a second after the EOF, which a relay that closes the
	# connection soon after one side's EOF does not survive.
	bk_mode "$A" on-eof 1
	expect_route \
		"client half-closes over $addr: backend sees EOF, its reply 1 s later arrives" \
		ACME --connect "$hp" --file "$TESTDATA/python-acme.bin" --save-sent "$LAB_DIR/sent"
	bk_mode "$A" on-eof

	bk_mode "$W" shut-first
	expect_route "backend half-closes over $addr: client sees EOF and 1 s later still sends" \
		WEB --connect "$hp" --file "$TESTDATA/curl.bin" \
		--send-after-eof 'sent after EOF\n' --pause-after-eof 1 --save-sent "$LAB_DIR/sent"
	bk_mode "$W" on-eof
done

}

# bulk_case DESC DIR HELLO ADDR: 200 MB each way at once, compared by sha256.
BULK=$((200 * 1024 * 1024))
bulk_case() {
	local desc=$1 dir=$2 hello=$3 addr=$4 base
	bk_reset "$A" "$W"
	bk_mode "$dir" bulk "$BULK"
	probe --connect "$(hostport "$addr" "$LISTEN_PORT")" --file "$hello" --bulk "$BULK" \
		--timeout 90
	bk_mode "$dir" on-eof
	if [ "$PROBE_RC" != 0 ]; then
		not_ok "$desc: expected the transfer to finish, got probe exit $PROBE_RC:" \
			"$(probe_summary '^(probe|reply_bytes|end)')"
		return
	fi
	if ! wait_for 10 bk_has_done "$dir" 1; then
		not_ok "$desc: expected the backend to finish, it did not within 10 s"
		return
	fi
	base=$(bk_last "$dir")
	local up_sent up_got down_sent down_got
	up_sent="$(probe_val sent) $(probe_val sent_sha256)"
	up_got="$(bk_meta "$base" recv_bytes) $(bk_meta "$base" recv_sha256)"
	down_sent="$(bk_meta "$base" sent_bytes) $(bk_meta "$base" sent_sha256)"
	down_got="$(probe_val reply_bytes) $(probe_val reply_sha256)"
	if [ "$up_sent" != "$up_got" ]; then
		not_ok "$desc: client to backend: expected '$up_sent', got '$up_got'"
	elif [ "$down_sent" != "$down_got" ]; then
		not_ok "$desc: backend to client: expected '$down_sent', got '$down_got'"
	else
		ok "$desc (${PROBE_MS} ms)"
	fi
}
# syscalls_start / syscalls_stop: strace -c on the workers of $PROXY_PID in between;
# SPLICES and RECVS are the calls of splice and of recvfrom it counted.
worker_traced() { grep -q '^TracerPid:[[:space:]]*[1-9]' "/proc/$1/status"; }
syscalls_start() {
	local args=() p
	SYSCALL_PIDS=$(proxy_workers)
	for p in $SYSCALL_PIDS; do args+=(-p "$p"); done
	strace -qq -c -e trace=splice,recvfrom -o "$LAB_DIR/strace.out" "${args[@]}" &
	STRACE_PID=$!
	for p in $SYSCALL_PIDS; do
		wait_for 5 worker_traced "$p" || not_ok "strace attaches to worker $p within 5 s"
	done
}
syscalls_stop() {
	kill -INT "$STRACE_PID" 2>/dev/null
	wait "$STRACE_PID" 2>/dev/null
	SPLICES=$(awk '$NF == "splice" { print $4 }' "$LAB_DIR/strace.out")
	RECVS=$(awk '$NF == "recvfrom" { print $4 }' "$LAB_DIR/strace.out")
	SPLICES=${SPLICES:-0} RECVS=${RECVS:-0}
}

part bulk && {
echo "# bulk"
syscalls_start
bulk_case "200 MB each way at once over $SRV4 through the ACME route, intact" \
	"$A" "$TESTDATA/openssl-acme.bin" "$SRV4"
bulk_case "200 MB each way at once over $SRV6 through the fallback route, intact" \
	"$W" "$TESTDATA/chromium.bin" "$SRV6"
syscalls_stop
# 800 MB in all: through 16 KiB buffers that would be at least 51,200 recv calls.
assert_ge "the bulk transfers are spliced: splice calls" "$SPLICES" 1000
assert_lt "the bulk transfers are spliced: recv calls" "$RECVS" 5000
}

part slow && {
echo "# 2000 stalled connections do not delay a normal one"
bk_reset "$A" "$W"
ip netns exec "$CLI" "$PYTHON" "$TESTHELPERS/holder.py" --connect "$SRV4:$LISTEN_PORT" \
	--count 2000 --duration 60 --ready "$LAB_DIR/held" >"$LAB_DIR/holder.log" 2>&1 &
HOLDER_PID=$!
LAB_PIDS+=("$HOLDER_PID")
if wait_for 30 test -s "$LAB_DIR/held"; then
	assert_eq "2000 connections holding 3 bytes of a hello are open" 2000 \
		"$(cat "$LAB_DIR/held")"
	for addr in "$SRV4" "$SRV6"; do
		hp=$(hostport "$addr" "$LISTEN_PORT")
		expect_route "with 2000 stalled connections, an acme hello over $addr -> ACME" \
			ACME --connect "$hp" --file "$TESTDATA/node-acme.bin" \
			--save-sent "$LAB_DIR/sent" --timeout 10
		assert_lt "with 2000 stalled connections, it completes promptly over $addr" \
			"$PROBE_MS" 3000 ms
		expect_route "with 2000 stalled connections, a web hello over $addr -> WEB" WEB \
			--connect "$hp" --file "$TESTDATA/chromium.bin" \
			--save-sent "$LAB_DIR/sent" --timeout 10
		assert_lt "with 2000 stalled connections, it completes promptly over $addr" \
			"$PROBE_MS" 3000 ms
	done
else
	not_ok "2000 connections holding 3 bytes of a hello are open: holder not ready in 30 s:" \
		"$(tail -n 3 "$LAB_DIR/holder.log")"
fi
kill "$HOLDER_PID" 2>/dev/null
wait "$HOLDER_PID" 2>/dev/null
}

proxy_stop
assert_eq "the proxy exits 0 after stop -wait" 0 "$PROXY_EXIT"

part nosplice && {
echo "# the recv/send fallback (the test build's nosplice hook)"
if [ ! -x "${PROXY_HOOKS:-}" ]; then
	not_ok "PROXY_HOOKS (tests/acme-alpn-proxy-hooks) is not built: cannot test the fallback"
elif PROXY=$PROXY_HOOKS ACME_ALPN_PROXY_TEST_HOOK=nosplice proxy_start; then
	syscalls_start
	bulk_case "without splice, 200 MB each way over $SRV4 through the ACME route, intact" \
		"$A" "$TESTDATA/openssl-acme.bin" "$SRV4"
	bulk_case "without splice, 200 MB each way over $SRV6 through the fallback route, intact" \
		"$W" "$TESTDATA/chromium.bin" "$SRV6"
	syscalls_stop
	assert_eq "without splice, the workers make no splice call" 0 "$SPLICES"
	assert_ge "without splice, the bytes go through recv: recv calls" "$RECVS" 51200
	hp=$(hostport "$SRV4" "$LISTEN_PORT")
	bk_mode "$W" shut-first
	expect_route "without splice, the backend half-closes: the client still sends after EOF" \
		WEB --connect "$hp" --file "$TESTDATA/curl.bin" \
		--send-after-eof 'sent after EOF\n' --pause-after-eof 1 --save-sent "$LAB_DIR/sent"
	bk_mode "$W" on-eof
	expect_route "without splice, an acme hello with data after it reaches ACME intact" \
		ACME --connect "$hp" --file "$TESTDATA/openssl-acme.bin" \
		--extra '\x17\x03\x03\x00\x05early data after the hello' --save-sent "$LAB_DIR/sent"
	proxy_stop
	assert_eq "the test build exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "the test build starts with ACME_ALPN_PROXY_TEST_HOOK=nosplice"
fi
}

part deadline && {
echo "# the hello deadline"
last_size_is() { [ "$(stat -c %s "$(bk_last "$1").bin" 2>/dev/null)" = "$2" ]; }
if proxy_start -hello-timeout 1; then
	for addr in "$SRV4" "$SRV6"; do
		bk_reset "$A" "$W"
		t0=$(now_ms)
		probe_bg "$LAB_DIR/stall.out" \
			--connect "$(hostport "$addr" "$LISTEN_PORT")" --data '\x16\x03\x01' \
			--hold 2.5 --expect 'WEB\n'
		stall=$PROBE_PID
		# The 3 bytes arrive at the fallback once the deadline passed, not before.
		if wait_for 5 bk_has_conns "$W" 1; then
			t1=$(now_ms)
			wait_for 2 last_size_is "$W" 3
			assert_eq "stalled hello over $addr: the fallback gets its 3 bytes" \
				"16 03 01" "$(od -An -tx1 "$(bk_last "$W").bin" | xargs)"
			assert_ge "stalled hello over $addr: not before the 1 s deadline" \
				$((t1 - t0)) 800 ms
			assert_lt "stalled hello over $addr: soon after the 1 s deadline" \
				$((t1 - t0)) 3000 ms
		else
			not_ok "stalled hello over $addr: expected a connection at the fallback," \
				"got none within 5 s"
		fi
		wait "$stall"
		rc=$?
		assert_eq "stalled hello over $addr: the client still gets the fallback's reply" \
			"0 b'WEB\n'" "$rc $(sed -n 's/^reply //p' "$LAB_DIR/stall.out")"
		assert_eq "stalled hello over $addr: nothing at ACME" 0 "$(bk_conns "$A")"
	done
	assert_match "the proxy logs the stalled connections as route=fallback(timeout)" \
		'route=fallback\(timeout\)' "$(grep ' conn ' "$LAB_DIR/proxy.log")"
	proxy_stop
	assert_eq "the proxy exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "the proxy starts with -hello-timeout 1"
fi
}

part defer && {
echo "# a connection silent at first (the listener defers accepting: TCP_DEFER_ACCEPT)"
# silent_through_stop DESC GRACE FIRST-AFTER STOP-AFTER: an acme hello sent FIRST-AFTER s
# after the connect, with `stop` (-grace GRACE) run STOP-AFTER s after the connect, reaches
# ACME and gets its reply.
silent_through_stop() {
	local desc=$1 grace=$2 first=$3 stop_after=$4 p
	if ! proxy_start -grace "$grace"; then
		not_ok "$desc: the proxy starts with -grace $grace"
		return
	fi
	bk_reset "$A" "$W"
	probe_bg "$LAB_DIR/silent.out" --connect "$(hostport "$SRV4" "$LISTEN_PORT")" \
		--file "$TESTDATA/openssl-acme.bin" --first-after "$first" --expect 'ACME\n'
	p=$PROBE_PID
	sleep "$stop_after"
	proxy_cmd stop -wait
	wait "$p"
	assert_eq "$desc: the client gets ACME's reply" "0 b'ACME\n'" \
		"$? $(sed -n 's/^reply //p' "$LAB_DIR/silent.out")"
	assert_eq "$desc: stop -wait exits 0" 0 "$CMD_RC"
	proxy_reap
}
if proxy_start; then
	expect_route "a client silent for 1.5 s, then an acme hello: reaches ACME intact" \
		ACME --connect "$(hostport "$SRV4" "$LISTEN_PORT")" \
		--file "$TESTDATA/openssl-acme.bin" --first-after 1.5 --save-sent "$LAB_DIR/sent"
	expect_route "over IPv6 too" \
		ACME --connect "$(hostport "$SRV6" "$LISTEN_PORT")" \
		--file "$TESTDATA/openssl-acme.bin" --first-after 1.5 --save-sent "$LAB_DIR/sent"
	proxy_stop
else
	not_ok "the proxy starts"
fi
# Deferred, a connection with no byte yet is the listener's, and closing the listener resets
# it: with the default 2 s grace it must have been promoted (the SYN-ACK retransmission after
# 1 s) and accepted before the close; with -grace 0.5 the listener must not defer at all.
silent_through_stop "silent for 3 s across a stop (-grace 2, the listener closes after 2 s)" \
	2 3 0.3
silent_through_stop "silent for 1.2 s across a stop (-grace 0.5: no deferral)" 0.5 1.2 0.2
}

part tls && {
echo "# real TLS clients and servers"
kill "$ACME_PID" "$WEB_PID" 2>/dev/null
wait "$ACME_PID" "$WEB_PID" 2>/dev/null
port_free() { ! srv ss -Hltn "sport = :$1" | grep -q LISTEN; }
wait_for 5 port_free 443
wait_for 5 port_free 31443
for n in acme web; do
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$n" \
		-keyout "$LAB_DIR/$n.key" -out "$LAB_DIR/$n.crt" >/dev/null 2>&1
done
# -www answers a GET / with a status page; the certificate's CN tells which server answered.
(cd "$LAB_DIR" && exec ip netns exec "$SRV" openssl s_server -accept 127.0.0.1:31443 \
	-cert acme.crt -key acme.key -alpn acme-tls/1 -www -quiet) >"$LAB_DIR/s_acme.log" 2>&1 &
LAB_PIDS+=($!)
(cd "$LAB_DIR" && exec ip netns exec "$SRV" openssl s_server -accept 127.0.0.1:443 \
	-cert web.crt -key web.key -www -quiet) >"$LAB_DIR/s_web.log" 2>&1 &
LAB_PIDS+=($!)
srv_listening() { srv ss -Hltn "sport = :$1" | grep -q LISTEN; }
wait_for 5 srv_listening 443 && wait_for 5 srv_listening 31443 ||
	not_ok "openssl s_server listens on 443 and 31443: $(cat "$LAB_DIR"/s_*.log)"
if proxy_start; then
	for addr in "$SRV4" "$SRV6"; do
		hp=$(hostport "$addr" "$LISTEN_PORT")
		out=$(cli timeout 10 openssl s_client -connect "$hp" -alpn acme-tls/1 \
			-servername acme.example.test </dev/null 2>&1)
		assert_match \
			"openssl s_client -alpn acme-tls/1 over $addr reaches the ACME server" \
			'subject=CN ?= ?acme' "$out"
		assert_match "openssl s_client -alpn acme-tls/1 over $addr negotiates acme-tls/1" \
			'ALPN protocol: acme-tls/1' "$out"
		out=$(cli timeout 10 openssl s_client -connect "$hp" -servername www.example.test \
			</dev/null 2>&1)
		assert_match "openssl s_client without ALPN over $addr reaches the web server" \
			'subject=CN ?= ?web' "$out"
		out=$(cli curl -k -sS -v --max-time 10 "https://$hp/" 2>&1)
		assert_match "curl -k https://$hp/ reaches the web server" \
			'subject: CN ?= ?web' "$out"
		assert_match "curl -k https://$hp/ gets the web server's page" \
			'HTTP/1\.[01] 200' "$out"
	done
	proxy_stop
	assert_eq "the proxy exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "the proxy starts again for the real clients"
fi
}
lab_finish
