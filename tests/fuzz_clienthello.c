/* libFuzzer target for the ClientHello parser (`make fuzz`). Besides memory errors (ASan, UBSan)
 * it checks that the verdict does not depend on how the bytes arrive: whole, in two parts at a
 * split point taken from the input, byte by byte, cut at the point of decision, and, for a
 * complete hello, with its message re-recorded into other record sizes. Any difference aborts. */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "clienthello.h"
#include "hello_builder.h"

#define RERECORD_MAX (6 * (4 + HELLO_MAX_LIMIT)) /* 1-byte records: 5 header bytes per byte */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hello_parser whole, part;
static uint8_t rerecorded[RERECORD_MAX];

static bool text_ok(const char *s, size_t cap)
{
	const char *end = memchr(s, '\0', cap);

	if (end == NULL)
		return false;
	for (; s < end; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

static void check_info(const struct hello_info *i, size_t size)
{
	if (i->hello_len == 0 || i->hello_len > size)
		abort();
	if (!text_ok(i->alpn, sizeof(i->alpn)) || !text_ok(i->sni, sizeof(i->sni)))
		abort();
	if (i->acme && !i->has_alpn)
		abort();
	if (i->has_alpn != (i->alpn_count > 0) || i->has_sni != (i->sni[0] != '\0'))
		abort();
}

/* Both results agree; hello_len only when same_len. */
static void same(enum hello_result ra, const struct hello_info *a, enum hello_result rb,
                 const struct hello_info *b, bool same_len)
{
	if (ra != rb)
		abort();
	if (ra != HELLO_DONE)
		return;
	if (a->acme != b->acme || a->has_alpn != b->has_alpn || a->has_sni != b->has_sni ||
	    a->alpn_count != b->alpn_count || strcmp(a->alpn, b->alpn) != 0 ||
	    strcmp(a->sni, b->sni) != 0 || (same_len && a->hello_len != b->hello_len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hello_info a, b;
	enum hello_result ra, rb;
	size_t split, decided;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	ra = hello_parse(hb_fresh(&whole, 0x00, 0), data, size, &a);
	decided = whole.pos;
	if (decided > size || (ra == HELLO_NEED_MORE && decided != size))
		abort();
	if (ra == HELLO_DONE) {
		check_info(&a, size);
		if (a.hello_len != decided)
			abort();
	}

	/* two parts; a verdict on the first part must already be the final one */
	split = size > 1 ? ((size_t)data[0] << 8 | data[1]) % (size + 1) : size;
	rb = hello_parse(hb_fresh(&part, 0xff, 0), data, split, &b);
	if (rb != HELLO_NEED_MORE)
		same(ra, &a, rb, &b, true);
	rb = hello_parse(&part, data, size, &b);
	same(ra, &a, rb, &b, true);

	/* byte by byte */
	if (size <= 4096) {
		size_t i;

		rb = HELLO_NEED_MORE;
		hb_fresh(&part, 0x5a, 0);
		for (i = 1; i <= size && rb == HELLO_NEED_MORE; i++)
			rb = hello_parse(&part, data, i, &b);
		same(ra, &a, rb, &b, true);
	}

	/* decided at the earliest point: the bytes up to it give the verdict, one fewer do not */
	if (ra != HELLO_NEED_MORE) {
		rb = hello_parse(hb_fresh(&part, 0xff, 0), data, decided, &b);
		same(ra, &a, rb, &b, true);
		if (hello_parse(hb_fresh(&part, 0xff, 0), data, decided - 1, &b) != HELLO_NEED_MORE)
			abort();
	}

	/* the same message in records of another size gives the same answer */
	if (ra == HELLO_DONE) {
		size_t len, frag = 1 + (size_t)data[size - 1] * 67;

		if (hb_records(rerecorded, sizeof(rerecorded), &len, whole.msg, whole.msg_need,
		               &frag, 1) != 0)
			abort();
		rb = hello_parse(hb_fresh(&part, 0x33, 0), rerecorded, len, &b);
		same(ra, &a, rb, &b, false);
		if (b.hello_len != len)
			abort();
	}
	return 0;
}
