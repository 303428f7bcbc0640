#!/usr/bin/env bash
# tlsload.sh with -transparent: the zero-failure load while the proxy starts and stops, every
# proxied request reaching nginx from the visitor's own address, and connections that do not
# cross the proxy (before start, after stop, draining) unaffected by its policy routing.
# 20 s of load, not 45: see tlsload-nft.sh.
LOAD_SECONDS=${LOAD_SECONDS:-20} LOAD_WORKERS=${LOAD_WORKERS-} \
	LOAD_PROXY_ARGS="-transparent ${LOAD_PROXY_ARGS:-}" LAB_TEST=tlsload-transparent \
	exec bash "$(dirname "$0")/tlsload.sh" "$@"
