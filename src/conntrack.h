/* The conntrack entries of the connections REDIRECTed to the listener, through ctnetlink
 * (libnetfilter-conntrack). Parent only: needs CAP_NET_ADMIN. */
#ifndef CONNTRACK_H
#define CONNTRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ct_counts {
	size_t seen;    /* entries bound to the port */
	size_t deleted; /* of those, deleted (or gone by themselves meanwhile) */
};

/* Delete the stale NAT bindings to TCP port `port` (host order), IPv4 and IPv6: the entries
 * whose reply tuple comes from that port (connections REDIRECTed to a listener on it) and that
 * no connection can still use. That is, an entry past its handshake whose connection no socket
 * of this network namespace holds any more (none, or one in TIME_WAIT); and a half-open one
 * (SYN_SENT, SYN_RECV) when nothing listens on the port that could complete it. With
 * own_listener, the caller's listener on the port does not count: no rule redirects to it
 * yet. Connections of other instances, running or draining, keep their entries. Returns 0 with
 * *n filled, or -1 with a message in err. */
int ct_clear(uint16_t port, bool own_listener, struct ct_counts *n, char *err, size_t errlen);

/* What ct_clear(port, false, ...) would delete, counted in n->deleted; nothing is deleted. */
int ct_count_stale(uint16_t port, struct ct_counts *n, char *err, size_t errlen);

#endif
