/* Connections of one worker: read the ClientHello -> route -> connect -> relay -> close, driven
 * by the worker's epoll set (edge-triggered, each socket registered once). */
#ifndef CONN_H
#define CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define CONN_CONNECT_TIMEOUT_MS 5000 /* a backend that does not answer a SYN in time is down */
#define CONN_HELLO_BUF_MAX 65536     /* raw bytes held while waiting for a whole hello */

struct conn;
struct conn_set;

/* The connections of one worker, registered in epfd. NULL when out of memory. */
struct conn_set *conn_set_new(const struct config *cfg, int epfd);

/* Take over an accepted client socket and register it. Returns -1 when the connection was
 * refused (logged, cfd closed). */
int conn_accept(struct conn_set *s, int cfd, const struct sockaddr_storage *peer,
                uint64_t now_ms);

/* An epoll event whose tag is a connection's (evtag_is_conn, evtag.h). */
void conn_event(struct conn_set *s, uint64_t tag, uint32_t events, uint64_t now_ms);

/* Act on the hello and connect deadlines that have passed; returns the milliseconds until the
 * next one, or -1 when none is pending. Cost: the expired ones, not the open connections. */
int conn_expire(struct conn_set *s, uint64_t now_ms);

/* Whether connections wait for another turn (their last one ended with bytes left to move):
 * then the worker polls without waiting and calls conn_turns after the batch of events. */
bool conn_has_turns(const struct conn_set *s);
void conn_turns(struct conn_set *s, uint64_t now_ms);

/* Free the connections that ended since the last call. Call after each batch of events: an
 * event later in the same batch may still name a connection that ended. */
void conn_reap(struct conn_set *s);

/* Close the pooled free pipes (when descriptors run out); returns how many were closed. */
size_t conn_pool_trim(struct conn_set *s);

/* The descriptors the set may hold: two per connection (client and backend sockets), two per
 * relay pipe in use or in the pool. 0 (the default): no limit. */
void conn_set_limit(struct conn_set *s, size_t fd_max);

/* Whether a new connection fits in that limit, after closing pooled pipes if that makes room. */
bool conn_room(struct conn_set *s);

/* Open connections. */
size_t conn_count(const struct conn_set *s);

/* Log "why" for every open connection and close them all. */
void conn_abort_all(struct conn_set *s, const char *why, uint64_t now_ms);

#endif
