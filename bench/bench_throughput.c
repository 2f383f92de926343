/*
 * bench_throughput - attempts per second when several processes share one
 * store, as the workers of a mail server do. For each process count, a
 * fresh store is filled, then that many children each run check + record
 * for their own share of the sources, all starting together. Wall time
 * runs from the common start to the end of the last child. Prints
 * numbers; asserts nothing.
 *
 *   bench_throughput [-p PROCS[,PROCS...]] [-a ATTEMPTS_PER_PROC] [-n SOURCES]
 *                    [-l none|file] [-m DB_MAX_SIZE] [-d DIR] [-A [-b BANNED]]
 *                    [-w WARMUP_PER_PROC]
 *
 * -A: an attack mix instead: 95 attempts in 100 come from one of -b
 * banned sources (1,000 by default) and are refused by the check (the
 * front ends then record nothing), the other 5 are check + record of a
 * known source, 1 in 4 a success. Refusals and the rest are reported
 * apart.
 *
 * The store is filled once (db-fill) and copied for each process count,
 * then flushed, so a run starts with nothing of the fill left to write
 * back (until issue 15 it started with the whole fill dirty in the page
 * cache, and its writeback stalled the run). With -d, a db-fill made by
 * an earlier run with the same -n and -b is used again.
 * -w: each child first runs that many attempts of the same mix (another
 * seed) untimed, so the figures are those of a process that has been
 * serving (its pages of the map touched), not of a new one; the page
 * faults and context switches per attempt are printed either way.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"
#include "guard.h"
#include "store.h"

#define MAX_PROCS 256
#define MAX_COUNTS 16 /* process counts in one -p list */

struct job {
	const struct ag_conf *c;
	unsigned long sources, attempts; /* attempts per process */
	unsigned nprocs;
	double *lat;                     /* shared: nprocs * attempts */
	bool attack;                     /* -A */
	unsigned long banned;            /* -b */
	uint8_t *refused;                /* shared: lat[i] was a refusal */
	unsigned long *let_in;           /* shared: banned sources not refused */
	unsigned long warmup;            /* -w: untimed attempts per child first */
	struct rusage ru;                /* the children's, over the timed run */
	struct rusage *ru_start;         /* shared: each child's at the start */
};

/* Child @k's attempts: random sources i with i % nprocs == k, so no two
 * children touch the same host record (they still share networks, users
 * and the writer lock, as real workers do). */
static void child_run(const struct job *j, unsigned k, unsigned seed, unsigned long attempts,
		      bool timed)
{
	unsigned long share = (j->sources - k + j->nprocs - 1) / j->nprocs;
	double *lat = j->lat + (size_t)k * j->attempts;
	char addr[32], user[32];
	uint8_t *refused = j->refused + (size_t)k * j->attempts, scratch = 0;

	unsigned long bshare = (j->banned - k + j->nprocs - 1) / j->nprocs;
	for (unsigned long n = 0; n < attempts; n++) {
		bool bad = j->attack && bshare > 0 && (unsigned)rand_r(&seed) % 100 < 95;
		unsigned long i;
		if (bad) {
			i = k + ((unsigned long)rand_r(&seed) % bshare) * j->nprocs;
			bench_attacker(i, addr, sizeof(addr));
		} else {
			i = k + ((unsigned long)rand_r(&seed) % (share ? share : 1)) * j->nprocs;
			bench_addr(i, addr, sizeof(addr));
		}
		snprintf(user, sizeof(user), "user%lu", i % 5000);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		struct ag_ticket t;
		uint8_t *ref = timed ? &refused[n] : &scratch;
		double s = bench_now_us();
		*ref = ag_guard_check(j->c, &bench_sink, &a, &t) == AG_REFUSE;
		if (!*ref)
			ag_guard_record(j->c, &bench_sink, &a, n % 4 == 0, "guess", &t);
		if (timed)
			lat[n] = bench_now_us() - s;
		if (bad && !*ref)
			__atomic_fetch_add(j->let_in, 1, __ATOMIC_RELAXED);
	}
}

/* Open the store (a service does that once, not per attempt), say so on
 * @ready, wait for @go to close, run. Never returns. */
static void child(const struct job *j, unsigned k, int ready, int go)
{
	struct ag_store *s;
	char b = 0;

	if (ag_store_get(j->c->db_dir, &s) != 0)
		_exit(1);
	if (j->warmup > 0)
		child_run(j, k, 4242 + k, j->warmup, false);
	getrusage(RUSAGE_SELF, &j->ru_start[k]);
	if (write(ready, &b, 1) != 1)
		_exit(1);
	close(ready);
	while (read(go, &b, 1) < 0 && errno == EINTR)
		;
	child_run(j, k, 42 + k, j->attempts, true);
	_exit(0);
}

static void ru_add(struct rusage *sum, const struct rusage *r, long sign)
{
	sum->ru_minflt += sign * r->ru_minflt;
	sum->ru_majflt += sign * r->ru_majflt;
	sum->ru_nvcsw += sign * r->ru_nvcsw;
	sum->ru_nivcsw += sign * r->ru_nivcsw;
	long us = sign * (r->ru_utime.tv_sec * 1000000L + r->ru_utime.tv_usec);
	long sus = sign * (r->ru_stime.tv_sec * 1000000L + r->ru_stime.tv_usec);
	sum->ru_utime.tv_usec += us; /* microseconds, unnormalised: read by report() */
	sum->ru_stime.tv_usec += sus;
}

/* The children's rusage lands in j->ru, less what each had used by the
 * start (written by the child into its slot of @before). */
static int reap(pid_t *pids, unsigned n, struct rusage *sum, const struct rusage *before)
{
	int bad = 0, st;

	memset(sum, 0, sizeof(*sum));
	for (unsigned i = 0; i < n; i++) {
		struct rusage r;
		if (wait4(pids[i], &st, 0, &r) != pids[i] || !WIFEXITED(st) ||
		    WEXITSTATUS(st) != 0) {
			bad++;
			continue;
		}
		ru_add(sum, &r, 1);
		ru_add(sum, &before[i], -1);
	}
	return bad;
}

/* Fork the children, start them together. Returns the wall time in
 * microseconds, or a negative value if a child failed. */
static double run_procs(struct job *j)
{
	pid_t pids[MAX_PROCS];
	int ready[2], go[2];
	unsigned n = 0;
	char b;

	if (pipe(ready) != 0 || pipe(go) != 0)
		return -1;
	fflush(stdout); /* or children flush the parent's buffered lines again */
	for (; n < j->nprocs; n++) {
		pids[n] = fork();
		if (pids[n] < 0)
			break;
		if (pids[n] == 0) {
			close(ready[0]);
			close(go[1]);
			child(j, n, ready[1], go[0]);
		}
	}
	close(ready[1]);
	close(go[0]);
	/* start the clock only once every child has its store open */
	unsigned up = 0;
	while (up < n && read(ready[0], &b, 1) == 1)
		up++;
	close(ready[0]);
	double t0 = bench_now_us();
	close(go[1]);
	int bad = reap(pids, n, &j->ru, j->ru_start);
	double wall = bench_now_us() - t0;
	return bad || n < j->nprocs || up < n ? -1 : wall;
}

static void report(const struct job *j, double wall)
{
	size_t total = (size_t)j->nprocs * j->attempts, nr = 0, no = 0;
	double rate = (double)total / (wall / 1e6);
	double *ref = malloc(total * sizeof(double)), *other = malloc(total * sizeof(double));

	if (ref == NULL || other == NULL) {
		free(ref);
		free(other);
		return;
	}
	for (size_t i = 0; i < total; i++) {
		if (j->refused[i])
			ref[nr++] = j->lat[i];
		else
			other[no++] = j->lat[i];
	}
	bench_sort(j->lat, total);
	printf("  procs=%u: %zu attempts in %.2f s: %.0f attempts/s total, %.0f per process; "
	       "all: p50 %.1f us  p99 %.1f us  max %.1f us\n",
	       j->nprocs, total, wall / 1e6, rate, rate / j->nprocs, bench_pct(j->lat, total, 50),
	       bench_pct(j->lat, total, 99), j->lat[total - 1]);
	bench_sort(ref, nr);
	bench_sort(other, no);
	if (nr > 0)
		printf("    refused (%zu): p50 %.1f us  p99 %.1f us  max %.1f us\n", nr,
		       bench_pct(ref, nr, 50), bench_pct(ref, nr, 99), ref[nr - 1]);
	if (j->attack && no > 0)
		printf("    check+record (%zu): p50 %.1f us  p99 %.1f us  max %.1f us\n", no,
		       bench_pct(other, no, 50), bench_pct(other, no, 99), other[no - 1]);
	printf("    per attempt: %.1f us user + %.1f us system CPU, %.3f minor faults, %.3f major, "
	       "%.3f voluntary and %.3f involuntary context switches (all children, from the "
	       "start)\n",
	       (double)j->ru.ru_utime.tv_usec / (double)total,
	       (double)j->ru.ru_stime.tv_usec / (double)total,
	       (double)j->ru.ru_minflt / (double)total, (double)j->ru.ru_majflt / (double)total,
	       (double)j->ru.ru_nvcsw / (double)total, (double)j->ru.ru_nivcsw / (double)total);
	if (*j->let_in > 0)
		printf("    NOTE: %lu attempts from banned sources were not refused\n", *j->let_in);
	free(ref);
	free(other);
}

/* The rules as the runs use them: every rule evaluated, nothing that
 * would cut the path short. */
static int run_conf(struct ag_conf *c, const struct bench_dir *d, const char *sub,
		    const char *logmode, const char *max_size)
{
	if (bench_conf(c, d, sub, logmode, max_size) != 0)
		return -1;
	c->tarpit_base = 0;
	c->ip_ban_after = c->net_ban_after = c->spray_users = c->user_lock_after = 0;
	return 0;
}

/* Copy @from to @to (both in the scratch directory). */
static int copy_file(const char *from, const char *to)
{
	char buf[1 << 16];
	FILE *in = fopen(from, "rb"), *out = in != NULL ? fopen(to, "wb") : NULL;
	size_t n;
	int rc = in != NULL && out != NULL ? 0 : -1;

	while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	if (in != NULL && ferror(in))
		rc = -1;
	if (out != NULL && fclose(out) != 0)
		rc = -1;
	if (in != NULL)
		fclose(in);
	return rc;
}

/* The filled store, made once: -n sources. A "filled" file inside says
 * how many, so that -d DIR can use it again. */
static int fill_template(const struct job *j, const struct bench_dir *d, const char *logmode,
			 const char *max_size)
{
	char stamp[700], want[64], have[64] = "";
	struct ag_conf c;
	struct ag_store *s;
	FILE *f;

	snprintf(want, sizeof(want), "%lu\n", j->sources);
	snprintf(stamp, sizeof(stamp), "%s/db-fill/filled", d->path);
	if ((f = fopen(stamp, "r")) != NULL) {
		if (fgets(have, sizeof(have), f) == NULL)
			have[0] = '\0';
		fclose(f);
		if (strcmp(have, want) == 0) {
			printf("  fill: %s/db-fill from an earlier run\n", d->path);
			return 0;
		}
		fprintf(stderr, "bench_throughput: %s/db-fill holds another fill: remove it\n",
			d->path);
		return -1;
	}
	if (run_conf(&c, d, "db-fill", logmode, max_size) != 0)
		return -1;
	double us = bench_fill(&c, j->sources);
	int rc = ag_store_get(c.db_dir, &s);
	if (rc == 0)
		ag_store_sync(s);
	ag_conf_free(&c);
	if (rc == 0 && ((f = fopen(stamp, "w")) == NULL || fputs(want, f) < 0 || fclose(f) != 0))
		rc = -1;
	if (rc == 0)
		printf("  fill: %lu sources in %.1f s (%.1f us each)\n", j->sources, us / 1e6,
		       us / (double)(j->sources ? j->sources : 1));
	return rc;
}

/* db-fill's store files into db-pN, then flushed: the copy leaves them
 * dirty in the page cache, and a run must not start with hundreds of MB
 * of writeback under way (a real store has at most a second of it). */
static int copy_template(const struct bench_dir *d, const char *sub)
{
	static const char *const files[] = { "data.mdb", "counters.ag" };
	char from[700], to[700];

	snprintf(to, sizeof(to), "%s/%s", d->path, sub);
	if (mkdir(to, 0700) != 0 && errno != EEXIST)
		return -1;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(from, sizeof(from), "%s/db-fill/%s", d->path, files[i]);
		snprintf(to, sizeof(to), "%s/%s/%s", d->path, sub, files[i]);
		if (copy_file(from, to) != 0)
			return -1;
	}
	snprintf(to, sizeof(to), "%s/%s/lock.mdb", d->path, sub);
	(void)remove(to); /* made afresh by the first open */
	sync();
	return 0;
}

/* One process count, on a fresh copy of the filled store so each count
 * starts alike. */
static int one_count(struct job *j, const struct bench_dir *d, const char *logmode,
		     const char *max_size)
{
	struct ag_conf c;
	char sub[32];
	int rc = -1;

	snprintf(sub, sizeof(sub), "db-p%u", j->nprocs);
	if (copy_template(d, sub) != 0) {
		fprintf(stderr, "bench_throughput: cannot copy the filled store to %s\n", sub);
		return -1;
	}
	if (run_conf(&c, d, sub, logmode, max_size) != 0)
		return -1;
	/* banned now, for an hour: a kept db-fill may be older than that */
	struct ag_store *s;
	if (j->attack && bench_ban(&c, j->banned) < 0) {
		fprintf(stderr, "bench_throughput: cannot ban the attackers\n");
		goto out;
	}
	if (ag_store_get(c.db_dir, &s) != 0)
		goto out;
	ag_store_sync(s);
	j->c = &c;
	size_t n = (size_t)j->nprocs * j->attempts;
	size_t bytes = n * (sizeof(double) + 1) + sizeof(unsigned long);
	bytes = (bytes + 15) / 16 * 16;
	size_t ru_at = bytes;
	bytes += j->nprocs * sizeof(struct rusage);
	void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("mmap");
		goto out;
	}
	j->lat = mem;
	j->let_in = (unsigned long *)(j->lat + n);
	j->refused = (uint8_t *)(j->let_in + 1);
	j->ru_start = (struct rusage *)((char *)mem + ru_at);
	double wall = run_procs(j);
	if (wall < 0)
		fprintf(stderr, "bench_throughput: procs=%u: a child failed\n", j->nprocs);
	else
		report(j, wall);
	rc = wall < 0 ? -1 : 0;
	munmap(mem, bytes);
out:
	j->c = NULL;
	ag_conf_free(&c);
	return rc;
}

/* The settings line; also finds a bad log mode or size before any run. */
static int print_header(const struct job *j, const char *logmode, const char *max_size,
			const struct bench_dir *d)
{
	struct ag_conf c;

	if (run_conf(&c, d, "db-p<N>", logmode, max_size) != 0)
		return -1;
	bench_print_settings("bench_throughput", &c);
	printf("  sources=%lu (one failure each before the run) attempts=%lu per process, "
	       "1 in 4 a success\n", j->sources, j->attempts);
	if (j->attack)
		printf("  attack mix: 95%% of attempts from %lu banned sources (check alone, refused), "
		       "5%% check+record as above\n", j->banned);
	printf("  %s\n", j->warmup > 0 ? "warm processes: each ran the mix untimed first (-w)"
				      : "new processes: the timed run is each one's first (no -w)");
	ag_conf_free(&c);
	return 0;
}

/* "1,2,4,8" into @counts; returns how many, or -1. */
static int parse_counts(const char *s, unsigned *counts)
{
	int n = 0;

	while (n < MAX_COUNTS) {
		char *end;
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || v == 0 || v > MAX_PROCS || (*end != ',' && *end != '\0'))
			return -1;
		counts[n++] = (unsigned)v;
		if (*end == '\0')
			return n;
		s = end + 1;
	}
	return -1;
}

static int usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-p PROCS[,PROCS...]] [-a ATTEMPTS_PER_PROC] [-n SOURCES] "
		"[-l none|file] [-m DB_MAX_SIZE] [-d DIR] [-A [-b BANNED]] [-w WARMUP]\n", prog);
	return 2;
}

int main(int argc, char **argv)
{
	struct job j = { .sources = 10000, .attempts = 20000, .banned = 1000 };
	const char *procs = "1,2,4,8", *logmode = "none", *dir = NULL, *max_size = NULL;
	unsigned counts[MAX_COUNTS];
	struct bench_dir d;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "p:a:n:l:m:d:Ab:w:")) != -1) {
		switch (opt) {
		case 'p': procs = optarg; break;
		case 'a': j.attempts = strtoul(optarg, NULL, 10); break;
		case 'n': j.sources = strtoul(optarg, NULL, 10); break;
		case 'l': logmode = optarg; break;
		case 'm': max_size = optarg; break;
		case 'd': dir = optarg; break;
		case 'A': j.attack = true; break;
		case 'b': j.banned = strtoul(optarg, NULL, 10); break;
		case 'w': j.warmup = strtoul(optarg, NULL, 10); break;
		default: return usage(argv[0]);
		}
	}
	int ncounts = parse_counts(procs, counts);
	if (j.attempts == 0 || j.sources == 0 || ncounts < 0)
		return usage(argv[0]);
	if (bench_dir_init(&d, dir) != 0)
		return 1;
	if (print_header(&j, logmode, max_size, &d) != 0 ||
	    fill_template(&j, &d, logmode, max_size) != 0)
		rc = 1;
	for (int i = 0; i < ncounts && rc == 0; i++) {
		j.nprocs = counts[i];
		rc = one_count(&j, &d, logmode, max_size) == 0 ? 0 : 1;
	}
	bench_dir_done(&d);
	return rc;
}
