/* Tests of the libiptc backend. Needs root; runs in a network namespace of its own (made by
 * main() before any test), so the host's tables are never read or changed. The reference for
 * "right" is iptables-legacy itself: a rule we install must print exactly as the same
 * specification added by iptables, and libiptc must find iptables' rule identical to ours.
 * Failures of one family are provoked with seccomp filters in a forked child, so the library
 * under test needs no test-only code. Every install also appends this process's conntrack
 * hold rule; the last tests send real traffic through a veth pair into a second namespace. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <libiptc/libip6tc.h> /* IP6T_SO_SET_REPLACE, by way of the kernel headers */
#include <libiptc/libiptc.h>  /* IPT_SO_GET_INFO */
#include <seccomp.h>

#include "firewall.h"
#include "rulespec.h"
#include "testutil.h"

#define IPT "iptables-legacy"
#define IP6T "ip6tables-legacy"
/* The default rule as the versions before the pid and addrtype installed it: SYN only. */
#define SPEC_SYN RULESPEC_DEFAULT " --syn"
/* The default rule as installed for a pid: what iptables is told for it (a format for the pid:
 * the spec, its comment naming the pid, SYN only, LOCAL destinations only). */
#define SPEC_OURS "-p tcp --dport 443 -j REDIRECT --to-port 21443 -m comment --comment " \
	"\"acme-alpn-proxy pid %ld\" --syn -m addrtype --dst-type LOCAL"
#define HOLD_MATCH "-m conntrack --ctstate INVALID -m comment --comment"

/* Each spec, and what `iptables -I PREROUTING` is told to build the same rule for pid %ld:
 * the spec's comment (or "acme-alpn-proxy") names the pid, and what the spec does not name
 * follows it as "--syn -m addrtype --dst-type LOCAL -m comment --comment ...". */
static const struct {
	const char *spec, *theirs;
} specs[] = {
	{ RULESPEC_DEFAULT, SPEC_OURS },
	{ "-p tcp -s 198.51.100.7/24 ! -d 198.51.100.200/255.255.255.128 --dport 443 "
	  "-j REDIRECT --to-ports 21443 -m comment --comment \"acme alpn\"",
	  "-p tcp -s 198.51.100.7/24 ! -d 198.51.100.200/255.255.255.128 --dport 443 "
	  "-j REDIRECT --to-ports 21443 -m comment --comment \"acme alpn pid %ld\" --syn "
	  "-m addrtype --dst-type LOCAL" },
	{ "! -s 2001:db8::1/64 -d 2001:db8:1:2::5/ffff:ffff:ffff:: -p tcp --dport 443 "
	  "-j REDIRECT --to-port 21443 -m comment --comment acme-alpn-proxy",
	  "! -s 2001:db8::1/64 -d 2001:db8:1:2::5/ffff:ffff:ffff:: -p tcp --dport 443 "
	  "-j REDIRECT --to-port 21443 -m comment --comment \"acme-alpn-proxy pid %ld\" --syn "
	  "-m addrtype --dst-type LOCAL" },
	{ "-p tcp -d 2001:db8::ff/121 --dport 443 -j REDIRECT --to-port 21443",
	  "-p tcp -d 2001:db8::ff/121 --dport 443 -j REDIRECT --to-port 21443 --syn "
	  "-m addrtype --dst-type LOCAL -m comment --comment \"acme-alpn-proxy pid %ld\"" },
	{ "-i eth+ -p tcp -m tcp --dport 443 -j REDIRECT --to-port 21443",
	  "-i eth+ -p tcp -m tcp --dport 443 -j REDIRECT --to-port 21443 --syn "
	  "-m addrtype --dst-type LOCAL -m comment --comment \"acme-alpn-proxy pid %ld\"" },
	{ "! -i veth0 -m comment --comment 'first' -p tcp --dport 8443 -j REDIRECT --to-ports 1234",
	  "! -i veth0 -m comment --comment 'first pid %ld' -p tcp --dport 8443 -j REDIRECT "
	  "--to-ports 1234 --syn -m addrtype --dst-type LOCAL" },
	{ "-p tcp -j REDIRECT --to-port 21443 -m comment --comment c",
	  "-p tcp -j REDIRECT --to-port 21443 -m comment --comment 'c pid %ld' --syn "
	  "-m addrtype --dst-type LOCAL" },
	{ "-p tcp -m tcp -j REDIRECT --to-port 21443",
	  "-p tcp -m tcp -j REDIRECT --to-port 21443 --syn -m addrtype --dst-type LOCAL "
	  "-m comment --comment 'acme-alpn-proxy pid %ld'" },
	{ "-p tcp -m comment --comment 'syn first' --syn --dport 443 -j REDIRECT --to-ports 21443",
	  "-p tcp -m comment --comment 'syn first pid %ld' --syn --dport 443 -j REDIRECT "
	  "--to-ports 21443 -m addrtype --dst-type LOCAL" },
	/* Specs that name the addrtype match place it. */
	{ "-p tcp -m addrtype --dst-type LOCAL --dport 443 -j REDIRECT --to-port 21443",
	  "-p tcp -m addrtype --dst-type LOCAL --dport 443 -j REDIRECT --to-port 21443 --syn "
	  "-m comment --comment 'acme-alpn-proxy pid %ld'" },
	{ "-p tcp --dport 443 -m addrtype --dst-type local -m comment --comment x "
	  "-j REDIRECT --to-port 21443",
	  "-p tcp --dport 443 -m addrtype --dst-type local -m comment --comment 'x pid %ld' "
	  "-j REDIRECT --to-port 21443 --syn" },
	{ "-m comment --comment ac -m addrtype --dst-type LOCAL,loc -p tcp -j REDIRECT "
	  "--to-port 21443",
	  "-m comment --comment 'ac pid %ld' -m addrtype --dst-type LOCAL,loc -p tcp -j REDIRECT "
	  "--to-port 21443 --syn" },
	{ "-p tcp -d 2001:db8::1 -m addrtype --dst-type LOCAL -j REDIRECT --to-port 21443 "
	  "-m comment --comment v6",
	  "-p tcp -d 2001:db8::1 -m addrtype --dst-type LOCAL -j REDIRECT --to-port 21443 "
	  "-m comment --comment 'v6 pid %ld' --syn" },
};

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run a shell command; its exit status, or -1. */
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st)) {
		fprintf(stderr, "\ncommand failed to run: %s\n", cmd);
		return -1;
	}
	if (WEXITSTATUS(st) != 0)
		fprintf(stderr, "\ncommand exited with %d: %s\n", WEXITSTATUS(st), cmd);
	return WEXITSTATUS(st);
}

/* The "-A PREROUTING ..." lines of `<tool> -t nat -S PREROUTING` that contain `having` (all
 * when NULL), newline-separated, and their number. */
static int lines_of(const char *tool, const char *having, char *out, size_t outlen)
{
	char cmd[128], line[1024];
	size_t used = 0;
	FILE *p;
	int n = 0, st;

	out[0] = '\0';
	snprintf(cmd, sizeof(cmd), "%s -t nat -S PREROUTING", tool);
	p = popen(cmd, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	while (fgets(line, sizeof(line), p) != NULL) {
		if (strncmp(line, "-A ", 3) != 0 || (having != NULL && strstr(line, having) == NULL))
			continue;
		n++;
		if (used + strlen(line) < outlen) {
			memcpy(out + used, line, strlen(line) + 1);
			used += strlen(line);
		}
	}
	st = pclose(p);
	CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return n;
}

static int rules_of(const char *tool, char *out, size_t outlen)
{
	return lines_of(tool, NULL, out, outlen);
}

/* The comment of pid's hold rule for a spec with comment c (NULL: none). */
static const char *hold_comment(const char *c, long pid)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "%s conntrack hold pid %ld", c != NULL ? c : "acme-alpn-proxy",
	         pid);
	return buf;
}

/* How `-S` shows that comment, closing quote and end of line included (so that the hold of
 * pid 1 is not found in that of pid 12). */
static const char *hold_shown(const char *c, long pid)
{
	static char buf[520];

	snprintf(buf, sizeof(buf), "\"%s\"\n", hold_comment(c, pid));
	return buf;
}

/* Add a hold rule with iptables (both families unless v4only): 0 or the failing status. */
static int add_hold(const char *c, long pid, bool v4only)
{
	const char *text = hold_comment(c, pid);

	if (v4only)
		return sh(IPT " -t nat -A PREROUTING " HOLD_MATCH " \"%s\"", text);
	return sh(IPT " -t nat -A PREROUTING " HOLD_MATCH " \"%s\" && " IP6T " -t nat -A "
	          "PREROUTING " HOLD_MATCH " \"%s\"", text, text);
}

static void flush(void)
{
	CU_ASSERT_EQUAL(sh(IPT " -t nat -F PREROUTING && " IP6T " -t nat -F PREROUTING"), 0);
}

static struct rulespec parse(const char *text)
{
	struct rulespec rs;
	char err[256];

	memset(&rs, 0, sizeof(rs));
	if (rulespec_parse(text, &rs, err, sizeof(err)) != 0) {
		fprintf(stderr, "\ncannot parse [%s]: %s\n", text, err);
		CU_FAIL_FATAL("rulespec_parse");
	}
	return rs;
}

/* The copies of this process's rule for rs (owner 0: the rules of rs's family, any owner). */
static int count_of(const struct rulespec *rs, int families, pid_t owner)
{
	char err[1024];
	int n = fw_count(rs, families, owner, err, sizeof(err));

	if (n < 0)
		fprintf(stderr, "\nfw_count: %s\n", err);
	return n;
}

static int count(const struct rulespec *rs, int families)
{
	return count_of(rs, families, getpid());
}

static void install_ok(const struct rulespec *rs)
{
	char err[1024], warn[1024];
	int fams = FW_V4 | FW_V6;

	if (fw_install(rs, &fams, err, sizeof(err), warn, sizeof(warn)) != 0) {
		fprintf(stderr, "\nfw_install: %s\n", err);
		CU_FAIL("fw_install");
	}
	CU_ASSERT_EQUAL(fams, FW_V4 | FW_V6);
	CU_ASSERT_STRING_EQUAL(warn, "");
}

static void remove_ok(const struct rulespec *rs)
{
	char err[1024];

	if (fw_remove(rs, FW_V4 | FW_V6, err, sizeof(err)) != 0) {
		fprintf(stderr, "\nfw_remove: %s\n", err);
		CU_FAIL("fw_remove");
	}
}

static void same_lines(const char *what, const char *ours, const char *theirs)
{
	if (strcmp(ours, theirs) != 0) {
		fprintf(stderr, "\n%s differ:\nours:     %siptables: %s", what, ours, theirs);
		CU_FAIL("rules differ from what iptables builds");
	}
}

static void release_ok(const struct rulespec *rs)
{
	char err[1024];

	if (fw_release(rs, FW_V4 | FW_V6, err, sizeof(err)) != 0) {
		fprintf(stderr, "\nfw_release: %s\n", err);
		CU_FAIL("fw_release");
	}
}

/* text with its one "%ld" replaced by pid (the table's texts are not literal formats). */
static void with_pid(const char *text, long pid, char *out, size_t len)
{
	const char *at = strstr(text, "%ld");

	CU_ASSERT_PTR_NOT_NULL_FATAL(at);
	snprintf(out, len, "%.*s%ld%s", (int)(at - text), text, pid, at + 3);
}

/* Each spec: our two rules (the REDIRECT rule with --syn at the head, the hold rule at the end)
 * print as iptables' own, and libiptc finds iptables' rules identical to ours (the whole
 * entry: masks, match payloads and sizes, target), so that install adds nothing next to them
 * and fw_count, fw_remove and fw_release see them. */
static void test_same_as_iptables(void)
{
	size_t i;

	for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct rulespec rs = parse(specs[i].spec);
		char ours4[2048], ours6[2048], theirs4[2048], theirs6[2048], cmd[1024];
		int want4 = rulespec_applies(&rs, AF_INET), want6 = rulespec_applies(&rs, AF_INET6);
		const char *hold = hold_comment(rs.has_comment ? rs.comment : NULL, (long)getpid());

		/* What iptables is told: the spec as installed for our pid, and the hold appended. */
		with_pid(specs[i].theirs, (long)getpid(), cmd, sizeof(cmd));
		flush();
		install_ok(&rs);
		CU_ASSERT_EQUAL(rules_of(IPT, ours4, sizeof(ours4)), 2 * want4);
		CU_ASSERT_EQUAL(rules_of(IP6T, ours6, sizeof(ours6)), 2 * want6);
		CU_ASSERT_EQUAL(count(&rs, FW_V4), want4);
		CU_ASSERT_EQUAL(count(&rs, FW_V6), want6);

		flush();
		if (want4)
			CU_ASSERT_EQUAL(sh(IPT " -t nat -I PREROUTING %s && " IPT " -t nat -A "
			                   "PREROUTING " HOLD_MATCH " \"%s\"", cmd, hold), 0);
		if (want6)
			CU_ASSERT_EQUAL(sh(IP6T " -t nat -I PREROUTING %s && " IP6T " -t nat -A "
			                   "PREROUTING " HOLD_MATCH " \"%s\"", cmd, hold), 0);
		CU_ASSERT_EQUAL(rules_of(IPT, theirs4, sizeof(theirs4)), 2 * want4);
		CU_ASSERT_EQUAL(rules_of(IP6T, theirs6, sizeof(theirs6)), 2 * want6);
		same_lines("IPv4 rules", ours4, theirs4);
		same_lines("IPv6 rules", ours6, theirs6);
		printf("\n    %s\n    -> %s    -> %s", specs[i].spec, want4 ? ours4 : "(no IPv4)\n",
		       want6 ? ours6 : "(no IPv6)\n");
		CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), want4 + want6);
		CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, 0), want4 + want6);
		/* Another pid's rule is not a copy of ours. */
		CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, 1), 0);
		/* Identical in libiptc's eyes: nothing to add. */
		install_ok(&rs);
		CU_ASSERT_EQUAL(rules_of(IPT, ours4, sizeof(ours4)), 2 * want4);
		CU_ASSERT_EQUAL(rules_of(IP6T, ours6, sizeof(ours6)), 2 * want6);

		/* The REDIRECT rule goes, the hold stays until released. */
		remove_ok(&rs);
		CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 0);
		CU_ASSERT_EQUAL(lines_of(IPT, hold, theirs4, sizeof(theirs4)), want4);
		CU_ASSERT_EQUAL(rules_of(IPT, theirs4, sizeof(theirs4)), want4);
		CU_ASSERT_EQUAL(lines_of(IP6T, hold, theirs6, sizeof(theirs6)), want6);
		CU_ASSERT_EQUAL(rules_of(IP6T, theirs6, sizeof(theirs6)), want6);
		release_ok(&rs);
		CU_ASSERT_EQUAL(rules_of(IPT, theirs4, sizeof(theirs4)), 0);
		CU_ASSERT_EQUAL(rules_of(IP6T, theirs6, sizeof(theirs6)), 0);
	}
}

/* A comment so long that the hold's text would not fit is cut, the same way every time. */
static void test_long_comment(void)
{
	char spec[600], big[RULESPEC_COMMENT_MAX], want[RULESPEC_COMMENT_MAX + 64], out[2048];
	struct rulespec rs;

	memset(big, 'c', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(spec, sizeof(spec), "%s -m comment --comment %s",
	         "-p tcp --dport 443 -j REDIRECT --to-port 21443", big);
	rs = parse(spec);
	/* 255 bytes at most: 225 of the comment, the tag, up to 10 digits of pid. */
	snprintf(want, sizeof(want), "--comment \"%.225s conntrack hold pid %ld\"\n", big,
	         (long)getpid());
	flush();
	install_ok(&rs);
	install_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 2);
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IP6T, want, out, sizeof(out)), 1);
	/* The REDIRECT rule's comment is cut the same way. */
	snprintf(want, sizeof(want), "--comment \"%.225s pid %ld\" -m addrtype", big,
	         (long)getpid());
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IP6T, want, out, sizeof(out)), 1);
	remove_ok(&rs);
	release_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 0);
}

static void test_install_idempotent_at_head(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	char out[2048];

	flush();
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080"
	                   " && " IP6T " -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT "
	                   "--to-ports 8080"), 0);
	install_ok(&rs);
	install_ok(&rs);
	CU_ASSERT_EQUAL(count(&rs, FW_V4), 1);
	CU_ASSERT_EQUAL(count(&rs, FW_V6), 1);
	CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 2);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 3);
	/* Ours first: a rule further down could be shadowed by one above it. The hold last: it
	 * only needs to exist. */
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--to-ports 21443"));
	CU_ASSERT_TRUE(strstr(out, "--to-ports 21443") < strstr(out, "--to-ports 8080"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "conntrack hold pid"));
	CU_ASSERT_TRUE(strstr(out, "--to-ports 8080") < strstr(out, "conntrack hold pid"));
	CU_ASSERT_EQUAL(lines_of(IPT, "conntrack hold pid", out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 3);
	CU_ASSERT_TRUE(strstr(out, "--to-ports 21443") < strstr(out, "--to-ports 8080"));
	CU_ASSERT_TRUE(strstr(out, "--to-ports 8080") < strstr(out, "conntrack hold pid"));
	CU_ASSERT_EQUAL(lines_of(IP6T, "conntrack hold pid", out, sizeof(out)), 1);

	remove_ok(&rs);
	CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 0);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--to-ports 8080"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, hold_shown(NULL, (long)getpid())));
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 2);
	/* Not there: still success. */
	remove_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 2);
	release_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--to-ports 8080"));
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 1);
	release_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 1);
}

/* fw_release takes this process's holds only; another instance's (still draining) stay. */
static void test_release_own_hold_only(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT), other;
	char out[4096];
	long other_pid = (long)getppid();

	flush();
	CU_ASSERT_EQUAL(add_hold(NULL, other_pid, false), 0);
	install_ok(&rs);
	CU_ASSERT_EQUAL(lines_of(IPT, "conntrack hold pid", out, sizeof(out)), 2);
	CU_ASSERT_EQUAL(lines_of(IP6T, "conntrack hold pid", out, sizeof(out)), 2);
	remove_ok(&rs);
	CU_ASSERT_EQUAL(lines_of(IPT, "conntrack hold pid", out, sizeof(out)), 2);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 2);
	release_ok(&rs);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, hold_shown(NULL, other_pid)));
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, hold_shown(NULL, other_pid)));

	/* The hold is named after the rule's comment: another comment, another hold. */
	other = parse("-p tcp --dport 443 -j REDIRECT --to-port 21443 -m comment --comment x");
	install_ok(&rs);
	install_ok(&other);
	CU_ASSERT_EQUAL(lines_of(IPT, "conntrack hold pid", out, sizeof(out)), 3);
	remove_ok(&rs);
	release_ok(&rs);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown("x", (long)getpid()), out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown(NULL, (long)getpid()), out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(count(&other, FW_V4 | FW_V6), 2);
	flush();
}

/* Add the default rule as installed for pid (SPEC_OURS), to IPv4, or to both families. */
static int add_ours(long pid, bool v4only)
{
	char spec[512];

	snprintf(spec, sizeof(spec), SPEC_OURS, pid);
	if (v4only)
		return sh(IPT " -t nat -A PREROUTING %s", spec);
	return sh(IPT " -t nat -A PREROUTING %s && " IP6T " -t nat -A PREROUTING %s", spec, spec);
}

static void test_remove_every_copy(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	char out[4096];
	int i;

	flush();
	for (i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(add_ours((long)getpid(), false), 0);
	/* As versions before the pid installed it, with and without --syn: not a copy. */
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING %s", RULESPEC_DEFAULT), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING %s", SPEC_SYN), 0);
	/* Another process's: not ours to remove. */
	CU_ASSERT_EQUAL(add_ours(1, true), 0);
	/* Without the addrtype match: not a copy. */
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 --syn -j REDIRECT "
	                   "--to-ports 21443 -m comment --comment 'acme-alpn-proxy pid %ld'",
	                   (long)getpid()), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 --syn -j REDIRECT "
	                   "--to-ports 21444 -m comment --comment 'acme-alpn-proxy pid %ld' "
	                   "-m addrtype --dst-type LOCAL", (long)getpid()), 0);
	CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 6);
	remove_ok(&rs);
	CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 0);
	/* Same comment, other port or matches, or another pid: not identical, stays. */
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 5);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "21444"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"acme-alpn-proxy pid 1\""));
	CU_ASSERT_EQUAL(lines_of(IPT, "--tcp-flags", out, sizeof(out)), 4);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 0);
}

/* A pid that no longer exists: a child's, reaped. */
static long dead_pid(void)
{
	pid_t pid = fork();
	int st;

	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		_exit(0);
	CU_ASSERT_EQUAL_FATAL(waitpid(pid, &st, 0), pid);
	CU_ASSERT_EQUAL(kill(pid, 0), -1);
	return (long)pid;
}

/* A live process that calls itself what instances do (FW_OWNER_NAME), until live_stop. */
static pid_t live_start(void)
{
	int ready[2];
	pid_t pid;
	char c;

	CU_ASSERT_EQUAL_FATAL(pipe(ready), 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		/* Gone with the test, even one that stops half-way. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 ||
		    prctl(PR_SET_NAME, FW_OWNER_NAME, 0, 0, 0) != 0 || write(ready[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	CU_ASSERT_EQUAL(read(ready[0], &c, 1), 1);
	close(ready[0]);
	return pid;
}

static void live_stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void clear_stale_ok(const struct rulespec *rs, struct fw_stale *st)
{
	char err[1024];

	memset(st, 0x5a, sizeof(*st));
	if (fw_clear_stale(rs, FW_V4 | FW_V6, st, err, sizeof(err)) != 0) {
		fprintf(stderr, "\nfw_clear_stale: %s\n", err);
		CU_FAIL("fw_clear_stale");
	}
}

static void test_clear_stale(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT), bare;
	char out[4096], deadx[64], text[512], want[512];
	struct fw_stale st;
	long dead = dead_pid(), self = (long)getpid(), live = (long)live_start();

	flush();
	/* The original tool's rule, and the last version's (SYN only): no pid, go. */
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING %s", RULESPEC_DEFAULT), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j DNAT "
	                   "--to-destination 198.51.100.9:443"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING %s", SPEC_SYN), 0);
	/* Another spec of the same comment, no pid: goes too (a spec changed since). */
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -m comment --comment acme-alpn-proxy -p tcp "
	                   "--dport 8443 -j REDIRECT --to-ports 1"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21443 -m comment --comment other"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21443 -m comment --comment acme-alpn-proxy-2"), 0);
	/* Owned: of a dead process (go, whatever the spec); of pid 1, alive but not an instance
	 * (as a pid reused after a crash: goes); of live instances (live, ours: stay). */
	CU_ASSERT_EQUAL(add_ours(dead, false), 0);
	CU_ASSERT_EQUAL(add_ours(1, false), 0);
	CU_ASSERT_EQUAL(add_ours(live, false), 0);
	CU_ASSERT_EQUAL(add_ours(self, true), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21444 -m comment --comment 'acme-alpn-proxy pid %ld'", dead), 0);
	/* Only look like a pid: not ours to judge. */
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21443 -m comment --comment 'acme-alpn-proxy pid %ldx'", dead), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21443 -m comment --comment 'acme-alpn-proxy pid 0'"), 0);
	CU_ASSERT_EQUAL(sh(IP6T " -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 1"),
	                0);
	CU_ASSERT_EQUAL(sh(IP6T " -t nat -A PREROUTING %s", RULESPEC_DEFAULT), 0);
	CU_ASSERT_EQUAL(sh(IP6T " -t nat -A PREROUTING %s", SPEC_SYN), 0);
	/* Holds: of a dead process and of pid 1 (go), of live instances (ours, live: stay), of
	 * another comment (not ours to judge), and text that only looks like a hold. */
	CU_ASSERT_EQUAL(add_hold(NULL, dead, false), 0);
	CU_ASSERT_EQUAL(add_hold(NULL, self, false), 0);
	CU_ASSERT_EQUAL(add_hold(NULL, 1, true), 0);
	CU_ASSERT_EQUAL(add_hold(NULL, live, true), 0);
	CU_ASSERT_EQUAL(add_hold("other", dead, true), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING " HOLD_MATCH " \"%s%s\"",
	                   hold_comment(NULL, dead), "x"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING " HOLD_MATCH " \"%s\"",
	                   "acme-alpn-proxy conntrack hold pid 0"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING " HOLD_MATCH " \"%s\"",
	                   "acme-alpn-proxy conntrack hold pid 99999999999"), 0);

	/* Every REDIRECT rule of the family, whoever owns it: IPv4 3 without a pid, 3 dead, 2
	 * live; IPv6 2, 2, 1. */
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4, 0), 8);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V6, 0), 5);
	CU_ASSERT_EQUAL(count(&rs, FW_V4 | FW_V6), 1);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, live), 2);

	clear_stale_ok(&rs, &st);
	CU_ASSERT_EQUAL(st.redirect_nopid, 5);
	CU_ASSERT_EQUAL(st.redirect_dead, 5);
	CU_ASSERT_EQUAL(st.hold_dead, 3);
	CU_ASSERT_EQUAL(fw_stale_removed(&st), 13);
	CU_ASSERT_EQUAL(st.redirect_live, 3);
	CU_ASSERT_EQUAL(st.dead.n, 2);
	CU_ASSERT_EQUAL(st.dead.pid[0], dead);
	CU_ASSERT_EQUAL(st.dead.pid[1], 1);
	CU_ASSERT_FALSE(st.dead.more);
	CU_ASSERT_EQUAL(st.live.n, 2);
	CU_ASSERT_EQUAL(st.live.pid[0], live);
	CU_ASSERT_EQUAL(st.live.pid[1], self);
	fw_stale_describe(&st, text, sizeof(text));
	snprintf(want, sizeof(want), "removed 13 firewall rules left behind by a dead instance (pids "
	         "%ld, 1, no longer running: 5 redirect, 3 conntrack hold; 5 redirect rules naming "
	         "no pid, from an older version); kept 3 redirect rules of the running pids %ld, %ld "
	         "(another instance, with another pidfile: stop it with its own)", dead, live, self);
	CU_ASSERT_STRING_EQUAL(text, want);

	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 13);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "DNAT"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--comment other"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--comment acme-alpn-proxy-2"));
	CU_ASSERT_PTR_NULL(strstr(out, "--comment acme-alpn-proxy -j"));
	CU_ASSERT_PTR_NULL(strstr(out, "21444"));
	snprintf(want, sizeof(want), "\"acme-alpn-proxy pid %ld\"", dead);
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(lines_of(IPT, "\"acme-alpn-proxy pid 1\"", out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "\"acme-alpn-proxy pid %ld\"", live);
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 1);
	snprintf(want, sizeof(want), "\"acme-alpn-proxy pid %ld\"", self);
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 1);
	snprintf(want, sizeof(want), "\"acme-alpn-proxy pid %ldx\"", dead);
	CU_ASSERT_EQUAL(lines_of(IPT, want, out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, "\"acme-alpn-proxy pid 0\"", out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, "conntrack hold pid", out, sizeof(out)), 6);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown(NULL, dead), out, sizeof(out)), 0);
	snprintf(deadx, sizeof(deadx), "pid %ldx\"\n", dead);
	CU_ASSERT_EQUAL(lines_of(IPT, deadx, out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown(NULL, self), out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown(NULL, 1), out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown(NULL, live), out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(lines_of(IPT, hold_shown("other", dead), out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--dport 80"));
	snprintf(want, sizeof(want), "\"acme-alpn-proxy pid %ld\"", live);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, hold_shown(NULL, self)));

	/* Nothing stale left: 0, success; the live ones are still reported. */
	clear_stale_ok(&rs, &st);
	CU_ASSERT_EQUAL(fw_stale_removed(&st), 0);
	CU_ASSERT_EQUAL(st.redirect_live, 3);
	flush();
	clear_stale_ok(&rs, &st);
	CU_ASSERT_EQUAL(fw_stale_removed(&st), 0);
	CU_ASSERT_EQUAL(st.redirect_live, 0);
	fw_stale_describe(&st, text, sizeof(text));
	CU_ASSERT_STRING_EQUAL(text, "removed no firewall rules");

	/* Without a comment of its own: the older versions' rule only when identical; its own
	 * rules have the default name and a pid. */
	bare = parse("-p tcp --dport 443 -j REDIRECT --to-ports 21443");
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 --syn -j REDIRECT "
	                   "--to-ports 21443"), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING %s", SPEC_SYN), 0);
	CU_ASSERT_EQUAL(sh(IPT " -t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports "
	                   "21443 --syn -m addrtype --dst-type LOCAL -m comment --comment "
	                   "'acme-alpn-proxy pid %ld'", dead), 0);
	CU_ASSERT_EQUAL(add_hold(NULL, dead, true), 0);
	CU_ASSERT_EQUAL(add_hold(NULL, live, true), 0);
	CU_ASSERT_EQUAL(count_of(&bare, FW_V4 | FW_V6, 0), 2);
	clear_stale_ok(&bare, &st);
	CU_ASSERT_EQUAL(st.redirect_nopid, 1);
	CU_ASSERT_EQUAL(st.redirect_dead, 1);
	CU_ASSERT_EQUAL(st.hold_dead, 1);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "--comment acme-alpn-proxy -j REDIRECT"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, hold_shown(NULL, live)));
	flush();
	live_stop((pid_t)live);
}

/* The message names up to FW_PIDS_MAX pids, then "and others". */
static void test_stale_describe(void)
{
	struct fw_stale st;
	char text[512];
	int i;

	memset(&st, 0, sizeof(st));
	st.redirect_nopid = 1;
	fw_stale_describe(&st, text, sizeof(text));
	CU_ASSERT_STRING_EQUAL(text, "removed 1 firewall rule left behind by a dead instance (1 "
	                       "redirect rule naming no pid, from an older version)");
	memset(&st, 0, sizeof(st));
	st.redirect_live = 9;
	for (i = 0; i < FW_PIDS_MAX; i++)
		st.live.pid[st.live.n++] = 100 + i;
	st.live.more = true;
	fw_stale_describe(&st, text, sizeof(text));
	CU_ASSERT_STRING_EQUAL(text, "removed no firewall rules; kept 9 redirect rules of the "
	                       "running pids 100, 101, 102, 103 and others (another instance, "
	                       "with another pidfile: stop it with its own)");
	/* A short buffer: cut, terminated. */
	fw_stale_describe(&st, text, 10);
	CU_ASSERT_STRING_EQUAL(text, "removed n");
}

/* ---- failures of one family, provoked in a forked child by a seccomp filter ------------- */

struct child_result {
	int status;      /* exit status of the child, or -1 */
	char text[2048]; /* what it wrote to the pipe */
};

/* In the child: the seccomp user-notification fd, when setup asked for SCMP_ACT_NOTIFY. */
static int child_notify_fd = -1;

/* Run fn in a child with filter rules added by setup; fn writes its messages to fd. */
static void in_child(void (*setup)(scmp_filter_ctx), int (*fn)(int fd), struct child_result *r)
{
	int pfd[2], st;
	size_t used = 0;
	ssize_t n;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	r->status = -1;
	CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);

		close(pfd[0]);
		if (ctx == NULL)
			_exit(90);
		setup(ctx);
		if (seccomp_load(ctx) != 0)
			_exit(91);
		child_notify_fd = seccomp_notify_fd(ctx);
		seccomp_release(ctx);
		_exit(fn(pfd[1]));
	}
	close(pfd[1]);
	while (used + 1 < sizeof(r->text) &&
	       (n = read(pfd[0], r->text + used, sizeof(r->text) - 1 - used)) > 0)
		used += (size_t)n;
	r->text[used] = '\0';
	close(pfd[0]);
	CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st))
		r->status = WEXITSTATUS(st);
	printf("\n    child: status %d: %s\n", r->status, r->text);
}

/* fn in a child under the filter setup (in_child), which must report (status 0) and whose text
 * must hold each of the texts that follow, up to NULL. */
static void child_says(void (*setup)(scmp_filter_ctx), int (*fn)(int fd), struct child_result *r,
                       ...) __attribute__((sentinel));
static void child_says(void (*setup)(scmp_filter_ctx), int (*fn)(int fd), struct child_result *r,
                       ...)
{
	const char *want;
	va_list ap;

	in_child(setup, fn, r);
	CU_ASSERT_EQUAL(r->status, 0);
	va_start(ap, r);
	while ((want = va_arg(ap, const char *)) != NULL) {
		if (strstr(r->text, want) == NULL)
			fprintf(stderr, "\nthe child did not say \"%s\"\n", want);
		CU_ASSERT_PTR_NOT_NULL(strstr(r->text, want));
	}
	va_end(ap);
}

/* In a filter: the socket option call sys (setsockopt, getsockopt) at level, opt gets action
 * (SCMP_ACT_ERRNO(e), SCMP_ACT_NOTIFY). */
static void on_sockopt(scmp_filter_ctx ctx, uint32_t action, int sys, int level, int opt)
{
	if (seccomp_rule_add(ctx, action, sys, 2, SCMP_A1_32(SCMP_CMP_EQ, level),
	                     SCMP_A2_32(SCMP_CMP_EQ, opt)) != 0)
		_exit(92);
}

static void fail_v6_commit(scmp_filter_ctx ctx)
{
	/* libip6tc's iptc_commit: setsockopt(fd, IPPROTO_IPV6, IP6T_SO_SET_REPLACE, ...). */
	on_sockopt(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setsockopt), IPPROTO_IPV6,
	           IP6T_SO_SET_REPLACE);
}

static void no_ipv6(scmp_filter_ctx ctx)
{
	/* As on a kernel booted with ipv6.disable=1. */
	if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
	                     SCMP_A0_32(SCMP_CMP_EQ, AF_INET6)) != 0)
		_exit(92);
}

static void no_ip_tables(scmp_filter_ctx ctx)
{
	/* As without the ip_tables module: the get-info socket option does not exist. */
	on_sockopt(ctx, SCMP_ACT_ERRNO(ENOPROTOOPT), SCMP_SYS(getsockopt), IPPROTO_IP,
	           IPT_SO_GET_INFO);
}

/* fw_install of the default rule for both families: 93 when the rule does not parse, else
 * fw_install's result. */
static int install_default(struct rulespec *rs, int *fams, char *err, char *warn, size_t len)
{
	*fams = FW_V4 | FW_V6;
	if (rulespec_parse(RULESPEC_DEFAULT, rs, err, len) != 0)
		return 93;
	return fw_install(rs, fams, err, len, warn, len) == 0 ? 0 : -1;
}

/* fw_install of the default rule: exit 0 on failure (expected), 1 on success; err to fd. */
static int child_install_fails(int fd)
{
	struct rulespec rs;
	char err[1024], warn[1024];
	int fams, r = install_default(&rs, &fams, err, warn, sizeof(err));

	if (r > 0)
		return r;
	if (r == 0)
		return 1;
	if (write(fd, err, strlen(err)) < 0)
		return 94;
	return 0;
}

/* The same, with this process's IPv4 rule put there by iptables first. */
static int child_install_fails_after_own(int fd)
{
	char spec[512];

	snprintf(spec, sizeof(spec), SPEC_OURS, (long)getpid());
	if (sh(IPT " -t nat -I PREROUTING %s", spec) != 0)
		return 95;
	return child_install_fails(fd);
}

/* fw_install must succeed for IPv4 alone with a warning; then count and remove must cope
 * with the missing family. */
static int child_install_v4_only(int fd)
{
	struct rulespec rs;
	char err[1024], warn[1024];
	int fams, r = install_default(&rs, &fams, err, warn, sizeof(err));

	if (r > 0)
		return r;
	if (r < 0) {
		if (write(fd, err, strlen(err)) < 0)
			return 94;
		return 1;
	}
	if (write(fd, warn, strlen(warn)) < 0)
		return 94;
	if (fams != FW_V4)
		return 2;
	if (fw_count(&rs, FW_V4 | FW_V6, getpid(), err, sizeof(err)) != 1)
		return 3;
	return 0;
}

static void notify_v4_commit(scmp_filter_ctx ctx)
{
	/* libip4tc's iptc_commit: setsockopt(fd, IPPROTO_IP, IPT_SO_SET_REPLACE, ...). */
	on_sockopt(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(setsockopt), IPPROTO_IP, IPT_SO_SET_REPLACE);
}

/* The child's supervisor thread: answers the first `eagain` table replacements with EAGAIN,
 * as the kernel does when the table changed since iptc_init, then lets them through. */
struct eagain_ctl {
	int eagain;
	_Atomic int seen;
};

static void *eagain_thread(void *arg)
{
	struct eagain_ctl *c = arg;
	struct seccomp_notif *req;
	struct seccomp_notif_resp *resp;

	if (seccomp_notify_alloc(&req, &resp) != 0)
		return NULL;
	for (;;) {
		memset(req, 0, sizeof(*req));
		if (seccomp_notify_receive(child_notify_fd, req) != 0)
			break;
		memset(resp, 0, sizeof(*resp));
		resp->id = req->id;
		if (c->seen++ < c->eagain)
			resp->error = -EAGAIN;
		else
			resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		if (seccomp_notify_respond(child_notify_fd, resp) != 0)
			break;
	}
	seccomp_notify_free(req, resp);
	return NULL;
}

/* fw_install with `eagain` EAGAINs first; writes "rc=R seen=N err=..." to fd. */
static int child_install_eagain(int fd, int eagain)
{
	static struct eagain_ctl c;
	struct rulespec rs;
	char err[1024], warn[1024], out[1200];
	int fams = FW_V4, r;
	pthread_t t;

	c.eagain = eagain;
	c.seen = 0;
	if (child_notify_fd < 0 || pthread_create(&t, NULL, eagain_thread, &c) != 0)
		return 96;
	if (rulespec_parse(RULESPEC_DEFAULT, &rs, err, sizeof(err)) != 0)
		return 93;
	err[0] = '\0';
	r = fw_install(&rs, &fams, err, sizeof(err), warn, sizeof(warn));
	snprintf(out, sizeof(out), "rc=%d seen=%d err=%s", r, c.seen, err);
	if (write(fd, out, strlen(out)) < 0)
		return 94;
	return 0;
}

static int child_eagain_twice(int fd)
{
	return child_install_eagain(fd, 2);
}

static int child_eagain_always(int fd)
{
	return child_install_eagain(fd, 1000);
}

static void test_commit_eagain_retried(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	struct child_result r;

	flush();
	in_child(notify_v4_commit, child_eagain_twice, &r);
	CU_ASSERT_EQUAL(r.status, 0);
	CU_ASSERT_STRING_EQUAL(r.text, "rc=0 seen=3 err=");
	/* The child's rule (any owner: its pid). */
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4, 0), 1);

	/* A table that keeps changing: a bounded number of attempts, then a message. */
	flush();
	child_says(notify_v4_commit, child_eagain_always, &r,
	           "rc=-1 seen=10 ", "kept changing", NULL);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4, 0), 0);
}

static void test_v6_failure_rolls_back_v4(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	struct child_result r;
	char out[2048];

	flush();
	child_says(fail_v6_commit, child_install_fails, &r,
	           "IPv6", strerror(EPERM), "IPv4 rule was removed again", NULL);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, 0), 0);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 0);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 0);

	/* An IPv4 rule that was there before the call (the child's own, put there by iptables)
	 * is not ours to roll back; the hold the call added is. */
	child_says(fail_v6_commit, child_install_fails_after_own, &r,
	           "there before", "hold was removed again", NULL);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4, 0), 1);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V6, 0), 0);
	CU_ASSERT_EQUAL(rules_of(IPT, out, sizeof(out)), 1);
	CU_ASSERT_EQUAL(rules_of(IP6T, out, sizeof(out)), 0);
	flush();
}

static void test_v6_missing_is_a_warning(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	struct child_result r;

	flush();
	child_says(no_ipv6, child_install_v4_only, &r, "IPv6", "ACME_ALPN_PROXY_DISABLEV6", NULL);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4, 0), 1);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V6, 0), 0);
	flush();
}

static void test_v4_missing_is_an_error(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	struct child_result r;

	flush();
	child_says(no_ip_tables, child_install_fails, &r,
	           "legacy iptables nat table (x_tables) is not available", "iptable_nat", NULL);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, 0), 0);
}

static int child_fresh_netns(int fd)
{
	struct rulespec rs;
	char err[1024], line[64];
	struct fw_stale st;
	FILE *f;

	if (rulespec_parse(RULESPEC_DEFAULT, &rs, err, sizeof(err)) != 0)
		return 93;
	if (unshare(CLONE_NEWNET) != 0)
		return 95;
	if (fw_count(&rs, FW_V4 | FW_V6, getpid(), err, sizeof(err)) != 0 ||
	    fw_count(&rs, FW_V4 | FW_V6, 0, err, sizeof(err)) != 0)
		return 1;
	if (fw_remove(&rs, FW_V4 | FW_V6, err, sizeof(err)) != 0)
		return 2;
	if (fw_release(&rs, FW_V4 | FW_V6, err, sizeof(err)) != 0)
		return 4;
	if (fw_clear_stale(&rs, FW_V4 | FW_V6, &st, err, sizeof(err)) != 0 ||
	    fw_stale_removed(&st) != 0 || st.redirect_live != 0)
		return 3;
	/* None of that may have created a legacy nat table (iptc_init would). */
	f = fopen("/proc/net/ip_tables_names", "r");
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		if (write(fd, line, strlen(line)) < 0)
			return 94;
	}
	if (f != NULL)
		fclose(f);
	f = fopen("/proc/net/ip6_tables_names", "r");
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		if (write(fd, line, strlen(line)) < 0)
			return 94;
	}
	if (f != NULL)
		fclose(f);
	return 0;
}

static void allow_all(scmp_filter_ctx ctx)
{
	(void)ctx;
}

static void test_read_only_ops_create_no_table(void)
{
	struct child_result r;

	in_child(allow_all, child_fresh_netns, &r);
	CU_ASSERT_EQUAL(r.status, 0);
	CU_ASSERT_PTR_NULL(strstr(r.text, "nat"));
}

/* Holds /run/xtables.lock while a grandchild installs: the install must wait for it. /run is
 * a private tmpfs here, so the host's iptables is never kept waiting. */
static int child_lock_waits(int fd)
{
	struct timespec pause = { 0, 300 * 1000000L };
	struct rulespec rs;
	char err[1024];
	int lockfd, st, fams = FW_V4 | FW_V6;
	pid_t pid;

	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") != 0) {
		snprintf(err, sizeof(err), "no private /run: %s", strerror(errno));
		return write(fd, err, strlen(err)) < 0 ? 94 : 77;
	}
	if (rulespec_parse(RULESPEC_DEFAULT, &rs, err, sizeof(err)) != 0)
		return 93;
	lockfd = open("/run/xtables.lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
	if (lockfd < 0 || flock(lockfd, LOCK_EX) != 0)
		return 95;
	pid = fork();
	if (pid < 0)
		return 96;
	if (pid == 0) {
		char warn[1024];

		if (fw_install(&rs, &fams, err, sizeof(err), warn, sizeof(warn)) != 0) {
			if (write(fd, err, strlen(err)) < 0)
				_exit(94);
			_exit(1);
		}
		_exit(0);
	}
	/* Not done while we hold the lock, however long we hold it. */
	nanosleep(&pause, NULL);
	if (waitpid(pid, &st, WNOHANG) != 0) {
		snprintf(err, sizeof(err), "fw_install did not wait for the xtables lock");
		return write(fd, err, strlen(err)) < 0 ? 94 : 2;
	}
	if (flock(lockfd, LOCK_UN) != 0 || waitpid(pid, &st, 0) != pid)
		return 97;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 98;
}

static void test_lock_is_taken(void)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	struct child_result r;

	flush();
	in_child(allow_all, child_lock_waits, &r);
	if (r.status == 77) {
		printf("\n    skipped: %s\n", r.text);
		return;
	}
	CU_ASSERT_EQUAL(r.status, 0);
	CU_ASSERT_EQUAL(count_of(&rs, FW_V4 | FW_V6, 0), 2);
	flush();
}

static void test_rule_of_other_family_only(void)
{
	struct rulespec rs = parse("-p tcp -d 2001:db8::1 --dport 443 -j REDIRECT --to-port 21443");
	char err[1024], warn[1024];
	int fams = FW_V4;

	/* IPv6-only rule with IPv6 disabled: nothing could be installed, which is an error. */
	CU_ASSERT_EQUAL(fw_install(&rs, &fams, err, sizeof(err), warn, sizeof(warn)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IPv6"));
	fams = FW_V4 | FW_V6;
	flush();
	install_ok(&rs);
	CU_ASSERT_EQUAL(count(&rs, FW_V4), 0);
	CU_ASSERT_EQUAL(count(&rs, FW_V6), 1);
	remove_ok(&rs);
	CU_ASSERT_EQUAL(count(&rs, FW_V6), 0);
}

/* ---- real traffic through the rules -------------------------------------------------------
 * A peer namespace (held by a child process, so nothing named outlives the test) is linked to
 * ours by a veth pair; the client sockets are made in the peer namespace (a socket stays in
 * the namespace it was created in), the listeners on 443 (web server) and 21443 (proxy) here,
 * where the rules are. Nothing else in our namespace uses connection tracking: the rules
 * alone switch it on and off, which is the situation the SYN match and the hold are for. */

/* The pair is the integration tests' lab link (netlab_link of tests/integration/netlab.sh, the
 * one recipe for it), made from a shell between this namespace and the peer's: these are the
 * addresses it gives the two ends (NETLAB_SRV4, NETLAB_SRV6; the peer gets the CLI ones). */
#define SRV4 "198.51.100.1"
#define SRV6 "2001:db8:1::1"
#define IO_TIMEOUT_MS 2000

struct lab {
	pid_t peer;      /* the child holding the peer namespace */
	int hold_fd;     /* the child exits when this closes */
	int self_ns, peer_ns;
	int l443, l21443; /* dual-stack listeners */
};

static struct lab lab = { -1, -1, -1, -1, -1, -1 };

static void set_timeouts(int fd)
{
	struct timeval tv = { IO_TIMEOUT_MS / 1000, (IO_TIMEOUT_MS % 1000) * 1000 };

	/* connect and accept honour them too. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int listener(uint16_t port)
{
	struct sockaddr_in6 a;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), zero = 0, one = 1;

	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_port = htons(port);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0) {
		close(fd);
		return -1;
	}
	set_timeouts(fd);
	return fd;
}

static void lab_down(void)
{
	if (lab.l443 >= 0)
		close(lab.l443);
	if (lab.l21443 >= 0)
		close(lab.l21443);
	if (lab.peer_ns >= 0)
		close(lab.peer_ns);
	if (lab.self_ns >= 0)
		close(lab.self_ns);
	if (lab.hold_fd >= 0)
		close(lab.hold_fd);
	if (lab.peer > 0)
		waitpid(lab.peer, NULL, 0);
	/* The veth pair went with the peer namespace. */
	lab = (struct lab){ -1, -1, -1, -1, -1, -1 };
}

static int lab_up(void)
{
	int ready[2], hold[2];
	char path[64], c;

	if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0)
		return -1;
	fflush(NULL);
	lab.peer = fork();
	if (lab.peer < 0)
		return -1;
	if (lab.peer == 0) {
		close(ready[0]);
		close(hold[1]);
		if (unshare(CLONE_NEWNET) != 0 || write(ready[1], "r", 1) != 1)
			_exit(1);
		/* Until the parent closes its end (or dies). */
		while (read(hold[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	close(hold[0]);
	lab.hold_fd = hold[1];
	if (read(ready[0], &c, 1) != 1) {
		close(ready[0]);
		return -1;
	}
	close(ready[0]);
	snprintf(path, sizeof(path), "/proc/%ld/ns/net", (long)lab.peer);
	lab.peer_ns = open(path, O_RDONLY | O_CLOEXEC);
	lab.self_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (lab.peer_ns < 0 || lab.self_ns < 0)
		return -1;
	if (sh("bash -c '. \"$0\" && netlab_link self pid:%ld' '%s'", (long)lab.peer, NETLAB_SH) != 0)
		return -1;
	lab.l443 = listener(443);
	lab.l21443 = listener(21443);
	if (lab.l443 < 0 || lab.l21443 < 0)
		return -1;
	return 0;
}

/* A client socket of the peer namespace connected to the server's port 443; *srv gets the
 * accepted end (from the 443 listener or, redirected, the 21443 one: the port in *which). */
static int lab_connect(int af, int *srv, int *which)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct pollfd pf[2];
	int fd, tries;

	*srv = -1;
	*which = 0;
	memset(&ss, 0, sizeof(ss));
	if (af == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(443);
		inet_pton(AF_INET, SRV4, &a->sin_addr);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(443);
		inet_pton(AF_INET6, SRV6, &a->sin6_addr);
		len = sizeof(*a);
	}
	/* The link may still be coming up: a few attempts. */
	for (tries = 0; tries < 5; tries++) {
		if (setns(lab.peer_ns, CLONE_NEWNET) != 0)
			return -1;
		fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (setns(lab.self_ns, CLONE_NEWNET) != 0) {
			/* Never go on in the wrong namespace. */
			fprintf(stderr, "\ncannot return to the test's namespace: %s\n", strerror(errno));
			abort();
		}
		if (fd < 0)
			return -1;
		set_timeouts(fd);
		if (connect(fd, (struct sockaddr *)&ss, len) == 0)
			break;
		close(fd);
		fd = -1;
		usleep(200 * 1000);
	}
	if (fd < 0)
		return -1;
	pf[0].fd = lab.l443;
	pf[1].fd = lab.l21443;
	pf[0].events = pf[1].events = POLLIN;
	if (poll(pf, 2, IO_TIMEOUT_MS) <= 0) {
		close(fd);
		return -1;
	}
	*which = (pf[0].revents & POLLIN) ? 443 : 21443;
	*srv = accept4(*which == 443 ? lab.l443 : lab.l21443, NULL, NULL, SOCK_CLOEXEC);
	if (*srv < 0) {
		close(fd);
		return -1;
	}
	set_timeouts(*srv);
	return fd;
}

/* One leg of an exchange: msg sent on from, the same bytes read back on to; -1 with what went
 * wrong, named after who sent and who read, in why. */
static int leg(int from, int to, const char *msg, size_t len, const char *sender,
               const char *reader, char *why, size_t whylen)
{
	char got[32];
	ssize_t r;

	if (send(from, msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
		snprintf(why, whylen, "%s send: %s", sender, strerror(errno));
		return -1;
	}
	r = recv(to, got, len, MSG_WAITALL);
	if (r != (ssize_t)len || memcmp(got, msg, len) != 0) {
		snprintf(why, whylen, "%s recv: %s", reader, r < 0 ? (errno == EAGAIN ?
		         "nothing arrived" : strerror(errno)) : r == 0 ? "closed" : "other bytes");
		return -1;
	}
	return 0;
}

/* One exchange: the client sends, the server end echoes it back. 0 when it came back whole;
 * -1 when the connection broke (reset, closed, or a packet went astray: timeout), with what
 * was seen in why. */
static int exchange(int cli, int srv, int n, char *why, size_t whylen)
{
	char msg[32];
	size_t len = (size_t)snprintf(msg, sizeof(msg), "ping %d", n);

	if (leg(cli, srv, msg, len, "client", "server", why, whylen) < 0)
		return -1;
	return leg(srv, cli, msg, len, "server", "client", why, whylen);
}

/* How many of `rounds` exchanges failed (it stops at the first: a broken connection stays so). */
static int exchanges_failing(int cli, int srv, int rounds, const char *when)
{
	char why[128];
	int i;

	for (i = 0; i < rounds; i++) {
		if (exchange(cli, srv, i, why, sizeof(why)) != 0) {
			printf("\n    %s: exchange %d of %d failed (%s)", when, i + 1, rounds, why);
			return rounds - i;
		}
	}
	printf("\n    %s: %d exchanges ok", when, rounds);
	return 0;
}

static bool lab_ready(void)
{
	if (lab.peer_ns >= 0)
		return true;
	if (lab_up() != 0) {
		fprintf(stderr, "\ncannot set up the veth lab: %s\n", strerror(errno));
		lab_down();
		return false;
	}
	return true;
}

/* The rule as versions before the hold installed it: REDIRECT without --syn, nothing else. */
static int add_old_rule(int af)
{
	return sh("%s -t nat -I PREROUTING %s", af == AF_INET ? IPT : IP6T, RULESPEC_DEFAULT);
}

/* (a) A connection to the web server opened before the install keeps working after it. */
static void open_before_install(int af)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	const char *fam = af == AF_INET ? "IPv4" : "IPv6";
	char when[64];
	int cli, srv, which;

	if (!lab_ready()) {
		CU_FAIL("lab");
		return;
	}
	/* Control: the old rule takes the connection over mid-stream and it is reset. If not,
	 * this setup cannot tell the fix from the bug. */
	flush();
	cli = lab_connect(af, &srv, &which);
	CU_ASSERT_FATAL(cli >= 0);
	CU_ASSERT_EQUAL(which, 443);
	snprintf(when, sizeof(when), "%s control, before", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	CU_ASSERT_EQUAL(add_old_rule(af), 0);
	snprintf(when, sizeof(when), "%s control, after the old rule", fam);
	CU_ASSERT_NOT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	close(cli);
	close(srv);

	flush();
	cli = lab_connect(af, &srv, &which);
	CU_ASSERT_FATAL(cli >= 0);
	CU_ASSERT_EQUAL(which, 443);
	snprintf(when, sizeof(when), "%s before fw_install", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	install_ok(&rs);
	snprintf(when, sizeof(when), "%s after fw_install", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 5, when), 0);
	/* While new connections are redirected. */
	{
		int c2, s2, w2;

		c2 = lab_connect(af, &s2, &w2);
		CU_ASSERT_FATAL(c2 >= 0);
		CU_ASSERT_EQUAL(w2, 21443);
		close(c2);
		close(s2);
	}
	remove_ok(&rs);
	release_ok(&rs);
	snprintf(when, sizeof(when), "%s after fw_remove and fw_release", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	close(cli);
	close(srv);
	flush();
}

/* (b) A redirected connection keeps working after fw_remove, until fw_release. */
static void redirected_survives_remove(int af)
{
	struct rulespec rs = parse(RULESPEC_DEFAULT);
	const char *fam = af == AF_INET ? "IPv4" : "IPv6";
	char when[64];
	int cli, srv, which, c2, s2, w2;

	if (!lab_ready()) {
		CU_FAIL("lab");
		return;
	}
	/* Control: the old rule alone; deleting it switches conntrack off and the redirected
	 * connection's packets reach port 443 untranslated: reset. */
	flush();
	CU_ASSERT_EQUAL(add_old_rule(af), 0);
	cli = lab_connect(af, &srv, &which);
	CU_ASSERT_FATAL(cli >= 0);
	CU_ASSERT_EQUAL(which, 21443);
	snprintf(when, sizeof(when), "%s control, redirected", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	flush();
	snprintf(when, sizeof(when), "%s control, after deleting the old rule", fam);
	CU_ASSERT_NOT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	close(cli);
	close(srv);

	flush();
	install_ok(&rs);
	cli = lab_connect(af, &srv, &which);
	CU_ASSERT_FATAL(cli >= 0);
	CU_ASSERT_EQUAL(which, 21443);
	snprintf(when, sizeof(when), "%s redirected", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	remove_ok(&rs);
	snprintf(when, sizeof(when), "%s after fw_remove", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 5, when), 0);
	/* New connections reach the web server again meanwhile. */
	c2 = lab_connect(af, &s2, &w2);
	CU_ASSERT_FATAL(c2 >= 0);
	CU_ASSERT_EQUAL(w2, 443);
	snprintf(when, sizeof(when), "%s new connection after fw_remove", fam);
	CU_ASSERT_EQUAL(exchanges_failing(c2, s2, 2, when), 0);
	snprintf(when, sizeof(when), "%s redirected, still", fam);
	CU_ASSERT_EQUAL(exchanges_failing(cli, srv, 2, when), 0);
	close(c2);
	close(s2);
	/* The hold is what kept it: released, tracking stops (nothing else uses it here) and
	 * the connection breaks, as it would have at fw_remove without the hold. */
	release_ok(&rs);
	snprintf(when, sizeof(when), "%s after fw_release", fam);
	CU_ASSERT_NOT_EQUAL(exchanges_failing(cli, srv, 3, when), 0);
	close(cli);
	close(srv);
	flush();
}

static void test_traffic_open_before_install(void)
{
	open_before_install(AF_INET);
	open_before_install(AF_INET6);
}

static void test_traffic_redirected_survives_remove(void)
{
	redirected_survives_remove(AF_INET);
	redirected_survives_remove(AF_INET6);
}

int main(void)
{
	struct stat before, after;
	static const struct tu_test tests[] = {
		{ "read-only ops create no table", test_read_only_ops_create_no_table },
		{ "same entries as iptables", test_same_as_iptables },
		{ "long comment", test_long_comment },
		{ "install idempotent, at head", test_install_idempotent_at_head },
		{ "release own hold only", test_release_own_hold_only },
		{ "remove every copy", test_remove_every_copy },
		{ "clear stale", test_clear_stale },
		{ "what clear stale says", test_stale_describe },
		{ "rule of one family", test_rule_of_other_family_only },
		{ "xtables lock is taken", test_lock_is_taken },
		{ "commit EAGAIN is retried", test_commit_eagain_retried },
		{ "IPv6 failure rolls back IPv4", test_v6_failure_rolls_back_v4 },
		{ "IPv6 missing is a warning", test_v6_missing_is_a_warning },
		{ "IPv4 missing is an error", test_v4_missing_is_an_error },
		{ "traffic: open before install survives", test_traffic_open_before_install },
		{ "traffic: redirected survives remove until release", test_traffic_redirected_survives_remove },
	};
	int r;

	if (geteuid() != 0) {
		printf("test_firewall: skipped: needs root (it makes a network namespace and changes "
		       "the nat table in it)\n");
		return 77;
	}
	/* From here on nothing may reach the host's tables: a namespace of our own, or stop. */
	if (stat("/proc/self/ns/net", &before) != 0 || unshare(CLONE_NEWNET) != 0 ||
	    stat("/proc/self/ns/net", &after) != 0 || before.st_ino == after.st_ino) {
		fprintf(stderr, "test_firewall: FATAL: cannot enter a new network namespace: %s\n",
		        strerror(errno));
		return 1;
	}
	/* What instances call themselves: this process's rules are a live instance's. */
	if (prctl(PR_SET_NAME, FW_OWNER_NAME, 0, 0, 0) != 0) {
		fprintf(stderr, "test_firewall: FATAL: prctl(PR_SET_NAME): %s\n", strerror(errno));
		return 1;
	}
	if (sh("command -v " IPT " >/dev/null && command -v " IP6T " >/dev/null") != 0) {
		fprintf(stderr, "test_firewall: FATAL: " IPT " and " IP6T " are needed (package "
		        "iptables)\n");
		return 1;
	}
	if (TU_ADD_SUITE("firewall (own network namespace)", tests) != 0)
		return 99;
	r = tu_run();
	lab_down();
	return r;
}
