/* The listening socket: non-blocking, dual-stack when bound to [::]. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"

/* Returns the listening fd, or -1 with a message in err. */
int listener_open(const struct endpoint *ep, char *err, size_t errlen);

/* Whether a socket of this network namespace listens on TCP port (host order), any address. */
bool listener_port_listening(uint16_t port);

#endif
