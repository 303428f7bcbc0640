/* The PROXY protocol header, v1 (text) and v2 (binary): proxyproto.h. */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "proxyproto.h"

static const uint8_t pp_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
                                    0x54, 0x0a };

size_t proxy_header(enum proxy_proto v, const struct sockaddr_storage *src,
                    const struct sockaddr_storage *dst, uint8_t *out, size_t cap)
{
	const struct sockaddr_in *s4 = (const void *)src, *d4 = (const void *)dst;
	const struct sockaddr_in6 *s6 = (const void *)src, *d6 = (const void *)dst;
	bool v4 = src->ss_family == AF_INET;
	uint8_t h[PROXY_HEADER_MAX];
	size_t hl;

	if (src->ss_family != dst->ss_family ||
	    (src->ss_family != AF_INET && src->ss_family != AF_INET6))
		return 0;
	if (v == PP_V1) {
		char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
		int n;

		inet_ntop(src->ss_family, v4 ? (const void *)&s4->sin_addr : &s6->sin6_addr, sa,
		          sizeof(sa));
		inet_ntop(src->ss_family, v4 ? (const void *)&d4->sin_addr : &d6->sin6_addr, da,
		          sizeof(da));
		n = snprintf((char *)h, sizeof(h), "PROXY TCP%c %s %s %u %u\r\n", v4 ? '4' : '6', sa,
		             da, ntohs(v4 ? s4->sin_port : s6->sin6_port),
		             ntohs(v4 ? d4->sin_port : d6->sin6_port));
		if (n < 0 || (size_t)n >= sizeof(h))
			return 0;
		hl = (size_t)n;
	} else {
		/* Addresses then ports, each source before destination (proxy-protocol.txt 2.2). */
		size_t alen = v4 ? 4 : 16;
		const void *sa = v4 ? (const void *)&s4->sin_addr : &s6->sin6_addr;
		const void *da = v4 ? (const void *)&d4->sin_addr : &d6->sin6_addr;
		const void *sp = v4 ? (const void *)&s4->sin_port : &s6->sin6_port;
		const void *dp = v4 ? (const void *)&d4->sin_port : &d6->sin6_port;

		memcpy(h, pp_sig, sizeof(pp_sig));
		h[12] = 0x21; /* version 2, PROXY */
		h[13] = v4 ? 0x11 : 0x21; /* TCP over IPv4 / IPv6 */
		h[14] = 0;
		h[15] = (uint8_t)(2 * alen + 4);
		memcpy(h + 16, sa, alen);
		memcpy(h + 16 + alen, da, alen);
		memcpy(h + 16 + 2 * alen, sp, 2);
		memcpy(h + 18 + 2 * alen, dp, 2);
		hl = 20 + 2 * alen;
	}
	if (hl > cap)
		return 0;
	memcpy(out, h, hl);
	return hl;
}
