#!/usr/bin/env bash
# A live demonstration of acme-alpn-proxy, in two private network namespaces.
#
#   sudo tools/demo.sh               install the packages (tools/packages.txt), build, run the demo
#   sudo tools/demo.sh --no-install  skip apt
#   PROXY=/usr/sbin/acme-alpn-proxy sudo -E tools/demo.sh --no-install   demo an installed binary
#
# The "server" namespace has a web server on port 443 (openssl s_server, certificate
# CN=web.example.test) and an ACME TLS-ALPN-01 responder on 127.0.0.1:31443 (openssl s_server
# with ALPN acme-tls/1, certificate CN=acme-responder). The "client" namespace reaches the server
# over a veth pair (198.51.100.0/24, 2001:db8:1::/64). The demo connects from the client with
# and without ALPN acme-tls/1, before, during and after the proxy runs, and shows which
# certificate answered. Nothing touches the host's own network or firewall: the rules live in
# the server namespace's nat table, and everything is removed at the end, however it ends.
# Exit status: 0 when every step behaved as expected, 1 otherwise.

# shellcheck disable=SC2317 # functions called through the trap, wait_for and verdict
set -u

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "$0"
}

install=1
for arg in "$@"; do
	case $arg in
	--no-install) install=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "demo.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}
# The namespace lab the integration tests use: netlab_link, netlab_kill, wait_for.
# shellcheck source=tests/integration/netlab.sh
. "$top/tests/integration/netlab.sh"

if [ -t 1 ]; then
	B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'
else
	B='' G='' R='' N=''
fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
show() { printf '%s$ %s%s\n' "$B" "$*" "$N"; }
die() { echo "${R}demo.sh: $*${N}" >&2; exit 1; }
UNEXPECTED=0
good() { echo "${G}OK${N}: $*"; }
bad() { echo "${R}UNEXPECTED${N}: $*"; UNEXPECTED=$((UNEXPECTED + 1)); }
# verdict DESCRIPTION COMMAND...: OK when the command succeeds.
verdict() {
	local desc=$1
	shift
	if "$@"; then good "$desc"; else bad "$desc"; fi
}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, firewall rules): run it with sudo"

# ---- packages and build -----------------------------------------------------------------------

if [ "$install" = 1 ]; then
	say "Installing the packages the project needs (tools/packages.txt)"
	"$top/tools/install-deps.sh" || die "installing the packages failed"
fi
if [ -z "${PROXY:-}" ]; then
	say "Building acme-alpn-proxy in $build"
	if [ ! -f "$build/Makefile" ]; then
		[ -f "$top/config.status" ] && die "the source tree was configured in place: run" \
			"'make distclean' in $top first, or set PROXY=/path/to/acme-alpn-proxy"
		(cd "$top" && autoreconf -fi) || die "autoreconf failed"
		mkdir -p "$build" || die "cannot create $build"
		(cd "$build" && "$top/configure" -q) || die "configure failed"
	fi
	make -C "$build" -j2 -s || die "the build failed"
	PROXY=$build/src/acme-alpn-proxy
fi
[ -x "$PROXY" ] || die "PROXY=$PROXY is not an executable"
for t in ip ss openssl iptables-legacy ip6tables-legacy; do
	command -v "$t" >/dev/null 2>&1 || die "needs $t (run without --no-install)"
done

# ---- the lab ----------------------------------------------------------------------------------

SRV=aap-demo-$$-srv
CLI=aap-demo-$$-cli
SRV4=$NETLAB_SRV4
CLI4=$NETLAB_CLI4
SRV6=$NETLAB_SRV6
CLI6=$NETLAB_CLI6
TMP=$(mktemp -d /tmp/aap-demo.XXXXXX) || die "mktemp failed"
chmod 755 "$TMP"
PIDFILE=$TMP/acme-alpn-proxy.pid

srv() { ip netns exec "$SRV" "$@"; }
cli() { ip netns exec "$CLI" "$@"; }
# The proxy as the demo runs it: in the server namespace, with a pidfile of its own (so that it
# cannot meet an instance of the host) and an empty chroot directory of its own (Debian has no
# /var/empty by default).
proxy() {
	srv env ACME_ALPN_PROXY_PIDFILE="$PIDFILE" "$PROXY" -chroot "$TMP/empty" "$@"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ip netns list 2>/dev/null | grep -q "^$SRV\b"; then
		# A proxy still running: stop it the proper way first (rules, then drain).
		[ -s "$PIDFILE" ] && proxy stop >/dev/null 2>&1
	fi
	netlab_kill -g 2 "$SRV" "$CLI"
	netlab_del "$SRV" "$CLI"
	rm -rf "$TMP"
	echo "(demo cleaned up: namespaces $SRV and $CLI removed)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

listening() { srv ss -Hltn "sport = :$1" | grep -q LISTEN; }

say "Building the lab: namespace $SRV (the server) and $CLI (a client on the Internet)"
mkdir -m 755 "$TMP/empty"
ip netns add "$SRV" || die "cannot create a network namespace"
ip netns add "$CLI" || die "cannot create a network namespace"
netlab_link "$SRV" "$CLI" || die "cannot build the lab's veth link"
echo "server: $SRV4 and $SRV6    client: $CLI4 and $CLI6"

say "Starting the web server (port 443, all addresses) and the ACME responder (127.0.0.1:31443)"
for who in web.example.test acme-responder; do
	netlab_cert "$TMP/$who.key" "$TMP/$who.pem" "$who" 2>/dev/null || die "openssl req failed"
done
# "-accept 443" listens on both IPv4 and IPv6.
show "openssl s_server -accept 443 -cert web.example.test.pem -www        # the web server"
srv openssl s_server -accept 443 -cert "$TMP/web.example.test.pem" \
	-key "$TMP/web.example.test.key" -www -quiet >"$TMP/web.log" 2>&1 &
show "openssl s_server -accept 127.0.0.1:31443 -alpn acme-tls/1 -cert acme-responder.pem -www"
srv openssl s_server -accept 127.0.0.1:31443 -alpn acme-tls/1 \
	-cert "$TMP/acme-responder.pem" -key "$TMP/acme-responder.key" -www -quiet \
	>"$TMP/acme.log" 2>&1 &
wait_for 10 listening 443 || die "the web server did not start: $(cat "$TMP/web.log")"
wait_for 10 listening 31443 || die "the ACME responder did not start: $(cat "$TMP/acme.log")"
srv ss -Hltn | sed 's/^/    /'

# tls ADDR [ALPN]: a TLS handshake from the client namespace; prints who answered and sets
# ANSWER to the certificate's CN.
tls() {
	local addr=$1 alpn=${2:-} out cn proto
	local args=(-connect "$addr:443" -servername web.example.test)
	[ -n "$alpn" ] && args+=(-alpn "$alpn")
	show "openssl s_client -connect $addr:443${alpn:+ -alpn $alpn}    (from the client)"
	out=$(cli timeout 10 openssl s_client "${args[@]}" </dev/null 2>&1)
	cn=$(printf '%s\n' "$out" | sed -n 's/^subject=.*CN *= *\([^,]*\).*/\1/p' | head -n 1)
	proto=$(printf '%s\n' "$out" | grep -E '^(ALPN protocol|No ALPN)' | head -n 1)
	ANSWER=${cn:-none}
	if [ -n "$cn" ]; then
		echo "    answered by: CN=$cn    (${proto:-no ALPN line})"
	else
		echo "    no TLS answer:"
		printf '%s\n' "$out" | grep -iE 'error|refused|errno' | head -n 3 | sed 's/^/      /'
	fi
}

# expect WHAT CN: checks the last answer.
expect() {
	if [ "$ANSWER" = "$2" ]; then good "$1"; else bad "$1 (answered by $ANSWER, not $2)"; fi
}

rules() {
	show "ip netns exec $SRV iptables-legacy -t nat -S PREROUTING"
	srv iptables-legacy -t nat -S PREROUTING 2>&1 | sed 's/^/    /'
	show "ip netns exec $SRV ip6tables-legacy -t nat -S PREROUTING"
	srv ip6tables-legacy -t nat -S PREROUTING 2>&1 | sed 's/^/    /'
}
# The proxy's REDIRECT rules: their comment names the proxy's pid.
OURS='--comment "acme-alpn-proxy pid [0-9]+" .*-j REDIRECT'
rule_count() {
	srv "$1" -t nat -S PREROUTING 2>/dev/null | grep -Ec -- "$OURS"
}
# holds TOOL: how many conntrack hold rules of the proxy there are.
holds() {
	srv "$1" -t nat -S PREROUTING 2>/dev/null | grep -c -- 'acme-alpn-proxy conntrack hold pid'
}
no_holds() { [ "$(holds iptables-legacy)" = 0 ] && [ "$(holds ip6tables-legacy)" = 0 ]; }
one_hold() { [ "$(holds iptables-legacy)" = 1 ] && [ "$(holds ip6tables-legacy)" = 1 ]; }
# rule_first TOOL: exactly one rule of ours, and it is the first of the chain.
rule_first() {
	[ "$(rule_count "$1")" = 1 ] &&
		srv "$1" -t nat -S PREROUTING | sed -n 2p | grep -Eq -- "$OURS"
}

# ---- before -----------------------------------------------------------------------------------

say "The server's own firewall has a nat rule already (it must stay untouched)"
OWN_RULE=(-p tcp --dport 8443 -j REDIRECT --to-ports 443)
show "iptables-legacy -t nat -A PREROUTING ${OWN_RULE[*]}    (and ip6tables-legacy)"
srv iptables-legacy -t nat -A PREROUTING "${OWN_RULE[@]}" || die "iptables-legacy failed"
srv ip6tables-legacy -t nat -A PREROUTING "${OWN_RULE[@]}" || die "ip6tables-legacy failed"
# own_rule TOOL: the server's own rule is still there.
own_rule() { srv "$1" -t nat -S PREROUTING | grep -q -- '--dport 8443 -j REDIRECT'; }
own_rules() { own_rule iptables-legacy && own_rule ip6tables-legacy; }

say "Before: port 443 belongs to the web server, whatever the client asks for"
tls "$SRV4"
expect "a browser-like connection reaches the web server" web.example.test
tls "$SRV4" acme-tls/1
expect "a TLS-ALPN-01 validation also reaches the web server (it would fail)" web.example.test

# ---- start ------------------------------------------------------------------------------------

say "Starting acme-alpn-proxy: it listens on [::]:21443, starts its workers, then redirects 443"
show "acme-alpn-proxy -d start    (as an ACME client's pre-hook would)"
if proxy -d start; then
	good "the proxy started and returned once ready (exit 0)"
else
	bad "acme-alpn-proxy -d start failed (exit $?)"
fi
rules
echo "    (the first rule sends new connections, SYN packets addressed to this host, to the proxy"
echo "    whose pid its comment names; the last one, with no target, keeps connection tracking on"
echo "    while redirected connections are open)"
verdict "one IPv4 REDIRECT rule, at the head of PREROUTING, before the server's own" \
	rule_first iptables-legacy
verdict "one IPv6 REDIRECT rule, at the head of PREROUTING, before the server's own" \
	rule_first ip6tables-legacy
verdict "one conntrack hold rule per family" one_hold

say "During: the ClientHello's ALPN list decides where each connection goes"
t_start=$(date +%s)
tls "$SRV4" acme-tls/1
expect "IPv4, ALPN acme-tls/1 goes to the ACME responder" acme-responder
tls "$SRV4"
expect "IPv4, no ALPN goes to the web server" web.example.test
tls "$SRV4" h2,http/1.1
expect "IPv4, ALPN h2,http/1.1 goes to the web server" web.example.test
tls "[$SRV6]" acme-tls/1
expect "IPv6, ALPN acme-tls/1 goes to the ACME responder" acme-responder
tls "[$SRV6]"
expect "IPv6, no ALPN goes to the web server" web.example.test

show "acme-alpn-proxy status"
proxy status | sed 's/^/    /'
st=${PIPESTATUS[0]}
verdict "status says running (exit $st, expected 0)" [ "$st" = 0 ]

# ---- stop -------------------------------------------------------------------------------------

say "Stopping: the rules go first, then a grace period, then the open connections drain"
show "acme-alpn-proxy stop    (as the post-hook would)"
if proxy stop; then good "stop returned 0"; else bad "stop failed (exit $?)"; fi
rules
verdict "the IPv4 rule is gone" [ "$(rule_count iptables-legacy)" = 0 ]
verdict "the IPv6 rule is gone" [ "$(rule_count ip6tables-legacy)" = 0 ]
verdict "the server's own rules are untouched" own_rules
verdict "the hold rules go once the proxy has exited (no connection was open)" \
	wait_for 10 no_holds
show "acme-alpn-proxy status"
proxy status | sed 's/^/    /'
st=${PIPESTATUS[0]}
verdict "status says not running (exit $st, expected 3)" [ "$st" = 3 ]

# With -d the proxy logs to syslog: one line per connection.
if [ -S /dev/log ] && command -v journalctl >/dev/null 2>&1; then
	say "The proxy's log (syslog, facility daemon): one line per connection"
	show "journalctl -t acme-alpn-proxy --since @$t_start -o cat"
	journalctl -t acme-alpn-proxy --since "@$t_start" -o cat 2>/dev/null | tail -n 20 |
		sed 's/^/    /'
else
	echo "(the proxy logs one line per connection to syslog; this machine has no /dev/log)"
fi

say "After: port 443 belongs to the web server again"
tls "$SRV4" acme-tls/1
expect "ALPN acme-tls/1 reaches the web server again" web.example.test
tls "$SRV4"
expect "a browser-like connection reaches the web server" web.example.test

echo
if [ "$UNEXPECTED" = 0 ]; then
	echo "${G}${B}demo: every step behaved as expected${N}"
	exit 0
fi
echo "${R}${B}demo: $UNEXPECTED step(s) did not behave as expected${N}"
exit 1
