#!/bin/sh
# uacme challenge hook: TLS-ALPN-01 behind acme-alpn-proxy, answered by ualpn, while the web
# server keeps port 443.
#
# 1. Run uacme's responder ualpn in server mode on the proxy's -alpn address (default
#    127.0.0.1:31443). It may run all the time: it is reachable from outside only while the
#    proxy runs, and only by acme-tls/1 connections. -c (a backend, which ualpn requires) is the
#    web server; -P 0: no PROXY protocol header towards it.
#      ualpn -d -b 127.0.0.1@31443 -c 127.0.0.1@443 -P 0
# 2. Give uacme this hook:
#      uacme -h /etc/acme-alpn-proxy/hooks/uacme-hook.sh issue example.org www.example.org
#
# uacme calls the hook for each challenge it considers: METHOD TYPE IDENT TOKEN AUTH, with METHOD
# begin (exit 0 to accept the challenge), then done or failed. This hook accepts tls-alpn-01
# only, hands the key authorization to ualpn through uacme's own ualpn.sh, and keeps the proxy
# running from begin to done/failed: uacme validates one identifier after the other, so the
# proxy runs once per identifier, only when a certificate is being issued.
#
# Environment: ACME_ALPN_PROXY (default: acme-alpn-proxy in PATH), ACME_ALPN_PROXY_OPTS (extra
# options for start; e.g. "-firewall nftables" on Linux 5.12 or later: the redirect then dies
# with the proxy's process, so that a crash cannot leave port 443 redirected), UALPN_SH (default /usr/share/uacme/ualpn.sh, Debian's path).
# -max-time 600 (one identifier): should the stop never come (the client killed between its
# hooks, a script error), the proxy stops by itself after 600 s; a -max-time in
# ACME_ALPN_PROXY_OPTS overrides it. Before relying on this, run `acme-alpn-proxy check` with
# the same options: it says whether a start would work now, and changes nothing.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
proxy=${ACME_ALPN_PROXY:-acme-alpn-proxy}
ualpn_sh=${UALPN_SH:-/usr/share/uacme/ualpn.sh}

if [ $# -ne 5 ]; then
	echo "usage: $0 method type ident token auth" >&2
	exit 85
fi
[ "$2" = tls-alpn-01 ] || exit 1 # decline: uacme tries the next challenge type

case $1 in
begin)
	"$ualpn_sh" "$@" || exit 1
	# shellcheck disable=SC2086 # ACME_ALPN_PROXY_OPTS holds several words on purpose
	if ! "$proxy" -max-time 600 ${ACME_ALPN_PROXY_OPTS:-} -d start; then
		"$ualpn_sh" failed "$2" "$3" "$4" "$5"
		exit 1
	fi
	;;
done | failed)
	status=0
	"$proxy" stop || status=1
	"$ualpn_sh" "$@" || status=1
	exit "$status"
	;;
*)
	echo "$0: unknown method $1" >&2
	exit 1
	;;
esac
