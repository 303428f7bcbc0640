/* The x_tables rule entries of the libiptc backend (firewall_iptc.c), built byte for byte as
 * iptables builds them, and the walk over an entry's matches. Pure: no system call, no libiptc
 * call, only the kernel's x_tables layout; unit tested without root (tests/test_firewall_rule.c).
 * Private to src/firewall*.c. Every entry is for af, AF_INET (struct ipt_entry) or AF_INET6
 * (struct ip6t_entry). */
#ifndef FIREWALL_RULE_H
#define FIREWALL_RULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Before rulespec.h: <linux/netfilter_ipv6/ip6_tables.h> must come before <net/if.h>. */
#include <libiptc/libip6tc.h>
#include <libiptc/libiptc.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/xt_addrtype.h>
#include <linux/netfilter/xt_comment.h>
#include <linux/netfilter/xt_connmark.h>
#include <linux/netfilter/xt_conntrack.h>
#include <linux/netfilter/xt_mark.h>
#include <linux/netfilter/xt_tcpudp.h>

#include "rulespec.h"

/* The hold rule's comment: "<comment> conntrack hold pid <pid>", the comment being rs's own or
 * this default. The pid takes at most 10 digits; a comment too long to leave room for the rest
 * is cut (the same way every time, so that the text stays the same for one rule spec). */
#define FW_HOLD_DEFAULT "acme-alpn-proxy"
#define FW_HOLD_TAG " conntrack hold pid "
/* The REDIRECT rule's comment: "<comment> pid <pid>", the comment cut as for the hold (the
 * hold's tag is the longer one). */
#define FW_PID_TAG " pid "
#define FW_HOLD_PID_MAX 10
#define FW_HOLD_BASE_MAX (RULESPEC_COMMENT_MAX - 1 - (sizeof(FW_HOLD_TAG) - 1) - FW_HOLD_PID_MAX)
/* The TCP flags iptables' --syn stands for: of FIN,SYN,RST,ACK only SYN set. */
#define FW_TCP_FIN 0x01
#define FW_TCP_SYN 0x02
#define FW_TCP_RST 0x04
#define FW_TCP_ACK 0x10

/* Every match and target is its header plus its payload, each rounded up with XT_ALIGN; the
 * kernel rejects a rule whose sizes do not add up exactly. */
#define FW_MATCH_HDR XT_ALIGN(sizeof(struct xt_entry_match))
#define FW_TARGET_HDR XT_ALIGN(sizeof(struct xt_entry_target))
#define FW_TCP_SIZE (FW_MATCH_HDR + XT_ALIGN(sizeof(struct xt_tcp)))
#define FW_COMMENT_SIZE (FW_MATCH_HDR + XT_ALIGN(sizeof(struct xt_comment_info)))
/* -m addrtype --dst-type LOCAL: revision 1 (struct xt_addrtype_info_v1), the one iptables
 * 1.8 uses on any kernel since 2.6.39 and the only one ip6tables can use. */
#define FW_ADDRTYPE_REV 1
#define FW_ADDRTYPE_SIZE (FW_MATCH_HDR + XT_ALIGN(sizeof(struct xt_addrtype_info_v1)))
/* --ctstate: revision 3 of the conntrack match, the one iptables 1.8 uses on any recent
 * kernel (revisions 1 and 2 differ in size, so a rule iptables made would not compare equal). */
#define FW_CONNTRACK_REV 3
#define FW_CONNTRACK_SIZE (FW_MATCH_HDR + XT_ALIGN(sizeof(struct xt_conntrack_mtinfo3)))
/* No -j: iptables gives the rule the standard target with an empty name, which libiptc turns
 * into "fall through to the next rule". */
#define FW_FALLTHROUGH_SIZE (FW_TARGET_HDR + XT_ALIGN(sizeof(int)))
#define FW_REDIR4_SIZE (FW_TARGET_HDR + XT_ALIGN(sizeof(struct nf_nat_ipv4_multi_range_compat)))
#define FW_REDIR6_SIZE (FW_TARGET_HDR + XT_ALIGN(sizeof(struct nf_nat_range)))
#define FW_ENTRY_MAX (sizeof(struct ip6t_entry) + FW_TCP_SIZE + FW_COMMENT_SIZE + \
                      FW_ADDRTYPE_SIZE + FW_REDIR6_SIZE)
#define FW_HOLD_MAX \
	(sizeof(struct ip6t_entry) + FW_CONNTRACK_SIZE + FW_COMMENT_SIZE + FW_FALLTHROUGH_SIZE)

/* -transparent's mark rules (mangle OUTPUT): their comment is FW_MARK_TAG and the pid. */
#define FW_MARK_TAG "acme-alpn-proxy mark pid "
#define FW_MARKM_SIZE (FW_MATCH_HDR + XT_ALIGN(sizeof(struct xt_mark_mtinfo1)))
#define FW_MARKT_SIZE (FW_TARGET_HDR + XT_ALIGN(sizeof(struct xt_mark_tginfo2)))
#define FW_CMARKT_SIZE (FW_TARGET_HDR + XT_ALIGN(sizeof(struct xt_connmark_tginfo2)))
#define FW_MARK_ENTRY_MAX (sizeof(struct ip6t_entry) + FW_MARKM_SIZE + FW_COMMENT_SIZE + \
                           FW_CMARKT_SIZE + FW_MARKT_SIZE)

/* The size of af's entry header: the first match follows it. */
size_t fw_rule_hdr_size(int af);
/* Where e's target starts (its target_offset). */
size_t fw_rule_target_offset(int af, const void *e);

/* "<comment> pid " and "<comment> conntrack hold pid ": the REDIRECT rule's and the hold rule's
 * comments up to the pid, the comment being rs's own or FW_HOLD_DEFAULT, cut to leave room. */
void fw_rule_redirect_prefix(const struct rulespec *rs, char *buf, size_t len);
void fw_rule_hold_prefix(const struct rulespec *rs, char *buf, size_t len);

/* The REDIRECT entry `iptables -t nat -I PREROUTING ...` would build for af, into buf
 * (FW_ENTRY_MAX bytes) with a compare mask (as many) that covers all of it, the comment
 * included: for "<spec> --syn -m addrtype --dst-type LOCAL -m comment --comment <comment>",
 * the matches the spec names where it names them and the others after them in that order, the
 * spec's own comment (if any) replaced by comment. With old: the rule of versions before the
 * addrtype match and the pid, "<spec> --syn", with a comment match only if the spec has one
 * (pass the spec's own). */
void fw_rule_redirect(int af, const struct rulespec *rs, const char *comment, bool old,
                      unsigned char *buf, unsigned char *mask);

/* `iptables -t nat -A PREROUTING -m conntrack --ctstate INVALID -m comment --comment
 * <comment>` into buf (FW_HOLD_MAX bytes) and its compare mask (as many). */
void fw_rule_hold(int af, const char *comment, unsigned char *buf, unsigned char *mask);

/* A mark rule into buf (FW_MARK_ENTRY_MAX bytes), its comment FW_MARK_TAG and pid: with
 * restore, `-m connmark --mark M -j MARK --set-mark M`; else `-m mark --mark M -j CONNMARK
 * --set-mark M` (M: mark). */
void fw_rule_mark(int af, uint32_t mark, pid_t pid, bool restore, unsigned char *buf);

/* The pid that text names after prefix (prefix, then a decimal pid with no sign or leading
 * zero, nothing after it), or 0. */
pid_t fw_rule_text_pid(const char *text, const char *prefix);

/* The next match of entry e named name, with a payload of at least min bytes, at or after byte
 * *off of the matches area (start with *off = 0); *off moves past it. NULL when there is none.
 * Never steps outside the matches area, whatever the sizes in e say. */
const struct xt_entry_match *fw_rule_next_match(int af, const void *e, size_t *off,
                                                const char *name, size_t min);

/* The text of e's next "comment" match (NUL-terminated here: the kernel does not insist), as
 * fw_rule_next_match walks them; false when there is none. */
bool fw_rule_next_comment(int af, const void *e, size_t *off,
                          char text[RULESPEC_COMMENT_MAX + 1]);

#endif
