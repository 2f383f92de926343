/*
 * authguard-watch - follow server logs and record the authentication
 * outcomes they report, for servers (or paths of them) that no PAM or
 * SASL hook tells: Cyrus imapd's LOGIN and POP3 PASS go through
 * sasl_checkpass(), which reports its result to no plugin, but Cyrus logs
 * it. Each outcome goes through ag_guard_record_ex() like the front ends'
 * own, so the inline checks (the SASL plugin's canonuser, the PAM module)
 * refuse and tarpit from the very next attempt.
 *
 * Exactly once: the source's position (journal cursor, or file identity
 * and offset) is written in the same transaction as the record it comes
 * from, so a SIGKILL leaves either both or neither; lines that record
 * nothing move the kept position at most once a second. A restart goes on
 * from the kept position; with none (first start), lines older than
 * watch_max_age are skipped.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "ag.h"
#include "agd.h"
#include "guard.h"
#include "rules.h"
#include "store.h"

#define NAME "authguard-watch"
/* Most sources, and the longest source text (it is the position's key). */
#define SOURCES_MAX 16
#define SPEC_MAX 400
/* The position's key in AG_DB_META: this prefix and the source text. */
#define POS_PREFIX "watch:pos:"
/* Lines that record nothing move the kept position this often at most. */
#define CHECKPOINT_MS 1000
/* Files are looked at this often even without an inotify event (a
 * filesystem that sends none, a rotation inotify did not see). */
#define POLL_MS 250
/* A record the store cannot take is tried this many times, a second
 * apart, then the line is skipped (said in the log). */
#define RECORD_TRIES 3
#define READ_CHUNK 65536

enum src_kind { SRC_FILE, SRC_STDIN, SRC_JOURNAL };

struct src {
	enum src_kind kind;
	char spec[SPEC_MAX + 1];    /* as configured: the position's key */
	bool done;                  /* stdin at its end */
	bool first_start;           /* no position kept: skip old lines */
	/* file and stdin */
	char path[AG_PATH_MAX];
	int fd;
	dev_t dev;
	ino_t ino;
	off_t buf_off;              /* file offset of buf[0] */
	char *buf;                  /* AW_LINE_MAX + READ_CHUNK bytes */
	size_t blen;
	bool skipping;              /* inside a line longer than AW_LINE_MAX */
	/* journal */
	sd_journal *j;
	char *cursor;               /* of the last entry handled (malloc'ed) */
	/* the position after the last line handled, and whether the store
	 * has it yet */
	off_t pos;
	bool pos_dirty;
	int64_t pos_saved_ms;
};

struct counts {
	unsigned long lines, matched, success, failure, ignored, old, overlong, unparsed, faults;
};

static struct {
	struct agd d;
	struct aw_rules *rules;
	struct src src[SOURCES_MAX];
	size_t n;
	int sigfd, ino_fd;
	bool stop, hup;
	int64_t start_ms;
	struct counts c;
} w;

/* ---- the kept position --------------------------------------------------------- */

static size_t pos_key(const struct src *s, char *key, size_t len)
{
	return (size_t)snprintf(key, len, "%s%s", POS_PREFIX, s->spec);
}

/* What the store keeps for @s: "file DEV INO OFFSET" or "journal CURSOR". */
static void pos_text(const struct src *s, off_t off, char *buf, size_t len)
{
	if (s->kind == SRC_JOURNAL)
		snprintf(buf, len, "journal %s", s->cursor != NULL ? s->cursor : "");
	else
		snprintf(buf, len, "file %llu %llu %lld", (unsigned long long)s->dev,
			 (unsigned long long)s->ino, (long long)off);
}

struct pos_arg {
	struct src *s;
	off_t off;
};

/* In the record's own transaction (ag_record_opts.in_txn). */
static int put_pos(struct ag_txn *t, void *argp)
{
	const struct pos_arg *a = argp;
	char key[512], val[1024];
	size_t klen = pos_key(a->s, key, sizeof(key));

	pos_text(a->s, a->off, val, sizeof(val));
	return ag_txn_put(t, AG_DB_META, key, klen, val, strlen(val));
}

static int store_of(struct ag_store **st)
{
	return ag_store_get(w.d.conf.db_dir, st);
}

/* The position in a transaction of its own (lines that record nothing,
 * and at exit). */
static void save_pos(struct src *s)
{
	struct ag_store *st;
	struct ag_txn *t;
	struct pos_arg a = { s, s->pos };

	if (!s->pos_dirty || s->kind == SRC_STDIN)
		return;
	int rc = store_of(&st);
	if (rc == 0)
		rc = ag_txn_begin(st, true, &t);
	if (rc == 0) {
		rc = put_pos(t, &a);
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
	}
	if (rc != 0) {
		w.c.faults++;
		agd_log(AG_LVL_WARN, "%s: position not saved: %s (tried again later)", s->spec,
			ag_strerror(rc));
		return;
	}
	s->pos_dirty = false;
	s->pos_saved_ms = ag_now_ms();
}

/* The kept position's text for @s, or "" if none. */
static void load_pos(const struct src *s, char *buf, size_t len)
{
	struct ag_store *st;
	struct ag_txn *t;
	char key[512];
	size_t klen = pos_key(s, key, sizeof(key));
	const void *val;
	size_t vlen;

	buf[0] = '\0';
	if (store_of(&st) != 0 || ag_txn_begin(st, false, &t) != 0)
		return;
	if (ag_txn_get(t, AG_DB_META, key, klen, &val, &vlen) == 0 && vlen < len) {
		memcpy(buf, val, vlen);
		buf[vlen] = '\0';
	}
	ag_txn_abort(t);
}

/* ---- one line --------------------------------------------------------------- */

/* Record @m (from a line of time @when_ms) with the position after the
 * line, in one transaction. */
static void record(struct src *s, const struct aw_match *m, int64_t when_ms, off_t after)
{
	struct ag_attempt a = {
		.service = m->service,
		.user = m->user,
		.user_len = m->user_len,
		.rhost = m->addr,
		.rhost_len = m->addr_len,
	};
	struct pos_arg pa = { s, after };
	struct ag_record_opts o = { .when_ms = when_ms };
	int rc;

	if (s->kind != SRC_STDIN) {
		o.in_txn = put_pos;
		o.arg = &pa;
	}
	for (int i = 0; i < RECORD_TRIES; i++) {
		rc = ag_guard_record_ex(&w.d.conf, &w.d.sink, &a, m->outcome == AW_SUCCESS, &o, NULL);
		if (rc == 0)
			break;
		if (i + 1 < RECORD_TRIES) {
			struct timespec ts = { 1, 0 };
			nanosleep(&ts, NULL);
		}
	}
	if (rc != 0) {
		/* the guard logged the fault; the line cannot wait for ever */
		w.c.faults++;
		agd_log(AG_LVL_ERR, "%s: line skipped after %d tries (rule %s): %s", s->spec,
			RECORD_TRIES, m->rule, ag_strerror(rc));
		s->pos = after;
		s->pos_dirty = true;
		return;
	}
	if (m->outcome == AW_SUCCESS)
		w.c.success++;
	else
		w.c.failure++;
	s->pos = after;
	s->pos_dirty = false; /* it went with the record */
	s->pos_saved_ms = ag_now_ms();
}

/* On a first start (and from stdin, which has no position), lines from
 * more than watch_max_age before the start. Measured from the start, not
 * from now: the lines written while the watcher runs are never old, and
 * a syslog time has whole seconds (the second of the start is not
 * "before" it). */
static bool too_old(const struct src *s, int64_t when_ms)
{
	bool bounded = s->first_start || s->kind == SRC_STDIN;
	return bounded && when_ms > 0 && when_ms < w.start_ms - 1000 - w.d.conf.watch_max_age;
}

/* A message from program @ident, of time @when_ms, ending at @after. */
static void handle(struct src *s, const char *ident, size_t ilen, const char *msg, size_t mlen,
		   int64_t when_ms, off_t after)
{
	struct aw_match m;

	w.c.lines++;
	enum aw_outcome o = aw_rules_match(w.rules, ident, ilen, msg, mlen, &m);
	if (o == AW_SUCCESS || o == AW_FAILURE) {
		w.c.matched++;
		if (too_old(s, when_ms)) {
			w.c.old++;
		} else {
			record(s, &m, when_ms, after);
			return;
		}
	} else if (o == AW_IGNORE) {
		w.c.ignored++;
	}
	s->pos = after;
	s->pos_dirty = true;
}

static void handle_line(struct src *s, const char *line, size_t len, off_t after)
{
	struct aw_line l;

	if (aw_line_parse(line, len, ag_now_ms(), &l) != 0) {
		w.c.lines++;
		w.c.unparsed++;
		s->pos = after;
		s->pos_dirty = true;
		return;
	}
	handle(s, l.ident, l.ident_len, l.msg, l.msg_len, l.time_ms, after);
}

/* ---- files and standard input ------------------------------------------------ */

/* Split what is buffered into lines; keep a partial last line. A line
 * longer than AW_LINE_MAX is dropped whole (never cut: a cut line could
 * end in text the client chose). */
static void split_lines(struct src *s)
{
	size_t start = 0;

	for (;;) {
		char *nl = memchr(s->buf + start, '\n', s->blen - start);
		if (nl == NULL)
			break;
		size_t end = (size_t)(nl - s->buf);
		off_t after = s->buf_off + (off_t)end + 1;
		if (s->skipping) {
			s->skipping = false;
			w.c.lines++;
			w.c.overlong++;
			s->pos = after;
			s->pos_dirty = true;
		} else if (end - start > AW_LINE_MAX) {
			w.c.lines++;
			w.c.overlong++;
			s->pos = after;
			s->pos_dirty = true;
		} else {
			size_t len = end - start;
			if (len > 0 && s->buf[start + len - 1] == '\r')
				len--;
			handle_line(s, s->buf + start, len, after);
		}
		start = end + 1;
	}
	if (start > 0) {
		memmove(s->buf, s->buf + start, s->blen - start);
		s->blen -= start;
		s->buf_off += (off_t)start;
	}
	if (s->blen > AW_LINE_MAX) {
		/* no newline within the longest line: drop what is there and
		 * the rest of the line when it comes */
		s->buf_off += (off_t)s->blen;
		s->blen = 0;
		s->skipping = true;
	}
}

static void take_signals(void)
{
	int sig;

	while (w.sigfd >= 0 && (sig = agd_signal_take(w.sigfd)) != 0) {
		if (sig == SIGHUP)
			w.hup = true;
		else
			w.stop = true;
	}
}

/* Read @s's descriptor to its current end. Returns 0, or 1 at the end of
 * a pipe (stdin), or -1 on a read error. */
static int drain(struct src *s)
{
	for (int rounds = 0; rounds < 1024 && !w.stop; rounds++) {
		ssize_t n = read(s->fd, s->buf + s->blen, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0) {
			agd_log(AG_LVL_ERR, "%s: read: %s", s->spec, strerror(errno));
			return -1;
		}
		if (n == 0)
			return s->kind == SRC_STDIN ? 1 : 0;
		s->blen += (size_t)n;
		split_lines(s);
		/* a long backlog must not hold up SIGTERM */
		take_signals();
	}
	return 0;
}

static void file_reset(struct src *s, off_t off)
{
	s->buf_off = off;
	s->blen = 0;
	s->skipping = false;
}

static int file_open(struct src *s, const char *path, off_t off)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	if (off > st.st_size)
		off = 0; /* truncated while we were away */
	if (lseek(fd, off, SEEK_SET) < 0) {
		close(fd);
		return -1;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = fd;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->pos = off;
	file_reset(s, off);
	return 0;
}

/* The kept "file DEV INO OFF": go on where it says, in the file at the
 * path or, if that is a new file, first in the rotated one (PATH.1)
 * that still has the kept identity. */
static void file_start(struct src *s)
{
	char text[1024];
	unsigned long long dev = 0, ino = 0;
	long long off = 0;
	struct stat st;

	load_pos(s, text, sizeof(text));
	s->first_start = sscanf(text, "file %llu %llu %lld", &dev, &ino, &off) != 3 || off < 0;
	if (s->first_start) {
		if (file_open(s, s->path, 0) != 0)
			agd_log(AG_LVL_WARN, "%s: %s (waiting for it)", s->spec, strerror(errno));
		return;
	}
	if (stat(s->path, &st) == 0 && st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino) {
		if (file_open(s, s->path, (off_t)off) != 0)
			agd_log(AG_LVL_WARN, "%s: %s (waiting for it)", s->spec, strerror(errno));
		return;
	}
	char old[AG_PATH_MAX + 4];
	snprintf(old, sizeof(old), "%s.1", s->path);
	if (stat(old, &st) == 0 && st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino &&
	    file_open(s, old, (off_t)off) == 0) {
		agd_log(AG_LVL_INFO, "%s: rotated while stopped: the rest of %s first", s->spec, old);
		(void)drain(s);
		split_lines(s);
	} else {
		agd_log(AG_LVL_WARN, "%s: rotated while stopped and %s is not the old file: "
				     "reading the new file from its start", s->spec, old);
	}
	if (file_open(s, s->path, 0) != 0) {
		if (s->fd >= 0)
			close(s->fd);
		s->fd = -1;
		agd_log(AG_LVL_WARN, "%s: %s (waiting for it)", s->spec, strerror(errno));
	}
	s->pos_dirty = true;
}

/* Read on, and follow the path: a new file there (rotation) is read from
 * its start once the old one is read to its end; a file shorter than the
 * offset reached was truncated (copytruncate) and is read from its start. */
static void file_poll(struct src *s)
{
	struct stat st;

	if (s->fd >= 0) {
		(void)drain(s);
		if (fstat(s->fd, &st) == 0 && st.st_size < s->buf_off + (off_t)s->blen) {
			agd_log(AG_LVL_INFO, "%s: truncated: reading it from its start", s->spec);
			if (lseek(s->fd, 0, SEEK_SET) == 0) {
				file_reset(s, 0);
				s->pos = 0;
				s->pos_dirty = true;
				(void)drain(s);
			}
		}
	}
	if (stat(s->path, &st) != 0)
		return; /* renamed away, the new one not there yet */
	if (s->fd >= 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		return;
	if (s->fd >= 0) {
		(void)drain(s); /* the old file's last lines */
		if (s->blen > 0)
			agd_log(AG_LVL_WARN, "%s: rotated with an unfinished last line (dropped)",
				s->spec);
	}
	if (file_open(s, s->path, 0) == 0) {
		s->pos_dirty = true;
		(void)drain(s);
	}
}

/* ---- the journal ------------------------------------------------------------ */

static int journal_field(sd_journal *j, const char *field, const char **v, size_t *n)
{
	const void *d;
	size_t len, flen = strlen(field);

	if (sd_journal_get_data(j, field, &d, &len) < 0 || len <= flen)
		return -1;
	*v = (const char *)d + flen + 1; /* "FIELD=value" */
	*n = len - flen - 1;
	return 0;
}

static int journal_start(struct src *s)
{
	char text[1024];
	const char *names = s->spec + strlen("journal:");
	/* tests: journal files made by systemd-journal-remote (a test
	 * machine runs no journald) */
	const char *tdir = getenv("AG_TEST_JOURNAL_DIR");
	int rc = tdir != NULL && tdir[0] == '/' ? sd_journal_open_directory(&s->j, tdir, 0)
						: sd_journal_open(&s->j, SD_JOURNAL_LOCAL_ONLY);

	if (rc < 0) {
		agd_log(AG_LVL_ERR, "%s: cannot open the journal: %s", s->spec, strerror(-rc));
		return -1;
	}
	/* one match per name, OR'ed: a unit (a name with a dot) by the
	 * trusted _SYSTEMD_UNIT field, anything else by its identifier */
	for (const char *p = names; *p != '\0';) {
		size_t n = strcspn(p, ", \t");
		if (n > 0) {
			char m[300];
			bool unit = memchr(p, '.', n) != NULL;
			snprintf(m, sizeof(m), "%s=%.*s", unit ? "_SYSTEMD_UNIT" : "SYSLOG_IDENTIFIER",
				 (int)(n < 250 ? n : 250), p);
			if (sd_journal_add_match(s->j, m, 0) < 0 || sd_journal_add_disjunction(s->j) < 0) {
				agd_log(AG_LVL_ERR, "%s: bad journal match %s", s->spec, m);
				return -1;
			}
		}
		p += n;
		p += strspn(p, ", \t");
	}
	load_pos(s, text, sizeof(text));
	s->first_start = strncmp(text, "journal ", 8) != 0 || text[8] == '\0';
	if (!s->first_start) {
		s->cursor = strdup(text + 8);
		if (s->cursor == NULL)
			return -1;
		if (sd_journal_seek_cursor(s->j, s->cursor) < 0) {
			s->first_start = true;
		} else if (sd_journal_next(s->j) > 0 && sd_journal_test_cursor(s->j, s->cursor) <= 0) {
			/* the kept entry is gone (vacuumed): go on from the one
			 * after it, which we are on now */
			(void)sd_journal_previous(s->j);
		}
	}
	if (s->first_start) {
		int64_t from = ag_now_ms() - w.d.conf.watch_max_age;
		(void)sd_journal_seek_realtime_usec(s->j, (uint64_t)(from > 0 ? from : 0) * 1000);
	}
	return 0;
}

static void journal_poll(struct src *s)
{
	int n = 0;

	(void)sd_journal_process(s->j);
	while (!w.stop && n++ < 10000) {
		int rc = sd_journal_next(s->j);
		if (rc <= 0)
			break;
		char *cur = NULL;
		if (sd_journal_get_cursor(s->j, &cur) < 0)
			continue;
		free(s->cursor);
		s->cursor = cur;
		const char *msg, *ident;
		size_t mlen, ilen;
		uint64_t usec = 0;
		(void)sd_journal_get_realtime_usec(s->j, &usec);
		/* a field is valid only until the next sd_journal_get_data()
		 * (sd_journal_get_data(3)): the ident is copied first, the
		 * message fetched last and used before any other call */
		char id[256];
		size_t il = 0;
		bool bad = journal_field(s->j, "SYSLOG_IDENTIFIER", &ident, &ilen) != 0 &&
			   journal_field(s->j, "_COMM", &ident, &ilen) != 0;
		if (!bad) {
			il = ilen < sizeof(id) ? ilen : sizeof(id) - 1;
			memcpy(id, ident, il);
		}
		if (bad || journal_field(s->j, "MESSAGE", &msg, &mlen) != 0) {
			w.c.lines++;
			w.c.unparsed++;
			s->pos_dirty = true;
			continue;
		}
		if (mlen > AW_LINE_MAX) {
			w.c.lines++;
			w.c.overlong++;
			s->pos_dirty = true;
			continue;
		}
		handle(s, id, il, msg, mlen, (int64_t)(usec / 1000), 0);
	}
}

/* ---- sources ------------------------------------------------------------------- */

static int add_source(const char *spec, char *err, size_t errlen)
{
	if (w.n >= SOURCES_MAX) {
		snprintf(err, errlen, "more than %d watch_source lines", SOURCES_MAX);
		return -1;
	}
	if (strlen(spec) > SPEC_MAX) {
		snprintf(err, errlen, "watch_source '%.64s...' is longer than %d bytes", spec, SPEC_MAX);
		return -1;
	}
	struct src *s = &w.src[w.n];
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	snprintf(s->spec, sizeof(s->spec), "%s", spec);
	for (size_t i = 0; i < w.n; i++)
		if (strcmp(w.src[i].spec, spec) == 0) {
			snprintf(err, errlen, "watch_source %s given twice", spec);
			return -1;
		}
	if (strncmp(spec, "file:", 5) == 0) {
		s->kind = SRC_FILE;
		if (spec[5] != '/') {
			snprintf(err, errlen, "watch_source %s: the path must be absolute", spec);
			return -1;
		}
		snprintf(s->path, sizeof(s->path), "%s", spec + 5);
	} else if (strcmp(spec, "stdin") == 0) {
		s->kind = SRC_STDIN;
	} else if (strncmp(spec, "journal:", 8) == 0 && spec[8] != '\0' &&
		   strspn(spec + 8, ", \t") < strlen(spec + 8)) {
		s->kind = SRC_JOURNAL;
	} else {
		snprintf(err, errlen,
			 "watch_source '%.64s': want journal:NAME,..., file:/path or stdin", spec);
		return -1;
	}
	if (s->kind != SRC_JOURNAL && (s->buf = malloc(AW_LINE_MAX + READ_CHUNK + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	w.n++;
	return 0;
}

static void free_sources(void)
{
	for (size_t i = 0; i < w.n; i++) {
		struct src *s = &w.src[i];
		if (s->fd > 0)
			close(s->fd);
		if (s->j != NULL)
			sd_journal_close(s->j);
		free(s->buf);
		free(s->cursor);
	}
	w.n = 0;
}

/* Sources and rules from @c; errors are printed. Returns 0 or -1. */
static int configure(const struct ag_conf *c, struct aw_rules **rules)
{
	char err[1024];

	if (aw_rules_new(c->watch_rules, &c->watch_rule, rules, err, sizeof(err)) != 0) {
		agd_log(AG_LVL_ERR, "%s", err);
		return -1;
	}
	if (c->watch_source.n == 0) {
		agd_log(AG_LVL_ERR, "no watch_source in the config: nothing to follow");
		return -1;
	}
	for (size_t i = 0; i < c->watch_source.n; i++)
		if (add_source(c->watch_source.v[i], err, sizeof(err)) != 0) {
			agd_log(AG_LVL_ERR, "%s", err);
			return -1;
		}
	return 0;
}

/* ---- main loop ---------------------------------------------------------------- */

static void checkpoint(bool force)
{
	int64_t now = ag_now_ms();

	for (size_t i = 0; i < w.n; i++)
		if (w.src[i].pos_dirty && (force || now - w.src[i].pos_saved_ms >= CHECKPOINT_MS))
			save_pos(&w.src[i]);
}

static void reload(void)
{
	struct aw_rules *r = NULL;

	if (agd_reload(&w.d) != 0)
		return;
	char err[1024];
	if (aw_rules_new(w.d.conf.watch_rules, &w.d.conf.watch_rule, &r, err, sizeof(err)) != 0) {
		agd_log(AG_LVL_ERR, "%s: the rules read before are kept", err);
		return;
	}
	aw_rules_free(w.rules);
	w.rules = r;
	agd_log(AG_LVL_INFO, "%zu rules; sources are read at start only", aw_rules_count(r));
}

static void watch_dirs(void)
{
	w.ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w.ino_fd < 0)
		return; /* POLL_MS alone */
	for (size_t i = 0; i < w.n; i++) {
		if (w.src[i].kind != SRC_FILE)
			continue;
		char dir[AG_PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", w.src[i].path);
		char *slash = strrchr(dir, '/');
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
		(void)inotify_add_watch(w.ino_fd, dir,
					IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM |
						IN_DELETE | IN_CLOSE_WRITE | IN_ATTRIB);
	}
}

static void poll_all(void)
{
	for (size_t i = 0; i < w.n && !w.stop; i++) {
		struct src *s = &w.src[i];
		if (s->done)
			continue;
		if (s->kind == SRC_FILE) {
			file_poll(s);
		} else if (s->kind == SRC_JOURNAL) {
			journal_poll(s);
		} else {
			int rc = drain(s);
			if (rc != 0) {
				s->done = true;
				agd_log(AG_LVL_INFO, "stdin: %s", rc > 0 ? "end of input" : "read error");
			}
		}
	}
}

static bool all_done(void)
{
	for (size_t i = 0; i < w.n; i++)
		if (!w.src[i].done)
			return false;
	return true;
}

/* systemctl status shows what the watcher has done, every STATUS_MS */
#define STATUS_MS 10000
static void status(void)
{
	static int64_t last;
	int64_t now = ag_now_ms();

	if (now - last < STATUS_MS)
		return;
	last = now;
	sd_notifyf(0, "STATUS=%lu lines: %lu failures and %lu successes recorded, %lu ignored, %lu faults",
		   w.c.lines, w.c.failure, w.c.success, w.c.ignored, w.c.faults);
}

static int run(void)
{
	struct pollfd pf[SOURCES_MAX + 2];

	for (;;) {
		poll_all();
		checkpoint(false);
		status();
		if (w.stop || all_done())
			break;
		nfds_t n = 0;
		pf[n++] = (struct pollfd){ .fd = w.sigfd, .events = POLLIN };
		if (w.ino_fd >= 0)
			pf[n++] = (struct pollfd){ .fd = w.ino_fd, .events = POLLIN };
		for (size_t i = 0; i < w.n; i++) {
			struct src *s = &w.src[i];
			if (s->kind == SRC_STDIN && !s->done)
				pf[n++] = (struct pollfd){ .fd = s->fd, .events = POLLIN };
			else if (s->kind == SRC_JOURNAL)
				pf[n++] = (struct pollfd){ .fd = sd_journal_get_fd(s->j),
							   .events = (short)sd_journal_get_events(s->j) };
		}
		if (poll(pf, n, POLL_MS) < 0 && errno != EINTR) {
			agd_log(AG_LVL_ERR, "poll: %s", strerror(errno));
			return -1;
		}
		if (w.ino_fd >= 0) {
			char ev[4096];
			while (read(w.ino_fd, ev, sizeof(ev)) > 0)
				;
		}
		take_signals();
		if (w.hup) {
			w.hup = false;
			reload();
		}
	}
	return 0;
}

static const char usage[] =
	"usage: " NAME " [-c CONF] [-t] [-h] [-V]\n"
	"  follows watch_source (journal:NAME,..., file:/path, stdin) and records the\n"
	"  authentication outcomes that watch_rules and watch_rule find (authguard-watch(8))\n"
	"  -c CONF  config file (default " AG_DEFAULT_CONF ")\n"
	"  -t       check the config, the rules and the store, then exit\n";

int main(int argc, char **argv)
{
	int rc = agd_start(&w.d, NAME, usage, NULL, NULL, argc, argv);

	w.sigfd = w.ino_fd = -1;
	if (rc == 1 && w.d.check_only) {
		/* agd checked the config and the store; the rules and sources
		 * too, from the same file */
		int ok = configure(&w.d.conf, &w.rules) == 0;
		if (ok)
			printf("%s: %zu rules, %zu sources\n", NAME, aw_rules_count(w.rules), w.n);
		aw_rules_free(w.rules);
		free_sources();
		agd_finish(&w.d);
		return ok ? 0 : 2;
	}
	if (rc != 0)
		return rc == 1 ? 0 : 2;
	if (configure(&w.d.conf, &w.rules) != 0) {
		aw_rules_free(w.rules);
		free_sources();
		agd_finish(&w.d);
		return 2;
	}
	w.start_ms = ag_now_ms();
	w.sigfd = agd_signals();
	if (w.sigfd < 0) {
		agd_log(AG_LVL_ERR, "signals: %s", strerror(errno));
		return 2;
	}
	for (size_t i = 0; i < w.n; i++) {
		struct src *s = &w.src[i];
		if (s->kind == SRC_FILE) {
			file_start(s);
		} else if (s->kind == SRC_STDIN) {
			s->fd = 0;
			s->first_start = true;
			(void)fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
		} else if (journal_start(s) != 0) {
			free_sources();
			agd_finish(&w.d);
			return 2;
		}
	}
	watch_dirs();
	char status[128];
	snprintf(status, sizeof(status), "following %zu sources with %zu rules", w.n,
		 aw_rules_count(w.rules));
	agd_log(AG_LVL_INFO, "%s", status);
	agd_ready(status);
	rc = run();
	agd_stopping();
	checkpoint(true);
	agd_log(AG_LVL_INFO,
		"stopping: %lu lines, %lu matched (%lu successes, %lu failures recorded, %lu too old), "
		"%lu ignored, %lu overlong, %lu not syslog lines, %lu faults",
		w.c.lines, w.c.matched, w.c.success, w.c.failure, w.c.old, w.c.ignored, w.c.overlong,
		w.c.unparsed, w.c.faults);
	aw_rules_free(w.rules);
	free_sources();
	if (w.ino_fd >= 0)
		close(w.ino_fd);
	close(w.sigfd);
	agd_finish(&w.d);
	return rc == 0 ? 0 : 1;
}
