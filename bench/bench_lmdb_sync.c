/*
 * bench_lmdb_sync - what LMDB's durability settings cost one commit, on
 * the disk the store lives on (issue 15): a write transaction with one
 * 200-byte put among -n keys, -c commits per setting:
 *   nosync       MDB_NOSYNC, never flushed (what an attempt pays when the
 *                flush is someone else's: authguard-admin flush --every)
 *   nosync+1s    MDB_NOSYNC, flushed by the committer once a second (the
 *                attempt that finds the flush due waits for the disk)
 *   nometasync   MDB_NOMETASYNC: the data flushed at every commit, the
 *                meta page not (an OS crash can undo the last commit)
 *   sync         LMDB's default: everything flushed at every commit
 * Prints numbers; asserts nothing.
 *
 *   bench_lmdb_sync [-n KEYS] [-c COMMITS] [-d DIR]
 */
#include "config.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int one(const char *dir, const char *name, unsigned flags, bool flush_1s,
	       unsigned long keys, unsigned long commits)
{
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *txn;
	char path[600], val[200] = { 0 };
	double *lat = malloc(commits * sizeof(double)), last_flush = bench_now_us();

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (lat == NULL || mkdir(path, 0700) != 0 || mdb_env_create(&env) != 0 ||
	    mdb_env_set_mapsize(env, (size_t)1 << 30) != 0 || mdb_env_open(env, path, flags, 0600) != 0) {
		fprintf(stderr, "bench_lmdb_sync: cannot open a store in %s\n", path);
		free(lat);
		return -1;
	}
	/* the keys first, flushed, so each commit updates one */
	if (mdb_txn_begin(env, NULL, 0, &txn) != 0 || mdb_dbi_open(txn, NULL, 0, &dbi) != 0)
		return -1;
	for (unsigned long i = 0; i < keys; i++) {
		MDB_val k = { sizeof(i), &i }, v = { sizeof(val), val };
		if (mdb_put(txn, dbi, &k, &v, 0) != 0)
			return -1;
	}
	if (mdb_txn_commit(txn) != 0)
		return -1;
	mdb_env_sync(env, 1);
	srand(42);
	for (unsigned long n = 0; n < commits; n++) {
		unsigned long i = (unsigned long)rand() % keys;
		MDB_val k = { sizeof(i), &i }, v = { sizeof(val), val };
		double t0 = bench_now_us();
		if (mdb_txn_begin(env, NULL, 0, &txn) != 0 || mdb_put(txn, dbi, &k, &v, 0) != 0 ||
		    mdb_txn_commit(txn) != 0)
			return -1;
		if (flush_1s && t0 - last_flush >= 1e6) {
			mdb_env_sync(env, 1);
			last_flush = t0;
		}
		lat[n] = bench_now_us() - t0;
	}
	mdb_env_close(env);
	bench_sort(lat, commits);
	unsigned long slow = 0;
	for (unsigned long n = 0; n < commits; n++)
		slow += lat[n] > 1000.0;
	printf("  %-11s commit p50 %8.1f us  p99 %8.1f us  max %9.1f us  over 1 ms: %lu of %lu\n", name,
	       bench_pct(lat, commits, 50), bench_pct(lat, commits, 99), lat[commits - 1], slow,
	       commits);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long keys = 100000, commits = 2000;
	const char *dir = NULL;
	struct bench_dir d;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "n:c:d:")) != -1) {
		switch (opt) {
		case 'n': keys = strtoul(optarg, NULL, 10); break;
		case 'c': commits = strtoul(optarg, NULL, 10); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: bench_lmdb_sync [-n KEYS] [-c COMMITS] [-d DIR]\n");
			return 2;
		}
	}
	if (keys == 0 || commits == 0 || bench_dir_init(&d, dir) != 0)
		return 2;
	printf("bench_lmdb_sync: %lu keys, %lu commits of one 200-byte put each, in %s\n", keys,
	       commits, d.path);
	rc |= one(d.path, "nosync", MDB_NOSYNC, false, keys, commits);
	rc |= one(d.path, "nosync+1s", MDB_NOSYNC, true, keys, commits);
	rc |= one(d.path, "nometasync", MDB_NOMETASYNC, false, keys, commits);
	rc |= one(d.path, "sync", 0, false, keys, commits);
	bench_dir_done(&d);
	return rc != 0;
}
