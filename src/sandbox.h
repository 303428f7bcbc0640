/* The libseccomp allow-list of a worker. */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stddef.h>

/* Load the worker filter (default action: kill the process). Requires no_new_privs already set.
 * Returns 0 or -1 with a message in err; the caller must treat -1 as fatal. */
int sandbox_apply(char *err, size_t errlen);

/* Write the filter in libseccomp's PFC text form to fd (for tests and debugging). */
int sandbox_export(int fd);

#include <sys/types.h>

/* In the parent, after a worker died of SIGSYS: the number of the system call the kernel's audit
 * record (/dev/kmsg, "type=1326 ... pid=PID ... syscall=N") names for pid, or -1 when no record
 * is found. Never blocks. */
long sandbox_violation_syscall(pid_t pid);

#endif
