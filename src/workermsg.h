/* What a worker writes to its log pipe, and how the parent reads it back. Two kinds of lines,
 * each ended by '\n': log lines ("<prio>text", log.h) and control lines, which start with
 * WORKERMSG_CONTROL and name the writer's pid ("!R pid": accepting; "!L pid": listener
 * closed, draining). The parent believes a control line only with the pid of the pipe's own
 * worker. */
#ifndef WORKERMSG_H
#define WORKERMSG_H

#include <limits.h>
#include <stddef.h>

#define WORKERMSG_CONTROL '!'

enum workermsg_kind {
	WORKERMSG_LOG,     /* not a control line: a log line */
	WORKERMSG_READY,   /* the worker accepts */
	WORKERMSG_CLOSED,  /* the worker closed its listener (draining) */
	WORKERMSG_UNKNOWN, /* a control line of no kind above, or without a valid pid */
};

/* Write the control line of kind (READY or CLOSED) for pid, '\n' included, into buf. Returns
 * its length, or 0 when len is too small or kind is not a control line's. */
size_t workermsg_encode(enum workermsg_kind kind, long pid, char *buf, size_t len);

/* The kind of line (NUL-terminated, without its '\n'); for READY and CLOSED, *pid is the pid
 * it names. */
enum workermsg_kind workermsg_decode(const char *line, long *pid);

/* The parent's side of one pipe: bytes read so far, cut into lines. A worker writes at most
 * PIPE_BUF bytes of whole lines at once, so a line never outgrows the buffer. */
struct workermsg_lines {
	size_t len;
	char buf[2 * PIPE_BUF];
};

typedef void workermsg_line_fn(void *arg, char *line, size_t len);

/* Where to read the next bytes into, and how many fit (never 0). */
char *workermsg_space(struct workermsg_lines *l, size_t *room);

/* n bytes were read into the space: call fn for each line they complete (NUL-terminated, the
 * '\n' gone) and keep the rest for the next read. A line that fills the whole buffer without
 * an end is longer than any a worker writes: it is dropped. */
void workermsg_split(struct workermsg_lines *l, size_t n, workermsg_line_fn *fn, void *arg);

/* The pipe reached EOF: what is left (a last line without '\n') goes to fn; then empty. */
void workermsg_finish(struct workermsg_lines *l, workermsg_line_fn *fn, void *arg);

#endif
