/*
 * addr.h - client addresses: parsing, normalisation, prefixes, CIDR lists.
 *
 * One struct holds both families. IPv4-mapped IPv6 (::ffff:a.b.c.d) is
 * turned into IPv4 where it enters, so a client is one source whatever
 * form its server reported.
 */
#ifndef AG_ADDR_H
#define AG_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ag.h"

#define AG_AF_NONE 0
#define AG_AF_INET 4
#define AG_AF_INET6 6

/* Longest input ag_addr_parse() looks at; anything longer is "no address". */
#define AG_ADDR_INPUT_MAX 255
/* Room for any formatted address or prefix, with NUL. */
#define AG_ADDR_STRLEN 48

struct ag_addr {
	uint8_t family; /* AG_AF_NONE, AG_AF_INET or AG_AF_INET6 */
	uint8_t plen;   /* prefix length: 32 or 128 for a host */
	uint8_t b[16];  /* network byte order; IPv4 uses b[0..3]; bits past plen are 0 */
};

/*
 * Parse a client address as services report it: "192.0.2.7",
 * "2001:db8::7", "::ffff:192.0.2.7", "[2001:db8::7]:993", "192.0.2.7:993",
 * "192.0.2.7;993" (SASL), "fe80::1%eth0", with surrounding blanks.
 * @s may be NULL and need not be NUL-terminated (@len bytes are read).
 * Returns 0 and fills @a_r (a host: plen 32/128), or AG_EINVAL for
 * anything else (host names, empty, garbage, too long); @a_r is then
 * set to family AG_AF_NONE.
 */
AG_API int ag_addr_parse(const char *s, size_t len, struct ag_addr *a_r);

/*
 * Parse a CIDR as written in config: "192.0.2.0/24", "2001:db8::/32", or
 * a plain address (a host). Bits past the prefix must be zero or are
 * masked off (@strict false). Returns 0 or AG_EINVAL.
 */
AG_API int ag_cidr_parse(const char *s, bool strict, struct ag_addr *a_r);

/* The network of @a with prefix length @plen (clamped to the family's
 * width). */
AG_API void ag_addr_prefix(const struct ag_addr *a, unsigned plen, struct ag_addr *r);

/* True if host or network @a lies inside network @net (same family). */
AG_API bool ag_addr_in(const struct ag_addr *net, const struct ag_addr *a);

/* Width of @a's family in bits: 32, 128, or 0. */
AG_API unsigned ag_addr_width(const struct ag_addr *a);

/* "192.0.2.7", "2001:db8::/64", or "none". Always NUL-terminates @buf
 * (which should be AG_ADDR_STRLEN bytes). */
AG_API void ag_addr_format(const struct ag_addr *a, char *buf, size_t len);

/* A list of networks (config and run-time lists). */
struct ag_cidrs {
	struct ag_addr *v;
	size_t n, cap;
};

/* Append; returns 0 or AG_ENOMEM. */
AG_API int ag_cidrs_add(struct ag_cidrs *l, const struct ag_addr *a);
/* True if @a is inside any entry. */
AG_API bool ag_cidrs_match(const struct ag_cidrs *l, const struct ag_addr *a);
/* Free the entries; @l is left empty and reusable. */
AG_API void ag_cidrs_clear(struct ag_cidrs *l);
/* Deep copy; returns 0 or AG_ENOMEM. */
AG_API int ag_cidrs_copy(struct ag_cidrs *dst, const struct ag_cidrs *src);

#endif
