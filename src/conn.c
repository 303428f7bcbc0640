/* Connections of one worker, driven by its epoll set.
 *
 * Every socket is registered once, edge-triggered (RELAY_EVENTS, relay.h): the client at accept,
 * the backend right after connect(). An event only sets the readiness flags of that side (struct
 * relay_end); the code then reads and writes until the kernel answers EAGAIN, which clears the
 * flag again. No epoll_ctl per event: EPOLLOUT is added once (a connect in progress, a write that
 * would block), and a socket leaves the set when it is closed (each one has a single descriptor).
 *
 * Once connected, the relay (relay.c) moves the bytes both ways. An idle relayed connection costs
 * only its struct conn in user space (the hello parser and the hello bytes are freed once they
 * are passed on, and the relay holds no pipe or buffer while nothing is in flight).
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netfilter_ipv4.h>
/* <linux/netfilter_ipv6/ip6_tables.h> clashes with <net/if.h>; the number is the ABI. */
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "clienthello.h"
#include "conn.h"
#include "evtag.h"
#include "list.h"
#include "proxyproto.h"
#include "relay.h"
#include "log.h"
#include "route.h"

enum conn_state { ST_HELLO, ST_CONNECT, ST_RELAY, ST_DEAD };
enum { TIMER_HELLO, TIMER_CONNECT, TIMER_LISTS };

struct conn {
	struct conn_set *set;
	struct link all;        /* in set->all while open, in set->dead once ended */
	struct link timer;      /* in one of set->timers while a deadline runs */
	struct link ready;      /* in set->ready: its turn ended with more to do */
	enum conn_state state;
	struct relay_end cl, bk; /* client, backend */
	uint64_t t_accept, deadline;
	char peer[INET6_ADDRSTRLEN + 8];
	bool peer6;              /* a visitor over IPv6 (not an IPv4 one on the dual-stack listener) */
	/* The visitor's address, kept only for -transparent and -proxy-protocol, as AF_INET for
	 * an IPv4 visitor. */
	struct sockaddr_storage peer_ss;
	struct hello_parser *hp; /* only while reading the hello */
	bool acme;
	const char *reason;      /* why fallback: NULL when the hello said so */
	char sni[HELLO_SNI_MAX + 1];
	char alpn[HELLO_ALPN_TEXT_MAX];
	const struct endpoint *backend;
	struct relay relay;      /* up: client -> backend; down: backend -> client */
	const struct relay_end *err_side; /* the socket whose error ended it, and the error */
	int err_no;
};

struct conn_set {
	const struct config *cfg;
	int epfd;
	struct link all, dead;
	/* One list per kind of deadline. Each kind has a fixed length (hello timeout, connect
	 * timeout) and entries are appended as they start, so every list is in deadline order and
	 * only its head needs looking at: idle relayed connections are on none. */
	struct link timers[TIMER_LISTS];
	struct link ready;
	/* Pipes, buffers and the descriptor accounting; pool.nconn: open connections. */
	struct relay_pool pool;
};

#define CONN_OF(l, field) LINK_ENTRY(l, struct conn, field)

struct conn_set *conn_set_new(const struct config *cfg, int epfd)
{
	struct conn_set *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->cfg = cfg;
	s->epfd = epfd;
	relay_pool_init(&s->pool, epfd);
	link_init(&s->all);
	link_init(&s->dead);
	for (int i = 0; i < TIMER_LISTS; i++)
		link_init(&s->timers[i]);
	link_init(&s->ready);
	return s;
}

size_t conn_count(const struct conn_set *s)
{
	return s->pool.nconn;
}

void conn_set_limit(struct conn_set *s, size_t fd_max)
{
	s->pool.fd_max = fd_max;
}

bool conn_room(struct conn_set *s)
{
	return relay_pool_room(&s->pool, 2);
}

size_t conn_pool_trim(struct conn_set *s)
{
	return relay_pool_trim(&s->pool);
}

/* ---- lifetime and logging ------------------------------------------------------------------- */

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		/* An IPv4 client on the dual-stack listener shows as ::ffff:a.b.c.d: print a.b.c.d */
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], a, sizeof(a));
			snprintf(out, outlen, "%s:%u", a, ntohs(s6->sin6_port));
		} else {
			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			snprintf(out, outlen, "[%s]:%u", a, ntohs(s6->sin6_port));
		}
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		snprintf(out, outlen, "%s:%u", a, ntohs(s4->sin_port));
	} else {
		snprintf(out, outlen, "?");
	}
}

static void timer_start(struct conn *c, int which, uint64_t deadline)
{
	link_del(&c->timer);
	c->deadline = deadline;
	link_add_tail(&c->set->timers[which], &c->timer);
}

static void timer_stop(struct conn *c)
{
	link_del(&c->timer);
	c->deadline = 0;
}

/* The connection has ended: close its sockets (which takes them out of the epoll set) and put
 * it on the dead list. It is freed by conn_reap, once no event of this batch can name it. */
static void conn_close(struct conn *c)
{
	struct conn_set *s = c->set;

	if (c->cl.fd >= 0)
		close(c->cl.fd);
	if (c->bk.fd >= 0)
		close(c->bk.fd);
	c->cl.fd = c->bk.fd = -1;
	relay_flow_release(&s->pool, &c->relay.up);
	relay_flow_release(&s->pool, &c->relay.down);
	free(c->hp);
	c->hp = NULL;
	timer_stop(c);
	link_del(&c->ready);
	link_del(&c->all);
	link_add_tail(&s->dead, &c->all);
	c->state = ST_DEAD;
	s->pool.nconn--;
}

void conn_reap(struct conn_set *s)
{
	while (!link_empty(&s->dead)) {
		struct conn *c = CONN_OF(s->dead.next, all);

		link_del(&c->all);
		free(c);
	}
}

static const char *route_text(const struct conn *c, char *buf, size_t len)
{
	if (c->acme)
		return "acme";
	if (c->reason == NULL)
		return "fallback";
	snprintf(buf, len, "fallback(%s)", c->reason);
	return buf;
}

static void conn_log(const struct conn *c, int prio, const char *what, uint64_t now_ms)
{
	char rbuf[48];

	log_msg(prio, "conn %s sni=%s alpn=%s route=%s -> %s up=%llu down=%llu ms=%llu%s%s",
	        c->peer, c->sni[0] ? c->sni : "-", c->alpn[0] ? c->alpn : "-",
	        c->backend != NULL ? route_text(c, rbuf, sizeof(rbuf)) : "none",
	        c->backend != NULL ? c->backend->text : "-",
	        (unsigned long long)c->relay.up.bytes,
	        (unsigned long long)c->relay.down.bytes,
	        (unsigned long long)(now_ms - c->t_accept), what ? ": " : "", what ? what : "");
}

/* A socket of the connection failed with errno: remember which one, for conn_abort. */
static int sock_error(struct conn *c, const struct relay_end *sd, const char **why)
{
	c->err_side = sd;
	c->err_no = errno;
	*why = strerror(errno);
	return -1;
}

/* The connection failed: a warning with the reason, then close. After sock_error the reason
 * names the side, and a peer's reset is a normal end for many clients (and for a web server
 * that closes with unread bytes): information, not a warning. */
static void conn_abort(struct conn *c, const char *why, uint64_t now_ms)
{
	char text[160];
	int prio = LOG_WARNING;

	if (c->err_side != NULL) {
		if (c->err_no == ECONNRESET || c->err_no == EPIPE)
			prio = LOG_INFO;
		snprintf(text, sizeof(text), "%s: %s", c->err_side == &c->cl ? "client" : "backend",
		         why);
		why = text;
	}
	conn_log(c, prio, why, now_ms);
	conn_close(c);
}

/* The connection ended normally; "what" (or NULL) says how, when that is worth a word. */
static void conn_finish(struct conn *c, const char *what, uint64_t now_ms)
{
	conn_log(c, LOG_INFO, what, now_ms);
	conn_close(c);
}

void conn_abort_all(struct conn_set *s, const char *why, uint64_t now_ms)
{
	while (!link_empty(&s->all))
		conn_abort(CONN_OF(s->all.next, all), why, now_ms);
	conn_reap(s);
}

/* An IPv4 visitor on the dual-stack listener, ::ffff:a.b.c.d, as the AF_INET address it is. */
static void conn_unmap(const struct sockaddr_storage *in, struct sockaddr_storage *out)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)in;

	if (in->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)out;

		memset(out, 0, sizeof(*out));
		s4->sin_family = AF_INET;
		s4->sin_port = s6->sin6_port;
		memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	} else {
		memcpy(out, in, sizeof(*out));
	}
}

static void conn_step(struct conn *c, uint64_t now_ms);

/* epoll_data of a connection's socket: the struct's address, its low bit set for the backend. */
static uint64_t side_tag(const struct conn *c, const struct relay_end *sd)
{
	return evtag_conn(c, sd == &c->bk);
}

int conn_accept(struct conn_set *s, int cfd, const struct sockaddr_storage *peer,
                uint64_t now_ms)
{
	struct epoll_event ev = { .events = RELAY_EVENTS };
	struct conn *c = calloc(1, sizeof(*c));
	char why[192];

	if (c == NULL || (c->hp = malloc(sizeof(*c->hp))) == NULL) {
		snprintf(why, sizeof(why), "out of memory for a new connection");
		goto fail;
	}
	hello_init(c->hp, 0);
	c->set = s;
	c->cl.fd = cfd;
	c->bk.fd = -1;
	relay_init(&c->relay);
	c->state = ST_HELLO;
	c->t_accept = now_ms;
	format_peer(peer, c->peer, sizeof(c->peer));
	c->peer6 = peer->ss_family == AF_INET6 &&
	           !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)peer)->sin6_addr);
	if (s->cfg->transparent || s->cfg->proxy_protocol != PP_NONE)
		conn_unmap(peer, &c->peer_ss);
#ifdef ENABLE_TEST_HOOKS
	/* Test builds only: relay through the recv/send fallback, as after a splice EINVAL. */
	if (s->cfg->test_hook != NULL && strcmp(s->cfg->test_hook, "nosplice") == 0)
		c->relay.nosplice = true;
#endif
	/* TCP_NODELAY comes from the listener (listener.c). */
	ev.data.u64 = c->cl.tag = side_tag(c, &c->cl);
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, cfd, &ev) < 0) {
		snprintf(why, sizeof(why), "conn %s: epoll_ctl(ADD, client fd %d): %s", c->peer, cfd,
		         strerror(errno));
		goto fail;
	}
	link_init(&c->all);
	link_init(&c->timer);
	link_init(&c->ready);
	link_add_tail(&s->all, &c->all);
	s->pool.nconn++;
	/* Absolute from accept: a client that drips bytes does not push it back. */
	timer_start(c, TIMER_HELLO, now_ms + s->cfg->hello_timeout_ms);
	/* Read at once, without waiting for an event: the listener defers accepting until the
	 * first bytes came (listener.h), so the hello is usually all there. */
	c->cl.rd = c->cl.wr = true;
	conn_step(c, now_ms);
	return 0;
fail:
	close(cfd);
	if (c != NULL)
		free(c->hp);
	free(c);
	log_err("%s: closed it", why);
	return -1;
}

/* ---- hello, route, connect ------------------------------------------------------------------ */

/* -transparent: the backend socket leaves from the visitor's address (any port, chosen at
 * connect: IP_BIND_ADDRESS_NO_PORT), so that the web server sees the visitor. IP_TRANSPARENT
 * lets a socket bind an address that is not the host's; the worker keeps CAP_NET_RAW for it
 * (privdrop.c). SO_MARK tags the flow: the parent's rules send the replies of a web server on
 * one of the host's own addresses back to this socket by that mark (route.c). */
static int conn_bind_visitor(struct conn *c, char *why, size_t whylen)
{
	const struct sockaddr_storage *a = &c->peer_ss;
	int one = 1;
	unsigned mark = ROUTE_MARK;
	const char *step;

	if (a->ss_family != c->backend->ss.ss_family) {
		snprintf(why, whylen, "-transparent: an IPv%c visitor and the IPv%c fallback %s",
		         a->ss_family == AF_INET ? '4' : '6',
		         c->backend->ss.ss_family == AF_INET ? '4' : '6', c->backend->text);
		return -1;
	}
	step = "setsockopt(IP_TRANSPARENT)";
	if ((a->ss_family == AF_INET
	     ? setsockopt(c->bk.fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
	     : setsockopt(c->bk.fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))) < 0)
		goto fail;
	step = "setsockopt(IP_BIND_ADDRESS_NO_PORT)";
	if (setsockopt(c->bk.fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
		goto fail;
	step = "setsockopt(SO_MARK)";
	if (setsockopt(c->bk.fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		goto fail;
	step = "bind to the visitor's address";
	if (bind(c->bk.fd, (const struct sockaddr *)a, a->ss_family == AF_INET
	         ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0)
		goto fail;
	return 0;
fail:
	snprintf(why, whylen, "-transparent: %s for the fallback: %s", step, strerror(errno));
	return -1;
}

/* The address the visitor connected to, before the REDIRECT: SO_ORIGINAL_DST (IPv4, also on
 * the dual-stack listener) or IP6T_SO_ORIGINAL_DST; a connection made to the listener directly
 * has none (ENOENT), and its own local address is the answer then. */
static int conn_orig_dst(const struct conn *c, struct sockaddr_storage *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(&ss, 0, sizeof(ss));
	if (c->peer_ss.ss_family == AF_INET) {
		if (getsockopt(c->cl.fd, SOL_IP, SO_ORIGINAL_DST, &ss, &sl) == 0) {
			*out = ss;
			return 0;
		}
	} else if (getsockopt(c->cl.fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &sl) == 0) {
		*out = ss;
		return 0;
	}
	sl = sizeof(ss);
	if (getsockname(c->cl.fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	conn_unmap(&ss, out);
	return 0;
}

/* Put a PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text or v2 binary) in front of
 * the hello bytes held in up.buf: the visitor's address and port, and the address and port it
 * connected to. Returns -1 with a reason in why. */
static int conn_proxy_header(struct conn *c, char *why, size_t whylen)
{
	uint8_t h[PROXY_HEADER_MAX];
	struct sockaddr_storage dst;
	const struct sockaddr_storage *src = &c->peer_ss;
	struct relay_flow *d = &c->relay.up;
	size_t hl;

	if (conn_orig_dst(c, &dst) < 0) {
		snprintf(why, whylen, "-proxy-protocol: the original destination: %s",
		         strerror(errno));
		return -1;
	}
	if (dst.ss_family != src->ss_family) {
		snprintf(why, whylen, "-proxy-protocol: visitor and destination of two families");
		return -1;
	}
	hl = proxy_header(c->set->cfg->proxy_protocol, src, &dst, h, sizeof(h));
	if (hl == 0) {
		snprintf(why, whylen, "-proxy-protocol: the header does not fit");
		return -1;
	}
	/* The hello bytes (d->off is 0 before the relay) move up by the header's length. */
	if (d->cap - d->len < hl) {
		uint8_t *nb = realloc(d->buf, d->len + hl);

		if (nb == NULL) {
			snprintf(why, whylen, "-proxy-protocol: out of memory");
			return -1;
		}
		d->buf = nb;
		d->cap = d->len + hl;
	}
	if (d->len > 0)
		memmove(d->buf + hl, d->buf, d->len);
	memcpy(d->buf, h, hl);
	d->len += hl;
	return 0;
}

/* Right after connect(): on loopback the handshake is usually over already, and the hello can go
 * now instead of after a wake-up for EPOLLOUT. A send on a socket still connecting answers
 * EAGAIN (EPOLLOUT brings the rest, as without this); a refused one, the connect's error. */
static bool conn_send_early(struct conn *c, uint64_t now_ms)
{
	struct relay_flow *d = &c->relay.up;
	char why[160];

	if (d->off == d->len)
		return true; /* no byte came before the hello timeout: EPOLLOUT says when */
	if (relay_flow_send(d, c->bk.fd) < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return true;
		snprintf(why, sizeof(why), "backend %s: %s", c->backend->text, strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	c->bk.wr = true;
	c->state = ST_RELAY;
	timer_stop(c);
	return true;
}

/* The hello phase is over: pick the backend and start connecting. The bytes read so far
 * stay in up.buf as the first bytes of the upstream direction, forwarded unchanged. Returns
 * false when the connection ended. */
static bool conn_route(struct conn *c, uint64_t now_ms)
{
	struct epoll_event ev = { .events = RELAY_EVENTS };
	const struct endpoint *b;
	char why[160];
	int one = 1;

	const struct config *cfg = c->set->cfg;

	free(c->hp);
	c->hp = NULL;
	b = c->backend = c->acme ? &cfg->alpn
	               : c->peer6 && cfg->has_fallback6 ? &cfg->fallback6 : &cfg->fallback;
	if (!c->acme && cfg->proxy_protocol != PP_NONE && conn_proxy_header(c, why,
	    sizeof(why)) < 0) {
		conn_abort(c, why, now_ms);
		return false;
	}
	c->bk.fd = socket(b->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* Its descriptor was reserved at accept, but the limit is the kernel's: pooled pipes are
	 * a cache, give them up before the client. */
	if (c->bk.fd < 0 && (errno == EMFILE || errno == ENFILE) && conn_pool_trim(c->set) > 0)
		c->bk.fd = socket(b->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->bk.fd < 0) {
		snprintf(why, sizeof(why), "socket for backend: %s", strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	(void)setsockopt(c->bk.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!c->acme && cfg->transparent && conn_bind_visitor(c, why, sizeof(why)) < 0) {
		conn_abort(c, why, now_ms);
		return false;
	}
	c->state = ST_CONNECT;
	timer_start(c, TIMER_CONNECT, now_ms + CONN_CONNECT_TIMEOUT_MS);
	if (connect(c->bk.fd, (const struct sockaddr *)&b->ss, b->len) < 0 &&
	    errno != EINPROGRESS) {
		snprintf(why, sizeof(why), "backend %s: %s", b->text, strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	if (!conn_send_early(c, now_ms))
		return false;
	/* Registered only now: an unconnected TCP socket reports EPOLLHUP, which would look like
	 * the end of the connect. Registering reports what is already there (a reply, the end
	 * of a connect still in progress: EPOLLOUT, asked for only then). */
	if (c->state == ST_CONNECT) {
		ev.events |= EPOLLOUT;
		c->bk.out = true;
	}
	ev.data.u64 = c->bk.tag = side_tag(c, &c->bk);
	if (epoll_ctl(c->set->epfd, EPOLL_CTL_ADD, c->bk.fd, &ev) < 0) {
		snprintf(why, sizeof(why), "epoll_ctl(ADD, backend fd %d): %s", c->bk.fd,
		         strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	return true;
}

#ifdef ENABLE_TEST_HOOKS
/* Test builds only (tests/acme-alpn-proxy-hooks, never installed): with
 * ACME_ALPN_PROXY_TEST_HOOK=syscall, a connection that starts with "TEST-SYSCALL NAME\n" makes
 * this worker attempt a system call its sandbox forbids, to prove that the sandbox kills it. */
static void conn_test_hook(const struct conn *c, const uint8_t *buf, size_t len)
{
	static const char prefix[] = "TEST-SYSCALL ";
	char *argv[] = { (char *)"/bin/true", NULL };

	if (c->set->cfg->test_hook == NULL || strcmp(c->set->cfg->test_hook, "syscall") != 0 ||
	    len < sizeof(prefix) || memcmp(buf, prefix, sizeof(prefix) - 1) != 0)
		return;
	buf += sizeof(prefix) - 1;
	len -= sizeof(prefix) - 1;
	if (len >= 5 && memcmp(buf, "open\n", 5) == 0)
		(void)!open("/etc/passwd", O_RDONLY);
	else if (len >= 7 && memcmp(buf, "execve\n", 7) == 0)
		(void)!execve(argv[0], argv, argv + 1);
	else if (len >= 5 && memcmp(buf, "unix\n", 5) == 0)
		(void)!socket(AF_UNIX, SOCK_STREAM, 0);
}
#endif

/* Read while the client is readable, until the hello is whole (or cannot be). Returns false
 * when the connection ended. */
static bool conn_hello_read(struct conn *c, uint64_t now_ms)
{
	struct hello_info info;
	enum hello_result r;
	struct relay_flow *d = &c->relay.up;
	ssize_t n;

	while (c->cl.rd) {
		if (d->len == d->cap) {
			size_t ncap = d->cap == 0 ? 4096 : d->cap * 2;
			uint8_t *nb;

			if (ncap > CONN_HELLO_BUF_MAX) {
				/* The parser would have said TOO_LARGE for a real hello this big. */
				c->reason = "too-large";
				return conn_route(c, now_ms);
			}
			nb = realloc(d->buf, ncap);
			if (nb == NULL) {
				conn_abort(c, "out of memory reading the hello", now_ms);
				return false;
			}
			d->buf = nb;
			d->cap = ncap;
		}
		n = recv(c->cl.fd, d->buf + d->len, d->cap - d->len, 0);
		if (n < 0) {
			if (errno == EAGAIN)
				c->cl.rd = false;
			else if (errno != EINTR) {
				const char *why;

				sock_error(c, &c->cl, &why);
				conn_abort(c, why, now_ms);
				return false;
			}
			continue;
		}
		if (n == 0) {
			if (d->len == 0) {
				/* a port check, or a client that gave up: normal */
				conn_finish(c, "client closed before sending anything", now_ms);
				return false;
			}
			/* FIN in the middle of a hello: pass what came, and the FIN, to the web
			 * server. */
			d->eof = true;
			c->reason = "eof";
			return conn_route(c, now_ms);
		}
		/* short: the socket is empty (relay.c says why) */
		if ((size_t)n < d->cap - d->len && !c->cl.hup)
			c->cl.rd = false;
		d->len += (size_t)n;
#ifdef ENABLE_TEST_HOOKS
		conn_test_hook(c, d->buf, d->len);
#endif
		r = hello_parse(c->hp, d->buf, d->len, &info);
		if (r == HELLO_NEED_MORE)
			continue;
		if (r == HELLO_DONE) {
			c->acme = info.acme;
			memcpy(c->sni, info.sni, sizeof(c->sni));
			memcpy(c->alpn, info.alpn, sizeof(c->alpn));
		} else {
			c->reason = hello_result_str(r);
		}
		return conn_route(c, now_ms);
	}
	return true;
}

/* The backend socket reported something while connecting. Returns false when the connection
 * ended. */
static bool conn_connected(struct conn *c, uint64_t now_ms)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	char why[160];

	/* Writable with no error or hangup reported: connected, no need to ask. */
	if ((!c->bk.wr || c->bk.hup) &&
	    getsockopt(c->bk.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr == EINPROGRESS || soerr == EALREADY) {
		c->bk.rd = c->bk.wr = false;
		return true;
	}
	if (soerr != 0) {
		snprintf(why, sizeof(why), "backend %s: %s", c->backend->text, strerror(soerr));
		conn_abort(c, why, now_ms);
		return false;
	}
	c->state = ST_RELAY;
	timer_stop(c);
	return true;
}

static void conn_relay(struct conn *c, uint64_t now_ms)
{
	struct relay_error err;
	bool more = false;

	if (relay_pump(&c->set->pool, &c->relay, &c->cl, &c->bk, &more, &err) < 0) {
		c->err_side = err.end;
		c->err_no = err.err_no;
		conn_abort(c, err.why, now_ms);
		return;
	}
	if (relay_done(&c->relay))
		conn_finish(c, NULL, now_ms);
	else if (more && link_empty(&c->ready))
		link_add_tail(&c->set->ready, &c->ready);
}

bool conn_has_turns(const struct conn_set *s)
{
	return !link_empty(&s->ready);
}

void conn_turns(struct conn_set *s, uint64_t now_ms)
{
	struct link todo;

	/* Only those waiting now: a connection whose turn ends with more to do again waits for
	 * the next batch of events. */
	if (link_empty(&s->ready))
		return;
	todo = s->ready;
	todo.next->prev = &todo;
	todo.prev->next = &todo;
	link_init(&s->ready);
	while (!link_empty(&todo)) {
		struct conn *c = CONN_OF(todo.next, ready);

		link_del(&c->ready);
		if (c->state == ST_RELAY)
			conn_relay(c, now_ms);
	}
}

/* ---- events and deadlines ------------------------------------------------------------------- */

/* Whatever the readiness flags allow: read the hello, see the connect through, relay. */
static void conn_step(struct conn *c, uint64_t now_ms)
{
	if (c->state == ST_HELLO) {
		if (!conn_hello_read(c, now_ms))
			return;
	}
	if (c->state == ST_CONNECT) {
		if (!(c->bk.wr || c->bk.rd) || !conn_connected(c, now_ms))
			return;
	}
	if (c->state == ST_RELAY)
		conn_relay(c, now_ms);
}

void conn_event(struct conn_set *s, uint64_t tag, uint32_t events, uint64_t now_ms)
{
	struct conn *c = evtag_conn_ptr(tag);
	struct relay_end *sd = evtag_conn_backend(tag) ? &c->bk : &c->cl;

	(void)s;
	if (c->state == ST_DEAD)
		return; /* ended earlier in this batch of events */
	relay_end_event(sd, events);
	conn_step(c, now_ms);
}

int conn_expire(struct conn_set *s, uint64_t now_ms)
{
	uint64_t next = 0;
	char why[160];

	/* The hello list first: a hello that expires joins the connect list, whose head is
	 * looked at after it. */
	for (int i = 0; i < TIMER_LISTS; i++) {
		struct link *head = &s->timers[i];

		while (!link_empty(head)) {
			struct conn *c = CONN_OF(head->next, timer);

			if (c->deadline > now_ms) {
				if (next == 0 || c->deadline < next)
					next = c->deadline;
				break;
			}
			if (c->state == ST_HELLO) {
				if (log_is_verbose())
					log_debug("conn %s: no whole ClientHello after %u ms, %zu "
					          "bytes: fallback", c->peer,
					          s->cfg->hello_timeout_ms, c->relay.up.len);
				c->reason = "timeout";
				/* moves it to the connect list, or ends it */
				(void)conn_route(c, now_ms);
			} else {
				snprintf(why, sizeof(why), "backend %s: no answer within %u ms",
				         c->backend->text, CONN_CONNECT_TIMEOUT_MS);
				conn_abort(c, why, now_ms);
			}
		}
	}
	if (next == 0)
		return -1;
	return next - now_ms > 60000 ? 60000 : (int)(next - now_ms);
}
