/* The listening socket: non-blocking, dual-stack when bound to [::]. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include "config.h"

/* Returns the listening fd, or -1 with a message in err. defer: accept a connection only once
 * its first bytes came (TCP_DEFER_ACCEPT), or after about LISTENER_DEFER_SECS without them. */
int listener_open(const struct endpoint *ep, bool defer, char *err, size_t errlen);

/* A connection that sends nothing is still accepted after this long (the first SYN-ACK
 * retransmission brings its ACK again, and that one is taken). */
#define LISTENER_DEFER_SECS 1

/* The shortest grace period (-grace) that may be given with defer: the deferral and the round
 * trip of the SYN-ACK that ends it must be over before the listener closes (listener.c). */
#define LISTENER_DEFER_MIN_GRACE_MS (LISTENER_DEFER_SECS * 1000 + 500)

#endif
