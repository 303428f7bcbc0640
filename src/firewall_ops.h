/* The two implementations of firewall.h behind one set of function pointers (firewall.c picks
 * one at run time, fw_select). Private to src/firewall*.c. */
#ifndef FIREWALL_OPS_H
#define FIREWALL_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
struct fw_stale; /* firewall.h */
struct fw_others; /* firewall.h */
#include "rulespec.h"

struct fw_ops {
	const char *name; /* as -firewall takes it */
	int (*install)(const struct rulespec *rs, int *families, char *err, size_t errlen,
	               char *warn, size_t warnlen);
	int (*remove)(const struct rulespec *rs, int families, char *err, size_t errlen);
	int (*release)(const struct rulespec *rs, int families, char *err, size_t errlen);
	int (*clear_stale)(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
	                   size_t errlen);
	int (*count)(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen);
	void (*set_lock_wait)(unsigned ms);
};

extern const struct fw_ops fw_ops_iptc, fw_ops_nft;

/* fw_set_mark's value, for the backends. */
extern uint32_t fw_mark;

/* Append to the message in buf (len bytes), "; " between parts. */
void fw_msg(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Why install has nothing to do for rs in families (FW_V4|FW_V6): appended to err. */
void fw_msg_no_family(const struct rulespec *rs, int families, char *err, size_t errlen);

/* firewall_iptc.c defines firewall.h's functions under these names: it includes this header
 * with FW_IPTC_IMPL defined, before firewall.h, so that its own text keeps the public names. */
#ifdef FW_IPTC_IMPL
#define fw_install fw_iptc_install
#define fw_remove fw_iptc_remove
#define fw_release fw_iptc_release
#define fw_clear_stale fw_iptc_clear_stale
#define fw_count fw_iptc_count
#define fw_set_lock_wait fw_iptc_set_lock_wait
#endif

int fw_iptc_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
                    char *warn, size_t warnlen);
int fw_iptc_remove(const struct rulespec *rs, int families, char *err, size_t errlen);
int fw_iptc_release(const struct rulespec *rs, int families, char *err, size_t errlen);
int fw_iptc_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                        size_t errlen);
int fw_iptc_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen);
void fw_iptc_set_lock_wait(unsigned ms);

int fw_nft_install(const struct rulespec *rs, int *families, char *err, size_t errlen,
                   char *warn, size_t warnlen);
int fw_nft_remove(const struct rulespec *rs, int families, char *err, size_t errlen);
int fw_nft_release(const struct rulespec *rs, int families, char *err, size_t errlen);
int fw_nft_clear_stale(const struct rulespec *rs, int families, struct fw_stale *st, char *err,
                       size_t errlen);
int fw_nft_count(const struct rulespec *rs, int families, pid_t pid, char *err, size_t errlen);
int fw_nft_check(const struct rulespec *rs, char *err, size_t errlen);

/* fw_find_others, one implementation per table kind. */
int fw_iptc_others(const struct rulespec *rs, int families, struct fw_others *out, char *err,
                   size_t errlen);
int fw_nft_others(uint16_t dport, struct fw_others *out, char *err, size_t errlen);
void fw_others_add(struct fw_others *out, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
