/* test_record.c - SipHash-2-4, record validation, store keys and decaying
 * scores (store/hash.c, store/record.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "hash.h"
#include "record.h"

#define CANARY 0xA5

/* Fail with both values printed unless |a - b| <= eps. */
#define assert_double_near(a, b, eps)                                              \
	do {                                                                       \
		double a_ = (a), b_ = (b);                                         \
		if (!(fabs(a_ - b_) <= (eps))) {                                   \
			print_error("%s = %.17g, expected %.17g\n", #a, a_, b_);  \
			fail();                                                    \
		}                                                                  \
	} while (0)

static const uint8_t key0f[AG_SECRET_LEN] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
};

/* ---- SipHash-2-4 ---------------------------------------------------------- */

/* The published reference vectors: key 00..0f, message 00..(n-1). */
static void test_siphash_vectors(void **state)
{
	static const struct {
		size_t n;
		uint64_t want;
	} cases[] = {
		{ 0, 0x726fdb47dd0e0e31ULL },
		{ 1, 0x74f839c593dc67fdULL },
		{ 7, 0xab0200f58b01d137ULL },
		{ 8, 0x93f5f5799a932462ULL },
		{ 15, 0xa129ca6149be45e5ULL },
	};
	uint8_t msg[64];

	(void)state;
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)i;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		uint64_t got = ag_siphash(key0f, msg, cases[i].n);
		if (got != cases[i].want)
			print_error("n=%zu: got %016llx want %016llx\n", cases[i].n,
				    (unsigned long long)got, (unsigned long long)cases[i].want);
		assert_true(got == cases[i].want);
	}
}

/* The hash reads exactly @len bytes (each input in its own exact-size heap
 * block, so a sanitizer sees any overread), at any alignment, and depends
 * on every byte, on the length and on the key. */
static void test_siphash_properties(void **state)
{
	uint8_t msg[80], other_key[AG_SECRET_LEN];
	uint8_t *shifted = malloc(sizeof(msg) + 1);

	(void)state;
	assert_non_null(shifted);
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	memcpy(other_key, key0f, sizeof(other_key));
	other_key[15] ^= 0x80;

	for (size_t n = 0; n <= sizeof(msg); n++) {
		uint8_t *exact = malloc(n > 0 ? n : 1);
		assert_non_null(exact);
		memcpy(exact, msg, n);
		uint64_t h = ag_siphash(key0f, exact, n);

		/* unaligned copy: same hash */
		memcpy(shifted + 1, msg, n);
		assert_true(ag_siphash(key0f, shifted + 1, n) == h);
		/* another key: another hash */
		assert_true(ag_siphash(other_key, exact, n) != h);
		/* one more byte (a zero): another hash, the length is hashed */
		if (n < sizeof(msg)) {
			uint8_t longer[sizeof(msg) + 1];
			memcpy(longer, msg, n);
			longer[n] = 0;
			assert_true(ag_siphash(key0f, longer, n + 1) != h);
		}
		/* flipping any single bit changes the hash */
		for (size_t i = 0; i < n; i++) {
			exact[i] ^= 0x01;
			assert_true(ag_siphash(key0f, exact, n) != h);
			exact[i] ^= 0x01;
		}
		free(exact);
	}
	free(shifted);
}

/* ---- record validation ---------------------------------------------------- */

union anyrec {
	struct ag_src_rec src;
	struct ag_user_rec user;
	struct ag_pair_rec pair;
	struct ag_stats stats;
	struct ag_pw_rec pw;
	struct ag_wave_rec wave;
	uint8_t bytes[512];
};

/* A plausible, valid record of @kind. */
static void good_record(enum ag_rec_kind kind, union anyrec *r)
{
	memset(r, 0, sizeof(*r));
	switch (kind) {
	case AG_REC_SRC:
		r->src.version = AG_REC_VERSION;
		r->src.ban_count = 2;
		r->src.fails.v = 7.5;
		r->src.fails.ts = 1795441286123LL;
		r->src.spray.v = 2.0;
		r->src.spray.ts = 1795441286000LL;
		for (int i = 0; i < AG_RECENT_USERS; i++)
			r->src.recent_users[i] = 0x11111111u * (uint32_t)i;
		r->src.recent_next = AG_RECENT_USERS - 1;
		r->src.ban_reason = 1;
		r->src.ban_until = 1795444886123LL;
		r->src.first_seen = 1795441000000LL;
		r->src.last_seen = 1795441286123LL;
		r->src.n_fail = 12;
		r->src.n_success = 1;
		r->src.n_refused = 3;
		break;
	case AG_REC_USER:
		r->user.version = AG_REC_VERSION;
		r->user.lock_count = 1;
		r->user.fails.v = 3.0;
		r->user.fails.ts = 1795441286123LL;
		r->user.lock_until = 1795442186123LL;
		r->user.first_seen = 1;
		r->user.last_seen = 2;
		r->user.n_fail = 9;
		break;
	case AG_REC_PAIR:
		r->pair.version = AG_REC_VERSION;
		r->pair.pw_next = AG_RECENT_PW - 1;
		r->pair.fails.v = 1.25;
		r->pair.fails.ts = 5;
		r->pair.familiar_until = 1797000000000LL;
		r->pair.last_success = 1795000000000LL;
		for (int i = 0; i < AG_RECENT_PW; i++) {
			r->pair.pw[i] = (uint16_t)(0xbeef + i);
			r->pair.pw_ts[i] = 1795441286000LL + i;
		}
		r->pair.last_seen = 1795441286123LL;
		break;
	case AG_REC_STATS:
		r->stats.version = AG_REC_VERSION;
		r->stats.created = 1700000000000LL;
		r->stats.attempts = 100;
		r->stats.failures = 40;
		break;
	case AG_REC_PW:
		r->pw.version = AG_REC_VERSION;
		r->pw.tag_next = AG_PW_TAGS - 1;
		r->pw.users.v = 9.5;
		r->pw.users.ts = 1795441286123LL;
		for (int i = 0; i < AG_PW_TAGS; i++)
			r->pw.tags[i] = (uint16_t)(0x1001 * (i + 1));
		r->pw.first_seen = 1795441000000LL;
		r->pw.last_seen = 1795441286123LL;
		r->pw.n_fail = 11;
		break;
	case AG_REC_WAVE:
		r->wave.version = AG_REC_VERSION;
		r->wave.active = 1;
		r->wave.fast.v = 120.0;
		r->wave.fast.ts = 1795441286123LL;
		r->wave.base.v = 800.0;
		r->wave.base.ts = 1795441286000LL;
		r->wave.first_seen = 1790000000000LL;
		r->wave.since = 1795441000000LL;
		r->wave.ended = 1795000000000LL;
		r->wave.waves = 3;
		break;
	}
}

static void test_rec_size(void **state)
{
	(void)state;
	assert_int_equal(ag_rec_size(AG_REC_SRC), sizeof(struct ag_src_rec));
	assert_int_equal(ag_rec_size(AG_REC_USER), sizeof(struct ag_user_rec));
	assert_int_equal(ag_rec_size(AG_REC_PAIR), sizeof(struct ag_pair_rec));
	assert_int_equal(ag_rec_size(AG_REC_STATS), sizeof(struct ag_stats));
	assert_int_equal(ag_rec_size(AG_REC_PW), sizeof(struct ag_pw_rec));
	assert_int_equal(ag_rec_size(AG_REC_WAVE), sizeof(struct ag_wave_rec));
	assert_int_equal(ag_rec_size((enum ag_rec_kind)99), 0);
}

/* A good record of each kind decodes to an exact copy, from an unaligned
 * buffer too, and the copy does not spill past the record's size. */
static void test_rec_decode_good(void **state)
{
	static const enum ag_rec_kind kinds[] = { AG_REC_SRC, AG_REC_USER, AG_REC_PAIR,
						  AG_REC_STATS, AG_REC_PW, AG_REC_WAVE };

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(kinds); i++) {
		union anyrec in, out;
		uint8_t unaligned[sizeof(in) + 1];
		size_t size = ag_rec_size(kinds[i]);

		assert_true(size > 0 && size < sizeof(in.bytes));
		good_record(kinds[i], &in);
		memset(&out, CANARY, sizeof(out));
		assert_int_equal(ag_rec_decode(kinds[i], &in, size, &out), 0);
		assert_memory_equal(&out, &in, size);
		for (size_t j = size; j < sizeof(out.bytes); j++)
			assert_int_equal(out.bytes[j], CANARY);

		memcpy(unaligned + 1, &in, size);
		memset(&out, 0, sizeof(out));
		assert_int_equal(ag_rec_decode(kinds[i], unaligned + 1, size, &out), 0);
		assert_memory_equal(&out, &in, size);
	}
}

/* Wrong sizes, NULL data and unknown kinds are corrupt. */
static void test_rec_decode_size(void **state)
{
	static const enum ag_rec_kind kinds[] = { AG_REC_SRC, AG_REC_USER, AG_REC_PAIR,
						  AG_REC_STATS, AG_REC_PW, AG_REC_WAVE };

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(kinds); i++) {
		union anyrec in, out;
		size_t size = ag_rec_size(kinds[i]);
		const size_t lens[] = { 0, 1, sizeof(uint32_t), size - 8, size - 1, size + 1,
					size + 8, sizeof(in) };

		good_record(kinds[i], &in);
		for (size_t j = 0; j < AG_ARRAY_LEN(lens); j++) {
			if (lens[j] == size)
				continue;
			assert_int_equal(ag_rec_decode(kinds[i], &in, lens[j], &out), AG_ECORRUPT);
		}
		assert_int_equal(ag_rec_decode(kinds[i], NULL, size, &out), AG_ECORRUPT);
		assert_int_equal(ag_rec_decode(kinds[i], NULL, 0, &out), AG_ECORRUPT);
	}
	{
		union anyrec in, out;
		good_record(AG_REC_SRC, &in);
		assert_int_equal(ag_rec_decode((enum ag_rec_kind)99, &in, 0, &out), AG_ECORRUPT);
		assert_int_equal(ag_rec_decode((enum ag_rec_kind)99, &in, sizeof(in.src), &out),
				 AG_ECORRUPT);
		/* a record of one kind is not accepted as another kind */
		assert_int_equal(ag_rec_decode(AG_REC_USER, &in, sizeof(in.src), &out),
				 AG_ECORRUPT);
	}
}

enum ftype { F_U32, F_I64, F_DBL };

struct mutation {
	const char *what;
	enum ag_rec_kind kind;
	size_t off;
	enum ftype type;
	double dv;
	int64_t iv;
	int want;
};

#define MU32(kind, st, field, v, want) \
	{ #st "." #field " = " #v, kind, offsetof(st, field), F_U32, 0, (int64_t)(v), want }
#define MI64(kind, st, field, v, want) \
	{ #st "." #field " = " #v, kind, offsetof(st, field), F_I64, 0, (int64_t)(v), want }
#define MDBL(kind, st, field, v, want) \
	{ #st "." #field " = " #v, kind, offsetof(st, field), F_DBL, (v), 0, want }

/* One field of a good record set to a value that could not have been
 * written (or to a boundary value that could). */
static void test_rec_decode_fields(void **state)
{
	const struct mutation cases[] = {
		/* version word */
		MU32(AG_REC_SRC, struct ag_src_rec, version, 0, AG_ECORRUPT),
		MU32(AG_REC_SRC, struct ag_src_rec, version, AG_REC_VERSION + 1, AG_ECORRUPT),
		MU32(AG_REC_SRC, struct ag_src_rec, version, UINT32_MAX, AG_ECORRUPT),
		MU32(AG_REC_USER, struct ag_user_rec, version, 0, AG_ECORRUPT),
		MU32(AG_REC_USER, struct ag_user_rec, version, AG_REC_VERSION + 1, AG_ECORRUPT),
		MU32(AG_REC_PAIR, struct ag_pair_rec, version, 0, AG_ECORRUPT),
		MU32(AG_REC_PAIR, struct ag_pair_rec, version, 0x01000000, AG_ECORRUPT),
		MU32(AG_REC_STATS, struct ag_stats, version, 0, AG_ECORRUPT),
		MU32(AG_REC_STATS, struct ag_stats, version, AG_REC_VERSION + 1, AG_ECORRUPT),
		/* scores: NaN, infinite, negative, absurdly large, negative time */
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, NAN, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, -NAN, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, INFINITY, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, -INFINITY, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, -1.0, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, -DBL_MIN, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, DBL_MAX, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, 1e12, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, 0.0, 0),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, -0.0, 0),
		MDBL(AG_REC_SRC, struct ag_src_rec, fails.v, 999999.5, 0),
		MI64(AG_REC_SRC, struct ag_src_rec, fails.ts, -1, AG_ECORRUPT),
		MI64(AG_REC_SRC, struct ag_src_rec, fails.ts, INT64_MIN, AG_ECORRUPT),
		MI64(AG_REC_SRC, struct ag_src_rec, fails.ts, 0, 0),
		MDBL(AG_REC_SRC, struct ag_src_rec, spray.v, NAN, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, spray.v, -0.5, AG_ECORRUPT),
		MDBL(AG_REC_SRC, struct ag_src_rec, spray.v, INFINITY, AG_ECORRUPT),
		MI64(AG_REC_SRC, struct ag_src_rec, spray.ts, -5, AG_ECORRUPT),
		MDBL(AG_REC_USER, struct ag_user_rec, fails.v, NAN, AG_ECORRUPT),
		MDBL(AG_REC_USER, struct ag_user_rec, fails.v, -2.0, AG_ECORRUPT),
		MDBL(AG_REC_USER, struct ag_user_rec, fails.v, INFINITY, AG_ECORRUPT),
		MI64(AG_REC_USER, struct ag_user_rec, fails.ts, -1, AG_ECORRUPT),
		MDBL(AG_REC_PAIR, struct ag_pair_rec, fails.v, NAN, AG_ECORRUPT),
		MDBL(AG_REC_PAIR, struct ag_pair_rec, fails.v, -INFINITY, AG_ECORRUPT),
		MDBL(AG_REC_PAIR, struct ag_pair_rec, fails.v, -3.0, AG_ECORRUPT),
		MI64(AG_REC_PAIR, struct ag_pair_rec, fails.ts, -1, AG_ECORRUPT),
		/* ring indexes */
		MU32(AG_REC_SRC, struct ag_src_rec, recent_next, 0, 0),
		MU32(AG_REC_SRC, struct ag_src_rec, recent_next, AG_RECENT_USERS - 1, 0),
		MU32(AG_REC_SRC, struct ag_src_rec, recent_next, AG_RECENT_USERS, AG_ECORRUPT),
		MU32(AG_REC_SRC, struct ag_src_rec, recent_next, UINT32_MAX, AG_ECORRUPT),
		MU32(AG_REC_PAIR, struct ag_pair_rec, pw_next, AG_RECENT_PW - 1, 0),
		MU32(AG_REC_PAIR, struct ag_pair_rec, pw_next, AG_RECENT_PW, AG_ECORRUPT),
		MU32(AG_REC_PAIR, struct ag_pair_rec, pw_next, 0x80000000u, AG_ECORRUPT),
		/* expiry times */
		MI64(AG_REC_SRC, struct ag_src_rec, ban_until, -1, AG_ECORRUPT),
		MI64(AG_REC_SRC, struct ag_src_rec, ban_until, 0, 0),
		MI64(AG_REC_SRC, struct ag_src_rec, ban_until, INT64_MAX, 0),
		MI64(AG_REC_USER, struct ag_user_rec, lock_until, -1, AG_ECORRUPT),
		MI64(AG_REC_USER, struct ag_user_rec, lock_until, 0, 0),
		MI64(AG_REC_PAIR, struct ag_pair_rec, familiar_until, -1, AG_ECORRUPT),
		MI64(AG_REC_PAIR, struct ag_pair_rec, familiar_until, INT64_MIN, AG_ECORRUPT),
		MI64(AG_REC_PAIR, struct ag_pair_rec, familiar_until, 0, 0),
		/* hot passwords and the wave state */
		MU32(AG_REC_PW, struct ag_pw_rec, version, 0, AG_ECORRUPT),
		MDBL(AG_REC_PW, struct ag_pw_rec, users.v, NAN, AG_ECORRUPT),
		MDBL(AG_REC_PW, struct ag_pw_rec, users.v, -1.0, AG_ECORRUPT),
		MI64(AG_REC_PW, struct ag_pw_rec, users.ts, -1, AG_ECORRUPT),
		MU32(AG_REC_PW, struct ag_pw_rec, tag_next, AG_PW_TAGS, AG_ECORRUPT),
		MU32(AG_REC_PW, struct ag_pw_rec, tag_next, 0, 0),
		MI64(AG_REC_PW, struct ag_pw_rec, first_seen, -1, AG_ECORRUPT),
		MI64(AG_REC_PW, struct ag_pw_rec, last_seen, -1, AG_ECORRUPT),
		MU32(AG_REC_WAVE, struct ag_wave_rec, version, AG_REC_VERSION + 1, AG_ECORRUPT),
		MU32(AG_REC_WAVE, struct ag_wave_rec, active, 2, AG_ECORRUPT),
		MU32(AG_REC_WAVE, struct ag_wave_rec, active, 0, 0),
		MDBL(AG_REC_WAVE, struct ag_wave_rec, fast.v, INFINITY, AG_ECORRUPT),
		MDBL(AG_REC_WAVE, struct ag_wave_rec, base.v, -0.5, AG_ECORRUPT),
		MI64(AG_REC_WAVE, struct ag_wave_rec, base.ts, -1, AG_ECORRUPT),
		MI64(AG_REC_WAVE, struct ag_wave_rec, since, -1, AG_ECORRUPT),
		MI64(AG_REC_WAVE, struct ag_wave_rec, ended, -1, AG_ECORRUPT),
		MI64(AG_REC_WAVE, struct ag_wave_rec, first_seen, INT64_MIN, AG_ECORRUPT),
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		const struct mutation *m = &cases[i];
		union anyrec in, out;
		size_t size = ag_rec_size(m->kind);

		good_record(m->kind, &in);
		switch (m->type) {
		case F_U32: {
			uint32_t v = (uint32_t)m->iv;
			memcpy(in.bytes + m->off, &v, sizeof(v));
			break;
		}
		case F_I64:
			memcpy(in.bytes + m->off, &m->iv, sizeof(m->iv));
			break;
		case F_DBL:
			memcpy(in.bytes + m->off, &m->dv, sizeof(m->dv));
			break;
		}
		int rc = ag_rec_decode(m->kind, &in, size, &out);
		if (rc != m->want)
			print_error("case %zu (%s): got %d want %d\n", i, m->what, rc, m->want);
		assert_int_equal(rc, m->want);
	}
}

/* ---- source keys ---------------------------------------------------------- */

static void cidr(const char *s, struct ag_addr *a)
{
	if (ag_cidr_parse(s, true, a) != 0) {
		print_error("bad test CIDR '%s'\n", s);
		fail();
	}
}

static void test_src_key_roundtrip(void **state)
{
	static const struct {
		const char *in;
		uint8_t family, plen;
	} cases[] = {
		{ "192.0.2.7", AG_AF_INET, 32 },
		{ "255.255.255.255", AG_AF_INET, 32 },
		{ "0.0.0.0", AG_AF_INET, 32 },
		{ "192.0.2.0/24", AG_AF_INET, 24 },
		{ "10.1.16.0/20", AG_AF_INET, 20 },
		{ "128.0.0.0/1", AG_AF_INET, 1 },
		{ "0.0.0.0/0", AG_AF_INET, 0 },
		{ "2001:db8::1", AG_AF_INET6, 128 },
		{ "2001:db8:1:2::/64", AG_AF_INET6, 64 },
		{ "2001:db8:1:fff8::/61", AG_AF_INET6, 61 },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", AG_AF_INET6, 128 },
		{ "::/0", AG_AF_INET6, 0 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_addr a, back;
		uint8_t key[AG_SRC_KEY_LEN + 4];

		cidr(cases[i].in, &a);
		memset(key, CANARY, sizeof(key));
		ag_src_key(&a, key);
		assert_int_equal(key[0], cases[i].family);
		assert_int_equal(key[1], cases[i].plen);
		assert_memory_equal(key + 2, a.b, 16);
		for (size_t j = AG_SRC_KEY_LEN; j < sizeof(key); j++)
			assert_int_equal(key[j], CANARY);

		memset(&back, 0x5a, sizeof(back));
		assert_int_equal(ag_src_key_decode(key, AG_SRC_KEY_LEN, &back), 0);
		assert_memory_equal(&back, &a, sizeof(a));
	}
}

static void test_src_key_reject(void **state)
{
	static const struct {
		const char *what;
		const char *base;  /* a valid address to start from */
		int idx;           /* key byte to change (-1: none) */
		uint8_t val;
		size_t len;
	} cases[] = {
		{ "family 0", "192.0.2.7", 0, 0, AG_SRC_KEY_LEN },
		{ "family 2 (AF_INET)", "192.0.2.7", 0, 2, AG_SRC_KEY_LEN },
		{ "family 5", "192.0.2.7", 0, 5, AG_SRC_KEY_LEN },
		{ "family 10 (AF_INET6)", "2001:db8::1", 0, 10, AG_SRC_KEY_LEN },
		{ "family 255", "2001:db8::1", 0, 255, AG_SRC_KEY_LEN },
		{ "v4 plen 33", "192.0.2.7", 1, 33, AG_SRC_KEY_LEN },
		{ "v4 plen 255", "192.0.2.7", 1, 255, AG_SRC_KEY_LEN },
		{ "v6 plen 129", "2001:db8::1", 1, 129, AG_SRC_KEY_LEN },
		{ "v6 plen 255", "2001:db8::1", 1, 255, AG_SRC_KEY_LEN },
		{ "v4 /24 host bit", "192.0.2.0/24", 2 + 3, 1, AG_SRC_KEY_LEN },
		{ "v4 /20 host bit", "10.1.16.0/20", 2 + 2, 16 | 8, AG_SRC_KEY_LEN },
		{ "v4 /0 any bit", "0.0.0.0/0", 2 + 0, 0x80, AG_SRC_KEY_LEN },
		{ "v4 byte past the address", "192.0.2.7", 2 + 4, 1, AG_SRC_KEY_LEN },
		{ "v4 last key byte", "192.0.2.7", 2 + 15, 0x80, AG_SRC_KEY_LEN },
		{ "v6 /64 host bit", "2001:db8:1:2::/64", 2 + 15, 1, AG_SRC_KEY_LEN },
		{ "v6 /61 host bit", "2001:db8:1:fff8::/61", 2 + 7, 0xfc, AG_SRC_KEY_LEN },
		{ "v4 host now /31 with the last bit", "192.0.2.7", 1, 31, AG_SRC_KEY_LEN },
		{ "short", "192.0.2.7", -1, 0, AG_SRC_KEY_LEN - 1 },
		{ "long", "192.0.2.7", -1, 0, AG_SRC_KEY_LEN + 1 },
		{ "empty", "192.0.2.7", -1, 0, 0 },
		{ "two bytes", "192.0.2.7", -1, 0, 2 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_addr a, r;
		uint8_t key[AG_SRC_KEY_LEN + 8];

		memset(key, 0, sizeof(key));
		cidr(cases[i].base, &a);
		ag_src_key(&a, key);
		/* unchanged, the key is good (so the change below is what fails) */
		assert_int_equal(ag_src_key_decode(key, AG_SRC_KEY_LEN, &r), 0);
		if (cases[i].idx >= 0)
			key[cases[i].idx] = cases[i].val;
		memset(&r, 0x5a, sizeof(r));
		int rc = ag_src_key_decode(key, cases[i].len, &r);
		if (rc != AG_ECORRUPT)
			print_error("case '%s' was accepted\n", cases[i].what);
		assert_int_equal(rc, AG_ECORRUPT);
		assert_int_equal(r.family, AG_AF_NONE);
	}
}

/* ---- user and pair keys --------------------------------------------------- */

static const uint8_t secret_a[16] = "0123456789abcdef";
static const uint8_t secret_b[16] = "0123456789abcdeF";

static void test_user_key_short(void **state)
{
	static const size_t lens[] = { 0, 1, 5, 64, 183, 184, 185, 199, 200 };
	char name[256];

	(void)state;
	for (size_t i = 0; i < sizeof(name); i++)
		name[i] = (char)('a' + i % 26);
	for (size_t i = 0; i < AG_ARRAY_LEN(lens); i++) {
		uint8_t ka[AG_USER_KEY_MAX + 8], kb[AG_USER_KEY_MAX + 8];

		memset(ka, CANARY, sizeof(ka));
		memset(kb, CANARY, sizeof(kb));
		assert_int_equal(ag_user_key(secret_a, name, lens[i], ka), lens[i]);
		assert_int_equal(ag_user_key(secret_b, name, lens[i], kb), lens[i]);
		/* the key is the name itself, whatever the secret */
		assert_memory_equal(ka, name, lens[i]);
		assert_memory_equal(kb, name, lens[i]);
		for (size_t j = lens[i]; j < sizeof(ka); j++)
			assert_int_equal(ka[j], CANARY);
	}
	/* a non-UTF-8 short name is kept byte for byte */
	{
		uint8_t k[AG_USER_KEY_MAX];
		const char odd[] = "\xff\xfe\x80x\x01";
		assert_int_equal(ag_user_key(secret_a, odd, 5, k), 5);
		assert_memory_equal(k, odd, 5);
	}
}

/* user_strip_domains: a listed domain after the last '@' goes, in any
 * ASCII case; nothing else does. */
static void test_user_strip(void **state)
{
#define N(lit) lit, sizeof(lit) - 1
	static char *const doms[] = { "example.org", "mail.test" };
	static const struct {
		bool fold;
		const char *name;
		size_t len, want;
	} cases[] = {
		{ true, N("alice@example.org"), 5 },
		{ true, N("alice@EXAMPLE.Org"), 5 },
		{ true, N("Alice@mail.test"), 5 },
		{ true, N("alice@example.org \t"), 5 },   /* folded blanks after */
		{ false, N("alice@example.org "), 18 },   /* not without fold */
		{ false, N("alice@example.org"), 5 },
		{ true, N("a@b@example.org"), 3 },        /* the last '@' */
		{ true, N("alice@example.org@evil.test"), 27 },
		{ true, N("alice@example.com"), 17 },
		{ true, N("alice@sub.example.org"), 21 }, /* a subdomain is another */
		{ true, N("alice@xexample.org"), 18 },
		{ true, N("alice@example.or"), 16 },
		{ true, N("alice"), 5 },
		{ true, N("@example.org"), 12 },          /* nothing left */
		{ true, N(" \t@example.org"), 14 },
		{ true, N("example.org"), 11 },
		{ true, N(""), 0 },
	};
#undef N
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		size_t got = ag_user_strip(cases[i].fold, cases[i].name, cases[i].len, doms, 2);
		if (got != cases[i].want) {
			print_error("case %zu: %zu, expected %zu\n", i, got, cases[i].want);
			fail();
		}
	}
	/* no domains listed: every name whole */
	assert_int_equal(ag_user_strip(true, "alice@example.org", 17, NULL, 0), 17);
}

/* user_fold trims at both ends exactly the bytes libsasl2's own
 * canonicalisation trims (isspace() in the C locale: space, \t, \n, \v,
 * \f, \r), so PAM, SASL and the admin tool file a name under one key;
 * no other byte, and nothing inside the name. */
static void test_user_canon_fold_trim(void **state)
{
#define N(lit) lit, sizeof(lit) - 1
	static const struct {
		const char *name;
		size_t len;
		bool same; /* as "alice" */
	} cases[] = {
		{ N("alice"), true },
		{ N(" alice\t"), true },
		{ N("\valice\v"), true },
		{ N("\falice"), true },
		{ N("alice\f"), true },
		{ N("\ralice\n"), true },
		{ N(" \t\valice\r\n"), true },
		{ N("\r\n\v\f\t ALICE \t\f\v\n\r"), true },
		{ N("al\vice"), false },
		{ N("\balice"), false },
		{ N("alice\x1c"), false },   /* isspace() in C: no */
		{ N("\x85" "alice"), false }, /* NEL */
		{ N("alice\xa0"), false },   /* NO-BREAK SPACE in Latin-1 */
		{ N("alice\0"), false },
	};
#undef N
	uint8_t want[AG_USER_KEY_MAX], key[AG_USER_KEY_MAX];
	size_t wlen, klen;
	uint32_t wh, h;

	(void)state;
	assert_int_equal(ag_user_canon(secret_a, true, "alice", 5, want, &wlen, &wh), 0);
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		assert_int_equal(ag_user_canon(secret_a, true, cases[i].name, cases[i].len, key, &klen,
					       &h), 0);
		bool same = klen == wlen && memcmp(key, want, wlen) == 0;
		if (same != cases[i].same || (h == wh) != cases[i].same) {
			print_error("case %zu: same=%d, expected %d\n", i, same, cases[i].same);
			fail();
		}
	}
	/* without fold nothing is trimmed */
	assert_int_equal(ag_user_canon(secret_a, false, "\valice", 6, key, &klen, &h), 0);
	assert_int_equal(klen, 6);
	assert_memory_equal(key, "\valice", 6);
	/* a name of blanks only is kept as it is */
	assert_int_equal(ag_user_canon(secret_a, true, "\v\f", 2, key, &klen, &h), 0);
	assert_int_equal(klen, 2);
	assert_memory_equal(key, "\v\f", 2);
}

static void test_user_key_long(void **state)
{
	static const size_t lens[] = { 201, 202, 255, 1000, 65536 };
	size_t maxlen = 65536;
	char *name = malloc(maxlen);

	(void)state;
	assert_non_null(name);
	for (size_t i = 0; i < maxlen; i++)
		name[i] = (char)('A' + i % 23);
	for (size_t i = 0; i < AG_ARRAY_LEN(lens); i++) {
		size_t len = lens[i];
		uint8_t ka[AG_USER_KEY_MAX + 8], ka2[AG_USER_KEY_MAX], kb[AG_USER_KEY_MAX];
		uint8_t kend[AG_USER_KEY_MAX], zero[16] = { 0 };

		memset(ka, CANARY, sizeof(ka));
		assert_int_equal(ag_user_key(secret_a, name, len, ka), AG_USER_KEY_MAX);
		for (size_t j = AG_USER_KEY_MAX; j < sizeof(ka); j++)
			assert_int_equal(ka[j], CANARY);
		assert_memory_equal(ka, name, 184);
		assert_int_equal(ka[184], 0);
		assert_memory_not_equal(ka + 185, zero, 16);

		/* deterministic */
		assert_int_equal(ag_user_key(secret_a, name, len, ka2), AG_USER_KEY_MAX);
		assert_memory_equal(ka, ka2, AG_USER_KEY_MAX);

		/* another secret: another key, and all 16 hash bytes are keyed
		 * (each 8-byte half changes with the secret) */
		assert_int_equal(ag_user_key(secret_b, name, len, kb), AG_USER_KEY_MAX);
		assert_memory_equal(kb, ka, 185);
		assert_memory_not_equal(kb + 185, ka + 185, 8);
		assert_memory_not_equal(kb + 193, ka + 193, 8);
		assert_memory_not_equal(ka + 185, ka + 193, 8);

		/* a name differing only in its last byte: another key */
		name[len - 1] ^= 0x20;
		assert_int_equal(ag_user_key(secret_a, name, len, kend), AG_USER_KEY_MAX);
		name[len - 1] ^= 0x20;
		assert_memory_not_equal(kend + 185, ka + 185, 16);

		/* the same bytes one shorter: another key (length matters) */
		if (len - 1 > 200) {
			assert_int_equal(ag_user_key(secret_a, name, len - 1, kend), AG_USER_KEY_MAX);
			assert_memory_not_equal(kend + 185, ka + 185, 16);
		}
	}
	free(name);
}

/* "n*c" stands for n bytes c, "s" for the string s; a name is up to
 * three of them. */
struct spelled { size_t n[3]; const char *s[3]; };

static size_t spell(const struct spelled *sp, char *buf)
{
	size_t len = 0;

	for (int i = 0; i < 3 && sp->s[i] != NULL; i++) {
		size_t k = sp->n[i] != 0 ? sp->n[i] : strlen(sp->s[i]);
		for (size_t j = 0; j < k; j++)
			buf[len++] = sp->n[i] != 0 ? sp->s[i][0] : sp->s[i][j];
	}
	return len;
}

/* Which pairs (filed under the name as given) a user (filed under its
 * folded name) owns: what authguard-admin show/forget --user find. */
static void test_user_key_folds_to(void **state)
{
	static const struct {
		struct spelled given, user;
		bool fold, want;
	} cases[] = {
		{ { { 0 }, { "alice" } }, { { 0 }, { "alice" } }, true, true },
		{ { { 0 }, { "Alice" } }, { { 0 }, { "alice" } }, true, true },
		{ { { 0 }, { " ALICE\t" } }, { { 0 }, { "alice" } }, true, true },
		{ { { 0 }, { "AL ice" } }, { { 0 }, { "al ice" } }, true, true },
		{ { { 0 }, { "Alice" } }, { { 0 }, { "alice" } }, false, false },
		{ { { 0 }, { "alice" } }, { { 0 }, { "alice" } }, false, true },
		{ { { 0 }, { "alicia" } }, { { 0 }, { "alice" } }, true, false },
		{ { { 0 }, { "Alic" } }, { { 0 }, { "alice" } }, true, false },
		{ { { 0 }, { "Alice2" } }, { { 0 }, { "alice" } }, true, false },
		{ { { 0 }, { "   " } }, { { 0 }, { "   " } }, true, true },   /* kept as it is */
		{ { { 0 }, { "  " } }, { { 0 }, { "   " } }, true, false },
		/* long names are known by their first 184 bytes */
		{ { { 300 }, { "A" } }, { { 300 }, { "a" } }, true, true },
		{ { { 300 }, { "a" } }, { { 300 }, { "a" } }, false, true },
		{ { { 300 }, { "A" } }, { { 300 }, { "a" } }, false, false },
		{ { { 299, 0 }, { "A", "b" } }, { { 300 }, { "a" } }, true, true },
		{ { { 0, 299 }, { "b", "A" } }, { { 300 }, { "a" } }, true, false },
		{ { { 2, 250 }, { " ", "A" } }, { { 250 }, { "a" } }, true, true },
		{ { { 100, 150 }, { "A", " " } }, { { 100 }, { "a" } }, true, true },
		{ { { 100, 150 }, { "A", " " } }, { { 99 }, { "a" } }, true, false },
		{ { { 184, 100 }, { " ", "x" } }, { { 100 }, { "x" } }, true, false },
		{ { { 300 }, { "A" } }, { { 0 }, { "alice" } }, true, false },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		char given[512], user[512];
		uint8_t xkey[AG_USER_KEY_MAX], ukey[AG_USER_KEY_MAX];
		size_t ulen;
		uint32_t h;
		size_t glen = spell(&cases[i].given, given), len = spell(&cases[i].user, user);
		size_t xlen = ag_user_key(secret_a, given, glen, xkey);

		assert_int_equal(ag_user_canon(secret_a, cases[i].fold, user, len, ukey, &ulen, &h), 0);
		if (ag_user_key_folds_to(cases[i].fold, xkey, xlen, ukey, ulen) != cases[i].want)
			fail_msg("case %zu", i);
	}
}

/* Since issue 15.3: the source key, the tag, the user key; filed right
 * after the source's own record (a key that begins with it), and told
 * apart from every source record by its length. */
static void test_pair_key(void **state)
{
	static const char *srcs[] = { "192.0.2.7", "2001:db8::/64" };
	static const size_t ulens[] = { 1, 5, 200, AG_USER_KEY_MAX };
	uint8_t ukey[AG_USER_KEY_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(ukey); i++)
		ukey[i] = (uint8_t)(0x30 + i % 40);
	for (size_t s = 0; s < AG_ARRAY_LEN(srcs); s++) {
		struct ag_addr a;
		uint8_t skey[AG_SRC_KEY_LEN];

		cidr(srcs[s], &a);
		ag_src_key(&a, skey);
		for (size_t i = 0; i < AG_ARRAY_LEN(ulens); i++) {
			uint8_t key[AG_SRC_PAIR_KEY_MAX + 8];
			size_t ulen = ulens[i];

			memset(key, CANARY, sizeof(key));
			size_t n = ag_pair_key(skey, ukey, ulen, key);
			assert_int_equal(n, AG_SRC_KEY_LEN + 1 + ulen);
			assert_true(n <= AG_SRC_PAIR_KEY_MAX && n > AG_SRC_KEY_LEN);
			assert_memory_equal(key, skey, AG_SRC_KEY_LEN);
			assert_int_equal(key[AG_SRC_KEY_LEN], AG_PAIR_TAG);
			assert_memory_equal(key + AG_SRC_KEY_LEN + 1, ukey, ulen);
			for (size_t j = n; j < sizeof(key); j++)
				assert_int_equal(key[j], CANARY);
			const uint8_t *uk;
			size_t ul;
			struct ag_addr back;
			assert_int_equal(ag_pair_key_decode(key, n, false, &uk, &ul, &back), 0);
			assert_int_equal(ul, ulen);
			assert_ptr_equal(uk, key + AG_SRC_KEY_LEN + 1);
			assert_memory_equal(&back, &a, sizeof(a));
			/* not a pair key: a source's, a wrong tag, no user */
			assert_int_equal(ag_pair_key_decode(key, AG_SRC_KEY_LEN, false, &uk, &ul, &back),
					 AG_ECORRUPT);
			assert_int_equal(back.family, AG_AF_NONE);
			assert_int_equal(ag_pair_key_decode(key, AG_SRC_KEY_LEN + 1, false, &uk, &ul,
							    &back), AG_ECORRUPT);
			key[AG_SRC_KEY_LEN] = 0;
			assert_int_equal(ag_pair_key_decode(key, n, false, &uk, &ul, &back), AG_ECORRUPT);
		}
	}
	/* no address: the all-zero source; a damaged source part is refused */
	{
		uint8_t skey[AG_SRC_KEY_LEN] = { 0 }, key[AG_SRC_PAIR_KEY_MAX];
		const uint8_t *uk;
		size_t ul, n = ag_pair_key(skey, (const uint8_t *)"kim", 3, key);
		struct ag_addr back;
		assert_int_equal(ag_pair_key_decode(key, n, false, &uk, &ul, &back), 0);
		assert_int_equal(back.family, AG_AF_NONE);
		assert_int_equal(ul, 3);
		key[0] = AG_AF_INET;
		key[1] = 40; /* longer than an IPv4 address */
		assert_int_equal(ag_pair_key_decode(key, n, false, &uk, &ul, &back), AG_ECORRUPT);
		assert_int_equal(ag_pair_key_decode(key, AG_SRC_PAIR_KEY_MAX + 1, false, &uk, &ul, &back),
				 AG_ECORRUPT);
	}
	/* a host's pairs sort right after the host, before the next source */
	{
		struct ag_addr h1, h2;
		uint8_t s1[AG_SRC_KEY_LEN], s2[AG_SRC_KEY_LEN], k[AG_SRC_PAIR_KEY_MAX];
		cidr("192.0.2.7", &h1);
		cidr("192.0.2.8", &h2);
		ag_src_key(&h1, s1);
		ag_src_key(&h2, s2);
		size_t n = ag_pair_key(s1, ukey, AG_USER_KEY_MAX, k);
		assert_true(memcmp(k, s1, AG_SRC_KEY_LEN) == 0 && n > AG_SRC_KEY_LEN);
		assert_true(memcmp(k, s2, AG_SRC_KEY_LEN) < 0);
	}
}

/* A pair written in both places (an older module's copy in the old
 * database) merges without losing what either counted. */
static void test_pair_merge(void **state)
{
	const int64_t now = 1000000000, hl = 600000;
	struct ag_pair_rec a = { .version = AG_REC_VERSION }, b = a;

	(void)state;
	a.fails.v = 2;
	a.fails.ts = now;
	a.pw[0] = 11, a.pw_ts[0] = now - 30;
	a.pw[1] = 12, a.pw_ts[1] = now - 20;
	a.pw_next = 2;
	a.last_seen = now - 20;
	a.last_success = now - 5000;
	a.familiar_until = now + 1000;
	b.fails.v = 3;
	b.fails.ts = now;
	b.pw[0] = 12, b.pw_ts[0] = now - 10; /* the same password, later */
	b.pw[1] = 13, b.pw_ts[1] = now - 40;
	b.pw[2] = 14, b.pw_ts[2] = now - 50;
	b.pw[3] = 15, b.pw_ts[3] = now - 60; /* the oldest of five: goes */
	b.last_seen = now - 10;
	b.last_success = now - 100; /* the later login: its familiarity */
	b.familiar_until = now + 9000;
	ag_pair_merge(&a, &b, now, hl);
	assert_true(ag_score_at(&a.fails, now, hl) > 4.99 && ag_score_at(&a.fails, now, hl) < 5.01);
	assert_int_equal(a.last_seen, now - 10);
	assert_int_equal(a.last_success, now - 100);
	assert_int_equal(a.familiar_until, now + 9000);
	/* the four latest of five hashes (12 at its later time), oldest first */
	static const uint16_t want[] = { 14, 13, 11, 12 };
	static const int64_t want_ts[] = { -50, -40, -30, -10 };
	for (int i = 0; i < AG_RECENT_PW; i++) {
		assert_int_equal(a.pw[i], want[i]);
		assert_int_equal(a.pw_ts[i], now + want_ts[i]);
	}
	assert_int_equal(a.pw_next, 0); /* the oldest goes next */
	/* an older login's familiarity does not replace a later one's */
	struct ag_pair_rec c = { .version = AG_REC_VERSION, .last_success = now - 90000,
				 .familiar_until = now + 99999 };
	ag_pair_merge(&a, &c, now, hl);
	assert_int_equal(a.familiar_until, now + 9000);
	/* one empty copy changes nothing but the count of the other */
	struct ag_pair_rec e = { .version = AG_REC_VERSION }, f = e;
	f.pw[0] = 7, f.pw_ts[0] = now;
	f.pw_next = 1;
	ag_pair_merge(&e, &f, now, hl);
	assert_int_equal(e.pw[0], 7);
	assert_int_equal(e.pw_next, 1);
	assert_true(ag_score_at(&e.fails, now, hl) == 0);
}

static void test_pair_key_old(void **state)
{
	static const char *srcs[] = { "192.0.2.7", "2001:db8::/64" };
	static const size_t ulens[] = { 0, 1, 5, 200, AG_USER_KEY_MAX };
	uint8_t ukey[AG_USER_KEY_MAX];

	(void)state;
	for (size_t i = 0; i < sizeof(ukey); i++)
		ukey[i] = (uint8_t)(0x30 + i % 40);
	for (size_t s = 0; s < AG_ARRAY_LEN(srcs); s++) {
		struct ag_addr a;
		uint8_t skey[AG_SRC_KEY_LEN];

		cidr(srcs[s], &a);
		ag_src_key(&a, skey);
		for (size_t i = 0; i < AG_ARRAY_LEN(ulens); i++) {
			uint8_t key[AG_PAIR_KEY_MAX + 8];
			size_t ulen = ulens[i];

			memset(key, CANARY, sizeof(key));
			size_t n = ag_pair_key_old(ukey, ulen, skey, key);
			assert_int_equal(n, 2 + ulen + AG_SRC_KEY_LEN);
			assert_true(n <= AG_PAIR_KEY_MAX);
			assert_int_equal(key[0], (ulen >> 8) & 0xff);
			assert_int_equal(key[1], ulen & 0xff);
			if (ulen > 0)
				assert_memory_equal(key + 2, ukey, ulen);
			assert_memory_equal(key + 2 + ulen, skey, AG_SRC_KEY_LEN);
			for (size_t j = n; j < sizeof(key); j++)
				assert_int_equal(key[j], CANARY);
			if (ulen == 0)
				continue;
			/* and back */
			const uint8_t *uk;
			size_t ul;
			struct ag_addr back;
			assert_int_equal(ag_pair_key_decode(key, n, true, &uk, &ul, &back), 0);
			assert_int_equal(ul, ulen);
			assert_ptr_equal(uk, key + 2);
			assert_memory_equal(&back, &a, sizeof(a));
			assert_int_equal(ag_pair_key_decode(key, n, false, &uk, &ul, &back), AG_ECORRUPT);
			assert_int_equal(ag_pair_key_decode(key, n - 1, true, &uk, &ul, &back),
					 AG_ECORRUPT);
		}
	}
	/* the longest pair key fills AG_PAIR_KEY_MAX exactly */
	{
		uint8_t skey[AG_SRC_KEY_LEN] = { AG_AF_INET, 32, 192, 0, 2, 7 };
		uint8_t key[AG_PAIR_KEY_MAX];
		assert_int_equal(ag_pair_key_old(ukey, AG_USER_KEY_MAX, skey, key), AG_PAIR_KEY_MAX);
	}
	/* "ab"+src and "a"+src' can never be equal: the length comes first */
	{
		uint8_t s1[AG_SRC_KEY_LEN] = { 0 }, s2[AG_SRC_KEY_LEN] = { 0 };
		uint8_t k1[AG_PAIR_KEY_MAX], k2[AG_PAIR_KEY_MAX];
		s2[0] = 'b';
		size_t n1 = ag_pair_key_old((const uint8_t *)"ab", 2, s1, k1);
		size_t n2 = ag_pair_key_old((const uint8_t *)"a", 1, s2, k2);
		assert_int_not_equal(n1, n2);
		assert_memory_not_equal(k1, k2, 2);
	}
}

/* ---- decaying scores ------------------------------------------------------ */

#define HL 600000LL /* 10 minutes */

static void test_score_at(void **state)
{
	static const struct {
		double v;
		int64_t ts, now, hl;
		double want;
	} cases[] = {
		{ 8, 0, 0, HL, 8 },
		{ 8, 1000, 1000 + HL, HL, 4 },             /* one half-life halves it */
		{ 8, 1000, 1000 + 2 * HL, HL, 2 },
		{ 8, 1000, 1000 + 3 * HL, HL, 1 },
		{ 8, 0, HL / 2, HL, 8 / M_SQRT2 },
		{ 3, 0, 1, HL, 3 * 0.99999884473 },        /* 1 ms: barely */
		{ 8, 5000, 4000, HL, 8 },                  /* clock went backwards */
		{ 8, 5000, -5000, HL, 8 },
		{ 8, 5000, INT64_MIN, HL, 8 },
		{ 8, 0, INT64_MAX, HL, 0 },                /* no NaN, no negative */
		{ 0, 0, HL, HL, 0 },
		{ 0, 0, 0, HL, 0 },
		{ -1, 0, 0, HL, 0 },                       /* never negative */
		{ -1, 0, HL, HL, 0 },
		{ -INFINITY, 0, HL, HL, 0 },
		{ 5, 0, 10 * HL, 0, 5 },                   /* no half-life: no decay */
		{ 5, 0, 10 * HL, -HL, 5 },
		{ 1, 0, 19 * HL, HL, 1.0 / 524288 },       /* 1.9e-6: kept */
		{ 1, 0, 20 * HL, HL, 0 },                  /* 9.5e-7: rounds to 0 */
		{ 1, 0, 64 * HL, HL, 0 },
		{ 1e-7, 0, 1, HL, 0 },
		{ 1e11, 0, 1000 * HL, HL, 0 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_score s = { cases[i].v, cases[i].ts };
		double got = ag_score_at(&s, cases[i].now, cases[i].hl);

		if (!(fabs(got - cases[i].want) <= 1e-9 * fmax(1, cases[i].want)))
			print_error("case %zu: got %.17g want %.17g\n", i, got, cases[i].want);
		assert_false(isnan(got));
		assert_true(got >= 0);
		assert_double_near(got, cases[i].want, 1e-9 * fmax(1, cases[i].want));
		if (cases[i].want == 0)
			assert_true(got == 0);
		/* reading never changes the score */
		assert_true(s.ts == cases[i].ts);
	}
}

static void test_score_add(void **state)
{
	struct ag_score s = { 0, 0 };

	(void)state;
	/* from nothing */
	ag_score_add(&s, 1, 1000, HL);
	assert_double_near(s.v, 1, 1e-12);
	assert_int_equal(s.ts, 1000);
	ag_score_add(&s, 1, 1000, HL);
	ag_score_add(&s, 2, 1000, HL);
	assert_double_near(s.v, 4, 1e-12);

	/* decays first, then adds: 4 -> 2 after one half-life, + 1 */
	ag_score_add(&s, 1, 1000 + HL, HL);
	assert_double_near(s.v, 3, 1e-9);
	assert_int_equal(s.ts, 1000 + HL);

	/* the clock steps back: no decay, the stamp is not moved back */
	ag_score_add(&s, 1, 500, HL);
	assert_double_near(s.v, 4, 1e-9);
	assert_int_equal(s.ts, 1000 + HL);
	assert_double_near(ag_score_at(&s, 1000 + 2 * HL, HL), 2, 1e-9);

	/* a long silence: tiny leftovers become exactly 0 */
	ag_score_add(&s, 0, 1000 + 100 * HL, HL);
	assert_true(s.v == 0);
	assert_int_equal(s.ts, 1000 + 100 * HL);

	/* a table of adds */
	static const struct {
		double v0;
		int64_t ts0;
		double n;
		int64_t now;
		double want_v;
		int64_t want_ts;
	} cases[] = {
		{ 0, 0, 1, 0, 1, 0 },
		{ 8, 0, 0, HL, 4, HL },
		{ 8, 0, 1, 2 * HL, 3, 2 * HL },
		{ 8, HL, 1, 0, 9, HL },            /* backwards */
		{ -5, 0, 1, 0, 1, 0 },             /* a negative value counts as 0 */
		{ 1, 0, 0, 30 * HL, 0, 30 * HL },
		{ 0.5, 0, 0.5, 0, 1, 0 },
	};
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_score t = { cases[i].v0, cases[i].ts0 };
		ag_score_add(&t, cases[i].n, cases[i].now, HL);
		if (!(fabs(t.v - cases[i].want_v) <= 1e-9) || t.ts != cases[i].want_ts)
			print_error("add case %zu: got %.17g @%lld\n", i, t.v, (long long)t.ts);
		assert_double_near(t.v, cases[i].want_v, 1e-9);
		assert_true(t.ts == cases[i].want_ts);
	}
}

/* Version 1 sources and users (before the slow counts) are read as
 * version 2 with those at zero; a version 1 record of the new size, or a
 * version 2 one of the old size, is damaged. */
static void test_version_1_records(void **state)
{
	struct ag_src_rec s, out;
	struct ag_user_rec u, uout;
	size_t s1 = offsetof(struct ag_src_rec, slow), u1 = offsetof(struct ag_user_rec, slow);

	(void)state;
	memset(&s, 0, sizeof(s));
	s.version = 1;
	s.ban_count = 3;
	s.fails.v = 2.5;
	s.fails.ts = 1000;
	memset(&out, 0xee, sizeof(out));
	assert_int_equal(ag_rec_decode(AG_REC_SRC, &s, s1, &out), 0);
	assert_int_equal(out.version, AG_REC_VERSION);
	assert_int_equal(out.ban_count, 3);
	assert_true(out.fails.v == 2.5);
	assert_true(out.slow.v == 0 && out.slow.ts == 0);
	assert_int_equal(ag_rec_decode(AG_REC_SRC, &s, sizeof(s), &out), AG_ECORRUPT);
	s.version = AG_REC_VERSION;
	assert_int_equal(ag_rec_decode(AG_REC_SRC, &s, s1, &out), AG_ECORRUPT);
	s.slow.v = -1;
	assert_int_equal(ag_rec_decode(AG_REC_SRC, &s, sizeof(s), &out), AG_ECORRUPT);
	memset(&u, 0, sizeof(u));
	u.version = 1;
	u.lock_count = 2;
	memset(&uout, 0xee, sizeof(uout));
	assert_int_equal(ag_rec_decode(AG_REC_USER, &u, u1, &uout), 0);
	assert_int_equal(uout.lock_count, 2);
	assert_true(uout.slow.v == 0 && uout.slow.ts == 0);
	/* pairs and stats kept their layout: version 1 of their size reads */
	struct ag_pair_rec p = { .version = 1 }, pout;
	assert_int_equal(ag_rec_decode(AG_REC_PAIR, &p, sizeof(p), &pout), 0);
	assert_int_equal(pout.version, AG_REC_VERSION);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_vectors),
		cmocka_unit_test(test_siphash_properties),
		cmocka_unit_test(test_rec_size),
		cmocka_unit_test(test_rec_decode_good),
		cmocka_unit_test(test_rec_decode_size),
		cmocka_unit_test(test_rec_decode_fields),
		cmocka_unit_test(test_src_key_roundtrip),
		cmocka_unit_test(test_src_key_reject),
		cmocka_unit_test(test_user_key_short),
		cmocka_unit_test(test_user_key_long),
		cmocka_unit_test(test_user_key_folds_to),
		cmocka_unit_test(test_user_canon_fold_trim),
		cmocka_unit_test(test_user_strip),
		cmocka_unit_test(test_pair_key),
		cmocka_unit_test(test_pair_key_old),
		cmocka_unit_test(test_pair_merge),
		cmocka_unit_test(test_score_at),
		cmocka_unit_test(test_score_add),
		cmocka_unit_test(test_version_1_records),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
