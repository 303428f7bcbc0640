/* Dropping a worker's privileges.
 *
 * privdrop_prepare runs in the root parent before any fork: it resolves the user (NSS may open
 * files and sockets, which a chrooted, sandboxed worker cannot) and makes sure the chroot
 * directory is one an unprivileged process cannot change. privdrop_apply runs in each worker
 * right after fork, in the order OpenSSH uses: chroot while still root, then groups, gid, uid
 * (the gid first, since after setresuid the process may no longer change it), then proof that
 * the old ids cannot come back, then no_new_privs and no core dumps.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdbool.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cap-ng.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "log.h"
#include "privdrop.h"

#ifdef HAVE_SANITIZERS
#include <sanitizer/lsan_interface.h>
#endif

#ifdef HAVE_SANITIZERS
/* LeakSanitizer asks this hook (the name is the runtime's) before every leak check. After the
 * chroot a check can only fail ("LeakSanitizer has encountered a fatal error": it needs
 * /proc/self/task, clone and ptrace), turning a clean exit() into status 1, so a worker is never
 * checked: its leaks before the fork are the parent's and show at the parent's exit, the ones
 * after it go unreported. The header asks for a constant answer; the runtime reads it at check
 * time, which is what this relies on (tests/test_sandbox.c checks the effect). */
static volatile int pd_lsan_off;

__attribute__((used)) int __lsan_is_turned_off(void)
{
	return pd_lsan_off;
}
#endif

#define PRIVDROP_DEFAULT_USER "acme-alpn-proxy"
#define PRIVDROP_FALLBACK_USER "nobody"

/* getpwnam with errors told apart from "no such user". Returns 1 found, 0 not found, -1 error
 * (errno set). */
static int pd_lookup(const char *name, struct passwd **pw)
{
	errno = 0;
	*pw = getpwnam(name);
	if (*pw != NULL)
		return 1;
	/* glibc reports "not found" as NULL with errno 0, ENOENT or ESRCH depending on the NSS
	 * module; only other errors are real failures. */
	if (errno == 0 || errno == ENOENT || errno == ESRCH || errno == EBADF || errno == EPERM)
		return 0;
	return -1;
}

static int pd_resolve_user(struct privdrop_target *t, const char *user, char *err, size_t errlen)
{
	struct passwd *pw;
	int rc, fell_back = 0;

	if (user == NULL) {
		user = PRIVDROP_DEFAULT_USER;
		rc = pd_lookup(user, &pw);
		if (rc == 0) {
			user = PRIVDROP_FALLBACK_USER;
			fell_back = 1;
			rc = pd_lookup(user, &pw);
		}
	} else {
		rc = pd_lookup(user, &pw);
	}
	if (rc < 0) {
		err_set_errno(err, errlen, "cannot look up user \"%s\"", user);
		return -1;
	}
	if (rc == 0) {
		if (fell_back)
			snprintf(err, errlen, "neither user \"%s\" nor \"%s\" exists: create one or "
			         "name one with -user", PRIVDROP_DEFAULT_USER, PRIVDROP_FALLBACK_USER);
		else
			snprintf(err, errlen, "no such user \"%s\"", user);
		return -1;
	}
	/* Dropping to uid 0 or gid 0 drops nothing (gid 0 owns /dev, /etc files...). */
	if (pw->pw_uid == 0 || pw->pw_gid == 0) {
		snprintf(err, errlen, "refusing to run workers as user \"%s\" (uid %lu, gid %lu): "
		         "uid and gid must not be 0", user, (unsigned long)pw->pw_uid,
		         (unsigned long)pw->pw_gid);
		return -1;
	}
	if (strlen(user) >= sizeof(t->user)) {
		snprintf(err, errlen, "user name \"%s\" is too long (max %zu)", user,
		         sizeof(t->user) - 1);
		return -1;
	}
	strcpy(t->user, user);
	t->uid = pw->pw_uid;
	t->gid = pw->pw_gid;
	return 0;
}

/* One component of the chroot path: a directory owned by root that nobody else can write.
 * A sticky, world-writable ancestor such as /tmp is accepted: others cannot rename or remove
 * the root-owned entry below it. The chroot directory itself must not be writable at all. */
static int pd_check_component(const char *path, const char *shown, int is_target, char *err,
                              size_t errlen)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		err_set_errno(err, errlen, "chroot directory %s: cannot stat %s", shown, path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "chroot directory %s: %s is not a directory", shown, path);
		return -1;
	}
	if (st.st_uid != 0) {
		snprintf(err, errlen, "chroot directory %s: %s is owned by uid %lu, not by root",
		         shown, path, (unsigned long)st.st_uid);
		return -1;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (is_target || !(st.st_mode & S_ISVTX))) {
		snprintf(err, errlen, "chroot directory %s: %s is writable by group or others "
		         "(mode %04o)", shown, path, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

static int pd_prepare_dir(struct privdrop_target *t, const char *dir, bool create, char *err,
                          size_t errlen)
{
	char real[PATH_MAX];
	char *slash;

	if (dir == NULL)
		dir = DEFAULT_CHROOT_DIR;
	/* The workers chroot after the daemon may have changed directory: only absolute paths
	 * mean the same thing in both places. */
	if (dir[0] != '/') {
		snprintf(err, errlen, "chroot directory %s: must be an absolute path", dir);
		return -1;
	}
	if (!create) {
		if (access(dir, F_OK) != 0 && errno == ENOENT)
			return 1;
	} else if (mkdir(dir, 0755) == 0) {
		/* mkdir applied the umask and the parent's group (setgid parents): set both. */
		if (chown(dir, 0, 0) != 0 || chmod(dir, 0755) != 0) {
			err_set_errno(err, errlen, "chroot directory %s: cannot set owner root:root and "
			              "mode 0755 after creating it", dir);
			return -1;
		}
	} else if (errno == ENOENT) {
		snprintf(err, errlen, "chroot directory %s: cannot create it, its parent directory "
		         "does not exist", dir);
		return -1;
	} else if (errno != EEXIST) {
		err_set_errno(err, errlen, "chroot directory %s: cannot create it", dir);
		return -1;
	}
	/* Check the path the kernel will actually use, symlinks resolved, and every directory
	 * on the way: a writable ancestor would let its owner swap the whole tree (OpenSSH's
	 * ChrootDirectory rule). The directory need not be empty (an existing /var/empty may
	 * hold lost+found or the like), but an empty one is recommended: the workers never open
	 * anything, the chroot only makes sure there is nothing to open. */
	if (realpath(dir, real) == NULL) {
		err_set_errno(err, errlen, "chroot directory %s: cannot resolve it", dir);
		return -1;
	}
	if (strlen(real) >= sizeof(t->chroot_dir)) {
		snprintf(err, errlen, "chroot directory %s: path too long (max %zu)", real,
		         sizeof(t->chroot_dir) - 1);
		return -1;
	}
	if (pd_check_component("/", dir, strcmp(real, "/") == 0, err, errlen) < 0)
		return -1;
	for (slash = strchr(real + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (pd_check_component(real, dir, 0, err, errlen) < 0)
			return -1;
		*slash = '/';
	}
	if (strcmp(real, "/") != 0 && pd_check_component(real, dir, 1, err, errlen) < 0)
		return -1;
	strcpy(t->chroot_dir, real);
	return 0;
}

int privdrop_prepare(struct privdrop_target *t, const char *user, const char *chroot_dir,
                     char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	if (pd_resolve_user(t, user, err, errlen) < 0)
		return -1;
	return pd_prepare_dir(t, chroot_dir, true, err, errlen);
}

int privdrop_check_user(struct privdrop_target *t, const char *user, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	return pd_resolve_user(t, user, err, errlen);
}

int privdrop_check_dir(const char *chroot_dir, char *err, size_t errlen)
{
	struct privdrop_target t;

	memset(&t, 0, sizeof(t));
	return pd_prepare_dir(&t, chroot_dir, false, err, errlen);
}

/* After the switch: the ids are the target ones in all three slots, and neither root's nor the
 * old ids can be taken back. Each attempt that unexpectedly succeeds is itself the failure. */
static int pd_verify(const struct privdrop_target *t, uid_t old_uid, gid_t old_gid, char *err,
                     size_t errlen)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0) {
		err_set_errno(err, errlen, "getresuid/getresgid");
		return -1;
	}
	if (ru != t->uid || eu != t->uid || su != t->uid || rg != t->gid || eg != t->gid ||
	    sg != t->gid) {
		snprintf(err, errlen, "after dropping to %s: uids %lu/%lu/%lu gids %lu/%lu/%lu, "
		         "expected %lu and %lu", t->user, (unsigned long)ru, (unsigned long)eu,
		         (unsigned long)su, (unsigned long)rg, (unsigned long)eg, (unsigned long)sg,
		         (unsigned long)t->uid, (unsigned long)t->gid);
		return -1;
	}
	if (getgroups(0, NULL) != 0) {
		snprintf(err, errlen, "after dropping to %s: supplementary groups remain", t->user);
		return -1;
	}
	if (setuid(0) != -1 || seteuid(0) != -1 ||
	    (old_uid != t->uid && (setuid(old_uid) != -1 || seteuid(old_uid) != -1))) {
		snprintf(err, errlen, "after dropping to %s: uid 0 / uid %lu could be restored",
		         t->user, (unsigned long)old_uid);
		return -1;
	}
	if (setgid(0) != -1 || setegid(0) != -1 ||
	    (old_gid != t->gid && (setgid(old_gid) != -1 || setegid(old_gid) != -1))) {
		snprintf(err, errlen, "after dropping to %s: gid 0 / gid %lu could be restored",
		         t->user, (unsigned long)old_gid);
		return -1;
	}
	return 0;
}

/* -transparent: after the switch to the worker's uid the process has no effective
 * capabilities and still every permitted one (PR_SET_KEEPCAPS). Keep CAP_NET_RAW alone,
 * effective and permitted, as nginx's workers do for `proxy_bind ... transparent`: it is what
 * setsockopt(IP_TRANSPARENT) checks. Everything else, CAP_SETUID first, is gone before the
 * verification that the old ids cannot come back. */
static int pd_keep_net_raw(char *err, size_t errlen)
{
	capng_clear(CAPNG_SELECT_CAPS);
	if (capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED, CAP_NET_RAW) != 0 ||
	    capng_apply(CAPNG_SELECT_CAPS) != 0) {
		err_set_errno(err, errlen, "keeping CAP_NET_RAW alone (capset)");
		return -1;
	}
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) {
		err_set_errno(err, errlen, "prctl(PR_SET_KEEPCAPS, 0)");
		return -1;
	}
	/* Read back from the kernel: exactly CAP_NET_RAW, nothing else, permitted or not. */
	if (capng_get_caps_process() != 0) {
		err_set_errno(err, errlen, "reading the capabilities back (capget)");
		return -1;
	}
	if (capng_have_capability(CAPNG_EFFECTIVE, CAP_NET_RAW) != 1) {
		snprintf(err, errlen, "CAP_NET_RAW is not effective after capset");
		return -1;
	}
	capng_update(CAPNG_DROP, CAPNG_EFFECTIVE | CAPNG_PERMITTED, CAP_NET_RAW);
	if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE) {
		snprintf(err, errlen, "capabilities other than CAP_NET_RAW remain after capset");
		return -1;
	}
	return 0;
}

int privdrop_apply(const struct privdrop_target *t, bool keep_net_raw, char *err,
                   size_t errlen)
{
	const struct rlimit no_core = { 0, 0 };
	uid_t old_uid = geteuid();
	gid_t old_gid = getegid();

	if (t->uid == 0 || t->gid == 0 || t->chroot_dir[0] != '/') {
		snprintf(err, errlen, "privdrop_apply: target not prepared (uid %lu, gid %lu, "
		         "chroot \"%s\")", (unsigned long)t->uid, (unsigned long)t->gid,
		         t->chroot_dir);
		return -1;
	}
#ifdef HAVE_SANITIZERS
	pd_lsan_off = 1; /* see __lsan_is_turned_off above */
#endif
	if (chroot(t->chroot_dir) != 0) {
		err_set_errno(err, errlen, "chroot(%s)", t->chroot_dir);
		return -1;
	}
	/* Without it the working directory stays outside the new root. */
	if (chdir("/") != 0) {
		err_set_errno(err, errlen, "chdir(\"/\") in chroot %s", t->chroot_dir);
		return -1;
	}
	if (setgroups(0, NULL) != 0) {
		err_set_errno(err, errlen, "setgroups(0) for user %s", t->user);
		return -1;
	}
	if (setresgid(t->gid, t->gid, t->gid) != 0) {
		err_set_errno(err, errlen, "setresgid(%lu) for user %s", (unsigned long)t->gid,
		              t->user);
		return -1;
	}
	if (keep_net_raw && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
		err_set_errno(err, errlen, "prctl(PR_SET_KEEPCAPS, 1)");
		return -1;
	}
	if (setresuid(t->uid, t->uid, t->uid) != 0) {
		err_set_errno(err, errlen, "setresuid(%lu) for user %s", (unsigned long)t->uid,
		              t->user);
		return -1;
	}
	if (keep_net_raw && pd_keep_net_raw(err, errlen) < 0)
		return -1;
	if (pd_verify(t, old_uid, old_gid, err, errlen) < 0)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		err_set_errno(err, errlen, "prctl(PR_SET_NO_NEW_PRIVS)");
		return -1;
	}
	/* A worker holds client data: no core dumps, and no ptrace by other processes of the same
	 * user. Root can still read /proc/PID/status. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		err_set_errno(err, errlen, "prctl(PR_SET_DUMPABLE, 0)");
		return -1;
	}
	if (setrlimit(RLIMIT_CORE, &no_core) != 0) {
		err_set_errno(err, errlen, "setrlimit(RLIMIT_CORE, 0)");
		return -1;
	}
	return 0;
}
