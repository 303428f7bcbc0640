#!/usr/bin/env bash
# The web server sees each visitor's own address (issue 13), checked with a real nginx in the
# server namespace and visitors from the client namespace, IPv4 and IPv6:
# - -transparent: nginx's $remote_addr is the visitor's address through the proxy, and before
#   and after the window; the routing rules and routes are there while it runs and gone after
#   stop, and after a crash (SIGKILL) plus stop.
# - -proxy-protocol v1 and v2: nginx's $proxy_protocol_addr/_port are the visitor's and
#   $proxy_protocol_server_addr/_port the address it connected to (before the REDIRECT).
# - in every mode an acme-tls/1 hello reaches the responder with its bytes unchanged (no
#   PROXY header in front of it).
# - -transparent with -proxy-protocol is a usage error (exit 2).
# - -transparent with the web server on another of the host's addresses: nginx sees the
#   visitor; the connmark rules are in while it runs and gone after stop and crash plus stop.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools nginx openssl curl

# ---- nginx: $remote_addr on port 443, the PROXY header's addresses on loopback port 8443 ----
NG=$LAB_DIR/nginx
mkdir -p "$NG"
netlab_cert "$NG/web.key" "$NG/web.pem" web.example.test 2>"$LAB_DIR/openssl.log" ||
	{ cat "$LAB_DIR/openssl.log"; exit 1; }
netlab_nginx_conf "$NG" 1 512 <<EOF
	access_log off;
	ssl_certificate $NG/web.pem;
	ssl_certificate_key $NG/web.key;
	server {
		listen 0.0.0.0:443 ssl;
		listen [::]:443 ssl ipv6only=on;
		location / { return 200 "\$remote_addr\n"; }
	}
	server {
		listen 127.0.0.1:8443 ssl proxy_protocol;
		listen [::1]:8443 ssl proxy_protocol;
		location / {
			return 200 "\$proxy_protocol_addr \$proxy_protocol_port \$proxy_protocol_server_addr \$proxy_protocol_server_port\n";
		}
	}
EOF
netlab_nginx "$SRV" "$NG"
LAB_PIDS+=("$NETLAB_NGINX_PID")
wait_for 10 cli curl -sfk "https://$SRV4/" && wait_for 10 cli curl -sfk "https://[$SRV6]/" ||
	{ echo "nginx did not answer" >&2; cat "$NG/logs/"*.log >&2; exit 1; }

A=$LAB_DIR/acme
backend_start ACME "$A" 127.0.0.1:31443

# seen ADDR: what nginx answers a visitor from the client namespace who asks https://ADDR/
seen() {
	local url
	case $1 in *:*) url="https://[$1]/" ;; *) url="https://$1/" ;; esac
	cli curl -sk --max-time 8 "$url" 2>&1 || echo "curl failed ($?)"
}

# proxied N: the proxy logged N fallback connections so far (proof the request crossed it).
proxied() { [ "$(grep -c 'route=fallback' "$LAB_DIR/proxy.log")" -ge "$1" ]; }

# expect_acme_unchanged DESC ADDR: an acme-tls/1 hello to ADDR reaches the responder, which
# recorded exactly the bytes the client sent.
expect_acme_unchanged() {
	local desc=$1 addr=$2 base
	bk_reset "$A"
	rm -f "$LAB_DIR/sent"
	probe --connect "$(hostport "$addr" 443)" --file "$TESTDATA/openssl-acme.bin" \
		--save-sent "$LAB_DIR/sent"
	if ! wait_for 5 bk_has_done "$A" 1; then
		not_ok "$desc: expected the responder to see the connection end, got" \
			"$(bk_conns "$A") connection(s); probe: $(probe_summary '^(probe|end)')"
		return
	fi
	base=$(bk_last "$A")
	assert_same_file "$desc" "$LAB_DIR/sent" "$base.bin"
}

# our_rules: the policy routing rules and routes of any instance (tagged proto 243), one a
# line, each after its family.
our_rules() {
	local f
	for f in 4 6; do
		srv ip -$f rule | grep 'proto 243' | sed "s/^/$f rule /"
		srv ip -$f route show table all proto 243 2>/dev/null | sed "s/^/$f route /"
	done
}

# ---- usage ------------------------------------------------------------------------------------
proxy_cmd -transparent -proxy-protocol v1 start
assert_eq "-transparent with -proxy-protocol: exit 2" 2 "$CMD_RC"
assert_match "-transparent with -proxy-protocol: the message says why" "exclude each other" \
	"$CMD_ERR"

# A kernel that refuses the policy routing (test hook route-fail: the last IPv6 rule): start
# fails with a message naming the step, and leaves no rule, route or redirect behind.
if [ -x "${PROXY_HOOKS:-}" ]; then
	srv env ACME_ALPN_PROXY_TEST_HOOK=route-fail ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" \
		timeout 30 "$PROXY_HOOKS" "${FW_ARGS[@]}" -chroot "$LAB_DIR/empty" -transparent start \
		>"$LAB_DIR/hook.out" 2>&1 </dev/null
	assert_eq "policy routing refused: start exits 1" 1 "$?"
	assert_match "policy routing refused: the message names the rule and the kernel option" \
		"adding .ip -6 rule add fwmark lookup [0-9]+.*MULTIPLE_TABLES" "$(cat "$LAB_DIR/hook.out")"
	assert_eq "policy routing refused: no rule or route left" "" "$(our_rules)"
	assert_eq "policy routing refused: no redirect left (IPv4, IPv6)" "0 0" \
		"$(fw_redirects 4) $(fw_redirects 6)"
else
	lab_missing "needs the test build tests/acme-alpn-proxy-hooks (PROXY_HOOKS)"
fi

# ---- -transparent -----------------------------------------------------------------------------
assert_eq "before the window: nginx sees the IPv4 visitor" "$CLI4" "$(seen "$SRV4")"
assert_eq "before the window: nginx sees the IPv6 visitor" "$CLI6" "$(seen "$SRV6")"
if proxy_start -transparent; then
	rules=$(our_rules)
	assert_eq "-transparent: the policy routing is in (per family: from loopback iif lo, fwmark, local default route)" \
		"1 1 1 1 1 1" \
		"$(for f in 4 6; do for w in 'iif lo' fwmark 'route local default dev lo'; do
			printf '%s\n' "$rules" | grep "^$f " | grep -c "$w"; done; done | tr '\n' ' ' |
			sed 's/ $//')"
	n0=$(grep -c 'route=fallback' "$LAB_DIR/proxy.log")
	assert_eq "-transparent: nginx sees the IPv4 visitor through the proxy" "$CLI4" \
		"$(seen "$SRV4")"
	assert_eq "-transparent: nginx sees the IPv6 visitor through the proxy" "$CLI6" \
		"$(seen "$SRV6")"
	check "-transparent: both requests crossed the proxy's fallback" wait_for 5 proxied $((n0 + 2))
	expect_acme_unchanged "-transparent: the acme-tls/1 hello reaches the responder unchanged" \
		"$SRV4"
	proxy_stop
	assert_eq "-transparent: stop exits 0" 0 "$PROXY_EXIT"
else
	not_ok "the proxy starts with -transparent"
fi
assert_eq "after stop: no policy routing rule or route of the proxy" "" "$(our_rules)"
assert_eq "after the window: nginx sees the IPv4 visitor" "$CLI4" "$(seen "$SRV4")"
assert_eq "after the window: nginx sees the IPv6 visitor" "$CLI6" "$(seen "$SRV6")"

# A crash: SIGKILL to the parent leaves its rules and routes; stop deletes them.
if proxy_start -transparent; then
	kill -KILL "$PROXY_PID"
	proxy_reap
	assert_match "after SIGKILL: the dead instance's policy routing is still there" \
		"proto 243" "$(our_rules)"
	# Its orphaned workers drain and exit (the drain pipe's EOF) on their own.
	wait_for 10 sh -c "! ip netns pids $SRV | xargs -r ps -o comm= -p | grep -q acme-alpn" ||
		not_ok "the killed instance's workers did not exit"
	proxy_cmd stop
	assert_eq "stop after a crash: exit 0" 0 "$CMD_RC"
	assert_match "stop after a crash: it says it deleted the policy routing" \
		"deleted 6 policy routing rules and routes" "$CMD_OUT"
	assert_eq "stop after a crash: no policy routing rule or route left" "" "$(our_rules)"
	assert_eq "after the crash and stop: nginx sees the IPv4 visitor" "$CLI4" "$(seen "$SRV4")"
else
	not_ok "the proxy starts with -transparent (crash case)"
fi

# ---- -transparent, the web server on another of the host's own addresses --------------------
# Its replies are brought back by the mark: SO_MARK on the proxy's socket, connmark rules in the
# firewall backend (nftables only so far), the fwmark rule. Visitors still connect to SRV4/SRV6.
HOST4=198.51.100.11
HOST6=2001:db8:1::11
srv ip addr add "$HOST4/32" dev veth0
srv ip addr add "$HOST6/128" dev veth0 nodad
host_args=(-transparent -fallback "$HOST4:443" -fallback "[$HOST6]:443")
# mark_rules: the connmark rules as the backend lists them.
mark_rules() {
	if [ "$FIREWALL" = nftables ]; then
		srv nft list ruleset 2>/dev/null | grep -E 'meta mark set ct mark|ct mark set meta mark'
	else
		srv iptables-legacy -t mangle -S OUTPUT 2>/dev/null | grep 'acme-alpn-proxy mark pid'
		srv ip6tables-legacy -t mangle -S OUTPUT 2>/dev/null | grep 'acme-alpn-proxy mark pid'
	fi
}
[ "$FIREWALL" = nftables ] && want_marks=2 || want_marks=4
if proxy_start "${host_args[@]}"; then
	n0=$(grep -c 'route=fallback' "$LAB_DIR/proxy.log")
	assert_eq "-transparent, fallback $HOST4:443: nginx sees the IPv4 visitor" "$CLI4" \
		"$(seen "$SRV4")"
	assert_eq "-transparent, fallback [$HOST6]:443: nginx sees the IPv6 visitor" "$CLI6" \
		"$(seen "$SRV6")"
	check "-transparent, host addresses: both requests crossed the proxy's fallback" \
		wait_for 5 proxied $((n0 + 2))
	assert_eq "-transparent, host addresses: the connmark rules are in ($FIREWALL)" \
		"$want_marks" "$(mark_rules | wc -l)"
	proxy_stop
	assert_eq "-transparent, host addresses: stop exits 0" 0 "$PROXY_EXIT"
else
	not_ok "the proxy starts with ${host_args[*]}"
fi
assert_eq "-transparent, host addresses: after stop no policy routing is left" "" "$(our_rules)"
assert_eq "-transparent, host addresses: after stop no connmark rule is left" "" "$(mark_rules)"
assert_eq "-transparent, host addresses: after stop nginx sees the visitor at $HOST4 directly" \
	"$CLI4" "$(seen "$HOST4")"
# A crash leaves the connmark rules with libiptc (nftables: the table dies with the process);
# stop deletes them.
if proxy_start "${host_args[@]}"; then
	kill -KILL "$PROXY_PID"
	proxy_reap
	wait_for 10 sh -c "! ip netns pids $SRV | xargs -r ps -o comm= -p | grep -q acme-alpn" ||
		not_ok "the killed instance's workers did not exit"
	proxy_cmd stop
	assert_eq "host addresses, stop after a crash: exit 0" 0 "$CMD_RC"
	assert_eq "host addresses, stop after a crash: no connmark rule left" "" "$(mark_rules)"
	assert_eq "host addresses, stop after a crash: no policy routing left" "" "$(our_rules)"
fi

# ---- -proxy-protocol v1 and v2 ----------------------------------------------------------------
for v in v1 v2; do
	if ! proxy_start -proxy-protocol "$v" -fallback 127.0.0.1:8443 -fallback '[::1]:8443'; then
		not_ok "the proxy starts with -proxy-protocol $v"
		continue
	fi
	got=$(seen "$SRV4")
	assert_match "-proxy-protocol $v: nginx's \$proxy_protocol_addr is the IPv4 visitor, the server address the one it connected to" \
		"^$CLI4 [0-9]+ $SRV4 443$" "$got"
	got=$(seen "$SRV6")
	assert_match "-proxy-protocol $v: nginx's \$proxy_protocol_addr is the IPv6 visitor" \
		"^$CLI6 [0-9]+ $SRV6 443$" "$got"
	expect_acme_unchanged "-proxy-protocol $v: the acme-tls/1 hello reaches the responder unchanged, without a PROXY header" \
		"$SRV6"
	proxy_stop
	assert_eq "-proxy-protocol $v: stop exits 0" 0 "$PROXY_EXIT"
done

# The default mode: the same responder check, for comparison.
if proxy_start; then
	expect_acme_unchanged "default mode: the acme-tls/1 hello reaches the responder unchanged" \
		"$SRV4"
	proxy_stop
fi
lab_finish
