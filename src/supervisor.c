#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#ifdef ENABLE_TEST_HOOKS
#include <seccomp.h> /* the test hooks' filters, never the production code */
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conntrack.h"
#include "firewall.h"
#include "listener.h"
#include "log.h"
#include "pidfile.h"
#include "privdrop.h"
#include "route.h"
#include "sandbox_violation.h"
#include "supervisor.h"
#include "worker.h"
#include "workermsg.h"

#define READY_TIMEOUT_MS 10000   /* workers must report ready within this */
#define CLOSED_ACK_TIMEOUT_MS 5000 /* workers must close the listener within this at drain */
#define FAST_DEATH_MS 2000       /* a worker dying sooner than this after spawn "dies at once" */
#define FAST_DEATH_LIMIT 10      /* that many in a row: give up and give port 443 back */
#define KILL_GRACE_MS 5000       /* after the drain timeout, workers get this long to exit */
#define REMOVE_LOCK_WAIT_MS 250  /* once running, a firewall change waits this long for the lock */
#define REMOVE_RETRY_MAX_MS 2000 /* a failed removal is retried with back-off up to this */
#define CT_SWEEP_MS 1000         /* while draining, stale NAT bindings are deleted this often */

/* PH_REMOVING: stop was asked for, the REDIRECT rule is not gone yet (a removal failed: the
 * xtables lock held by someone else); the workers keep accepting meanwhile, since the
 * redirected connections still arrive. */
enum phase { PH_STARTING, PH_RUNNING, PH_REMOVING, PH_GRACE, PH_DRAINING };

struct slot {
	pid_t pid;               /* 0: empty */
	uint64_t spawned;
	uint64_t respawn_at;     /* 0: no respawn pending */
	bool ready;
	bool closed;             /* reported its listener closed */
	bool rogue;              /* spoke for another worker: killed, its lines are ignored */
	/* The read end of this worker's own log pipe (-1: none): a line's sender is the pipe it
	 * came through, whatever the line says. Closed once read to EOF. */
	int log_r;
	struct workermsg_lines lines;
};

struct sup {
	struct config *cfg;
	struct privdrop_target priv;
	int lfd, drain_r, drain_w;
	int null_fd;             /* /dev/null: the workers' descriptors 0, 1 and 2 */
	int pid_fd;
	int ready_fd;            /* -d: the pipe to the waiting foreground process */
	int families;            /* rules installed */
	bool rules_in;           /* the REDIRECT rule is in */
	bool hold_in;            /* the conntrack hold rule is in (until the drain ends) */
	bool routes_in;          /* -transparent's rules and routes are in (route.h) */
	unsigned remove_tries;   /* failed removals in a row */
	uint64_t remove_at;      /* PH_REMOVING: when to try again */
	uint64_t ct_sweep_at;    /* PH_DRAINING, listener closed: the next conntrack clean-up */
	uint64_t max_at;         /* PH_RUNNING: -max-time runs out (0: never) */
	enum phase phase;
	uint64_t phase_deadline;
	struct slot *slots;
	unsigned fast_deaths;
	bool gave_up;            /* workers kept dying: exit 1 once drained */
	struct pollfd *pfd;      /* sup_wait's poll set: one log pipe per worker */
	unsigned *pfd_slot;      /* the slot of each entry of pfd */
};

static volatile sig_atomic_t got_stop, got_chld;

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_chld = 1;
	else
		got_stop = sig;
}

/* systemd Type=notify: one datagram to $NOTIFY_SOCKET, if set. */
static void sd_notify_msg(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	plen = strlen(path);
	if (plen >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	(void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen));
	close(fd);
}

static int sup_reap(struct sup *s, uint64_t now);
static void sup_wait(struct sup *s, uint64_t now, uint64_t until);

static const char *families_text(int f)
{
	return f == (FW_V4 | FW_V6) ? "IPv4 and IPv6" : f == FW_V4 ? "IPv4 only"
	     : f == FW_V6 ? "IPv6 only" : "none";
}

/* One attempt to delete the REDIRECT rules. Returns 0 once they are gone; on failure schedules
 * the next attempt (s->remove_at, with back-off) and returns -1: the rules still send port 443
 * here, so the caller keeps the listener open. */
static int sup_try_remove(struct sup *s, uint64_t now)
{
	char err[512];
	unsigned delay;

	if (!s->rules_in)
		return 0;
	if (fw_remove(&s->cfg->rules, s->families, err, sizeof(err)) == 0) {
		if (s->remove_tries > 0)
			log_info("redirect removed (%s) at attempt %u: port %u goes to the web server "
			         "again", families_text(s->families), s->remove_tries + 1,
			         s->cfg->rules.dport);
		else
			log_info("redirect removed (%s): port %u goes to the web server again",
			         families_text(s->families), s->cfg->rules.dport);
		s->rules_in = false;
		s->remove_tries = 0;
		return 0;
	}
	s->remove_tries++;
	delay = 100u << (s->remove_tries < 5 ? s->remove_tries - 1 : 4);
	if (delay > REMOVE_RETRY_MAX_MS)
		delay = REMOVE_RETRY_MAX_MS;
	s->remove_at = now + delay;
	if (s->remove_tries == 1 || s->remove_tries % 20 == 0)
		log_err("removing the redirect failed (attempt %u): %s; port %u is still redirected "
		        "here: connections are still accepted, retrying every %u ms until it is gone",
		        s->remove_tries, err, s->cfg->rules.dport, delay);
	return -1;
}

/* Retry until the REDIRECT rules are gone, serving the workers' lines and reaping meanwhile.
 * There is no giving up: a rule left behind would send port 443 to a closed port. */
static void sup_remove_rules(struct sup *s)
{
	while (sup_try_remove(s, clock_now_ms()) < 0) {
		if (got_chld) {
			got_chld = 0;
			(void)sup_reap(s, clock_now_ms());
		}
		sup_wait(s, clock_now_ms(), s->remove_at);
	}
}

/* Delete the NAT bindings to the listen port that no connection uses (see conntrack.c). With
 * ignore_own, our own listener does not count as one that could complete a half-open
 * connection: true only before the rules go in, when nothing is redirected to it yet. */
static void sup_ct_clear(struct sup *s, const char *when, bool ignore_own)
{
	uint16_t port = s->cfg->rules.to_port;
	struct ct_counts n;
	char err[512];

	if (ct_clear(port, ignore_own, &n, err, sizeof(err)) < 0)
		log_warn("conntrack clean-up %s failed: %s", when, err);
	else if (n.deleted > 0)
		log_info("conntrack: deleted %zu of %zu NAT bindings to port %u, which no connection "
		         "uses (%s)", n.deleted, n.seen, port, when);
	else
		log_debug("conntrack: %zu NAT bindings to port %u, none stale (%s)", n.seen, port,
		          when);
}

/* After the drain: no redirected connection is left, connection tracking may stop. */
static void sup_release_hold(struct sup *s)
{
	char err[512];

	if (!s->hold_in)
		return;
	/* Before tracking stops, or its frozen entries would apply again once it is back. */
	sup_ct_clear(s, "before the conntrack hold goes", false);
	if (fw_release(&s->cfg->rules, s->families, err, sizeof(err)) < 0)
		log_err("removing the conntrack hold rule failed: %s; the next start or stop "
		        "removes it", err);
	s->hold_in = false;
}

static int sup_spawn(struct sup *s, struct slot *sl)
{
	struct worker_args wa = {
		.cfg = s->cfg, .priv = &s->priv,
		.listen_fd = s->lfd, .drain_fd = s->drain_r, .null_fd = s->null_fd,
	};
	int lp[2];
	pid_t pid;

	/* A log pipe of its own, so that the parent knows the sender of every line. Both ends
	 * non-blocking: a worker never stalls on a slow parent, and the parent reads only what
	 * is there. Only the worker keeps the write end: its death is EOF. */
	if (pipe2(lp, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_err_errno("fork of a worker failed: its log pipe");
		return -1;
	}
	wa.log_fd = lp[1];
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(lp[0]);
		close(lp[1]);
		errno = e;
		log_err_errno("fork of a worker failed");
		return -1;
	}
	if (pid == 0)
		worker_run(&wa); /* closes every descriptor it does not need, first of all */
	close(lp[1]);
	sl->pid = pid;
	sl->spawned = clock_now_ms();
	sl->respawn_at = 0;
	sl->ready = sl->closed = sl->rogue = false;
	sl->log_r = lp[0];
	sl->lines.len = 0;
	log_debug("worker %ld started", (long)pid);
	return 0;
}

static struct slot *sup_slot(struct sup *s, pid_t pid)
{
	for (unsigned i = 0; i < s->cfg->workers; i++)
		if (s->slots[i].pid == pid)
			return &s->slots[i];
	return NULL;
}

static bool slot_alive(const struct slot *sl)
{
	return sl->pid != 0;
}

static bool slot_ready(const struct slot *sl)
{
	return sl->pid != 0 && sl->ready;
}

/* Alive and not yet reported its listener closed: it may still accept. */
static bool slot_listening(const struct slot *sl)
{
	return sl->pid != 0 && !sl->closed;
}

/* How many workers' slots satisfy is. */
static unsigned sup_count(const struct sup *s, bool (*is)(const struct slot *))
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->cfg->workers; i++)
		n += is(&s->slots[i]);
	return n;
}

/* A control line from the worker of slot sl (workermsg.h). The pid must be its own: a worker
 * that speaks for another is compromised or broken, and is killed rather than believed. */
static void sup_control(struct slot *sl, enum workermsg_kind kind, long pid, const char *line)
{
	if (kind != WORKERMSG_UNKNOWN && pid == (long)sl->pid) {
		if (kind == WORKERMSG_READY)
			sl->ready = true;
		else
			sl->closed = true;
		return;
	}
	if (kind != WORKERMSG_UNKNOWN)
		log_warn("worker %ld wrote a control line for pid %ld: a worker speaks only "
		         "for itself; killing it", (long)sl->pid, pid);
	else
		log_warn("worker %ld wrote an unknown control line \"%.40s\": killing it",
		         (long)sl->pid, line);
	sl->rogue = true;
	kill(sl->pid, SIGKILL);
}

static void sup_slot_line(void *arg, char *line, size_t len)
{
	struct slot *sl = arg;
	enum workermsg_kind kind;
	long pid = 0;

	if (sl->rogue)
		return;
	kind = workermsg_decode(line, &pid);
	if (kind == WORKERMSG_LOG)
		log_relay_line((long)sl->pid, line, len);
	else
		sup_control(sl, kind, pid, line);
}

/* One read from the worker's log pipe, of at most one buffer: a flood of lines from one worker
 * neither starves the others nor keeps the parent from its signals, reaping and deadlines.
 * Returns the bytes read, 0 at EOF (the pipe is closed then), -1 when nothing was there. */
static ssize_t sup_read_slot(struct slot *sl)
{
	size_t room;
	char *space = workermsg_space(&sl->lines, &room);
	ssize_t n = read(sl->log_r, space, room);

	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		log_warn_errno("reading the log pipe of worker %ld (fd %d)", (long)sl->pid, sl->log_r);
		n = 0; /* as EOF: a pipe that fails this way will not get better */
	}
	if (n < 0)
		return -1;
	if (n == 0) {
		/* The worker is gone (its write end closed): whatever is left is its last line. */
		workermsg_finish(&sl->lines, sup_slot_line, sl);
		close(sl->log_r);
		sl->log_r = -1;
		return 0;
	}
	workermsg_split(&sl->lines, (size_t)n, sup_slot_line, sl);
	return n;
}

/* The worker of slot sl has died: read what it left in its pipe (its last words come before
 * the news of its death), then close the pipe. Bounded: nobody writes to it any more, and a
 * pipe holds at most 64 KiB (1 MiB if the worker could have grown it: it cannot). */
static void sup_read_slot_rest(struct slot *sl)
{
	log_batch_begin();
	for (int i = 0; i < 1024 && sl->log_r >= 0; i++)
		if (sup_read_slot(sl) < 0)
			break;
	log_batch_end();
	if (sl->log_r >= 0) {
		close(sl->log_r);
		sl->log_r = -1;
	}
	sl->lines.len = 0;
}

static void sup_close_logs(struct sup *s)
{
	for (unsigned i = 0; s->slots != NULL && i < s->cfg->workers; i++) {
		if (s->slots[i].log_r >= 0)
			close(s->slots[i].log_r);
		s->slots[i].log_r = -1;
	}
}

static void sup_describe_death(pid_t pid, int st, char *buf, size_t len)
{
	if (WIFEXITED(st)) {
		snprintf(buf, len, "worker %ld exited with status %d%s", (long)pid, WEXITSTATUS(st),
		         WEXITSTATUS(st) == WORKER_EXIT_SETUP
		         ? " (its set-up failed: see the line before)" : "");
	} else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) {
		char name[64];
		long nr = sandbox_violation(pid, name, sizeof(name));

		if (nr >= 0)
			snprintf(buf, len, "worker %ld killed by the seccomp sandbox (SIGSYS): "
			         "forbidden system call %ld (%s)", (long)pid, nr, name);
		else
			snprintf(buf, len, "worker %ld killed by the seccomp sandbox (SIGSYS): a "
			         "forbidden system call (no audit record names it)", (long)pid);
	} else if (WIFSIGNALED(st)) {
		snprintf(buf, len, "worker %ld killed by signal %d (%s)", (long)pid, WTERMSIG(st),
		         strsignal(WTERMSIG(st)));
	} else {
		snprintf(buf, len, "worker %ld ended (status 0x%x)", (long)pid, (unsigned)st);
	}
}

/* The pause before the next start of a worker after n deaths at once or failed forks in a row:
 * 200 ms, doubling up to 6.4 s. */
static uint64_t sup_backoff_ms(unsigned n)
{
	return 100u << (n < 6 ? n : 6);
}

/* Returns -1 when workers keep dying at once and the proxy must give up. */
static int sup_reap(struct sup *s, uint64_t now)
{
	int st;
	pid_t pid;
	char what[256];

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct slot *sl = sup_slot(s, pid);
		bool fast;

		if (sl == NULL)
			continue;
		sup_read_slot_rest(sl);
		sl->pid = 0;
		if (s->phase == PH_DRAINING && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			log_debug("worker %ld finished", (long)pid);
			continue;
		}
		sup_describe_death(pid, st, what, sizeof(what));
		if (s->phase == PH_DRAINING) {
			log_warn("%s", what);
			continue;
		}
		fast = now - sl->spawned < FAST_DEATH_MS;
		s->fast_deaths = fast ? s->fast_deaths + 1 : 0;
		if (s->phase == PH_STARTING || s->fast_deaths >= FAST_DEATH_LIMIT) {
			log_err("%s", what);
			log_err("workers keep dying at start (%u in a row): giving up", s->fast_deaths);
			return -1;
		}
		/* Throttle: respawn at once after a death in service, back off when they die at
		 * once (a sandbox kill after a libc upgrade looks like this). */
		sl->respawn_at = now + (fast ? sup_backoff_ms(s->fast_deaths) : 0);
		log_warn("%s; starting a new worker%s", what, fast ? " after a pause" : "");
	}
	return 0;
}

/* Start the workers whose respawn is due. A fork that fails (EAGAIN: RLIMIT_NPROC or the pid
 * space; ENOMEM) counts as a worker that died at once: the next attempt backs off the same way,
 * and FAST_DEATH_LIMIT of them in a row make the proxy give up. Returns -1 then. */
static int sup_respawn(struct sup *s, uint64_t now)
{
	for (unsigned i = 0; i < s->cfg->workers; i++) {
		struct slot *sl = &s->slots[i];

		if (sl->pid != 0 || sl->respawn_at == 0 || now < sl->respawn_at)
			continue;
		if (sup_spawn(s, sl) == 0)
			continue;
		s->fast_deaths++;
		if (s->fast_deaths >= FAST_DEATH_LIMIT) {
			log_err("workers cannot be started (%u failures in a row): giving up",
			        s->fast_deaths);
			return -1;
		}
		sl->respawn_at = now + sup_backoff_ms(s->fast_deaths);
		log_warn("next attempt to start a worker in %llu ms (%u of %u before giving up)",
		         (unsigned long long)sup_backoff_ms(s->fast_deaths), s->fast_deaths,
		         FAST_DEATH_LIMIT);
	}
	return 0;
}

static void sup_kill_workers(struct sup *s, int sig)
{
	for (unsigned i = 0; i < s->cfg->workers; i++)
		if (s->slots[i].pid != 0)
			kill(s->slots[i].pid, sig);
}

/* Close our end of the drain pipe: every worker sees EOF, closes the listener, finishes its
 * connections and exits. */
static void sup_begin_drain(struct sup *s, uint64_t now)
{
	if (s->drain_w >= 0)
		close(s->drain_w);
	s->drain_w = -1;
	if (s->lfd >= 0)
		close(s->lfd);
	s->lfd = -1;
	s->phase = PH_DRAINING;
	s->phase_deadline = now + CLOSED_ACK_TIMEOUT_MS;
	for (unsigned i = 0; i < s->cfg->workers; i++)
		s->slots[i].respawn_at = 0;
}

static void sup_release_pidfile(struct sup *s)
{
	if (s->pid_fd >= 0) {
		pidfile_release(s->cfg->pidfile, s->pid_fd);
		s->pid_fd = -1;
		log_info("stopped accepting; open connections are finishing (at most %u s)",
		         s->cfg->drain_timeout_ms / 1000);
	}
}

/* Wait for an event: a line from a worker, a signal (unblocked only inside ppoll), a timer.
 * Then read once from each log pipe that has something, and return: the caller looks at its
 * signals, children and deadlines before the next read. */
static void sup_wait(struct sup *s, uint64_t now, uint64_t until)
{
	struct timespec ts, *tsp = NULL;
	sigset_t none;
	nfds_t n = 0;

	sigemptyset(&none);
	for (unsigned i = 0; i < s->cfg->workers; i++) {
		if (s->slots[i].respawn_at != 0 && (until == 0 || s->slots[i].respawn_at < until))
			until = s->slots[i].respawn_at;
		if (s->slots[i].log_r >= 0) {
			s->pfd[n].fd = s->slots[i].log_r;
			s->pfd[n].events = POLLIN;
			s->pfd[n].revents = 0;
			s->pfd_slot[n++] = i;
		}
	}
	if (until != 0) {
		uint64_t d = until > now ? until - now : 0;
		ts.tv_sec = (time_t)(d / 1000);
		ts.tv_nsec = (long)(d % 1000) * 1000000L;
		tsp = &ts;
	}
	if (ppoll(s->pfd, n, tsp, &none) <= 0)
		return;
	log_batch_begin();
	for (nfds_t i = 0; i < n; i++)
		if (s->pfd[i].revents != 0)
			(void)sup_read_slot(&s->slots[s->pfd_slot[i]]);
	log_batch_end();
}

static void sup_ready_reply(struct sup *s, const char *msg)
{
	if (s->ready_fd >= 0) {
		(void)!write(s->ready_fd, msg, strlen(msg));
		close(s->ready_fd);
		s->ready_fd = -1;
	}
}

static int sup_fail(struct sup *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sup_routes(struct sup *s, bool clear);
static void sup_routes_remove(struct sup *s);

/* Start failed: undo everything, tell the -d waiter why. */
static int sup_fail(struct sup *s, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s", msg);
	if (sup_try_remove(s, clock_now_ms()) < 0) {
		/* Say so now (the -d waiter reports it and exits 1), then keep the workers
		 * accepting what the rule still sends here until it is gone. */
		size_t len = strlen(msg);

		snprintf(msg + len, sizeof(msg) - len, "; the redirect is still in place (%s): pid %ld "
		         "keeps trying to remove it and exits once it is gone",
		         families_text(s->families), (long)getpid());
		sup_ready_reply(s, msg);
		sup_remove_rules(s);
	}
	if (s->drain_w >= 0)
		close(s->drain_w);
	s->drain_w = -1;
	if (s->slots != NULL) {
		sup_kill_workers(s, SIGKILL);
		while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
			;
	}
	sup_release_hold(s);
	sup_routes_remove(s);
	sup_close_logs(s);
	free(s->slots);
	free(s->pfd);
	free(s->pfd_slot);
	s->slots = NULL;
	s->pfd = NULL;
	s->pfd_slot = NULL;
	if (s->pid_fd >= 0)
		pidfile_release(s->cfg->pidfile, s->pid_fd);
	s->pid_fd = -1;
	sup_ready_reply(s, msg);
	return EXIT_FAIL;
}

#ifdef ENABLE_TEST_HOOKS
/* Test builds only: ACME_ALPN_PROXY_TEST_HOOK=fail-v6 makes the kernel refuse every IPv6
 * table replacement of this process, to prove that a failed IPv6 install rolls IPv4 back;
 * fail-v6-undo makes that rollback fail too (firewall_iptc.c), to prove the parent removes
 * what is left before it gives up. */
static void test_hook_fail_v6(const struct config *cfg)
{
	scmp_filter_ctx ctx;

	if (cfg->test_hook == NULL || strncmp(cfg->test_hook, "fail-v6", 7) != 0)
		return;
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setsockopt), 2,
	                     SCMP_A1(SCMP_CMP_EQ, IPPROTO_IPV6),
	                     SCMP_A2(SCMP_CMP_EQ, 64 /* IP6T_SO_SET_REPLACE */)) < 0 ||
	    seccomp_load(ctx) < 0)
		fatal("test hook fail-v6: could not load its filter");
	seccomp_release(ctx);
}

/* Test builds only: ACME_ALPN_PROXY_TEST_HOOK=fail-fork makes every fork of this process fail
 * with EAGAIN once it is ready (as when RLIMIT_NPROC or the pid space runs out), to prove that a
 * worker which cannot be respawned makes the parent back off and give up, not spin. */
static void test_hook_fail_fork(const struct config *cfg)
{
	scmp_filter_ctx ctx;

	if (cfg->test_hook == NULL || strcmp(cfg->test_hook, "fail-fork") != 0)
		return;
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAGAIN), SCMP_SYS(clone), 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAGAIN), SCMP_SYS(clone3), 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAGAIN), SCMP_SYS(fork), 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAGAIN), SCMP_SYS(vfork), 0) < 0 ||
	    seccomp_load(ctx) < 0)
		fatal("test hook fail-fork: could not load its filter");
	seccomp_release(ctx);
}
#endif

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn_errno("raising the open-files limit to %llu",
			               (unsigned long long)rl.rlim_max);
	}
}

/* -d: fork; the foreground process waits on a pipe until the daemon says it is ready (an empty
 * message) or why it failed, and exits accordingly. */
static int daemonize(struct sup *s)
{
	int p[2], devnull;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "acme-alpn-proxy: pipe: %s\n", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "acme-alpn-proxy: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid > 0) {
		char msg[1024];
		ssize_t n, total = 0;

		close(p[1]);
		while ((n = read(p[0], msg + total, sizeof(msg) - 1 - (size_t)total)) > 0 ||
		       (n < 0 && errno == EINTR))
			total += n > 0 ? n : 0;
		msg[total] = '\0';
		if (total == 1 && msg[0] == '\n')
			_exit(EXIT_OK);
		fprintf(stderr, "acme-alpn-proxy: %s\n",
		        total > 0 ? msg : "the daemon exited before it was ready (see the system log)");
		_exit(EXIT_FAIL);
	}
	close(p[0]);
	s->ready_fd = p[1];
	setsid();
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		close(devnull);
	}
	log_init("acme-alpn-proxy", 1, s->cfg->verbose);
	return 0;
}

/* Returns 0 when set up, -1 when an instance runs already (*running), else an exit status. */
static int sup_setup(struct sup *s, pid_t *running)
{
	char err[512];
	struct sigaction sa;
	sigset_t block;
	struct fw_stale stale;
	int dp[2];

	s->pid_fd = pidfile_acquire(s->cfg->pidfile, running, err, sizeof(err));
	if (s->pid_fd < 0)
		return *running > 0 ? -1 : sup_fail(s, "%s", err);
	if (s->cfg->daemon && daemonize(s) < 0)
		return sup_fail(s, "could not start in the background");
	if (pidfile_write(s->pid_fd, getpid(), err, sizeof(err)) < 0)
		return sup_fail(s, "%s: %s", s->cfg->pidfile, err);

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	if (privdrop_prepare(&s->priv, s->cfg->user, s->cfg->chroot_dir, err, sizeof(err)) < 0)
		return sup_fail(s, "%s", err);
	if (fw_clear_stale(&s->cfg->rules, s->families, &stale, err, sizeof(err)) < 0)
		return sup_fail(s, "clearing rules left by an earlier instance: %s", err);
	/* Another instance's rules (its pid alive) stay: say so, as what was removed. */
	if (fw_stale_removed(&stale) > 0 || stale.redirect_live > 0) {
		fw_stale_describe(&stale, err, sizeof(err));
		log_warn("%s", err);
	}
	if (sup_routes(s, true) != 0)
		return EXIT_FAIL;
	s->lfd = listener_open(&s->cfg->listen, s->cfg->grace_ms >= LISTENER_DEFER_MIN_GRACE_MS,
	                       err, sizeof(err));
	if (s->lfd < 0)
		return sup_fail(s, "%s", err);
	if (pipe2(dp, O_CLOEXEC) < 0)
		return sup_fail(s, "pipe: %s", strerror(errno));
	s->drain_r = dp[0];
	s->drain_w = dp[1];
	/* Opened here: the workers chroot to an empty directory. */
	s->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (s->null_fd < 0)
		return sup_fail(s, "/dev/null: %s", strerror(errno));
	return 0;
}

/* -transparent's routing (route.h), in before the redirect and before any worker connects
 * from a visitor's address. Leftovers of a dead instance go first, in every mode, unless an
 * instance with another pidfile still redirects (it may be using them). */
static int sup_routes(struct sup *s, bool clear)
{
	char err[512];
	unsigned n = 0;

	if (clear && !s->cfg->transparent && route_clear(ROUTE_STALE, &n, err, sizeof(err)) < 0)
		return sup_fail(s, "clearing the policy routing left by an earlier -transparent "
		                "instance: %s", err);
	if (n > 0)
		log_warn("deleted %u policy routing rule%s and route%s left by a dead -transparent "
		         "instance", n, n == 1 ? "" : "s", n == 1 ? "" : "s");
	if (!s->cfg->transparent)
		return 0;
	if (route_install(s->families, err, sizeof(err)) < 0)
		return sup_fail(s, "%s; nothing was changed", err);
	s->routes_in = true;
	return 0;
}

/* After the drain (no connection from a visitor's address is left) or a failed start. */
static void sup_routes_remove(struct sup *s)
{
	char err[512];

	if (!s->routes_in)
		return;
	if (route_clear(ROUTE_OWN, NULL, err, sizeof(err)) < 0)
		log_err("removing -transparent's rules and routes (table %u) failed: %s; the next "
		        "`stop` or `start` deletes them", ROUTE_TABLE_BASE + (unsigned)getpid(), err);
	else
		s->routes_in = false;
}

static int sup_start_workers(struct sup *s)
{
	uint64_t deadline;

	s->slots = calloc(s->cfg->workers, sizeof(*s->slots));
	s->pfd = calloc(s->cfg->workers, sizeof(*s->pfd));
	s->pfd_slot = calloc(s->cfg->workers, sizeof(*s->pfd_slot));
	if (s->slots == NULL || s->pfd == NULL || s->pfd_slot == NULL)
		return sup_fail(s, "out of memory for %u workers", s->cfg->workers);
	for (unsigned i = 0; i < s->cfg->workers; i++)
		s->slots[i].log_r = -1;
	for (unsigned i = 0; i < s->cfg->workers; i++)
		if (sup_spawn(s, &s->slots[i]) < 0)
			return sup_fail(s, "could not start the workers");
	/* Workers accept before the redirect exists: no redirected SYN can find nobody home. */
	deadline = clock_now_ms() + READY_TIMEOUT_MS;
	while (sup_count(s, slot_ready) < s->cfg->workers) {
		uint64_t now = clock_now_ms();

		if (got_chld) {
			got_chld = 0;
			if (sup_reap(s, now) < 0)
				return sup_fail(s, "a worker died during start-up (see above)");
		}
		if (got_stop)
			return sup_fail(s, "interrupted by signal %d during start-up", (int)got_stop);
		if (now >= deadline)
			return sup_fail(s, "workers did not become ready within %d ms",
			                READY_TIMEOUT_MS);
		sup_wait(s, now, deadline);
	}
	return 0;
}

/* The loop's next timer (0: none) besides the workers' respawns. */
static uint64_t sup_next_timer(const struct sup *s)
{
	uint64_t kill_at = s->phase_deadline + s->cfg->drain_timeout_ms + KILL_GRACE_MS;

	switch (s->phase) {
	case PH_RUNNING:
		return s->max_at;
	case PH_REMOVING:
		return s->remove_at;
	case PH_DRAINING:
		if (s->pid_fd >= 0)
			return s->phase_deadline;
		return s->ct_sweep_at < kill_at ? s->ct_sweep_at : kill_at;
	case PH_GRACE:
		return s->phase_deadline;
	default:
		return 0;
	}
}

/* Test builds only: ACME_ALPN_PROXY_TEST_HOOK=drain-sweep-delay-ms=N puts off the first
 * clean-up after the listener closed by N ms, so that a test can look at the bindings the
 * listener left behind (conntrack.sh, part d). */
static uint64_t test_hook_sweep_delay(const struct config *cfg)
{
#ifdef ENABLE_TEST_HOOKS
	static const char key[] = "drain-sweep-delay-ms=";

	if (cfg->test_hook != NULL && strncmp(cfg->test_hook, key, sizeof(key) - 1) == 0)
		return strtoull(cfg->test_hook + sizeof(key) - 1, NULL, 10);
#else
	(void)cfg;
#endif
	return 0;
}

/* Stop as asked (a signal, `stop`) or when -max-time runs out: the redirect goes first. */
static void sup_begin_stop(struct sup *s, uint64_t now)
{
	sd_notify_msg("STOPPING=1");
	s->phase = PH_REMOVING;
	s->remove_at = now;
}

static void sup_loop(struct sup *s)
{
	for (;;) {
		uint64_t now = clock_now_ms();

		if (got_chld) {
			got_chld = 0;
			if (sup_reap(s, now) < 0) {
				/* Port 443 must not stay redirected to workers that cannot live. */
				s->gave_up = true;
				sup_remove_rules(s);
				now = clock_now_ms();
				sup_begin_drain(s, now);
				sup_kill_workers(s, SIGKILL);
				s->phase_deadline = now;
			}
		}
		if (got_stop) {
			if (s->phase == PH_RUNNING) {
				log_info("signal %d: stopping (redirect off, %u ms grace, then drain)",
				         (int)got_stop, s->cfg->grace_ms);
				sup_begin_stop(s, now);
			} else {
				log_info("signal %d: already stopping", (int)got_stop);
			}
			got_stop = 0;
		}
		/* The safety timer: the ACME client's post-hook never ran (killed between its
		 * hooks, a script error). Stop as `stop` would. */
		if (s->phase == PH_RUNNING && s->max_at != 0 && now >= s->max_at) {
			log_warn("running for %g s (-max-time) and no stop came: stopping by itself; "
			         "did the ACME client's post-hook run?", s->cfg->max_time_ms / 1000.0);
			sup_begin_stop(s, now);
		}
		/* A SYN redirected just before the rule went away still lands on the listener: keep
		 * accepting a moment after it is gone, and all the while it is not. */
		if (s->phase == PH_REMOVING && now >= s->remove_at && sup_try_remove(s, now) == 0) {
			s->phase = PH_GRACE;
			s->phase_deadline = now + s->cfg->grace_ms;
		}
		if (s->phase == PH_GRACE && now >= s->phase_deadline) {
			/* A binding whose connection ended in a state a new SYN does not end
			 * (conntrack kept ESTABLISHED, or CLOSE after our RST) sends a SYN from
			 * the same client port to the listener: served while it listens, refused
			 * once it is closed. Delete those while it still listens; the sweeps after
			 * the close only catch the ones that end meanwhile. */
			sup_ct_clear(s, "before the listener closes", false);
			sup_begin_drain(s, clock_now_ms());
		}
		if ((s->phase == PH_RUNNING || s->phase == PH_REMOVING) && sup_respawn(s, now) < 0) {
			/* Port 443 must not stay redirected to fewer and fewer workers. Those
			 * still running finish their connections. */
			s->gave_up = true;
			sup_remove_rules(s);
			now = clock_now_ms();
			sup_begin_drain(s, now);
		}
		if (s->phase == PH_DRAINING) {
			if (s->pid_fd >= 0 &&
			    (sup_count(s, slot_listening) == 0 || now >= s->phase_deadline)) {
				sup_release_pidfile(s);
				s->ct_sweep_at = now + test_hook_sweep_delay(s->cfg);
			}
			/* Once the listener is closed, bindings to it that no connection uses
			 * refuse whoever meets them: delete them until we exit. */
			if (s->pid_fd < 0 && now >= s->ct_sweep_at) {
				sup_ct_clear(s, "while draining", false);
				s->ct_sweep_at = now + CT_SWEEP_MS;
			}
			if (sup_count(s, slot_alive) == 0)
				return;
			if (now >= s->phase_deadline + s->cfg->drain_timeout_ms + KILL_GRACE_MS) {
				log_warn("workers still running %u ms after the drain timeout: killing",
				         KILL_GRACE_MS);
				sup_kill_workers(s, SIGKILL);
			}
		}
		sup_wait(s, now, sup_next_timer(s));
	}
}

int supervisor_start(struct config *cfg)
{
	struct sup s = {
		.cfg = cfg, .lfd = -1, .drain_r = -1, .drain_w = -1, .null_fd = -1,
		.pid_fd = -1, .ready_fd = -1, .phase = PH_STARTING,
	};
	char err[512], warn[256];
	pid_t running = 0;
	int r, fams;

	s.families = FW_V4 | (cfg->disable_v6 ? 0 : FW_V6);
	r = sup_setup(&s, &running);
	if (r < 0) {
		printf("acme-alpn-proxy: already running (pid %ld)\n", (long)running);
		return EXIT_OK;
	}
	if (r != 0)
		return r;
	/* The parent keeps drain_r and null_fd open for the workers it may respawn: the drain
	 * pipe's EOF depends on write ends only. Each worker gets a log pipe of its own. */
	if ((r = sup_start_workers(&s)) != 0)
		return r;

	warn[0] = '\0';
#ifdef ENABLE_TEST_HOOKS
	test_hook_fail_v6(cfg);
#endif
	/* Bindings a stopped or killed instance left would catch new connections to port 443 as
	 * soon as tracking is on again. */
	sup_ct_clear(&s, "before the rules go in", true);
	/* -transparent: the connmark rules for a fallback on one of the host's addresses. */
	if (cfg->transparent && fw_mark_supported())
		fw_set_mark(ROUTE_MARK);
	fams = s.families;
	r = fw_install(&cfg->rules, &fams, err, sizeof(err), warn, sizeof(warn));
	/* From now on no firewall call may keep the parent from its loop for long. */
	fw_set_lock_wait(REMOVE_LOCK_WAIT_MS);
	if (r < 0) {
		s.families = fams;
		s.rules_in = s.hold_in = fams != 0; /* a rollback that failed: retried in sup_fail */
		return sup_fail(&s, "installing the redirect failed: %s", err);
	}
	s.families = fams;
	if (warn[0] != '\0')
		log_warn("%s", warn);
	s.rules_in = s.hold_in = true;
	s.phase = PH_RUNNING;
	if (cfg->max_time_ms > 0) {
		s.max_at = clock_now_ms() + cfg->max_time_ms;
		log_info("-max-time: stopping by itself in %g s unless a stop comes first",
		         cfg->max_time_ms / 1000.0);
	} else {
		log_info("-max-time 0: no safety timer, only a stop ends this instance");
	}
	log_info("ready: %u worker%s on %s, port %u redirected (%s); acme-tls/1 -> %s, "
	         "others -> %s%s%s%s%s", cfg->workers, cfg->workers == 1 ? "" : "s",
	         cfg->listen.text, cfg->rules.dport,
	         families_text(s.families), cfg->alpn.text, cfg->fallback.text,
	         cfg->has_fallback6 ? " (IPv6 visitors: " : "",
	         cfg->has_fallback6 ? cfg->fallback6.text : "", cfg->has_fallback6 ? ")" : "",
	         cfg->transparent ? ", from the visitor's address (-transparent)"
	         : cfg->proxy_protocol == PP_V1 ? ", PROXY protocol v1 header"
	         : cfg->proxy_protocol == PP_V2 ? ", PROXY protocol v2 header" : "");
	sd_notify_msg("READY=1");
	sup_ready_reply(&s, "\n");
#ifdef ENABLE_TEST_HOOKS
	test_hook_fail_fork(cfg);
#endif

	sup_loop(&s);
	sup_release_pidfile(&s);
	sup_remove_rules(&s);
	/* Tracking may stop at once: sup_release_hold deletes the NAT bindings first, so nothing
	 * frozen applies when an instance started later switches it on again. The release may
	 * wait for the lock as long as any other change: it runs once. */
	fw_set_lock_wait(FW_LOCK_WAIT_DEFAULT_MS);
	sup_release_hold(&s);
	sup_routes_remove(&s);
	sup_close_logs(&s);
	free(s.slots);
	free(s.pfd);
	free(s.pfd_slot);
	if (s.gave_up) {
		log_err("stopped: the workers could not run (see above)");
		return EXIT_FAIL;
	}
	log_info("stopped");
	return EXIT_OK;
}
