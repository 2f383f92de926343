/* policy.c - bans, tarpit, lockout and familiarity as pure functions. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "policy.h"

const char *ag_reason_name(enum ag_reason r)
{
	switch (r) {
	case AG_WHY_NONE: return "none";
	case AG_WHY_TRUSTED: return "trusted";
	case AG_WHY_DENY: return "deny";
	case AG_WHY_BANNED: return "banned";
	case AG_WHY_NET_BANNED: return "net_banned";
	case AG_WHY_LOCKED: return "locked";
	case AG_WHY_TARPIT_FULL: return "tarpit_full";
	case AG_WHY_FAULT: return "fault";
	case AG_WHY_FAILURES: return "failures";
	case AG_WHY_SPRAY: return "spray";
	case AG_WHY_ADMIN: return "admin";
	case AG_WHY_SCORE: return "score";
	case AG_WHY_HOT_PASSWORD: return "hot_password";
	case AG_WHY_WAVE: return "wave";
	case AG_WHY_SLOW: return "slow";
	case AG_WHY_INFLIGHT: return "inflight";
	}
	return "unknown";
}

const char *ag_action_name(enum ag_action a)
{
	switch (a) {
	case AG_ACT_ALLOW: return "allow";
	case AG_ACT_TARPIT: return "tarpit";
	case AG_ACT_REFUSE: return "refuse";
	}
	return "unknown";
}

void ag_view_init(struct ag_view *v)
{
	memset(v, 0, sizeof(*v));
	v->pw_hash = -1;
	v->src.version = v->net.version = AG_REC_VERSION;
	v->user.version = v->pair.version = AG_REC_VERSION;
	v->pw.version = v->wave.version = AG_REC_VERSION;
	for (unsigned i = 0; i < AG_PREFIX_LEVELS - 1; i++)
		v->wide[i].version = AG_REC_VERSION;
}

/* Scores are counts that fade; a rule sees the faded count rounded to the
 * nearest whole number, so ten failures in a quick burst are "10", not
 * 9.98, and a threshold means what an admin reads in it. */
static double count(double score)
{
	return floor(score + 0.5);
}

static bool reached(double score, uint32_t threshold)
{
	return threshold > 0 && count(score) >= threshold;
}

int64_t ag_tarpit_delay(const struct ag_conf *c, double n)
{
	double k = count(n);

	if (!(k >= 1) || c->tarpit_base <= 0)
		return 0;
	if (k < c->tarpit_free)
		return 0;
	double e = k - c->tarpit_free;
	int64_t cap = c->tarpit_max > c->tarpit_base ? c->tarpit_max : c->tarpit_base;
	if (e >= 62 || c->tarpit_base > (cap >> (int)e))
		return cap;
	return c->tarpit_base << (int)e;
}

/* Source rules (bans, tarpit by host score) apply to real, non-proxy addresses. */
static bool source_rules(const struct ag_view *v)
{
	return v->has_addr && !v->proxy && !v->trusted;
}

bool ag_pair_familiar(const struct ag_view *v, int64_t now)
{
	return v->has_addr && v->has_user && !v->proxy && v->pair.familiar_until > now;
}

/* How many failures of a familiar place for its user end its familiarity:
 * as many as a host may fail before it is banned, else as many as lock the
 * user, else as many as ban a network. 0: never. */
static uint32_t familiar_bound(const struct ag_conf *c)
{
	if (c->ip_ban_after > 0)
		return c->ip_ban_after;
	return c->user_lock_after > 0 ? c->user_lock_after : c->net_ban_after;
}

static void touch_src(struct ag_src_rec *r, int64_t now)
{
	if (r->first_seen == 0)
		r->first_seen = now;
	r->last_seen = now;
}

static void refuse(struct ag_view *v, int64_t now, struct ag_verdict *out, enum ag_reason why,
		   int64_t until)
{
	out->action = AG_ACT_REFUSE;
	out->reason = why;
	out->until = until;
	if (v->has_addr) {
		v->src.n_refused++;
		touch_src(&v->src, now);
		v->w_src = true;
	}
	if (v->has_user) {
		v->user.n_refused++;
		v->user.last_seen = now;
		v->w_user = true;
	}
}

/* During an attack wave, a source unfamiliar to the user sleeps from its
 * first try (at least tarpit_base): a flood of fresh addresses then holds
 * the bounded tarpit slots and the rest is refused (tarpit_full), while
 * the places users log in from are not touched. Not a lock: the user's
 * new phone waits tarpit_base, logs in, and is familiar from then on. */
static void wave_check(const struct ag_conf *c, const struct ag_view *v, int64_t now,
		       struct ag_verdict *out)
{
	out->wave = ag_wave_on(c, &v->wave, now);
	if (!out->wave || out->familiar || c->tarpit_base <= 0 || (!v->has_addr && !v->has_user))
		return;
	if (out->delay_ms >= c->tarpit_base)
		return; /* the score's tarpit is longer */
	out->action = AG_ACT_TARPIT;
	out->reason = AG_WHY_WAVE;
	out->delay_ms = c->tarpit_base;
}

/* ---- issue 14: wider networks, the slow time scale, attempts in flight -- */

/* The slow count's threshold of a rule whose fast one is @fast: the slow
 * scale is the same rule's second time scale, so it is off with the rule
 * (@fast 0) and never below it (a quick burst is the fast rule's). */
static uint32_t slow_threshold(uint32_t fast, uint32_t slow)
{
	if (fast == 0 || slow == 0)
		return 0;
	return slow > fast ? slow : fast;
}

/* The end of the latest ban on a wider network of the host, 0: none. */
static int64_t wide_banned(const struct ag_view *v, int64_t now)
{
	int64_t until = 0;

	for (unsigned i = 0; i < v->n_wide; i++)
		if (v->wide[i].ban_until > now && v->wide[i].ban_until > until)
			until = v->wide[i].ban_until;
	return until;
}

/* True when @n recorded failures and @flight attempts in flight would
 * reach @threshold if all of those failed: this attempt would go past
 * it. Only when something is in flight: without, the thresholds act when
 * failures are recorded, as they always have. */
static bool with_flight(double n, uint32_t flight, uint32_t threshold)
{
	return flight > 0 && threshold > 0 && count(n) + flight >= threshold;
}

/* An attempt that, with those already in flight (checked, not yet
 * recorded), would take a source past ip_ban_after / ip_slow_ban_after
 * or an unfamiliar place past user_lock_after / user_slow_lock_after:
 * a parallel burst is held to the thresholds. */
static bool inflight_full(const struct ag_conf *c, const struct ag_view *v, int64_t now,
			  const struct ag_verdict *out)
{
	if (source_rules(v) &&
	    (with_flight(out->src_score, v->flight_src, c->ip_ban_after) ||
	     with_flight(ag_score_at(&v->src.slow, now, c->slow_half_life), v->flight_src,
			 slow_threshold(c->ip_ban_after, c->ip_slow_ban_after))))
		return true;
	return v->has_user && !out->familiar &&
	       (with_flight(out->user_score, v->flight_user, c->user_lock_after) ||
		with_flight(ag_score_at(&v->user.slow, now, c->slow_half_life), v->flight_user,
			    slow_threshold(c->user_lock_after, c->user_slow_lock_after)));
}

void ag_policy_check(const struct ag_conf *c, struct ag_view *v, int64_t now,
		     struct ag_verdict *out)
{
	memset(out, 0, sizeof(*out));
	out->familiar = ag_pair_familiar(v, now);
	out->user_locked = v->has_user && v->user.lock_until > now;
	out->user_score = ag_score_at(&v->user.fails, now, c->decay_half_life);
	/* deny wins over trusted: a denied host inside a trusted network
	 * (a compromised office machine) is refused */
	if (v->denied) {
		refuse(v, now, out, AG_WHY_DENY, 0);
		return;
	}
	if (v->trusted) {
		out->reason = AG_WHY_TRUSTED;
		return;
	}
	if (source_rules(v)) {
		out->src_score = ag_score_at(&v->src.fails, now, c->decay_half_life);
		if (v->src.ban_until > now) {
			refuse(v, now, out, AG_WHY_BANNED, v->src.ban_until);
			return;
		}
		/* A network ban spares a host this user has logged in from:
		 * that host did nothing wrong, its neighbours did. */
		if (v->net.ban_until > now && !out->familiar) {
			refuse(v, now, out, AG_WHY_NET_BANNED, v->net.ban_until);
			return;
		}
		int64_t wide_until = wide_banned(v, now);
		if (wide_until > 0 && !out->familiar) {
			refuse(v, now, out, AG_WHY_NET_BANNED, wide_until);
			return;
		}
	} else if (v->has_user) {
		out->src_score = ag_score_at(&v->pair.fails, now, c->decay_half_life);
	}
	if (out->user_locked && !out->familiar) {
		refuse(v, now, out, AG_WHY_LOCKED, v->user.lock_until);
		return;
	}
	if (inflight_full(c, v, now, out)) {
		refuse(v, now, out, AG_WHY_INFLIGHT, 0);
		return;
	}
	out->delay_ms = ag_tarpit_delay(c, out->src_score);
	if (out->delay_ms > 0) {
		out->action = AG_ACT_TARPIT;
		out->reason = AG_WHY_SCORE;
	}
	wave_check(c, v, now, out);
}

/* Ban @r now; the length doubles with each repeat ban, up to ip_ban_max.
 * The repeat count is forgotten after ip_ban_max without a ban. */
static int64_t ban(const struct ag_conf *c, struct ag_src_rec *r, int64_t now, enum ag_reason why)
{
	if (r->ban_until > 0 && now - r->ban_until > c->ip_ban_max)
		r->ban_count = 0;
	int64_t dur = c->ip_ban_time;
	for (uint32_t i = 0; i < r->ban_count && dur < c->ip_ban_max; i++)
		dur *= 2;
	if (dur > c->ip_ban_max)
		dur = c->ip_ban_max;
	r->ban_until = now + dur;
	r->ban_count++;
	r->ban_reason = why;
	r->ban_by_admin = 0;
	return r->ban_until;
}

/* True if the pair saw the wrong password @h lately (as note_password()
 * would say, without changing anything). */
static bool pair_repeats(const struct ag_conf *c, const struct ag_pair_rec *p, int h, int64_t now)
{
	if (h < 0)
		return false;
	for (int i = 0; i < AG_RECENT_PW; i++)
		if (p->pw_ts[i] != 0 && p->pw[i] == (uint16_t)h && now >= p->pw_ts[i] &&
		    now - p->pw_ts[i] <= 4 * c->decay_half_life)
			return true;
	return false;
}

bool ag_pw_hot(const struct ag_conf *c, const struct ag_pw_rec *r, int64_t now)
{
	return reached(ag_score_at(&r->users, now, c->decay_half_life), c->spray_password_users);
}

double ag_wave_level(const struct ag_conf *c, const struct ag_wave_rec *w, int64_t now)
{
	/* a steady rate r gives a faded count of r * half-life / ln 2 on
	 * either scale: the baseline's count scaled to the fast half-life is
	 * what the fast count would be at the learned rate */
	double expect = ag_score_at(&w->base, now, c->wave_baseline) *
			((double)c->decay_half_life / (double)c->wave_baseline);
	double level = (double)c->wave_factor * expect;
	return level > c->wave_min_failures ? level : (double)c->wave_min_failures;
}

static bool wave_learning(const struct ag_conf *c, const struct ag_wave_rec *w, int64_t now)
{
	return w->first_seen == 0 || now - w->first_seen < c->wave_baseline;
}

bool ag_wave_on(const struct ag_conf *c, const struct ag_wave_rec *w, int64_t now)
{
	if (c->wave_factor == 0 || wave_learning(c, w, now))
		return false;
	double fast = count(ag_score_at(&w->fast, now, c->decay_half_life));
	double level = ag_wave_level(c, w, now);
	return w->active ? fast >= level / 2 : fast >= level;
}

int ag_wave_note(const struct ag_conf *c, struct ag_wave_rec *w, int64_t now)
{
	bool was = ag_wave_on(c, w, now);
	int d = 0;

	if (w->first_seen == 0)
		w->first_seen = now;
	if (w->active && !was) { /* it faded away since the last failure */
		w->active = 0;
		w->ended = now;
		d = -1;
	}
	/* the level is judged against the baseline before this failure;
	 * the baseline learns every failure, waves included, so a change
	 * of the host's normal ends a wave by itself within about one
	 * wave_baseline */
	ag_score_add(&w->fast, 1, now, c->decay_half_life);
	bool on = ag_wave_on(c, w, now);
	ag_score_add(&w->base, 1, now, c->wave_baseline);
	if (on && !w->active) {
		w->active = 1;
		w->since = now;
		w->waves++;
		d = d < 0 ? 0 : 1;
	}
	return d;
}

/* Remember a wrong password's hash; true if it was seen recently. */
static bool note_password(const struct ag_conf *c, struct ag_pair_rec *p, int h, int64_t now)
{
	int64_t window = 4 * c->decay_half_life;

	if (h < 0)
		return false;
	for (int i = 0; i < AG_RECENT_PW; i++) {
		if (p->pw_ts[i] != 0 && p->pw[i] == (uint16_t)h && now - p->pw_ts[i] <= window &&
		    now >= p->pw_ts[i]) {
			p->pw_ts[i] = now;
			return true;
		}
	}
	p->pw[p->pw_next] = (uint16_t)h;
	p->pw_ts[p->pw_next] = now;
	p->pw_next = (p->pw_next + 1) % AG_RECENT_PW;
	return false;
}

/* Count a distinct user name failing from this source. */
static void note_user(const struct ag_conf *c, struct ag_src_rec *r, uint32_t uh, int64_t now)
{
	for (int i = 0; i < AG_RECENT_USERS; i++)
		if (r->recent_users[i] == uh && uh != 0)
			return;
	r->recent_users[r->recent_next] = uh;
	r->recent_next = (r->recent_next + 1) % AG_RECENT_USERS;
	ag_score_add(&r->spray, 1, now, c->decay_half_life);
}

/* Each wider network counts the failure and is banned at its own count:
 * addresses that rotate across the /64s of one /48 (or the /24s of a
 * /16) are one source there. */
static void record_wide_failure(const struct ag_conf *c, struct ag_view *v, int64_t now,
				struct ag_events *ev)
{
	int64_t hl = c->decay_half_life;

	for (unsigned i = 0; i < v->n_wide; i++) {
		struct ag_src_rec *r = &v->wide[i];
		ag_score_add(&r->fails, 1, now, hl);
		touch_src(r, now);
		r->n_fail++;
		v->w_wide[i] = true;
		if (r->ban_until > now || !reached(ag_score_at(&r->fails, now, hl), v->wide_after[i]))
			continue;
		int64_t until = ban(c, r, now, AG_WHY_FAILURES);
		if (!ev->host_banned && !ev->net_banned)
			ev->ban_until = until;
		ev->net_banned = true;
	}
}

static void record_source_failure(const struct ag_conf *c, struct ag_view *v, int64_t now,
				  struct ag_events *ev)
{
	int64_t hl = c->decay_half_life;

	ag_score_add(&v->src.fails, 1, now, hl);
	if (v->has_user)
		note_user(c, &v->src, v->user_hash, now);
	ag_score_add(&v->net.fails, 1, now, hl);
	touch_src(&v->net, now);
	v->net.n_fail++;
	v->w_net = true;
	ag_score_add(&v->src.slow, 1, now, c->slow_half_life);
	if (v->src.ban_until <= now) {
		if (reached(ag_score_at(&v->src.fails, now, hl), c->ip_ban_after))
			ev->ban_reason = AG_WHY_FAILURES;
		else if (reached(ag_score_at(&v->src.spray, now, hl), c->spray_users))
			ev->ban_reason = AG_WHY_SPRAY;
		else if (reached(ag_score_at(&v->src.slow, now, c->slow_half_life),
				 slow_threshold(c->ip_ban_after, c->ip_slow_ban_after)))
			ev->ban_reason = AG_WHY_SLOW;
		if (ev->ban_reason != AG_WHY_NONE) {
			ev->host_banned = true;
			ev->ban_until = ban(c, &v->src, now, ev->ban_reason);
		}
	}
	if (v->net.ban_until <= now && reached(ag_score_at(&v->net.fails, now, hl), c->net_ban_after)) {
		ev->net_banned = true;
		int64_t until = ban(c, &v->net, now, AG_WHY_FAILURES);
		if (!ev->host_banned)
			ev->ban_until = until;
	}
	record_wide_failure(c, v, now, ev);
}

static void record_user_failure(const struct ag_conf *c, struct ag_view *v, int64_t now,
				struct ag_events *ev)
{
	bool familiar = ev->familiar;

	ev->repeat_pw = note_password(c, &v->pair, v->pw_hash, now);
	ag_score_add(&v->pair.fails, 1, now, c->decay_half_life);
	v->pair.last_seen = now;
	v->w_pair = true;
	/* A familiar place that keeps failing for this user is familiar no
	 * more, until the user logs in from there again. For IPv4 the host is
	 * banned at that count anyway; for IPv6 the place is a whole prefix
	 * whose addresses rotate, one failure each (no host ban), and without
	 * this an attacker inside a familiar /64 could guess for ever: the net
	 * ban spares familiar places and their failures do not count toward
	 * the lock. The same wrong password again (a stale phone) does not
	 * end it; it gives a guesser nothing. */
	if (familiar && !ev->repeat_pw &&
	    reached(ag_score_at(&v->pair.fails, now, c->decay_half_life), familiar_bound(c))) {
		v->pair.familiar_until = 0;
		ev->familiar_lost = true;
	}
	v->user.n_fail++;
	v->user.last_seen = now;
	if (v->user.first_seen == 0)
		v->user.first_seen = now;
	v->w_user = true;
	if (familiar || ev->repeat_pw)
		return;
	ag_score_add(&v->user.fails, 1, now, c->decay_half_life);
	ag_score_add(&v->user.slow, 1, now, c->slow_half_life);
	if (v->user.lock_until > now)
		return;
	int64_t dur = 0;
	if (reached(ag_score_at(&v->user.fails, now, c->decay_half_life), c->user_lock_after))
		dur = c->user_lock_time;
	/* a patient campaign that stays under the fast count: locked for
	 * longer, on the slow count (see authguard.conf(5) for the budget) */
	if (reached(ag_score_at(&v->user.slow, now, c->slow_half_life),
		    slow_threshold(c->user_lock_after, c->user_slow_lock_after)) &&
	    c->user_slow_lock_time > dur) {
		dur = c->user_slow_lock_time;
		ev->slow_lock = true;
	}
	if (dur > 0) {
		v->user.lock_until = now + dur;
		v->user.lock_count++;
		ev->user_locked = true;
		ev->lock_until = v->user.lock_until;
	}
}

static void record_success(const struct ag_conf *c, struct ag_view *v, int64_t now)
{
	if (v->has_addr) {
		v->src.n_success++;
		touch_src(&v->src, now);
		v->w_src = true;
	}
	if (!v->has_user)
		return;
	v->user.n_success++;
	v->user.last_seen = now;
	if (v->user.first_seen == 0)
		v->user.first_seen = now;
	v->w_user = true;
	/* The pair is cleared; the source's failures against others stay. */
	memset(&v->pair.fails, 0, sizeof(v->pair.fails));
	memset(v->pair.pw, 0, sizeof(v->pair.pw));
	memset(v->pair.pw_ts, 0, sizeof(v->pair.pw_ts));
	v->pair.pw_next = 0;
	v->pair.last_success = now;
	v->pair.last_seen = now;
	if (v->has_addr && !v->proxy)
		v->pair.familiar_until = now + c->familiar_ttl;
	v->w_pair = true;
}

/* Count the user in the password's record, once among its last tags. */
static void note_pw_user(const struct ag_conf *c, struct ag_pw_rec *r, uint16_t tag, int64_t now)
{
	if (r->first_seen == 0)
		r->first_seen = now;
	r->last_seen = now;
	r->n_fail++;
	for (int i = 0; i < AG_PW_TAGS; i++)
		if (r->tags[i] == tag)
			return;
	r->tags[r->tag_next] = tag;
	r->tag_next = (r->tag_next + 1) % AG_PW_TAGS;
	ag_score_add(&r->users, 1, now, c->decay_half_life);
}

/* A failure (or a hot refusal) from a source unfamiliar to its user feeds
 * the hot-password count and the wave detector. Familiar places do not:
 * what a user mistypes at home is never kept, and an owner's typos are
 * no attack. The same wrong password again (a stale phone) neither. */
static void note_unfamiliar_failure(const struct ag_conf *c, struct ag_view *v, int64_t now,
				    struct ag_events *ev)
{
	if (!v->has_user || ev->familiar || v->proxy)
		return;
	if (v->has_pw && !pair_repeats(c, &v->pair, v->pw_hash, now)) {
		note_pw_user(c, &v->pw, v->user_tag, now);
		v->w_pw = true;
		ev->hot_pw = ag_pw_hot(c, &v->pw, now);
	}
	if (c->wave_factor == 0 || pair_repeats(c, &v->pair, v->pw_hash, now))
		return;
	int d = ag_wave_note(c, &v->wave, now);
	v->w_wave = true;
	ev->wave_started = d > 0;
	ev->wave_ended = d < 0;
	ev->wave = v->wave.active != 0;
}

void ag_policy_record(const struct ag_conf *c, struct ag_view *v, int64_t now, bool success,
		      struct ag_events *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->familiar = ag_pair_familiar(v, now); /* as judged, before this attempt */
	if (v->trusted)
		return;
	ev->hot_pw = v->has_pw && ag_pw_hot(c, &v->pw, now);
	ev->wave = ag_wave_on(c, &v->wave, now);
	if (success && ev->hot_pw && !ev->familiar) {
		/* The password is being sprayed and this place is new to the
		 * user: most likely the spray's hit. Refused like a wrong
		 * password, and counted as one (log-only: only said). */
		ev->hot_refused = true;
		success = c->mode == AG_MODE_LOG_ONLY;
	}
	if (success) {
		record_success(c, v, now);
		return;
	}
	note_unfamiliar_failure(c, v, now, ev);
	if (v->has_addr) {
		v->src.n_fail++;
		touch_src(&v->src, now);
		v->w_src = true;
		if (source_rules(v))
			record_source_failure(c, v, now, ev);
	}
	if (v->has_user)
		record_user_failure(c, v, now, ev);
}

#define AG_DEAD_SCORE 0.01
/* The slow counts keep a record only while they could matter: a user's
 * while it still counts as one failure (a day or so after one), a
 * source's while it counts as two, so the one-failure addresses of a
 * botnet go as soon as their fast counts have faded, as they always
 * did, and the store stays the size it was. */
#define AG_DEAD_SLOW_USER 0.5
#define AG_DEAD_SLOW_SRC 1.5

bool ag_src_dead(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now)
{
	return ag_score_at(&r->fails, now, c->decay_half_life) < AG_DEAD_SCORE &&
	       ag_score_at(&r->spray, now, c->decay_half_life) < AG_DEAD_SCORE &&
	       ag_score_at(&r->slow, now, c->slow_half_life) < AG_DEAD_SLOW_SRC &&
	       r->ban_until <= now && now - r->ban_until >= c->ip_ban_max;
}

bool ag_user_dead(const struct ag_conf *c, const struct ag_user_rec *r, int64_t now)
{
	return ag_score_at(&r->fails, now, c->decay_half_life) < AG_DEAD_SCORE &&
	       ag_score_at(&r->slow, now, c->slow_half_life) < AG_DEAD_SLOW_USER &&
	       r->lock_until <= now;
}

bool ag_pw_dead(const struct ag_conf *c, const struct ag_pw_rec *r, int64_t now)
{
	return ag_score_at(&r->users, now, c->decay_half_life) < AG_DEAD_SCORE;
}

bool ag_pair_dead(const struct ag_conf *c, const struct ag_pair_rec *r, int64_t now)
{
	if (r->familiar_until > now || ag_score_at(&r->fails, now, c->decay_half_life) >= AG_DEAD_SCORE)
		return false;
	for (int i = 0; i < AG_RECENT_PW; i++)
		if (r->pw_ts[i] != 0 && now - r->pw_ts[i] < 4 * c->decay_half_life)
			return false;
	return true;
}

/* Eviction takes records oldest first, whatever their counts (a flood of
 * places that fail twice each must not make a brute force's fresh records
 * the only ones that may go); these say what it must never take. */
/* The repeat-ban memory ban() reads, of a ban that is over: the next ban
 * doubles while the last one ended at most ip_ban_max ago. */
static bool remembers_ban(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now)
{
	return r->ban_count > 0 && now - r->ban_until <= c->ip_ban_max;
}

bool ag_src_weak(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now)
{
	if (r->ban_until > now)
		return false; /* banned, by a rule or by an admin */
	return !remembers_ban(c, r, now);
}

bool ag_src_ban_memory(const struct ag_conf *c, const struct ag_src_rec *r, int64_t now)
{
	return r->ban_by_admin == 0 && r->ban_until <= now && remembers_ban(c, r, now);
}

bool ag_user_weak(const struct ag_conf *c, const struct ag_user_rec *r, int64_t now)
{
	(void)c;
	return r->lock_until <= now;
}

bool ag_pair_weak(const struct ag_conf *c, const struct ag_pair_rec *r, int64_t now)
{
	(void)c;
	return r->familiar_until <= now;
}
