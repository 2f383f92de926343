/*
 * bench_guard - the guard's own added time per attempt (check + record,
 * no tarpit sleep), with the store already open, at a chosen number of
 * tracked sources, and what the store holds per source. Prints numbers;
 * asserts nothing.
 *
 *   bench_guard [-n SOURCES] [-a ATTEMPTS] [-l none|file] [-m DB_MAX_SIZE] [-d DIR] [-F [-B]]
 *
 * -F: the attempts are a flood instead, each place (user, /64) new and
 * failing twice with two passwords, as in issue 16: it keeps the store at
 * db_max_size, and the worst attempts are the ones that paid for an
 * eviction round. -B: before the flood, the store is filled to
 * db_max_size with sources banned for an hour (nothing may evict them), so
 * the flood's writes find no room: what each attempt costs then.
 * -S: a child process flushes the store every 500 ms while the attempts
 * run, as authguard-admin flush --every 500ms does (issue 15): then no
 * attempt flushes itself. Compare the slowest attempts with and without.
 * -Y: with -o sync_redis=..., the outbox drained every 16 records (as
 * authguard-sync does), in the timed loop: the record path with sync.
 * -f: every attempt fails (none of the one in four successes), so the
 * bytes written per attempt are those of a recorded failure (issue 15.3).
 * -o KEY=VALUE (repeatable): a config key on top (after the rules are
 * turned off), e.g. -o inflight_max=0 -o ipv6_prefixes=64 for what an
 * attempt cost before issue 14's marks and /48 level.
 */
#include "config.h"

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"
#include "admin.h"
#include "guard.h"
#include "record.h"
#include "store.h"
#include "sync.h"

/* -Y: with sync_redis set (-o), the outbox is drained every 16 records
 * in this thread, as authguard-sync deletes what it pushed: the outbox
 * stays as small as with the daemon, and the deletes are counted. */
static bool drain_outbox;

static void drain16(const struct ag_conf *c)
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_outbox_state ob;

	if (ag_store_get(c->db_dir, &s) != 0 || ag_txn_begin(s, true, &t) != 0)
		return;
	if (ag_outbox_state(t, &ob) == 0 && ob.next_seq > 1 &&
	    ag_outbox_done_upto(t, ob.next_seq - 1, NULL) == 0)
		(void)ag_txn_commit(t);
	else
		ag_txn_abort(t);
}

/* -f: every attempt fails (pages per recorded failure, issue 15.3) */
static bool fail_only;

/* Check + record of random known sources; 1 in 4 succeeds (none with
 * -f). (By name for callgrind's --toggle-collect: bench/instr.sh.) */
__attribute__((noinline)) static double run(const struct ag_conf *c, unsigned long sources, double *lat, unsigned long n)
{
	char addr[32], user[32];
	double t0 = bench_now_us();

	srand(42);
	for (unsigned long i = 0; i < n; i++) {
		unsigned long k = (unsigned long)rand() % (sources ? sources : 1);
		bench_addr(k, addr, sizeof(addr));
		snprintf(user, sizeof(user), "user%lu", k % 5000);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		struct ag_ticket t;
		double s = bench_now_us();
		ag_guard_check(c, &bench_sink, &a, &t);
		ag_guard_record(c, &bench_sink, &a, !fail_only && i % 4 == 0, "guess", &t);
		if (drain_outbox && i % 16 == 15)
			drain16(c);
		lat[i] = bench_now_us() - s;
	}
	return bench_now_us() - t0;
}

/* A flood: place i/2 is new, its two attempts fail with two passwords. */
static double run_flood(const struct ag_conf *c, double *lat, unsigned long n)
{
	char addr[64], user[32];
	double t0 = bench_now_us();

	for (unsigned long i = 0; i < n; i++) {
		unsigned long k = i / 2;
		snprintf(addr, sizeof(addr), "2001:db8:%lx:%lx::1", (k >> 16) & 0xffff, k & 0xffff);
		snprintf(user, sizeof(user), "flood%lu", k);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		struct ag_ticket t;
		double s = bench_now_us();
		ag_guard_check(c, &bench_sink, &a, &t);
		ag_guard_record(c, &bench_sink, &a, false, i % 2 ? "guess1" : "guess0", &t);
		lat[i] = bench_now_us() - s;
	}
	return bench_now_us() - t0;
}

/* Fill the store to db_max_size with banned sources (an hour to go). */
static unsigned long fill_banned(const struct ag_conf *c)
{
	struct ag_store *s;
	struct ag_src_rec r = { .version = AG_REC_VERSION, .ban_count = 1 };
	unsigned long n = 0;
	int rc = 0;

	if (ag_store_get(c->db_dir, &s) != 0)
		return 0;
	(void)ag_store_grow(s, c->db_max_size);
	r.first_seen = r.last_seen = ag_now_ms();
	r.ban_until = r.first_seen + 3600000;
	while (rc == 0) {
		struct ag_txn *t;
		if (ag_txn_begin(s, true, &t) != 0)
			break;
		for (int k = 0; k < 200 && rc == 0; k++, n++) {
			char addr[64];
			struct ag_addr a;
			uint8_t key[AG_SRC_KEY_LEN];
			snprintf(addr, sizeof(addr), "2001:db8:bad:%lx::1", n);
			if (ag_addr_parse(addr, strlen(addr), &a) != 0)
				break;
			ag_src_key(&a, key);
			rc = ag_txn_put(t, AG_DB_SRC, key, sizeof(key), &r, sizeof(r));
		}
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
	}
	return n;
}


/* (The #ifdef lets this file build against a tree from before eviction
 * counters, to measure the anchor side by side.) */
static void print_evictions(const struct ag_conf *c)
{
#ifdef AG_EVICT_VERSION
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_evict_stats e;

	if (ag_store_get(c->db_dir, &s) != 0 || ag_txn_begin(s, false, &t) != 0)
		return;
	if (ag_admin_evictions(t, &e) == 0)
		printf("  evicted: %llu records in %llu rounds (%llu took recent records), last cutoff %.1f s\n",
		       (unsigned long long)e.records, (unsigned long long)e.rounds,
		       (unsigned long long)e.recent_rounds, (double)e.last_cutoff_ms / 1000.0);
	ag_txn_abort(t);
#else
	(void)c;
#endif
}

static void count_pair(void *ctx, const uint8_t *k, size_t n, const struct ag_addr *a,
		       const struct ag_pair_rec *r)
{
	(void)k;
	(void)n;
	(void)a;
	(void)r;
	++*(uint64_t *)ctx;
}

/* Pair records, wherever the store files them (since issue 15.3 among
 * the sources): counted through the admin interface, as status does. */
static uint64_t count_pairs(struct ag_store *s)
{
	struct ag_txn *t;
	uint64_t n = 0;

	if (ag_txn_begin(s, false, &t) != 0)
		return 0;
	(void)ag_admin_each_pair(t, false, NULL, 0, count_pair, &n);
	ag_txn_abort(t);
	return n;
}

/* Bytes per source only mean something if no source was evicted to keep
 * the store under db_max_size: then say so instead of dividing. */
static void print_store(const struct ag_conf *c, unsigned long sources)
{
	struct ag_store *s;
	struct ag_store_info info;

	if (ag_store_get(c->db_dir, &s) != 0 || ag_store_info(s, &info) != 0) {
		printf("  store: cannot read its info\n");
		return;
	}
	const uint64_t *e = info.entries;
	uint64_t all = e[AG_DB_SRC] + e[AG_DB_USER] + e[AG_DB_PAIR], pairs = count_pairs(s);
	uint64_t srcs = all - e[AG_DB_USER] - pairs;
	/* each host, plus one record per /24 (bench_addr's layout) */
	uint64_t want = sources + (sources + 255) / 256;
	printf("  store: %llu bytes used (file %llu, map %llu), %llu records (src %llu, user %llu, pair %llu)\n",
	       (unsigned long long)info.used_bytes, (unsigned long long)info.file_bytes,
	       (unsigned long long)info.map_size, (unsigned long long)all,
	       (unsigned long long)srcs, (unsigned long long)e[AG_DB_USER],
	       (unsigned long long)pairs);
	if (sources == 0)
		return;
	if (srcs < want)
		printf("  per source: n/a, %llu of %lu sources were evicted at db_max_size (raise it with -m)\n",
		       (unsigned long long)(want - srcs), sources);
	else
		printf("  per source: %.0f bytes used per tracked source (its host, pair, share of network and user records)\n",
		       (double)info.used_bytes / (double)sources);
}

/* The syncer of -S: a process of its own, as the service is. Returns its
 * pid, or -1. */
static pid_t start_syncer(const struct ag_conf *c)
{
#ifdef AG_SYNC_MS
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	struct ag_store *s;
	if (ag_store_get(c->db_dir, &s) != 0)
		_exit(1);
	for (;;) {
		ag_store_sync(s);
		usleep(500000);
	}
#else
	(void)c;
	fprintf(stderr, "bench_guard: -S needs ag_store_sync() (issue 15)\n");
	return -1;
#endif
}

static bool no_spray;
static const char *extra_keys[16];
static int n_extra;

static int usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-n SOURCES] [-a ATTEMPTS] [-l none|file] [-m DB_MAX_SIZE] [-d DIR] [-F [-B]] [-S] [-O] [-Y] [-f] [-o KEY=VALUE]...\n",
		prog);
	return 2;
}

static int measure(unsigned long sources, unsigned long attempts, const char *logmode,
		   const char *max_size, const struct bench_dir *d, bool flood, bool banned, bool syncer)
{
	struct ag_conf c;

	if (bench_conf(&c, d, "db", logmode, max_size) != 0)
		return 1;
	/* every rule evaluated, nothing that would cut the path short */
	c.tarpit_base = 0;
	c.ip_ban_after = c.net_ban_after = c.spray_users = c.user_lock_after = 0;
	if (no_spray) /* -O: without hot passwords and waves (issue 14), for a before/after */
		c.spray_password_users = c.wave_factor = 0;
	if (ag_conf_apply_args(&c, n_extra, extra_keys, NULL, NULL) != 0) {
		fprintf(stderr, "bench_guard: bad -o\n");
		ag_conf_free(&c);
		return 1;
	}

	double *lat = malloc(attempts * sizeof(*lat));
	if (lat == NULL) {
		ag_conf_free(&c);
		return 1;
	}
	struct ag_store *st;
	int orc = ag_store_get(c.db_dir, &st);
	if (orc != 0) { /* every attempt would fail open, writing nothing: no figures */
		fprintf(stderr, "bench_guard: cannot open the store %s: %s\n", c.db_dir, ag_strerror(orc));
		free(lat);
		ag_conf_free(&c);
		return 1;
	}
	double filled = bench_fill(&c, sources);
	unsigned long nbanned = banned ? fill_banned(&c) : 0;
	pid_t sp = syncer ? start_syncer(&c) : 0;
	if (sp < 0) {
		free(lat);
		ag_conf_free(&c);
		return 1;
	}
	/* with LD_PRELOAD=bench/pagecount.so: the pages by database */
	void (*pc_reset)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "pagecount_reset");
	void (*pc_report)(FILE *, unsigned long) =
		(void (*)(FILE *, unsigned long))dlsym(RTLD_DEFAULT, "pagecount_report");
	if (pc_reset != NULL)
		pc_reset();
	long long w0 = bench_written();
	double total = flood ? run_flood(&c, lat, attempts) : run(&c, sources, lat, attempts);
	long long written = bench_written() - w0;
	if (pc_report != NULL)
		pc_report(stdout, attempts);
	if (sp > 0) {
		kill(sp, SIGKILL);
		waitpid(sp, NULL, 0);
	}
	bench_sort(lat, attempts);

	bench_print_settings("bench_guard", &c);
	printf("  sources=%lu attempts=%lu%s\n", sources, attempts,
	       flood ? " (a flood: new (user, /64) places, two failures each)" : "");
	if (banned)
		printf("  before it: %lu banned sources, the store full at db_max_size\n", nbanned);
	printf("  fill: %.1f s (%.1f us per recorded failure)\n", filled / 1e6,
	       sources ? filled / (double)sources : 0);
	printf("  check+record per attempt: p50 %.1f us  p90 %.1f us  p99 %.1f us  max %.1f us\n",
	       bench_pct(lat, attempts, 50), bench_pct(lat, attempts, 90),
	       bench_pct(lat, attempts, 99), lat[attempts - 1]);
	printf("  throughput (one process): %.0f attempts/s\n", (double)attempts / (total / 1e6));
	unsigned long slow = 0;
	for (unsigned long i = 0; i < attempts; i++)
		slow += lat[i] > 1000.0;
	printf("  slowest: p99.9 %.1f us, max %.1f us, %lu attempts over 1 ms (%s)\n",
	       bench_pct(lat, attempts, 99.9), lat[attempts - 1], slow,
	       syncer ? "a separate process flushes every 500 ms" : "the attempts flush the store themselves");
	if (w0 >= 0 && c.log_kind == AG_LOG_NONE)
		printf("  written per attempt: %.0f bytes (%.1f pages of 4096: the pages each commit dirties)\n",
		       (double)written / (double)attempts, (double)written / 4096.0 / (double)attempts);
	if (flood) {
		printf("  worst attempts (eviction rounds are among them):");
		for (unsigned long i = attempts > 5 ? attempts - 5 : 0; i < attempts; i++)
			printf(" %.1f ms", lat[i] / 1000.0);
		printf("\n");
	}
	print_store(&c, banned ? 0 : sources); /* per source means nothing then */
	print_evictions(&c);
	free(lat);
	ag_conf_free(&c);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long sources = 1000, attempts = 20000;
	const char *logmode = "none", *dir = NULL, *max_size = NULL;
	struct bench_dir d;
	bool flood = false, banned = false, syncer = false;
	int opt;

	while ((opt = getopt(argc, argv, "n:a:l:m:d:FBSOYo:f")) != -1) {
		switch (opt) {
		case 'n': sources = strtoul(optarg, NULL, 10); break;
		case 'a': attempts = strtoul(optarg, NULL, 10); break;
		case 'l': logmode = optarg; break;
		case 'm': max_size = optarg; break;
		case 'd': dir = optarg; break;
		case 'F': flood = true; break;
		case 'B': banned = true; break;
		case 'S': syncer = true; break;
		case 'O': no_spray = true; break;
		case 'Y': drain_outbox = true; break;
		case 'f': fail_only = true; break;
		case 'o':
			if (n_extra == (int)(sizeof(extra_keys) / sizeof(extra_keys[0])))
				return usage(argv[0]);
			extra_keys[n_extra++] = optarg;
			break;
		default: return usage(argv[0]);
		}
	}
	if (attempts == 0)
		return usage(argv[0]);
	if (bench_dir_init(&d, dir) != 0)
		return 1;
	if (fail_only && !flood && !banned)
		printf("bench_guard: -f: every attempt fails, so the pages written are per recorded failure\n");
	int rc = measure(sources, attempts, logmode, max_size, &d, flood || banned, banned, syncer);
	bench_dir_done(&d);
	return rc;
}
