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
 * dump needs no lock against an instance that starts meanwhile. */
#include "autoconfig.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack_tcp.h>
#include <netinet/in.h>

#include "conntrack.h"

/* /proc/net/tcp states (include/net/tcp_states.h) */
#define CT_TCP_TIME_WAIT 0x06
#define CT_TCP_CLOSE 0x07
#define CT_TCP_LISTEN 0x0a

/* One connection, as the socket table and a reply tuple both name it: IPv4 in the IPv4-mapped
 * IPv6 form (a dual-stack listener's sockets show IPv4 peers so). */
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

/* Hex digits of /proc/net/tcp{,6} into the bytes of an address: each 32-bit word is printed
 * as a host-order number, so reading it back the same way gives the bytes as they were. */
static bool ct_hex_addr(const char *hex, size_t words, uint8_t out[16])
{
	for (size_t i = 0; i < words; i++) {
		char w[9];
		uint32_t v;

		memcpy(w, hex + 8 * i, 8);
		w[8] = '\0';
		if (strspn(w, "0123456789abcdefABCDEF") != 8)
			return false;
		v = (uint32_t)strtoul(w, NULL, 16);
		memcpy(out + 4 * i, &v, 4);
	}
	return true;
}

static void ct_sock_line(struct ct_socks *t, const char *line, bool v6, uint16_t port,
                         bool own_listener)
{
	char lhex[33], rhex[33];
	unsigned lport, rport, st;
	struct ct_conn c;
	size_t words = v6 ? 4 : 1;
	uint8_t a[16];

	memset(&c, 0, sizeof(c));
	if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %32[0-9A-Fa-f]:%x %x", lhex, &lport, rhex,
	           &rport, &st) != 5 || lport != port || strlen(lhex) != 8 * words ||
	    strlen(rhex) != 8 * words)
		return;
	if (st == CT_TCP_LISTEN) {
		/* The caller's own listener has no rule sending it anything yet. */
		if (!own_listener)
			t->listening = true;
		return;
	}
	if (st == CT_TCP_TIME_WAIT || st == CT_TCP_CLOSE)
		return;
	if (!ct_hex_addr(lhex, words, v6 ? c.local : a))
		return;
	if (!v6)
		ct_mapped(c.local, a);
	if (!ct_hex_addr(rhex, words, v6 ? c.remote : a))
		return;
	if (!v6)
		ct_mapped(c.remote, a);
	c.remote_port = (uint16_t)rport;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct ct_conn *p = realloc(t->conn, cap * sizeof(*p));

		if (p == NULL) {
			t->nomem = true;
			return;
		}
		t->conn = p;
		t->cap = cap;
	}
	t->conn[t->n++] = c;
}

/* The live connections on local port `port` (not in TIME_WAIT), and whether another socket
 * listens there. */
static int ct_read_socks(struct ct_socks *t, uint16_t port, bool own_listener, char *err,
                         size_t errlen)
{
	static const char *const files[] = { "/proc/net/tcp", "/proc/net/tcp6" };

	for (size_t i = 0; i < 2; i++) {
		char line[512];
		FILE *f = fopen(files[i], "re");

		if (f == NULL) {
			if (errno == ENOENT && i == 1)
				continue; /* no IPv6 */
			snprintf(err, errlen, "cannot read %s: %s", files[i], strerror(errno));
			return -1;
		}
		while (fgets(line, sizeof(line), f) != NULL)
			ct_sock_line(t, line, i == 1, port, own_listener);
		fclose(f);
		if (t->nomem) {
			snprintf(err, errlen, "out of memory reading %s", files[i]);
			return -1;
		}
	}
	qsort(t->conn, t->n, sizeof(*t->conn), ct_conn_cmp);
	return 0;
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
	return bsearch(&key, t->conn, t->n, sizeof(*t->conn), ct_conn_cmp) == NULL;
}

static const char *ct_open_hint(int e)
{
	return e == EPROTONOSUPPORT || e == ENOENT
	       ? " (the kernel has no ctnetlink: load nf_conntrack_netlink)" : "";
}

int ct_clear(uint16_t port, bool own_listener, struct ct_counts *n, char *err, size_t errlen)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	static const struct nfct_filter_dump_mark dnat = { IPS_DST_NAT, IPS_DST_NAT };
	struct ct_dump d = { .port_be = htons(port) };
	struct ct_socks t = { 0 };
	struct nfct_filter_dump *fd = NULL;
	struct nfct_handle *h;
	int ret = -1;

	n->seen = n->deleted = 0;
	h = nfct_open(CONNTRACK, 0);
	if (h == NULL) {
		snprintf(err, errlen, "cannot open ctnetlink: %s%s", strerror(errno),
		         ct_open_hint(errno));
		return -1;
	}
	if (nfct_callback_register(h, NFCT_T_ALL, ct_collect, &d) < 0) {
		snprintf(err, errlen, "ctnetlink: registering the dump callback: %s",
		         strerror(errno));
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
			snprintf(err, errlen, "ctnetlink: listing the IPv%d connections: %s",
			         families[i] == AF_INET ? 4 : 6, strerror(errno));
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
	if (ct_read_socks(&t, port, own_listener, err, errlen) < 0)
		goto out;
	/* The dump's callback cannot ask the same socket anything: delete once it is over. */
	nfct_callback_unregister(h);
	for (size_t i = 0; i < d.n; i++) {
		if (!ct_stale(d.found[i], &t))
			continue;
		if (nfct_query(h, NFCT_Q_DESTROY, d.found[i]) == 0 || errno == ENOENT) {
			n->deleted++; /* ENOENT: gone by itself since the dump */
		} else {
			snprintf(err, errlen, "ctnetlink: deleting a connection entry: %s",
			         strerror(errno));
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
	nfct_close(h);
	return ret;
}
