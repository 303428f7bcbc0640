#!/usr/bin/env bash
# Long-lived connections across start and stop, where nothing but the proxy's own rules uses
# connection tracking in the server namespace (the REDIRECT target switches it on, and its
# deletion would switch it off). (a) A connection to the web server opened before `start`
# keeps working while the proxy runs (the REDIRECT rule matches SYN packets only). (b) A
# connection redirected through the proxy keeps working after `stop` has removed the rule and
# the grace period is over, until the client closes it; then the proxy exits and its conntrack
# hold rule is gone. Before the fix both broke (reset) every time.
. "${TESTLIB:-$(dirname "$0")/lib.sh}"
lab_setup
lab_require_tools iptables-legacy mkfifo

GRACE=0.5

# The web server: echoes, on [::]:443 (the proxy's fallback is 127.0.0.1:443).
backend_start web "$LAB_DIR/web" "[::]:443"
bk_mode "$LAB_DIR/web" echo

# client_start NAME [PORT]: a long-lived connection from the client namespace (from local port
# PORT when given) to port 443 of the server, driven through a FIFO: each line "x" makes one exchange (send, read the echo back),
# logged as "ok N" or "broken N: why" in LAB_DIR/NAME.log; "close" closes it.
declare -A CLIENT_FD
client_start() {
	local name=$1 fd
	mkfifo "$LAB_DIR/$name.fifo"
	: >"$LAB_DIR/$name.log"
	cli "$PYTHON" - "$SRV4" 443 "$LAB_DIR/$name.fifo" "$LAB_DIR/$name.log" "${2:-0}" <<'PY' &
import socket, sys
host, port, fifo, logname = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
log = open(logname, "a", buffering=1)
s = socket.create_connection((host, port), timeout=5, source_address=("", int(sys.argv[5])))
log.write("connected\n")
n = 0
with open(fifo) as cmds:
	for line in cmds:
		line = line.strip()
		if line == "close":
			s.close()
			log.write("closed\n")
			break
		n += 1
		# Not a TLS record: the proxy sends it to the web server at once.
		msg = ("ping %d\n" % n).encode()
		try:
			s.sendall(msg)
			got = b""
			while len(got) < len(msg):
				b = s.recv(len(msg) - len(got))
				if not b:
					raise OSError("closed by the other side")
				got += b
			log.write("ok %d\n" % n if got == msg else "broken %d: other bytes\n" % n)
		except OSError as e:
			log.write("broken %d: %s\n" % (n, e))
PY
	LAB_PIDS+=($!)
	exec {fd}>"$LAB_DIR/$name.fifo"
	CLIENT_FD[$name]=$fd
	wait_for 5 grep -q connected "$LAB_DIR/$name.log" ||
		{ not_ok "$name: connect"; return 1; }
}

answered() { [ "$(grep -cE '^(ok|broken) ' "$LAB_DIR/$1.log")" -gt "$2" ]; }

# exchanges NAME COUNT WHEN: COUNT exchanges on the connection, each must come back.
exchanges() {
	local name=$1 count=$2 when=$3 n
	for _ in $(seq "$count"); do
		n=$(grep -cE '^(ok|broken) ' "$LAB_DIR/$name.log")
		echo x >&"${CLIENT_FD[$name]}"
		if ! wait_for 8 answered "$name" "$n"; then
			not_ok "$name: $when: no answer to exchange $((n + 1)) within 8 s"
			return 1
		fi
	done
	if grep -q '^broken' "$LAB_DIR/$name.log"; then
		not_ok "$name: $when: $(grep '^broken' "$LAB_DIR/$name.log" | head -n 1)"
		return 1
	fi
	ok "$name: $when: $(grep -c '^ok' "$LAB_DIR/$name.log") exchanges ok so far"
}

client_close() {
	echo close >&"${CLIENT_FD[$1]}"
	eval "exec ${CLIENT_FD[$1]}>&-"
}

# The proxy's rules, and how each backend writes the redirect and the hold (lib.sh).
nat_rules() { fw_rules; }
if [ "$FIREWALL" = nftables ]; then
	SYN_RE='tcp flags syn / fin,syn,rst,ack .*redirect to'
	REDIR_RE='redirect to'
	HOLD='ct state invalid counter packets [0-9]+ bytes [0-9]+ comment'
else
	SYN_RE='--tcp-flags FIN,SYN,RST,ACK SYN .*-j REDIRECT'
	REDIR_RE=REDIRECT
	HOLD="-m conntrack --ctstate INVALID -m comment --comment"
fi

# (a) Open before start.
client_start early
exchanges early 2 "before start (straight to the web server)"
proxy_start -grace "$GRACE"
assert_match "the REDIRECT rule is SYN only" "$SYN_RE" "$(nat_rules)"
assert_match "the hold rule names the proxy's pid" \
	"$HOLD \"acme-alpn-proxy conntrack hold pid $PROXY_PID\"" "$(nat_rules)"
exchanges early 3 "after start"

# (b) Redirected, then stop.
client_start redirected
exchanges redirected 2 "through the proxy"
proxy_cmd -grace "$GRACE" stop
assert_eq "stop (no -wait) exits 0" 0 "$CMD_RC"
rules=$(nat_rules)
if printf '%s\n' "$rules" | grep -q -- "$REDIR_RE"; then
	not_ok "stop removed the REDIRECT rule: $rules"
else
	ok "stop removed the REDIRECT rule"
fi
assert_match "the hold rule stays while the drain goes on" "conntrack hold pid $PROXY_PID" "$rules"
sleep "$GRACE" # past the grace period, on top of what stop waited
exchanges redirected 3 "after stop and the grace period"
exchanges early 2 "after stop"
check "the proxy still runs (draining)" kill -0 "$PROXY_PID"
client_close redirected
proxy_reap 10
assert_eq "the proxy exits 0 once the connection closed" 0 "$PROXY_EXIT"
rules=$(nat_rules)
if printf '%s\n' "$rules" | grep -q "conntrack hold"; then
	not_ok "the hold rule is gone after the drain: $rules"
else
	ok "the hold rule is gone after the drain"
fi
exchanges early 2 "after the proxy exited"
client_close early

# (c) A NAT binding outlives its connection. A connection through the proxy from client port
# STALE_PORT ends with the proxy's side closing first: its conntrack entry stays in TIME_WAIT
# for 120 s, with the REDIRECT binding. Once the proxy has exited, tracking is off and the entry
# is frozen; a direct connection from the same client port is opened then (not tracked). When
# the next start switches tracking on, that connection's packets meet the old entry and are
# rewritten to the listen port: reset. The proxy must delete the binding before its hold goes.
STALE_PORT=40443
bound() { srv conntrack -L -p tcp --reply-port-src "$LISTEN_PORT" 2>/dev/null | grep -c .; }
proxy_start -grace "$GRACE"
bk_mode "$LAB_DIR/web" shut-first
got=$(cli "$PYTHON" - "$SRV4" "$STALE_PORT" <<'PY'
import socket, sys
from lab import recv_all
s = socket.create_connection((sys.argv[1], 443), timeout=5, source_address=("", int(sys.argv[2])))
s.sendall(b"ping\n")
data = recv_all(s)
s.close()
print(data.decode().strip())
PY
)
assert_eq "through the proxy from port $STALE_PORT, the web server closing first" web "$got"
assert_ge "its conntrack entry holds the binding to the listen port" "$(bound)" 1
proxy_stop
assert_eq "the proxy exited 0" 0 "$PROXY_EXIT"
assert_eq "after the proxy exited: no NAT binding to port $LISTEN_PORT is left" 0 "$(bound)"
bk_mode "$LAB_DIR/web" echo
client_start stale "$STALE_PORT"
exchanges stale 2 "direct from port $STALE_PORT, tracking off"
proxy_start -grace "$GRACE"
exchanges stale 3 "the same connection after the next start switched tracking on"
proxy_stop
client_close stale

# (d) A binding that outlives its connection while the proxy still listens. A connection
# through the proxy from client port REUSE_PORT is reset from the proxy's side (ss -K, as when
# a client's RST crosses the proxy's last segments): its conntrack entry stays in CLOSE with the
# REDIRECT binding, and a SYN from the same port takes that binding instead of being looked up
# afresh. While the listener is open such a SYN still reaches the proxy; once it is closed it is
# refused. Under load (tlsload-nft.sh) a drain began with about a thousand such bindings, and
# the first sweep after the listener closed took tens of milliseconds to delete them: a client
# whose port came round in between was refused. The proxy must delete them before its listener
# closes. The test build's drain-sweep-delay-ms hook holds the first sweep after the close off,
# so that the check does not depend on how fast that sweep is; a second connection through the
# proxy keeps the drain going.
REUSE_PORT=40444
not_listening() { ! proxy_listening; }
reuse_bound() {
	srv conntrack -L -p tcp --reply-port-src "$LISTEN_PORT" --orig-port-src "$REUSE_PORT" \
		2>/dev/null | grep -c .
}
connect_from() { # connect_from PORT: one exchange straight to port 443; prints what came back
	cli "$PYTHON" - "$SRV4" "$1" <<'PY'
import socket, sys
try:
	s = socket.create_connection((sys.argv[1], 443), timeout=5,
	                             source_address=("", int(sys.argv[2])))
	s.sendall(b"ping\n")
	print(s.recv(100).decode().strip() or "eof")
	s.close()
except OSError as e:
	print("failed: %s" % e)
PY
}
PROXY=$PROXY_HOOKS ACME_ALPN_PROXY_TEST_HOOK=drain-sweep-delay-ms=5000 proxy_start -grace "$GRACE"
client_start keeper
exchanges keeper 1 "through the proxy, kept open over the stop"
client_start reused "$REUSE_PORT"
exchanges reused 1 "through the proxy from port $REUSE_PORT"
srv ss -K -tn "( sport = :$LISTEN_PORT and dport = :$REUSE_PORT )" >/dev/null
echo x >&"${CLIENT_FD[reused]}"
if wait_for 5 grep -q '^broken' "$LAB_DIR/reused.log"; then
	ok "the proxy's side of the connection from port $REUSE_PORT was reset"
else
	not_ok "the proxy's side of the connection from port $REUSE_PORT was reset (ss -K)"
fi
client_close reused
assert_match "its conntrack entry stays, in CLOSE, with the binding" \
	"CLOSE .*sport=$REUSE_PORT dport=443 .*sport=$LISTEN_PORT" \
	"$(srv conntrack -L -p tcp --orig-port-src "$REUSE_PORT" 2>/dev/null)"
proxy_cmd -grace "$GRACE" stop
assert_eq "stop exits 0" 0 "$CMD_RC"
check "the listener is closed once stop returned" not_listening
check "the proxy still runs (draining)" kill -0 "$PROXY_PID"
assert_eq "no binding from port $REUSE_PORT is left when the listener has closed" 0 "$(reuse_bound)"
assert_eq "a new connection from port $REUSE_PORT reaches the web server" ping \
	"$(connect_from "$REUSE_PORT")"
client_close keeper
proxy_reap 10
assert_eq "the proxy exits 0 once the kept connection closed" 0 "$PROXY_EXIT"
lab_finish
