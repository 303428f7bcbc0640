#!/usr/bin/env bash
# rules.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=rules-nft exec bash "$(dirname "$0")/rules.sh" "$@"
