# Integration test lab for acme-alpn-proxy (sourced by the test scripts; needs bash).
#
# Each test run builds its own lab: two network namespaces (aap-TEST-PID-srv, aap-TEST-PID-cli)
# joined by a veth pair with MTU 1500, addresses from 198.51.100.0/24 and 2001:db8:1::/64,
# loopback up in both: the lab of netlab.sh (beside this file), which tools/demo.sh uses too.
# Nothing touches the host's own network or firewall: the proxy runs in the server namespace,
# so the REDIRECT rules it installs live in that namespace's nat table and disappear with it.
# A trap kills every process left in the namespaces and deletes them, whatever way the test
# ends.
#
# Environment (automake sets all four; by hand they default to this source tree and to a
# build directory that is the current directory):
#   PROXY     the acme-alpn-proxy binary         TESTDATA  tests/data (captured ClientHellos)
#   TESTLIB   this file                          TESTHELPERS tests/helpers (python3 helpers)
#   KEEP_LAB=1 keeps the lab's temporary directory (logs, recorded bytes) for a look after.
#   FIREWALL=nftables runs every proxy with -firewall nftables (default: iptables); the
#             tests/integration/*-nft.sh wrappers run a test that way.
#   CI=true   a missing tool is a failure, not a skip.

LAB_TEST=${LAB_TEST:-$(basename "$0" .sh)}
LAB_SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/integration/netlab.sh
. "$(dirname "${BASH_SOURCE[0]}")/netlab.sh"
: "${TESTDATA:=$LAB_SRCDIR/tests/data}"
: "${TESTHELPERS:=$LAB_SRCDIR/tests/helpers}"
: "${TESTLIB:=$LAB_SRCDIR/tests/integration/lib.sh}"
# The Python helpers, and the tests' inline Python, import the module lab from there.
export PYTHONPATH=$TESTHELPERS${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${PROXY:-}" ]; then
	if [ -x src/acme-alpn-proxy ]; then
		PROXY=$PWD/src/acme-alpn-proxy
	else
		PROXY=$LAB_SRCDIR/src/acme-alpn-proxy
	fi
fi
case $PROXY in /*) ;; *) PROXY=$PWD/$PROXY ;; esac

# Addresses of the lab.
SRV4=$NETLAB_SRV4
CLI4=$NETLAB_CLI4
SRV6=$NETLAB_SRV6
CLI6=$NETLAB_CLI6
LISTEN_PORT=21443

# The proxy's firewall backend: proxy_start and proxy_cmd pass FW_ARGS, and the fw_* helpers
# below look for the rules where that backend puts them.
FIREWALL=${FIREWALL:-iptables}
case $FIREWALL in
iptables|nftables) ;;
*) echo "FIREWALL=$FIREWALL: expected iptables or nftables" >&2; exit 1 ;;
esac
FW_ARGS=(-firewall "$FIREWALL")

T_PASS=0
T_FAIL=0
LAB_PIDS=()
# Namespaces a test adds to the lab (lab_add_ns): the cleanup deletes them too.
LAB_EXTRA_NS=()

# ---- skipping ---------------------------------------------------------------------------------

lab_skip() {
	echo "SKIP: $*"
	exit 77
}

# A missing prerequisite skips the test, except in CI where it must fail.
lab_missing() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL: $* (CI=true: a test may not skip)" >&2
		exit 1
	fi
	lab_skip "$*"
}

lab_require_root() {
	if [ "$(id -u)" != 0 ]; then
		lab_skip "needs root: it creates network namespaces and the proxy installs" \
			"firewall rules and drops privileges"
	fi
}

lab_require_tools() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 ||
			lab_missing "needs the tool '$t', which is not installed"
	done
}

# python3 through a version manager's shim costs 200 ms a start; resolve the interpreter once.
lab_find_python() {
	if [ -z "${PYTHON:-}" ]; then
		command -v python3 >/dev/null 2>&1 ||
			lab_missing "needs python3, which is not installed"
		PYTHON=$(python3 -c 'import sys; print(sys.executable)') ||
			lab_missing "python3 does not run"
	fi
}

# ---- results ----------------------------------------------------------------------------------

ok() {
	T_PASS=$((T_PASS + 1))
	echo "ok - $*"
}

not_ok() {
	T_FAIL=$((T_FAIL + 1))
	echo "not ok - $*"
}

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
	local desc=$1
	shift
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc = 0 ]; then
		ok "$desc"
	else
		not_ok "$desc: expected success of '$*', got exit $rc" \
			"${out:+: $(echo "$out" | tail -n 5)}"
	fi
}

# assert_eq DESCRIPTION EXPECTED GOT
assert_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1: expected '$2', got '$3'"
	fi
}

# assert_match DESCRIPTION EXTENDED-REGEX TEXT
assert_match() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		ok "$1"
	else
		not_ok "$1: expected text matching /$2/, got '$(printf '%s' "$3" | head -c 600)'"
	fi
}

# assert_lt DESCRIPTION VALUE BOUND [UNIT]: integers.
assert_lt() {
	if [ "$2" -lt "$3" ]; then
		ok "$1 ($2${4:-} < $3${4:-})"
	else
		not_ok "$1: expected < $3${4:-}, got $2${4:-}"
	fi
}

# assert_ge DESCRIPTION VALUE BOUND [UNIT]
assert_ge() {
	if [ "$2" -ge "$3" ]; then
		ok "$1 ($2${4:-} >= $3${4:-})"
	else
		not_ok "$1: expected >= $3${4:-}, got $2${4:-}"
	fi
}

# assert_same_file DESCRIPTION EXPECTED-FILE GOT-FILE
assert_same_file() {
	if [ ! -f "$3" ]; then
		not_ok "$1: expected the file $3, which does not exist"
	elif cmp -s "$2" "$3"; then
		ok "$1"
	else
		not_ok "$1: expected $(stat -c %s "$2") bytes equal to $2, got $(stat -c %s "$3")" \
			"bytes in $3 ($(cmp "$2" "$3" 2>&1 | head -n 1))"
	fi
}

# Prints the final line; the exit status says whether every check passed.
lab_finish() {
	echo "$T_PASS passed, $T_FAIL failed"
	if [ "$T_FAIL" != 0 ]; then
		exit 1
	fi
	exit 0
}

# ---- time and polling -------------------------------------------------------------------------

# now_ms and wait_for SECONDS COMMAND... come from netlab.sh.

# ---- the lab ----------------------------------------------------------------------------------

srv() { ip netns exec "$SRV" "$@"; }
cli() { ip netns exec "$CLI" "$@"; }

lab_cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	netlab_kill "${SRV:-}" "${CLI:-}" "${LAB_EXTRA_NS[@]}"
	for pid in "${LAB_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null
	done
	wait 2>/dev/null
	netlab_del "${SRV:-}" "${CLI:-}" "${LAB_EXTRA_NS[@]}"
	# A sanitizer build reports on stderr, which is the proxy's log: a report fails the test
	# even when every check passed (a worker that died of it was replaced in silence).
	if [ -n "${LAB_DIR:-}" ] && [ -d "$LAB_DIR" ] &&
		grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$LAB_DIR"/*.log \
			>/dev/null 2>&1; then
		echo "not ok - a sanitizer reported an error in the proxy's log:"
		grep -hE -A30 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$LAB_DIR"/*.log | head -n 60
		[ "$rc" = 0 ] && rc=1
	fi
	if [ -n "${LAB_DIR:-}" ] && [ -d "$LAB_DIR" ]; then
		if [ "$T_FAIL" != 0 ] && [ -f "$LAB_DIR/proxy.log" ]; then
			echo "---- last lines of the proxy's log ($LAB_DIR/proxy.log)"
			tail -n 40 "$LAB_DIR/proxy.log"
		fi
		if [ "${KEEP_LAB:-}" = 1 ]; then
			echo "lab directory kept: $LAB_DIR"
		else
			rm -rf "$LAB_DIR"
		fi
	fi
	exit $rc
}

# Builds the lab. Sets SRV, CLI (namespace names), LAB_DIR (temporary directory).
lab_setup() {
	lab_require_root
	lab_require_tools ip ss
	lab_find_python
	[ "$FIREWALL" = nftables ] && lab_require_tools nft
	SRV=aap-$LAB_TEST-$$-srv
	CLI=aap-$LAB_TEST-$$-cli
	trap lab_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/aap-$LAB_TEST.XXXXXX") || exit 1
	chmod 755 "$LAB_DIR"
	# The workers' chroot: an empty root-owned directory (/var/empty may not exist here).
	mkdir -m 755 "$LAB_DIR/empty"
	ip netns add "$SRV" || { echo "cannot create namespace $SRV" >&2; exit 1; }
	ip netns add "$CLI" || { echo "cannot create namespace $CLI" >&2; exit 1; }
	netlab_link "$SRV" "$CLI" || exit 1
}

# lab_add_ns NAME: one more namespace for this test (loopback up), deleted by the cleanup with
# every process in it, whatever way the test ends. Registered before it is made.
lab_add_ns() {
	LAB_EXTRA_NS+=("$1")
	ip netns add "$1" || { echo "cannot create namespace $1" >&2; exit 1; }
	ip -n "$1" link set lo up
}

# lab_private_xtables_lock: XT becomes a command prefix that runs a command in a new mount
# namespace where a file of the lab ($LAB_DIR/xtables.lock) covers /run/xtables.lock, so that a
# test can hold "the" lock (or see a program take it) without ever blocking the host's iptables.
# The bind mount needs a file to cover: iptables creates the same one.
lab_private_xtables_lock() {
	lab_require_tools unshare flock mount
	: >"$LAB_DIR/xtables.lock"
	[ -e /run/xtables.lock ] || : >/run/xtables.lock
	cat >"$LAB_DIR/xtlock" <<EOW
#!/bin/sh
mount --bind "$LAB_DIR/xtables.lock" /run/xtables.lock || exit 1
exec "\$@"
EOW
	chmod 755 "$LAB_DIR/xtlock"
	XT="unshare --mount --propagation private $LAB_DIR/xtlock"
}

# True while a process holds the lab's xtables lock.
lab_lock_held() { ! flock -n "$LAB_DIR/xtables.lock" true; }

# ---- backends ---------------------------------------------------------------------------------

# backend_start NAME DIR LISTEN...: a recording backend (tests/helpers/backend.py) in the server
# namespace. Sets BACKEND_PID.
backend_start() {
	local name=$1 dir=$2 l
	shift 2
	local args=()
	for l in "$@"; do args+=(--listen "$l"); done
	mkdir -p "$dir"
	rm -f "$dir/ready"
	# ip netns exec execs the command: $! is the backend's own pid.
	ip netns exec "$SRV" "$PYTHON" "$TESTHELPERS/backend.py" --name "$name" --dir "$dir" \
		--ready "$dir/ready" "${args[@]}" >>"$dir/backend.log" 2>&1 &
	BACKEND_PID=$!
	LAB_PIDS+=("$BACKEND_PID")
	if ! wait_for 10 test -s "$dir/ready"; then
		echo "backend $name did not start listening on $*:" >&2
		cat "$dir/backend.log" >&2
		exit 1
	fi
}

# bk_mode DIR MODE...: how the backend treats its next connections (see backend.py).
bk_mode() {
	local dir=$1
	shift
	echo "$*" >"$dir/mode"
}

# bk_reset DIR...: forget the recorded connections.
bk_reset() {
	local d
	for d in "$@"; do rm -f "$d"/c*.bin "$d"/c*.done; done
}

bk_conns() { local f n=0; for f in "$1"/c*.bin; do [ -e "$f" ] && n=$((n + 1)); done; echo $n; }
bk_done() { local f n=0; for f in "$1"/c*.done; do [ -e "$f" ] && n=$((n + 1)); done; echo $n; }
bk_has_done() { [ "$(bk_done "$1")" -ge "$2" ]; }
bk_has_conns() { [ "$(bk_conns "$1")" -ge "$2" ]; }
# The oldest connection's file name without extension.
bk_first() { local f; f=$(ls "$1"/c*.bin 2>/dev/null | head -n 1); echo "${f%.bin}"; }
# The newest connection's file name without extension.
bk_last() { local f; f=$(ls "$1"/c*.bin 2>/dev/null | tail -n 1); echo "${f%.bin}"; }
# bk_meta BASE KEY: a value from the .done JSON
bk_meta() {
	"$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
		"$1.done" "$2" 2>/dev/null
}

# ---- probes -----------------------------------------------------------------------------------

# probe ARGS...: tests/helpers/probe.py from the client namespace; output in PROBE_OUT, exit
# status in PROBE_RC, duration in PROBE_MS.
probe() {
	local t0
	t0=$(now_ms)
	PROBE_OUT=$(cli "$PYTHON" "$TESTHELPERS/probe.py" "$@" 2>&1)
	PROBE_RC=$?
	PROBE_MS=$(( $(now_ms) - t0 ))
}

# probe_bg OUT ARGS...: tests/helpers/probe.py from the client namespace in the background,
# its output in the file OUT. Sets PROBE_PID (ip netns exec execs the probe: its own pid).
probe_bg() {
	local out=$1
	shift
	ip netns exec "$CLI" "$PYTHON" "$TESTHELPERS/probe.py" "$@" >"$out" 2>&1 &
	PROBE_PID=$!
}

# probe_summary REGEX: the last probe's output lines that match, on one line.
probe_summary() {
	printf '%s\n' "$PROBE_OUT" | grep -E -- "$1" | tr '\n' ' '
}

# probe_val KEY: a value from the last probe's output.
probe_val() {
	printf '%s\n' "$PROBE_OUT" | sed -n "s/^$1 //p" | head -n 1
}

# banner_backends: tests/helpers/churn.py serve in the server namespace, answering with a banner
# once it holds a whole TLS record: WEB on [::]:443 (both families), ACME on 127.0.0.1:31443
# (it counts what it answered in LAB_DIR/acme.count).
banner_backends() {
	srv "$PYTHON" "$TESTHELPERS/churn.py" serve --host :: --port 443 --banner WEB \
		--ready "$LAB_DIR/web.ready" >"$LAB_DIR/web.log" 2>&1 &
	LAB_PIDS+=($!)
	srv "$PYTHON" "$TESTHELPERS/churn.py" serve --host 127.0.0.1 --port 31443 --banner ACME \
		--count-file "$LAB_DIR/acme.count" --ready "$LAB_DIR/acme.ready" \
		>"$LAB_DIR/acme.log" 2>&1 &
	LAB_PIDS+=($!)
	wait_for 10 test -e "$LAB_DIR/web.ready" -a -e "$LAB_DIR/acme.ready" ||
		{ echo "backends did not start" >&2; cat "$LAB_DIR"/*.log >&2; exit 1; }
}

# ask ADDR HELLO: sends the captured ClientHello HELLO from the client namespace to port 443
# of ADDR and prints the first word the server answers (the banner of tests/helpers/churn.py
# serve: WEB, ACME...), EMPTY, or ERROR and the error.
ask() {
	cli "$PYTHON" - "$1" "$2" <<'PY'
import socket, sys
from lab import recv_all
host, path = sys.argv[1], sys.argv[2]
hello = open(path, "rb").read()
try:
    s = socket.create_connection((host, 443), timeout=5)
    s.sendall(hello)
    data = recv_all(s)
    print(data.split()[0].decode() if data else "EMPTY")
except OSError as e:
    print("ERROR", e)
PY
}

# both_families DESCRIPTION HELLO EXPECTED: ask answers EXPECTED over IPv4 and over IPv6.
both_families() {
	assert_eq "$1 (IPv4)" "$3" "$(ask "$SRV4" "$2")"
	assert_eq "$1 (IPv6)" "$3" "$(ask "$SRV6" "$2")"
}

# URL-style host for ADDR (brackets around IPv6).
hostport() {
	case $1 in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac
}

# ---- the proxy --------------------------------------------------------------------------------

# proxy_cmd ARGS...: runs the proxy in the server namespace (not in the background), with the
# lab's pidfile. Sets CMD_RC (exit status), CMD_STDOUT, CMD_ERR (stderr), CMD_OUT (both) and
# CMD_MS (duration). It is killed after CMD_TIMEOUT seconds (default 60; then CMD_RC is 124).
proxy_cmd() {
	local t0
	t0=$(now_ms)
	# Files, not a pipe: a daemon that kept our stdout open would make $(...) wait for it.
	srv timeout -k 5 "${CMD_TIMEOUT:-60}" env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" \
		"$PROXY" "${FW_ARGS[@]}" "$@" >"$LAB_DIR/cmd.out" 2>"$LAB_DIR/cmd.err" </dev/null
	CMD_RC=$?
	CMD_MS=$(( $(now_ms) - t0 ))
	CMD_STDOUT=$(cat "$LAB_DIR/cmd.out")
	CMD_ERR=$(cat "$LAB_DIR/cmd.err")
	CMD_OUT=$CMD_STDOUT${CMD_ERR:+
$CMD_ERR}
	printf '%s\n' "== proxy $* -> $CMD_RC ($CMD_MS ms)" "$CMD_OUT" >>"$LAB_DIR/commands.log"
}

# proxy_run [NAME=VALUE...] ARGS...: the proxy ($PROXY; PROXY=$PROXY_HOOKS proxy_run for the
# test hooks) in the server namespace with the lab's pidfile (ACME_ALPN_PROXY_PIDFILE=... names
# another) and the environment given; stdout and stderr together in CMD_OUT, the exit status in
# CMD_RC. Unlike proxy_cmd it adds neither FW_ARGS nor a timeout: the caller passes what it wants.
proxy_run() {
	local envs=()
	while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do
		envs+=("$1")
		shift
	done
	CMD_OUT=$(srv env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" "${envs[@]}" "$PROXY" "$@" \
		2>&1)
	CMD_RC=$?
	return "$CMD_RC"
}

proxy_listening() {
	srv ss -Hltn "sport = :$LISTEN_PORT" | grep -q LISTEN
}

proxy_ready() {
	grep -q ready "$LAB_DIR/proxy.log" && proxy_listening
}

# proxy_start [OPTIONS...]: the proxy in the foreground (in the background of this shell),
# logging to LAB_DIR/proxy.log; returns once it logged "ready" and listens. Sets PROXY_PID.
# Options come before `start`; -chroot points at an empty directory of the lab.
proxy_start() {
	# Keep what earlier instances logged (proxy-old.log), and look for "ready" in the new one.
	if [ -f "$LAB_DIR/proxy.log" ]; then
		cat "$LAB_DIR/proxy.log" >>"$LAB_DIR/proxy-old.log"
	fi
	: >"$LAB_DIR/proxy.log"
	# ip netns exec and env exec the command: $! is the proxy's own pid. PROXY_WRAP is a
	# command prefix that execs too (setsid, prlimit --nofile=N:N).
	ip netns exec "$SRV" ${PROXY_WRAP:-} env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" \
		"$PROXY" "${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" "$@" start >>"$LAB_DIR/proxy.log" 2>&1 &
	PROXY_PID=$!
	LAB_PIDS+=("$PROXY_PID")
	local limit=$(( $(now_ms) + 10000 ))
	while ! proxy_ready; do
		if ! kill -0 "$PROXY_PID" 2>/dev/null; then
			wait "$PROXY_PID"
			echo "the proxy exited ($?) before it was ready:" >&2
			cat "$LAB_DIR/proxy.log" >&2
			return 1
		fi
		if [ "$(now_ms)" -ge "$limit" ]; then
			echo "the proxy was not ready within 10 s:" >&2
			cat "$LAB_DIR/proxy.log" >&2
			return 1
		fi
		sleep 0.05
	done
}

# proxy_stop: `stop -wait`, then reaps the foreground process. PROXY_EXIT is its status.
proxy_stop() {
	proxy_cmd stop -wait
	proxy_reap
}

# proxy_reap [SECONDS]: waits for the foreground process to exit; sets PROXY_EXIT (or kills it
# and sets PROXY_EXIT=timeout).
proxy_reap() {
	if [ -z "${PROXY_PID:-}" ]; then
		PROXY_EXIT=none
		return
	fi
	if wait_for "${1:-10}" proxy_gone; then
		wait "$PROXY_PID" 2>/dev/null
		PROXY_EXIT=$?
	else
		kill -KILL "$PROXY_PID" 2>/dev/null
		wait "$PROXY_PID" 2>/dev/null
		PROXY_EXIT=timeout
	fi
	PROXY_PID=
}

# True once the process is gone or a zombie (our child, not yet reaped).
pid_gone() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
	[ -z "$st" ] || [ "$st" = Z ]
}
proxy_gone() { pid_gone "$PROXY_PID"; }

# The worker pids: the children of the proxy's parent process.
proxy_workers() {
	local pid=${1:-$PROXY_PID}
	cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . | sort -n
}

# ---- the proxy's rules, whichever backend ----------------------------------------------------

# fw_rules: every rule the proxy may have put in the server namespace, one a line. iptables: the
# `-S` lines of the legacy nat PREROUTING chains, each after "4 " or "6 ". nftables: the rules of
# the tables acme_alpn_proxy_* as nft lists them, each after the family it applies to ("4 ",
# "6 ", or "46 " for both: one inet rule serves both unless it names one).
fw_rules() {
	if [ "$FIREWALL" = nftables ]; then
		srv nft list ruleset 2>/dev/null | awk '
			/^table inet acme_alpn_proxy_[0-9]+ / { ours = 1; next }
			/^table / { ours = 0 }
			ours && /(redirect|ct state|counter)/ {
				sub(/^[ \t]+/, "")
				f = "46"
				if ($0 ~ /meta nfproto ipv4|(^| )ip (saddr|daddr) /) f = "4"
				if ($0 ~ /meta nfproto ipv6|(^| )ip6 (saddr|daddr) /) f = "6"
				print f " " $0
			}'
	else
		srv iptables-legacy -t nat -S PREROUTING 2>/dev/null | sed 's/^/4 /'
		srv ip6tables-legacy -t nat -S PREROUTING 2>/dev/null | sed 's/^/6 /'
	fi
}

# fw_redirects 4|6: how many of the proxy's REDIRECT rules apply to that family.
fw_redirects() {
	fw_rules | awk -v fam="$1" '
		index($1, fam) && /acme-alpn-proxy/ && !/conntrack hold/ &&
		(/-j REDIRECT/ || /redirect to/) { n++ } END { print n + 0 }'
}

# fw_holds: the conntrack hold rules, one a line.
fw_holds() {
	fw_rules | grep 'conntrack hold pid'
}
