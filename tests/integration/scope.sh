#!/usr/bin/env bash
# Issue 11, parts 3 and 4: what the REDIRECT rule takes, and whose it is.
# (a) Only traffic addressed to this host is captured: a third namespace (far) is routed
#     through the server namespace, which forwards for it (as for containers, VMs, VPN clients).
#     While the proxy runs, the client's connections to far's port 443 reach far's server,
#     IPv4 and IPv6, while those to the server's own addresses are still redirected.
# (b) A stop or start never touches a live instance's rules: `stop` and `start` with another
#     pidfile keep the running instance's REDIRECT rules (and its ACME connections keep
#     reaching the responder); a stop after a kill -9 still removes the dead one's rules, and
#     only those.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools iptables-legacy ip6tables-legacy

ACME_HELLO=$TESTDATA/openssl-acme.bin
WEB_HELLO=$TESTDATA/chromium.bin
# far: host routes more specific than the lab's on-link /24 and /64, via the server namespace.
FAR=aap-$LAB_TEST-$$-far
FAR4=198.51.100.200
FAR6=2001:db8:2::1
FARGW6=2001:db8:2::fe # the server's address toward far (IPv6 neighbour discovery needs one)
far() { ip netns exec "$FAR" "$@"; }

lab_add_ns "$FAR"
ip -n "$SRV" link add veth1 mtu 1500 type veth peer name veth0 netns "$FAR" mtu 1500 ||
	{ echo "cannot create the veth pair to $FAR" >&2; exit 1; }
ip -n "$FAR" addr add "$FAR4/32" dev veth0
ip -n "$FAR" addr add "$FAR6/128" dev veth0 nodad
ip -n "$SRV" addr add "$FARGW6/128" dev veth1 nodad
ip -n "$SRV" link set veth1 up
ip -n "$FAR" link set veth0 up
ip -n "$SRV" route add "$FAR4/32" dev veth1
ip -n "$SRV" -6 route add "$FAR6/128" dev veth1
# IPv4: the server answers ARP for its veth0 address on veth1 too (arp_ignore 0).
ip -n "$FAR" route add "$SRV4/32" dev veth0 scope link
ip -n "$FAR" route add default via "$SRV4" dev veth0
ip -n "$FAR" -6 route add "$FARGW6/128" dev veth0
ip -n "$FAR" -6 route add default via "$FARGW6" dev veth0
ip -n "$CLI" route add "$FAR4/32" via "$SRV4"
ip -n "$CLI" -6 route add "$FAR6/128" via "$SRV6"
# Forwarding in the server namespace only (sysctl under ip netns exec: its own /proc/sys/net).
srv sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 ||
	{ echo "cannot enable forwarding in $SRV" >&2; exit 1; }
far_v6_ready() {
	[ -z "$(ip -n "$SRV" -6 addr show dev veth1 tentative)" ] &&
	[ -z "$(ip -n "$FAR" -6 addr show dev veth0 tentative)" ] &&
	ip -n "$SRV" link show dev veth1 | grep -q 'state UP' &&
	ip -n "$FAR" link show dev veth0 | grep -q 'state UP'
}
wait_for 10 far_v6_ready || { echo "the link to $FAR did not come up within 10 s" >&2; exit 1; }

# Banner servers (tests/helpers/churn.py serve): the web server on the server's [::]:443, the
# ACME responder on its 127.0.0.1:31443, and far's own server on far's [::]:443.
srv "$PYTHON" "$TESTHELPERS/churn.py" serve --host :: --port 443 --banner WEB \
	--ready "$LAB_DIR/web.ready" >"$LAB_DIR/web.log" 2>&1 &
LAB_PIDS+=($!)
srv "$PYTHON" "$TESTHELPERS/churn.py" serve --host 127.0.0.1 --port 31443 --banner ACME \
	--ready "$LAB_DIR/acme.ready" >"$LAB_DIR/acme.log" 2>&1 &
LAB_PIDS+=($!)
far "$PYTHON" "$TESTHELPERS/churn.py" serve --host :: --port 443 --banner FAR \
	--ready "$LAB_DIR/far.ready" >"$LAB_DIR/far.log" 2>&1 &
LAB_PIDS+=($!)
wait_for 10 test -e "$LAB_DIR/web.ready" -a -e "$LAB_DIR/acme.ready" -a -e "$LAB_DIR/far.ready" ||
	{ echo "backends did not start" >&2; cat "$LAB_DIR"/*.log >&2; exit 1; }

nat4() { srv iptables-legacy -t nat -S PREROUTING; }
nat6() { srv ip6tables-legacy -t nat -S PREROUTING; }
# redirects4|6 [PID]: the REDIRECT rules (of PID's, when given) in the server namespace.
redirects4() { nat4 | grep -- '-j REDIRECT' | grep -c -- "${1:+pid $1\"}" ; }
redirects6() { nat6 | grep -- '-j REDIRECT' | grep -c -- "${1:+pid $1\"}" ; }

# each_family DESCRIPTION ADDR4 ADDR6 HELLO EXPECTED
each_family() {
	assert_eq "$1 (IPv4)" "$5" "$(ask "$2" "$4")"
	assert_eq "$1 (IPv6)" "$5" "$(ask "$3" "$4")"
}

# ---- (a) routed traffic passes, traffic to this host is redirected ----
each_family "control, before start: the client reaches far's server through the server" \
	"$FAR4" "$FAR6" "$ACME_HELLO" FAR
proxy_start -workers 2 || exit 1
A=$PROXY_PID
assert_match "the IPv4 rule matches LOCAL destinations only and names its owner" \
	"^-A PREROUTING -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"acme-alpn-proxy pid $A\" -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 21443\$" \
	"$(nat4 | grep -- '-j REDIRECT')"
assert_match "the IPv6 rule too" \
	"^-A PREROUTING -p tcp -m tcp --dport 443 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"acme-alpn-proxy pid $A\" -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 21443\$" \
	"$(nat6 | grep -- '-j REDIRECT')"
each_family "while running: an acme-tls/1 hello to a routed host reaches that host" \
	"$FAR4" "$FAR6" "$ACME_HELLO" FAR
each_family "while running: a browser hello to a routed host reaches that host" \
	"$FAR4" "$FAR6" "$WEB_HELLO" FAR
each_family "while running: an acme-tls/1 hello to this host reaches the ACME responder" \
	"$SRV4" "$SRV6" "$ACME_HELLO" ACME
each_family "while running: a browser hello to this host reaches the web server" \
	"$SRV4" "$SRV6" "$WEB_HELLO" WEB

# A spec that names the match is accepted; one that asks for other destinations is refused.
proxy_run ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/bad.pid" \
	ACME_ALPN_PROXY_RULESPEC="-p tcp --dport 443 -m addrtype --dst-type UNICAST -j REDIRECT --to-port 21445" \
	-chroot "$LAB_DIR/empty" -listen '[::]:21445' start
assert_eq "--dst-type UNICAST: exit 2" 2 "$CMD_RC"
assert_match "--dst-type UNICAST: the message names the token" '"--dst-type UNICAST"' "$CMD_OUT"
assert_eq "--dst-type UNICAST: no rule added" 1 "$(redirects4)"

# ---- (b) another pidfile's stop and start keep the running instance's rules ----
proxy_run ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/other.pid" stop
echo "stop with another pidfile: $CMD_OUT"
assert_eq "stop with another pidfile: exit 0" 0 "$CMD_RC"
assert_match "stop with another pidfile: says nothing was removed, and what it kept and why" \
	"not running \(no instance holds $LAB_DIR/other.pid\); removed no firewall rules; kept 2 redirect rules of the running pid $A " \
	"$CMD_OUT"
assert_eq "stop with another pidfile: the running instance's IPv4 rule stays" 1 "$(redirects4 "$A")"
assert_eq "stop with another pidfile: the running instance's IPv6 rule stays" 1 "$(redirects6 "$A")"
each_family "after a stop with another pidfile: ACME connections still reach the responder" \
	"$SRV4" "$SRV6" "$ACME_HELLO" ACME
proxy_cmd status
assert_match "status: the running instance's rules are present" \
	"rules \(iptables\): IPv4 present, IPv6 present" "$CMD_OUT"

# Instance B: another pidfile, listener and port.
SPEC_B="-p tcp --dport 443 -j REDIRECT --to-port 21444 -m comment --comment acme-alpn-proxy"
ip netns exec "$SRV" env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/b.pid" ACME_ALPN_PROXY_RULESPEC="$SPEC_B" \
	"$PROXY" -chroot "$LAB_DIR/empty" -listen '[::]:21444' -workers 1 start \
	>"$LAB_DIR/b.log" 2>&1 &
B=$!
LAB_PIDS+=("$B")
b_ready() { grep -q ready "$LAB_DIR/b.log" && srv ss -Hltn 'sport = :21444' | grep -q LISTEN; }
if ! wait_for 10 b_ready; then
	not_ok "instance B did not become ready within 10 s: $(tail -n 5 "$LAB_DIR/b.log")"
fi
assert_match "start with another pidfile: logs that it kept the running instance's rules" \
	"kept 2 redirect rules of the running pid $A " "$(cat "$LAB_DIR/b.log")"
assert_eq "with two instances: A's IPv4 rule stays" 1 "$(redirects4 "$A")"
assert_eq "with two instances: B's IPv4 rule is there" 1 "$(redirects4 "$B")"
assert_eq "with two instances: A's IPv6 rule stays" 1 "$(redirects6 "$A")"
assert_eq "with two instances: B's IPv6 rule is there" 1 "$(redirects6 "$B")"
each_family "with two instances: ACME connections reach the responder" \
	"$SRV4" "$SRV6" "$ACME_HELLO" ACME

# A crashes (kill -9, workers too): stop with A's pidfile removes A's rules, keeps B's.
pids="$A $(proxy_workers "$A")"
kill -KILL $pids
all_gone() { local p; for p in "$@"; do pid_gone "$p" || return 1; done; }
wait_for 5 all_gone $pids
proxy_reap 5
proxy_cmd stop
echo "stop after A's crash: $CMD_OUT"
assert_eq "stop after A's crash: exit 0" 0 "$CMD_RC"
assert_match "stop after A's crash: says what it removed and why" \
	"removed 4 firewall rules left behind by a dead instance \(pid $A, no longer running: 2 redirect, 2 conntrack hold\)" \
	"$CMD_OUT"
assert_match "stop after A's crash: says what it kept and why" \
	"kept 2 redirect rules of the running pid $B " "$CMD_OUT"
assert_eq "stop after A's crash: A's IPv4 rule is gone" 0 "$(redirects4 "$A")"
assert_eq "stop after A's crash: A's IPv6 rule is gone" 0 "$(redirects6 "$A")"
assert_eq "stop after A's crash: A's holds are gone" 0 \
	"$({ nat4; nat6; } | grep -c "conntrack hold pid $A\"")"
assert_eq "stop after A's crash: B's IPv4 rule stays" 1 "$(redirects4 "$B")"
assert_eq "stop after A's crash: B's IPv6 rule stays" 1 "$(redirects6 "$B")"
each_family "after A's crash and stop: ACME connections reach the responder through B" \
	"$SRV4" "$SRV6" "$ACME_HELLO" ACME

# B stops with its own pidfile: its own rules go, and port 443 is the web server's again.
proxy_run ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/b.pid" stop -wait
assert_eq "B's stop: exit 0" 0 "$CMD_RC"
wait_for 10 pid_gone "$B"
assert_eq "after B's stop: no REDIRECT rule (IPv4)" 0 "$(redirects4)"
assert_eq "after B's stop: no REDIRECT rule (IPv6)" 0 "$(redirects6)"
assert_eq "after B's stop: no hold rule" 0 "$({ nat4; nat6; } | grep -c 'conntrack hold pid')"
proxy_cmd status
assert_match "after B's stop: status says not running, no rules" \
	"not running.*rules \(iptables\): IPv4 absent, IPv6 absent" "$(echo $CMD_OUT)"
each_family "after B's stop: an acme-tls/1 hello reaches the web server" \
	"$SRV4" "$SRV6" "$ACME_HELLO" WEB
each_family "after B's stop: the routed host is still reached" "$FAR4" "$FAR6" "$WEB_HELLO" FAR

# A crashed instance's pid taken over by an unrelated process (here: sleep) is no owner.
srv sleep 120 &
S=$!
LAB_PIDS+=("$S")
srv iptables-legacy -t nat -I PREROUTING -p tcp --dport 443 --syn -m comment \
	--comment "acme-alpn-proxy pid $S" -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 21443
proxy_cmd stop
assert_match "stop: the rule of a pid that is no instance now is removed" \
	"removed 1 firewall rule left behind by a dead instance \(pid $S, no longer running: 1 redirect, 0 conntrack hold\)" \
	"$CMD_OUT"
assert_eq "stop: no REDIRECT rule left" 0 "$(redirects4)"

lab_finish
