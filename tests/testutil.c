#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "testutil.h"

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
