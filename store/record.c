/* record.c - record validation, keys and decaying scores. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "record.h"

size_t ag_rec_size(enum ag_rec_kind kind)
{
	switch (kind) {
	case AG_REC_SRC: return sizeof(struct ag_src_rec);
	case AG_REC_USER: return sizeof(struct ag_user_rec);
	case AG_REC_PAIR: return sizeof(struct ag_pair_rec);
	case AG_REC_STATS: return sizeof(struct ag_stats);
	case AG_REC_PW: return sizeof(struct ag_pw_rec);
	case AG_REC_WAVE: return sizeof(struct ag_wave_rec);
	}
	return 0;
}

/* Largest score the store accepts; ag_score_add() stays below it. */
#define SCORE_MAX 1e12

static bool score_ok(const struct ag_score *s)
{
	return isfinite(s->v) && s->v >= 0 && s->v < SCORE_MAX && s->ts >= 0;
}

/* The size of a version 1 record of @kind: sources and users ended
 * before their slow count; pairs, stats, password and wave records are
 * unchanged. */
static size_t v1_size(enum ag_rec_kind kind)
{
	switch (kind) {
	case AG_REC_SRC: return offsetof(struct ag_src_rec, slow);
	case AG_REC_USER: return offsetof(struct ag_user_rec, slow);
	case AG_REC_PAIR:
	case AG_REC_STATS:
	case AG_REC_PW:
	case AG_REC_WAVE: return ag_rec_size(kind);
	}
	return 0;
}

int ag_rec_decode(enum ag_rec_kind kind, const void *data, size_t len, void *out)
{
	size_t want = ag_rec_size(kind);
	uint32_t version;

	if (data == NULL || want == 0 || len < sizeof(version))
		return AG_ECORRUPT;
	memcpy(&version, data, sizeof(version));
	if (version == 1 && len == v1_size(kind)) {
		/* an older record: the fields it has, the new ones at zero */
		memset(out, 0, want);
		memcpy(out, data, len);
		version = AG_REC_VERSION;
		memcpy(out, &version, sizeof(version));
	} else if (version == AG_REC_VERSION && len == want) {
		memcpy(out, data, want);
	} else {
		return AG_ECORRUPT;
	}
	switch (kind) {
	case AG_REC_SRC: {
		struct ag_src_rec *r = out;
		if (!score_ok(&r->fails) || !score_ok(&r->spray) || !score_ok(&r->slow) ||
		    r->recent_next >= AG_RECENT_USERS || r->ban_until < 0)
			return AG_ECORRUPT;
		return 0;
	}
	case AG_REC_USER: {
		struct ag_user_rec *r = out;
		if (!score_ok(&r->fails) || !score_ok(&r->slow) || r->lock_until < 0)
			return AG_ECORRUPT;
		return 0;
	}
	case AG_REC_PAIR: {
		struct ag_pair_rec *r = out;
		if (!score_ok(&r->fails) || r->pw_next >= AG_RECENT_PW || r->familiar_until < 0)
			return AG_ECORRUPT;
		for (int i = 0; i < AG_RECENT_PW; i++)
			if (r->pw_ts[i] < 0)
				return AG_ECORRUPT;
		return 0;
	}
	case AG_REC_STATS:
		return 0;
	case AG_REC_PW: {
		struct ag_pw_rec *r = out;
		if (!score_ok(&r->users) || r->tag_next >= AG_PW_TAGS || r->first_seen < 0 ||
		    r->last_seen < 0)
			return AG_ECORRUPT;
		return 0;
	}
	case AG_REC_WAVE: {
		struct ag_wave_rec *r = out;
		if (!score_ok(&r->fast) || !score_ok(&r->base) || r->active > 1 ||
		    r->first_seen < 0 || r->since < 0 || r->ended < 0)
			return AG_ECORRUPT;
		return 0;
	}
	}
	return AG_ECORRUPT;
}

void ag_src_key(const struct ag_addr *a, uint8_t key[AG_SRC_KEY_LEN])
{
	key[0] = a->family;
	key[1] = a->plen;
	memcpy(key + 2, a->b, 16);
}

int ag_src_key_decode(const uint8_t *key, size_t len, struct ag_addr *a_r)
{
	struct ag_addr a, m;

	memset(a_r, 0, sizeof(*a_r));
	if (len != AG_SRC_KEY_LEN || (key[0] != AG_AF_INET && key[0] != AG_AF_INET6))
		return AG_ECORRUPT;
	a.family = key[0];
	a.plen = key[1];
	memcpy(a.b, key + 2, 16);
	if (a.plen > ag_addr_width(&a))
		return AG_ECORRUPT;
	ag_addr_prefix(&a, a.plen, &m);
	if (memcmp(&m, &a, sizeof(a)) != 0)
		return AG_ECORRUPT;
	*a_r = a;
	return 0;
}

size_t ag_user_key(const uint8_t secret[16], const char *user, size_t len,
		   uint8_t key[AG_USER_KEY_MAX])
{
	if (len <= 200) {
		memcpy(key, user, len);
		return len;
	}
	uint8_t k2[16];
	for (int i = 0; i < 16; i++)
		k2[i] = (uint8_t)(secret[i] ^ 0x5a);
	uint64_t h1 = ag_siphash(secret, user, len), h2 = ag_siphash(k2, user, len);
	memcpy(key, user, 184);
	key[184] = 0;
	memcpy(key + 185, &h1, 8);
	memcpy(key + 193, &h2, 8);
	return AG_USER_KEY_MAX;
}

/* Keys of their own, so that neither hash says anything about the
 * other (the pair's 16-bit password hash uses the secret itself). */
static void derived_key(const uint8_t secret[16], uint8_t mark, uint8_t k[16])
{
	for (int i = 0; i < 16; i++)
		k[i] = (uint8_t)(secret[i] ^ mark);
}

void ag_pw_key(const uint8_t secret[16], const void *pw, size_t len, uint8_t key[AG_PW_KEY_LEN])
{
	uint8_t k[16];

	derived_key(secret, 0xa5, k);
	uint64_t h = ag_siphash(k, pw, len);
	for (int i = 0; i < AG_PW_KEY_LEN; i++)
		key[i] = (uint8_t)(h >> (8 * i));
}

uint16_t ag_pw_user_tag(const uint8_t secret[16], uint32_t user_hash)
{
	uint8_t k[16];

	derived_key(secret, 0x3c, k);
	uint16_t tag = (uint16_t)ag_siphash(k, &user_hash, sizeof(user_hash));
	return tag != 0 ? tag : 1; /* 0 is an empty place */
}

/* The bytes user_fold trims at both ends of a name: what libsasl2's own
 * canonicalisation trims (isspace() in the C locale), so every front end
 * files a name under the key libsasl2 authenticates it as. Fixed, not
 * the process's locale: the store is shared by daemons in any locale. */
static bool user_blank(char ch)
{
	return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

void ag_user_trim(const char *s, size_t len, size_t *a_r, size_t *b_r)
{
	size_t a = 0, b = len;

	while (a < b && user_blank(s[a]))
		a++;
	while (b > a && user_blank(s[b - 1]))
		b--;
	*a_r = a;
	*b_r = b;
}

static char lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

size_t ag_user_strip(bool fold, const char *user, size_t len, char *const *domains, size_t n)
{
	size_t a = 0, b = len;

	if (n == 0)
		return len;
	if (fold)
		ag_user_trim(user, len, &a, &b);
	const char *at = NULL;
	for (size_t i = b; i > a && at == NULL; i--)
		if (user[i - 1] == '@')
			at = user + i - 1;
	if (at == NULL)
		return len;
	size_t keep = (size_t)(at - user), dlen = b - keep - 1;
	size_t ka, kb;
	ag_user_trim(user, keep, &ka, &kb);
	if (kb == ka)
		return len; /* "@example.org": no user left */
	for (size_t i = 0; i < n; i++) {
		if (strlen(domains[i]) != dlen)
			continue;
		size_t j = 0;
		while (j < dlen && lower(at[1 + j]) == domains[i][j])
			j++;
		if (j == dlen)
			return keep;
	}
	return len;
}

int ag_user_canon(const uint8_t secret[16], bool fold, const char *user, size_t len,
		  uint8_t key[AG_USER_KEY_MAX], size_t *klen_r, uint32_t *hash_r)
{
	char small[256], *buf = small;
	const char *name = user;
	size_t n = len;

	if (fold) {
		size_t a, b;
		ag_user_trim(user, len, &a, &b);
		if (b > a) {
			n = b - a;
			if (n > sizeof(small) && (buf = malloc(n)) == NULL)
				return AG_ENOMEM;
			for (size_t i = 0; i < n; i++)
				buf[i] = lower(user[a + i]);
			name = buf;
		}
	}
	*klen_r = ag_user_key(secret, name, n, key);
	/* never 0: 0 marks an empty slot in a source's recent-users ring */
	*hash_r = (uint32_t)ag_siphash(secret, name, n) | 1u;
	if (buf != small)
		free(buf);
	return 0;
}

/* The name a user key shows: all of it, or the first 184 bytes of a long
 * name's key. */
static size_t key_shown(const uint8_t *key, size_t len)
{
	return len == AG_USER_KEY_MAX && key[184] == 0 ? 184 : len;
}

bool ag_user_key_folds_to(bool fold, const uint8_t *xkey, size_t xlen, const uint8_t *ukey,
			  size_t ulen)
{
	const char *x = (const char *)xkey;
	size_t shown = key_shown(xkey, xlen), a, b;

	if (xlen == ulen && memcmp(xkey, ukey, ulen) == 0)
		return true;
	if (!fold)
		return false;
	ag_user_trim(x, shown, &a, &b);
	if (b == a)
		return false; /* blanks only: a short name is kept as it is */
	if (shown == xlen) {
		/* the whole name (at most 200 bytes): fold it and compare */
		if (b - a != ulen)
			return false;
		for (size_t i = 0; i < ulen; i++)
			if (lower(x[a + i]) != (char)ukey[i])
				return false;
		return true;
	}
	/* a long name, known by its first 184 bytes: those, folded, must
	 * begin the folded name */
	if (b - a > key_shown(ukey, ulen))
		return false;
	for (size_t i = a; i < b; i++)
		if (lower(x[i]) != (char)ukey[i - a])
			return false;
	return true;
}

size_t ag_pair_key(const uint8_t skey[AG_SRC_KEY_LEN], const uint8_t *ukey, size_t ulen,
		   uint8_t key[AG_SRC_PAIR_KEY_MAX])
{
	memcpy(key, skey, AG_SRC_KEY_LEN);
	key[AG_SRC_KEY_LEN] = AG_PAIR_TAG;
	memcpy(key + AG_SRC_KEY_LEN + 1, ukey, ulen);
	return AG_SRC_KEY_LEN + 1 + ulen;
}

size_t ag_pair_key_old(const uint8_t *ukey, size_t ulen, const uint8_t skey[AG_SRC_KEY_LEN],
		       uint8_t key[AG_PAIR_KEY_MAX])
{
	key[0] = (uint8_t)(ulen >> 8);
	key[1] = (uint8_t)ulen;
	memcpy(key + 2, ukey, ulen);
	memcpy(key + 2 + ulen, skey, AG_SRC_KEY_LEN);
	return 2 + ulen + AG_SRC_KEY_LEN;
}

/* The source part of a pair key: all zero ("no address") or a source. */
static int pair_src(const uint8_t *s, struct ag_addr *src_r)
{
	for (int i = 0; i < AG_SRC_KEY_LEN; i++)
		if (s[i] != 0)
			return ag_src_key_decode(s, AG_SRC_KEY_LEN, src_r);
	memset(src_r, 0, sizeof(*src_r));
	return 0;
}

int ag_pair_key_decode(const uint8_t *key, size_t len, bool old, const uint8_t **ukey_r,
		       size_t *ulen_r, struct ag_addr *src_r)
{
	const uint8_t *s;
	size_t n;

	memset(src_r, 0, sizeof(*src_r));
	if (old) {
		if (len < 2 + 1 + AG_SRC_KEY_LEN)
			return AG_ECORRUPT;
		n = ((size_t)key[0] << 8) | key[1];
		if (len != 2 + n + AG_SRC_KEY_LEN)
			return AG_ECORRUPT;
		*ukey_r = key + 2;
		s = key + 2 + n;
	} else {
		if (len < AG_SRC_KEY_LEN + 2 || len > AG_SRC_PAIR_KEY_MAX ||
		    key[AG_SRC_KEY_LEN] != AG_PAIR_TAG)
			return AG_ECORRUPT;
		n = len - AG_SRC_KEY_LEN - 1;
		*ukey_r = key + AG_SRC_KEY_LEN + 1;
		s = key;
	}
	if (n > AG_USER_KEY_MAX || pair_src(s, src_r) != 0) {
		memset(src_r, 0, sizeof(*src_r));
		return AG_ECORRUPT;
	}
	*ulen_r = n;
	return 0;
}

/* The wrong passwords of @a and @b, the latest of each hash, the
 * AG_RECENT_PW latest of all, oldest first (so pw_next names the oldest). */
static void merge_pw(struct ag_pair_rec *a, const struct ag_pair_rec *b)
{
	uint16_t h[2 * AG_RECENT_PW];
	int64_t ts[2 * AG_RECENT_PW];
	unsigned n = 0;

	for (int k = 0; k < 2; k++) {
		const struct ag_pair_rec *p = k == 0 ? a : b;
		for (int i = 0; i < AG_RECENT_PW; i++) {
			unsigned j = 0;
			if (p->pw_ts[i] == 0)
				continue;
			while (j < n && h[j] != p->pw[i])
				j++;
			if (j == n) {
				h[n] = p->pw[i];
				ts[n++] = p->pw_ts[i];
			} else if (p->pw_ts[i] > ts[j]) {
				ts[j] = p->pw_ts[i];
			}
		}
	}
	for (unsigned i = 1; i < n; i++) /* by time, newest first */
		for (unsigned j = i; j > 0 && ts[j] > ts[j - 1]; j--) {
			uint16_t th = h[j];
			int64_t tt = ts[j];
			h[j] = h[j - 1];
			ts[j] = ts[j - 1];
			h[j - 1] = th;
			ts[j - 1] = tt;
		}
	if (n > AG_RECENT_PW)
		n = AG_RECENT_PW;
	memset(a->pw, 0, sizeof(a->pw));
	memset(a->pw_ts, 0, sizeof(a->pw_ts));
	for (unsigned i = 0; i < n; i++) {
		a->pw[i] = h[n - 1 - i];
		a->pw_ts[i] = ts[n - 1 - i];
	}
	a->pw_next = n % AG_RECENT_PW;
}

void ag_wave_merge(struct ag_wave_rec *w, const struct ag_wave_rec *other, int64_t now,
		   int64_t fast_half_life, int64_t base_half_life)
{
	double fast = ag_score_at(&other->fast, now, fast_half_life);
	double base = ag_score_at(&other->base, now, base_half_life);

	if (fast > 0)
		ag_score_add(&w->fast, fast, now, fast_half_life);
	if (base > 0)
		ag_score_add(&w->base, base, now, base_half_life);
	if (other->first_seen != 0 && (w->first_seen == 0 || other->first_seen < w->first_seen))
		w->first_seen = other->first_seen;
}

void ag_pair_merge(struct ag_pair_rec *r, const struct ag_pair_rec *other, int64_t now,
		   int64_t half_life)
{
	double theirs = ag_score_at(&other->fails, now, half_life);

	if (theirs > 0)
		ag_score_add(&r->fails, theirs, now, half_life);
	merge_pw(r, other);
	if (other->last_success > r->last_success ||
	    (other->last_success == r->last_success && other->familiar_until > r->familiar_until)) {
		r->last_success = other->last_success;
		r->familiar_until = other->familiar_until;
	}
	if (other->last_seen > r->last_seen)
		r->last_seen = other->last_seen;
}

double ag_score_at(const struct ag_score *s, int64_t now, int64_t half_life)
{
	if (s->v <= 0)
		return 0;
	if (now <= s->ts || half_life <= 0)
		return s->v;
	double v = s->v * exp2(-(double)(now - s->ts) / (double)half_life);
	return v < 1e-6 ? 0 : v;
}

void ag_score_add(struct ag_score *s, double n, int64_t now, int64_t half_life)
{
	double v = ag_score_at(s, now, half_life) + n;
	s->v = v < SCORE_MAX ? v : nextafter(SCORE_MAX, 0);
	if (now > s->ts)
		s->ts = now;
}
