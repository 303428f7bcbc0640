#!/bin/sh
# Issue a certificate with acme.sh through TLS-ALPN-01 behind acme-alpn-proxy, while the web
# server keeps port 443:
#   acme-sh.sh -d example.org -d www.example.org [other acme.sh options]
# which runs
#   acme.sh --issue --alpn --tlsport 31443 \
#       --pre-hook "/usr/sbin/acme-alpn-proxy -max-time 1800 $ACME_ALPN_PROXY_OPTS -d start" \
#       --post-hook "/usr/sbin/acme-alpn-proxy stop" -d example.org -d www.example.org
#
# --alpn: acme.sh's standalone TLS-ALPN-01 responder (it needs socat); --tlsport: where it
# listens, which must be the proxy's -alpn port (default 127.0.0.1:31443). acme.sh runs
# --pre-hook before it obtains or renews a certificate and --post-hook after the attempt,
# whether it succeeded or not; it saves both in the domain's configuration, so its cron job
# (`acme.sh --cron`) starts and stops the proxy only when a certificate is due.
#
# Environment: ACME_ALPN_PROXY (the proxy binary; default: acme-alpn-proxy in PATH, stored with
# its absolute path because cron's PATH lacks sbin), ACME_ALPN_PROXY_OPTS (extra options for
# start, stored in the hook too; e.g. "-firewall nftables": on Linux 5.12 or later the redirect
# then dies with the proxy's process, and a crash cannot leave port 443 redirected), ACME_SH
# (default: acme.sh).
# -max-time 1800 (a run for the certificates due): should the stop never come (the client
# killed between its hooks, a script error), the proxy stops by itself after 1800 s; a -max-
# time in ACME_ALPN_PROXY_OPTS overrides it. Before relying on this, run `acme-alpn-proxy
# check` with the same options: it says whether a start would work now, and changes nothing.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
proxy=$(command -v "${ACME_ALPN_PROXY:-acme-alpn-proxy}") || {
	echo "acme-sh.sh: ${ACME_ALPN_PROXY:-acme-alpn-proxy} not found" >&2
	exit 1
}
exec "${ACME_SH:-acme.sh}" --issue --alpn --tlsport 31443 \
	--pre-hook "$proxy -max-time 1800 ${ACME_ALPN_PROXY_OPTS:+$ACME_ALPN_PROXY_OPTS }-d start" \
	--post-hook "$proxy stop" "$@"
