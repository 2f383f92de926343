/* sync.c - the fleet's events: encoding, the outbox, applying remote
 * events exactly once (see sync.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
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
 * Layout (version 2): two databases of their own, AG_DB_OBF for failures
 * and AG_DB_OBO for the other events, each keyed by the event's 8-byte
 * big-endian sequence number, so each only ever grows at its end: a put is
 * an LMDB append (no search, pages filled rather than split in half) and
 * dirties the last leaf of one of them. The depth is LMDB's entry count of
 * the two (kept in the transaction: no scan, no counter to rewrite); the
 * next sequence number is one past the last key of either, or the floor
 * kept in the state record if that is higher (everything was pushed and
 * deleted); total = next - 1. So a record writes its event and nothing
 * else: the state record ("sync.ob") is written when the outbox is made,
 * when the full outbox drops events, and when pushed events are deleted.
 * Version 1 kept the events in the meta database (keys "sync.q" + class +
 * sequence number) and the counts in the state: the first write
 * transaction that finds it moves them (outbox_upgrade()).
 */

#define K_STATE "sync.ob"
#define K_POS "sync.pos"
#define K_STATUS "sync.st"
#define K_PEER "sync.peer."
#define K_STAMP "sync.adm."
#define Q1_PREFIX "sync.q" /* version 1: + class + 8-byte sequence number */
#define Q1_PLEN 6
#define Q1_KEYLEN (Q1_PLEN + 1 + 8)
#define SEQ_LEN 8

bool ag_sync_enabled(const struct ag_conf *c)
{
	return c->sync_redis[0] != '\0';
}

static enum ag_db class_db(uint8_t kind)
{
	return kind == AG_SEV_FAIL ? AG_DB_OBF : AG_DB_OBO;
}

/* The state record as stored: version 1 or 2 (0: none yet). In version
 * 2, next_seq is the floor (see above), depth and total are not kept. */
static int state_read(struct ag_txn *t, struct ag_outbox_state *st)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, AG_DB_META, K_STATE, strlen(K_STATE), &val, &vlen);

	memset(st, 0, sizeof(*st));
	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (vlen != sizeof(*st))
		return AG_ECORRUPT;
	memcpy(st, val, sizeof(*st));
	return st->version == 1 || st->version == AG_OUTBOX_VERSION ? 0 : AG_ECORRUPT;
}

static int state_write(struct ag_txn *t, const struct ag_outbox_state *st)
{
	struct ag_outbox_state w = *st;

	w.depth = w.total = 0; /* (counted, not kept) */
	return ag_txn_put(t, AG_DB_META, K_STATE, strlen(K_STATE), &w, sizeof(w));
}

/* The sequence number past the last key of @db (0 when empty); a key of
 * the wrong length (damaged) counts as none. */
static int past_last(struct ag_txn *t, enum ag_db db, uint64_t *next_r)
{
	uint8_t key[SEQ_LEN];
	size_t klen;
	int rc = ag_txn_edge(t, db, true, key, sizeof(key), &klen);

	*next_r = 0;
	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc == 0 && klen == SEQ_LEN)
		*next_r = ag_get_be64(key) + 1;
	return rc;
}

/* Depth and next sequence number of a version 2 outbox into @st. */
static int state_count(struct ag_txn *t, struct ag_outbox_state *st)
{
	uint64_t nf, no, lf, lo;
	int rc = ag_txn_count(t, AG_DB_OBF, &nf);

	if (rc == 0)
		rc = ag_txn_count(t, AG_DB_OBO, &no);
	if (rc == 0)
		rc = past_last(t, AG_DB_OBF, &lf);
	if (rc == 0)
		rc = past_last(t, AG_DB_OBO, &lo);
	if (rc != 0)
		return rc;
	st->depth = nf + no;
	if (lf > st->next_seq)
		st->next_seq = lf;
	if (lo > st->next_seq)
		st->next_seq = lo;
	st->total = st->next_seq > 0 ? st->next_seq - 1 : 0;
	return 0;
}

int ag_outbox_state(struct ag_txn *t, struct ag_outbox_state *st)
{
	int rc = state_read(t, st);

	if (rc != 0 || st->version != AG_OUTBOX_VERSION)
		return rc; /* none, or version 1 with its own counts */
	return state_count(t, st);
}

static enum ag_scan_op upgrade_visit(void *ctx, const void *key, size_t klen, const void *val,
				     size_t vlen)
{
	struct ag_txn *t = ctx;
	const uint8_t *k = key;

	/* each class of version 1 is in sequence order: appends */
	if (klen == Q1_KEYLEN)
		(void)ag_txn_append(t, k[Q1_PLEN] == 0 ? AG_DB_OBF : AG_DB_OBO, k + Q1_PLEN + 1,
				    SEQ_LEN, val, vlen);
	return AG_SCAN_DELETE;
}

/* Version 1 (events in meta) to version 2, inside @t. */
static int outbox_upgrade(struct ag_txn *t, struct ag_outbox_state *st)
{
	int rc = ag_txn_scan(t, AG_DB_META, Q1_PREFIX, Q1_PLEN, upgrade_visit, t);

	if (rc != 0)
		return rc;
	st->version = AG_OUTBOX_VERSION; /* next_seq becomes the floor */
	return state_write(t, st);
}

/* The state for a write in @t: made if there is none (or it is damaged:
 * a new epoch, so peers start anew too), version 1 upgraded. */
static int state_for_write(struct ag_txn *t, struct ag_outbox_state *st, bool *dirty)
{
	int rc = state_read(t, st);

	if (rc == AG_ECORRUPT)
		memset(st, 0, sizeof(*st));
	else if (rc != 0)
		return rc;
	if (st->version == 0) {
		st->version = AG_OUTBOX_VERSION;
		if (getrandom(&st->epoch, sizeof(st->epoch), 0) != (ssize_t)sizeof(st->epoch))
			return AG_EIO;
		st->next_seq = 1;
		*dirty = true;
	} else if (st->version == 1) {
		rc = outbox_upgrade(t, st);
		if (rc != 0)
			return rc;
	}
	return state_count(t, st);
}

struct first_ctx {
	int visits;
};

static enum ag_scan_op first_visit(void *ctxp, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct first_ctx *f = ctxp;

	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	return f->visits++ == 0 ? AG_SCAN_DELETE : AG_SCAN_STOP;
}

/* The outbox is full: the oldest failure goes, or if there is none the
 * oldest of the rest (whatever its key: a damaged one goes first). */
static int outbox_drop_one(struct ag_txn *t, struct ag_outbox_state *st)
{
	static const enum ag_db order[2] = { AG_DB_OBF, AG_DB_OBO };

	for (int i = 0; i < 2; i++) {
		struct first_ctx f = { 0 };
		int rc = ag_txn_scan(t, order[i], NULL, 0, first_visit, &f);
		if (rc != 0)
			return rc;
		if (f.visits == 0)
			continue;
		if (i == 0)
			st->dropped_fail++;
		else
			st->dropped_other++;
		st->depth--;
		return 0;
	}
	st->depth = 0;
	return 0;
}

int ag_outbox_put(struct ag_txn *t, const struct ag_conf *c, struct ag_sev *e)
{
	struct ag_outbox_state st;
	uint8_t key[SEQ_LEN], buf[AG_SEV_WIRE_MAX];
	bool dirty = false;
	int rc;

	if (!ag_sync_enabled(c))
		return 0;
	rc = state_for_write(t, &st, &dirty);
	while (rc == 0 && st.depth >= c->sync_outbox_max && st.depth > 0) {
		rc = outbox_drop_one(t, &st);
		dirty = true;
	}
	if (rc != 0)
		return rc;
	e->seq = st.next_seq;
	ag_put_be64(key, e->seq);
	rc = ag_txn_append(t, class_db(e->kind), key, sizeof(key), buf, ag_sev_encode(e, buf));
	return rc == 0 && dirty ? state_write(t, &st) : rc;
}

/* Peeking merges the two databases by sequence number without a second
 * array of events (the pusher asks for hundreds; a large buffer per call
 * cost it more than the scan): a first pass reads only keys, a second
 * decodes each wanted event straight into its place. */
struct keys_ctx {
	uint64_t *seq;
	int n, max;
};

static enum ag_scan_op keys_visit(void *ctxp, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct keys_ctx *k = ctxp;

	(void)val;
	(void)vlen;
	if (k->n >= k->max)
		return AG_SCAN_STOP;
	if (klen == SEQ_LEN) /* (a damaged key cannot be sent: it goes when deleted up to) */
		k->seq[k->n++] = ag_get_be64(key);
	return AG_SCAN_NEXT;
}

struct place_ctx {
	struct ag_sev *ev;
	const int *pos;    /* where the i-th key of this database goes in ev, or -1 */
	const uint64_t *seq;
	bool *bad;         /* by position: did not decode */
	int i, n;
};

static enum ag_scan_op place_visit(void *ctxp, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct place_ctx *p = ctxp;

	if (p->i >= p->n)
		return AG_SCAN_STOP;
	if (klen != SEQ_LEN)
		return AG_SCAN_NEXT; /* skipped by the first pass too */
	int at = p->pos[p->i];
	if (at >= 0 && (ag_get_be64(key) != p->seq[p->i] || ag_sev_decode(val, vlen, &p->ev[at]) != 0 ||
			p->ev[at].seq != p->seq[p->i]))
		p->bad[at] = true; /* damaged */
	p->i++;
	return AG_SCAN_NEXT;
}

int ag_outbox_peek_after(struct ag_txn *t, uint64_t after, struct ag_sev *ev, int max)
{
	static const enum ag_db dbs[2] = { AG_DB_OBF, AG_DB_OBO };
	struct ag_outbox_state st;
	uint8_t start[SEQ_LEN];
	int rc = state_read(t, &st);

	if (rc != 0 || st.version != AG_OUTBOX_VERSION || max <= 0 || after == UINT64_MAX)
		return rc; /* none yet, or version 1: upgraded by the next write */
	ag_put_be64(start, after + 1);
	/* keys (8 bytes each) of both, their places, what did not decode */
	size_t m = (size_t)max;
	uint8_t *mem = malloc(2 * m * (sizeof(uint64_t) + sizeof(int)) + m);
	if (mem == NULL)
		return AG_ENOMEM;
	uint64_t *seq = (uint64_t *)mem;
	int *pos = (int *)(seq + 2 * m);
	bool *bad = (bool *)(pos + 2 * m);
	struct keys_ctx k[2] = { { seq, 0, max }, { seq + m, 0, max } };
	for (int d = 0; d < 2 && rc == 0; d++)
		rc = ag_txn_scan_from(t, dbs[d], start, sizeof(start), keys_visit, &k[d]);
	/* each is in order by itself: merge the two by sequence number */
	int i = 0, j = 0, n = 0;
	while (rc == 0 && n < max && (i < k[0].n || j < k[1].n)) {
		if (j >= k[1].n || (i < k[0].n && seq[i] < seq[m + (size_t)j]))
			pos[i++] = n++;
		else
			pos[m + (size_t)j++] = n++;
	}
	for (int x = i; x < k[0].n; x++)
		pos[x] = -1;
	for (int x = j; x < k[1].n; x++)
		pos[m + (size_t)x] = -1;
	memset(bad, 0, m);
	for (int d = 0; d < 2 && rc == 0; d++) {
		struct place_ctx p = { ev, pos + (size_t)d * m, seq + (size_t)d * m, bad, 0,
				       d == 0 ? i : j };
		if (p.n > 0)
			rc = ag_txn_scan_from(t, dbs[d], start, sizeof(start), place_visit, &p);
	}
	int out = 0;
	for (int x = 0; rc == 0 && x < n; x++)
		if (!bad[x]) {
			if (out != x)
				ev[out] = ev[x];
			out++;
		}
	free(mem);
	return rc != 0 ? rc : out;
}

int ag_outbox_peek(struct ag_txn *t, struct ag_sev *ev, int max)
{
	return ag_outbox_peek_after(t, 0, ev, max);
}

struct upto_ctx {
	uint64_t upto, n;
};

static enum ag_scan_op upto_visit(void *ctxp, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct upto_ctx *u = ctxp;

	(void)val;
	(void)vlen;
	if (klen == SEQ_LEN && ag_get_be64(key) > u->upto)
		return AG_SCAN_STOP;
	u->n++;
	return AG_SCAN_DELETE; /* pushed (or a damaged key, which sorts among them) */
}

int ag_outbox_done_upto(struct ag_txn *t, uint64_t upto, uint64_t *n_r)
{
	struct ag_outbox_state st;
	struct upto_ctx u = { upto, 0 };
	bool dirty = false;
	int rc = state_for_write(t, &st, &dirty);

	if (rc == 0)
		rc = ag_txn_scan(t, AG_DB_OBF, NULL, 0, upto_visit, &u);
	if (rc == 0)
		rc = ag_txn_scan(t, AG_DB_OBO, NULL, 0, upto_visit, &u);
	if (rc != 0)
		return rc;
	if (n_r != NULL)
		*n_r = u.n;
	/* next_seq (past every key there was) is kept as the floor: the
	 * numbers deleted are never used again, even with both empty */
	return dirty || u.n > 0 ? state_write(t, &st) : 0;
}

int ag_outbox_done(struct ag_txn *t, const struct ag_sev *ev, int n)
{
	struct ag_outbox_state st;
	bool dirty = false;
	int rc = state_for_write(t, &st, &dirty);

	if (rc != 0)
		return rc;
	for (int i = 0; i < n; i++) {
		uint8_t key[SEQ_LEN];
		ag_put_be64(key, ev[i].seq);
		rc = ag_txn_del(t, class_db(ev[i].kind), key, sizeof(key));
		if (rc == AG_ENOTFOUND)
			continue; /* dropped meanwhile (full) */
		if (rc != 0)
			return rc;
		dirty = true; /* (next_seq, the floor, is past it) */
	}
	return dirty ? state_write(t, &st) : 0;
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
						e->time_ms > 0 ? e->time_ms : 1, e->pw_hash, d);
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
		    bool success, int pw_hash, int64_t when)
{
	struct ag_sev e = { .kind = success ? AG_SEV_OK : AG_SEV_FAIL, .time_ms = when };

	if (!ag_sync_enabled(c))
		return 0;
	e.pw_hash = success ? -1 : pw_hash;
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
	if (vlen != sizeof(*st))
		return AG_ECORRUPT;
	memcpy(st, val, sizeof(*st));
	if (st->version != AG_SYNC_STATUS_VERSION || st->npeers > AG_SYNC_PEERS)
		return AG_ECORRUPT;
	st->last_error[sizeof(st->last_error) - 1] = '\0';
	st->host[sizeof(st->host) - 1] = '\0';
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
