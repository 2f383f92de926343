/*
 * syslog_shim.c - an LD_PRELOAD library for the end-to-end tests: what a
 * process sends to syslog(3) is appended to a file instead, one line per
 * call, in the format rsyslog writes to files in /var/log:
 *
 *     Mmm dd hh:mm:ss HOST IDENT[PID]: MESSAGE
 *
 * (local time, day padded with a space, HOST the short host name, IDENT
 * openlog()'s or else the program's name, PID always given).
 *
 * Cyrus imapd logs only through syslog(3), and a test machine (CI) runs no
 * syslog daemon, so without this a test could not read Cyrus's log. The
 * file is named by AG_SYSLOG_FILE; it is opened for each message (the
 * processes fork, change user and close descriptors), so it must already
 * exist and be writable by every process that logs (the test creates it).
 * Without AG_SYSLOG_FILE, or when it cannot be opened, each call goes on
 * to the real syslog(3): nothing is lost silently.
 *
 * Covered: openlog, closelog, setlogmask, syslog, vsyslog and glibc's
 * fortified __syslog_chk / __vsyslog_chk (what a program built with
 * _FORTIFY_SOURCE calls). Priorities are not written (rsyslog's format has
 * none); setlogmask() is honoured.
 *
 * Built by `make check` only (check_LTLIBRARIES); never installed.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* one line, as rsyslog would cut it (its default maximum message size) */
#define LINE_MAX_BYTES 8192

extern char *program_invocation_short_name;

SHIM_EXPORT void openlog(const char *ident, int option, int facility);
SHIM_EXPORT void closelog(void);
SHIM_EXPORT int setlogmask(int mask);
SHIM_EXPORT void syslog(int pri, const char *fmt, ...) SHIM_PRINTF(2, 3);
SHIM_EXPORT void vsyslog(int pri, const char *fmt, va_list ap) SHIM_PRINTF(2, 0);
SHIM_EXPORT void __syslog_chk(int pri, int flag, const char *fmt, ...) SHIM_PRINTF(3, 4);
SHIM_EXPORT void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap) SHIM_PRINTF(3, 0);

/* openlog()'s ident is kept by pointer, as glibc does (the caller keeps
 * the string alive); the shim's state is per process, like glibc's. */
static const char *shim_ident;
static int shim_mask = 0xff;

typedef void (*vsyslog_fn)(int, const char *, va_list);
typedef void (*openlog_fn)(const char *, int, int);
typedef void (*closelog_fn)(void);
typedef int (*setlogmask_fn)(int);

static void *next(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

/* The real vsyslog, for when there is no file to write to. */
static void real_vsyslog(int pri, const char *fmt, va_list ap) SHIM_PRINTF(2, 0);
static void real_vsyslog(int pri, const char *fmt, va_list ap)
{
	vsyslog_fn f = (vsyslog_fn)next("vsyslog");

	if (f != NULL)
		f(pri, fmt, ap);
}

/* Appends one formatted line to AG_SYSLOG_FILE. Returns 0 when the line
 * was written whole, -1 when the caller should use the real syslog. */
static int to_file(const char *path, const char *fmt, va_list ap, int saved_errno) SHIM_PRINTF(2, 0);
static int to_file(const char *path, const char *fmt, va_list ap, int saved_errno)
{
	char line[LINE_MAX_BYTES], host[256];
	struct tm tm;
	time_t now = time(NULL);
	size_t n, hostlen;
	int len, fd;

	if (localtime_r(&now, &tm) == NULL)
		return -1;
	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	hostlen = strcspn(host, "."); /* the short name, as rsyslog writes it */
	n = strftime(line, sizeof(line), "%b %e %H:%M:%S ", &tm);
	if (n == 0)
		return -1;
	len = snprintf(line + n, sizeof(line) - n, "%.*s %s[%ld]: ",
		       (int)hostlen, host,
		       shim_ident != NULL ? shim_ident : program_invocation_short_name, (long)getpid());
	if (len < 0 || (size_t)len >= sizeof(line) - n)
		return -1;
	n += (size_t)len;
	errno = saved_errno; /* for %m */
	len = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (len < 0)
		return -1;
	n += (size_t)len < sizeof(line) - n - 1 ? (size_t)len : sizeof(line) - n - 2;
	/* a message ending in a newline gets no second one (syslog drops it) */
	if (n > 0 && line[n - 1] == '\n')
		n--;
	line[n++] = '\n';

	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -1;
	/* O_APPEND and one write(): lines of concurrent processes never mix */
	ssize_t w = write(fd, line, n);
	close(fd);
	return w == (ssize_t)n ? 0 : -1;
}

static void shim_vsyslog(int pri, const char *fmt, va_list ap) SHIM_PRINTF(2, 0);
static void shim_vsyslog(int pri, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	const char *path = getenv("AG_SYSLOG_FILE");
	va_list copy;
	int rc = -1;

	if (!(LOG_MASK(LOG_PRI(pri)) & shim_mask))
		return;
	if (path != NULL && path[0] != '\0') {
		va_copy(copy, ap);
		rc = to_file(path, fmt, copy, saved_errno);
		va_end(copy);
	}
	if (rc != 0) {
		errno = saved_errno;
		real_vsyslog(pri, fmt, ap);
	}
	errno = saved_errno;
}

void openlog(const char *ident, int option, int facility)
{
	openlog_fn f = (openlog_fn)next("openlog");

	shim_ident = ident;
	if (f != NULL)
		f(ident, option, facility);
}

void closelog(void)
{
	closelog_fn f = (closelog_fn)next("closelog");

	shim_ident = NULL;
	if (f != NULL)
		f();
}

int setlogmask(int mask)
{
	setlogmask_fn f = (setlogmask_fn)next("setlogmask");
	int old = shim_mask;

	if (mask != 0)
		shim_mask = mask;
	if (f != NULL)
		(void)f(mask);
	return old;
}

void syslog(int pri, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	shim_vsyslog(pri, fmt, ap);
	va_end(ap);
}

void vsyslog(int pri, const char *fmt, va_list ap)
{
	shim_vsyslog(pri, fmt, ap);
}

void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
	va_list ap;

	(void)flag;
	va_start(ap, fmt);
	shim_vsyslog(pri, fmt, ap);
	va_end(ap);
}

void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	shim_vsyslog(pri, fmt, ap);
}
