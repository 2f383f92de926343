/*
 * fuzz_record.c - libFuzzer harness for stored records (store/record.c)
 * and the rules that read them (store/policy.c).
 *
 * The store is a file any bug, crash or disk fault may damage; what is
 * read back must never crash or mislead the rules. The input is used two
 * ways:
 *  - whole: ag_rec_decode() for each kind, ag_src_key_decode() and
 *    ag_pair_key_decode() on it (a record or key is accepted only at its
 *    exact size);
 *  - structured (fuzz_record.h): an 8-byte header (view flags, config,
 *    clock, password and user hashes) then a source, network, user and
 *    pair record, each decoded as the guard does (a record that does not
 *    decode is replaced by a fresh one).
 * Checked:
 *  - a decoded record's scores decay (ag_score_at) to finite values in
 *    [0, stored value] at any time and half-life, and add finitely;
 *  - a decoded source key is a well-formed host or network that encodes
 *    (ag_src_key) back to the same bytes; a rejected one is AG_AF_NONE;
 *    the same for the input as a pair key of either layout
 *    (ag_pair_key_decode: the source database's since issue 15.3, the
 *    old pair database's), whose user key lies inside it;
 *  - a decoded pair merged (ag_pair_merge) with itself and into a fresh
 *    one: finite counts, the password ring in range, no hash made up,
 *    familiarity and times as the merge says;
 *  - ag_policy_check, ag_policy_record, ag_policy_check again, and the
 *    dead/weak/familiar tests, with decoded records under fixed configs
 *    and clocks: no crash and no undefined behaviour (UBSan aborts); a
 *    verdict with a known action, a delay within [0, tarpit cap] exactly
 *    when tarpitting, finite non-negative scores; deny and trusted
 *    honoured; bans and locks that start lie in the future and within
 *    their configured length; every record the policy changes is marked
 *    for writing, and every record it writes decodes again.
 */
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "addr.h"
#include "conf.h"
#include "fuzz.h"
#include "fuzz_record.h"
#include "policy.h"
#include "record.h"

#define SEC 1000LL
#define DAY (86400LL * SEC)

static const int64_t clocks[] = { FUZZ_REC_NOW, 0, 253402300799999LL };
static const int64_t half_lives[] = { SEC, 10 * 60 * SEC, 365 * DAY };

enum { NCONF = 3 };
static struct ag_conf confs[NCONF];

static void set(struct ag_conf *c, const char *k, const char *v)
{
	char err[256];

	CHECK(ag_conf_set(c, k, v, err, sizeof(err)) == 0, "harness config %s=%s: %s", k, v, err);
}

/* The defaults; everything at its harshest; everything at its mildest. */
static void setup(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	for (int i = 0; i < NCONF; i++)
		ag_conf_init(&confs[i]);
	struct ag_conf *c = &confs[1];
	set(c, "decay_half_life", "365d");
	set(c, "tarpit_free", "0");
	set(c, "tarpit_base", "60s");
	set(c, "tarpit_max", "0");
	set(c, "ip_ban_after", "1");
	set(c, "ip_ban_time", "365d");
	set(c, "ip_ban_max", "365d");
	set(c, "net_ban_after", "1");
	set(c, "spray_users", "1");
	set(c, "user_lock_after", "1");
	set(c, "user_lock_time", "365d");
	set(c, "familiar_ttl", "3650d");
	set(c, "spray_password_users", "1");
	set(c, "wave_factor", "1");
	set(c, "wave_min_failures", "1");
	set(c, "wave_baseline", "1h");
	c = &confs[2];
	set(c, "spray_password_users", "0");
	set(c, "wave_factor", "0");
	set(c, "decay_half_life", "1s");
	set(c, "tarpit_free", "1000000");
	set(c, "tarpit_base", "1ms");
	set(c, "tarpit_max", "60s");
	set(c, "ip_ban_after", "0");
	set(c, "ip_ban_time", "1s");
	set(c, "ip_ban_max", "1s");
	set(c, "net_ban_after", "1000000");
	set(c, "spray_users", "0");
	set(c, "user_lock_after", "1000000");
	set(c, "user_lock_time", "1s");
	set(c, "familiar_ttl", "1s");
}

static void check_score(const struct ag_score *s, const char *what)
{
	for (size_t i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
		for (size_t j = 0; j < sizeof(half_lives) / sizeof(half_lives[0]); j++) {
			double v = ag_score_at(s, clocks[i], half_lives[j]);
			CHECK(isfinite(v) && v >= 0 && v <= s->v,
			      "%s: score %.17g at %lld decays to %.17g", what, s->v,
			      (long long)clocks[i], v);
			struct ag_score t = *s;
			ag_score_add(&t, 1, clocks[i], half_lives[j]);
			CHECK(isfinite(t.v) && t.v >= 1 && t.ts >= s->ts,
			      "%s: adding to score %.17g gave %.17g", what, s->v, t.v);
		}
	}
}

static void check_decoded(enum ag_rec_kind kind, const void *r)
{
	switch (kind) {
	case AG_REC_SRC: {
		const struct ag_src_rec *s = r;
		CHECK(s->version == AG_REC_VERSION, "src version %u", s->version);
		check_score(&s->fails, "src fails");
		check_score(&s->spray, "src spray");
		check_score(&s->slow, "src slow");
		break;
	}
	case AG_REC_USER: {
		const struct ag_user_rec *u = r;
		CHECK(u->version == AG_REC_VERSION, "user version %u", u->version);
		check_score(&u->fails, "user fails");
		check_score(&u->slow, "user slow");
		break;
	}
	case AG_REC_PAIR: {
		const struct ag_pair_rec *p = r;
		CHECK(p->version == AG_REC_VERSION, "pair version %u", p->version);
		check_score(&p->fails, "pair fails");
		break;
	}
	case AG_REC_STATS:
		break;
	case AG_REC_PW: {
		const struct ag_pw_rec *w = r;
		CHECK(w->version == AG_REC_VERSION && w->tag_next < AG_PW_TAGS, "pw record");
		check_score(&w->users, "pw users");
		break;
	}
	case AG_REC_WAVE: {
		const struct ag_wave_rec *w = r;
		CHECK(w->version == AG_REC_VERSION && w->active <= 1, "wave record");
		check_score(&w->fast, "wave fast");
		check_score(&w->base, "wave base");
		break;
	}
	}
}

/* A pair found in both places (an older module's copy) merges into one
 * that is sane: the counts add up finitely, the password ring stays in
 * range, the later login's familiarity and the later time are kept. */
static void check_pair_merge(const struct ag_pair_rec *r)
{
	static const struct ag_pair_rec fresh = { .version = AG_REC_VERSION };

	for (size_t i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
		for (size_t j = 0; j < sizeof(half_lives) / sizeof(half_lives[0]); j++) {
			struct ag_pair_rec m = *r, n = fresh;
			ag_pair_merge(&m, r, clocks[i], half_lives[j]);
			double v = ag_score_at(&m.fails, clocks[i], half_lives[j]);
			CHECK(isfinite(v) && v >= 0, "merged pair fails %.17g", v);
			CHECK(m.pw_next < AG_RECENT_PW, "merged pair pw_next %u", m.pw_next);
			CHECK(m.familiar_until == r->familiar_until && m.last_seen == r->last_seen &&
			      m.last_success == r->last_success, "merging a pair with itself moved its times");
			for (int k = 0; k < AG_RECENT_PW; k++) {
				bool kept = false;
				for (int l = 0; l < AG_RECENT_PW && m.pw_ts[k] != 0; l++)
					kept |= r->pw_ts[l] != 0 && r->pw[l] == m.pw[k];
				CHECK(m.pw_ts[k] == 0 || kept, "merge made up a password hash");
			}
			ag_pair_merge(&n, r, clocks[i], half_lives[j]);
			CHECK(n.familiar_until == (r->last_success > 0 ? r->familiar_until : 0) ||
			      (r->last_success == 0 && n.familiar_until == r->familiar_until),
			      "merged into a fresh pair, familiarity %lld of %lld",
			      (long long)n.familiar_until, (long long)r->familiar_until);
		}
	}
}

static void check_key(const uint8_t *key, size_t len)
{
	struct ag_addr a;
	uint8_t back[AG_SRC_KEY_LEN];
	char text[AG_ADDR_STRLEN];

	memset(&a, 0xee, sizeof(a));
	if (ag_src_key_decode(key, len, &a) != 0) {
		CHECK(a.family == AG_AF_NONE, "rejected key left family %u", a.family);
		return;
	}
	unsigned w = ag_addr_width(&a);
	CHECK(len == AG_SRC_KEY_LEN && w != 0 && a.plen <= w, "key decoded to family %u plen %u",
	      a.family, a.plen);
	struct ag_addr m;
	ag_addr_prefix(&a, a.plen, &m);
	CHECK(memcmp(&m, &a, sizeof(a)) == 0, "decoded key has bits past its prefix");
	ag_src_key(&a, back);
	CHECK(memcmp(back, key, AG_SRC_KEY_LEN) == 0, "key does not encode back to its bytes");
	ag_addr_format(&a, text, sizeof(text));
	CHECK(strcmp(text, "none") != 0, "decoded key formats as none");
}

/* A pair key of either layout (record.h): one that decodes names a user
 * key inside it and a source that is none or a well-formed one, and
 * encodes back to the same bytes; a source record's key is never a pair
 * key in the source database. */
static void check_pair_key(const uint8_t *key, size_t len, bool old)
{
	const uint8_t *ukey = NULL;
	size_t ulen = 0;
	struct ag_addr a;
	uint8_t skey[AG_SRC_KEY_LEN] = { 0 }, back[AG_PAIR_KEY_MAX];

	memset(&a, 0xee, sizeof(a));
	if (ag_pair_key_decode(key, len, old, &ukey, &ulen, &a) != 0) {
		CHECK(a.family == AG_AF_NONE, "rejected pair key left family %u", a.family);
		return;
	}
	CHECK(ulen >= 1 && ulen <= AG_USER_KEY_MAX && ukey >= key && ukey + ulen <= key + len,
	      "pair key's user key of %zu bytes outside the key", ulen);
	CHECK(old || len != AG_SRC_KEY_LEN, "a source key decoded as a pair key");
	if (a.family != AG_AF_NONE) {
		CHECK(a.plen <= ag_addr_width(&a), "pair key's source plen %u", a.plen);
		ag_src_key(&a, skey);
	}
	size_t n = old ? ag_pair_key_old(ukey, ulen, skey, back) : ag_pair_key(skey, ukey, ulen, back);
	CHECK(n == len && memcmp(back, key, len) == 0, "pair key does not encode back to its bytes");
}

static void check_verdict(const struct ag_conf *c, const struct ag_view *v, int64_t now,
			  const struct ag_verdict *vd)
{
	int64_t cap = c->tarpit_max > c->tarpit_base ? c->tarpit_max : c->tarpit_base;

	CHECK(vd->action == AG_ACT_ALLOW || vd->action == AG_ACT_TARPIT ||
	      vd->action == AG_ACT_REFUSE, "action %d", (int)vd->action);
	CHECK(vd->delay_ms >= 0 && vd->delay_ms <= cap, "delay %lld, cap %lld",
	      (long long)vd->delay_ms, (long long)cap);
	CHECK((vd->action == AG_ACT_TARPIT) == (vd->delay_ms > 0),
	      "action %d with delay %lld", (int)vd->action, (long long)vd->delay_ms);
	CHECK(isfinite(vd->src_score) && vd->src_score >= 0, "src_score %.17g", vd->src_score);
	CHECK(isfinite(vd->user_score) && vd->user_score >= 0, "user_score %.17g", vd->user_score);
	if (v->denied)
		CHECK(vd->action == AG_ACT_REFUSE && vd->reason == AG_WHY_DENY, "deny not refused");
	else if (v->trusted)
		CHECK(vd->action == AG_ACT_ALLOW && vd->reason == AG_WHY_TRUSTED,
		      "trusted not allowed");
	if (vd->action == AG_ACT_REFUSE && vd->reason != AG_WHY_DENY)
		CHECK(vd->until > now, "refused until %lld, now %lld", (long long)vd->until,
		      (long long)now);
	(void)ag_tarpit_delay(c, vd->src_score);
}

/* Every record the policy changed is marked for writing, and decodes. */
static void check_written(const struct ag_view *before, const struct ag_view *v)
{
	uint8_t tmp[512];

#define WRITTEN(field, flag, kind)                                                          \
	do {                                                                                \
		if (v->flag)                                                                \
			CHECK(ag_rec_decode(kind, &v->field, sizeof(v->field), tmp) == 0,   \
			      "the policy writes a " #field " record the store cannot read"); \
		else                                                                        \
			CHECK(memcmp(&v->field, &before->field, sizeof(v->field)) == 0,     \
			      "the " #field " record changed but is not written back");      \
	} while (0)
	WRITTEN(src, w_src, AG_REC_SRC);
	WRITTEN(net, w_net, AG_REC_SRC);
	WRITTEN(user, w_user, AG_REC_USER);
	WRITTEN(pair, w_pair, AG_REC_PAIR);
	WRITTEN(pw, w_pw, AG_REC_PW);
	WRITTEN(wave, w_wave, AG_REC_WAVE);
#undef WRITTEN
}

static void check_gc(const struct ag_conf *c, const struct ag_view *v, int64_t now)
{
	(void)ag_src_dead(c, &v->src, now);
	(void)ag_src_dead(c, &v->net, now);
	(void)ag_user_dead(c, &v->user, now);
	(void)ag_pair_dead(c, &v->pair, now);
	(void)ag_src_weak(c, &v->src, now);
	(void)ag_src_weak(c, &v->net, now);
	(void)ag_user_weak(c, &v->user, now);
	(void)ag_pair_weak(c, &v->pair, now);
	(void)ag_pair_familiar(v, now);
	(void)ag_pw_dead(c, &v->pw, now);
	(void)ag_pw_hot(c, &v->pw, now);
	(void)ag_wave_on(c, &v->wave, now);
	CHECK(isfinite(ag_wave_level(c, &v->wave, now)), "wave level not finite");
}

/* One attempt as the guard runs it: check, (password), record, and the
 * next attempt's check. */
static void run_policy(const struct ag_conf *c, const struct ag_view *start, int64_t now,
		       bool success)
{
	struct ag_view v = *start, before;
	struct ag_verdict vd;
	struct ag_events ev;

	check_gc(c, &v, now);
	before = v;
	ag_policy_check(c, &v, now, &vd);
	check_verdict(c, &v, now, &vd);
	check_written(&before, &v);

	before = v;
	ag_policy_record(c, &v, now, success, &ev);
	check_written(&before, &v);
	if (ev.host_banned)
		CHECK(v.src.ban_until > now && v.src.ban_until - now <= c->ip_ban_max &&
		      ev.ban_until == v.src.ban_until, "host ban until %lld at %lld",
		      (long long)v.src.ban_until, (long long)now);
	if (ev.net_banned)
		CHECK(v.net.ban_until > now && v.net.ban_until - now <= c->ip_ban_max,
		      "net ban until %lld at %lld", (long long)v.net.ban_until, (long long)now);
	/* a lock on the slow count lasts user_slow_lock_time (longer) */
	if (ev.user_locked)
		CHECK(v.user.lock_until > now &&
		      v.user.lock_until - now <= (ev.slow_lock ? c->user_slow_lock_time : c->user_lock_time) &&
		      ev.lock_until == v.user.lock_until, "lock until %lld at %lld",
		      (long long)v.user.lock_until, (long long)now);
	if (ev.host_banned || ev.net_banned || ev.user_locked || ev.repeat_pw)
		CHECK(!success || ev.hot_refused, "a success banned, locked or repeated");
	if (ev.hot_refused)
		CHECK(success && ev.hot_pw && !ev.familiar, "a hot refusal of a failure or from home");
	check_gc(c, &v, now);

	before = v;
	ag_policy_check(c, &v, now, &vd);
	check_verdict(c, &v, now, &vd);
	check_written(&before, &v);
	check_gc(c, &v, now + 1);
}

static void view_flags(struct ag_view *v, unsigned f)
{
	v->has_addr = (f & FUZZ_REC_ADDR) != 0;
	v->has_user = (f & FUZZ_REC_USER) != 0;
	v->trusted = (f & FUZZ_REC_TRUSTED) != 0;
	v->proxy = (f & FUZZ_REC_PROXY) != 0;
	v->denied = (f & FUZZ_REC_DENIED) != 0;
}

/* The whole input decoded as one record: try it in its place(s) in a view
 * under every config and clock. */
static void run_whole(enum ag_rec_kind kind, const void *r)
{
	struct ag_view v;
	static const unsigned flag_sets[] = {
		FUZZ_REC_ADDR | FUZZ_REC_USER,
		FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_PROXY,
		FUZZ_REC_USER,
	};

	for (int place = 0; place < 2; place++) {
		if (place == 1 && kind != AG_REC_SRC)
			break;
		for (size_t fs = 0; fs < sizeof(flag_sets) / sizeof(flag_sets[0]); fs++) {
			ag_view_init(&v);
			view_flags(&v, flag_sets[fs]);
			v.user_hash = 0x2468ace1u;
			switch (kind) {
			case AG_REC_SRC:
				if (place == 0)
					memcpy(&v.src, r, sizeof(v.src));
				else
					memcpy(&v.net, r, sizeof(v.net));
				v.user_hash = v.src.recent_users[0] | 1u;
				break;
			case AG_REC_USER: memcpy(&v.user, r, sizeof(v.user)); break;
			case AG_REC_PAIR:
				memcpy(&v.pair, r, sizeof(v.pair));
				v.pw_hash = v.pair.pw[fs % AG_RECENT_PW]; /* a remembered password */
				break;
			case AG_REC_PW:
				memcpy(&v.pw, r, sizeof(v.pw));
				v.has_pw = true;
				v.user_tag = v.pw.tags[fs % AG_PW_TAGS] | 1u; /* a counted user */
				break;
			case AG_REC_WAVE: memcpy(&v.wave, r, sizeof(v.wave)); break;
			case AG_REC_STATS: return;
			}
			for (int ci = 0; ci < NCONF; ci++)
				for (size_t t = 0; t < sizeof(clocks) / sizeof(clocks[0]); t++) {
					run_policy(&confs[ci], &v, clocks[t], false);
					run_policy(&confs[ci], &v, clocks[t], true);
				}
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum ag_rec_kind kinds[] = { AG_REC_SRC, AG_REC_USER, AG_REC_PAIR,
						  AG_REC_STATS, AG_REC_PW, AG_REC_WAVE };
	union {
		struct ag_src_rec s;
		struct ag_user_rec u;
		struct ag_pair_rec p;
		struct ag_stats st;
		struct ag_pw_rec w;
		struct ag_wave_rec wv;
	} r;

	setup();

	/* whole */
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		CHECK(ag_rec_size(kinds[i]) <= sizeof(r), "record larger than expected");
		if (ag_rec_decode(kinds[i], data, size, &r) == 0) {
			/* a version 1 source or user is shorter (no slow count) */
			uint32_t ver;
			memcpy(&ver, data, sizeof(ver));
			CHECK(size == ag_rec_size(kinds[i]) ||
				      (ver == 1 && size < ag_rec_size(kinds[i]) &&
				       (kinds[i] == AG_REC_SRC || kinds[i] == AG_REC_USER)),
			      "decoded %zu bytes as kind %d", size, (int)kinds[i]);
			check_decoded(kinds[i], &r);
			if (kinds[i] == AG_REC_PAIR)
				check_pair_merge(&r.p);
			run_whole(kinds[i], &r);
		}
	}
	check_key(data, size);
	if (size >= AG_SRC_KEY_LEN)
		check_key(data, AG_SRC_KEY_LEN);
	check_pair_key(data, size, false);
	check_pair_key(data, size, true);

	/* structured */
	if (size < FUZZ_REC_HDR)
		return 0;
	unsigned f = data[0];
	struct ag_view v;
	ag_view_init(&v);
	view_flags(&v, f);
	const struct ag_conf *c = &confs[(data[1] & 0x0f) % NCONF];
	int64_t now = clocks[(data[1] >> 4) % (sizeof(clocks) / sizeof(clocks[0]))];
	bool success = (f & FUZZ_REC_SUCCESS) != 0;
	v.pw_hash = (f & FUZZ_REC_PW) ? (int)(data[2] | (unsigned)data[3] << 8) : -1;
	v.user_hash = ((uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 |
		       (uint32_t)data[7] << 24) | 1u;

	size_t off = FUZZ_REC_HDR;
	struct {
		enum ag_rec_kind kind;
		void *dst;
	} slots[] = {
		{ AG_REC_SRC, &v.src },
		{ AG_REC_SRC, &v.net },
		{ AG_REC_USER, &v.user },
		{ AG_REC_PAIR, &v.pair },
		{ AG_REC_PW, &v.pw },
		{ AG_REC_WAVE, &v.wave },
	};
	for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
		size_t n = ag_rec_size(slots[i].kind);
		if (size - off < n)
			break;
		if (ag_rec_decode(slots[i].kind, data + off, n, &r) == 0) {
			check_decoded(slots[i].kind, &r);
			memcpy(slots[i].dst, &r, n);
			if (slots[i].kind == AG_REC_PW) {
				v.has_pw = true;
				v.user_tag = (uint16_t)(v.user_hash >> 16) | 1u;
			}
		}
		off += n;
	}
	run_policy(c, &v, now, success);
	return 0;
}
