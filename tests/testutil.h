/* Shared helpers of the CUnit unit tests. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <CUnit/CUnit.h>

/* Run every registered suite verbosely, print CUnit's summary, clean up the registry.
 * Returns the process exit status: 0 when every test passed, 1 otherwise (99 on a CUnit error). */
int tu_run(void);

/* Read tests/data/NAME (from $TESTDATA, or "tests/data" relative to the current directory).
 * Returns a malloc'ed buffer (caller frees) and its length, or NULL after a CUnit failure. */
uint8_t *tu_read_data(const char *name, size_t *len);

#endif
