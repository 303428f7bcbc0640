/* Unit tests of the libiptc backend's rule entries (src/firewall_rule.c): their layout, match
 * by match, for both families, without root and without libiptc calls. test_firewall.c checks
 * the same entries byte for byte against iptables-legacy, as root. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "firewall_rule.h"
#include "testutil.h"

static _Alignas(max_align_t) unsigned char buf[FW_ENTRY_MAX], mask[FW_ENTRY_MAX];

static struct rulespec spec(const char *text)
{
	struct rulespec rs;
	char err[256];

	memset(&rs, 0, sizeof(rs));
	if (rulespec_parse(text, &rs, err, sizeof(err)) != 0) {
		fprintf(stderr, "\n[%s]: %s\n", text, err);
		CU_FAIL("rulespec_parse failed");
	}
	return rs;
}

static size_t next_offset(int af, const void *e)
{
	return af == AF_INET ? ((const struct ipt_entry *)e)->next_offset
	                     : ((const struct ip6t_entry *)e)->next_offset;
}

/* The names of e's matches in order, "tcp,addrtype,comment". */
static void match_names(int af, const void *e, char *out, size_t len)
{
	const unsigned char *p = e;
	size_t off = fw_rule_hdr_size(af), end = fw_rule_target_offset(af, e);

	out[0] = '\0';
	while (off < end) {
		const struct xt_entry_match *m = (const void *)(p + off);

		if (out[0] != '\0')
			strncat(out, ",", len - strlen(out) - 1);
		strncat(out, m->u.user.name, len - strlen(out) - 1);
		CU_ASSERT_FATAL(m->u.user.match_size > 0);
		off += m->u.user.match_size;
	}
	CU_ASSERT_EQUAL(off, end); /* the sizes add up exactly */
}

static const struct xt_entry_target *target(int af, const void *e)
{
	return (const void *)((const unsigned char *)e + fw_rule_target_offset(af, e));
}

static void test_redirect_default(void)
{
	static const int afs[] = { AF_INET, AF_INET6 };
	struct rulespec rs = spec(RULESPEC_DEFAULT);

	for (size_t i = 0; i < 2; i++) {
		int af = afs[i];
		char names[128], text[RULESPEC_COMMENT_MAX + 1];
		const struct xt_entry_match *m;
		const struct xt_tcp *tcp;
		const struct xt_entry_target *tg;
		size_t off = 0;

		fw_rule_redirect(af, &rs, "acme-alpn-proxy pid 4242", false, buf, mask);
		match_names(af, buf, names, sizeof(names));
		/* The spec loads tcp and comment itself, in that order; addrtype comes after them. */
		CU_ASSERT_STRING_EQUAL(names, "tcp,comment,addrtype");
		m = fw_rule_next_match(af, buf, &off, "tcp", sizeof(struct xt_tcp));
		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		tcp = (const void *)m->data;
		CU_ASSERT_EQUAL(tcp->dpts[0], 443);
		CU_ASSERT_EQUAL(tcp->dpts[1], 443);
		CU_ASSERT_EQUAL(tcp->spts[1], 0xffff);
		CU_ASSERT_EQUAL(tcp->flg_mask, 0x17); /* --syn: FIN,SYN,RST,ACK */
		CU_ASSERT_EQUAL(tcp->flg_cmp, 0x02);  /* SYN */
		off = 0;
		CU_ASSERT_TRUE(fw_rule_next_comment(af, buf, &off, text));
		CU_ASSERT_STRING_EQUAL(text, "acme-alpn-proxy pid 4242");
		CU_ASSERT_FALSE(fw_rule_next_comment(af, buf, &off, text));
		off = 0;
		m = fw_rule_next_match(af, buf, &off, "addrtype", sizeof(struct xt_addrtype_info_v1));
		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		CU_ASSERT_EQUAL(m->u.user.revision, FW_ADDRTYPE_REV);
		CU_ASSERT_EQUAL(((const struct xt_addrtype_info_v1 *)m->data)->dest,
		                XT_ADDRTYPE_LOCAL);
		tg = target(af, buf);
		CU_ASSERT_STRING_EQUAL(tg->u.user.name, "REDIRECT");
		if (af == AF_INET) {
			const struct ipt_entry *e = (const void *)buf;
			const struct nf_nat_ipv4_multi_range_compat *mr = (const void *)tg->data;

			CU_ASSERT_EQUAL(e->ip.proto, IPPROTO_TCP);
			CU_ASSERT_EQUAL(mr->rangesize, 1);
			CU_ASSERT_EQUAL(ntohs(mr->range[0].min.tcp.port), 21443);
			CU_ASSERT_EQUAL(tg->u.user.target_size, FW_REDIR4_SIZE);
			CU_ASSERT_EQUAL(next_offset(af, buf), e->target_offset + FW_REDIR4_SIZE);
		} else {
			const struct ip6t_entry *e = (const void *)buf;
			const struct nf_nat_range *r = (const void *)tg->data;

			CU_ASSERT_EQUAL(e->ipv6.proto, IPPROTO_TCP);
			CU_ASSERT_TRUE(e->ipv6.flags & IP6T_F_PROTO);
			CU_ASSERT_EQUAL(ntohs(r->min_proto.tcp.port), 21443);
			CU_ASSERT_EQUAL(ntohs(r->max_proto.tcp.port), 21443);
			CU_ASSERT_EQUAL(next_offset(af, buf), e->target_offset + FW_REDIR6_SIZE);
		}
		/* The mask covers the whole entry. */
		for (size_t j = 0; j < next_offset(af, buf); j++)
			CU_ASSERT_EQUAL_FATAL(mask[j], 0xff);
	}
}

/* The matches the spec does not name come after those it names: tcp (--syn), addrtype,
 * comment. The old form has the tcp match and the spec's own comment only. */
/* The REDIRECT entry for rs and comment (the old form if old) has the matches want, in order. */
static void expect_matches(int af, const struct rulespec *rs, const char *comment, bool old,
                           const char *want)
{
	char names[128];

	fw_rule_redirect(af, rs, comment, old, buf, mask);
	match_names(af, buf, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, want);
}

static void test_redirect_order(void)
{
	struct rulespec rs = spec("-j REDIRECT --to-port 21443 -p tcp");

	expect_matches(AF_INET, &rs, "c pid 1", false, "tcp,addrtype,comment");
	expect_matches(AF_INET, &rs, rs.comment, true, "tcp");
	rs = spec("-m comment --comment first -m addrtype --dst-type LOCAL -p tcp --dport 80 "
	          "-j REDIRECT --to-port 1");
	expect_matches(AF_INET6, &rs, "first pid 2", false, "comment,addrtype,tcp");
	expect_matches(AF_INET6, &rs, rs.comment, true, "comment,tcp");
}

static void test_redirect_addresses(void)
{
	struct rulespec rs = spec("-p tcp --dport 443 ! -s 192.0.2.0/24 -i eth+ -j REDIRECT "
	                          "--to-port 21443");
	const struct ipt_entry *e = (const void *)buf;
	const struct ip6t_entry *e6 = (const void *)buf;

	fw_rule_redirect(AF_INET, &rs, "x", false, buf, mask);
	CU_ASSERT_EQUAL(e->ip.src.s_addr, htonl(0xc0000200));
	CU_ASSERT_EQUAL(e->ip.smsk.s_addr, htonl(0xffffff00));
	CU_ASSERT_TRUE(e->ip.invflags & IPT_INV_SRCIP);
	CU_ASSERT_FALSE(e->ip.invflags & IPT_INV_VIA_IN);
	CU_ASSERT_STRING_EQUAL(e->ip.iniface, "eth+");
	/* "eth+": the mask covers "eth", not the '+' nor the NUL */
	CU_ASSERT_EQUAL(e->ip.iniface_mask[2], 0xff);
	CU_ASSERT_EQUAL(e->ip.iniface_mask[3], 0);

	rs = spec("-p tcp -d 2001:db8::/32 ! -i eth0 -j REDIRECT --to-port 21443");
	fw_rule_redirect(AF_INET6, &rs, "x", false, buf, mask);
	CU_ASSERT_EQUAL(e6->ipv6.dst.s6_addr[1], 0x01);
	CU_ASSERT_EQUAL(e6->ipv6.dmsk.s6_addr[3], 0xff);
	CU_ASSERT_EQUAL(e6->ipv6.dmsk.s6_addr[4], 0);
	CU_ASSERT_FALSE(e6->ipv6.invflags & IP6T_INV_DSTIP);
	CU_ASSERT_TRUE(e6->ipv6.invflags & IP6T_INV_VIA_IN);
	CU_ASSERT_EQUAL(e6->ipv6.iniface_mask[4], 0xff); /* "eth0" and its NUL */
	CU_ASSERT_EQUAL(e6->ipv6.iniface_mask[5], 0);
}

static void test_hold(void)
{
	static _Alignas(max_align_t) unsigned char hold[FW_HOLD_MAX], hmask[FW_HOLD_MAX];
	char names[128], text[RULESPEC_COMMENT_MAX + 1];
	const struct xt_entry_match *m;
	const struct xt_conntrack_mtinfo3 *ct;
	size_t off = 0;

	fw_rule_hold(AF_INET6, "acme-alpn-proxy conntrack hold pid 7", hold, hmask);
	match_names(AF_INET6, hold, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "conntrack,comment");
	CU_ASSERT_EQUAL(((const struct ip6t_entry *)hold)->ipv6.proto, 0);
	m = fw_rule_next_match(AF_INET6, hold, &off, "conntrack", sizeof(*ct));
	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	CU_ASSERT_EQUAL(m->u.user.revision, FW_CONNTRACK_REV);
	ct = (const void *)m->data;
	CU_ASSERT_EQUAL(ct->match_flags, XT_CONNTRACK_STATE);
	CU_ASSERT_EQUAL(ct->state_mask, XT_CONNTRACK_STATE_INVALID);
	CU_ASSERT_TRUE(fw_rule_next_comment(AF_INET6, hold, &off, text));
	CU_ASSERT_STRING_EQUAL(text, "acme-alpn-proxy conntrack hold pid 7");
	/* No -j: the standard target, named "", falls through. */
	CU_ASSERT_STRING_EQUAL(target(AF_INET6, hold)->u.user.name, "");
	CU_ASSERT_EQUAL(target(AF_INET6, hold)->u.user.target_size, FW_FALLTHROUGH_SIZE);
	CU_ASSERT_EQUAL(next_offset(AF_INET6, hold),
	                fw_rule_target_offset(AF_INET6, hold) + FW_FALLTHROUGH_SIZE);
}

static void test_mark(void)
{
	static _Alignas(max_align_t) unsigned char e[FW_MARK_ENTRY_MAX];
	char names[128], text[RULESPEC_COMMENT_MAX + 1];
	const struct xt_entry_target *tg;
	size_t off = 0;

	fw_rule_mark(AF_INET, 0x2143, 99, true, e);
	match_names(AF_INET, e, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "connmark,comment");
	tg = target(AF_INET, e);
	CU_ASSERT_STRING_EQUAL(tg->u.user.name, "MARK");
	CU_ASSERT_EQUAL(((const struct xt_mark_tginfo2 *)tg->data)->mark, 0x2143);
	CU_ASSERT_TRUE(fw_rule_next_comment(AF_INET, e, &off, text));
	CU_ASSERT_EQUAL(fw_rule_text_pid(text, FW_MARK_TAG), 99);

	fw_rule_mark(AF_INET6, 0x2143, 99, false, e);
	match_names(AF_INET6, e, names, sizeof(names));
	CU_ASSERT_STRING_EQUAL(names, "mark,comment");
	tg = target(AF_INET6, e);
	CU_ASSERT_STRING_EQUAL(tg->u.user.name, "CONNMARK");
	CU_ASSERT_EQUAL(tg->u.user.revision, 2);
	CU_ASSERT_EQUAL(((const struct xt_connmark_tginfo2 *)tg->data)->ctmark, 0x2143);
	CU_ASSERT_EQUAL(((const struct xt_connmark_tginfo2 *)tg->data)->mode, XT_CONNMARK_SET);
}

static void test_prefixes(void)
{
	struct rulespec rs = spec(RULESPEC_DEFAULT);
	char buf1[RULESPEC_COMMENT_MAX], buf2[RULESPEC_COMMENT_MAX];
	char long_spec[600];

	fw_rule_redirect_prefix(&rs, buf1, sizeof(buf1));
	CU_ASSERT_STRING_EQUAL(buf1, "acme-alpn-proxy pid ");
	fw_rule_hold_prefix(&rs, buf2, sizeof(buf2));
	CU_ASSERT_STRING_EQUAL(buf2, "acme-alpn-proxy conntrack hold pid ");
	rs = spec("-p tcp -j REDIRECT --to-port 1");
	fw_rule_hold_prefix(&rs, buf2, sizeof(buf2));
	CU_ASSERT_STRING_EQUAL(buf2, FW_HOLD_DEFAULT FW_HOLD_TAG);

	/* A comment as long as xt_comment_info allows is cut to leave room for tag and pid. */
	snprintf(long_spec, sizeof(long_spec), "-p tcp -j REDIRECT --to-port 1 -m comment "
	         "--comment %0255d", 0);
	rs = spec(long_spec);
	fw_rule_hold_prefix(&rs, buf2, sizeof(buf2));
	CU_ASSERT_EQUAL(strlen(buf2) + FW_HOLD_PID_MAX, RULESPEC_COMMENT_MAX - 1);
	fw_rule_redirect_prefix(&rs, buf1, sizeof(buf1));
	CU_ASSERT_EQUAL(strncmp(buf1, buf2, FW_HOLD_BASE_MAX), 0); /* cut the same way */
}

static void test_text_pid(void)
{
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 123", "acme pid "), 123);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 2147483647", "acme pid "), 2147483647);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 2147483648", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 12345678901", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 0123", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid -1", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid +1", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid 12 ", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("acme pid ", "acme pid "), 0);
	CU_ASSERT_EQUAL(fw_rule_text_pid("other pid 5", "acme pid "), 0);
}

/* A match whose size is 0 or runs past the target ends the walk: nothing outside the matches
 * area is read. */
static void test_walk_bounds(void)
{
	struct rulespec rs = spec(RULESPEC_DEFAULT);
	struct xt_entry_match *first;
	char text[RULESPEC_COMMENT_MAX + 1];
	size_t off = 0;

	fw_rule_redirect(AF_INET, &rs, "c", false, buf, mask);
	first = (void *)(buf + fw_rule_hdr_size(AF_INET));
	first->u.match_size = 0;
	CU_ASSERT_FALSE(fw_rule_next_comment(AF_INET, buf, &off, text));
	first->u.match_size = 0xffff;
	off = 0;
	CU_ASSERT_PTR_NULL(fw_rule_next_match(AF_INET, buf, &off, "tcp", 0));
	/* A payload smaller than asked for does not count as the match. */
	fw_rule_redirect(AF_INET, &rs, "c", false, buf, mask);
	off = 0;
	CU_ASSERT_PTR_NULL(fw_rule_next_match(AF_INET, buf, &off, "tcp", 4096));
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "REDIRECT, default spec, both families", test_redirect_default },
		{ "REDIRECT: match order, old form", test_redirect_order },
		{ "REDIRECT: addresses, interfaces", test_redirect_addresses },
		{ "hold rule", test_hold },
		{ "mark rules", test_mark },
		{ "comment prefixes", test_prefixes },
		{ "pid in a comment", test_text_pid },
		{ "match walk stays in bounds", test_walk_bounds },
	};

	if (TU_ADD_SUITE("firewall_rule", tests) != 0)
		return 99;
	return tu_run();
}
