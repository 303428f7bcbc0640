/* The REDIRECT rules in nat PREROUTING, through libiptc (no iptables binary is run). */
#ifndef FIREWALL_H
#define FIREWALL_H

#include <stddef.h>
#include "rulespec.h"

#define FW_V4 1
#define FW_V6 2

/* Install rs for every family in *families (FW_V4|FW_V6), at the head of nat PREROUTING,
 * unless an identical rule is already there (never a duplicate). All or nothing: if one family
 * fails, the others installed by this call are rolled back. A family whose nat table does not
 * exist at all (IPv6 nat not available) is dropped from *families with a warning written to
 * warn (when not NULL) and is not an error; IPv4 missing is an error. Returns 0 or -1 with a
 * message in err. */
int fw_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
               char *warn, size_t warnlen);

/* Delete every copy of rs in the families given; "not there" is success. Returns 0 or -1. */
int fw_remove(const struct rulespec *rs, int families, char *err, size_t errlen);

/* Delete rules a dead instance left behind: every rule in nat PREROUTING that carries
 * rs->comment (or, when rs has no comment, that equals rs). *cleared receives how many were
 * deleted. Returns 0 or -1. */
int fw_clear_stale(const struct rulespec *rs, int families, int *cleared, char *err,
                   size_t errlen);

/* How many copies of rs are present in the given families, or -1 with err. */
int fw_count(const struct rulespec *rs, int families, char *err, size_t errlen);

#endif
