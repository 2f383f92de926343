/* util.c - helpers shared by the benchmark programs. */
#include "config.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "record.h"
#include "store.h"

static void nop_sink(void *ctx, enum ag_level l, const char *m)
{
	(void)ctx;
	(void)l;
	(void)m;
}

const struct ag_sink bench_sink = { nop_sink, NULL };

double bench_now_us(void)
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

void bench_sort(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
}

/* Nearest rank: the value at or below which @pct percent of them lie. */
double bench_pct(const double *sorted, size_t n, double pct)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)((double)n * pct / 100.0);
	return sorted[i < n ? i : n - 1];
}

double bench_mean(const double *v, size_t n)
{
	double sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += v[i];
	return n ? sum / (double)n : 0;
}

void bench_addr(unsigned long i, char *buf, size_t len)
{
	snprintf(buf, len, "10.%lu.%lu.%lu", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

void bench_attacker(unsigned long i, char *buf, size_t len)
{
	snprintf(buf, len, "172.%lu.%lu.%lu", 16 + ((i >> 16) & 15), (i >> 8) & 255, i & 255);
}

long bench_ban(const struct ag_conf *c, unsigned long n)
{
	struct ag_store *s;
	struct ag_src_rec r = { .version = AG_REC_VERSION, .ban_count = 1,
				.ban_reason = AG_WHY_FAILURES };
	unsigned long done = 0;

	if (ag_store_get(c->db_dir, &s) != 0)
		return -1;
	r.first_seen = r.last_seen = ag_now_ms();
	r.ban_until = r.first_seen + 3600000;
	while (done < n) {
		struct ag_txn *t;
		unsigned long at = done;
		int rc = ag_txn_begin(s, true, &t);
		for (int k = 0; k < 500 && at < n && rc == 0; k++, at++) {
			char addr[32];
			struct ag_addr a;
			uint8_t key[AG_SRC_KEY_LEN];
			bench_attacker(at, addr, sizeof(addr));
			rc = ag_addr_parse(addr, strlen(addr), &a);
			ag_src_key(&a, key);
			if (rc == 0)
				rc = ag_txn_put(t, AG_DB_SRC, key, sizeof(key), &r, sizeof(r));
		}
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
		if (rc == AG_EFULL && ag_store_grow(s, c->db_max_size) == 0)
			continue; /* the batch again, in a larger map */
		if (rc != 0)
			return -1;
		done = at;
	}
	return (long)done;
}

long long bench_written(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	long long v = -1;

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "wchar: %lld", &v) == 1)
			break;
	if (f != NULL)
		fclose(f);
	return v;
}

double bench_fill(const struct ag_conf *c, unsigned long sources)
{
	char addr[32], user[32];
	double t0 = bench_now_us();

	for (unsigned long i = 0; i < sources; i++) {
		bench_addr(i, addr, sizeof(addr));
		snprintf(user, sizeof(user), "user%lu", i % 5000);
		struct ag_attempt a = { "imap", user, strlen(user), addr, strlen(addr) };
		ag_guard_record(c, &bench_sink, &a, false, "x", NULL);
	}
	return bench_now_us() - t0;
}

int bench_dir_init(struct bench_dir *d, const char *dir)
{
	memset(d, 0, sizeof(*d));
	if (dir != NULL) {
		snprintf(d->path, sizeof(d->path), "%s", dir);
		return 0;
	}
	snprintf(d->path, sizeof(d->path), "/tmp/authguard-bench.XXXXXX");
	if (mkdtemp(d->path) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	d->made = true;
	return 0;
}

int bench_conf(struct ag_conf *c, const struct bench_dir *d, const char *sub,
	       const char *logmode, const char *max_size)
{
	char err[256], v[600];

	ag_conf_init(c);
	snprintf(c->db_dir, sizeof(c->db_dir), "%s/%s", d->path, sub);
	if (strcmp(logmode, "file") == 0) {
		snprintf(v, sizeof(v), "file:%s/%s.log", d->path, sub);
		if (ag_conf_set(c, "log", v, err, sizeof(err)) != 0)
			goto bad;
	} else if (strcmp(logmode, "none") == 0) {
		c->log_kind = AG_LOG_NONE;
	} else {
		snprintf(err, sizeof(err), "log mode '%s' is not none or file", logmode);
		goto bad;
	}
	if (max_size != NULL && ag_conf_set(c, "db_max_size", max_size, err, sizeof(err)) != 0)
		goto bad;
	return 0;
bad:
	fprintf(stderr, "bench: %s\n", err);
	ag_conf_free(c);
	return -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) == 0 ? 0 : -1;
}

void bench_dir_done(struct bench_dir *d)
{
	/* a 1M-source store is hundreds of MB: do not leave it in /tmp */
	if (d->made && nftw(d->path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
		perror(d->path);
	d->made = false;
}

static void format_size(int64_t b, char *buf, size_t len)
{
	if (b % (1LL << 30) == 0)
		snprintf(buf, len, "%lldG", (long long)(b >> 30));
	else if (b % (1LL << 20) == 0)
		snprintf(buf, len, "%lldM", (long long)(b >> 20));
	else
		snprintf(buf, len, "%lld", (long long)b);
}

void bench_print_settings(const char *prog, const struct ag_conf *c)
{
	static const char *logs[] = { "syslog", "file", "none" };
	char size[32], tarpit[32];

	format_size(c->db_max_size, size, sizeof(size));
	ag_format_duration(c->tarpit_base, tarpit, sizeof(tarpit));
	printf("%s: cores=%ld db_max_size=%s log=%s mode=%s tarpit_base=%s ip_ban_after=%u "
	       "net_ban_after=%u spray_users=%u user_lock_after=%u (0 = off) "
	       "store=%s (MDB_NOSYNC, 1 s flush)\n",
	       prog, sysconf(_SC_NPROCESSORS_ONLN), size,
	       c->log_kind < AG_ARRAY_LEN(logs) ? logs[c->log_kind] : "?",
	       c->mode == AG_MODE_ENFORCE ? "enforce" : "log_only", tarpit, c->ip_ban_after,
	       c->net_ban_after, c->spray_users, c->user_lock_after, c->db_dir);
}
