/*
 * fuzz.h - shared helpers for the libFuzzer harnesses in fuzz/.
 *
 * An invariant that does not hold is a bug: CHECK() names it on stderr and
 * aborts, so libFuzzer keeps the input as a crash artefact.
 */
#ifndef AG_FUZZ_H
#define AG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                            \
	do {                                                                        \
		if (!(cond)) {                                                      \
			fprintf(stderr, "\n%s:%d: invariant failed: %s\n  ", __FILE__, \
				__LINE__, #cond);                                   \
			fprintf(stderr, __VA_ARGS__);                               \
			fputc('\n', stderr);                                        \
			abort();                                                    \
		}                                                                   \
	} while (0)

/* The libFuzzer entry point (no header declares it). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated heap copy of @size bytes at @data (the copy ends at the
 * first NUL of the input, as a C string would). Never NULL. */
static inline char *fuzz_strdup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	for (size_t i = 0; i < size; i++)
		s[i] = (char)data[i];
	s[size] = '\0';
	return s;
}

/* An exact-size heap copy (so AddressSanitizer sees any read past @size). */
static inline char *fuzz_memdup(const void *data, size_t size)
{
	char *s = malloc(size > 0 ? size : 1);

	if (s == NULL)
		abort();
	for (size_t i = 0; i < size; i++)
		s[i] = ((const char *)data)[i];
	return s;
}

#endif
