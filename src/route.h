/* -transparent: the policy routing that brings the web server's replies back to the proxy.
 *
 * A fallback connection leaves from the visitor's address, so the web server answers to that
 * address; without these rules the answer would leave the host. Per family (FW_V4, FW_V6):
 *   rule  from 127.0.0.0/8 (::1/128) iif lo lookup ROUTE_TABLE    (a web server on loopback)
 *   rule  fwmark CONN_MARK lookup ROUTE_TABLE                     (on the host's own addresses)
 *   route local 0.0.0.0/0 (::/0) dev lo table ROUTE_TABLE
 * The marked replies carry the mark through CONNMARK rules the firewall backend installs.
 * Every rule and route is tagged with ROUTE_PROTO (FRA_PROTOCOL, rtm_protocol): that is how
 * route_clear finds them again, ours or a dead instance's. Parent only (CAP_NET_ADMIN). */
#ifndef ROUTE_H
#define ROUTE_H

#include <stddef.h>

#define ROUTE_TABLE 21443u   /* the routing table of the local route */
#define ROUTE_PRIO 21443u    /* priority of the first rule; the second is ROUTE_PRIO + 1 */
#define ROUTE_PROTO 243      /* "proto 243" in ip rule / ip route: ours */

/* Install the rules and routes for families (FW_V4|FW_V6), after clearing leftovers. On
 * failure nothing is left behind, and err says what failed. Returns 0 or -1. */
int route_install(int families, char *err, size_t errlen);

/* Delete every rule and route tagged ROUTE_PROTO in ROUTE_TABLE, of both families; *n (if not
 * NULL) counts them. Returns 0 or -1 with a message in err. */
int route_clear(unsigned *n, char *err, size_t errlen);

#endif
