/* Unit tests of the rule specification parser (runs unprivileged, no I/O). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "rulespec.h"
#include "testutil.h"

static struct rulespec parse_ok(const char *text)
{
	struct rulespec rs;
	char err[256] = "untouched";

	memset(&rs, 0xa5, sizeof(rs));
	if (rulespec_parse(text, &rs, err, sizeof(err)) != 0) {
		fprintf(stderr, "\nunexpected error for [%s]: %s\n", text, err);
		CU_FAIL("rulespec_parse failed");
	}
	return rs;
}

/* The parse must fail, leave *out alone and name `token` in the message. */
static void parse_err(const char *text, const char *token)
{
	struct rulespec rs, before;
	char err[256];

	memset(&rs, 0x5a, sizeof(rs));
	before = rs;
	memset(err, 'x', sizeof(err));
	CU_ASSERT_EQUAL(rulespec_parse(text, &rs, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(memchr(err, '\0', sizeof(err)));
	err[sizeof(err) - 1] = '\0';
	if (strstr(err, token) == NULL) {
		fprintf(stderr, "\nerror for [%s] does not name [%s]: %s\n", text, token, err);
		CU_FAIL("error message does not name the token");
	}
	CU_ASSERT_EQUAL(memcmp(&rs, &before, sizeof(rs)), 0);
}

/* The parsed address a: of family af, set, inverted or not, addr and mask as written. */
static void check_addr(const struct rs_addr *a, int af, const char *addr, const char *mask,
                       bool invert)
{
	const void *got_addr = af == AF_INET ? (const void *)&a->addr.v4 : (const void *)&a->addr.v6;
	const void *got_mask = af == AF_INET ? (const void *)&a->mask.v4 : (const void *)&a->mask.v6;
	size_t len = af == AF_INET ? sizeof(struct in_addr) : sizeof(struct in6_addr);
	struct in6_addr x; /* room for either */

	CU_ASSERT_TRUE(a->set);
	CU_ASSERT_EQUAL(a->family, af);
	CU_ASSERT_EQUAL(a->invert, invert);
	CU_ASSERT_EQUAL_FATAL(inet_pton(af, addr, &x), 1);
	CU_ASSERT_EQUAL(memcmp(got_addr, &x, len), 0);
	CU_ASSERT_EQUAL_FATAL(inet_pton(af, mask, &x), 1);
	CU_ASSERT_EQUAL(memcmp(got_mask, &x, len), 0);
}

static void check_v4(const struct rs_addr *a, const char *addr, const char *mask, bool invert)
{
	check_addr(a, AF_INET, addr, mask, invert);
}

static void check_v6(const struct rs_addr *a, const char *addr, const char *mask, bool invert)
{
	check_addr(a, AF_INET6, addr, mask, invert);
}

static void test_default(void)
{
	struct rulespec rs = parse_ok(RULESPEC_DEFAULT);

	CU_ASSERT_TRUE(rs.has_dport);
	CU_ASSERT_EQUAL(rs.dport, 443);
	CU_ASSERT_EQUAL(rs.to_port, 21443);
	CU_ASSERT_TRUE(rs.has_comment);
	CU_ASSERT_STRING_EQUAL(rs.comment, "acme-alpn-proxy");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_FALSE(rs.comment_first);
	CU_ASSERT_FALSE(rs.has_addrtype);
	CU_ASSERT_EQUAL(rs.n_matches, 2);
	CU_ASSERT_EQUAL(rs.order[0], RS_MATCH_TCP);
	CU_ASSERT_EQUAL(rs.order[1], RS_MATCH_COMMENT);
	CU_ASSERT_FALSE(rs.src.set);
	CU_ASSERT_FALSE(rs.dst.set);
	CU_ASSERT_FALSE(rs.has_iface);
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET));
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET6));
	CU_ASSERT_FALSE(rulespec_applies(&rs, AF_UNIX));
}

static void test_long_options(void)
{
	struct rulespec rs = parse_ok("  --protocol TCP --destination-port 8443\t--jump REDIRECT "
	                              "--to-ports 1234 --match comment --comment x  ");

	CU_ASSERT_EQUAL(rs.dport, 8443);
	CU_ASSERT_EQUAL(rs.to_port, 1234);
	CU_ASSERT_STRING_EQUAL(rs.comment, "x");
	rs = parse_ok("-p 6 --source 198.51.100.1 --dst 198.51.100.2 --in-interface eth0 "
	              "-j REDIRECT --to-port 65535");
	CU_ASSERT_EQUAL(rs.to_port, 65535);
	CU_ASSERT_FALSE(rs.has_dport);
	CU_ASSERT_FALSE(rs.has_tcp_match);
	CU_ASSERT_FALSE(rs.has_comment);
	check_v4(&rs.src, "198.51.100.1", "255.255.255.255", false);
	check_v4(&rs.dst, "198.51.100.2", "255.255.255.255", false);
	CU_ASSERT_STRING_EQUAL(rs.iface, "eth0");
}

static void test_v4_addresses(void)
{
	/* The address is stored masked, as iptables stores it. */
	struct rulespec rs = parse_ok("-p tcp -s 198.51.100.7/24 ! -d 198.51.100.200/255.255.255.128 "
	                              "--dport 443 -j REDIRECT --to-port 21443");

	check_v4(&rs.src, "198.51.100.0", "255.255.255.0", false);
	check_v4(&rs.dst, "198.51.100.128", "255.255.255.128", true);
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET));
	CU_ASSERT_FALSE(rulespec_applies(&rs, AF_INET6));

	rs = parse_ok("! --source 0.0.0.0/0 -p tcp -j REDIRECT --to-port 1");
	check_v4(&rs.src, "0.0.0.0", "0.0.0.0", true);
	rs = parse_ok("-d 10.1.2.3/255.0.255.0 -p tcp -j REDIRECT --to-port 1");
	check_v4(&rs.dst, "10.0.2.0", "255.0.255.0", false);
	CU_ASSERT_FALSE(rs.src.set);
}

static void test_v6_addresses(void)
{
	struct rulespec rs = parse_ok("! -s 2001:db8::1/64 -d 2001:db8:1:2::5/ffff:ffff:ffff:: "
	                              "-p tcp --dport 443 -j REDIRECT --to-port 21443");

	check_v6(&rs.src, "2001:db8::", "ffff:ffff:ffff:ffff::", true);
	check_v6(&rs.dst, "2001:db8:1::", "ffff:ffff:ffff::", false);
	CU_ASSERT_FALSE(rulespec_applies(&rs, AF_INET));
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET6));

	rs = parse_ok("-p tcp -d 2001:db8::7 -j REDIRECT --to-port 1");
	check_v6(&rs.dst, "2001:db8::7", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false);
	rs = parse_ok("-p tcp -d 2001:db8::ff/121 -j REDIRECT --to-port 1");
	check_v6(&rs.dst, "2001:db8::80", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80", false);
	rs = parse_ok("-p tcp -s ::ffff:198.51.100.1/128 -j REDIRECT --to-port 1");
	CU_ASSERT_EQUAL(rs.src.family, AF_INET6);
}

static void test_interface(void)
{
	struct rulespec rs = parse_ok("-i eth+ -p tcp -j REDIRECT --to-port 1");

	CU_ASSERT_TRUE(rs.has_iface);
	CU_ASSERT_FALSE(rs.iface_invert);
	CU_ASSERT_STRING_EQUAL(rs.iface, "eth+");
	rs = parse_ok("-p tcp ! -i veth-0123456789 -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.iface_invert);
	CU_ASSERT_STRING_EQUAL(rs.iface, "veth-0123456789");
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET));
	CU_ASSERT_TRUE(rulespec_applies(&rs, AF_INET6));
}

static void test_comments(void)
{
	char text[600], big[RULESPEC_COMMENT_MAX];
	struct rulespec rs;

	rs = parse_ok("-p tcp -j REDIRECT --to-port 1 -m comment --comment \"acme alpn  proxy\"");
	CU_ASSERT_STRING_EQUAL(rs.comment, "acme alpn  proxy");
	rs = parse_ok("-p tcp -j REDIRECT --to-port 1 -m comment --comment 'say \"hi\"'");
	CU_ASSERT_STRING_EQUAL(rs.comment, "say \"hi\"");
	rs = parse_ok("-p tcp -j REDIRECT --to-port 1 -m comment --comment \"a\\\"b\\\\c\"");
	CU_ASSERT_STRING_EQUAL(rs.comment, "a\"b\\c");
	rs = parse_ok("-p tcp -j REDIRECT --to-port 1 -m comment --comment ab'c d'e");
	CU_ASSERT_STRING_EQUAL(rs.comment, "abc de");
	rs = parse_ok("-p tcp -j REDIRECT --to-port 1 -m comment --comment 'x\\y'");
	CU_ASSERT_STRING_EQUAL(rs.comment, "x\\y");

	/* 255 bytes is the most xt_comment_info holds with its NUL. */
	memset(big, 'c', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	snprintf(text, sizeof(text), "-p tcp -j REDIRECT --to-port 1 -m comment --comment %s", big);
	rs = parse_ok(text);
	CU_ASSERT_EQUAL(strlen(rs.comment), RULESPEC_COMMENT_MAX - 1);
	snprintf(text, sizeof(text), "-p tcp -j REDIRECT --to-port 1 -m comment --comment %sc", big);
	parse_err(text, "256");
}

static void test_match_order(void)
{
	struct rulespec rs;

	/* iptables keeps the matches in the order they were first named. */
	rs = parse_ok("-m comment --comment c -p tcp --dport 443 -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.comment_first);
	CU_ASSERT_TRUE(rs.has_tcp_match);
	rs = parse_ok("-p tcp -m tcp -m comment --comment c --dport 443 -j REDIRECT --to-port 1");
	CU_ASSERT_FALSE(rs.comment_first);
	rs = parse_ok("-p tcp -m comment --comment c -m tcp --dport 443 -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.comment_first);
	rs = parse_ok("-p tcp -m tcp -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_FALSE(rs.has_dport);
	rs = parse_ok("-m tcp --dport 80 -p tcp -j REDIRECT --to-port 1");
	CU_ASSERT_EQUAL(rs.dport, 80);
}

/* --syn changes nothing but, like --dport, where the tcp match is loaded. */
static void test_syn(void)
{
	struct rulespec rs, plain;

	rs = parse_ok(RULESPEC_DEFAULT " --syn");
	plain = parse_ok(RULESPEC_DEFAULT);
	CU_ASSERT_EQUAL(memcmp(&rs, &plain, sizeof(rs)), 0);
	rs = parse_ok("-p tcp --syn --dport 443 -j REDIRECT --to-port 21443");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_TRUE(rs.has_dport);
	CU_ASSERT_EQUAL(rs.dport, 443);
	rs = parse_ok("-p tcp --syn -m comment --comment c -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_FALSE(rs.comment_first);
	CU_ASSERT_FALSE(rs.has_dport);
	rs = parse_ok("-p tcp -m comment --comment c --syn -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_TRUE(rs.comment_first);
	rs = parse_ok("-m tcp --syn -p tcp -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_tcp_match);
	/* Without --syn and no tcp option: the tcp match is not the spec's (the firewall adds it
	 * last). */
	rs = parse_ok("-p tcp -m comment --comment c -j REDIRECT --to-port 1");
	CU_ASSERT_FALSE(rs.has_tcp_match);

	parse_err("--syn -p tcp -j REDIRECT --to-port 1", "\"--syn\"");
	parse_err("-p tcp --syn --syn -j REDIRECT --to-port 1", "\"--syn\" given twice");
	parse_err("-p tcp ! --syn -j REDIRECT --to-port 1", "\"--syn\"");
	/* It takes no value: what follows is the next option. */
	parse_err("-p tcp --syn 1 -j REDIRECT --to-port 1", "\"1\"");
}

/* -m addrtype --dst-type LOCAL is accepted (and places the match); nothing else of it is. */
static void test_addrtype(void)
{
	struct rulespec rs;

	rs = parse_ok("-p tcp -m addrtype --dst-type LOCAL --dport 443 -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_addrtype);
	CU_ASSERT_TRUE(rs.has_tcp_match);
	CU_ASSERT_EQUAL(rs.n_matches, 2);
	CU_ASSERT_EQUAL(rs.order[0], RS_MATCH_ADDRTYPE);
	CU_ASSERT_EQUAL(rs.order[1], RS_MATCH_TCP);
	rs = parse_ok("-m comment --comment c -p tcp -m addrtype --dst-type local -m tcp "
	              "-j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_addrtype);
	CU_ASSERT_EQUAL(rs.n_matches, 3);
	CU_ASSERT_EQUAL(rs.order[0], RS_MATCH_COMMENT);
	CU_ASSERT_EQUAL(rs.order[1], RS_MATCH_ADDRTYPE);
	CU_ASSERT_EQUAL(rs.order[2], RS_MATCH_TCP);
	CU_ASSERT_TRUE(rs.comment_first);
	/* As libxt_addrtype reads the list: any case, a prefix names the first type it begins,
	 * a type twice is the type once. */
	rs = parse_ok("-p tcp -m addrtype --dst-type LOC,Local -j REDIRECT --to-port 1");
	CU_ASSERT_TRUE(rs.has_addrtype);
	CU_ASSERT_EQUAL(rs.n_matches, 1);
	/* Without it, nothing of it: the firewall adds it. */
	rs = parse_ok("-p tcp --dport 443 -j REDIRECT --to-port 1");
	CU_ASSERT_FALSE(rs.has_addrtype);
	CU_ASSERT_EQUAL(rs.n_matches, 1);

	/* Only LOCAL: anything else would take, or add, traffic not addressed to this host. */
	parse_err("-p tcp -m addrtype --dst-type UNICAST -j REDIRECT --to-port 1",
	          "\"--dst-type UNICAST\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL,UNICAST -j REDIRECT --to-port 1",
	          "\"--dst-type LOCAL,UNICAST\"");
	parse_err("-p tcp -m addrtype --dst-type U -j REDIRECT --to-port 1", "\"--dst-type U\"");
	parse_err("-p tcp -m addrtype --dst-type BROADCAST -j REDIRECT --to-port 1", "LOCAL");
	parse_err("-p tcp -m addrtype --dst-type LOCALX -j REDIRECT --to-port 1", "\"LOCALX\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL,FOO -j REDIRECT --to-port 1", "\"FOO\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL, -j REDIRECT --to-port 1",
	          "\"--dst-type LOCAL,\"");
	parse_err("-p tcp -m addrtype --dst-type ,LOCAL -j REDIRECT --to-port 1",
	          "\"--dst-type ,LOCAL\"");
	parse_err("-p tcp -m addrtype ! --dst-type LOCAL -j REDIRECT --to-port 1",
	          "\"! --dst-type\"");
	parse_err("-p tcp -m addrtype --src-type LOCAL -j REDIRECT --to-port 1", "\"--src-type\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL --limit-iface-in -j REDIRECT --to-port 1",
	          "\"--limit-iface-in\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL --limit-iface-out -j REDIRECT --to-port 1",
	          "\"--limit-iface-out\"");
	parse_err("-p tcp --dst-type LOCAL -j REDIRECT --to-port 1", "\"-m addrtype\"");
	parse_err("-p tcp -m addrtype -j REDIRECT --to-port 1", "\"--dst-type LOCAL\"");
	parse_err("-p tcp -m addrtype --dst-type LOCAL -m addrtype -j REDIRECT --to-port 1",
	          "\"addrtype\" loaded twice");
	parse_err("-p tcp -m addrtype --dst-type LOCAL --dst-type LOCAL -j REDIRECT --to-port 1",
	          "\"--dst-type\" given twice");
	parse_err("-p tcp -m addrtype --dst-type -j REDIRECT --to-port 1", "\"-j\"");
}

static void test_errors(void)
{
	parse_err("-p tcp -o eth0 -j REDIRECT --to-port 1", "\"-o\"");
	parse_err("-p tcp --dport 443 -j REDIRECT --to-port 1 -A", "\"-A\"");
	parse_err("-p udp --dport 443 -j REDIRECT --to-port 1", "\"udp\"");
	parse_err("-p tcp --dport 443 -j REDIRECT", "--to-ports");
	parse_err("-p tcp --dport 443 -j REDIRECT --to-port", "\"--to-port\"");
	parse_err("-p tcp --dport 443 --to-port 1", "-j REDIRECT");
	parse_err("-p tcp --dport 443", "-j REDIRECT");
	parse_err("--dport 443 -j REDIRECT --to-port 1", "-p tcp");
	parse_err("--dport 443 -p tcp -j REDIRECT --to-port 1", "\"--dport\"");
	parse_err("-j REDIRECT --to-port 1", "-p tcp");
	parse_err("-p tcp --dport 0 -j REDIRECT --to-port 1", "\"0\"");
	parse_err("-p tcp --dport 65536 -j REDIRECT --to-port 1", "\"65536\"");
	parse_err("-p tcp --dport abc -j REDIRECT --to-port 1", "\"abc\"");
	parse_err("-p tcp --dport 99999999999999999999 -j REDIRECT --to-port 1",
	          "\"99999999999999999999\"");
	parse_err("-p tcp --dport -1 -j REDIRECT --to-port 1", "\"-1\"");
	parse_err("-p tcp --dport 443 -j REDIRECT --to-port 0", "\"0\"");
	parse_err("-p tcp --dport 443 -j REDIRECT --to-ports 65536", "\"65536\"");
	parse_err("-p tcp --dport 443 -j REDIRECT --to-ports 1000-2000", "\"1000-2000\"");
	parse_err("-p tcp --dport 443:444 -j REDIRECT --to-ports 1", "\"443:444\"");
	parse_err("-p tcp -s 198.51.100.300 -j REDIRECT --to-port 1", "\"198.51.100.300\"");
	parse_err("-p tcp -s example.com -j REDIRECT --to-port 1", "\"example.com\"");
	parse_err("-p tcp -d [2001:db8::1] -j REDIRECT --to-port 1", "\"[2001:db8::1]\"");
	parse_err("-p tcp -s 198.51.100.1/33 -j REDIRECT --to-port 1", "\"33\"");
	parse_err("-p tcp -s 198.51.100.1/ -j REDIRECT --to-port 1", "\"198.51.100.1/\"");
	parse_err("-p tcp -s 198.51.100.1/255.255.0.x -j REDIRECT --to-port 1", "\"255.255.0.x\"");
	parse_err("-p tcp -s 198.51.100.1/ffff:: -j REDIRECT --to-port 1", "\"ffff::\"");
	parse_err("-p tcp -s 2001:db8::/129 -j REDIRECT --to-port 1", "\"129\"");
	parse_err("-p tcp -s 2001:db8::/0129 -j REDIRECT --to-port 1", "\"0129\"");
	parse_err("-p tcp -s 2001:db8::/255.0.0.0 -j REDIRECT --to-port 1", "\"255.0.0.0\"");
	parse_err("-p tcp -s 198.51.100.1 -d 2001:db8::1 -j REDIRECT --to-port 1", "families");
	parse_err("-p tcp -j DNAT --to-destination 198.51.100.1", "\"-j DNAT\"");
	parse_err("-p tcp -j redirect --to-port 1", "\"-j redirect\"");
	parse_err("-p tcp -m state --state NEW -j REDIRECT --to-port 1", "\"-m state\"");
	parse_err("-p tcp --comment x -j REDIRECT --to-port 1", "\"--comment\"");
	parse_err("-p tcp -m comment -j REDIRECT --to-port 1", "\"-m comment\"");
	parse_err("-p tcp -m comment --comment '' -j REDIRECT --to-port 1", "comment");
	parse_err("-p tcp -m comment --comment 'a\tb' -j REDIRECT --to-port 1", "control");
	parse_err("-p tcp -m comment --comment 'open -j REDIRECT --to-port 1", "quote");
	parse_err("-p tcp -m comment --comment \"open -j REDIRECT --to-port 1", "quote");
	parse_err("! -p tcp -j REDIRECT --to-port 1", "\"-p\"");
	parse_err("-p tcp ! --dport 443 -j REDIRECT --to-port 1", "\"--dport\"");
	parse_err("-p tcp -s ! 198.51.100.1 -j REDIRECT --to-port 1", "\"!\"");
	parse_err("-p tcp -j REDIRECT --to-port 1 !", "\"!\"");
	parse_err("-p tcp ! ! -s 198.51.100.1 -j REDIRECT --to-port 1", "\"!\"");
	parse_err("-p tcp -s 198.51.100.1 -s 198.51.100.2 -j REDIRECT --to-port 1", "\"-s\"");
	parse_err("-p tcp -p tcp -j REDIRECT --to-port 1", "\"-p\"");
	parse_err("-p tcp -m tcp -m tcp -j REDIRECT --to-port 1", "\"tcp\"");
	parse_err("-p tcp -i abcdefghijklmnop -j REDIRECT --to-port 1", "\"abcdefghijklmnop\"");
	parse_err("-p tcp -i a/b -j REDIRECT --to-port 1", "\"a/b\"");
	parse_err("-p tcp -j REDIRECT --to-port 1 --random", "\"--random\"");
	parse_err("-p tcp -j REDIRECT --to-port 1 -t filter", "\"-t\"");
	parse_err("", "-p tcp");
}

static void test_err_truncation(void)
{
	struct rulespec rs;
	char err[8];

	/* A short buffer still gets a terminated message. */
	memset(err, 'x', sizeof(err));
	CU_ASSERT_EQUAL(rulespec_parse("-o eth0", &rs, err, sizeof(err)), -1);
	CU_ASSERT_EQUAL(strlen(err), sizeof(err) - 1);
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "default", test_default },
		{ "long options", test_long_options },
		{ "IPv4 addresses", test_v4_addresses },
		{ "IPv6 addresses", test_v6_addresses },
		{ "interface", test_interface },
		{ "comments", test_comments },
		{ "match order", test_match_order },
		{ "--syn", test_syn },
		{ "addrtype", test_addrtype },
		{ "errors", test_errors },
		{ "error truncation", test_err_truncation },
	};

	if (TU_ADD_SUITE("rulespec", tests) != 0)
		return 99;
	return tu_run();
}
