/*
 * util.h - what the benchmark programs share: a clock, sorting and
 * percentiles, synthetic addresses, a scratch directory and a header line
 * that tells which settings a figure was measured with.
 */
#ifndef AG_BENCH_H
#define AG_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "guard.h"

/* A scratch directory with the store and log in it. */
struct bench_dir {
	char path[512];
	bool made; /* created here, so removed by bench_dir_done() */
};

/* Logs go nowhere: the benchmarks time the guard, not syslog. */
extern const struct ag_sink bench_sink;

double bench_now_us(void);

/* Sort @n latencies and read percentiles off them. */
void bench_sort(double *v, size_t n);
double bench_pct(const double *sorted, size_t n, double pct);
double bench_mean(const double *v, size_t n);

/* The i-th synthetic source: 10.x.y.z, spread over many /24s. */
void bench_addr(unsigned long i, char *buf, size_t len);

/* The i-th attacker: 172.16-31.y.z, none of them a bench_addr() source. */
void bench_attacker(unsigned long i, char *buf, size_t len);

/* Ban attackers 0..@n-1 for an hour (their records written directly, as
 * authguard-admin ban would, in batches). Returns how many, or -1. */
long bench_ban(const struct ag_conf *c, unsigned long n);

/* Bytes this process has passed to write(2)/pwrite(2) so far
 * (/proc/self/io wchar), or -1: LMDB pwrites each page a commit dirties,
 * so the growth over N attempts with log=none is pages times page size. */
long long bench_written(void);

/* Record one failure from each of the first @sources sources (users
 * user0..user4999 in turn), so each holds a record. Returns the time taken
 * in microseconds. */
double bench_fill(const struct ag_conf *c, unsigned long sources);

/*
 * Use @dir (may be NULL: a fresh directory under /tmp) and point @c at
 * a store in @sub inside it, logging as @logmode says ("none" or "file").
 * Returns 0, or -1 after printing why (@c then needs no ag_conf_free()).
 */
int bench_dir_init(struct bench_dir *d, const char *dir);
int bench_conf(struct ag_conf *c, const struct bench_dir *d, const char *sub,
	       const char *logmode, const char *max_size);

/* Remove the directory if bench_dir_init() made it. */
void bench_dir_done(struct bench_dir *d);

/* One line: cores, db_max_size, log mode, mode and thresholds. */
void bench_print_settings(const char *prog, const struct ag_conf *c);

#endif
