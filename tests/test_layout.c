/*
 * test_layout.c - the store's two layouts (store.h, AG_SCHEMA_VERSION):
 * a new store has layout 2 (users among the sources, address-first source
 * keys), a store made before (schema 1, made here with
 * ag_store_new_schema(1)) keeps layout 1 and works as it did, through the
 * core and authguard-admin; authguard-admin upgrade-store rewrites it
 * with every record kept, and refuses while another process has the store
 * open; a store of a newer schema is refused by name.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "admin.h"
#include "conf.h"
#include "guard.h"
#include "record.h"
#include "store.h"
#include "testutil.h"

static const char *admin; /* AG_TEST_ADMIN */

struct fx {
	char dir[256], db[300], conf[300], log[300], out[300], err[300];
	struct ag_conf c;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];

	tu_mkdtemp(f->dir, sizeof(f->dir), "layout");
	snprintf(f->db, sizeof(f->db), "%s/db", f->dir);
	snprintf(f->conf, sizeof(f->conf), "%s/authguard.conf", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/attempts.log", f->dir);
	snprintf(f->out, sizeof(f->out), "%s/out", f->dir);
	snprintf(f->err, sizeof(f->err), "%s/err", f->dir);
	FILE *cf = fopen(f->conf, "w");
	assert_non_null(cf);
	/* sync_redis: the outbox is written (no Redis needed for that) */
	fprintf(cf, "db_dir = %s\nlog = file:%s\nip_ban_after = 3\nuser_lock_after = 4\n"
		    "tarpit_base = 1ms\ntarpit_max = 2ms\nsync_redis = 127.0.0.1:1\n",
		f->db, f->log);
	fclose(cf);
	ag_conf_init(&f->c);
	assert_int_equal(ag_conf_load(&f->c, f->conf, NULL, NULL), 0);
	(void)err;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ag_store_new_schema(0);
	ag_store_forget_all();
	ag_conf_free(&f->c);
	tu_rmrf(f->dir);
	free(f);
	return 0;
}

/* authguard-admin -c CONF ARGS...: stdout to f->out, stderr to f->err;
 * its exit status. */
static int run(struct fx *f, const char *a0, ...)
{
	va_list ap;

	va_start(ap, a0);
	int rc = tu_run_tool(admin, f->conf, f->out, f->err, a0, ap);
	va_end(ap);
	assert_true(rc >= 0);
	return rc;
}


/* Make the store at f->db with @schema, as the version of that schema
 * makes it, and close it again. */
static void make_store(struct fx *f, uint32_t schema)
{
	struct ag_store *s;

	ag_store_new_schema(schema);
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_layout(s), schema);
	ag_store_new_schema(0);
	ag_store_forget_all();
}

static void attempt(struct fx *f, const char *user, const char *rhost, bool ok, const char *pw)
{
	struct ag_attempt a = { "imap", user, user != NULL ? strlen(user) : 0, rhost,
				rhost != NULL ? strlen(rhost) : 0 };
	struct ag_ticket t;

	if (ag_guard_check(&f->c, NULL, &a, &t) == AG_PROCEED)
		(void)ag_guard_record(&f->c, NULL, &a, ok, pw, &t);
}

/* Records of every kind: hosts and their /24 and /48 nets (a ban among
 * them), users (a lock), pairs (addressless too), hot passwords, a
 * repeated failure and refusals in the counter file, run-time lists, the
 * wave, the fleet's outbox. */
static void fill(struct fx *f)
{
	for (int i = 0; i < 3; i++)
		attempt(f, "alice", "203.0.113.5", false, "guess");
	attempt(f, "alice", "203.0.113.5", true, NULL); /* refused: counted */
	for (int i = 0; i < 2; i++)
		attempt(f, "erin", "2001:db8:bad:1::2", false, "pw1");
	for (int i = 0; i < 4; i++) {
		char a[32];
		snprintf(a, sizeof(a), "100.64.%d.1", i);
		attempt(f, "bob", a, false, "x");
	}
	attempt(f, "carol", "198.51.100.9", true, NULL);
	attempt(f, "carol", "2001:db8:1:2::3", true, NULL);
	attempt(f, "dave", NULL, true, NULL);
	attempt(f, "carol", "198.51.100.9", false, "typo");
	attempt(f, "carol", "198.51.100.9", false, "typo");
	ag_store_forget_all();
	assert_int_equal(run(f, "allow", "add", "192.0.2.0/24", NULL), 0);
	assert_int_equal(run(f, "deny", "add", "2001:db8:dead::/48", "--for", "1h", NULL), 0);
}

/* Every record as "db key value" in hex, sorted: the store as the code
 * above the layout sees it (the layout's own records apart: the schema,
 * the users' count, the unnamed database's names of databases). */
struct snap {
	char **line;
	size_t n, cap;
	enum ag_db db;
};

static enum ag_scan_op take(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct snap *sn = ctx;
	const uint8_t *k = key, *v = val;

	if (sn->db == AG_DB_MAIN && (k[0] != 0 || (klen == 6 && memcmp(k, "\0users", 6) == 0)))
		return AG_SCAN_NEXT;
	if (sn->db == AG_DB_META && klen == 6 && memcmp(k, "schema", 6) == 0)
		return AG_SCAN_NEXT;
	if (sn->n == sn->cap) {
		sn->cap = sn->cap * 2 + 64;
		sn->line = realloc(sn->line, sn->cap * sizeof(*sn->line));
		assert_non_null(sn->line);
	}
	char *l = malloc(8 + 2 * (klen + vlen) + 4);
	assert_non_null(l);
	size_t o = (size_t)sprintf(l, "%d ", (int)sn->db);
	for (size_t i = 0; i < klen; i++)
		o += (size_t)sprintf(l + o, "%02x", k[i]);
	l[o++] = ' ';
	for (size_t i = 0; i < vlen; i++)
		o += (size_t)sprintf(l + o, "%02x", v[i]);
	l[o] = '\0';
	sn->line[sn->n++] = l;
	return AG_SCAN_NEXT;
}

static int cmp_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void snapshot(struct fx *f, struct snap *sn, uint64_t entries[AG_DB_COUNT])
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_store_info info;

	memset(sn, 0, sizeof(*sn));
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	for (int db = 0; db < AG_DB_COUNT; db++) {
		sn->db = (enum ag_db)db;
		assert_int_equal(ag_txn_scan(t, sn->db, NULL, 0, take, sn), 0);
	}
	ag_txn_abort(t);
	assert_int_equal(ag_store_info(s, &info), 0);
	memcpy(entries, info.entries, sizeof(info.entries));
	qsort(sn->line, sn->n, sizeof(*sn->line), cmp_line);
	ag_store_forget_all();
}

static void snap_free(struct snap *sn)
{
	for (size_t i = 0; i < sn->n; i++)
		free(sn->line[i]);
	free(sn->line);
}

static bool admin_here(void)
{
	if (admin != NULL)
		return true;
	print_message("AG_TEST_ADMIN not set: skipped\n");
	return false;
}

/* A new store has layout 2; its keys keep their layout-1 form above the
 * store layer: prefix scans of either form of prefix, the users apart
 * from the sources, each database's count. */
static void test_new_store_layout2_scans(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_addr a;
	uint8_t k[4][AG_SRC_KEY_LEN], pk[AG_SRC_PAIR_KEY_MAX];
	static const char *const nets[4] = { "10.0.0.0/24", "10.0.0.1/32", "10.0.1.0/24",
					     "10.0.0.2/32" };
	uint64_t n;

	for (int layout = 2; layout >= 1; layout--) {
		if (layout == 1)
			tu_rmrf(f->db);
		if (layout == 1)
			ag_store_new_schema(1);
		assert_int_equal(ag_store_get(f->db, &s), 0);
		ag_store_new_schema(0);
		assert_int_equal(ag_store_layout(s), (uint32_t)layout);
		assert_int_equal(ag_txn_begin(s, true, &t), 0);
		for (int i = 0; i < 4; i++) {
			assert_int_equal(ag_cidr_parse(nets[i], true, &a), 0);
			ag_src_key(&a, k[i]);
			assert_int_equal(ag_txn_put(t, AG_DB_SRC, k[i], AG_SRC_KEY_LEN, "s", 1), 0);
		}
		size_t pl = ag_pair_key(k[1], (const uint8_t *)"ann", 3, pk);
		assert_int_equal(ag_txn_put(t, AG_DB_SRC, pk, pl, "p", 1), 0);
		assert_int_equal(ag_txn_put(t, AG_DB_USER, "ann", 3, "u", 1), 0);
		assert_int_equal(ag_txn_put(t, AG_DB_USER, "ann", 3, "U", 1), 0); /* counted once */
		assert_int_equal(ag_txn_put(t, AG_DB_USER, "bo", 2, "u", 1), 0);
		assert_int_equal(ag_txn_commit(t), 0);

		assert_int_equal(ag_txn_begin(s, true, &t), 0);
		struct snap sn = { .db = AG_DB_SRC };
		/* family and prefix length: the two /24s, in either layout */
		const uint8_t fam_len[2] = { AG_AF_INET, 24 };
		assert_int_equal(ag_txn_scan(t, AG_DB_SRC, fam_len, 2, take, &sn), 0);
		assert_int_equal(sn.n, 2);
		/* a source key and the pair tag: its pairs */
		uint8_t pp[AG_SRC_KEY_LEN + 1];
		memcpy(pp, k[1], AG_SRC_KEY_LEN);
		pp[AG_SRC_KEY_LEN] = AG_PAIR_TAG;
		assert_int_equal(ag_txn_scan(t, AG_DB_SRC, pp, sizeof(pp), take, &sn), 0);
		assert_int_equal(sn.n, 3);
		assert_non_null(strstr(sn.line[2], "616e6e 70")); /* "ann", value "p" */
		/* a source key: it and its pairs */
		assert_int_equal(ag_txn_scan(t, AG_DB_SRC, k[1], AG_SRC_KEY_LEN, take, &sn), 0);
		assert_int_equal(sn.n, 5);
		/* everything: four sources and the pair, no user */
		size_t before = sn.n;
		assert_int_equal(ag_txn_scan(t, AG_DB_SRC, NULL, 0, take, &sn), 0);
		assert_int_equal(sn.n - before, 5);
		/* from a key on (a batch that resumes): what sorts after it */
		before = sn.n;
		assert_int_equal(ag_txn_scan_from(t, AG_DB_SRC, pk, pl, take, &sn), 0);
		assert_true(sn.n - before >= 1);
		assert_int_equal(memcmp(sn.line[before] + 2, "04", 2), 0);
		/* the users, by their own keys */
		sn.db = AG_DB_USER;
		before = sn.n;
		assert_int_equal(ag_txn_scan(t, AG_DB_USER, NULL, 0, take, &sn), 0);
		assert_int_equal(sn.n - before, 2);
		assert_string_equal(sn.line[before], "1 616e6e 55");
		assert_int_equal(ag_txn_scan(t, AG_DB_USER, "b", 1, take, &sn), 0);
		assert_int_equal(sn.n - before, 3);
		assert_int_equal(ag_txn_scan_from(t, AG_DB_USER, "b", 1, take, &sn), 0);
		assert_int_equal(sn.n - before, 4);
		assert_int_equal(ag_txn_entries(t, AG_DB_USER, &n), 0);
		assert_int_equal(n, 2);
		assert_int_equal(ag_txn_entries(t, AG_DB_SRC, &n), 0);
		assert_int_equal(n, 5);
		/* a user deleted, by key and by a scan: counted */
		assert_int_equal(ag_txn_del(t, AG_DB_USER, "bo", 2), 0);
		assert_int_equal(ag_txn_entries(t, AG_DB_USER, &n), 0);
		assert_int_equal(n, 1);
		assert_int_equal(ag_txn_entries(t, AG_DB_SRC, &n), 0);
		assert_int_equal(n, 5);
		/* a source database key in the users' range is refused in
		 * layout 2 (it would be a user's) */
		assert_int_equal(ag_txn_put(t, AG_DB_SRC, "\1ann", 4, "x", 1),
				 layout == 2 ? AG_EINVAL : 0);
		assert_int_equal(ag_txn_commit(t), 0);
		snap_free(&sn);
		ag_store_forget_all();
	}
}

/* A store made before schema 2 keeps layout 1 and works as before:
 * check, record, list, show, forget, gc, through authguard-admin. */
static void test_layout1_store_works(void **state)
{
	struct fx *f = *state;

	if (!admin_here())
		return;
	make_store(f, 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(run(f, "record", "--service", "imap", "--user", "alice", "--rhost",
				     "203.0.113.5", "--result", "failure", NULL), 0);
	assert_int_equal(run(f, "check", "--service", "imap", "--user", "alice", "--rhost",
			     "203.0.113.5", NULL), 6);
	assert_int_equal(run(f, "record", "--service", "imap", "--user", "carol", "--rhost",
			     "198.51.100.9", "--result", "success", NULL), 0);
	assert_int_equal(run(f, "status", NULL), 0);
	assert_int_equal(tu_has(f->out, "schema:   1 (layout 1: authguard-admin upgrade-store"), 1);
	assert_int_equal(tu_has(f->out, "sources:  2 addresses, 1 prefixes tracked"), 1);
	assert_int_equal(tu_has(f->out, "users:    2 tracked, 2 user x source pairs"), 1);
	assert_int_equal(run(f, "list", "bans", NULL), 0);
	assert_int_equal(tu_has(f->out, "203.0.113.5 "), 1);
	assert_int_equal(run(f, "list", "users", NULL), 0);
	assert_int_equal(tu_has(f->out, "\"alice\""), 1);
	assert_int_equal(tu_has(f->out, "\"carol\""), 1);
	assert_int_equal(run(f, "show", "carol", NULL), 0);
	assert_int_equal(tu_has(f->out, "198.51.100.9"), 1);
	assert_int_equal(run(f, "show", "203.0.113.0/24", NULL), 0);
	assert_int_equal(run(f, "forget", "203.0.113.5", NULL), 0);
	assert_int_equal(run(f, "check", "--service", "imap", "--user", "alice", "--rhost",
			     "203.0.113.5", NULL), 0);
	assert_int_equal(run(f, "forget", "carol", NULL), 0);
	assert_int_equal(run(f, "show", "carol", NULL), 2);
	assert_int_equal(run(f, "gc", NULL), 0);
	/* still layout 1: the users in their own database */
	struct ag_store *s;
	struct ag_txn *t;
	uint64_t n;
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_layout(s), 1);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_txn_entries(t, AG_DB_USER, &n), 0);
	assert_int_equal(n, 1); /* alice */
	ag_txn_abort(t);
}

/* upgrade-store rewrites a layout-1 store into layout 2 with every record
 * kept (as the code above the layout reads them) and the same counts. */
static void test_upgrade_keeps_everything(void **state)
{
	struct fx *f = *state;
	struct snap a, b;
	uint64_t ea[AG_DB_COUNT], eb[AG_DB_COUNT];

	if (!admin_here())
		return;
	make_store(f, 1);
	fill(f);
	snapshot(f, &a, ea);
	assert_true(ea[AG_DB_USER] >= 4 && ea[AG_DB_SRC] >= 10 && ea[AG_DB_LIST] == 2 &&
		    ea[AG_DB_PW] >= 1);
	/* the kinds the rewrite must carry: /24 and /48 nets, pairs (one
	 * without an address), the outbox, the wave */
	const char *want[] = { "0 0418cb007100", "0 0630", "0 00000000000000000000000000000000000070"
			       "64617665 ", "7 0073796e632e71", "7 0077617665" };
	size_t nwant[AG_ARRAY_LEN(want)] = { 0 };
	for (size_t i = 0; i < a.n; i++)
		for (size_t w = 0; w < AG_ARRAY_LEN(want); w++)
			nwant[w] += strncmp(a.line[i], want[w], strlen(want[w])) == 0;
	for (size_t w = 0; w < AG_ARRAY_LEN(want); w++)
		if (nwant[w] == 0)
			fail_msg("no record like %s", want[w]);
	assert_int_equal(run(f, "show", "carol", NULL), 0);
	int carol_lines = tu_has(f->out, "");
	/* the counter file's counts: host-wide, and the refusal of alice's
	 * banned source */
	char stats[64], refused[64];
	assert_int_equal(run(f, "stats", NULL), 0);
	assert_int_equal(tu_has(f->out, "attempts_total "), 1);
	snprintf(stats, sizeof(stats), "attempts_total               %d", 15);
	assert_int_equal(tu_has(f->out, stats), 1);
	assert_int_equal(run(f, "show", "203.0.113.5", "--json", NULL), 0);
	snprintf(refused, sizeof(refused), "\"n_refused\": %d,", 1);
	assert_int_equal(tu_has(f->out, refused), 1);
	assert_int_equal(run(f, "upgrade-store", NULL), 0);
	assert_int_equal(tu_has(f->out, "upgraded "), 1);
	assert_int_equal(tu_has(f->out, " to layout 2 (schema 2) in "), 1);
	/* copied without the old layout's pages, which are free after it */
	assert_int_equal(tu_has(f->out, "compacted: data.mdb "), 1);
	assert_int_equal(tu_has(f->err, "NOT COMPACTED"), 0);
	assert_int_equal(run(f, "upgrade-store", NULL), 0);
	assert_int_equal(tu_has(f->out, "layout 2 already, nothing to do"), 1);
	snapshot(f, &b, eb);
	assert_int_equal(b.n, a.n);
	for (size_t i = 0; i < a.n && i < b.n; i++)
		assert_string_equal(b.line[i], a.line[i]);
	/* (the unnamed database holds the users' count too now) */
	assert_memory_equal(eb, ea, sizeof(ea[0]) * AG_DB_MAIN);
	snap_free(&a);
	snap_free(&b);
	struct ag_store *s;
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_layout(s), 2);
	ag_store_forget_all();
	/* and it goes on: the ban holds, carol's places are familiar */
	assert_int_equal(run(f, "status", NULL), 0);
	assert_int_equal(tu_has(f->out, "schema:   2\n"), 1);
	assert_int_equal(run(f, "stats", NULL), 0);
	assert_int_equal(tu_has(f->out, stats), 1);
	assert_int_equal(run(f, "show", "203.0.113.5", "--json", NULL), 0);
	assert_int_equal(tu_has(f->out, refused), 1);
	assert_int_equal(run(f, "check", "--service", "imap", "--user", "alice", "--rhost",
			     "203.0.113.5", NULL), 6);
	assert_int_equal(run(f, "show", "carol", NULL), 0);
	assert_int_equal(tu_has(f->out, ""), carol_lines);
	assert_int_equal(tu_has(f->out, "198.51.100.9"), 1);
	assert_int_equal(run(f, "forget", "alice", NULL), 0);
	assert_int_equal(run(f, "show", "alice", NULL), 2);
	assert_int_equal(run(f, "gc", NULL), 0);
}

/* upgrade-store refuses while another process has the store open (here:
 * this one), names it, and changes nothing. */
static void test_upgrade_refused_while_open(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	char me[64];

	if (!admin_here())
		return;
	make_store(f, 1);
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(run(f, "upgrade-store", NULL), 3);
	snprintf(me, sizeof(me), "  pid %ld (", (long)getpid());
	assert_int_equal(tu_has(f->err, "upgrade-store refused: 1 other process has the store"), 1);
	assert_int_equal(tu_has(f->err, me), 1);
	assert_int_equal(tu_has(f->err, "nothing was changed"), 1);
	ag_store_forget_all();
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_layout(s), 1);
	ag_store_forget_all();
	/* a compaction that cannot be made (here: its file's name is taken)
	 * leaves the upgraded store as it is, and says so */
	char in_way[400];
	snprintf(in_way, sizeof(in_way), "%s/data.mdb.compact", f->db);
	assert_int_equal(mkdir(in_way, 0700), 0);
	assert_int_equal(run(f, "upgrade-store", NULL), 0);
	assert_int_equal(tu_has(f->out, " to layout 2 (schema 2) in "), 1);
	assert_int_equal(tu_has(f->err, "upgrade-store: NOT COMPACTED ("), 1);
	assert_int_equal(rmdir(in_way), 0);
	assert_int_equal(ag_store_get(f->db, &s), 0);
	assert_int_equal(ag_store_layout(s), 2);
	assert_int_equal(run(f, "status", NULL), 0); /* with this process's handle open */
	assert_int_equal(tu_has(f->out, "schema:   2\n"), 1);
}

/* A store of a schema newer than this build's is refused by name. */
static void test_newer_store_named(void **state)
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
	assert_non_null(strstr(ag_store_detail(), "made by a newer authguard"));
	if (!admin_here())
		return;
	assert_int_equal(run(f, "status", NULL), 3);
	assert_int_equal(tu_has(f->err, "store was written by a newer version of authguard"), 1);
	assert_int_equal(tu_has(f->err, "this build reads schema 2 at most"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_store_layout2_scans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layout1_store_works, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_keeps_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_refused_while_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_store_named, setup, teardown),
	};
	admin = getenv("AG_TEST_ADMIN");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
