#!/usr/bin/env bash
# Issue 11, part 5: the parent stays in charge, and the workers hold nothing of the parent's.
# - the workers' descriptors 0, 1 and 2 are /dev/null, not the administrator's terminal or log;
# - a worker flooding its log pipe (test hook log-flood) delays neither start, nor reaping and
#   respawning, nor SIGTERM, nor the drain deadline;
# - a worker that writes a control line for another worker (test hook impersonate) is not
#   believed: the start fails instead of installing the redirect with workers that never said
#   they were ready;
# - fork failing after the start (test hook fail-fork) makes the parent back off and give up
#   cleanly (rules removed, exit 1), instead of retrying in a loop;
# - with a low open-files limit, pipes kept in the worker's pool after a splice-heavy burst do
#   not make new clients fail for want of a backend socket.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools prlimit iptables-legacy

[ -x "${PROXY_HOOKS:-}" ] || lab_missing "PROXY_HOOKS (tests/acme-alpn-proxy-hooks) is not built"
A=$LAB_DIR/acme
W=$LAB_DIR/web
backend_start ACME "$A" 127.0.0.1:31443
backend_start WEB "$W" "[::]:443"
bk_mode "$W" on-hello
HP4=$SRV4:$LISTEN_PORT

web_works() {
	probe --connect "$HP4" --file "$TESTDATA/curl.bin" --expect 'WEB\n' --timeout 5
	[ "$PROBE_RC" = 0 ]
}
worker_count() { proxy_workers | wc -l; }
has_workers() { [ "$(worker_count)" -eq "$1" ]; }
redirects() { srv iptables-legacy -t nat -S PREROUTING | grep -c REDIRECT; }
log_count() { grep -c -- "$1" "$LAB_DIR/proxy.log"; }
PROXY_PLAIN=$PROXY

echo "# the workers' descriptors 0, 1 and 2"
if proxy_start -workers 2 -grace 0.3; then
	wait_for 5 has_workers 2
	assert_match "the parent's stderr is the log (the lab's proxy.log)" 'proxy\.log$' \
		"$(readlink "/proc/$PROXY_PID/fd/2")"
	# In a sanitizer build descriptor 2 is the worker's log pipe, for the runtime's reports
	# (src/worker.c).
	san=
	ldd "$PROXY" 2>/dev/null | grep -q libasan && san=1
	for w in $(proxy_workers); do
		for fd in 0 1 2; do
			want=/dev/null
			[ "$fd" = 2 ] && [ -n "$san" ] && want=$(readlink "/proc/$w/fd/5")
			assert_eq "worker $w: descriptor $fd is ${san:+(sanitizer build) }$want" "$want" \
				"$(readlink "/proc/$w/fd/$fd")"
		done
		# 3, 4, 5: listener, drain pipe, its own log pipe; nothing else of the parent's
		assert_eq "worker $w: its log pipe (fd 5) is its own, not another worker's" 1 \
			"$(for v in $(proxy_workers); do readlink "/proc/$v/fd/5"; done |
				grep -cxF "$(readlink "/proc/$w/fd/5")")"
	done
	check "it routes" web_works
	proxy_stop
	assert_eq "stop: exit 0" 0 "$PROXY_EXIT"
else
	not_ok "start for the descriptor test"
fi

echo "# a worker floods its log pipe"
PROXY=$PROXY_HOOKS
export ACME_ALPN_PROXY_TEST_HOOK=log-flood
if proxy_start -workers 2 -grace 0.3 -drain-timeout 1; then
	ok "with two workers flooding their log pipes, the proxy becomes ready"
	unset ACME_ALPN_PROXY_TEST_HOOK
	# The parent reads the flood (and drops it: debug lines without -v).
	rchar() { sed -n 's/^rchar: //p' "/proc/$PROXY_PID/io"; }
	r0=$(rchar)
	flooding() { [ "$(rchar)" -gt $((r0 + 8000000)) ]; }
	check "the workers flood: the parent reads 8 MB of log lines within 5 s" wait_for 5 flooding
	check "under the flood, it routes" web_works
	before=$(proxy_workers | tr '\n' ' ')
	victim=${before%% *}
	kill -KILL "$victim"
	replaced() {
		[ "$(worker_count)" = 2 ] && ! proxy_workers | grep -qx "$victim"
	}
	check "under the flood, a killed worker is reaped and replaced" wait_for 5 replaced
	# An idle relayed connection keeps a worker in its drain until -drain-timeout 1 closes it.
	bk_mode "$A" on-eof
	probe_bg "$LAB_DIR/idle.out" --connect "$HP4" \
		--file "$TESTDATA/openssl-acme.bin" --no-shut --timeout 15
	idle_pid=$PROBE_PID
	wait_for 5 bk_has_conns "$A" 1 || not_ok "the idle connection reached ACME"
	t0=$(now_ms)
	kill -TERM "$PROXY_PID"
	proxy_reap 10
	t1=$(now_ms)
	assert_eq "under the flood, SIGTERM stops the proxy: exit 0" 0 "$PROXY_EXIT"
	# 0.3 s grace + 1 s drain timeout + 3 s of the conntrack hold after the drain
	# (HOLD_LINGER_MS), and slack for a loaded machine
	assert_lt "under the flood, it exits within grace + drain timeout + hold" $((t1 - t0)) \
		6000 ms
	assert_eq "after the flood, no redirect rule is left" 0 "$(redirects)"
	wait "$idle_pid"
	assert_eq "the idle connection was closed at the drain deadline (client saw EOF)" 0 "$?"
	bk_mode "$A" on-hello
else
	not_ok "with two workers flooding their log pipes, the proxy becomes ready"
	unset ACME_ALPN_PROXY_TEST_HOOK
	kill -KILL "$PROXY_PID" 2>/dev/null
	proxy_reap 5
fi

echo "# a worker speaks for another"
# Each worker claims the workers with pids near its own are ready, and never itself.
CMD_TIMEOUT=15 ACME_ALPN_PROXY_TEST_HOOK=impersonate proxy_cmd -chroot "$LAB_DIR/empty" \
	-workers 2 -grace 0.3 start
assert_eq "workers that claim others are ready: start fails with exit 1" 1 "$CMD_RC"
assert_match "... and the log names the worker and the pid it spoke for" \
	'worker [0-9]+ wrote a control line for pid [0-9]+' "$CMD_ERR"
assert_lt "... at once, not after the readiness timeout" "$CMD_MS" 5000 ms
assert_eq "... and no redirect rule is left" 0 "$(redirects)"

echo "# fork fails after the start"
export ACME_ALPN_PROXY_TEST_HOOK=fail-fork
if proxy_start -workers 2 -grace 0.3; then
	unset ACME_ALPN_PROXY_TEST_HOOK
	victim=$(proxy_workers | head -n 1)
	kill -KILL "$victim"
	check "with one worker gone and fork failing, the other one serves" web_works
	forks() { log_count 'fork of a worker failed'; }
	# Old behaviour to catch: a retry at once, in a loop (thousands of lines a second).
	ended() { proxy_gone || [ "$(forks)" -gt 100 ]; }
	wait_for 60 ended
	n=$(forks)
	assert_lt "the failed forks back off: at most a dozen attempts" "$n" 13
	assert_ge "... and more than one" "$n" 2
	check "the parent gave up and exited" proxy_gone
	proxy_reap 5
	assert_eq "... with exit 1" 1 "$PROXY_EXIT"
	assert_match "... saying it gave up" 'giving up' "$(cat "$LAB_DIR/proxy.log")"
	assert_eq "... and no redirect rule is left" 0 "$(redirects)"
	check "... and nothing listens any more" sh -c "! ip netns exec '$SRV' ss -Hltn \
		'sport = :$LISTEN_PORT' | grep -q LISTEN"
else
	not_ok "start for the fork failure test"
	unset ACME_ALPN_PROXY_TEST_HOOK
fi
PROXY=$PROXY_PLAIN

echo "# a low open-files limit and the pipe pool"
# RLIMIT_NOFILE 64. 14 clients take 4 MB each from the ACME responder but do not read until
# told: each connection's backend-to-client direction holds a relay pipe while the client's
# socket is full. Once they have read everything and closed, those pipes stay in the worker's
# pool. 24 clients (a worker's cap at this limit) then send 3 bytes of a hello and are routed
# to the web server at the hello timeout: each needs a backend socket, and the descriptors are
# in the pool.
cat >"$LAB_DIR/slow.py" <<'PY'
import os, socket, sys, time
host, port, n, hello, go, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
	sys.argv[4], sys.argv[5], int(sys.argv[6])
data = open(hello, "rb").read()
conns = []
for i in range(n):
	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
	s.connect((host, port))
	s.sendall(data)
	s.shutdown(socket.SHUT_WR)
	conns.append(s)
print("connected %d" % n, flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
	time.sleep(0.05)
bad = 0
for s in conns:
	s.settimeout(30)
	got = 0
	while True:
		b = s.recv(1 << 16)
		if not b:
			break
		got += len(b)
	if got != want:
		bad += 1
	s.close()
print("short %d" % bad, flush=True)
sys.exit(1 if bad else 0)
PY
worker_pipes() { ls -l "/proc/$1/fd" 2>/dev/null | grep -c 'pipe:'; }
# 9 relay pipes besides the drain and log pipes
holds_pipes() { [ "$(worker_pipes "$1")" -ge 11 ]; }
bk_reset "$A" "$W"
bk_mode "$W" on-eof
if PROXY_WRAP="prlimit --nofile=64:64" proxy_start -workers 1 -grace 0.3 -hello-timeout 0.5; then
	bk_mode "$A" bulk 4000000
	w=$(proxy_workers)
	ip netns exec "$CLI" "$PYTHON" "$LAB_DIR/slow.py" "$SRV4" "$LISTEN_PORT" 14 \
		"$TESTDATA/openssl-acme.bin" "$LAB_DIR/go" 4000000 >"$LAB_DIR/slow.out" 2>&1 &
	slow=$!
	LAB_PIDS+=("$slow")
	check "14 connections whose clients do not read hold relay pipes" wait_for 20 holds_pipes "$w"
	touch "$LAB_DIR/go"
	wait "$slow"
	assert_eq "... and then get their 4 MB each" "0 short 0" "$? $(tail -n 1 "$LAB_DIR/slow.out")"
	echo "# the worker holds $(( $(worker_pipes "$w") - 2 )) pipes in its pool"
	bk_mode "$A" on-hello
	ip netns exec "$CLI" "$PYTHON" "$TESTHELPERS/holder.py" --connect "$HP4" --count 24 \
		--duration 30 --ready "$LAB_DIR/held" >"$LAB_DIR/holder.log" 2>&1 &
	holder=$!
	LAB_PIDS+=("$holder")
	check "24 clients with 3 bytes of a hello are accepted" wait_for 10 test -s "$LAB_DIR/held"
	wait_for 10 bk_has_conns "$W" 24
	assert_eq "all 24 reached the web server at the hello timeout" 24 "$(bk_conns "$W")"
	assert_eq "no client was refused for want of a descriptor" 0 \
		"$(log_count 'Too many open files')"
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	proxy_stop
	assert_eq "stop: exit 0" 0 "$PROXY_EXIT"
else
	not_ok "start with RLIMIT_NOFILE 64:64"
fi

lab_finish
