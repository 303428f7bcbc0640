/* The REDIRECT rules in nat PREROUTING, through libip4tc and libip6tc.
 *
 * Each change is one transaction as iptables does it: take /run/xtables.lock, copy the table
 * (iptc_init), change the copy, replace the table in the kernel (iptc_commit). The rule is
 * built byte for byte as `iptables -t nat -I PREROUTING <spec>` builds it, so that iptables
 * shows it the same way and so that rules left by the original tool (which ran iptables)
 * compare equal to ours. libiptc prints nothing, and neither does this file: every failure is
 * a message in err.
 *
 * Two rules per family. The REDIRECT rule matches SYN packets to a LOCAL destination only (a
 * host that routes for others must not take their connections to remote servers over), and
 * its comment names the pid of the instance that owns it, so that no other instance's
 * `start` or `stop` mistakes it for a dead instance's. Connection tracking is
 * switched on in a network namespace by its first user (REDIRECT's checkentry) and off by its
 * last: a connection already open when the rule goes in is first seen mid-stream (with
 * nf_conntrack_tcp_loose, the default) and its NAT lookup runs on that packet, so without --syn
 * it would be redirected half-way and reset. The "hold" rule (-m conntrack --ctstate INVALID,
 * no target: it never changes a verdict) is a second conntrack user, appended in the same
 * commit and named after this process, so that deleting the REDIRECT rule does not switch
 * tracking off under the connections it redirected while they drain: where nothing else uses
 * conntrack, each of them (grace period, drain) would lose its translation and be reset. The
 * comment's pid lets another instance's `start` or `stop` tell a live instance's rules from a
 * dead one's. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <libiptc/libip6tc.h>
#include <libiptc/libiptc.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/xt_addrtype.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_connmark.h>
#include <linux/netfilter/xt_conntrack.h>
#include <linux/netfilter/xt_mark.h>
#include <linux/netfilter/xt_tcpudp.h>

/* Defines firewall.h's functions as fw_iptc_*: firewall.c calls them (see firewall_ops.h). */
#define FW_IPTC_IMPL
#include "clock.h"
#include "firewall_ops.h"
#include "firewall.h"
#include "firewall_rule.h"

#define FW_TABLE "nat"
#define FW_CHAIN "PREROUTING"  /* for messages; libiptc gets fw_chain */
#define FW_LOCK_PATH "/run/xtables.lock" /* iptables' XT_LOCK_NAME */
#define FW_COMMIT_TRIES 10
static long fw_lock_wait_ms = FW_LOCK_WAIT_DEFAULT_MS;

/* libiptc declares chain names as char[32] (xt_chainlabel): hand it a full label. */
static const xt_chainlabel fw_chain = FW_CHAIN;

/* libip4tc and libip6tc have the same functions under two prefixes and two entry types; these
 * wrappers give both one shape. */
struct fw_family {
	int bit;                 /* FW_V4 or FW_V6 */
	int af;
	const char *name;        /* for messages */
	const char *names_file;  /* the tables this network namespace has */
	size_t hdr_size;
	struct xtc_handle *(*init)(const char *table);
	void (*free)(struct xtc_handle *h);
	int (*commit)(struct xtc_handle *h);
	const char *(*strerror)(int e);
	int (*check)(const void *e, unsigned char *mask, struct xtc_handle *h);
	int (*insert)(const void *e, struct xtc_handle *h);
	int (*append)(const void *e, struct xtc_handle *h);
	int (*del)(const void *e, unsigned char *mask, struct xtc_handle *h);
	int (*del_num)(unsigned n, struct xtc_handle *h);
	const void *(*first)(struct xtc_handle *h);
	const void *(*next)(const void *prev, struct xtc_handle *h);
	size_t (*target_offset)(const void *e);
};

static int v4_check(const void *e, unsigned char *mask, struct xtc_handle *h)
{
	return iptc_check_entry(fw_chain, e, mask, h);
}

static int v4_insert(const void *e, struct xtc_handle *h)
{
	return iptc_insert_entry(fw_chain, e, 0, h);
}

static int v4_append(const void *e, struct xtc_handle *h)
{
	return iptc_append_entry(fw_chain, e, h);
}

static int v4_del(const void *e, unsigned char *mask, struct xtc_handle *h)
{
	return iptc_delete_entry(fw_chain, e, mask, h);
}

static int v4_del_num(unsigned n, struct xtc_handle *h)
{
	return iptc_delete_num_entry(fw_chain, n, h);
}

static const void *v4_first(struct xtc_handle *h)
{
	return iptc_first_rule(fw_chain, h);
}

static const void *v4_next(const void *prev, struct xtc_handle *h)
{
	return iptc_next_rule(prev, h);
}

static size_t v4_target_offset(const void *e)
{
	return ((const struct ipt_entry *)e)->target_offset;
}

static int v6_check(const void *e, unsigned char *mask, struct xtc_handle *h)
{
	return ip6tc_check_entry(fw_chain, e, mask, h);
}

static int v6_insert(const void *e, struct xtc_handle *h)
{
	return ip6tc_insert_entry(fw_chain, e, 0, h);
}

static int v6_append(const void *e, struct xtc_handle *h)
{
	return ip6tc_append_entry(fw_chain, e, h);
}

static int v6_del(const void *e, unsigned char *mask, struct xtc_handle *h)
{
	return ip6tc_delete_entry(fw_chain, e, mask, h);
}

static int v6_del_num(unsigned n, struct xtc_handle *h)
{
	return ip6tc_delete_num_entry(fw_chain, n, h);
}

static const void *v6_first(struct xtc_handle *h)
{
	return ip6tc_first_rule(fw_chain, h);
}

static const void *v6_next(const void *prev, struct xtc_handle *h)
{
	return ip6tc_next_rule(prev, h);
}

static size_t v6_target_offset(const void *e)
{
	return ((const struct ip6t_entry *)e)->target_offset;
}

static const struct fw_family fw_v4 = {
	FW_V4, AF_INET, "IPv4", "/proc/net/ip_tables_names", sizeof(struct ipt_entry),
	iptc_init, iptc_free, iptc_commit, iptc_strerror,
	v4_check, v4_insert, v4_append, v4_del, v4_del_num, v4_first, v4_next, v4_target_offset,
};

static const struct fw_family fw_v6 = {
	FW_V6, AF_INET6, "IPv6", "/proc/net/ip6_tables_names", sizeof(struct ip6t_entry),
	ip6tc_init, ip6tc_free, ip6tc_commit, ip6tc_strerror,
	v6_check, v6_insert, v6_append, v6_del, v6_del_num, v6_first, v6_next, v6_target_offset,
};

enum fw_op {
	FW_OP_INSTALL,      /* REDIRECT at the head and the hold at the end, each unless there */
	FW_OP_UNDO,         /* roll back what one install inserted (new_redirect, new_hold) */
	FW_OP_DELETE_ALL,   /* every copy of pid's REDIRECT rule */
	FW_OP_COUNT,        /* delete all in the copy, count, never commit */
	FW_OP_COUNT_FAMILY, /* count the REDIRECT rules of rs's family, any owner; never commit */
	FW_OP_RELEASE,      /* every copy of this process's hold rule */
	FW_OP_CLEAR_STALE   /* REDIRECT rules and holds of dead pids, REDIRECT rules of no pid */
};

struct fw_txn {
	enum fw_op op;
	const struct rulespec *rs;
	pid_t pid;          /* whose REDIRECT and hold rules: this process, or fw_count's */
	_Alignas(max_align_t) unsigned char entry[FW_ENTRY_MAX]; /* pid's REDIRECT rule */
	unsigned char mask[FW_ENTRY_MAX];
	/* The REDIRECT rule as versions before the pid built it (no addrtype, the spec's comment
	 * or none): what a spec without a comment can still recognise as its own. */
	_Alignas(max_align_t) unsigned char old_entry[FW_ENTRY_MAX];
	unsigned char old_mask[FW_ENTRY_MAX];
	char redirect_prefix[RULESPEC_COMMENT_MAX]; /* REDIRECT comments up to the pid */
	_Alignas(max_align_t) unsigned char hold[FW_HOLD_MAX];   /* this process's hold rule */
	unsigned char hold_mask[FW_HOLD_MAX];
	char hold_prefix[RULESPEC_COMMENT_MAX]; /* its comment up to the pid */
	int result;         /* REDIRECT inserted (0/1), or how many rules were deleted or counted */
	struct fw_stale stale; /* clear-stale: what was removed and kept */
	bool new_redirect;  /* install: inserted by it; undo: to delete */
	bool new_hold;
};

/* pid's REDIRECT rule and, for a spec without a comment, the older versions' one. */
static void fw_build(const struct fw_family *f, struct fw_txn *t)
{
	char text[RULESPEC_COMMENT_MAX + 16];

	fw_rule_redirect_prefix(t->rs, t->redirect_prefix, sizeof(t->redirect_prefix));
	snprintf(text, sizeof(text), "%s%ld", t->redirect_prefix, (long)t->pid);
	fw_rule_redirect(f->af, t->rs, text, false, t->entry, t->mask);
	fw_rule_redirect(f->af, t->rs, t->rs->comment, true, t->old_entry, t->old_mask);
}

/* pid's hold rule. */
static void fw_build_hold(const struct fw_family *f, struct fw_txn *t)
{
	char text[RULESPEC_COMMENT_MAX + 16];

	fw_rule_hold_prefix(t->rs, t->hold_prefix, sizeof(t->hold_prefix));
	snprintf(text, sizeof(text), "%s%ld", t->hold_prefix, (long)t->pid);
	fw_rule_hold(f->af, text, t->hold, t->hold_mask);
}

/* Whether the instance that named itself pid in a rule is gone. Only ESRCH says the process is:
 * EPERM means it is alive under another user. A live process is the owner unless its name says
 * otherwise: every instance calls itself FW_OWNER_NAME (main.c), so a pid that an unrelated
 * process took over after a crash does not keep port 443 redirected to a closed port. When the
 * name cannot be read (no /proc, another pid namespace's /proc), it passes for the owner: a
 * rule kept too long is a message away, a live instance's rule deleted is a failed
 * validation. */
static bool fw_pid_gone(pid_t pid)
{
	char path[64], name[64];
	bool other = false;
	FILE *fp;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	fp = fopen(path, "re");
	if (fp == NULL)
		return false;
	if (fgets(name, sizeof(name), fp) != NULL) {
		name[strcspn(name, "\n")] = '\0';
		other = strcmp(name, FW_OWNER_NAME) != 0;
	}
	fclose(fp);
	return other;
}

enum fw_verdict {
	FW_OTHER,          /* not a rule of rs's family, or a live process's hold */
	FW_DEAD_REDIRECT,  /* "<C> pid N", N gone */
	FW_NOPID_REDIRECT, /* "<C>" alone: an older version's, or the original tool's */
	FW_LIVE_REDIRECT,  /* "<C> pid N", N running */
	FW_DEAD_HOLD       /* "<C> conntrack hold pid N", N gone */
};

/* What entry e is to t->rs's family, judged by its "comment" matches; *pid gets the owner it
 * names. */
static enum fw_verdict fw_judge(const struct fw_family *f, const void *e,
                                const struct fw_txn *t, pid_t *pid)
{
	char text[RULESPEC_COMMENT_MAX + 1];
	size_t off = 0;

	*pid = 0;
	while (fw_rule_next_comment(f->af, e, &off, text)) {
		if ((*pid = fw_rule_text_pid(text, t->hold_prefix)) > 0)
			return fw_pid_gone(*pid) ? FW_DEAD_HOLD : FW_OTHER;
		if ((*pid = fw_rule_text_pid(text, t->redirect_prefix)) > 0)
			return fw_pid_gone(*pid) ? FW_DEAD_REDIRECT : FW_LIVE_REDIRECT;
		if (t->rs->has_comment && strcmp(text, t->rs->comment) == 0)
			return FW_NOPID_REDIRECT;
	}
	return FW_OTHER;
}

static void fw_pids_add(struct fw_pids *p, pid_t pid)
{
	int i;

	if (pid <= 0)
		return;
	for (i = 0; i < p->n; i++) {
		if (p->pid[i] == pid)
			return;
	}
	if (p->n < FW_PIDS_MAX)
		p->pid[p->n++] = pid;
	else
		p->more = true;
}

static void fw_pids_merge(struct fw_pids *to, const struct fw_pids *from)
{
	int i;

	for (i = 0; i < from->n; i++)
		fw_pids_add(to, from->pid[i]);
	to->more = to->more || from->more;
}

/* The errors with which iptc_init says the table cannot exist here: no such table (ENOENT:
 * table module missing), no x_tables at all (ENOPROTOOPT), no such address family
 * (EAFNOSUPPORT: IPv6 disabled on the kernel command line). */
static bool fw_errno_absent(int e)
{
	return e == ENOENT || e == ENOPROTOOPT || e == EAFNOSUPPORT;
}

/* Whether this network namespace has the family's nat table. Only the read-only and removing
 * operations ask: iptc_init alone would create the legacy nat table, and on an nftables host a
 * `stop` or `status` must not leave an empty legacy table behind. When unsure, say yes. */
static bool fw_table_listed_name(const struct fw_family *f, const char *table)
{
	char line[64];
	bool found = false;
	FILE *fp = fopen(f->names_file, "re");

	if (fp == NULL) {
		/* No file with /proc mounted: x_tables is not loaded, no rule can exist. */
		return !(errno == ENOENT && access("/proc/net/dev", F_OK) == 0);
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line, table) == 0)
			found = true;
	}
	fclose(fp);
	return found;
}

static bool fw_table_listed(const struct fw_family *f)
{
	return fw_table_listed_name(f, FW_TABLE);
}

/* iptables serialises on flock(/run/xtables.lock); libiptc does not, so take it here. Wait a
 * bounded time, polling with a growing interval (as iptables -w does). Returns the locked
 * descriptor, -1 with err, or -2 (without create) when there is no lock file: nobody holds it. */
static int fw_lock(bool create, char *err, size_t errlen)
{
	struct timespec pause;
	uint64_t t0;
	long delay_ms = 1;
	int fd;

	fd = open(FW_LOCK_PATH, O_RDONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
	/* A look (status, check) leaves the host as it was: no lock file, nobody to wait for. */
	if (fd < 0 && !create && errno == ENOENT)
		return -2;
	if (fd < 0) {
		fw_msg(err, errlen, "cannot open the xtables lock %s: %s", FW_LOCK_PATH,
		       strerror(errno));
		return -1;
	}
	t0 = clock_now_ms();
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		if (errno != EWOULDBLOCK && errno != EINTR) {
			fw_msg(err, errlen, "cannot lock %s: %s", FW_LOCK_PATH, strerror(errno));
			break;
		}
		if (clock_since_ms(t0) >= (uint64_t)fw_lock_wait_ms) {
			fw_msg(err, errlen, "another program (iptables?) held the xtables lock %s for "
			       "%ld ms; gave up", FW_LOCK_PATH, fw_lock_wait_ms);
			break;
		}
		pause.tv_sec = 0;
		pause.tv_nsec = delay_ms * 1000000L;
		nanosleep(&pause, NULL);
		if (delay_ms < 100)
			delay_ms *= 2;
	}
	close(fd);
	return -1;
}

/* Delete every rule identical to entry (under mask) from the copy; *n counts them. With one,
 * stop after the first. */
static int fw_del_copies(const struct fw_family *f, struct xtc_handle *h, const void *entry,
                         unsigned char *mask, bool one, int *n, char *err, size_t errlen)
{
	/* Deleting from the copy is the only way libiptc compares rules its own way (names by
	 * strcmp, payloads under the mask, a fall-through target as such). */
	while (f->del(entry, mask, h)) {
		(*n)++;
		if (one)
			return 0;
	}
	/* ENOENT: no (further) identical rule. */
	if (errno != ENOENT) {
		fw_msg(err, errlen, "cannot delete from %s nat %s: %s", f->name, FW_CHAIN,
		       f->strerror(errno));
		return -1;
	}
	return 0;
}

/* Judge every rule (fw_judge) and record it in t->stale; with del, delete the stale ones (dead
 * owners, no owner). The live ones are what the last pass saw: a deletion invalidates the
 * iteration, which starts over. */
static int fw_sweep(const struct fw_family *f, struct xtc_handle *h, struct fw_txn *t, bool del,
                    char *err, size_t errlen)
{
	const void *e;
	unsigned i;
	pid_t pid;

restart:
	t->stale.redirect_live = 0;
	memset(&t->stale.live, 0, sizeof(t->stale.live));
	for (i = 0, e = f->first(h); e != NULL; e = f->next(e, h), i++) {
		enum fw_verdict v = fw_judge(f, e, t, &pid);

		switch (v) {
		case FW_OTHER:
			continue;
		case FW_LIVE_REDIRECT:
			t->stale.redirect_live++;
			fw_pids_add(&t->stale.live, pid);
			continue;
		case FW_DEAD_REDIRECT:
			t->stale.redirect_dead++;
			break;
		case FW_NOPID_REDIRECT:
			t->stale.redirect_nopid++;
			break;
		case FW_DEAD_HOLD:
			t->stale.hold_dead++;
			break;
		}
		fw_pids_add(&t->stale.dead, pid);
		if (!del)
			continue;
		if (!f->del_num(i, h)) {
			fw_msg(err, errlen, "cannot delete rule %u of %s nat %s: %s", i + 1, f->name,
			       FW_CHAIN, f->strerror(errno));
			return -1;
		}
		goto restart;
	}
	return 0;
}

/* Add entry unless an identical one is there; *added tells whether it was. */
static int fw_add_unless_there(const struct fw_family *f, struct xtc_handle *h, const void *entry,
                               unsigned char *mask, bool at_head, bool *added, char *err,
                               size_t errlen)
{
	*added = false;
	if (f->check(entry, mask, h))
		return 0;
	if (errno != ENOENT) {
		fw_msg(err, errlen, "cannot search %s nat %s: %s", f->name, FW_CHAIN,
		       f->strerror(errno));
		return -1;
	}
	if (!(at_head ? f->insert(entry, h) : f->append(entry, h))) {
		fw_msg(err, errlen, "cannot add the %s rule to %s nat %s: %s",
		       at_head ? "redirect" : "conntrack hold", f->name, FW_CHAIN, f->strerror(errno));
		return -1;
	}
	*added = true;
	return 0;
}

/* The change itself, on a fresh copy of the table. Sets *changed when there is something to
 * commit. Redone from scratch on every attempt, so it sets t->result every time. */
static int fw_apply(const struct fw_family *f, struct xtc_handle *h, struct fw_txn *t,
                    bool *changed, char *err, size_t errlen)
{
	int n = 0;

	t->result = 0;
	switch (t->op) {
	case FW_OP_INSTALL:
		/* Both rules in one commit: the redirect never runs without its hold. */
		if (fw_add_unless_there(f, h, t->entry, t->mask, true, &t->new_redirect, err,
		                        errlen) < 0 ||
		    fw_add_unless_there(f, h, t->hold, t->hold_mask, false, &t->new_hold, err,
		                        errlen) < 0)
			return -1;
		t->result = t->new_redirect;
		*changed = t->new_redirect || t->new_hold;
		return 0;
	case FW_OP_UNDO:
		if ((t->new_redirect &&
		     fw_del_copies(f, h, t->entry, t->mask, true, &n, err, errlen) < 0) ||
		    (t->new_hold &&
		     fw_del_copies(f, h, t->hold, t->hold_mask, true, &n, err, errlen) < 0))
			return -1;
		break;
	case FW_OP_DELETE_ALL:
	case FW_OP_COUNT:
		if (fw_del_copies(f, h, t->entry, t->mask, false, &n, err, errlen) < 0)
			return -1;
		break;
	case FW_OP_RELEASE:
		if (fw_del_copies(f, h, t->hold, t->hold_mask, false, &n, err, errlen) < 0)
			return -1;
		break;
	case FW_OP_CLEAR_STALE:
	case FW_OP_COUNT_FAMILY:
		/* By comment: stale rules may come from an older specification (or an older
		 * version of this program, without --syn, without addrtype, without the pid).
		 * Without a comment of its own, the spec knows its older rule only as identical
		 * to what it was then. */
		memset(&t->stale, 0, sizeof(t->stale));
		if (!t->rs->has_comment && rulespec_applies(t->rs, f->af)) {
			if (fw_del_copies(f, h, t->old_entry, t->old_mask, false,
			                  &t->stale.redirect_nopid, err, errlen) < 0)
				return -1;
		}
		if (fw_sweep(f, h, t, t->op == FW_OP_CLEAR_STALE, err, errlen) < 0)
			return -1;
		if (t->op == FW_OP_COUNT_FAMILY) {
			t->result = t->stale.redirect_dead + t->stale.redirect_nopid +
			            t->stale.redirect_live;
			return 0;
		}
		n = fw_stale_removed(&t->stale);
		break;
	}
	t->result = n;
	*changed = t->op != FW_OP_COUNT && t->op != FW_OP_COUNT_FAMILY && n > 0;
	return 0;
}

/* One locked transaction with retries. *absent tells that the table does not exist (and, for
 * every operation but install, that it was not created just to find that out). */
static int fw_run(const struct fw_family *f, struct fw_txn *t, bool *absent, char *err,
                  size_t errlen)
{
	int lockfd, tries, e, ret = -1;
	bool changed;

	*absent = false;
	t->result = 0;
	fw_build(f, t);
	fw_build_hold(f, t);
	if (t->op != FW_OP_INSTALL && !fw_table_listed(f)) {
		*absent = true;
		return 0;
	}
	lockfd = fw_lock(t->op != FW_OP_COUNT && t->op != FW_OP_COUNT_FAMILY, err, errlen);
	if (lockfd == -1)
		return -1;
	for (tries = 1;; tries++) {
		struct xtc_handle *h = f->init(FW_TABLE);
		const char *why;

		if (h == NULL) {
			e = errno;
			*absent = fw_errno_absent(e);
			fw_msg(err, errlen, "cannot read the %s %s table: %s", f->name, FW_TABLE,
			       f->strerror(e));
			break;
		}
		changed = false;
		if (fw_apply(f, h, t, &changed, err, errlen) < 0) {
			f->free(h);
			break;
		}
		if (!changed || f->commit(h)) {
			f->free(h);
			ret = 0;
			break;
		}
		e = errno;
		why = f->strerror(e);
		f->free(h);
		/* EAGAIN: someone replaced the table between our init and commit. */
		if (e != EAGAIN || tries >= FW_COMMIT_TRIES) {
			fw_msg(err, errlen, "cannot commit the %s %s table%s: %s", f->name, FW_TABLE,
			       e == EAGAIN ? " (it kept changing under us)" : "", why);
			break;
		}
	}
	if (lockfd >= 0)
		close(lockfd);
	return ret;
}

static void fw_txn_init(struct fw_txn *t, enum fw_op op, const struct rulespec *rs)
{
	t->op = op;
	t->rs = rs;
	t->pid = getpid();
	memset(&t->stale, 0, sizeof(t->stale));
	t->result = 0;
	t->new_redirect = false;
	t->new_hold = false;
}

/* Roll back what install transaction t4 added to the IPv4 table; the story goes to err.
 * Returns -1 when what it added is still there. */
static int fw_undo_v4(struct fw_txn *t4, char *err, size_t errlen)
{
	char why[512] = "";
	bool absent;

	if (!t4->new_redirect && !t4->new_hold) {
		fw_msg(err, errlen, "the IPv4 rule was there before and stays");
		return 0;
	}
	t4->op = FW_OP_UNDO;
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: a rollback that fails, leaving the IPv4 rules for the caller. */
	if (getenv("ACME_ALPN_PROXY_TEST_HOOK") != NULL &&
	    strcmp(getenv("ACME_ALPN_PROXY_TEST_HOOK"), "fail-v6-undo") == 0) {
		fw_msg(err, errlen, "removing the IPv4 rule again failed too: test hook fail-v6-undo");
		return -1;
	}
#endif
	if (fw_run(&fw_v4, t4, &absent, why, sizeof(why)) < 0) {
		fw_msg(err, errlen, "removing the IPv4 rule%s again failed too: %s",
		       t4->new_redirect ? "" : "'s conntrack hold", why);
		return -1;
	}
	if (t4->new_redirect)
		fw_msg(err, errlen, "the IPv4 rule was removed again");
	else
		fw_msg(err, errlen, "the IPv4 rule was there before and stays; its conntrack hold "
		       "was removed again");
	return 0;
}

/* ---- -transparent's mark rules (fw_set_mark): mangle OUTPUT -------------------------------- */

/* Two rules at the head of mangle OUTPUT, where a changed mark makes the kernel route a locally
 * generated packet again (ip_route_me_harder), for each family:
 *   -m connmark --mark M -m comment --comment "acme-alpn-proxy mark pid N" -j MARK --set-mark M
 *   -m mark --mark M -m comment --comment "acme-alpn-proxy mark pid N" -j CONNMARK --set-mark M
 * the first gives the web server's replies the mark of their connection, the second gives a
 * connection the mark of the proxy's socket (SO_MARK). In that order: the first must not see
 * the proxy's own SYN with the connection's mark still 0. They live as long as the hold rule
 * (fw_install to fw_release), and a dead instance's are cleared by its pid like its rules. */
#define FW_MARK_TABLE "mangle"
#define FW_MARK_CHAIN "OUTPUT"
static const xt_chainlabel fw_mark_chain = FW_MARK_CHAIN;

/* The pid a mangle OUTPUT rule's comment names after FW_MARK_TAG, or 0. */
static pid_t fw_mark_pid(const struct fw_family *f, const void *e)
{
	char text[RULESPEC_COMMENT_MAX + 1];
	size_t off = 0;

	return fw_rule_next_comment(f->af, e, &off, text) ? fw_rule_text_pid(text, FW_MARK_TAG) : 0;
}

enum fw_mark_op { FW_MARK_INSTALL, FW_MARK_RELEASE, FW_MARK_STALE };

/* One transaction on f's mangle OUTPUT: delete this process's mark rules (install, release) or
 * those of dead pids (stale), and with install insert ours at the head. A family without a
 * mangle table has nothing to release or clear. Returns 0 or -1. */
static int fw_mark_run(const struct fw_family *f, enum fw_mark_op op, char *err, size_t errlen)
{
	_Alignas(max_align_t) unsigned char rest[FW_MARK_ENTRY_MAX], save[FW_MARK_ENTRY_MAX];
	bool v4 = f->af == AF_INET;
	int lockfd, tries, e, ret = -1;

	fw_rule_mark(f->af, fw_mark, getpid(), true, rest);
	fw_rule_mark(f->af, fw_mark, getpid(), false, save);
	/* Not loaded: no rule to delete, and iptc_init would load the table. */
	if (op != FW_MARK_INSTALL && !fw_table_listed_name(f, FW_MARK_TABLE))
		return 0;
	lockfd = fw_lock(true, err, errlen);
	if (lockfd < 0)
		return -1;
	for (tries = 1;; tries++) {
		struct xtc_handle *h = f->init(FW_MARK_TABLE);
		const void *r;
		bool changed = false;
		unsigned i;

		if (h == NULL) {
			e = errno;
			if (op != FW_MARK_INSTALL && fw_errno_absent(e)) {
				ret = 0;
				break;
			}
			fw_msg(err, errlen, "cannot read the %s %s table (-transparent's mark rules): "
			       "%s", f->name, FW_MARK_TABLE, f->strerror(e));
			break;
		}
restart:
		for (i = 0, r = v4 ? (const void *)iptc_first_rule(fw_mark_chain, h)
		                   : (const void *)ip6tc_first_rule(fw_mark_chain, h);
		     r != NULL; i++, r = v4 ? (const void *)iptc_next_rule(r, h)
		                            : (const void *)ip6tc_next_rule(r, h)) {
			pid_t pid = fw_mark_pid(f, r);

			if (pid == 0 || (op == FW_MARK_STALE ? pid == getpid() || !fw_pid_gone(pid)
			                                     : pid != getpid()))
				continue;
			if (!(v4 ? iptc_delete_num_entry(fw_mark_chain, i, h)
			         : ip6tc_delete_num_entry(fw_mark_chain, i, h))) {
				fw_msg(err, errlen, "cannot delete rule %u of %s %s %s: %s", i + 1,
				       f->name, FW_MARK_TABLE, FW_MARK_CHAIN, f->strerror(errno));
				f->free(h);
				goto out;
			}
			changed = true;
			goto restart;
		}
		if (op == FW_MARK_INSTALL) {
			/* save at the head, then rest before it: rest runs first. */
			if (!(v4 ? iptc_insert_entry(fw_mark_chain, (const void *)save, 0, h)
			         : ip6tc_insert_entry(fw_mark_chain, (const void *)save, 0, h)) ||
			    !(v4 ? iptc_insert_entry(fw_mark_chain, (const void *)rest, 0, h)
			         : ip6tc_insert_entry(fw_mark_chain, (const void *)rest, 0, h))) {
				fw_msg(err, errlen, "cannot add -transparent's mark rules to %s %s %s: %s",
				       f->name, FW_MARK_TABLE, FW_MARK_CHAIN, f->strerror(errno));
				f->free(h);
				break;
			}
			changed = true;
		}
		if (!changed || f->commit(h)) {
			f->free(h);
			ret = 0;
			break;
		}
		e = errno;
		f->free(h);
		if (e != EAGAIN || tries >= FW_COMMIT_TRIES) {
			fw_msg(err, errlen, "cannot commit the %s %s table: %s", f->name,
			       FW_MARK_TABLE, f->strerror(e));
			break;
		}
	}
out:
	close(lockfd);
	return ret;
}

/* Every family in families; failures are collected, the other families still run. */
static int fw_mark_each(int families, enum fw_mark_op op, char *err, size_t errlen)
{
	char why[512];
	int ret = 0;

	if ((families & FW_V4) != 0) {
		why[0] = '\0';
		if (fw_mark_run(&fw_v4, op, why, sizeof(why)) < 0) {
			fw_msg(err, errlen, "%s", why);
			ret = -1;
		}
	}
	if ((families & FW_V6) != 0) {
		why[0] = '\0';
		if (fw_mark_run(&fw_v6, op, why, sizeof(why)) < 0) {
			fw_msg(err, errlen, "%s", why);
			ret = -1;
		}
	}
	return ret;
}

static int fw_install_nat(const struct rulespec *rs, int *families, char *err, size_t errlen,
                          char *warn, size_t warnlen);

int fw_install(const struct rulespec *rs, int *families, char *err, size_t errlen, char *warn,
               size_t warnlen)
{
	if (fw_install_nat(rs, families, err, errlen, warn, warnlen) < 0)
		return -1;
	/* On failure the redirect is in (*families): the caller removes it and releases, which
	 * deletes whatever mark rule went in. */
	if (fw_mark != 0 && fw_mark_each(*families, FW_MARK_INSTALL, err, errlen) < 0)
		return -1;
	return 0;
}

static int fw_install_nat(const struct rulespec *rs, int *families, char *err, size_t errlen,
                          char *warn, size_t warnlen)
{
	struct fw_txn t4, t6;
	char why[512] = "";
	bool want4, want6, absent;

	if (errlen > 0)
		err[0] = '\0';
	if (warn != NULL && warnlen > 0)
		warn[0] = '\0';
	want4 = (*families & FW_V4) != 0 && rulespec_applies(rs, AF_INET);
	want6 = (*families & FW_V6) != 0 && rulespec_applies(rs, AF_INET6);
	if (!want4 && !want6) {
		fw_msg_no_family(rs, *families, err, errlen);
		*families = 0;
		return -1;
	}
	fw_txn_init(&t4, FW_OP_INSTALL, rs);
	if (want4 && fw_run(&fw_v4, &t4, &absent, why, sizeof(why)) < 0) {
		if (absent)
			fw_msg(err, errlen, "the legacy iptables nat table (x_tables) is not "
			       "available on this kernel (%s): check that the modules ip_tables "
			       "and iptable_nat can be loaded (modprobe iptable_nat), or whether "
			       "the kernel was built without legacy xtables (CONFIG_IP_NF_IPTABLES,"
			       " CONFIG_IP_NF_NAT)", why);
		else
			fw_msg(err, errlen, "%s", why);
		*families = 0; /* one commit: nothing of it is in */
		return -1;
	}
	if (!want6)
		return 0;
	why[0] = '\0';
	/* One commit per family: a failure here left nothing of IPv6 behind. */
	fw_txn_init(&t6, FW_OP_INSTALL, rs);
	if (fw_run(&fw_v6, &t6, &absent, why, sizeof(why)) == 0)
		return 0;
	if (absent && want4) {
		*families &= ~FW_V6;
		fw_msg(warn, warnlen, "IPv6 connections are not redirected: the IPv6 legacy nat table "
		       "is not available (%s); load ip6table_nat, or set "
		       "ACME_ALPN_PROXY_DISABLEV6=y to silence this", why);
		return 0;
	}
	fw_msg(err, errlen, "%s", why);
	*families = 0;
	if (want4 && fw_undo_v4(&t4, err, errlen) < 0)
		*families = FW_V4;
	return -1;
}

/* Run op on every family given, for pid's rules (0: this process); failures are collected,
 * the other families still run. *total sums the results, *sum (if not NULL) the stale. */
static int fw_each(const struct rulespec *rs, int families, enum fw_op op, bool by_family,
                   pid_t pid, int *total, struct fw_stale *sum, char *err, size_t errlen)
{
	static const struct fw_family *const fams[] = { &fw_v4, &fw_v6 };
	struct fw_txn t;
	char why[512];
	size_t i;
	bool absent;
	int ret = 0;

	if (errlen > 0)
		err[0] = '\0';
	*total = 0;
	if (sum != NULL)
		memset(sum, 0, sizeof(*sum));
	for (i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		const struct fw_family *f = fams[i];

		if ((families & f->bit) == 0 || (by_family && !rulespec_applies(rs, f->af)))
			continue;
		why[0] = '\0';
		fw_txn_init(&t, op, rs);
		if (pid > 0)
			t.pid = pid;
		if (fw_run(f, &t, &absent, why, sizeof(why)) < 0 && !absent) {
			fw_msg(err, errlen, "%s", why);
			ret = -1;
		}
		*total += t.result;
		if (sum != NULL) {
			sum->redirect_dead += t.stale.redirect_dead;
			sum->redirect_nopid += t.stale.redirect_nopid;
			sum->hold_dead += t.stale.hold_dead;
			sum->redirect_live += t.stale.redirect_live;
			fw_pids_merge(&sum->dead, &t.stale.dead);
			fw_pids_merge(&sum->live, &t.stale.live);
		}
	}
	return ret;
}

int fw_remove(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	int n;

	return fw_each(rs, families, FW_OP_DELETE_ALL, true, 0, &n, NULL, err, errlen);
}

int fw_release(const struct rulespec *rs, int families, char *err, size_t errlen)
{
	int n;

	/* Every family given, not only those rs applies to: a hold is never in the way. */
	int ret = fw_each(rs, families, FW_OP_RELEASE, false, 0, &n, NULL, err, errlen);

	if (fw_mark != 0 && fw_mark_each(families, FW_MARK_RELEASE, err, errlen) < 0)
		ret = -1;
	return ret;
}

int fw_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                   size_t errlen)
{
	int n;

	int ret = fw_each(rs, families, FW_OP_CLEAR_STALE, false, 0, &n, st, err, errlen);

	/* A dead -transparent instance's mark rules: harmless without its routing, but litter. */
	if (ret == 0 && fw_mark_each(families, FW_MARK_STALE, err, errlen) < 0)
		ret = -1;
	return ret;
}

int fw_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen)
{
	int n;

	if (fw_each(rs, families, pid > 0 ? FW_OP_COUNT : FW_OP_COUNT_FAMILY, true, pid, &n, NULL,
	            err, errlen) < 0)
		return -1;
	return n;
}

int fw_stale_removed(const struct fw_stale *st)
{
	return st->redirect_dead + st->redirect_nopid + st->hold_dead;
}

/* "pid 12" or "pids 12, 34 and others" into buf. */
static void fw_pids_text(const struct fw_pids *p, char *buf, size_t len)
{
	size_t used;
	int i;

	snprintf(buf, len, "pid%s", p->n > 1 || p->more ? "s" : "");
	for (i = 0; i < p->n; i++) {
		used = strnlen(buf, len);
		snprintf(buf + used, len - used, "%s %ld", i > 0 ? "," : "", (long)p->pid[i]);
	}
	if (p->more) {
		used = strnlen(buf, len);
		snprintf(buf + used, len - used, " and others");
	}
}

static const char *fw_s(int n)
{
	return n == 1 ? "" : "s";
}

void fw_stale_describe(const struct fw_stale *st, char *buf, size_t len)
{
	int removed = fw_stale_removed(st), dead = st->redirect_dead + st->hold_dead;
	char pids[128];
	size_t used;

	if (buf == NULL || len == 0)
		return;
	if (removed == 0) {
		snprintf(buf, len, "removed no firewall rules");
	} else {
		snprintf(buf, len, "removed %d firewall rule%s left behind by a dead instance (",
		         removed, fw_s(removed));
		if (dead > 0) {
			fw_pids_text(&st->dead, pids, sizeof(pids));
			used = strnlen(buf, len);
			snprintf(buf + used, len - used, "%s, no longer running: %d redirect, %d "
			         "conntrack hold", pids, st->redirect_dead, st->hold_dead);
		}
		if (st->redirect_nopid > 0) {
			used = strnlen(buf, len);
			snprintf(buf + used, len - used, "%s%d redirect rule%s naming no pid, from an "
			         "older version", dead > 0 ? "; " : "", st->redirect_nopid,
			         fw_s(st->redirect_nopid));
		}
		used = strnlen(buf, len);
		snprintf(buf + used, len - used, ")");
	}
	if (st->redirect_live > 0) {
		fw_pids_text(&st->live, pids, sizeof(pids));
		used = strnlen(buf, len);
		snprintf(buf + used, len - used, "; kept %d redirect rule%s of the running %s (another "
		         "instance, with another pidfile: stop it with its own)", st->redirect_live,
		         fw_s(st->redirect_live), pids);
	}
}

void fw_set_lock_wait(unsigned ms)
{
	fw_lock_wait_ms = ms;
}

/* fw_find_others, the legacy tables: rules of PREROUTING whose target is REDIRECT or DNAT, whose
 * protocol is TCP or any, whose tcp match (if any) takes dport, and that are no instance's. */
static void fw_family_others(const struct fw_family *f, const struct rulespec *rs,
                             struct fw_others *out, char *err, size_t errlen)
{
	struct fw_txn t;
	struct xtc_handle *h;
	const void *e;
	unsigned i;

	if (!fw_table_listed(f))
		return;
	h = f->init(FW_TABLE);
	if (h == NULL) {
		if (!fw_errno_absent(errno))
			fw_msg(err, errlen, "cannot read the %s %s table: %s", f->name, FW_TABLE,
			       f->strerror(errno));
		return;
	}
	fw_txn_init(&t, FW_OP_COUNT_FAMILY, rs);
	fw_build(f, &t);
	fw_build_hold(f, &t);
	for (i = 0, e = f->first(h); e != NULL; e = f->next(e, h), i++) {
		const struct xt_entry_target *tg =
			(const void *)((const unsigned char *)e + f->target_offset(e));
		const struct xt_entry_match *m;
		size_t off = 0;
		uint16_t proto = f->af == AF_INET ? ((const struct ipt_entry *)e)->ip.proto
		                                  : ((const struct ip6t_entry *)e)->ipv6.proto;
		bool takes = proto == 0 || proto == IPPROTO_TCP;
		pid_t pid;

		if (fw_judge(f, e, &t, &pid) != FW_OTHER || !takes)
			continue;
		if (strcmp(tg->u.user.name, "REDIRECT") != 0 && strcmp(tg->u.user.name, "DNAT") != 0)
			continue;
		while ((m = fw_rule_next_match(f->af, e, &off, "tcp", sizeof(struct xt_tcp))) != NULL) {
			const struct xt_tcp *tcp = (const void *)m->data;
			bool in = rs->dport >= tcp->dpts[0] && rs->dport <= tcp->dpts[1];

			if (in == ((tcp->invflags & XT_TCP_INV_DSTPT) != 0))
				takes = false;
		}
		if (takes)
			fw_others_add(out, -100, "%s nat %s rule %u (%s)", f->name, FW_CHAIN, i + 1,
			              tg->u.user.name);
	}
	f->free(h);
}

int fw_iptc_others(const struct rulespec *rs, int families, struct fw_others *out, char *err,
                   size_t errlen)
{
	if (errlen > 0)
		err[0] = '\0';
	if (families & FW_V4)
		fw_family_others(&fw_v4, rs, out, err, errlen);
	if (families & FW_V6)
		fw_family_others(&fw_v6, rs, out, err, errlen);
	return errlen > 0 && err[0] != '\0' ? -1 : 0;
}
