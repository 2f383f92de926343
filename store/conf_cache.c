/* conf_cache.c - the parsed config file, kept per process and revalidated
 * with one stat() on every use (conf.h: ag_conf_cached). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conf.h"

/* Two writes in one clock tick (or one second on coarse file systems)
 * share a timestamp: a file whose ctime is this close to now is read again
 * and compared on each use until it is older. */
#define RECENT_MS 3000

/* What stat() said; any edit changes one of these. */
struct stamp {
	int err; /* stat()'s errno; 0 = the fields below are valid */
	dev_t dev;
	ino_t ino;
	off_t size;
	mode_t mode;
	struct timespec mtime, ctime;
};

struct entry {
	char path[AG_PATH_MAX];
	uint64_t used;            /* 0 = free slot, else the last use's tick */
	bool recent;              /* changed too recently to trust the stamp */
	struct stamp st;          /* taken before the read that was parsed */
	struct ag_conf_file file; /* those bytes, kept while recent */
	struct ag_conf conf;
	int rc;                   /* what parsing returned */
};

static struct {
	struct entry e[AG_CONF_CACHE_PATHS];
	uint64_t tick;
	unsigned long reads; /* files read, for the tests */
	int64_t (*clock_fn)(void);
} cache;

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* A host that forks while another thread parses must not leave the child
 * with the mutex held. */
static void cache_lock(void) { pthread_mutex_lock(&cache_mu); }
static void cache_unlock(void) { pthread_mutex_unlock(&cache_mu); }
static void cache_atfork(void) { pthread_atfork(cache_lock, cache_unlock, cache_unlock); }

static void take_stamp(const char *path, struct stamp *s)
{
	struct stat sb;

	memset(s, 0, sizeof(*s));
	if (stat(path, &sb) != 0) {
		s->err = errno != 0 ? errno : EIO;
		return;
	}
	s->dev = sb.st_dev;
	s->ino = sb.st_ino;
	s->size = sb.st_size;
	s->mode = sb.st_mode;
	s->mtime = sb.st_mtim;
	s->ctime = sb.st_ctim;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool same_stamp(const struct stamp *a, const struct stamp *b)
{
	return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mode == b->mode && same_time(&a->mtime, &b->mtime) &&
	       same_time(&a->ctime, &b->ctime);
}

static bool same_file(const struct ag_conf_file *a, const struct ag_conf_file *b)
{
	if (a->err != 0 || b->err != 0)
		return a->err == b->err;
	return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

static bool is_recent(const struct stamp *s)
{
	int64_t now = (cache.clock_fn != NULL ? cache.clock_fn : ag_now_ms)();
	int64_t ct = (int64_t)s->ctime.tv_sec * 1000 + s->ctime.tv_nsec / 1000000;

	/* a ctime in the future (the clock stepped back) is recent too */
	return s->err == 0 && ct > now - RECENT_MS;
}

static void drop(struct entry *e)
{
	if (e->used != 0) {
		ag_conf_free(&e->conf);
		ag_conf_file_free(&e->file);
	}
	memset(e, 0, sizeof(*e));
}

/* The entry for @path, or the least recently used one emptied for it. */
static struct entry *lookup(const char *path)
{
	struct entry *victim = &cache.e[0];

	for (size_t i = 0; i < AG_ARRAY_LEN(cache.e); i++) {
		struct entry *e = &cache.e[i];
		if (e->used != 0 && strcmp(e->path, path) == 0)
			return e;
		if (e->used < victim->used)
			victim = e;
	}
	drop(victim);
	snprintf(victim->path, sizeof(victim->path), "%s", path);
	return victim;
}

/* Bring @e up to date with the file as stat() saw it (@st). */
static void refresh(struct entry *e, const struct stamp *st, ag_conf_report_fn *report, void *ctx)
{
	bool known = e->used != 0 && same_stamp(&e->st, st);
	/* the file is there but was not read whole (EMFILE, ENOMEM, EIO, an
	 * LSM denying open but not stat): that is no property of the file,
	 * so it is tried again at every use, not kept until the next edit */
	bool retry = st->err == 0 && e->conf.load_errno != 0;
	struct ag_conf_file f;

	if (known && !e->recent && !retry)
		return;
	(void)ag_conf_file_read(&f, e->path);
	cache.reads++;
	/* the same bytes (or the same read error) again: nothing to parse or
	 * report, unless parsing them ran out of memory last time */
	bool oom = e->file.err == 0 && e->conf.load_errno != 0;
	if (known && !oom && same_file(&e->file, &f)) {
		ag_conf_file_free(&f);
	} else {
		struct ag_conf fresh;
		ag_conf_init(&fresh);
		e->rc = ag_conf_file_parse(&fresh, e->path, &f, report, ctx);
		if (e->used != 0)
			ag_conf_free(&e->conf);
		ag_conf_file_free(&e->file);
		e->conf = fresh;
		e->file = f;
	}
	e->st = *st;
	e->recent = is_recent(st);
	if (!e->recent)
		ag_conf_file_free(&e->file); /* only compared while recent */
}

int ag_conf_cached(struct ag_conf *c, const char *path, ag_conf_report_fn *report, void *ctx)
{
	struct stamp st;
	int rc;

	if (strlen(path) >= AG_PATH_MAX) {
		ag_conf_init(c);
		return ag_conf_load(c, path, report, ctx);
	}
	take_stamp(path, &st);
	pthread_once(&cache_once, cache_atfork);
	pthread_mutex_lock(&cache_mu);
	struct entry *e = lookup(path);
	refresh(e, &st, report, ctx);
	e->used = ++cache.tick;
	rc = e->rc;
	if (ag_conf_copy(c, &e->conf) != 0) {
		/* defaults: the guard must not run on them silently */
		c->load_errno = ENOMEM;
		snprintf(c->load_path, sizeof(c->load_path), "%s", path);
		rc = AG_ENOMEM;
	}
	pthread_mutex_unlock(&cache_mu);
	return rc;
}

void ag_conf_cache_forget(void)
{
	pthread_once(&cache_once, cache_atfork);
	pthread_mutex_lock(&cache_mu);
	for (size_t i = 0; i < AG_ARRAY_LEN(cache.e); i++)
		drop(&cache.e[i]);
	pthread_mutex_unlock(&cache_mu);
}

void ag_conf_cache_set_clock(int64_t (*now_fn)(void))
{
	pthread_mutex_lock(&cache_mu);
	cache.clock_fn = now_fn;
	pthread_mutex_unlock(&cache_mu);
}

unsigned long ag_conf_cache_reads(void)
{
	pthread_mutex_lock(&cache_mu);
	unsigned long n = cache.reads;
	pthread_mutex_unlock(&cache_mu);
	return n;
}
