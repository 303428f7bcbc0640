/* Stale NAT bindings to the listener, deleted through ctnetlink.
 *
 * Why (see also firewall_iptc.c): the legacy nat table keeps connection tracking on in a network
 * namespace only while it holds a rule. When our hold rule goes, tracking stops, but the
 * entries stay until they time out, frozen; when a later start switches tracking on again, they
 * apply again. An entry that still carries the REDIRECT binding (TIME_WAIT 120 s, CLOSE 10 s,
 * SYN_SENT/SYN_RECV, a frozen ESTABLISHED) takes a new connection that reuses the client's
 * address and port to the listen port: a SYN meeting a CLOSE entry whose last RST came from
 * our side, or a handshake entry, keeps the old binding (refused once the listener is closed),
 * and a packet of a direct connection picked up mid-stream as tracking switches on can match a
 * frozen entry and be rewritten. A redirected flow is recognised by its reply tuple: the reply
 * comes from the listen port. */
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

struct ct_dump {
	uint16_t port_be;
	enum ct_scope scope;
	struct nf_conntrack **found;
	size_t n, cap;
	size_t seen;
	bool nomem;
};

static bool ct_state_in(uint8_t state, enum ct_scope scope)
{
	switch (state) {
	case TCP_CONNTRACK_TIME_WAIT:
	case TCP_CONNTRACK_CLOSE:
		return true;
	case TCP_CONNTRACK_SYN_SENT:
	case TCP_CONNTRACK_SYN_RECV:
	case TCP_CONNTRACK_SYN_SENT2:
		return scope != CT_CLOSED;
	default:
		return scope == CT_ALL;
	}
}

static int ct_collect(enum nf_conntrack_msg_type type, struct nf_conntrack *ct, void *arg)
{
	struct ct_dump *d = arg;
	struct nf_conntrack *copy;

	(void)type;
	if (nfct_get_attr_u8(ct, ATTR_L4PROTO) != IPPROTO_TCP ||
	    nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC) != d->port_be)
		return NFCT_CB_CONTINUE;
	d->seen++;
	if (!ct_state_in(nfct_get_attr_u8(ct, ATTR_TCP_STATE), d->scope))
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

enum ct_scope ct_scope_for(int others, bool other_listener)
{
	if (others == 0)
		return CT_ALL;
	return other_listener ? CT_CLOSED : CT_DEAD;
}

static const char *ct_open_hint(int e)
{
	return e == EPROTONOSUPPORT || e == ENOENT
	       ? " (the kernel has no ctnetlink: load nf_conntrack_netlink)" : "";
}

int ct_clear(uint16_t port, enum ct_scope scope, struct ct_counts *n, char *err, size_t errlen)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	static const struct nfct_filter_dump_mark dnat = { IPS_DST_NAT, IPS_DST_NAT };
	struct ct_dump d = { .port_be = htons(port), .scope = scope };
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
	 * the last minutes (TIME_WAIT alone lasts 120 s), and this runs every second while
	 * draining. Kernels before 6.1 ignore the status filter: then every entry comes, and
	 * ct_collect still picks ours. */
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
	/* The dump's callback cannot ask the same socket anything: delete once it is over. */
	nfct_callback_unregister(h);
	for (size_t i = 0; i < d.n; i++) {
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
	n->seen = d.seen;
	for (size_t i = 0; i < d.n; i++)
		nfct_destroy(d.found[i]);
	free(d.found);
	if (fd != NULL)
		nfct_filter_dump_destroy(fd);
	nfct_close(h);
	return ret;
}
