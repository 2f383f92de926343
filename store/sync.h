/*
 * sync.h - the fleet's events: what one host's store tells the others
 * (issue 13). authguard-sync carries them through a Redis stream; the core
 * only knows the outbox they wait in and how a remote one is applied.
 *
 *  - With sync_redis set, every recorded attempt and every admin action
 *    puts an event into the store's outbox IN THE SAME TRANSACTION, so a
 *    crash loses neither or both. Without it nothing is written: a host
 *    that is not in a fleet pays nothing.
 *  - The outbox holds at most sync_outbox_max events. When full, the
 *    oldest failure goes first (one-shot sources are the flood), then,
 *    only if no failure is left, the oldest success or admin action;
 *    both are counted (struct ag_outbox_state) and authguard-sync logs them.
 *  - ag_sync_apply() gives a remote event the effect a local one would
 *    have had at its time (the same rules run on it), never puts it into
 *    the outbox, and writes the stream position and the sender's sequence
 *    number in the same transaction: each event is applied exactly once,
 *    duplicates (a sender that pushed twice) are skipped.
 *  - Admin actions win by time: a per-target stamp keeps the time of the
 *    last admin action on an address or a user, and an older one arriving
 *    later is ignored.
 *
 * The outbox lives in LMDB's unnamed database (AG_DB_MAIN, keys that start
 * "\0sync."), whose page every commit writes anyway; everything else in
 * the meta database under keys that start "sync." (sync.c says why). Up
 * to this version the outbox was in the meta database: modules loaded
 * before an upgrade still put their events there, and authguard-sync
 * moves them over (ag_outbox_old_move(), below).
 */
#ifndef AG_SYNC_H
#define AG_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "conf.h"
#include "guard.h"
#include "lists.h"
#include "log.h"
#include "store.h"

enum ag_sev_kind {
	AG_SEV_FAIL = 1,        /* a failed attempt */
	AG_SEV_OK = 2,          /* a successful one */
	AG_SEV_LIST_ADD = 3,    /* allow/proxy/deny add (ban = timed deny) */
	AG_SEV_LIST_DEL = 4,
	AG_SEV_UNBAN = 5,
	AG_SEV_UNLOCK = 6,
	AG_SEV_FORGET_ADDR = 7,
	AG_SEV_FORGET_USER = 8,
	/* in snapshots only (never in the stream): what a host knows now */
	AG_SEV_SNAP_BAN = 9,       /* @addr banned until @until_ms */
	AG_SEV_SNAP_LOCK = 10,     /* @user locked until @until_ms */
	AG_SEV_SNAP_FAMILIAR = 11, /* @addr familiar for @user until @until_ms */
};
#define AG_SEV_KIND_MAX AG_SEV_SNAP_FAMILIAR

#define AG_SEV_RHOST_MAX 256
#define AG_SEV_SERVICE_MAX 64
#define AG_SEV_PW_KEY_LEN 4 /* = AG_PW_KEY_LEN */
#define AG_SEV_USER_MAX 512  /* longer names are cut (and so known by these bytes) */
/* an encoded event is never longer */
#define AG_SEV_WIRE_MAX (64 + AG_SEV_RHOST_MAX + AG_SEV_SERVICE_MAX + AG_SEV_USER_MAX)

struct ag_sev {
	uint8_t kind;           /* enum ag_sev_kind */
	uint8_t list;           /* enum ag_list, for LIST_ADD/DEL */
	int32_t pw_hash;        /* FAIL: the sender's 16-bit password hash, or -1 */
	/* FAIL from a place new to its user (version 2 events only): the
	 * password's hot-password key under the fleet's key (see below) */
	bool has_pw_key;
	uint8_t pw_key[4];
	int64_t time_ms;        /* when it happened (on the sender) */
	int64_t until_ms;       /* LIST_ADD: expiry (0 never) */
	uint64_t seq;           /* the sender's outbox sequence number */
	struct ag_addr addr;    /* the target of an admin action */
	size_t rhost_len, service_len, user_len;
	char rhost[AG_SEV_RHOST_MAX];     /* attempts: the address as the service gave it */
	char service[AG_SEV_SERVICE_MAX];
	char user[AG_SEV_USER_MAX];       /* attempts, UNLOCK, FORGET_USER */
};

/* Short name of @kind for logs ("fail", "unban", ...). */
AG_API const char *ag_sev_name(unsigned kind);

/* Encode @e into @buf (at least AG_SEV_WIRE_MAX bytes): a versioned,
 * byte-order-independent layout. Returns the length. Version 1 unless
 * the event carries a password key (version 2: what an older host
 * cannot read, it rejects, so the rest stays readable to it). */
AG_API size_t ag_sev_encode(const struct ag_sev *e, uint8_t *buf);
/* Decode @len bytes (untrusted: from Redis, or a damaged store). Returns 0
 * or AG_ECORRUPT (wrong version, length, kind or field). */
AG_API int ag_sev_decode(const uint8_t *buf, size_t len, struct ag_sev *e_r);

/* True if @c puts events into the outbox (sync_redis is set). */
AG_API bool ag_sync_enabled(const struct ag_conf *c);

/* Put @e (its seq is assigned here) into the outbox inside @t, making room
 * as the rule above says. With sync off, does nothing. Returns 0 or AG_E*. */
AG_API int ag_outbox_put(struct ag_txn *t, const struct ag_conf *c, struct ag_sev *e);

/* An admin action done in @t: into the outbox (as ag_outbox_put()) and
 * its target's stamp moved to e->time_ms, so that an older remote action
 * on it loses. */
AG_API int ag_sync_admin_local(struct ag_txn *t, const struct ag_conf *c, struct ag_sev *e);

#define AG_OUTBOX_VERSION 1
struct ag_outbox_state {
	uint32_t version, pad;
	uint64_t epoch;          /* random, made with the outbox: a new store starts anew */
	uint64_t next_seq;
	uint64_t depth;          /* events waiting */
	uint64_t dropped_fail;   /* dropped when full: failures */
	uint64_t dropped_other;  /* ... and successes, admin actions */
	uint64_t total;          /* events ever put */
};
/* The outbox's counters (all zero, version 0, when none was made yet). */
AG_API int ag_outbox_state(struct ag_txn *t, struct ag_outbox_state *st_r);

/* A new random epoch for the outbox in @t (into *@epoch_r, may be NULL),
 * keeping its events, counters and numbering: the events not sent yet go
 * under it. authguard-sync takes one when the stream shows that the store
 * was rolled back (an OS crash lost its last transactions, which the
 * stream holds): the numbers the outbox hands out again are the stream's
 * already, and receivers would skip them as duplicates of the old epoch;
 * a new epoch starts every receiver's mark for this host anew. Returns 0,
 * AG_ENOTFOUND (no outbox yet) or AG_E*. */
AG_API int ag_outbox_new_epoch(struct ag_txn *t, uint64_t *epoch_r);
/* Up to @max of the oldest events, in sequence order, into @ev. Returns
 * how many, or AG_E*. Events that cannot be decoded (a damaged store) are
 * skipped; they go as the oldest when the outbox is full. */
AG_API int ag_outbox_peek(struct ag_txn *t, struct ag_sev *ev, int max);
/* The same, from the first event numbered past @after: the pusher keeps
 * what it pushed in memory and deletes it in bulk now and then (a read
 * transaction here; the writer lock only for ag_outbox_done_upto()). */
AG_API int ag_outbox_peek_after(struct ag_txn *t, uint64_t after, struct ag_sev *ev, int max);
/* Delete the events @ev[0..n) (pushed) from the outbox. */
AG_API int ag_outbox_done(struct ag_txn *t, const struct ag_sev *ev, int n);
/* Delete every event numbered up to @upto (pushed) in @t, in one pass;
 * *@n_r (may be NULL): how many went. */
AG_API int ag_outbox_done_upto(struct ag_txn *t, uint64_t upto, uint64_t *n_r);

/*
 * The old place: the meta database, where modules of an older version
 * (a PAM or SASL process started before the upgrade keeps the module it
 * loaded) go on putting their events, under the old state's epoch and
 * numbers. The new place's epoch is never the old place's (chosen when
 * its state is made, and by ag_outbox_new_epoch()), so no (epoch, number)
 * pair is handed out by both. authguard-sync, and only it, empties the
 * old place: at start it looks for the old place's events in the stream
 * (an older daemon may have pushed them, killed before it deleted them:
 * deleted with ag_outbox_old_done_upto()/ag_outbox_old_done(), never sent
 * twice), then moves the rest, and whatever old modules put there later,
 * with ag_outbox_old_move(). An older authguard-sync does not know the
 * new place: with new modules, their events wait there (nothing is
 * lost) until the new daemon runs.
 */
/* The old place's counters (version 0: none). */
AG_API int ag_outbox_old_state(struct ag_txn *t, struct ag_outbox_state *st_r);
/* Is any event (or damaged key) waiting in the old place? A cursor's
 * look, for the pusher's idle loop. */
AG_API int ag_outbox_old_waiting(struct ag_txn *t, bool *any_r);
/* As ag_outbox_peek_after(), ag_outbox_done(), ag_outbox_done_upto(),
 * in the old place (its epoch: ag_outbox_old_state()). */
AG_API int ag_outbox_old_peek_after(struct ag_txn *t, uint64_t after, struct ag_sev *ev, int max);
AG_API int ag_outbox_old_done(struct ag_txn *t, const struct ag_sev *ev, int n);
AG_API int ag_outbox_old_done_upto(struct ag_txn *t, uint64_t upto, uint64_t *n_r);
/* Move up to @max of the old place's oldest events into the outbox in
 * @t: put as ag_outbox_put() puts (numbered on under the outbox's epoch,
 * the full outbox's rule), deleted from the old place (with the damaged
 * keys among them). The old place's drop counters are added to the
 * outbox's and zeroed there (its epoch, numbering and total stay, for the
 * old writers). *@moved_r: how many were moved. Returns 0 or AG_E*. */
AG_API int ag_outbox_old_move(struct ag_txn *t, const struct ag_conf *c, int max, int *moved_r);

/* The guard's part: the outbox event of a local attempt, put in the
 * record's transaction @t (nothing with sync off); @pw_key: the
 * password's fleet-keyed hot-password key, or NULL. */
AG_API int ag_sync_attempt(struct ag_txn *t, const struct ag_conf *c, const struct ag_attempt *a,
			   bool success, int pw_hash, const uint8_t *pw_key, int64_t when);

/*
 * The fleet's password key. A password sprayed over the fleet's hosts
 * must be seen as one spray, and a wrong password repeated on another
 * host as a repeat, so every host of one fleet hashes passwords (and the
 * users counted in a hot-password record) under one key instead of its
 * install secret. The PAM module cannot read the cluster key (0600, the
 * sync daemon's): authguard-sync derives this key from it (HMAC-SHA256
 * under the cluster key of a fixed label, cut to 16 bytes: it says
 * nothing of the cluster key and cannot sign an event) and writes it into
 * the store at start, where every process of the store's group reads it
 * like the install secret. With sync_redis set and the key there, the
 * guard uses it for the password hashes it records and sends; records
 * made under the install secret (or a former cluster key) are no longer
 * met and fade like any unused record.
 */
#define AG_FLEET_KEY_LEN 16
/* Write @key (if it is not the one there already, in which case *@changed_r
 * is false). Returns 0 or AG_E*. */
AG_API int ag_sync_fleet_key_put(struct ag_store *s, const uint8_t key[AG_FLEET_KEY_LEN],
				 bool *changed_r);
/* The key into @key inside @t: 0, or AG_ENOTFOUND (none, or not one). */
AG_API int ag_sync_fleet_key_get(struct ag_txn *t, uint8_t key[AG_FLEET_KEY_LEN]);

/*
 * Admin stamps are kept AG_SYNC_STAMP_KEEP_MS after the action they
 * stamp: an older action on the same target that arrives later than that
 * (its sender was cut off from Redis for longer, with it in its outbox)
 * finds no stamp and is applied. ag_sync_gc_stamps() deletes, in write
 * transactions of at most @batch visits each, the stamps older than
 * @now - AG_SYNC_STAMP_KEEP_MS; *@n_r: how many. authguard-sync runs it
 * once an hour.
 */
#define AG_SYNC_STAMP_KEEP_MS (INT64_C(7) * 86400000)
AG_API int ag_sync_gc_stamps(struct ag_store *s, int64_t now, size_t batch, long *n_r);

/* Where a remote event came from, and where the reader is in the stream. */
struct ag_sync_from {
	const char *host;        /* the sender's sync_host */
	uint64_t epoch;          /* the sender's outbox epoch */
	const char *stream_id;   /* the stream entry's id ("1700000000000-0") */
};

/* Results of ag_sync_apply() besides 0. */
#define AG_SYNC_DUP 1     /* already applied (or older than the last from that host) */
#define AG_SYNC_STALE 2   /* an admin action older than the target's last one */

/* Apply remote event @e with the effect of a local one at its time; the
 * position @f and the sender's sequence number commit with it. Returns 0,
 * AG_SYNC_DUP, AG_SYNC_STALE (both: the position was still moved on), or
 * AG_E*. */
AG_API int ag_sync_apply(const struct ag_conf *c, const struct ag_sink *sink,
			 const struct ag_sev *e, const struct ag_sync_from *f);

/* Many remote events in one write transaction (what a stream read
 * returned), with the position @pos_after (the last entry read, which may
 * be one that was skipped) in it too. Each item's @result is what
 * ag_sync_apply() would have returned. On a store fault (a full map) the
 * items are applied one by one with ag_sync_apply() instead. Returns 0 or
 * AG_E* (nothing of the failing item on was applied; the position stays
 * before it). */
struct ag_sync_item {
	struct ag_sev e;
	char host[64];
	uint64_t epoch;
	char stream_id[64];
	int result;
};
AG_API int ag_sync_apply_batch(const struct ag_conf *c, const struct ag_sink *sink,
			       struct ag_sync_item *items, size_t n, const char *pos_after);

/* The stream position (the id of the last entry read, "0" when none yet)
 * into @buf. */
AG_API int ag_sync_pos(struct ag_store *s, char *buf, size_t len);
/* Move the position on without applying anything (entries that were the
 * host's own, forged or duplicates). */
AG_API int ag_sync_set_pos(struct ag_store *s, const char *stream_id);

/* The sync daemon's state, for authguard-admin status. */
#define AG_SYNC_PEERS 32
#define AG_SYNC_STATUS_VERSION 1
struct ag_sync_peer {
	char host[64];
	int64_t last_ms;         /* when the last event from it was applied (local clock) */
	int64_t lag_ms;          /* how old it was then */
	uint64_t applied, gaps;  /* events applied; sequence numbers never seen */
	uint64_t last_seq;
};
struct ag_sync_status {
	uint32_t version;
	uint32_t connected;      /* bool */
	int64_t updated_ms;      /* when the daemon last wrote this */
	int64_t since_ms;        /* connected (or not) since */
	int64_t last_error_ms;
	char last_error[256];
	char host[64];
	uint64_t pushed, applied, rejected, dups;
	uint32_t npeers, pad;
	struct ag_sync_peer peers[AG_SYNC_PEERS];
	/* with Sentinel: the primary's address the daemon follows ("" none
	 * found yet). Added later: a record without it (an older daemon's)
	 * reads as "". */
	char primary[128];
};
/*
 * Snapshots: a host away for longer than the stream keeps cannot replay
 * what it missed. Each authguard-sync publishes now and then what its
 * store holds that matters (active bans of addresses and prefixes, locked
 * users, familiar places, run-time list entries) with its stream
 * position; a host that finds the stream trimmed past its own position
 * applies the freshest peer's snapshot (each entry raises a ban's, lock's
 * or familiarity's end to the snapshot's, never lowers it), then reads on
 * from that peer's position. Counts are not carried: the events after the
 * position are replayed and count once.
 *
 * ag_sync_snapshot_make(): at most @max entries, as [2-byte length][event]
 * into a malloc'ed buffer *@buf_r (the caller frees it).
 * ag_sync_snapshot_apply(): applies @len bytes (untrusted format, checked)
 * and sets the stream position to @stream_id, in one transaction; *@n_r:
 * entries applied. Returns 0 or AG_E* (AG_ECORRUPT: nothing applied).
 */
AG_API int ag_sync_snapshot_make(struct ag_store *s, const struct ag_conf *c, int64_t now,
				 size_t max, uint8_t **buf_r, size_t *len_r, size_t *n_r);
AG_API int ag_sync_snapshot_apply(const struct ag_conf *c, const uint8_t *buf, size_t len,
				  const char *stream_id, size_t *n_r);

AG_API int ag_sync_status_get(struct ag_txn *t, struct ag_sync_status *st_r);
AG_API int ag_sync_status_put(struct ag_store *s, const struct ag_sync_status *st);

#endif
