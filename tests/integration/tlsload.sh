#!/usr/bin/env bash
# Zero failed requests under a real TLS load while the proxy starts and stops over and over.
# nginx serves HTTPS on port 443 of the server namespace (IPv4 and IPv6); from the client
# namespace two wrk runs (one per address family, new connection per request) and a TLS client
# of our own (tests/helpers/tlsclients.py, IPv4 and IPv6 in turn: handshake, GET /, read to EOF)
# keep it busy (2,000 requests a second and more, about what these 2 CPUs give when every
# request is a new connection and a full handshake; a Python client costs five times the CPU
# per request of wrk, hence one),
# while the proxy is started (until ready), left running 0.2-0.8 s, stopped, and started again
# 0.1-0.4 s later, for LOAD_SECONDS (default 45). Every request must succeed: this is a
# correctness test, it asserts counts, not speed (the rate is checked only to prove the load was
# real). The stale NAT bindings a stopped instance leaves in the conntrack table made 1-4
# requests fail per 25 s before the proxy deleted them (tests/integration/conntrack.sh shows
# the mechanism deterministically).
#
# LOAD_SECONDS=N changes the duration, LOAD_CLIENTS the number of TLS client processes (default 1);
# LOAD_PROXY_ARGS adds options to every start. LOAD_WORKERS (default 2 here, as a 4-CPU host would
# get, so that connections are shared and drained across workers; the nftables and -transparent
# variants keep the default of this machine, 1) sets -workers.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools iptables-legacy nginx wrk openssl

LOAD_SECONDS=${LOAD_SECONDS:-45}
LOAD_WORKERS=${LOAD_WORKERS-2}

# ---- nginx with a self-signed certificate --------------------------------------------------
netlab_cert "$LAB_DIR/web.key" "$LAB_DIR/web.pem" web.example.test "IP:$SRV4,IP:$SRV6" \
	2>"$LAB_DIR/openssl.log" || { cat "$LAB_DIR/openssl.log"; exit 1; }
netlab_nginx_conf "$LAB_DIR/nginx" 2 4096 <<EOF
	access_log off;
	server {
		listen 0.0.0.0:443 ssl backlog=4096;
		listen [::]:443 ssl ipv6only=on backlog=4096;
		ssl_certificate $LAB_DIR/web.pem;
		ssl_certificate_key $LAB_DIR/web.key;
		location / { return 200 "ok\n"; }
	}
EOF
netlab_nginx "$SRV" "$LAB_DIR/nginx"
LAB_PIDS+=("$NETLAB_NGINX_PID")
wait_for 10 cli curl -sfk "https://$SRV4/" && wait_for 10 cli curl -sfk "https://[$SRV6]/" ||
	{ echo "nginx did not answer" >&2; cat "$LAB_DIR/nginx/logs/"*.log >&2; exit 1; }

# CT_EVENTS=1 (with KEEP_LAB=1): record the conntrack events of the redirected flows, to find
# the entry behind a failure (ct-events.log, timestamps as in the failure lines).
if [ "${CT_EVENTS:-}" = 1 ]; then
	srv conntrack -E -p tcp --reply-port-src "$LISTEN_PORT" -o timestamp \
		>"$LAB_DIR/ct-events.log" 2>&1 &
	LAB_PIDS+=($!)
fi

# PCAP=1 (with KEEP_LAB=1): record the SYN, FIN and RST segments on the client's link
# (client.pcap), to find what happened to a failed connection.
if [ "${PCAP:-}" = 1 ]; then
	cli tcpdump -i veth0 -n -s 96 -w "$LAB_DIR/client.pcap" \
		'(ip and tcp[13] & 7 != 0) or (ip6 and ip6[6] == 6 and ip6[53] & 7 != 0)' \
		>"$LAB_DIR/tcpdump.log" 2>&1 &
	LAB_PIDS+=($!)
	wait_for 10 grep -q listening "$LAB_DIR/tcpdump.log" || { cat "$LAB_DIR/tcpdump.log"; exit 1; }
fi

# ---- the load ----------------------------------------------------------------------------------
rm -f "$LAB_DIR/load.stop"
load_secs=$((LOAD_SECONDS + 4))
for t in "4 https://$SRV4/" "6 https://[$SRV6]/"; do
	set -- $t
	cli wrk -t1 -c8 -d"${load_secs}s" --timeout 10s -H 'Connection: close' "$2" \
		>"$LAB_DIR/wrk$1.out" 2>&1 &
	LAB_PIDS+=($!)
done
cli "$PYTHON" "$TESTHELPERS/tlsclients.py" --clients "${LOAD_CLIENTS:-1}" --seconds "$load_secs" \
	--targets "$SRV4:443,[$SRV6]:443" --stopfile "$LAB_DIR/load.stop" \
	>"$LAB_DIR/tlsclients.out" 2>&1 &
TLSCLIENTS=$!
LAB_PIDS+=($TLSCLIENTS)

# ---- the cycles ----------------------------------------------------------------------------
# Random pauses are the scenario here (a hook's timing), not a wait for a condition.
pause() { sleep "$(printf '0.%03d' $(( $1 + RANDOM % $2 )))"; }
sleep 1 # the load runs a moment without the proxy first
cycles=0 cycle_fail=0
end=$(( $(now_ms) + LOAD_SECONDS * 1000 ))
while [ "$(now_ms)" -lt "$end" ]; do
	cycles=$((cycles + 1))
	echo "cycle $cycles: start at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	# In the foreground (its log in proxy.log), returning once it logged "ready".
	if proxy_start ${LOAD_WORKERS:+-workers "$LOAD_WORKERS"} ${LOAD_PROXY_ARGS:-}; then
		echo "cycle $cycles: ready at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	else
		cycle_fail=$((cycle_fail + 1))
		echo "cycle $cycles: start failed"
	fi
	pause 200 600
	echo "cycle $cycles: stop at $EPOCHREALTIME" >>"$LAB_DIR/cycles.log"
	proxy_cmd stop
	echo "cycle $cycles: stopped at $EPOCHREALTIME ($CMD_RC)" >>"$LAB_DIR/cycles.log"
	[ "$CMD_RC" = 0 ] || { cycle_fail=$((cycle_fail + 1)); echo "cycle $cycles: stop: $CMD_OUT"; }
	pause 100 300
done
# The last instance drains; the load goes on straight to nginx a moment, then ends.
touch "$LAB_DIR/load.stop"
wait "$TLSCLIENTS"
tls_rc=$?
wait_for 15 sh -c "! pgrep -x wrk >/dev/null"

# ---- the verdict -------------------------------------------------------------------------
wrk_requests() { sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$1"; }
wrk_errors() { # socket errors and non-2xx responses, summed
	awk '/Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 }
	     /Non-2xx or 3xx responses:/ { n += $NF } END { print n + 0 }' "$1"
}
total=0
for f in 4 6; do
	echo "---- wrk IPv$f:"; sed -n '/requests in/,$p' "$LAB_DIR/wrk$f.out"
	n=$(wrk_requests "$LAB_DIR/wrk$f.out")
	assert_ge "wrk over IPv$f made requests" "${n:-0}" 1000
	assert_eq "wrk over IPv$f: no socket error, no non-2xx response" 0 \
		"$(wrk_errors "$LAB_DIR/wrk$f.out")"
	total=$((total + ${n:-0}))
done
echo "---- TLS clients:"; head -n 20 "$LAB_DIR/tlsclients.out"
n=$(sed -n 's/^requests \([0-9]*\) .*/\1/p' "$LAB_DIR/tlsclients.out")
assert_eq "the TLS clients: every request answered in full" 0 "$tls_rc"
assert_ge "the TLS clients made requests" "${n:-0}" 1000
total=$((total + ${n:-0}))
rate=$((total / load_secs))
assert_ge "the load was real: requests per second, all clients" "$rate" 2000 "/s"
# A cycle takes about 3 s: the stop waits for the 2 s grace period.
assert_ge "start/stop cycles during the load" "$cycles" $((LOAD_SECONDS / 5))
echo "conntrack clean-up lines in the proxies' logs:"
cat "$LAB_DIR"/proxy-old.log "$LAB_DIR"/proxy.log 2>/dev/null | grep 'conntrack: deleted' |
	sed 's/.*conntrack: //' | sort | uniq -c | sort -rn | head -n 8
assert_eq "every start and every stop exited 0" 0 "$cycle_fail"
if [ "$T_FAIL" != 0 ]; then
	echo "---- cycles"; cat "$LAB_DIR/cycles.log"
fi
wait_for 10 sh -c "! ip netns pids $SRV | xargs -r ps -o comm= -p | grep -q acme-alpn" ||
	not_ok "the last instance did not exit"
assert_eq "after the cycles: no rule of the proxy in nat PREROUTING" 0 \
	"$(fw_rules | grep -c acme-alpn-proxy)"
lab_finish
