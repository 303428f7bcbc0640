#!/usr/bin/env bash
# End-to-end TLS-ALPN-01 issuance through acme-alpn-proxy, with a web server that must not lose
# a single request meanwhile.
#
#   client namespace: pebble (the CA, directory on 198.51.100.2:14000), pebble-challtestsrv
#                     (pebble's DNS on 127.0.0.1:8053) and a curl load against the web server
#   server namespace: nginx on port 443 (IPv4 and IPv6), acme-alpn-proxy, lego (its TLS-ALPN-01
#                     responder on 127.0.0.1:31443, reachable from outside only through the proxy)
#
# The proxy is started and stopped around lego by the shipped wrapper etc/hooks/lego.sh. Run once
# with DNS answering A records only and once with AAAA records only. Passes when both runs issue a
# certificate naming both domains and the load saw no failed request.
#
# Environment: PROXY (the binary; default ./src/acme-alpn-proxy of the build directory you run
# from), CI=true (missing tools fail instead of skipping), ISSUANCE_DIRECT=1 (harness self-check:
# no nginx and no proxy, lego answers on port 443 itself), ISSUANCE_KEEP=1 (keep the temporary
# directory with all logs).
set -u

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces"

top=$(cd "$(dirname "$0")/../.." && pwd)
# The lab's veth link, wait_for and the cleanup of the namespaces.
# shellcheck source=tests/integration/netlab.sh
. "$top/tests/integration/netlab.sh"
if [ -z "${PROXY:-}" ]; then
	if [ -x ./src/acme-alpn-proxy ]; then PROXY=$PWD/src/acme-alpn-proxy
	else PROXY=$top/src/acme-alpn-proxy; fi
fi
direct=${ISSUANCE_DIRECT:-0}

for tool in ip unshare python3 pebble pebble-challtestsrv lego nginx openssl curl; do
	command -v "$tool" >/dev/null 2>&1 && continue
	[ "${CI:-}" = true ] && fail "$tool not found (CI must install it)"
	skip "$tool not found"
done
[ "$direct" = 1 ] || [ -x "$PROXY" ] || fail "PROXY=$PROXY is not an executable"

# Unique names per run: parallel test runs must not meet.
SNS=aap-iss-$$-srv
CNS=aap-iss-$$-cli
tmp=$(mktemp -d /tmp/aap-issuance.XXXXXX) || fail "mktemp"

cleanup() {
	netlab_kill -g 5 "$SNS" "$CNS"
	wait 2>/dev/null
	netlab_del "$SNS" "$CNS"
	if [ "${ISSUANCE_KEEP:-0}" = 1 ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

S() { ip netns exec "$SNS" "$@"; }
C() { ip netns exec "$CNS" "$@"; }

# wait_or_fail SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds, fail at the
# deadline.
wait_or_fail() {
	local secs=$1 what=$2
	shift 2
	wait_for "$secs" "$@" || fail "timed out waiting for $what"
}

# ---- network -------------------------------------------------------------------------------
ip netns add "$SNS" || fail "ip netns add $SNS"
ip netns add "$CNS" || fail "ip netns add $CNS"
# 198.51.100.1 and 2001:db8:1::1 on the server's side, .2 and ::2 on the client's.
netlab_link "$SNS" "$CNS" || fail "the lab's veth link"

# ---- certificates: a CA for pebble's own HTTPS listener, a self-signed one for nginx --------
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
(
	cd "$tmp" || exit 1
	openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=issuance-test-ca \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
	openssl req -new "${ec[@]}" -keyout pebble.key -out pebble.csr -subj /CN=pebble &&
	printf 'subjectAltName=IP:198.51.100.2\nextendedKeyUsage=serverAuth\n' >pebble.ext &&
	openssl x509 -req -in pebble.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
		-extfile pebble.ext -out pebble.pem &&
	openssl req -x509 "${ec[@]}" -keyout web.key -out web.pem -days 2 -subj /CN=web.example.test \
		-addext subjectAltName=IP:198.51.100.1,IP:2001:db8:1::1
) >"$tmp/openssl.log" 2>&1 || { cat "$tmp/openssl.log"; fail "openssl"; }

# ---- pebble and its DNS ----------------------------------------------------------------------
cat >"$tmp/pebble.json" <<EOF
{
  "pebble": {
    "listenAddress": "198.51.100.2:14000",
    "managementListenAddress": "127.0.0.1:15000",
    "certificate": "$tmp/pebble.pem",
    "privateKey": "$tmp/pebble.key",
    "httpPort": 5002,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
# No default answers: each run adds exactly the records it wants through the management API.
C pebble-challtestsrv -defaultIPv4 "" -defaultIPv6 "" -dns01 127.0.0.1:8053 \
	-management 127.0.0.1:8055 -http01 "" -https01 "" -tlsalpn01 "" \
	>"$tmp/challtestsrv.log" 2>&1 &
# NOSLEEP: no random delay before validating; NONCEREJECT=0: no deliberately rejected nonces;
# AUTHZREUSE=0: every order gets fresh authorizations, so each run really validates.
C env PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
	pebble -config "$tmp/pebble.json" -dnsserver 127.0.0.1:8053 >"$tmp/pebble.log" 2>&1 &
wait_or_fail 20 "pebble's directory from the server namespace" \
	S curl -sf --cacert "$tmp/ca.pem" https://198.51.100.2:14000/dir
wait_or_fail 10 "pebble-challtestsrv" C curl -sf -X POST -d '{"ip":""}' \
	http://127.0.0.1:8055/set-default-ipv4

dns() { # dns PATH JSON: one management call in the client namespace
	C curl -sf -X POST -d "$2" "http://127.0.0.1:8055/$1" >/dev/null || fail "challtestsrv $1 $2"
}

# ---- nginx: the web server that must keep answering ------------------------------------------
if [ "$direct" != 1 ]; then
	netlab_nginx_conf "$tmp/nginx" 1 512 <<EOF
	log_format test '\$remote_addr \$status';
	access_log $tmp/nginx/logs/access.log test;
	server {
		listen 0.0.0.0:443 ssl;
		listen [::]:443 ssl ipv6only=on;
		ssl_certificate $tmp/web.pem;
		ssl_certificate_key $tmp/web.key;
		location / { return 200 "ok\n"; }
	}
EOF
	netlab_nginx "$SNS" "$tmp/nginx"
	wait_or_fail 10 "nginx on 198.51.100.1:443" C curl -sfk https://198.51.100.1/
	wait_or_fail 10 "nginx on [2001:db8:1::1]:443" C curl -sfk 'https://[2001:db8:1::1]/'
fi

# ---- the load ------------------------------------------------------------------------------
# Every request is a new curl process and so a new TCP connection and TLS handshake: each one
# crosses the proxy (or not) on its own. One line per request: HTTP status (000: none), curl's
# exit status, the time it ended (to match a failure with the proxy's log).
cat >"$tmp/load.sh" <<'EOF'
url=$1 out=$2 stop=$3
while [ ! -e "$stop" ]; do
	rc=0
	code=$(curl -sk --max-time 5 -o /dev/null -w '%{http_code}' "$url") || rc=$?
	echo "${code:-000} $rc $EPOCHREALTIME" >>"$out"
done
EOF
# with-syslog.sh LOG COMMAND...: run COMMAND with a /dev/log whose messages go to LOG, one a
# line. With -d the proxy logs to syslog only, and this host may have none; a private mount
# namespace (unshare -m) with its own /dev keeps the host's /dev untouched.
cat >"$tmp/with-syslog.sh" <<'EOF'
set -e
log=$1 dir=$(dirname "$1")
shift
mount --make-rprivate /
mkdir "$dir/olddev"
mount --bind /dev "$dir/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom; do
	touch "/dev/$n"
	mount --bind "$dir/olddev/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open(sys.argv[1], "ab", buffering=0) as f:
	while True:
		f.write(s.recv(65536).rstrip(b"\n") + b"\n")
' "$log" &
while [ ! -S /dev/log ]; do sleep 0.05; done
chmod 666 /dev/log
set +e
"$@"
status=$?
kill $!
exit $status
EOF
count() { cat "$@" 2>/dev/null | wc -l; }
count_bad() { cat "$@" 2>/dev/null | grep -cv '^200 0 '; }
# Counted anew at each call, for wait_or_fail. loads: run_case's list of load output files.
loads_at_least() { [ "$(count "${loads[@]}")" -ge "$1" ]; }

# ---- one issuance ----------------------------------------------------------------------------
# run_case NAME FAMILY: FAMILY is 4 (DNS answers A only) or 6 (AAAA only).
run_case() {
	local name=$1 family=$2 url host d dir lego_status=0 n_before n_after n_total n_bad i n_log
	local proxied loads load_pids
	dir=$tmp/$name
	mkdir -p "$dir"
	dns clear-a '{"host":"a.example.test"}'; dns clear-a '{"host":"b.example.test"}'
	dns clear-aaaa '{"host":"a.example.test"}'; dns clear-aaaa '{"host":"b.example.test"}'
	for host in a.example.test b.example.test; do
		if [ "$family" = 4 ]; then
			dns add-a "{\"host\":\"$host\",\"addresses\":[\"198.51.100.1\"]}"
			url=https://198.51.100.1/
		else
			dns add-aaaa "{\"host\":\"$host\",\"addresses\":[\"2001:db8:1::1\"]}"
			url='https://[2001:db8:1::1]/'
		fi
	done

	local -a lego=(--server https://198.51.100.2:14000/dir --email x@example.test
		--domains a.example.test --domains b.example.test --accept-tos --path "$dir/lego"
		--tls)
	if [ "$direct" = 1 ]; then
		S env LEGO_CA_CERTIFICATES="$tmp/ca.pem" lego "${lego[@]}" --tls.port :443 run \
			>"$dir/lego.log" 2>&1 || lego_status=$?
	else
		loads=() load_pids=()
		n_log=$(count "$tmp/nginx/logs/access.log")
		for i in 1 2; do
			C bash "$tmp/load.sh" "$url" "$dir/load$i" "$dir/stop-load" &
			load_pids+=($!)
			loads+=("$dir/load$i")
		done
		# Some requests straight to nginx before the proxy starts.
		wait_or_fail 10 "the load to start" loads_at_least 20
		n_before=$(count "${loads[@]}")

		mkdir -m 755 "$dir/empty"
		# The wrapper an administrator would use: proxy -d start, lego, proxy stop.
		S env LEGO_CA_CERTIFICATES="$tmp/ca.pem" ACME_ALPN_PROXY="$PROXY" \
			ACME_ALPN_PROXY_PIDFILE="$dir/proxy.pid" \
			ACME_ALPN_PROXY_OPTS="-v -chroot $dir/empty" \
			unshare -m sh "$tmp/with-syslog.sh" "$dir/proxy.log" \
			sh "$top/etc/hooks/lego.sh" "${lego[@]}" --tls.port 127.0.0.1:31443 run \
			>"$dir/lego.log" 2>&1 || lego_status=$?
		n_after=$(count "${loads[@]}")
		# The wrapper's stop returns once the proxy stopped accepting; the instance must be gone
		# (or at least not answer as running), then the load goes on straight to nginx.
		S env ACME_ALPN_PROXY_PIDFILE="$dir/proxy.pid" "$PROXY" status \
			>"$dir/status-after.log" 2>&1
		[ $? = 3 ] || { cat "$dir/status-after.log"; fail "$name: proxy still running after stop"; }
		wait_or_fail 20 "requests after the proxy stopped" \
			loads_at_least $((n_after + 20))
		touch "$dir/stop-load"
		wait "${load_pids[@]}"	# bounded: curl gives up after 5 s
		n_total=$(count "${loads[@]}")
		n_bad=$(count_bad "${loads[@]}")
		echo "$name: $n_total requests ($n_before before the proxy started," \
			"$((n_after - n_before)) while it ran), $n_bad failed"
		# Proof that the load crossed the proxy: its fallback connects to nginx from 127.0.0.1.
		proxied=$(tail -n +$((n_log + 1)) "$tmp/nginx/logs/access.log" | grep -c '^127\.0\.0\.1 ')
		echo "$name: $proxied requests reached nginx through the proxy; its log:" \
			"$(grep -c 'route=acme' "$dir/proxy.log") routed to the ACME responder," \
			"$(grep -c 'route=fallback' "$dir/proxy.log") to nginx"
	fi

	if [ "$lego_status" != 0 ]; then
		tail -n 30 "$dir/lego.log"
		[ -e "$dir/proxy.log" ] && tail -n 30 "$dir/proxy.log"
		fail "$name: lego exited with $lego_status"
	fi
	local crt=$dir/lego/certificates/a.example.test.crt
	[ -s "$crt" ] || fail "$name: no certificate at $crt"
	openssl x509 -in "$crt" -noout -text >"$dir/cert.txt" || fail "$name: unreadable $crt"
	for d in a.example.test b.example.test; do
		grep -q "DNS:$d\\b" "$dir/cert.txt" || fail "$name: certificate lacks DNS:$d"
	done
	echo "$name: certificate issued for a.example.test and b.example.test"
	if [ "$direct" != 1 ]; then
		if [ "$n_bad" != 0 ]; then
			echo "failed requests (status, curl exit, time):"
			cat "${loads[@]}" | grep -v '^200 0 ' | head -n 20
			echo "the proxy's log, less the connections that went well:"
			grep -v ' conn .* ms=[0-9]*$' "$dir/proxy.log" | head -n 40
			fail "$name: $n_bad of $n_total requests failed"
		fi
		[ "$proxied" -gt 0 ] || fail "$name: no request went through the proxy"
	fi
}

run_case ipv4 4
run_case ipv6 6
echo "PASS"
