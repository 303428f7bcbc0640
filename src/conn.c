#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clienthello.h"
#include "conn.h"
#include "log.h"

enum conn_state { ST_HELLO, ST_CONNECT, ST_RELAY };

/* One direction of the relay: bytes read from one socket wait here until written to the other.
 * A direction reads only when its buffer is empty: that is the back-pressure. */
struct dir {
	uint8_t *buf;
	size_t cap, off, len; /* pending bytes are buf[off..len) */
	bool eof;             /* the source sent FIN */
	bool shut;            /* FIN passed on: shutdown(SHUT_WR) on the destination */
	uint64_t bytes;
};

struct conn {
	const struct config *cfg;
	int cfd, bfd;
	enum conn_state state;
	uint64_t t_accept, deadline;
	char peer[INET6_ADDRSTRLEN + 8];
	struct hello_parser *hp; /* only while reading the hello */
	bool acme;
	const char *reason;      /* why fallback: NULL when the hello said so */
	char sni[HELLO_SNI_MAX + 1];
	char alpn[HELLO_ALPN_TEXT_MAX];
	const struct endpoint *backend;
	struct dir up, down;     /* up: client -> backend; down: backend -> client */
};

uint64_t conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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

struct conn *conn_new(const struct config *cfg, int cfd, const struct sockaddr_storage *peer,
                      uint64_t now_ms)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (c != NULL)
		c->hp = malloc(sizeof(*c->hp));
	if (c == NULL || c->hp == NULL) {
		free(c);
		close(cfd);
		log_err("out of memory for a new connection: closed it");
		return NULL;
	}
	hello_init(c->hp, 0);
	c->cfg = cfg;
	c->cfd = cfd;
	c->bfd = -1;
	c->state = ST_HELLO;
	c->t_accept = now_ms;
	/* Absolute from accept: a client that drips bytes does not push it back. */
	c->deadline = now_ms + cfg->hello_timeout_ms;
	format_peer(peer, c->peer, sizeof(c->peer));
	(void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
}

static void conn_free(struct conn *c)
{
	if (c->cfd >= 0)
		close(c->cfd);
	if (c->bfd >= 0)
		close(c->bfd);
	free(c->hp);
	free(c->up.buf);
	free(c->down.buf);
	free(c);
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
	        (unsigned long long)c->up.bytes, (unsigned long long)c->down.bytes,
	        (unsigned long long)(now_ms - c->t_accept), what ? ": " : "", what ? what : "");
}

void conn_abort(struct conn *c, const char *why, uint64_t now_ms)
{
	conn_log(c, LOG_WARNING, why, now_ms);
	conn_free(c);
}

static void conn_finish(struct conn *c, uint64_t now_ms)
{
	conn_log(c, LOG_INFO, NULL, now_ms);
	conn_free(c);
}

/* The hello phase is over: pick the backend and start connecting. The bytes read so far
 * become the first bytes of the upstream direction, forwarded unchanged. Returns false when
 * the connection ended. */
static bool conn_route(struct conn *c, uint64_t now_ms)
{
	char why[160];
	int one = 1;

	free(c->hp);
	c->hp = NULL;
	c->backend = c->acme ? &c->cfg->alpn : &c->cfg->fallback;
	c->bfd = socket(c->backend->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->bfd < 0) {
		snprintf(why, sizeof(why), "socket for backend: %s", strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	(void)setsockopt(c->bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->state = ST_CONNECT;
	c->deadline = now_ms + CONN_CONNECT_TIMEOUT_MS;
	if (connect(c->bfd, (const struct sockaddr *)&c->backend->ss, c->backend->len) < 0 &&
	    errno != EINPROGRESS) {
		snprintf(why, sizeof(why), "backend %s: %s", c->backend->text, strerror(errno));
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

	if (c->cfg->test_hook == NULL || strcmp(c->cfg->test_hook, "syscall") != 0 ||
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

static bool conn_hello_read(struct conn *c, uint64_t now_ms)
{
	struct hello_info info;
	enum hello_result r;
	struct dir *d = &c->up;
	ssize_t n;

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
	n = recv(c->cfd, d->buf + d->len, d->cap - d->len, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return true;
		conn_abort(c, strerror(errno), now_ms);
		return false;
	}
	if (n == 0) {
		if (d->len == 0) {
			conn_abort(c, "client closed before sending anything", now_ms);
			return false;
		}
		/* FIN in the middle of a hello: pass what came, and the FIN, to the web server. */
		d->eof = true;
		c->reason = "eof";
		return conn_route(c, now_ms);
	}
	d->len += (size_t)n;
#ifdef ENABLE_TEST_HOOKS
	conn_test_hook(c, d->buf, d->len);
#endif
	r = hello_parse(c->hp, d->buf, d->len, &info);
	switch (r) {
	case HELLO_NEED_MORE:
		return true;
	case HELLO_DONE:
		c->acme = info.acme;
		memcpy(c->sni, info.sni, sizeof(c->sni));
		memcpy(c->alpn, info.alpn, sizeof(c->alpn));
		break;
	default:
		c->reason = hello_result_str(r);
		break;
	}
	return conn_route(c, now_ms);
}

static bool conn_connected(struct conn *c, uint64_t now_ms)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	char why[160];
	uint8_t *nb;

	if (getsockopt(c->bfd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr == EINPROGRESS || soerr == EALREADY)
		return true;
	if (soerr != 0) {
		snprintf(why, sizeof(why), "backend %s: %s", c->backend->text, strerror(soerr));
		conn_abort(c, why, now_ms);
		return false;
	}
	c->state = ST_RELAY;
	c->deadline = 0;
	/* The hello buffer carries on as the upstream buffer; both directions get a full one. */
	if (c->up.cap < CONN_RELAY_BUF) {
		nb = realloc(c->up.buf, CONN_RELAY_BUF);
		if (nb == NULL)
			goto oom;
		c->up.buf = nb;
		c->up.cap = CONN_RELAY_BUF;
	}
	c->down.buf = malloc(CONN_RELAY_BUF);
	if (c->down.buf == NULL)
		goto oom;
	c->down.cap = CONN_RELAY_BUF;
	return true;
oom:
	conn_abort(c, "out of memory for the relay buffers", now_ms);
	return false;
}

/* Send what the direction holds to dst, as much as it takes now. Returns -1 on an error (the
 * message in *why), else 0. */
static int dir_send(struct dir *d, int dst, const char **why)
{
	ssize_t n = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);

	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		*why = strerror(errno);
		return -1;
	}
	if (n > 0) {
		d->off += (size_t)n;
		d->bytes += (uint64_t)n;
		if (d->off == d->len)
			d->off = d->len = 0;
	}
	return 0;
}

/* Move bytes for one direction, as far as the sockets allow without blocking.
 * Returns -1 on an error (the message in *why), else 0. */
static int dir_pump(struct dir *d, int src, int dst, bool can_read, bool can_write,
                    const char **why)
{
	ssize_t n;

	if (can_write && d->off < d->len && dir_send(d, dst, why) < 0)
		return -1;
	if (can_read && !d->eof && d->len == 0) {
		n = recv(src, d->buf, d->cap, 0);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			*why = strerror(errno);
			return -1;
		}
		if (n == 0)
			d->eof = true;
		/* Pass it on at once: saves a poll round trip in the common case. */
		if (n > 0) {
			d->len = (size_t)n;
			if (dir_send(d, dst, why) < 0)
				return -1;
		}
	}
	/* FIN from the source, everything before it delivered: pass the FIN on (half-close). */
	if (d->eof && !d->shut && d->len == 0) {
		if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN) {
			*why = strerror(errno);
			return -1;
		}
		d->shut = true;
	}
	return 0;
}

int conn_poll_prepare(struct conn *c, struct pollfd *pfd)
{
	short ce = 0, be = 0;

	switch (c->state) {
	case ST_HELLO:
		pfd[0] = (struct pollfd){ .fd = c->cfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = -1 };
		return 2;
	case ST_CONNECT:
		pfd[0] = (struct pollfd){ .fd = c->bfd, .events = POLLOUT };
		pfd[1] = (struct pollfd){ .fd = -1 };
		return 2;
	case ST_RELAY:
		break;
	}
	if (!c->up.eof && c->up.len == 0)
		ce |= POLLIN;
	if (c->up.len > 0)
		be |= POLLOUT;
	if (!c->down.eof && c->down.len == 0)
		be |= POLLIN;
	if (c->down.len > 0)
		ce |= POLLOUT;
	/* A socket with nothing to do is left out (fd -1): poll would report its POLLHUP over
	 * and over. Its error, if any, shows at the next recv() or send(). */
	pfd[0] = (struct pollfd){ .fd = ce ? c->cfd : -1, .events = ce };
	pfd[1] = (struct pollfd){ .fd = be ? c->bfd : -1, .events = be };
	return 2;
}

bool conn_poll_handle(struct conn *c, const struct pollfd *pfd, int n, uint64_t now_ms)
{
	const short bad = POLLERR | POLLHUP | POLLNVAL;
	const char *why = NULL;
	bool cr, cw, br, bw;

	(void)n;
	switch (c->state) {
	case ST_HELLO:
		if (pfd[0].revents & (POLLIN | bad))
			return conn_hello_read(c, now_ms);
		return true;
	case ST_CONNECT:
		if (pfd[0].revents & (POLLOUT | bad)) {
			if (!conn_connected(c, now_ms))
				return false;
			/* Connected: forward the hello bytes at once. */
			if (dir_pump(&c->up, c->cfd, c->bfd, false, true, &why) < 0)
				goto fail;
		}
		return true;
	case ST_RELAY:
		break;
	}
	/* POLLHUP/POLLERR: let recv()/send() tell what happened. */
	cr = (pfd[0].revents & (POLLIN | bad)) != 0;
	cw = (pfd[0].revents & (POLLOUT | bad)) != 0;
	br = (pfd[1].revents & (POLLIN | bad)) != 0;
	bw = (pfd[1].revents & (POLLOUT | bad)) != 0;
	if (dir_pump(&c->up, c->cfd, c->bfd, cr, bw, &why) < 0 ||
	    dir_pump(&c->down, c->bfd, c->cfd, br, cw, &why) < 0)
		goto fail;
	if (c->up.shut && c->down.shut) {
		conn_finish(c, now_ms);
		return false;
	}
	return true;
fail:
	conn_abort(c, why, now_ms);
	return false;
}

uint64_t conn_deadline(const struct conn *c)
{
	return c->deadline;
}

bool conn_expire(struct conn *c, uint64_t now_ms)
{
	char why[160];

	if (c->deadline == 0 || now_ms < c->deadline)
		return true;
	if (c->state == ST_HELLO) {
		if (log_is_verbose())
			log_debug("conn %s: no whole ClientHello after %u ms, %zu bytes: fallback",
			          c->peer, c->cfg->hello_timeout_ms, c->up.len);
		c->reason = "timeout";
		return conn_route(c, now_ms);
	}
	if (c->state == ST_CONNECT) {
		snprintf(why, sizeof(why), "backend %s: no answer within %u ms", c->backend->text,
		         CONN_CONNECT_TIMEOUT_MS);
		conn_abort(c, why, now_ms);
		return false;
	}
	return true;
}
