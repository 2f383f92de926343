/* test_store.c - the LMDB store: creation, safety checks, schema, fork,
 * concurrent writers, scans. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

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

static void test_newer_schema(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *t;
	uint32_t v = AG_SCHEMA_VERSION + 1;

	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_META, "schema", 6, &v, sizeof(v)), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	ag_store_forget_all();
	assert_int_equal(ag_store_get(f->db, &s), AG_ENEWER);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_dir_other_spelling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_planted_store_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_never_past_max_across_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_prefix_and_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
