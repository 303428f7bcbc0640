#!/usr/bin/env bash
# Issue 12: -firewall nftables, a table owned by the proxy's process, in a lab of two network
# namespaces. Routing through port 443 over IPv4 and IPv6 while running; the table is listed
# with `flags owner`, nobody else can delete or change it and `nft flush ruleset` leaves it;
# stop removes it; SIGKILL of every process gives port 443 back at once, without stop, and a
# stop after that exits 0 with nothing to clear; the rule spec's translation; a kernel that
# refuses owner tables (test hook) leaves nothing behind.
FIREWALL=nftables
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup

ACME_HELLO=$TESTDATA/openssl-acme.bin
WEB_HELLO=$TESTDATA/chromium.bin

banner_backends

# Our tables in the server namespace, one name a line.
tables() { srv nft list tables inet | sed -n 's/^table inet \(acme_alpn_proxy_[0-9]*\)$/\1/p'; }
ntables() { tables | grep -c . ; }
no_tables() { [ "$(ntables)" = 0 ]; }
# The inodes of the NETLINK_NETFILTER (protocol 12) sockets of the server namespace.
nfnl_inodes() { srv awk 'NR > 1 && $2 == 12 { print $NF }' /proc/net/netlink; }
# The socket inodes process PID holds.
sock_inodes() { ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p'; }
holds_nfnl() { # PID: does it hold a netfilter netlink socket?
	local i
	for i in $(sock_inodes "$1"); do
		nfnl_inodes | grep -qx "$i" && return 0
	done
	return 1
}

# ---- before, during, after ----
both_families "before start: an acme-tls/1 hello to port 443 reaches the web server" \
	"$ACME_HELLO" WEB
proxy_start -workers 2 || exit 1
T=acme_alpn_proxy_$PROXY_PID
assert_eq "after start: one table of ours" "$T" "$(tables)"
ruleset=$(srv nft list ruleset)
echo "$ruleset" | sed 's/^/# /'
assert_match "nft list ruleset shows the table with flags owner" "flags owner" \
	"$(srv nft list table inet "$T")"
assert_match "the chain: nat prerouting, ahead of dstnat" \
	"type nat hook prerouting priority dstnat - 10; policy accept;" "$ruleset"
assert_match "the redirect rule: SYN to port 443 addressed to this host" \
	'tcp dport 443 tcp flags syn / fin,syn,rst,ack fib daddr type local counter packets [0-9]+ bytes [0-9]+ redirect to :21443 comment "acme-alpn-proxy"' \
	"$ruleset"
assert_match "the conntrack hold rule" \
	"ct state invalid counter packets [0-9]+ bytes [0-9]+ comment \"acme-alpn-proxy conntrack hold pid $PROXY_PID\"" \
	"$ruleset"
both_families "while running: an acme-tls/1 hello to port 443 reaches the ACME responder" \
	"$ACME_HELLO" ACME
both_families "while running: a browser hello to port 443 reaches the web server" \
	"$WEB_HELLO" WEB
check "the parent holds the owning netlink socket" holds_nfnl "$PROXY_PID"
for w in $(proxy_workers); do
	assert_eq "worker $w holds no netfilter netlink socket" 1 \
		"$(holds_nfnl "$w" && echo 0 || echo 1)"
done

# A worker forked after the table exists inherits the socket for a moment: it must close it.
w1=$(proxy_workers | head -n 1)
kill -KILL "$w1"
respawned() { [ "$(proxy_workers | grep -vxc "$w1")" -ge 2 ]; }
if wait_for 5 respawned; then
	for w in $(proxy_workers); do
		assert_eq "after the respawn: worker $w holds no netlink socket" 1 \
			"$(holds_nfnl "$w" && echo 0 || echo 1)"
	done
else
	not_ok "the killed worker $w1 was not replaced within 5 s"
fi

proxy_cmd status
assert_eq "status while running: exit 0" 0 "$CMD_RC"
assert_match "status reports the rules" "rules \(nftables\): IPv4 present, IPv6 present" \
	"$CMD_OUT"

# ---- nobody else can touch it ----
out=$(srv nft delete table inet "$T" 2>&1)
rc=$?
assert_eq "another process cannot delete the table (nft delete table fails)" 1 \
	"$([ $rc != 0 ] && echo 1 || echo 0)"
assert_match "... with EPERM" "Operation not permitted" "$out"
out=$(srv nft add rule inet "$T" prerouting tcp dport 443 accept 2>&1)
rc=$?
assert_eq "another process cannot change the table (nft add rule fails)" 1 \
	"$([ $rc != 0 ] && echo 1 || echo 0)"
srv nft flush ruleset
assert_eq "nft flush ruleset leaves the table" "$T" "$(tables)"
both_families "after nft flush ruleset: port 443 still reaches the ACME responder" \
	"$ACME_HELLO" ACME

# ---- only connections addressed to this host are redirected (fib daddr type local) ----
# A third namespace behind the server, which routes between the client and it: a SYN to port
# 443 of the far side passes the server's prerouting hook, and must go on to the far side.
FAR=aap-$LAB_TEST-$$-far
FAR4=198.51.100.200 # a host route, more specific than the lab's on-link /24
lab_add_ns "$FAR"
ip -n "$SRV" link add veth1 mtu 1500 type veth peer name veth0 netns "$FAR" mtu 1500
ip -n "$FAR" addr add "$FAR4/32" dev veth0
ip -n "$SRV" link set veth1 up
ip -n "$FAR" link set veth0 up
ip -n "$SRV" route add "$FAR4/32" dev veth1
# The server answers ARP for its veth0 address on veth1 too (arp_ignore 0).
ip -n "$FAR" route add "$SRV4/32" dev veth0 scope link
ip -n "$FAR" route add default via "$SRV4" dev veth0
ip -n "$CLI" route add "$FAR4/32" via "$SRV4"
srv sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$FAR" "$PYTHON" "$TESTHELPERS/churn.py" serve --host 0.0.0.0 --port 443 \
	--banner FAR --ready "$LAB_DIR/far.ready" >"$LAB_DIR/far.log" 2>&1 &
LAB_PIDS+=($!)
if wait_for 10 test -e "$LAB_DIR/far.ready"; then
	assert_eq "a connection to port 443 of another host, routed through this one, is not redirected" \
		FAR "$(ask "$FAR4" "$ACME_HELLO")"
	assert_eq "... while one to this host's own address is" ACME \
		"$(ask "$SRV4" "$ACME_HELLO")"
else
	not_ok "the far side's server did not start: $(cat "$LAB_DIR/far.log")"
fi

# ---- the administrator's own nat rule for 443 does not shadow ours ----
srv nft -f - <<'EOF'
table inet admin {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 443 dnat ip to 127.0.0.9:443
	}
}
EOF
assert_eq "an administrator's dnat rule at dstnat does not shadow ours" ACME \
	"$(ask "$SRV4" "$ACME_HELLO")"
srv nft delete table inet admin

proxy_stop
assert_eq "stop -wait: the proxy exited 0" 0 "$PROXY_EXIT"
assert_eq "after stop: no table of ours" 0 "$(ntables)"
both_families "after stop: an acme-tls/1 hello reaches the web server again" "$ACME_HELLO" WEB
proxy_cmd status
assert_match "status after stop: the rules are absent" \
	"rules \(nftables\): IPv4 absent, IPv6 absent" "$CMD_OUT"

# ---- crash: SIGKILL of every process gives port 443 back at once ----
proxy_start -workers 2 || exit 1
# A redirected connection leaves its NAT binding in the conntrack table (TIME_WAIT or CLOSE):
# the killed instance cannot delete it, the next start must.
assert_eq "before the crash: a redirected connection" ACME "$(ask "$SRV4" "$ACME_HELLO")"
bindings() { srv conntrack -L -p tcp --reply-port-src "$LISTEN_PORT" 2>/dev/null | grep -c . ; }
pids="$PROXY_PID $(proxy_workers)"
kill -KILL $pids
all_gone() { local p; for p in "$@"; do pid_gone "$p" || return 1; done; }
wait_for 5 all_gone $pids
both_families "after kill -9, before anything else runs: port 443 reaches the web server" \
	"$WEB_HELLO" WEB
both_families "after kill -9: an acme-tls/1 hello reaches the web server" "$ACME_HELLO" WEB
proxy_reap 5
assert_eq "after kill -9: the table is gone (it died with its socket)" 0 "$(ntables)"
if command -v conntrack >/dev/null; then
	assert_ge "after the crash: the redirected connection's binding is still there" \
		"$(bindings)" 1
fi
proxy_start -workers 1 || exit 1
assert_eq "start after a crash: exactly one table" 1 "$(ntables)"
assert_match "start after a crash deletes the dead instance's NAT bindings" \
	"conntrack: deleted [1-9][0-9]* of [0-9]+ NAT bindings to port $LISTEN_PORT, which no connection uses \(before the rules go in\)" \
	"$(cat "$LAB_DIR/proxy.log")"
if command -v conntrack >/dev/null; then
	assert_eq "start after a crash: no NAT binding to the listener is left" 0 "$(bindings)"
fi
# Killed again, with no connection this time: stop has nothing at all to clear.
pids="$PROXY_PID $(proxy_workers)"
kill -KILL $pids
wait_for 5 all_gone $pids
proxy_reap 5
both_families "after the second kill -9: port 443 reaches the web server" "$WEB_HELLO" WEB
proxy_cmd stop
assert_eq "stop after the crash exits 0" 0 "$CMD_RC"
assert_eq "stop after the crash finds nothing to clear" "acme-alpn-proxy: not running" \
	"$CMD_STDOUT"
proxy_start -workers 1 || exit 1
proxy_stop
assert_eq "stop: exit 0" 0 "$PROXY_EXIT"

# ---- the rule spec in nftables ----
# IPv4 only, from the client's subnet, on veth0: the IPv6 hello is not redirected.
ACME_ALPN_PROXY_RULESPEC="-p tcp --dport 443 -s 198.51.100.0/24 -i veth+ -m comment --comment acme-alpn-proxy -j REDIRECT --to-port 21443" \
	proxy_start -workers 1 || exit 1
ruleset=$(srv nft list ruleset)
assert_match "-s and -i translate" \
	'ip saddr 198.51.100.0/24 iifname "veth\*" tcp dport 443' "$ruleset"
assert_eq "-s 198.51.100.0/24: the IPv4 hello is redirected" ACME "$(ask "$SRV4" "$ACME_HELLO")"
assert_eq "-s 198.51.100.0/24: the IPv6 hello is not" WEB "$(ask "$SRV6" "$ACME_HELLO")"
proxy_stop
ACME_ALPN_PROXY_RULESPEC="-p tcp --dport 443 ! -s 198.51.100.2 -m comment --comment acme-alpn-proxy -j REDIRECT --to-port 21443" \
	proxy_start -workers 1 || exit 1
assert_match "! -s translates" 'ip saddr != 198.51.100.2' "$(srv nft list ruleset)"
assert_eq "! -s the client: the client is not redirected" WEB "$(ask "$SRV4" "$ACME_HELLO")"
proxy_stop
ACME_ALPN_PROXY_DISABLEV6=y proxy_start -workers 1 || exit 1
assert_match "DISABLEV6=y: the rule is for IPv4 only" 'meta nfproto ipv4 tcp dport 443' \
	"$(srv nft list ruleset)"
assert_eq "DISABLEV6=y: the IPv4 hello is redirected" ACME "$(ask "$SRV4" "$ACME_HELLO")"
assert_eq "DISABLEV6=y: the IPv6 hello is not" WEB "$(ask "$SRV6" "$ACME_HELLO")"
proxy_stop

long=$(printf 'c%.0s' $(seq 130))
proxy_run \
	ACME_ALPN_PROXY_RULESPEC="-p tcp --dport 443 -m comment --comment $long -j REDIRECT --to-port 21443" \
	"${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" start
assert_eq "a comment nftables cannot hold: exit 2" 2 "$CMD_RC"
assert_match "... and the message says why" "nftables.*at most 127" "$CMD_OUT"
assert_eq "... no table" 0 "$(ntables)"
proxy_cmd -firewall nft start
assert_eq "-firewall nft: exit 2" 2 "$CMD_RC"
assert_match "-firewall nft: the message names the choices" "iptables nor nftables" "$CMD_OUT"

# ---- a kernel without owner tables (test hook): start fails, nothing is left ----
if [ -x "${PROXY_HOOKS:-}" ]; then
	PROXY="$PROXY_HOOKS" proxy_run ACME_ALPN_PROXY_TEST_HOOK=nft-no-owner "${FW_ARGS[@]}" \
		-chroot "$LAB_DIR/empty" start
	assert_eq "no owner tables: start exits 1" 1 "$CMD_RC"
	assert_match "no owner tables: the message names what the kernel lacks" \
		"owned by a process \(NFT_TABLE_F_OWNER, Linux 5.12" "$CMD_OUT"
	assert_eq "no owner tables: no table left" 0 "$(ntables)"
	assert_eq "no owner tables: no listener left" 1 "$(proxy_listening && echo 0 || echo 1)"
	both_families "no owner tables: port 443 reaches the web server" "$ACME_HELLO" WEB
	# The same for a kernel without nf_tables (the batch refused as a whole).
	PROXY="$PROXY_HOOKS" proxy_run ACME_ALPN_PROXY_TEST_HOOK=nft-no-nftables "${FW_ARGS[@]}" \
		-chroot "$LAB_DIR/empty" start
	assert_eq "no nf_tables: start exits 1" 1 "$CMD_RC"
	assert_match "no nf_tables: the message names what the kernel lacks" \
		"the kernel has no nftables .*modprobe nf_tables.*CONFIG_NF_TABLES" "$CMD_OUT"
	assert_eq "no nf_tables: no table left" 0 "$(ntables)"
	assert_eq "no nf_tables: no listener left" 1 "$(proxy_listening && echo 0 || echo 1)"
	assert_eq "no nf_tables: no pidfile lock left (status: not running)" 3 \
		"$(proxy_cmd status; echo "$CMD_RC")"
else
	not_ok "PROXY_HOOKS (tests/acme-alpn-proxy-hooks) is not built: cannot test the refusal"
fi

lab_finish
