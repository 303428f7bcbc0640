#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "sandbox.h"
#include "worker.h"

#define FD_LISTEN 3
#define FD_DRAIN 4
#define FD_LOG 5
#define ACCEPT_BURST 32        /* accepts per wake-up: leaves some for the other workers */
#define ACCEPT_PAUSE_MS 1000   /* after EMFILE/ENFILE: stop accepting this long */

struct worker {
	const struct config *cfg;
	int lfd;                  /* -1 once draining */
	int dfd;                  /* -1 once the drain started */
	struct conn **conns;
	size_t nconns, cap;       /* cap: the most connections this worker holds */
	struct pollfd *pfd;
	uint64_t accept_paused_until;
	bool pause_logged;
	uint64_t drain_deadline;  /* 0 while not draining */
};

static void control(char what)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "!%c %ld\n", what, (long)getpid());

	(void)!write(FD_LOG, line, (size_t)n);
}

/* Put the three inherited descriptors at fixed numbers, close everything else. */
static void worker_fds(const struct worker_args *a)
{
	int fds[3] = { a->listen_fd, a->drain_fd, a->log_fd }, tmp[3];

	/* Move them above 3..5 first, so that dup2 onto 3..5 cannot clobber one another. */
	for (int i = 0; i < 3; i++) {
		tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, FD_LOG + 1);
		if (tmp[i] < 0) {
			log_err("worker: moving descriptor %d: %s", fds[i], strerror(errno));
			_exit(WORKER_EXIT_SETUP);
		}
	}
	for (int i = 0; i < 3; i++) {
		if (dup2(tmp[i], FD_LISTEN + i) < 0) {
			log_err("worker: dup2 %d to %d: %s", tmp[i], FD_LISTEN + i, strerror(errno));
			_exit(WORKER_EXIT_SETUP);
		}
	}
	if (close_range(FD_LOG + 1, ~0U, 0) < 0) {
		/* Kernels before 5.9: close one by one up to the limit. */
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = FD_LOG + 1; fd < max && fd < 65536; fd++)
			close((int)fd);
	}
}

static void worker_setup(const struct worker_args *a)
{
	char err[256];
	sigset_t none;

	worker_fds(a);
	log_to_pipe(FD_LOG);
	/* Ctrl-C reaches the whole process group and systemd signals every process: a worker
	 * drains only when the drain pipe says so. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (privdrop_apply(a->priv, err, sizeof(err)) < 0) {
		log_err("worker: dropping privileges failed: %s", err);
		_exit(WORKER_EXIT_SETUP);
	}
	if (a->cfg->no_sandbox) {
		log_warn("worker: running WITHOUT the seccomp sandbox (-no-sandbox): debugging only");
	} else if (sandbox_apply(err, sizeof(err)) < 0) {
		log_err("worker: entering the seccomp sandbox failed: %s", err);
		_exit(WORKER_EXIT_SETUP);
	}
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: a worker that the sandbox kills at once, as after a libc upgrade
	 * that makes it call something the allow-list does not know. */
	if (a->cfg->test_hook != NULL && strcmp(a->cfg->test_hook, "die-at-start") == 0)
		(void)!socket(AF_UNIX, SOCK_STREAM, 0);
#endif
}

static void worker_grow(struct worker *w)
{
	/* Two descriptors per connection, a few for the worker itself. */
	struct rlimit rl;
	size_t cap = 512;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur > 32)
		cap = (size_t)(rl.rlim_cur - 16) / 2;
	if (cap > 100000)
		cap = 100000;
	w->cap = cap;
	w->conns = calloc(cap, sizeof(*w->conns));
	w->pfd = calloc(2 + 2 * cap, sizeof(*w->pfd));
	if (w->conns == NULL || w->pfd == NULL) {
		log_err("worker: out of memory for %zu connection slots", cap);
		_exit(WORKER_EXIT_SETUP);
	}
}

static void worker_accept(struct worker *w, uint64_t now);

static void worker_drain_start(struct worker *w, uint64_t now)
{
	size_t before;

	/* Closing a listener resets the connections still waiting in its queue: take them all
	 * first (a SYN redirected just before the rule went away may only now have completed). */
	do {
		before = w->nconns;
		worker_accept(w, now);
	} while (w->nconns > before);
	close(w->lfd);
	close(w->dfd);
	w->lfd = w->dfd = -1;
	w->drain_deadline = now + w->cfg->drain_timeout_ms;
	control('L');
	if (w->nconns > 0)
		log_info("worker: stopped accepting, %zu connections still open", w->nconns);
}

static void worker_accept(struct worker *w, uint64_t now)
{
	for (int i = 0; i < ACCEPT_BURST && w->nconns < w->cap; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct conn *c;
		int fd = accept4(w->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return; /* another worker took it: normal */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Polling the listener now would spin: pause accepting. */
				if (!w->pause_logged)
					log_warn("worker: accept: %s with %zu connections open: "
					         "pausing accepts for %d ms", strerror(errno),
					         w->nconns, ACCEPT_PAUSE_MS);
				w->pause_logged = true;
				w->accept_paused_until = now + ACCEPT_PAUSE_MS;
				return;
			}
			log_err("worker: accept: %s", strerror(errno));
			return;
		}
		w->pause_logged = false;
		c = conn_new(w->cfg, fd, &ss, now);
		if (c != NULL)
			w->conns[w->nconns++] = c;
	}
}

static void worker_remove(struct worker *w, size_t i)
{
	w->conns[i] = w->conns[--w->nconns];
}

static int worker_timeout(struct worker *w, uint64_t now)
{
	uint64_t next = 0;

	for (size_t i = 0; i < w->nconns; i++) {
		uint64_t d = conn_deadline(w->conns[i]);
		if (d != 0 && (next == 0 || d < next))
			next = d;
	}
	if (w->accept_paused_until != 0 && (next == 0 || w->accept_paused_until < next))
		next = w->accept_paused_until;
	if (w->drain_deadline != 0 && (next == 0 || w->drain_deadline < next))
		next = w->drain_deadline;
	if (next == 0)
		return -1;
	return next <= now ? 0 : next - now > 60000 ? 60000 : (int)(next - now);
}

__attribute__((noreturn)) void worker_run(const struct worker_args *a)
{
	struct worker w = { .cfg = a->cfg, .lfd = FD_LISTEN, .dfd = FD_DRAIN };

	worker_grow(&w); /* getrlimit is not in the sandbox's allow-list */
	worker_setup(a);
	control('R');

	for (;;) {
		uint64_t now = conn_now_ms();
		size_t np = 0, base;
		int timeout, n;

		if (w.drain_deadline != 0 && w.nconns == 0)
			_exit(0);
		if (w.drain_deadline != 0 && now >= w.drain_deadline) {
			for (size_t i = w.nconns; i-- > 0;)
				conn_abort(w.conns[i], "closed: drain timeout", now);
			_exit(0);
		}
		for (size_t i = w.nconns; i-- > 0;)
			if (!conn_expire(w.conns[i], now))
				worker_remove(&w, i);
		if (w.accept_paused_until != 0 && now >= w.accept_paused_until)
			w.accept_paused_until = 0;

		w.pfd[np++] = (struct pollfd){ .fd = w.dfd, .events = POLLIN };
		w.pfd[np++] = (struct pollfd){
			.fd = (w.lfd >= 0 && w.accept_paused_until == 0 && w.nconns < w.cap)
			      ? w.lfd : -1,
			.events = POLLIN };
		/* Two entries per connection: entry base + 2i and the next belong to conns[i]. */
		base = np;
		for (size_t i = 0; i < w.nconns; i++)
			np += (size_t)conn_poll_prepare(w.conns[i], &w.pfd[base + 2 * i]);

		timeout = worker_timeout(&w, now);
		n = poll(w.pfd, np, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal("worker: poll: %s", strerror(errno));
		}
		now = conn_now_ms();
		if (w.dfd >= 0 && w.pfd[0].revents != 0)
			worker_drain_start(&w, now); /* EOF: the parent closed it, or died */
		for (size_t i = w.nconns; i-- > 0;) {
			struct pollfd *p = &w.pfd[base + 2 * i];
			if ((p[0].revents | p[1].revents) != 0 &&
			    !conn_poll_handle(w.conns[i], p, 2, now))
				worker_remove(&w, i);
		}
		if (w.lfd >= 0 && w.pfd[1].revents != 0)
			worker_accept(&w, now);
	}
}
