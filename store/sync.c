/* sync.c - the fleet's events: encoding, the outbox, applying remote
 * events exactly once (see sync.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "admin.h"
#include "counters.h"
#include "guard.h"
#include "record.h"
#include "sync.h"

/* ---- the outbox -------------------------------------------------------------------- */

/*
 * The events wait in LMDB's unnamed database (AG_DB_MAIN: keys "\0sync.q"
 * + class + 8-byte big-endian sequence number), the counters in the state
 * record "\0sync.ob" beside them. Every commit rewrites that database's
 * leaf anyway (it holds the named databases' records, whose roots move
 * with every write), and authguard-sync deletes what it pushed before the
 * queue outgrows that leaf, so the event and the counters ride on a page
 * the commit writes regardless. The keys start with a NUL: no database
 * name has one (LMDB names are C strings), so no mdb_dbi_open() can ever
 * meet one of them, and they cannot be AG_WAVE_KEY ("\0wave") either.
 * Measured (bench_sync -P, drained as the daemon drains it): 8.9 pages
 * per record against 8.8 without sync; in the meta database, where it
 * was before, 9.9 (a page of its own: a record no longer writes meta
 * otherwise), and in two databases of its own it was no better.
 *
 * The old place. Modules of an older version (a PAM or SASL process
 * started before the upgrade keeps its module: -z nodelete) still put
 * their events into the meta database (keys "sync.q" + class + number,
 * state "sync.ob", the same layouts) under that state's epoch and
 * numbers. The new place's state is made with an epoch of its own (never
 * the old place's; an old writer that makes its state later picks one at
 * random, equal with odds of 2^-64), so the two never hand out the same
 * (epoch, number) pair, and authguard-sync moves what it finds in the old
 * place into the new one (ag_outbox_old_move(): renumbered there, in the
 * transaction that deletes it from the old place), so only one numbering
 * is pushed. Why not fold the old place in on every record, as the wave
 * state is: it would read meta in every record's transaction, and the
 * old writers' numbers would still have to be kept apart from the new
 * ones; the daemon's look every 20 ms costs the services nothing.
 */

struct place {
	enum ag_db db;
	const char *state;  /* the state record's key */
	size_t state_len;
	const char *prefix; /* the events' key prefix (+ class + 8-byte number) */
	size_t plen;
};

static const struct place P_NEW = { AG_DB_MAIN, "\0sync.ob", 8, "\0sync.q", 7 };
static const struct place P_OLD = { AG_DB_META, "sync.ob", 7, "sync.q", 6 };
#define Q_KEYMAX (7 + 1 + 8)

#define K_POS "sync.pos"
#define K_STATUS "sync.st"
#define K_PEER "sync.peer."
#define K_STAMP "sync.adm."
enum { CLASS_FAIL = 0, CLASS_OTHER = 1 };

bool ag_sync_enabled(const struct ag_conf *c)
{
	return c->sync_redis[0] != '\0' || c->sync_sentinels.n > 0;
}

static size_t q_keylen(const struct place *p)
{
	return p->plen + 1 + 8;
}

static size_t q_key(const struct place *p, uint8_t cls, uint64_t seq, uint8_t key[Q_KEYMAX])
{
	memcpy(key, p->prefix, p->plen);
	key[p->plen] = cls;
	ag_put_be64(key + p->plen + 1, seq);
	return q_keylen(p);
}

static int state_get(const struct place *p, struct ag_txn *t, struct ag_outbox_state *st)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, p->db, p->state, p->state_len, &val, &vlen);

	memset(st, 0, sizeof(*st));
	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (vlen != sizeof(*st))
		return AG_ECORRUPT;
	memcpy(st, val, sizeof(*st));
	return st->version == AG_OUTBOX_VERSION ? 0 : AG_ECORRUPT;
}

static int state_put(const struct place *p, struct ag_txn *t, const struct ag_outbox_state *st)
{
	return ag_txn_put(t, p->db, p->state, p->state_len, st, sizeof(*st));
}

int ag_outbox_state(struct ag_txn *t, struct ag_outbox_state *st)
{
	return state_get(&P_NEW, t, st);
}

int ag_outbox_old_state(struct ag_txn *t, struct ag_outbox_state *st)
{
	return state_get(&P_OLD, t, st);
}

/* A random epoch that is neither zero (receivers would take it for none)
 * nor @a nor @b (the old one; the other place's). */
static int fresh_epoch(uint64_t a, uint64_t b, uint64_t *e_r)
{
	uint64_t e;

	do {
		if (getrandom(&e, sizeof(e), 0) != (ssize_t)sizeof(e))
			return AG_EIO;
	} while (e == 0 || e == a || e == b);
	*e_r = e;
	return 0;
}

/* The old place's epoch, or 0 (none, unreadable): what the new place's
 * must not be. Read only when the new place takes an epoch. */
static uint64_t old_epoch(struct ag_txn *t)
{
	struct ag_outbox_state o;

	return state_get(&P_OLD, t, &o) == 0 ? o.epoch : 0;
}

struct first_key {
	size_t klen;
	uint8_t key[Q_KEYMAX];
	bool found;
};

static enum ag_scan_op first_visit(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct first_key *f = ctx;

	(void)val;
	(void)vlen;
	if (klen != f->klen)
		return AG_SCAN_DELETE; /* not one of ours: damaged */
	memcpy(f->key, key, klen);
	f->found = true;
	return AG_SCAN_STOP;
}

/* The outbox is full: the oldest failure goes, or if there is none the
 * oldest of the rest. */
static int outbox_drop_one(const struct place *p, struct ag_txn *t, struct ag_outbox_state *st)
{
	for (uint8_t cls = CLASS_FAIL; cls <= CLASS_OTHER; cls++) {
		uint8_t prefix[Q_KEYMAX];
		struct first_key f = { .klen = q_keylen(p), .found = false };
		memcpy(prefix, p->prefix, p->plen);
		prefix[p->plen] = cls;
		int rc = ag_txn_scan(t, p->db, prefix, p->plen + 1, first_visit, &f);
		if (rc != 0)
			return rc;
		if (!f.found)
			continue;
		rc = ag_txn_del(t, p->db, f.key, f.klen);
		if (rc != 0)
			return rc;
		if (cls == CLASS_FAIL)
			st->dropped_fail++;
		else
			st->dropped_other++;
		if (st->depth > 0)
			st->depth--;
		return 0;
	}
	st->depth = 0; /* the count was off: nothing is there */
	return 0;
}

/* Into the new place, as ag_outbox_put() says; *@st: its state as read
 * (version 0: none yet), written back here. */
static int put_new(struct ag_txn *t, const struct ag_conf *c, struct ag_outbox_state *st,
		   struct ag_sev *e)
{
	uint8_t key[Q_KEYMAX], buf[AG_SEV_WIRE_MAX];
	int rc;

	if (st->version == 0) {
		memset(st, 0, sizeof(*st));
		st->version = AG_OUTBOX_VERSION;
		rc = fresh_epoch(0, old_epoch(t), &st->epoch);
		if (rc != 0)
			return rc;
		st->next_seq = 1;
	}
	while (st->depth >= c->sync_outbox_max && st->depth > 0) {
		uint64_t before = st->depth;
		rc = outbox_drop_one(&P_NEW, t, st);
		if (rc != 0)
			return rc;
		if (st->depth >= before)
			break;
	}
	e->seq = st->next_seq++;
	size_t klen = q_key(&P_NEW, e->kind == AG_SEV_FAIL ? CLASS_FAIL : CLASS_OTHER, e->seq, key);
	rc = ag_txn_put(t, P_NEW.db, key, klen, buf, ag_sev_encode(e, buf));
	if (rc != 0)
		return rc;
	st->depth++;
	st->total++;
	return 0;
}

/* The new place's state for a write: damaged, it starts again (a new
 * epoch: the peers start anew too). */
static int state_for_write(struct ag_txn *t, struct ag_outbox_state *st)
{
	int rc = state_get(&P_NEW, t, st);

	if (rc == AG_ECORRUPT) {
		memset(st, 0, sizeof(*st));
		return 0;
	}
	return rc;
}

int ag_outbox_put(struct ag_txn *t, const struct ag_conf *c, struct ag_sev *e)
{
	struct ag_outbox_state st;
	int rc;

	if (!ag_sync_enabled(c))
		return 0;
	rc = state_for_write(t, &st);
	if (rc == 0)
		rc = put_new(t, c, &st, e);
	return rc != 0 ? rc : state_put(&P_NEW, t, &st);
}

int ag_outbox_new_epoch(struct ag_txn *t, uint64_t *epoch_r)
{
	struct ag_outbox_state st;
	int rc = state_get(&P_NEW, t, &st);

	if (rc != 0)
		return rc;
	if (st.version == 0)
		return AG_ENOTFOUND;
	rc = fresh_epoch(st.epoch, old_epoch(t), &st.epoch);
	if (rc == 0)
		rc = state_put(&P_NEW, t, &st);
	if (rc == 0 && epoch_r != NULL)
		*epoch_r = st.epoch;
	return rc;
}

/* Peeking merges the two classes by sequence number without a second
 * array of events (the pusher asks for hundreds; large buffers per call
 * cost it more than the scan): a first pass reads only keys, a second
 * decodes each wanted event straight into its place. */
struct keys_ctx {
	const struct place *p;
	uint8_t cls;
	uint64_t *seq;
	int n, max;
};

static bool in_class(const struct place *p, const void *key, size_t klen, uint8_t cls)
{
	const uint8_t *k = key;

	return klen >= p->plen + 1 && memcmp(k, p->prefix, p->plen) == 0 && k[p->plen] == cls;
}

static enum ag_scan_op keys_visit(void *ctxp, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct keys_ctx *k = ctxp;

	(void)val;
	(void)vlen;
	if (k->n >= k->max || !in_class(k->p, key, klen, k->cls))
		return AG_SCAN_STOP;
	if (klen == q_keylen(k->p)) /* (a damaged key cannot be sent: it goes when deleted up to) */
		k->seq[k->n++] = ag_get_be64((const uint8_t *)key + k->p->plen + 1);
	return AG_SCAN_NEXT;
}

struct place_ctx {
	const struct place *p;
	uint8_t cls;
	struct ag_sev *ev;
	const int *pos;    /* where the i-th key of this class goes in ev, or -1 */
	const uint64_t *seq;
	bool *bad;         /* by position: did not decode */
	int i, n;
};

static enum ag_scan_op place_visit(void *ctxp, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct place_ctx *p = ctxp;

	if (p->i >= p->n || !in_class(p->p, key, klen, p->cls))
		return AG_SCAN_STOP;
	if (klen != q_keylen(p->p))
		return AG_SCAN_NEXT; /* skipped by the first pass too */
	int at = p->pos[p->i];
	if (at >= 0 && (ag_sev_decode(val, vlen, &p->ev[at]) != 0 || p->ev[at].seq != p->seq[p->i]))
		p->bad[at] = true; /* damaged */
	p->i++;
	return AG_SCAN_NEXT;
}

/* ag_outbox_peek_after() in place @p; *@last_r (may be NULL): the number
 * of the last key taken, decoded or not (0: none): every event numbered
 * up to it was looked at. */
static int peek_after(const struct place *p, struct ag_txn *t, uint64_t after, struct ag_sev *ev,
		      int max, uint64_t *last_r)
{
	uint8_t start[2][Q_KEYMAX];
	size_t klen = q_keylen(p);
	int rc = 0;

	if (last_r != NULL)
		*last_r = 0;
	if (max <= 0 || after == UINT64_MAX)
		return 0;
	q_key(p, CLASS_FAIL, after + 1, start[0]);
	q_key(p, CLASS_OTHER, after + 1, start[1]);
	/* keys of both classes, their places, what did not decode */
	size_t m = (size_t)max;
	uint8_t *mem = malloc(2 * m * (sizeof(uint64_t) + sizeof(int)) + m);
	if (mem == NULL)
		return AG_ENOMEM;
	uint64_t *seq = (uint64_t *)mem;
	int *pos = (int *)(seq + 2 * m);
	bool *bad = (bool *)(pos + 2 * m);
	struct keys_ctx k[2] = { { p, CLASS_FAIL, seq, 0, max }, { p, CLASS_OTHER, seq + m, 0, max } };
	for (int c = 0; c < 2 && rc == 0; c++)
		rc = ag_txn_scan_from(t, p->db, start[c], klen, keys_visit, &k[c]);
	/* each class is in order by itself: merge the two by sequence number */
	int i = 0, j = 0, n = 0;
	uint64_t last = 0;
	while (rc == 0 && n < max && (i < k[0].n || j < k[1].n)) {
		if (j >= k[1].n || (i < k[0].n && seq[i] < seq[m + (size_t)j])) {
			last = seq[i];
			pos[i++] = n++;
		} else {
			last = seq[m + (size_t)j];
			pos[m + (size_t)j++] = n++;
		}
	}
	for (int x = i; x < k[0].n; x++)
		pos[x] = -1;
	for (int x = j; x < k[1].n; x++)
		pos[m + (size_t)x] = -1;
	memset(bad, 0, m);
	for (int c = 0; c < 2 && rc == 0; c++) {
		struct place_ctx pc = { p, (uint8_t)c, ev, pos + (size_t)c * m, seq + (size_t)c * m, bad,
					0, c == 0 ? i : j };
		if (pc.n > 0)
			rc = ag_txn_scan_from(t, p->db, start[c], klen, place_visit, &pc);
	}
	int out = 0;
	for (int x = 0; rc == 0 && x < n; x++)
		if (!bad[x]) {
			if (out != x)
				ev[out] = ev[x];
			out++;
		}
	free(mem);
	if (rc == 0 && last_r != NULL)
		*last_r = last;
	return rc != 0 ? rc : out;
}

int ag_outbox_peek_after(struct ag_txn *t, uint64_t after, struct ag_sev *ev, int max)
{
	return peek_after(&P_NEW, t, after, ev, max, NULL);
}

int ag_outbox_peek(struct ag_txn *t, struct ag_sev *ev, int max)
{
	return peek_after(&P_NEW, t, 0, ev, max, NULL);
}

int ag_outbox_old_peek_after(struct ag_txn *t, uint64_t after, struct ag_sev *ev, int max)
{
	return peek_after(&P_OLD, t, after, ev, max, NULL);
}

struct upto_ctx {
	const struct place *p;
	uint8_t cls;
	uint64_t upto, n;
};

static enum ag_scan_op upto_visit(void *ctxp, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct upto_ctx *u = ctxp;
	size_t ql = q_keylen(u->p);

	(void)val;
	(void)vlen;
	if (!in_class(u->p, key, klen, u->cls) ||
	    (klen == ql && ag_get_be64((const uint8_t *)key + u->p->plen + 1) > u->upto))
		return AG_SCAN_STOP;
	u->n += klen == ql;
	return AG_SCAN_DELETE; /* pushed (or a damaged key, which sorts among them) */
}

static int done_upto(const struct place *p, struct ag_txn *t, uint64_t upto, uint64_t *n_r)
{
	struct ag_outbox_state st;
	uint64_t n = 0;
	int rc = state_get(p, t, &st);

	if (rc == AG_ECORRUPT && p == &P_OLD)
		rc = 0, st.version = 0; /* (an old writer starts it again) */
	if (rc != 0)
		return rc;
	for (uint8_t cls = CLASS_FAIL; cls <= CLASS_OTHER && rc == 0; cls++) {
		uint8_t prefix[Q_KEYMAX];
		struct upto_ctx u = { p, cls, upto, 0 };
		memcpy(prefix, p->prefix, p->plen);
		prefix[p->plen] = cls;
		rc = ag_txn_scan(t, p->db, prefix, p->plen + 1, upto_visit, &u);
		n += u.n;
	}
	if (rc != 0)
		return rc;
	if (n_r != NULL)
		*n_r = n;
	if (st.version == 0 || n == 0)
		return 0;
	st.depth = st.depth > n ? st.depth - n : 0;
	return state_put(p, t, &st);
}

int ag_outbox_done_upto(struct ag_txn *t, uint64_t upto, uint64_t *n_r)
{
	return done_upto(&P_NEW, t, upto, n_r);
}

int ag_outbox_old_done_upto(struct ag_txn *t, uint64_t upto, uint64_t *n_r)
{
	return done_upto(&P_OLD, t, upto, n_r);
}

static int done(const struct place *p, struct ag_txn *t, const struct ag_sev *ev, int n)
{
	struct ag_outbox_state st;
	int rc = state_get(p, t, &st);

	if (rc == AG_ECORRUPT && p == &P_OLD)
		rc = 0, st.version = 0;
	if (rc != 0)
		return rc;
	for (int i = 0; i < n; i++) {
		uint8_t key[Q_KEYMAX];
		size_t klen = q_key(p, ev[i].kind == AG_SEV_FAIL ? CLASS_FAIL : CLASS_OTHER, ev[i].seq,
				    key);
		rc = ag_txn_del(t, p->db, key, klen);
		if (rc == AG_ENOTFOUND)
			continue; /* dropped meanwhile (full) */
		if (rc != 0)
			return rc;
		if (st.depth > 0)
			st.depth--;
	}
	return st.version == 0 ? 0 : state_put(p, t, &st);
}

int ag_outbox_done(struct ag_txn *t, const struct ag_sev *ev, int n)
{
	return done(&P_NEW, t, ev, n);
}

int ag_outbox_old_done(struct ag_txn *t, const struct ag_sev *ev, int n)
{
	return done(&P_OLD, t, ev, n);
}

static enum ag_scan_op del_visit(void *ctx, const void *key, size_t klen, const void *val,
				 size_t vlen)
{
	(void)ctx;
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	return AG_SCAN_DELETE;
}

static enum ag_scan_op any_visit(void *ctx, const void *key, size_t klen, const void *val,
				 size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	*(bool *)ctx = true;
	return AG_SCAN_STOP;
}

int ag_outbox_old_waiting(struct ag_txn *t, bool *any_r)
{
	*any_r = false;
	return ag_txn_scan(t, P_OLD.db, P_OLD.prefix, P_OLD.plen, any_visit, any_r);
}

int ag_outbox_old_move(struct ag_txn *t, const struct ag_conf *c, int max, int *moved_r)
{
	struct ag_outbox_state st, old;
	uint64_t last = 0;
	int rc, k, moved = 0;

	*moved_r = 0;
	if (max <= 0)
		return AG_EINVAL;
	struct ag_sev *ev = malloc(sizeof(*ev) * (size_t)max);
	if (ev == NULL)
		return AG_ENOMEM;
	rc = state_for_write(t, &st);
	k = rc != 0 ? rc : peek_after(&P_OLD, t, 0, ev, max, &last);
	if (k < 0)
		rc = k;
	/* in the old numbering's order, each renumbered here */
	for (int i = 0; rc == 0 && i < k; i++, moved++)
		rc = put_new(t, c, &st, &ev[i]);
	free(ev);
	if (rc == 0 && last > 0)
		rc = done_upto(&P_OLD, t, last, NULL); /* (damaged keys among them too) */
	else if (rc == 0) /* no key with a number: damaged ones only, all of them go */
		rc = ag_txn_scan(t, P_OLD.db, P_OLD.prefix, P_OLD.plen, del_visit, NULL);
	/* the old place's drops: counted with the new place's from now on */
	if (rc == 0 && state_get(&P_OLD, t, &old) == 0 && old.version != 0 &&
	    (old.dropped_fail > 0 || old.dropped_other > 0)) {
		if (st.version == 0) { /* (nothing moved, none made yet) */
			st.version = AG_OUTBOX_VERSION;
			rc = fresh_epoch(0, old.epoch, &st.epoch);
			st.next_seq = 1;
		}
		st.dropped_fail += old.dropped_fail;
		st.dropped_other += old.dropped_other;
		old.dropped_fail = old.dropped_other = 0;
		if (rc == 0)
			rc = state_put(&P_OLD, t, &old);
	}
	if (rc == 0 && st.version != 0)
		rc = state_put(&P_NEW, t, &st);
	if (rc == 0)
		*moved_r = moved;
	return rc;
}

/* ---- admin stamps (admin actions win by time) ---------------------------------- */

/* The stamp key of an event's target: an address, or a user's store key. */
static size_t stamp_key(struct ag_txn *t, const struct ag_conf *c, const struct ag_sev *e,
			uint8_t *key)
{
	size_t n = strlen(K_STAMP);

	memcpy(key, K_STAMP, n);
	if (e->kind == AG_SEV_UNLOCK || e->kind == AG_SEV_FORGET_USER) {
		char name[AG_SEV_USER_MAX];
		memcpy(name, e->user, e->user_len);
		name[e->user_len] = '\0';
		key[n++] = 'u';
		return n + ag_admin_user_key(ag_txn_store(t), c, name, key + n);
	}
	key[n++] = 'a';
	ag_src_key(&e->addr, key + n);
	return n + AG_SRC_KEY_LEN;
}

#define STAMP_KEY_MAX (16 + AG_USER_KEY_MAX)

static int64_t stamp_get(struct ag_txn *t, const uint8_t *key, size_t klen)
{
	const void *val;
	size_t vlen;
	int64_t v = 0;

	if (ag_txn_get(t, AG_DB_META, key, klen, &val, &vlen) == 0 && vlen == sizeof(v))
		memcpy(&v, val, sizeof(v));
	return v;
}

int ag_sync_admin_local(struct ag_txn *t, const struct ag_conf *c, struct ag_sev *e)
{
	uint8_t key[STAMP_KEY_MAX];

	if (!ag_sync_enabled(c))
		return 0;
	size_t klen = stamp_key(t, c, e, key);
	int64_t old = stamp_get(t, key, klen);
	if (e->time_ms > old) {
		int rc = ag_txn_put(t, AG_DB_META, key, klen, &e->time_ms, sizeof(e->time_ms));
		if (rc != 0)
			return rc;
	}
	return ag_outbox_put(t, c, e);
}

/* ---- applying remote events ------------------------------------------------------ */

struct peer_mark {
	uint32_t version, pad;
	uint64_t epoch, seq;
};

static size_t peer_key(const char *host, uint8_t *key)
{
	size_t n = strlen(K_PEER), h = strnlen(host, 63);

	memcpy(key, K_PEER, n);
	memcpy(key + n, host, h);
	return n + h;
}

static int peer_get(struct ag_txn *t, const char *host, struct peer_mark *m)
{
	uint8_t key[96];
	size_t klen = peer_key(host, key);
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, AG_DB_META, key, klen, &val, &vlen);

	memset(m, 0, sizeof(*m));
	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (vlen == sizeof(*m))
		memcpy(m, val, sizeof(*m));
	return 0;
}

struct marks {
	const struct ag_sev *e;
	const struct ag_sync_from *f;
};

/* In the applying transaction: the sender's sequence number and the
 * stream position, so both commit with the event's effect or neither. */
static int write_marks(struct ag_txn *t, void *arg)
{
	const struct marks *mk = arg;
	struct peer_mark m = { .version = 1, .epoch = mk->f->epoch, .seq = mk->e->seq };
	uint8_t key[96];
	size_t klen = peer_key(mk->f->host, key);
	int rc = ag_txn_put(t, AG_DB_META, key, klen, &m, sizeof(m));

	if (rc == 0 && mk->f->stream_id != NULL)
		rc = ag_txn_put(t, AG_DB_META, K_POS, strlen(K_POS), mk->f->stream_id,
				strlen(mk->f->stream_id));
	return rc;
}

static int apply_admin(struct ag_txn *t, const struct ag_conf *c, const struct ag_sev *e,
		       int64_t now)
{
	char name[AG_SEV_USER_MAX];
	uint8_t uk[AG_USER_KEY_MAX];
	size_t ul = 0;
	long n = 0;
	int rc = 0;

	if (e->kind == AG_SEV_UNLOCK || e->kind == AG_SEV_FORGET_USER) {
		memcpy(name, e->user, e->user_len);
		name[e->user_len] = '\0';
		ul = ag_admin_user_key(ag_txn_store(t), c, name, uk);
	}
	switch (e->kind) {
	case AG_SEV_LIST_ADD: {
		struct ag_list_entry le = { .list = (enum ag_list)e->list, .net = e->addr,
					    .added = e->time_ms, .expires = e->until_ms };
		rc = ag_list_add(t, &le);
		break;
	}
	case AG_SEV_LIST_DEL:
		rc = ag_list_del(t, (enum ag_list)e->list, &e->addr);
		break;
	case AG_SEV_UNBAN:
		rc = ag_admin_unban(t, &e->addr, now);
		break;
	case AG_SEV_UNLOCK:
		rc = ag_admin_unlock(t, uk, ul, now);
		break;
	case AG_SEV_FORGET_ADDR:
		rc = ag_admin_forget_addr(t, &e->addr, &n);
		break;
	case AG_SEV_FORGET_USER:
		rc = ag_admin_forget_user(t, c->user_fold, uk, ul, &n);
		break;
	default:
		return AG_EINVAL;
	}
	/* nothing to undo here (it never reached this host): the same end */
	return rc == AG_ENOTFOUND || rc == AG_ECORRUPT ? 0 : rc;
}

static int apply_admin_txn(const struct ag_conf *c, struct ag_store *s, const struct ag_sev *e,
			   const struct ag_sync_from *f)
{
	struct marks mk = { e, f };
	uint8_t key[STAMP_KEY_MAX];
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t), res = 0;

	if (rc != 0)
		return rc;
	size_t klen = stamp_key(t, c, e, key);
	if (stamp_get(t, key, klen) > e->time_ms) {
		res = AG_SYNC_STALE; /* a later admin action on it won */
	} else {
		rc = apply_admin(t, c, e, ag_guard_now());
		if (rc == 0)
			rc = ag_txn_put(t, AG_DB_META, key, klen, &e->time_ms, sizeof(e->time_ms));
	}
	if (rc == 0)
		rc = write_marks(t, &mk);
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_commit(t);
	return rc != 0 ? rc : res;
}

int ag_sync_apply(const struct ag_conf *c, const struct ag_sink *sink, const struct ag_sev *e,
		  const struct ag_sync_from *f)
{
	struct ag_store *s;
	struct peer_mark m;
	struct ag_txn *t;
	int rc = ag_store_get(c->db_dir, &s);

	if (rc != 0)
		return rc;
	if (e->kind >= AG_SEV_SNAP_BAN) { /* snapshots come another way: ignored */
		rc = f->stream_id != NULL ? ag_sync_set_pos(s, f->stream_id) : 0;
		return rc != 0 ? rc : AG_SYNC_STALE;
	}
	/* one applier per store (authguard-sync): nothing can come between
	 * this look and the write below */
	rc = ag_txn_begin(s, false, &t);
	if (rc != 0)
		return rc;
	rc = peer_get(t, f->host, &m);
	ag_txn_abort(t);
	if (rc != 0)
		return rc;
	if (m.version != 0 && m.epoch == f->epoch && e->seq <= m.seq) {
		rc = f->stream_id != NULL ? ag_sync_set_pos(s, f->stream_id) : 0;
		return rc != 0 ? rc : AG_SYNC_DUP;
	}
	if (e->kind != AG_SEV_FAIL && e->kind != AG_SEV_OK)
		return apply_admin_txn(c, s, e, f);

	struct marks mk = { e, f };
	struct ag_attempt a = {
		.service = e->service, .user = e->user_len > 0 ? e->user : NULL, .user_len = e->user_len,
		.rhost = e->rhost_len > 0 ? e->rhost : NULL, .rhost_len = e->rhost_len,
	};
	struct ag_record_opts o = {
		.when_ms = e->time_ms > 0 ? e->time_ms : 1, .in_txn = write_marks, .arg = &mk,
		.remote = true, .remote_pw_hash = e->pw_hash,
		.remote_pw_key = e->has_pw_key ? e->pw_key : NULL,
	};
	char service[AG_SEV_SERVICE_MAX];
	memcpy(service, e->service, e->service_len);
	service[e->service_len] = '\0';
	a.service = service;
	return ag_guard_record_ex(c, sink, &a, e->kind == AG_SEV_OK, &o, NULL);
}

/* One item of a batch inside @t; the sender's mark is written with it. */
static int batch_one(struct ag_txn *t, const struct ag_conf *c, struct ag_sync_item *it,
		     struct ag_stats *d)
{
	const struct ag_sev *e = &it->e;
	struct ag_sync_from f = { .host = it->host, .epoch = it->epoch, .stream_id = NULL };
	struct marks mk = { e, &f };
	struct peer_mark m;
	int rc = peer_get(t, it->host, &m);

	if (rc != 0)
		return rc;
	if (m.version != 0 && m.epoch == it->epoch && e->seq <= m.seq) {
		it->result = AG_SYNC_DUP;
		return 0;
	}
	it->result = 0;
	if (e->kind >= AG_SEV_SNAP_BAN) {
		it->result = AG_SYNC_STALE;
		return 0;
	}
	if (e->kind == AG_SEV_FAIL || e->kind == AG_SEV_OK) {
		char service[AG_SEV_SERVICE_MAX];
		memcpy(service, e->service, e->service_len);
		service[e->service_len] = '\0';
		struct ag_attempt a = {
			.service = service, .user = e->user_len > 0 ? e->user : NULL,
			.user_len = e->user_len, .rhost = e->rhost_len > 0 ? e->rhost : NULL,
			.rhost_len = e->rhost_len,
		};
		rc = ag_guard_record_remote_txn(t, c, &a, e->kind == AG_SEV_OK,
						e->time_ms > 0 ? e->time_ms : 1, e->pw_hash,
						e->has_pw_key ? e->pw_key : NULL, d);
	} else {
		uint8_t key[STAMP_KEY_MAX];
		size_t klen = stamp_key(t, c, e, key);
		if (stamp_get(t, key, klen) > e->time_ms) {
			it->result = AG_SYNC_STALE;
		} else {
			rc = apply_admin(t, c, e, ag_guard_now());
			if (rc == 0)
				rc = ag_txn_put(t, AG_DB_META, key, klen, &e->time_ms, sizeof(e->time_ms));
		}
	}
	return rc != 0 ? rc : write_marks(t, &mk);
}

int ag_sync_apply_batch(const struct ag_conf *c, const struct ag_sink *sink,
			struct ag_sync_item *items, size_t n, const char *pos_after)
{
	struct ag_stats d = { 0 };
	struct ag_store *s;
	struct ag_txn *t;
	int rc = ag_store_get(c->db_dir, &s);

	if (rc != 0)
		return rc;
	rc = ag_txn_begin(s, true, &t);
	if (rc != 0)
		return rc;
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = batch_one(t, c, &items[i], &d);
	if (rc == 0 && pos_after != NULL)
		rc = ag_txn_put(t, AG_DB_META, K_POS, strlen(K_POS), pos_after, strlen(pos_after));
	if (rc == 0) {
		rc = ag_txn_commit(t);
		if (rc == 0) {
			ag_count_stats(s, &d); /* host-wide: counters.h */
			ag_store_maybe_sync(s);
			return 0;
		}
	} else {
		ag_txn_abort(t);
	}
	/* one by one, each with the guard's own room-making and retry */
	for (size_t i = 0; i < n; i++) {
		struct ag_sync_from f = { .host = items[i].host, .epoch = items[i].epoch,
					  .stream_id = items[i].stream_id };
		rc = ag_sync_apply(c, sink, &items[i].e, &f);
		if (rc < 0)
			return rc;
		items[i].result = rc;
	}
	return pos_after != NULL ? ag_sync_set_pos(s, pos_after) : 0;
}

/* The outbox event of a local attempt (called by the guard in the record's
 * transaction). */
int ag_sync_attempt(struct ag_txn *t, const struct ag_conf *c, const struct ag_attempt *a,
		    bool success, int pw_hash, const uint8_t *pw_key, int64_t when)
{
	struct ag_sev e = { .kind = success ? AG_SEV_OK : AG_SEV_FAIL, .time_ms = when };

	if (!ag_sync_enabled(c))
		return 0;
	e.pw_hash = success ? -1 : pw_hash;
	if (!success && pw_key != NULL && a->user != NULL && a->user_len > 0) {
		e.has_pw_key = true;
		memcpy(e.pw_key, pw_key, AG_SEV_PW_KEY_LEN);
	}
	if (a->rhost != NULL) {
		e.rhost_len = a->rhost_len < AG_SEV_RHOST_MAX ? a->rhost_len : AG_SEV_RHOST_MAX - 1;
		memcpy(e.rhost, a->rhost, e.rhost_len);
	}
	if (a->service != NULL) {
		e.service_len = strnlen(a->service, AG_SEV_SERVICE_MAX - 1);
		memcpy(e.service, a->service, e.service_len);
	}
	if (a->user != NULL) {
		e.user_len = a->user_len < AG_SEV_USER_MAX ? a->user_len : AG_SEV_USER_MAX - 1;
		memcpy(e.user, a->user, e.user_len);
	}
	return ag_outbox_put(t, c, &e);
}

/* ---- the fleet's password key ------------------------------------------------------ */

#define K_FLEET_KEY "sync.pwkey"

int ag_sync_fleet_key_get(struct ag_txn *t, uint8_t key[AG_FLEET_KEY_LEN])
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, AG_DB_META, K_FLEET_KEY, strlen(K_FLEET_KEY), &val, &vlen);

	if (rc != 0)
		return rc;
	if (vlen != AG_FLEET_KEY_LEN)
		return AG_ENOTFOUND; /* damaged: as none (the install secret serves) */
	memcpy(key, val, AG_FLEET_KEY_LEN);
	return 0;
}

int ag_sync_fleet_key_put(struct ag_store *s, const uint8_t key[AG_FLEET_KEY_LEN], bool *changed_r)
{
	uint8_t old[AG_FLEET_KEY_LEN];
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t);

	*changed_r = false;
	if (rc != 0)
		return rc;
	rc = ag_sync_fleet_key_get(t, old);
	if (rc == 0 && memcmp(old, key, AG_FLEET_KEY_LEN) == 0) {
		ag_txn_abort(t);
		return 0;
	}
	if (rc != 0 && rc != AG_ENOTFOUND) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_put(t, AG_DB_META, K_FLEET_KEY, strlen(K_FLEET_KEY), key, AG_FLEET_KEY_LEN);
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_commit(t);
	*changed_r = rc == 0;
	return rc;
}

/* ---- collecting admin stamps ------------------------------------------------------- */

struct stamp_gc {
	int64_t before;
	size_t visits, max;
	long deleted;
	uint8_t last[STAMP_KEY_MAX];
	size_t last_len;
	bool more;
};

static enum ag_scan_op stamp_visit(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct stamp_gc *g = ctx;
	int64_t v = 0;

	if (klen < strlen(K_STAMP) || memcmp(key, K_STAMP, strlen(K_STAMP)) != 0)
		return AG_SCAN_STOP; /* past the stamps */
	if (g->visits++ >= g->max) {
		g->more = true;
		return AG_SCAN_STOP;
	}
	if (klen >= sizeof(g->last))
		return AG_SCAN_DELETE; /* no key stamp_key() makes */
	memcpy(g->last, key, klen);
	g->last_len = klen;
	if (vlen != sizeof(v))
		return AG_SCAN_DELETE; /* damaged: it stamps nothing */
	memcpy(&v, val, sizeof(v));
	if (v >= g->before)
		return AG_SCAN_NEXT;
	g->deleted++;
	return AG_SCAN_DELETE;
}

int ag_sync_gc_stamps(struct ag_store *s, int64_t now, size_t batch, long *n_r)
{
	struct stamp_gc g = { .before = now - AG_SYNC_STAMP_KEEP_MS, .max = batch > 0 ? batch : 1 };
	uint8_t from[STAMP_KEY_MAX];
	size_t from_len = strlen(K_STAMP);
	int rc = 0;

	*n_r = 0;
	memcpy(from, K_STAMP, from_len);
	do {
		struct ag_txn *t;
		long before = g.deleted;
		g.more = false;
		g.visits = 0;
		rc = ag_txn_begin(s, true, &t);
		if (rc != 0)
			break;
		rc = ag_txn_scan_from(t, AG_DB_META, from, from_len, stamp_visit, &g);
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
		if (rc != 0) {
			g.deleted = before;
			break;
		}
		/* go on after the last key looked at (deleted or kept) */
		memcpy(from, g.last, g.last_len);
		from[g.last_len] = 0;
		from_len = g.last_len + 1;
	} while (g.more);
	*n_r = g.deleted;
	return rc;
}

/* ---- position and status -------------------------------------------------------- */

int ag_sync_pos(struct ag_store *s, char *buf, size_t len)
{
	struct ag_txn *t;
	const void *val;
	size_t vlen;
	int rc = ag_txn_begin(s, false, &t);

	if (rc != 0)
		return rc;
	rc = ag_txn_get(t, AG_DB_META, K_POS, strlen(K_POS), &val, &vlen);
	if (rc == 0 && vlen > 0 && vlen < len && vlen < 64) {
		memcpy(buf, val, vlen);
		buf[vlen] = '\0';
	} else if (rc == 0 || rc == AG_ENOTFOUND) {
		snprintf(buf, len, "0");
		rc = 0;
	}
	ag_txn_abort(t);
	return rc;
}

int ag_sync_set_pos(struct ag_store *s, const char *stream_id)
{
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t);

	if (rc != 0)
		return rc;
	rc = ag_txn_put(t, AG_DB_META, K_POS, strlen(K_POS), stream_id, strlen(stream_id));
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	return ag_txn_commit(t);
}

int ag_sync_status_get(struct ag_txn *t, struct ag_sync_status *st)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, AG_DB_META, K_STATUS, strlen(K_STATUS), &val, &vlen);

	memset(st, 0, sizeof(*st));
	if (rc != 0)
		return rc;
	if (vlen != sizeof(*st) && vlen != offsetof(struct ag_sync_status, primary))
		return AG_ECORRUPT;
	memcpy(st, val, vlen);
	if (st->version != AG_SYNC_STATUS_VERSION || st->npeers > AG_SYNC_PEERS)
		return AG_ECORRUPT;
	st->last_error[sizeof(st->last_error) - 1] = '\0';
	st->host[sizeof(st->host) - 1] = '\0';
	st->primary[sizeof(st->primary) - 1] = '\0';
	for (unsigned i = 0; i < st->npeers; i++)
		st->peers[i].host[sizeof(st->peers[i].host) - 1] = '\0';
	return 0;
}

int ag_sync_status_put(struct ag_store *s, const struct ag_sync_status *st)
{
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t);

	if (rc != 0)
		return rc;
	rc = ag_txn_put(t, AG_DB_META, K_STATUS, strlen(K_STATUS), st, sizeof(*st));
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	return ag_txn_commit(t);
}
