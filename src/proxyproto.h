/* The PROXY protocol header (HAProxy's proxy-protocol.txt): what -proxy-protocol writes to the
 * fallback before the visitor's bytes, and what check sends the fallback before its hello. */
#ifndef PROXYPROTO_H
#define PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define PROXY_HEADER_MAX 108 /* the longest v1 line (the spec's bound); v2 needs at most 52 */

/* The header of version v (PP_V1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n"; PP_V2: the binary
 * signature, PROXY command, TCP over the family, the addresses) for a connection from src to
 * dst, both of one family (AF_INET or AF_INET6), into out. Returns its length, or 0 when the
 * families differ or it does not fit in cap. Pure: no system call. */
size_t proxy_header(enum proxy_proto v, const struct sockaddr_storage *src,
                    const struct sockaddr_storage *dst, uint8_t *out, size_t cap);

#endif
