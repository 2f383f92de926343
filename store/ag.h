/*
 * ag.h - authguard core: error codes and small shared definitions.
 *
 * Every core function returns int: 0 on success or a negative AG_E* code.
 * ag_strerror() names every code.
 */
#ifndef AG_H
#define AG_H

#include <stddef.h>
#include <stdint.h>

#define AG_API __attribute__((visibility("hidden")))

enum ag_err {
	AG_OK = 0,
	AG_ENOMEM = -1,    /* out of memory */
	AG_EINVAL = -2,    /* invalid argument or input */
	AG_ERANGE = -3,    /* value out of range */
	AG_EIO = -4,       /* I/O error (see errno at the time) */
	AG_ENOTFOUND = -5, /* no such record or entry */
	AG_ESTORE = -6,    /* the store failed (LMDB error) */
	AG_ECORRUPT = -7,  /* the store holds data this version cannot read */
	AG_ENEWER = -8,    /* the store was written by a newer schema */
	AG_EFULL = -9,     /* the store is full even after eviction */
	AG_EPERM = -10,    /* permission or ownership check failed */
	AG_ECONF = -11,    /* configuration error (details were reported) */
	AG_EUNSAFE = -12,  /* refused for safety (symlink, foreign owner) */
	AG_EBUSY = -13,    /* other processes have the store open */
};

/* Text for an AG_E* code; never NULL. */
AG_API const char *ag_strerror(int err);

/* Milliseconds since the epoch, from CLOCK_REALTIME (the store is shared
 * between processes, so a wall clock is needed; policy tolerates steps). */
AG_API int64_t ag_now_ms(void);

#define AG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Big-endian 64-bit integers in bytes: the store's keys (they sort by
 * it) and the fleet's events (any host's byte order). */
static inline void ag_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline uint64_t ag_get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

#endif
