#!/usr/bin/env bash
# visitor.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=visitor-nft exec bash "$(dirname "$0")/visitor.sh" "$@"
