#!/usr/bin/env bash
# Builds the Debian package from the committed tree (HEAD), checks it with lintian, installs it,
# looks at what it installed, runs `check` and the demo against the installed binary, and purges
# it again. CI runs it; by hand: sudo tools/package-test.sh (Debian 12, as root; the packages of
# tools/packages.txt installed). Exit status 0 when every step passed, 1 otherwise.
#
# The build happens in a clone of HEAD in a temporary directory (dpkg-buildpackage writes the
# .deb next to the source tree), so the working tree is neither used nor touched. Installing
# creates the system user acme-alpn-proxy, which purging leaves (Debian's custom for system
# users: files may still belong to it).
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
fail=0
step() { printf '\n== %s\n' "$*"; }
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fail=1; }
die() { echo "package-test.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs and purges the package)"
if dpkg -s acme-alpn-proxy >/dev/null 2>&1; then
	die "acme-alpn-proxy is installed already: purge it first (apt-get purge acme-alpn-proxy)"
fi
tmp=$(mktemp -d /tmp/aap-package.XXXXXX) || exit 1
ns=aap-package-$$
cleanup() {
	ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	if dpkg -s acme-alpn-proxy >/dev/null 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq acme-alpn-proxy >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step "dpkg-buildpackage -us -uc -b (a clone of HEAD in $tmp)"
git clone -q "$top" "$tmp/acme-alpn-proxy" || die "cannot clone $top"
version=$(sed -n 's/^AC_INIT(\[acme-alpn-proxy\], \[\([^]]*\)\].*/\1/p' "$top/configure.ac")
deb_version=$(sed -n '1s/^acme-alpn-proxy (\([^)]*\)).*/\1/p' "$top/debian/changelog")
[ "$deb_version" = "$version" ] && ok "debian/changelog's version is configure.ac's ($version)" ||
	bad "debian/changelog says $deb_version, configure.ac $version"
(cd "$tmp/acme-alpn-proxy" && dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1 ||
	{ tail -n 40 "$tmp/build.log"; die "dpkg-buildpackage failed"; }
deb=$tmp/acme-alpn-proxy_${deb_version}_$(dpkg --print-architecture).deb
[ -f "$deb" ] || die "no $deb after the build"
ok "built $(basename "$deb")"
grep -E '^(PASS|FAIL|SKIP|# )' "$tmp/build.log" | sed 's/^/    /'

step "lintian"
lintian "$tmp"/acme-alpn-proxy_*.changes >"$tmp/lintian.log" 2>&1
sed 's/^/    /' "$tmp/lintian.log"
if grep -q '^E: ' "$tmp/lintian.log"; then
	bad "lintian reports errors"
else
	ok "lintian: no error"
fi

step "apt-get install ./$(basename "$deb")"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >"$tmp/install.log" 2>&1 ||
	{ cat "$tmp/install.log"; die "installing the package failed"; }
for f in /usr/sbin/acme-alpn-proxy /usr/share/man/man8/acme-alpn-proxy.8.gz \
	/lib/systemd/system/acme-alpn-proxy.service /etc/init.d/acme-alpn-proxy \
	/etc/acme-alpn-proxy/hooks/lego.sh /etc/acme-alpn-proxy/hooks/acme-sh.sh \
	/etc/acme-alpn-proxy/hooks/uacme-hook.sh /etc/acme-alpn-proxy/hooks/dehydrated-hook.sh \
	/etc/acme-alpn-proxy/hooks/certbot-cli.ini /etc/default/acme-alpn-proxy; do
	[ -e "$f" ] && ok "installed $f" || bad "missing $f"
done
grep -qx /etc/default/acme-alpn-proxy /var/lib/dpkg/info/acme-alpn-proxy.conffiles &&
	ok "/etc/default/acme-alpn-proxy is a conffile" || bad "/etc/default/acme-alpn-proxy is not a conffile"
grep -q 'ExecStart=/usr/sbin/acme-alpn-proxy' /lib/systemd/system/acme-alpn-proxy.service &&
	ok "the unit runs /usr/sbin/acme-alpn-proxy" || bad "the unit names another binary"
getent passwd acme-alpn-proxy >/dev/null && ok "the system user acme-alpn-proxy exists" ||
	bad "postinst did not create the user acme-alpn-proxy"
uid=$(id -u acme-alpn-proxy 2>/dev/null)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] && [ "$(id -g acme-alpn-proxy)" != 0 ] &&
	ok "a system uid ($uid) and a group of its own" || bad "uid '$uid' is not a system uid"
installed_running() { # a process of the installed binary (other builds may run meanwhile)
	local p
	for p in $(pgrep -x acme-alpn-proxy); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = /usr/sbin/acme-alpn-proxy ] && return 0
	done
	return 1
}
installed_running && bad "something started /usr/sbin/acme-alpn-proxy" ||
	ok "nothing started on install"
ls /etc/rc?.d/ 2>/dev/null | grep -q acme-alpn-proxy && bad "the init script was enabled" ||
	ok "the init script is not enabled"
/usr/sbin/acme-alpn-proxy --version | grep -qx "acme-alpn-proxy $version" &&
	ok "acme-alpn-proxy --version: $version" || bad "--version does not say $version"
man -l /usr/share/man/man8/acme-alpn-proxy.8.gz 2>/dev/null | grep -q 'max-time' &&
	ok "the installed manual documents -max-time" || bad "the installed manual is not this one"

step "acme-alpn-proxy check (the installed binary, in a namespace with a TLS web server)"
ip netns add "$ns" || die "cannot create namespace $ns"
ip -n "$ns" link set lo up
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-keyout "$tmp/web.key" -out "$tmp/web.pem" -subj /CN=web.example.test >/dev/null 2>&1
ip netns exec "$ns" openssl s_server -quiet -accept 127.0.0.1:443 -cert "$tmp/web.pem" \
	-key "$tmp/web.key" </dev/null >/dev/null 2>&1 &
disown # killed with the namespace at the end: no "Killed" line
for _ in $(seq 100); do
	ip netns exec "$ns" ss -Hltn 'sport = :443' | grep -q LISTEN && break
	sleep 0.1
done
ip netns exec "$ns" env ACME_ALPN_PROXY_PIDFILE="$tmp/check.pid" /usr/sbin/acme-alpn-proxy \
	-firewall nftables check >"$tmp/check.out" 2>&1
rc=$?
sed 's/^/    /' "$tmp/check.out"
[ "$rc" = 0 ] && ok "check: exit 0" || bad "check: exit $rc"
grep -q '^OK   worker user: acme-alpn-proxy' "$tmp/check.out" &&
	ok "check sees the package's user" || bad "check does not see the package's user"
grep -q '^OK   fallback 127.0.0.1:443: answers TLS' "$tmp/check.out" &&
	ok "check sees the web server" || bad "check does not see the web server"

step "the demo, against the installed binary"
if PROXY=/usr/sbin/acme-alpn-proxy "$top/tools/demo.sh" --no-install >"$tmp/demo.log" 2>&1; then
	ok "tools/demo.sh with PROXY=/usr/sbin/acme-alpn-proxy"
	tail -n 3 "$tmp/demo.log" | sed 's/^/    /'
else
	cat "$tmp/demo.log"
	bad "tools/demo.sh with PROXY=/usr/sbin/acme-alpn-proxy failed"
fi

step "apt-get purge acme-alpn-proxy"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq acme-alpn-proxy >"$tmp/purge.log" 2>&1 ||
	{ cat "$tmp/purge.log"; bad "purging the package failed"; }
for f in /usr/sbin/acme-alpn-proxy /etc/default/acme-alpn-proxy /etc/acme-alpn-proxy \
	/lib/systemd/system/acme-alpn-proxy.service; do
	[ -e "$f" ] && bad "$f is still there after the purge" || ok "$f gone"
done

[ "$fail" = 0 ] && echo "package-test.sh: all passed" || echo "package-test.sh: FAILED"
exit "$fail"
