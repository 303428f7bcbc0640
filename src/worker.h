/* A prefork worker: drops privileges, enters the sandbox, then accepts and relays in one epoll
 * loop until the drain pipe reaches EOF and its connections have finished. */
#ifndef WORKER_H
#define WORKER_H

#include "config.h"
#include "privdrop.h"

#define WORKER_EXIT_SETUP 70 /* exit status: privilege drop or sandbox failed (fatal) */

struct worker_args {
	const struct config *cfg;
	const struct privdrop_target *priv;
	/* log_fd: the write end of this worker's own log pipe; null_fd: /dev/null, for the
	 * descriptors 0, 1 and 2. Every other descriptor is closed by worker_run. */
	int listen_fd, drain_fd, log_fd, null_fd;
};

__attribute__((noreturn)) void worker_run(const struct worker_args *a);

#endif
