#!/usr/bin/env bash
# routing.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=routing-nft exec bash "$(dirname "$0")/routing.sh" "$@"
