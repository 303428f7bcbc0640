/* -transparent: the policy routing that brings the web server's replies back to the proxy.
 *
 * A fallback connection leaves from the visitor's address, so the web server answers to that
 * address; without these rules the answer would leave the host. Per family (FW_V4, FW_V6):
 *   rule  from 127.0.0.0/8 (::1/128) iif lo lookup ROUTE_TABLE    (a web server on loopback)
 *   rule  fwmark ROUTE_MARK lookup ROUTE_TABLE                    (on the host's own addresses)
 *   route local 0.0.0.0/0 (::/0) dev lo table ROUTE_TABLE
 * Each instance has a table of its own, ROUTE_TABLE_BASE + its pid: an instance still draining
 * and the one started after it each keep theirs, and a dead instance's are told by its pid, as
 * the firewall rules are. Every rule and route is also tagged with ROUTE_PROTO (FRA_PROTOCOL,
 * rtm_protocol). Parent only (CAP_NET_ADMIN). */
#ifndef ROUTE_H
#define ROUTE_H

#include <stddef.h>

#define ROUTE_TABLE_BASE 0x41410000u /* + pid: an instance's routing table */
#define ROUTE_PID_MAX 0x400000u      /* PID_MAX_LIMIT: the tables ROUTE_TABLE_BASE + 0..this */
#define ROUTE_PRIO 21443u    /* priority of the first rule; the second is ROUTE_PRIO + 1 */
#define ROUTE_PROTO 243      /* "proto 243" in ip rule / ip route: ours */
/* The mark (SO_MARK) a worker puts on its connections to the fallback; the firewall's mark
 * rules copy it to the connection and to the web server's replies (CONNMARK), and the fwmark
 * rule above routes those back to the proxy. */
#define ROUTE_MARK 0x2143u

/* Install this process's rules and routes for families (FW_V4|FW_V6), after clearing a dead
 * instance's. On failure nothing of ours is left behind, and err says what failed. Returns 0
 * or -1. */
int route_install(int families, char *err, size_t errlen);

/* Delete this process's rules and routes (own), or those of instances that are gone (stale:
 * the pid in the table number does not run, or is no acme-alpn-proxy). *n (if not NULL)
 * counts them. Returns 0 or -1 with a message in err. */
enum route_which { ROUTE_OWN, ROUTE_STALE };
int route_clear(enum route_which which, unsigned *n, char *err, size_t errlen);

#endif
