/* Unit tests of the ClientHello parser: captured hellos from real clients, every prefix, every
 * re-recording, and crafted hellos for each rule and each length field. */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clienthello.h"
#include "hello_builder.h"
#include "testutil.h"

#define BUF_MAX (1 << 18) /* a 16 KiB hello in 1-byte records takes 6 bytes per byte */

/* Parsers and buffers are large: keep them off the stack. */
static struct hello_parser parser_a, parser_b;
static uint8_t msgbuf[BUF_MAX], inbuf[BUF_MAX];

/* ---- building input ------------------------------------------------------------------------ */

/* A byte buffer with nested length-prefixed vectors. */
struct builder {
	uint8_t *d;
	size_t n;
	size_t at[8], width[8];
	int depth;
};

static void put(struct builder *b, const void *p, size_t n)
{
	CU_ASSERT_FATAL(b->n + n <= BUF_MAX);
	memcpy(b->d + b->n, p, n);
	b->n += n;
}

static void put_uint(struct builder *b, size_t v, size_t width)
{
	uint8_t x[3];
	size_t i;

	for (i = 0; i < width; i++)
		x[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
	put(b, x, width);
}

static void vec_open(struct builder *b, size_t width)
{
	CU_ASSERT_FATAL(b->depth < 8);
	b->at[b->depth] = b->n;
	b->width[b->depth++] = width;
	put_uint(b, 0, width);
}

/* Closes the innermost vector, writing its length plus delta (delta != 0 forges a length). */
static void vec_close(struct builder *b, int delta)
{
	size_t at, width, len, i;

	CU_ASSERT_FATAL(b->depth > 0);
	at = b->at[--b->depth];
	width = b->width[b->depth];
	len = b->n - at - width + (size_t)(long)delta;
	for (i = 0; i < width; i++)
		b->d[at + i] = (uint8_t)(len >> (8 * (width - 1 - i)));
}

/* Length fields a crafted hello can forge, and fields after which it can end. */
enum field {
	F_NONE, F_REC, F_HS, F_SID, F_CS, F_COMP, F_EXTS, F_EXT, F_ALPN_LIST, F_ALPN_NAME,
	F_SNI_LIST, F_SNI_NAME,
};

struct spec {
	int hs_type;          /* 0 means 1 (client_hello) */
	const char *sni;      /* NULL: no server_name extension */
	const char *alpn[5];  /* NULL-terminated; none: no ALPN extension */
	size_t sid_len;       /* session id length */
	size_t n_suites;      /* cipher suites; 0 means 4 */
	size_t n_comp;        /* compression methods; 0 means 1 */
	bool empty_suites, odd_suites, empty_comp, empty_alpn, empty_sni;
	bool no_exts;         /* an old hello without extensions block */
	bool dup;             /* supported_groups twice */
	size_t pad;           /* length of the last extension, padding (21) */
	enum field cut;       /* the message ends right after this field */
	enum field bump;      /* this length field is written as its length + delta */
	int delta;
};

static int delta_of(const struct spec *s, enum field f)
{
	return s->bump == f ? s->delta : 0;
}

/* Writes the handshake message of s to out, returns its length. */
static size_t build_msg(const struct spec *s, uint8_t *out)
{
	static const uint8_t zero[HELLO_MAX_LIMIT];
	struct builder b = { .d = out };
	size_t i, n;

	put_uint(&b, s->hs_type ? (size_t)s->hs_type : 1, 1);
	vec_open(&b, 3);
	put_uint(&b, 0x0303, 2);
	for (i = 0; i < 32; i++)
		put_uint(&b, 0xa0 + i, 1);
	vec_open(&b, 1);
	put(&b, zero, s->sid_len);
	vec_close(&b, delta_of(s, F_SID));
	if (s->cut == F_SID)
		goto end;
	vec_open(&b, 2);
	n = s->empty_suites ? 0 : s->n_suites ? s->n_suites : 4;
	for (i = 0; i < n; i++)
		put_uint(&b, 0x1301 + i, 2);
	if (s->odd_suites)
		put_uint(&b, 0x13, 1);
	vec_close(&b, delta_of(s, F_CS));
	if (s->cut == F_CS)
		goto end;
	vec_open(&b, 1);
	put(&b, zero, s->empty_comp ? 0 : s->n_comp ? s->n_comp : 1);
	vec_close(&b, delta_of(s, F_COMP));
	if (s->cut == F_COMP || s->no_exts)
		goto end;
	vec_open(&b, 2);
	if (s->sni != NULL) {
		put_uint(&b, 0, 2);
		vec_open(&b, 2);
		vec_open(&b, 2);
		if (!s->empty_sni) {
			put_uint(&b, 0, 1);
			vec_open(&b, 2);
			put(&b, s->sni, strlen(s->sni));
			vec_close(&b, delta_of(s, F_SNI_NAME));
		}
		vec_close(&b, delta_of(s, F_SNI_LIST));
		vec_close(&b, 0);
	}
	for (i = 0; i < (s->dup ? 2u : 1u); i++) {
		put_uint(&b, 10, 2); /* supported_groups: x25519 */
		put_uint(&b, 4, 2);
		put_uint(&b, 2, 2);
		put_uint(&b, 29, 2);
	}
	if (s->alpn[0] != NULL || s->empty_alpn) {
		put_uint(&b, 16, 2);
		vec_open(&b, 2);
		vec_open(&b, 2);
		for (i = 0; s->alpn[i] != NULL; i++) {
			vec_open(&b, 1);
			put(&b, s->alpn[i], strlen(s->alpn[i]));
			vec_close(&b, s->alpn[i + 1] == NULL ? delta_of(s, F_ALPN_NAME) : 0);
		}
		vec_close(&b, delta_of(s, F_ALPN_LIST));
		vec_close(&b, 0);
	}
	put_uint(&b, 21, 2);
	vec_open(&b, 2);
	put(&b, zero, s->pad);
	vec_close(&b, delta_of(s, F_EXT));
	vec_close(&b, delta_of(s, F_EXTS));
end:
	vec_close(&b, delta_of(s, F_HS));
	return b.n;
}

/* Cuts the handshake message msg[0..n) into TLS records (hb_records) in out (BUF_MAX bytes).
 * Returns the bytes written. */
static size_t to_records(uint8_t *out, const uint8_t *msg, size_t n, const size_t *frag,
                         size_t nfrag)
{
	size_t len = 0;

	CU_ASSERT_FATAL(hb_records(out, BUF_MAX, &len, msg, n, frag, nfrag) == 0);
	return len;
}

/* A crafted hello in one record, whose length field may be forged too. */
static size_t build_hello(const struct spec *s, uint8_t *out)
{
	size_t n = build_msg(s, msgbuf), len;

	len = to_records(out, msgbuf, n, &n, 1);
	if (s->bump == F_REC) {
		n += (size_t)(long)s->delta;
		out[3] = (uint8_t)(n >> 8);
		out[4] = (uint8_t)n;
	}
	return len;
}

/* ---- parsing ------------------------------------------------------------------------------- */

static void expect_same_info(const struct hello_info *a, const struct hello_info *b)
{
	CU_ASSERT_EQUAL(a->acme, b->acme);
	CU_ASSERT_EQUAL(a->has_alpn, b->has_alpn);
	CU_ASSERT_EQUAL(a->has_sni, b->has_sni);
	CU_ASSERT_EQUAL(a->alpn_count, b->alpn_count);
	CU_ASSERT_STRING_EQUAL(a->alpn, b->alpn);
	CU_ASSERT_STRING_EQUAL(a->sni, b->sni);
	CU_ASSERT_EQUAL(a->hello_len, b->hello_len);
}

/* Parses in[0..n) whole and byte by byte; both must agree. Returns the result, *info on DONE. */
static enum hello_result parse_all(const uint8_t *in, size_t n, struct hello_info *info)
{
	struct hello_info whole, bytes;
	enum hello_result r, r2 = HELLO_NEED_MORE;
	size_t i;

	memset(&whole, 0, sizeof(whole));
	memset(&bytes, 0, sizeof(bytes));
	r = hello_parse(hb_fresh(&parser_a, 0x00, 0), in, n, &whole);
	hb_fresh(&parser_b, 0xff, 0);
	for (i = 1; i <= n && r2 == HELLO_NEED_MORE; i++)
		r2 = hello_parse(&parser_b, in, i, &bytes);
	CU_ASSERT_EQUAL(r, r2);
	if (r == HELLO_DONE && r2 == HELLO_DONE)
		expect_same_info(&whole, &bytes);
	if (info != NULL)
		*info = whole;
	return r;
}

static enum hello_result parse_spec(const struct spec *s, struct hello_info *info)
{
	return parse_all(inbuf, build_hello(s, inbuf), info);
}

/* ---- captured hellos ----------------------------------------------------------------------- */

static const struct captured {
	const char *file;
	bool acme;
	const char *alpn, *sni;
} captured[] = {
	{ "chromium.bin", false, "h2,http/1.1", "localhost" },
	{ "curl.bin", false, "h2,http/1.1", "localhost" },
	{ "gnutls-acme.bin", true, "acme-tls/1", "" },
	{ "node-acme.bin", true, "acme-tls/1", "node.example.test" },
	{ "openssl-acme.bin", true, "acme-tls/1", "example.test" },
	{ "openssl-h2.bin", false, "h2,http/1.1", "www.example.test" },
	{ "python-acme.bin", true, "acme-tls/1", "py.example.test" },
};
#define N_CAPTURED (sizeof(captured) / sizeof(captured[0]))

/* Reads a captured hello; each file is one record holding the whole message. */
static uint8_t *load(const struct captured *c, size_t *len)
{
	uint8_t *buf = tu_read_data(c->file, len);

	CU_ASSERT_FATAL(buf != NULL && *len > 9);
	CU_ASSERT_FATAL(((size_t)buf[3] << 8 | buf[4]) + 5 == *len);
	return buf;
}

static void expect_captured(const struct captured *c, const struct hello_info *info, size_t len)
{
	CU_ASSERT_EQUAL(info->acme, c->acme);
	CU_ASSERT(info->has_alpn);
	CU_ASSERT_STRING_EQUAL(info->alpn, c->alpn);
	CU_ASSERT_EQUAL(info->alpn_count, strchr(c->alpn, ',') != NULL ? 2u : 1u);
	CU_ASSERT_STRING_EQUAL(info->sni, c->sni);
	CU_ASSERT_EQUAL(info->has_sni, c->sni[0] != '\0');
	CU_ASSERT_EQUAL(info->hello_len, len);
}

static void test_captured(void)
{
	struct hello_info info;
	size_t i, len;

	for (i = 0; i < N_CAPTURED; i++) {
		uint8_t *buf = load(&captured[i], &len);
		CU_ASSERT_EQUAL(parse_all(buf, len, &info), HELLO_DONE);
		expect_captured(&captured[i], &info, len);
		/* asked again after DONE: the same answer */
		memset(&info, 0, sizeof(info));
		CU_ASSERT_EQUAL(hello_parse(&parser_a, buf, len, &info), HELLO_DONE);
		expect_captured(&captured[i], &info, len);
		free(buf);
	}
}

static void test_captured_prefixes(void)
{
	struct hello_info info;
	size_t i, k, len;

	for (i = 0; i < N_CAPTURED; i++) {
		uint8_t *buf = load(&captured[i], &len);
		hb_fresh(&parser_b, 0xff, 0);
		for (k = 0; k < len; k++) {
			CU_ASSERT_EQUAL(hello_parse(hb_fresh(&parser_a, 0, 0), buf, k, &info),
			                HELLO_NEED_MORE);
			CU_ASSERT_EQUAL(hello_parse(&parser_b, buf, k, &info), HELLO_NEED_MORE);
			CU_ASSERT_EQUAL(parser_b.pos, k);
		}
		CU_ASSERT_EQUAL(hello_parse(&parser_b, buf, len, &info), HELLO_DONE);
		expect_captured(&captured[i], &info, len);
		free(buf);
	}
}

/* Re-records a captured message with frag and checks the result (byte by byte too). */
static void expect_rerecorded(const struct captured *c, const uint8_t *msg, size_t n,
                              const size_t *frag, size_t nfrag)
{
	struct hello_info info;
	size_t len = to_records(inbuf, msg, n, frag, nfrag);

	CU_ASSERT_EQUAL(parse_all(inbuf, len, &info), HELLO_DONE);
	expect_captured(c, &info, len);
}

static void test_captured_rerecorded(void)
{
	size_t i, cut, cut2, f, len, frag[3];

	for (i = 0; i < N_CAPTURED; i++) {
		uint8_t *buf = load(&captured[i], &len);
		size_t n = len - 5;

		for (cut = 1; cut < n; cut++) {
			frag[0] = cut;
			frag[1] = n - cut;
			expect_rerecorded(&captured[i], buf + 5, n, frag, 2);
			/* three records: a second cut spread over the rest by a fixed stride */
			if (cut + 1 < n) {
				cut2 = cut + 1 + (cut * 7919) % (n - cut - 1);
				frag[1] = cut2 - cut;
				frag[2] = n - cut2;
				expect_rerecorded(&captured[i], buf + 5, n, frag, 3);
			}
		}
		for (f = 1; f <= 64; f++)
			expect_rerecorded(&captured[i], buf + 5, n, &f, 1);
		free(buf);
	}
}

/* Every pair of cut points of the smallest hello, parsed whole. */
static void test_captured_all_three_way_splits(void)
{
	struct hello_info info;
	size_t a, b, len, n, frag[3], rlen;
	uint8_t *buf = load(&captured[4], &len);

	n = len - 5;
	for (a = 1; a < n; a++) {
		for (b = a + 1; b < n; b++) {
			frag[0] = a;
			frag[1] = b - a;
			frag[2] = n - b;
			rlen = to_records(inbuf, buf + 5, n, frag, 3);
			if (hello_parse(hb_fresh(&parser_a, 0, 0), inbuf, rlen, &info) != HELLO_DONE ||
			    !info.acme || info.hello_len != rlen) {
				CU_FAIL("three-way split changed the result");
				goto out;
			}
		}
	}
out:
	free(buf);
}

/* A captured hello followed by other records or garbage: the same result. */
static void test_trailing_data(void)
{
	static const uint8_t tail[][6] = {
		{ 23, 3, 3, 0, 1, 0x42 },        /* early application data */
		{ 22, 3, 3, 0, 1, 0x01 },        /* another handshake record */
		{ 'G', 'E', 'T', ' ', '/', ' ' }, /* anything */
	};
	struct hello_info info;
	size_t i, t, len;

	for (i = 0; i < N_CAPTURED; i++) {
		uint8_t *buf = load(&captured[i], &len);
		for (t = 0; t < sizeof(tail) / sizeof(tail[0]); t++) {
			memcpy(inbuf, buf, len);
			memcpy(inbuf + len, tail[t], sizeof(tail[t]));
			CU_ASSERT_EQUAL(parse_all(inbuf, len + sizeof(tail[t]), &info), HELLO_DONE);
			expect_captured(&captured[i], &info, len);
		}
		free(buf);
	}
}

/* ---- crafted hellos ------------------------------------------------------------------------ */

static void test_crafted_valid(void)
{
	struct spec s = { .sni = "example.test", .alpn = { "acme-tls/1" } };
	struct hello_info info;
	size_t len = build_hello(&s, inbuf);

	CU_ASSERT_EQUAL(parse_all(inbuf, len, &info), HELLO_DONE);
	CU_ASSERT(info.acme && info.has_alpn && info.has_sni);
	CU_ASSERT_EQUAL(info.alpn_count, 1);
	CU_ASSERT_STRING_EQUAL(info.alpn, "acme-tls/1");
	CU_ASSERT_STRING_EQUAL(info.sni, "example.test");
	CU_ASSERT_EQUAL(info.hello_len, len);
}

static void test_acme_matching(void)
{
	static const struct {
		const char *alpn[4], *sni;
		bool acme;
		const char *text;
	} cases[] = {
		{ { "acme-tls/1" }, NULL, true, "acme-tls/1" },
		{ { "h2", "acme-tls/1" }, NULL, true, "h2,acme-tls/1" },
		{ { "h2", "http/1.1", "acme-tls/1" }, NULL, true, "h2,http/1.1,acme-tls/1" },
		{ { "acme-tls/10" }, NULL, false, "acme-tls/10" },
		{ { "xacme-tls/1" }, NULL, false, "xacme-tls/1" },
		{ { "acme-tls/" }, NULL, false, "acme-tls/" },
		{ { "ACME-TLS/1" }, NULL, false, "ACME-TLS/1" },
		{ { "h2" }, "acme-tls/1", false, "h2" },
		{ { NULL }, "acme-tls/1", false, "" },
	};
	struct spec s;
	struct hello_info info;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&s, 0, sizeof(s));
		memcpy(s.alpn, cases[i].alpn, sizeof(cases[i].alpn));
		s.sni = cases[i].sni;
		CU_ASSERT_EQUAL_FATAL(parse_spec(&s, &info), HELLO_DONE);
		CU_ASSERT_EQUAL(info.acme, cases[i].acme);
		CU_ASSERT_STRING_EQUAL(info.alpn, cases[i].text);
		CU_ASSERT_EQUAL(info.has_alpn, cases[i].alpn[0] != NULL);
	}
}

static void test_no_extensions(void)
{
	struct spec s = { .no_exts = true };
	struct hello_info info;

	CU_ASSERT_EQUAL(parse_spec(&s, &info), HELLO_DONE);
	CU_ASSERT(!info.acme && !info.has_alpn && !info.has_sni);
	CU_ASSERT_STRING_EQUAL(info.alpn, "");
	CU_ASSERT_STRING_EQUAL(info.sni, "");
}

/* Each length field one byte past its container (and a few more) is MALFORMED, while the same
 * hello with the right length parses. */
static void test_length_overruns(void)
{
	static const struct {
		enum field bump, cut;
		int delta;
	} cases[] = {
		{ F_REC, F_NONE, 1 },      /* the record holds a byte after the hello */
		{ F_REC, F_NONE, -1 },     /* the hello's last byte is read as a record type 0 */
		{ F_HS, F_NONE, -1 },      /* the message ends before its record does */
		{ F_SID, F_SID, 1 },       /* the message ends after the session id */
		{ F_CS, F_CS, 1 },
		{ F_CS, F_CS, 2 },
		{ F_COMP, F_COMP, 1 },
		{ F_EXTS, F_NONE, 1 },
		{ F_EXTS, F_NONE, -1 },
		{ F_EXT, F_NONE, 1 },      /* the last extension overruns the block */
		{ F_ALPN_LIST, F_NONE, 1 },
		{ F_ALPN_LIST, F_NONE, -1 },
		{ F_ALPN_NAME, F_NONE, 1 }, /* the last name overruns the list */
		{ F_ALPN_NAME, F_NONE, -1 },
		{ F_SNI_LIST, F_NONE, 1 },
		{ F_SNI_LIST, F_NONE, -1 },
		{ F_SNI_NAME, F_NONE, 1 },
		{ F_SNI_NAME, F_NONE, -1 },
	};
	struct spec s;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&s, 0, sizeof(s));
		s.sni = "example.test";
		s.alpn[0] = "h2";
		s.alpn[1] = "acme-tls/1";
		s.cut = cases[i].cut;
		s.bump = cases[i].bump;
		if (s.cut == F_NONE)
			CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_DONE);
		s.delta = cases[i].delta;
		if (parse_spec(&s, NULL) != HELLO_MALFORMED) {
			fprintf(stderr, "case %zu: field %d delta %d not MALFORMED\n", i,
			        (int)s.bump, s.delta);
			CU_FAIL("length overrun not MALFORMED");
		}
	}
}

/* The handshake length one too large: the message waits for more, and a following record with
 * one more byte leaves the extensions block short of the message: MALFORMED. A record holding
 * a byte after the hello is MALFORMED too: a ClientHello ends on a record boundary. */
static void test_record_boundary(void)
{
	struct spec s = { .alpn = { "acme-tls/1" }, .bump = F_HS, .delta = 1 };
	size_t len = build_hello(&s, inbuf);

	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_NEED_MORE);
	memcpy(inbuf + len, "\x16\x03\x03\x00\x01\x00", 6);
	CU_ASSERT_EQUAL(parse_all(inbuf, len + 6, NULL), HELLO_MALFORMED);
	s.bump = F_REC;
	len = build_hello(&s, inbuf);
	inbuf[len] = 0;
	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(inbuf, len + 1, NULL), HELLO_MALFORMED);
}

static void test_field_rules(void)
{
	struct spec base = { .alpn = { "acme-tls/1" } }, s;

	s = base, s.sid_len = 32;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_DONE);
	s = base, s.sid_len = 33;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.empty_suites = true;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.odd_suites = true; /* an odd length, which the bytes match */
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.empty_comp = true;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.n_comp = 2;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_DONE);
	s = base, s.cut = F_COMP; /* no extensions block at all: fine */
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_DONE);
	s = base, s.cut = F_CS; /* no compression methods */
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.dup = true;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.empty_alpn = true, s.alpn[0] = NULL;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.alpn[0] = "h2", s.alpn[1] = "", s.alpn[2] = "acme-tls/1";
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.alpn[0] = "";
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.sni = "";
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
	s = base, s.sni = "x", s.empty_sni = true;
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_MALFORMED);
}

/* A body shorter than its fixed fields, and a handshake length of 0. */
static void test_short_bodies(void)
{
	static const uint8_t empty[] = { 22, 3, 1, 0, 4, 1, 0, 0, 0 };
	static const uint8_t tiny[] = { 22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3 };

	CU_ASSERT_EQUAL(parse_all(empty, sizeof(empty), NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(tiny, sizeof(tiny), NULL), HELLO_MALFORMED);
}

/* A hello without SNI and ALPN whose last extension is type with data[0..n). */
static enum hello_result with_ext(unsigned type, const uint8_t *data, size_t n,
                                  struct hello_info *info)
{
	struct spec s = { .pad = n };
	size_t len = build_hello(&s, inbuf);

	/* the padding extension is last: give it the type and data */
	inbuf[len - n - 4] = (uint8_t)(type >> 8);
	inbuf[len - n - 3] = (uint8_t)type;
	memcpy(inbuf + len - n, data, n);
	return parse_all(inbuf, len, info);
}

/* A server_name extension holding list[0..n) behind its 2-byte length, then extra bytes. */
static enum hello_result with_sni_ext(const uint8_t *list, size_t n, size_t extra,
                                      struct hello_info *info)
{
	static uint8_t data[2 + 1024];

	CU_ASSERT_FATAL(n + extra <= 1024);
	data[0] = (uint8_t)(n >> 8);
	data[1] = (uint8_t)n;
	memcpy(data + 2, list, n);
	memset(data + 2 + n, 0, extra);
	return with_ext(0, data, n + 2 + extra, info);
}

static enum hello_result with_sni_list(const uint8_t *list, size_t n, struct hello_info *info)
{
	return with_sni_ext(list, n, 0, info);
}

static void test_sni(void)
{
	static const uint8_t two_types[] = { 1, 0, 2, 'a', 'b', 0, 0, 3, 'w', 'e', 'b' };
	static const uint8_t two_hosts[] = { 0, 0, 1, 'a', 0, 0, 1, 'b' };
	static const uint8_t other_only[] = { 1, 0, 1, 'a' };
	static const uint8_t no_name_len[] = { 0, 0 };
	static uint8_t long_name[3 + 300];
	struct spec s = { .alpn = { "h2" }, .sni = "a b\x01\x7f\xff.test" };
	struct hello_info info;
	size_t i;

	CU_ASSERT_EQUAL(parse_spec(&s, &info), HELLO_DONE);
	CU_ASSERT_STRING_EQUAL(info.sni, "a?b???.test");
	CU_ASSERT_EQUAL(with_sni_list(two_types, sizeof(two_types), &info), HELLO_DONE);
	CU_ASSERT(info.has_sni);
	CU_ASSERT_STRING_EQUAL(info.sni, "web");
	CU_ASSERT_EQUAL(with_sni_ext(two_types, sizeof(two_types), 1, &info), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(with_sni_list(two_hosts, sizeof(two_hosts), &info), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(with_sni_list(other_only, sizeof(other_only), &info), HELLO_DONE);
	CU_ASSERT(!info.has_sni);
	CU_ASSERT_STRING_EQUAL(info.sni, "");
	CU_ASSERT_EQUAL(with_sni_list(no_name_len, sizeof(no_name_len), &info), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(with_ext(0, no_name_len, 0, &info), HELLO_MALFORMED);
	long_name[0] = 0;
	long_name[1] = 300 >> 8;
	long_name[2] = 300 & 0xff;
	for (i = 0; i < 300; i++)
		long_name[3 + i] = (uint8_t)('a' + i % 26);
	CU_ASSERT_EQUAL(with_sni_list(long_name, sizeof(long_name), &info), HELLO_DONE);
	CU_ASSERT_EQUAL(strlen(info.sni), HELLO_SNI_MAX);
	CU_ASSERT_EQUAL(memcmp(info.sni, long_name + 3, HELLO_SNI_MAX), 0);
}

static void test_alpn_text(void)
{
	static char names[40][16];
	struct spec s = { 0 };
	struct hello_info info;
	size_t i;

	/* names joined by ',' in their order */
	for (i = 0; i < 4; i++) {
		memset(names[i], 'a' + (int)i, 15);
		names[i][15] = '\0';
		s.alpn[i] = names[i];
	}
	CU_ASSERT_EQUAL(parse_spec(&s, &info), HELLO_DONE);
	CU_ASSERT_EQUAL(info.alpn_count, 4);
	CU_ASSERT_EQUAL(strlen(info.alpn), 4 * 15 + 3);
	s.alpn[0] = "h2\x01\n \x80";
	s.alpn[1] = NULL;
	CU_ASSERT_EQUAL(parse_spec(&s, &info), HELLO_DONE);
	CU_ASSERT_STRING_EQUAL(info.alpn, "h2????");
}

/* An ALPN list of 100 names: the text stops at HELLO_ALPN_TEXT_MAX - 1, the match does not. */
static void test_alpn_truncated(void)
{
	struct hello_info info;
	size_t i, n = 2;
	uint8_t data[2 + 100 * 11 + 1];

	for (i = 0; i < 100; i++) {
		data[n++] = 10;
		memcpy(data + n, i == 99 ? "acme-tls/1" : "abcdefghij", 10);
		n += 10;
	}
	data[0] = (uint8_t)((n - 2) >> 8);
	data[1] = (uint8_t)(n - 2);
	CU_ASSERT_EQUAL_FATAL(with_ext(16, data, n, &info), HELLO_DONE);
	CU_ASSERT(info.acme && info.has_alpn);
	CU_ASSERT_EQUAL(info.alpn_count, 100);
	CU_ASSERT_EQUAL(strlen(info.alpn), HELLO_ALPN_TEXT_MAX - 1);
	CU_ASSERT_EQUAL(strncmp(info.alpn, "abcdefghij,abcdefghij,", 22), 0);
	/* a byte in the extension after the list */
	data[n] = 0;
	CU_ASSERT_EQUAL(with_ext(16, data, n + 1, &info), HELLO_MALFORMED);
	/* one name short of filling the extension */
	CU_ASSERT_EQUAL(with_ext(16, data, n - 11, &info), HELLO_MALFORMED);
	/* an ALPN extension too short for its list length */
	CU_ASSERT_EQUAL(with_ext(16, data, 1, &info), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(with_ext(16, data, 0, &info), HELLO_MALFORMED);
}

static void test_not_hello(void)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	/* SSLv2-compatible CLIENT-HELLO: 2-byte length with the high bit, msg type 1, version */
	static const uint8_t sslv2[] = { 0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00 };
	static const uint8_t v2rec[] = { 22, 2, 0, 0, 10 };
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, 2, 40 };
	struct spec s = { .alpn = { "acme-tls/1" }, .hs_type = 2 };

	CU_ASSERT_EQUAL(parse_all((const uint8_t *)http, 1, NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_all((const uint8_t *)http, strlen(http), NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_all(sslv2, sizeof(sslv2), NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_all(v2rec, sizeof(v2rec), NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_all(alert, sizeof(alert), NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_spec(&s, NULL), HELLO_NOT_HELLO);
	/* decided on the handshake type byte, before the rest arrives */
	CU_ASSERT_EQUAL(parse_all(inbuf, 6, NULL), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parse_all(inbuf, 5, NULL), HELLO_NEED_MORE);
}

/* A record of another type, or with a bad version, after the first one: MALFORMED. */
static void test_bad_later_record(void)
{
	struct spec s = { .alpn = { "acme-tls/1" } };
	size_t n = build_msg(&s, msgbuf), frag[2] = { 20, n - 20 }, len;

	len = to_records(inbuf, msgbuf, n, frag, 2);
	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_DONE);
	inbuf[5 + 20] = 23;
	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(inbuf, 5 + 20 + 1, NULL), HELLO_MALFORMED);
	inbuf[5 + 20] = 22;
	inbuf[5 + 20 + 1] = 2;
	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_MALFORMED);
	/* a record of length 0 in the middle */
	inbuf[5 + 20 + 1] = 3;
	memmove(inbuf + 5 + 20 + 5, inbuf + 5 + 20, len - 5 - 20);
	memcpy(inbuf + 5 + 20, "\x16\x03\x03\x00\x00", 5);
	CU_ASSERT_EQUAL(parse_all(inbuf, len + 5, NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(inbuf, 5 + 20 + 5, NULL), HELLO_MALFORMED);
}

static void test_record_length_limits(void)
{
	static const uint8_t zero[] = { 22, 3, 1, 0, 0 };
	static const uint8_t over[] = { 22, 3, 1, (16384 + 2049) >> 8, (16384 + 2049) & 0xff };
	static const uint8_t max[] = { 22, 3, 1, (16384 + 2048) >> 8, (16384 + 2048) & 0xff };

	CU_ASSERT_EQUAL(parse_all(zero, sizeof(zero), NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(over, sizeof(over), NULL), HELLO_MALFORMED);
	CU_ASSERT_EQUAL(parse_all(max, sizeof(max), NULL), HELLO_NEED_MORE);
}

/* Body of exactly the cap parses; one byte more is TOO_LARGE as soon as the handshake header
 * says so. A smaller cap from hello_init applies too. */
static void test_too_large(void)
{
	struct spec s = { .alpn = { "acme-tls/1" } };
	struct hello_info info;
	size_t n, frag = 4000, len;

	n = build_msg(&s, msgbuf);
	s.pad = HELLO_MAX_DEFAULT + 4 - n;
	n = build_msg(&s, msgbuf);
	CU_ASSERT_EQUAL_FATAL(n, HELLO_MAX_DEFAULT + 4);
	len = to_records(inbuf, msgbuf, n, &frag, 1);
	CU_ASSERT_EQUAL(parse_all(inbuf, len, &info), HELLO_DONE);
	CU_ASSERT(info.acme);
	CU_ASSERT_EQUAL(hello_parse(hb_fresh(&parser_a, 0, 1000), inbuf, len, &info), HELLO_TOO_LARGE);
	CU_ASSERT_EQUAL(parser_a.pos, 9);

	s.pad++;
	n = build_msg(&s, msgbuf);
	len = to_records(inbuf, msgbuf, n, &frag, 1);
	CU_ASSERT_EQUAL(parse_all(inbuf, len, NULL), HELLO_TOO_LARGE);
	CU_ASSERT_EQUAL(parse_all(inbuf, 9, NULL), HELLO_TOO_LARGE);
	CU_ASSERT_EQUAL(parse_all(inbuf, 8, NULL), HELLO_NEED_MORE);
	/* a cap over the limit is clamped to it */
	CU_ASSERT_EQUAL(hello_parse(hb_fresh(&parser_a, 0, 1 << 20), inbuf, len, &info),
	                HELLO_TOO_LARGE);
}

/* A 16 KiB hello in 1-byte records fed one byte per call: each call consumes exactly the new
 * byte and the loop runs at most once per input byte (plus one pass over the message), so a
 * parser that rescanned from the start would fail here. */
static void test_linear(void)
{
	struct spec s = { .alpn = { "acme-tls/1" }, .pad = HELLO_MAX_DEFAULT - 200 };
	struct hello_info info;
	size_t n = build_msg(&s, msgbuf), one = 1, len, k;
	enum hello_result r = HELLO_NEED_MORE;

	len = to_records(inbuf, msgbuf, n, &one, 1);
	CU_ASSERT(len > 6 * 16000);
	hb_fresh(&parser_a, 0, 0);
	for (k = 1; k <= len && r == HELLO_NEED_MORE; k++) {
		r = hello_parse(&parser_a, inbuf, k, &info);
		if (parser_a.pos != k) {
			CU_FAIL("a call did not consume exactly the new byte");
			break;
		}
	}
	CU_ASSERT_EQUAL(r, HELLO_DONE);
	CU_ASSERT_EQUAL(k - 1, len);
	CU_ASSERT(parser_a.steps <= len + 1);
	CU_ASSERT(info.acme);
	/* whole: the same bound */
	CU_ASSERT_EQUAL(hello_parse(hb_fresh(&parser_a, 0, 0), inbuf, len, &info), HELLO_DONE);
	CU_ASSERT(parser_a.steps <= len + 1);
}

static void test_sticky(void)
{
	static const uint8_t http[] = "GET /";
	struct hello_info info;

	hb_fresh(&parser_a, 0, 0);
	CU_ASSERT_EQUAL(hello_parse(&parser_a, http, 1, &info), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(hello_parse(&parser_a, http, 5, &info), HELLO_NOT_HELLO);
	CU_ASSERT_EQUAL(parser_a.pos, 1);
	/* nothing new: still waiting */
	hb_fresh(&parser_a, 0, 0);
	CU_ASSERT_EQUAL(hello_parse(&parser_a, NULL, 0, &info), HELLO_NEED_MORE);
}

static void test_result_str(void)
{
	CU_ASSERT_STRING_EQUAL(hello_result_str(HELLO_NEED_MORE), "need-more");
	CU_ASSERT_STRING_EQUAL(hello_result_str(HELLO_DONE), "done");
	CU_ASSERT_STRING_EQUAL(hello_result_str(HELLO_NOT_HELLO), "not-hello");
	CU_ASSERT_STRING_EQUAL(hello_result_str(HELLO_MALFORMED), "malformed");
	CU_ASSERT_STRING_EQUAL(hello_result_str(HELLO_TOO_LARGE), "too-large");
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "captured hellos", test_captured },
		{ "captured: every prefix needs more", test_captured_prefixes },
		{ "captured: re-recorded at every cut", test_captured_rerecorded },
		{ "captured: every three-way split", test_captured_all_three_way_splits },
		{ "captured: trailing data", test_trailing_data },
		{ "crafted valid hello", test_crafted_valid },
		{ "acme-tls/1 matching", test_acme_matching },
		{ "no extensions block", test_no_extensions },
		{ "length fields overrunning", test_length_overruns },
		{ "record boundary", test_record_boundary },
		{ "field rules", test_field_rules },
		{ "short bodies", test_short_bodies },
		{ "server_name", test_sni },
		{ "ALPN text", test_alpn_text },
		{ "ALPN text truncated", test_alpn_truncated },
		{ "not a hello", test_not_hello },
		{ "bad later record", test_bad_later_record },
		{ "record length limits", test_record_length_limits },
		{ "too large", test_too_large },
		{ "linear work byte by byte", test_linear },
		{ "sticky verdict", test_sticky },
		{ "result strings", test_result_str },
	};

	if (TU_ADD_SUITE("clienthello", tests) != 0)
		return 99;
	return tu_run();
}
