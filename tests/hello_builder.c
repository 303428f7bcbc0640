#include "autoconfig.h"

#include <string.h>

#include "hello_builder.h"

int hb_records(uint8_t *out, size_t cap, size_t *len, const uint8_t *msg, size_t n,
               const size_t *frag, size_t nfrag)
{
	size_t k = 0, done = 0, at = 0, f;

	if (nfrag == 0)
		return -1;
	while (done < n) {
		f = frag[k < nfrag - 1 ? k++ : nfrag - 1];
		if (f == 0)
			return -1;
		if (f > n - done)
			f = n - done;
		if (cap - at < 5 || cap - at - 5 < f)
			return -1;
		out[at++] = 22;
		out[at++] = 3;
		out[at++] = 1;
		out[at++] = (uint8_t)(f >> 8);
		out[at++] = (uint8_t)f;
		memcpy(out + at, msg + done, f);
		at += f;
		done += f;
	}
	*len = at;
	return 0;
}

struct hello_parser *hb_fresh(struct hello_parser *p, uint8_t fill, size_t max)
{
	memset(p, fill, sizeof(*p));
	hello_init(p, max);
	return p;
}
