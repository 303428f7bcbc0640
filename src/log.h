/* Logging. The parent writes to stderr (foreground) or syslog (daemon); workers send lines to
 * the parent through the log pipe, because a sandboxed worker can open nothing. */
#ifndef LOG_H
#define LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#define LOG_LINE_MAX 512 /* one write() to a pipe of at most PIPE_BUF bytes is atomic */

void log_init(const char *ident, int use_syslog, int verbose);
/* Worker: from now on, lines go to fd (non-blocking); lines that do not fit are dropped.
 * Informational lines wait in a buffer for log_flush (warnings and errors flush it at once);
 * log_flush_due says in how many ms it is due (0: now, -1: nothing is waiting). */
#define LOG_FLUSH_MS 100
void log_to_pipe(int fd);
int log_flush_due(uint64_t now_ms);
void log_flush(void);
int log_is_verbose(void);
/* Every message comes in two forms, as in OpenBSD's log.c: the text as given, and the text
 * with ": " and strerror(errno) appended (the _errno forms, errno as it was at the call). */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_msg_errno(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int prio, const char *fmt, va_list ap);
/* Parent: write a line received from worker pid ("<P>text", or text at LOG_INFO). Between log_batch_begin and
 * log_batch_end, lines for stderr are gathered and written at once (syslog: one by one). */
void log_relay_line(long pid, const char *line, size_t len);
void log_batch_begin(void);
void log_batch_end(void);

/* Log at LOG_ERR and _exit(status) at once: for what cannot continue. fatal exits 1. */
__attribute__((noreturn, format(printf, 2, 3))) void fatal_exit(int status, const char *fmt, ...);
__attribute__((noreturn, format(printf, 2, 3))) void fatal_exit_errno(int status,
                                                                      const char *fmt, ...);
#define fatal(...) fatal_exit(1, __VA_ARGS__)
#define fatal_errno(...) fatal_exit_errno(1, __VA_ARGS__)

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_err_errno(...) log_msg_errno(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_warn_errno(...) log_msg_errno(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* The same two forms for the message a function hands back in err (errlen bytes) with its -1:
 * err_set writes the text, err_set_errno the text, ": " and strerror(errno). */
void err_set(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void err_set_errno(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
