/* The parent's side of the sandbox: after a worker died of SIGSYS, which system call killed
 * it. (The worker's side, the filter itself, is sandbox.h.) */
#ifndef SANDBOX_VIOLATION_H
#define SANDBOX_VIOLATION_H

#include <stddef.h>
#include <sys/types.h>

/* The number of the system call that the kernel's audit record (/dev/kmsg, "type=1326 ...
 * pid=PID ... syscall=N") names for pid, with its name in name ("unknown" when libseccomp
 * does not know the number); -1 when no record is found (no /dev/kmsg, dmesg_restrict, the
 * record overwritten). Never blocks. */
long sandbox_violation(pid_t pid, char *name, size_t namelen);

#endif
