/* counters.c - the shared counter file beside the store (see counters.h). */
#include "config.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "counters.h"
#include "hash.h"

#define CN_MAGIC UINT64_C(0x31746e6364677561) /* "augdcnt1" */
#define CN_VERSION 1
#define CN_HEADER 4096
/* Slots looked at for one record: a record's counts are in the first
 * CN_PROBE slots from its hash, at most (more than one only when two
 * processes claimed a slot for it at once, or a hole left by a forgotten
 * record was filled: readers add them all up). */
#define CN_PROBE 16
#define CN_COUNT_MAX UINT32_MAX

enum cn_stat {
	CN_ATTEMPTS, CN_FAILURES, CN_SUCCESSES, CN_REFUSED, CN_TARPITTED, CN_DELAY_MS, CN_BANS,
	CN_LOCKS, CN_FAULTS, CN_UNATTRIBUTED, CN_STATS
};

struct cn_header {
	_Atomic uint64_t magic; /* 0 in a new file, until its first user sets it */
	uint32_t version, slots;
	_Atomic uint64_t stat[CN_STATS];
	_Atomic int64_t last_sync_ms;
};

/* A record's refusals: the high 32 bits of @word are a keyed hash of the
 * record's key (never 0: 0 is a free slot), the low 32 bits the count, so
 * claiming, counting and freeing a slot are each one compare-and-swap. */
struct cn_slot {
	_Atomic uint64_t word;
	_Atomic int64_t last_ms;
};

struct ag_counters {
	struct cn_header *h;
	struct cn_slot *slot;
	size_t len;
};

_Static_assert(sizeof(struct cn_header) <= CN_HEADER, "header fits its page");
_Static_assert(sizeof(struct cn_slot) == 16, "slot layout");

static const size_t file_len = CN_HEADER + (size_t)AG_COUNTERS_SLOTS * sizeof(struct cn_slot);

int ag_counters_map(int fd, struct ag_counters **cn_r)
{
	struct stat st;
	struct ag_counters *cn;

	*cn_r = NULL;
	if (fstat(fd, &st) != 0)
		return AG_EIO;
	/* a new file (or one a crash left short) is made full size: the
	 * extension reads as zeros, a valid empty table */
	if ((size_t)st.st_size < file_len && ftruncate(fd, (off_t)file_len) != 0)
		return AG_EIO;
	if (fstat(fd, &st) != 0 || (size_t)st.st_size != file_len)
		return AG_ECORRUPT;
	/* ftruncate() leaves a hole: a store on a full disk would then give
	 * SIGBUS at the first refusal that touches a page never written,
	 * killing the host daemon. Every page is given its blocks first (a
	 * no-op once they are); without them, the counts stay in LMDB. */
	if (posix_fallocate(fd, 0, (off_t)file_len) != 0)
		return AG_EIO;
	void *m = mmap(NULL, file_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return AG_ENOMEM;
	struct cn_header *h = m;
	uint64_t magic = atomic_load(&h->magic);
	if (magic == 0) {
		/* the layout is fixed by the version: whoever comes first
		 * writes the same header, the magic last */
		h->version = CN_VERSION;
		h->slots = AG_COUNTERS_SLOTS;
		uint64_t zero = 0;
		(void)atomic_compare_exchange_strong(&h->magic, &zero, CN_MAGIC);
		magic = atomic_load(&h->magic);
	}
	if (magic != CN_MAGIC || h->version != CN_VERSION || h->slots != AG_COUNTERS_SLOTS) {
		munmap(m, file_len);
		return AG_ECORRUPT;
	}
	cn = malloc(sizeof(*cn));
	if (cn == NULL) {
		munmap(m, file_len);
		return AG_ENOMEM;
	}
	cn->h = h;
	cn->slot = (struct cn_slot *)((uint8_t *)m + CN_HEADER);
	cn->len = file_len;
	*cn_r = cn;
	return 0;
}

void ag_counters_unmap(struct ag_counters *cn)
{
	if (cn == NULL)
		return;
	munmap(cn->h, cn->len);
	free(cn);
}

void ag_counters_sync(struct ag_counters *cn)
{
	(void)msync(cn->h, cn->len, MS_SYNC);
}

void ag_count_stats(struct ag_store *s, const struct ag_stats *d)
{
	if (ag_store_counters(s) == NULL)
		return;
	struct cn_header *h = ag_store_counters(s)->h;
	const uint64_t v[] = { d->attempts, d->failures, d->successes, d->refused, d->tarpitted,
			       d->delay_ms, d->bans, d->locks, d->faults };

	for (size_t i = 0; i < AG_ARRAY_LEN(v); i++)
		if (v[i] != 0)
			atomic_fetch_add_explicit(&h->stat[i], v[i], memory_order_relaxed);
}

void ag_counted_stats(struct ag_store *s, struct ag_stats *st)
{
	if (ag_store_counters(s) == NULL)
		return;
	struct cn_header *h = ag_store_counters(s)->h;
	uint64_t *f[] = { &st->attempts, &st->failures, &st->successes, &st->refused, &st->tarpitted,
			  &st->delay_ms, &st->bans, &st->locks, &st->faults };

	for (size_t i = 0; i < AG_ARRAY_LEN(f); i++)
		*f[i] += atomic_load_explicit(&h->stat[i], memory_order_relaxed);
}

/* What a slot counts: a record's refusals (the kind is its database,
 * as ever), or a user record's failures not written to it (the user
 * database's number with this bit: slots older versions never look at). */
#define CN_FAILS 0x80

/* The record's hash: the tag (high half, never 0) and its first slot. */
static uint64_t rec_hash(struct ag_store *s, unsigned kind, const void *key, size_t klen)
{
	uint8_t buf[1 + 512];

	if (klen > 511)
		klen = 511;
	buf[0] = (uint8_t)kind;
	memcpy(buf + 1, key, klen);
	uint64_t h = ag_siphash(ag_store_secret(s), buf, klen + 1);
	return (h >> 32) != 0 ? h : h | (UINT64_C(1) << 32);
}

#define TAG(w) ((w) >> 32)

/* Add @add to the record's slot of @kind, claiming a free one (with
 * @add 0: claimed, counting nothing yet). False when there was none to
 * claim near its place. */
static bool slot_add(struct ag_store *s, unsigned kind, const void *key, size_t klen, int64_t now,
		     uint32_t add)
{
	struct ag_counters *cn = ag_store_counters(s);
	uint64_t h = rec_hash(s, kind, key, klen), tag = TAG(h);
	size_t first = (size_t)h & (AG_COUNTERS_SLOTS - 1);

	for (int round = 0; round < 4; round++) {
		struct cn_slot *free_slot = NULL;
		for (size_t i = 0; i < CN_PROBE; i++) {
			struct cn_slot *sl = &cn->slot[(first + i) & (AG_COUNTERS_SLOTS - 1)];
			uint64_t w = atomic_load_explicit(&sl->word, memory_order_relaxed);
			if (w == 0) {
				if (free_slot == NULL)
					free_slot = sl;
				continue;
			}
			if (TAG(w) != tag)
				continue;
			/* ours: count, unless freed or saturated meanwhile */
			while (TAG(w) == tag && (uint32_t)w <= CN_COUNT_MAX - add) {
				if (atomic_compare_exchange_weak(&sl->word, &w, w + add)) {
					if (add > 0)
						atomic_store_explicit(&sl->last_ms, now,
								      memory_order_relaxed);
					return true;
				}
			}
			if (TAG(w) == tag)
				return true; /* 4G counts of one record: it stays there */
		}
		if (free_slot == NULL)
			break;
		uint64_t zero = 0;
		if (atomic_compare_exchange_strong(&free_slot->word, &zero, (tag << 32) | add)) {
			/* (a claim, add 0: no time yet; the slot's last
			 * occupant's is not this record's) */
			atomic_store_explicit(&free_slot->last_ms, add > 0 ? now : 0,
					      memory_order_relaxed);
			return true;
		}
		/* another process took that slot (perhaps for this record): again */
	}
	return false;
}

void ag_count_refusal(struct ag_store *s, enum ag_db db, const void *key, size_t klen, int64_t now)
{
	struct ag_counters *cn = ag_store_counters(s);
	if (cn == NULL)
		return;
	if (!slot_add(s, (unsigned)db, key, klen, now, 1))
		atomic_fetch_add_explicit(&cn->h->stat[CN_UNATTRIBUTED], 1, memory_order_relaxed);
}

bool ag_count_fail_claim(struct ag_store *s, const void *ukey, size_t ulen)
{
	return ag_store_counters(s) != NULL && slot_add(s, CN_FAILS | AG_DB_USER, ukey, ulen, 0, 0);
}

void ag_count_fail(struct ag_store *s, const void *ukey, size_t ulen, int64_t now)
{
	if (ag_store_counters(s) != NULL)
		(void)slot_add(s, CN_FAILS | AG_DB_USER, ukey, ulen, now, 1);
}

/* Add up the record's slots of @kind. */
static void slot_sum(struct ag_store *s, unsigned kind, const void *key, size_t klen,
		     uint64_t *n_r, int64_t *last_r)
{
	struct ag_counters *cn = ag_store_counters(s);
	if (cn == NULL)
		return;
	uint64_t h = rec_hash(s, kind, key, klen), tag = TAG(h);
	size_t first = (size_t)h & (AG_COUNTERS_SLOTS - 1);

	for (size_t i = 0; i < CN_PROBE; i++) {
		struct cn_slot *sl = &cn->slot[(first + i) & (AG_COUNTERS_SLOTS - 1)];
		uint64_t w = atomic_load_explicit(&sl->word, memory_order_relaxed);
		if (w == 0 || TAG(w) != tag)
			continue;
		*n_r += (uint32_t)w;
		if ((uint32_t)w == 0)
			continue; /* claimed, nothing counted yet: its time is not ours */
		int64_t last = atomic_load_explicit(&sl->last_ms, memory_order_relaxed);
		if (last > *last_r)
			*last_r = last;
	}
}

void ag_counted_refusals(struct ag_store *s, enum ag_db db, const void *key, size_t klen,
			 uint64_t *n_refused, int64_t *last_seen)
{
	slot_sum(s, (unsigned)db, key, klen, n_refused, last_seen);
}

void ag_counted_fails(struct ag_store *s, const void *ukey, size_t ulen, uint64_t *n_fail,
		      int64_t *last_seen)
{
	slot_sum(s, CN_FAILS | AG_DB_USER, ukey, ulen, n_fail, last_seen);
}

static void slot_forget(struct ag_store *s, unsigned kind, const void *key, size_t klen)
{
	struct ag_counters *cn = ag_store_counters(s);
	uint64_t h = rec_hash(s, kind, key, klen), tag = TAG(h);
	size_t first = (size_t)h & (AG_COUNTERS_SLOTS - 1);

	for (size_t i = 0; i < CN_PROBE; i++) {
		struct cn_slot *sl = &cn->slot[(first + i) & (AG_COUNTERS_SLOTS - 1)];
		uint64_t w = atomic_load_explicit(&sl->word, memory_order_relaxed);
		while (w != 0 && TAG(w) == tag && !atomic_compare_exchange_weak(&sl->word, &w, 0))
			;
	}
}

void ag_count_forget(struct ag_store *s, enum ag_db db, const void *key, size_t klen)
{
	if (ag_store_counters(s) == NULL)
		return;
	slot_forget(s, (unsigned)db, key, klen);
	if (db == AG_DB_USER)
		slot_forget(s, CN_FAILS | AG_DB_USER, key, klen);
}

uint64_t ag_counted_unattributed(struct ag_store *s)
{
	if (ag_store_counters(s) == NULL)
		return 0;
	return atomic_load_explicit(&ag_store_counters(s)->h->stat[CN_UNATTRIBUTED],
				    memory_order_relaxed);
}

int64_t ag_counters_last_sync(struct ag_store *s)
{
	return atomic_load_explicit(&ag_store_counters(s)->h->last_sync_ms, memory_order_relaxed);
}

bool ag_counters_sync_claim(struct ag_store *s, int64_t seen, int64_t now)
{
	return atomic_compare_exchange_strong(&ag_store_counters(s)->h->last_sync_ms, &seen, now);
}
