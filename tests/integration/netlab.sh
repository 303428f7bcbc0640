# The namespace lab of acme-alpn-proxy: two network namespaces joined by a veth pair, and the
# polling and cleanup that go with it. Sourced (bash) by tests/integration/lib.sh, tools/demo.sh
# and, through sh(), tests/test_firewall.c; it needs nothing from automake and defines nothing
# but the functions and addresses below, so any script of the project can source it.
#
#   netlab_link A B         veth0 in A and veth0 in B (MTU 1500), A gets NETLAB_SRV4/6, B gets
#                           NETLAB_CLI4/6, loopback and links up; returns once usable (10 s)
#   netlab_kill [-g S] NS...  TERM every process of the namespaces, KILL what is left after S
#                           seconds (default 1)
#   netlab_del NS...        delete the namespaces (those that exist)
#   netlab_in NS CMD...     run CMD in NS; netlab_ip NS ARGS...: ip in NS
#   wait_for SECONDS CMD... poll CMD every 50 ms until it succeeds (0) or the time is up (1)
#   netlab_cert KEY CERT CN [SAN]  a self-signed P-256 certificate (openssl's output on stderr)
#   netlab_nginx_conf DIR WORKERS CONNS  DIR/nginx.conf around the http block's lines on stdin
#   netlab_nginx NS DIR     that nginx in NS, in the background: NETLAB_NGINX_PID
#   now_ms                  milliseconds since the epoch
#
# A namespace NS is a name of `ip netns` (made by the caller with `ip netns add`), "pid:N" (the
# network namespace of process N), or "self" (the caller's own). Nothing here touches the host's
# own network: every command names the namespace it changes.

# The lab's addresses: documentation prefixes (RFC 5737, RFC 3849), never routed.
NETLAB_SRV4=198.51.100.1
NETLAB_CLI4=198.51.100.2
NETLAB_SRV6=2001:db8:1::1
NETLAB_CLI6=2001:db8:1::2

now_ms() {
	local t=${EPOCHREALTIME/./}
	echo $((t / 1000))
}

# wait_for SECONDS COMMAND...: SECONDS may have a fraction (0.5).
wait_for() {
	local ms
	case $1 in
	*.*) local i=${1%.*} f=${1#*.}000; ms=$(( ${i:-0} * 1000 + 10#${f:0:3} )) ;;
	*) ms=$(( $1 * 1000 )) ;;
	esac
	local limit=$(( $(now_ms) + ms ))
	shift
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ "$(now_ms)" -ge "$limit" ] && return 1
		sleep 0.05
	done
}

netlab_in() {
	local ns=$1
	shift
	case $ns in
	self) "$@" ;;
	pid:*) nsenter --net="/proc/${ns#pid:}/ns/net" "$@" ;;
	*) ip netns exec "$ns" "$@" ;;
	esac
}

# netlab_ip NS ARGS...: the ip command in NS (`ip -n` for a named one: no mount namespace).
netlab_ip() {
	local ns=$1
	shift
	case $ns in
	self | pid:*) netlab_in "$ns" ip "$@" ;;
	*) ip -n "$ns" "$@" ;;
	esac
}

# What `ip link ... netns X` takes for NS.
netlab_ip_target() {
	case $1 in
	pid:*) echo "${1#pid:}" ;;
	self) echo $$ ;;
	*) echo "$1" ;;
	esac
}

netlab_usable() {
	local ns
	for ns in "$@"; do
		[ -z "$(netlab_ip "$ns" -6 addr show dev veth0 tentative)" ] &&
			netlab_ip "$ns" link show dev veth0 | grep -q 'state UP' || return 1
	done
}

netlab_link() {
	local a=$1 b=$2 ns
	netlab_ip "$a" link add veth0 mtu 1500 type veth peer name veth0 \
		netns "$(netlab_ip_target "$b")" mtu 1500 ||
		{ echo "netlab: cannot create the veth pair between $a and $b" >&2; return 1; }
	netlab_ip "$a" addr add "$NETLAB_SRV4/24" dev veth0 &&
		netlab_ip "$b" addr add "$NETLAB_CLI4/24" dev veth0 &&
		netlab_ip "$a" addr add "$NETLAB_SRV6/64" dev veth0 nodad &&
		netlab_ip "$b" addr add "$NETLAB_CLI6/64" dev veth0 nodad ||
		{ echo "netlab: cannot give the veth pair its addresses" >&2; return 1; }
	for ns in "$a" "$b"; do
		netlab_ip "$ns" link set lo up && netlab_ip "$ns" link set veth0 up ||
			{ echo "netlab: cannot set the links of $ns up" >&2; return 1; }
	done
	if ! wait_for 10 netlab_usable "$a" "$b"; then
		echo "netlab: the links or IPv6 addresses of $a and $b did not become usable" \
			"within 10 s" >&2
		netlab_ip "$a" addr >&2
		return 1
	fi
}

# netlab_each "ip netns VERB" NS...: the command for each named namespace (empty names skipped),
# its errors (a namespace already gone) silenced.
netlab_each() {
	local verb=$1 ns
	shift
	for ns in "$@"; do
		# shellcheck disable=SC2086 # the command's words
		[ -n "$ns" ] && $verb "$ns" 2>/dev/null
	done
	return 0
}

netlab_pids() { netlab_each "ip netns pids" "$@"; }

netlab_kill() {
	local grace=1 pids _
	if [ "${1:-}" = -g ]; then
		grace=$2
		shift 2
	fi
	pids=$(netlab_pids "$@")
	# shellcheck disable=SC2086 # one pid per word
	[ -n "${pids//[[:space:]]/}" ] && kill -TERM $pids 2>/dev/null
	for _ in $(seq $(( grace * 20 ))); do
		pids=$(netlab_pids "$@")
		[ -z "${pids//[[:space:]]/}" ] && return 0
		sleep 0.05
	done
	# shellcheck disable=SC2086
	[ -n "${pids//[[:space:]]/}" ] && kill -KILL $pids 2>/dev/null
	return 0
}

netlab_del() { netlab_each "ip netns del" "$@"; }

# netlab_cert KEY CERT CN [SUBJECTALTNAME]: valid for 2 days.
netlab_cert() {
	# shellcheck disable=SC2086 # -addext and its value, or nothing
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$1" -out "$2" -subj "/CN=$3" ${4:+-addext "subjectAltName=$4"} >/dev/null
}

# netlab_nginx_conf DIR WORKERS CONNECTIONS <HTTP-LINES: an nginx configuration whose pid file,
# error log and temporary files are all in DIR (made, with DIR/logs), so that it needs nothing
# of the host's; what the http block holds besides (logging, certificates, servers) is read
# from standard input.
netlab_nginx_conf() {
	local dir=$1 t
	mkdir -p "$dir/logs" || return 1
	{
		printf 'worker_processes %s;\npid %s/nginx.pid;\nerror_log %s/logs/error.log;\n' \
			"$2" "$dir" "$dir"
		printf 'events { worker_connections %s; }\nhttp {\n' "$3"
		for t in client_body:body proxy:proxy fastcgi:fastcgi uwsgi:uwsgi scgi:scgi; do
			printf '\t%s_temp_path %s/%s;\n' "${t%%:*}" "$dir" "${t#*:}"
		done
		cat
		printf '}\n'
	} >"$dir/nginx.conf"
}

# netlab_nginx NS DIR: nginx of DIR/nginx.conf in the named namespace NS, in the foreground of a
# background job, its output in DIR/logs/stdout.log. Sets NETLAB_NGINX_PID (ip netns exec execs
# nginx: its own pid).
netlab_nginx() {
	ip netns exec "$1" nginx -p "$2" -c "$2/nginx.conf" -g 'daemon off;' \
		>"$2/logs/stdout.log" 2>&1 &
	NETLAB_NGINX_PID=$!
}
