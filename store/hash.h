/* hash.h - SipHash-2-4, keyed (written from the Aumasson-Bernstein paper). */
#ifndef AG_HASH_H
#define AG_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "ag.h"

#define AG_SECRET_LEN 16

/* 64-bit SipHash-2-4 of @len bytes at @data under the 16-byte @key. */
AG_API uint64_t ag_siphash(const uint8_t key[AG_SECRET_LEN], const void *data, size_t len);

#endif
