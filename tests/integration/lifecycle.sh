#!/bin/bash
# The proxy's life cycle, in a network namespace lab: command line errors, root check,
# start/stop/status and their exit codes, start twice, stop twice, SIGINT and SIGTERM, -d
# readiness, options after the subcommand, a killed worker is replaced, stop while
# connections are open (they finish; new ones are refused once the grace is over), stop -wait,
# and a client is closed promptly when its backend is down.

. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools setpriv setsid prlimit timeout

A=$LAB_DIR/acme
W=$LAB_DIR/web
backend_start ACME "$A" 127.0.0.1:31443
backend_start WEB "$W" "[::]:443"
HP4=$SRV4:$LISTEN_PORT
HP6=[$SRV6]:$LISTEN_PORT

# routes ADDR: one acme hello reaches ACME and one web hello reaches WEB, through ADDR.
routes() {
	probe --connect "$1" --file "$TESTDATA/openssl-acme.bin" --expect 'ACME\n' --timeout 5 &&
		[ "$PROBE_RC" = 0 ] || return 1
	probe --connect "$1" --file "$TESTDATA/curl.bin" --expect 'WEB\n' --timeout 5 &&
		[ "$PROBE_RC" = 0 ]
}
routes_web() {
	probe --connect "$1" --file "$TESTDATA/chromium.bin" --expect 'WEB\n' --timeout 5 &&
		[ "$PROBE_RC" = 0 ]
}
refused() {
	probe --connect "$1" --file "$TESTDATA/openssl-acme.bin" --timeout 5
	[ "$PROBE_RC" = 3 ]
}
count_lines() { [ -z "$1" ] && echo 0 || printf '%s\n' "$1" | wc -l; }

echo "# command line"
CMD_TIMEOUT=10
proxy_cmd -no-such-option start
assert_eq "an unknown option: exit 2" 2 "$CMD_RC"
assert_eq "an unknown option: one line on stderr" 1 "$(count_lines "$CMD_ERR")"
proxy_cmd -workers lots start
assert_eq "-workers lots: exit 2" 2 "$CMD_RC"
assert_eq "-workers lots: one line on stderr" 1 "$(count_lines "$CMD_ERR")"
proxy_cmd restart
assert_eq "an unknown subcommand: exit 2" 2 "$CMD_RC"
proxy_cmd -fallback nowhere start
assert_eq "-fallback without a port: exit 2" 2 "$CMD_RC"
proxy_cmd -h
assert_eq "-h: exit 0" 0 "$CMD_RC"
assert_match "-h prints the usage" 'start' "$CMD_STDOUT"
proxy_cmd -V
assert_eq "-V: exit 0" 0 "$CMD_RC"

echo "# without root"
# A copy in the lab directory, so that nobody can run it wherever the build directory is.
cp "$PROXY" "$LAB_DIR/proxy-copy" && chmod 755 "$LAB_DIR/proxy-copy"
as_nobody() {
	srv timeout 10 setpriv --reuid=65534 --regid=65534 --clear-groups \
		env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" "$LAB_DIR/proxy-copy" "$@" \
		>"$LAB_DIR/nobody.out" 2>&1
}
as_nobody -chroot "$LAB_DIR/empty" start
rc=$?
assert_eq "start as nobody: refused with exit 4" 4 "$rc"
assert_match "start as nobody: says it needs root" 'root' "$(cat "$LAB_DIR/nobody.out")"
as_nobody stop
assert_eq "stop as nobody: refused with exit 4" 4 "$?"
check "start as nobody did not listen" sh -c "! ip netns exec '$SRV' ss -Hltn \
	'sport = :$LISTEN_PORT' | grep -q LISTEN"

echo "# nothing running"
proxy_cmd status
assert_eq "status with nothing running: exit 3" 3 "$CMD_RC"
assert_match "status with nothing running: says not running" 'not running' "$CMD_OUT"
proxy_cmd stop
assert_eq "stop with nothing running: exit 0" 0 "$CMD_RC"
proxy_cmd stop
assert_eq "stop with nothing running, again: exit 0" 0 "$CMD_RC"

echo "# foreground start, start twice, status, stop twice"
if proxy_start -workers 2 -grace 0.5; then
	ok "start in the foreground becomes ready"
	check "it routes over IPv4" routes "$HP4"
	check "it routes over IPv6" routes "$HP6"
	assert_eq "-workers 2 before the subcommand: 2 workers" 2 "$(proxy_workers | wc -l)"
	proxy_cmd status
	assert_eq "status while running: exit 0" 0 "$CMD_RC"
	assert_match "status while running: prints the pid" "running, pid $PROXY_PID\b" "$CMD_OUT"
	proxy_cmd -chroot "$LAB_DIR/empty" start
	assert_eq "start while running: exit 0" 0 "$CMD_RC"
	assert_match "start while running: says it runs already" '[Aa]lready|running' "$CMD_OUT"
	check "start while running left the first instance alone" kill -0 "$PROXY_PID"
	check "and it still routes" routes "$HP4"
	proxy_cmd stop
	assert_eq "stop: exit 0" 0 "$CMD_RC"
	check "after stop returned, new connections are refused (IPv4)" refused "$HP4"
	check "after stop returned, new connections are refused (IPv6)" refused "$HP6"
	proxy_cmd stop
	assert_eq "stop again: exit 0" 0 "$CMD_RC"
	proxy_reap 10
	assert_eq "the foreground process exits 0 after stop" 0 "$PROXY_EXIT"
	proxy_cmd status
	assert_eq "status after stop: exit 3" 3 "$CMD_RC"
else
	not_ok "start in the foreground becomes ready"
fi

echo "# signals to the foreground process"
for sig in INT TERM; do
	if proxy_start -workers 1 -grace 0.3; then
		kill -"$sig" "$PROXY_PID"
		proxy_reap 10
		assert_eq "SIG$sig to the foreground process: it exits 0" 0 "$PROXY_EXIT"
		check "after SIG$sig, the listener is closed" refused "$HP4"
		proxy_cmd status
		assert_eq "after SIG$sig, status: exit 3" 3 "$CMD_RC"
	else
		not_ok "start for the SIG$sig test"
	fi
done

echo "# -d and options after the subcommand"
proxy_cmd -chroot "$LAB_DIR/empty" start -d -workers 3 -grace 0.3
assert_eq "start -d -workers 3: exit 0" 0 "$CMD_RC"
# Right after start -d returned, without polling: it must be ready.
check "right after start -d returned, it routes over IPv4" routes "$HP4"
check "right after start -d returned, it routes over IPv6" routes "$HP6"
proxy_cmd status
assert_eq "status with a daemon: exit 0" 0 "$CMD_RC"
DPID=$(printf '%s\n' "$CMD_OUT" | sed -n 's/.*running, pid \([0-9]*\).*/\1/p')
if [ -n "$DPID" ]; then
	assert_eq "-workers 3 after the subcommand: 3 workers" 3 "$(proxy_workers "$DPID" | wc -l)"
	proxy_cmd stop -wait
	assert_eq "stop -wait of the daemon: exit 0" 0 "$CMD_RC"
	check "stop -wait returned after the daemon exited" pid_gone "$DPID"
else
	not_ok "status names the daemon's pid: got '$CMD_OUT'"
	proxy_cmd stop -wait
fi

echo "# other spellings of options, -listen on one address"
proxy_cmd -chroot="$LAB_DIR/empty" --workers=2 -hello-timeout=0.5 --grace 0.2 start -d
assert_eq "--workers=2 -hello-timeout=0.5 --grace 0.2 start -d: exit 0" 0 "$CMD_RC"
proxy_cmd status
DPID=$(printf '%s\n' "$CMD_OUT" | sed -n 's/.*running, pid \([0-9]*\).*/\1/p')
assert_eq "--workers=2: 2 workers" 2 "$(proxy_workers "$DPID" | wc -l)"
check "and it routes" routes "$HP6"
proxy_cmd stop -wait
assert_eq "stop -wait: exit 0" 0 "$CMD_RC"
proxy_cmd -chroot "$LAB_DIR/empty" -listen "$SRV4:$LISTEN_PORT" -grace 0.2 start -d
assert_eq "-listen $SRV4:$LISTEN_PORT start -d: exit 0" 0 "$CMD_RC"
check "-listen $SRV4:$LISTEN_PORT: it routes over IPv4" routes "$HP4"
check "-listen $SRV4:$LISTEN_PORT: nothing listens on the IPv6 address" refused "$HP6"
proxy_cmd stop -wait
assert_eq "stop -wait: exit 0" 0 "$CMD_RC"

echo "# the listener's port is taken"
ip netns exec "$SRV" "$PYTHON" -c 'import socket, sys, time
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen()
time.sleep(60)' "$LISTEN_PORT" &
squatter=$!
LAB_PIDS+=("$squatter")
if wait_for 5 proxy_listening; then
	proxy_cmd -chroot "$LAB_DIR/empty" start
	assert_eq "start while another program holds port $LISTEN_PORT: exit 1" 1 "$CMD_RC"
	assert_match "... with a message naming the address" '21443' "$CMD_ERR"
	proxy_cmd status
	assert_eq "... and status then says not running (3)" 3 "$CMD_RC"
	assert_match "... and no rule was left installed" 'IPv4 absent' "$CMD_OUT"
else
	not_ok "a squatter listens on port $LISTEN_PORT"
fi
kill "$squatter"
wait "$squatter" 2>/dev/null
wait_for 5 sh -c "! ip netns exec '$SRV' ss -Hltn 'sport = :$LISTEN_PORT' | grep -q LISTEN"

echo "# a killed worker is replaced"
if proxy_start -workers 2 -grace 0.3; then
	before=$(proxy_workers | tr '\n' ' ')
	victim=${before%% *}
	kill -KILL "$victim"
	replaced() {
		local now
		now=$(proxy_workers | tr '\n' ' ')
		[ "$(echo $now | wc -w)" = 2 ] && ! printf ' %s ' "$now" | grep -q " $victim "
	}
	if wait_for 10 replaced; then
		ok "kill -9 of worker $victim: a new worker takes its place" \
			"($(proxy_workers | xargs))"
	else
		not_ok "kill -9 of worker $victim: expected 2 workers without it, got" \
			"'$(proxy_workers | xargs)' (before: $before)"
	fi
	check "after the worker was replaced, it routes (IPv4)" routes "$HP4"
	check "after the worker was replaced, it routes (IPv6)" routes "$HP6"
	check "the parent survived the worker's death" kill -0 "$PROXY_PID"
	proxy_stop
	assert_eq "and exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "start for the killed worker test"
fi

# open_start HOSTPORT HELLO HOLD AFTER-HOLD BANNER DIR: a connection in the background
# (open_pid) that sends tests/data/HELLO, holds HOLD seconds, sends AFTER-HOLD, half-closes and
# expects the reply BANNER; what it sent goes to open.sent. Returns once DIR's backend has it.
open_start() {
	probe_bg "$LAB_DIR/open.out" --connect "$1" --file "$TESTDATA/$2" --hold "$3" \
		--after-hold "$4" --save-sent "$LAB_DIR/open.sent" --expect "$5\n" --timeout 15
	open_pid=$PROBE_PID
	wait_for 5 bk_has_conns "$6" 1 || not_ok "the open connection reached $5"
}

# open_finished DESCRIPTION BANNER: the background probe (open_pid, its output in open.out)
# exits 0 with the reply BANNER.
open_finished() {
	local rc
	wait "$open_pid"
	rc=$?
	assert_eq "$1" "0 b'$2\n'" "$rc $(sed -n 's/^reply //p' "$LAB_DIR/open.out")"
}

# open_all_bytes DESCRIPTION DIR first|last WHEN-NOT: once DIR's backend saw the connection
# end, its recording (the first or the last) holds every byte the probe sent (open.sent).
open_all_bytes() {
	if wait_for 5 bk_has_done "$2" 1; then
		assert_same_file "$1" "$LAB_DIR/open.sent" "$(bk_"$3" "$2").bin"
	else
		not_ok "$4"
	fi
}

echo "# stop while connections are open"
bk_reset "$A" "$W"
if proxy_start -workers 2 -grace 1; then
	# A relayed connection that keeps sending for a while after the stop.
	open_start "$HP4" openssl-acme.bin 3 'sent after the stop\n' ACME "$A"
	t0=$(now_ms)
	proxy_cmd stop
	assert_eq "stop with a connection open: exit 0" 0 "$CMD_RC"
	assert_ge "stop returned only after the 1 s grace" "$CMD_MS" 900 ms
	check "after the grace, new connections are refused (IPv4)" refused "$HP4"
	check "after the grace, new connections are refused (IPv6)" refused "$HP6"
	check "the open connection is still open after stop returned" kill -0 "$open_pid"
	open_finished "the open connection finished normally with the ACME reply" ACME
	t1=$(now_ms)
	assert_ge "it finished well after stop was issued" $((t1 - t0)) 1500 ms
	open_all_bytes "ACME got every byte, including those sent after the stop" "$A" last \
		"ACME saw the open connection end"
	proxy_reap 10
	assert_eq "the proxy exits 0 once the connection finished" 0 "$PROXY_EXIT"
else
	not_ok "start for the stop-while-open test"
fi

echo "# kill -9 of the parent"
bk_reset "$A" "$W"
if proxy_start -workers 2 -grace 0.3; then
	open_start "$HP6" openssl-acme.bin 2 'after the crash\n' ACME "$A"
	proxy_cmd status
	assert_match "status counts the open connection" 'connections: 1' "$CMD_OUT"
	kill -KILL "$PROXY_PID"
	# (2>/dev/null: not bash's "Killed" notice)
	proxy_reap 5 2>/dev/null
	proxy_cmd status
	assert_eq "after kill -9 of the parent, status: exit 3" 3 "$CMD_RC"
	if proxy_start -workers 2 -grace 0.3; then
		ok "after kill -9 of the parent, start works again"
		check "... and routes" routes "$HP4"
	else
		not_ok "after kill -9 of the parent, start works again"
	fi
	open_finished "the connection open at the crash finished normally" ACME
	open_all_bytes "ACME got all its bytes, including those sent after the crash" "$A" first \
		"ACME saw the connection open at the crash end"
	proxy_stop
	assert_eq "the new instance exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "start for the kill -9 of the parent test"
fi

echo "# stop -wait waits for the drain"
bk_reset "$A" "$W"
if proxy_start -workers 1 -grace 0.3; then
	probe_bg "$LAB_DIR/open.out" --connect "$HP6" \
		--file "$TESTDATA/curl.bin" --hold 2 --expect 'WEB\n' --timeout 15
	open_pid=$PROBE_PID
	t0=$(now_ms)
	wait_for 5 bk_has_conns "$W" 1 || not_ok "the open connection reached WEB"
	proxy_cmd stop -wait
	t1=$(now_ms)
	assert_eq "stop -wait with a connection open: exit 0" 0 "$CMD_RC"
	check "stop -wait returned after the proxy exited" proxy_gone
	# The connection cannot end before the client's 2 s hold is over.
	assert_ge "stop -wait returned after the open connection finished" $((t1 - t0)) 1900 ms
	wait "$open_pid"
	assert_eq "the open connection got its reply" 0 "$?"
	proxy_reap 10
	assert_eq "the proxy exited 0" 0 "$PROXY_EXIT"
else
	not_ok "start for the stop -wait test"
fi

echo "# Ctrl-C reaches the whole process group"
bk_reset "$A" "$W"
# setsid: the proxy leads its own process group, as in a terminal.
if PROXY_WRAP=setsid proxy_start -workers 2 -grace 0.3; then
	open_start "$HP4" curl.bin 1.5 'after the Ctrl-C\n' WEB "$W"
	kill -INT -- -"$PROXY_PID"
	open_finished "SIGINT to the process group: the open connection still finishes" WEB
	open_all_bytes "... and WEB got every byte, including those sent after it" "$W" first \
		"WEB saw the connection end"
	proxy_reap 10
	assert_eq "SIGINT to the process group: the proxy exits 0" 0 "$PROXY_EXIT"
else
	not_ok "start in its own process group"
fi

echo "# -drain-timeout"
bk_reset "$A" "$W"
if proxy_start -workers 1 -grace 0.3 -drain-timeout 1; then
	# The backend answers only after the client's EOF, which never comes: an idle relay.
	probe_bg "$LAB_DIR/idle.out" --connect "$HP6" \
		--file "$TESTDATA/openssl-acme.bin" --no-shut --timeout 15
	idle_pid=$PROBE_PID
	wait_for 5 bk_has_conns "$A" 1 || not_ok "the idle connection reached ACME"
	proxy_cmd stop -wait
	assert_eq "stop -wait with an idle connection and -drain-timeout 1: exit 0" 0 "$CMD_RC"
	assert_lt "stop -wait returned once the 1 s drain timeout closed it" "$CMD_MS" 5000 ms
	wait "$idle_pid"
	assert_eq "the idle connection was closed (the client saw its end)" 0 "$?"
	proxy_reap 10
	assert_eq "the proxy exits 0 after the drain timeout" 0 "$PROXY_EXIT"
else
	not_ok "start with -drain-timeout 1"
fi

echo "# a low open-files limit"
# The parent raises the soft limit to the hard one; with a hard limit of 64 the workers
# still have room for 24 connections each.
if PROXY_WRAP="prlimit --nofile=64:64" proxy_start -workers 1 -grace 0.3; then
	ok "with RLIMIT_NOFILE 64:64, the proxy starts"
	check "with RLIMIT_NOFILE 64:64, it routes" routes "$HP4"
	proxy_stop
	assert_eq "with RLIMIT_NOFILE 64:64, it exits 0 after stop -wait" 0 "$PROXY_EXIT"
else
	not_ok "with RLIMIT_NOFILE 64:64, the proxy starts: expected ready, got:" \
		"$(tail -n 3 "$LAB_DIR/proxy.log" | tr '\n' ' ')"
fi

echo "# backend down"
if proxy_start -workers 1 -grace 0.3 -alpn 127.0.0.1:31999; then
	for hp in "$HP4" "$HP6"; do
		probe --connect "$hp" --file "$TESTDATA/openssl-acme.bin" --no-shut --timeout 10
		assert_eq "ACME responder down, over $hp: the client is closed" 0 "$PROBE_RC"
		assert_lt "ACME responder down, over $hp: promptly" "$PROBE_MS" 2000 ms
	done
	check "ACME responder down: the web route still works" routes_web "$HP4"
	proxy_stop
	assert_eq "the proxy exits 0" 0 "$PROXY_EXIT"
else
	not_ok "start with -alpn 127.0.0.1:31999"
fi

lab_finish
