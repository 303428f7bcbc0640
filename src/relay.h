/* The relay of one connection: bytes moved both ways between two non-blocking sockets (its ends),
 * with splice(2) through a pipe for bulk data and recv/send through a buffer for small messages,
 * and each end's FIN passed on to the other. It is driven by the readiness flags of the ends
 * (edge-triggered epoll: the owner sets them from the events, the relay clears them at EAGAIN).
 * Pipes and buffers are held only while bytes are in flight, and come from a worker-wide pool. */
#ifndef RELAY_H
#define RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

#define RELAY_BUF 16384     /* bytes buffered per direction without splice */
#define RELAY_PIPE_POOL 64  /* free relay pipes a worker keeps for reuse */
#define RELAY_BUF_POOL 32   /* free relay buffers a worker keeps for reuse */

/* What an end is registered for in the epoll set. EPOLLOUT is added (EPOLL_CTL_MOD) the first
 * time a write to it would block, and stays: a writable socket registered with EPOLLOUT reports
 * it at once, an event with nothing to do, and most connections never need one. */
#define RELAY_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLET)

/* One socket and what epoll last said about it. rd/wr: the kernel reported it readable or
 * writable and no call has answered EAGAIN since; with edge-triggered events nobody repeats it. */
struct relay_end {
	int fd;
	bool rd, wr;
	bool hup;  /* EPOLLRDHUP, EPOLLHUP or EPOLLERR seen: a short recv is no proof of empty */
	bool fin;  /* EPOLLRDHUP seen: the peer's FIN is queued */
	bool err;  /* EPOLLERR seen: read on, the error is for recv to say */
	bool out;  /* registered for EPOLLOUT too */
	uint64_t tag; /* its epoll_data, for the EPOLL_CTL_MOD that adds EPOLLOUT */
};

/* What an epoll event says of the end's socket. An error or hangup marks both ways: the next
 * recv/splice/send says what happened. */
static inline void relay_end_event(struct relay_end *e, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		e->rd = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		e->wr = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		e->hup = true;
	if (events & EPOLLERR)
		e->err = true;
	if (events & EPOLLRDHUP)
		e->fin = true;
}

/* One direction. Pending bytes are either in user space (buf[off..len): the owner's first bytes
 * (the hello), or the recv/send fallback) or in the pipe (inpipe bytes); user space goes first,
 * it is older. A direction reads only when nothing is pending: that is the back-pressure.
 * Before the relay starts, the owner may hold its own first bytes in buf (malloc'ed, of any
 * capacity cap; off 0) and set eof; the relay frees such a buffer once it is passed on. */
struct relay_flow {
	uint8_t *buf;         /* NULL unless bytes are pending in it */
	size_t cap, off, len;
	int pipe[2];          /* read end, write end; -1 when the direction holds no pipe */
	size_t inpipe;
	bool pipe_bad;        /* a splice on it failed: close it, never pool it */
	bool bulk;            /* reads splice: the last recv filled the buffer */
	size_t burst;         /* bytes spliced in since the last EAGAIN */
	bool eof;             /* the source sent FIN */
	bool shut;            /* FIN passed on: shutdown(SHUT_WR) on the destination */
	uint64_t bytes;       /* passed on to the destination */
};

/* Both directions of a connection between ends a and b. up: a -> b; down: b -> a. */
struct relay {
	struct relay_flow up, down;
	bool nosplice;        /* splice refused one of its sockets: recv/send only */
};

/* What a worker's relays share: free pipes and buffers, the epoll set, and the descriptor
 * accounting. Every connection counts two descriptors (its two sockets; the owner keeps nconn),
 * every relay pipe two, held by a direction (npipes) or free in the pool (npool). fd_max: what
 * they may add up to (0: no limit). */
struct relay_pool {
	int epfd;
	size_t fd_max;
	size_t nconn;
	size_t npipes;
	int pipes[RELAY_PIPE_POOL][2];
	size_t npool;
	/* Free relay buffers (RELAY_BUF bytes): a keep-alive connection takes one for each
	 * message and gives it back at once, which must not cost a malloc and a free each time. */
	uint8_t *bufs[RELAY_BUF_POOL];
	size_t nbufs;
};

/* Why relay_pump failed: the end whose socket call failed and its errno (end NULL: not a
 * socket's error, such as out of memory), and the text of it. */
struct relay_error {
	const struct relay_end *end;
	int err_no;
	const char *why;
};

void relay_pool_init(struct relay_pool *p, int epfd);

/* Whether n more descriptors fit in the limit, after closing pooled pipes if that makes room
 * (free pipes are only a cache: a new connection comes first). */
bool relay_pool_room(struct relay_pool *p, size_t n);

/* Close the pooled free pipes (when descriptors run out); returns how many were closed. */
size_t relay_pool_trim(struct relay_pool *p);

/* A relay with nothing in flight and no pipe. */
void relay_init(struct relay *r);

/* Give the direction's pipe and buffer back to the pool (a pipe with bytes in it, or one that
 * failed, is closed; a buffer not of RELAY_BUF bytes is freed). */
void relay_flow_release(struct relay_pool *p, struct relay_flow *f);

/* Move bytes a -> b, then b -> a, until each source has nothing more (EAGAIN, EOF), its
 * destination would block, or the direction's turn is over: then *more is set, and the caller
 * calls again later without waiting for an event. Returns -1 with *err filled on an error. */
int relay_pump(struct relay_pool *p, struct relay *r, struct relay_end *a, struct relay_end *b,
               bool *more, struct relay_error *err);

/* One send of the direction's pending user-space bytes (buf[off..len)) to fd, counted as
 * passed on. Returns send's result (errno set when -1). */
ssize_t relay_flow_send(struct relay_flow *f, int fd);

/* Whether both FINs were passed on: the relay is over. */
bool relay_done(const struct relay *r);

#endif
