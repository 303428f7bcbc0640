#!/usr/bin/env bash
# tlsload.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL. 20 s of load
# (tlsload.sh's own run has 45): every assertion scales with LOAD_SECONDS or is a fixed count
# that 20 s reach (>= 1000 requests per client kind, >= 2000/s, >= 4 start/stop cycles), and
# each cycle exercises the same backend code as the next one.
LOAD_SECONDS=${LOAD_SECONDS:-20} LOAD_WORKERS=${LOAD_WORKERS-} FIREWALL=nftables \
	LAB_TEST=tlsload-nft exec bash "$(dirname "$0")/tlsload.sh" "$@"
