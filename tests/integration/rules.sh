#!/usr/bin/env bash
# Issue 4: port 443 taken over through libiptc REDIRECT rules, in a lab of two network
# namespaces. Routing by ALPN through port 443 while running, straight to the web server before
# and after; the rule exactly once; zero failed connections over 20 start/stop cycles under a
# churn of new connections; crash recovery; a bad rulespec installs nothing; a failed IPv6
# install rolls IPv4 back. With FIREWALL=nftables (rules-nft.sh) the same in the proxy's owner
# table, but for what differs by design: a crash leaves nothing behind, and there is no
# IPv6 table to fail apart from IPv4.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools iptables-legacy ip6tables-legacy

ACME_HELLO=$TESTDATA/openssl-acme.bin
WEB_HELLO=$TESTDATA/chromium.bin
CYCLES=${CYCLES:-20}
RATE=${RATE:-600}

banner_backends

# Our REDIRECT rules in the server namespace that apply to IPv4, to IPv6 (lib.sh, either
# backend).
rules4() { fw_redirects 4; }
rules6() { fw_redirects 6; }
# The conntrack hold rules (they keep redirected connections translated through the drain).
holds() { fw_holds; }
# Hold rules per instance: one per family with libiptc, one inet rule with nftables.
if [ "$FIREWALL" = nftables ]; then HOLDS_PER=1; else HOLDS_PER=2; fi

# ---- before, during, after ----
both_families "before start: an acme-tls/1 hello to port 443 reaches the web server" \
	"$ACME_HELLO" WEB
proxy_start -workers 2 || exit 1
assert_eq "after start: one IPv4 rule" 1 "$(rules4)"
assert_eq "after start: one IPv6 rule" 1 "$(rules6)"
if [ "$FIREWALL" = nftables ]; then
	assert_match "the rule is the spec, first in the table's chain" \
		'^46 tcp dport 443 tcp flags syn / fin,syn,rst,ack fib daddr type local counter packets [0-9]+ bytes [0-9]+ redirect to :21443 comment "acme-alpn-proxy"$' \
		"$(fw_rules | sed -n 1p)"
else
	assert_match "the IPv4 rule is the spec, at the head of PREROUTING" \
		"^-A PREROUTING -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"acme-alpn-proxy pid $PROXY_PID\" -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 21443\$" \
		"$(srv iptables-legacy -t nat -S PREROUTING | sed -n 2p)"
	assert_match "the IPv6 rule is the spec, at the head of PREROUTING" \
		"^-A PREROUTING -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"acme-alpn-proxy pid $PROXY_PID\" -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 21443\$" \
		"$(srv ip6tables-legacy -t nat -S PREROUTING | sed -n 2p)"
fi
both_families "while running: an acme-tls/1 hello to port 443 reaches the ACME responder" \
	"$ACME_HELLO" ACME
both_families "while running: a browser hello to port 443 reaches the web server" \
	"$WEB_HELLO" WEB
proxy_cmd start
assert_eq "a second start says it runs already and exits 0" 0 "$CMD_RC"
assert_eq "after two starts: still one IPv4 rule" 1 "$(rules4)"
assert_eq "after two starts: still one IPv6 rule" 1 "$(rules6)"
assert_eq "while running: one conntrack hold rule per family" "$HOLDS_PER" "$(holds | wc -l)"
proxy_stop
assert_eq "stop -wait: the proxy exited 0" 0 "$PROXY_EXIT"
assert_eq "after stop: no IPv4 rule" 0 "$(rules4)"
assert_eq "after stop: no IPv6 rule" 0 "$(rules6)"
assert_eq "after stop -wait: no conntrack hold rule" 0 "$(holds | wc -l)"
both_families "after stop: an acme-tls/1 hello reaches the web server again" "$ACME_HELLO" WEB

# ---- a rule inserted by someone else before ours does not shadow it ----
# (nftables: our chain runs at dstnat - 10, ahead of the legacy nat table too.)
srv iptables-legacy -t nat -A PREROUTING -p tcp --dport 443 -j DNAT --to-destination 127.0.0.9:443
proxy_start -workers 2 || exit 1
assert_eq "inserted at the head: an earlier DNAT rule does not shadow it" ACME \
	"$(ask "$SRV4" "$ACME_HELLO")"
proxy_stop
assert_eq "the other tool's DNAT rule is left alone" 1 \
	"$(srv iptables-legacy -t nat -S PREROUTING | grep -c DNAT)"
srv iptables-legacy -t nat -D PREROUTING -p tcp --dport 443 -j DNAT --to-destination 127.0.0.9:443

# ---- zero downtime: new connections all the time over $CYCLES start/stop cycles ----
rm -f "$LAB_DIR/churn.stop"
cli "$PYTHON" "$TESTHELPERS/churn.py" run --targets "$SRV4:443,[$SRV6]:443" --rate "$RATE" \
	--acme-hello "$ACME_HELLO" --web-hello "$WEB_HELLO" --stopfile "$LAB_DIR/churn.stop" \
	>"$LAB_DIR/churn.out" 2>&1 &
CHURN=$!
LAB_PIDS+=($CHURN)
acme_count() { cat "$LAB_DIR/acme.count" 2>/dev/null || echo 0; }
acme_count_over() { [ "$(acme_count)" -ge "$1" ]; }
cycle_fail=0
for i in $(seq "$CYCLES"); do
	echo "cycle $i: start at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	proxy_cmd -chroot "$LAB_DIR/empty" -workers 2 -d start
	[ "$CMD_RC" = 0 ] || { cycle_fail=$((cycle_fail + 1)); echo "cycle $i: start: $CMD_OUT"; }
	# Keep the redirect on until the ACME responder has answered 20 more redirected
	# connections, then take it away again.
	before=$(acme_count)
	wait_for 5 acme_count_over $((before + 20)) ||
		{ cycle_fail=$((cycle_fail + 1)); echo "cycle $i: no redirected connection in 5 s"; }
	echo "cycle $i: stop at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	proxy_cmd stop
	echo "cycle $i: stop returned at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	[ "$CMD_RC" = 0 ] || { cycle_fail=$((cycle_fail + 1)); echo "cycle $i: stop: $CMD_OUT"; }
done
touch "$LAB_DIR/churn.stop"
wait "$CHURN"
churn_rc=$?
churn_out=$(cat "$LAB_DIR/churn.out")
echo "$churn_out" | tail -n 25
assert_eq "$CYCLES start/stop cycles, every start and stop exit 0" 0 "$cycle_fail"
assert_eq "churn over $CYCLES cycles: zero failed connections" 0 "$churn_rc"
[ "$churn_rc" = 0 ] || cat "$LAB_DIR/cycles.log"
rate=$(echo "$churn_out" | sed -n 's/.*(\([0-9]*\)\/s).*/\1/p')
assert_ge "churn rate" "${rate:-0}" 500 "/s"
acme_routed=$(echo "$churn_out" | sed -n 's/.*s): \([0-9]*\) routed.*/\1/p')
assert_ge "connections routed during the cycles" "${acme_routed:-0}" 1000
assert_eq "after the cycles: no IPv4 rule" 0 "$(rules4)"
assert_eq "after the cycles: no IPv6 rule" 0 "$(rules6)"

# ---- crash: kill -9 every process; stop gives port 443 back (nftables: the kernel does) ----
proxy_start -workers 2 || exit 1
crashed=$PROXY_PID
pids="$PROXY_PID $(proxy_workers)"
kill -KILL $pids
all_gone() { local p; for p in "$@"; do pid_gone "$p" || return 1; done; }
wait_for 5 all_gone $pids
proxy_reap 5
if [ "$FIREWALL" = nftables ]; then
	assert_eq "after kill -9: no rule is left behind (the table died with its socket)" 0 \
		"$(rules4)"
	both_families "after kill -9, before anything else runs: port 443 reaches the web server" \
		"$WEB_HELLO" WEB
	proxy_cmd stop
	assert_eq "stop after the crash exits 0" 0 "$CMD_RC"
	assert_eq "stop after the crash has nothing to clear" "acme-alpn-proxy: not running" \
		"$CMD_STDOUT"
else
	assert_eq "after kill -9: the IPv4 rule is left behind (the crash)" 1 "$(rules4)"
	assert_match "after kill -9: port 443 is broken" "ERROR|EMPTY" "$(ask "$SRV4" "$WEB_HELLO")"
	proxy_cmd stop
	assert_eq "stop after the crash exits 0" 0 "$CMD_RC"
	assert_match "stop after the crash says what it cleared, and why" \
		"not running \(no instance holds .*\); removed 4 firewall rules left behind by a dead instance \(pid $crashed, no longer running: 2 redirect, 2 conntrack hold\)" \
		"$CMD_OUT"
fi
assert_eq "stop after the crash: no IPv4 rule" 0 "$(rules4)"
assert_eq "stop after the crash: no IPv6 rule" 0 "$(rules6)"
assert_eq "stop after the crash: the dead instance's hold rules are gone" 0 \
	"$(holds | grep -c "hold pid $crashed\"" || true)"
both_families "stop after the crash: port 443 reaches the web server" "$WEB_HELLO" WEB

# A start after a crash clears the leftovers too, and installs exactly one rule.
proxy_start -workers 1 || exit 1
kill -KILL $PROXY_PID $(proxy_workers)
proxy_reap 5
proxy_start -workers 1 || exit 1
assert_eq "start after a crash: exactly one IPv4 rule" 1 "$(rules4)"
if [ "$FIREWALL" = nftables ]; then
	assert_eq "start after a crash: nothing was left to clear" 0 \
		"$(grep -c 'left behind' "$LAB_DIR/proxy.log")"
else
	assert_match "start after a crash logs what it cleared" "removed 4 firewall rules left behind" \
		"$(cat "$LAB_DIR/proxy.log")"
fi
proxy_stop

# ---- a bad rulespec installs nothing ----
proxy_run ACME_ALPN_PROXY_RULESPEC="-p tcp --dport 443 -o eth0 -j REDIRECT --to-port 21443" \
	"${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" start
assert_eq "a bad ACME_ALPN_PROXY_RULESPEC: exit 2" 2 "$CMD_RC"
assert_match "a bad rulespec: the message names the token" '"-o"' "$CMD_OUT"
assert_eq "a bad rulespec: no IPv4 rule" 0 "$(rules4)"
assert_eq "a bad rulespec: no listener" 1 "$(proxy_listening && echo 0 || echo 1)"

# ---- ACME_ALPN_PROXY_DISABLEV6=y: IPv4 only ----
proxy_run ACME_ALPN_PROXY_DISABLEV6=y "${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" -d start
assert_eq "DISABLEV6=y start -d" 0 "$CMD_RC"
assert_eq "DISABLEV6=y: one IPv4 rule" 1 "$(rules4)"
assert_eq "DISABLEV6=y: no IPv6 rule" 0 "$(rules6)"
proxy_run ACME_ALPN_PROXY_DISABLEV6=y "${FW_ARGS[@]}" stop -wait
assert_eq "DISABLEV6=y: no IPv4 rule after stop" 0 "$(rules4)"

# ---- a failed IPv6 install rolls IPv4 back (test-only hook) ----
# (nftables: one inet rule in one batch, nothing to roll back; nft.sh fails a start instead.)
if [ "$FIREWALL" = nftables ]; then
	:
elif [ -x "${PROXY_HOOKS:-}" ]; then
	PROXY="$PROXY_HOOKS" proxy_run ACME_ALPN_PROXY_TEST_HOOK=fail-v6 -chroot "$LAB_DIR/empty" \
		start
	assert_eq "IPv6 install failure: start exits 1" 1 "$CMD_RC"
	assert_match "IPv6 install failure: the message says why" "IPv6" "$CMD_OUT"
	assert_eq "IPv6 install failure: the IPv4 rule was rolled back" 0 "$(rules4)"
	assert_eq "IPv6 install failure: no listener left" 1 "$(proxy_listening && echo 0 || echo 1)"
else
	not_ok "PROXY_HOOKS (tests/acme-alpn-proxy-hooks) is not built: cannot test the rollback"
fi

lab_finish
