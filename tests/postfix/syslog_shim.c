/*
 * syslog_shim.c - syslog(3) into a file, for tests on hosts without a
 * syslog daemon (a CI root has no /dev/log). LD_PRELOAD it into the daemon
 * under test and set AG_SYSLOG_FILE; every message becomes one line
 *
 *   <facility>.<priority> <ident>[<pid>]: <message>
 *
 * appended with one write(), so lines of many processes never mix. The
 * file is opened when the shim is loaded, before the daemon can chroot,
 * and the descriptor is kept (a chrooted smtpd still logs). Only a test
 * helper: not installed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define SHIM_API __attribute__((visibility("default")))

static int fd = -1;
static char ident[64] = "";
static int default_facility = LOG_USER;

__attribute__((constructor)) static void shim_open(void)
{
	const char *path = getenv("AG_SYSLOG_FILE");

	if (path != NULL && path[0] != '\0')
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
}

static const char *facility_name(int f)
{
	switch (f) {
	case LOG_AUTH: return "auth";
	case LOG_AUTHPRIV: return "authpriv";
	case LOG_MAIL: return "mail";
	case LOG_DAEMON: return "daemon";
	case LOG_USER: return "user";
	}
	return "other";
}

static const char *const prio_names[] = { "emerg", "alert", "crit", "err",
					  "warning", "notice", "info", "debug" };

static void shim_vlog(int pri, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void shim_vlog(int pri, const char *fmt, va_list ap)
{
	char msg[2048], line[2300];
	int facility = pri & LOG_FACMASK;

	if (fd < 0)
		return;
	if (facility == 0)
		facility = default_facility;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	int n = snprintf(line, sizeof(line), "%s.%s %s[%ld]: %s\n", facility_name(facility),
			 prio_names[pri & LOG_PRIMASK], ident[0] ? ident : program_invocation_short_name,
			 (long)getpid(), msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	ssize_t w = write(fd, line, (size_t)n);
	(void)w;
}

SHIM_API void openlog(const char *id, int option, int facility)
{
	(void)option;
	snprintf(ident, sizeof(ident), "%s", id != NULL ? id : "");
	if (facility != 0)
		default_facility = facility;
}

SHIM_API void closelog(void)
{
}

SHIM_API void vsyslog(int pri, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
SHIM_API void vsyslog(int pri, const char *fmt, va_list ap)
{
	shim_vlog(pri, fmt, ap);
}

SHIM_API void syslog(int pri, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
SHIM_API void syslog(int pri, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	shim_vlog(pri, fmt, ap);
	va_end(ap);
}

SHIM_API void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
SHIM_API void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
	(void)flag;
	shim_vlog(pri, fmt, ap);
}

SHIM_API void __syslog_chk(int pri, int flag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
SHIM_API void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
	va_list ap;
	(void)flag;
	va_start(ap, fmt);
	shim_vlog(pri, fmt, ap);
	va_end(ap);
}
