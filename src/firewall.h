/* The REDIRECT rules in nat PREROUTING: through libiptc (firewall_iptc.c, the default) or in
 * an nftables table owned by this process (firewall_nft.c, -firewall nftables). No iptables or
 * nft binary is run. The comments below say what the libiptc backend does; firewall_nft.c says
 * how the nftables backend gives every call the same meaning. */
#ifndef FIREWALL_H
#define FIREWALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "rulespec.h"

#define FW_V4 1
#define FW_V6 2

/* The name (PR_SET_NAME, /proc/PID/comm) every instance gives itself at start, so that a rule's
 * pid taken over by an unrelated process after a crash is not mistaken for a live owner. */
#define FW_OWNER_NAME "acme-alpn-proxy"

enum fw_backend { FW_BACKEND_IPTABLES, FW_BACKEND_NFTABLES };

/* Choose the implementation of every call below: once, before the first (main does it). Without
 * a call, libiptc. */
void fw_select(enum fw_backend b);
/* "iptables" or "nftables", as -firewall takes it. */
const char *fw_backend_name(void);

/* Whether backend b can install rs as the rule it says (every rule spec the parser accepts has
 * a libiptc form; nftables refuses a few, see firewall_nft.c). Returns 0, or -1 with a message
 * in err naming what cannot be translated. Pure: no system call. */
int fw_check(enum fw_backend b, const struct rulespec *rs, char *err, size_t errlen);

/* Install rs for every family in *families (FW_V4|FW_V6), at the head of nat PREROUTING,
 * unless an identical rule is already there (never a duplicate). The REDIRECT rule always
 * matches only SYN packets (--syn) addressed to this host (-m addrtype --dst-type LOCAL), and
 * its comment names the process that owns it: "<C> pid N" (C and N as for the hold below).
 * The matches the spec does not name are added as iptables would add them for
 * "<spec> --syn -m addrtype --dst-type LOCAL -m comment --comment '<C> pid N'" (the spec's
 * own comment, when it has one, carries the pid in its place). In the same commit goes a
 * conntrack "hold" rule of this process, appended, that keeps connection tracking on in the
 * namespace until fw_release (why: firewall_iptc.c); it reads `-m conntrack --ctstate INVALID
 * -m comment --comment "<C> conntrack hold pid N"`, C being rs->comment (or
 * "acme-alpn-proxy"; cut to 225 bytes), N getpid().
 * All or nothing: if one family fails, the rules this call added to the others are rolled
 * back (each family is one commit). A family whose nat table does not exist at all (IPv6 nat
 * not available) is dropped from *families with a warning written to warn (when not NULL) and
 * is not an error; IPv4 missing is an error. Returns 0 or -1 with a message in err; on -1,
 * *families holds the families whose rules are still in (a rollback that failed too), for the
 * caller to remove with fw_remove and fw_release. */
int fw_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
               char *warn, size_t warnlen);

/* Delete every copy of this process's rule for rs in the families given; "not there" is
 * success. Returns 0 or -1. The hold rule stays. */
int fw_remove(const struct rulespec *rs, int families, char *err, size_t errlen);

/* Delete this process's hold rules (after the drain, when no redirected connection is left).
 * "Not there" is success. Returns 0 or -1. */
int fw_release(const struct rulespec *rs, int families, char *err, size_t errlen);

#define FW_PIDS_MAX 4
/* Distinct pids: the first FW_PIDS_MAX of them, and whether there were more. */
struct fw_pids {
	int n;
	pid_t pid[FW_PIDS_MAX];
	bool more;
};

/* What fw_clear_stale did, summed over the families. */
struct fw_stale {
	int redirect_dead;  /* removed: REDIRECT rules "<C> pid N" of a process that is gone */
	int redirect_nopid; /* removed: REDIRECT rules with comment C alone (older versions; or, for
	                     * a spec without a comment, the rule they built, identical) */
	int hold_dead;      /* removed: hold rules of a process that is gone */
	int redirect_live;  /* kept: REDIRECT rules of a process that runs */
	struct fw_pids dead; /* the pids of the rules removed */
	struct fw_pids live; /* the pids of the rules kept */
};

/* Delete rules a dead instance left behind. A rule of rs's family (comment C, see fw_install)
 * is stale when no live process owns it: a REDIRECT rule "<C> pid N" or a hold rule whose
 * process no longer exists (kill(N, 0) fails with ESRCH; EPERM means alive) or is not an
 * instance any more (its /proc/N/comm, when readable, is not FW_OWNER_NAME), or a REDIRECT
 * rule with comment C alone (an older version, or the original tool, which named no pid;
 * for a spec without a comment: the rule an older version built, identical). The REDIRECT
 * rules of live processes (another instance, behind another pidfile) stay, and are counted
 * in *st. Returns 0 or -1. */
int fw_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                   size_t errlen);

/* One line for the administrator: what fw_clear_stale removed and why, what it kept and why
 * ("removed no firewall rules" when nothing was there). */
void fw_stale_describe(const struct fw_stale *st, char *buf, size_t len);

/* Total of the rules fw_clear_stale removed. */
int fw_stale_removed(const struct fw_stale *st);

/* How many REDIRECT rules for rs are present in the given families: with pid > 0, copies of
 * the one process pid installs; with pid 0, every REDIRECT rule of rs's family, whoever owns
 * it (those fw_clear_stale removes or keeps). -1 with err on failure. */
int fw_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen);

/* -transparent: every later fw_install also installs, with the same lifetime as the hold rule
 * (until fw_release), the two rules that carry mark from the proxy's fallback sockets (SO_MARK)
 * to the web server's replies: connmark set from mark on the way out, mark restored from
 * connmark for the replies, in the output path where a changed mark reroutes the packet
 * (route.h's fwmark rule). 0 (the default): none. Only the nftables backend has them so far;
 * fw_mark_supported says whether the selected one does. */
void fw_set_mark(uint32_t mark);
bool fw_mark_supported(void);

/* How long every later call waits for the xtables lock before it fails. */
#define FW_LOCK_WAIT_DEFAULT_MS 10000
void fw_set_lock_wait(unsigned ms);

/* Someone else's REDIRECT or DNAT for TCP port dport (or for every TCP port) on the nat
 * prerouting path, found by fw_find_others: which table and chain, at which hook priority
 * (the lower runs first). */
#define FW_OTHERS_MAX 8
struct fw_others {
	int n;
	bool more;
	struct {
		char where[160];
		int prio;
	} o[FW_OTHERS_MAX];
};

/* The hook priority of the chosen backend's redirect: -110 (nftables, ahead of dstnat) or
 * -100 (the legacy nat table); this backend's rule is the first of its chain. */
int fw_priority(void);

/* Read only: the REDIRECT and DNAT rules for dport that are not an instance's, in the legacy nat
 * PREROUTING chains of the families given (libiptc; a table that does not exist is not
 * created) and in every nftables chain of type nat on the prerouting hook (any family; the
 * tables of instances skipped). Returns 0 or -1 with err (what could be read is in *out). */
int fw_find_others(const struct rulespec *rs, int families, struct fw_others *out, char *err,
                   size_t errlen);

#endif
