#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "evtag.h"
#include "log.h"
#include "sandbox.h"
#include "worker.h"
#include "workermsg.h"

#define FD_LISTEN 3
#define FD_DRAIN 4
#define FD_LOG 5
/* Accepts per wake-up. With other workers on the listener, one: a connection goes to whichever
 * worker is free first, instead of a burst (wrk's 32 keep-alive connections, a page's
 * parallel requests) staying with the first one woken for the whole of its life. */
#define ACCEPT_BURST 32
#define ACCEPT_BURST_SHARED 1
#define ACCEPT_PAUSE_MS 1000   /* after EMFILE/ENFILE: stop accepting this long */
#define WORKER_EVENTS 256      /* epoll events taken per wake-up */
/* A failed set-up step ends the worker: the parent sees WORKER_EXIT_SETUP. */
#define worker_fatal(...) fatal_exit(WORKER_EXIT_SETUP, __VA_ARGS__)
#define worker_fatal_errno(...) fatal_exit_errno(WORKER_EXIT_SETUP, __VA_ARGS__)

struct worker {
	const struct config *cfg;
	int epfd;
	int lfd;                  /* -1 once draining */
	int dfd;                  /* -1 once the drain started */
	bool listening;           /* lfd is in the epoll set */
	struct conn_set *cs;
	size_t cap;               /* the most connections this worker holds */
	size_t fd_max;            /* descriptors its connections may hold (0: no limit) */
	uint64_t accept_paused_until;
	bool pause_logged;
	uint64_t drain_deadline;  /* 0 while not draining */
};

static void control(enum workermsg_kind kind)
{
	char line[32];
	size_t n = workermsg_encode(kind, (long)getpid(), line, sizeof(line));
	int fl;

	log_flush(); /* the lines before it come first */
	/* Log lines may be dropped when the pipe is full, a control line must arrive: wait for
	 * room (the parent reads every pipe at each wake-up; if it died, this fails with EPIPE). */
	fl = fcntl(FD_LOG, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK) && fcntl(FD_LOG, F_SETFL, fl & ~O_NONBLOCK) == 0) {
		while (write(FD_LOG, line, n) < 0 && errno == EINTR)
			;
		(void)fcntl(FD_LOG, F_SETFL, fl);
	} else {
		(void)!write(FD_LOG, line, n);
	}
}

/* Put the inherited descriptors at fixed numbers: 0, 1 and 2 on /dev/null (in the foreground
 * they are the administrator's terminal, readable by a compromised worker), 3..5 the listener,
 * the drain pipe and this worker's log pipe. Close everything else. */
static void worker_fds(const struct worker_args *a)
{
	int fds[4] = { a->listen_fd, a->drain_fd, a->log_fd, a->null_fd }, tmp[4];
	/* Which of fds each of 0..5 becomes. The sanitizer runtime reports on descriptor 2: in
	 * that build it is the log pipe, so that a report reaches the log (as this worker's). */
#ifdef HAVE_SANITIZERS
	static const int src[6] = { 3, 3, 2, 0, 1, 2 };
#else
	static const int src[6] = { 3, 3, 3, 0, 1, 2 };
#endif

	/* Move them above 0..5 first, so that dup2 onto 0..5 cannot clobber one another. */
	for (int i = 0; i < 4; i++) {
		tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, FD_LOG + 1);
		if (tmp[i] < 0)
			worker_fatal_errno("worker: moving descriptor %d", fds[i]);
	}
	log_to_pipe(tmp[2]); /* errors from here on go to the parent, not to stderr */
	for (int i = 0; i <= FD_LOG; i++) {
		if (dup2(tmp[src[i]], i) < 0)
			worker_fatal_errno("worker: dup2 %d to %d", tmp[src[i]], i);
	}
	if (close_range(FD_LOG + 1, ~0U, 0) < 0) {
		/* Kernels before 5.9: close one by one up to the limit. */
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = FD_LOG + 1; fd < max && fd < 65536; fd++)
			close((int)fd);
	}
}

static void worker_setup(struct worker *w, const struct worker_args *a)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EVTAG_DRAIN };
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

	/* Before the sandbox: epoll_create1 is not in its allow-list. The drain pipe is in every
	 * worker's set, level-triggered: EOF must wake all of them. */
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->dfd, &ev) < 0)
		worker_fatal_errno("worker: epoll setup");
	w->cs = conn_set_new(w->cfg, w->epfd);
	if (w->cs == NULL)
		worker_fatal("worker: out of memory for the connection set");
	conn_set_limit(w->cs, w->fd_max);

	if (privdrop_apply(a->priv, a->cfg->transparent, err, sizeof(err)) < 0)
		worker_fatal("worker: dropping privileges failed: %s", err);
	if (a->cfg->no_sandbox) {
		log_warn("worker: running WITHOUT the seccomp sandbox (-no-sandbox): debugging only");
	} else if (sandbox_apply_with((a->cfg->proxy_protocol != PP_NONE ? SANDBOX_PROXY_PROTOCOL
	                               : 0) | (a->cfg->transparent ? SANDBOX_TRANSPARENT : 0),
	                              err, sizeof(err)) < 0)
		worker_fatal("worker: entering the seccomp sandbox failed: %s", err);
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: a worker that the sandbox kills at once, as after a libc upgrade
	 * that makes it call something the allow-list does not know. */
	if (a->cfg->test_hook != NULL && strcmp(a->cfg->test_hook, "die-at-start") == 0)
		(void)!socket(AF_UNIX, SOCK_STREAM, 0);
#endif
}

static void worker_limit(struct worker *w)
{
	/* A few descriptors for the worker itself (0..5, epoll), the rest for the connections:
	 * two each, and two per relay pipe in use or in the pool (conn_set_limit). A direction
	 * that finds no room for a pipe relays through user space; free pipes in the pool are
	 * closed to make room for a new connection. */
	struct rlimit rl;
	size_t cap = 512;

	w->fd_max = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur > 32) {
		w->fd_max = (size_t)(rl.rlim_cur - 16);
		cap = w->fd_max / 2;
	}
	if (cap > 100000)
		cap = 100000;
	w->cap = cap;
}

/* Put the listener into the epoll set or take it out. EPOLLEXCLUSIVE: a new connection wakes
 * one worker, not all of them. Such a registration cannot be modified, only deleted and added
 * again, and deleting it is also the only way to stop the events: the parent holds the same
 * open file, so closing our descriptor would not take it out of the set. */
static void worker_listen(struct worker *w, bool want)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = EVTAG_LISTEN };

	if (want == w->listening)
		return;
	if (epoll_ctl(w->epfd, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->lfd, &ev) < 0)
		fatal_errno("worker: epoll_ctl(%s, listener fd %d)", want ? "ADD" : "DEL", w->lfd);
	w->listening = want;
}

static void worker_accept(struct worker *w, uint64_t now);

#ifdef ENABLE_TEST_HOOKS
static bool worker_hook(const struct worker *w, const char *name)
{
	return w->cfg->test_hook != NULL && strcmp(w->cfg->test_hook, name) == 0;
}

/* Test builds only: ACME_ALPN_PROXY_TEST_HOOK=log-flood makes the worker fill its log pipe
 * with debug lines (which the parent drops unless -v) on every turn, for as long as it lives:
 * the parent must stay in charge of signals, reaping and deadlines under such a flood. */
static void worker_hook_flood(void)
{
	/* 64 lines of 64 bytes: one atomic write of whole lines */
	static const char line[] = "<7>log-flood test hook: a worker floods its log pipe";
	static char block[4096];

	if (block[0] == '\0') {
		for (size_t i = 0; i < sizeof(block); i += 64) {
			memset(block + i, '.', 64);
			memcpy(block + i, line, sizeof(line) - 1);
			block[i + 63] = '\n';
		}
	}
	for (int i = 0; i < 64; i++)
		if (write(FD_LOG, block, sizeof(block)) < 0)
			return; /* EAGAIN: the pipe is full */
}

/* Test builds only: ACME_ALPN_PROXY_TEST_HOOK=impersonate makes the worker claim, instead of
 * itself, that the workers whose pids are near its own are ready ("!R pid"): the parent must
 * not believe a worker that speaks for another. */
static void worker_hook_impersonate(void)
{
	long me = (long)getpid();
	char line[32];

	log_flush();
	for (long p = me - 64; p <= me + 64; p++) {
		size_t n = workermsg_encode(WORKERMSG_READY, p, line, sizeof(line));

		if (p != me && p > 1)
			(void)!write(FD_LOG, line, n);
	}
}
#endif

static void worker_drain_start(struct worker *w, uint64_t now)
{
	size_t before;

	/* Closing a listener resets the connections still waiting in its queue: take them all
	 * first (a SYN redirected just before the rule went away may only now have completed).
	 * With EPOLLEXCLUSIVE this matters more: the wake-up for a waiting connection may have
	 * gone to this worker alone. */
	do {
		before = conn_count(w->cs);
		worker_accept(w, now);
	} while (conn_count(w->cs) > before);
	worker_listen(w, false);
	close(w->lfd);
	/* Shared with the other workers too: out of the set first, or EOF keeps waking us. */
	if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->dfd, NULL) < 0)
		fatal_errno("worker: epoll_ctl(DEL, drain fd %d)", w->dfd);
	close(w->dfd);
	w->lfd = w->dfd = -1;
	w->drain_deadline = now + w->cfg->drain_timeout_ms;
	control(WORKERMSG_CLOSED);
	if (conn_count(w->cs) > 0)
		log_info("worker: stopped accepting, %zu connections still open",
		         conn_count(w->cs));
}

static void worker_accept(struct worker *w, uint64_t now)
{
	int burst = w->cfg->workers > 1 ? ACCEPT_BURST_SHARED : ACCEPT_BURST;

	for (int i = 0; i < burst && conn_count(w->cs) < w->cap && conn_room(w->cs); i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(w->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return; /* another worker took it: normal */
			/* Free pipes kept for reuse count against the limit too: give them
			 * up before giving up on accepting. */
			if ((errno == EMFILE || errno == ENFILE) && conn_pool_trim(w->cs) > 0)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Waiting on the listener now would spin: pause accepting. */
				if (!w->pause_logged)
					log_warn("worker: accept: %s with %zu connections open: "
					         "pausing accepts for %d ms", strerror(errno),
					         conn_count(w->cs), ACCEPT_PAUSE_MS);
				w->pause_logged = true;
				w->accept_paused_until = now + ACCEPT_PAUSE_MS;
				return;
			}
			log_err_errno("worker: accept");
			return;
		}
		w->pause_logged = false;
		(void)conn_accept(w->cs, fd, &ss, now);
	}
}

/* The epoll_wait timeout: the nearest of the connections' deadlines (next_conn, -1: none),
 * the end of an accept pause and the drain deadline. */
static int worker_timeout(const struct worker *w, int next_conn, uint64_t now)
{
	uint64_t next = next_conn < 0 ? 0 : now + (uint64_t)next_conn;

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
	struct worker w = { .cfg = a->cfg, .epfd = -1, .lfd = FD_LISTEN, .dfd = FD_DRAIN };
	struct epoll_event ev[WORKER_EVENTS];

	worker_limit(&w); /* getrlimit is not in the sandbox's allow-list */
	worker_setup(&w, a);
#ifdef ENABLE_TEST_HOOKS
	if (worker_hook(&w, "impersonate"))
		worker_hook_impersonate();
	else
#endif
	control(WORKERMSG_READY);

	for (;;) {
		uint64_t now = clock_now_ms();
		int timeout, lwait, n;

		if (w.drain_deadline != 0 && conn_count(w.cs) == 0) {
			log_flush();
			_exit(0);
		}
		if (w.drain_deadline != 0 && now >= w.drain_deadline) {
			conn_abort_all(w.cs, "closed: drain timeout", now);
			_exit(0);
		}
		timeout = conn_expire(w.cs, now);
		conn_reap(w.cs);
		if (w.accept_paused_until != 0 && now >= w.accept_paused_until)
			w.accept_paused_until = 0;
		worker_listen(&w, w.lfd >= 0 && w.accept_paused_until == 0 &&
		              conn_count(w.cs) < w.cap && conn_room(w.cs));

		timeout = conn_has_turns(w.cs) ? 0 : worker_timeout(&w, timeout, now);
#ifdef ENABLE_TEST_HOOKS
		if (worker_hook(&w, "log-flood")) {
			worker_hook_flood();
			timeout = 0;
		}
#endif
		/* Log lines wait up to LOG_FLUSH_MS for others to share their write. */
		lwait = log_flush_due(now);
		if (lwait == 0)
			log_flush();
		else if (lwait > 0 && (timeout < 0 || lwait < timeout))
			timeout = lwait;
		n = epoll_wait(w.epfd, ev, WORKER_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fatal_errno("worker: epoll_wait");
		}
		now = clock_now_ms();
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;

			if (tag == EVTAG_DRAIN) {
				if (w.dfd >= 0)
					worker_drain_start(&w, now); /* EOF: the parent closed it, or died */
			} else if (tag == EVTAG_LISTEN) {
				if (w.listening)
					worker_accept(&w, now);
			} else {
				conn_event(w.cs, tag, ev[i].events, now);
			}
		}
		conn_turns(w.cs, now);
		conn_reap(w.cs);
	}
}
