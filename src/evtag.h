/* The tag (epoll_data.u64) of each descriptor in a worker's epoll set: encoded and decoded here
 * alone. The worker's own descriptors have small numbers; a connection's two sockets carry the
 * address of its struct conn, whose low bit (free: the struct is aligned) says which socket. */
#ifndef EVTAG_H
#define EVTAG_H

#include <stdbool.h>
#include <stdint.h>

enum evtag_own {
	EVTAG_LISTEN = 1, /* the listener */
	EVTAG_DRAIN = 2,  /* the drain pipe */
};
/* Tags below this are the worker's own: no struct conn lives at so low an address. */
#define EVTAG_RESERVED 4096u

static inline uint64_t evtag_conn(const void *conn, bool backend)
{
	return (uint64_t)(uintptr_t)conn | (backend ? 1u : 0u);
}

static inline bool evtag_is_conn(uint64_t tag)
{
	return tag >= EVTAG_RESERVED;
}

static inline void *evtag_conn_ptr(uint64_t tag)
{
	return (void *)(uintptr_t)(tag & ~(uint64_t)1);
}

/* Whether the tag is that of the connection's backend socket (else its client socket). */
static inline bool evtag_conn_backend(uint64_t tag)
{
	return (tag & 1) != 0;
}

#endif
