/* Unit tests of the privilege drop (src/privdrop.c): the worker's chroot, ids, no_new_privs and
 * capabilities, and what privdrop_prepare refuses.
 *
 * The drop runs in a forked child, which reports through its exit status (0, or the number of
 * the check that failed); the parent asserts on what waitpid says. Most tests need root, and
 * pass with a message without it. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cap-ng.h>
#include <linux/capability.h>

#include "privdrop.h"
#include "sandbox.h"
#include "testutil.h"

#define CHILD_TIMEOUT_MS 10000

static int need_root(void)
{
	if (geteuid() == 0)
		return 1;
	printf("\n    not root: privilege-drop test skipped ");
	CU_PASS("skipped without root");
	return 0;
}

static void make_tempdir(char *dir, size_t len)
{
	snprintf(dir, len, "%s", "/tmp/test_privdrop.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	CU_ASSERT_FATAL(chmod(dir, 0755) == 0);
}

/* privdrop_prepare for "nobody" in a new empty directory (dir): 0, or -1 after a CUnit failure
 * (the directory removed again). */
static int prepare_nobody(struct privdrop_target *t, char *dir, size_t len)
{
	char err[256];

	make_tempdir(dir, len);
	if (privdrop_prepare(t, "nobody", dir, err, sizeof(err)) != 0) {
		fprintf(stderr, "privdrop_prepare(nobody, %s): %s\n", dir, err);
		CU_FAIL("privdrop_prepare failed");
		rmdir(dir);
		return -1;
	}
	return 0;
}

/* The child of the privdrop test: every check gets its own exit status. */
static int privdrop_child(const struct privdrop_target *t, int hold_fd)
{
	char err[256], c;
	struct rlimit rl;

	if (privdrop_apply(t, false, err, sizeof(err)) != 0) {
		fprintf(stderr, "child: privdrop_apply: %s\n", err);
		return 1;
	}
	if (getuid() == 0 || geteuid() == 0 || getuid() != t->uid || getgid() != t->gid)
		return 2;
	if (setuid(0) != -1 || setgid(0) != -1 || setegid(0) != -1)
		return 3;
	if (getgroups(0, NULL) != 0)
		return 4;
	if (access("/etc/passwd", F_OK) == 0) /* chrooted into an empty directory */
		return 5;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return 6;
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		return 7;
	if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
		return 8;
	{
		/* The default mode keeps no capability: IP_TRANSPARENT is refused. */
		int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

		if (fd < 0 || setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) == 0 ||
		    errno != EPERM)
			return 11;
		close(fd);
	}
	if (sandbox_apply(err, sizeof(err)) != 0) {
		fprintf(stderr, "child: sandbox_apply after privdrop_apply: %s\n", err);
		return 9;
	}
	/* stay alive until the parent has read /proc/PID/status */
	if (write(hold_fd, "r", 1) != 1 || read(hold_fd, &c, 1) != 0)
		return 10;
	/* a normal exit() with its handlers (in the sanitizer build: no leak check in a chroot) */
	fflush(NULL);
	exit(0);
}

static void test_privdrop_apply(void)
{
	struct privdrop_target t;
	char dir[64], desc[128], c;
	int sp[2], st;
	pid_t pid;

	if (!need_root())
		return;
	if (prepare_nobody(&t, dir, sizeof(dir)) != 0)
		return;
	CU_ASSERT_STRING_EQUAL(t.user, "nobody");
	CU_ASSERT(t.uid != 0 && t.gid != 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		close(sp[0]);
		_exit(privdrop_child(&t, sp[1]));
	}
	close(sp[1]);
	/* Not dumpable, yet root still reads its status. */
	if (tu_poll_fd(sp[0], POLLIN, 5000) == 0 && read(sp[0], &c, 1) == 1)
		tu_assert_sandboxed(pid, 1);
	close(sp[0]);
	CU_ASSERT_FATAL(tu_wait_child(pid, &st, CHILD_TIMEOUT_MS) == 0);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		fprintf(stderr, "privdrop child %s (a number is the failed check)\n",
		        tu_describe_status(st, desc, sizeof(desc)));
		CU_FAIL("privdrop child failed");
	}
	CU_ASSERT(rmdir(dir) == 0);
}

/* -transparent's worker: CAP_NET_RAW alone, effective and permitted, and with the mode's filter
 * a TCP socket binds a foreign address. Every check gets its own exit status. */
static int privdrop_net_raw_child(const struct privdrop_target *t)
{
	static const int gone[] = { CAP_SETUID, CAP_SETGID, CAP_NET_ADMIN, CAP_SYS_ADMIN,
	                            CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_SYS_CHROOT, CAP_SETPCAP };
	struct sockaddr_in a = { .sin_family = AF_INET };
	char err[256];
	int fd, one = 1;

	if (privdrop_apply(t, true, err, sizeof(err)) != 0) {
		fprintf(stderr, "child: privdrop_apply(keep_net_raw): %s\n", err);
		return 1;
	}
	if (getuid() != t->uid || geteuid() != t->uid || setuid(0) != -1 || setgid(0) != -1)
		return 2;
	if (capng_get_caps_process() != 0)
		return 8;
	if (capng_have_capability(CAPNG_EFFECTIVE, CAP_NET_RAW) != 1 ||
	    capng_have_capability(CAPNG_PERMITTED, CAP_NET_RAW) != 1)
		return 3;
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		if (capng_have_capability(CAPNG_EFFECTIVE, (unsigned)gone[i]) != 0 ||
		    capng_have_capability(CAPNG_PERMITTED, (unsigned)gone[i]) != 0)
			return 4;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 || prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) != 0)
		return 5;
	if (sandbox_apply_with(SANDBOX_TRANSPARENT, err, sizeof(err)) != 0) {
		fprintf(stderr, "child: sandbox_apply_with(SANDBOX_TRANSPARENT): %s\n", err);
		return 6;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	inet_pton(AF_INET, "198.51.100.77", &a.sin_addr);
	if (fd < 0 || setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		return 7;
	close(fd);
	fflush(NULL);
	exit(0);
}

static void test_privdrop_keep_net_raw(void)
{
	struct privdrop_target t;
	char dir[64], desc[128];
	int st;
	pid_t pid;

	if (!need_root())
		return;
	if (prepare_nobody(&t, dir, sizeof(dir)) != 0)
		return;
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		_exit(privdrop_net_raw_child(&t));
	CU_ASSERT_FATAL(tu_wait_child(pid, &st, CHILD_TIMEOUT_MS) == 0);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
		fprintf(stderr, "privdrop (keep CAP_NET_RAW) child %s (a number is the failed "
		        "check)\n", tu_describe_status(st, desc, sizeof(desc)));
		CU_FAIL("privdrop child (keep CAP_NET_RAW) failed");
	}
	CU_ASSERT(rmdir(dir) == 0);
}

static void test_privdrop_default_user(void)
{
	struct privdrop_target t;
	char dir[64], err[256];

	if (!need_root())
		return;
	make_tempdir(dir, sizeof(dir));
	CU_ASSERT_EQUAL(privdrop_prepare(&t, NULL, dir, err, sizeof(err)), 0);
	CU_ASSERT(strcmp(t.user, "acme-alpn-proxy") == 0 || strcmp(t.user, "nobody") == 0);
	CU_ASSERT(t.uid != 0 && t.gid != 0);
	rmdir(dir);
}

static void test_privdrop_refuses_root(void)
{
	struct privdrop_target t;
	char err[256] = "";

	/* the uid check comes before the directory: this works unprivileged too */
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "root", "/", err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "\"root\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "uid 0"));
	err[0] = '\0';
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "no-such-user-h3x", "/", err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no-such-user-h3x"));
}

static void test_privdrop_bad_dirs(void)
{
	struct privdrop_target t;
	char dir[64], sub[128], err[256];
	struct stat st;

	if (!need_root())
		return;
	make_tempdir(dir, sizeof(dir));

	/* writable by others */
	CU_ASSERT_FATAL(chmod(dir, 0777) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", dir, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "writable"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, dir));
	/* group-writable */
	CU_ASSERT_FATAL(chmod(dir, 0775) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", dir, err, sizeof(err)), -1);
	/* sticky and world-writable: fine for an ancestor like /tmp, not for the chroot itself */
	CU_ASSERT_FATAL(chmod(dir, 01777) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", dir, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "writable"));
	/* owned by someone else */
	CU_ASSERT_FATAL(chmod(dir, 0755) == 0 && chown(dir, 65534, 65534) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", dir, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "owned by uid 65534"));
	/* ... also as an ancestor of the chroot directory */
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	CU_ASSERT_FATAL(mkdir(sub, 0755) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", sub, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "owned by uid 65534"));
	CU_ASSERT(rmdir(sub) == 0);
	CU_ASSERT_FATAL(chown(dir, 0, 0) == 0);

	/* missing: created root:root 0755 whatever the umask */
	snprintf(sub, sizeof(sub), "%s/new", dir);
	umask(077);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", sub, err, sizeof(err)), 0);
	umask(022);
	CU_ASSERT_FATAL(stat(sub, &st) == 0);
	CU_ASSERT(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0755 && st.st_uid == 0 &&
	          st.st_gid == 0);
	CU_ASSERT_STRING_EQUAL(t.chroot_dir, sub);
	CU_ASSERT(rmdir(sub) == 0);
	/* missing parent */
	snprintf(sub, sizeof(sub), "%s/a/b", dir);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", sub, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "parent directory does not exist"));
	/* not a directory */
	snprintf(sub, sizeof(sub), "%s/file", dir);
	CU_ASSERT_FATAL(close(open(sub, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) == 0);
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", sub, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a directory"));
	CU_ASSERT(unlink(sub) == 0);
	/* relative */
	CU_ASSERT_EQUAL(privdrop_prepare(&t, "nobody", "var/empty", err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "absolute"));
	CU_ASSERT(rmdir(dir) == 0);
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "apply as nobody in a chroot", test_privdrop_apply },
		{ "-transparent: CAP_NET_RAW alone, IP_TRANSPARENT in its filter",
		  test_privdrop_keep_net_raw },
		{ "default user", test_privdrop_default_user },
		{ "refuses root and unknown users", test_privdrop_refuses_root },
		{ "bad chroot directories", test_privdrop_bad_dirs },
	};

	if (TU_ADD_SUITE("privdrop", tests) != 0)
		return 99;
	return tu_run();
}
