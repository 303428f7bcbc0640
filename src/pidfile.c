#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pidfile.h"

static pid_t read_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long v;
	char *end;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	v = strtol(buf, &end, 10);
	if (end == buf || v <= 0 || (*end != '\n' && *end != '\0'))
		return 0;
	return (pid_t)v;
}

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int pidfile_acquire(const char *path, pid_t *running, char *err, size_t errlen)
{
	struct stat a, b;
	int fd, tries;

	*running = 0;
	for (tries = 0; tries < 200; tries++) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0) {
			err_set_errno(err, errlen, "pidfile %s", path);
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			/* The holder before us may have unlinked the file after we opened it: the
			 * lock counts only on the inode that the path still names. */
			if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
			    a.st_dev == b.st_dev)
				return fd;
			close(fd);
			continue;
		}
		if (errno != EWOULDBLOCK) {
			err_set_errno(err, errlen, "lock pidfile %s", path);
			close(fd);
			return -1;
		}
		/* Held: by a running instance, or for an instant by `status`/`stop` probing it. */
		*running = read_pid(fd);
		close(fd);
		if (*running > 0 && kill(*running, 0) == 0) {
			errno = EEXIST;
			return -1;
		}
		nap_ms(10);
	}
	snprintf(err, errlen, "pidfile %s stays locked but names no live process", path);
	return -1;
}

int pidfile_write(int fd, pid_t pid, char *err, size_t errlen)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)pid);

	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n || fsync(fd) < 0) {
		err_set_errno(err, errlen, "write pidfile");
		return -1;
	}
	return 0;
}

void pidfile_release(const char *path, int fd)
{
	if (fd < 0)
		return;
	(void)unlink(path);
	close(fd);
}

pid_t pidfile_running(const char *path)
{
	pid_t pid;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		close(fd); /* nobody holds it: a leftover of a dead instance */
		return 0;
	}
	pid = errno == EWOULDBLOCK ? read_pid(fd) : -1;
	close(fd);
	return pid;
}
