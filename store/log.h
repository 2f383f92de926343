/*
 * log.h - the one line written per attempt, and where it goes.
 *
 * key=value fields separated by single spaces. The user name is always
 * quoted and escaped (\" \\, and \xHH for blanks, '=', control bytes and
 * every byte outside printable ASCII), so no name can end the field, add a
 * field, split the line, or contain text a grep for " result=" matches.
 */
#ifndef AG_LOG_H
#define AG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

/* Longest log line (bytes, with NUL); fields are cut to fit, never the line. */
#define AG_LOG_LINE_MAX 1024
/* User name bytes kept in a line; a longer name adds user_len=N. */
#define AG_LOG_USER_MAX 128

enum ag_level { AG_LVL_INFO = 0, AG_LVL_WARN = 1, AG_LVL_ERR = 2 };

/* Where a front end wants messages to go (syslog in PAM, utils->log in
 * SASL, stderr in tools). @msg has no trailing newline. */
struct ag_sink {
	void (*fn)(void *ctx, enum ag_level level, const char *msg);
	void *ctx;
};

struct ag_logline {
	int64_t time_ms;
	const char *service;
	const char *user;        /* may be NULL: no user */
	size_t user_len;
	const struct ag_addr *addr; /* family AG_AF_NONE: no address */
	const char *rhost_raw;   /* what the service passed, if not an address */
	size_t rhost_len;
	const char *result;      /* success, fail, unchecked */
	const char *action;      /* allow, tarpit, refuse */
	const char *reason;      /* NULL or a reason name */
	int64_t delay_ms;
	const char *would;       /* log-only: the action that would have been taken */
	const char *event;       /* NULL or "ban", "net_ban", "lock", "ban+lock" ... */
	int64_t until;           /* expiry of a refusal cause or of a new ban/lock */
	double src_score, user_score;
	const char *user_state;  /* ok, locked, unknown */
	bool familiar;
	bool repeat_pw;
	bool sprayed;            /* the password is hot: being sprayed across users */
	bool wave;               /* a host-wide attack wave is on */
	const char *config;      /* NULL, or "missing"/"unreadable": defaults in force */
};

/*
 * Append @len bytes at @in to @out as a quoted, escaped value, keeping at
 * most @max input bytes. Returns the number of bytes written (without NUL),
 * always NUL-terminating @out; never writes past @outlen. Stops early,
 * with the closing quote, if @out is too small.
 */
AG_API size_t ag_log_quote(char *out, size_t outlen, const char *in, size_t len, size_t max);

/* Format @l into @buf (AG_LOG_LINE_MAX bytes is always enough). */
AG_API void ag_log_format(const struct ag_logline *l, char *buf, size_t len);

/* Append @line and a newline to the file at @path, with one write() so
 * lines from many processes never interleave. A missing file is created
 * 0640 less the umask, or 0660 in a directory shared through its group
 * (setgid or group-writable: several services, one log). The descriptor is
 * kept per process and reopened when the file is rotated. Returns 0, or
 * AG_EIO with errno saying why. */
AG_API int ag_log_file_write(const char *path, const char *line);

/* "2026-11-23T13:41:26.123Z" */
AG_API void ag_log_time(int64_t ms, char *buf, size_t len);

#endif
