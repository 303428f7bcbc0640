/* Stale NAT bindings to the listener, deleted through ctnetlink.
 *
 * Why: a connection's REDIRECT binding lives in its conntrack entry, and the entry outlives
 * the connection: TIME_WAIT 120 s, CLOSE 10 s, half-open handshakes, and entries whose end
 * conntrack did not see (FIN_WAIT, CLOSE_WAIT, LAST_ACK, ESTABLISHED: minutes to days). The
 * legacy nat table also keeps tracking on only while it holds a rule: once our hold rule goes,
 * entries stay, frozen, and apply again when a later start switches tracking on. A new
 * connection that reuses the client's address and port meets such an entry and keeps its
 * binding (a SYN meeting a half-open entry, an entry that did not see the end, or CLOSE after
 * our RST), so it goes to the listen port and is refused once the listener is closed; a
 * packet of a direct connection picked up mid-stream as tracking switches on is rewritten the
 * same way and reset.
 *
 * Which entries are stale is read from the sockets, not guessed from states: the reply tuple
 * of a redirected flow (listen address:port -> client) is the local and remote address of the
 * socket that holds the connection. The table is read after the dump: an entry whose socket
 * exists by then is kept, and one whose socket is gone (or in TIME_WAIT) has no connection to
 * serve. A half-open entry has no socket of its own to look for (the kernel may answer with a
 * SYN cookie): it is kept while anything listens on the port. A listener, and the rule that
 * sends it connections, come before any entry that is redirected to it, so looking after the
 * dump needs no lock against an instance that starts meanwhile.
 *
 * A SYN from the client's port can take a stale entry's binding between the dump and the
 * delete, and with a listener on the port that is a new connection in its handshake: deleting
 * its entry then would send its next segment, untracked by NAT, to the web server (reset).
 * Deleting a thousand entries takes tens of milliseconds, so each entry is looked at again just
 * before it goes (ct_still_stale: its state now, and an exact socket lookup of its four-tuple,
 * which finds a request socket too); that leaves microseconds, not the whole sweep. */
#include "autoconfig.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>

#include "conntrack.h"
#include "log.h"

/* include/net/tcp_states.h: not in the uapi headers. */
enum { CT_SK_TIME_WAIT = 6, CT_SK_CLOSE = 7, CT_SK_LISTEN = 10, CT_SK_STATES = 13 };

/* One connection, as sock_diag and a reply tuple both name it: IPv4 in the IPv4-mapped IPv6
 * form (a dual-stack listener's sockets show IPv4 peers so). */
struct ct_conn {
	uint8_t local[16], remote[16];
	uint16_t remote_port; /* host order */
};

struct ct_dump {
	uint16_t port_be;
	struct nf_conntrack **found;
	size_t n, cap;
	bool nomem;
};

struct ct_socks {
	struct ct_conn *conn;
	size_t n, cap;
	bool own_listener;    /* the listener on the port is the caller's: it does not count */
	bool listening;       /* a socket other than the caller's listens on the port */
	bool nomem;
};

static int ct_conn_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct ct_conn));
}

static void ct_mapped(uint8_t out[16], const void *v4)
{
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, v4, 4);
}

static int ct_collect(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *arg)
{
	struct ct_dump *d = arg;
	struct nf_conntrack *copy;

	(void)type;
	if (nfct_get_attr_u8(ct, ATTR_L4PROTO) != IPPROTO_TCP ||
	    nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC) != d->port_be)
		return NFCT_CB_CONTINUE;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct nf_conntrack **p = realloc(d->found, cap * sizeof(*p));

		if (p == NULL) {
			d->nomem = true;
			return NFCT_CB_STOP;
		}
		d->found = p;
		d->cap = cap;
	}
	copy = nfct_clone(ct);
	if (copy == NULL) {
		d->nomem = true;
		return NFCT_CB_STOP;
	}
	d->found[d->n++] = copy;
	return NFCT_CB_CONTINUE;
}

/* One socket of the sock_diag dump. */
static int ct_sock_msg(const struct nlmsghdr *nlh, void *arg)
{
	const struct inet_diag_msg *m = mnl_nlmsg_get_payload(nlh);
	struct ct_socks *t = arg;
	struct ct_conn c;

	if (mnl_nlmsg_get_payload_len(nlh) < sizeof(*m))
		return MNL_CB_OK;
	if (m->idiag_state == CT_SK_LISTEN) {
		/* The caller's own listener has no rule sending it anything yet. */
		if (!t->own_listener)
			t->listening = true;
		return MNL_CB_OK;
	}
	memset(&c, 0, sizeof(c));
	if (m->idiag_family == AF_INET) {
		ct_mapped(c.local, m->id.idiag_src);
		ct_mapped(c.remote, m->id.idiag_dst);
	} else {
		memcpy(c.local, m->id.idiag_src, 16);
		memcpy(c.remote, m->id.idiag_dst, 16);
	}
	c.remote_port = ntohs(m->id.idiag_dport);
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct ct_conn *p = realloc(t->conn, cap * sizeof(*p));

		if (p == NULL) {
			t->nomem = true;
			return MNL_CB_ERROR;
		}
		t->conn = p;
		t->cap = cap;
	}
	t->conn[t->n++] = c;
	return MNL_CB_OK;
}

/* The sockets of this network namespace on local TCP port `port` (sock_diag): the live
 * connections (every state but TIME_WAIT and CLOSE: those hold no connection), and whether
 * another socket listens there. The kernel filters by state and port: a busy host has tens of
 * thousands of sockets in TIME_WAIT, and this runs every second while draining. */
static int ct_read_socks(struct ct_socks *t, uint16_t port, char *err, size_t errlen)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	/* sport >= port && sport <= port: each comparison is an op and the port in the "no"
	 * field of the op after it; a failed test jumps past the end (reject). */
	const struct inet_diag_bc_op bc[4] = {
		{ INET_DIAG_BC_S_GE, 8, 20 }, { 0, 0, port },
		{ INET_DIAG_BC_S_LE, 8, 12 }, { 0, 0, port },
	};
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct mnl_socket *nl;
	int ret = -1;

	nl = mnl_socket_open(NETLINK_SOCK_DIAG);
	if (nl == NULL || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		err_set_errno(err, errlen, "cannot open sock_diag");
		goto out;
	}
	for (size_t i = 0; i < sizeof(families); i++) {
		struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
		struct inet_diag_req_v2 *r;
		unsigned seq = (unsigned)i + 1;
		ssize_t len;
		int cb;

		nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
		nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
		nlh->nlmsg_seq = seq;
		r = mnl_nlmsg_put_extra_header(nlh, sizeof(*r));
		r->sdiag_family = families[i];
		r->sdiag_protocol = IPPROTO_TCP;
		r->idiag_states = ((1u << CT_SK_STATES) - 1) &
		                  ~((1u << CT_SK_TIME_WAIT) | (1u << CT_SK_CLOSE));
		mnl_attr_put(nlh, INET_DIAG_REQ_BYTECODE, sizeof(bc), bc);
		if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
			err_set_errno(err, errlen, "sock_diag: sending the request");
			goto out;
		}
		do {
			len = mnl_socket_recvfrom(nl, buf, sizeof(buf));
			cb = len > 0 ? mnl_cb_run(buf, (size_t)len, seq, mnl_socket_get_portid(nl),
			                          ct_sock_msg, t) : MNL_CB_ERROR;
		} while (cb == MNL_CB_OK);
		if (t->nomem) {
			snprintf(err, errlen, "sock_diag: out of memory");
			goto out;
		}
		/* No IPv6 in this kernel: no IPv6 socket to find. */
		if (cb == MNL_CB_ERROR && !(families[i] == AF_INET6 && errno == ENOENT)) {
			err_set_errno(err, errlen, "sock_diag: listing the IPv%d sockets on port %u",
			              families[i] == AF_INET ? 4 : 6, port);
			goto out;
		}
	}
	if (t->n > 1) /* qsort and bsearch want a real array, even an empty one */
		qsort(t->conn, t->n, sizeof(*t->conn), ct_conn_cmp);
	ret = 0;
out:
	if (nl != NULL)
		mnl_socket_close(nl);
	return ret;
}

static bool ct_stale(const struct nf_conntrack *ct, const struct ct_socks *t)
{
	struct ct_conn key;

	memset(&key, 0, sizeof(key));
	switch (nfct_get_attr_u8(ct, ATTR_TCP_STATE)) {
	case TCP_CONNTRACK_SYN_SENT:
	case TCP_CONNTRACK_SYN_RECV:
	case TCP_CONNTRACK_SYN_SENT2:
		return !t->listening;
	default:
		break;
	}
	/* The reply tuple: from the listen address and port to the client. */
	if (nfct_get_attr_u8(ct, ATTR_L3PROTO) == AF_INET) {
		ct_mapped(key.local, nfct_get_attr(ct, ATTR_REPL_IPV4_SRC));
		ct_mapped(key.remote, nfct_get_attr(ct, ATTR_REPL_IPV4_DST));
	} else {
		memcpy(key.local, nfct_get_attr(ct, ATTR_REPL_IPV6_SRC), 16);
		memcpy(key.remote, nfct_get_attr(ct, ATTR_REPL_IPV6_DST), 16);
	}
	key.remote_port = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST));
	return t->n == 0 ||
	       bsearch(&key, t->conn, t->n, sizeof(*t->conn), ct_conn_cmp) == NULL;
}

/* The entry as it is now (NFCT_Q_GET). */
struct ct_fresh {
	bool found;
	uint8_t state;
};

static int ct_fresh_cb(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *arg)
{
	struct ct_fresh *f = arg;

	(void)type;
	f->found = true;
	f->state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
	/* Not NFCT_CB_STOP: that leaves the kernel's ack unread, and a thousand of them fill the
	 * socket (ENOBUFS). */
	return NFCT_CB_CONTINUE;
}

/* The answer to an exact sock_diag lookup: a socket that holds the connection. */
static int ct_one_msg(const struct nlmsghdr *nlh, void *arg)
{
	const struct inet_diag_msg *m = mnl_nlmsg_get_payload(nlh);
	bool *held = arg;

	/* The lookup falls back to the listener when no connection has the four-tuple. */
	if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(*m) && m->idiag_state != CT_SK_TIME_WAIT &&
	    m->idiag_state != CT_SK_CLOSE && m->idiag_state != CT_SK_LISTEN)
		*held = true;
	return MNL_CB_OK;
}

/* Whether a socket holds the connection of the entry's reply tuple now: one lookup by its
 * four-tuple, no dump. -1 (errno set) when sock_diag cannot tell. */
static int ct_sock_held(struct mnl_socket *nl, const struct nf_conntrack *ct, unsigned seq)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct inet_diag_req_v2 *r;
	bool held = false;
	ssize_t len;
	int cb;

	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq;
	r = mnl_nlmsg_put_extra_header(nlh, sizeof(*r));
	r->sdiag_family = nfct_get_attr_u8(ct, ATTR_L3PROTO);
	r->sdiag_protocol = IPPROTO_TCP;
	r->idiag_states = ~0u;
	r->id.idiag_sport = nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC);
	r->id.idiag_dport = nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST);
	r->id.idiag_cookie[0] = r->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (r->sdiag_family == AF_INET) {
		memcpy(r->id.idiag_src, nfct_get_attr(ct, ATTR_REPL_IPV4_SRC), 4);
		memcpy(r->id.idiag_dst, nfct_get_attr(ct, ATTR_REPL_IPV4_DST), 4);
	} else {
		memcpy(r->id.idiag_src, nfct_get_attr(ct, ATTR_REPL_IPV6_SRC), 16);
		memcpy(r->id.idiag_dst, nfct_get_attr(ct, ATTR_REPL_IPV6_DST), 16);
	}
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -1;
	len = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (len <= 0)
		return -1;
	cb = mnl_cb_run(buf, (size_t)len, seq, mnl_socket_get_portid(nl), ct_one_msg, &held);
	if (cb == MNL_CB_ERROR && errno != ENOENT)
		return -1;
	return held;
}

/* Just before an entry goes, look again: a SYN from the client's port may have taken its
 * binding since the dump (a new connection, in its handshake with a listener on the port).
 * The dump and the socket table are tens of milliseconds old by the last entry of a thousand;
 * this narrows the window to the two lookups before the delete. Still stale: 1; changed, or
 * held now: 0; gone: 2; cannot tell: -1. */
static int ct_still_stale(struct nfct_handle *h, struct mnl_socket *nl,
                          struct nf_conntrack *ct, bool listening, unsigned seq)
{
	struct ct_fresh f = { false, 0 };
	int held;

	if (nfct_callback_register(h, NFCT_T_ALL, ct_fresh_cb, &f) < 0)
		return -1;
	if (nfct_query(h, NFCT_Q_GET, ct) < 0) {
		nfct_callback_unregister(h);
		return errno == ENOENT ? 2 : -1;
	}
	nfct_callback_unregister(h);
	if (!f.found)
		return 2;
	if (f.state != nfct_get_attr_u8(ct, ATTR_TCP_STATE))
		return 0; /* a packet moved it since the dump: the next sweep sees it anew */
	switch (f.state) {
	case TCP_CONNTRACK_SYN_SENT:
	case TCP_CONNTRACK_SYN_RECV:
	case TCP_CONNTRACK_SYN_SENT2:
		return !listening;
	default:
		break;
	}
	held = ct_sock_held(nl, ct, seq);
	return held < 0 ? -1 : !held;
}

static const char *ct_open_hint(int e)
{
	return e == EPROTONOSUPPORT || e == ENOENT
	       ? " (the kernel has no ctnetlink: load nf_conntrack_netlink)" : "";
}

static int ct_sweep(uint16_t port, bool own_listener, bool del, struct ct_counts *n, char *err,
                    size_t errlen)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	static const struct nfct_filter_dump_mark dnat = { IPS_DST_NAT, IPS_DST_NAT };
	struct ct_dump d = { .port_be = htons(port) };
	struct ct_socks t = { 0 };
	struct nfct_filter_dump *fd = NULL;
	struct nfct_handle *h;
	struct mnl_socket *nl = NULL;
	int ret = -1;

	n->seen = n->deleted = 0;
	h = nfct_open(CONNTRACK, 0);
	if (h == NULL) {
		snprintf(err, errlen, "cannot open ctnetlink: %s%s", strerror(errno),
		         ct_open_hint(errno));
		return -1;
	}
	if (nfct_callback_register(h, NFCT_T_ALL, ct_collect, &d) < 0) {
		err_set_errno(err, errlen, "ctnetlink: registering the dump callback");
		goto out;
	}
	fd = nfct_filter_dump_create();
	if (fd == NULL) {
		snprintf(err, errlen, "ctnetlink: out of memory for a dump filter");
		goto out;
	}
	/* Only the entries with a destination NAT: on a busy host the table holds every flow of
	 * the last minutes, and this runs every second while draining. Kernels before 6.1 ignore
	 * the status filter: then every entry comes, and ct_collect still picks ours. */
	nfct_filter_dump_set_attr(fd, NFCT_FILTER_DUMP_STATUS, &dnat);
	for (size_t i = 0; i < sizeof(families); i++) {
		/* One family at a time: a dump of AF_UNSPEC is not answered by every kernel. An
		 * empty table or a family without conntrack answers with no entry, not an error. */
		nfct_filter_dump_set_attr_u8(fd, NFCT_FILTER_DUMP_L3NUM, families[i]);
		if (nfct_query(h, NFCT_Q_DUMP_FILTER, fd) < 0 && errno != ENOENT) {
			err_set_errno(err, errlen, "ctnetlink: listing the IPv%d connections",
			              families[i] == AF_INET ? 4 : 6);
			goto out;
		}
		if (d.nomem) {
			snprintf(err, errlen, "ctnetlink: out of memory listing connections");
			goto out;
		}
	}
	n->seen = d.n;
	if (d.n == 0) {
		ret = 0;
		goto out;
	}
	/* After the dump: see the top of this file. */
	t.own_listener = own_listener;
	if (ct_read_socks(&t, port, err, errlen) < 0)
		goto out;
	/* The dump's callback cannot ask the same socket anything: delete once it is over. */
	nfct_callback_unregister(h);
	nl = del ? mnl_socket_open(NETLINK_SOCK_DIAG) : NULL;
	if (del && (nl == NULL || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)) {
		err_set_errno(err, errlen, "cannot open sock_diag");
		goto out;
	}
	for (size_t i = 0; i < d.n; i++) {
		int again;

		if (!ct_stale(d.found[i], &t))
			continue;
		if (!del) {
			n->deleted++;
			continue;
		}
		again = ct_still_stale(h, nl, d.found[i], t.listening, (unsigned)i + 100);
		if (again < 0) {
			err_set_errno(err, errlen,
			              "looking at a connection entry again before deleting it");
			goto out;
		}
		if (again == 0)
			continue;
		if (again == 2) {
			n->deleted++; /* gone by itself since the dump */
			continue;
		}
		if (nfct_query(h, NFCT_Q_DESTROY, d.found[i]) == 0 || errno == ENOENT) {
			n->deleted++; /* ENOENT: gone by itself since the dump */
		} else {
			err_set_errno(err, errlen, "ctnetlink: deleting a connection entry");
			goto out;
		}
	}
	ret = 0;
out:
	for (size_t i = 0; i < d.n; i++)
		nfct_destroy(d.found[i]);
	free(d.found);
	free(t.conn);
	if (fd != NULL)
		nfct_filter_dump_destroy(fd);
	if (nl != NULL)
		mnl_socket_close(nl);
	nfct_close(h);
	return ret;
}

int ct_clear(uint16_t port, bool own_listener, struct ct_counts *n, char *err, size_t errlen)
{
	return ct_sweep(port, own_listener, true, n, err, errlen);
}

int ct_count_stale(uint16_t port, struct ct_counts *n, char *err, size_t errlen)
{
	return ct_sweep(port, false, false, n, err, errlen);
}
