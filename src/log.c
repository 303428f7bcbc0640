#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int log_syslog;
static int log_verbose;
static int log_pipe_fd = -1;
static char log_buf[PIPE_BUF];       /* a worker's lines not yet written */
static size_t log_buflen;
static uint64_t log_first_ms;        /* when log_flush_due first saw lines waiting; 0: not yet */
static const char *log_ident = "acme-alpn-proxy";

void log_init(const char *ident, int use_syslog, int verbose)
{
	log_ident = ident;
	log_syslog = use_syslog;
	log_verbose = verbose;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_to_pipe(int fd)
{
	log_pipe_fd = fd;
	log_buflen = 0;
}

int log_flush_due(uint64_t now_ms)
{
	if (log_pipe_fd < 0 || log_buflen == 0)
		return -1;
	/* The worker asks at the end of each turn: the lines are at most that turn old. */
	if (log_first_ms == 0)
		log_first_ms = now_ms;
	return now_ms >= log_first_ms + LOG_FLUSH_MS ? 0
	                                             : (int)(log_first_ms + LOG_FLUSH_MS - now_ms);
}

void log_flush(void)
{
	if (log_pipe_fd >= 0 && log_buflen > 0)
		(void)!write(log_pipe_fd, log_buf, log_buflen);
	log_buflen = 0;
	log_first_ms = 0;
}

int log_is_verbose(void)
{
	return log_verbose;
}

static const char *prio_word(int prio)
{
	switch (prio) {
	case LOG_ERR: return "error: ";
	case LOG_WARNING: return "warning: ";
	case LOG_DEBUG: return "debug: ";
	default: return "";
	}
}

/* Parent, on stderr: the lines relayed from one read of the log pipe, written at once. */
static bool log_batching;
static long log_batch_pid;
static char log_batch[8192];
static size_t log_batchlen;

static void log_batch_write(void)
{
	if (log_batchlen > 0)
		(void)!write(STDERR_FILENO, log_batch, log_batchlen);
	log_batchlen = 0;
}

void log_batch_begin(void)
{
	if (log_syslog)
		return;
	log_batching = true;
	log_batch_pid = (long)getpid();
	log_batchlen = 0;
}

void log_batch_end(void)
{
	if (!log_batching)
		return;
	log_batch_write();
	log_batching = false;
}

static void log_emit(int prio, const char *text)
{
	int n;

	if (log_syslog) {
		syslog(prio, "%s", text);
		return;
	}
	if (!log_batching) {
		fprintf(stderr, "%s[%ld]: %s%s\n", log_ident, (long)getpid(), prio_word(prio), text);
		return;
	}
	for (int tries = 0; tries < 2; tries++) {
		n = snprintf(log_batch + log_batchlen, sizeof(log_batch) - log_batchlen,
		             "%s[%ld]: %s%s\n", log_ident, log_batch_pid, prio_word(prio), text);
		if (n >= 0 && (size_t)n < sizeof(log_batch) - log_batchlen) {
			log_batchlen += (size_t)n;
			return;
		}
		log_batch_write(); /* full: write what it holds, then try again */
	}
}

void log_vmsg(int prio, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	int n;

	if (prio == LOG_DEBUG && !log_verbose)
		return;
	if (log_pipe_fd < 0) {
		vsnprintf(line, sizeof(line), fmt, ap);
		log_emit(prio, line);
		return;
	}
	/* Worker: "<P>text\n" lines (the parent adds the pid of the pipe's worker), gathered in log_buf and written by log_flush when it is
	 * full or its oldest line is LOG_FLUSH_MS old: one write and one wake-up of the parent for
	 * a batch of connections instead of one per line. A write of at most PIPE_BUF bytes to a
	 * pipe is atomic, so the lines of several workers never mix. Warnings and errors go out at once
	 * (with the lines before them): the worker may not live to the end of its turn. The pipe
	 * is non-blocking: a worker never stalls on a slow parent, the lines are lost. */
	n = snprintf(line, sizeof(line), "<%d>", prio);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	if (log_buflen + (size_t)n > sizeof(log_buf))
		log_flush();
	memcpy(log_buf + log_buflen, line, (size_t)n);
	log_buflen += (size_t)n;
	if (prio <= LOG_WARNING)
		log_flush();
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(prio, fmt, ap);
	va_end(ap);
}

void log_relay_line(long pid, const char *line, size_t len)
{
	char text[LOG_LINE_MAX + 32];
	int prio = LOG_INFO, n;

	if (len >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>') {
		prio = line[1] - '0';
		line += 3;
		len -= 3;
	}
	/* The pid is the one of the pipe the line came through: a worker cannot sign for
	 * another. Text without a priority (a library writing to stderr) is information. */
	n = snprintf(text, sizeof(text), "[%ld] ", pid);
	if (len > LOG_LINE_MAX - 1)
		len = LOG_LINE_MAX - 1;
	memcpy(text + n, line, len);
	text[(size_t)n + len] = '\0';
	if (prio == LOG_DEBUG && !log_verbose)
		return;
	log_emit(prio, text);
}

/* fmt, then ": " and the text of errnum, into buf. */
static void log_vformat_errno(char *buf, size_t len, int errnum, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, len, fmt, ap);

	if (n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, ": %s", strerror(errnum));
}

/* log_vmsg at prio with ": strerror(errnum)" appended. */
static void log_vmsg_errno(int prio, int errnum, const char *fmt, va_list ap)
{
	char text[LOG_LINE_MAX];

	log_vformat_errno(text, sizeof(text), errnum, fmt, ap);
	log_msg(prio, "%s", text);
}

void log_msg_errno(int prio, const char *fmt, ...)
{
	int errnum = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vmsg_errno(prio, errnum, fmt, ap);
	va_end(ap);
	errno = errnum;
}

void fatal_exit(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap);
	va_end(ap);
	_exit(status);
}

void fatal_exit_errno(int status, const char *fmt, ...)
{
	int errnum = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vmsg_errno(LOG_ERR, errnum, fmt, ap);
	va_end(ap);
	_exit(status);
}

void err_set(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void err_set_errno(char *err, size_t errlen, const char *fmt, ...)
{
	int errnum = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vformat_errno(err, errlen, errnum, fmt, ap);
	va_end(ap);
	errno = errnum;
}
