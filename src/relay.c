/* The relay: bytes of a connection moved both ways, one direction (struct relay_flow) at a time.
 *
 * Bulk data goes with splice(2), socket -> pipe -> socket, so that it never enters user space.
 * A direction holds a pipe only while it has bytes in flight and gives it back to the worker's
 * pool when it is empty again: idle connections hold no pipes.
 *
 * Small messages (requests and responses of a keep-alive connection) go through recv/send with a
 * buffer held only while they are pending, because a short recv proves the socket empty and saves
 * the EAGAIN call that edge-triggering otherwise needs: epoll queues a new event for whatever
 * arrives after the one being handled was reported, and tcp_recvmsg stops short of the asked
 * length only when the receive queue is empty. A FIN reported before the read (EPOLLRDHUP
 * without EPOLLERR) makes a short recv also the end: the FIN is queued after the last byte and
 * nothing follows it, so the recv that would return 0 is not made (HAProxy infers its read0 the
 * same way). After EPOLLERR an end reads on until recv says what happened. Splice proves nothing
 * by stopping short (it also stops when the pipe runs out of slots), so spliced bursts read until
 * EAGAIN. A direction switches to splice when a recv fills the whole buffer, and back when a
 * spliced burst moved less than a buffer.
 * A socket that splice refuses (EINVAL, ENOSYS) makes that relay stay with recv/send.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define RELAY_SPLICE_LEN 65536 /* asked of one splice into a pipe: the default pipe capacity */
/* Bytes one direction passes on per turn. A bulk transfer between two fast peers would never
 * see EAGAIN: past this it waits for the end of the batch of events, and the other connections
 * of the worker get their turn first. */
#define RELAY_TURN_BYTES (256u * 1024u)

/* ---- the pools ------------------------------------------------------------------------------ */

void relay_pool_init(struct relay_pool *p, int epfd)
{
	memset(p, 0, sizeof(*p));
	p->epfd = epfd;
}

static size_t pool_fds(const struct relay_pool *p)
{
	return 2 * (p->nconn + p->npipes + p->npool);
}

/* Whether n more descriptors fit in the limit. */
static bool pool_fits(const struct relay_pool *p, size_t n)
{
	return p->fd_max == 0 || pool_fds(p) + n <= p->fd_max;
}

static void pool_close_one(struct relay_pool *p)
{
	p->npool--;
	close(p->pipes[p->npool][0]);
	close(p->pipes[p->npool][1]);
}

bool relay_pool_room(struct relay_pool *p, size_t n)
{
	while (!pool_fits(p, n) && p->npool > 0)
		pool_close_one(p);
	return pool_fits(p, n);
}

size_t relay_pool_trim(struct relay_pool *p)
{
	size_t n = p->npool;

	while (p->npool > 0)
		pool_close_one(p);
	return n;
}

/* A pipe for the direction: from the pool, or a new one if it leaves the descriptors reserved
 * for the connections' sockets alone. Returns -1 when there is none (the direction relays
 * through user space instead). */
static int pipe_get(struct relay_pool *p, struct relay_flow *f)
{
	if (p->npool > 0) {
		p->npool--;
		f->pipe[0] = p->pipes[p->npool][0];
		f->pipe[1] = p->pipes[p->npool][1];
	} else if (!pool_fits(p, 2)) {
		errno = EMFILE;
		return -1;
	} else if (pipe2(f->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		f->pipe[0] = f->pipe[1] = -1;
		return -1;
	}
	p->npipes++;
	return 0;
}

/* The direction gives its pipe back: to the pool when it is empty and sound, else closed. */
static void pipe_put(struct relay_pool *p, struct relay_flow *f)
{
	if (f->pipe[0] < 0)
		return;
	p->npipes--;
	if (f->inpipe == 0 && !f->pipe_bad && p->npool < RELAY_PIPE_POOL) {
		p->pipes[p->npool][0] = f->pipe[0];
		p->pipes[p->npool][1] = f->pipe[1];
		p->npool++;
	} else {
		close(f->pipe[0]);
		close(f->pipe[1]);
	}
	f->pipe[0] = f->pipe[1] = -1;
	f->inpipe = 0;
	f->pipe_bad = false;
}

/* A relay buffer for the direction, from the pool if it has one. Returns -1 when out of
 * memory. */
static int buf_get(struct relay_pool *p, struct relay_flow *f)
{
	if (p->nbufs > 0)
		f->buf = p->bufs[--p->nbufs];
	else if ((f->buf = malloc(RELAY_BUF)) == NULL)
		return -1;
	f->cap = RELAY_BUF;
	return 0;
}

/* The direction gives its buffer back: a relay buffer to the pool while it has room; the
 * owner's first buffer (another size) is freed. */
static void buf_put(struct relay_pool *p, struct relay_flow *f)
{
	if (f->buf != NULL && f->cap == RELAY_BUF && p->nbufs < RELAY_BUF_POOL)
		p->bufs[p->nbufs++] = f->buf;
	else
		free(f->buf);
	f->buf = NULL;
}

void relay_flow_release(struct relay_pool *p, struct relay_flow *f)
{
	pipe_put(p, f);
	buf_put(p, f);
	f->cap = f->off = f->len = 0;
}

/* ---- one direction -------------------------------------------------------------------------- */

void relay_init(struct relay *r)
{
	memset(r, 0, sizeof(*r));
	r->up.pipe[0] = r->up.pipe[1] = -1;
	r->down.pipe[0] = r->down.pipe[1] = -1;
}

bool relay_done(const struct relay *r)
{
	return r->up.shut && r->down.shut;
}

/* A socket call on end e failed with errno. */
static int end_error(const struct relay_end *e, struct relay_error *err)
{
	err->end = e;
	err->err_no = errno;
	err->why = strerror(errno);
	return -1;
}

/* A write to e would block: from now on epoll reports when it drains. */
static int end_want_out(struct relay_pool *p, struct relay_end *e, struct relay_error *err)
{
	struct epoll_event ev = { .events = RELAY_EVENTS | EPOLLOUT, .data.u64 = e->tag };

	if (e->out)
		return 0;
	if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, e->fd, &ev) < 0) {
		err->why = "epoll_ctl(MOD) to wait for a socket to drain failed";
		return -1;
	}
	e->out = true;
	return 0;
}

static bool flow_pending(const struct relay_flow *f)
{
	return f->off < f->len || f->inpipe > 0;
}

static bool is_splice_refusal(int e)
{
	return e == EINVAL || e == ENOSYS;
}

ssize_t relay_flow_send(struct relay_flow *f, int fd)
{
	ssize_t n = send(fd, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);

	if (n > 0) {
		f->off += (size_t)n;
		f->bytes += (uint64_t)n;
		if (f->off == f->len)
			f->off = f->len = 0;
	}
	return n;
}

/* Pass pending bytes to dst until they are gone or dst would block. */
static int flow_write(struct relay_pool *p, struct relay *r, struct relay_flow *f,
                      struct relay_end *dst, struct relay_error *err)
{
	ssize_t n;

	if (f->off == f->len && f->inpipe > 0 && r->nosplice) {
		/* Bytes spliced into the pipe before splice refused a socket: they come out through
		 * user space like the rest. */
		if (f->buf == NULL && buf_get(p, f) < 0) {
			err->why = "out of memory for a relay buffer";
			return -1;
		}
		n = read(f->pipe[0], f->buf, f->inpipe < f->cap ? f->inpipe : f->cap);
		if (n <= 0) {
			f->pipe_bad = true;
			err->why = n < 0 ? strerror(errno) : "relay pipe empty";
			return -1;
		}
		f->off = 0;
		f->len = (size_t)n;
		f->inpipe -= (size_t)n;
	}
	if (f->off < f->len) {
		/* user space first: the owner's first bytes, or the fallback buffer */
		if (relay_flow_send(f, dst->fd) > 0)
			return 0;
	} else {
		n = splice(f->pipe[0], NULL, dst->fd, NULL, f->inpipe,
		           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			f->inpipe -= (size_t)n;
			f->bytes += (uint64_t)n;
			return 0;
		}
		if (n == 0) {
			/* cannot happen while inpipe > 0; without this the pump would spin */
			f->pipe_bad = true;
			err->why = "splice from the relay pipe moved nothing";
			return -1;
		}
		if (is_splice_refusal(errno)) {
			r->nosplice = true;
			return 0;
		}
	}
	if (errno == EAGAIN) {
		dst->wr = false;
		return end_want_out(p, dst, err);
	}
	if (errno != EINTR) {
		if (f->inpipe > 0)
			f->pipe_bad = true;
		return end_error(dst, err);
	}
	return 0;
}

/* Read from src: one splice into the pipe (taken from the pool), or one recv into the buffer.
 * Only called with nothing pending. */
static int flow_read(struct relay_pool *p, struct relay *r, struct relay_flow *f,
                     struct relay_end *src, struct relay_error *err)
{
	ssize_t n;

	/* Out of descriptors for a pipe (EMFILE): this read goes through user space. */
	if (f->bulk && !r->nosplice && (f->pipe[0] >= 0 || pipe_get(p, f) == 0)) {
		n = splice(src->fd, NULL, f->pipe[1], NULL, RELAY_SPLICE_LEN,
		           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			f->inpipe += (size_t)n;
			f->burst += (size_t)n;
			return 0;
		}
		if (n == 0) {
			f->eof = true;
			return 0;
		}
		if (errno == EAGAIN) {
			/* a small burst: the next one starts with recv */
			if (f->burst < RELAY_BUF)
				f->bulk = false;
			f->burst = 0;
		}
		if (!is_splice_refusal(errno))
			goto error;
		r->nosplice = true;
	}
	if (f->buf == NULL && buf_get(p, f) < 0) {
		err->why = "out of memory for a relay buffer";
		return -1;
	}
	n = recv(src->fd, f->buf, f->cap, 0);
	if (n > 0) {
		f->off = 0;
		f->len = (size_t)n;
		if ((size_t)n == f->cap)
			f->bulk = true; /* more is likely waiting: splice it */
		else if (src->fin && !src->err)
			f->eof = true;   /* short after the FIN came: the FIN is all that is left */
		else if (!src->hup)
			src->rd = false; /* short: the socket is empty */
		return 0;
	}
	if (n == 0) {
		f->eof = true;
		return 0;
	}
error:
	if (errno == EAGAIN)
		src->rd = false;
	else if (errno != EINTR)
		return end_error(src, err);
	return 0;
}

/* Move bytes for one direction until the source has nothing more (EAGAIN, EOF), the
 * destination would block, or its turn is over (*more set). other: the opposite direction. */
static int flow_pump(struct relay_pool *p, struct relay *r, struct relay_flow *f,
                     const struct relay_flow *other, struct relay_end *src,
                     struct relay_end *dst, bool *more, struct relay_error *err)
{
	uint64_t start = f->bytes;

	for (;;) {
		if (flow_pending(f)) {
			if (!dst->wr)
				return 0; /* the next EPOLLOUT edge brings us back */
			if (flow_write(p, r, f, dst, err) < 0)
				return -1;
			continue;
		}
		/* Nothing in flight: no pipe, no buffer held while waiting. */
		if (f->pipe[0] >= 0 || f->buf != NULL)
			relay_flow_release(p, f);
		if (f->eof) {
			/* FIN from the source, everything before it delivered: pass the FIN on. */
			if (!f->shut) {
				/* The other way ended first: the close that follows sends this FIN
				 * (every byte of that socket was read, so it is no reset). A
				 * destination that reported an error (a reset) takes no FIN. */
				if (!other->shut && !dst->err && shutdown(dst->fd, SHUT_WR) < 0 &&
				    errno != ENOTCONN)
					return end_error(dst, err);
				f->shut = true;
			}
			return 0;
		}
		if (!src->rd)
			return 0;
		if (f->bytes - start >= RELAY_TURN_BYTES) {
			*more = true;
			return 0;
		}
		if (flow_read(p, r, f, src, err) < 0)
			return -1;
	}
}

int relay_pump(struct relay_pool *p, struct relay *r, struct relay_end *a, struct relay_end *b,
               bool *more, struct relay_error *err)
{
	err->end = NULL;
	err->err_no = 0;
	err->why = NULL;
	if (flow_pump(p, r, &r->up, &r->down, a, b, more, err) < 0 ||
	    flow_pump(p, r, &r->down, &r->up, b, a, more, err) < 0)
		return -1;
	return 0;
}
