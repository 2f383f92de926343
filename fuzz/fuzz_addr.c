/*
 * fuzz_addr.c - libFuzzer harness for the address parser (store/addr.c).
 *
 * The input is a client address as a service might report it (any bytes).
 * Checked:
 *  - ag_addr_parse() reads at most @len bytes: the same bytes followed by
 *    different trailing text give the same result;
 *  - on failure the result is family AG_AF_NONE; on success it is a host
 *    (plen = width), never an IPv4-mapped IPv6 address, and it formats to
 *    text that parses back (as an address and as a CIDR) to the same struct;
 *  - ag_addr_format() always NUL-terminates and never writes past its
 *    buffer, whatever the size; a short buffer holds a prefix of the text;
 *  - ag_addr_prefix() clamps plen to the width and the host's plen, clears
 *    the bits past it, keeps those before it, and contains the host;
 *  - ag_cidr_parse() (strict and not) on a NUL-terminated copy: family
 *    AG_AF_NONE on failure, a well-formed network on success, strict never
 *    accepts what non-strict rejects, the network formats and parses back;
 *    a plain address accepted as a CIDR is the same host ag_addr_parse()
 *    sees, so a config entry matches what a service reports.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "addr.h"
#include "fuzz.h"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool bit_set(const struct ag_addr *a, unsigned bit)
{
	return (a->b[bit / 8] & (0x80u >> (bit % 8))) != 0;
}

/* Family, plen within width, every bit past plen clear. */
static void check_wellformed(const struct ag_addr *a, const char *what)
{
	unsigned width = ag_addr_width(a);

	CHECK(a->family == AG_AF_INET || a->family == AG_AF_INET6, "%s: family %u", what,
	      a->family);
	CHECK(a->plen <= width, "%s: plen %u > width %u", what, a->plen, width);
	for (unsigned bit = a->plen; bit < 128; bit++)
		CHECK(!bit_set(a, bit), "%s: bit %u set past plen %u", what, bit, a->plen);
	if (a->family == AG_AF_INET6 && a->plen >= 96)
		CHECK(memcmp(a->b, v4mapped, sizeof(v4mapped)) != 0,
		      "%s: IPv4-mapped address kept as IPv6", what);
}

static bool addr_eq(const struct ag_addr *x, const struct ag_addr *y)
{
	return memcmp(x, y, sizeof(*x)) == 0;
}

/* Format @a; check the text, that short buffers get a NUL-terminated
 * prefix and nothing past their end, and that the text parses back. */
static void check_format(const struct ag_addr *a, const char *what)
{
	char full[AG_ADDR_STRLEN + 8];
	static const size_t sizes[] = { 1, 2, 5, 8, 16, 40, AG_ADDR_STRLEN - 1 };

	memset(full, 0x5a, sizeof(full));
	ag_addr_format(a, full, AG_ADDR_STRLEN);
	for (size_t i = AG_ADDR_STRLEN; i < sizeof(full); i++)
		CHECK((uint8_t)full[i] == 0x5a, "%s: format wrote past its buffer", what);
	size_t n = strnlen(full, AG_ADDR_STRLEN);
	CHECK(n < AG_ADDR_STRLEN, "%s: format left no NUL", what);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = sizes[i];
		char *small = malloc(len); /* exact size: ASan sees an overrun */
		CHECK(small != NULL, "out of memory");
		memset(small, 0x5a, len);
		ag_addr_format(a, small, len);
		size_t m = strnlen(small, len);
		CHECK(m < len, "%s: format into %zu bytes left no NUL", what, len);
		CHECK(m == (n < len - 1 ? n : len - 1) && memcmp(small, full, m) == 0,
		      "%s: format into %zu bytes gave '%s', not a prefix of '%s'", what, len,
		      small, full);
		free(small);
	}
	ag_addr_format(a, full, 0); /* must not touch anything */

	if (a->family == AG_AF_NONE) {
		CHECK(strcmp(full, "none") == 0, "%s: no address formats as '%s'", what, full);
		return;
	}
	CHECK(strcmp(full, "none") != 0, "%s: an address formats as 'none'", what);
	CHECK(strspn(full, "0123456789abcdef:./") == n, "%s: odd character in '%s'", what, full);

	struct ag_addr back;
	int rc = ag_cidr_parse(full, true, &back);
	CHECK(rc == 0 && addr_eq(&back, a), "%s: '%s' does not parse back as a CIDR (rc %d)",
	      what, full, rc);
	if (a->plen == ag_addr_width(a)) {
		rc = ag_addr_parse(full, n, &back);
		CHECK(rc == 0 && addr_eq(&back, a),
		      "%s: '%s' does not parse back as an address (rc %d)", what, full, rc);
	}
}

static void check_prefixes(const struct ag_addr *a, const char *what)
{
	static const unsigned plens[] = { 0, 1, 7, 8, 9, 16, 23, 24, 31, 32, 33,
					  48, 63, 64, 65, 96, 120, 127, 128, 129, 255, 4096 };
	unsigned width = ag_addr_width(a);

	for (size_t i = 0; i < sizeof(plens) / sizeof(plens[0]); i++) {
		unsigned want = plens[i];
		struct ag_addr r;
		if (want > width)
			want = width;
		if (want > a->plen)
			want = a->plen;
		memset(&r, 0xee, sizeof(r));
		ag_addr_prefix(a, plens[i], &r);
		CHECK(r.family == a->family, "%s /%u: family %u", what, plens[i], r.family);
		CHECK(r.plen == want, "%s /%u: plen %u, want %u", what, plens[i], r.plen, want);
		for (unsigned bit = 0; bit < 128; bit++)
			CHECK(bit_set(&r, bit) == (bit < want && bit_set(a, bit)),
			      "%s /%u: bit %u wrong", what, plens[i], bit);
		if (a->family == AG_AF_NONE)
			continue;
		check_wellformed(&r, what);
		CHECK(ag_addr_in(&r, a), "%s /%u: the host is not in its own prefix", what, plens[i]);
		CHECK(ag_addr_in(a, &r) == (r.plen == a->plen),
		      "%s /%u: wrong containment of the prefix in the host", what, plens[i]);
		check_format(&r, what);
	}
}

/* Trailing text that would change the result if the parser read it. */
static void check_bounded(const uint8_t *data, size_t size, const struct ag_addr *a, int rc)
{
	static const char *tails[] = { "0", "1]:1", ":99", ";1", "%e", "::1", " ", "\0" };

	for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		size_t tlen = tails[i][0] != '\0' ? strlen(tails[i]) : 1;
		char *buf = malloc(size + tlen);
		struct ag_addr b;
		CHECK(buf != NULL, "out of memory");
		if (size > 0)
			memcpy(buf, data, size);
		memcpy(buf + size, tails[i], tlen);
		int rc2 = ag_addr_parse(buf, size, &b);
		CHECK(rc2 == rc && addr_eq(&b, a),
		      "ag_addr_parse read past len: trailing '%s' changed the result", tails[i]);
		free(buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ag_addr a;

	/* the runtime parser, on exactly the input bytes */
	memset(&a, 0xee, sizeof(a));
	int rc = ag_addr_parse((const char *)data, size, &a);
	if (rc != 0) {
		CHECK(rc == AG_EINVAL, "ag_addr_parse returned %d", rc);
		CHECK(a.family == AG_AF_NONE, "failed parse left family %u", a.family);
	} else {
		check_wellformed(&a, "parsed address");
		CHECK(a.plen == ag_addr_width(&a), "parsed host has plen %u", a.plen);
	}
	check_bounded(data, size, &a, rc);
	check_format(&a, "parsed address");
	check_prefixes(&a, "parsed address");

	/* the config parser, on a C string */
	char *s = fuzz_strdup(data, size);
	struct ag_addr cs, cl;
	memset(&cs, 0xee, sizeof(cs));
	memset(&cl, 0xee, sizeof(cl));
	int rs = ag_cidr_parse(s, true, &cs);
	int rl = ag_cidr_parse(s, false, &cl);
	if (rs != 0)
		CHECK(cs.family == AG_AF_NONE, "failed strict CIDR left family %u", cs.family);
	if (rl != 0)
		CHECK(cl.family == AG_AF_NONE, "failed CIDR left family %u", cl.family);
	if (rs == 0) {
		CHECK(rl == 0 && addr_eq(&cs, &cl), "strict CIDR accepted what non-strict did not");
		check_wellformed(&cs, "strict CIDR");
	}
	if (rl == 0) {
		check_wellformed(&cl, "CIDR");
		check_format(&cl, "CIDR");
		check_prefixes(&cl, "CIDR");
		CHECK(ag_addr_in(&cl, &cl), "a network is not inside itself");
		size_t slen = strlen(s);
		if (strchr(s, '/') == NULL && slen <= AG_ADDR_INPUT_MAX) {
			struct ag_addr h;
			int rh = ag_addr_parse(s, slen, &h);
			CHECK(rh == 0 && addr_eq(&h, &cl),
			      "'%s' is a host in config but not as a reported address (rc %d)", s, rh);
		}

		/* a one-entry list answers as ag_addr_in() does */
		struct ag_cidrs l = { 0 }, l2;
		CHECK(ag_cidrs_add(&l, &cl) == 0, "out of memory");
		CHECK(ag_cidrs_match(&l, &a) == ag_addr_in(&cl, &a), "list match differs");
		CHECK(ag_cidrs_copy(&l2, &l) == 0, "out of memory");
		CHECK(l2.n == 1 && addr_eq(&l2.v[0], &cl), "list copy differs");
		ag_cidrs_clear(&l);
		ag_cidrs_clear(&l2);
		CHECK(l.n == 0 && l.v == NULL, "cleared list not empty");
	}
	free(s);

	/* NULL is "no address" */
	rc = ag_addr_parse(NULL, size, &a);
	CHECK(rc == AG_EINVAL && a.family == AG_AF_NONE, "NULL input parsed");
	return 0;
}
