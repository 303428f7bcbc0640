/* See firewall_rule.h. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "firewall_rule.h"

size_t fw_rule_hdr_size(int af)
{
	return af == AF_INET ? sizeof(struct ipt_entry) : sizeof(struct ip6t_entry);
}

size_t fw_rule_target_offset(int af, const void *e)
{
	return af == AF_INET ? ((const struct ipt_entry *)e)->target_offset
	                     : ((const struct ip6t_entry *)e)->target_offset;
}

/* The layout the kernel (x_tables ABI) and iptables agree on. */
_Static_assert(sizeof(struct ipt_entry) == XT_ALIGN(sizeof(struct ipt_entry)),
               "the first match follows struct ipt_entry directly");
_Static_assert(sizeof(struct ip6t_entry) == XT_ALIGN(sizeof(struct ip6t_entry)),
               "the first match follows struct ip6t_entry directly");
_Static_assert(offsetof(struct xt_entry_match, data) == FW_MATCH_HDR, "match payload offset");
_Static_assert(offsetof(struct xt_entry_target, data) == FW_TARGET_HDR, "target payload offset");
_Static_assert(sizeof(struct xt_tcp) == 12, "struct xt_tcp is 12 bytes");
_Static_assert(sizeof(struct xt_comment_info) == RULESPEC_COMMENT_MAX,
               "xt_comment_info holds RULESPEC_COMMENT_MAX bytes");
_Static_assert(sizeof(struct nf_nat_ipv4_multi_range_compat) == 20, "REDIRECT IPv4 payload");
_Static_assert(sizeof(struct nf_nat_range) == 40, "REDIRECT IPv6 payload (nf_nat_range)");
_Static_assert(sizeof(struct xt_conntrack_mtinfo3) == 164, "struct xt_conntrack_mtinfo3");
_Static_assert(sizeof(struct xt_addrtype_info_v1) == 8 &&
               offsetof(struct xt_addrtype_info_v1, dest) == 2 &&
               offsetof(struct xt_addrtype_info_v1, flags) == 4,
               "struct xt_addrtype_info_v1: u16 source, u16 dest, u32 flags");
_Static_assert(FW_ADDRTYPE_SIZE == 32 + 8, "addrtype match: header and aligned payload");
_Static_assert(XT_ADDRTYPE_LOCAL == 1 << 2, "XT_ADDRTYPE_LOCAL is 1 << RTN_LOCAL");
_Static_assert(FW_CONNTRACK_SIZE == 32 + 168, "conntrack match: header and aligned payload");
_Static_assert(FW_FALLTHROUGH_SIZE == XT_ALIGN(sizeof(struct xt_standard_target)),
               "the standard target is a header and a verdict");
_Static_assert(FW_FALLTHROUGH_SIZE == 40, "the standard target takes 40 bytes");
_Static_assert(FW_ENTRY_MAX < 0xffff && FW_HOLD_MAX < 0xffff, "offsets are 16 bits");
_Static_assert(FW_HOLD_BASE_MAX > 0 && FW_HOLD_BASE_MAX < RULESPEC_COMMENT_MAX,
               "room for the hold rule's comment");
_Static_assert(sizeof(FW_PID_TAG) <= sizeof(FW_HOLD_TAG),
               "the REDIRECT rule's comment fits where the hold's does");

_Static_assert(sizeof(struct xt_connmark_mtinfo1) == sizeof(struct xt_mark_mtinfo1),
               "connmark and mark matches take the same payload (mark, mask, invert)");

/* The header of a match of size bytes at buf + off (named, at revision rev); its payload,
 * zero so far, is the caller's to fill. */
static void *rule_match(unsigned char *buf, size_t off, const char *name, uint8_t rev,
                        size_t size)
{
	struct xt_entry_match *m = (struct xt_entry_match *)(buf + off);

	m->u.user.match_size = (uint16_t)size;
	snprintf(m->u.user.name, sizeof(m->u.user.name), "%s", name);
	m->u.user.revision = rev;
	return m->data;
}

/* The entry's target starts at toff and takes tsize bytes: the entry ends there. */
static void rule_offsets(int af, unsigned char *buf, size_t toff, size_t tsize)
{
	if (af == AF_INET) {
		struct ipt_entry *e = (struct ipt_entry *)buf;

		e->target_offset = (uint16_t)toff;
		e->next_offset = (uint16_t)(toff + tsize);
	} else {
		struct ip6t_entry *e = (struct ip6t_entry *)buf;

		e->target_offset = (uint16_t)toff;
		e->next_offset = (uint16_t)(toff + tsize);
	}
}

/* The header of the entry's target of size bytes at buf + toff; its payload is the caller's. */
static void *rule_target(unsigned char *buf, size_t toff, const char *name, uint8_t rev,
                         size_t size)
{
	struct xt_entry_target *tg = (struct xt_entry_target *)(buf + toff);

	tg->u.user.target_size = (uint16_t)size;
	snprintf(tg->u.user.name, sizeof(tg->u.user.name), "%s", name);
	tg->u.user.revision = rev;
	return tg->data;
}

static size_t rule_add_tcp(unsigned char *buf, size_t off, const struct rulespec *rs)
{
	struct xt_tcp *tcp = rule_match(buf, off, "tcp", 0, FW_TCP_SIZE);

	/* Host byte order, unlike the NAT ports below. */
	tcp->spts[0] = 0;
	tcp->spts[1] = 0xffff;
	tcp->dpts[0] = rs->has_dport ? rs->dport : 0;
	tcp->dpts[1] = rs->has_dport ? rs->dport : 0xffff;
	/* --syn, always: see the top of firewall_iptc.c. */
	tcp->flg_mask = FW_TCP_FIN | FW_TCP_SYN | FW_TCP_RST | FW_TCP_ACK;
	tcp->flg_cmp = FW_TCP_SYN;
	return off + FW_TCP_SIZE;
}

static size_t rule_add_comment(unsigned char *buf, size_t off, const char *text)
{
	struct xt_comment_info *ci = rule_match(buf, off, "comment", 0, FW_COMMENT_SIZE);

	/* The rest stays zero: the whole 256 bytes take part in every comparison. */
	memcpy(ci->comment, text, strnlen(text, sizeof(ci->comment) - 1));
	return off + FW_COMMENT_SIZE;
}

/* -m conntrack --ctstate INVALID, as iptables' libxt_conntrack fills revision 3. */
static size_t rule_add_conntrack(unsigned char *buf, size_t off)
{
	struct xt_conntrack_mtinfo3 *ct =
		rule_match(buf, off, "conntrack", FW_CONNTRACK_REV, FW_CONNTRACK_SIZE);

	ct->match_flags = XT_CONNTRACK_STATE;
	ct->state_mask = XT_CONNTRACK_STATE_INVALID;
	return off + FW_CONNTRACK_SIZE;
}

/* -m addrtype --dst-type LOCAL, as libxt_addrtype fills revision 1: no source type, no
 * flags (no inversion, no --limit-iface-*). */
static size_t rule_add_addrtype(unsigned char *buf, size_t off)
{
	struct xt_addrtype_info_v1 *at =
		rule_match(buf, off, "addrtype", FW_ADDRTYPE_REV, FW_ADDRTYPE_SIZE);

	at->source = 0;
	at->dest = XT_ADDRTYPE_LOCAL;
	at->flags = 0;
	return off + FW_ADDRTYPE_SIZE;
}

static const char *rule_base(const struct rulespec *rs)
{
	return rs->has_comment ? rs->comment : FW_HOLD_DEFAULT;
}

/* "<comment> pid ": the REDIRECT rule's comment up to the pid. */
void fw_rule_redirect_prefix(const struct rulespec *rs, char *buf, size_t len)
{
	const char *base = rule_base(rs);

	snprintf(buf, len, "%.*s" FW_PID_TAG, (int)strnlen(base, FW_HOLD_BASE_MAX), base);
}

/* As xtables_parse_interface: the mask covers the name and its NUL, or for "eth+" only "eth"
 * (the '+' stays in the name). */
static void rule_iface(const struct rulespec *rs, char *name, unsigned char *mask)
{
	size_t len = strnlen(rs->iface, IFNAMSIZ - 1);

	memcpy(name, rs->iface, len);
	if (len > 0 && rs->iface[len - 1] == '+')
		memset(mask, 0xff, len - 1);
	else
		memset(mask, 0xff, len + 1);
}

/* The fields both families' entry headers (struct ipt_ip, struct ip6t_ip6) have, by address:
 * -s, -d and -i go in the same way, with addresses of alen bytes. */
struct rule_ip {
	void *src, *smsk, *dst, *dmsk;
	size_t alen;
	char *iniface;
	unsigned char *iniface_mask;
	uint8_t *invflags;
};

_Static_assert(IPT_INV_SRCIP == IP6T_INV_SRCIP && IPT_INV_DSTIP == IP6T_INV_DSTIP &&
               IPT_INV_VIA_IN == IP6T_INV_VIA_IN, "one set of inversion flags for both");

static void rule_ip(const struct rulespec *rs, const struct rule_ip *ip)
{
	if (rs->src.set) {
		memcpy(ip->src, &rs->src.addr, ip->alen);
		memcpy(ip->smsk, &rs->src.mask, ip->alen);
		if (rs->src.invert)
			*ip->invflags |= IPT_INV_SRCIP;
	}
	if (rs->dst.set) {
		memcpy(ip->dst, &rs->dst.addr, ip->alen);
		memcpy(ip->dmsk, &rs->dst.mask, ip->alen);
		if (rs->dst.invert)
			*ip->invflags |= IPT_INV_DSTIP;
	}
	if (rs->has_iface) {
		rule_iface(rs, ip->iniface, ip->iniface_mask);
		if (rs->iface_invert)
			*ip->invflags |= IPT_INV_VIA_IN;
	}
}

void fw_rule_redirect(int af, const struct rulespec *rs, const char *comment, bool old,
                      unsigned char *buf, unsigned char *mask)
{
	enum rs_match order[3];
	size_t off = fw_rule_hdr_size(af), toff, n = 0, i;

	memset(buf, 0, FW_ENTRY_MAX);
	memset(mask, 0xff, FW_ENTRY_MAX);
	if (old) {
		/* The tcp match was always there (for --syn): where the spec loads it, or last. */
		if (rs->has_comment && (!rs->has_tcp_match || rs->comment_first))
			order[n++] = RS_MATCH_COMMENT;
		order[n++] = RS_MATCH_TCP;
		if (rs->has_comment && n == 1)
			order[n++] = RS_MATCH_COMMENT;
	} else {
		for (i = 0; i < rs->n_matches && i < sizeof(rs->order) / sizeof(rs->order[0]); i++)
			order[n++] = rs->order[i];
		if (!rs->has_tcp_match)
			order[n++] = RS_MATCH_TCP;
		if (!rs->has_addrtype)
			order[n++] = RS_MATCH_ADDRTYPE;
		if (!rs->has_comment)
			order[n++] = RS_MATCH_COMMENT;
	}
	for (i = 0; i < n; i++) {
		switch (order[i]) {
		case RS_MATCH_TCP:
			off = rule_add_tcp(buf, off, rs);
			break;
		case RS_MATCH_COMMENT:
			off = rule_add_comment(buf, off, comment);
			break;
		case RS_MATCH_ADDRTYPE:
			off = rule_add_addrtype(buf, off);
			break;
		}
	}
	toff = off;
	if (af == AF_INET) {
		struct ipt_entry *e = (struct ipt_entry *)buf;
		struct nf_nat_ipv4_multi_range_compat *mr =
			rule_target(buf, toff, "REDIRECT", 0, FW_REDIR4_SIZE);

		e->ip.proto = IPPROTO_TCP;
		rule_ip(rs, &(struct rule_ip){ &e->ip.src, &e->ip.smsk, &e->ip.dst, &e->ip.dmsk,
		                              sizeof(e->ip.src), e->ip.iniface, e->ip.iniface_mask,
		                              &e->ip.invflags });
		/* The kernel refuses any other rangesize; ports in network order. */
		mr->rangesize = 1;
		mr->range[0].flags = NF_NAT_RANGE_PROTO_SPECIFIED;
		mr->range[0].min.tcp.port = htons(rs->to_port);
		mr->range[0].max.tcp.port = htons(rs->to_port);
		rule_offsets(af, buf, toff, FW_REDIR4_SIZE);
	} else {
		struct ip6t_entry *e = (struct ip6t_entry *)buf;
		struct nf_nat_range *r = rule_target(buf, toff, "REDIRECT", 0, FW_REDIR6_SIZE);

		/* Without IP6T_F_PROTO the kernel ignores proto, accepts the rule, and the tcp
		 * match reads whatever follows the IPv6 header. */
		e->ipv6.proto = IPPROTO_TCP;
		e->ipv6.flags |= IP6T_F_PROTO;
		rule_ip(rs, &(struct rule_ip){ &e->ipv6.src, &e->ipv6.smsk, &e->ipv6.dst,
		                              &e->ipv6.dmsk, sizeof(e->ipv6.src), e->ipv6.iniface,
		                              e->ipv6.iniface_mask, &e->ipv6.invflags });
		r->flags = NF_NAT_RANGE_PROTO_SPECIFIED;
		r->min_proto.tcp.port = htons(rs->to_port);
		r->max_proto.tcp.port = htons(rs->to_port);
		rule_offsets(af, buf, toff, FW_REDIR6_SIZE);
	}
}

void fw_rule_hold_prefix(const struct rulespec *rs, char *buf, size_t len)
{
	const char *base = rule_base(rs);

	snprintf(buf, len, "%.*s" FW_HOLD_TAG, (int)strnlen(base, FW_HOLD_BASE_MAX), base);
}

/* No protocol, no addresses, no target: a rule that never changes a verdict, there only for
 * conntrack's reference count (firewall_iptc.c). */
void fw_rule_hold(int af, const char *comment, unsigned char *buf, unsigned char *mask)
{
	size_t off = fw_rule_hdr_size(af), toff;

	memset(buf, 0, FW_HOLD_MAX);
	memset(mask, 0xff, FW_HOLD_MAX);
	off = rule_add_conntrack(buf, off);
	off = rule_add_comment(buf, off, comment);
	toff = off;
	/* The standard target with the name "" (XT_STANDARD_TARGET): fall through. The verdict
	 * stays 0; libiptc fills in the offset of the next rule when it commits. */
	(void)rule_target(buf, toff, "", 0, FW_FALLTHROUGH_SIZE);
	rule_offsets(af, buf, toff, FW_FALLTHROUGH_SIZE);
}

pid_t fw_rule_text_pid(const char *text, const char *prefix)
{
	size_t plen = strlen(prefix), n;
	const char *digits = text + plen;
	unsigned long long v;

	if (strncmp(text, prefix, plen) != 0)
		return 0;
	n = strspn(digits, "0123456789");
	if (n == 0 || n > FW_HOLD_PID_MAX || digits[n] != '\0' || digits[0] == '0')
		return 0;
	v = strtoull(digits, NULL, 10);
	return v > INT_MAX ? 0 : (pid_t)v;
}


/* Sizes come from the kernel's copy of the table; still, never step outside the matches area. */
const struct xt_entry_match *fw_rule_next_match(int af, const void *e, size_t *off,
                                                const char *name, size_t min)
{
	const unsigned char *p = e;
	size_t end = fw_rule_target_offset(af, e);

	if (*off < fw_rule_hdr_size(af))
		*off = fw_rule_hdr_size(af);
	while (*off + FW_MATCH_HDR <= end) {
		const struct xt_entry_match *m = (const void *)(p + *off);
		size_t size = m->u.match_size;

		if (size < FW_MATCH_HDR || size > end - *off)
			return NULL;
		*off += size;
		if (strncmp(m->u.user.name, name, sizeof(m->u.user.name)) == 0 &&
		    size >= FW_MATCH_HDR + min)
			return m;
	}
	return NULL;
}

bool fw_rule_next_comment(int af, const void *e, size_t *off,
                          char text[RULESPEC_COMMENT_MAX + 1])
{
	const struct xt_entry_match *m =
		fw_rule_next_match(af, e, off, "comment", sizeof(struct xt_comment_info));
	const struct xt_comment_info *ci;

	if (m == NULL)
		return false;
	ci = (const void *)m->data;
	memcpy(text, ci->comment, sizeof(ci->comment));
	text[sizeof(ci->comment)] = '\0';
	return true;
}


void fw_rule_mark(int af, uint32_t mark, pid_t pid, bool restore, unsigned char *buf)
{
	char text[RULESPEC_COMMENT_MAX] = "";
	struct xt_mark_mtinfo1 *mm;
	size_t off = fw_rule_hdr_size(af), toff;

	memset(buf, 0, FW_MARK_ENTRY_MAX);
	mm = rule_match(buf, off, restore ? "connmark" : "mark", 1, FW_MARKM_SIZE);
	mm->mark = mark;
	mm->mask = 0xffffffffu;
	off += FW_MARKM_SIZE;
	snprintf(text, sizeof(text), FW_MARK_TAG "%ld", (long)pid);
	off = rule_add_comment(buf, off, text);
	toff = off;
	if (restore) {
		struct xt_mark_tginfo2 *mt = rule_target(buf, toff, "MARK", 2, FW_MARKT_SIZE);

		mt->mark = mark;
		mt->mask = 0xffffffffu;
		rule_offsets(af, buf, toff, FW_MARKT_SIZE);
	} else {
		/* Revision 2, as iptables 1.8 writes it (it cannot print revision 1). */
		struct xt_connmark_tginfo2 *ct =
			rule_target(buf, toff, "CONNMARK", 2, FW_CMARKT_SIZE);

		ct->ctmark = mark;
		ct->ctmask = 0xffffffffu;
		ct->nfmask = 0;
		ct->mode = XT_CONNMARK_SET;
		rule_offsets(af, buf, toff, FW_CMARKT_SIZE);
	}
}

