#!/usr/bin/env bash
# dehydrated hook: TLS-ALPN-01 behind acme-alpn-proxy while the web server keeps port 443.
#
# dehydrated (CHALLENGETYPE="tls-alpn-01") writes each challenge certificate to ALPNCERTDIR as
# DOMAIN.crt.pem and DOMAIN.key.pem, and leaves serving them to another program: a responder
# that listens on the proxy's -alpn address (default 127.0.0.1:31443), answers acme-tls/1 and
# picks the certificate by SNI. The example responder in dehydrated's docs/tls-alpn.md does
# that once its HOST and PORT are set to "127.0.0.1" and 31443; it may run all the time, since
# it is reachable from outside only while the proxy runs. This hook starts the proxy when a
# dehydrated run begins and stops it when the run ends. In dehydrated's config:
#   CHALLENGETYPE="tls-alpn-01"
#   HOOK="/etc/acme-alpn-proxy/hooks/dehydrated-hook.sh"
#
# startup_hook and exit_hook come once per run (`dehydrated --cron`), also when nothing is due;
# every other handler is accepted and ignored. To chain your own hook, call it from here.
# Environment: ACME_ALPN_PROXY (default: acme-alpn-proxy in PATH), ACME_ALPN_PROXY_OPTS (extra
# options for start; e.g. "-firewall nftables" on Linux 5.12 or later: the redirect then dies
# with the proxy's process, so that a crash cannot leave port 443 redirected).
# -max-time 3600 (a whole dehydrated run, every certificate due): should the stop never come
# (the client killed between its hooks, a script error), the proxy stops by itself after 3600
# s; a -max-time in ACME_ALPN_PROXY_OPTS overrides it. Before relying on this, run `acme-alpn-
# proxy check` with the same options: it says whether a start would work now, and changes
# nothing.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
proxy=${ACME_ALPN_PROXY:-acme-alpn-proxy}

startup_hook() {
	# A failure here makes dehydrated stop before asking for any validation.
	# shellcheck disable=SC2086 # ACME_ALPN_PROXY_OPTS holds several words on purpose
	"$proxy" -max-time 3600 ${ACME_ALPN_PROXY_OPTS:-} -d start
}

exit_hook() {
	# $1: dehydrated's error message, if the run failed. Stop the proxy either way.
	"$proxy" stop
}

handler=${1:-}
shift
case $handler in
startup_hook | exit_hook) "$handler" "$@" ;;
*) exit 0 ;;
esac
