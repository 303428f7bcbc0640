/* Shared helpers of the CUnit unit tests. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <CUnit/CUnit.h>

/* One test of a suite: its name in CUnit's output and the function. */
struct tu_test {
	const char *name;
	CU_TestFunc fn;
};

/* Adds the suite NAME with the tests tests[0..n), initializing the registry on first use.
 * Returns 0, or -1 after printing CUnit's error and cleaning the registry up. */
int tu_add_suite(const char *name, const struct tu_test *tests, size_t n);
#define TU_ADD_SUITE(name, tests) tu_add_suite((name), (tests), sizeof(tests) / sizeof((tests)[0]))

/* Run every registered suite verbosely, print CUnit's summary, clean up the registry.
 * Returns the process exit status: 0 when every test passed, 1 otherwise (99 on a CUnit error). */
int tu_run(void);

/* Read tests/data/NAME (from $TESTDATA, or "tests/data" relative to the current directory).
 * Returns a malloc'ed buffer (caller frees) and its length, or NULL after a CUnit failure. */
uint8_t *tu_read_data(const char *name, size_t *len);

/* Milliseconds of CLOCK_MONOTONIC. */
long tu_now_ms(void);

/* Waits up to timeout_ms for the child pid to end, *status its wait status; on timeout kills
 * it (SIGKILL), reaps it and returns -1. 0 once reaped. */
int tu_wait_child(pid_t pid, int *status, long timeout_ms);

/* A wait status in words ("exited with status 3", "killed by signal 31 (Bad system call)"),
 * written to buf. */
const char *tu_describe_status(int status, char *buf, size_t len);

/* poll(2) one descriptor for events, up to timeout_ms: 0 when one of them came, -1 otherwise. */
int tu_poll_fd(int fd, short events, int timeout_ms);

/* The CUnit assertions on /proc/PID/status that prove a seccomp filter (want_filter: exactly
 * one, in filter mode) and no_new_privs are in force in pid. */
void tu_assert_sandboxed(pid_t pid, int want_filter);

#endif
