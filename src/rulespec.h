/* Parse an iptables-style rule specification (ACME_ALPN_PROXY_RULESPEC). Pure, unit tested. */
#ifndef RULESPEC_H
#define RULESPEC_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#define RULESPEC_DEFAULT \
	"-p tcp --dport 443 -j REDIRECT --to-port 21443 -m comment --comment acme-alpn-proxy"
#define RULESPEC_COMMENT_MAX 256 /* xt_comment_info: 256 bytes including the NUL */

struct rs_addr {
	bool set;
	bool invert;          /* "! -s ADDR" */
	int family;           /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr, mask;
};

struct rulespec {
	bool has_dport;
	uint16_t dport;       /* --dport, host order */
	struct rs_addr src, dst;
	bool has_iface;
	bool iface_invert;
	char iface[IFNAMSIZ]; /* -i; a trailing '+' is a wildcard as in iptables */
	bool has_comment;
	char comment[RULESPEC_COMMENT_MAX];
	uint16_t to_port;     /* --to-port(s), host order; required */
	/* How iptables would lay the rule out, so that the entry we build is byte for byte the one
	 * `iptables -I PREROUTING <spec>` builds (and the one the original tool left behind):
	 * iptables adds a "tcp" match only for -m tcp or a tcp option such as --dport or --syn, and
	 * keeps the matches in the order they were first named. The firewall always adds the tcp
	 * match (for --syn): without has_tcp_match, last, as iptables would for "<spec> --syn". */
	bool has_tcp_match;
	bool comment_first;   /* -m comment came before the tcp match */
	/* -m addrtype --dst-type LOCAL, named by the spec. The rule always matches LOCAL
	 * destinations only (see firewall.h), with or without it; the spec only decides where
	 * the match sits. Any other --dst-type is refused. */
	bool has_addrtype;
	/* The matches the spec loads itself, in the order first named (iptables keeps that
	 * order in the entry); the firewall appends those it always adds and the spec did not
	 * name: tcp (--syn), addrtype, comment (the pid), in this order. */
	enum rs_match { RS_MATCH_TCP, RS_MATCH_COMMENT, RS_MATCH_ADDRTYPE } order[3];
	size_t n_matches;
};

/* Parse text into *out. Returns 0, or -1 with a one-line message naming the offending token
 * in err (always NUL-terminated). "-p tcp" and "-j REDIRECT" are required. "--syn" is accepted
 * (after -p tcp, as iptables takes it) and changes nothing: the rule installed always matches
 * SYN packets only (see firewall.h), with or without it. "! --syn" is refused.
 * "-m addrtype --dst-type TYPE[,TYPE...]" is accepted when the types (names as iptables
 * knows them, any case, prefixes allowed) come to LOCAL alone: the rule installed always
 * matches only traffic addressed to this host, with or without it. Other types, "!", and
 * --src-type are refused by name. */
int rulespec_parse(const char *text, struct rulespec *out, char *err, size_t errlen);

/* Whether the rule applies to family (AF_INET, AF_INET6): false when -s/-d name the other one. */
bool rulespec_applies(const struct rulespec *rs, int family);

#endif
