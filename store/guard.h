/*
 * guard.h - the one entry point front ends call.
 *
 *   ag_guard_check()  before the password is verified: refuse, or sleep the
 *                     tarpit (outside any store transaction), or go on;
 *   ag_guard_record() after it: count the success or failure, ban, lock,
 *                     and write the attempt's log line.
 *
 * Faults (store unreadable, full, corrupt) never crash and never pass
 * silently: they are logged at most once a minute per process, and
 * fail_open decides whether the attempt goes on unguarded.
 */
#ifndef AG_GUARD_H
#define AG_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "log.h"
#include "policy.h"

struct ag_attempt {
	const char *service;  /* PAM_SERVICE, SASL service; may be NULL */
	const char *user;     /* may be NULL; any bytes */
	size_t user_len;
	const char *rhost;    /* as the service passed it; may be NULL */
	size_t rhost_len;
};

/* What check decided, carried to record so the attempt's one log line can
 * tell both. Plain data: front ends may copy it. */
struct ag_ticket {
	uint32_t magic;
	uint8_t action, reason;       /* what was done (enum ag_action/ag_reason) */
	uint8_t would, would_reason;  /* log-only: what would have been done */
	uint8_t fault;
	uint8_t flying;               /* the check left an in-flight mark (AG_CHECK_INFLIGHT):
				       * the record drops it, or ag_guard_abandon() */
	int64_t delay_ms;             /* slept (or would have slept) */
};
#define AG_TICKET_MAGIC 0x61677431u

enum ag_decision { AG_PROCEED = 0, AG_REFUSE = 1 };

/*
 * Before the password check. Returns AG_PROCEED (after sleeping any
 * tarpit delay) or AG_REFUSE (the attempt's log line is then written).
 * Never fails: faults become AG_PROCEED or AG_REFUSE as fail_open says.
 * @t_r may be NULL.
 */
AG_API enum ag_decision ag_guard_check(const struct ag_conf *c, const struct ag_sink *sink,
				       const struct ag_attempt *a, struct ag_ticket *t_r);

/*
 * The same check once more after the password was found right (a SASL
 * mechanism step that names its user only then): a refusal's log line
 * says result=success, not unchecked.
 */
AG_API enum ag_decision ag_guard_recheck(const struct ag_conf *c, const struct ag_sink *sink,
					 const struct ag_attempt *a, struct ag_ticket *t_r);

/* ag_guard_check_ex() flags */
enum ag_check_flag {
	/* the caller delays the attempt itself (Dovecot's policy reply,
	 * a script's hook): a tarpit verdict takes its slot as usual, and
	 * t_r->delay_ms says how long; nothing sleeps */
	AG_CHECK_NOSLEEP = 1u << 0,
	/* the password was already found right: as ag_guard_recheck() */
	AG_CHECK_PASSWORD_OK = 1u << 1,
	/* this process records the attempt's result through the guard right
	 * after the password check (the PAM module's stack): the attempt
	 * counts as in flight until then (inflight_max, issue 14). Not for a
	 * front end that only checks (a log follower records later, or
	 * nothing does): its marks would hold the source for inflight_ttl */
	AG_CHECK_INFLIGHT = 1u << 2,
};

/*
 * An attempt checked with AG_CHECK_INFLIGHT that will not be recorded
 * after all (the client gave up in the middle of a SASL exchange, the
 * back end failed): its in-flight mark goes now instead of holding its
 * source and user for inflight_ttl. Nothing if @t says no mark was left.
 */
AG_API void ag_guard_abandon(const struct ag_conf *c, const struct ag_sink *sink,
			     const struct ag_attempt *a, const struct ag_ticket *t);

/* ag_guard_check() with AG_CHECK_* @flags. A tarpit verdict returns
 * AG_PROCEED with t_r->action AG_ACT_TARPIT. */
AG_API enum ag_decision ag_guard_check_ex(const struct ag_conf *c, const struct ag_sink *sink,
					  const struct ag_attempt *a, unsigned flags,
					  struct ag_ticket *t_r);

/*
 * After the password check. @password (may be NULL) is hashed with the
 * install secret to spot the same wrong password again; it is never
 * stored. @t is check's ticket, or NULL if check did not run.
 * Returns 0, or a negative AG_E* code after logging the fault.
 */
AG_API int ag_guard_record(const struct ag_conf *c, const struct ag_sink *sink,
			   const struct ag_attempt *a, bool success, const char *password,
			   const struct ag_ticket *t);

struct ag_txn;

/* What ag_guard_record_ex() adds to ag_guard_record(). Zero is "as
 * ag_guard_record() with no password". */
struct ag_record_opts {
	/* the password, or a digest of it the server made (Dovecot's
	 * pwhash): @pw_len bytes, hashed with the install secret like a
	 * password, never stored; NULL or empty: none */
	const char *pw;
	size_t pw_len;
	/* @pw is a digest that differs per user for one password (Dovecot's
	 * pwhash is salted per user): it spots a stale password of one
	 * user, but cannot be counted across users, so hot passwords
	 * (spray_password_users) do not look at it */
	bool pw_per_user;
	/* when the attempt happened (ms since the epoch; a log line's
	 * time), 0: now. A time in the future is taken as now. */
	int64_t when_ms;
	/* Called inside the write transaction that records the attempt
	 * (each time it is tried), so what it writes commits with the
	 * attempt or not at all: a log follower's position. A non-zero
	 * (AG_E*) return rolls the attempt back and is returned. */
	int (*in_txn)(struct ag_txn *t, void *arg);
	void *arg;
	/* if not NULL: set to AG_REFUSE when a success must be refused
	 * after all (its password is being sprayed and the source is new to
	 * the user: reason hot_password, logged), else to AG_PROCEED. For
	 * that, pass the password of successes too. */
	enum ag_decision *decision_r;
	/* authguard-sync: the attempt happened on another host of the fleet
	 * (sync.h: ag_sync_apply()): it is not put into the outbox again and
	 * writes no attempt line; @remote_pw_hash is its wrong password's
	 * 16-bit hash as the sender made it, or -1 */
	bool remote;
	int remote_pw_hash;
	/* ... and its hot-password key under the fleet's key (sync.h), or
	 * NULL: counted here only under the same key */
	const uint8_t *remote_pw_key;
};

AG_API int ag_guard_record_ex(const struct ag_conf *c, const struct ag_sink *sink,
			      const struct ag_attempt *a, bool success,
			      const struct ag_record_opts *o, const struct ag_ticket *t);

/*
 * A message for where the guard's faults go: the attempt log's file with
 * log = file: (if it can be written), and @sink. Front ends use it for
 * config errors, which are found before the config (and so the log's
 * destination) is known: gather them with ag_notes_add(), then say them
 * with ag_guard_say_notes() once the config is loaded.
 */
AG_API void ag_guard_say(const struct ag_conf *c, const struct ag_sink *sink, enum ag_level lvl,
			 const char *msg);

#define AG_NOTES_MAX 8
struct ag_notes {
	unsigned n, more;   /* kept, and left out past AG_NOTES_MAX */
	char msg[AG_NOTES_MAX][320];
};
/* An ag_conf_report_fn: @ctx is a zeroed struct ag_notes. */
AG_API void ag_notes_add(void *ctx, const char *msg);
/* Each note at AG_LVL_ERR as ag_guard_say() does, then how many were left out. */
AG_API void ag_guard_say_notes(const struct ag_conf *c, const struct ag_sink *sink,
			       const struct ag_notes *n);

/* Drop records that no rule needs any more, and move the live pairs of
 * the old pair database to their place (record.h), in batches. Returns
 * the number dropped, or a negative AG_E* code. */
AG_API long ag_guard_gc(const struct ag_conf *c, int64_t now);

struct ag_stats;
/* authguard-sync (sync.h): a remote attempt's effect on the records inside
 * @t, the caller's write transaction (no outbox, no line, no retry); the
 * host-wide counters to add once @t commits are added to @d. */
AG_API int ag_guard_record_remote_txn(struct ag_txn *t, const struct ag_conf *c,
				      const struct ag_attempt *a, bool success, int64_t when_ms,
				      int pw_hash, const uint8_t *pw_key, struct ag_stats *d);

/* The guard's clock (ms; the test hook's when set). */
AG_API int64_t ag_guard_now(void);

/* Test hook: if non-zero, the clock the guard uses (ms). */
AG_API void ag_guard_set_clock(int64_t (*now_fn)(void));

/* Test hook: if non-zero, the wall clock (ms) that paces this process's
 * upkeep of a full store (how often it looks, starts an eviction round,
 * waits after one: guard.c), ag_now_ms() otherwise. A test freezes it or
 * moves it on by hand, so that how fast the machine runs does not decide
 * how many rounds there are. */
AG_API void ag_guard_set_pace_clock(int64_t (*now_fn)(void));

/* Test hook: if non-NULL, called with @arg between a success's read-only
 * pass and its write transaction when the write may take the records the
 * read read (guard.c record_fn()), so that a test can commit something in
 * between, as another process may. */
AG_API void ag_guard_set_between_passes(void (*fn)(void *), void *arg);

#endif
