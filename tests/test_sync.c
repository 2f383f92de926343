/* test_sync.c - the fleet's events in the core (sync.h): the outbox written
 * with each record and admin action, its bound, and applying remote events
 * exactly once, with two stores in one process standing for two hosts and
 * a fake clock. The relay below does what authguard-sync does (minus
 * Redis): peek, encode, decode, apply, done. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>

#include "admin.h"
#include "guard.h"
#include "lists.h"
#include "store.h"
#include "sync.h"
#include "testutil.h"

static int64_t fake_ms = 1700000000000LL;
static int64_t fake_now(void) { return fake_ms; }

struct host {
	char dir[256];
	struct ag_conf c;
	const char *name;
	unsigned long next_id;
};

struct fx {
	struct host h[2];
};

static void host_init(struct host *h, const char *name)
{
	char err[256];

	tu_mkdtemp(h->dir, sizeof(h->dir), "sync");
	ag_conf_init(&h->c);
	snprintf(h->c.db_dir, sizeof(h->c.db_dir), "%s/db", h->dir);
	assert_int_equal(ag_conf_set(&h->c, "log", "none", err, sizeof(err)), 0);
	assert_int_equal(ag_conf_set(&h->c, "sync_redis", "127.0.0.1:6379", err, sizeof(err)), 0);
	h->c.tarpit_base = 0; /* no tarpit: the checks below are refuse or proceed */
	h->c.ip_ban_after = 5;
	h->c.user_lock_after = 4;
	h->c.spray_users = 0;
	h->c.net_ban_after = 0;
	h->name = name;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	host_init(&f->h[0], "a");
	host_init(&f->h[1], "b");
	fake_ms += 86400000LL * 30;
	ag_guard_set_clock(fake_now);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ag_store_forget_all();
	for (int i = 0; i < 2; i++) {
		tu_rmrf(f->h[i].dir);
		ag_conf_free(&f->h[i].c);
	}
	free(f);
	ag_guard_set_clock(NULL);
	return 0;
}

static struct ag_store *store(struct host *h)
{
	struct ag_store *s;

	assert_int_equal(ag_store_get(h->c.db_dir, &s), 0);
	return s;
}

static struct ag_outbox_state outbox(struct host *h)
{
	struct ag_outbox_state st;
	struct ag_txn *t;

	assert_int_equal(ag_txn_begin(store(h), false, &t), 0);
	assert_int_equal(ag_outbox_state(t, &st), 0);
	ag_txn_abort(t);
	return st;
}

static void attempt(struct host *h, const char *user, const char *rhost, bool ok, const char *pw)
{
	struct ag_attempt a = { "imap", user, strlen(user), rhost, strlen(rhost) };

	assert_int_equal(ag_guard_record(&h->c, NULL, &a, ok, pw, NULL), 0);
}

static enum ag_decision check(struct host *h, const char *user, const char *rhost)
{
	struct ag_attempt a = { "imap", user, strlen(user), rhost, strlen(rhost) };

	return ag_guard_check(&h->c, NULL, &a, NULL);
}

/* relay_ex() applies through ag_sync_apply_batch() (as authguard-sync
 * does) instead of one ag_sync_apply() each */
static bool relay_batch;

/* Move every event waiting in @from's outbox to @to through the wire
 * encoding; returns how many; @res counts the apply results (0, DUP, STALE). */
static int relay_ex(struct host *from, struct host *to, bool keep, int res[3])
{
	struct ag_sev ev[64];
	struct ag_txn *t;
	int n, total = 0;

	do {
		uint64_t epoch = outbox(from).epoch;
		assert_int_equal(ag_txn_begin(store(from), false, &t), 0);
		n = ag_outbox_peek(t, ev, 64);
		ag_txn_abort(t);
		assert_true(n >= 0);
		static struct ag_sync_item it[64];
		for (int i = 0; i < n; i++) {
			uint8_t buf[AG_SEV_WIRE_MAX];
			struct ag_sev d;
			char id[32];
			size_t len = ag_sev_encode(&ev[i], buf);
			assert_int_equal(ag_sev_decode(buf, len, &d), 0);
			snprintf(id, sizeof(id), "%lu-0", ++to->next_id);
			if (relay_batch) {
				memset(&it[i], 0, sizeof(it[i]));
				it[i].e = d;
				snprintf(it[i].host, sizeof(it[i].host), "%s", from->name);
				it[i].epoch = epoch;
				snprintf(it[i].stream_id, sizeof(it[i].stream_id), "%s", id);
				continue;
			}
			struct ag_sync_from fr = { .host = from->name, .epoch = epoch, .stream_id = id };
			int rc = ag_sync_apply(&to->c, NULL, &d, &fr);
			assert_true(rc >= 0 && rc <= 2);
			if (res != NULL)
				res[rc]++;
		}
		if (relay_batch && n > 0) {
			assert_int_equal(ag_sync_apply_batch(&to->c, NULL, it, (size_t)n,
							     it[n - 1].stream_id), 0);
			for (int i = 0; res != NULL && i < n; i++)
				res[it[i].result]++;
		}
		if (keep)
			return n;
		assert_int_equal(ag_txn_begin(store(from), true, &t), 0);
		assert_int_equal(ag_outbox_done(t, ev, n), 0);
		assert_int_equal(ag_txn_commit(t), 0);
		total += n;
	} while (n == 64);
	return total;
}

static int relay(struct host *from, struct host *to)
{
	return relay_ex(from, to, false, NULL);
}

static struct ag_src_rec src(struct host *h, const char *addr)
{
	struct ag_src_rec r = { 0 };
	struct ag_addr a;
	struct ag_txn *t;

	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	assert_int_equal(ag_txn_begin(store(h), false, &t), 0);
	(void)ag_admin_get_src(t, &a, &r);
	ag_txn_abort(t);
	return r;
}

/* ---- the outbox -------------------------------------------------------------- */

static void test_record_fills_outbox(void **state)
{
	struct fx *f = *state;
	struct ag_sev ev[4];
	struct ag_txn *t;

	attempt(&f->h[0], "alice", "192.0.2.7", false, "guess");
	attempt(&f->h[0], "alice", "192.0.2.7", true, NULL);
	struct ag_outbox_state st = outbox(&f->h[0]);
	assert_int_equal(st.depth, 2);
	assert_int_equal(st.total, 2);
	assert_true(st.epoch != 0);
	assert_int_equal(ag_txn_begin(store(&f->h[0]), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 4), 2);
	ag_txn_abort(t);
	assert_int_equal(ev[0].kind, AG_SEV_FAIL);
	assert_int_equal(ev[1].kind, AG_SEV_OK);
	assert_true(ev[0].seq < ev[1].seq);
	assert_int_equal(ev[0].time_ms, fake_ms);
	assert_true(ev[0].pw_hash >= 0);
	assert_int_equal(ev[1].pw_hash, -1);
	assert_int_equal(ev[0].user_len, 5);
	assert_memory_equal(ev[0].user, "alice", 5);
	assert_memory_equal(ev[0].rhost, "192.0.2.7", 9);
	assert_memory_equal(ev[0].service, "imap", 4);
	/* in LMDB's unnamed database (whose leaf every commit writes), under
	 * keys with a NUL that no database name can have; nothing in meta */
	const void *val;
	size_t vlen;
	bool old_any = true;
	assert_int_equal(ag_txn_begin(store(&f->h[0]), false, &t), 0);
	assert_int_equal(ag_txn_get(t, AG_DB_MAIN, "\0sync.ob", 8, &val, &vlen), 0);
	assert_int_equal(vlen, sizeof(st));
	assert_int_equal(ag_txn_get(t, AG_DB_META, "sync.ob", 7, &val, &vlen), AG_ENOTFOUND);
	assert_int_equal(ag_outbox_old_waiting(t, &old_any), 0);
	assert_false(old_any);
	uint8_t k1[16] = { 0, 's', 'y', 'n', 'c', '.', 'q', 0 };
	ag_put_be64(k1 + 8, ev[0].seq);
	assert_int_equal(ag_txn_get(t, AG_DB_MAIN, k1, sizeof(k1), &val, &vlen), 0);
	ag_txn_abort(t);
	/* damaged entries (a damaged store: an event that does not decode, a
	 * key of the wrong length) are skipped, even in a read transaction */
	uint8_t key[16] = { 0, 's', 'y', 'n', 'c', '.', 'q', 0, 0, 0, 0, 0, 0, 0, 3, 0xe8 };
	assert_int_equal(ag_txn_begin(store(&f->h[0]), true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_MAIN, key, sizeof(key), "junk", 4), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_MAIN, key, 10, "junk", 4), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(ag_txn_begin(store(&f->h[0]), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 4), 2);
	ag_txn_abort(t);
	assert_int_equal(ev[0].kind, AG_SEV_FAIL);
}

/* without sync_redis nothing is written: a host outside a fleet pays nothing */
static void test_no_fleet_no_outbox(void **state)
{
	struct fx *f = *state;

	f->h[0].c.sync_redis[0] = '\0';
	attempt(&f->h[0], "alice", "192.0.2.7", false, "guess");
	assert_int_equal(outbox(&f->h[0]).version, 0);
	assert_int_equal(outbox(&f->h[0]).depth, 0);
}

/* full: the oldest failures go first, successes and admin actions stay */
static void test_outbox_bound(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0];
	struct ag_sev ev[128];
	struct ag_txn *t;
	char ip[32];

	a->c.sync_outbox_max = 100;
	a->c.ip_ban_after = 0;
	attempt(a, "owner", "198.51.100.1", true, NULL);
	for (int i = 0; i < 150; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i % 250);
		attempt(a, "x", ip, false, NULL);
		fake_ms += 1;
	}
	struct ag_outbox_state st = outbox(a);
	assert_int_equal(st.depth, 100);
	assert_int_equal(st.dropped_fail, 51);
	assert_int_equal(st.dropped_other, 0);
	assert_int_equal(st.total, 151);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 128), 100);
	ag_txn_abort(t);
	assert_int_equal(ev[0].kind, AG_SEV_OK); /* the oldest, kept */
	assert_memory_equal(ev[1].rhost, "203.0.113.51", 12); /* failures 0..50 went */
	for (int i = 1; i < 100; i++)
		assert_true(ev[i].seq > ev[i - 1].seq);
}

/* What the pusher does: peek past what it sent (read transaction),
 * delete in bulk up to a number later; numbers are never used twice, even
 * when everything was deleted. */
static void test_outbox_after_and_upto(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0];
	struct ag_sev ev[8];
	struct ag_txn *t;

	attempt(a, "u1", "192.0.2.1", false, "x"); /* 1: fail */
	attempt(a, "u2", "192.0.2.2", true, NULL); /* 2: ok */
	attempt(a, "u3", "192.0.2.3", false, "x"); /* 3: fail */
	attempt(a, "u4", "192.0.2.4", true, NULL); /* 4: ok */
	attempt(a, "u5", "192.0.2.5", false, "x"); /* 5: fail */
	assert_int_equal(outbox(a).depth, 5);
	assert_int_equal(outbox(a).next_seq, 6);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek_after(t, 2, ev, 8), 3);
	assert_int_equal(ev[0].seq, 3);
	assert_int_equal(ev[1].seq, 4);
	assert_int_equal(ev[1].kind, AG_SEV_OK);
	assert_int_equal(ev[2].seq, 5);
	assert_int_equal(ag_outbox_peek_after(t, 1, ev, 2), 2); /* the first two past 1, merged */
	assert_int_equal(ev[0].seq, 2);
	assert_int_equal(ev[1].seq, 3);
	assert_int_equal(ag_outbox_peek_after(t, 5, ev, 8), 0);
	ag_txn_abort(t);
	uint64_t n = 0;
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_done_upto(t, 3, &n), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(n, 3);
	assert_int_equal(outbox(a).depth, 2);
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_done_upto(t, 5, &n), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(outbox(a).depth, 0);
	assert_int_equal(outbox(a).total, 5);
	attempt(a, "u6", "192.0.2.6", true, NULL);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 8), 1);
	ag_txn_abort(t);
	assert_int_equal(ev[0].seq, 6); /* not 1 again: receivers would skip it */
	assert_int_equal(outbox(a).total, 6);
}

/* authguard-sync after a rollback of the store (an OS crash): the outbox
 * takes a new epoch in the caller's transaction, keeping its events,
 * counters and numbering; a receiver that holds the old epoch's numbers
 * (what the stream kept) takes the new epoch's for a new sender */
static void test_outbox_new_epoch(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];
	struct ag_sev before[4], after[4];
	struct ag_txn *t;
	uint64_t e = 0;
	int res[3] = { 0 };

	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_new_epoch(t, &e), AG_ENOTFOUND); /* no outbox yet */
	ag_txn_abort(t);
	for (int i = 0; i < 3; i++)
		attempt(a, "u", "192.0.2.29", false, NULL);
	struct ag_outbox_state old = outbox(a);
	assert_int_equal(relay_ex(a, b, true, res), 3);
	assert_int_equal(relay_ex(a, b, true, res), 3); /* the same epoch: skipped */
	assert_int_equal(res[0], 3);
	assert_int_equal(res[AG_SYNC_DUP], 3);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, before, 4), 3);
	ag_txn_abort(t);
	/* aborted: nothing changes */
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_new_epoch(t, &e), 0);
	ag_txn_abort(t);
	assert_true(outbox(a).epoch == old.epoch);
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_new_epoch(t, &e), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	struct ag_outbox_state now = outbox(a);
	assert_true(now.epoch == e);
	assert_true(e != old.epoch && e != 0);
	assert_int_equal(now.next_seq, old.next_seq);
	assert_int_equal(now.depth, old.depth);
	assert_int_equal(now.total, old.total);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, after, 4), 3);
	ag_txn_abort(t);
	for (int i = 0; i < 3; i++) {
		uint8_t x[AG_SEV_WIRE_MAX], y[AG_SEV_WIRE_MAX];
		size_t lx = ag_sev_encode(&before[i], x), ly = ag_sev_encode(&after[i], y);
		assert_int_equal(lx, ly);
		assert_memory_equal(x, y, lx);
	}
	/* the same numbers under the new epoch: applied, not duplicates */
	memset(res, 0, sizeof(res));
	assert_int_equal(relay(a, b), 3);
	assert_int_equal(src(b, "192.0.2.29").n_fail, 6);
	attempt(a, "u", "192.0.2.29", false, NULL);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, after, 4), 1);
	ag_txn_abort(t);
	assert_int_equal(after[0].seq, 4); /* numbered on */
	assert_int_equal(relay_ex(a, b, false, res), 1);
	assert_int_equal(res[0], 1);
}

/* ---- the old place: modules loaded before the upgrade ---------------------------- */

#define OLD_EPOCH UINT64_C(0x0123456789abcdef)

/* What a module of the previous version does with an event (its
 * ag_outbox_put(), by raw puts): the meta database's state "sync.ob"
 * (made with OLD_EPOCH here), the event under "sync.q" + class + its
 * number, in one transaction. */
static uint64_t old_put(struct host *h, const char *user, const char *rhost, bool ok)
{
	struct ag_outbox_state st = { .version = AG_OUTBOX_VERSION, .epoch = OLD_EPOCH,
				      .next_seq = 1 };
	struct ag_sev e = { .kind = ok ? AG_SEV_OK : AG_SEV_FAIL, .pw_hash = -1, .time_ms = fake_ms };
	uint8_t key[15] = { 's', 'y', 'n', 'c', '.', 'q', ok ? 1 : 0 }, buf[AG_SEV_WIRE_MAX];
	const void *val;
	size_t vlen;
	struct ag_txn *t;

	e.user_len = strlen(user);
	memcpy(e.user, user, e.user_len);
	e.rhost_len = strlen(rhost);
	memcpy(e.rhost, rhost, e.rhost_len);
	e.service_len = 4;
	memcpy(e.service, "imap", 4);
	assert_int_equal(ag_txn_begin(store(h), true, &t), 0);
	if (ag_txn_get(t, AG_DB_META, "sync.ob", 7, &val, &vlen) == 0) {
		assert_int_equal(vlen, sizeof(st));
		memcpy(&st, val, sizeof(st));
	}
	e.seq = st.next_seq++;
	ag_put_be64(key + 7, e.seq);
	assert_int_equal(ag_txn_put(t, AG_DB_META, key, sizeof(key), buf, ag_sev_encode(&e, buf)), 0);
	st.depth++;
	st.total++;
	assert_int_equal(ag_txn_put(t, AG_DB_META, "sync.ob", 7, &st, sizeof(st)), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	return e.seq;
}

static struct ag_outbox_state old_state(struct host *h)
{
	struct ag_outbox_state st;
	struct ag_txn *t;

	assert_int_equal(ag_txn_begin(store(h), false, &t), 0);
	assert_int_equal(ag_outbox_old_state(t, &st), 0);
	ag_txn_abort(t);
	return st;
}

/* authguard-sync's move, in its own write transaction */
static int old_move(struct host *h, int max)
{
	struct ag_txn *t;
	int moved = -1;

	assert_int_equal(ag_txn_begin(store(h), true, &t), 0);
	assert_int_equal(ag_outbox_old_move(t, &h->c, max, &moved), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	return moved;
}

/* An old writer (the meta database's outbox, its own epoch and numbers)
 * beside new writers (the unnamed database's): no (epoch, number) pair is
 * handed out twice; the move renumbers the old place's events into the
 * outbox under its epoch, in their order, deletes them there (with a
 * damaged key), folds the old drop counters in; the old writer goes on
 * numbering where it was; each event reaches the other host once. */
static void test_outbox_old_place(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];
	struct ag_sev ev[16];
	struct ag_txn *t;
	bool any = false;

	/* the upgrade: the old place holds 2 events and 3 drops when the first
	 * new module records */
	assert_int_equal(old_put(a, "o1", "192.0.2.60", false), 1);
	assert_int_equal(old_put(a, "o2", "192.0.2.60", true), 2);
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	struct ag_outbox_state os;
	assert_int_equal(ag_outbox_old_state(t, &os), 0);
	os.dropped_fail = 3;
	assert_int_equal(ag_txn_put(t, AG_DB_META, "sync.ob", 7, &os, sizeof(os)), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	attempt(a, "n1", "192.0.2.61", false, "x");             /* new: #1 */
	assert_int_equal(old_put(a, "o3", "192.0.2.60", false), 3); /* old: #3 */
	attempt(a, "n2", "192.0.2.61", false, "x");             /* new: #2 */
	assert_int_equal(old_put(a, "o4", "192.0.2.60", false), 4); /* old: #4 */
	struct ag_outbox_state ns = outbox(a);
	os = old_state(a);
	assert_true(ns.epoch != 0 && ns.epoch != OLD_EPOCH); /* never the old place's pairs */
	assert_int_equal(ns.next_seq, 3);
	assert_int_equal(ns.depth, 2);
	assert_int_equal(os.epoch, OLD_EPOCH);
	assert_int_equal(os.next_seq, 5);
	assert_int_equal(os.depth, 4);
	/* the old place's events, as an older daemon would read them */
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_old_waiting(t, &any), 0);
	assert_true(any);
	assert_int_equal(ag_outbox_old_peek_after(t, 1, ev, 16), 3);
	assert_int_equal(ev[0].seq, 2);
	assert_int_equal(ev[0].kind, AG_SEV_OK);
	assert_int_equal(ev[2].seq, 4);
	assert_int_equal(ag_outbox_peek(t, ev, 16), 2); /* the outbox: the new ones only */
	ag_txn_abort(t);
	/* a damaged key among them: skipped, deleted with them */
	uint8_t bad[10] = { 's', 'y', 'n', 'c', '.', 'q', 0, 0, 0, 3 }; /* (sorts after #4) */
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_META, bad, sizeof(bad), "junk", 4), 0);
	assert_int_equal(ag_txn_commit(t), 0);

	/* moved a few at a time, in their order, renumbered under the outbox's epoch */
	assert_int_equal(old_move(a, 2), 2);
	os = old_state(a);
	assert_int_equal(os.depth, 2);
	assert_int_equal(os.dropped_fail, 0); /* folded in */
	assert_int_equal(outbox(a).dropped_fail, 3);
	assert_int_equal(old_move(a, 256), 2); /* #3 and #4; the damaged key goes */
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_old_waiting(t, &any), 0);
	assert_false(any);
	int n = ag_outbox_peek(t, ev, 16);
	ag_txn_abort(t);
	assert_int_equal(n, 6);
	static const char *const users[6] = { "n1", "n2", "o1", "o2", "o3", "o4" };
	for (int i = 0; i < 6; i++) {
		assert_int_equal(ev[i].seq, (uint64_t)i + 1);
		assert_memory_equal(ev[i].user, users[i], 2);
	}
	assert_int_equal(ev[3].kind, AG_SEV_OK);
	ns = outbox(a);
	assert_true(ns.epoch != OLD_EPOCH);
	assert_int_equal(ns.depth, 6);
	assert_int_equal(ns.next_seq, 7);
	assert_int_equal(ns.total, 6);
	os = old_state(a);
	assert_int_equal(os.depth, 0);
	assert_int_equal(os.next_seq, 5); /* the old writers' numbering stays theirs */
	assert_int_equal(os.epoch, OLD_EPOCH);
	assert_int_equal(old_move(a, 256), 0); /* nothing left: nothing changes */
	assert_int_equal(outbox(a).dropped_fail, 3);

	/* the old writer goes on after the move, numbered on in its place */
	assert_int_equal(old_put(a, "o5", "192.0.2.60", false), 5);
	attempt(a, "n3", "192.0.2.61", false, "x");
	assert_int_equal(old_move(a, 256), 1);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek_after(t, 6, ev, 16), 2);
	ag_txn_abort(t);
	assert_memory_equal(ev[0].user, "n3", 2);
	assert_int_equal(ev[0].seq, 7);
	assert_memory_equal(ev[1].user, "o5", 2);
	assert_int_equal(ev[1].seq, 8);

	/* the other host: each event once (4 old failures, 3 new; the old
	 * success too), and again nothing when relayed twice */
	int res[3] = { 0 };
	assert_int_equal(relay_ex(a, b, true, res), 8);
	assert_int_equal(relay_ex(a, b, false, res), 8);
	assert_int_equal(res[0], 8);
	assert_int_equal(res[AG_SYNC_DUP], 8);
	assert_int_equal(src(b, "192.0.2.60").n_fail, 4);
	assert_int_equal(src(b, "192.0.2.61").n_fail, 3);
	assert_int_equal(outbox(a).depth, 0);
	assert_int_equal(outbox(b).total, 0); /* applied, not put into b's outbox */
}

/* The old place after an older daemon pushed part of it (killed before it
 * deleted them): authguard-sync deletes those there by number
 * (ag_outbox_old_done_upto(), ag_outbox_old_done()) before it moves the
 * rest; the old place's state keeps its count right. A full outbox takes
 * the moved events by its own rule (the oldest failures go). */
static void test_outbox_old_done_and_full(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0];
	struct ag_sev ev[4];
	struct ag_txn *t;
	uint64_t n = 0;

	for (int i = 0; i < 5; i++)
		old_put(a, "o", "192.0.2.70", false);
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_old_done_upto(t, 2, &n), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(n, 2);
	assert_int_equal(old_state(a).depth, 3);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_old_peek_after(t, 0, ev, 4), 3);
	ag_txn_abort(t);
	assert_int_equal(ev[0].seq, 3);
	assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
	assert_int_equal(ag_outbox_old_done(t, ev, 1), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(old_state(a).depth, 2);
	assert_int_equal(outbox(a).version, 0); /* the outbox untouched */

	/* the outbox full (sync_outbox_max 100, held by 100 new failures) */
	char ip[32];
	a->c.sync_outbox_max = 100;
	a->c.ip_ban_after = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i);
		attempt(a, "x", ip, false, NULL);
	}
	assert_int_equal(old_move(a, 256), 2);
	struct ag_outbox_state st = outbox(a);
	assert_int_equal(st.depth, 100);
	assert_int_equal(st.dropped_fail, 2);
	assert_int_equal(st.next_seq, 103);
	assert_int_equal(old_state(a).depth, 0);
	assert_int_equal(ag_txn_begin(store(a), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 1), 1);
	ag_txn_abort(t);
	assert_memory_equal(ev[0].rhost, "203.0.113.2", 11); /* the two oldest went */
}

/* ---- applying ------------------------------------------------------------------ */

/* a brute force spread over two hosts is banned after ip_ban_after in all */
static void test_round_robin_ban(void **state)
{
	struct fx *f = *state;

	f->h[0].c.user_lock_after = f->h[1].c.user_lock_after = 0; /* the ban, not the lock */
	for (int i = 0; i < 5; i++) {
		struct host *h = &f->h[i % 2], *o = &f->h[(i + 1) % 2];
		assert_int_equal(check(h, "u", "192.0.2.9"), AG_PROCEED);
		attempt(h, "u", "192.0.2.9", false, NULL);
		fake_ms += 1000;
		relay(h, o);
	}
	assert_int_equal(check(&f->h[0], "u", "192.0.2.9"), AG_REFUSE);
	assert_int_equal(check(&f->h[1], "u", "192.0.2.9"), AG_REFUSE);
	assert_int_equal(src(&f->h[0], "192.0.2.9").n_fail, 5);
	assert_int_equal(src(&f->h[1], "192.0.2.9").n_fail, 5);
	/* applied events were not put into the outbox again */
	assert_int_equal(outbox(&f->h[0]).total, 3);
	assert_int_equal(outbox(&f->h[1]).total, 2);
	assert_int_equal(outbox(&f->h[0]).depth, 0);
}

/* the same event twice (a sender that pushed and crashed before it
 * cleared its outbox) counts once; the position moves on */
static void test_exactly_once(void **state)
{
	struct fx *f = *state;
	int res[3] = { 0 };
	char pos[64];

	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	assert_int_equal(relay_ex(&f->h[0], &f->h[1], true, res), 2);
	assert_int_equal(relay_ex(&f->h[0], &f->h[1], false, res), 2);
	assert_int_equal(res[0], 2);
	assert_int_equal(res[AG_SYNC_DUP], 2);
	assert_int_equal(src(&f->h[1], "192.0.2.9").n_fail, 2);
	assert_int_equal(ag_sync_pos(store(&f->h[1]), pos, sizeof(pos)), 0);
	assert_string_equal(pos, "4-0");
	/* a new store on the sender (a new epoch) is not taken for duplicates */
	ag_store_forget_all();
	tu_rmrf(f->h[0].dir);
	ag_conf_free(&f->h[0].c);
	host_init(&f->h[0], "a");
	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	assert_int_equal(relay(&f->h[0], &f->h[1]), 1);
	assert_int_equal(src(&f->h[1], "192.0.2.9").n_fail, 3);
}

static void admin(struct host *h, enum ag_sev_kind kind, const char *target, const char *user,
		  int64_t until);

/* a stream read's events in one transaction: the same exactly-once rules,
 * even for a duplicate inside the same batch */
static void test_batch(void **state)
{
	struct fx *f = *state;
	struct ag_sync_item it[6];
	struct ag_sev ev[3];
	struct ag_txn *t;
	char pos[64];

	admin(&f->h[0], AG_SEV_LIST_ADD, "192.0.2.80", NULL, fake_ms + 3600000);
	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	assert_int_equal(ag_txn_begin(store(&f->h[0]), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 3), 3);
	ag_txn_abort(t);
	for (int i = 0; i < 6; i++) {
		memset(&it[i], 0, sizeof(it[i]));
		it[i].e = ev[i % 3];
		snprintf(it[i].host, sizeof(it[i].host), "a");
		it[i].epoch = outbox(&f->h[0]).epoch;
		snprintf(it[i].stream_id, sizeof(it[i].stream_id), "%d-0", i + 1);
	}
	assert_int_equal(ag_sync_apply_batch(&f->h[1].c, NULL, it, 6, "9-0"), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(it[i].result, i < 3 ? 0 : AG_SYNC_DUP);
	assert_int_equal(src(&f->h[1], "192.0.2.9").n_fail, 2);
	assert_int_equal(check(&f->h[1], "u", "192.0.2.80"), AG_REFUSE);
	assert_int_equal(ag_sync_pos(store(&f->h[1]), pos, sizeof(pos)), 0);
	assert_string_equal(pos, "9-0");
	assert_int_equal(outbox(&f->h[1]).total, 0); /* applied, not re-emitted */
}

/* authguard-sync with sync_wait_replicas: events no replica acknowledged
 * stay in the outbox and are pushed again, to the primary Sentinel
 * promoted, whose stream has only what was replicated: a receiver that
 * read them from the old primary skips those and applies the rest, each
 * once; a third push of everything changes nothing */
static void test_failover_repush(void **state)
{
	struct fx *f = *state;
	struct ag_sync_item *it = calloc(15, sizeof(*it));
	struct ag_sev ev[15];
	struct ag_txn *t;
	int res[3] = { 0 };

	assert_non_null(it);
	for (int i = 0; i < 10; i++)
		attempt(&f->h[0], "u", "192.0.2.19", false, NULL);
	/* pushed to the old primary and read from it; not acknowledged */
	assert_int_equal(relay_ex(&f->h[0], &f->h[1], true, res), 10);
	assert_int_equal(res[0], 10);
	assert_int_equal(outbox(&f->h[0]).depth, 10);
	for (int i = 0; i < 5; i++)
		attempt(&f->h[0], "u", "192.0.2.19", false, NULL);
	assert_int_equal(ag_txn_begin(store(&f->h[0]), false, &t), 0);
	assert_int_equal(ag_outbox_peek(t, ev, 15), 15);
	ag_txn_abort(t);
	/* the new primary had 1..5; the sender pushes 6..15 after them */
	for (int round = 0; round < 2; round++) {
		size_t n = round == 0 ? 10 : 15;
		for (size_t i = 0; i < n; i++) {
			memset(&it[i], 0, sizeof(it[i]));
			it[i].e = ev[round == 0 ? i + 5 : i];
			snprintf(it[i].host, sizeof(it[i].host), "a");
			it[i].epoch = outbox(&f->h[0]).epoch;
			snprintf(it[i].stream_id, sizeof(it[i].stream_id), "%zu-%d", 100 + i, round);
		}
		assert_int_equal(ag_sync_apply_batch(&f->h[1].c, NULL, it, n, it[n - 1].stream_id), 0);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(it[i].result, round == 0 && i >= 5 ? 0 : AG_SYNC_DUP);
		assert_int_equal(src(&f->h[1], "192.0.2.19").n_fail, 15);
	}
	free(it);
}

/* a remote failure counts at its own time: an old one has decayed */
static void test_remote_time(void **state)
{
	struct fx *f = *state;

	attempt(&f->h[0], "u", "192.0.2.9", false, NULL);
	fake_ms += 10 * f->h[1].c.decay_half_life; /* it reaches b ten half-lives late */
	relay(&f->h[0], &f->h[1]);
	struct ag_src_rec r = src(&f->h[1], "192.0.2.9");
	assert_int_equal(r.n_fail, 1);
	assert_true(ag_score_at(&r.fails, fake_ms, f->h[1].c.decay_half_life) < 0.01);
}

/* a botnet against one mailbox locks it for strangers on both hosts, and
 * the owner, familiar on a, still gets in on b */
static void test_lock_and_familiar(void **state)
{
	struct fx *f = *state;
	char ip[32];

	attempt(&f->h[0], "bob", "198.51.100.20", true, NULL);
	relay(&f->h[0], &f->h[1]);
	for (int i = 0; i < 4; i++) {
		struct host *h = &f->h[i % 2], *o = &f->h[(i + 1) % 2];
		snprintf(ip, sizeof(ip), "203.0.113.%d", 10 + i);
		attempt(h, "bob", ip, false, NULL);
		relay(h, o);
	}
	assert_int_equal(check(&f->h[0], "bob", "203.0.113.99"), AG_REFUSE);
	assert_int_equal(check(&f->h[1], "bob", "203.0.113.99"), AG_REFUSE);
	assert_int_equal(check(&f->h[1], "bob", "198.51.100.20"), AG_PROCEED);
}

static void admin(struct host *h, enum ag_sev_kind kind, const char *target, const char *user,
		  int64_t until)
{
	struct ag_sev e = { .kind = (uint8_t)kind, .pw_hash = -1, .time_ms = fake_ms,
			    .until_ms = until };
	struct ag_txn *t;
	int rc = 0;

	if (target != NULL)
		assert_int_equal(ag_cidr_parse(target, true, &e.addr), 0);
	if (user != NULL) {
		e.user_len = strlen(user);
		memcpy(e.user, user, e.user_len);
	}
	assert_int_equal(ag_txn_begin(store(h), true, &t), 0);
	if (kind == AG_SEV_LIST_ADD) {
		e.list = AG_LIST_DENY;
		struct ag_list_entry le = { .list = AG_LIST_DENY, .net = e.addr, .added = fake_ms,
					    .expires = until };
		rc = ag_list_add(t, &le);
	} else if (kind == AG_SEV_UNBAN) {
		rc = ag_admin_unban(t, &e.addr, fake_ms);
	} else if (kind == AG_SEV_UNLOCK) {
		uint8_t k[AG_USER_KEY_MAX];
		size_t n = ag_admin_user_key(store(h), &h->c, user, k);
		rc = ag_admin_unlock(t, k, n, fake_ms);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(ag_sync_admin_local(t, &h->c, &e), 0);
	assert_int_equal(ag_txn_commit(t), 0);
}

/* a ban made on a refuses on b; the unban on b lifts it on a */
static void test_admin_ban_unban(void **state)
{
	struct fx *f = *state;

	admin(&f->h[0], AG_SEV_LIST_ADD, "192.0.2.50", NULL, fake_ms + 3600000);
	assert_int_equal(check(&f->h[1], "u", "192.0.2.50"), AG_PROCEED);
	relay(&f->h[0], &f->h[1]);
	assert_int_equal(check(&f->h[1], "u", "192.0.2.50"), AG_REFUSE);
	fake_ms += 1000;
	admin(&f->h[1], AG_SEV_UNBAN, "192.0.2.50", NULL, 0);
	assert_int_equal(check(&f->h[0], "u", "192.0.2.50"), AG_REFUSE);
	relay(&f->h[1], &f->h[0]);
	assert_int_equal(check(&f->h[0], "u", "192.0.2.50"), AG_PROCEED);
	/* unlock, the same way */
	for (int i = 0; i < 4; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "203.0.113.%d", 10 + i);
		attempt(&f->h[0], "carol", ip, false, NULL);
	}
	relay(&f->h[0], &f->h[1]);
	assert_int_equal(check(&f->h[1], "carol", "203.0.113.99"), AG_REFUSE);
	admin(&f->h[1], AG_SEV_UNLOCK, NULL, "carol", 0);
	relay(&f->h[1], &f->h[0]);
	assert_int_equal(check(&f->h[0], "carol", "203.0.113.99"), AG_PROCEED);
}

/* admin actions win by time: a ban older than the unban that reached b
 * first does not come back when it arrives */
static void test_admin_by_time(void **state)
{
	struct fx *f = *state;
	int res[3] = { 0 };

	admin(&f->h[0], AG_SEV_LIST_ADD, "192.0.2.60", NULL, fake_ms + 3600000);
	fake_ms += 1000;
	relay(&f->h[0], &f->h[1]); /* b is banned too */
	admin(&f->h[0], AG_SEV_LIST_ADD, "192.0.2.61", NULL, fake_ms + 3600000); /* t1 on a */
	fake_ms += 1000;
	struct host *b = &f->h[1];
	/* t2 > t1 on b: an unban of .61 that b had no ban for: the stamp is set */
	struct ag_sev e = { .kind = AG_SEV_UNBAN, .pw_hash = -1, .time_ms = fake_ms };
	assert_int_equal(ag_cidr_parse("192.0.2.61", true, &e.addr), 0);
	struct ag_txn *t;
	assert_int_equal(ag_txn_begin(store(b), true, &t), 0);
	assert_int_equal(ag_sync_admin_local(t, &b->c, &e), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	relay_ex(&f->h[0], b, false, res);
	assert_int_equal(res[AG_SYNC_STALE], 1);
	assert_int_equal(check(b, "u", "192.0.2.61"), AG_PROCEED);
	relay(b, &f->h[0]); /* and the unban lifts a's */
	assert_int_equal(check(&f->h[0], "u", "192.0.2.61"), AG_PROCEED);
	assert_int_equal(check(&f->h[0], "u", "192.0.2.60"), AG_REFUSE);
}

/* A pair as a module of a version before issue 15.3 files it (the old
 * "pair" database); pair_moved(): whether it is in the new place. */
static void put_old_pair(struct ag_store *s, const char *user, const char *addr,
			 int64_t familiar_until)
{
	struct ag_pair_rec r = { .version = AG_REC_VERSION, .familiar_until = familiar_until,
				 .last_success = fake_ms, .last_seen = fake_ms };
	uint8_t uk[AG_USER_KEY_MAX], sk[AG_SRC_KEY_LEN], k[AG_PAIR_KEY_MAX];
	struct ag_addr a;
	struct ag_txn *t;

	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	ag_src_key(&a, sk);
	size_t ul = ag_user_key(ag_store_secret(s), user, strlen(user), uk);
	size_t kl = ag_pair_key_old(uk, ul, sk, k);
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_PAIR, k, kl, &r, sizeof(r)), 0);
	assert_int_equal(ag_txn_commit(t), 0);
}

static bool pair_moved(struct ag_store *s, const char *user, const char *addr)
{
	uint8_t uk[AG_USER_KEY_MAX], sk[AG_SRC_KEY_LEN], k[AG_SRC_PAIR_KEY_MAX];
	struct ag_addr a;
	struct ag_txn *t;
	const void *val;
	size_t vlen;

	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	ag_src_key(&a, sk);
	size_t ul = ag_user_key(ag_store_secret(s), user, strlen(user), uk);
	size_t kl = ag_pair_key(sk, uk, ul, k);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	bool found = ag_txn_get(t, AG_DB_SRC, k, kl, &val, &vlen) == 0;
	ag_txn_abort(t);
	return found;
}

/* a host that missed the stream catches up from a peer's snapshot: bans,
 * locks, familiar places and run-time list entries, never lowered */
static void test_snapshot(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];
	uint8_t *buf;
	size_t len, n, applied;
	char ip[32], pos[64];

	a->c.sync_redis[0] = b->c.sync_redis[0] = '\0'; /* no events: only the snapshot */
	attempt(a, "dave", "198.51.100.30", true, NULL);
	for (int i = 0; i < 5; i++)
		attempt(a, "x", "192.0.2.70", false, NULL); /* a rule's ban */
	for (int i = 0; i < 4; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", 40 + i);
		attempt(a, "dave", ip, false, NULL); /* a lock */
	}
	admin(a, AG_SEV_LIST_ADD, "198.18.5.0/24", NULL, fake_ms + 3600000);
	/* a familiar place an older module filed in the old pair database on
	 * a, and one on b, which the snapshot's copy moves there */
	put_old_pair(store(a), "erin", "198.51.100.31", fake_ms + 86400000LL);
	put_old_pair(store(b), "dave", "198.51.100.30", fake_ms + 60000);
	assert_int_equal(ag_sync_snapshot_make(store(a), &a->c, fake_ms, 1000, &buf, &len, &n), 0);
	assert_true(n >= 5);
	/* damaged: refused whole, nothing applied */
	assert_int_equal(ag_sync_snapshot_apply(&b->c, buf, len - 1, "9-0", &applied), AG_ECORRUPT);
	assert_int_equal(check(b, "u", "192.0.2.70"), AG_PROCEED);
	assert_int_equal(ag_sync_snapshot_apply(&b->c, buf, len, "1234-5", &applied), 0);
	assert_int_equal(applied, n);
	assert_int_equal(check(b, "u", "192.0.2.70"), AG_REFUSE);
	assert_int_equal(check(b, "dave", "203.0.113.99"), AG_REFUSE);
	assert_int_equal(check(b, "dave", "198.51.100.30"), AG_PROCEED);
	assert_int_equal(check(b, "u", "198.18.5.9"), AG_REFUSE);
	assert_true(pair_moved(store(b), "erin", "198.51.100.31"));
	assert_true(pair_moved(store(b), "dave", "198.51.100.30"));
	struct ag_store_info info;
	assert_int_equal(ag_store_info(store(b), &info), 0);
	assert_int_equal(info.entries[AG_DB_PAIR], 0);
	assert_int_equal(ag_sync_pos(store(b), pos, sizeof(pos)), 0);
	assert_string_equal(pos, "1234-5");
	/* a longer ban on b stays longer */
	struct ag_src_rec r = src(b, "192.0.2.70");
	int64_t until = r.ban_until;
	assert_int_equal(ag_sync_snapshot_apply(&b->c, buf, len, "1234-6", &applied), 0);
	assert_true(src(b, "192.0.2.70").ban_until == until);
	free(buf);
}

/* ---- the fleet's password key ----------------------------------------------- */

static void fleet_key(struct host *h, uint8_t fill)
{
	uint8_t k[AG_FLEET_KEY_LEN];
	bool changed;

	memset(k, fill, sizeof(k));
	assert_int_equal(ag_sync_fleet_key_put(store(h), k, &changed), 0);
	assert_true(changed);
	assert_int_equal(ag_sync_fleet_key_put(store(h), k, &changed), 0);
	assert_false(changed); /* the same key again: nothing written */
}

/* A record with its password; returns the decision (hot_password). */
static enum ag_decision attempt_pw(struct host *h, const char *user, const char *rhost, bool ok,
				   const char *pw)
{
	struct ag_attempt a = { "imap", user, strlen(user), rhost, strlen(rhost) };
	enum ag_decision d = AG_PROCEED;
	struct ag_record_opts o = { .pw = pw, .pw_len = strlen(pw), .decision_r = &d };

	assert_int_equal(ag_guard_record_ex(&h->c, NULL, &a, ok, &o, NULL), 0);
	return d;
}

/* Half a spray of @pw on each host (six users, one new place each),
 * relayed both ways after each attempt. */
static void spray_both(struct fx *f, const char *pw, int net)
{
	for (int i = 0; i < 6; i++) {
		struct host *h = &f->h[i % 2], *o = &f->h[(i + 1) % 2];
		char user[16], ip[32];
		snprintf(user, sizeof(user), "user%d", i);
		snprintf(ip, sizeof(ip), "198.18.%d.%d", net, 10 + i);
		attempt_pw(h, user, ip, false, pw);
		relay(h, o);
	}
}

/* issue 13: a password sprayed half on a, half on b is hot on both (one
 * key for the fleet); with each host's own key it was hot on neither */
static void test_spray_fleet(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];

	for (int i = 0; i < 2; i++)
		f->h[i].c.spray_password_users = 6;
	/* no fleet key yet: three users on each host, under two keys */
	spray_both(f, "Autumn2026!", 1);
	assert_int_equal(attempt_pw(b, "victim", "203.0.113.80", true, "Autumn2026!"), AG_PROCEED);
	assert_int_equal(attempt_pw(a, "victim2", "203.0.113.81", true, "Autumn2026!"), AG_PROCEED);
	relay(a, b);
	relay(b, a);

	fleet_key(a, 0x5a);
	fleet_key(b, 0x5a);
	spray_both(f, "Summer2026!", 2);
	/* the right password from a place new to its user: refused on b */
	assert_int_equal(attempt_pw(b, "victim", "203.0.113.90", true, "Summer2026!"), AG_REFUSE);
	/* and on a, whose refusal goes to b as a failure: the place is not
	 * made familiar there */
	assert_int_equal(attempt_pw(a, "victim2", "203.0.113.91", true, "Summer2026!"), AG_REFUSE);
	relay(a, b);
	struct ag_src_rec r = src(b, "203.0.113.91");
	assert_int_equal(r.n_success, 0);
	assert_int_equal(r.n_fail, 1);
	/* the owner at home is not refused (familiar) */
	attempt_pw(a, "owner", "192.0.2.200", true, "Owner-pw-1");
	relay(a, b);
	assert_int_equal(attempt_pw(b, "owner", "192.0.2.200", true, "Summer2026!"), AG_PROCEED);
}

/* the same through the batch apply authguard-sync uses */
static void test_spray_fleet_batch(void **state)
{
	relay_batch = true;
	test_spray_fleet(state);
	relay_batch = false;
}

/* a host without the fleet's key (its authguard-sync has not started
 * yet) counts no remote hot-password key: its own are under another key */
static void test_spray_needs_key_on_both(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];

	for (int i = 0; i < 2; i++)
		f->h[i].c.spray_password_users = 3;
	fleet_key(a, 0x11);
	for (int i = 0; i < 3; i++) {
		char user[16], ip[32];
		snprintf(user, sizeof(user), "user%d", i);
		snprintf(ip, sizeof(ip), "198.18.3.%d", 10 + i);
		attempt_pw(a, user, ip, false, "Winter2026!");
	}
	relay(a, b);
	assert_int_equal(attempt_pw(a, "victim", "203.0.113.70", true, "Winter2026!"), AG_REFUSE);
	assert_int_equal(attempt_pw(b, "victim", "203.0.113.71", true, "Winter2026!"), AG_PROCEED);
}

/* item 4: the same wrong password again from the same place on the other
 * host is a repeat there (a stale phone), not a second guess */
static void test_repeat_fleet(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];
	struct ag_user_rec ur;
	struct ag_txn *t;
	uint8_t k[AG_USER_KEY_MAX];

	fleet_key(a, 0x77);
	fleet_key(b, 0x77);
	attempt_pw(a, "erin", "203.0.113.60", false, "old-password");
	relay(a, b);
	attempt_pw(b, "erin", "203.0.113.60", false, "old-password");
	relay(b, a);
	attempt_pw(a, "erin", "203.0.113.60", false, "old-password");
	relay(a, b);
	for (int i = 0; i < 2; i++) {
		struct host *h = &f->h[i];
		size_t n = ag_admin_user_key(store(h), &h->c, "erin", k);
		assert_int_equal(ag_txn_begin(store(h), false, &t), 0);
		assert_int_equal(ag_admin_get_user(t, k, n, &ur), 0);
		ag_txn_abort(t);
		assert_int_equal(ur.n_fail, 3);
		/* one guess counted, the two repeats not (per host keys: two) */
		assert_true(ag_score_at(&ur.fails, fake_ms, h->c.decay_half_life) < 1.5);
	}
}

/* ---- admin stamps are collected ------------------------------------------- */

/* stamps older than AG_SYNC_STAMP_KEEP_MS go, younger ones stay and still
 * win; an action older than a collected stamp finds none */
static void test_stamp_gc(void **state)
{
	struct fx *f = *state;
	struct host *a = &f->h[0], *b = &f->h[1];
	int res[3] = { 0 };
	long n;

	admin(a, AG_SEV_LIST_ADD, "192.0.2.80", NULL, 0); /* stamp at t0 */
	int64_t t0 = fake_ms;
	for (int i = 0; i < 30; i++) { /* more than one batch */
		char ip[32];
		snprintf(ip, sizeof(ip), "198.19.0.%d", i);
		admin(a, AG_SEV_LIST_ADD, ip, NULL, 0);
	}
	fake_ms += AG_SYNC_STAMP_KEEP_MS / 2;
	{ /* stamp at t1: an unlock (of a user not locked here) */
		struct ag_sev u = { .kind = AG_SEV_UNLOCK, .pw_hash = -1, .time_ms = fake_ms,
				    .user_len = 5 };
		struct ag_txn *t;
		memcpy(u.user, "frank", 5);
		assert_int_equal(ag_txn_begin(store(a), true, &t), 0);
		assert_int_equal(ag_sync_admin_local(t, &a->c, &u), 0);
		assert_int_equal(ag_txn_commit(t), 0);
	}
	assert_int_equal(ag_sync_gc_stamps(store(a), fake_ms, 7, &n), 0);
	assert_int_equal(n, 0);
	fake_ms = t0 + AG_SYNC_STAMP_KEEP_MS + 1;
	assert_int_equal(ag_sync_gc_stamps(store(a), fake_ms, 7, &n), 0);
	assert_int_equal(n, 31);
	assert_int_equal(ag_sync_gc_stamps(store(a), fake_ms, 7, &n), 0);
	assert_int_equal(n, 0);
	/* the user's stamp (t1) is kept and still wins over an older unlock */
	struct ag_sev e = { .kind = AG_SEV_UNLOCK, .pw_hash = -1,
			    .time_ms = t0 + AG_SYNC_STAMP_KEEP_MS / 4, .user_len = 5 };
	memcpy(e.user, "frank", 5);
	e.seq = 1;
	struct ag_sync_from fr = { .host = "c", .epoch = 9, .stream_id = "1-0" };
	assert_int_equal(ag_sync_apply(&a->c, NULL, &e, &fr), AG_SYNC_STALE);
	/* and the whole fleet keeps them the same way */
	relay_ex(a, b, false, res);
	assert_int_equal(res[0], 32);
	fake_ms += AG_SYNC_STAMP_KEEP_MS;
	assert_int_equal(ag_sync_gc_stamps(store(b), fake_ms, 1000, &n), 0);
	assert_int_equal(n, 32);
}

/* ---- the wire format (untrusted) -------------------------------------------- */

static void test_decode_rejects(void **state)
{
	(void)state;
	struct ag_sev e = { .kind = AG_SEV_LIST_ADD, .list = AG_LIST_DENY, .pw_hash = -1,
			    .time_ms = 5, .until_ms = 9, .seq = 3 }, d;
	uint8_t buf[AG_SEV_WIRE_MAX];

	assert_int_equal(ag_cidr_parse("10.0.0.0/8", true, &e.addr), 0);
	size_t n = ag_sev_encode(&e, buf);
	assert_int_equal(ag_sev_decode(buf, n, &d), 0);
	assert_int_equal(d.until_ms, 9);
	assert_int_equal(d.seq, 3);
	assert_int_equal(d.addr.plen, 8);
	for (size_t l = 0; l < n; l++)
		assert_int_equal(ag_sev_decode(buf, l, &d), AG_ECORRUPT);
	buf[0] = 2;
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[0] = 1;
	buf[1] = 99;
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[1] = AG_SEV_LIST_ADD;
	buf[2] = 3; /* no such list */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[2] = AG_LIST_DENY;
	buf[33] = 1; /* a bit past the /8 */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[33] = 0;
	buf[6] = 0x80; /* negative time */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[6] = 0;
	assert_int_equal(ag_sev_decode(buf, n, &d), 0);
	/* one layout per event: stray bytes where the kind has no field */
	struct ag_sev f = { .kind = AG_SEV_FAIL, .pw_hash = -1 };
	n = ag_sev_encode(&f, buf);
	assert_int_equal(ag_sev_decode(buf, n, &d), 0);
	buf[5] = 1; /* a password hash without its flag */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[5] = 0;
	buf[2] = AG_LIST_DENY; /* a list on an attempt */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	buf[2] = 0;
	buf[40] = 1; /* address bytes on an attempt */
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	/* an unlock without a name, or with a NUL in it */
	struct ag_sev u = { .kind = AG_SEV_UNLOCK, .pw_hash = -1 };
	n = ag_sev_encode(&u, buf);
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
	u.user_len = 3;
	memcpy(u.user, "a\0b", 3);
	n = ag_sev_encode(&u, buf);
	assert_int_equal(ag_sev_decode(buf, n, &d), AG_ECORRUPT);
}

/* version 2: a failure with a fleet password key; version 1 (an older
 * host's events) still decodes, and is what an event without a key is */
static void test_decode_v2(void **state)
{
	(void)state;
	/* a version 1 failure as an older host wrote it (fuzz/corpus/sync/fail) */
	static const uint8_t v1[] = {
		0x01, 0x01, 0x00, 0x01, 0x12, 0x67, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x04, 0x00, 0x05, '1', '9', '2', '.', '0',
		'.', '2', '.', '7', 'i', 'm', 'a', 'p', 'a', 'l', 'i', 'c', 'e',
	};
	struct ag_sev d, d2;
	uint8_t buf[AG_SEV_WIRE_MAX];

	assert_int_equal(ag_sev_decode(v1, sizeof(v1), &d), 0);
	assert_int_equal(d.kind, AG_SEV_FAIL);
	assert_int_equal(d.pw_hash, 0x1267);
	assert_false(d.has_pw_key);
	assert_int_equal(d.user_len, 5);
	assert_int_equal(ag_sev_encode(&d, buf), sizeof(v1)); /* still version 1 */
	assert_memory_equal(buf, v1, sizeof(v1));

	d.has_pw_key = true;
	memcpy(d.pw_key, "\x01\x02\x03\x04", 4);
	size_t n = ag_sev_encode(&d, buf);
	assert_int_equal(n, sizeof(v1) + 4);
	assert_int_equal(buf[0], 2);
	assert_int_equal(ag_sev_decode(buf, n, &d2), 0);
	assert_true(d2.has_pw_key);
	assert_memory_equal(d2.pw_key, "\x01\x02\x03\x04", 4);
	assert_int_equal(d2.pw_hash, 0x1267);
	assert_int_equal(d2.time_ms, d.time_ms);
	assert_int_equal(d2.seq, d.seq);
	assert_memory_equal(d2.user, "alice", 5);
	for (size_t l = 0; l < n; l++)
		assert_int_equal(ag_sev_decode(buf, l, &d2), AG_ECORRUPT);
	buf[3] &= (uint8_t)~2u; /* version 2 without the key's flag */
	assert_int_equal(ag_sev_decode(buf, n, &d2), AG_ECORRUPT);
	buf[3] |= 2u;
	buf[0] = 1; /* the flag in a version 1 event */
	assert_int_equal(ag_sev_decode(buf, n, &d2), AG_ECORRUPT);
	buf[0] = 2;
	buf[1] = AG_SEV_OK; /* a key on a success */
	assert_int_equal(ag_sev_decode(buf, n, &d2), AG_ECORRUPT);
	buf[1] = AG_SEV_FAIL;
	assert_int_equal(ag_sev_decode(buf, n, &d2), 0);
	/* a key without a user */
	d.user_len = 0;
	n = ag_sev_encode(&d, buf);
	assert_int_equal(ag_sev_decode(buf, n, &d2), AG_ECORRUPT);
}

/* The daemon's state for authguard-admin status: the primary's address
 * round trips; a record an older daemon wrote (without it) still reads,
 * with no primary; any other size is damage. */
static void test_status_sizes(void **state)
{
	struct fx *f = *state;
	struct ag_store *s = store(&f->h[0]);
	struct ag_sync_status st = { .version = AG_SYNC_STATUS_VERSION, .connected = 1 }, got;
	struct ag_txn *t;

	snprintf(st.host, sizeof(st.host), "a");
	snprintf(st.primary, sizeof(st.primary), "127.0.0.1:6380");
	assert_int_equal(ag_sync_status_put(s, &st), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_sync_status_get(t, &got), 0);
	ag_txn_abort(t);
	assert_string_equal(got.primary, "127.0.0.1:6380");
	assert_int_equal(got.connected, 1);

	size_t old = offsetof(struct ag_sync_status, primary);
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_META, "sync.st", 7, &st, old), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_sync_status_get(t, &got), 0);
	ag_txn_abort(t);
	assert_string_equal(got.primary, "");
	assert_string_equal(got.host, "a");

	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(ag_txn_put(t, AG_DB_META, "sync.st", 7, &st, old + 1), 0);
	assert_int_equal(ag_txn_commit(t), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_sync_status_get(t, &got), AG_ECORRUPT);
	ag_txn_abort(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_record_fills_outbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_fleet_no_outbox, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_after_and_upto, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_new_epoch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_old_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_old_done_and_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_robin_ban, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exactly_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failover_repush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_and_familiar, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_ban_unban, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_by_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spray_fleet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spray_fleet_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spray_needs_key_on_both, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repeat_fleet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stamp_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_sizes, setup, teardown),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_decode_v2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
