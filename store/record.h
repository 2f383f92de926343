/*
 * record.h - the fixed-layout, versioned records kept in the store, and
 * the keys they are kept under.
 *
 * Records are stored as their C layout (the store is host-local and never
 * moved between machines). Every record starts with a version word;
 * ag_rec_decode() rejects any value of the wrong size or version and any
 * field that could not have been written (NaN, negative scores), so a
 * damaged store file reads as "no record", never as a wild value.
 */
#ifndef AG_RECORD_H
#define AG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

/* 2: sources and users gained a slow stranger count (issue 14), at the
 * end; version 1 records are read as version 2 ones with it at zero. */
#define AG_REC_VERSION 2
#define AG_RECENT_USERS 8
#define AG_RECENT_PW 4

/* An exponentially decaying count: worth @v at time @ts (ms). */
struct ag_score {
	double v;
	int64_t ts;
};

/* A client address or network. */
struct ag_src_rec {
	uint32_t version;
	uint32_t ban_count;        /* bans so far (for escalation) */
	struct ag_score fails;     /* recent failures */
	struct ag_score spray;     /* recent distinct user names failed */
	uint32_t recent_users[AG_RECENT_USERS]; /* keyed hashes of user names */
	uint32_t recent_next;
	uint32_t ban_reason;       /* enum ag_reason of the current/last ban */
	int64_t ban_until;         /* ms; 0 = never banned */
	int64_t ban_by_admin;      /* 1 when the ban was set by authguard-admin */
	int64_t first_seen, last_seen;
	uint64_t n_fail, n_success, n_refused;
	struct ag_score slow;      /* failures on slow_half_life (version 2) */
};

/* A user name. */
struct ag_user_rec {
	uint32_t version;
	uint32_t lock_count;
	struct ag_score fails;     /* recent failures from unfamiliar sources */
	int64_t lock_until;        /* ms; 0 = never locked */
	int64_t first_seen, last_seen;
	uint64_t n_fail, n_success, n_refused;
	struct ag_score slow;      /* unfamiliar failures on slow_half_life (version 2) */
};

/* A user x source pair. */
struct ag_pair_rec {
	uint32_t version;
	uint32_t pw_next;
	struct ag_score fails;
	int64_t familiar_until;    /* ms; the source is familiar before this */
	int64_t last_success;
	uint16_t pw[AG_RECENT_PW];  /* keyed 16-bit hashes of recent wrong passwords */
	int64_t pw_ts[AG_RECENT_PW];
	int64_t last_seen;
};

/* Host-wide counters (meta database). */
struct ag_stats {
	uint32_t version;
	uint32_t pad;
	int64_t created;
	uint64_t attempts, failures, successes, refused, tarpitted;
	uint64_t delay_ms, bans, locks, faults;
};

/* A wrong password, by a keyed 32-bit hash of it alone (no user): how
 * many distinct users it failed for lately (spray_password_users). The
 * users are kept as 16-bit keyed tags, enough to tell a few apart. */
#define AG_PW_TAGS 8
struct ag_pw_rec {
	uint32_t version;
	uint32_t tag_next;
	struct ag_score users;     /* distinct users failed, fading */
	uint16_t tags[AG_PW_TAGS]; /* keyed 16-bit tags of the last users */
	int64_t first_seen, last_seen;
	uint64_t n_fail;           /* failures (and hot refusals) with it */
};

/* The host-wide attack-wave detector: failures from sources unfamiliar to
 * their user, on two time scales. Since issue 15.3 in LMDB's unnamed
 * database (AG_WAVE_KEY; AG_DB_MAIN, whose page every commit writes
 * anyway), before in the meta database under "wave" (AG_WAVE_KEY_OLD),
 * where modules of older versions still count theirs: the guard folds
 * such a copy in (ag_wave_merge) and deletes it. */
struct ag_wave_rec {
	uint32_t version;
	uint32_t active;           /* 1 while a wave is on (hysteresis) */
	struct ag_score fast;      /* half-life decay_half_life */
	struct ag_score base;      /* half-life wave_baseline: the host's normal */
	int64_t first_seen;        /* learning until first_seen + wave_baseline */
	int64_t since;             /* when the current (or last) wave started */
	int64_t ended;             /* when the last wave ended (0: none yet) */
	uint64_t waves;            /* waves so far */
};

#define AG_WAVE_KEY "\0wave"
#define AG_WAVE_KEY_LEN 5
#define AG_WAVE_KEY_OLD "wave"
#define AG_WAVE_KEY_OLD_LEN 4

/* Fold @other (a copy an older module counted in the old place since it
 * was last folded in) into @w: both counts add up, decayed to @now with
 * their half-lives; the learning starts at the earlier first failure;
 * the wave's own state (on or off, since when, how many) stays @w's. */
AG_API void ag_wave_merge(struct ag_wave_rec *w, const struct ag_wave_rec *other, int64_t now,
			  int64_t fast_half_life, int64_t base_half_life);

enum ag_rec_kind { AG_REC_SRC, AG_REC_USER, AG_REC_PAIR, AG_REC_STATS, AG_REC_PW, AG_REC_WAVE };

/* Validate @len bytes at @data as a record of @kind and copy it to @out
 * (sized for that kind). Returns 0, or AG_ECORRUPT. */
AG_API int ag_rec_decode(enum ag_rec_kind kind, const void *data, size_t len, void *out);
/* Size of a record of @kind. */
AG_API size_t ag_rec_size(enum ag_rec_kind kind);

/* Keys. */
#define AG_SRC_KEY_LEN 18
#define AG_USER_KEY_MAX 201
#define AG_PAIR_KEY_MAX (2 + AG_USER_KEY_MAX + AG_SRC_KEY_LEN)

/* Source key: family, prefix length, 16 address bytes. */
AG_API void ag_src_key(const struct ag_addr *a, uint8_t key[AG_SRC_KEY_LEN]);
/* Inverse of ag_src_key(); returns 0 or AG_ECORRUPT. */
AG_API int ag_src_key_decode(const uint8_t *key, size_t len, struct ag_addr *a_r);
/* User key: the name itself up to 200 bytes; a longer name is its first
 * 184 bytes, a NUL and a 16-byte keyed hash (names never hold NUL, so the
 * forms cannot collide). Returns the key length. */
AG_API size_t ag_user_key(const uint8_t secret[16], const char *user, size_t len,
			  uint8_t key[AG_USER_KEY_MAX]);
/* The canonical form of a user name, as every rule sees it: with @fold,
 * surrounding blanks are dropped and ASCII letters lowered (directories
 * such as LDAP match names that way, so "Alice " must count as "alice");
 * a name that folds to nothing is kept as it is. Gives the store key and
 * a non-zero keyed 32-bit hash. Returns 0 or AG_ENOMEM. */
AG_API int ag_user_canon(const uint8_t secret[16], bool fold, const char *user, size_t len,
			 uint8_t key[AG_USER_KEY_MAX], size_t *klen_r, uint32_t *hash_r);

/* The length of the name @user without a final "@DOMAIN", when DOMAIN is
 * one of the @n lower-case @domains (user_strip_domains) in any ASCII
 * case, so that "alice@example.org" from one service and "alice" from
 * another are one user. With @fold, blanks after the domain are ignored
 * (user_fold drops them anyway). The last '@' counts; a name that would
 * be left empty or blank, or with no domain listed, keeps its @len. */
AG_API size_t ag_user_strip(bool fold, const char *user, size_t len, char *const *domains,
			    size_t n);

/* True if the name kept in user key @xkey (from ag_user_key(), the name as
 * a service passed it) is filed, with @fold, under the user key @ukey
 * (from ag_user_canon()). Without @fold: the keys are equal. A name of
 * over 200 bytes is known by its first 184 only: it matches every user
 * whose folded name begins with those, folded. */
AG_API bool ag_user_key_folds_to(bool fold, const uint8_t *xkey, size_t xlen, const uint8_t *ukey,
				 size_t ulen);

/* The bounds [*a_r, *b_r) of the name @s without the blanks around it that
 * user_fold and libsasl2's canonicalisation drop: space, \t, \n, \v, \f
 * and \r (isspace() in the C locale), whatever the process's locale. */
AG_API void ag_user_trim(const char *s, size_t len, size_t *a_r, size_t *b_r);

/* Hot-password key: a 4-byte keyed hash of the password alone (a key
 * derived from @secret, not the pair's), and the non-zero 16-bit tag of
 * a user hash kept in its record. */
#define AG_PW_KEY_LEN 4
AG_API void ag_pw_key(const uint8_t secret[16], const void *pw, size_t len,
		      uint8_t key[AG_PW_KEY_LEN]);
AG_API uint16_t ag_pw_user_tag(const uint8_t secret[16], uint32_t user_hash);

/* Pair keys. Pairs are filed under the exact name (ag_user_key()), not
 * the folded one: with user_fold, the owner of "Alice" must not make a
 * place familiar for "alice". The all-zero source key stands for "no
 * address".
 *
 * Since issue 15.3 a pair lives in the source database, right after the
 * record of its source (the host; the prefix of ipv6_familiar_prefix for
 * IPv6), so that a failure writes the host and its pair in one leaf page
 * instead of descending a third tree: the 18-byte source key,
 * AG_PAIR_TAG, the user key. Source records' keys are exactly
 * AG_SRC_KEY_LEN bytes long, so a longer key there is a pair's.
 * Before, pairs had a database of their own ("pair"), keyed by 2-byte
 * user key length, user key, source key (ag_pair_key_old()); modules of
 * older versions still loaded in long-running services keep using it,
 * so it is read too (README, "Store layout"). */
#define AG_PAIR_TAG 0x70 /* 'p' */
#define AG_SRC_PAIR_KEY_MAX (AG_SRC_KEY_LEN + 1 + AG_USER_KEY_MAX)
AG_API size_t ag_pair_key(const uint8_t skey[AG_SRC_KEY_LEN], const uint8_t *ukey, size_t ulen,
			  uint8_t key[AG_SRC_PAIR_KEY_MAX]);
AG_API size_t ag_pair_key_old(const uint8_t *ukey, size_t ulen, const uint8_t skey[AG_SRC_KEY_LEN],
			      uint8_t key[AG_PAIR_KEY_MAX]);
/* Split a pair key of the source database (@old: of the old pair
 * database) into its user key (*ukey_r points into @key) and source
 * (family AG_AF_NONE for "no address"). Returns 0, or AG_ECORRUPT for
 * anything else (a source record's key among them). */
AG_API int ag_pair_key_decode(const uint8_t *key, size_t len, bool old, const uint8_t **ukey_r,
			      size_t *ulen_r, struct ag_addr *src_r);
/* Fold @other, a second copy of the pair in @r (one written by an older
 * module into the old database), into @r so that no attempt either one
 * counted is lost: the failures add up (both decayed to @now), the
 * latest wrong passwords of both are kept, the times are the later
 * ones, and familiarity is that of the copy with the later login. */
AG_API void ag_pair_merge(struct ag_pair_rec *r, const struct ag_pair_rec *other, int64_t now,
			  int64_t half_life);

/* Decayed value of @s at @now with @half_life (ms). Clock steps
 * backwards are treated as no time passing. */
AG_API double ag_score_at(const struct ag_score *s, int64_t now, int64_t half_life);
/* Add @n to @s at @now (decaying first). */
AG_API void ag_score_add(struct ag_score *s, double n, int64_t now, int64_t half_life);

#endif
