/* sync_snap.c - snapshots of what a store knows that matters (active
 * bans, locks, familiar places, run-time list entries), for a host that
 * was away longer than the fleet's stream keeps (see sync.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "counters.h"
#include "guard.h"
#include "lists.h"
#include "record.h"
#include "sync.h"

struct snap {
	int64_t now;
	size_t max, n, len, cap;
	uint8_t *buf;
	int err;
};

static void snap_add(struct snap *sn, const struct ag_sev *e)
{
	if (sn->err != 0 || sn->n >= sn->max)
		return;
	if (sn->len + 2 + AG_SEV_WIRE_MAX > sn->cap) {
		size_t cap = sn->cap ? sn->cap * 2 : 65536;
		uint8_t *b = realloc(sn->buf, cap);
		if (b == NULL) {
			sn->err = AG_ENOMEM;
			return;
		}
		sn->buf = b;
		sn->cap = cap;
	}
	size_t l = ag_sev_encode(e, sn->buf + sn->len + 2);
	sn->buf[sn->len] = (uint8_t)(l >> 8);
	sn->buf[sn->len + 1] = (uint8_t)l;
	sn->len += 2 + l;
	sn->n++;
}

/* A user key as a name: a long name's key (its first 184 bytes and a hash
 * under this host's secret) means nothing on another host. */
static bool key_is_name(const uint8_t *k, size_t n)
{
	return n > 0 && n < AG_SEV_USER_MAX && !(n == AG_USER_KEY_MAX && k[184] == 0) &&
	       memchr(k, '\0', n) == NULL;
}

static void snap_src(void *ctx, const struct ag_addr *a, const struct ag_src_rec *r)
{
	struct snap *sn = ctx;
	struct ag_sev e = { .kind = AG_SEV_SNAP_BAN, .pw_hash = -1, .time_ms = sn->now,
			    .until_ms = r->ban_until, .addr = *a };

	if (r->ban_until > sn->now)
		snap_add(sn, &e);
}

static void snap_user(void *ctx, const uint8_t *k, size_t n, const struct ag_user_rec *r)
{
	struct snap *sn = ctx;
	struct ag_sev e = { .kind = AG_SEV_SNAP_LOCK, .pw_hash = -1, .time_ms = sn->now,
			    .until_ms = r->lock_until, .user_len = n };

	if (r->lock_until <= sn->now || !key_is_name(k, n))
		return;
	memcpy(e.user, k, n);
	snap_add(sn, &e);
}

static void snap_pair(void *ctx, const uint8_t *k, size_t n, const struct ag_addr *a,
		      const struct ag_pair_rec *r)
{
	struct snap *sn = ctx;
	struct ag_sev e = { .kind = AG_SEV_SNAP_FAMILIAR, .pw_hash = -1, .time_ms = sn->now,
			    .until_ms = r->familiar_until, .addr = *a, .user_len = n };

	if (r->familiar_until <= sn->now || !key_is_name(k, n) || a->family == AG_AF_NONE)
		return;
	memcpy(e.user, k, n);
	snap_add(sn, &e);
}

static void snap_list(void *ctx, const struct ag_list_entry *le)
{
	struct snap *sn = ctx;
	struct ag_sev e = { .kind = AG_SEV_LIST_ADD, .list = (uint8_t)le->list, .pw_hash = -1,
			    .time_ms = le->added > 0 ? le->added : sn->now, .until_ms = le->expires,
			    .addr = le->net };

	if (le->expires == 0 || le->expires > sn->now)
		snap_add(sn, &e);
}

int ag_sync_snapshot_make(struct ag_store *s, const struct ag_conf *c, int64_t now, size_t max,
			  uint8_t **buf_r, size_t *len_r, size_t *n_r)
{
	struct snap sn = { .now = now, .max = max };
	struct ag_txn *t;
	int rc = ag_txn_begin(s, false, &t);

	*buf_r = NULL;
	*len_r = *n_r = 0;
	if (rc != 0)
		return rc;
	rc = ag_admin_each_src(t, snap_src, &sn);
	if (rc == 0)
		rc = ag_admin_each_user(t, snap_user, &sn);
	if (rc == 0)
		rc = ag_admin_each_pair(t, false, NULL, 0, snap_pair, &sn);
	for (int l = AG_LIST_ALLOW; rc == 0 && l <= AG_LIST_DENY; l <<= 1)
		rc = ag_list_each(t, (enum ag_list)l, snap_list, &sn);
	ag_txn_abort(t);
	(void)c;
	if (rc == 0)
		rc = sn.err;
	if (rc != 0) {
		free(sn.buf);
		return rc;
	}
	*buf_r = sn.buf;
	*len_r = sn.len;
	*n_r = sn.n;
	return 0;
}

/* Raise an end time to the snapshot's; never lower it. */
static int apply_one(struct ag_txn *t, const struct ag_conf *c, const struct ag_sev *e, int64_t now)
{
	const uint8_t *secret = ag_store_secret(ag_txn_store(t));
	const void *val;
	size_t vlen;
	int rc;

	switch (e->kind) {
	case AG_SEV_SNAP_BAN: {
		struct ag_src_rec r;
		uint8_t key[AG_SRC_KEY_LEN];
		ag_src_key(&e->addr, key);
		if (ag_txn_get(t, AG_DB_SRC, key, sizeof(key), &val, &vlen) != 0 ||
		    ag_rec_decode(AG_REC_SRC, val, vlen, &r) != 0) {
			memset(&r, 0, sizeof(r));
			r.version = AG_REC_VERSION;
			r.first_seen = now;
		}
		if (r.ban_until >= e->until_ms)
			return 0;
		r.ban_until = e->until_ms;
		r.ban_reason = AG_WHY_FAILURES;
		r.ban_count = r.ban_count > 0 ? r.ban_count : 1;
		r.last_seen = now;
		return ag_txn_put(t, AG_DB_SRC, key, sizeof(key), &r, sizeof(r));
	}
	case AG_SEV_SNAP_LOCK: {
		struct ag_user_rec r;
		char name[AG_SEV_USER_MAX];
		uint8_t key[AG_USER_KEY_MAX];
		memcpy(name, e->user, e->user_len);
		name[e->user_len] = '\0';
		size_t kl = ag_admin_user_key(ag_txn_store(t), c, name, key);
		if (ag_txn_get(t, AG_DB_USER, key, kl, &val, &vlen) != 0 ||
		    ag_rec_decode(AG_REC_USER, val, vlen, &r) != 0) {
			memset(&r, 0, sizeof(r));
			r.version = AG_REC_VERSION;
			r.first_seen = now;
		}
		if (r.lock_until >= e->until_ms)
			return 0;
		r.lock_until = e->until_ms;
		r.lock_count = r.lock_count > 0 ? r.lock_count : 1;
		r.last_seen = now;
		return ag_txn_put(t, AG_DB_USER, key, kl, &r, sizeof(r));
	}
	case AG_SEV_SNAP_FAMILIAR: {
		struct ag_pair_rec r, o;
		uint8_t uk[AG_USER_KEY_MAX], sk[AG_SRC_KEY_LEN], pk[AG_SRC_PAIR_KEY_MAX];
		uint8_t ok[AG_PAIR_KEY_MAX];
		size_t ul = ag_user_key(secret, e->user, e->user_len, uk);
		ag_src_key(&e->addr, sk);
		size_t pl = ag_pair_key(sk, uk, ul, pk), ol = ag_pair_key_old(uk, ul, sk, ok);
		bool old = false; /* a copy in the old pair database (store/record.h) */
		if (ag_txn_get(t, AG_DB_SRC, pk, pl, &val, &vlen) != 0 ||
		    ag_rec_decode(AG_REC_PAIR, val, vlen, &r) != 0) {
			memset(&r, 0, sizeof(r));
			r.version = AG_REC_VERSION;
		}
		if (ag_txn_get(t, AG_DB_PAIR, ok, ol, &val, &vlen) == 0 &&
		    ag_rec_decode(AG_REC_PAIR, val, vlen, &o) == 0) {
			ag_pair_merge(&r, &o, now, c->decay_half_life);
			old = true;
		}
		if (r.familiar_until >= e->until_ms && !old)
			return 0;
		if (r.familiar_until < e->until_ms) {
			r.familiar_until = e->until_ms;
			r.last_seen = now;
		}
		rc = ag_txn_put(t, AG_DB_SRC, pk, pl, &r, sizeof(r));
		if (rc == 0 && old)
			rc = ag_txn_del(t, AG_DB_PAIR, ok, ol);
		return rc;
	}
	case AG_SEV_LIST_ADD: {
		struct ag_list_entry le = { .list = (enum ag_list)e->list, .net = e->addr,
					    .added = e->time_ms, .expires = e->until_ms };
		rc = ag_list_add(t, &le);
		return rc;
	}
	default:
		return AG_ECORRUPT;
	}
}

int ag_sync_snapshot_apply(const struct ag_conf *c, const uint8_t *buf, size_t len,
			   const char *stream_id, size_t *n_r)
{
	struct ag_store *s;
	struct ag_txn *t;
	size_t off = 0;
	int rc = ag_store_get(c->db_dir, &s);

	*n_r = 0;
	if (rc != 0)
		return rc;
	/* the whole of it first: a snapshot is applied in full or not at all */
	while (off < len) {
		struct ag_sev e;
		if (len - off < 2)
			return AG_ECORRUPT;
		size_t l = (size_t)buf[off] << 8 | buf[off + 1];
		if (l > len - off - 2 || ag_sev_decode(buf + off + 2, l, &e) != 0 ||
		    (e.kind != AG_SEV_LIST_ADD && e.kind < AG_SEV_SNAP_BAN))
			return AG_ECORRUPT;
		off += 2 + l;
	}
	rc = ag_txn_begin(s, true, &t);
	if (rc != 0)
		return rc;
	int64_t now = ag_guard_now();
	size_t n = 0;
	for (off = 0; rc == 0 && off < len; n++) {
		struct ag_sev e;
		size_t l = (size_t)buf[off] << 8 | buf[off + 1];
		(void)ag_sev_decode(buf + off + 2, l, &e);
		rc = apply_one(t, c, &e, now);
		off += 2 + l;
	}
	if (rc == 0 && stream_id != NULL)
		rc = ag_txn_put(t, AG_DB_META, "sync.pos", 8, stream_id, strlen(stream_id));
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_commit(t);
	if (rc == 0)
		*n_r = n;
	return rc;
}
