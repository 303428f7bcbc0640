/* Incremental TLS ClientHello parser (RFC 8446 4.1.2, RFC 6066 3, RFC 7301 3.1).
 *
 * Two stages. hello_parse() walks the records byte-exactly from where the previous call
 * stopped and gathers the handshake message into p->msg: record and handshake headers one
 * byte at a time (so a verdict comes as early as the bytes allow), payload in chunks. Once
 * the message is whole, parse_body() checks it in one pass with a bounds-checked reader.
 * Every input byte is looked at once, so the work over all calls is O(total length). */
#include "autoconfig.h"

#include <string.h>

#include "clienthello.h"

#define TLS_CONTENT_HANDSHAKE 22
#define TLS_HANDSHAKE_CLIENT_HELLO 1
#define TLS_RECORD_MAX (16384 + 2048) /* TLSCiphertext bound; plaintext is smaller still */
#define TLS_SESSION_ID_MAX 32
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define SNI_HOST_NAME 0
#define ACME_PROTO "acme-tls/1"
#define ACME_PROTO_LEN (sizeof(ACME_PROTO) - 1)

/* A window of the gathered message. Every read checks it against left first. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static bool rd_take(struct rd *r, size_t n, struct rd *part)
{
	if (n > r->left)
		return false;
	if (part != NULL) {
		part->p = r->p;
		part->left = n;
	}
	r->p += n;
	r->left -= n;
	return true;
}

/* Reads a big-endian integer of width bytes (1 or 2). */
static bool rd_uint(struct rd *r, size_t width, size_t *v)
{
	struct rd b;
	size_t i;

	if (!rd_take(r, width, &b))
		return false;
	*v = 0;
	for (i = 0; i < width; i++)
		*v = *v << 8 | b.p[i];
	return true;
}

/* Reads a vector with a length prefix of width bytes into part. */
static bool rd_vec(struct rd *r, size_t width, struct rd *part)
{
	size_t n;

	return rd_uint(r, width, &n) && rd_take(r, n, part);
}

/* Appends src to the NUL-terminated text dst (capacity cap, *used bytes in it), truncating.
 * Only 0x21..0x7e are copied as they are: the text goes into space-separated log lines, so a
 * space or a control byte from the network must not be able to forge a field or a line. */
static void text_append(char *dst, size_t cap, size_t *used, const uint8_t *src, size_t n)
{
	size_t i;

	for (i = 0; i < n && *used + 1 < cap; i++)
		dst[(*used)++] = src[i] > 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
	dst[*used] = '\0';
}

/* ProtocolNameList: opaque ProtocolName<1..2^8-1>; ProtocolName protocol_name_list<2..2^16-1> */
static bool parse_alpn(struct rd ext, struct hello_info *info)
{
	struct rd list, name;
	size_t used = 0;

	if (!rd_vec(&ext, 2, &list) || ext.left != 0 || list.left == 0)
		return false;
	info->has_alpn = true;
	while (list.left > 0) {
		if (!rd_vec(&list, 1, &name) || name.left == 0)
			return false;
		/* Exact match only: "acme-tls/10" or a prefix must not route to the responder. */
		if (name.left == ACME_PROTO_LEN && memcmp(name.p, ACME_PROTO, ACME_PROTO_LEN) == 0)
			info->acme = true;
		if (info->alpn_count++ > 0)
			text_append(info->alpn, sizeof(info->alpn), &used, (const uint8_t *)",", 1);
		text_append(info->alpn, sizeof(info->alpn), &used, name.p, name.left);
	}
	return true;
}

/* ServerNameList: { NameType name_type; opaque HostName<1..2^16-1>; } server_name_list<1..>.
 * Entries of another name type share the layout (none is defined) and are skipped. */
static bool parse_sni(struct rd ext, struct hello_info *info)
{
	struct rd list, name;
	size_t type, used = 0;

	if (!rd_vec(&ext, 2, &list) || ext.left != 0 || list.left == 0)
		return false;
	while (list.left > 0) {
		if (!rd_uint(&list, 1, &type) || !rd_vec(&list, 2, &name) || name.left == 0)
			return false;
		if (type != SNI_HOST_NAME)
			continue;
		if (info->has_sni) /* RFC 6066: at most one name of each type */
			return false;
		info->has_sni = true;
		text_append(info->sni, sizeof(info->sni), &used, name.p, name.left);
	}
	return true;
}

/* The ClientHello body: legacy_version, random, legacy_session_id<0..32>,
 * cipher_suites<2..2^16-2>, legacy_compression_methods<1..2^8-1>, extensions<8..2^16-1>
 * (absent in old hellos: valid, but then there is no ALPN and no ACME). */
static enum hello_result parse_body(const uint8_t *body, size_t len, struct hello_info *info)
{
	/* One bit per extension type: 8 KiB on the stack, no allocation, O(1) duplicate check. */
	uint64_t seen[65536 / 64];
	struct rd r = { body, len }, v, exts, data;
	size_t type;

	memset(info, 0, sizeof(*info));
	if (!rd_take(&r, 2 + 32, NULL))
		return HELLO_MALFORMED;
	if (!rd_vec(&r, 1, &v) || v.left > TLS_SESSION_ID_MAX)
		return HELLO_MALFORMED;
	if (!rd_vec(&r, 2, &v) || v.left == 0 || v.left % 2 != 0)
		return HELLO_MALFORMED;
	if (!rd_vec(&r, 1, &v) || v.left == 0)
		return HELLO_MALFORMED;
	if (r.left == 0)
		return HELLO_DONE;
	if (!rd_vec(&r, 2, &exts) || r.left != 0)
		return HELLO_MALFORMED;
	memset(seen, 0, sizeof(seen));
	while (exts.left > 0) {
		if (!rd_uint(&exts, 2, &type) || !rd_vec(&exts, 2, &data))
			return HELLO_MALFORMED;
		if (seen[type / 64] & (UINT64_C(1) << (type % 64)))
			return HELLO_MALFORMED; /* RFC 8446 4.2: one extension of each type at most */
		seen[type / 64] |= UINT64_C(1) << (type % 64);
		if (type == EXT_ALPN && !parse_alpn(data, info))
			return HELLO_MALFORMED;
		if (type == EXT_SERVER_NAME && !parse_sni(data, info))
			return HELLO_MALFORMED;
	}
	return HELLO_DONE;
}

/* One byte of a record header. The first record decides whether this is TLS at all: a
 * different content type (an HTTP request, an SSLv2 hello with its high bit set) or a major
 * version other than 3 is NOT_HELLO there, and MALFORMED in a later record. */
static enum hello_result take_header_byte(struct hello_parser *p, uint8_t b)
{
	enum hello_result wrong = p->records == 0 ? HELLO_NOT_HELLO : HELLO_MALFORMED;
	size_t n;

	p->hdr[p->hdr_have++] = b;
	if (p->hdr_have == 1 && b != TLS_CONTENT_HANDSHAKE)
		return wrong;
	if (p->hdr_have == 2 && b != 3)
		return wrong;
	if (p->hdr_have < sizeof(p->hdr))
		return HELLO_NEED_MORE;
	n = (size_t)p->hdr[3] << 8 | p->hdr[4];
	if (n == 0 || n > TLS_RECORD_MAX)
		return HELLO_MALFORMED;
	p->hdr_have = 0;
	p->records++;
	p->rec_left = n;
	p->in_record = true;
	return HELLO_NEED_MORE;
}

/* Consumes record payload from buf[p->pos..len) into msg: at least one byte, at most to the end
 * of the record or of the message. */
static enum hello_result take_payload(struct hello_parser *p, const uint8_t *buf, size_t len)
{
	size_t n = len - p->pos < p->rec_left ? len - p->pos : p->rec_left;

	if (p->msg_have < 4) {
		/* The handshake header, which may itself be split over records. */
		n = 1;
		p->msg[p->msg_have++] = buf[p->pos];
	} else {
		if (n > p->msg_need - p->msg_have)
			n = p->msg_need - p->msg_have;
		memcpy(p->msg + p->msg_have, buf + p->pos, n);
		p->msg_have += n;
	}
	p->pos += n;
	p->rec_left -= n;
	p->in_record = p->rec_left > 0;
	if (p->msg_have == 1 && p->msg[0] != TLS_HANDSHAKE_CLIENT_HELLO)
		return HELLO_NOT_HELLO;
	if (p->msg_have == 4 && p->msg_need == 0) {
		size_t body = (size_t)p->msg[1] << 16 | (size_t)p->msg[2] << 8 | p->msg[3];

		if (body > p->max_msg)
			return HELLO_TOO_LARGE;
		p->msg_need = 4 + body;
	}
	if (p->msg_need == 0 || p->msg_have < p->msg_need)
		return HELLO_NEED_MORE;
	/* RFC 8446 5.1: a ClientHello must end on a record boundary (a key change may follow). */
	if (p->rec_left > 0)
		return HELLO_MALFORMED;
	p->steps++;
	return parse_body(p->msg + 4, p->msg_need - 4, &p->info);
}

void hello_init(struct hello_parser *p, size_t max_msg)
{
	/* Only the bookkeeping is cleared: msg is written before it is read. */
	memset(p, 0, offsetof(struct hello_parser, msg));
	if (max_msg == 0)
		max_msg = HELLO_MAX_DEFAULT;
	p->max_msg = max_msg < HELLO_MAX_LIMIT ? max_msg : HELLO_MAX_LIMIT;
	p->final = HELLO_NEED_MORE;
}

enum hello_result hello_parse(struct hello_parser *p, const uint8_t *buf, size_t len,
                              struct hello_info *out)
{
	enum hello_result r = p->final;

	/* Bytes before p->pos were consumed by earlier calls and are never looked at again. */
	while (r == HELLO_NEED_MORE && p->pos < len) {
		p->steps++;
		if (p->in_record) {
			r = take_payload(p, buf, len);
		} else {
			r = take_header_byte(p, buf[p->pos]);
			p->pos++;
		}
	}
	if (r != p->final) {
		p->final = r;
		p->info.hello_len = p->pos;
	}
	if (r == HELLO_DONE && out != NULL)
		*out = p->info;
	return r;
}

const char *hello_result_str(enum hello_result r)
{
	switch (r) {
	case HELLO_NEED_MORE:
		return "need-more";
	case HELLO_DONE:
		return "done";
	case HELLO_NOT_HELLO:
		return "not-hello";
	case HELLO_MALFORMED:
		return "malformed";
	case HELLO_TOO_LARGE:
		return "too-large";
	}
	return "unknown";
}
