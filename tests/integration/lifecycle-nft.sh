#!/usr/bin/env bash
# lifecycle.sh with the nftables backend (-firewall nftables): see lib.sh, FIREWALL.
FIREWALL=nftables LAB_TEST=lifecycle-nft exec bash "$(dirname "$0")/lifecycle.sh" "$@"
