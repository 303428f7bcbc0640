/* The libseccomp allow-list of a worker: loaded by the worker itself (worker.c), exported for
 * tests. What the parent reads after a sandbox kill is sandbox_violation.h. */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stddef.h>

/* Load the worker filter (default action: kill the process). Requires no_new_privs already set.
 * Returns 0 or -1 with a message in err; the caller must treat -1 as fatal. */
int sandbox_apply(char *err, size_t errlen);

/* Write the filter in libseccomp's PFC text form to fd (for tests and debugging). */
int sandbox_export(int fd);

/* What a mode adds to the allow-list, nothing else: */
#define SANDBOX_PROXY_PROTOCOL 1u /* getsockopt SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST */
#define SANDBOX_TRANSPARENT 2u    /* bind, setsockopt IP(V6)_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT,
                                   * SO_MARK */
int sandbox_apply_with(unsigned features, char *err, size_t errlen);
int sandbox_export_with(unsigned features, int fd);

#endif
