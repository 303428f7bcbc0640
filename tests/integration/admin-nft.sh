#!/usr/bin/env bash
# admin.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=admin-nft exec bash "$(dirname "$0")/admin.sh" "$@"
