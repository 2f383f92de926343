/*
 * bench_refuse - what a refused attempt from a banned source costs,
 * against the password hash check it saves (crypt(3) with the system's
 * default method). Prints numbers; asserts nothing.
 *
 *   bench_refuse [-r REFUSALS] [-c CRYPT_RUNS] [-n SOURCES] [-l none|file]
 *                [-m DB_MAX_SIZE] [-d DIR]
 *
 * The refusal is timed as the front ends run it: ag_guard_check() alone.
 * It counts the refusal in the store (a write transaction) and writes the
 * attempt's log line itself; pam_authguard (requisite) and the SASL
 * plugin then skip ag_guard_record(), as no password was checked.
 */
#include "config.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"
#include "guard.h"

#define ATTACKER "192.0.2.66"
#define VICTIM "mallory"
#define PASSWORD "correct horse battery staple"

static const struct ag_attempt attacker = {
	"imap", VICTIM, sizeof(VICTIM) - 1, ATTACKER, sizeof(ATTACKER) - 1,
};

/* Bystanders first (records only, no rule may fire on them), then
 * ip_ban_after wrong passwords from the attacker under the default
 * rules. Recorded without a check, so no tarpit sleep in between. */
static int ban_attacker(const struct ag_conf *c, unsigned long sources)
{
	struct ag_conf quiet = *c; /* shares @c's lists: read only, never freed */
	struct ag_ticket t;

	quiet.ip_ban_after = quiet.net_ban_after = quiet.spray_users = quiet.user_lock_after = 0;
	bench_fill(&quiet, sources);
	for (uint32_t i = 0; i < c->ip_ban_after; i++)
		ag_guard_record(c, &bench_sink, &attacker, false, "guess", NULL);
	if (ag_guard_check(c, &bench_sink, &attacker, &t) != AG_REFUSE ||
	    t.reason != AG_WHY_BANNED) {
		fprintf(stderr, "bench_refuse: %s is not banned after %u failures (action %u reason %u)\n",
			ATTACKER, c->ip_ban_after, t.action, t.reason);
		return -1;
	}
	return 0;
}

/* Time @n refused checks; returns how many were not refused (0). (By
 * name for callgrind's --toggle-collect: bench/instr.sh.) */
__attribute__((noinline)) static unsigned long time_refusals(const struct ag_conf *c, double *lat, unsigned long n)
{
	unsigned long let_in = 0;

	for (unsigned long i = 0; i < n; i++) {
		struct ag_ticket t;
		double s = bench_now_us();
		enum ag_decision dec = ag_guard_check(c, &bench_sink, &attacker, &t);
		lat[i] = bench_now_us() - s;
		let_in += dec != AG_REFUSE;
	}
	return let_in;
}

/* The method's prefix without the salt: "$y$j9T$" for yescrypt. */
static void method_of(const char *setting, char *buf, size_t len)
{
	const char *end = strrchr(setting, '$');
	int n = end != NULL ? (int)(end - setting + 1) : 0;

	snprintf(buf, len, "%.*s", n, setting);
}

/* Hash PASSWORD with the default method, then time @n verifications
 * (hashing the password again with the stored hash as the setting and
 * comparing, as pam_unix does). Returns 0, or -1 after printing why. */
static int time_crypt(double *lat, unsigned long n, char *method, size_t mlen)
{
	void *data = NULL;
	int size = 0, rc = -1;
	char *setting = crypt_gensalt_ra(NULL, 0, NULL, 0);
	char *hash = NULL;

	if (setting == NULL) {
		perror("crypt_gensalt_ra");
		return -1;
	}
	method_of(setting, method, mlen);
	const char *h = crypt_ra(PASSWORD, setting, &data, &size);
	if (h == NULL || h[0] == '*' || (hash = strdup(h)) == NULL) {
		perror("crypt_ra");
		goto out;
	}
	for (unsigned long i = 0; i < n; i++) {
		double s = bench_now_us();
		h = crypt_ra(PASSWORD, hash, &data, &size);
		bool ok = h != NULL && strcmp(h, hash) == 0;
		lat[i] = bench_now_us() - s;
		if (!ok) {
			fprintf(stderr, "bench_refuse: crypt_ra did not verify its own hash\n");
			goto out;
		}
	}
	rc = 0;
out:
	free(hash);
	free(data);
	free(setting);
	return rc;
}

struct opts {
	unsigned long refusals, runs, sources;
	const char *logmode, *max_size;
};

static int usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-r REFUSALS] [-c CRYPT_RUNS] [-n SOURCES] [-l none|file] "
		"[-m DB_MAX_SIZE] [-d DIR]\n", prog);
	return 2;
}

static void print_results(const struct opts *o, const struct ag_conf *c, double *ref,
			  unsigned long let_in, double *cry, const char *method)
{
	unsigned long nr = o->refusals, nc = o->runs;

	bench_sort(ref, nr);
	bench_sort(cry, nc);
	bench_print_settings("bench_refuse", c);
	printf("  bystander sources=%lu, %s banned after %u failures; %lu refusals, %lu crypt runs\n",
	       o->sources, ATTACKER, c->ip_ban_after, nr, nc);
	printf("  refused attempt (check alone, as the front ends run it): p50 %.1f us  "
	       "p99 %.1f us  mean %.1f us  max %.1f us%s\n",
	       bench_pct(ref, nr, 50), bench_pct(ref, nr, 99), bench_mean(ref, nr), ref[nr - 1],
	       let_in ? "  (SOME WERE NOT REFUSED)" : "");
	printf("  crypt(3) verification, default method %s: p50 %.1f us  mean %.1f us  max %.1f us\n",
	       method, bench_pct(cry, nc, 50), bench_mean(cry, nc), cry[nc - 1]);
	printf("  refused / crypt: %.3f%% at p50, %.3f%% by mean\n",
	       100 * bench_pct(ref, nr, 50) / bench_pct(cry, nc, 50),
	       100 * bench_mean(ref, nr) / bench_mean(cry, nc));
}

static int measure(const struct opts *o, const struct bench_dir *d)
{
	struct ag_conf c;
	char method[64];
	int rc = 1;

	if (bench_conf(&c, d, "db", o->logmode, o->max_size) != 0)
		return 1;
	double *ref = malloc(o->refusals * sizeof(*ref)), *cry = malloc(o->runs * sizeof(*cry));
	if (ref != NULL && cry != NULL && ban_attacker(&c, o->sources) == 0) {
		long long w0 = bench_written();
		unsigned long let_in = time_refusals(&c, ref, o->refusals);
		long long written = bench_written() - w0;
		if (w0 >= 0 && c.log_kind == AG_LOG_NONE)
			printf("  written per refusal: %.0f bytes (%.2f pages of 4096)\n",
			       (double)written / (double)o->refusals,
			       (double)written / 4096.0 / (double)o->refusals);
		if (time_crypt(cry, o->runs, method, sizeof(method)) == 0) {
			print_results(o, &c, ref, let_in, cry, method);
			rc = 0;
		}
	}
	free(ref);
	free(cry);
	ag_conf_free(&c);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = { 20000, 50, 1000, "none", NULL };
	const char *dir = NULL;
	struct bench_dir d;
	int opt;

	while ((opt = getopt(argc, argv, "r:c:n:l:m:d:")) != -1) {
		switch (opt) {
		case 'r': o.refusals = strtoul(optarg, NULL, 10); break;
		case 'c': o.runs = strtoul(optarg, NULL, 10); break;
		case 'n': o.sources = strtoul(optarg, NULL, 10); break;
		case 'l': o.logmode = optarg; break;
		case 'm': o.max_size = optarg; break;
		case 'd': dir = optarg; break;
		default: return usage(argv[0]);
		}
	}
	if (o.refusals == 0 || o.runs == 0)
		return usage(argv[0]);
	if (bench_dir_init(&d, dir) != 0)
		return 1;
	int rc = measure(&o, &d);
	bench_dir_done(&d);
	return rc;
}
