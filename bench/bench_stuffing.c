/*
 * bench_stuffing - credential stuffing and distributed spraying through
 * the guard itself (ag_guard_check_ex with AG_CHECK_NOSLEEP, then
 * ag_guard_record_ex with the password), on a fake clock, before and
 * after hot passwords and attack waves.
 *
 * The store first learns a host (two days of a quiet background, one
 * failure from a fresh address every two minutes), then:
 *   - stuffing: -n leaked (user, password) pairs, one in 100 right, each
 *     tried once from its own address (and /24), -r tries a second: the
 *     tries arrive faster than the tarpit lets them go, so each one that
 *     must sleep needs one of tarpit_slots; the others are refused
 *     (tarpit_full) before their password is checked;
 *   - spraying: the same rate, one password against -n mailboxes, one in
 *     100 of them using it.
 * "before" is wave_factor = 0 and spray_password_users = 0; "after" the
 * defaults. Prints the tries that reached the password check and the
 * accounts taken.
 *
 * Usage: bench_stuffing [-n TRIES] [-r PER_SEC] [-d DIR]
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int64_t fake_now;
static uint64_t rng;

/* Deterministic pseudo-random numbers in [0, 1): which pairs are right,
 * and the gaps between tries (a Poisson stream, not a metronome, whose
 * phase against the tarpit would decide the result). */
static double uniform(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static int64_t fake_clock(void)
{
	return fake_now;
}

struct result {
	long reached, taken, refused, tarpitted, right;
};

static void one(const struct ag_conf *c, const char *user, const char *pw, const char *addr,
		bool right, struct result *r)
{
	struct ag_attempt a = { .service = "bench", .user = user, .user_len = strlen(user),
				.rhost = addr, .rhost_len = strlen(addr) };
	struct ag_ticket t;
	enum ag_decision d = ag_guard_check_ex(c, &bench_sink, &a, AG_CHECK_NOSLEEP, &t);

	if (d == AG_REFUSE) {
		r->refused++;
		return;
	}
	r->tarpitted += t.action == AG_ACT_TARPIT;
	r->reached++;
	enum ag_decision after = AG_PROCEED;
	struct ag_record_opts o = { .pw = pw, .pw_len = strlen(pw), .decision_r = &after };
	(void)ag_guard_record_ex(c, &bench_sink, &a, right, &o, &t);
	r->taken += right && after == AG_PROCEED;
}

/* Two days of quiet background, so the wave detector has learned. */
static void learn(const struct ag_conf *c)
{
	struct result r = { 0 };
	char addr[64], user[32];

	for (long i = 0; i < 2 * 24 * 30; i++) {
		bench_attacker((unsigned long)i, addr, sizeof(addr));
		snprintf(user, sizeof(user), "noise%ld", i % 500);
		one(c, user, "123456", addr, false, &r);
		fake_now += 120000;
	}
}

static int run(const struct bench_dir *d, const char *sub, bool after, bool spray, long n,
	       double rate, struct result *r)
{
	struct ag_conf c;

	if (bench_conf(&c, d, sub, "none", NULL) != 0)
		return -1;
	r->right = 0;
	if (!after) {
		c.wave_factor = 0;
		c.spray_password_users = 0;
	}
	fake_now = INT64_C(1790000000000);
	rng = 42;
	learn(&c);
	memset(r, 0, sizeof(*r));
	uint64_t keep = rng;
	for (long i = 0; i < n; i++) {
		r->right += uniform() < 0.01;
		(void)uniform();
	}
	rng = keep; /* the same stream again, for the run */
	for (long i = 0; i < n; i++) {
		char addr[64], user[32], pw[32];
		bench_addr((unsigned long)i * 256, addr, sizeof(addr)); /* one /24 each */
		snprintf(user, sizeof(user), "mbox%ld", i);
		if (spray)
			snprintf(pw, sizeof(pw), "Summer2026!");
		else
			snprintf(pw, sizeof(pw), "leaked-%ld", i);
		one(&c, user, pw, addr, uniform() < 0.01, r);
		double u = uniform();
		fake_now += (int64_t)(-log(u > 0 ? u : 1e-12) * 1000.0 / rate) + 1;
	}
	ag_conf_free(&c);
	return 0;
}

int main(int argc, char **argv)
{
	long n = 5000;
	double rate = 50;
	const char *dir = NULL;
	struct bench_dir d;
	int opt;

	while ((opt = getopt(argc, argv, "n:r:d:")) != -1) {
		switch (opt) {
		case 'n': n = atol(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: bench_stuffing [-n TRIES] [-r PER_SEC] [-d DIR]\n");
			return 2;
		}
	}
	if (n <= 0 || !(rate > 0) || bench_dir_init(&d, dir) != 0)
		return 2;
	ag_guard_set_clock(fake_clock);
	printf("bench_stuffing: %ld tries at %.0f a second, each from its own /24, 1 in 100 right; "
	       "defaults (tarpit_base 500ms, tarpit_slots 8)\n", n, rate);
	static const char *const names[2] = { "credential stuffing", "distributed spraying" };
	for (int spray = 0; spray < 2; spray++) {
		struct result b, a;
		char sb[32], sa[32];
		snprintf(sb, sizeof(sb), "db-%d-before", spray);
		snprintf(sa, sizeof(sa), "db-%d-after", spray);
		if (run(&d, sb, false, spray, n, rate, &b) != 0 ||
		    run(&d, sa, true, spray, n, rate, &a) != 0)
			return 1;
		printf("%-21s before: %5ld reached the check, %3ld of %ld accounts taken\n",
		       names[spray], b.reached, b.taken, b.right);
		printf("%-21s after:  %5ld reached the check, %3ld of %ld accounts taken "
		       "(%ld refused early, %ld tarpitted)\n", "", a.reached, a.taken, a.right,
		       a.refused, a.tarpitted);
	}
	ag_guard_set_clock(NULL);
	bench_dir_done(&d);
	return 0;
}
