/* One proxied connection: read the ClientHello -> route -> connect -> relay -> close. */
#ifndef CONN_H
#define CONN_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

#define CONN_CONNECT_TIMEOUT_MS 5000 /* a backend that does not answer a SYN in time is down */
#define CONN_RELAY_BUF 16384         /* bytes buffered per direction */
#define CONN_HELLO_BUF_MAX 65536     /* raw bytes held while waiting for a whole hello */

struct conn;

/* Take over an accepted client socket. Returns NULL (and closes cfd) when out of memory. */
struct conn *conn_new(const struct config *cfg, int cfd, const struct sockaddr_storage *peer,
                      uint64_t now_ms);

/* The poll entries this connection wants now: fills pfd[0] and pfd[1] (fd -1 when unused).
 * Returns 2. */
int conn_poll_prepare(struct conn *c, struct pollfd *pfd);

/* Act on the revents of the entries conn_poll_prepare gave. Returns false when the
 * connection has ended: it was logged, closed and freed. */
bool conn_poll_handle(struct conn *c, const struct pollfd *pfd, int n, uint64_t now_ms);

/* The next deadline of this connection in ms (0: none). */
uint64_t conn_deadline(const struct conn *c);

/* Act on a deadline that has passed. Returns false when the connection ended (freed). */
bool conn_expire(struct conn *c, uint64_t now_ms);

/* Log "why" with the connection's line, close and free it. */
void conn_abort(struct conn *c, const char *why, uint64_t now_ms);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t conn_now_ms(void);

#endif
