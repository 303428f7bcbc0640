#!/bin/sh
# Run lego's TLS-ALPN-01 challenge behind acme-alpn-proxy while the web server keeps port 443.
#
# lego answers the challenge itself (--tls), but it has no hook that runs before its challenge
# server starts: --run-hook runs only after a certificate was obtained. So this script wraps the
# whole lego command: it starts the proxy, runs lego with the arguments given, and stops the
# proxy however lego ended. lego must listen where the proxy sends acme-tls/1 connections
# (the proxy's -alpn, default 127.0.0.1:31443), and lego's global options go before its command:
#
#   lego.sh --tls --tls.port 127.0.0.1:31443 --email you@example.org \
#       --domains example.org --domains www.example.org --accept-tos run
#   lego.sh --tls --tls.port 127.0.0.1:31443 --email you@example.org \
#       --domains example.org --domains www.example.org renew --days 30
#
# Environment:
#   ACME_ALPN_PROXY       the proxy binary (default: acme-alpn-proxy, searched in PATH)
#   ACME_ALPN_PROXY_OPTS  extra options for `start`, split at spaces
#                         (e.g. "-fallback 127.0.0.1:8443 -alpn 127.0.0.1:31443"; add
#                         "-firewall nftables" on Linux 5.12 or later: the redirect then dies
#                         with the proxy's process, a crash cannot leave port 443 redirected)
#   LEGO                  the lego binary (default: lego)
#   ACME_ALPN_PROXY_PIDFILE and the proxy's other variables are passed on unchanged.
# Exit status: lego's; 1 if the proxy did not start (lego is then not run) or did not stop.
# Only one ACME run at a time: a second one would stop the proxy under the first.
# -max-time 1800 (one lego run): should the stop never come (the client killed between its
# hooks, a script error), the proxy stops by itself after 1800 s; a -max-time in
# ACME_ALPN_PROXY_OPTS overrides it. Before relying on this, run `acme-alpn-proxy check` with
# the same options: it says whether a start would work now, and changes nothing.

# cron's PATH lacks the sbin directories.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
proxy=${ACME_ALPN_PROXY:-acme-alpn-proxy}

# shellcheck disable=SC2086 # ACME_ALPN_PROXY_OPTS holds several words on purpose
if ! "$proxy" -max-time 1800 ${ACME_ALPN_PROXY_OPTS:-} -d start; then
	echo "lego.sh: $proxy did not start, lego not run" >&2
	exit 1
fi
# An interrupted run must not leave port 443 redirected.
trap '"$proxy" stop; exit 130' INT TERM HUP

status=0
"${LEGO:-lego}" "$@" || status=$?

trap - INT TERM HUP
if ! "$proxy" stop; then
	echo "lego.sh: $proxy stop failed" >&2
	[ "$status" != 0 ] || status=1
fi
exit "$status"
