#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workermsg.h"

static char workermsg_code(enum workermsg_kind kind)
{
	switch (kind) {
	case WORKERMSG_READY: return 'R';
	case WORKERMSG_CLOSED: return 'L';
	default: return '\0';
	}
}

size_t workermsg_encode(enum workermsg_kind kind, long pid, char *buf, size_t len)
{
	char code = workermsg_code(kind);
	int n;

	if (code == '\0')
		return 0;
	n = snprintf(buf, len, "%c%c %ld\n", WORKERMSG_CONTROL, code, pid);
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

enum workermsg_kind workermsg_decode(const char *line, long *pid)
{
	enum workermsg_kind kind;
	char *end;
	long p;

	if (line[0] != WORKERMSG_CONTROL)
		return WORKERMSG_LOG;
	if (line[1] == workermsg_code(WORKERMSG_READY))
		kind = WORKERMSG_READY;
	else if (line[1] == workermsg_code(WORKERMSG_CLOSED))
		kind = WORKERMSG_CLOSED;
	else
		return WORKERMSG_UNKNOWN;
	if (line[2] != ' ')
		return WORKERMSG_UNKNOWN;
	errno = 0;
	p = strtol(line + 3, &end, 10);
	if (errno != 0 || end == line + 3 || *end != '\0')
		return WORKERMSG_UNKNOWN;
	*pid = p;
	return kind;
}

char *workermsg_space(struct workermsg_lines *l, size_t *room)
{
	*room = sizeof(l->buf) - l->len;
	return l->buf + l->len;
}

void workermsg_split(struct workermsg_lines *l, size_t n, workermsg_line_fn *fn, void *arg)
{
	char *start = l->buf, *nl;

	l->len += n;
	while ((nl = memchr(start, '\n', l->len - (size_t)(start - l->buf)))) {
		*nl = '\0';
		fn(arg, start, (size_t)(nl - start));
		start = nl + 1;
	}
	l->len -= (size_t)(start - l->buf);
	memmove(l->buf, start, l->len);
	if (l->len == sizeof(l->buf))
		l->len = 0;
}

void workermsg_finish(struct workermsg_lines *l, workermsg_line_fn *fn, void *arg)
{
	/* len < sizeof(buf): workermsg_split empties a full buffer, so the NUL fits. */
	if (l->len > 0) {
		l->buf[l->len] = '\0';
		fn(arg, l->buf, l->len);
	}
	l->len = 0;
}
