/* The REDIRECT rules in nat PREROUTING: through libiptc (firewall_iptc.c, the default) or in
 * an nftables table owned by this process (firewall_nft.c, -firewall nftables). No iptables or
 * nft binary is run. The comments below say what the libiptc backend does; firewall_nft.c says
 * how the nftables backend gives every call the same meaning. */
#ifndef FIREWALL_H
#define FIREWALL_H

#include <stddef.h>
#include "rulespec.h"

#define FW_V4 1
#define FW_V6 2

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
 * matches only SYN packets (--syn): a connection that was open before the redirect, and that
 * connection tracking first sees mid-stream, is never taken over. In the same commit, a
 * conntrack "hold" rule of this process (appended, no target, comment naming the pid) keeps
 * connection tracking on in the namespace until fw_release: where nothing else uses conntrack,
 * deleting the REDIRECT rule would otherwise switch tracking off, and every redirected
 * connection still open (grace period, drain) would lose its translation and be reset. The
 * hold reads `-m conntrack --ctstate INVALID -m comment --comment "<C> conntrack hold pid N"`,
 * C being rs->comment (or "acme-alpn-proxy"; cut to 225 bytes), N getpid().
 * All or nothing: if one family fails, the rules this call added to the others are rolled
 * back (each family is one commit). A family whose nat table does not exist at all (IPv6 nat
 * not available) is dropped from *families with a warning written to warn (when not NULL) and
 * is not an error; IPv4 missing is an error. Returns 0 or -1 with a message in err; on -1,
 * *families holds the families whose rules are still in (a rollback that failed too), for the
 * caller to remove with fw_remove and fw_release. */
int fw_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
               char *warn, size_t warnlen);

/* Delete every copy of rs in the families given; "not there" is success. Returns 0 or -1.
 * The hold rule stays. */
int fw_remove(const struct rulespec *rs, int families, char *err, size_t errlen);

/* Delete this process's hold rules (after the drain, when no redirected connection is left).
 * "Not there" is success. Returns 0 or -1. */
int fw_release(const struct rulespec *rs, int families, char *err, size_t errlen);

/* Delete rules a dead instance left behind: every REDIRECT rule in nat PREROUTING that carries
 * rs->comment (or, when rs has no comment, that equals rs), and every hold rule (of rs's C, see
 * fw_install) whose process no longer exists (kill(pid, 0) fails with ESRCH); holds of live
 * processes stay. *cleared receives how many were deleted. Returns 0 or -1. */
int fw_clear_stale(const struct rulespec *rs, int families, int *cleared, char *err,
                   size_t errlen);

/* How many copies of rs are present in the given families, or -1 with err. */
int fw_count(const struct rulespec *rs, int families, char *err, size_t errlen);

/* How many hold rules of other live processes (other instances, running or draining) are in
 * the given families, or -1 with err. */
int fw_other_holds(const struct rulespec *rs, int families, char *err, size_t errlen);

/* Take the xtables lock and keep it across the calls that follow, until fw_drop_lock: nobody
 * else (iptables, another instance) changes the rules in between. Returns 0 or -1 with err. */
int fw_hold_lock(char *err, size_t errlen);
void fw_drop_lock(void);

/* How long every later call waits for the xtables lock before it fails. */
#define FW_LOCK_WAIT_DEFAULT_MS 10000
void fw_set_lock_wait(unsigned ms);

#endif
