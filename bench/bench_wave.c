/*
 * bench_wave - the attack-wave detector (ag_wave_note/ag_wave_on, the
 * functions the guard runs) against a synthetic month of the background
 * noise an internet-facing IMAP server sees, on a fake clock: how often
 * the host is "in a wave", and so how often a real user's new phone (a
 * place new to that user) would be slowed, and by how much.
 *
 * The noise, all of it failures from places unfamiliar to their user:
 *   - a botnet drizzle: -r failures a minute on average, each from a fresh
 *     address, following the day (x0.4 at night to x1.6 in the afternoon);
 *   - scanners: -s sessions a day, each one address guessing until it is
 *     banned (ip_ban_after = 10 failures, one every 2 s; ban refusals are
 *     not failures) or gives up (geometric, mean 12 guesses);
 *   - small campaigns: one every -b days, 20 to 60 addresses with 3 to 8
 *     guesses each spread over 20 to 60 minutes.
 * Real users' new phones: -p a day, at times that follow the day.
 * With -a, a distributed spray is added on day 20 (3000 guesses in one
 * hour, each from a fresh address): how many guesses before the wave
 * starts, and how long it lasts.
 *
 * Usage: bench_wave [-d DAYS] [-r PER_MIN] [-s PER_DAY] [-b DAYS] [-p PER_DAY]
 *                   [-f FACTOR] [-m MIN_FAILURES] [-a] [-S SEED]
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "policy.h"

#define SEC INT64_C(1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define T0 INT64_C(1790000000000)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

/* Exponential gap for a Poisson process of @rate per ms. */
static int64_t gap(double rate)
{
	double u = uniform();
	return (int64_t)(-log(u > 0 ? u : 1e-300) / rate) + 1;
}

static double diurnal(int64_t t)
{
	double h = (double)((t - T0) % DAY) / (double)HOUR;
	return 1.0 + 0.6 * sin((h - 9.0) / 24.0 * 2 * M_PI);
}

/* Events: a failure from an unfamiliar place, or a new phone's login. */
enum { EV_FAIL, EV_PHONE, EV_ATTACK };
struct ev {
	int64_t t;
	int kind;
};

static struct ev *evs;
static size_t nev, cap;

static void add(int64_t t, int kind)
{
	if (nev == cap) {
		cap = cap ? cap * 2 : 65536;
		evs = realloc(evs, cap * sizeof(*evs));
		if (evs == NULL) {
			perror("realloc");
			exit(1);
		}
	}
	evs[nev].t = t;
	evs[nev++].kind = kind;
}

static int by_time(const void *a, const void *b)
{
	const struct ev *x = a, *y = b;
	return x->t < y->t ? -1 : x->t > y->t;
}

/* Thinning: a Poisson process of @per_ms times diurnal(t) (at most 1.6x). */
static void poisson_diurnal(int64_t end, double per_ms, int kind)
{
	for (int64_t t = T0 + gap(1.6 * per_ms); t < end; t += gap(1.6 * per_ms))
		if (uniform() * 1.6 < diurnal(t))
			add(t, kind);
}

int main(int argc, char **argv)
{
	int days = 30, attack = 0, opt;
	double drizzle = 2.0, scanners = 30, campaign_days = 3, phones = 20;
	struct ag_conf c;

	ag_conf_init(&c);
	while ((opt = getopt(argc, argv, "d:r:s:b:p:f:m:aS:")) != -1) {
		switch (opt) {
		case 'd': days = atoi(optarg); break;
		case 'r': drizzle = atof(optarg); break;
		case 's': scanners = atof(optarg); break;
		case 'b': campaign_days = atof(optarg); break;
		case 'p': phones = atof(optarg); break;
		case 'f': c.wave_factor = (uint32_t)atoi(optarg); break;
		case 'm': c.wave_min_failures = (uint32_t)atoi(optarg); break;
		case 'a': attack = 1; break;
		case 'S': rng = strtoull(optarg, NULL, 0) | 1; break;
		default:
			fprintf(stderr, "usage: bench_wave [-d DAYS] [-r PER_MIN] [-s PER_DAY] [-b DAYS]"
				" [-p PER_DAY] [-f FACTOR] [-m MIN] [-a] [-S SEED]\n");
			return 2;
		}
	}
	/* the month is measured after a learning period of wave_baseline
	 * (no wave can start before it) plus the same again to fill the
	 * baseline: what a host that has run for a while sees */
	int64_t warm = 2 * c.wave_baseline, start = T0 + warm, end = start + days * DAY;

	poisson_diurnal(end, drizzle / (double)MIN, EV_FAIL);
	for (int64_t t = T0 + gap(scanners / (double)DAY); t < end; t += gap(scanners / (double)DAY)) {
		int k = 1;
		while (k < 10 && uniform() > 1.0 / 12)
			k++;
		for (int i = 0; i < k; i++)
			add(t + i * 2 * SEC, EV_FAIL);
	}
	for (int64_t t = T0 + gap(1.0 / (campaign_days * DAY)); t < end;
	     t += gap(1.0 / (campaign_days * DAY))) {
		int addrs = 20 + (int)(uniform() * 41);
		int64_t span = (20 + (int64_t)(uniform() * 41)) * MIN;
		for (int a = 0; a < addrs; a++) {
			int k = 3 + (int)(uniform() * 6);
			for (int i = 0; i < k; i++)
				add(t + (int64_t)(uniform() * (double)span), EV_FAIL);
		}
	}
	poisson_diurnal(end, phones / (double)DAY, EV_PHONE);
	int64_t attack_at = start + 20 * DAY + 14 * HOUR;
	if (attack)
		for (int i = 0; i < 3000; i++)
			add(attack_at + (int64_t)i * HOUR / 3000, EV_ATTACK);
	qsort(evs, nev, sizeof(*evs), by_time);

	struct ag_wave_rec w = { .version = AG_REC_VERSION };
	uint64_t fails = 0, nphones = 0, slowed = 0, waves = 0, attack_before = 0;
	int64_t on_ms = 0, longest = 0, since = 0, last = start, attack_wave_end = 0;
	bool on = false, attack_seen = false;
	for (size_t i = 0; i < nev; i++) {
		int64_t t = evs[i].t;
		/* time in a wave, between events (it can end by itself between) */
		bool now_on = ag_wave_on(&c, &w, t);
		if (t >= start) {
			int64_t from = last > start ? last : start;
			if (on && now_on)
				on_ms += t - from;
			else if (on && !now_on)
				on_ms += (t - from) / 2; /* ended somewhere in between */
		}
		if (on && !now_on) {
			int64_t len = t - since;
			if (len > longest && since >= start)
				longest = len;
			if (attack_seen && attack_wave_end == 0)
				attack_wave_end = t;
		}
		on = now_on;
		last = t;
		if (evs[i].kind == EV_PHONE) {
			if (t >= start) {
				nphones++;
				slowed += on;
			}
			continue;
		}
		if (evs[i].kind == EV_ATTACK && !attack_seen) {
			if (!on)
				attack_before++;
			else
				attack_seen = true;
		}
		if (t >= start && evs[i].kind == EV_FAIL)
			fails++;
		int d = ag_wave_note(&c, &w, t);
		if (d > 0) {
			on = true;
			since = t;
			if (t >= start && evs[i].kind == EV_FAIL)
				waves++;
		}
	}
	printf("bench_wave: %d days after %lld h of warm-up; wave_factor=%u wave_min_failures=%u "
	       "wave_baseline=%lld h decay_half_life=%lld min tarpit_base=%lld ms\n",
	       days, (long long)(warm / HOUR), c.wave_factor, c.wave_min_failures,
	       (long long)(c.wave_baseline / HOUR), (long long)(c.decay_half_life / MIN),
	       (long long)c.tarpit_base);
	printf("noise: %.1f/min drizzle, %.0f scanners/day, a campaign every %.1f days: "
	       "%llu unfamiliar failures (%.0f a day)\n", drizzle, scanners, campaign_days,
	       (unsigned long long)fails, (double)fails / days);
	printf("waves started by the noise: %llu; in a wave %.2f%% of the time "
	       "(%.1f h in all, longest %.1f min)\n", (unsigned long long)waves,
	       100.0 * (double)on_ms / (double)(end - start), (double)on_ms / HOUR,
	       (double)longest / MIN);
	printf("new phones: %llu; slowed %llu (%.2f%%), each by tarpit_base = %lld ms once\n",
	       (unsigned long long)nphones, (unsigned long long)slowed,
	       nphones ? 100.0 * (double)slowed / (double)nphones : 0.0, (long long)c.tarpit_base);
	if (attack)
		printf("spray on day 20 (3000 in 1 h): %llu guesses before the wave; it ended "
		       "%.0f min after the spray began\n", (unsigned long long)attack_before,
		       attack_wave_end ? (double)(attack_wave_end - attack_at) / MIN : -1.0);
	ag_conf_free(&c);
	free(evs);
	return 0;
}
