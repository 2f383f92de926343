/*
 * admin.h - what authguard-admin does to the store, as core operations
 * (so the tool holds no rule of its own and tests can call them).
 * All functions work inside a transaction the caller opened; they return
 * 0 or a negative AG_E* code.
 */
#ifndef AG_ADMIN_H
#define AG_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "conf.h"
#include "lists.h"
#include "record.h"
#include "store.h"

typedef void ag_src_visit_fn(void *ctx, const struct ag_addr *a, const struct ag_src_rec *r);
typedef void ag_user_visit_fn(void *ctx, const uint8_t *ukey, size_t ulen, const struct ag_user_rec *r);
typedef void ag_pair_visit_fn(void *ctx, const uint8_t *ukey, size_t ulen, const struct ag_addr *src,
			      const struct ag_pair_rec *r);

/* Visit every readable source (host and prefix) record. */
AG_API int ag_admin_each_src(struct ag_txn *t, ag_src_visit_fn *fn, void *ctx);
/* Visit every readable user record. */
AG_API int ag_admin_each_user(struct ag_txn *t, ag_user_visit_fn *fn, void *ctx);
/* Visit the pairs of one user (@ukey, from ag_admin_user_key()), or of
 * every user (@ukey NULL). Pairs are filed under the name as the service
 * passed it: with @fold (user_fold), those of every name that folds to
 * @ukey are visited, the callback getting each one's own key (see
 * ag_user_key_folds_to() for names over 200 bytes). */
AG_API int ag_admin_each_pair(struct ag_txn *t, bool fold, const uint8_t *ukey, size_t ulen,
			      ag_pair_visit_fn *fn, void *ctx);

/* The attack-wave detector's state as the guard reads it (record.h: the
 * new place, with a copy older modules count in the old one folded in).
 * AG_ENOTFOUND if there is none yet. */
AG_API int ag_admin_wave(struct ag_txn *t, const struct ag_conf *c, int64_t now,
			 struct ag_wave_rec *w_r);

/* Read one record. AG_ENOTFOUND if absent, AG_ECORRUPT if unreadable. */
AG_API int ag_admin_get_src(struct ag_txn *t, const struct ag_addr *a, struct ag_src_rec *r_r);
AG_API int ag_admin_get_user(struct ag_txn *t, const uint8_t *ukey, size_t ulen,
			     struct ag_user_rec *r_r);

/* The store's key for user name @user (the same one the guard uses,
 * folded as @c says). */
AG_API size_t ag_admin_user_key(struct ag_store *s, const struct ag_conf *c, const char *user,
				uint8_t key[AG_USER_KEY_MAX]);

/* Lift a ban on @a (host or prefix) and clear its failure counts, and
 * remove a timed deny entry for exactly @a. AG_ENOTFOUND if neither
 * existed. */
AG_API int ag_admin_unban(struct ag_txn *t, const struct ag_addr *a, int64_t now);
/* Lift a user's lock and clear its failure count. AG_ENOTFOUND if the
 * user has no record or is not locked. */
AG_API int ag_admin_unlock(struct ag_txn *t, const uint8_t *ukey, size_t ulen, int64_t now);
/* Drop every record of an address (host record and the pairs with it as
 * source) or of a user (user record and its pairs, with @fold those of
 * every name filed under it, as ag_admin_each_pair() visits them). Sets
 * *n_r to the number dropped; AG_ENOTFOUND if there were none. */
AG_API int ag_admin_forget_addr(struct ag_txn *t, const struct ag_addr *a, long *n_r);
AG_API int ag_admin_forget_user(struct ag_txn *t, bool fold, const uint8_t *ukey, size_t ulen,
				long *n_r);

/* Host-wide counters. */
AG_API int ag_admin_stats(struct ag_txn *t, struct ag_stats *st_r);
/* Eviction counters, host-wide ("evict" in meta; its own versioned
 * struct, so struct ag_stats keeps its layout). Written by the guard after
 * each eviction round (guard.c), read by authguard-admin. */
#define AG_EVICT_VERSION 1
/* Records written this recently are evicted only when nothing older may be. */
#define AG_EVICT_RECENT_MS 10000
struct ag_evict_stats {
	uint32_t version;
	uint32_t pad;
	uint64_t rounds;         /* eviction rounds */
	uint64_t records;        /* records evicted in them */
	uint64_t recent_rounds;  /* rounds that had to take records younger than AG_EVICT_RECENT_MS */
	int64_t last_ms;         /* when the last round ended; 0: never */
	int64_t last_cutoff_ms;  /* it took records last written this long ago or more */
	uint64_t last_records;   /* records it evicted */
	uint64_t last_before;    /* records in the store when it began */
};
/* Validate @len bytes at @data as eviction counters of this version and
 * copy them to @e. Returns 0, AG_ENEWER (a newer authguard's), or
 * AG_ECORRUPT. */
AG_API int ag_evict_decode(const void *data, size_t len, struct ag_evict_stats *e);
/* The eviction counters; all zero if none were written yet. */
AG_API int ag_admin_evictions(struct ag_txn *t, struct ag_evict_stats *e_r);

/* Tarpit sleepers at @now. */
AG_API int ag_admin_sleepers(struct ag_txn *t, int64_t now, unsigned *n_r);

/* True if @r is banned at @now; true if @r is locked at @now. */
AG_API bool ag_src_banned(const struct ag_src_rec *r, int64_t now);
AG_API bool ag_user_locked(const struct ag_user_rec *r, int64_t now);

#endif
