#!/usr/bin/env bash
# conntrack.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=conntrack-nft exec bash "$(dirname "$0")/conntrack.sh" "$@"
