/* A prefork worker: drops privileges, enters the sandbox, then accepts and relays in one epoll
 * loop until the drain pipe reaches EOF and its connections have finished. */
#ifndef WORKER_H
#define WORKER_H

#include "config.h"
#include "privdrop.h"

#define WORKER_EXIT_SETUP 70 /* exit status: privilege drop or sandbox failed (fatal) */

/* Control lines a worker writes to the log pipe, besides "<prio>text" log lines. */
#define WORKER_MSG_READY '!'   /* "!R pid": accepting */
#define WORKER_MSG_CLOSED '!'  /* "!L pid": listener closed (draining) */

struct worker_args {
	const struct config *cfg;
	const struct privdrop_target *priv;
	int listen_fd, drain_fd, log_fd; /* every other descriptor is closed by worker_run */
};

__attribute__((noreturn)) void worker_run(const struct worker_args *a);

#endif
