/* Unit tests of the relay (src/relay.c) over real sockets, without root: AF_UNIX socket pairs
 * and TCP over loopback (splice works with both). A test plays both peers: the client's socket
 * (a_peer) in front of the relay's end a, the backend's (b_peer) behind end b, and drives the
 * relay the way conn.c does: the epoll events of the two ends set their readiness flags, then
 * relay_pump runs. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "testutil.h"

enum kind { UNIX, TCP };
enum { TAG_A = 1, TAG_B = 2 };

struct lab {
	int ep;
	int a_peer, b_peer;     /* the test's sockets: the client, the backend */
	struct relay_end a, b;  /* the relay's: a faces the client, b the backend */
	struct relay r;
	struct relay_pool pool;
	struct relay_error err;
	int rc;                 /* what the last relay_pump returned */
	bool more;              /* a pump ended its turn with more to do */
};

static void set_nonblock(int fd)
{
	CU_ASSERT_EQUAL_FATAL(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* Two connected sockets: the relay's and the test's. */
static void socket_pair(enum kind k, int *relay_fd, int *peer_fd)
{
	int sv[2];

	if (k == UNIX) {
		CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	} else {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t sl = sizeof(sin);
		int one = 1;
		int l = socket(AF_INET, SOCK_STREAM, 0);

		CU_ASSERT_TRUE_FATAL(l >= 0);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		CU_ASSERT_EQUAL_FATAL(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
		CU_ASSERT_EQUAL_FATAL(listen(l, 1), 0);
		CU_ASSERT_EQUAL_FATAL(getsockname(l, (struct sockaddr *)&sin, &sl), 0);
		sv[1] = socket(AF_INET, SOCK_STREAM, 0);
		CU_ASSERT_EQUAL_FATAL(connect(sv[1], (struct sockaddr *)&sin, sizeof(sin)), 0);
		sv[0] = accept(l, NULL, NULL);
		CU_ASSERT_TRUE_FATAL(sv[0] >= 0);
		close(l);
		(void)setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		(void)setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	*relay_fd = sv[0];
	*peer_fd = sv[1];
}

static void lab_open(struct lab *L, enum kind k)
{
	struct epoll_event ev = { .events = RELAY_EVENTS };

	memset(L, 0, sizeof(*L));
	L->ep = epoll_create1(EPOLL_CLOEXEC);
	CU_ASSERT_TRUE_FATAL(L->ep >= 0);
	relay_pool_init(&L->pool, L->ep);
	L->pool.nconn = 1;
	relay_init(&L->r);
	socket_pair(k, &L->a.fd, &L->a_peer);
	socket_pair(k, &L->b.fd, &L->b_peer);
	L->a.tag = TAG_A;
	L->b.tag = TAG_B;
	ev.data.u64 = TAG_A;
	CU_ASSERT_EQUAL_FATAL(epoll_ctl(L->ep, EPOLL_CTL_ADD, L->a.fd, &ev), 0);
	ev.data.u64 = TAG_B;
	CU_ASSERT_EQUAL_FATAL(epoll_ctl(L->ep, EPOLL_CTL_ADD, L->b.fd, &ev), 0);
	/* as conn.c does: read and write at once, before any event */
	L->a.rd = L->a.wr = L->b.rd = L->b.wr = true;
}

static void lab_close(struct lab *L)
{
	relay_flow_release(&L->pool, &L->r.up);
	relay_flow_release(&L->pool, &L->r.down);
	relay_pool_trim(&L->pool);
	while (L->pool.nbufs > 0)
		free(L->pool.bufs[--L->pool.nbufs]);
	CU_ASSERT_EQUAL(L->pool.npipes, 0);
	if (L->a.fd >= 0)
		close(L->a.fd);
	if (L->b.fd >= 0)
		close(L->b.fd);
	if (L->a_peer >= 0)
		close(L->a_peer);
	if (L->b_peer >= 0)
		close(L->b_peer);
	close(L->ep);
}

/* As conn_event: the event sets the flags of the end it names. */
static void lab_event(struct lab *L, const struct epoll_event *e)
{
	relay_end_event(e->data.u64 == TAG_A ? &L->a : &L->b, e->events);
}

/* Pump, then take the events and pump again, until nothing is reported and no turn is left
 * over (or the pump fails). Returns the number of pumps. */
static int lab_drive(struct lab *L)
{
	int pumps = 0;

	for (int round = 0; round < 100000; round++) {
		struct epoll_event ev[4];
		int n;

		L->more = false;
		L->rc = relay_pump(&L->pool, &L->r, &L->a, &L->b, &L->more, &L->err);
		pumps++;
		if (L->rc < 0)
			return pumps;
		n = epoll_wait(L->ep, ev, 4, 0);
		CU_ASSERT_TRUE_FATAL(n >= 0);
		for (int i = 0; i < n; i++)
			lab_event(L, &ev[i]);
		if (n == 0 && !L->more)
			return pumps;
	}
	CU_FAIL("the relay never settled");
	return pumps;
}

/* Pump until things settle, waiting a little for what loopback still has in flight. */
static void lab_settle(struct lab *L)
{
	for (int i = 0; i < 3; i++) {
		struct epoll_event ev[4];
		int n;

		lab_drive(L);
		if (L->rc < 0)
			return;
		n = epoll_wait(L->ep, ev, 4, 10);
		CU_ASSERT_TRUE_FATAL(n >= 0);
		for (int j = 0; j < n; j++)
			lab_event(L, &ev[j]);
		if (n == 0)
			break;
	}
	lab_drive(L);
}

/* The byte at stream position x of a test's data. */
static uint8_t pat(size_t x)
{
	return (uint8_t)(x * 131u >> 3);
}

static void fill(uint8_t *p, size_t n, size_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pat(i + seed);
}

/* Wait up to 1 s for the end of the stream at fd (nothing else may come). */
static bool wait_eof(int fd)
{
	for (int i = 0; i < 100; i++) {
		uint8_t b;
		ssize_t n = recv(fd, &b, 1, 0);

		if (n == 0)
			return true;
		if (n > 0 || errno != EAGAIN)
			return false;
		usleep(10000);
	}
	return false;
}

/* Write all of p (the socket is non-blocking: drive the relay when it is full). */
static void send_all(struct lab *L, int fd, const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n) {
		ssize_t w = send(fd, p + off, n - off, MSG_NOSIGNAL);

		if (w < 0) {
			CU_ASSERT_EQUAL_FATAL(errno, EAGAIN);
			lab_drive(L);
			CU_ASSERT_EQUAL_FATAL(L->rc, 0);
			continue;
		}
		off += (size_t)w;
	}
}

/* Read what is there without waiting; returns the count, and sets *eof at the end of the stream. */
static size_t recv_some(int fd, uint8_t *p, size_t cap, bool *eof)
{
	size_t got = 0;

	while (got < cap) {
		ssize_t n = recv(fd, p + got, cap - got, 0);

		if (n == 0) {
			*eof = true;
			break;
		}
		if (n < 0) {
			CU_ASSERT_EQUAL(errno, EAGAIN);
			break;
		}
		got += (size_t)n;
	}
	return got;
}

/* Send n pattern bytes into `from` while reading them at `to`, driving the relay in between;
 * checks they all come out, in order. */
static void transfer(struct lab *L, int from, int to, size_t n)
{
	uint8_t *out = malloc(n), *in = malloc(n);
	size_t sent = 0, got = 0;
	bool eof = false;

	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	fill(out, n, n);
	for (int round = 0; got < n && round < 100000; round++) {
		if (sent < n) {
			ssize_t w = send(from, out + sent, n - sent, MSG_NOSIGNAL);

			if (w > 0)
				sent += (size_t)w;
			else
				CU_ASSERT_EQUAL_FATAL(errno, EAGAIN);
		}
		lab_drive(L);
		CU_ASSERT_EQUAL_FATAL(L->rc, 0);
		got += recv_some(to, in + got, n - got, &eof);
		CU_ASSERT_FALSE_FATAL(eof);
	}
	CU_ASSERT_EQUAL(got, n);
	CU_ASSERT_EQUAL(memcmp(in, out, n), 0);
	free(out);
	free(in);
}

/* Nothing in flight: the relay holds no pipe and no buffer. */
static void check_idle(const struct lab *L)
{
	CU_ASSERT_PTR_NULL(L->r.up.buf);
	CU_ASSERT_PTR_NULL(L->r.down.buf);
	CU_ASSERT_EQUAL(L->r.up.pipe[0], -1);
	CU_ASSERT_EQUAL(L->r.down.pipe[0], -1);
	CU_ASSERT_EQUAL(L->pool.npipes, 0);
}

static void both_ways(enum kind k)
{
	struct lab L;
	uint8_t buf[64];
	bool eof = false;

	lab_open(&L, k);
	CU_ASSERT_EQUAL(send(L.a_peer, "request", 7, 0), 7);
	CU_ASSERT_EQUAL(send(L.b_peer, "banner", 6, 0), 6);
	lab_settle(&L);
	CU_ASSERT_EQUAL(L.rc, 0);
	CU_ASSERT_EQUAL(recv_some(L.b_peer, buf, sizeof(buf), &eof), 7);
	CU_ASSERT_EQUAL(memcmp(buf, "request", 7), 0);
	CU_ASSERT_EQUAL(recv_some(L.a_peer, buf, sizeof(buf), &eof), 6);
	CU_ASSERT_EQUAL(memcmp(buf, "banner", 6), 0);
	CU_ASSERT_FALSE(eof);
	CU_ASSERT_EQUAL(L.r.up.bytes, 7);
	CU_ASSERT_EQUAL(L.r.down.bytes, 6);
	/* Small messages go through a pooled buffer, given back at once. */
	check_idle(&L);
	CU_ASSERT_TRUE(L.pool.nbufs >= 1);
	CU_ASSERT_FALSE(L.r.up.bulk);
	/* The recvs stopped short: the sockets are empty, nothing waits for EAGAIN. */
	CU_ASSERT_FALSE(L.a.rd);
	CU_ASSERT_FALSE(L.b.rd);
	CU_ASSERT_FALSE(relay_done(&L.r));
	/* A bulk transfer each way, one after the other: splice. */
	transfer(&L, L.a_peer, L.b_peer, 1u << 20);
	transfer(&L, L.b_peer, L.a_peer, 1u << 20);
	CU_ASSERT_EQUAL(L.r.up.bytes, 7 + (1u << 20));
	CU_ASSERT_EQUAL(L.r.down.bytes, 6 + (1u << 20));
	check_idle(&L);
	CU_ASSERT_FALSE(L.r.nosplice);
	CU_ASSERT_TRUE(L.pool.npool >= 1);
	lab_close(&L);
}

static void test_both_ways_unix(void)
{
	both_ways(UNIX);
}

static void test_both_ways_tcp(void)
{
	both_ways(TCP);
}

/* A recv that fills the buffer switches the direction to splice through a pooled pipe; a burst
 * smaller than a buffer switches it back. */
static void test_switch_to_splice(void)
{
	struct lab L;
	uint8_t *big = malloc(3 * RELAY_BUF), *in = malloc(3 * RELAY_BUF);
	uint8_t small[100];
	bool eof = false;
	size_t got = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	lab_open(&L, TCP);
	fill(big, 3 * RELAY_BUF, 7);
	send_all(&L, L.a_peer, big, 3 * RELAY_BUF);
	lab_drive(&L);
	CU_ASSERT_EQUAL(L.rc, 0);
	for (int i = 0; got < 3 * RELAY_BUF && i < 1000; i++) {
		got += recv_some(L.b_peer, in + got, 3 * RELAY_BUF - got, &eof);
		lab_drive(&L);
	}
	CU_ASSERT_EQUAL(got, 3 * RELAY_BUF);
	CU_ASSERT_EQUAL(memcmp(in, big, got), 0);
	/* The pipe went back to the pool: a splice took it. */
	CU_ASSERT_EQUAL(L.pool.npool, 1);
	CU_ASSERT_EQUAL(L.pool.npipes, 0);
	/* The burst after the switch: bulk until a splice ran dry with less than a buffer. */
	fill(small, sizeof(small), 1);
	CU_ASSERT_EQUAL(send(L.a_peer, small, sizeof(small), 0), (ssize_t)sizeof(small));
	lab_settle(&L);
	CU_ASSERT_EQUAL(recv_some(L.b_peer, in, sizeof(small), &eof), sizeof(small));
	CU_ASSERT_EQUAL(memcmp(in, small, sizeof(small)), 0);
	CU_ASSERT_FALSE(L.r.up.bulk);
	check_idle(&L);
	lab_close(&L);
	free(big);
	free(in);
}

/* A FIN from `fin_peer` is passed on as shutdown(SHUT_WR) to the other peer, after the bytes
 * before it; the other way keeps flowing until it ends too. */
static void half_close(enum kind k, bool client_first)
{
	struct lab L;
	int first, second;
	struct relay_flow *fa, *fb;
	uint8_t buf[64];
	bool eof = false;

	lab_open(&L, k);
	first = client_first ? L.a_peer : L.b_peer;
	second = client_first ? L.b_peer : L.a_peer;
	fa = client_first ? &L.r.up : &L.r.down;
	fb = client_first ? &L.r.down : &L.r.up;
	CU_ASSERT_EQUAL(send(first, "last words", 10, 0), 10);
	CU_ASSERT_EQUAL(shutdown(first, SHUT_WR), 0);
	lab_settle(&L);
	CU_ASSERT_EQUAL(L.rc, 0);
	CU_ASSERT_TRUE(fa->eof);
	CU_ASSERT_TRUE(fa->shut);
	CU_ASSERT_FALSE(fb->shut);
	CU_ASSERT_FALSE(relay_done(&L.r));
	CU_ASSERT_EQUAL(recv_some(second, buf, sizeof(buf), &eof), 10);
	CU_ASSERT_EQUAL(memcmp(buf, "last words", 10), 0);
	CU_ASSERT_TRUE(eof);
	/* The other way still flows, small and bulk. */
	eof = false;
	CU_ASSERT_EQUAL(send(second, "answer", 6, 0), 6);
	lab_settle(&L);
	CU_ASSERT_EQUAL(recv_some(first, buf, sizeof(buf), &eof), 6);
	CU_ASSERT_EQUAL(memcmp(buf, "answer", 6), 0);
	CU_ASSERT_FALSE(eof);
	transfer(&L, second, first, 1u << 19);
	/* Now that way ends: no shutdown, the close that follows sends that FIN. */
	CU_ASSERT_EQUAL(shutdown(second, SHUT_WR), 0);
	lab_settle(&L);
	CU_ASSERT_EQUAL(L.rc, 0);
	CU_ASSERT_TRUE(fb->shut);
	CU_ASSERT_TRUE(relay_done(&L.r));
	check_idle(&L);
	CU_ASSERT_EQUAL(recv_some(first, buf, sizeof(buf), &eof), 0);
	CU_ASSERT_FALSE(eof);
	close(client_first ? L.a.fd : L.b.fd);
	if (client_first)
		L.a.fd = -1;
	else
		L.b.fd = -1;
	CU_ASSERT_TRUE(wait_eof(first));
	lab_close(&L);
}

static void test_half_close_client_unix(void)
{
	half_close(UNIX, true);
}

static void test_half_close_backend_unix(void)
{
	half_close(UNIX, false);
}

static void test_half_close_client_tcp(void)
{
	half_close(TCP, true);
}

static void test_half_close_backend_tcp(void)
{
	half_close(TCP, false);
}

/* The owner's first bytes (the hello, in a buffer of its own size) and its eof (a FIN in the
 * middle of a hello): passed on, the buffer freed rather than pooled, then the FIN. */
static void test_first_bytes_and_eof(void)
{
	struct lab L;
	uint8_t buf[64];
	bool eof = false;

	lab_open(&L, TCP);
	L.r.up.buf = malloc(100);
	CU_ASSERT_PTR_NOT_NULL_FATAL(L.r.up.buf);
	memcpy(L.r.up.buf, "\x16\x03\x01", 3);
	L.r.up.cap = 100;
	L.r.up.len = 3;
	L.r.up.eof = true;
	/* as after conn_route: the hello read the client dry, the backend has said nothing */
	L.a.rd = false;
	L.b.rd = false;
	lab_settle(&L);
	CU_ASSERT_EQUAL(L.rc, 0);
	CU_ASSERT_EQUAL(recv_some(L.b_peer, buf, sizeof(buf), &eof), 3);
	CU_ASSERT_TRUE(eof);
	CU_ASSERT_TRUE(L.r.up.shut);
	CU_ASSERT_EQUAL(L.pool.nbufs, 0);
	check_idle(&L);
	lab_close(&L);
}

/* A destination that does not read: the direction stops with its bytes pending, asks epoll for
 * EPOLLOUT (once), reads no more from its source, and resumes when the destination drains. */
enum bp_mode { BP_SPLICE, BP_FALLBACK, BP_SWITCH };

static void back_pressure(enum bp_mode mode)
{
	bool nosplice = mode == BP_FALLBACK;
	struct lab L;
	const size_t chunk = 65536;
	uint8_t *out = malloc(chunk), *in = malloc(chunk);
	size_t sent = 0, got = 0, sent_at_stop;
	bool eof = false;
	int small = 16384;
	int rounds;

	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	lab_open(&L, TCP);
	L.r.nosplice = nosplice;
	(void)setsockopt(L.b.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	(void)setsockopt(L.b_peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	/* Until the client cannot send any more either: everything between is full. */
	for (rounds = 0; rounds < 10000; rounds++) {
		ssize_t w;

		fill(out, chunk, sent);
		w = send(L.a_peer, out, chunk, MSG_NOSIGNAL);
		if (w < 0) {
			CU_ASSERT_EQUAL_FATAL(errno, EAGAIN);
			lab_settle(&L);
			CU_ASSERT_EQUAL_FATAL(L.rc, 0);
			w = send(L.a_peer, out, chunk, MSG_NOSIGNAL);
			if (w < 0 && errno == EAGAIN)
				break; /* the relay took nothing more */
			CU_ASSERT_TRUE_FATAL(w > 0);
		}
		sent += (size_t)w;
		lab_drive(&L);
		CU_ASSERT_EQUAL_FATAL(L.rc, 0);
	}
	CU_ASSERT_TRUE_FATAL(rounds < 10000);
	CU_ASSERT_TRUE(L.r.up.off < L.r.up.len || L.r.up.inpipe > 0);
	CU_ASSERT_FALSE(L.b.wr);
	CU_ASSERT_TRUE(L.b.out);
	CU_ASSERT_FALSE(L.a.out);
	CU_ASSERT_EQUAL(L.r.nosplice, nosplice);
	if (mode != BP_FALLBACK)
		CU_ASSERT_TRUE(L.pool.npipes == 1 || L.r.up.inpipe == 0);
	sent_at_stop = sent;
	if (mode == BP_SWITCH) {
		/* Splice refused a socket while bytes wait in the pipe: they come out through
		 * user space. */
		CU_ASSERT_TRUE_FATAL(L.r.up.inpipe > 0);
		L.r.nosplice = true;
	}
	/* Nothing moves while nobody reads: the relay waits for EPOLLOUT. */
	lab_settle(&L);
	CU_ASSERT_TRUE(L.r.up.off < L.r.up.len || L.r.up.inpipe > 0);
	/* Drain: every byte arrives, in order. */
	for (rounds = 0; got < sent && rounds < 100000; rounds++) {
		size_t n = recv_some(L.b_peer, in, chunk, &eof);
		size_t bad = 0;

		for (size_t i = 0; i < n; i++)
			bad += in[i] != pat(got + i);
		CU_ASSERT_EQUAL_FATAL(bad, 0);
		got += n;
		lab_drive(&L);
		CU_ASSERT_EQUAL_FATAL(L.rc, 0);
		if (n == 0)
			usleep(1000);
	}
	CU_ASSERT_EQUAL(got, sent_at_stop);
	CU_ASSERT_FALSE(eof);
	CU_ASSERT_TRUE(L.b.wr);
	check_idle(&L);
	if (mode == BP_FALLBACK)
		CU_ASSERT_EQUAL(L.pool.npool, 0);
	if (mode == BP_SWITCH)
		CU_ASSERT_EQUAL(L.pool.npool, 1); /* emptied through read(): sound, pooled */
	lab_close(&L);
	free(out);
	free(in);
}

static void test_back_pressure_splice(void)
{
	back_pressure(BP_SPLICE);
}

static void test_back_pressure_fallback(void)
{
	back_pressure(BP_FALLBACK);
}

static void test_back_pressure_switch(void)
{
	back_pressure(BP_SWITCH);
}

/* The recv/send fallback, forced as the nosplice test hook does (as after a splice EINVAL):
 * bulk transfers both ways with no pipe ever taken. */
static void test_fallback(void)
{
	struct lab L;

	lab_open(&L, TCP);
	L.r.nosplice = true;
	transfer(&L, L.a_peer, L.b_peer, 1u << 20);
	transfer(&L, L.b_peer, L.a_peer, 1u << 20);
	CU_ASSERT_TRUE(L.r.up.bulk);
	CU_ASSERT_EQUAL(L.pool.npool, 0);
	CU_ASSERT_EQUAL(L.pool.npipes, 0);
	CU_ASSERT_TRUE(L.pool.nbufs >= 1);
	check_idle(&L);
	lab_close(&L);
}

/* No descriptors left for a pipe (the limit): bulk data goes through user space. */
static void test_no_room_for_a_pipe(void)
{
	struct lab L;

	lab_open(&L, TCP);
	L.pool.fd_max = 2 * L.pool.nconn;
	transfer(&L, L.a_peer, L.b_peer, 1u << 20);
	CU_ASSERT_TRUE(L.r.up.bulk);
	CU_ASSERT_FALSE(L.r.nosplice);
	CU_ASSERT_EQUAL(L.pool.npool, 0);
	CU_ASSERT_EQUAL(L.pool.npipes, 0);
	/* Pooled pipes give way to a new connection. */
	L.pool.fd_max = 0;
	transfer(&L, L.a_peer, L.b_peer, 1u << 20);
	CU_ASSERT_EQUAL(L.pool.npool, 1);
	L.pool.fd_max = 2 * L.pool.nconn + 2;
	CU_ASSERT_FALSE(relay_pool_room(&L.pool, 4));
	CU_ASSERT_EQUAL(L.pool.npool, 0);
	CU_ASSERT_TRUE(relay_pool_room(&L.pool, 2));
	lab_close(&L);
}

/* A reset from the backend: the pump fails naming end b and the errno, as conn.c logs it. */
static void test_reset(void)
{
	struct lab L;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	lab_open(&L, TCP);
	CU_ASSERT_EQUAL(setsockopt(L.b_peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(L.b_peer);
	L.b_peer = -1;
	CU_ASSERT_EQUAL(send(L.a_peer, "request", 7, 0), 7);
	lab_settle(&L);
	CU_ASSERT_EQUAL(L.rc, -1);
	CU_ASSERT_PTR_EQUAL(L.err.end, &L.b);
	CU_ASSERT_TRUE(L.err.err_no == ECONNRESET || L.err.err_no == EPIPE);
	CU_ASSERT_PTR_NOT_NULL_FATAL(L.err.why);
	CU_ASSERT_STRING_EQUAL(L.err.why, strerror(L.err.err_no));
	lab_close(&L);
}

int main(void)
{
	static const struct tu_test tests[] = {
		{ "both ways, unix socket pair (buffer, then splice)", test_both_ways_unix },
		{ "both ways, TCP loopback (buffer, then splice)", test_both_ways_tcp },
		{ "a full buffer switches to splice, a small burst back", test_switch_to_splice },
		{ "half-close from the client, unix", test_half_close_client_unix },
		{ "half-close from the backend, unix", test_half_close_backend_unix },
		{ "half-close from the client, TCP", test_half_close_client_tcp },
		{ "half-close from the backend, TCP", test_half_close_backend_tcp },
		{ "the owner's first bytes and its eof", test_first_bytes_and_eof },
		{ "back-pressure, splice", test_back_pressure_splice },
		{ "back-pressure, recv/send fallback", test_back_pressure_fallback },
		{ "back-pressure, splice refused with bytes in the pipe", test_back_pressure_switch },
		{ "recv/send fallback (nosplice)", test_fallback },
		{ "no descriptors left for a pipe", test_no_room_for_a_pipe },
		{ "a reset names the end and its errno", test_reset },
	};

	if (TU_ADD_SUITE("relay", tests) != 0)
		return 99;
	return tu_run();
}
