/* log.c - attempt line formatting and the file destination. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

size_t ag_log_quote(char *out, size_t outlen, const char *in, size_t len, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen < 3) {
		if (outlen > 0)
			out[0] = '\0';
		return 0;
	}
	out[o++] = '"';
	if (in == NULL)
		len = 0;
	if (len > max)
		len = max;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		char esc[4];
		size_t n;
		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			n = 2;
		} else if (ch <= 0x20 || ch >= 0x7f || ch == '=') {
			/* blanks and '=' too: even a naive grep for " result="
			 * can never match inside a value */
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[ch >> 4];
			esc[3] = hex[ch & 15];
			n = 4;
		} else {
			esc[0] = (char)ch;
			n = 1;
		}
		if (o + n + 2 > outlen)
			break;
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o++] = '"';
	out[o] = '\0';
	return o;
}

void ag_log_time(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&secs, &tm) == NULL) {
		snprintf(buf, len, "invalid");
		return;
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* A bare word if every byte is in [A-Za-z0-9._:/@+-], else quoted. */
static size_t put_value(char *out, size_t outlen, const char *v, size_t max)
{
	size_t n = v != NULL ? strlen(v) : 0;
	bool bare = n > 0 && n <= max;

	for (size_t i = 0; bare && i < n; i++) {
		char ch = v[i];
		bare = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		       (ch >= '0' && ch <= '9') || strchr("._:/@+-", ch) != NULL;
	}
	if (!bare)
		return ag_log_quote(out, outlen, v, n, max);
	snprintf(out, outlen, "%s", v);
	return n;
}

struct lb {
	char *buf;
	size_t len, at;
};

static void add(struct lb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct lb *b, const char *fmt, ...)
{
	va_list ap;

	if (b->at >= b->len)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(b->buf + b->at, b->len - b->at, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->at += (size_t)n < b->len - b->at ? (size_t)n : b->len - b->at - 1;
}

void ag_log_format(const struct ag_logline *l, char *buf, size_t len)
{
	char t[40], v[4 * AG_LOG_USER_MAX + 8], a[AG_ADDR_STRLEN];
	struct lb b = { buf, len, 0 };

	if (len == 0)
		return;
	buf[0] = '\0';
	ag_log_time(l->time_ms, t, sizeof(t));
	add(&b, "time=%s", t);
	/* service and rhost_raw get at most 64 bytes of text, escapes
	 * included (SHORT_OUT): with a full user name (4 x AG_LOG_USER_MAX)
	 * and every other field at its longest, the line still fits
	 * AG_LOG_LINE_MAX, so no hostile value can push fields off the end */
	enum { SHORT_OUT = 64 + 3 };
	put_value(v, SHORT_OUT, l->service != NULL ? l->service : "", 64);
	add(&b, " service=%s", v);
	if (l->user != NULL) {
		ag_log_quote(v, sizeof(v), l->user, l->user_len, AG_LOG_USER_MAX);
		add(&b, " user=%s", v);
		if (l->user_len > AG_LOG_USER_MAX)
			add(&b, " user_len=%zu", l->user_len);
	} else {
		add(&b, " user=none");
	}
	if (l->addr != NULL && l->addr->family != AG_AF_NONE) {
		ag_addr_format(l->addr, a, sizeof(a));
		add(&b, " rhost=%s", a);
	} else {
		add(&b, " rhost=none");
		if (l->rhost_raw != NULL && l->rhost_len > 0) {
			ag_log_quote(v, SHORT_OUT, l->rhost_raw, l->rhost_len, 64);
			add(&b, " rhost_raw=%s", v);
		}
	}
	add(&b, " result=%s action=%s", l->result, l->action);
	if (l->would != NULL)
		add(&b, " mode=log-only would=%s", l->would);
	if (l->reason != NULL)
		add(&b, " reason=%s", l->reason);
	add(&b, " delay_ms=%lld", (long long)l->delay_ms);
	add(&b, " src_score=%.1f user_score=%.1f user_state=%s familiar=%s", l->src_score,
	    l->user_score, l->user_state != NULL ? l->user_state : "unknown",
	    l->familiar ? "yes" : "no");
	if (l->repeat_pw)
		add(&b, " repeat=yes");
	if (l->sprayed)
		add(&b, " sprayed=yes");
	if (l->wave)
		add(&b, " wave=on");
	if (l->event != NULL)
		add(&b, " event=%s", l->event);
	if (l->until > 0) {
		ag_log_time(l->until, t, sizeof(t));
		add(&b, " until=%s", t);
	}
	if (l->config != NULL)
		add(&b, " config=%s", l->config);
}

static pthread_mutex_t file_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t file_once = PTHREAD_ONCE_INIT;

/* A threaded host that forks while another thread writes a line must not
 * leave the child with the mutex held. */
static void file_lock(void) { pthread_mutex_lock(&file_mu); }
static void file_unlock(void) { pthread_mutex_unlock(&file_mu); }
static void file_atfork(void) { pthread_atfork(file_lock, file_unlock, file_unlock); }
static struct {
	pid_t pid;
	int fd;
	dev_t dev;
	ino_t ino;
	char path[1024];
} lf = { 0, -1, 0, 0, "" };

/* Is the directory holding @path shared through its group (setgid or
 * group-writable, e.g. root:authguard 2770)? Then a file this process
 * creates there must be writable by that group whatever its umask, or the
 * other services sharing the log cannot write to it. */
static bool shared_dir(const char *path)
{
	char dir[1024];
	const char *slash = strrchr(path, '/');
	struct stat st;

	if (slash == NULL || (size_t)(slash - path) >= sizeof(dir))
		return false;
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	memcpy(dir, path, n);
	dir[n] = '\0';
	return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & (S_ISGID | S_IWGRP)) != 0;
}

/* Open the log file, creating it (0640 less the umask; see shared_dir())
 * if missing; @made_r says whether this call created it. */
static int open_log(const char *path, bool *made_r)
{
	const int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK;

	*made_r = false;
	for (int tries = 0; tries < 3; tries++) {
		int fd = open(path, flags);
		if (fd >= 0 || errno != ENOENT)
			return fd;
		fd = open(path, flags | O_CREAT | O_EXCL, 0640);
		if (fd >= 0) {
			*made_r = true;
			return fd;
		}
		if (errno != EEXIST)
			return -1;
		/* another process made it just now: open that one */
	}
	return -1;
}

/* Open (or reopen after rotation) the log file; called with file_mu held.
 * Returns the descriptor, or -1 with errno set. */
static int log_fd(const char *path)
{
	struct stat st;
	bool same = lf.fd >= 0 && lf.pid == getpid() && strcmp(lf.path, path) == 0;

	if (same && stat(path, &st) == 0 && st.st_dev == lf.dev && st.st_ino == lf.ino)
		return lf.fd;
	if (lf.fd >= 0 && lf.pid == getpid())
		close(lf.fd);
	lf.fd = -1;
	bool made = false;
	int fd = open_log(path, &made);
	if (fd < 0)
		return -1;
	/* a FIFO, a device, or a hard link to another file planted there
	 * (in a directory its group may write: see shared_dir()) */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		int why = errno;
		if (fstat(fd, &st) == 0)
			why = S_ISREG(st.st_mode) ? EMLINK : EINVAL;
		close(fd);
		errno = why;
		return -1;
	}
	if (made && shared_dir(path) && (st.st_mode & 0060) != 0060 && fchmod(fd, 0660) == 0)
		st.st_mode = (st.st_mode & ~07777u) | 0660;
	lf.fd = fd;
	lf.pid = getpid();
	lf.dev = st.st_dev;
	lf.ino = st.st_ino;
	snprintf(lf.path, sizeof(lf.path), "%s", path);
	return fd;
}

int ag_log_file_write(const char *path, const char *line)
{
	char buf[AG_LOG_LINE_MAX + 2];
	size_t n = strlen(line);
	int rc = 0;

	if (n > AG_LOG_LINE_MAX)
		n = AG_LOG_LINE_MAX;
	memcpy(buf, line, n);
	buf[n++] = '\n';
	pthread_once(&file_once, file_atfork);
	pthread_mutex_lock(&file_mu);
	int fd = log_fd(path);
	int err = 0;
	if (fd < 0) {
		err = errno;
	} else {
		ssize_t w = write(fd, buf, n);
		if (w != (ssize_t)n)
			err = w < 0 ? errno : ENOSPC; /* a short write: the disk is full */
	}
	if (err != 0)
		rc = AG_EIO;
	pthread_mutex_unlock(&file_mu);
	errno = err; /* for the caller's fault line */
	return rc;
}
