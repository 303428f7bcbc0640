#!/usr/bin/env bash
# tlsload.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
LOAD_WORKERS=${LOAD_WORKERS-} FIREWALL=nftables LAB_TEST=tlsload-nft exec bash "$(dirname "$0")/tlsload.sh" "$@"
