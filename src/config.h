/* Defaults, environment variables and command-line flags -> struct config. */
#ifndef CONFIG_H_
#define CONFIG_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "firewall.h"
#include "rulespec.h"

#define DEFAULT_FALLBACK "127.0.0.1:443"
#define DEFAULT_FALLBACK6 "[::1]:443" /* -transparent: the IPv6 visitors' default */
#define DEFAULT_ALPN "127.0.0.1:31443"
#define DEFAULT_LISTEN "[::]:21443"
#define DEFAULT_PIDFILE "/run/acme-alpn-proxy.pid"
#define DEFAULT_USER "acme-alpn-proxy" /* falls back to "nobody" when it does not exist */
#define DEFAULT_HELLO_TIMEOUT_MS 10000
#define DEFAULT_GRACE_MS 2000
#define DEFAULT_DRAIN_TIMEOUT_MS 180000
#define DEFAULT_MAX_TIME_MS 3600000 /* -max-time: an hour */

/* Exit codes, documented in --help and the man page. */
#define EXIT_OK 0
#define EXIT_FAIL 1      /* a runtime failure: see the message */
#define EXIT_USAGE 2     /* bad command line, value or environment */
#define EXIT_NOTRUNNING 3 /* status: not running (LSB) */
#define EXIT_NOPERM 4    /* start/stop need root (LSB: insufficient privilege) */

enum command { CMD_NONE, CMD_START, CMD_STOP, CMD_STATUS, CMD_CHECK };

struct endpoint {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[64]; /* as given, normalised: "1.2.3.4:443" or "[::1]:443" */
};

enum proxy_proto { PP_NONE, PP_V1, PP_V2 };

struct config {
	enum command cmd;
	/* fallback: IPv4 visitors' web server, and everyone's unless fallback6 is set;
	 * fallback6: IPv6 visitors' (set by a second -fallback, or -transparent's default). */
	struct endpoint fallback, fallback6, alpn, listen;
	bool fallback_set, fallback6_set; /* given with -fallback (for each family once) */
	bool has_fallback6;        /* fallback6 holds an endpoint */
	bool transparent;          /* -transparent: connect to the fallback from the visitor's address */
	enum proxy_proto proxy_protocol; /* -proxy-protocol v1|v2: a PROXY header to the fallback */
	unsigned workers;          /* 0 until resolved: half the online CPUs */
	unsigned hello_timeout_ms;
	unsigned grace_ms;
	unsigned drain_timeout_ms;
	unsigned max_time_ms;      /* -max-time; 0: no safety timer */
	bool daemon;               /* -d */
	bool verbose;              /* -v */
	bool wait;                 /* stop -wait: also wait for the drain to end */
	bool no_sandbox;           /* -no-sandbox: debugging only */
	bool disable_v6;           /* ACME_ALPN_PROXY_DISABLEV6=y */
	enum fw_backend firewall;  /* -firewall iptables (the default) or nftables */
	const char *user;          /* -user, NULL for the default */
	const char *chroot_dir;    /* -chroot */
	const char *pidfile;       /* ACME_ALPN_PROXY_PIDFILE */
	const char *rulespec_text; /* ACME_ALPN_PROXY_RULESPEC or RULESPEC_DEFAULT */
	struct rulespec rules;
	char rules_err[256];       /* check: why the rule spec was refused ("": it parsed) */
#ifdef ENABLE_TEST_HOOKS
	const char *test_hook;     /* ACME_ALPN_PROXY_TEST_HOOK, test builds only */
#endif
};

enum config_result { CONFIG_OK, CONFIG_EXIT_OK, CONFIG_ERROR };

/* Fill c from defaults, the environment and argv. On CONFIG_EXIT_OK (--help, --version) the
 * text was printed to stdout; on CONFIG_ERROR one line is in err. */
enum config_result config_parse(struct config *c, int argc, char **argv, char *err,
                                size_t errlen);

/* Parse "1.2.3.4:443", "[2001:db8::1]:443" or "*:443"-free forms into e; returns 0 or -1. */
int config_parse_endpoint(const char *s, struct endpoint *e);

/* Parse seconds with an optional fraction ("2", "0.5") into milliseconds; returns 0 or -1. */
int config_parse_seconds(const char *s, unsigned *ms);

void config_usage(FILE *out);

#endif
