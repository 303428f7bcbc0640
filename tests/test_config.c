/* Unit tests of the command line, the environment and value parsing (src/config.c). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "testutil.h"

static struct config cfg;
static char err[512];

static enum config_result parse(const char *a0, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;
	const char *a;

	argv[argc++] = (char *)"acme-alpn-proxy";
	va_start(ap, a0);
	for (a = a0; a != NULL && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	return config_parse(&cfg, argc, argv, err, sizeof(err));
}

static void clear_env(void)
{
	unsetenv("ACME_ALPN_PROXY_PIDFILE");
	unsetenv("ACME_ALPN_PROXY_RULESPEC");
	unsetenv("ACME_ALPN_PROXY_DISABLEV6");
}

static void test_defaults(void)
{
	clear_env();
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.cmd, CMD_START);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "127.0.0.1:443");
	CU_ASSERT_STRING_EQUAL(cfg.alpn.text, "127.0.0.1:31443");
	CU_ASSERT_STRING_EQUAL(cfg.listen.text, "[::]:21443");
	CU_ASSERT_EQUAL(cfg.listen.ss.ss_family, AF_INET6);
	CU_ASSERT_EQUAL(cfg.hello_timeout_ms, 10000);
	CU_ASSERT_EQUAL(cfg.grace_ms, 2000);
	CU_ASSERT_EQUAL(cfg.drain_timeout_ms, 180000);
	CU_ASSERT_STRING_EQUAL(cfg.pidfile, "/run/acme-alpn-proxy.pid");
	CU_ASSERT_TRUE(cfg.workers >= 1);
	CU_ASSERT_FALSE(cfg.disable_v6);
	CU_ASSERT_FALSE(cfg.daemon);
	CU_ASSERT_EQUAL(cfg.rules.dport, 443);
	CU_ASSERT_EQUAL(cfg.rules.to_port, 21443);
	CU_ASSERT_EQUAL(cfg.firewall, FW_BACKEND_IPTABLES);
}

/* -firewall, and the rule specs only one backend can say (issue 12). */
static void test_firewall(void)
{
	char spec[400];

	clear_env();
	CU_ASSERT_EQUAL_FATAL(parse("-firewall", "nftables", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.firewall, FW_BACKEND_NFTABLES);
	CU_ASSERT_EQUAL_FATAL(parse("start", "--firewall=iptables", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.firewall, FW_BACKEND_IPTABLES);
	CU_ASSERT_EQUAL(parse("-firewall", "nft", "start", NULL), CONFIG_ERROR);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "\"nft\" is neither iptables nor nftables"));
	CU_ASSERT_EQUAL(parse("-firewall", NULL), CONFIG_ERROR);

	/* Everything the parser takes translates, the same spec with both backends... */
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp --dport 443 ! -s 198.51.100.0/24 -d "
	       "2001:db8::/32 -i eth+ -m comment --comment x -j REDIRECT --to-port 21443", 1);
	CU_ASSERT_EQUAL(parse("start", NULL), CONFIG_ERROR); /* -s and -d of two families */
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp --dport 443 ! -s 198.51.100.0/255.255.0.255 "
	       "! -i eth+ -m comment --comment x -j REDIRECT --to-port 21443", 1);
	CU_ASSERT_EQUAL(parse("-firewall", "nftables", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(parse("-firewall", "iptables", "start", NULL), CONFIG_OK);
	/* ...but for a comment longer than an nftables rule holds, and "! -i +". */
	snprintf(spec, sizeof(spec), "-p tcp -m comment --comment %0128d -j REDIRECT "
	         "--to-port 21443", 0);
	setenv("ACME_ALPN_PROXY_RULESPEC", spec, 1);
	CU_ASSERT_EQUAL(parse("-firewall", "iptables", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(parse("-firewall", "nftables", "start", NULL), CONFIG_ERROR);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "holds at most 127"));
	snprintf(spec, sizeof(spec), "-p tcp -m comment --comment %0127d -j REDIRECT "
	         "--to-port 21443", 0);
	setenv("ACME_ALPN_PROXY_RULESPEC", spec, 1);
	CU_ASSERT_EQUAL(parse("-firewall", "nftables", "start", NULL), CONFIG_OK);
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp ! -i + -j REDIRECT --to-port 21443", 1);
	CU_ASSERT_EQUAL(parse("-firewall", "iptables", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(parse("-firewall", "nftables", "start", NULL), CONFIG_ERROR);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no nftables translation"));
	clear_env();
}

static void expect_error(enum config_result r, const char *needle);

static void test_visitor_modes(void)
{
	clear_env();
	/* One -fallback per family: each family's visitors to their own. */
	CU_ASSERT_EQUAL_FATAL(parse("-fallback", "[::1]:8443", "-fallback", "127.0.0.1:8443",
	                            "start", NULL), CONFIG_OK);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "127.0.0.1:8443");
	CU_ASSERT_TRUE(cfg.has_fallback6);
	CU_ASSERT_STRING_EQUAL(cfg.fallback6.text, "[::1]:8443");
	CU_ASSERT_FALSE(cfg.transparent);
	CU_ASSERT_EQUAL(cfg.proxy_protocol, PP_NONE);
	/* One alone serves everyone, as before. */
	CU_ASSERT_EQUAL_FATAL(parse("-fallback", "[::1]:8443", "start", NULL), CONFIG_OK);
	CU_ASSERT_FALSE(cfg.has_fallback6);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "[::1]:8443");
	expect_error(parse("-fallback", "127.0.0.1:1", "-fallback", "127.0.0.2:2", "start", NULL),
	             "at most once per address family");
	/* -transparent: loopback defaults per family. */
	CU_ASSERT_EQUAL_FATAL(parse("-transparent", "start", NULL), CONFIG_OK);
	CU_ASSERT_TRUE(cfg.transparent);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "127.0.0.1:443");
	CU_ASSERT_STRING_EQUAL(cfg.fallback6.text, "[::1]:443");
	CU_ASSERT_EQUAL_FATAL(parse("-transparent", "-fallback", "[::1]:8443", "start", NULL),
	                      CONFIG_OK);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "127.0.0.1:443");
	CU_ASSERT_STRING_EQUAL(cfg.fallback6.text, "[::1]:8443");
	CU_ASSERT_EQUAL(parse("-transparent", "-fallback", "198.51.100.1:443", "start", NULL),
	                CONFIG_OK);
	CU_ASSERT_STRING_EQUAL(cfg.fallback6.text, "[::1]:443");
	CU_ASSERT_EQUAL(parse("-transparent", "-firewall", "nftables", "-fallback",
	                      "198.51.100.1:443", "-fallback", "[2001:db8::1]:443", "start", NULL),
	                CONFIG_OK);
	CU_ASSERT_EQUAL_FATAL(parse("-proxy-protocol", "v1", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.proxy_protocol, PP_V1);
	CU_ASSERT_EQUAL_FATAL(parse("--proxy-protocol=v2", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.proxy_protocol, PP_V2);
	expect_error(parse("-proxy-protocol", "v3", "start", NULL), "neither v1 nor v2");
	expect_error(parse("-transparent", "-proxy-protocol", "v1", "start", NULL),
	             "exclude each other");
}

static void test_original_syntax(void)
{
	clear_env();
	/* The original tool's form: single dash, options before the command. */
	CU_ASSERT_EQUAL_FATAL(parse("-fallback", "127.0.0.1:8443", "-alpn", "127.0.0.1:9443",
	                            "start", NULL), CONFIG_OK);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "127.0.0.1:8443");
	CU_ASSERT_STRING_EQUAL(cfg.alpn.text, "127.0.0.1:9443");
	CU_ASSERT_EQUAL(ntohs(((struct sockaddr_in *)&cfg.alpn.ss)->sin_port), 9443);
}

static void test_options_after_command(void)
{
	clear_env();
	CU_ASSERT_EQUAL_FATAL(parse("start", "--workers", "3", "-grace=0.5", "--hello-timeout=1.25",
	                            "-d", "-v", "--fallback=[2001:db8::1]:443", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.workers, 3);
	CU_ASSERT_EQUAL(cfg.grace_ms, 500);
	CU_ASSERT_EQUAL(cfg.hello_timeout_ms, 1250);
	CU_ASSERT_TRUE(cfg.daemon);
	CU_ASSERT_TRUE(cfg.verbose);
	CU_ASSERT_EQUAL(cfg.fallback.ss.ss_family, AF_INET6);
	CU_ASSERT_STRING_EQUAL(cfg.fallback.text, "[2001:db8::1]:443");
	CU_ASSERT_EQUAL_FATAL(parse("stop", "-wait", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.cmd, CMD_STOP);
	CU_ASSERT_TRUE(cfg.wait);
	CU_ASSERT_EQUAL_FATAL(parse("status", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.cmd, CMD_STATUS);
}

static void expect_error(enum config_result r, const char *needle)
{
	CU_ASSERT_EQUAL(r, CONFIG_ERROR);
	if (strstr(err, needle) == NULL) {
		fprintf(stderr, "error \"%s\" does not mention \"%s\"\n", err, needle);
		CU_FAIL("error message does not name the problem");
	}
}

static void test_max_time_and_check(void)
{
	clear_env();
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.max_time_ms, 3600000);
	CU_ASSERT_EQUAL_FATAL(parse("-max-time", "0", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.max_time_ms, 0);
	CU_ASSERT_EQUAL_FATAL(parse("-max-time", "1.5", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.max_time_ms, 1500);
	/* The hooks pass one, ACME_ALPN_PROXY_OPTS after it may set another: the later wins. */
	CU_ASSERT_EQUAL_FATAL(parse("-max-time", "600", "-max-time=1800", "start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.max_time_ms, 1800000);
	expect_error(parse("-max-time", "-1", "start", NULL), "-max-time");
	expect_error(parse("-max-time", "soon", "start", NULL), "-max-time");
	expect_error(parse("-max-time", "604801", "start", NULL), "-max-time");

	/* check reports a refused rule spec as one of its items, start refuses it. */
	CU_ASSERT_EQUAL_FATAL(parse("check", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.cmd, CMD_CHECK);
	CU_ASSERT_STRING_EQUAL(cfg.rules_err, "");
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p udp --dport 443 -j REDIRECT --to-port 21443", 1);
	CU_ASSERT_EQUAL_FATAL(parse("check", NULL), CONFIG_OK);
	CU_ASSERT_NOT_EQUAL(cfg.rules_err[0], '\0');
	CU_ASSERT_EQUAL(cfg.rules.to_port, 21443); /* the default's, to check the rest with */
	expect_error(parse("start", NULL), "ACME_ALPN_PROXY_RULESPEC");
	clear_env();
}

static void test_bad_input(void)
{
	clear_env();
	expect_error(parse("start", "-bogus", NULL), "-bogus");
	expect_error(parse("launch", NULL), "launch");
	expect_error(parse(NULL), "no command");
	expect_error(parse("start", "stop", NULL), "more than one");
	expect_error(parse("start", "-workers", NULL), "needs a value");
	expect_error(parse("start", "-workers", "0", NULL), "-workers");
	expect_error(parse("start", "-workers", "x", NULL), "-workers");
	expect_error(parse("start", "-d=1", NULL), "takes no value");
	expect_error(parse("start", "-fallback", "127.0.0.1", NULL), "-fallback");
	expect_error(parse("start", "-fallback", "127.0.0.1:0", NULL), "-fallback");
	expect_error(parse("start", "-fallback", "127.0.0.1:65536", NULL), "-fallback");
	expect_error(parse("start", "-fallback", "2001:db8::1:443", NULL), "-fallback");
	expect_error(parse("start", "-fallback", "localhost:443", NULL), "-fallback");
	expect_error(parse("start", "-alpn", "[::1]443", NULL), "-alpn");
	expect_error(parse("start", "-grace", "-1", NULL), "-grace");
	CU_ASSERT_EQUAL(parse("start", "-grace", "0", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.grace_ms, 0);
	expect_error(parse("start", "-grace", "1.", NULL), "-grace");
	expect_error(parse("start", "-hello-timeout", "0", NULL), "-hello-timeout");
	expect_error(parse("start", "-drain-timeout", "5s", NULL), "-drain-timeout");
	expect_error(parse("start", "-chroot", "relative", NULL), "-chroot");
}

static void test_environment(void)
{
	clear_env();
	setenv("ACME_ALPN_PROXY_PIDFILE", "/tmp/x.pid", 1);
	setenv("ACME_ALPN_PROXY_DISABLEV6", "y", 1);
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_STRING_EQUAL(cfg.pidfile, "/tmp/x.pid");
	CU_ASSERT_TRUE(cfg.disable_v6);
	/* Only exactly "y" disables IPv6, as in the original tool. */
	setenv("ACME_ALPN_PROXY_DISABLEV6", "n", 1);
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_FALSE(cfg.disable_v6);
	setenv("ACME_ALPN_PROXY_DISABLEV6", "", 1);
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_FALSE(cfg.disable_v6);
	/* Anything else is refused rather than silently leaving IPv6 on. */
	setenv("ACME_ALPN_PROXY_DISABLEV6", "yes", 1);
	expect_error(parse("start", NULL), "ACME_ALPN_PROXY_DISABLEV6=yes");
	unsetenv("ACME_ALPN_PROXY_DISABLEV6");

	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp --dport 8443 -j REDIRECT --to-port 21443", 1);
	CU_ASSERT_EQUAL_FATAL(parse("start", NULL), CONFIG_OK);
	CU_ASSERT_EQUAL(cfg.rules.dport, 8443);
	/* The rule must redirect to the port the listener is on. */
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp --dport 443 -j REDIRECT --to-port 9999", 1);
	expect_error(parse("start", NULL), "9999");
	CU_ASSERT_EQUAL(parse("start", "-listen", "[::]:9999", NULL), CONFIG_OK);
	setenv("ACME_ALPN_PROXY_RULESPEC", "-p tcp --dport 443 -o eth0 -j REDIRECT --to-port 21443",
	       1);
	expect_error(parse("start", NULL), "ACME_ALPN_PROXY_RULESPEC");
	clear_env();
}

static void test_seconds(void)
{
	unsigned ms = 0;

	CU_ASSERT_EQUAL(config_parse_seconds("2", &ms), 0);
	CU_ASSERT_EQUAL(ms, 2000);
	CU_ASSERT_EQUAL(config_parse_seconds("0.001", &ms), 0);
	CU_ASSERT_EQUAL(ms, 1);
	CU_ASSERT_EQUAL(config_parse_seconds("1.23456", &ms), 0);
	CU_ASSERT_EQUAL(ms, 1234);
	CU_ASSERT_EQUAL(config_parse_seconds("", &ms), -1);
	CU_ASSERT_EQUAL(config_parse_seconds(".5", &ms), -1);
	CU_ASSERT_EQUAL(config_parse_seconds("99999999999", &ms), -1);
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "defaults", test_defaults },
		{ "-fallback per family, -transparent, -proxy-protocol", test_visitor_modes },
		{ "original tool's syntax", test_original_syntax },
		{ "options after the command, -opt=value, two dashes", test_options_after_command },
		{ "bad input is refused with a message naming it", test_bad_input },
		{ "environment variables", test_environment },
		{ "seconds with fractions", test_seconds },
		{ "-firewall and what nftables cannot say", test_firewall },
		{ "-max-time, and check's rule spec errors", test_max_time_and_check },
	};

	if (TU_ADD_SUITE("config", tests) != 0)
		return 99;
	return tu_run();
}
