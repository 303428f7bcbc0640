#include "autoconfig.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/wait.h>

#include <CUnit/Basic.h>

#include "testutil.h"

int tu_add_suite(const char *name, const struct tu_test *tests, size_t n)
{
	CU_pSuite suite;
	size_t i;

	if (CU_get_registry() == NULL && CU_initialize_registry() != CUE_SUCCESS)
		goto fail;
	suite = CU_add_suite(name, NULL, NULL);
	if (suite == NULL)
		goto fail;
	for (i = 0; i < n; i++)
		if (CU_add_test(suite, tests[i].name, tests[i].fn) == NULL)
			goto fail;
	return 0;
fail:
	fprintf(stderr, "CUnit: registering suite \"%s\": %s\n", name, CU_get_error_msg());
	CU_cleanup_registry();
	return -1;
}

int tu_run(void)
{
	unsigned failed;

	CU_basic_set_mode(CU_BRM_VERBOSE);
	if (CU_basic_run_tests() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit error: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 99;
	}
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	printf("\n");
	CU_cleanup_registry();
	return failed == 0 ? 0 : 1;
}

uint8_t *tu_read_data(const char *name, size_t *len)
{
	const char *dir = getenv("TESTDATA");
	char path[4096];
	FILE *f;
	uint8_t *buf = NULL;
	long size;

	if (dir == NULL)
		dir = "tests/data";
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "cannot open test data %s: %s\n", path, strerror(errno));
		CU_FAIL_FATAL("test data missing");
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto fail;
	buf = malloc((size_t)size + 1);
	if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size)
		goto fail;
	fclose(f);
	*len = (size_t)size;
	return buf;
fail:
	fprintf(stderr, "cannot read test data %s\n", path);
	free(buf);
	fclose(f);
	CU_FAIL_FATAL("test data unreadable");
	return NULL;
}

long tu_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tu_wait_child(pid_t pid, int *status, long timeout_ms)
{
	long deadline = tu_now_ms() + timeout_ms;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR) {
			fprintf(stderr, "waitpid(%ld): %s\n", (long)pid, strerror(errno));
			return -1;
		}
		if (tu_now_ms() > deadline) {
			fprintf(stderr, "child %ld still running after %ld ms: killed\n", (long)pid,
			        timeout_ms);
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return -1;
		}
		poll(NULL, 0, 5);
	}
}

const char *tu_describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "wait status 0x%x", (unsigned)st);
	return buf;
}

int tu_poll_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };

	return poll(&p, 1, timeout_ms) == 1 && (p.revents & events) ? 0 : -1;
}

void tu_assert_sandboxed(pid_t pid, int want_filter)
{
	char path[64], line[256];
	int seccomp = -1, nnp = -1, filters = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		sscanf(line, "Seccomp: %d", &seccomp);
		sscanf(line, "Seccomp_filters: %d", &filters);
		sscanf(line, "NoNewPrivs: %d", &nnp);
	}
	fclose(f);
	if (want_filter) {
		CU_ASSERT_EQUAL(seccomp, 2);
		CU_ASSERT_EQUAL(filters, 1);
	}
	CU_ASSERT_EQUAL(nnp, 1);
}
