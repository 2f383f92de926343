/*
 * counters.h - counts that need no LMDB write: a small file beside the
 * store (db_dir/counters.ag), mapped shared by every process that opens
 * the store and updated with C11 atomics, so counting takes no writer
 * lock and dirties no LMDB page.
 *
 * It holds the host-wide counters (what authguard-admin stats shows),
 * the refusals of each source and user record (n_refused, and the time of
 * the last one): a refusal by the read-only pass of a check writes here
 * and nowhere else, and a user's failures that were not written to its
 * record (ag_count_fail()). What a reader shows is the record's own count (LMDB,
 * written by older versions and by refusals made in a write transaction)
 * plus this file's.
 *
 * What can be lost: nothing when a process dies (the counts are in the
 * shared mapping the moment they are made); the host-wide counts of one
 * attempt when a process dies between its commit and the next
 * instruction (they are added right after the commit, so a rolled-back
 * attempt is never counted), and so the user's failure that
 * ag_count_fail() would add then (display and the record's age only: the
 * rules never count these failures); after an OS crash, what the last flush did
 * not reach disk (ag_store_sync() flushes this file with the store).
 * Per-record refusal counts are kept for at most AG_COUNTERS_SLOTS
 * records at a time: once the table is full near a record's place, its
 * refusals count host-wide only (the "unattributed" counter says how
 * many). A record dropped by the clean-up or authguard-admin forget takes
 * its counts with it, as before; an older module's clean-up or forget
 * does not know of the user failures here, and a user that comes back
 * under the same name then shows them (display only).
 *
 * The file is checked like lock.mdb and data.mdb (store.c: no symlink,
 * a regular file with one link, not writable by others, group-writable
 * in a shared directory) and its size and header before it is mapped. Its
 * contents are only ever counts: a damaged file gives wrong numbers,
 * never a wrong verdict.
 */
#ifndef AG_COUNTERS_H
#define AG_COUNTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ag.h"
#include "record.h"
#include "store.h"

#define AG_COUNTERS_NAME "counters.ag"
#define AG_COUNTERS_SLOTS 65536

struct ag_counters;

/* Map the counter file open on @fd (creating its layout if it is empty).
 * Errors: AG_ECORRUPT (another layout or a damaged header), AG_EIO,
 * AG_ENOMEM. */
AG_API int ag_counters_map(int fd, struct ag_counters **cn_r);
AG_API void ag_counters_unmap(struct ag_counters *cn);
/* Flush the file to disk (msync). */
AG_API void ag_counters_sync(struct ag_counters *cn);

/* The store's counters, or NULL when the file could not be used: then
 * ag_store_counters_error() says why (AG_EPERM: this process may not
 * create it; AG_ECORRUPT: another layout) and the guard counts in LMDB as
 * before the file existed; every ag_count*() function is then a no-op. */
AG_API struct ag_counters *ag_store_counters(struct ag_store *s);
AG_API int ag_store_counters_error(struct ag_store *s);
/* The store a transaction belongs to. */
AG_API struct ag_store *ag_txn_store(struct ag_txn *t);

/* Add @d to the host-wide counters (its created field is ignored). */
AG_API void ag_count_stats(struct ag_store *s, const struct ag_stats *d);
/* Add the host-wide counters to @st. */
AG_API void ag_counted_stats(struct ag_store *s, struct ag_stats *st);

/* Refusals that found no slot (the table full near their record's
 * place): in the host-wide count, in no record's. */
AG_API uint64_t ag_counted_unattributed(struct ag_store *s);

/* One refusal of the record under @key in @db (AG_DB_SRC or AG_DB_USER)
 * at @now (host-wide counts are the caller's: ag_count_stats()). */
AG_API void ag_count_refusal(struct ag_store *s, enum ag_db db, const void *key, size_t klen,
			     int64_t now);
/* Add the refusals counted here to @n_refused and move @last_seen up to
 * the last one. */
AG_API void ag_counted_refusals(struct ag_store *s, enum ag_db db, const void *key, size_t klen,
				uint64_t *n_refused, int64_t *last_seen);
/* Failures of the user record under @ukey that were not written to it
 * (issue 15): a failure from a place familiar to the user, or with the
 * password that last failed there, changes nothing a rule reads in the
 * user's record (its failure counts leave such failures out), only its
 * n_fail and last_seen, so the guard counts it here instead of writing
 * the record (the pages of the users' tree). ag_count_fail_claim() takes
 * the record's slot before the commit (false: none free near its place;
 * the record is written then), ag_count_fail() counts after it (as the
 * host-wide counters, so a rolled-back attempt is never counted), and
 * readers add ag_counted_fails() to the record's own n_fail and
 * last_seen. Older versions neither look at nor clear these slots. */
AG_API bool ag_count_fail_claim(struct ag_store *s, const void *ukey, size_t ulen);
AG_API void ag_count_fail(struct ag_store *s, const void *ukey, size_t ulen, int64_t now);
AG_API void ag_counted_fails(struct ag_store *s, const void *ukey, size_t ulen, uint64_t *n_fail,
			     int64_t *last_seen);
/* The record is gone: forget its counts (for a user, its failures here too). */
AG_API void ag_count_forget(struct ag_store *s, enum ag_db db, const void *key, size_t klen);

/* Host-wide time of the last flush of the store (ms), shared by every
 * process; ag_counters_sync_claim() moves it to @now if it was before
 * @before and says whether this caller won. */
AG_API int64_t ag_counters_last_sync(struct ag_store *s);
AG_API bool ag_counters_sync_claim(struct ag_store *s, int64_t seen, int64_t now);

#endif
