/* Connections of one worker, driven by its epoll set.
 *
 * Every socket is registered once, edge-triggered, for everything it can report
 * (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET): the client at accept, the backend right after connect().
 * An event only sets the readiness flags of that side (struct side); the code then reads and
 * writes until the kernel answers EAGAIN, which clears the flag again. No epoll_ctl per event:
 * a socket leaves the set when it is closed (each one has a single descriptor).
 *
 * The relay moves bulk data with splice(2), socket -> pipe -> socket, so that it never enters
 * user space. A direction holds a pipe only while it has bytes in flight and gives it back to the
 * worker's pool when it is empty again: idle connections hold no pipes, and an idle relayed
 * connection costs only its struct conn in user space (the hello parser and the hello bytes are
 * freed once they are passed on).
 *
 * Small messages (requests and responses of a keep-alive connection) go through recv/send with a
 * buffer held only while they are pending, because a short recv proves the socket empty and saves
 * the EAGAIN call that edge-triggering otherwise needs: epoll queues a new event for whatever
 * arrives after the one being handled was reported, and tcp_recvmsg stops short of the asked
 * length only when the receive queue is empty. A FIN reported before the read (EPOLLRDHUP
 * without EPOLLERR) makes a short recv also the end: the FIN is queued after the last byte and
 * nothing follows it, so the recv that would return 0 is not made (HAProxy infers its read0 the
 * same way). After EPOLLERR a side reads on until recv says what happened. Splice proves nothing
 * by stopping short (it also stops when the pipe runs out of slots), so spliced bursts read until
 * EAGAIN. A direction switches to splice when a recv fills the whole buffer, and back when a
 * spliced burst moved less than a buffer.
 * A socket that splice refuses (EINVAL, ENOSYS) makes that connection stay with recv/send.
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
#include "log.h"
#include "route.h"

#define CONN_SPLICE_LEN 65536 /* asked of one splice into a pipe: the default pipe capacity */
/* A socket is registered for reading; EPOLLOUT is added the first time a write to it would
 * block (side_want_out), and stays. A writable socket registered with EPOLLOUT reports it at
 * once, an event with nothing to do: most connections never need one. */
#define CONN_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)
/* Bytes one direction passes on per turn. A bulk transfer between two fast peers would never
 * see EAGAIN: past this it waits for the end of the batch of events, and the other connections
 * of the worker get their turn first. */
#define CONN_TURN_BYTES (256u * 1024u)

enum conn_state { ST_HELLO, ST_CONNECT, ST_RELAY, ST_DEAD };
enum { TIMER_HELLO, TIMER_CONNECT, TIMER_LISTS };

/* One socket and what epoll last said about it. rd/wr: the kernel reported it readable or
 * writable and no call has answered EAGAIN since; with edge-triggered events nobody repeats it. */
struct side {
	int fd;
	bool rd, wr;
	bool hup;  /* EPOLLRDHUP, EPOLLHUP or EPOLLERR seen: a short recv is no proof of empty */
	bool fin;  /* EPOLLRDHUP seen: the peer's FIN is queued */
	bool err;  /* EPOLLERR seen: read on, the error is for recv to say */
	bool out;  /* registered for EPOLLOUT too */
};

/* One direction of the relay. Pending bytes are either in user space (buf[off..len): the hello,
 * or the recv/send fallback) or in the pipe (inpipe bytes); user space goes first, it is older.
 * A direction reads only when nothing is pending: that is the back-pressure. */
struct dir {
	uint8_t *buf;         /* NULL unless bytes are pending in it */
	size_t cap, off, len;
	int pipe[2];          /* read end, write end; -1 when the direction holds no pipe */
	size_t inpipe;
	bool pipe_bad;        /* a splice on it failed: close it, never pool it */
	bool bulk;            /* reads splice: the last recv filled the buffer */
	size_t burst;         /* bytes spliced in since the last EAGAIN */
	bool eof;             /* the source sent FIN */
	bool shut;            /* FIN passed on: shutdown(SHUT_WR) on the destination */
	uint64_t bytes;
};

struct conn {
	struct conn_set *set;
	struct link all;        /* in set->all while open, in set->dead once ended */
	struct link timer;      /* in one of set->timers while a deadline runs */
	struct link ready;      /* in set->ready: its turn ended with more to do */
	enum conn_state state;
	struct side cl, bk;     /* client, backend */
	bool nosplice;          /* splice refused one of its sockets: recv/send */
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
	struct dir up, down;     /* up: client -> backend; down: backend -> client */
	const struct side *err_side; /* the socket whose error ended the relay, and the error */
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
	size_t count;
	/* Descriptor accounting: every connection counts two (its client socket, and its backend
	 * socket, made only after the hello but reserved from the accept), every relay pipe two,
	 * held by a direction (npipes) or free in the pool (npool). fd_max: what they may add up
	 * to (0: no limit). */
	size_t fd_max;
	size_t npipes;
	int pool[CONN_PIPE_POOL][2];
	size_t npool;
	/* Free relay buffers (CONN_RELAY_BUF bytes): a keep-alive connection takes one for each
	 * message and gives it back at once, which must not cost a malloc and a free each time. */
	uint8_t *bufs[CONN_BUF_POOL];
	size_t nbufs;
};

#define CONN_OF(l, field) LINK_ENTRY(l, struct conn, field)

struct conn_set *conn_set_new(const struct config *cfg, int epfd)
{
	struct conn_set *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->cfg = cfg;
	s->epfd = epfd;
	link_init(&s->all);
	link_init(&s->dead);
	for (int i = 0; i < TIMER_LISTS; i++)
		link_init(&s->timers[i]);
	link_init(&s->ready);
	return s;
}

size_t conn_count(const struct conn_set *s)
{
	return s->count;
}

void conn_set_limit(struct conn_set *s, size_t fd_max)
{
	s->fd_max = fd_max;
}

static size_t set_fds(const struct conn_set *s)
{
	return 2 * (s->count + s->npipes + s->npool);
}

/* Whether n more descriptors fit in the limit. */
static bool set_fits(const struct conn_set *s, size_t n)
{
	return s->fd_max == 0 || set_fds(s) + n <= s->fd_max;
}

static void pool_close_one(struct conn_set *s)
{
	s->npool--;
	close(s->pool[s->npool][0]);
	close(s->pool[s->npool][1]);
}

bool conn_room(struct conn_set *s)
{
	/* Free pipes are only a cache: a new client comes first. */
	while (!set_fits(s, 2) && s->npool > 0)
		pool_close_one(s);
	return set_fits(s, 2);
}

/* ---- the pipe pool -------------------------------------------------------------------------- */

/* A pipe for the direction: from the pool, or a new one if it leaves the descriptors reserved
 * for the connections' sockets alone. Returns -1 when there is none (the direction relays
 * through user space instead). */
static int pool_get(struct conn_set *s, struct dir *d)
{
	if (s->npool > 0) {
		s->npool--;
		d->pipe[0] = s->pool[s->npool][0];
		d->pipe[1] = s->pool[s->npool][1];
	} else if (!set_fits(s, 2)) {
		errno = EMFILE;
		return -1;
	} else if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		d->pipe[0] = d->pipe[1] = -1;
		return -1;
	}
	s->npipes++;
	return 0;
}

size_t conn_pool_trim(struct conn_set *s)
{
	size_t n = s->npool;

	while (s->npool > 0)
		pool_close_one(s);
	return n;
}

/* A relay buffer for the direction, from the pool if it has one. Returns -1 when out of
 * memory. */
static int buf_get(struct conn_set *s, struct dir *d)
{
	if (s->nbufs > 0)
		d->buf = s->bufs[--s->nbufs];
	else if ((d->buf = malloc(CONN_RELAY_BUF)) == NULL)
		return -1;
	d->cap = CONN_RELAY_BUF;
	return 0;
}

/* The direction gives its buffer back: a relay buffer to the pool while it has room; the
 * hello's buffer (another size) is freed. */
static void buf_put(struct conn_set *s, struct dir *d)
{
	if (d->buf != NULL && d->cap == CONN_RELAY_BUF && s->nbufs < CONN_BUF_POOL)
		s->bufs[s->nbufs++] = d->buf;
	else
		free(d->buf);
	d->buf = NULL;
}

/* The direction gives its pipe back: to the pool when it is empty and sound, else closed. */
static void pool_put(struct conn_set *s, struct dir *d)
{
	if (d->pipe[0] < 0)
		return;
	s->npipes--;
	if (d->inpipe == 0 && !d->pipe_bad && s->npool < CONN_PIPE_POOL) {
		s->pool[s->npool][0] = d->pipe[0];
		s->pool[s->npool][1] = d->pipe[1];
		s->npool++;
	} else {
		close(d->pipe[0]);
		close(d->pipe[1]);
	}
	d->pipe[0] = d->pipe[1] = -1;
	d->inpipe = 0;
	d->pipe_bad = false;
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

static void dir_release(struct conn_set *s, struct dir *d)
{
	pool_put(s, d);
	buf_put(s, d);
	d->cap = d->off = d->len = 0;
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
	dir_release(s, &c->up);
	dir_release(s, &c->down);
	free(c->hp);
	c->hp = NULL;
	timer_stop(c);
	link_del(&c->ready);
	link_del(&c->all);
	link_add_tail(&s->dead, &c->all);
	c->state = ST_DEAD;
	s->count--;
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
	        (unsigned long long)c->up.bytes, (unsigned long long)c->down.bytes,
	        (unsigned long long)(now_ms - c->t_accept), what ? ": " : "", what ? what : "");
}

/* A socket of the connection failed with errno: remember which one, for conn_abort. */
static int sock_error(struct conn *c, const struct side *sd, const char **why)
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
static uint64_t side_tag(const struct conn *c, const struct side *sd)
{
	return evtag_conn(c, sd == &c->bk);
}

/* A write to sd would block: from now on epoll reports when it drains. Returns -1 (the message
 * in *why) when epoll_ctl fails. */
static int side_want_out(struct conn *c, struct side *sd, const char **why)
{
	struct epoll_event ev = { .events = CONN_EVENTS | EPOLLOUT, .data.u64 = side_tag(c, sd) };

	if (sd->out)
		return 0;
	if (epoll_ctl(c->set->epfd, EPOLL_CTL_MOD, sd->fd, &ev) < 0) {
		*why = "epoll_ctl(MOD) to wait for a socket to drain failed";
		return -1;
	}
	sd->out = true;
	return 0;
}

static void dir_init(struct dir *d)
{
	d->pipe[0] = d->pipe[1] = -1;
}

int conn_accept(struct conn_set *s, int cfd, const struct sockaddr_storage *peer,
                uint64_t now_ms)
{
	struct epoll_event ev = { .events = CONN_EVENTS };
	struct conn *c = calloc(1, sizeof(*c));

	if (c != NULL)
		c->hp = malloc(sizeof(*c->hp));
	if (c == NULL || c->hp == NULL) {
		if (c != NULL)
			free(c->hp);
		free(c);
		close(cfd);
		log_err("out of memory for a new connection: closed it");
		return -1;
	}
	hello_init(c->hp, 0);
	c->set = s;
	c->cl.fd = cfd;
	c->bk.fd = -1;
	dir_init(&c->up);
	dir_init(&c->down);
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
		c->nosplice = true;
#endif
	/* TCP_NODELAY comes from the listener (listener.c). */
	ev.data.u64 = side_tag(c, &c->cl);
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, cfd, &ev) < 0) {
		log_err("conn %s: epoll_ctl(ADD, client fd %d): %s: closed it", c->peer, cfd,
		        strerror(errno));
		close(cfd);
		free(c->hp);
		free(c);
		return -1;
	}
	link_init(&c->all);
	link_init(&c->timer);
	link_init(&c->ready);
	link_add_tail(&s->all, &c->all);
	s->count++;
	/* Absolute from accept: a client that drips bytes does not push it back. */
	timer_start(c, TIMER_HELLO, now_ms + s->cfg->hello_timeout_ms);
	/* Read at once, without waiting for an event: the listener defers accepting until the
	 * first bytes came (listener.h), so the hello is usually all there. */
	c->cl.rd = c->cl.wr = true;
	conn_step(c, now_ms);
	return 0;
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
	struct dir *d = &c->up;
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
	struct dir *d = &c->up;
	char why[160];
	ssize_t n;

	if (d->off == d->len)
		return true; /* no byte came before the hello timeout: EPOLLOUT says when */
	n = send(c->bk.fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return true;
		snprintf(why, sizeof(why), "backend %s: %s", c->backend->text, strerror(errno));
		conn_abort(c, why, now_ms);
		return false;
	}
	d->off += (size_t)n;
	d->bytes += (uint64_t)n;
	if (d->off == d->len)
		d->off = d->len = 0;
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
	struct epoll_event ev = { .events = CONN_EVENTS };
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
	ev.data.u64 = side_tag(c, &c->bk);
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
	struct dir *d = &c->up;
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
		/* short: the socket is empty (see the top of the file) */
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

/* ---- the relay ------------------------------------------------------------------------------ */

static bool dir_pending(const struct dir *d)
{
	return d->off < d->len || d->inpipe > 0;
}

static bool is_splice_refusal(int e)
{
	return e == EINVAL || e == ENOSYS;
}

/* Pass pending bytes to dst until they are gone or dst would block. Returns -1 on an error
 * (the message in *why), else 0. */
static int dir_write(struct conn *c, struct dir *d, struct side *dst, const char **why)
{
	ssize_t n;

	if (d->off == d->len && d->inpipe > 0 && c->nosplice) {
		/* Bytes spliced into the pipe before splice refused a socket: they come out through
		 * user space like the rest. */
		if (d->buf == NULL && buf_get(c->set, d) < 0) {
			*why = "out of memory for a relay buffer";
			return -1;
		}
		n = read(d->pipe[0], d->buf, d->inpipe < d->cap ? d->inpipe : d->cap);
		if (n <= 0) {
			d->pipe_bad = true;
			*why = n < 0 ? strerror(errno) : "relay pipe empty";
			return -1;
		}
		d->off = 0;
		d->len = (size_t)n;
		d->inpipe -= (size_t)n;
	}
	if (d->off < d->len) {
		/* user space first: the hello, or the fallback buffer */
		n = send(dst->fd, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
		if (n > 0) {
			d->off += (size_t)n;
			d->bytes += (uint64_t)n;
			if (d->off == d->len)
				d->off = d->len = 0;
			return 0;
		}
	} else {
		n = splice(d->pipe[0], NULL, dst->fd, NULL, d->inpipe,
		           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			d->inpipe -= (size_t)n;
			d->bytes += (uint64_t)n;
			return 0;
		}
		if (n == 0) {
			/* cannot happen while inpipe > 0; without this the pump would spin */
			d->pipe_bad = true;
			*why = "splice from the relay pipe moved nothing";
			return -1;
		}
		if (is_splice_refusal(errno)) {
			c->nosplice = true;
			return 0;
		}
	}
	if (errno == EAGAIN) {
		dst->wr = false;
		return side_want_out(c, dst, why);
	}
	if (errno != EINTR) {
		if (d->inpipe > 0)
			d->pipe_bad = true;
		return sock_error(c, dst, why);
	}
	return 0;
}

/* Read from src: one splice into the pipe (taken from the pool), or one recv into the buffer.
 * Only called with nothing pending. Returns -1 on an error (the message in *why), else 0. */
static int dir_read(struct conn *c, struct dir *d, struct side *src, const char **why)
{
	ssize_t n;

	/* Out of descriptors for a pipe (EMFILE): this read goes through user space. */
	if (d->bulk && !c->nosplice && (d->pipe[0] >= 0 || pool_get(c->set, d) == 0)) {
		n = splice(src->fd, NULL, d->pipe[1], NULL, CONN_SPLICE_LEN,
		           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			d->inpipe += (size_t)n;
			d->burst += (size_t)n;
			return 0;
		}
		if (n == 0) {
			d->eof = true;
			return 0;
		}
		if (errno == EAGAIN) {
			/* a small burst: the next one starts with recv */
			if (d->burst < CONN_RELAY_BUF)
				d->bulk = false;
			d->burst = 0;
		}
		if (!is_splice_refusal(errno))
			goto error;
		c->nosplice = true;
	}
	if (d->buf == NULL && buf_get(c->set, d) < 0) {
		*why = "out of memory for a relay buffer";
		return -1;
	}
	n = recv(src->fd, d->buf, d->cap, 0);
	if (n > 0) {
		d->off = 0;
		d->len = (size_t)n;
		if ((size_t)n == d->cap)
			d->bulk = true; /* more is likely waiting: splice it */
		else if (src->fin && !src->err)
			d->eof = true;   /* short after the FIN came: the FIN is all that is left */
		else if (!src->hup)
			src->rd = false; /* short: the socket is empty */
		return 0;
	}
	if (n == 0) {
		d->eof = true;
		return 0;
	}
error:
	if (errno == EAGAIN)
		src->rd = false;
	else if (errno != EINTR)
		return sock_error(c, src, why);
	return 0;
}

/* Move bytes for one direction until the source has nothing more (EAGAIN, EOF), the
 * destination would block, or its turn is over (*more set). Returns -1 on an error (the message
 * in *why), else 0. */
static int dir_pump(struct conn *c, struct dir *d, struct side *src, struct side *dst,
                    bool *more, const char **why)
{
	uint64_t start = d->bytes;

	for (;;) {
		if (dir_pending(d)) {
			if (!dst->wr)
				return 0; /* the next EPOLLOUT edge brings us back */
			if (dir_write(c, d, dst, why) < 0)
				return -1;
			continue;
		}
		/* Nothing in flight: no pipe, no buffer held while waiting. */
		if (d->pipe[0] >= 0 || d->buf != NULL)
			dir_release(c->set, d);
		if (d->eof) {
			/* FIN from the source, everything before it delivered: pass the FIN on. */
			if (!d->shut) {
				const struct dir *other = d == &c->up ? &c->down : &c->up;

				/* The other way ended first: the close that follows sends this FIN
				 * (every byte of that socket was read, so it is no reset). A
				 * destination that reported an error (a reset) takes no FIN. */
				if (!other->shut && !dst->err && shutdown(dst->fd, SHUT_WR) < 0 &&
				    errno != ENOTCONN)
					return sock_error(c, dst, why);
				d->shut = true;
			}
			return 0;
		}
		if (!src->rd)
			return 0;
		if (d->bytes - start >= CONN_TURN_BYTES) {
			*more = true;
			return 0;
		}
		if (dir_read(c, d, src, why) < 0)
			return -1;
	}
}

static void conn_relay(struct conn *c, uint64_t now_ms)
{
	const char *why = NULL;
	bool more = false;

	if (dir_pump(c, &c->up, &c->cl, &c->bk, &more, &why) < 0 ||
	    dir_pump(c, &c->down, &c->bk, &c->cl, &more, &why) < 0) {
		conn_abort(c, why, now_ms);
		return;
	}
	if (c->up.shut && c->down.shut)
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
	struct side *sd = evtag_conn_backend(tag) ? &c->bk : &c->cl;

	(void)s;
	if (c->state == ST_DEAD)
		return; /* ended earlier in this batch of events */
	/* An error or hangup marks both ways: the next recv/splice/send says what happened. */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		sd->rd = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		sd->wr = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		sd->hup = true;
	if (events & EPOLLERR)
		sd->err = true;
	if (events & EPOLLRDHUP)
		sd->fin = true;
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
					          s->cfg->hello_timeout_ms, c->up.len);
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
