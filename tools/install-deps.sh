#!/bin/sh
# Installs the Debian/Ubuntu packages listed in tools/packages.txt (the project's one list of
# what building and testing needs). Used by tools/test.sh and tools/demo.sh; CI can call it too.
#
# Idempotent: when every package is installed already it does nothing, not even apt-get update,
# so that a re-run works offline. Needs root (uses sudo when run as another user).
# The packages it installs are not started as services (nginx would take port 80 otherwise):
# a temporary policy-rc.d says no, unless the machine has its own policy-rc.d.
set -u

top=$(cd "$(dirname "$0")/.." && pwd)
list=$top/tools/packages.txt

pkgs=$(sed 's/#.*//' "$list" | tr -s ' \t\n' ' ')
missing=
for p in $pkgs; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
	case $st in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
if [ -z "$missing" ]; then
	echo "install-deps: all packages of tools/packages.txt are installed"
	exit 0
fi

if [ "$(id -u)" = 0 ]; then
	as_root=
elif command -v sudo >/dev/null 2>&1; then
	as_root=sudo
else
	echo "install-deps: missing packages:$missing; run this as root" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: no apt-get here; install by hand:$missing" >&2
	exit 1
fi

echo "install-deps: installing$missing"
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
	# Exit status 101: "action forbidden" for invoke-rc.d, so no service is started.
	printf '#!/bin/sh\nexit 101\n' | $as_root tee "$policy" >/dev/null &&
		$as_root chmod 755 "$policy" && made_policy=1
fi
rc=0
export DEBIAN_FRONTEND=noninteractive
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
if [ "$rc" = 0 ]; then
	# shellcheck disable=SC2086 # one package a word
	$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends $pkgs || rc=$?
fi
[ "$made_policy" = 1 ] && $as_root rm -f "$policy"
if [ "$rc" != 0 ]; then
	echo "install-deps: apt-get failed (exit $rc)" >&2
	exit 1
fi
exit 0
