/* The seccomp allow-list of a worker, built with libseccomp.
 *
 * Default action: kill the whole process (SECCOMP_RET_KILL_PROCESS, Linux >= 4.14). Only the
 * native architecture is in the filter: on x86_64 a call through the i386 or x32 entry points
 * already hits the bad-architecture action, which is set to the same kill.
 *
 * The list is what the worker's epoll loop needs once it runs chrooted and unprivileged: epoll,
 * accept, reading and writing sockets and pipes, connecting to the two backends, the memory
 * calls of malloc, and the clock. glibc picks system calls the source does not name
 * (epoll_wait() may be epoll_pwait, clock_gettime falls back from the vDSO to the system call,
 * 32-bit ABIs use the *_time64 forms): names are resolved at run time and a name this
 * architecture does not have is skipped, while a name libseccomp does not know at all is an error
 * (a typo must not silently shrink the list).
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netfilter_ipv4.h>
/* <linux/netfilter_ipv6/ip6_tables.h> clashes with <net/if.h>; the number is the ABI. */
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <seccomp.h>

#include "sandbox.h"

#ifdef HAVE_SANITIZERS
#include <sanitizer/lsan_interface.h>
#endif

#define SB_MAX_ARGS 3

/* SCMP_A<n>_32(SCMP_CMP_EQ, v) leaves datum_b out, which clang's -Wmissing-field-initializers
 * rejects; equality ignores datum_b, so pass 0. */
#define SB_EQ32(arg, v) SCMP_CMP32(arg, SCMP_CMP_EQ, (v), 0)

struct sb {
	scmp_filter_ctx ctx;
	unsigned features; /* SANDBOX_* */
	char *err;
	size_t errlen;
};

/* The number of system call `name` on this architecture in *nr: returns 1. Returns 0 when
 * libseccomp knows the name but this architecture has no such call (a negative pseudo number,
 * e.g. clock_gettime64 on x86_64, epoll_wait on aarch64: nothing to add), and -1 with a message
 * (*nr == __NR_SCMP_ERROR) when libseccomp does not know the name at all (a typo). */
static int sb_resolve(struct sb *sb, const char *name, int *nr)
{
	*nr = seccomp_syscall_resolve_name(name);
	if (*nr == __NR_SCMP_ERROR) {
		snprintf(sb->err, sb->errlen, "libseccomp does not know system call \"%s\"", name);
		return -1;
	}
	return *nr >= 0;
}

/* Allow system call `name` when all `nargs` comparisons (struct scmp_arg_cmp) hold. */
static int sb_allow(struct sb *sb, const char *name, unsigned nargs, ...)
{
	struct scmp_arg_cmp cmp[SB_MAX_ARGS];
	va_list ap;
	unsigned i;
	int nr, rc;

	if (nargs > SB_MAX_ARGS) {
		snprintf(sb->err, sb->errlen, "rule for %s has %u comparisons (max %d)",
		         name, nargs, SB_MAX_ARGS);
		return -1;
	}
	va_start(ap, nargs);
	for (i = 0; i < nargs; i++)
		cmp[i] = va_arg(ap, struct scmp_arg_cmp);
	va_end(ap);

	if (sb_resolve(sb, name, &nr) <= 0)
		return nr == __NR_SCMP_ERROR ? -1 : 0;
	rc = seccomp_rule_add_array(sb->ctx, SCMP_ACT_ALLOW, nr, nargs, cmp);
	if (rc < 0) {
		snprintf(sb->err, sb->errlen, "seccomp_rule_add(%s = %d): %s", name, nr,
		         strerror(-rc));
		return -1;
	}
	return 0;
}

static int sb_rules_io(struct sb *sb)
{
	/* Every entry is unconditional: these calls act on descriptors the worker already holds,
	 * and a chrooted, unprivileged process without open/socket(AF_UNIX) gets no new ones. */
	static const char *const plain[] = {
		/* waiting: the worker loop is epoll_wait, which glibc implements with epoll_pwait
		 * on architectures without epoll_wait (aarch64); epoll_pwait2 for a libc that
		 * prefers it. epoll_ctl adds sockets as they come and takes the listener out and
		 * back during an accept pause; the epoll descriptor itself is made before the
		 * sandbox. */
		"epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl",
		"accept", "accept4",
		"read", "readv", "recvfrom", "recvmsg",
		"write", "writev", "sendto", "sendmsg",
		"connect", "getsockname", "getpeername", "shutdown", "close",
		/* zero-copy relay: splice between a socket and a pipe made by pipe2 */
		"pipe2", "splice",
		/* time: normally served by the vDSO, the system call is its fallback */
		"clock_gettime", "clock_gettime64", "gettimeofday",
		/* process: exit paths, signal return, a blocked-signal mask around the loop */
		"exit", "exit_group", "rt_sigreturn", "rt_sigprocmask", "restart_syscall", "getpid",
	};
	size_t i;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (sb_allow(sb, plain[i], 0) < 0)
			return -1;
	return 0;
}

static int sb_rules_socket(struct sb *sb)
{
	/* socket(): TCP over IPv4 or IPv6 only. The type may carry SOCK_NONBLOCK and SOCK_CLOEXEC,
	 * so it is compared under a mask that clears exactly those two bits; anything else
	 * (SOCK_DGRAM, SOCK_RAW, AF_UNIX, AF_NETLINK, AF_PACKET, MPTCP or SCTP protocols) is killed.
	 * One comparison per argument per rule, so each alternative is a rule of its own. */
	static const int domains[] = { AF_INET, AF_INET6 };
	static const int protocols[] = { 0, IPPROTO_TCP };
	const uint32_t type_mask = ~(uint32_t)(SOCK_NONBLOCK | SOCK_CLOEXEC);
	size_t d, p;

	for (d = 0; d < 2; d++)
		for (p = 0; p < 2; p++)
			if (sb_allow(sb, "socket", 3, SB_EQ32(0, domains[d]),
			             SCMP_A1_32(SCMP_CMP_MASKED_EQ, type_mask, SOCK_STREAM),
			             SB_EQ32(2, protocols[p])) < 0)
				return -1;

	/* getsockopt(): only SO_ERROR, to learn the result of a non-blocking connect(). */
	if (sb_allow(sb, "getsockopt", 2, SB_EQ32(1, SOL_SOCKET),
	             SB_EQ32(2, SO_ERROR)) < 0)
		return -1;

	/* setsockopt(): level and name are checked as pairs, one rule each. */
	if (sb_allow(sb, "setsockopt", 2, SB_EQ32(1, IPPROTO_TCP),
	             SB_EQ32(2, TCP_NODELAY)) < 0 ||
	    sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_SOCKET),
	             SB_EQ32(2, SO_KEEPALIVE)) < 0 ||
	    sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_SOCKET),
	             SB_EQ32(2, SO_LINGER)) < 0)
		return -1;

	/* -proxy-protocol: the address a visitor connected to before the REDIRECT. IPv4 and IPv6
	 * share the option number (80); the levels tell them apart. */
	if ((sb->features & SANDBOX_PROXY_PROTOCOL) &&
	    (sb_allow(sb, "getsockopt", 2, SB_EQ32(1, SOL_IP), SB_EQ32(2, SO_ORIGINAL_DST)) < 0 ||
	     sb_allow(sb, "getsockopt", 2, SB_EQ32(1, SOL_IPV6),
	              SB_EQ32(2, IP6T_SO_ORIGINAL_DST)) < 0))
		return -1;
	/* -transparent: the backend socket binds the visitor's address. IP_TRANSPARENT works
	 * only with the CAP_NET_RAW the worker kept in this mode; socket() stays TCP-only above,
	 * so that capability opens no raw socket. */
	if ((sb->features & SANDBOX_TRANSPARENT) &&
	    (sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_IP), SB_EQ32(2, IP_TRANSPARENT)) < 0 ||
	     sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_IPV6),
	              SB_EQ32(2, IPV6_TRANSPARENT)) < 0 ||
	     sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_IP),
	              SB_EQ32(2, IP_BIND_ADDRESS_NO_PORT)) < 0 ||
	     sb_allow(sb, "setsockopt", 2, SB_EQ32(1, SOL_SOCKET), SB_EQ32(2, SO_MARK)) < 0 ||
	     sb_allow(sb, "bind", 0) < 0))
		return -1;
	return 0;
}

static int sb_rules_fcntl(struct sb *sb)
{
	/* Status flags (O_NONBLOCK) and relay pipe sizes; the relay needs neither today (accept4
	 * and pipe2 set O_NONBLOCK, pipes keep the default size). F_DUPFD, F_SETOWN, F_SETSIG,
	 * locks and leases stay forbidden. 32-bit ABIs call fcntl64. */
	static const int cmds[] = { F_GETFL, F_SETFL, F_GETPIPE_SZ, F_SETPIPE_SZ };
	static const char *const names[] = { "fcntl", "fcntl64" };
	size_t n, c;

	for (n = 0; n < 2; n++)
		for (c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++)
			if (sb_allow(sb, names[n], 1, SB_EQ32(1, cmds[c])) < 0)
				return -1;
	return 0;
}

static int sb_rules_memory(struct sb *sb)
{
	/* malloc: brk for the main arena, mmap for blocks above M_MMAP_THRESHOLD (128 KiB) and
	 * when brk fails, munmap/mremap for freeing and growing them, madvise for trimming.
	 * mprotect: glibc makes the memory of a non-main heap readable and writable with it as the
	 * heap grows; a single-threaded worker should never need it, but a libc that decides
	 * otherwise must not turn into a kill storm, and it is harmless without PROT_EXEC.
	 * Neither mmap nor mprotect may create executable memory: the worker loads no code. */
	static const char *const plain[] = { "brk", "munmap", "mremap", "madvise" };
	size_t i;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (sb_allow(sb, plain[i], 0) < 0)
			return -1;
	if (sb_allow(sb, "mmap", 1, SCMP_A2_32(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0 ||
	    sb_allow(sb, "mmap2", 1, SCMP_A2_32(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0 ||
	    sb_allow(sb, "mprotect", 1, SCMP_A2_32(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0)
		return -1;
	return 0;
}

#ifdef HAVE_SANITIZERS
/* Only in the ASan/UBSan build (--enable-sanitizers, a test build, never installed). Found by
 * running chrooted, sandboxed children of the sanitizer build (gcc 12's libasan/libubsan, and
 * clang 14's runtime) through malloc/realloc/calloc patterns, an ASan heap-use-after-free
 * report, an ASan SEGV report and a UBSan report, with the default action switched to
 * SCMP_ACT_LOG and every call after seccomp_load traced:
 *   allowed:  sigaltstack (the runtime's alternate signal stack, also on the normal exit
 *             path), futex (runtime-internal mutexes, FUTEX_WAKE while reporting),
 *             sched_yield (its spin locks back off with it under contention). madvise
 *             (MADV_NOHUGEPAGE/MADV_DONTDUMP on allocator regions), mmap, munmap, getpid and
 *             write(2) are allowed anyway.
 *   refused with an error instead of a kill, so that nothing is opened or changed:
 *             open, openat (/proc/self/maps, /proc/self/exe, /proc/self/environ,
 *             /proc/self/cmdline) and readlink (/proc/self/exe): EACCES;
 *             ioctl (TCGETS on stderr, deciding on colours): ENOTTY;
 *             stat, lstat, newfstatat, statx: ENOENT (clang's runtime looks for
 *             llvm-symbolizer in PATH and, if it finds one, forks and execs it: a kill).
 *             The runtime carries on without them and prints its report with module offsets
 *             instead of function names, all it could get in the chroot anyway.
 * Consequence: in this build a forbidden open() fails with EACCES instead of killing the
 * worker (tests/test_sandbox.c expects exactly that); every other forbidden call (execve,
 * socket(AF_UNIX), kill, ptrace, fork...) still kills.
 * LeakSanitizer cannot check a sandboxed process at exit: it needs clone, ptrace and
 * /proc/self/task, and would die of SIGSYS. sandbox_apply runs the check once before loading the
 * filter instead, which also turns off the at-exit check; leaks made after that go unreported.
 * In a worker privdrop_apply has already turned LeakSanitizer off (there is no /proc in the
 * chroot), and the call does nothing. Under ptrace (strace, gdb) LeakSanitizer always fails:
 * run such a session with ASAN_OPTIONS=detect_leaks=0. */
static int sb_refuse(struct sb *sb, const char *name, int errnum)
{
	int nr, rc;

	if (sb_resolve(sb, name, &nr) <= 0)
		return nr == __NR_SCMP_ERROR ? -1 : 0;
	rc = seccomp_rule_add(sb->ctx, SCMP_ACT_ERRNO(errnum), nr, 0);
	if (rc < 0) {
		snprintf(sb->err, sb->errlen, "seccomp_rule_add(%s -> %s): %s", name,
		         strerror(errnum), strerror(-rc));
		return -1;
	}
	return 0;
}

static int sb_rules_sanitizers(struct sb *sb)
{
	static const char *const plain[] = { "sigaltstack", "futex", "sched_yield" };
	size_t i;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (sb_allow(sb, plain[i], 0) < 0)
			return -1;
	if (sb_refuse(sb, "open", EACCES) < 0 || sb_refuse(sb, "openat", EACCES) < 0 ||
	    sb_refuse(sb, "readlink", EACCES) < 0 || sb_refuse(sb, "ioctl", ENOTTY) < 0 ||
	    sb_refuse(sb, "stat", ENOENT) < 0 || sb_refuse(sb, "lstat", ENOENT) < 0 ||
	    sb_refuse(sb, "newfstatat", ENOENT) < 0 || sb_refuse(sb, "statx", ENOENT) < 0)
		return -1;
	return 0;
}
#endif

/* Build the filter, or return NULL with a message in err. */
static scmp_filter_ctx sb_build(unsigned features, char *err, size_t errlen)
{
	struct sb sb = { NULL, features, err, errlen };
	int rc;

	sb.ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (sb.ctx == NULL) {
		/* libseccomp refuses an action the running kernel does not support */
		snprintf(err, errlen, "seccomp_init(SCMP_ACT_KILL_PROCESS) failed "
		         "(needs Linux >= 4.14 with seccomp filters)");
		return NULL;
	}
	/* Calls through another architecture's entry point die the same way. */
	rc = seccomp_attr_set(sb.ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* no_new_privs is privdrop_apply's job and sandbox_apply checks it: libseccomp must not
	 * set it behind the caller's back and hide a missing privilege drop. */
	if (rc == 0)
		rc = seccomp_attr_set(sb.ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (rc < 0) {
		snprintf(err, errlen, "seccomp_attr_set: %s", strerror(-rc));
		goto fail;
	}
	if (sb_rules_io(&sb) < 0 || sb_rules_socket(&sb) < 0 || sb_rules_fcntl(&sb) < 0 ||
	    sb_rules_memory(&sb) < 0)
		goto fail;
#ifdef HAVE_SANITIZERS
	if (sb_rules_sanitizers(&sb) < 0)
		goto fail;
#endif
	return sb.ctx;
fail:
	seccomp_release(sb.ctx);
	return NULL;
}

int sandbox_apply(char *err, size_t errlen)
{
	return sandbox_apply_with(0, err, errlen);
}

int sandbox_apply_with(unsigned features, char *err, size_t errlen)
{
	scmp_filter_ctx ctx;
	int rc;

	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
		snprintf(err, errlen, "no_new_privs is not set (privileges not dropped?)");
		return -1;
	}
	ctx = sb_build(features, err, errlen);
	if (ctx == NULL)
		return -1;
#ifdef HAVE_SANITIZERS
	/* See sb_rules_sanitizers: check for leaks now (nothing when privdrop_apply turned
	 * LeakSanitizer off), which also disables the at-exit check that would die of SIGSYS. */
	__lsan_do_leak_check();
#endif
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc < 0) {
		snprintf(err, errlen, "seccomp_load: %s", strerror(-rc));
		return -1;
	}
	return 0;
}

int sandbox_export(int fd)
{
	return sandbox_export_with(0, fd);
}

int sandbox_export_with(unsigned features, int fd)
{
	char err[256];
	scmp_filter_ctx ctx;
	int rc;

	ctx = sb_build(features, err, sizeof(err));
	if (ctx == NULL) {
		errno = EINVAL;
		return -1;
	}
	rc = seccomp_export_pfc(ctx, fd);
	seccomp_release(ctx);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}
