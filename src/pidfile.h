/* The pidfile, locked with flock(2) for as long as the instance accepts connections. The lock,
 * not the file's existence nor a process name, says whether an instance runs. */
#ifndef PIDFILE_H
#define PIDFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Create and lock path. Returns the locked fd; or -1 with *running set to the pid of the
 * instance that holds the lock (errno EEXIST); or -1 with a message in err. */
int pidfile_acquire(const char *path, pid_t *running, char *err, size_t errlen);

/* Write pid into the locked file. Returns 0 or -1 with a message in err. */
int pidfile_write(int fd, pid_t pid, char *err, size_t errlen);

/* Unlink path, then drop the lock (closing fd). */
void pidfile_release(const char *path, int fd);

/* The pid of the instance holding the lock on path, 0 when none does, -1 on error (errno). */
pid_t pidfile_running(const char *path);

#endif
