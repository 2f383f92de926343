/*
 * policy.h - the rules, as pure functions.
 *
 * Given the records read from the store, the config and the time, the
 * policy decides what to do with an attempt and how the records change.
 * No I/O, no clock: tests drive it with a fake clock.
 */
#ifndef AG_POLICY_H
#define AG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "record.h"

enum ag_action { AG_ACT_ALLOW = 0, AG_ACT_TARPIT = 1, AG_ACT_REFUSE = 2 };

enum ag_reason {
	AG_WHY_NONE = 0,
	AG_WHY_TRUSTED,     /* source is on the trusted list */
	AG_WHY_DENY,        /* source is on the deny list */
	AG_WHY_BANNED,      /* source address is banned */
	AG_WHY_NET_BANNED,  /* source's network prefix is banned */
	AG_WHY_LOCKED,      /* user is locked and the source is unfamiliar */
	AG_WHY_TARPIT_FULL, /* would sleep, but every tarpit slot is taken */
	AG_WHY_FAULT,       /* the store failed (fail_open = no) */
	AG_WHY_FAILURES,    /* ban cause: too many failures */
	AG_WHY_SPRAY,       /* ban cause: too many distinct users */
	AG_WHY_ADMIN,       /* ban cause: set by authguard-admin */
	AG_WHY_SCORE,       /* tarpit cause: recent failures */
	AG_WHY_HOT_PASSWORD, /* a right password that is being sprayed, from an unfamiliar source */
	AG_WHY_WAVE,        /* tarpit cause: a host-wide attack wave, unfamiliar source */
	/* issue 14: slow time scale, attempts in flight */
	AG_WHY_SLOW,        /* ban or lock cause: failures on slow_half_life */
	AG_WHY_INFLIGHT,    /* refused: with the attempts in flight it would pass a threshold */
};

/* Short name for logs ("banned", "locked", ...). */
AG_API const char *ag_reason_name(enum ag_reason r);
AG_API const char *ag_action_name(enum ag_action a);

/* Everything the policy knows about one attempt. The guard fills it from
 * the store; the policy updates it and marks what must be written back. */
struct ag_view {
	bool has_addr;   /* the attempt came with a usable client address */
	bool has_user;
	bool trusted, proxy, denied;
	uint32_t user_hash;  /* keyed hash of the user name (spray detection) */
	int pw_hash;         /* keyed 16-bit hash of a wrong password, or -1 */
	struct ag_src_rec src;   /* the host */
	struct ag_src_rec net;   /* its network prefix */
	struct ag_user_rec user;
	struct ag_pair_rec pair; /* user x (host, or /ipv6_familiar_prefix for IPv6) */
	bool w_src, w_net, w_user, w_pair; /* records to write back */
	/* hot passwords and attack waves (issue 14) */
	bool has_pw;          /* @pw is the record of the attempt's password */
	uint16_t user_tag;    /* the user's tag in @pw (ag_pw_user_tag()) */
	struct ag_pw_rec pw;
	struct ag_wave_rec wave; /* host-wide */
	bool w_pw, w_wave;
	/* issue 14: the wider networks of the host (ipv4_prefixes /
	 * ipv6_prefixes past the first), each banned at its own count
	 * (wide_after; 0: never), and the attempts in flight (checked, not
	 * yet recorded) from the host and at the user from unfamiliar places */
	unsigned n_wide;
	struct ag_src_rec wide[AG_PREFIX_LEVELS - 1];
	uint32_t wide_after[AG_PREFIX_LEVELS - 1];
	bool w_wide[AG_PREFIX_LEVELS - 1];
	uint32_t flight_src, flight_user;
};

/* Initialise @v: empty records, nothing known. */
AG_API void ag_view_init(struct ag_view *v);

struct ag_verdict {
	enum ag_action action;
	enum ag_reason reason;
	int64_t delay_ms;   /* for AG_ACT_TARPIT */
	int64_t until;      /* ban or lock expiry, for AG_ACT_REFUSE */
	double src_score;   /* host's recent failures (pair's behind a proxy) */
	double user_score;  /* user's recent unfamiliar failures */
	bool familiar;      /* the source is familiar for the user */
	bool user_locked;
	bool wave;          /* an attack wave is on */
};

/* What a recorded result changed. */
struct ag_events {
	bool host_banned, net_banned, user_locked, repeat_pw;
	bool familiar;      /* the source was familiar for the user when judged */
	bool familiar_lost; /* and this failure ended that */
	enum ag_reason ban_reason;
	int64_t ban_until, lock_until;
	bool hot_pw;        /* the password is hot (being sprayed) */
	bool hot_refused;   /* a success with it from an unfamiliar source: counted as a
			     * failure (log-only: would have been) */
	bool wave, wave_started, wave_ended;
	bool slow_lock;     /* the lock is on the slow count (user_slow_lock_after) */
};

/* Tarpit delay for @n recent failures (pure arithmetic, capped). */
AG_API int64_t ag_tarpit_delay(const struct ag_conf *c, double n);

/* Decide before the password check. Updates counters in @v (refused). */
AG_API void ag_policy_check(const struct ag_conf *c, struct ag_view *v, int64_t now,
			    struct ag_verdict *out_r);

/* Apply the result of a password check (@success) to @v. */
AG_API void ag_policy_record(const struct ag_conf *c, struct ag_view *v, int64_t now,
			     bool success, struct ag_events *ev_r);

/* True if the pair record makes the source familiar at @now: the user
 * logged in from there within familiar_ttl, and it has not failed for the
 * user ip_ban_after times since (user_lock_after if that is 0, else
 * net_ban_after): such failures end familiarity until the next success. */
AG_API bool ag_pair_familiar(const struct ag_view *v, int64_t now);



/* Hot passwords: true when the password of @r has failed for
 * spray_password_users distinct users lately (fading with decay_half_life). */
AG_API bool ag_pw_hot(const struct ag_conf *c, const struct ag_pw_rec *r, int64_t now);

/* Attack waves: true when the host-wide count of failures from sources
 * unfamiliar to their user, faded with decay_half_life, is at least
 * wave_min_failures and wave_factor times what the learned baseline
 * (half-life wave_baseline) expects; once on, the wave stays on until the
 * count is down to half of that (hysteresis). Never during the first
 * wave_baseline of a store (learning). wave_factor = 0: never. */
AG_API bool ag_wave_on(const struct ag_conf *c, const struct ag_wave_rec *w, int64_t now);
/* The count that starts a wave at @now (and twice the one that ends it). */
AG_API double ag_wave_level(const struct ag_conf *c, const struct ag_wave_rec *w, int64_t now);
/* Count one failure from an unfamiliar source at @now: updates the
 * baseline and the state; returns +1 when a wave starts, -1 when one ends. */
AG_API int ag_wave_note(const struct ag_conf *c, struct ag_wave_rec *w, int64_t now);

/* True when a record no longer carries anything a rule needs at @now
 * (scores decayed away, bans/locks and their escalation memory expired,
 * familiarity lapsed): it may be dropped. */
AG_API bool ag_src_dead(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now);
AG_API bool ag_user_dead(const struct ag_conf *c, const struct ag_user_rec *r, int64_t now);
AG_API bool ag_pair_dead(const struct ag_conf *c, const struct ag_pair_rec *r, int64_t now);
AG_API bool ag_pw_dead(const struct ag_conf *c, const struct ag_pw_rec *r, int64_t now);

/* Weak records: what may be evicted when the store is at db_max_size and
 * still 3/4 full after dead records are dropped (the guard takes them by
 * age of last write, oldest first). Never weak: a source that is banned
 * (by a rule or an admin) or still carries repeat-ban memory (ban_count >
 * 0 and its last ban ended at most ip_ban_max ago), a locked user, a
 * familiar pair. Counts do not protect a record: a flood of places that
 * fail twice each must not leave a brute force's fresh records as the
 * only ones that may go. */
AG_API bool ag_src_weak(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now);
AG_API bool ag_user_weak(const struct ag_conf *c, const struct ag_user_rec *r, int64_t now);
AG_API bool ag_pair_weak(const struct ag_conf *c, const struct ag_pair_rec *r, int64_t now);
/* True when a source record's only protection from eviction is its
 * repeat-ban memory: its last ban (by a rule, not an admin) is over but
 * ended at most ip_ban_max ago. Such records go only when the weak ones
 * cannot make enough room (a store filled with them must not stop the
 * guard), by the age of their ban's end, oldest first. */
AG_API bool ag_src_ban_memory(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now);
#endif
