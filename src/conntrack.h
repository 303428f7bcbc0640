/* The conntrack entries of the connections REDIRECTed to the listener, through ctnetlink
 * (libnetfilter-conntrack). Parent only: needs CAP_NET_ADMIN. */
#ifndef CONNTRACK_H
#define CONNTRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which entries ct_clear deletes, by TCP state. */
enum ct_scope {
	CT_CLOSED,   /* TIME_WAIT and CLOSE: the connection is over */
	CT_DEAD,     /* CT_CLOSED and the handshakes (SYN_SENT, SYN_RECV): none can complete */
	CT_ALL       /* every state, ESTABLISHED included */
};

struct ct_counts {
	size_t seen;    /* entries bound to the port */
	size_t deleted; /* of those, deleted (or gone by themselves meanwhile) */
};

/* What may be deleted, knowing how many other instances are alive (others: their hold rules;
 * -1 when unknown) and whether someone else listens on the port: every binding when no other
 * instance is alive; else the closed ones, and the half-open ones too unless another listener
 * may be completing them. */
enum ct_scope ct_scope_for(int others, bool other_listener);

/* Delete the TCP entries, IPv4 and IPv6, whose reply tuple has source port `port` (host order),
 * that is the NAT bindings of connections redirected to a listener on that port, in the states
 * of scope. Returns 0 with *n filled, or -1 with a message in err. */
int ct_clear(uint16_t port, enum ct_scope scope, struct ct_counts *n, char *err, size_t errlen);

#endif
