/* Incremental, bounds-checked TLS ClientHello parser: pure, no I/O, no allocation. */
#ifndef CLIENTHELLO_H
#define CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HELLO_MAX_DEFAULT 16384 /* cap on the handshake message body, bytes */
#define HELLO_MAX_LIMIT HELLO_MAX_DEFAULT /* largest cap hello_init accepts */
#define HELLO_SNI_MAX 255       /* RFC 6066: a HostName is at most 255 bytes */
#define HELLO_ALPN_TEXT_MAX 256 /* printable ALPN list for logs, truncated */

enum hello_result {
	HELLO_NEED_MORE = 0, /* a prefix of a valid ClientHello: read more */
	HELLO_DONE,          /* the whole ClientHello handshake message is held */
	HELLO_NOT_HELLO,     /* not a TLS ClientHello at all */
	HELLO_MALFORMED,     /* a ClientHello, but broken */
	HELLO_TOO_LARGE,     /* the handshake message is over the cap */
};

struct hello_info {
	bool acme;                 /* ALPN list holds exactly "acme-tls/1" */
	bool has_alpn;             /* an ALPN extension was present */
	bool has_sni;              /* a server_name host_name was present */
	size_t alpn_count;         /* protocol names in the ALPN list */
	/* For logs, NUL-terminated, truncated; bytes outside 0x21..0x7e (space too) become '?' */
	char alpn[HELLO_ALPN_TEXT_MAX]; /* the names joined by ',' */
	char sni[HELLO_SNI_MAX + 1];    /* the host name; "" when none */
	size_t hello_len;          /* input bytes up to the end of the record that completed the
	                            * hello; a ClientHello ends on a record boundary (RFC 8446 5.1) */
};

/* Reassembly state. Callers allocate it (on the stack or inside their connection) and must not
 * touch its fields. The parser gathers the handshake message from the records into msg, byte
 * by byte for the headers, and parses the message once it is whole. */
struct hello_parser {
	size_t max_msg;       /* cap on the handshake message length */
	size_t pos;           /* input bytes consumed so far (whole records, or a partial one) */
	size_t rec_left;      /* bytes of the current record's payload not yet consumed */
	bool in_record;       /* pos is inside a record payload */
	uint8_t hdr[5];       /* the record header being read */
	size_t hdr_have;      /* bytes of it held in hdr */
	size_t records;       /* record headers accepted so far */
	size_t msg_have;      /* handshake bytes gathered in msg */
	size_t msg_need;      /* 4 + handshake length, once known; 0 before */
	size_t steps;         /* loop steps over all calls, each consumes input: proves O(n) in tests */
	enum hello_result final; /* sticky verdict once not NEED_MORE */
	struct hello_info info;  /* the result, kept to answer again after HELLO_DONE */
	uint8_t msg[4 + HELLO_MAX_LIMIT];
};

/* Prepare p; max_msg is the cap on the handshake body (0 means HELLO_MAX_DEFAULT, values over
 * HELLO_MAX_LIMIT are clamped). */
void hello_init(struct hello_parser *p, size_t max_msg);

/* Feed everything received so far on the connection: buf[0..len) must start with the same
 * bytes as on the previous call (len only grows). Resumes where the previous call stopped, so
 * feeding N bytes one at a time costs O(N). On HELLO_DONE *out is filled; on other results its
 * contents are unspecified. Once a result other than HELLO_NEED_MORE was returned it is
 * returned again. */
enum hello_result hello_parse(struct hello_parser *p, const uint8_t *buf, size_t len,
                              struct hello_info *out);

/* "need-more", "done", "not-hello", "malformed", "too-large" */
const char *hello_result_str(enum hello_result r);

#endif
