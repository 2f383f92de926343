/* store.c - LMDB environment handling, per-process cache, transactions. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "counters.h"
#include "record.h"
#include "store.h"

/* The map starts small and grows (doubling) up to db_max_size: address
 * space is limited inside some hosts (Dovecot's vsz_limit is 256M by
 * default). A store file larger than this is mapped at its own size. */
#define AG_MAP_INITIAL ((size_t)8 << 20)
#define AG_MAX_READERS 1022

/* Read transactions kept reset per process for the next one (a process
 * rarely has more than one open at a time: one per thread that reads).
 * Each holds a reader slot of the AG_MAX_READERS, idle (no snapshot, so
 * no page is kept from reuse), for as long as the process lives: an sshd
 * session process would keep its slot for the session. So a process
 * keeps one only while the host has never had more than
 * AG_POOL_READERS_MAX slots in use at once (LMDB's count of slots ever
 * taken): past that, read transactions end as before, and idle kept
 * slots can never crowd out the ones attempts need. */
#define AG_READ_POOL 4
#define AG_POOL_READERS_MAX (AG_MAX_READERS / 4)

/* The store's files, in the order they are opened: lock.mdb first, so
 * a planted lock.mdb is refused before data.mdb is made; then the counter
 * file (counters.h), which only this code opens, by its descriptor. */
enum { SF_LOCK, SF_DATA, SF_COUNTERS, SF_COUNT };
static const char *const file_names[SF_COUNT] = { "lock.mdb", "data.mdb", AG_COUNTERS_NAME };

struct ag_store {
	struct ag_store *next; /* the process's cache: one handle per db_dir */
	char path[1024];
	dev_t dev;             /* the directory's identity: two spellings of one */
	ino_t ino;             /* directory must never open LMDB twice */
	MDB_env *env;
	MDB_dbi dbi[AG_DB_COUNT];
	uint8_t secret[AG_SECRET_LEN];
	int file_fd[SF_COUNT];  /* held while env is open (open_store_file()) */
	struct stat file_id[SF_COUNT];
	struct ag_counters *counters; /* the counter file, mapped; NULL: see counters_rc */
	int counters_rc;              /* why there is none (AG_E*), or 0 */
	pthread_rwlock_t resize_lock; /* readers: transactions; writer: map resize */
	_Atomic int64_t last_sync, last_reader_check; /* last_sync: without counters */
	/* ended read transactions, reset, for ag_txn_begin() to renew: a
	 * renew keeps the reader slot, where a new read transaction takes
	 * LMDB's host-wide reader mutex and scans the reader table for a
	 * free slot (and a malloc or two), for every check */
	pthread_mutex_t pool_mu;
	struct ag_txn *pool[AG_READ_POOL];
	unsigned pool_n;
	uint32_t layout; /* the schema read at open (store.h, AG_SCHEMA_VERSION) */
	int hold_fd;     /* on lock.mdb after a compaction (compact_swap()), or -1 */
};

struct ag_txn {
	struct ag_store *s;
	MDB_txn *txn;
	bool write;
};

static const char *const db_names[AG_DB_COUNT] = { "src", "user", "pair", "list", "slot", "meta", "pw",
						    NULL /* the unnamed one */ };

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static struct ag_store *cache;
static pid_t cache_pid;

/* The last store error of this thread in words (for fault lines): LMDB's
 * text, or which safety rule refused which path, or which system call
 * failed on which path. Cleared when ag_store_get() starts. */
static __thread char last_detail[1400];

const char *ag_store_detail(void)
{
	return last_detail;
}

/* Refuse @path for breaking @rule (AG_EUNSAFE), saying so in the detail. */
static int unsafe(const char *path, const char *rule)
{
	snprintf(last_detail, sizeof(last_detail), "%s: %s", path, rule);
	return AG_EUNSAFE;
}

/* A system call @op failed on @path with @err: say so in the detail.
 * Returns AG_EPERM for access errors, AG_EIO for the rest. */
static int sys_fail(const char *op, const char *path, int err)
{
	snprintf(last_detail, sizeof(last_detail), "%s %s: %s", op, path, strerror(err));
	return err == EACCES || err == EPERM || err == EROFS ? AG_EPERM : AG_EIO;
}

static int map_rc(int rc)
{
	if (rc != 0 && rc != MDB_NOTFOUND)
		snprintf(last_detail, sizeof(last_detail), "%s", mdb_strerror(rc));
	switch (rc) {
	case 0: return 0;
	case MDB_NOTFOUND: return AG_ENOTFOUND;
	case MDB_MAP_FULL: return AG_EFULL;
	case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID:
	case MDB_VERSION_MISMATCH: case MDB_BAD_VALSIZE:
		return AG_ECORRUPT;
	case ENOMEM: return AG_ENOMEM;
	case EACCES: case EPERM: case EROFS: return AG_EPERM;
	case ENOENT: case EIO: case ENOSPC: return AG_EIO;
	}
	return AG_ESTORE;
}

static void atfork_prepare(void) { pthread_mutex_lock(&cache_mu); }
static void atfork_release(void) { pthread_mutex_unlock(&cache_mu); }
static void atfork_setup(void)
{
	pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

/* Refuse a store below a directory that everyone may write without the
 * sticky bit: anyone could rename the store's directory away and put their
 * own in its place (SECURITY.md F8). @dir is absolute. */
static int check_parents(const char *dir)
{
	static const char rule[] = "a parent of db_dir that everyone may write without the "
				   "sticky bit (anyone could swap the store)";
	char path[1100];
	struct stat st;
	size_t len = strlen(dir);

	if (len >= sizeof(path))
		return AG_EINVAL;
	memcpy(path, dir, len + 1);
	if (stat("/", &st) == 0 && (st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_ISVTX) == 0)
		return unsafe("/", rule);
	for (char *slash = path; (slash = strchr(slash + 1, '/')) != NULL;) {
		*slash = '\0';
		int rc = stat(path, &st); /* "/a", then "/a/b", ...: every parent */
		if (rc == 0 && S_ISDIR(st.st_mode) && (st.st_mode & S_IWOTH) != 0 &&
		    (st.st_mode & S_ISVTX) == 0)
			return unsafe(path, rule);
		*slash = '/';
		if (rc != 0)
			return 0; /* missing: creating the store fails there */
	}
	return 0;
}

/* The directory must be ours (or root's), a real directory, and not
 * writable by everyone: a planted symlink or a world-writable directory
 * would let another user swap the store. Creates it (0700) if missing.
 * Every refusal names its rule and the path (ag_store_detail()). */
static int check_dir(const char *dir)
{
	struct stat st;
	int rc = check_parents(dir);

	if (rc != 0)
		return rc;
	if (lstat(dir, &st) != 0) {
		if (errno != ENOENT)
			return sys_fail("lstat", dir, errno);
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return sys_fail("mkdir", dir, errno);
		if (lstat(dir, &st) != 0)
			return sys_fail("lstat", dir, errno);
	}
	if (S_ISLNK(st.st_mode))
		return unsafe(dir, "db_dir is a symbolic link (it must be the directory itself)");
	if (!S_ISDIR(st.st_mode))
		return unsafe(dir, "db_dir is not a directory");
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		char rule[160];
		snprintf(rule, sizeof(rule),
			 "db_dir is owned by uid %lu, neither root nor this process's user (uid %lu)",
			 (unsigned long)st.st_uid, (unsigned long)geteuid());
		return unsafe(dir, rule);
	}
	if ((st.st_mode & S_IWOTH) != 0)
		return unsafe(dir, "db_dir is writable by others");
	/* Root must not open a store whose entries others can replace:
	 * LMDB opens data.mdb and lock.mdb by name and initialises lock.mdb
	 * in place (the files themselves are checked by open_store_file()). */
	if (geteuid() == 0 && (st.st_mode & S_IWGRP) != 0 && st.st_uid == 0)
		return unsafe(dir, "root opens no root-owned db_dir that its group may write "
				   "(use mode 2750, SECURITY.md section 1)");
	return 0;
}

/* Open (creating if need be) one of the store's files before LMDB does,
 * without following a symlink, and check what it is. In a directory
 * shared through its group (setgid or group-writable) the file must be
 * writable by that group whatever this process's umask, or every other
 * service fails open: the mode is set here, through this descriptor.
 *
 * The descriptor stays open until the environment is closed: closing any
 * descriptor of a file drops every POSIX lock the process holds on it,
 * LMDB's shared lock on lock.mdb included, and the next process to open
 * the store would then believe it is alone and re-initialise the lock
 * table under the others' feet. Returns the descriptor or AG_E*. */
static int open_store_file(const char *dir, const char *name, bool shared, struct stat *st_r)
{
	char path[1100];
	const char *rule = NULL;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0660);
	if (fd < 0)
		return errno == ELOOP ? unsafe(path, "a store file is a symbolic link")
				      : sys_fail("open", path, errno);
	if (fstat(fd, st_r) != 0)
		rule = "a store file cannot be examined (fstat failed)";
	else if (!S_ISREG(st_r->st_mode))
		rule = "a store file is not a regular file";
	else if (st_r->st_nlink != 1)
		rule = "a store file has more than one hard link";
	else if ((st_r->st_mode & S_IWOTH) != 0)
		rule = "a store file is writable by others";
	if (rule != NULL) {
		close(fd);
		return unsafe(path, rule);
	}
	if (shared && st_r->st_uid == geteuid() && (st_r->st_mode & 0060) != 0060)
		(void)fchmod(fd, (st_r->st_mode & 0777) | 0060);
	return fd;
}

/* How many of this process's descriptors are open on the file @id, or -1
 * when /proc/self/fd cannot be read (a chroot without /proc). */
static int fds_on(const struct stat *id)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		struct stat st;
		if (e->d_name[0] == '.' || *end != '\0' || fd == dirfd(d))
			continue;
		if (fstat((int)fd, &st) == 0 && st.st_dev == id->st_dev && st.st_ino == id->st_ino)
			n++;
	}
	closedir(d);
	return n;
}

/* LMDB opened data.mdb and lock.mdb again, by name: they must still be
 * the files checked above (a member of a group-writable directory could
 * have swapped one in between). data.mdb: LMDB's descriptor says. lock.mdb:
 * LMDB's descriptor must be one more on the checked file (@lock_fds were
 * open on it before); without /proc, the name must still lead there. */
static int same_files(struct ag_store *s, const char *dir, int lock_fds)
{
	static const char rule[] = "a store file was replaced while LMDB opened it";
	char path[1100];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file_names[SF_DATA]);
	if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) != 0 ||
	    st.st_dev != s->file_id[SF_DATA].st_dev || st.st_ino != s->file_id[SF_DATA].st_ino)
		return unsafe(path, rule);
	snprintf(path, sizeof(path), "%s/%s", dir, file_names[SF_LOCK]);
	int now_fds = lock_fds >= 0 ? fds_on(&s->file_id[SF_LOCK]) : -1;
	if (now_fds >= 0) /* (no second count, e.g. out of descriptors: by name) */
		return now_fds == lock_fds + 1 ? 0 : unsafe(path, rule);
	if (lstat(path, &st) != 0 || st.st_dev != s->file_id[SF_LOCK].st_dev ||
	    st.st_ino != s->file_id[SF_LOCK].st_ino)
		return unsafe(path, rule);
	return 0;
}

static void close_store(struct ag_store *s)
{
	/* the pooled read transactions first: each holds a reader slot */
	for (unsigned i = 0; i < s->pool_n; i++) {
		mdb_txn_abort(s->pool[i]->txn);
		free(s->pool[i]);
	}
	s->pool_n = 0;
	pthread_mutex_destroy(&s->pool_mu);
	if (s->env != NULL)
		mdb_env_close(s->env); /* before our descriptors: see open_store_file() */
	for (int i = 0; i < SF_COUNT; i++)
		if (s->file_fd[i] >= 0)
			close(s->file_fd[i]);
	if (s->hold_fd >= 0)
		close(s->hold_fd);
	ag_counters_unmap(s->counters);
	pthread_rwlock_destroy(&s->resize_lock);
	free(s);
}

static int get_meta(MDB_txn *txn, MDB_dbi meta, const char *name, void *out, size_t len, bool *found)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, meta, &k, &v);

	*found = false;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return map_rc(rc);
	if (v.mv_size != len)
		return AG_ECORRUPT;
	memcpy(out, v.mv_data, len);
	*found = true;
	return 0;
}

static int put_meta(MDB_txn *txn, MDB_dbi meta, const char *name, const void *data, size_t len)
{
	MDB_val k = { strlen(name), (void *)name }, v = { len, (void *)data };
	return map_rc(mdb_put(txn, meta, &k, &v, 0));
}

static int make_secret(uint8_t out[AG_SECRET_LEN])
{
	size_t got = 0;

	while (got < AG_SECRET_LEN) {
		ssize_t n = getrandom(out + got, AG_SECRET_LEN - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return AG_EIO;
		}
		got += (size_t)n;
	}
	return 0;
}

/* The schema a store this process creates gets (ag_store_new_schema()). */
static _Atomic uint32_t new_schema = AG_SCHEMA_VERSION;

void ag_store_new_schema(uint32_t schema)
{
	new_schema = schema >= 1 && schema <= AG_SCHEMA_VERSION ? schema : AG_SCHEMA_VERSION;
}

/* Open the named databases, create the meta records of a new store, check
 * the schema of an existing one, load the secret. */
static int init_dbs(struct ag_store *s)
{
	struct ag_txn *t;
	uint32_t schema;
	bool found;
	/* through ag_txn_begin(): the store may grow past the new map while
	 * this process opens it */
	int rc = ag_txn_begin(s, true, &t);

	if (rc != 0)
		return rc;
	MDB_txn *txn = t->txn;
	for (int i = 0; i < AG_DB_COUNT && rc == 0; i++)
		rc = map_rc(mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]));
	if (rc == 0)
		rc = get_meta(txn, s->dbi[AG_DB_META], "schema", &schema, sizeof(schema), &found);
	if (rc == 0 && found && schema > AG_SCHEMA_VERSION) {
		snprintf(last_detail, sizeof(last_detail),
			 "%s has schema %u, this build reads schema %d at most: the store was made "
			 "by a newer authguard", s->path, schema, AG_SCHEMA_VERSION);
		rc = AG_ENEWER;
	}
	if (rc == 0 && found && schema == 0)
		rc = AG_ECORRUPT;
	if (rc == 0 && !found) {
		struct ag_stats st = { .version = AG_REC_VERSION };
		schema = new_schema;
		st.created = ag_now_ms();
		rc = make_secret(s->secret);
		if (rc == 0)
			rc = put_meta(txn, s->dbi[AG_DB_META], "schema", &schema, sizeof(schema));
		if (rc == 0)
			rc = put_meta(txn, s->dbi[AG_DB_META], "secret", s->secret, AG_SECRET_LEN);
		if (rc == 0)
			rc = put_meta(txn, s->dbi[AG_DB_META], "stats", &st, sizeof(st));
	} else if (rc == 0) {
		rc = get_meta(txn, s->dbi[AG_DB_META], "secret", s->secret, AG_SECRET_LEN, &found);
		if (rc == 0 && !found)
			rc = AG_ECORRUPT;
	}
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	s->layout = schema;
	return ag_txn_commit(t);
}

static int open_store(const char *dir, struct ag_store **s_r)
{
	struct ag_store *s = calloc(1, sizeof(*s));
	struct stat st = { 0 };
	int rc, dead;

	if (s == NULL)
		return AG_ENOMEM;
	snprintf(s->path, sizeof(s->path), "%s", dir);
	for (int i = 0; i < SF_COUNT; i++)
		s->file_fd[i] = -1;
	s->hold_fd = -1;
	pthread_rwlock_init(&s->resize_lock, NULL);
	pthread_mutex_init(&s->pool_mu, NULL);
	rc = check_dir(dir);
	if (rc == 0 && stat(dir, &st) != 0)
		rc = sys_fail("stat", dir, errno);
	if (rc == 0) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
	}
	bool shared = (st.st_mode & (S_ISGID | S_IWGRP)) != 0;
	for (int i = 0; i < SF_COUNT && rc == 0; i++) {
		int fd = open_store_file(dir, file_names[i], shared, &s->file_id[i]);
		if (fd >= 0)
			s->file_fd[i] = fd;
		else if (i == SF_COUNTERS && fd != AG_EUNSAFE)
			s->counters_rc = fd; /* see below */
		else
			rc = fd;
	}
	/* The counter file is a saving, not a need: one this process may not
	 * create (a directory shared as SECURITY.md says, set up before the
	 * file existed) or of another layout leaves the counts in LMDB, as
	 * before it (refusals then take the writer lock). A planted one
	 * (a symlink, a second name, writable by all) refuses the store, like
	 * a planted lock.mdb. */
	if (rc == 0 && s->file_fd[SF_COUNTERS] >= 0)
		s->counters_rc = ag_counters_map(s->file_fd[SF_COUNTERS], &s->counters);
	if (rc == 0)
		rc = map_rc(mdb_env_create(&s->env));
	if (rc == 0)
		rc = map_rc(mdb_env_set_maxdbs(s->env, AG_DB_COUNT + 2));
	if (rc == 0) /* LMDB maps a larger store file at its own size */
		rc = map_rc(mdb_env_set_mapsize(s->env, AG_MAP_INITIAL));
	if (rc == 0)
		rc = map_rc(mdb_env_set_maxreaders(s->env, AG_MAX_READERS));
	int lock_fds = rc == 0 ? fds_on(&s->file_id[SF_LOCK]) : -1;
	if (rc == 0)
		rc = map_rc(mdb_env_open(s->env, dir, MDB_NOSYNC | MDB_NOTLS, 0660));
	if (rc == 0)
		rc = same_files(s, dir, lock_fds);
	if (rc == 0) {
		(void)mdb_reader_check(s->env, &dead);
		rc = init_dbs(s);
	}
	if (rc != 0) {
		close_store(s);
		return rc;
	}
	(void)mdb_env_sync(s->env, 1);
	s->last_sync = s->last_reader_check = ag_now_ms();
	*s_r = s;
	return 0;
}

int ag_store_get(const char *dir, struct ag_store **s_r)
{
	pid_t pid = getpid();
	struct ag_store *s;
	int rc = 0;

	*s_r = NULL;
	last_detail[0] = '\0';
	if (dir == NULL || dir[0] != '/' || strlen(dir) >= sizeof(s->path)) {
		snprintf(last_detail, sizeof(last_detail), "db_dir must be an absolute path");
		return AG_EINVAL;
	}
	pthread_once(&atfork_once, atfork_setup);
	pthread_mutex_lock(&cache_mu);
	if (cache_pid != pid) {
		/* Inherited across fork(): never touch those environments
		 * again (closing them would clear the parent's reader slots).
		 * Their memory is left to the exit of this process. */
		cache = NULL;
		cache_pid = pid;
	}
	for (s = cache; s != NULL; s = s->next)
		if (strcmp(s->path, dir) == 0)
			break;
	if (s == NULL) {
		/* another spelling of a directory already open? */
		struct stat st;
		if (check_dir(dir) == 0 && stat(dir, &st) == 0)
			for (s = cache; s != NULL; s = s->next)
				if (s->dev == st.st_dev && s->ino == st.st_ino)
					break;
	}
	if (s == NULL) {
		rc = open_store(dir, &s);
		/* once more, every check made again: `authguard-admin
		 * upgrade-store` puts a compacted data.mdb in place while it
		 * holds lock.mdb, where this open waited (LMDB then opens the new
		 * file, not the one checked); a planted file is refused again */
		if (rc == AG_EUNSAFE)
			rc = open_store(dir, &s);
		if (rc == 0) {
			s->next = cache;
			cache = s;
		}
	}
	if (rc == 0)
		*s_r = s;
	pthread_mutex_unlock(&cache_mu);
	return rc;
}

void ag_store_forget_all(void)
{
	pthread_mutex_lock(&cache_mu);
	while (cache_pid == getpid() && cache != NULL) {
		struct ag_store *s = cache;
		cache = s->next;
		close_store(s);
	}
	pthread_mutex_unlock(&cache_mu);
}

struct ag_counters *ag_store_counters(struct ag_store *s)
{
	return s->counters;
}

int ag_store_counters_error(struct ag_store *s)
{
	return s->counters_rc;
}

struct ag_store *ag_txn_store(struct ag_txn *t)
{
	return t->s;
}

uint64_t ag_txn_id(const struct ag_txn *t)
{
	return (uint64_t)mdb_txn_id(t->txn);
}

const uint8_t *ag_store_secret(const struct ag_store *s)
{
	return s->secret;
}

/* Another process grew the map: adopt the size the store records (no
 * transaction of ours may be open meanwhile, hence the write lock). It
 * is never more than some process's map, itself never grown past
 * db_max_size (ag_store_grow): adding room here would let every new
 * process raise the store's size for the next. Others may grow it again
 * before our next begin: ag_txn_begin() adopts until it holds still. */
static void adopt_map_size(struct ag_store *s)
{
	pthread_rwlock_wrlock(&s->resize_lock);
	(void)mdb_env_set_mapsize(s->env, 0);
	pthread_rwlock_unlock(&s->resize_lock);
}

int ag_store_grow(struct ag_store *s, int64_t max_bytes)
{
	MDB_envinfo ei;
	int rc = AG_EFULL;

	pthread_rwlock_wrlock(&s->resize_lock);
	if (mdb_env_info(s->env, &ei) == 0 && (int64_t)ei.me_mapsize < max_bytes) {
		int64_t want = (int64_t)ei.me_mapsize * 2;
		if (want > max_bytes)
			want = max_bytes;
		rc = map_rc(mdb_env_set_mapsize(s->env, (size_t)want));
	}
	pthread_rwlock_unlock(&s->resize_lock);
	return rc;
}

int ag_store_usage(struct ag_store *s, uint64_t *used_r, uint64_t *map_r)
{
	MDB_envinfo ei;
	MDB_stat st;
	struct ag_txn *t;
	uint64_t pages = 3; /* two meta pages, the free list's root */
	int rc;

	if (mdb_env_info(s->env, &ei) != 0 || mdb_env_stat(s->env, &st) != 0)
		return AG_ESTORE;
	uint64_t psize = st.ms_psize;
	rc = ag_txn_begin(s, false, &t);
	if (rc != 0)
		return rc;
	/* (the unnamed database too: the fleet's outbox grows there while
	 * Redis is away) */
	for (int i = 0; i < AG_DB_COUNT; i++)
		if (mdb_stat(t->txn, s->dbi[i], &st) == 0)
			pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	ag_txn_abort(t);
	*used_r = pages * psize;
	*map_r = ei.me_mapsize;
	return 0;
}

/* A pooled read transaction renewed on the current snapshot, or NULL
 * (none pooled, or the renew failed: the caller begins one afresh, which
 * also adopts a map another process grew). Called with the resize lock
 * held for reading, as every open transaction holds it. */
static struct ag_txn *renew_pooled(struct ag_store *s)
{
	struct ag_txn *t = NULL;

	pthread_mutex_lock(&s->pool_mu);
	if (s->pool_n > 0)
		t = s->pool[--s->pool_n];
	pthread_mutex_unlock(&s->pool_mu);
	if (t != NULL && mdb_txn_renew(t->txn) != 0) {
		mdb_txn_abort(t->txn); /* MDB_MAP_RESIZED, a bad slot: a fresh one */
		free(t);
		t = NULL;
	}
	return t;
}

int ag_txn_begin(struct ag_store *s, bool write, struct ag_txn **t_r)
{
	struct ag_txn *t;
	int64_t now = ag_now_ms();
	int rc = 0, dead;

	*t_r = NULL;
	if (now - s->last_reader_check > 60000) {
		s->last_reader_check = now;
		(void)mdb_reader_check(s->env, &dead);
	}
	if (!write) {
		pthread_rwlock_rdlock(&s->resize_lock);
		t = renew_pooled(s);
		if (t != NULL) {
			*t_r = t;
			return 0;
		}
		pthread_rwlock_unlock(&s->resize_lock);
	}
	t = malloc(sizeof(*t));
	if (t == NULL)
		return AG_ENOMEM;
	/* Other processes may grow the map again and again while this one
	 * adopts their size (a store growing under load): adopt until it
	 * holds still. Each round is a few system calls; the bound only
	 * keeps a map that never stops moving from spinning here. */
	for (int round = 0;; round++) {
		pthread_rwlock_rdlock(&s->resize_lock);
		rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
		if (rc != MDB_MAP_RESIZED)
			break;
		pthread_rwlock_unlock(&s->resize_lock);
		if (round == 64) {
			free(t);
			return map_rc(rc);
		}
		adopt_map_size(s);
	}
	if (rc != 0) {
		pthread_rwlock_unlock(&s->resize_lock);
		free(t);
		return map_rc(rc);
	}
	t->s = s;
	t->write = write;
	*t_r = t;
	return 0;
}

/* The end of a read transaction: reset into the pool (kept for the next
 * one), or ended for good when the pool is full. */
static void end_read(struct ag_txn *t)
{
	struct ag_store *s = t->s;
	bool kept = false;

	MDB_envinfo ei;
	bool room = mdb_env_info(s->env, &ei) == 0 && ei.me_numreaders <= AG_POOL_READERS_MAX;

	mdb_txn_reset(t->txn);
	pthread_mutex_lock(&s->pool_mu);
	if (room && s->pool_n < AG_READ_POOL) {
		s->pool[s->pool_n++] = t;
		kept = true;
	}
	pthread_mutex_unlock(&s->pool_mu);
	if (!kept) {
		mdb_txn_abort(t->txn);
		free(t);
	}
	pthread_rwlock_unlock(&s->resize_lock);
}

int ag_txn_commit(struct ag_txn *t)
{
	if (!t->write) {
		end_read(t); /* nothing to commit */
		return 0;
	}
	int rc = mdb_txn_commit(t->txn);

	pthread_rwlock_unlock(&t->s->resize_lock);
	free(t);
	return map_rc(rc);
}

void ag_txn_abort(struct ag_txn *t)
{
	if (t == NULL)
		return;
	if (!t->write) {
		end_read(t);
		return;
	}
	mdb_txn_abort(t->txn);
	pthread_rwlock_unlock(&t->s->resize_lock);
	free(t);
}

/*
 * Layout 2 (schema 2, store.h): the users' records live in the sources'
 * database under USER_TAG + the user key, and a source key (so also the
 * first 18 bytes of a pair key: source key, AG_PAIR_TAG, user key) is
 * stored address first: family, 16 address bytes, prefix length. Above
 * this layer every key keeps its layout-1 form (record.h); the mapping is
 * here alone, so layout-1 stores (schema 1) are read and written as
 * before by the same code.
 */
#define USER_TAG 0x01 /* after the addressless pairs (0), before every source key (4, 6) */
#define USERS_KEY "\0users" /* AG_DB_MAIN: layout 2's count of user records */
#define USERS_KEY_LEN 6

static bool layout2(const struct ag_txn *t)
{
	return t->s->layout >= 2;
}

/* A key of a source record or of a pair (layout-1 or stored form: the
 * family and the tag are in place in both). */
static bool src_form(const uint8_t *k, size_t len)
{
	return len >= AG_SRC_KEY_LEN && (k[0] == AG_AF_INET || k[0] == AG_AF_INET6) &&
	       (len == AG_SRC_KEY_LEN || k[AG_SRC_KEY_LEN] == AG_PAIR_TAG);
}

/* Between the two forms of a source key's first 18 bytes: @to_stored
 * moves the prefix length behind the address, else back before it. */
static void src_swap(const uint8_t *k, size_t len, uint8_t *out, bool to_stored)
{
	out[0] = k[0];
	if (to_stored) {
		memcpy(out + 1, k + 2, 16);
		out[17] = k[1];
	} else {
		out[1] = k[17];
		memcpy(out + 2, k + 1, 16);
	}
	memcpy(out + AG_SRC_KEY_LEN, k + AG_SRC_KEY_LEN, len - AG_SRC_KEY_LEN);
}

/* Where @db's @key is kept: @db, @key and @klen changed for layout 2 (into
 * @buf, 512 bytes). AG_EINVAL: a key layout 2 cannot hold (a source
 * database key in the users' range, a user key of 511 bytes). */
static int key_map(const struct ag_txn *t, enum ag_db *db, const void **key, size_t *klen,
		   uint8_t *buf)
{
	const uint8_t *k = *key;

	if (!layout2(t) || *klen == 0)
		return 0;
	if (*db == AG_DB_USER) {
		if (*klen > 510)
			return AG_EINVAL;
		buf[0] = USER_TAG;
		memcpy(buf + 1, k, *klen);
		*key = buf;
		*klen += 1;
		*db = AG_DB_SRC;
	} else if (*db == AG_DB_SRC && k[0] == USER_TAG) {
		return AG_EINVAL;
	} else if (*db == AG_DB_SRC && src_form(k, *klen) && *klen <= 511) {
		src_swap(k, *klen, buf, true);
		*key = buf;
	}
	return 0;
}

/* Layout 2's count of users (kept in the unnamed database, whose page
 * every commit writes anyway), moved by @delta when @delta is not 0. */
static int users_count(struct ag_txn *t, int64_t delta, uint64_t *n_r)
{
	MDB_val k = { USERS_KEY_LEN, (void *)USERS_KEY }, v;
	uint64_t n = 0;
	int rc = mdb_get(t->txn, t->s->dbi[AG_DB_MAIN], &k, &v);

	if (rc == 0 && v.mv_size == sizeof(n))
		memcpy(&n, v.mv_data, sizeof(n));
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return map_rc(rc);
	if (delta != 0) {
		n = delta < 0 && n < (uint64_t)-delta ? 0 : n + (uint64_t)delta;
		v.mv_size = sizeof(n);
		v.mv_data = &n;
		rc = mdb_put(t->txn, t->s->dbi[AG_DB_MAIN], &k, &v, 0);
		if (rc != 0)
			return map_rc(rc);
	}
	if (n_r != NULL)
		*n_r = n;
	return 0;
}

/* Layout 2: how many entries of the sources' database are users. */
static int users_in_src(struct ag_txn *t, uint64_t *n_r)
{
	*n_r = 0;
	return layout2(t) ? users_count(t, 0, n_r) : 0;
}

/* How many records @db holds: layout 2's users and sources share the
 * sources' database, told apart by the users' count. */
static int db_entries(struct ag_txn *t, enum ag_db db, uint64_t *n_r)
{
	MDB_stat st;
	uint64_t users;
	int rc;

	*n_r = 0;
	if (layout2(t) && db == AG_DB_USER)
		return users_count(t, 0, n_r);
	rc = map_rc(mdb_stat(t->txn, t->s->dbi[db], &st));
	if (rc == 0 && db == AG_DB_SRC && (rc = users_in_src(t, &users)) == 0)
		st.ms_entries = st.ms_entries > users ? st.ms_entries - users : 0;
	if (rc == 0)
		*n_r = st.ms_entries;
	return rc;
}

int ag_txn_entries(struct ag_txn *t, enum ag_db db, uint64_t *n_r)
{
	if (db >= AG_DB_COUNT) {
		*n_r = 0;
		return AG_EINVAL;
	}
	return db_entries(t, db, n_r);
}

uint32_t ag_store_layout(const struct ag_store *s)
{
	return s->layout;
}

static bool key_ok(size_t klen)
{
	return klen > 0 && klen <= 511;
}

int ag_txn_get(struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
	       const void **val_r, size_t *vlen_r)
{
	uint8_t buf[512];

	if (!key_ok(klen) || db >= AG_DB_COUNT || key_map(t, &db, &key, &klen, buf) != 0)
		return AG_EINVAL;
	MDB_val k = { klen, (void *)key }, v;
	int rc = mdb_get(t->txn, t->s->dbi[db], &k, &v);
	if (rc != 0)
		return map_rc(rc);
	*val_r = v.mv_data;
	*vlen_r = v.mv_size;
	return 0;
}

int ag_txn_put(struct ag_txn *t, enum ag_db db, const void *key, size_t klen, const void *val,
	       size_t vlen)
{
	uint8_t buf[512];
	bool user = db == AG_DB_USER && layout2(t);

	if (!key_ok(klen) || db >= AG_DB_COUNT || key_map(t, &db, &key, &klen, buf) != 0)
		return AG_EINVAL;
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	if (!user)
		return map_rc(mdb_put(t->txn, t->s->dbi[db], &k, &v, 0));
	/* a new user is counted: MDB_NOOVERWRITE finds an existing one
	 * before it touches a page */
	int rc = mdb_put(t->txn, t->s->dbi[db], &k, &v, MDB_NOOVERWRITE);
	if (rc == 0)
		return users_count(t, 1, NULL);
	if (rc != MDB_KEYEXIST)
		return map_rc(rc);
	v.mv_size = vlen;
	v.mv_data = (void *)val;
	return map_rc(mdb_put(t->txn, t->s->dbi[db], &k, &v, 0));
}

int ag_txn_del(struct ag_txn *t, enum ag_db db, const void *key, size_t klen)
{
	uint8_t buf[512];
	bool user = db == AG_DB_USER && layout2(t);

	if (!key_ok(klen) || db >= AG_DB_COUNT || key_map(t, &db, &key, &klen, buf) != 0)
		return AG_EINVAL;
	MDB_val k = { klen, (void *)key };
	int rc = map_rc(mdb_del(t->txn, t->s->dbi[db], &k, NULL));
	return rc == 0 && user ? users_count(t, -1, NULL) : rc;
}

/* Visit entries from the first key >= @start (or the first key), while
 * they start with @prefix (any key if @plen is 0).
 *
 * Layout 2: the users' database is the USER_TAG range of the sources'
 * (bounded by its tag, the tag taken off for @fn); a scan of the sources'
 * database steps over that range, and gives @fn every key in its layout-1
 * form, in the stored order: sources by family, then address, then prefix
 * length (a net of 24 bits just before its first host; a pair behind its source).
 * A @prefix or @start of 18 bytes or more is mapped as a key is (so
 * "source key + AG_PAIR_TAG" still finds that source's pairs, and a batch
 * resumes at the key it stopped at); a shorter one with a family byte
 * (a family and prefix length) cannot be: the scan then starts at the
 * family and filters the keys by @prefix in their layout-1 form, so it
 * finds the same records, only not in that order. */
static int scan(struct ag_txn *t, enum ag_db db, const void *start, size_t slen,
		const void *prefix, size_t plen, ag_scan_fn *fn, void *ctx)
{
	MDB_cursor *c;
	uint8_t sbuf[512], pbuf[512], kbuf[512];
	const uint8_t *filter = NULL; /* layout-1 form: keys that do not match are skipped */
	size_t flen = 0, strip = 0;
	bool users = false, srcs = false;
	int rc;

	if (db >= AG_DB_COUNT || slen > 511 || plen > 511)
		return AG_EINVAL;
	if (layout2(t) && db == AG_DB_USER) {
		if (slen > 510 || plen > 510)
			return AG_EINVAL;
		users = true;
		db = AG_DB_SRC;
		sbuf[0] = pbuf[0] = USER_TAG;
		if (slen > 0)
			memcpy(sbuf + 1, start, slen);
		if (plen > 0)
			memcpy(pbuf + 1, prefix, plen);
		start = sbuf;
		prefix = pbuf;
		slen++;
		plen++;
		strip = 1;
	} else if (layout2(t) && db == AG_DB_SRC) {
		const uint8_t *st = start, *pf = prefix;
		srcs = true;
		if (plen > 0 && (pf[0] == AG_AF_INET || pf[0] == AG_AF_INET6) && plen > 1 &&
		    plen < AG_SRC_KEY_LEN) {
			filter = pf;
			flen = plen;
			plen = 1;
		} else if (src_form(pf, plen)) {
			src_swap(pf, plen, pbuf, true);
			prefix = pbuf;
		}
		if (slen > 1 && (st[0] == AG_AF_INET || st[0] == AG_AF_INET6) &&
		    slen < AG_SRC_KEY_LEN) {
			slen = 1;
		} else if (src_form(st, slen)) {
			src_swap(st, slen, sbuf, true);
			start = sbuf;
		}
	}
	rc = mdb_cursor_open(t->txn, t->s->dbi[db], &c);
	if (rc != 0)
		return map_rc(rc);
	MDB_val k = { slen, (void *)start }, v;
	rc = mdb_cursor_get(c, &k, &v, slen > 0 ? MDB_SET_RANGE : MDB_FIRST);
	while (rc == 0) {
		const uint8_t *key = k.mv_data;
		size_t klen = k.mv_size;
		if (plen > 0 && (klen < plen || memcmp(key, prefix, plen) != 0))
			break;
		if (srcs && key[0] == USER_TAG) {
			/* the users' range: on past it */
			static const uint8_t past = USER_TAG + 1;
			k.mv_size = 1;
			k.mv_data = (void *)&past;
			rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
			continue;
		}
		if (srcs && src_form(key, klen)) {
			src_swap(key, klen, kbuf, false);
			key = kbuf;
		}
		key += strip;
		klen -= strip;
		enum ag_scan_op op = AG_SCAN_NEXT;
		if (filter == NULL || (klen >= flen && memcmp(key, filter, flen) == 0))
			op = fn(ctx, key, klen, v.mv_data, v.mv_size);
		if (op == AG_SCAN_STOP)
			break;
		/* after a delete, MDB_NEXT yields the entry that followed the
		 * deleted one (LMDB keeps a C_DEL mark) */
		if (op == AG_SCAN_DELETE && (rc = mdb_cursor_del(c, 0)) != 0)
			break;
		if (op == AG_SCAN_DELETE && users && (rc = users_count(t, -1, NULL)) != 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : map_rc(rc);
}

int ag_txn_scan(struct ag_txn *t, enum ag_db db, const void *prefix, size_t plen,
		ag_scan_fn *fn, void *ctx)
{
	return scan(t, db, prefix, plen, prefix, plen, fn, ctx);
}

int ag_txn_scan_from(struct ag_txn *t, enum ag_db db, const void *start, size_t slen,
		     ag_scan_fn *fn, void *ctx)
{
	return scan(t, db, start, slen, NULL, 0, fn, ctx);
}

/* Processes other than this one with the store open: every process that
 * maps data.mdb (/proc/PID/maps, by device and inode), and, for those
 * whose maps this process may not read, LMDB's shared lock on lock.mdb
 * that every process with the store open holds (F_GETLK names one). */
int ag_store_holders(struct ag_store *s, ag_holder_fn *fn, void *ctx)
{
	const struct stat *data = &s->file_id[SF_DATA];
	DIR *d = opendir("/proc");
	struct dirent *e;
	long lock_pid = 0;
	int n = 0;
	bool lock_seen = false, lock_held = false;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

	/* (F_GETLK names a holder in a PID namespace this one cannot see as
	 * pid 0: held all the same) */
	if (fcntl(s->file_fd[SF_LOCK], F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
		lock_held = true;
		lock_pid = (long)fl.l_pid;
	}
	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[300], line[1400], comm[64] = "?";
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		bool maps = false;
		if (*end != '\0' || pid <= 0 || pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/maps", pid);
		FILE *f = fopen(path, "re");
		while (f != NULL && !maps && fgets(line, sizeof(line), f) != NULL) {
			unsigned maj, min;
			unsigned long long ino;
			if (sscanf(line, "%*s %*s %*s %x:%x %llu", &maj, &min, &ino) == 3 &&
			    ino == (unsigned long long)data->st_ino && maj == major(data->st_dev) &&
			    min == minor(data->st_dev))
				maps = true;
		}
		if (f != NULL)
			fclose(f);
		if (!maps && pid != lock_pid)
			continue;
		lock_seen |= pid == lock_pid;
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		f = fopen(path, "re");
		if (f != NULL && fgets(comm, sizeof(comm), f) != NULL)
			comm[strcspn(comm, "\n")] = '\0';
		if (f != NULL)
			fclose(f);
		fn(ctx, pid, comm);
		n++;
	}
	if (d != NULL)
		closedir(d);
	if (lock_held && !lock_seen) { /* (another PID namespace's: its pid there, or 0) */
		fn(ctx, lock_pid > 0 ? lock_pid : 0, "another PID namespace: pid not known here");
		n++;
	}
	return n;
}

/* The records of the sources' and users' databases, in memory, under the
 * keys layout 2 gives them (upgrade_txn()). */
struct moved {
	uint8_t *buf;     /* each: key length (2), value length (4), key, value */
	size_t len, cap;
	size_t *at;       /* where each starts in buf */
	size_t n, ncap;
	uint64_t srcs, users;
};

static int moved_add(struct moved *m, const uint8_t *key, size_t klen, bool user,
		     const MDB_val *v)
{
	size_t kl = klen + user, need = 6 + kl + v->mv_size;

	if (kl > 511 || v->mv_size > UINT32_MAX)
		return MDB_BAD_VALSIZE;
	if (m->len + need > m->cap) {
		size_t cap = m->cap * 2 + need + (1 << 20);
		uint8_t *nb = realloc(m->buf, cap);
		if (nb == NULL)
			return ENOMEM;
		m->buf = nb;
		m->cap = cap;
	}
	if (m->n == m->ncap) {
		size_t cap = m->ncap * 2 + 4096;
		size_t *na = realloc(m->at, cap * sizeof(*na));
		if (na == NULL)
			return ENOMEM;
		m->at = na;
		m->ncap = cap;
	}
	uint8_t *p = m->buf + m->len;
	uint32_t vl = (uint32_t)v->mv_size;
	p[0] = (uint8_t)(kl >> 8);
	p[1] = (uint8_t)kl;
	memcpy(p + 2, &vl, 4);
	if (user) {
		p[6] = USER_TAG;
		memcpy(p + 7, key, klen);
		m->users++;
	} else if (src_form(key, klen)) {
		src_swap(key, klen, p + 6, true);
		m->srcs++;
	} else {
		memcpy(p + 6, key, klen); /* an addressless pair's: the same in both */
	}
	memcpy(p + 6 + kl, v->mv_data, v->mv_size);
	m->at[m->n++] = m->len;
	m->len += need;
	return 0;
}

static _Thread_local const uint8_t *sort_base; /* for moved_cmp(), per thread (upgrade_txn()) */

/* LMDB's default order (memcmp, then the shorter first). */
static int moved_cmp(const void *a, const void *b)
{
	const uint8_t *x = sort_base + *(const size_t *)a, *y = sort_base + *(const size_t *)b;
	size_t xl = (size_t)x[0] << 8 | x[1], yl = (size_t)y[0] << 8 | y[1];
	int c = memcmp(x + 6, y + 6, xl < yl ? xl : yl);

	return c != 0 ? c : (xl > yl) - (xl < yl);
}

/* Read every record of database @dbi into @m. */
static int moved_read(MDB_txn *txn, MDB_dbi dbi, bool user, struct moved *m)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, dbi, &c);

	if (rc != 0)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		const uint8_t *key = k.mv_data;
		if (!user && k.mv_size > 0 && key[0] >= USER_TAG && key[0] < AG_AF_INET) {
			snprintf(last_detail, sizeof(last_detail),
				 "the sources' database holds a key in the range layout 2 takes (%u)",
				 key[0]);
			rc = MDB_INCOMPATIBLE;
			break;
		}
		rc = moved_add(m, key, k.mv_size, user, &v);
		if (rc == 0)
			rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Layout-1 store to layout 2, in the open write transaction @t: the
 * sources' and users' records are read into memory under their new keys
 * and sorted, both databases emptied (the users' is kept, empty), and the
 * records appended to the sources' in key order (MDB_APPEND: leaves
 * filled, no page split; the old pages are free after the commit). The
 * file needs room for both copies meanwhile. */
static int upgrade_txn(struct ag_txn *t, uint64_t *srcs_r, uint64_t *users_r)
{
	MDB_txn *txn = t->txn;
	MDB_dbi src = t->s->dbi[AG_DB_SRC], user = t->s->dbi[AG_DB_USER];
	struct moved m = { .buf = NULL };
	uint32_t schema = 2;
	int rc = moved_read(txn, src, false, &m);

	if (rc == 0)
		rc = moved_read(txn, user, true, &m);
	if (rc == 0) {
		sort_base = m.buf;
		if (m.n > 0)
			qsort(m.at, m.n, sizeof(*m.at), moved_cmp);
		rc = mdb_drop(txn, src, 0);
	}
	if (rc == 0)
		rc = mdb_drop(txn, user, 0);
	for (size_t i = 0; rc == 0 && i < m.n; i++) {
		uint8_t *p = m.buf + m.at[i];
		uint32_t vl;
		memcpy(&vl, p + 2, 4);
		MDB_val k = { (size_t)p[0] << 8 | p[1], p + 6 }, v = { vl, p + 6 + k.mv_size };
		rc = mdb_put(txn, src, &k, &v, MDB_APPEND);
	}
	*srcs_r = m.srcs;
	*users_r = m.users;
	free(m.buf);
	free(m.at);
	rc = rc == MDB_INCOMPATIBLE ? AG_ECORRUPT : map_rc(rc);
	if (rc == 0)
		rc = put_meta(txn, t->s->dbi[AG_DB_META], "schema", &schema, sizeof(schema));
	if (rc == 0) {
		t->s->layout = 2; /* for the count, put in layout 2's place */
		rc = users_count(t, (int64_t)*users_r, NULL);
		if (rc != 0)
			t->s->layout = 1;
	}
	return rc;
}

/* The last committed transaction's id in data.mdb's two meta pages (read
 * from the file: no environment is open on it then), or 0. LMDB 0.9's
 * meta page: its page header (16 bytes), magic, version, address, map
 * size, two database records of 48 bytes, last page, then the id. */
static uint64_t file_txnid(int fd, unsigned psize)
{
	uint64_t best = 0;

	for (unsigned i = 0; i < 2; i++) {
		uint8_t m[152];
		uint32_t magic;
		uint64_t id;
		if (pread(fd, m, sizeof(m), (off_t)i * psize) != (ssize_t)sizeof(m))
			return 0;
		memcpy(&magic, m + 16, 4);
		memcpy(&id, m + 144, 8);
		if (magic != 0xBEEFC0DEu)
			return 0;
		best = id > best ? id : best;
	}
	return best;
}

/*
 * After the upgrade's commit: the old layout's pages are free, about as
 * many as the data holds, and LMDB 0.9 rewrites a free list that large
 * in part at every commit (measured: 11.4 pages per recorded failure at
 * 100k sources instead of 8.7). So the store is copied compacted
 * (MDB_CP_COMPACT: no free page) to data.mdb.compact and put in place of
 * data.mdb, only while no other process has the store open:
 * this process's environment is closed, LMDB's lock on lock.mdb taken
 * for writing (any process with the store open holds it for reading, and
 * one that opens it now waits there, before it opens data.mdb), the file
 * checked unchanged since the copy (its last transaction id), renamed,
 * and the store opened again while the lock is still held, so LMDB
 * starts lock.mdb afresh for the new file (a compacted copy starts its
 * transaction ids again). The descriptor holding the lock stays open
 * with the new handle (closing it would drop this process's lock).
 * Anything in the way leaves the store as the commit left it: valid,
 * only larger; *sp is the handle to use either way.
 */
static int compact_swap(struct ag_store **sp, bool *done_r)
{
	struct ag_store *s = *sp, *ns = NULL;
	char dir[sizeof(s->path)], data[1100], tmp[1100], lock[1100];
	struct stat st = s->file_id[SF_DATA];
	MDB_envinfo ei;
	MDB_stat ms;
	int rc = 0, fd, lfd = -1;

	*done_r = false;
	last_detail[0] = '\0';
	snprintf(dir, sizeof(dir), "%s", s->path);
	snprintf(data, sizeof(data), "%s/data.mdb", dir);
	snprintf(tmp, sizeof(tmp), "%s/data.mdb.compact", dir);
	snprintf(lock, sizeof(lock), "%s/lock.mdb", dir);
	if (unlink(tmp) != 0 && errno != ENOENT)
		return sys_fail("unlink", tmp, errno);
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return sys_fail("open", tmp, errno);
	if (fchown(fd, st.st_uid, st.st_gid) != 0 || fchmod(fd, st.st_mode & 07777) != 0)
		rc = sys_fail("chown/chmod", tmp, errno);
	if (rc == 0 && (mdb_env_info(s->env, &ei) != 0 || mdb_env_stat(s->env, &ms) != 0))
		rc = AG_ESTORE;
	uint64_t txnid = rc == 0 ? ei.me_last_txnid : 0;
	if (rc == 0)
		rc = map_rc(mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT));
	if (rc == 0 && fsync(fd) != 0)
		rc = sys_fail("fsync", tmp, errno);
	close(fd);
	if (rc != 0) {
		(void)unlink(tmp);
		return rc;
	}
	pthread_mutex_lock(&cache_mu);
	for (struct ag_store **p = &cache; *p != NULL; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	close_store(s);
	lfd = open(lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	struct flock wr = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	if (lfd < 0 || fcntl(lfd, F_SETLK, &wr) != 0) {
		snprintf(last_detail, sizeof(last_detail),
			 "another process opened the store meanwhile: not compacted");
		rc = AG_EBUSY;
	}
	int dfd = rc == 0 ? open(data, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (rc == 0 && (dfd < 0 || file_txnid(dfd, ms.ms_psize) != txnid)) {
		snprintf(last_detail, sizeof(last_detail),
			 "the store was written after the copy: not compacted");
		rc = AG_EBUSY;
	}
	if (dfd >= 0)
		close(dfd);
	if (rc == 0 && rename(tmp, data) != 0)
		rc = sys_fail("rename", tmp, errno);
	if (rc == 0) { /* the rename on disk too */
		int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd >= 0) {
			(void)fsync(dirfd);
			close(dirfd);
		}
	}
	if (rc != 0)
		(void)unlink(tmp);
	*done_r = rc == 0;
	int orc = open_store(dir, &ns);
	if (orc == 0) {
		ns->hold_fd = lfd; /* closed with it */
		ns->next = cache;
		cache = ns;
	} else if (lfd >= 0) {
		close(lfd);
	}
	pthread_mutex_unlock(&cache_mu);
	*sp = ns;
	return orc != 0 ? orc : rc;
}

int ag_store_upgrade(struct ag_store **sp, int64_t max_bytes, ag_holder_fn *fn, void *ctx,
		     struct ag_upgrade *u)
{
	struct ag_store *s = *sp;

	memset(u, 0, sizeof(*u));
	for (;;) {
		struct ag_txn *t;
		/* the writer lock first: a process that opens the store from
		 * now on reads the schema after this commit (init_dbs()) */
		int rc = ag_txn_begin(s, true, &t);
		if (rc != 0)
			return rc;
		if (s->layout >= 2) {
			ag_txn_abort(t);
			return 0;
		}
		if (ag_store_holders(s, fn, ctx) > 0) {
			ag_txn_abort(t);
			return AG_EBUSY;
		}
		rc = upgrade_txn(t, &u->srcs, &u->users);
		if (rc == 0) {
			rc = ag_txn_commit(t);
			if (rc != 0)
				s->layout = 1;
			else /* on disk now (MDB_NOSYNC: no other process may flush it
			      * soon, the services are stopped) */
				(void)mdb_env_sync(s->env, 1);
		} else {
			s->layout = 1;
			ag_txn_abort(t);
		}
		if (rc == 0)
			break;
		if (rc != AG_EFULL || ag_store_grow(s, max_bytes) != 0)
			return rc;
	}
	struct stat before;
	u->bytes_before = fstat(s->file_fd[SF_DATA], &before) == 0 ? (uint64_t)before.st_size : 0;
	u->compact_rc = compact_swap(sp, &u->compacted);
	if (u->compact_rc != 0) {
		size_t n = strnlen(last_detail, sizeof(u->compact_detail) - 1);
		memcpy(u->compact_detail, last_detail, n);
		u->compact_detail[n] = '\0';
	}
	struct stat after;
	if (*sp != NULL && fstat((*sp)->file_fd[SF_DATA], &after) == 0)
		u->bytes_after = (uint64_t)after.st_size;
	return 0;
}

/* The flush itself: LMDB's data file (fdatasync), then the counter file. */
static void flush(struct ag_store *s)
{
	(void)mdb_env_sync(s->env, 1);
	if (s->counters != NULL)
		ag_counters_sync(s->counters);
}

/* When the store was last flushed: host-wide in the counter file, so a
 * flush by any process (authguard-admin flush --every, which keeps it from
 * ever being due) counts for all; without one, this process's own. */
static int64_t last_sync(struct ag_store *s)
{
	return s->counters != NULL ? ag_counters_last_sync(s) : atomic_load(&s->last_sync);
}

static bool sync_claim(struct ag_store *s, int64_t seen, int64_t now)
{
	if (s->counters != NULL)
		return ag_counters_sync_claim(s, seen, now);
	return atomic_compare_exchange_strong(&s->last_sync, &seen, now);
}

void ag_store_maybe_sync(struct ag_store *s)
{
	int64_t now = ag_now_ms(), last = last_sync(s);

	if (now - last < AG_SYNC_MS && now >= last)
		return;
	if (!sync_claim(s, last, now))
		return; /* another thread or process is at it */
	flush(s);
}

void ag_store_sync(struct ag_store *s)
{
	int64_t now = ag_now_ms(), last = last_sync(s);

	/* claimed first, so that no attempt starts a flush of its own while
	 * this one runs (it may take a while on a busy disk) */
	while (!sync_claim(s, last, now))
		last = last_sync(s);
	flush(s);
}

/* mdb_reader_list() callback: a header, then one line per slot that has
 * an owner, "pid thread txnid" ("-" for txnid: idle, kept for the next
 * read). A slot whose process is gone stays until a stale-reader check. */
static int count_readers(const char *line, void *ctx)
{
	struct ag_store_info *info = ctx;
	long pid;
	unsigned long thread;
	char txn[32];

	if (sscanf(line, "%ld %lx %31s", &pid, &thread, txn) != 3 || pid <= 0)
		return 0; /* the header, or "(no active readers)" */
	if (pid == (long)getpid())
		info->own_readers++;
	else if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
		info->readers_stale++;
		return 0;
	}
	info->readers++;
	if (strcmp(txn, "-") != 0)
		info->readers_busy++;
	return 0;
}

int ag_store_info(struct ag_store *s, struct ag_store_info *info)
{
	MDB_envinfo ei;
	MDB_stat st;
	struct ag_txn *t;
	struct stat fst;
	bool found;
	int rc;

	memset(info, 0, sizeof(*info));
	snprintf(info->path, sizeof(info->path), "%s", s->path);
	if (mdb_env_info(s->env, &ei) != 0 || mdb_env_stat(s->env, &st) != 0)
		return AG_ESTORE;
	info->map_size = ei.me_mapsize;
	info->used_bytes = (uint64_t)(ei.me_last_pgno + 1) * st.ms_psize;
	info->readers_peak = ei.me_numreaders;
	(void)mdb_reader_list(s->env, count_readers, info);
	info->last_txnid = ei.me_last_txnid;
	info->max_readers = ei.me_maxreaders;
	if (fstat(s->file_fd[SF_DATA], &fst) == 0)
		info->file_bytes = (uint64_t)fst.st_size;
	rc = ag_txn_begin(s, false, &t);
	if (rc != 0)
		return rc;
	for (int i = 0; i < AG_DB_COUNT; i++)
		(void)db_entries(t, (enum ag_db)i, &info->entries[i]);
	info->layout = s->layout;
	rc = get_meta(t->txn, s->dbi[AG_DB_META], "schema", &info->schema, sizeof(info->schema),
		      &found);
	ag_txn_abort(t);
	return rc;
}
