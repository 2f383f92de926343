/* admin.c - store operations for authguard-admin. */
#include "config.h"

#include <string.h>

#include "admin.h"
#include "counters.h"
#include "hash.h"

bool ag_src_banned(const struct ag_src_rec *r, int64_t now)
{
	return r->ban_until > now;
}

bool ag_user_locked(const struct ag_user_rec *r, int64_t now)
{
	return r->lock_until > now;
}

struct visit {
	struct ag_txn *t;
	void *fn;
	void *ctx;
	const uint8_t *ukey;  /* pairs of this user only, or NULL */
	size_t ulen;
	bool fold;            /* and of every name filed under it */
	const uint8_t *skey; /* forget: pairs whose source is this */
	bool old;             /* the old pair database is scanned */
	int64_t now, half_life; /* each_pair: a copy in both places is merged */
	int err;
	long n;
};

/* What a reader is shown: the record's own refusal count (older versions
 * and refusals made in a write transaction) plus the counter file's (the
 * read-only refusals, counters.h). Never written back. */
static void with_refusals(struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
			  uint64_t *n_refused, int64_t *last_seen)
{
	ag_counted_refusals(ag_txn_store(t), db, key, klen, n_refused, last_seen);
}

/* A user's: with its refusals, the failures counted there instead of in
 * the record (ag_count_fail()). */
static void user_counts(struct ag_txn *t, const void *key, size_t klen, struct ag_user_rec *r)
{
	with_refusals(t, AG_DB_USER, key, klen, &r->n_refused, &r->last_seen);
	ag_counted_fails(ag_txn_store(t), key, klen, &r->n_fail, &r->last_seen);
}

static enum ag_scan_op src_visit(void *vp, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct visit *v = vp;
	struct ag_addr a;
	struct ag_src_rec r;

	if (ag_src_key_decode(key, klen, &a) == 0 && ag_rec_decode(AG_REC_SRC, val, vlen, &r) == 0) {
		with_refusals(v->t, AG_DB_SRC, key, klen, &r.n_refused, &r.last_seen);
		((ag_src_visit_fn *)v->fn)(v->ctx, &a, &r);
	}
	return AG_SCAN_NEXT;
}

int ag_admin_each_src(struct ag_txn *t, ag_src_visit_fn *fn, void *ctx)
{
	struct visit v = { .t = t, .fn = (void *)fn, .ctx = ctx };
	/* every key (no order relied on: by prefix length, then address
	 * in layout 1, by address in layout 2; never a user's) */
	return ag_txn_scan(t, AG_DB_SRC, NULL, 0, src_visit, &v);
}

static enum ag_scan_op user_visit(void *vp, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct visit *v = vp;
	struct ag_user_rec r;

	if (ag_rec_decode(AG_REC_USER, val, vlen, &r) == 0) {
		user_counts(v->t, key, klen, &r);
		((ag_user_visit_fn *)v->fn)(v->ctx, key, klen, &r);
	}
	return AG_SCAN_NEXT;
}

int ag_admin_each_user(struct ag_txn *t, ag_user_visit_fn *fn, void *ctx)
{
	struct visit v = { .t = t, .fn = (void *)fn, .ctx = ctx };
	return ag_txn_scan(t, AG_DB_USER, NULL, 0, user_visit, &v);
}

/* A key of either pair layout fits in an old one's buffer. */
_Static_assert(AG_PAIR_KEY_MAX >= AG_SRC_PAIR_KEY_MAX, "pair key buffers");

/* The pair's other copy: its key in the old pair database (@old false)
 * or in the source database. */
static size_t other_key(bool old, const uint8_t *ukey, size_t ulen, const struct ag_addr *src,
			uint8_t key[AG_PAIR_KEY_MAX])
{
	uint8_t skey[AG_SRC_KEY_LEN] = { 0 };

	if (src->family != AG_AF_NONE)
		ag_src_key(src, skey);
	return old ? ag_pair_key(skey, ukey, ulen, key) : ag_pair_key_old(ukey, ulen, skey, key);
}

static enum ag_scan_op pair_visit(void *vp, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct visit *v = vp;
	const uint8_t *ukey;
	size_t ulen;
	struct ag_addr src;
	struct ag_pair_rec r, o;
	uint8_t okey[AG_PAIR_KEY_MAX]; /* the larger of the two */
	const void *oval;
	size_t olen;

	if (ag_pair_key_decode(key, klen, v->old, &ukey, &ulen, &src) != 0)
		return AG_SCAN_NEXT; /* a source record, or no pair */
	if (v->ukey != NULL && !ag_user_key_folds_to(v->fold, ukey, ulen, v->ukey, v->ulen))
		return AG_SCAN_NEXT;
	if (ag_rec_decode(AG_REC_PAIR, val, vlen, &r) != 0)
		return AG_SCAN_NEXT;
	/* a pair in both places (an older module wrote it again) is shown
	 * once, as the guard reads it: merged, when the new one is visited */
	size_t kl = other_key(v->old, ukey, ulen, &src, okey);
	int rc = ag_txn_get(v->t, v->old ? AG_DB_SRC : AG_DB_PAIR, okey, kl, &oval, &olen);
	if (rc == 0 && ag_rec_decode(AG_REC_PAIR, oval, olen, &o) == 0) {
		if (v->old)
			return AG_SCAN_NEXT;
		ag_pair_merge(&r, &o, v->now, v->half_life);
	} else if (rc != 0 && rc != AG_ENOTFOUND) {
		v->err = rc;
		return AG_SCAN_STOP;
	}
	((ag_pair_visit_fn *)v->fn)(v->ctx, ukey, ulen, &src, &r);
	return AG_SCAN_NEXT;
}

/* Where the pairs of @ukey start in the old pair database: without
 * folding they all begin with its key; folded, they are filed under the
 * names as given, so all are read. (In the source database they are
 * filed by source: every pair is read.) */
static size_t pair_prefix(bool fold, const uint8_t *ukey, size_t ulen,
			  uint8_t prefix[2 + AG_USER_KEY_MAX])
{
	if (ukey == NULL || fold)
		return 0;
	prefix[0] = (uint8_t)(ulen >> 8);
	prefix[1] = (uint8_t)ulen;
	memcpy(prefix + 2, ukey, ulen);
	return 2 + ulen;
}

int ag_admin_each_pair(struct ag_txn *t, bool fold, const uint8_t *ukey, size_t ulen,
		       ag_pair_visit_fn *fn, void *ctx)
{
	/* (a merged failure count is the two copies' sum, undecayed: the
	 * visitors decay it with the config's half-life) */
	struct visit v = { .t = t, .fn = (void *)fn, .ctx = ctx, .ukey = ukey, .ulen = ulen,
			   .fold = fold, .now = ag_now_ms(), .half_life = INT64_MAX };
	uint8_t prefix[2 + AG_USER_KEY_MAX];
	size_t plen = pair_prefix(fold, ukey, ulen, prefix);
	/* every key: pairs sort by source in both layouts, not by user */
	int rc = ag_txn_scan(t, AG_DB_SRC, NULL, 0, pair_visit, &v);
	if (rc == 0 && v.err == 0) {
		v.old = true;
		rc = ag_txn_scan(t, AG_DB_PAIR, prefix, plen, pair_visit, &v);
	}
	return rc != 0 ? rc : v.err;
}

static int get_rec(struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
		   enum ag_rec_kind kind, void *out)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, db, key, klen, &val, &vlen);

	if (rc != 0)
		return rc;
	return ag_rec_decode(kind, val, vlen, out);
}

int ag_admin_wave(struct ag_txn *t, const struct ag_conf *c, int64_t now, struct ag_wave_rec *w)
{
	struct ag_wave_rec old;
	int rc = get_rec(t, AG_DB_MAIN, AG_WAVE_KEY, AG_WAVE_KEY_LEN, AG_REC_WAVE, w);
	int orc = get_rec(t, AG_DB_META, AG_WAVE_KEY_OLD, AG_WAVE_KEY_OLD_LEN, AG_REC_WAVE, &old);

	if (orc != 0)
		return rc;
	if (rc != 0)
		*w = old;
	else
		ag_wave_merge(w, &old, now, c->decay_half_life, c->wave_baseline);
	return 0;
}

int ag_admin_get_src(struct ag_txn *t, const struct ag_addr *a, struct ag_src_rec *r)
{
	uint8_t key[AG_SRC_KEY_LEN];

	ag_src_key(a, key);
	int rc = get_rec(t, AG_DB_SRC, key, sizeof(key), AG_REC_SRC, r);
	if (rc == 0)
		with_refusals(t, AG_DB_SRC, key, sizeof(key), &r->n_refused, &r->last_seen);
	return rc;
}

int ag_admin_get_user(struct ag_txn *t, const uint8_t *ukey, size_t ulen, struct ag_user_rec *r)
{
	int rc = get_rec(t, AG_DB_USER, ukey, ulen, AG_REC_USER, r);
	if (rc == 0)
		user_counts(t, ukey, ulen, r);
	return rc;
}

size_t ag_admin_user_key(struct ag_store *s, const struct ag_conf *c, const char *user,
			 uint8_t key[AG_USER_KEY_MAX])
{
	size_t n = 0, len = ag_user_strip(c->user_fold, user, strlen(user), c->user_strip_domains.v,
					  c->user_strip_domains.n);
	uint32_t h;

	if (ag_user_canon(ag_store_secret(s), c->user_fold, user, len, key, &n, &h) != 0)
		return ag_user_key(ag_store_secret(s), user, len, key);
	return n;
}

int ag_admin_unban(struct ag_txn *t, const struct ag_addr *a, int64_t now)
{
	struct ag_src_rec r;
	uint8_t key[AG_SRC_KEY_LEN];
	bool done = false;
	int rc;

	ag_src_key(a, key);
	rc = get_rec(t, AG_DB_SRC, key, sizeof(key), AG_REC_SRC, &r);
	if (rc == 0 && ag_src_banned(&r, now)) {
		r.ban_until = 0;
		r.ban_count = 0;
		r.ban_by_admin = 0;
		memset(&r.fails, 0, sizeof(r.fails));
		memset(&r.spray, 0, sizeof(r.spray));
		memset(r.recent_users, 0, sizeof(r.recent_users));
		rc = ag_txn_put(t, AG_DB_SRC, key, sizeof(key), &r, sizeof(r));
		if (rc != 0)
			return rc;
		done = true;
	} else if (rc != 0 && rc != AG_ENOTFOUND && rc != AG_ECORRUPT) {
		return rc;
	}
	/* a timed ban made by "ban" lives on the deny list */
	rc = ag_list_timed_del(t, AG_LIST_DENY, a);
	if (rc == 0)
		done = true;
	else if (rc != AG_ENOTFOUND)
		return rc;
	return done ? 0 : AG_ENOTFOUND;
}

int ag_admin_unlock(struct ag_txn *t, const uint8_t *ukey, size_t ulen, int64_t now)
{
	struct ag_user_rec r;
	int rc = get_rec(t, AG_DB_USER, ukey, ulen, AG_REC_USER, &r);

	if (rc != 0)
		return rc;
	if (!ag_user_locked(&r, now))
		return AG_ENOTFOUND;
	r.lock_until = 0;
	memset(&r.fails, 0, sizeof(r.fails));
	return ag_txn_put(t, AG_DB_USER, ukey, ulen, &r, sizeof(r));
}

/* The old pair database's pairs of one source (keyed by user first). */
static enum ag_scan_op forget_pair_by_src(void *vp, const void *key, size_t klen, const void *val,
					  size_t vlen)
{
	struct visit *v = vp;
	(void)val;
	(void)vlen;
	if (klen >= AG_SRC_KEY_LEN &&
	    memcmp((const uint8_t *)key + klen - AG_SRC_KEY_LEN, v->skey, AG_SRC_KEY_LEN) == 0) {
		v->n++;
		return AG_SCAN_DELETE;
	}
	return AG_SCAN_NEXT;
}

/* The source database's pairs of one source: filed right after it, so
 * the scan's prefix (source key and tag) picks them. */
static enum ag_scan_op forget_pair_at_src(void *vp, const void *key, size_t klen, const void *val,
					  size_t vlen)
{
	struct visit *v = vp;
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	v->n++;
	return AG_SCAN_DELETE;
}

static enum ag_scan_op forget_pair_by_user(void *vp, const void *key, size_t klen, const void *val,
					   size_t vlen)
{
	struct visit *v = vp;
	const uint8_t *ukey;
	size_t ulen;
	struct ag_addr src;

	(void)val;
	(void)vlen;
	if (ag_pair_key_decode(key, klen, v->old, &ukey, &ulen, &src) != 0 ||
	    !ag_user_key_folds_to(v->fold, ukey, ulen, v->ukey, v->ulen))
		return AG_SCAN_NEXT;
	v->n++;
	return AG_SCAN_DELETE;
}

int ag_admin_forget_addr(struct ag_txn *t, const struct ag_addr *a, long *n_r)
{
	uint8_t key[AG_SRC_KEY_LEN];
	struct visit v = { .skey = key };
	int rc;

	*n_r = 0;
	ag_src_key(a, key);
	rc = ag_txn_del(t, AG_DB_SRC, key, sizeof(key));
	if (rc == 0) {
		v.n++;
		ag_count_forget(ag_txn_store(t), AG_DB_SRC, key, sizeof(key));
	}
	else if (rc != AG_ENOTFOUND)
		return rc;
	uint8_t prefix[AG_SRC_KEY_LEN + 1];
	memcpy(prefix, key, AG_SRC_KEY_LEN);
	prefix[AG_SRC_KEY_LEN] = AG_PAIR_TAG;
	/* relies on a pair's key starting with its source's whole key and the
	 * tag, in both layouts (store.c maps a prefix of 18 bytes or more
	 * as a key) */
	rc = ag_txn_scan(t, AG_DB_SRC, prefix, sizeof(prefix), forget_pair_at_src, &v);
	/* the old database's are keyed by user first: visit them all */
	if (rc == 0)
		rc = ag_txn_scan(t, AG_DB_PAIR, NULL, 0, forget_pair_by_src, &v);
	if (rc != 0)
		return rc;
	*n_r = v.n;
	return v.n > 0 ? 0 : AG_ENOTFOUND;
}

int ag_admin_forget_user(struct ag_txn *t, bool fold, const uint8_t *ukey, size_t ulen, long *n_r)
{
	uint8_t prefix[2 + AG_USER_KEY_MAX];
	struct visit v = { .ukey = ukey, .ulen = ulen, .fold = fold };
	size_t plen = pair_prefix(fold, ukey, ulen, prefix);
	int rc;

	*n_r = 0;
	rc = ag_txn_del(t, AG_DB_USER, ukey, ulen);
	if (rc == 0) {
		v.n++;
		ag_count_forget(ag_txn_store(t), AG_DB_USER, ukey, ulen);
	}
	else if (rc != AG_ENOTFOUND)
		return rc;
	/* filed by source: every pair is looked at */
	/* every key (pairs sort by source, not by user, in both layouts) */
	rc = ag_txn_scan(t, AG_DB_SRC, NULL, 0, forget_pair_by_user, &v);
	v.old = true;
	if (rc == 0)
		rc = ag_txn_scan(t, AG_DB_PAIR, prefix, plen, forget_pair_by_user, &v);
	if (rc != 0)
		return rc;
	*n_r = v.n;
	return v.n > 0 ? 0 : AG_ENOTFOUND;
}

int ag_admin_stats(struct ag_txn *t, struct ag_stats *st)
{
	int rc = get_rec(t, AG_DB_META, "stats", 5, AG_REC_STATS, st);

	if (rc == AG_ENOTFOUND) {
		memset(st, 0, sizeof(*st));
		rc = 0;
	}
	/* since the counter file: what older versions counted in the
	 * record, plus the file's */
	if (rc == 0)
		ag_counted_stats(ag_txn_store(t), st);
	return rc;
}

int ag_evict_decode(const void *data, size_t len, struct ag_evict_stats *e)
{
	uint32_t version = 0;

	if (len >= sizeof(version))
		memcpy(&version, data, sizeof(version));
	if (version > AG_EVICT_VERSION)
		return AG_ENEWER;
	if (version != AG_EVICT_VERSION || len != sizeof(*e))
		return AG_ECORRUPT;
	memcpy(e, data, sizeof(*e));
	if (e->last_ms < 0 || e->last_cutoff_ms < 0 || e->records < e->last_records ||
	    e->rounds < e->recent_rounds || (e->rounds == 0) != (e->last_ms == 0))
		return AG_ECORRUPT;
	return 0;
}

int ag_admin_evictions(struct ag_txn *t, struct ag_evict_stats *e)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, AG_DB_META, "evict", 5, &val, &vlen);

	if (rc == 0)
		rc = ag_evict_decode(val, vlen, e);
	if (rc == AG_ENOTFOUND) {
		memset(e, 0, sizeof(*e));
		e->version = AG_EVICT_VERSION;
		return 0;
	}
	return rc;
}

struct sleepers {
	int64_t now;
	unsigned n;
};

static enum ag_scan_op sleeper_visit(void *vp, const void *key, size_t klen, const void *val,
				     size_t vlen)
{
	struct sleepers *s = vp;
	const uint8_t *k = key;
	int64_t end = 0;

	(void)val;
	(void)vlen;
	if (klen != 16)
		return AG_SCAN_NEXT;
	end = (int64_t)ag_get_be64(k);
	s->n += end > s->now;
	return AG_SCAN_NEXT;
}

int ag_admin_sleepers(struct ag_txn *t, int64_t now, unsigned *n_r)
{
	struct sleepers s = { now, 0 };
	int rc = ag_txn_scan(t, AG_DB_SLOT, NULL, 0, sleeper_visit, &s);

	*n_r = s.n;
	return rc;
}
