/* test_store.c - the LMDB store: creation, safety checks, schema, fork,
 * concurrent writers, scans. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "counters.h"
#include "record.h"
#include "store.h"
#include "testutil.h"

struct fx {
	char dir[256];
	char db[300];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	tu_mkdtemp(f->dir, sizeof(f->dir), "store");
	snprintf(f->db, sizeof(f->db), "%s/db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ag_store_forget_all();
	tu_rmrf(f->dir);
	free(f);
	return 0;
}

static void put_u64(struct ag_store *s, const char *key, uint64_t v)
{
	struct ag_txn *t;

	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_SRC, key, strlen(key), &v, sizeof(v)), 0);
	assert_int_equal(ag_txn_commit(t), 0);
}

static uint64_t get_u64(struct ag_store *s, const char *key)
{
	struct ag_txn *t;
	const void *val;
	size_t len;
	uint64_t v = 0;

	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	if (ag_txn_get(t, AG_DB_SRC, key, strlen(key), &val, &len) == 0) {
		assert_int_equal(len, sizeof(v));
		memcpy(&v, val, sizeof(v));
	}
	ag_txn_abort(t);
	return v;
}

static void test_create_and_reopen(void **state)
{
	struct fx *f = *state;
	struct ag_store *s, *s2;
	struct stat st;
	uint8_t secret[AG_SECRET_LEN], zero[AG_SECRET_LEN] = { 0 };

	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	memcpy(secret, ag_store_secret(s), sizeof(secret));
	assert_memory_not_equal(secret, zero, sizeof(zero));
	/* cached: the same handle again */
	assert_int_equal(ag_store_get(f->db, &s2), 0);
	assert_ptr_equal(s, s2);
	put_u64(s, "k", 42);
	/* reopened from disk: same secret, same data */
	ag_store_forget_all();
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_memory_equal(ag_store_secret(s), secret, sizeof(secret));
	assert_int_equal(get_u64(s, "k"), 42);

	struct ag_store_info info;
	assert_int_equal(ag_store_info(s, &info), 0);
	assert_int_equal(info.schema, AG_SCHEMA_VERSION);
	assert_int_equal(info.entries[AG_DB_SRC], 1);
	assert_true(info.file_bytes > 0);
}

/* Two spellings of one directory share one handle: LMDB must never be
 * opened twice in a process. */
static void test_same_dir_other_spelling(void **state)
{
	struct fx *f = *state;
	struct ag_store *a, *b, *c;
	char slash[400], dotted[800], link[400];

	assert_int_equal(ag_store_get(f->db, &a), 0);
	snprintf(slash, sizeof(slash), "%s/", f->db);
	snprintf(dotted, sizeof(dotted), "%s/./db", f->dir);
	assert_int_equal(ag_store_get(slash, &b), 0);
	assert_int_equal(ag_store_get(dotted, &c), 0);
	assert_ptr_equal(a, b);
	assert_ptr_equal(a, c);
	/* a symlinked parent reaches the same directory too */
	snprintf(link, sizeof(link), "%s/parent-link", f->dir);
	assert_int_equal(symlink(f->dir, link), 0);
	snprintf(dotted, sizeof(dotted), "%s/db", link);
	assert_int_equal(ag_store_get(dotted, &c), 0);
	assert_ptr_equal(a, c);
}

/* The last refusal's detail starts with @path and holds @rule. */
static void assert_detail(const char *path, const char *rule)
{
	const char *d = ag_store_detail();

	if (strncmp(d, path, strlen(path)) != 0 || strstr(d, rule) == NULL)
		fail_msg("detail '%s', want '%s...%s'", d, path, rule);
}

static void test_unsafe_dirs(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char p[400];

	/* a symlink planted where the store should be */
	snprintf(p, sizeof(p), "%s/link", f->dir);
	assert_int_equal(mkdir(f->db, 0700), 0);
	assert_int_equal(symlink(f->db, p), 0);
	assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
	assert_detail(p, ": db_dir is a symbolic link");
	/* a world-writable directory */
	snprintf(p, sizeof(p), "%s/open", f->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, 0777), 0);
	assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
	assert_detail(p, ": db_dir is writable by others");
	/* a plain file */
	snprintf(p, sizeof(p), "%s/file", f->dir);
	int fd = open(p, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
	assert_detail(p, ": db_dir is not a directory");
	/* below a directory everyone may write (no sticky bit): anyone could
	 * swap the store's directory for their own */
	snprintf(p, sizeof(p), "%s/pub", f->dir);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, 0777), 0);
	snprintf(p, sizeof(p), "%s/pub/db", f->dir);
	assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
	snprintf(p, sizeof(p), "%s/pub", f->dir); /* the parent is named */
	assert_detail(p, ": a parent of db_dir that everyone may write without the sticky bit");
	/* with the sticky bit (like /tmp) others cannot rename it away */
	snprintf(p, sizeof(p), "%s/pub", f->dir);
	assert_int_equal(chmod(p, 01777), 0);
	snprintf(p, sizeof(p), "%s/pub/db", f->dir);
	assert_int_equal(ag_store_get(p, &s), 0);
	/* parent missing */
	snprintf(p, sizeof(p), "%s/no/such/dir", f->dir);
	assert_int_equal(ag_store_get(p, &s), AG_EIO);
	char want[500];
	snprintf(want, sizeof(want), "mkdir %s", p);
	assert_detail(want, ": No such file or directory");
	/* the detail belongs to the last call: a good one clears it */
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_string_equal(ag_store_detail(), "");
	if (geteuid() == 0) {
		/* another user's directory; root's that its group may write */
		snprintf(p, sizeof(p), "%s/theirs", f->dir);
		assert_int_equal(mkdir(p, 0700), 0);
		assert_int_equal(chown(p, 12345, 12345), 0);
		assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
		assert_detail(p, ": db_dir is owned by uid 12345, neither root nor");
		snprintf(p, sizeof(p), "%s/grp", f->dir);
		assert_int_equal(mkdir(p, 0700), 0);
		assert_int_equal(chmod(p, 0770), 0);
		assert_int_equal(ag_store_get(p, &s), AG_EUNSAFE);
		assert_detail(p, ": root opens no root-owned db_dir that its group may write");
	}
	/* relative path */
	assert_int_equal(ag_store_get("relative/db", &s), AG_EINVAL);
	assert_int_equal(ag_store_get(NULL, &s), AG_EINVAL);
}

/* A store file replaced by a symlink or a hard link (a group member
 * aiming a root process at /etc/shadow) is refused, not followed. */
static void test_planted_store_files(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char target[400], p[400];

	snprintf(target, sizeof(target), "%s/victim", f->dir);
	FILE *v = fopen(target, "w");
	fputs("precious\n", v);
	fclose(v);
	assert_int_equal(mkdir(f->db, 0700), 0);
	snprintf(p, sizeof(p), "%s/lock.mdb", f->db);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(ag_store_get(f->db, &s), AG_EUNSAFE);
	assert_detail(p, ": a store file is a symbolic link");
	assert_int_equal(unlink(p), 0);
	snprintf(p, sizeof(p), "%s/data.mdb", f->db);
	assert_int_equal(link(target, p), 0);
	assert_int_equal(ag_store_get(f->db, &s), AG_EUNSAFE);
	assert_detail(p, ": a store file has more than one hard link");
	const char *n[] = { "precious", NULL };
	assert_int_equal(tu_count_lines(target, n), 1); /* untouched */
}

/* Fill the store with values that stay, growing the map up to @max. */
static void fill_to(const char *dir, int64_t max)
{
	static char val[3000];
	struct ag_store *s;
	unsigned long k = 0;

	if (ag_store_get(dir, &s) != 0)
		_exit(2);
	for (;;) {
		struct ag_txn *t;
		int rc = 0;
		if (ag_txn_begin(s, true, &t) != 0)
			_exit(3);
		for (int i = 0; i < 50 && rc == 0; i++) {
			char key[48];
			snprintf(key, sizeof(key), "junk%lu-%d", ++k, (int)getpid());
			rc = ag_txn_put(t, AG_DB_META, key, strlen(key), val, sizeof(val));
		}
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
		if (rc == AG_EFULL && ag_store_grow(s, max) == 0)
			continue;
		if (rc == AG_EFULL)
			return;
		if (rc != 0)
			_exit(4);
	}
}

/* db_max_size holds across processes: each new process maps the store
 * as the store records it, never with room of its own on top (which the
 * next process would then take as its starting size). */
static void test_map_never_past_max_across_processes(void **state)
{
	struct fx *f = *state;
	const int64_t max = 8 << 20;
	char p[400];
	struct stat st;

	for (int gen = 0; gen < 4; gen++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			fill_to(f->db, max);
			_exit(0);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		snprintf(p, sizeof(p), "%s/data.mdb", f->db);
		assert_int_equal(stat(p, &st), 0);
		if (st.st_size > max)
			print_error("generation %d: data.mdb %lld bytes\n", gen, (long long)st.st_size);
		assert_true(st.st_size <= max);
	}
}

static void test_garbage_file(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char p[400], junk[8192];

	assert_int_equal(mkdir(f->db, 0700), 0);
	snprintf(p, sizeof(p), "%s/data.mdb", f->db);
	int fd = open(p, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	memset(junk, 0xa5, sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	int rc = ag_store_get(f->db, &s);
	assert_int_equal(rc, AG_ECORRUPT);
}

struct scan_ctx {
	int seen;
	char keys[16][8];
};

static enum ag_scan_op collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct scan_ctx *c = ctx;

	(void)val;
	(void)vlen;
	if (c->seen < 16 && klen < 8) {
		memcpy(c->keys[c->seen], key, klen);
		c->keys[c->seen][klen] = '\0';
	}
	c->seen++;
	return AG_SCAN_NEXT;
}

static enum ag_scan_op delete_b(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)ctx;
	(void)val;
	(void)vlen;
	return klen >= 1 && ((const char *)key)[0] == 'b' ? AG_SCAN_DELETE : AG_SCAN_NEXT;
}

static void test_scan_prefix_and_delete(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *t;
	static const char *keys[] = { "a1", "b1", "b2", "b3", "c1", "b" };

	assert_int_equal(ag_store_get(f->db, &s), 0);
	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
		put_u64(s, keys[i], i);
	struct scan_ctx c = { 0 };
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_txn_scan(t, AG_DB_SRC, "b", 1, collect, &c), 0);
	ag_txn_abort(t);
	assert_int_equal(c.seen, 4);
	assert_string_equal(c.keys[0], "b");
	assert_string_equal(c.keys[3], "b3");
	/* deleting consecutive entries while scanning skips none */
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_scan(t, AG_DB_SRC, NULL, 0, delete_b, NULL), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_txn_scan(t, AG_DB_SRC, NULL, 0, collect, &c), 0);
	ag_txn_abort(t);
	assert_int_equal(c.seen, 2);
	assert_string_equal(c.keys[0], "a1");
	assert_string_equal(c.keys[1], "c1");
}

static void test_bad_keys(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *t;
	char big[600];
	const void *v;
	size_t vl;

	memset(big, 'x', sizeof(big));
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_SRC, big, sizeof(big), "v", 1), AG_EINVAL);
	assert_int_equal(ag_txn_put(t, AG_DB_SRC, big, 0, "v", 1), AG_EINVAL);
	assert_int_equal(ag_txn_get(t, AG_DB_SRC, "nope", 4, &v, &vl), AG_ENOTFOUND);
	assert_int_equal(ag_txn_del(t, AG_DB_SRC, "nope", 4), AG_ENOTFOUND);
	ag_txn_abort(t);
	ag_txn_abort(NULL);
}

/* A child of a process that used the store gets its own handle and its
 * writes are seen by the parent. */
static void test_fork(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "parent", 1);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ag_store *cs;
		if (ag_store_get(f->db, &cs) != 0 || cs == s)
			_exit(3);
		struct ag_txn *t;
		uint64_t v = 2;
		if (ag_txn_begin(cs, true, &t) != 0 ||
		    ag_txn_put(t, AG_DB_SRC, "child", 5, &v, sizeof(v)) != 0 || ag_txn_commit(t) != 0)
			_exit(4);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(get_u64(s, "child"), 2);
	assert_int_equal(get_u64(s, "parent"), 1);
}

/* A read transaction is kept reset after it ends and renewed by the next
 * one: the next one must still see every commit made in between, by this
 * process or another (a ban is effective on the very next attempt). */
static void test_read_after_write_elsewhere(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 0);
	for (uint64_t round = 1; round <= 20; round++) {
		assert_int_equal(get_u64(s, "k"), round - 1); /* leaves one pooled */
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct ag_store *cs;
			struct ag_txn *t;
			if (ag_store_get(f->db, &cs) != 0 || ag_txn_begin(cs, true, &t) != 0 ||
			    ag_txn_put(t, AG_DB_SRC, "k", 1, &round, sizeof(round)) != 0 ||
			    ag_txn_commit(t) != 0)
				_exit(3);
			_exit(0);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_int_equal(get_u64(s, "k"), round);
		put_u64(s, "mine", round); /* and this process's own commit */
		assert_int_equal(get_u64(s, "mine"), round);
	}
}

/* Another process grows the map far past this one's while a read
 * transaction of this one is kept for reuse: the next read adopts the
 * new size and reads what lies past the old map's end. */
static void test_read_after_map_grown_elsewhere(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_store_info before, after;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 1);
	assert_int_equal(get_u64(s, "k"), 1);
	assert_int_equal(ag_store_info(s, &before), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ag_store *cs;
		uint64_t v = 7;
		struct ag_txn *t;
		fill_to(f->db, 32 << 20);
		if (ag_store_get(f->db, &cs) != 0)
			_exit(3);
		/* the last key, on a page past the parent's map */
		(void)ag_store_grow(cs, 64 << 20);
		if (ag_txn_begin(cs, true, &t) != 0 || ag_txn_put(t, AG_DB_SRC, "late", 4, &v, sizeof(v)) != 0 ||
		    ag_txn_commit(t) != 0)
			_exit(4);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(get_u64(s, "late"), 7);
	assert_int_equal(get_u64(s, "k"), 1);
	assert_int_equal(ag_store_info(s, &after), 0);
	assert_true(after.map_size > before.map_size);
}

struct reader_arg {
	struct ag_store *s;
	int bad;
};

static void *reader(void *argp)
{
	struct reader_arg *a = argp;

	for (int i = 0; i < 2000; i++) {
		struct ag_txn *t;
		const void *val;
		size_t len;
		if (ag_txn_begin(a->s, false, &t) != 0) {
			a->bad++;
			continue;
		}
		if (ag_txn_get(t, AG_DB_SRC, "k", 1, &val, &len) != 0 || len != sizeof(uint64_t))
			a->bad++;
		if (i % 2)
			ag_txn_abort(t);
		else if (ag_txn_commit(t) != 0) /* a read-only commit ends it too */
			a->bad++;
	}
	return NULL;
}

/* Threads of one process share the kept read transactions: none is used
 * by two at once, and the reader slots they hold stay within bounds. */
static void test_read_txns_shared_by_threads(void **state)
{
	struct fx *f = *state;
	enum { THREADS = 8 };
	struct ag_store *s;
	pthread_t th[THREADS];
	struct reader_arg args[THREADS];
	struct ag_store_info info;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 5);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct reader_arg){ s, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].bad, 0);
	}
	assert_int_equal(ag_store_info(s, &info), 0);
	assert_true(info.readers_peak <= THREADS + 1);
	assert_int_equal(get_u64(s, "k"), 5);
}

/* A forked child's part: a read transaction on @db held open, "ready"
 * said on @ready, until @go is closed; never returns. */
static void reader_child(const char *db, int ready[2], int go[2])
{
	struct ag_store *cs;
	struct ag_txn *t;
	char b;

	close(ready[0]);
	close(go[1]);
	if (ag_store_get(db, &cs) != 0 || ag_txn_begin(cs, false, &t) != 0)
		_exit(3);
	if (write(ready[1], "x", 1) != 1)
		_exit(4);
	while (read(go[0], &b, 1) < 0 && errno == EINTR)
		;
	ag_txn_abort(t);
	_exit(0);
}

/* A kept read transaction holds a reader slot for the life of the
 * process: once the host has had a quarter of the slots in use at once
 * (here 300 processes reading together), no process keeps one any more,
 * so idle processes (an sshd session's, for hours) cannot take the slots
 * that attempts need. */
static void test_idle_slots_bounded(void **state)
{
	struct fx *f = *state;
	enum { PROCS = 300 };
	struct ag_store *s;
	struct ag_store_info info;
	pid_t pids[PROCS];
	int ready[2], go[2];
	char b;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 1);
	assert_int_equal(get_u64(s, "k"), 1);
	assert_int_equal(ag_store_info(s, &info), 0);
	assert_int_equal(info.own_readers, 1); /* kept for the next read */
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] != 0)
			continue;
		reader_child(f->db, ready, go);
	}
	close(ready[1]);
	close(go[0]);
	for (int i = 0; i < PROCS; i++)
		assert_int_equal(read(ready[0], &b, 1), 1);
	close(go[1]); /* all of them reading at once: now let them go */
	close(ready[0]);
	for (int i = 0; i < PROCS; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	assert_int_equal(ag_store_info(s, &info), 0);
	assert_true(info.readers_peak > PROCS);
	/* held now: only this process's kept slot; the children's slots
	 * (gone with _exit, no mdb_env_close) are counted apart, not as in
	 * use (before: "readers" was the peak, 301 here) */
	assert_int_equal(info.readers, 1);
	assert_int_equal(info.own_readers, 1);
	assert_int_equal(info.readers_busy, 0);
	/* the slot this process kept goes with its next read, and none is
	 * kept after it */
	assert_int_equal(get_u64(s, "k"), 1);
	assert_int_equal(get_u64(s, "k"), 1);
	assert_int_equal(ag_store_info(s, &info), 0);
	assert_int_equal(info.own_readers, 0);
}

/* What ag_store_info() says of the reader slots is what is held now: a
 * process in a read counts, as busy; one that died in a read (its slot
 * stays until a stale-reader check: every process opening the store
 * makes one, so the last to die is seen here) counts apart; the peak is
 * the most ever at once. Before, "readers" was that peak alone. */
static void test_readers_held_now(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_store_info info;
	int ready[2], go[2];
	char b;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 1);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid_t live = fork(); /* in a read while we look */
	assert_true(live >= 0);
	if (live == 0) {
		reader_child(f->db, ready, go);
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &b, 1), 1);
	pid_t dead = fork(); /* dies inside a read */
	assert_true(dead >= 0);
	if (dead == 0) {
		struct ag_store *cs;
		struct ag_txn *t;
		_exit(ag_store_get(f->db, &cs) == 0 && ag_txn_begin(cs, false, &t) == 0 ? 0 : 3);
	}
	int st;
	assert_int_equal(waitpid(dead, &st, 0), dead);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(ag_store_info(s, &info), 0);
	close(go[1]);
	close(ready[0]);
	assert_int_equal(waitpid(live, &st, 0), live);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	print_message("readers %u (busy %u, own %u), stale %u, peak %u of %u\n", info.readers,
		      info.readers_busy, info.own_readers, info.readers_stale, info.readers_peak,
		      info.max_readers);
	assert_int_equal(info.readers_stale, 1);
	assert_int_equal(info.readers_busy, 1);
	assert_true(info.own_readers <= 1);
	assert_int_equal(info.readers, 1 + info.own_readers);
	assert_true(info.readers_peak >= 2 + info.own_readers);
}

/* ag_txn_id(): what the guard relies on to take a read's records into
 * its write (guard.c record_fn()): a write begun with no commit since a
 * read has the read's id plus one, one begun after a commit (by another
 * process here) has more; an aborted write commits nothing. */
static void test_txn_ids(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *r, *w;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	put_u64(s, "k", 1);
	assert_int_equal(ag_txn_begin(s, false, &r), 0);
	uint64_t id = ag_txn_id(r);
	ag_txn_abort(r);
	assert_int_equal(ag_txn_begin(s, true, &w), 0);
	assert_int_equal(ag_txn_id(w), id + 1);
	ag_txn_abort(w); /* nothing committed */
	assert_int_equal(ag_txn_begin(s, true, &w), 0);
	assert_int_equal(ag_txn_id(w), id + 1);
	ag_txn_abort(w);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ag_store *cs;
		struct ag_txn *t;
		uint64_t v = 2;
		if (ag_store_get(f->db, &cs) != 0 || ag_txn_begin(cs, true, &t) != 0 ||
		    ag_txn_put(t, AG_DB_SRC, "k", 1, &v, sizeof(v)) != 0 || ag_txn_commit(t) != 0)
			_exit(3);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(ag_txn_begin(s, true, &w), 0);
	assert_int_equal(ag_txn_id(w), id + 2);
	ag_txn_abort(w);
	assert_int_equal(ag_txn_begin(s, false, &r), 0);
	assert_int_equal(ag_txn_id(r), id + 1);
	ag_txn_abort(r);
	assert_int_equal(get_u64(s, "k"), 2);
}

/* Many processes incrementing one counter lose no increment. */
static void test_concurrent_writers(void **state)
{
	struct fx *f = *state;
	enum { PROCS = 8, EACH = 300 };
	struct ag_store *s;
	pid_t pids[PROCS];

	assert_int_equal(ag_store_get(f->db, &s), 0);
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] != 0)
			continue;
		struct ag_store *cs;
		if (ag_store_get(f->db, &cs) != 0)
			_exit(3);
		for (int k = 0; k < EACH; k++) {
			struct ag_txn *t;
			const void *val;
			size_t len;
			uint64_t v = 0;
			if (ag_txn_begin(cs, true, &t) != 0)
				_exit(4);
			if (ag_txn_get(t, AG_DB_SRC, "ctr", 3, &val, &len) == 0)
				memcpy(&v, val, sizeof(v));
			v++;
			if (ag_txn_put(t, AG_DB_SRC, "ctr", 3, &v, sizeof(v)) != 0 || ag_txn_commit(t) != 0)
				_exit(5);
			ag_store_maybe_sync(cs);
		}
		_exit(0);
	}
	for (int i = 0; i < PROCS; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(get_u64(s, "ctr"), PROCS * EACH);
}

/* The counter file beside the store (counters.h) is opened as carefully
 * as lock.mdb and data.mdb: never through a symlink, never a file with a
 * second name, never one everyone may write (the store is refused); a
 * file of another layout is not reinterpreted (the store opens without
 * it: the counts stay in LMDB); and its counts last across a reopen. */
static void test_counter_file_checks(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char target[400], p[400];
	struct stat st;

	snprintf(target, sizeof(target), "%s/victim", f->dir);
	FILE *v = fopen(target, "w");
	fputs("precious\n", v);
	fclose(v);
	assert_int_equal(mkdir(f->db, 0700), 0);
	snprintf(p, sizeof(p), "%s/%s", f->db, AG_COUNTERS_NAME);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(ag_store_get(f->db, &s), AG_EUNSAFE);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(link(target, p), 0);
	assert_int_equal(ag_store_get(f->db, &s), AG_EUNSAFE);
	assert_int_equal(unlink(p), 0);
	const char *n[] = { "precious", NULL };
	assert_int_equal(tu_count_lines(target, n), 1); /* untouched */
	assert_int_equal(stat(target, &st), 0);
	assert_int_equal(st.st_size, 9);

	/* everyone may write it */
	int fd = open(p, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0666), 0);
	close(fd);
	assert_int_equal(ag_store_get(f->db, &s), AG_EUNSAFE);
	assert_int_equal(chmod(p, 0600), 0);
	/* another layout (or garbage): refused */
	fd = open(p, O_WRONLY | O_TRUNC);
	char junk[4096];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_null(ag_store_counters(s));
	assert_int_equal(ag_store_counters_error(s), AG_ECORRUPT);
	ag_store_forget_all();
	assert_int_equal(truncate(p, 64 << 20), 0); /* too long */
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_counters_error(s), AG_ECORRUPT);
	ag_store_forget_all();
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_size, 64 << 20); /* left as it was */
	assert_int_equal(unlink(p), 0);

	/* made afresh; its counts stay across a reopen */
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_non_null(ag_store_counters(s));
	assert_int_equal(ag_store_counters_error(s), 0);
	/* with every block on disk: a hole would be SIGBUS in the host
	 * daemon at the first refusal that touches it on a full disk */
	assert_int_equal(stat(p, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size);
	struct ag_stats d = { .attempts = 3, .refused = 2 }, got = { 0 };
	ag_count_stats(s, &d);
	ag_count_refusal(s, AG_DB_SRC, "k1", 2, 1234);
	ag_store_forget_all();
	assert_int_equal(ag_store_get(f->db, &s), 0);
	ag_counted_stats(s, &got);
	assert_int_equal(got.attempts, 3);
	assert_int_equal(got.refused, 2);
	uint64_t nr = 5;
	int64_t seen = 1000;
	ag_counted_refusals(s, AG_DB_SRC, "k1", 2, &nr, &seen);
	assert_int_equal(nr, 6);
	assert_int_equal(seen, 1234);
	nr = 0;
	ag_counted_refusals(s, AG_DB_USER, "k1", 2, &nr, &seen); /* another database's */
	assert_int_equal(nr, 0);
	ag_count_forget(s, AG_DB_SRC, "k1", 2);
	ag_counted_refusals(s, AG_DB_SRC, "k1", 2, &nr, &seen);
	assert_int_equal(nr, 0);
}

/* A user's failures kept in the counter file (issue 15): a slot of their
 * own, apart from the same record's refusals, claimed before it counts;
 * forgetting the user drops both; a full table claims nothing. */
static void test_counter_file_user_fails(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	uint64_t n = 0, nr = 0;
	int64_t seen = 100;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_non_null(ag_store_counters(s));
	assert_true(ag_count_fail_claim(s, "u1", 2));
	ag_counted_fails(s, "u1", 2, &n, &seen);
	assert_int_equal(n, 0); /* claimed, nothing counted yet */
	assert_int_equal(seen, 100);
	for (int i = 0; i < 3; i++)
		ag_count_fail(s, "u1", 2, 500 + i);
	assert_true(ag_count_fail_claim(s, "u1", 2)); /* its slot again */
	ag_count_refusal(s, AG_DB_USER, "u1", 2, 900);
	ag_counted_fails(s, "u1", 2, &n, &seen);
	assert_int_equal(n, 3);
	assert_int_equal(seen, 502);
	ag_counted_refusals(s, AG_DB_USER, "u1", 2, &nr, &seen);
	assert_int_equal(nr, 1);
	assert_int_equal(seen, 900);
	n = 0;
	ag_counted_fails(s, "u2", 2, &n, &seen);
	assert_int_equal(n, 0);
	ag_count_forget(s, AG_DB_USER, "u1", 2);
	n = nr = 0;
	ag_counted_fails(s, "u1", 2, &n, &seen);
	ag_counted_refusals(s, AG_DB_USER, "u1", 2, &nr, &seen);
	assert_int_equal(n + nr, 0);
	/* a claim in a slot another record had (counted, then forgotten)
	 * takes no time from it: before, 3 in 4 claimed users showed the old
	 * occupant's last time as theirs */
	char key[32];
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "gone%d", i);
		ag_count_refusal(s, AG_DB_SRC, key, strlen(key), 9999);
		ag_count_forget(s, AG_DB_SRC, key, strlen(key));
	}
	int borrowed = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "claim%d", i);
		assert_true(ag_count_fail_claim(s, key, strlen(key)));
		n = 0;
		seen = 100;
		ag_counted_fails(s, key, strlen(key), &n, &seen);
		borrowed += seen != 100;
		ag_count_forget(s, AG_DB_USER, key, strlen(key));
	}
	assert_int_equal(borrowed, 0);
	/* the table full: no claim (the guard writes the record then) */
	for (int i = 0; i < 4 * AG_COUNTERS_SLOTS; i++) {
		snprintf(key, sizeof(key), "fill%d", i);
		(void)ag_count_fail_claim(s, key, strlen(key));
	}
	assert_false(ag_count_fail_claim(s, "late", 4));
}

/* In a directory shared through its group (SECURITY.md), the counter file
 * is writable by the group whatever this process's umask, as the LMDB
 * files are: or the other services could not count. */
static void test_counter_file_group_shared(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char p[400];
	struct stat st;

	assert_int_equal(mkdir(f->db, 0700), 0);
	assert_int_equal(chmod(f->db, 02750), 0); /* setgid: shared (root refuses 02770 of its own) */
	mode_t old = umask(077);
	int rc = ag_store_get(f->db, &s);
	umask(old);
	assert_int_equal(rc, 0);
	snprintf(p, sizeof(p), "%s/%s", f->db, AG_COUNTERS_NAME);
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0660);
}

/* Many refusals of many records, from several processes at once: every
 * one is counted, host-wide and (while the table has room near the
 * record) per record; the table never holds two counts of one record
 * that a reader would miss. */
static void test_counter_file_concurrent(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	enum { PROCS = 4, KEYS = 300, EACH = 20 };

	assert_int_equal(ag_store_get(f->db, &s), 0);
	fflush(NULL);
	for (int p = 0; p < PROCS; p++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct ag_store *cs;
			if (ag_store_get(f->db, &cs) != 0)
				_exit(1);
			for (int r = 0; r < EACH; r++)
				for (int k = 0; k < KEYS; k++) {
					char key[16];
					snprintf(key, sizeof(key), "key%d", k);
					ag_count_refusal(cs, AG_DB_SRC, key, strlen(key), 1000 + r);
					struct ag_stats d = { .attempts = 1, .refused = 1 };
					ag_count_stats(cs, &d);
				}
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		assert_true(wait(&st) > 0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	struct ag_stats got = { 0 };
	ag_counted_stats(s, &got);
	assert_int_equal(got.refused, PROCS * KEYS * EACH);
	assert_int_equal(ag_counted_unattributed(s), 0);
	for (int k = 0; k < KEYS; k++) {
		char key[16];
		uint64_t nr = 0;
		int64_t seen = 0;
		snprintf(key, sizeof(key), "key%d", k);
		ag_counted_refusals(s, AG_DB_SRC, key, strlen(key), &nr, &seen);
		assert_int_equal(nr, PROCS * EACH);
		assert_int_equal(seen, 1000 + EACH - 1);
	}
}

/* SECURITY.md's layout 3 as it was before the counter file: a root-owned
 * 2750 directory, data.mdb and lock.mdb made in advance for the group, no
 * counters.ag. A group member may not create it there: the store still
 * opens, counting in LMDB as before; with the file made in advance as
 * SECURITY.md now says, the member uses it. (Needs root, to be the
 * member: nobody, nogroup.) */
static void test_counter_file_group_layout_upgrade(void **state)
{
	struct fx *f = *state;
	const uid_t member = 65534;
	const gid_t group = 65534;
	char p[400];

	if (geteuid() != 0)
		skip();
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(mkdir(f->db, 0750), 0);
	assert_int_equal(chown(f->db, 0, group), 0);
	assert_int_equal(chmod(f->db, 02750), 0);
	static const char *const pre[] = { "data.mdb", "lock.mdb", "counters.ag" };
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 2 + round; i++) {
			snprintf(p, sizeof(p), "%s/%s", f->db, pre[i]);
			int fd = open(p, O_CREAT | O_WRONLY, 0660);
			assert_true(fd >= 0);
			assert_int_equal(fchown(fd, 0, group), 0);
			assert_int_equal(fchmod(fd, 0660), 0);
			close(fd);
		}
		fflush(NULL);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct ag_store *s;
			if (setgroups(1, &group) != 0 || setgid(group) != 0 || setuid(member) != 0)
				_exit(10);
			if (ag_store_get(f->db, &s) != 0)
				_exit(11);
			if (round == 0)
				_exit(ag_store_counters(s) == NULL &&
				      ag_store_counters_error(s) == AG_EPERM ? 0 : 12);
			if (ag_store_counters(s) == NULL)
				_exit(13);
			ag_count_refusal(s, AG_DB_SRC, "k", 1, 7);
			_exit(0);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	/* root sees the member's count */
	struct ag_store *s;
	uint64_t n = 0;
	int64_t seen = 0;
	assert_int_equal(ag_store_get(f->db, &s), 0);
	ag_counted_refusals(s, AG_DB_SRC, "k", 1, &n, &seen);
	assert_int_equal(n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_dir_other_spelling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_planted_store_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_file_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_file_group_shared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_file_user_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_file_group_layout_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counter_file_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_never_past_max_across_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_prefix_and_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_after_write_elsewhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_after_map_grown_elsewhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_txns_shared_by_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_slots_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readers_held_now, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txn_ids, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
