/* Building ClientHello input for the parser's tests: shared by the CUnit tests
 * (test_clienthello.c) and the libFuzzer target (fuzz_clienthello.c), so both cut a message
 * into TLS records and prepare parsers the same way. Pure: no CUnit, no I/O. */
#ifndef HELLO_BUILDER_H
#define HELLO_BUILDER_H

#include <stddef.h>
#include <stdint.h>

#include "clienthello.h"

/* Writes the handshake message msg[0..n) as TLS handshake records (type 22, version 0x0301)
 * into out[0..cap): fragment sizes frag[0..nfrag), the last one repeated until the message is
 * used up. Returns 0 and the bytes written in *len, or -1 when out is too small or a fragment
 * size is 0. */
int hb_records(uint8_t *out, size_t cap, size_t *len, const uint8_t *msg, size_t n,
               const size_t *frag, size_t nfrag);

/* Fills the whole parser with fill, then hello_init(p, max). Two parsers with different fills
 * agree only when the parser never reads a message byte it did not gather. Returns p. */
struct hello_parser *hb_fresh(struct hello_parser *p, uint8_t fill, size_t max);

#endif
