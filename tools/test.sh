#!/usr/bin/env bash
# Builds acme-alpn-proxy and runs every test: the CUnit unit tests and, as root, the integration
# tests in private network namespaces. This is what CI runs.
#
#   sudo tools/test.sh               install the packages (tools/packages.txt), build, test
#   sudo tools/test.sh --no-install  skip apt: the packages are there already
#
# Steps: autoreconf -fi in the source tree; configure --enable-werror in build/ (BUILD_DIR=...
# to change it); make -j2; make check's tests (the integration tests side by side, JOBS=2). Then
# it prints the CUnit summaries of the unit tests, the log of every test that failed, and one
# line per test. Exit 0 when every test passed (or was skipped), 1 otherwise. Reuses build/.
# Without root the integration tests skip (exit 77) and say why. With CI=true, an integration
# test that misses a tool fails instead of skipping.
set -u

usage() {
	sed -n '2,13s/^# \{0,1\}//p' "$0"
}

install=1
for arg in "$@"; do
	case $arg in
	--no-install) install=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "test.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
	esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}
jobs=${JOBS:-2}

step() { printf '\n==== %s\n' "$*"; }
die() { echo "test.sh: $*" >&2; exit 1; }

if [ "$install" = 1 ]; then
	step "installing packages (tools/packages.txt)"
	"$top/tools/install-deps.sh" || die "installing the packages failed"
fi

cd "$top" || die "cannot cd to $top"
if [ -f "$top/config.status" ]; then
	die "the source tree was configured in place ($top/config.status exists): run" \
		"'make distclean' there first; test.sh builds in $build"
fi

step "autoreconf -fi"
autoreconf -fi || die "autoreconf failed"

step "configure --enable-werror (in $build)"
mkdir -p "$build" || die "cannot create $build"
cd "$build" || die "cannot cd to $build"
"$top/configure" --enable-werror -q || die "configure failed (see $build/config.log)"

step "make -j$jobs"
make -j"$jobs" || die "the build failed"

if [ "$(id -u)" != 0 ]; then
	echo "test.sh: not root: the integration tests will skip (they need network namespaces)"
fi
step "make check"
# Only the .trs files this run writes count: a test removed since an earlier run leaves an old one.
stamp=$build/.test-sh-stamp
touch "$stamp"
# No terminal for the tests: a client that reads standard input (openssl s_client) must see EOF.
# The same tests as a plain `make check`, in three parts: the unit tests; the integration tests
# side by side (-j$jobs: each builds namespaces of its own and shares nothing with the others
# but the xtables lock, which they take briefly); then the load tests one at a time, since
# their rate check needs the CPUs. The lists are Makefile.am's.
unit=$(make -s print-unit-tests) && integ=$(make -s print-integration-tests) &&
	load=$(make -s print-load-tests) || die "make print-*-tests failed"
check_rc=0
make check TESTS="$unit" </dev/null || check_rc=$?
make -j"$jobs" check TESTS="$integ" </dev/null || check_rc=$?
make check TESTS="$load" </dev/null || check_rc=$?

# The unit tests' own output: the CUnit "Run Summary" tables.
step "unit tests (CUnit)"
for log in tests/test_*.log; do
	[ -f "$log" ] || continue
	echo "---- $log"
	cat "$log"
done

# One line per test from automake's .trs files; the logs of those that did not pass, whole.
pass=0 fail=0 skip=0 results='' failed=()
while IFS= read -r trs; do
	res=$(sed -n 's/^:test-result: //p' "$trs" | head -n 1)
	results+=$(printf '%-6s %s' "${res:-?}" "${trs%.trs}")$'\n'
	case $res in
	PASS | XFAIL) pass=$((pass + 1)) ;;
	SKIP) skip=$((skip + 1)) ;;
	*) fail=$((fail + 1)); failed+=("${trs%.trs}") ;;
	esac
done < <(find tests -name '*.trs' -newer "$stamp" | sort)
for t in "${failed[@]}"; do
	step "FAILED: $t (its log: $build/$t.log)"
	cat "$t.log"
done
step "results"
printf '%s' "$results"
echo "tests: $pass passed, $fail failed, $skip skipped"

if [ "$check_rc" != 0 ] || [ "$fail" != 0 ] || [ $((pass + fail + skip)) = 0 ]; then
	echo "test.sh: FAILED (make check exit $check_rc; logs in $build)"
	exit 1
fi
echo "test.sh: all tests passed ($skip skipped)"
exit 0
