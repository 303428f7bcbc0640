#include "autoconfig.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "config.h"
#include "conntrack.h"
#include "firewall.h"
#include "log.h"
#include "pidfile.h"
#include "route.h"
#include "supervisor.h"

#define STOP_ACCEPT_SLACK_MS 30000 /* stop waits grace + this for the listener to close */
#define STOP_PEEK_LOCK_MS 1000     /* stop gave up waiting: how long to try reading the rules */

static void nap(void)
{
	struct timespec ts = { 0, 20 * 1000000L };

	nanosleep(&ts, NULL);
}

static int families_of(const struct config *cfg)
{
	return FW_V4 | (cfg->disable_v6 ? 0 : FW_V6);
}

static int need_root(const char *cmd)
{
	if (geteuid() == 0)
		return 0;
	fprintf(stderr, "acme-alpn-proxy: %s needs root (it changes the firewall and manages the "
	        "workers); run it with sudo or as root\n", cmd);
	return -1;
}

/* No instance behind our pidfile: delete what a dead one left behind, never what a running
 * instance with another pidfile owns, and say which is which. */
static int clear_leftovers(const struct config *cfg)
{
	struct fw_stale st;
	struct ct_counts n;
	char err[512], what[512];

	/* The NAT bindings a killed instance left (see conntrack.c), then its rules. */
	if (ct_clear(cfg->rules.to_port, false, &n, err, sizeof(err)) < 0)
		fprintf(stderr, "acme-alpn-proxy: warning: deleting stale NAT bindings to port %u "
		        "failed: %s\n", cfg->rules.to_port, err);
	else if (n.deleted > 0)
		printf("acme-alpn-proxy: deleted %zu stale NAT binding%s to port %u from the "
		       "connection tracking table\n", n.deleted, n.deleted == 1 ? "" : "s",
		       cfg->rules.to_port);
	if (fw_clear_stale(&cfg->rules, families_of(cfg), &st, err, sizeof(err)) < 0) {
		fprintf(stderr, "acme-alpn-proxy: not running (no instance holds %s); clearing "
		        "leftover redirect rules failed: %s\n", cfg->pidfile, err);
		return EXIT_FAIL;
	}
	/* -transparent's policy routing of dead instances (a live one keeps its own). */
	{
		unsigned nr = 0;

		if (route_clear(ROUTE_STALE, &nr, err, sizeof(err)) < 0) {
			fprintf(stderr, "acme-alpn-proxy: not running; clearing the policy routing "
			        "of a dead -transparent instance failed: %s\n", err);
			return EXIT_FAIL;
		}
		if (nr > 0)
			printf("acme-alpn-proxy: deleted %u policy routing rule%s and route%s left "
			       "by a dead -transparent instance\n", nr, nr == 1 ? "" : "s",
			       nr == 1 ? "" : "s");
	}
	if (fw_stale_removed(&st) == 0 && st.redirect_live == 0) {
		printf("acme-alpn-proxy: not running\n");
		return EXIT_OK;
	}
	fw_stale_describe(&st, what, sizeof(what));
	printf("acme-alpn-proxy: not running (no instance holds %s); %s\n", cfg->pidfile, what);
	return EXIT_OK;
}

/* stop waited in vain for pid: say whether port 443 is still redirected to it. */
static int stop_timed_out(const struct config *cfg, pid_t pid, unsigned waited_ms)
{
	char err[512];
	int n;

	fw_set_lock_wait(STOP_PEEK_LOCK_MS);
	n = fw_count(&cfg->rules, families_of(cfg), pid, err, sizeof(err));
	if (n > 0)
		fprintf(stderr, "acme-alpn-proxy: pid %ld has not stopped within %u s: port %u is "
		        "still redirected to it (%d REDIRECT rule%s in place; removing %s failed, see "
		        "its log). It keeps retrying and exits once the redirect is gone; run stop "
		        "again to wait for that\n", (long)pid, waited_ms / 1000, cfg->rules.dport, n,
		        n == 1 ? "" : "s", n == 1 ? "it" : "them");
	else if (n < 0)
		fprintf(stderr, "acme-alpn-proxy: pid %ld has not stopped within %u s, and the rules "
		        "cannot be read (%s): port %u may still be redirected to it; it keeps "
		        "retrying. Run stop again to wait for it\n", (long)pid, waited_ms / 1000,
		        err, cfg->rules.dport);
	else
		fprintf(stderr, "acme-alpn-proxy: pid %ld removed its redirect but did not stop "
		        "accepting within %u s; run stop again to wait for it\n", (long)pid,
		        waited_ms / 1000);
	return EXIT_FAIL;
}

static int cmd_stop(const struct config *cfg)
{
	pid_t pid;
	uint64_t deadline;
	unsigned accept_wait_ms = cfg->grace_ms + STOP_ACCEPT_SLACK_MS;

	if (need_root("stop") < 0)
		return EXIT_NOPERM;
	pid = pidfile_running(cfg->pidfile);
	if (pid < 0) {
		fprintf(stderr, "acme-alpn-proxy: reading pidfile %s: %s\n", cfg->pidfile,
		        strerror(errno));
		return EXIT_FAIL;
	}
	if (pid == 0 || kill(pid, SIGTERM) < 0)
		return clear_leftovers(cfg);
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: "stop-wait-ms=N" shortens the wait, to test its end in seconds. */
	if (cfg->test_hook != NULL && strncmp(cfg->test_hook, "stop-wait-ms=", 13) == 0)
		accept_wait_ms = (unsigned)strtoul(cfg->test_hook + 13, NULL, 10);
#endif
	/* Returns once the instance stopped accepting: it releases the pidfile only after its
	 * rules are gone and the grace period is over, so "stopped" means port 443 reaches the
	 * web server again, and a start right after this works. */
	deadline = clock_now_ms() + accept_wait_ms;
	while (pidfile_running(cfg->pidfile) == pid) {
		if (clock_now_ms() > deadline)
			return stop_timed_out(cfg, pid, accept_wait_ms);
		nap();
	}
	if (cfg->wait) {
		deadline = clock_now_ms() + cfg->drain_timeout_ms + STOP_ACCEPT_SLACK_MS;
		while (kill(pid, 0) == 0) {
			if (clock_now_ms() > deadline) {
				fprintf(stderr, "acme-alpn-proxy: pid %ld still draining after %u s\n",
				        (long)pid, (cfg->drain_timeout_ms + STOP_ACCEPT_SLACK_MS) / 1000);
				return EXIT_FAIL;
			}
			nap();
		}
	}
	printf("acme-alpn-proxy: stopped (pid %ld)%s\n", (long)pid,
	       cfg->wait ? "" : "; open connections finish in the background");
	return EXIT_OK;
}

/* Established TCP connections whose local port is port: the clients being served. */
static long count_connections(unsigned port)
{
	const char *files[] = { "/proc/net/tcp", "/proc/net/tcp6" };
	long n = 0;

	for (size_t i = 0; i < 2; i++) {
		char line[512];
		FILE *f = fopen(files[i], "r");

		if (f == NULL)
			continue;
		while (fgets(line, sizeof(line), f) != NULL) {
			char local[64];
			unsigned lport, st;

			if (sscanf(line, " %*u: %63[0-9A-Fa-f]:%x %*s %x", local, &lport, &st) == 3 &&
			    lport == port && st == 1 /* TCP_ESTABLISHED */)
				n++;
		}
		fclose(f);
	}
	return n;
}

static int cmd_status(const struct config *cfg)
{
	pid_t pid = pidfile_running(cfg->pidfile);
	const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)&cfg->listen.ss;
	const struct sockaddr_in *l4 = (const struct sockaddr_in *)&cfg->listen.ss;
	unsigned port = ntohs(cfg->listen.ss.ss_family == AF_INET6 ? l6->sin6_port : l4->sin_port);
	char err[512];

	if (pid > 0)
		printf("acme-alpn-proxy: running, pid %ld\n", (long)pid);
	else
		printf("acme-alpn-proxy: not running\n");
	printf("connections: %ld\n", count_connections(port));
	if (geteuid() != 0) {
		printf("rules: unknown (reading them needs root)\n");
	} else {
		/* The running instance's rules; with none running, any of this spec's (left by a
		 * dead instance, or by one with another pidfile). */
		pid_t owner = pid > 0 ? pid : 0;
		int v4 = fw_count(&cfg->rules, FW_V4, owner, err, sizeof(err));
		int v6 = cfg->disable_v6 ? -2 : fw_count(&cfg->rules, FW_V6, owner, err, sizeof(err));

		printf("rules (%s): IPv4 %s, IPv6 %s\n", fw_backend_name(),
		       v4 < 0 ? "unreadable" : v4 > 0 ? "present" : "absent",
		       v6 == -2 ? "disabled" : v6 < 0 ? "unreadable" : v6 > 0 ? "present" : "absent");
	}
	return pid > 0 ? EXIT_OK : EXIT_NOTRUNNING;
}

int main(int argc, char **argv)
{
	struct config cfg;
	char err[512];

	switch (config_parse(&cfg, argc, argv, err, sizeof(err))) {
	case CONFIG_EXIT_OK:
		return EXIT_OK;
	case CONFIG_ERROR:
		fprintf(stderr, "acme-alpn-proxy: %s\n", err);
		return EXIT_USAGE;
	case CONFIG_OK:
		break;
	}
	fw_select(cfg.firewall);
	setvbuf(stdout, NULL, _IOLBF, 0);
	log_init("acme-alpn-proxy", 0, cfg.verbose);
	switch (cfg.cmd) {
	case CMD_START:
		if (need_root("start") < 0)
			return EXIT_NOPERM;
		/* The name the rules' owner check expects (firewall.h), whatever the binary is
		 * called. */
		if (prctl(PR_SET_NAME, FW_OWNER_NAME, 0, 0, 0) != 0) {
			fprintf(stderr, "acme-alpn-proxy: prctl(PR_SET_NAME, %s): %s\n", FW_OWNER_NAME,
			        strerror(errno));
			return EXIT_FAIL;
		}
		return supervisor_start(&cfg);
	case CMD_STOP:
		return cmd_stop(&cfg);
	case CMD_STATUS:
		return cmd_status(&cfg);
	case CMD_CHECK:
		return check_run(&cfg);
	case CMD_NONE:
		break;
	}
	return EXIT_USAGE;
}
