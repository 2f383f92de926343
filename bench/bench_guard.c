/*
 * bench_guard - the guard's own added time per attempt (check + record,
 * no tarpit sleep), with the store already open, at a chosen number of
 * tracked sources. Prints numbers; asserts nothing.
 *
 *   bench_guard [-n SOURCES] [-a ATTEMPTS] [-l none|file] [-d DIR]
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "store.h"

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void addr_of(unsigned long i, char *buf, size_t len)
{
	/* spread over many /24s: 10.x.y.z */
	snprintf(buf, len, "10.%lu.%lu.%lu", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

static void nop_sink(void *ctx, enum ag_level l, const char *m)
{
	(void)ctx;
	(void)l;
	(void)m;
}

int main(int argc, char **argv)
{
	unsigned long sources = 1000, attempts = 20000;
	const char *logmode = "none";
	char dir[512] = "", err[256], addr[32], user[32];
	int opt;

	while ((opt = getopt(argc, argv, "n:a:l:d:")) != -1) {
		switch (opt) {
		case 'n': sources = strtoul(optarg, NULL, 10); break;
		case 'a': attempts = strtoul(optarg, NULL, 10); break;
		case 'l': logmode = optarg; break;
		case 'd': snprintf(dir, sizeof(dir), "%s", optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n SOURCES] [-a ATTEMPTS] [-l none|file] [-d DIR]\n", argv[0]);
			return 2;
		}
	}
	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "/tmp/authguard-bench.XXXXXX");
		if (mkdtemp(dir) == NULL) {
			perror("mkdtemp");
			return 1;
		}
	}
	struct ag_conf c;
	ag_conf_init(&c);
	snprintf(c.db_dir, sizeof(c.db_dir), "%s/db", dir);
	if (strcmp(logmode, "file") == 0) {
		char v[600];
		snprintf(v, sizeof(v), "file:%s/attempts.log", dir);
		ag_conf_set(&c, "log", v, err, sizeof(err));
	} else {
		c.log_kind = AG_LOG_NONE;
	}
	/* every rule evaluated, nothing that would cut the path short */
	c.tarpit_base = 0;
	c.ip_ban_after = c.net_ban_after = c.spray_users = c.user_lock_after = 0;
	struct ag_sink sink = { nop_sink, NULL };

	double t0 = now_us();
	for (unsigned long i = 0; i < sources; i++) {
		addr_of(i, addr, sizeof(addr));
		snprintf(user, sizeof(user), "user%lu", i % 5000);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		ag_guard_record(&c, &sink, &a, false, "x", NULL);
	}
	double fill = now_us() - t0;

	double *lat = malloc(attempts * sizeof(*lat));
	if (lat == NULL)
		return 1;
	srand(42);
	t0 = now_us();
	for (unsigned long i = 0; i < attempts; i++) {
		unsigned long k = (unsigned long)rand() % (sources ? sources : 1);
		addr_of(k, addr, sizeof(addr));
		snprintf(user, sizeof(user), "user%lu", k % 5000);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		struct ag_ticket t;
		double s = now_us();
		ag_guard_check(&c, &sink, &a, &t);
		ag_guard_record(&c, &sink, &a, i % 4 != 0, "guess", &t);
		lat[i] = now_us() - s;
	}
	double total = now_us() - t0;
	qsort(lat, attempts, sizeof(*lat), cmp_double);

	struct ag_store *s;
	struct ag_store_info info;
	ag_store_get(c.db_dir, &s);
	ag_store_info(s, &info);
	printf("bench_guard: cores=%ld sources=%lu attempts=%lu log=%s store=%s (MDB_NOSYNC, 1 s flush)\n",
	       sysconf(_SC_NPROCESSORS_ONLN), sources, attempts, logmode, c.db_dir);
	printf("  fill: %.1f s (%.1f us per recorded failure)\n", fill / 1e6,
	       sources ? fill / (double)sources : 0);
	printf("  check+record per attempt: p50 %.1f us  p90 %.1f us  p99 %.1f us  max %.1f us\n",
	       lat[attempts / 2], lat[attempts * 9 / 10], lat[attempts * 99 / 100], lat[attempts - 1]);
	printf("  throughput (one process): %.0f attempts/s\n", (double)attempts / (total / 1e6));
	printf("  store: %llu bytes used, %llu records (src %llu, user %llu, pair %llu), %.0f bytes per source key\n",
	       (unsigned long long)info.used_bytes,
	       (unsigned long long)(info.entries[AG_DB_SRC] + info.entries[AG_DB_USER] + info.entries[AG_DB_PAIR]),
	       (unsigned long long)info.entries[AG_DB_SRC], (unsigned long long)info.entries[AG_DB_USER],
	       (unsigned long long)info.entries[AG_DB_PAIR],
	       sources ? (double)info.used_bytes / (double)sources : 0);
	free(lat);
	ag_conf_free(&c);
	return 0;
}
