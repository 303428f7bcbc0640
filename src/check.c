/* `acme-alpn-proxy check`: will the next start work? Every item is looked at without changing
 * the host: no rule, no table, no listener, no user, no directory is created, no lock is held
 * longer than a test of it. One line per item, OK / WARN / FAIL with what to do. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include "check.h"
#include "clock.h"
#include "conntrack.h"
#include "firewall.h"
#include "pidfile.h"
#include "privdrop.h"
#include "proxyproto.h"

#define CHECK_CONNECT_MS 3000
#define CHECK_TLS_MS 5000
#define XTABLES_LOCK "/run/xtables.lock"

struct tally {
	unsigned ok, warn, fail;
	bool lock_busy; /* check_lock found the xtables lock held: libiptc reads would wait */
};

static void item(struct tally *t, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

enum { OK, WARN, FAIL };

static void item(struct tally *t, int level, const char *fmt, ...)
{
	static const char *const names[] = { "OK  ", "WARN", "FAIL" };
	va_list ap;

	printf("%s ", names[level]);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (level == OK)
		t->ok++;
	else if (level == WARN)
		t->warn++;
	else
		t->fail++;
}

static int families_of(const struct config *cfg)
{
	return FW_V4 | (cfg->disable_v6 ? 0 : FW_V6);
}

/* The running kernel's version as major * 1000 + minor (0 when unknown). */
static unsigned kernel_version(char *text, size_t len)
{
	struct utsname u;
	unsigned maj = 0, min = 0;

	if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &maj, &min) != 2) {
		snprintf(text, len, "unknown");
		return 0;
	}
	snprintf(text, len, "%s", u.release);
	return maj * 1000 + min;
}

static void check_firewall(const struct config *cfg, struct tally *t)
{
	char err[512], kv[128];
	unsigned k = kernel_version(kv, sizeof(kv));
	int v4, v6;

	if (cfg->firewall == FW_BACKEND_NFTABLES) {
		struct fw_others o;

		if (k != 0 && k < 5012)
			item(t, FAIL, "firewall nftables: kernel %s has no owner tables "
			     "(NFT_TABLE_F_OWNER, Linux 5.12): use -firewall iptables", kv);
		/* A dump of the nat chains reads nf_tables; it fails only without it. */
		else if (fw_find_others(&cfg->rules, 0, &o, err, sizeof(err)) < 0)
			item(t, FAIL, "firewall nftables: cannot read nf_tables: %s; load nf_tables "
			     "or use -firewall iptables", err);
		else
			item(t, OK, "firewall nftables: nf_tables answers, kernel %s has owner tables "
			     "and inet nat (IPv4 and IPv6 in one table)", kv);
		return;
	}
	if (t->lock_busy) {
		item(t, WARN, "firewall iptables: the nat tables not read while the xtables lock is "
		     "held; run check again once it is free");
		return;
	}
	v4 = fw_count(&cfg->rules, FW_V4, 0, err, sizeof(err));
	if (v4 < 0)
		item(t, FAIL, "firewall iptables: the IPv4 nat table cannot be read: %s; load "
		     "iptable_nat, or use -firewall nftables", err);
	else
		item(t, OK, "firewall iptables: the IPv4 nat table can be read (libiptc)");
	if (cfg->disable_v6) {
		item(t, OK, "firewall iptables: IPv6 disabled (ACME_ALPN_PROXY_DISABLEV6=y)");
		return;
	}
	v6 = fw_count(&cfg->rules, FW_V6, 0, err, sizeof(err));
	if (v6 < 0)
		item(t, WARN, "firewall iptables: the IPv6 nat table cannot be read: %s; start will "
		     "redirect IPv4 only: load ip6table_nat, or set ACME_ALPN_PROXY_DISABLEV6=y",
		     err);
	else
		item(t, OK, "firewall iptables: the IPv6 nat table can be read");
}

/* Free now, as a test: taken and given back at once, never waited for. */
static void check_lock(const struct config *cfg, struct tally *t)
{
	int fd;

	if (cfg->firewall == FW_BACKEND_NFTABLES)
		return;
	fd = open(XTABLES_LOCK, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		item(t, OK, "xtables lock %s: free (%s)", XTABLES_LOCK,
		     errno == ENOENT ? "no such file yet" : strerror(errno));
		return;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		flock(fd, LOCK_UN);
		item(t, OK, "xtables lock %s: free", XTABLES_LOCK);
	} else {
		t->lock_busy = true;
		item(t, WARN, "xtables lock %s: held by another program (iptables, firewalld?); "
		     "start waits up to %u s for it", XTABLES_LOCK, FW_LOCK_WAIT_DEFAULT_MS / 1000);
	}
	close(fd);
}

static void check_rules(const struct config *cfg, struct tally *t)
{
	struct fw_others o;
	char err[512];
	int prio = fw_priority();

	if (cfg->rules_err[0] != '\0') {
		item(t, FAIL, "ACME_ALPN_PROXY_RULESPEC: %s (\"%s\"); fix it or unset it for the "
		     "default", cfg->rules_err, cfg->rulespec_text);
		return;
	}
	item(t, OK, "rule spec: %s", cfg->rulespec_text);
	if (fw_find_others(&cfg->rules, families_of(cfg), &o, err, sizeof(err)) < 0) {
		item(t, WARN, "other redirects of port %u: cannot read them all: %s",
		     cfg->rules.dport, err);
	}
	if (o.n == 0) {
		item(t, OK, "no other REDIRECT or DNAT of port %u in nat prerouting",
		     cfg->rules.dport);
		return;
	}
	for (int i = 0; i < o.n; i++) {
		if (o.o[i].prio < prio)
			item(t, FAIL, "%s redirects port %u and runs before the proxy's rule (priority "
			     "%d, the proxy's %d): visitors would never reach the proxy; remove it for "
			     "the validation or use the other -firewall", o.o[i].where,
			     cfg->rules.dport, o.o[i].prio, prio);
		else
			item(t, WARN, "%s also redirects port %u; while the proxy runs its rule comes "
			     "first and this one sees no new connection", o.o[i].where,
			     cfg->rules.dport);
	}
	if (o.more)
		item(t, WARN, "more redirects of port %u than listed", cfg->rules.dport);
}

static void check_user(const struct config *cfg, struct tally *t)
{
	struct privdrop_target pt;
	char err[512];
	int r;

	if (privdrop_check_user(&pt, cfg->user, err, sizeof(err)) < 0)
		item(t, FAIL, "worker user: %s", err);
	else if (cfg->user == NULL && strcmp(pt.user, DEFAULT_USER) != 0)
		item(t, WARN, "worker user: \"%s\" does not exist, the workers would run as \"%s\" "
		     "(uid %lu), shared with other daemons; create it: adduser --system %s",
		     DEFAULT_USER, pt.user, (unsigned long)pt.uid, DEFAULT_USER);
	else
		item(t, OK, "worker user: %s (uid %lu, gid %lu)", pt.user, (unsigned long)pt.uid,
		     (unsigned long)pt.gid);
	r = privdrop_check_dir(cfg->chroot_dir, err, sizeof(err));
	if (r < 0)
		item(t, FAIL, "%s", err);
	else if (r == 1)
		item(t, WARN, "chroot directory %s: does not exist; start creates it (root, 0755)",
		     cfg->chroot_dir);
	else
		item(t, OK, "chroot directory %s: root-owned, writable by nobody else",
		     cfg->chroot_dir);
}

/* Bound as start binds it (SO_REUSEADDR), never listening, closed at once. */
static void check_listen(const struct config *cfg, struct tally *t)
{
	const struct endpoint *e = &cfg->listen;
	int one = 1, zero = 0;
	int fd = socket(e->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		item(t, FAIL, "listener %s: socket: %s", e->text, strerror(errno));
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (e->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	int r = bind(fd, (const struct sockaddr *)&e->ss, e->len), err = errno;
	pid_t running = r < 0 && err == EADDRINUSE ? pidfile_running(cfg->pidfile) : 0;

	errno = err;
	if (r == 0)
		item(t, OK, "listener %s: the port is free%s", e->text,
		     e->ss.ss_family == AF_INET6 ? " (IPv6 and IPv4)" : "");
	else if (running > 0)
		item(t, OK, "listener %s: in use by the running instance (pid %ld)", e->text,
		     (long)running);
	else if (errno == EADDRINUSE)
		item(t, FAIL, "listener %s: the port is in use (ss -tlnp shows by whom); choose "
		     "another with -listen and ACME_ALPN_PROXY_RULESPEC's --to-ports", e->text);
	else
		item(t, FAIL, "listener %s: cannot bind: %s", e->text, strerror(errno));
	close(fd);
}

/* Connect with a deadline: the socket, or -1 with errno. */
static int connect_to(const struct endpoint *e, int ms)
{
	struct pollfd p;
	int fd = socket(e->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&e->ss, e->len) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto fail;
	p.fd = fd;
	p.events = POLLOUT;
	if (poll(&p, 1, ms) != 1) {
		errno = ETIMEDOUT;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
		errno = soerr != 0 ? soerr : errno;
		goto fail;
	}
	return fd;
fail:
	{
		int e2 = errno;
		close(fd);
		errno = e2;
	}
	return -1;
}

static size_t put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
	return 2;
}

/* A TLS 1.2/1.3 ClientHello as a browser would send it, without SNI: the server answers with
 * its default certificate. ALPN http/1.1. The x25519 share is random bytes. */
static size_t client_hello(unsigned char *buf, size_t cap)
{
	static const unsigned char suites[] = {
		0x13, 0x01, 0x13, 0x02, 0x13, 0x03,             /* TLS 1.3 */
		0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, /* ECDHE GCM */
		0xcc, 0xa9, 0xcc, 0xa8, 0x00, 0x9e, 0x00, 0x9f,
	};
	static const unsigned char exts[] = {
		0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, /* groups */
		0x00, 0x0b, 0x00, 0x02, 0x01, 0x00,                                     /* points */
		0x00, 0x0d, 0x00, 0x12, 0x00, 0x10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, /* sigalgs */
		0x05, 0x03, 0x08, 0x05, 0x05, 0x01, 0x08, 0x06, 0x06, 0x01,
		0x00, 0x10, 0x00, 0x0b, 0x00, 0x09, 0x08, 'h', 't', 't', 'p', '/', '1', '.', '1',
		0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03, /* versions 1.3, 1.2 */
		0x00, 0x2d, 0x00, 0x02, 0x01, 0x01,                   /* psk modes */
		0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, /* key share, x25519 */
	};
	unsigned char *p = buf;
	size_t body;

	if (cap < 512)
		return 0;
	p += 9; /* record header (5) and handshake header (4), filled in below */
	p += put16(p, 0x0303);
	for (int i = 0; i < 32 + 1 + 32; i++) /* random, session id length 32, session id */
		p[i] = (unsigned char)rand();
	p[32] = 32;
	p += 65;
	p += put16(p, sizeof(suites));
	memcpy(p, suites, sizeof(suites));
	p += sizeof(suites);
	*p++ = 1; /* compression: null */
	*p++ = 0;
	p += put16(p, sizeof(exts) + 32);
	memcpy(p, exts, sizeof(exts));
	p += sizeof(exts);
	for (int i = 0; i < 32; i++)
		*p++ = (unsigned char)rand();
	body = (size_t)(p - buf) - 9;
	buf[0] = 0x16;
	put16(buf + 1, 0x0301);
	put16(buf + 3, (unsigned)(body + 4));
	buf[5] = 0x01;
	buf[6] = (unsigned char)(body >> 16);
	put16(buf + 7, (unsigned)body);
	return (size_t)(p - buf);
}

/* Read n bytes before the deadline; returns how many came. */
static size_t read_some(int fd, unsigned char *buf, size_t n, int ms)
{
	uint64_t t0 = clock_now_ms();
	size_t got = 0;

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left;
		ssize_t r;

		left = ms - (long)clock_since_ms(t0);
		if (left <= 0 || poll(&p, 1, (int)left) != 1)
			break;
		r = read(fd, buf + got, n - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/* Whether the kernel answers a dump of af's policy routing rules: -1 with errno when not. */
static int rules_readable(int af)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct mnl_socket *nl = mnl_socket_open(NETLINK_ROUTE);
	struct nlmsghdr *nlh;
	struct fib_rule_hdr *frh;
	unsigned seq = (unsigned)time(NULL);
	int r = -1, e = 0;
	ssize_t len;

	if (nl == NULL)
		return -1;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
		goto out;
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETRULE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
	frh->family = (uint8_t)af;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		goto out;
	do {
		len = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		r = len > 0 ? mnl_cb_run(buf, (size_t)len, seq, mnl_socket_get_portid(nl), NULL, NULL)
		            : MNL_CB_ERROR;
	} while (r == MNL_CB_OK);
	r = r == MNL_CB_STOP ? 0 : -1;
out:
	e = errno;
	mnl_socket_close(nl);
	errno = e;
	return r;
}

/* One fallback: connect, (with -proxy-protocol) the header a connection from us would carry,
 * a ClientHello; a ServerHello must come back. */
static void check_one_fallback(const struct config *cfg, const struct endpoint *e,
                               struct tally *t)
{
	unsigned char hello[1024 + PROXY_HEADER_MAX], ans[7];
	struct sockaddr_storage self;
	socklen_t sl = sizeof(self);
	size_t len = 0, got;
	int fd = connect_to(e, CHECK_CONNECT_MS);

	if (fd < 0) {
		item(t, FAIL, "fallback %s: cannot connect: %s; is the web server listening there? "
		     "(-fallback names it)", e->text, strerror(errno));
		return;
	}
	if (cfg->proxy_protocol != PP_NONE) {
		if (getsockname(fd, (struct sockaddr *)&self, &sl) == 0)
			len = proxy_header(cfg->proxy_protocol, &self, &e->ss, hello, sizeof(hello));
		if (len == 0) {
			item(t, FAIL, "fallback %s: cannot build a PROXY protocol header", e->text);
			close(fd);
			return;
		}
	}
	len += client_hello(hello + len, sizeof(hello) - len);
	if (write(fd, hello, len) != (ssize_t)len) {
		item(t, FAIL, "fallback %s: sending a ClientHello failed: %s", e->text,
		     strerror(errno));
		close(fd);
		return;
	}
	got = read_some(fd, ans, sizeof(ans), CHECK_TLS_MS);
	close(fd);
	if (got >= 6 && ans[0] == 0x16 && ans[1] == 3 && ans[5] == 0x02)
		item(t, OK, "fallback %s: answers TLS (a ServerHello)%s", e->text,
		     cfg->proxy_protocol == PP_V1 ? " after a PROXY v1 header"
		     : cfg->proxy_protocol == PP_V2 ? " after a PROXY v2 header" : "");
	else if (got >= 7 && ans[0] == 0x15 && ans[1] == 3)
		item(t, WARN, "fallback %s: speaks TLS but refused a hello without a server name "
		     "(alert %u); visitors who send one may still be served", e->text, ans[6]);
	else if (got == 0)
		item(t, FAIL, "fallback %s: accepted, but answered a ClientHello with nothing "
		     "within %d s; is it a TLS server?%s", e->text, CHECK_TLS_MS / 1000,
		     cfg->proxy_protocol != PP_NONE ? " Does it expect the PROXY protocol "
		     "(-proxy-protocol sends it a header)?" : "");
	else
		item(t, FAIL, "fallback %s: answered a ClientHello with something that is not TLS "
		     "(first byte 0x%02x): is it the HTTPS port%s?", e->text, ans[0],
		     cfg->proxy_protocol == PP_NONE ? ", or does it expect a PROXY protocol header "
		     "(-proxy-protocol)" : "");
}

static void check_fallback(const struct config *cfg, struct tally *t)
{
	check_one_fallback(cfg, &cfg->fallback, t);
	if (cfg->has_fallback6)
		check_one_fallback(cfg, &cfg->fallback6, t);
}

/* -transparent: a socket may take the visitor's address (IP_TRANSPARENT, as root), and the
 * kernel has policy routing for the families (a read of the rules: RTM_GETRULE answers). */
static void check_transparent(const struct config *cfg, struct tally *t)
{
	static const struct { int af; const char *name; } fams[] = {
		{ AF_INET, "IPv4" }, { AF_INET6, "IPv6" },
	};
	int one = 1;

	if (!cfg->transparent)
		return;
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		int af = fams[i].af;
		int fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int r = fd < 0 ? -1
		        : af == AF_INET ? setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
		        : setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
		int e = errno;

		if (fd >= 0)
			close(fd);
		if (af == AF_INET6 && cfg->disable_v6)
			continue;
		if (r < 0) {
			item(t, FAIL, "-transparent, %s: IP_TRANSPARENT refused: %s", fams[i].name,
			     strerror(e));
			continue;
		}
		if (rules_readable(af) < 0)
			item(t, FAIL, "-transparent, %s: the kernel has no policy routing (ip rule): "
			     "%s; CONFIG_%sMULTIPLE_TABLES is needed, or use -proxy-protocol",
			     fams[i].name, strerror(errno), af == AF_INET ? "IP_" : "IPV6_");
		else
			item(t, OK, "-transparent, %s: sockets may take the visitor's address, and "
			     "policy routing is there for the replies", fams[i].name);
	}
}

static void check_alpn(const struct config *cfg, struct tally *t)
{
	int fd = connect_to(&cfg->alpn, CHECK_CONNECT_MS);

	if (fd >= 0) {
		close(fd);
		item(t, OK, "ACME responder %s: listening", cfg->alpn.text);
		return;
	}
	item(t, WARN, "ACME responder %s: %s; normal between renewals (the ACME client starts it "
	     "for a validation), else point -alpn at it", cfg->alpn.text, strerror(errno));
}

static void check_leftovers(const struct config *cfg, struct tally *t)
{
	char dir[4096], err[512];
	pid_t pid = pidfile_running(cfg->pidfile);
	struct ct_counts n;
	int left;

	snprintf(dir, sizeof(dir), "%s", cfg->pidfile);
	if (access(dirname(dir), W_OK) != 0)
		item(t, FAIL, "pidfile %s: its directory is not writable: %s; set "
		     "ACME_ALPN_PROXY_PIDFILE", cfg->pidfile, strerror(errno));
	else
		item(t, OK, "pidfile %s: its directory is writable", cfg->pidfile);
	if (pid > 0) {
		item(t, WARN, "an instance is running (pid %ld): a start now finds it running; "
		     "stop it after the renewal", (long)pid);
		return;
	}
	left = t->lock_busy && cfg->firewall == FW_BACKEND_IPTABLES
	       ? -1 : fw_count(&cfg->rules, families_of(cfg), 0, err, sizeof(err));
	if (left > 0)
		item(t, FAIL, "%d redirect rule%s of port %u left%s, while no instance runs behind "
		     "%s: port %u may be redirected to nothing; run `acme-alpn-proxy stop`",
		     left, left == 1 ? "" : "s", cfg->rules.dport,
		     left == 1 ? "" : " (or another instance's, with another pidfile)",
		     cfg->pidfile, cfg->rules.dport);
	else if (left == 0)
		item(t, OK, "no redirect rule left by a dead instance");
	else
		item(t, WARN, "rules left by a dead instance: not read: %s",
		     t->lock_busy ? "the xtables lock is held" : err);
	if (ct_count_stale(cfg->rules.to_port, &n, err, sizeof(err)) < 0)
		item(t, WARN, "stale NAT bindings: cannot read the connection tracking table: %s",
		     err);
	else if (n.deleted > 0)
		item(t, WARN, "%zu stale NAT binding%s to port %u left in the connection tracking "
		     "table (a killed instance's); the next start or `acme-alpn-proxy stop` deletes "
		     "them", n.deleted, n.deleted == 1 ? "" : "s", cfg->rules.to_port);
	else
		item(t, OK, "no stale NAT binding to port %u", cfg->rules.to_port);
}

int check_run(const struct config *cfg)
{
	struct tally t = { 0, 0, 0, false };

	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	/* A busy lock is reported by check_lock: never wait long for it. */
	fw_set_lock_wait(1000);
	if (geteuid() != 0) {
		item(&t, FAIL, "not running as root: start needs root, and so do most of these "
		     "checks; run `sudo acme-alpn-proxy check`");
		printf("check: %u OK, %u WARN, %u FAIL\n", t.ok, t.warn, t.fail);
		return 1;
	}
	item(&t, OK, "running as root");
	check_lock(cfg, &t);
	check_firewall(cfg, &t);
	check_rules(cfg, &t);
	check_user(cfg, &t);
	check_listen(cfg, &t);
	check_fallback(cfg, &t);
	check_transparent(cfg, &t);
	check_alpn(cfg, &t);
	check_leftovers(cfg, &t);
	printf("check: %u OK, %u WARN, %u FAIL\n", t.ok, t.warn, t.fail);
	return t.fail > 0 ? 1 : 0;
}
