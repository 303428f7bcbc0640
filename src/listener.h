/* The listening socket: non-blocking, dual-stack when bound to [::]. */
#ifndef LISTENER_H
#define LISTENER_H

#include <stddef.h>
#include "config.h"

/* Returns the listening fd, or -1 with a message in err. */
int listener_open(const struct endpoint *ep, char *err, size_t errlen);

#endif
