/* The parent's reading of the kernel's seccomp audit records (/dev/kmsg): which system call the
 * sandbox killed a worker for. See sandbox_violation.h. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <seccomp.h>

#include "sandbox_violation.h"

/* If msg is a seccomp audit record about pid, store its syscall number and return 1. */
static int sbv_parse_record(const char *msg, pid_t pid, long *sysno)
{
	char pidstr[32];
	const char *p;
	char *end;
	long nr;

	if (strstr(msg, "type=1326") == NULL && strstr(msg, "audit: seccomp") == NULL)
		return 0;
	/* The leading space keeps "auid=", "ppid=" and "opid=" from matching. */
	snprintf(pidstr, sizeof(pidstr), " pid=%ld ", (long)pid);
	if (strstr(msg, pidstr) == NULL)
		return 0;
	p = strstr(msg, " syscall=");
	if (p == NULL)
		return 0;
	p += strlen(" syscall=");
	errno = 0;
	nr = strtol(p, &end, 10);
	if (end == p || errno != 0 || nr < 0)
		return 0;
	*sysno = nr;
	return 1;
}

static long sbv_syscall(pid_t pid)
{
	/* A /dev/kmsg read returns exactly one record and fails with EINVAL if the buffer is
	 * smaller; records are at most about 8 KiB including the dictionary lines. */
	char rec[8192 + 1];
	long found = -1, nr;
	ssize_t n;
	char *msg;
	int fd;

	/* Absent in many containers, root-only with kernel.dmesg_restrict: then we know nothing. */
	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0) {
			/* EPIPE: the ring buffer overwrote records under us; reading goes on with
			 * the oldest one left. EINTR: try again. Anything else (EAGAIN at the end):
			 * done. */
			if (errno == EPIPE || errno == EINTR)
				continue;
			break;
		}
		if (n == 0)
			break;
		rec[n] = '\0';
		/* "prio,seq,usec,flags;message\n continuation lines" */
		msg = strchr(rec, ';');
		if (msg == NULL)
			continue;
		if (sbv_parse_record(msg + 1, pid, &nr))
			found = nr;
	}
	close(fd);
	return found;
}

long sandbox_violation(pid_t pid, char *name, size_t namelen)
{
	long nr = sbv_syscall(pid);
	char *resolved;

	if (nr < 0)
		return -1;
	resolved = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr);
	snprintf(name, namelen, "%s", resolved != NULL ? resolved : "unknown");
	free(resolved);
	return nr;
}
