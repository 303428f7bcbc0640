/* Dropping a worker's privileges: chroot, groups, gid, uid, no_new_privs, no core dumps. */
#ifndef PRIVDROP_H
#define PRIVDROP_H

#include <stdbool.h>
#include <sys/types.h>

struct privdrop_target {
	uid_t uid;
	gid_t gid;
	char user[64];     /* for messages */
	char chroot_dir[256];
};

/* In the parent, before forking: resolve user (NULL: "acme-alpn-proxy" if it exists, else
 * "nobody"), refuse uid 0, create chroot_dir if missing (mode 0755, owner root) and check that it
 * is a root-owned directory not writable by others. Returns 0 or -1 with a message in err. */
int privdrop_prepare(struct privdrop_target *t, const char *user, const char *chroot_dir,
                     char *err, size_t errlen);

/* What privdrop_prepare checks, changing nothing (check): the user as it resolves it (t->user
 * says which, after a fallback to "nobody"), returns 0 or -1 with err; and the chroot directory,
 * returns 0 when it is fit, 1 when it does not exist (start would create it), -1 with err. */
int privdrop_check_user(struct privdrop_target *t, const char *user, char *err, size_t errlen);
int privdrop_check_dir(const char *chroot_dir, char *err, size_t errlen);

/* In the worker: chroot+chdir("/"), setgroups(0), setresgid, setresuid (keep_net_raw, for
 * -transparent: then only CAP_NET_RAW stays, effective and permitted), verify setuid(0) and
 * setgid(old) fail, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE 0, RLIMIT_CORE 0. Returns 0 or -1 with
 * a message in err; the caller must treat -1 as fatal. */
int privdrop_apply(const struct privdrop_target *t, bool keep_net_raw, char *err,
                   size_t errlen);

#endif
