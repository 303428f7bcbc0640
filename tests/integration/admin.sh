#!/usr/bin/env bash
# The administrator's tools.
# - `check`, the preflight: a clean run says OK to every item and exits 0; each FAIL and WARN is
#   provoked in the lab (not root, a bad rule spec, the xtables lock held, another redirect of
#   port 443 after or before the proxy's, no such user, a missing or writable chroot, the listen
#   port taken, a fallback that is down, not TLS, or refuses the hello, no ACME responder, a
#   pidfile directory that does not exist, a running instance, a killed instance's rules and NAT
#   bindings) and exits 1 for a FAIL; and a check changes nothing: rules, tables, routing rules,
#   listeners, users and directories are the same after it, and it creates no legacy nat table
#   in a namespace that had none.
# - -max-time: the proxy stops by itself once it runs out, as `stop` would (redirect removed,
#   exit 0), and says why at warning level.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools openssl iptables-legacy ip6tables-legacy iptables-legacy-save nft setpriv \
	timeout
lab_private_xtables_lock

# ---- the lab's servers --------------------------------------------------------------------
netlab_cert "$LAB_DIR/web.key" "$LAB_DIR/web.pem" web.example.test 2>"$LAB_DIR/openssl.log" ||
	{ cat "$LAB_DIR/openssl.log"; exit 1; }
# The web server: TLS on 127.0.0.1:443 (the default fallback); and one that refuses our hello
# (TLS 1.2 with one cipher suite that check does not offer: a handshake_failure alert).
tls_server() {
	srv openssl s_server -quiet -accept "$1" -cert "$LAB_DIR/web.pem" -key "$LAB_DIR/web.key" \
		-naccept 1000 "${@:2}" </dev/null >>"$LAB_DIR/s_server.log" 2>&1 &
	LAB_PIDS+=($!)
}
tls_server 127.0.0.1:443
tls_server 127.0.0.1:8443 -tls1_2 -cipher AES128-SHA
backend_start ACME "$LAB_DIR/acme" 127.0.0.1:31443
backend_start WEB "$LAB_DIR/web" 127.0.0.1:8444 # speaks no TLS: "WEB" once a hello came
bk_mode "$LAB_DIR/web" on-hello
listening() { srv ss -Hltn "sport = :$1" | grep -q LISTEN; }
wait_for 10 listening 443 && wait_for 10 listening 8443 || { cat "$LAB_DIR/s_server.log"; exit 1; }

# run_check [VAR=VALUE...] [-- OPTIONS...]: `check` in the server namespace, under the lab's
# xtables lock, with the lab's pidfile, chroot and a worker user that exists (each can be
# overridden). Sets CMD_RC and CMD_OUT.
run_check() {
	local envs=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	srv timeout -k 5 60 $XT env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" "${envs[@]}" \
		"$PROXY" "${FW_ARGS[@]}" -user "${CHECK_USER:-nobody}" -chroot "$LAB_DIR/empty" "$@" \
		check >"$LAB_DIR/check.out" 2>&1 </dev/null
	CMD_RC=$?
	CMD_OUT=$(cat "$LAB_DIR/check.out")
	printf '%s\n' "== check ${envs[*]} $* -> $CMD_RC" "$CMD_OUT" >>"$LAB_DIR/commands.log"
}
# has LEVEL REGEX: the last check printed a LEVEL line matching REGEX.
has() { printf '%s\n' "$CMD_OUT" | grep -Eq "^$1 .*$2"; }
expect() { # expect DESCRIPTION LEVEL REGEX [EXIT]
	if has "$2" "$3" && { [ -z "${4:-}" ] || [ "$CMD_RC" = "$4" ]; }; then
		ok "$1"
	else
		not_ok "$1: wanted a $2 line matching '$3'${4:+ and exit $4}, got exit $CMD_RC:"$'\n'"$CMD_OUT"
	fi
}

# What a check must leave as it found it (the snapshots go to LAB_DIR/snap).
mkdir "$LAB_DIR/snap"
snapshot() {
	{
		srv iptables-legacy-save -t nat | grep -v '^#'
		srv ip6tables-legacy-save -t nat | grep -v '^#'
		srv nft list ruleset
		srv ip rule
		srv ip -6 rule
		srv ss -Hltn
		getent passwd | cut -d: -f1
		ls -A "$LAB_DIR" | grep -v -x -e snap -e check.out -e commands.log
		ls -la "$LAB_DIR/empty"
	} 2>&1
}

echo "# a clean run: every item OK"
snapshot >"$LAB_DIR/snap/before"
run_check
assert_eq "clean: exit 0" 0 "$CMD_RC"
assert_match "clean: a summary without WARN or FAIL" '^check: [0-9]+ OK, 0 WARN, 0 FAIL$' "$CMD_OUT"
for item in "running as root" "firewall $FIREWALL" "rule spec" "no other REDIRECT" \
	"worker user: nobody" "chroot directory" "listener \[::\]:$LISTEN_PORT" \
	"fallback 127.0.0.1:443: answers TLS" "ACME responder 127.0.0.1:31443: listening" \
	"pidfile" "no redirect rule left" "no stale NAT binding"; do
	expect "clean: $item" OK "$item"
done
snapshot >"$LAB_DIR/snap/after"
if cmp -s "$LAB_DIR/snap/before" "$LAB_DIR/snap/after"; then
	ok "a check changes no rule, table, routing rule, listener, user or file of the lab"
else
	not_ok "the check changed something: $(diff "$LAB_DIR/snap/before" "$LAB_DIR/snap/after")"
fi

echo "# no xtables lock file: check creates none"
# A private, empty /run (a tmpfs in a mount namespace of its own) where no lock file exists.
srv unshare --mount --propagation private sh -c 'mount -t tmpfs none /run || exit 9
	ACME_ALPN_PROXY_PIDFILE=/run/check.pid "$@" check >/run/out 2>&1
	[ -e /run/xtables.lock ] && exit 8
	grep -q "^check: " /run/out' sh "$PROXY" "${FW_ARGS[@]}" -user nobody -chroot "$LAB_DIR/empty"
assert_eq "a check where /run/xtables.lock does not exist leaves none (exit 8 if it made one)" 0 $?

echo "# a fresh namespace: no legacy nat table appears"
FRESH=aap-$LAB_TEST-$$-fresh
lab_add_ns "$FRESH"
ip netns exec "$FRESH" timeout 30 env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/fresh.pid" \
	"$PROXY" "${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" check >"$LAB_DIR/fresh.out" 2>&1
assert_eq "no nat table in the fresh namespace after a check" "" \
	"$(ip netns exec "$FRESH" cat /proc/net/ip_tables_names /proc/net/ip6_tables_names \
		2>/dev/null | grep -x nat)"

echo "# each FAIL and WARN"
cp "$PROXY" "$LAB_DIR/proxy-copy" && chmod 755 "$LAB_DIR/proxy-copy"
srv timeout 30 setpriv --reuid=65534 --regid=65534 --clear-groups "$LAB_DIR/proxy-copy" \
	"${FW_ARGS[@]}" check >"$LAB_DIR/check.out" 2>&1
CMD_RC=$? CMD_OUT=$(cat "$LAB_DIR/check.out")
expect "not root: FAIL, exit 1" FAIL "not running as root" 1

run_check ACME_ALPN_PROXY_RULESPEC='-p udp --dport 443 -j REDIRECT --to-port 21443'
expect "a rule spec the parser refuses: FAIL, exit 1" FAIL "ACME_ALPN_PROXY_RULESPEC" 1

if [ "$FIREWALL" = iptables ]; then
	# The holder lets go once LAB_DIR/unlock exists (flock's child holds the lock, not flock).
	srv $XT flock /run/xtables.lock sh -c "while [ ! -e '$LAB_DIR/unlock' ]; do sleep 0.1; done" &
	HOLDER=$!
	LAB_PIDS+=($HOLDER)
	wait_for 5 lab_lock_held || not_ok "the lock holder did not take the lab's lock"
	run_check
	expect "the xtables lock held: WARN" WARN "xtables lock"
	expect "the lock held: the tables not read, a WARN, not a FAIL" WARN \
		"firewall iptables: the nat tables not read while the xtables lock is held" 0
	touch "$LAB_DIR/unlock"
	lock_free() { ! lab_lock_held; }
	wait_for 10 lock_free || not_ok "the lock holder did not let go"
	wait "$HOLDER" 2>/dev/null
fi

srv iptables-legacy -t nat -A PREROUTING -p tcp --dport 443 -j DNAT --to-destination "$SRV4:8443"
run_check
expect "a legacy DNAT of port 443 after the proxy's rule: WARN" WARN "IPv4 nat PREROUTING rule 1 \(DNAT\)"
srv iptables-legacy -t nat -F PREROUTING
srv nft -f - <<'EOF'
table ip admin_test {
	chain early { type nat hook prerouting priority -150; tcp dport 443 redirect to :8443; }
	chain late { type nat hook prerouting priority 0; tcp dport 443 redirect to :8443; }
	chain other_port { type nat hook prerouting priority -150; tcp dport 80 redirect to :8443; }
}
EOF
run_check
expect "an nftables redirect of port 443 ahead of the proxy's: FAIL, exit 1" FAIL \
	"nftables ip admin_test chain early.*runs before the proxy" 1
expect "an nftables redirect of port 443 after the proxy's: WARN" WARN \
	"nftables ip admin_test chain late"
if has '(WARN|FAIL)' 'nftables ip admin_test chain other_port'; then
	not_ok "a redirect of port 80 was reported as one of port 443"
else
	ok "a redirect of another port is not reported"
fi
srv nft delete table ip admin_test

CHECK_USER=no-such-user-here run_check
expect "-user that does not exist: FAIL" FAIL "worker user: no such user" 1
run_check -- -chroot "$LAB_DIR/not-there"
expect "a chroot directory that does not exist: WARN" WARN "chroot directory .*does not exist"
[ -e "$LAB_DIR/not-there" ] && not_ok "check created the chroot directory" ||
	ok "check did not create the chroot directory"
mkdir -m 777 "$LAB_DIR/open"
run_check -- -chroot "$LAB_DIR/open"
expect "a chroot directory anyone can write: FAIL" FAIL "chroot directory" 1

backend_start TAKEN "$LAB_DIR/taken" "[::]:$LISTEN_PORT"
run_check
expect "the listen port taken: FAIL" FAIL "listener .*in use" 1
kill "$BACKEND_PID"
wait_for 5 sh -c "! ip netns exec $SRV ss -Hltn 'sport = :$LISTEN_PORT' | grep -q LISTEN"

run_check -- -fallback 127.0.0.1:8442
expect "a fallback nobody listens on: FAIL" FAIL "fallback 127.0.0.1:8442: cannot connect" 1
run_check -- -fallback 127.0.0.1:8444
expect "a fallback that does not speak TLS: FAIL" FAIL "fallback 127.0.0.1:8444: .*not TLS" 1
bk_mode "$LAB_DIR/web" silent
run_check -- -fallback 127.0.0.1:8444
expect "a fallback that answers nothing: FAIL" FAIL "fallback 127.0.0.1:8444: .*with nothing" 1
bk_mode "$LAB_DIR/web" on-hello
run_check -- -fallback 127.0.0.1:8443
expect "a fallback that refuses the hello: WARN (an alert)" WARN "fallback 127.0.0.1:8443: .*alert 40"
echo "# check with -proxy-protocol and -transparent"
# A web server behind a PROXY protocol reader: it records the header, then relays to the TLS
# server on 127.0.0.1:443.
srv "$PYTHON" - "$LAB_DIR/pp-header" <<'PY' >>"$LAB_DIR/pp.log" 2>&1 &
import socket, sys, threading
out = sys.argv[1]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 8445)); ls.listen(8)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
while True:
    c, _ = ls.accept()
    data = b""
    while b"\r\n" not in data and len(data) < 16:
        data += c.recv(1)
    if data.startswith(b"PROXY "):
        while not data.endswith(b"\r\n"): data += c.recv(1)
        hdr, rest = data, b""
    else:
        while len(data) < 16: data += c.recv(16 - len(data))
        n = int.from_bytes(data[14:16], "big")
        while len(data) < 16 + n: data += c.recv(16 + n - len(data))
        hdr, rest = data, b""
    open(out, "ab").write(hdr.hex().encode() + b"\n")
    u = socket.create_connection(("127.0.0.1", 443))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
PY
LAB_PIDS+=($!)
wait_for 10 listening 8445 || { cat "$LAB_DIR/pp.log"; exit 1; }
for v in v1 v2; do
	rm -f "$LAB_DIR/pp-header"
	run_check -- -proxy-protocol "$v" -fallback 127.0.0.1:8445
	expect "-proxy-protocol $v: a header, then the hello gets a ServerHello" OK \
		"fallback 127.0.0.1:8445: answers TLS \(a ServerHello\) after a PROXY $v header"
done
assert_match "the v2 header check sent has the v2 signature" '^0d0a0d0a000d0a515549540a21' \
	"$(cat "$LAB_DIR/pp-header" 2>/dev/null)"
run_check -- -proxy-protocol v1
expect "-proxy-protocol to a web server that does not expect it: FAIL" FAIL \
	"fallback 127.0.0.1:443: " 1
run_check -- -transparent
expect "-transparent: IPv4 can take the visitor's address, policy routing there" OK \
	"-transparent, IPv4: sockets may take"
expect "-transparent: IPv6 too" OK "-transparent, IPv6: sockets may take"

run_check -- -alpn 127.0.0.1:31444
expect "no ACME responder: WARN, and exit 0 (only warnings)" WARN "ACME responder" 0

run_check ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/no-such-dir/proxy.pid"
expect "a pidfile whose directory does not exist: FAIL" FAIL "pidfile" 1

proxy_start -workers 1 -fallback 127.0.0.1:8444 || exit 1
run_check
expect "an instance running: WARN" WARN "an instance is running \(pid $PROXY_PID\)"
expect "an instance running: its listener is no FAIL, and nothing else fails" OK \
	"listener .*in use by the running instance \(pid $PROXY_PID\)" 0
echo "# a killed instance's leftovers"
web_through() {
	probe --connect "$SRV4:443" --file "$TESTDATA/curl.bin" --expect 'WEB\n' --timeout 5 &&
		[ "$PROBE_RC" = 0 ]
}
check "a request through the proxy" web_through
kill -KILL "$PROXY_PID" $(proxy_workers)
proxy_reap
wait_for 5 sh -c "! ip netns pids $SRV | xargs -r ps -o comm= -p | grep -q acme-alpn"
run_check
if [ "$FIREWALL" = nftables ]; then
	expect "nftables: a killed instance leaves no rule" OK "no redirect rule left"
else
	expect "iptables: a killed instance's rules: FAIL" FAIL "redirect rules? of port 443 left" 1
fi
expect "a killed instance's NAT bindings: WARN" WARN "stale NAT binding"
proxy_cmd stop
assert_eq "stop clears them: exit 0" 0 "$CMD_RC"
run_check
expect "after stop: no rule left" OK "no redirect rule left"
expect "after stop: no stale NAT binding" OK "no stale NAT binding"

echo "# -max-time"
proxy_cmd -max-time -1 start
assert_eq "-max-time -1: exit 2" 2 "$CMD_RC"
proxy_start -workers 1 -grace 0.2 -max-time 1.5 -fallback 127.0.0.1:8444 || exit 1
check "a request while it runs" web_through
assert_match "the log says when the timer fires" '\-max-time: stopping by itself in 1.5 s' \
	"$(cat "$LAB_DIR/proxy.log")"
if wait_for 15 proxy_gone; then
	proxy_reap
	assert_eq "-max-time 1.5: it stopped by itself, exit 0" 0 "$PROXY_EXIT"
else
	not_ok "-max-time 1.5: still running after 15 s"
	proxy_stop
fi
assert_match "it said why, at warning level" 'warning: running for 1.5 s \(-max-time\)' \
	"$(cat "$LAB_DIR/proxy.log")"
assert_eq "its redirect is gone (IPv4)" 0 "$(fw_redirects 4)"
assert_eq "its redirect is gone (IPv6)" 0 "$(fw_redirects 6)"
assert_eq "its conntrack hold is gone" "" "$(fw_holds)"
assert_match "port 443 is not redirected any more (nothing listens there from outside)" \
	'^ERROR' "$(ask "$SRV4" "$TESTDATA/curl.bin")"
lab_finish
