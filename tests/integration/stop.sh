#!/usr/bin/env bash
# `stop` never says "stopped" while port 443 is still redirected. While another program holds
# the xtables lock (an iptables run, a firewall reload), the proxy cannot remove its REDIRECT
# rule: it must keep accepting what the rule still sends it and retry until the rule is gone;
# `stop` must return 0 only then, and exit 1 saying so if it gives up waiting first. Before the
# fix, `stop` printed "stopped" and exited 0 while the IPv4 rule stayed behind, pointing port
# 443 at a closed port. A start whose IPv6 install fails and whose IPv4 rollback fails too
# removes the IPv4 rule before it exits.
#
# The lock is the lab's own: the proxy, stop and the program holding the lock run in private
# mount namespaces where a file of the lab is bind-mounted over /run/xtables.lock, so the host's
# iptables is never blocked.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools iptables-legacy ip6tables-legacy

ACME_HELLO=$TESTDATA/openssl-acme.bin
WEB_HELLO=$TESTDATA/chromium.bin
LOCK_SECONDS=12 # longer than the 10 s an iptables-style lock wait would give up after

backend_start web "$LAB_DIR/web" "[::]:443"
backend_start acme "$LAB_DIR/acme" "127.0.0.1:31443"

lab_private_xtables_lock
# xt_proxy ARGS...: the proxy (or the hooks build, with PROXY_BIN) under the lab's lock.
xt_proxy() {
	local t0
	t0=$(now_ms)
	srv timeout -k 5 60 $XT env ACME_ALPN_PROXY_PIDFILE="$LAB_DIR/proxy.pid" ${XT_ENV:-} \
		"${PROXY_BIN:-$PROXY}" "$@" >"$LAB_DIR/cmd.out" 2>&1 </dev/null
	CMD_RC=$?
	CMD_MS=$(( $(now_ms) - t0 ))
	CMD_OUT=$(cat "$LAB_DIR/cmd.out")
	printf '%s\n' "== proxy $* -> $CMD_RC ($CMD_MS ms)" "$CMD_OUT" >>"$LAB_DIR/commands.log"
}

rules4() { srv iptables-legacy -t nat -S PREROUTING | grep -c -- '-j REDIRECT'; }
rules6() { srv ip6tables-legacy -t nat -S PREROUTING | grep -c -- '-j REDIRECT'; }
# route HOST HELLO: which backend gets a hello sent to port 443 of HOST (acme, web, none).
route() {
	bk_reset "$LAB_DIR/web" "$LAB_DIR/acme"
	probe --connect "$(hostport "$1" 443)" --file "$2" --timeout 5
	if [ "$(bk_conns "$LAB_DIR/acme")" -gt 0 ]; then echo acme
	elif [ "$(bk_conns "$LAB_DIR/web")" -gt 0 ]; then echo web
	else echo none; fi
}

# ---- stop while the lock is held -----------------------------------------------------------
PROXY_WRAP=$XT proxy_start -workers 2 -grace 0.5 || exit 1
assert_eq "running: port 443 redirected (IPv4 rule)" 1 "$(rules4)"
srv $XT flock /run/xtables.lock sleep "$LOCK_SECONDS" &
LOCKER=$!
LAB_PIDS+=($LOCKER)
lock_t0=$(now_ms)
wait_for 5 lab_lock_held || { not_ok "the lock holder did not take the lab's xtables lock"; lab_finish; }

# A stop that gives up waiting (test build: after 3 s) must say the redirect is in place.
PROXY_BIN=$PROXY_HOOKS XT_ENV=ACME_ALPN_PROXY_TEST_HOOK=stop-wait-ms=3000 xt_proxy stop
assert_eq "stop that gives up waiting while the lock is held: exit 1" 1 "$CMD_RC"
assert_match "it says port 443 may still be redirected" "still redirected|may still be redirected" \
	"$CMD_OUT"
assert_eq "the redirect is still in place (IPv4)" 1 "$(rules4)"
assert_eq "while it is: an acme-tls/1 hello to port 443 still reaches the ACME responder" acme \
	"$(route "$SRV4" "$ACME_HELLO")"
assert_eq "while it is: a browser hello to port 443 still reaches the web server (IPv6)" web \
	"$(route "$SRV6" "$WEB_HELLO")"
assert_match "the proxy logs the failed removal and that it retries" \
	"removing the redirect failed \(attempt 1\).*retrying" "$(cat "$LAB_DIR/proxy.log")"

# A stop that waits long enough returns 0, and only once the rules are gone.
xt_proxy stop
rules_after="$(rules4) $(rules6)"
assert_eq "stop while the lock is held: exit 0 once done" 0 "$CMD_RC"
assert_eq "when stop returns 0, no REDIRECT rule is left (IPv4 IPv6)" "0 0" "$rules_after"
assert_ge "stop returned only after the lock was released" \
	$(( $(now_ms) - lock_t0 )) $((LOCK_SECONDS * 1000)) " ms"
assert_match "the proxy logs the removal after retries" "redirect removed .* at attempt [0-9]+" \
	"$(cat "$LAB_DIR/proxy.log")"
proxy_reap 15
assert_eq "the proxy exited 0" 0 "$PROXY_EXIT"
assert_eq "after stop: a browser hello reaches the web server (IPv4)" web \
	"$(route "$SRV4" "$WEB_HELLO")"
wait "$LOCKER" 2>/dev/null

# ---- a failed start whose rollback failed removes what it left ---------------------------
PROXY="$PROXY_HOOKS" proxy_run ACME_ALPN_PROXY_TEST_HOOK=fail-v6-undo -chroot "$LAB_DIR/empty" -d \
	start
assert_eq "IPv6 install and IPv4 rollback fail: start exits 1" 1 "$CMD_RC"
assert_match "the message names both failures" "IPv6.*IPv4 rule again failed" "$CMD_OUT"
# The -d waiter has its answer; the daemon may still be removing what is left: wait for it.
daemon_gone() { ! srv pgrep -f "acme-alpn-proxy-hooks -chroot $LAB_DIR/empty" >/dev/null; }
wait_for 15 daemon_gone || not_ok "the failed daemon did not exit"
assert_eq "after the failed start: no IPv4 REDIRECT rule left" 0 "$(rules4)"
assert_eq "after the failed start: no conntrack hold left" 0 \
	"$(srv iptables-legacy -t nat -S PREROUTING | grep -c 'conntrack hold')"
lab_finish
