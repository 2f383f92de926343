/*
 * store.h - the shared LMDB store (the only part of authguard that knows
 * LMDB).
 *
 * One environment in db_dir serves every process on the host. Each process
 * keeps one open handle per directory, reopened when getpid() changes (an
 * LMDB environment must never be used across fork()). Commits are not
 * fsync'ed one by one (MDB_NOSYNC); the store is flushed about once a
 * second host-wide (ag_store_maybe_sync), so a power loss can cost the last
 * second of counts while a crashed process costs nothing. See README.
 */
#ifndef AG_STORE_H
#define AG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ag.h"
#include "hash.h"

/*
 * The store's schema ("schema" in the meta database), which is also its
 * layout, fixed when the store is made and read once at open:
 * 1: users in their own database (AG_DB_USER), source keys as
 *    ag_src_key() makes them (family, prefix length, address).
 * 2: users' records in the sources' database under the tag 0x01 and
 *    their key, source keys (also the first 18 bytes of a pair's) stored
 *    address first (family, address, prefix length), so a net of 24 bits sits next
 *    to its hosts: fewer pages per recorded failure (bench/README.md,
 *    issue 15). Only this file knows it: callers use layout 1's keys and
 *    AG_DB_USER with both (see scan() in store.c for the order a scan of
 *    AG_DB_SRC then has). A new store gets layout 2; an older one keeps
 *    layout 1 until ag_store_upgrade(). Versions before schema 2 refuse a
 *    schema-2 store (AG_ENEWER).
 */
#define AG_SCHEMA_VERSION 2

enum ag_db { AG_DB_SRC = 0, AG_DB_USER, AG_DB_PAIR, AG_DB_LIST, AG_DB_SLOT, AG_DB_META,
	      AG_DB_PW, /* hot passwords (struct ag_pw_rec) */
	      /* LMDB's unnamed database, whose keys name the others: every
	       * write transaction rewrites its page anyway, so a small record
	       * written by most of them costs no page of its own there (the
	       * wave state, the fleet's outbox). Keys start with a NUL (a
	       * database name never has one, so mdb_dbi_open() never meets
	       * them); only the outbox's own prefix is scanned. */
	      AG_DB_MAIN,
	      AG_DB_COUNT };

struct ag_store;
struct ag_txn;

/*
 * The process's handle on the store in @dir, opening (and creating, with
 * mode 0700 for a new directory) on first use. Thread-safe.
 * Errors: AG_EUNSAFE (a symlink, not a directory, writable by others,
 * owned by another non-root user, or below a directory everyone may write
 * without the sticky bit), AG_EIO (cannot create or open),
 * AG_ENEWER (schema newer than this build), AG_ECORRUPT (not an LMDB
 * store, or its meta records are damaged), AG_ESTORE, AG_ENOMEM.
 */
AG_API int ag_store_get(const char *dir, struct ag_store **s_r);

/* The install secret (made at random when the store was created). */
AG_API const uint8_t *ag_store_secret(const struct ag_store *s);

/* Begin a transaction. Errors: AG_ESTORE, AG_ENOMEM. A read-only one is
 * renewed from the few this process ended last (kept reset, each holding
 * an idle reader slot): no reader mutex, no slot search, no malloc. Its
 * snapshot is as fresh as a new one's. */
AG_API int ag_txn_begin(struct ag_store *s, bool write, struct ag_txn **t_r);
/* Commit (and free) @t. Errors: AG_EFULL (map full), AG_ESTORE. The
 * transaction is gone whatever the result. */
AG_API int ag_txn_commit(struct ag_txn *t);
/* Abort (and free) @t; NULL is fine. */
AG_API void ag_txn_abort(struct ag_txn *t);
/* LMDB's id of @t: for a read, the last write committed when it began
 * (the snapshot it sees); for a write, one more than that. So a write
 * whose id is a read's plus one sees what the read saw: nothing was
 * committed in between, by any process. */
AG_API uint64_t ag_txn_id(const struct ag_txn *t);

/* Look up @key. On success *val_r points into the map, valid until the
 * transaction ends. Errors: AG_ENOTFOUND, AG_EINVAL (bad key), AG_ESTORE. */
AG_API int ag_txn_get(struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
		      const void **val_r, size_t *vlen_r);
/* Errors: AG_EFULL (the transaction must then be aborted), AG_EINVAL, AG_ESTORE. */
AG_API int ag_txn_put(struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
		      const void *val, size_t vlen);
/* Errors: AG_ENOTFOUND, AG_ESTORE. */
AG_API int ag_txn_del(struct ag_txn *t, enum ag_db db, const void *key, size_t klen);

/* How many entries @db holds in @t's snapshot (no cursor, no descent:
 * LMDB keeps the count with the database). Errors: AG_ESTORE. */
AG_API int ag_txn_entries(struct ag_txn *t, enum ag_db db, uint64_t *n_r);

enum ag_scan_op { AG_SCAN_NEXT = 0, AG_SCAN_STOP = 1, AG_SCAN_DELETE = 2 };
typedef enum ag_scan_op ag_scan_fn(void *ctx, const void *key, size_t klen, const void *val,
				   size_t vlen);
/* Visit every entry of @db whose key starts with @prefix (may be empty) in
 * key order. The callback may ask to delete the entry (write transactions
 * only). Returns 0 or AG_ESTORE. */
AG_API int ag_txn_scan(struct ag_txn *t, enum ag_db db, const void *prefix, size_t plen,
		       ag_scan_fn *fn, void *ctx);

/* Visit every entry of @db from the first key >= @start (from the first
 * key if @slen is 0), in key order, as ag_txn_scan() does. For work done
 * in batches over several transactions. */
AG_API int ag_txn_scan_from(struct ag_txn *t, enum ag_db db, const void *start, size_t slen,
			    ag_scan_fn *fn, void *ctx);

/* Double the map, up to @max_bytes. Returns 0, or AG_EFULL when the map is
 * already that large, or AG_ENOMEM when the address space is not there
 * (raise the host's limit, e.g. Dovecot's vsz_limit). No transaction of
 * this process may be open in the calling thread. */
AG_API int ag_store_grow(struct ag_store *s, int64_t max_bytes);

/* Bytes held by the databases (pages freed by deletes are reused, so this
 * is what the data needs, not the file's high-water mark) and the current
 * map size. Opens a short read transaction. */
AG_API int ag_store_usage(struct ag_store *s, uint64_t *used_r, uint64_t *map_r);

/* The durability bound: a power loss or an OS crash loses at most about
 * this much of what was committed (see README, "Durability"). */
#define AG_SYNC_MS 1000

/* After a commit: flush to disk if no process on the host has flushed the
 * store for AG_SYNC_MS. With authguard-admin flush --every running (it
 * flushes twice as often), this never flushes: no attempt waits for the
 * disk. */
AG_API void ag_store_maybe_sync(struct ag_store *s);

/* Flush now (data.mdb and the counter file), for the syncer. */
AG_API void ag_store_sync(struct ag_store *s);

/* The layout of the open store (1 or 2, AG_SCHEMA_VERSION). */
AG_API uint32_t ag_store_layout(const struct ag_store *s);

/* The schema of stores this process creates from now on (1 makes one as
 * older versions did: tests); anything else restores AG_SCHEMA_VERSION. */
AG_API void ag_store_new_schema(uint32_t schema);

/* Each process other than this one that has the store open (it maps
 * data.mdb, or holds LMDB's lock on lock.mdb): its pid and command name
 * ("?" when unknown). Returns how many. */
typedef void ag_holder_fn(void *ctx, long pid, const char *comm);
AG_API int ag_store_holders(struct ag_store *s, ag_holder_fn *fn, void *ctx);

/* Rewrite a layout-1 store into layout 2 in one write transaction (the
 * map grown up to @max_bytes if it needs room for the second copy it
 * makes), then copy it compacted in place of data.mdb (the old layout's
 * pages left out) if no other process has opened it meanwhile: *sp is
 * then a new handle (the old one is gone). Nothing to do for a layout-2
 * store (0, counts 0). AG_EBUSY: other processes have the store open
 * (each named to @fn; they would go on in layout 1): nothing was changed.
 * No transaction of this process may be open on it. */
struct ag_upgrade {
	uint64_t srcs, users;   /* source and pair records rekeyed, users moved */
	bool compacted;         /* else compact_rc and compact_detail say why not */
	int compact_rc;
	char compact_detail[256];
	uint64_t bytes_before, bytes_after; /* data.mdb after the rewrite, after all */
};
AG_API int ag_store_upgrade(struct ag_store **sp, int64_t max_bytes, ag_holder_fn *fn, void *ctx,
			    struct ag_upgrade *u);

struct ag_store_info {
	uint64_t map_size, used_bytes, file_bytes;
	uint64_t entries[AG_DB_COUNT];
	/* LMDB reader slots (AG_MAX_READERS = max_readers): held now by live
	 * processes (a read under way, or an idle one kept for the next
	 * read), of them in a read now, held by processes that are gone
	 * (their slots are taken back by the next stale-reader check), this
	 * process's own (kept idle ones too); and the most ever in use at once
	 * since the lock file was made (LMDB's me_numreaders: it never
	 * goes down) */
	unsigned readers, readers_busy, readers_stale, own_readers;
	unsigned readers_peak, max_readers;
	uint32_t schema, layout; /* entries: users and sources apart in both layouts */
	char path[1024];
	uint64_t last_txnid; /* of the last committed write transaction */
};
/* Sizes and counts, for authguard-admin status. */
AG_API int ag_store_info(struct ag_store *s, struct ag_store_info *info_r);

/* LMDB's text for the last store error in this thread ("" if none). */
AG_API const char *ag_store_detail(void);

/* Drop this process's cached handles (tests; never needed in services). */
AG_API void ag_store_forget_all(void);

#endif
