/*
 * bench_layout - pages an LMDB commit writes for one recorded failure,
 * with the records laid out as the store does (one database each for
 * sources, users and pairs: "apart") and as issue 15.3 proposes: one
 * database, the pair filed right after its host so that both are in one
 * leaf ("merged"), and also each host filed right after its /24
 * ("nested"); on bare LMDB with records of the store's sizes. And the two
 * that keep sources and users where modules of older versions read them:
 * the pair filed after its host in the source database ("at-host", what
 * the store does since issue 15.3) or after its user in the user database
 * ("at-user"). Prints numbers, asserts nothing.
 *
 *   bench_layout [-n SOURCES] [-c COMMITS] [-d DIR]
 *
 * Each failure writes four records, as ag_guard_record() does for a
 * known source: the host (136 bytes), its /24 (136), the user (72), the
 * user x host pair (88). Sources are 10.x.y.z as bench_addr(), users
 * one of 5,000; the store is filled with one failure per source first.
 */
#include "config.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

enum { HOST_LEN = 136, NET_LEN = 136, USER_LEN = 72, PAIR_LEN = 88 };

struct layout {
	MDB_env *env;
	MDB_dbi src, user, pair; /* all the same database when merged */
	int merged; /* 0: apart; 1: one database, pair after host; 2: and host after its /24;
		     * 3: pair after host in src, user apart; 4: pair after user in user */
};

enum { APART, MERGED, NESTED, AT_HOST, AT_USER, LAYOUTS };

static int put(MDB_txn *t, MDB_dbi d, const void *k, size_t kl, size_t vl)
{
	static char val[256];
	MDB_val key = { kl, (void *)k }, v = { vl, val };
	return mdb_put(t, d, &key, &v, 0);
}

/* One failure of source @i at user @u, as four puts. */
static int failure(struct layout *l, MDB_txn *t, unsigned long i, unsigned long u)
{
	uint8_t host[1 + 18] = { 'S', 4, 32 }, net[1 + 18] = { 'S', 4, 24 };
	uint8_t user[1 + 16] = { 'U' }, pair[1 + 18 + 1 + 16];
	uint8_t a[4] = { 10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i };

	memcpy(host + 3, a, 4);
	memcpy(net + 3, a, 3);
	if (l->merged == NESTED) {
		/* the host filed under its /24: "S", family, the /24, "H", host */
		memcpy(host, net, sizeof(net));
		host[3 + 3] = 'H';
		host[3 + 4] = a[3];
		memset(host + 3 + 5, 0, sizeof(host) - 8);
	}
	snprintf((char *)user + 1, sizeof(user) - 1, "user%lu", u);
	size_t ul = 1 + strlen((char *)user + 1);
	/* merged: the pair right after its host ("S" host key, "P", user);
	 * apart: keyed by user then source, as the store does */
	size_t pl;
	if (l->merged == AT_USER) {
		/* the user key, a separator, the source */
		memcpy(pair, user, ul);
		pair[ul] = 0;
		memcpy(pair + ul + 1, host + 1, 18);
		pl = ul + 1 + 18;
	} else if (l->merged != APART) {
		memcpy(pair, host, sizeof(host));
		pair[sizeof(host)] = 'P';
		memcpy(pair + sizeof(host) + 1, user + 1, ul - 1);
		pl = sizeof(host) + ul;
	} else {
		memcpy(pair, user + 1, ul - 1);
		memcpy(pair + ul - 1, host + 1, 18);
		pl = ul - 1 + 18;
	}
	int rc = put(t, l->src, host, sizeof(host), HOST_LEN);
	if (rc == 0)
		rc = put(t, l->src, net, sizeof(net), NET_LEN);
	if (rc == 0)
		rc = put(t, l->user, user, ul, USER_LEN);
	if (rc == 0)
		rc = put(t, l->pair, pair, pl, PAIR_LEN);
	return rc;
}

static int run(const char *dir, int merged, unsigned long sources, unsigned long commits)
{
	struct layout l = { .merged = merged };
	MDB_txn *t;
	char path[600];

	static const char *const names[LAYOUTS] = { "apart", "merged", "nested", "at-host",
						   "at-user" };
	/* the databases each record kind goes to */
	static const char *const dbs[LAYOUTS][3] = {
		{ "src", "user", "pair" }, { "rec", "rec", "rec" }, { "rec", "rec", "rec" },
		{ "src", "user", "src" }, { "src", "user", "user" },
	};
	snprintf(path, sizeof(path), "%s/%s", dir, names[merged]);
	if (mkdir(path, 0700) != 0 || mdb_env_create(&l.env) != 0 ||
	    mdb_env_set_maxdbs(l.env, 8) != 0 || mdb_env_set_mapsize(l.env, (size_t)4 << 30) != 0 ||
	    mdb_env_open(l.env, path, MDB_NOSYNC, 0600) != 0 || mdb_txn_begin(l.env, NULL, 0, &t) != 0)
		return -1;
	if (mdb_dbi_open(t, dbs[merged][0], MDB_CREATE, &l.src) != 0 ||
	    mdb_dbi_open(t, dbs[merged][1], MDB_CREATE, &l.user) != 0 ||
	    mdb_dbi_open(t, dbs[merged][2], MDB_CREATE, &l.pair) != 0)
		return -1;
	for (unsigned long i = 0; i < sources; i++) {
		if (failure(&l, t, i, i % 5000) != 0)
			return -1;
		if (i % 10000 == 9999 && (mdb_txn_commit(t) != 0 || mdb_txn_begin(l.env, NULL, 0, &t) != 0))
			return -1;
	}
	if (mdb_txn_commit(t) != 0)
		return -1;
	srand(42);
	long long w0 = bench_written();
	double t0 = bench_now_us();
	for (unsigned long n = 0; n < commits; n++) {
		unsigned long i = (unsigned long)rand() % sources;
		if (mdb_txn_begin(l.env, NULL, 0, &t) != 0 || failure(&l, t, i, i % 5000) != 0 ||
		    mdb_txn_commit(t) != 0)
			return -1;
	}
	double us = (bench_now_us() - t0) / (double)commits;
	long long w = bench_written() - w0;
	mdb_env_close(l.env);
	printf("  %-7s %.1f pages written per failure (%.0f bytes), %.1f us per commit\n",
	       names[merged], (double)w / 4096.0 / (double)commits,
	       (double)w / (double)commits, us);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long sources = 100000, commits = 5000;
	const char *dir = NULL;
	struct bench_dir d;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "n:c:d:")) != -1) {
		switch (opt) {
		case 'n': sources = strtoul(optarg, NULL, 10); break;
		case 'c': commits = strtoul(optarg, NULL, 10); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: bench_layout [-n SOURCES] [-c COMMITS] [-d DIR]\n");
			return 2;
		}
	}
	if (sources == 0 || commits == 0 || bench_dir_init(&d, dir) != 0)
		return 2;
	printf("bench_layout: %lu sources, %lu failures (bare LMDB, MDB_NOSYNC)\n", sources, commits);
	for (int l = APART; l < LAYOUTS; l++)
		rc |= run(d.path, l, sources, commits);
	bench_dir_done(&d);
	if (rc != 0)
		fprintf(stderr, "bench_layout: an LMDB call failed\n");
	return rc != 0;
}
