/* Parse an iptables-style rule specification (ACME_ALPN_PROXY_RULESPEC).
 *
 * The original tool ran `iptables -t nat -A PREROUTING <spec>`, so the text follows iptables'
 * syntax and rules: options in any order, a match's options only after the match is loaded
 * (-p tcp or -m tcp before --dport, -m comment before --comment, -j REDIRECT before
 * --to-ports), "!" in front of the option it inverts. Only what a REDIRECT rule for this
 * program needs is accepted; anything else is refused by name, so that nothing half-understood
 * is ever installed. Pure: no I/O, no DNS, no allocation. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rulespec.h"

/* Longer than any valid token (a comment holds at most 255 bytes), so that an over-long
 * comment is reported as such rather than as an over-long token. */
#define RS_TOKEN_MAX 1024

struct rs_lexer {
	const char *p;
	char tok[RS_TOKEN_MAX];
};

enum rs_lex { RS_LEX_END, RS_LEX_TOKEN, RS_LEX_ERROR };

/* Next whitespace-separated token into lx->tok. Quotes group words as in a shell, so that a
 * comment with spaces can be written as in the iptables command line: '...' is literal,
 * inside "..." a backslash escapes " and \, outside quotes a backslash escapes any byte. */
static enum rs_lex rs_next(struct rs_lexer *lx, char *err, size_t errlen)
{
	size_t n = 0;
	char quote = 0;

	while (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r')
		lx->p++;
	if (*lx->p == '\0')
		return RS_LEX_END;
	for (;;) {
		char c = *lx->p;

		if (c == '\0') {
			if (quote != 0) {
				snprintf(err, errlen, "unterminated %c quote in \"%.*s\"", quote,
				         (int)(n > 40 ? 40 : n), lx->tok);
				return RS_LEX_ERROR;
			}
			break;
		}
		lx->p++;
		if (quote == 0 && (c == ' ' || c == '\t' || c == '\n' || c == '\r'))
			break;
		if (quote == 0 && (c == '\'' || c == '"')) {
			quote = c;
			continue;
		}
		if (quote != 0 && c == quote) {
			quote = 0;
			continue;
		}
		if (c == '\\' && quote != '\'' && *lx->p != '\0' &&
		    (quote == 0 || *lx->p == '"' || *lx->p == '\\'))
			c = *lx->p++;
		if (n + 1 >= sizeof(lx->tok)) {
			snprintf(err, errlen, "token \"%.40s...\" is too long", lx->tok);
			return RS_LEX_ERROR;
		}
		lx->tok[n++] = c;
	}
	lx->tok[n] = '\0';
	return RS_LEX_TOKEN;
}

/* A port as iptables takes it for --dport/--to-ports, minus service names (no lookups): a
 * decimal number 1..65535. */
static int rs_port(const char *s, const char *opt, uint16_t *out, char *err, size_t errlen)
{
	unsigned long v = 0;
	const char *q;

	for (q = s; *q >= '0' && *q <= '9'; q++) {
		v = v * 10 + (unsigned long)(*q - '0');
		if (v > 65535)
			break;
	}
	if (q == s || *q != '\0' || v == 0 || v > 65535) {
		if (strchr(s, '-') != NULL || strchr(s, ':') != NULL)
			snprintf(err, errlen, "port ranges are not supported: \"%s\" after \"%s\"", s,
			         opt);
		else
			snprintf(err, errlen, "invalid port \"%s\" after \"%s\" (expected 1-65535)", s,
			         opt);
		return -1;
	}
	*out = (uint16_t)v;
	return 0;
}

static void rs_prefix_mask(uint8_t *mask, size_t len, unsigned bits)
{
	size_t i;

	memset(mask, 0, len);
	for (i = 0; i < len && bits > 0; i++) {
		unsigned b = bits >= 8 ? 8 : bits;

		mask[i] = (uint8_t)(0xff00u >> b);
		bits -= b;
	}
}

/* ADDR[/MASK] with MASK a prefix length or, as iptables allows, a dotted (IPv4) or colon
 * (IPv6) mask. Literal addresses only: a host name would mean a DNS lookup at start. The
 * address is stored ANDed with the mask, as iptables does (-s 198.51.100.7/24 is saved as
 * 198.51.100.0/24); a rule built otherwise would never compare equal to iptables' one. */
static int rs_addr_parse(const char *text, const char *opt, struct rs_addr *a, char *err,
                         size_t errlen)
{
	char buf[INET6_ADDRSTRLEN + 1 + INET6_ADDRSTRLEN + 1];
	char *slash, *end;
	const char *mtext = NULL;
	uint8_t *addr, *mask;
	size_t len, i;

	if (strlen(text) >= sizeof(buf)) {
		snprintf(err, errlen, "invalid address \"%.60s...\" after \"%s\"", text, opt);
		return -1;
	}
	strcpy(buf, text);
	slash = strchr(buf, '/');
	if (slash != NULL) {
		*slash = '\0';
		mtext = slash + 1;
	}
	if (inet_pton(AF_INET, buf, &a->addr.v4) == 1) {
		a->family = AF_INET;
		addr = (uint8_t *)&a->addr.v4;
		mask = (uint8_t *)&a->mask.v4;
		len = sizeof(a->addr.v4);
	} else if (inet_pton(AF_INET6, buf, &a->addr.v6) == 1) {
		a->family = AF_INET6;
		addr = (uint8_t *)&a->addr.v6;
		mask = (uint8_t *)&a->mask.v6;
		len = sizeof(a->addr.v6);
	} else {
		snprintf(err, errlen, "invalid address \"%s\" after \"%s\" (expected an IPv4 or IPv6 "
		         "address, no host names)", text, opt);
		return -1;
	}
	if (mtext == NULL) {
		memset(mask, 0xff, len);
	} else if (mtext[0] >= '0' && mtext[0] <= '9' && strspn(mtext, "0123456789") ==
	           strlen(mtext)) {
		unsigned long bits = strtoul(mtext, &end, 10);

		if (strlen(mtext) > 3 || bits > len * 8) {
			snprintf(err, errlen, "invalid mask \"%s\" in \"%s\" after \"%s\" (prefix length "
			         "0-%zu)", mtext, text, opt, len * 8);
			return -1;
		}
		rs_prefix_mask(mask, len, (unsigned)bits);
	} else if (inet_pton(a->family, mtext, mask) != 1) {
		snprintf(err, errlen, "invalid mask \"%s\" in \"%s\" after \"%s\"", mtext, text, opt);
		return -1;
	}
	for (i = 0; i < len; i++)
		addr[i] &= mask[i];
	a->set = true;
	return 0;
}

/* -i NAME as xtables_parse_interface takes it: at most IFNAMSIZ-1 bytes, '+' at the end is a
 * wildcard and stays in the name. '/' and ' ' can never be in a kernel interface name. */
static int rs_iface(const char *s, struct rulespec *rs, char *err, size_t errlen)
{
	size_t len = strlen(s);

	if (len == 0 || len >= IFNAMSIZ || strpbrk(s, "/ ") != NULL) {
		snprintf(err, errlen, "invalid interface name \"%s\" after \"-i\" (1-%d bytes, no '/' "
		         "or ' ')", s, IFNAMSIZ - 1);
		return -1;
	}
	memcpy(rs->iface, s, len + 1);
	rs->has_iface = true;
	return 0;
}

static int rs_comment(const char *s, struct rulespec *rs, char *err, size_t errlen)
{
	size_t len = strlen(s), i;

	/* An empty comment could not tell our rules from anyone else's. */
	if (len == 0 || len >= RULESPEC_COMMENT_MAX) {
		snprintf(err, errlen, "comment after \"--comment\" must be 1-%d bytes, not %zu",
		         RULESPEC_COMMENT_MAX - 1, len);
		return -1;
	}
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			snprintf(err, errlen, "control character in comment \"%s\"", s);
			return -1;
		}
	}
	memcpy(rs->comment, s, len + 1);
	rs->has_comment = true;
	return 0;
}

enum rs_opt { RS_PROTO, RS_SRC, RS_DST, RS_IFACE, RS_MATCH, RS_JUMP, RS_DPORT, RS_COMMENT,
	      RS_TO_PORTS, RS_SYN, RS_DST_TYPE, RS_ADDRTYPE_OTHER, RS_UNKNOWN };

/* The option names iptables accepts for what we support, long forms included. */
static const struct {
	const char *name;
	enum rs_opt opt;
} rs_options[] = {
	{ "-p", RS_PROTO }, { "--protocol", RS_PROTO },
	{ "-s", RS_SRC }, { "--source", RS_SRC }, { "--src", RS_SRC },
	{ "-d", RS_DST }, { "--destination", RS_DST }, { "--dst", RS_DST },
	{ "-i", RS_IFACE }, { "--in-interface", RS_IFACE },
	{ "-m", RS_MATCH }, { "--match", RS_MATCH },
	{ "-j", RS_JUMP }, { "--jump", RS_JUMP },
	{ "--dport", RS_DPORT }, { "--destination-port", RS_DPORT },
	{ "--comment", RS_COMMENT },
	{ "--to-ports", RS_TO_PORTS }, { "--to-port", RS_TO_PORTS },
	{ "--syn", RS_SYN },
	{ "--dst-type", RS_DST_TYPE },
	/* addrtype's other options: named so that the message can say why they are refused. */
	{ "--src-type", RS_ADDRTYPE_OTHER }, { "--limit-iface-in", RS_ADDRTYPE_OTHER },
	{ "--limit-iface-out", RS_ADDRTYPE_OTHER },
};

/* The address types of libxt_addrtype, in its order: bit i is 1 << i (XT_ADDRTYPE_*, the
 * kernel's RTN_* shifted). */
static const char *const rs_addr_types[] = {
	"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
	"UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE",
};
#define RS_ADDRTYPE_LOCAL (1u << 2)

/* The option's kind, and in *name its spelling (a static string: lx->tok is overwritten by
 * the option's value). */
static enum rs_opt rs_lookup(const char *tok, const char **name)
{
	size_t i;

	for (i = 0; i < sizeof(rs_options) / sizeof(rs_options[0]); i++) {
		if (strcmp(tok, rs_options[i].name) == 0) {
			*name = rs_options[i].name;
			return rs_options[i].opt;
		}
	}
	return RS_UNKNOWN;
}

struct rs_state {
	bool proto, comment_loaded, redirect, to_port, syn, addrtype_loaded, dst_type;
	bool invert;          /* the previous token was "!" */
};

static int rs_match_twice(const char *name, char *err, size_t errlen)
{
	snprintf(err, errlen, "match \"%s\" loaded twice", name);
	return -1;
}

static int rs_needs(const char *opt, const char *before, char *err, size_t errlen)
{
	snprintf(err, errlen, "\"%s\" needs \"%s\" before it", opt, before);
	return -1;
}

static int rs_twice(const char *opt, char *err, size_t errlen)
{
	snprintf(err, errlen, "\"%s\" given twice", opt);
	return -1;
}

static void rs_loaded(struct rulespec *rs, enum rs_match m)
{
	if (rs->n_matches < sizeof(rs->order) / sizeof(rs->order[0]))
		rs->order[rs->n_matches++] = m;
}

/* The tcp match is loaded now: remember whether the comment match came first. */
static void rs_load_tcp(struct rulespec *rs, const struct rs_state *st)
{
	if (!rs->has_tcp_match) {
		rs->has_tcp_match = true;
		rs->comment_first = st->comment_loaded;
		rs_loaded(rs, RS_MATCH_TCP);
	}
}

/* --dst-type TYPE[,TYPE...] as libxt_addrtype's parse_types reads it: each name compared
 * without case over its own length (so a prefix names the first type it begins), no empty
 * name. The types must come to LOCAL alone: the redirect is for this host's own addresses,
 * and any other type would take connections that this host only routes (containers, VMs,
 * VPN clients) to its web server, or, if LOCAL were missing, take nothing at all. */
static int rs_dst_type(const char *s, const char *opt, char *err, size_t errlen)
{
	unsigned mask = 0;
	const char *p = s;

	for (;;) {
		size_t len = strcspn(p, ","), i;

		for (i = 0; len > 0 && i < sizeof(rs_addr_types) / sizeof(rs_addr_types[0]); i++) {
			if (strncasecmp(p, rs_addr_types[i], len) == 0)
				break;
		}
		if (len == 0) {
			snprintf(err, errlen, "empty address type in \"%s %s\"", opt, s);
			return -1;
		}
		if (i == sizeof(rs_addr_types) / sizeof(rs_addr_types[0])) {
			snprintf(err, errlen, "unknown address type \"%.*s\" in \"%s %s\" (types: "
			         "UNSPEC UNICAST LOCAL BROADCAST ANYCAST MULTICAST BLACKHOLE UNREACHABLE "
			         "PROHIBIT THROW NAT XRESOLVE)", (int)len, p, opt, s);
			return -1;
		}
		mask |= 1u << i;
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	if (mask != RS_ADDRTYPE_LOCAL) {
		snprintf(err, errlen, "\"%s %s\" is not supported: the redirect only ever matches "
		         "LOCAL destinations (connections addressed to this host, never those it "
		         "routes for others); write \"%s LOCAL\" or leave -m addrtype out", opt, s, opt);
		return -1;
	}
	return 0;
}

/* One option and its argument; lx->tok holds the option. */
static int rs_option(struct rs_lexer *lx, struct rs_state *st, struct rulespec *rs, char *err,
                     size_t errlen)
{
	const char *opt = NULL;
	bool invert = st->invert;
	enum rs_opt kind;
	enum rs_lex r;

	st->invert = false;
	if (strcmp(lx->tok, "!") == 0) {
		if (invert) {
			snprintf(err, errlen, "\"!\" given twice");
			return -1;
		}
		st->invert = true;
		return 0;
	}
	kind = rs_lookup(lx->tok, &opt);
	if (kind == RS_UNKNOWN) {
		snprintf(err, errlen, "unsupported option \"%.60s\"", lx->tok);
		return -1;
	}
	if (kind == RS_ADDRTYPE_OTHER) {
		snprintf(err, errlen, "unsupported option \"%s\" (of -m addrtype only "
		         "\"--dst-type LOCAL\" is supported)", opt);
		return -1;
	}
	if (invert && kind == RS_DST_TYPE) {
		snprintf(err, errlen, "\"! %s\" is not supported: the redirect always matches "
		         "LOCAL destinations only", opt);
		return -1;
	}
	if (invert && kind != RS_SRC && kind != RS_DST && kind != RS_IFACE) {
		snprintf(err, errlen, "\"!\" before \"%s\" is not supported (only before -s, -d, -i)",
		         opt);
		return -1;
	}
	if (kind == RS_SYN) {
		/* The only option without a value. A no-op but for where it loads the tcp match
		 * (which decides the order of the matches in the entry): the SYN match is always
		 * there. iptables refuses a second --syn, so do we. */
		if (!st->proto && !rs->has_tcp_match)
			return rs_needs(opt, "-p tcp", err, errlen);
		if (st->syn)
			return rs_twice(opt, err, errlen);
		st->syn = true;
		rs_load_tcp(rs, st);
		return 0;
	}
	r = rs_next(lx, err, errlen);
	if (r == RS_LEX_ERROR)
		return -1;
	if (r == RS_LEX_END) {
		snprintf(err, errlen, "option \"%s\" needs a value", opt);
		return -1;
	}
	if (strcmp(lx->tok, "!") == 0) {
		/* iptables' old "-s ! ADDR" form; it refuses it today, so do we. */
		snprintf(err, errlen, "\"!\" after \"%s\": write \"! %s VALUE\"", opt, opt);
		return -1;
	}

	switch (kind) {
	case RS_PROTO:
		if (st->proto)
			return rs_twice(opt, err, errlen);
		if (strcasecmp(lx->tok, "tcp") != 0 && strcmp(lx->tok, "6") != 0) {
			snprintf(err, errlen, "unsupported protocol \"%s\" after \"%s\" (only tcp)",
			         lx->tok, opt);
			return -1;
		}
		st->proto = true;
		return 0;
	case RS_SRC:
	case RS_DST: {
		struct rs_addr *a = kind == RS_SRC ? &rs->src : &rs->dst;

		if (a->set)
			return rs_twice(opt, err, errlen);
		if (rs_addr_parse(lx->tok, opt, a, err, errlen) < 0)
			return -1;
		a->invert = invert;
		return 0;
	}
	case RS_IFACE:
		if (rs->has_iface)
			return rs_twice(opt, err, errlen);
		if (rs_iface(lx->tok, rs, err, errlen) < 0)
			return -1;
		rs->iface_invert = invert;
		return 0;
	case RS_MATCH:
		if (strcmp(lx->tok, "tcp") == 0) {
			if (rs->has_tcp_match)
				return rs_match_twice("tcp", err, errlen);
			rs_load_tcp(rs, st);
		} else if (strcmp(lx->tok, "comment") == 0) {
			if (st->comment_loaded)
				return rs_match_twice("comment", err, errlen);
			st->comment_loaded = true;
			rs_loaded(rs, RS_MATCH_COMMENT);
		} else if (strcmp(lx->tok, "addrtype") == 0) {
			if (st->addrtype_loaded)
				return rs_match_twice("addrtype", err, errlen);
			st->addrtype_loaded = true;
			rs_loaded(rs, RS_MATCH_ADDRTYPE);
		} else {
			snprintf(err, errlen, "unsupported match \"%s %s\" (only tcp, comment and "
			         "addrtype)", opt, lx->tok);
			return -1;
		}
		return 0;
	case RS_JUMP:
		if (st->redirect)
			return rs_twice(opt, err, errlen);
		if (strcmp(lx->tok, "REDIRECT") != 0) {
			snprintf(err, errlen, "unsupported target \"%s %s\" (only REDIRECT)", opt,
			         lx->tok);
			return -1;
		}
		st->redirect = true;
		return 0;
	case RS_DPORT:
		/* iptables loads the tcp match by itself for a tcp option, once -p tcp is given. */
		if (!st->proto && !rs->has_tcp_match)
			return rs_needs(opt, "-p tcp", err, errlen);
		if (rs->has_dport)
			return rs_twice(opt, err, errlen);
		if (rs_port(lx->tok, opt, &rs->dport, err, errlen) < 0)
			return -1;
		rs->has_dport = true;
		rs_load_tcp(rs, st);
		return 0;
	case RS_COMMENT:
		if (!st->comment_loaded)
			return rs_needs("--comment", "-m comment", err, errlen);
		if (rs->has_comment)
			return rs_twice(opt, err, errlen);
		return rs_comment(lx->tok, rs, err, errlen);
	case RS_TO_PORTS:
		if (!st->redirect)
			return rs_needs(opt, "-j REDIRECT", err, errlen);
		if (st->to_port)
			return rs_twice(opt, err, errlen);
		if (rs_port(lx->tok, opt, &rs->to_port, err, errlen) < 0)
			return -1;
		st->to_port = true;
		return 0;
	case RS_DST_TYPE:
		if (!st->addrtype_loaded)
			return rs_needs(opt, "-m addrtype", err, errlen);
		if (st->dst_type)
			return rs_twice(opt, err, errlen);
		if (rs_dst_type(lx->tok, opt, err, errlen) < 0)
			return -1;
		st->dst_type = true;
		rs->has_addrtype = true;
		return 0;
	case RS_SYN:
	case RS_ADDRTYPE_OTHER:
	case RS_UNKNOWN:
		break;
	}
	snprintf(err, errlen, "unsupported option \"%s\"", opt);
	return -1;
}

int rulespec_parse(const char *text, struct rulespec *out, char *err, size_t errlen)
{
	struct rs_lexer lx;
	struct rs_state st;
	struct rulespec rs;
	enum rs_lex r;

	if (errlen > 0)
		err[0] = '\0';
	memset(&rs, 0, sizeof(rs));
	memset(&st, 0, sizeof(st));
	lx.p = text;
	while ((r = rs_next(&lx, err, errlen)) == RS_LEX_TOKEN) {
		if (rs_option(&lx, &st, &rs, err, errlen) < 0)
			return -1;
	}
	if (r == RS_LEX_ERROR)
		return -1;
	if (st.invert) {
		snprintf(err, errlen, "\"!\" at the end, with nothing to invert");
		return -1;
	}
	if (!st.proto) {
		snprintf(err, errlen, "\"-p tcp\" is missing (REDIRECT needs it)");
		return -1;
	}
	if (!st.redirect) {
		snprintf(err, errlen, "\"-j REDIRECT\" is missing");
		return -1;
	}
	if (!st.to_port) {
		snprintf(err, errlen, "\"--to-ports PORT\" is missing after \"-j REDIRECT\"");
		return -1;
	}
	if (st.addrtype_loaded && !st.dst_type) {
		snprintf(err, errlen, "\"-m addrtype\" without \"--dst-type LOCAL\"");
		return -1;
	}
	if (st.comment_loaded && !rs.has_comment) {
		snprintf(err, errlen, "\"-m comment\" without \"--comment TEXT\"");
		return -1;
	}
	if (rs.src.set && rs.dst.set && rs.src.family != rs.dst.family) {
		snprintf(err, errlen, "source and destination are of different families (-s is %s, "
		         "-d is %s)", rs.src.family == AF_INET ? "IPv4" : "IPv6",
		         rs.dst.family == AF_INET ? "IPv4" : "IPv6");
		return -1;
	}
	*out = rs;
	return 0;
}

bool rulespec_applies(const struct rulespec *rs, int family)
{
	if (family != AF_INET && family != AF_INET6)
		return false;
	if (rs->src.set && rs->src.family != family)
		return false;
	if (rs->dst.set && rs->dst.family != family)
		return false;
	return true;
}
