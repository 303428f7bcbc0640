#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

void config_usage(FILE *out)
{
	fprintf(out,
"Usage: acme-alpn-proxy [options] start|stop|status|check\n"
"\n"
"Takes TCP port 443 over for the seconds of an ACME TLS-ALPN-01 validation: connections whose\n"
"TLS ClientHello offers the ALPN protocol acme-tls/1 go to the ACME client's responder, all\n"
"others to the web server, which keeps serving.\n"
"\n"
"Commands:\n"
"  start                 listen, start the workers, redirect port 443 (nat PREROUTING REDIRECT)\n"
"  stop                  remove the redirect (retried until it is gone), stop accepting after\n"
"                        the grace period, drain; exit 0 only once port 443 is given back\n"
"  status                say whether an instance runs (exit 0) or not (exit 3)\n"
"  check                 preflight, changes nothing: will a start work now? One line per\n"
"                        item, OK, WARN or FAIL; exit 0 when nothing failed, else 1\n"
"\n"
"Options (one or two dashes, before or after the command; -opt VALUE or -opt=VALUE):\n"
"  -fallback ADDR:PORT   the web server (default %s); once per family: IPv4 visitors go\n"
"                        to the IPv4 one, IPv6 visitors to the IPv6 one\n"
"  -transparent          the web server sees the visitor's own address: connections to the\n"
"                        fallback leave from it (defaults %s and %s)\n"
"  -proxy-protocol V     v1 or v2: write a PROXY protocol header (the visitor's address) to\n"
"                        the fallback, for a listener that expects one; not with -transparent\n"
"  -alpn ADDR:PORT       the ACME TLS-ALPN-01 responder (default %s)\n"
"  -listen ADDR:PORT     the listener; [::] is dual-stack (default %s)\n"
"  -workers N            worker processes, 1-1024 (default: half the online CPUs, rounded\n"
"                        up, at most 64)\n"
"  -hello-timeout SECS   time from accept to a whole ClientHello, else fallback (default %u)\n"
"  -grace SECS           keep accepting this long after the rules are removed (default %u)\n"
"  -drain-timeout SECS   after this, close connections still open at stop (default %u)\n"
"  -max-time SECS        start: stop by itself after this long, as stop would, in case the\n"
"                        ACME client's post-hook never runs; 0: never (default %u)\n"
"  -user NAME            workers run as NAME (default %s if it exists, else nobody)\n"
"  -chroot DIR           workers chroot to DIR (default %s)\n"
"  -no-sandbox           debugging only: workers run without the seccomp filter\n"
"  -firewall BACKEND     iptables (default): legacy nat table through libiptc; nftables: a\n"
"                        table owned by the process, which the kernel deletes when it dies\n"
"                        (also by SIGKILL), so that a crash gives port 443 back at once\n"
"  -d                    start: run in the background, return once ready\n"
"  -wait                 stop: also wait until the open connections have finished\n"
"  -v                    verbose: log debug lines\n"
"  -h, --help            this text\n"
"  -V, --version         the version\n"
"\n"
"Environment:\n"
"  ACME_ALPN_PROXY_PIDFILE    pidfile (default %s)\n"
"  ACME_ALPN_PROXY_RULESPEC   the rule, in iptables syntax, inserted at the head of nat\n"
"                             PREROUTING; it always matches SYN packets addressed to this\n"
"                             host only (--syn -m addrtype --dst-type LOCAL added) and its\n"
"                             comment names the pid (\"<comment> pid N\"); default:\n"
"    %s\n"
"  ACME_ALPN_PROXY_DISABLEV6  'y': no IPv6 rule ('n' or empty: IPv6 too; else exit 2)\n"
"\n"
"Exit status: 0 success (start: ready, or already running; stop: stopped and the redirect gone,\n"
"or was not running; status: running), 1 failure, 2 bad usage, 3 status: not running, 4 needs\n"
"root.\n"
"See acme-alpn-proxy(8).\n",
		DEFAULT_FALLBACK, DEFAULT_FALLBACK, DEFAULT_FALLBACK6, DEFAULT_ALPN, DEFAULT_LISTEN,
		DEFAULT_HELLO_TIMEOUT_MS / 1000, DEFAULT_GRACE_MS / 1000,
		DEFAULT_DRAIN_TIMEOUT_MS / 1000, DEFAULT_MAX_TIME_MS / 1000, DEFAULT_USER, DEFAULT_CHROOT_DIR, DEFAULT_PIDFILE,
		RULESPEC_DEFAULT);
}

int config_parse_endpoint(const char *s, struct endpoint *e)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hs, *he;
	char *end;
	unsigned long port;
	size_t hl;

	memset(e, 0, sizeof(*e));
	if (s[0] == '[') {
		hs = s + 1;
		he = strchr(hs, ']');
		if (he == NULL || he[1] != ':')
			return -1;
		colon = he + 1;
	} else {
		hs = s;
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		he = colon;
		if (memchr(hs, ':', (size_t)(he - hs)) != NULL)
			return -1; /* a bare IPv6 address: brackets are required */
	}
	hl = (size_t)(he - hs);
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	if (colon[1] < '0' || colon[1] > '9')
		return -1;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port == 0 || port > 65535)
		return -1;

	if (s[0] == '[') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&e->ss;
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -1;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		e->len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&e->ss;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -1;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		e->len = sizeof(*a);
	}
	snprintf(e->text, sizeof(e->text), s[0] == '[' ? "[%s]:%lu" : "%s:%lu", host, port);
	return 0;
}

int config_parse_seconds(const char *s, unsigned *ms)
{
	unsigned long whole = 0, frac = 0, scale = 1000;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (unsigned long)(*p - '0');
		if (whole > 86400 * 7)
			return -1; /* a week: anything longer is a typo */
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -1;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (scale > 1) {
				scale /= 10;
				frac += (unsigned long)(*p - '0') * scale;
			}
		}
	}
	if (*p != '\0')
		return -1;
	*ms = (unsigned)(whole * 1000 + frac);
	return 0;
}

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* val as one of two words: 0 for a, 1 for b; else -1 with a message naming opt. */
static int parse_either(const char *opt, const char *val, const char *a, const char *b,
                        char *err, size_t errlen)
{
	if (strcmp(val, a) == 0)
		return 0;
	if (strcmp(val, b) == 0)
		return 1;
	snprintf(err, errlen, "%s: \"%s\" is neither %s nor %s", opt, val, a, b);
	return -1;
}

enum opt_id {
	O_FALLBACK, O_ALPN, O_LISTEN, O_WORKERS, O_HELLO, O_GRACE, O_DRAIN, O_USER, O_CHROOT,
	O_NOSANDBOX, O_DAEMON, O_WAIT, O_VERBOSE, O_HELP, O_VERSION, O_FIREWALL, O_MAXTIME,
	O_TRANSPARENT, O_PROXYPROTO
};

static const struct {
	const char *name;
	enum opt_id id;
	int has_arg;
} opts[] = {
	{ "fallback", O_FALLBACK, 1 }, { "alpn", O_ALPN, 1 }, { "listen", O_LISTEN, 1 },
	{ "workers", O_WORKERS, 1 }, { "hello-timeout", O_HELLO, 1 }, { "grace", O_GRACE, 1 },
	{ "drain-timeout", O_DRAIN, 1 }, { "user", O_USER, 1 }, { "chroot", O_CHROOT, 1 },
	{ "no-sandbox", O_NOSANDBOX, 0 }, { "d", O_DAEMON, 0 }, { "wait", O_WAIT, 0 },
	{ "v", O_VERBOSE, 0 }, { "h", O_HELP, 0 }, { "help", O_HELP, 0 },
	{ "V", O_VERSION, 0 }, { "version", O_VERSION, 0 }, { "firewall", O_FIREWALL, 1 },
	{ "max-time", O_MAXTIME, 1 },
	{ "transparent", O_TRANSPARENT, 0 }, { "proxy-protocol", O_PROXYPROTO, 1 },
};

static int apply_opt(struct config *c, enum opt_id id, const char *name, const char *val,
                     char *err, size_t errlen)
{
	struct endpoint *ep = NULL;
	unsigned *ms = NULL;
	int r;

	switch (id) {
	case O_FALLBACK: {
		struct endpoint e;

		if (config_parse_endpoint(val, &e) < 0)
			goto bad_endpoint;
		if (e.ss.ss_family == AF_INET ? c->fallback_set : c->fallback6_set) {
			snprintf(err, errlen, "-fallback %s: a second %s fallback (give -fallback at "
			         "most once per address family)", val,
			         e.ss.ss_family == AF_INET ? "IPv4" : "IPv6");
			return -1;
		}
		/* The first one serves every visitor (as before); a second one, of the other
		 * family, takes that family's visitors. */
		if (!c->fallback_set && !c->fallback6_set) {
			c->fallback = e;
		} else if (e.ss.ss_family == AF_INET6) {
			c->fallback6 = e;
			c->has_fallback6 = true;
		} else {
			c->fallback6 = c->fallback;
			c->has_fallback6 = true;
			c->fallback = e;
		}
		if (e.ss.ss_family == AF_INET)
			c->fallback_set = true;
		else
			c->fallback6_set = true;
		return 0;
	}
	case O_TRANSPARENT: c->transparent = true; return 0;
	case O_PROXYPROTO:
		if ((r = parse_either("-proxy-protocol", val, "v1", "v2", err, errlen)) < 0)
			return -1;
		c->proxy_protocol = r == 0 ? PP_V1 : PP_V2;
		return 0;
	case O_ALPN: ep = &c->alpn; break;
	case O_LISTEN: ep = &c->listen; break;
	case O_HELLO: ms = &c->hello_timeout_ms; break;
	case O_GRACE: ms = &c->grace_ms; break;
	case O_DRAIN: ms = &c->drain_timeout_ms; break;
	case O_MAXTIME: ms = &c->max_time_ms; break;
	case O_WORKERS:
		if (parse_uint(val, 1, 1024, &c->workers) < 0) {
			snprintf(err, errlen, "-workers: \"%s\" is not a number from 1 to 1024", val);
			return -1;
		}
		return 0;
	case O_USER: c->user = val; return 0;
	case O_CHROOT:
		if (val[0] != '/') {
			snprintf(err, errlen, "-chroot: \"%s\" is not an absolute path", val);
			return -1;
		}
		c->chroot_dir = val;
		return 0;
	case O_FIREWALL:
		if ((r = parse_either("-firewall", val, "iptables", "nftables", err, errlen)) < 0)
			return -1;
		c->firewall = r == 0 ? FW_BACKEND_IPTABLES : FW_BACKEND_NFTABLES;
		return 0;
	case O_NOSANDBOX: c->no_sandbox = true; return 0;
	case O_DAEMON: c->daemon = true; return 0;
	case O_WAIT: c->wait = true; return 0;
	case O_VERBOSE: c->verbose = true; return 0;
	case O_HELP: case O_VERSION: return 0; /* handled by the caller */
	}
	if (ep != NULL && config_parse_endpoint(val, ep) < 0) {
bad_endpoint:
		snprintf(err, errlen, "-%s: \"%s\" is not ADDR:PORT (IPv4 1.2.3.4:443, IPv6 "
		         "[2001:db8::1]:443, port 1-65535)", name, val);
		return -1;
	}
	/* A grace of 0 is allowed (no SYN in flight can be waited for then), a -max-time of 0
	 * switches the timer off; the timeouts must be positive. */
	if (ms != NULL && (config_parse_seconds(val, ms) < 0 ||
	                   (*ms == 0 && id != O_GRACE && id != O_MAXTIME))) {
		snprintf(err, errlen, "-%s: \"%s\" is not a %s number of seconds (at most a week)",
		         name, val, id == O_GRACE || id == O_MAXTIME ? "non-negative" : "positive");
		return -1;
	}
	return 0;
}

static enum config_result parse_args(struct config *c, int argc, char **argv, char *err,
                                     size_t errlen)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *val = NULL, *eq;
		size_t nlen, k;

		if (a[0] != '-' || a[1] == '\0') {
			enum command cmd = strcmp(a, "start") == 0 ? CMD_START
			                 : strcmp(a, "stop") == 0 ? CMD_STOP
			                 : strcmp(a, "status") == 0 ? CMD_STATUS
			                 : strcmp(a, "check") == 0 ? CMD_CHECK : CMD_NONE;
			if (cmd == CMD_NONE) {
				snprintf(err, errlen, "unknown command \"%s\" (expected start, stop, "
				         "status or check)", a);
				return CONFIG_ERROR;
			}
			if (c->cmd != CMD_NONE) {
				snprintf(err, errlen, "more than one command: \"%s\"", a);
				return CONFIG_ERROR;
			}
			c->cmd = cmd;
			continue;
		}
		name = a + 1;
		if (*name == '-')
			name++;
		eq = strchr(name, '=');
		nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
		for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
			if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0)
				break;
		if (k == sizeof(opts) / sizeof(opts[0])) {
			snprintf(err, errlen, "unknown option \"%s\" (see --help)", a);
			return CONFIG_ERROR;
		}
		if (opts[k].has_arg) {
			if (eq != NULL)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else {
				snprintf(err, errlen, "option \"%s\" needs a value", a);
				return CONFIG_ERROR;
			}
		} else if (eq != NULL) {
			snprintf(err, errlen, "option \"-%s\" takes no value", opts[k].name);
			return CONFIG_ERROR;
		}
		if (opts[k].id == O_HELP) {
			config_usage(stdout);
			return CONFIG_EXIT_OK;
		}
		if (opts[k].id == O_VERSION) {
			printf("acme-alpn-proxy %s\n", PACKAGE_VERSION);
			return CONFIG_EXIT_OK;
		}
		if (apply_opt(c, opts[k].id, opts[k].name, val, err, errlen) < 0)
			return CONFIG_ERROR;
	}
	return CONFIG_OK;
}

enum config_result config_parse(struct config *c, int argc, char **argv, char *err,
                                size_t errlen)
{
	enum config_result r;
	const char *v6;
	char rerr[256];
	uint16_t lport;

	memset(c, 0, sizeof(*c));
	err[0] = '\0';
	(void)config_parse_endpoint(DEFAULT_FALLBACK, &c->fallback);
	(void)config_parse_endpoint(DEFAULT_ALPN, &c->alpn);
	(void)config_parse_endpoint(DEFAULT_LISTEN, &c->listen);
	c->hello_timeout_ms = DEFAULT_HELLO_TIMEOUT_MS;
	c->grace_ms = DEFAULT_GRACE_MS;
	c->drain_timeout_ms = DEFAULT_DRAIN_TIMEOUT_MS;
	c->max_time_ms = DEFAULT_MAX_TIME_MS;
	c->chroot_dir = DEFAULT_CHROOT_DIR;

	c->pidfile = getenv("ACME_ALPN_PROXY_PIDFILE");
	if (c->pidfile == NULL || c->pidfile[0] == '\0')
		c->pidfile = DEFAULT_PIDFILE;
	c->rulespec_text = getenv("ACME_ALPN_PROXY_RULESPEC");
	if (c->rulespec_text == NULL || c->rulespec_text[0] == '\0')
		c->rulespec_text = RULESPEC_DEFAULT;
	/* As in the original tool, exactly "y" disables IPv6. Any other value but "n" or empty is
	 * refused: a "yes" that silently left IPv6 on would surprise. */
	v6 = getenv("ACME_ALPN_PROXY_DISABLEV6");
	c->disable_v6 = v6 != NULL && strcmp(v6, "y") == 0;
	if (v6 != NULL && !c->disable_v6 && v6[0] != '\0' && strcmp(v6, "n") != 0) {
		snprintf(err, errlen, "ACME_ALPN_PROXY_DISABLEV6=%s: only \"y\" (no IPv6 rule) or "
		         "\"n\" (the default) are understood", v6);
		return CONFIG_ERROR;
	}
#ifdef ENABLE_TEST_HOOKS
	c->test_hook = getenv("ACME_ALPN_PROXY_TEST_HOOK");
#endif

	r = parse_args(c, argc, argv, err, errlen);
	if (r != CONFIG_OK)
		return r;
	if (c->cmd == CMD_NONE) {
		snprintf(err, errlen, "no command given (expected start, stop, status or check; see --help)");
		return CONFIG_ERROR;
	}
	if (c->transparent && c->proxy_protocol != PP_NONE) {
		snprintf(err, errlen, "-transparent and -proxy-protocol exclude each other: the web "
		         "server sees the visitor's address either from the connection itself "
		         "(-transparent) or from a PROXY header (-proxy-protocol), pick one");
		return CONFIG_ERROR;
	}
	/* -transparent: a visitor's address can only be the source of a socket of its own
	 * family, so each family needs a fallback of its own; the defaults are the loopback
	 * addresses. */
	if (c->transparent) {
		if (!c->fallback_set && c->fallback6_set) {
			c->fallback6 = c->fallback;
			(void)config_parse_endpoint(DEFAULT_FALLBACK, &c->fallback);
		} else if (!c->fallback6_set) {
			(void)config_parse_endpoint(DEFAULT_FALLBACK6, &c->fallback6);
		}
		c->has_fallback6 = true;
	}
	/* Half the CPUs: the workers share them with the web server, and a worker more than the
	 * load needs costs every visitor wake-ups and context switches (tools/bench: 2 workers
	 * on 2 CPUs spent about 10% more CPU per new connection than 1, and gave less keep-alive
	 * throughput). */
	if (c->workers == 0) {
		long n = (sysconf(_SC_NPROCESSORS_ONLN) + 1) / 2;
		c->workers = n < 1 ? 1 : n > 64 ? 64 : (unsigned)n;
	}
	if (rulespec_parse(c->rulespec_text, &c->rules, rerr, sizeof(rerr)) < 0 ||
	    fw_check(c->firewall, &c->rules, rerr, sizeof(rerr)) < 0) {
		snprintf(c->rules_err, sizeof(c->rules_err), "%s", rerr);
		/* check reports it among the other items; it cannot check the rules then. */
		if (c->cmd == CMD_CHECK) {
			if (rulespec_parse(RULESPEC_DEFAULT, &c->rules, rerr, sizeof(rerr)) < 0)
				return CONFIG_ERROR;
			return CONFIG_OK;
		}
		snprintf(err, errlen, "ACME_ALPN_PROXY_RULESPEC: %s", c->rules_err);
		return CONFIG_ERROR;
	}
	lport = ntohs(c->listen.ss.ss_family == AF_INET6
	              ? ((struct sockaddr_in6 *)&c->listen.ss)->sin6_port
	              : ((struct sockaddr_in *)&c->listen.ss)->sin_port);
	if (c->rules.to_port != lport) {
		snprintf(err, errlen, "ACME_ALPN_PROXY_RULESPEC redirects to port %u but the listener "
		         "is on port %u (-listen %s): they must be the same", c->rules.to_port, lport,
		         c->listen.text);
		return CONFIG_ERROR;
	}
	return CONFIG_OK;
}
