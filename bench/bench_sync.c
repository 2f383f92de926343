/*
 * bench_sync.c - the fleet's propagation latency (issue 13): four
 * simulated hosts (four stores, four real authguard-sync daemons) on one
 * real redis-server. This process records failures round-robin on the
 * four stores at a fixed total rate, each from a fresh source address, and
 * a poller watches the other three stores for each one's record: the
 * latency is from the record's commit on its host to its record
 * appearing on another (a host applies a sender's events in order, so
 * the poller only looks for the next one of each sender). Printed: p50,
 * p99 and max per rate, the events that never arrived within 5 s, the
 * daemons' CPU per 1,000 events applied, and the record path's latency
 * on a store with the outbox (sync_redis set) beside one without.
 * Numbers only; nothing is asserted.
 *
 * bench_sync -s PATH_TO_authguard-sync [-r RATE[,RATE...]] [-t SECONDS]
 *            [-R redis-server]
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "store.h"
#include "sync.h"
#include "util.h"

#define HOSTS 4
#define PER_SENDER_MAX 200000

static struct ag_conf conf[HOSTS];
static double *sent_us[HOSTS];      /* per sender: commit time of its j-th event */
static double *lat_us[HOSTS][HOSTS]; /* [sender][receiver][j] */
static atomic_ulong sent_n[HOSTS];
static unsigned long seen_n[HOSTS][HOSTS];
static atomic_bool poll_stop;
static unsigned long addr_base; /* each run's sources are new ones */

static void sender_addr(int s, unsigned long j, char *buf, size_t len)
{
	snprintf(buf, len, "10.%d.%lu.%lu", 100 + s, (j >> 8) & 255, j & 255);
}

static bool has_src(struct ag_store *st, int s, unsigned long j)
{
	char a[32];
	struct ag_addr addr;
	struct ag_src_rec r;
	struct ag_txn *t;

	sender_addr(s, addr_base + j, a, sizeof(a));
	if (ag_addr_parse(a, strlen(a), &addr) != 0 || ag_txn_begin(st, false, &t) != 0)
		return false;
	bool found = ag_admin_get_src(t, &addr, &r) == 0;
	ag_txn_abort(t);
	return found;
}

static void *poller(void *arg)
{
	struct ag_store *st[HOSTS];

	(void)arg;
	for (int h = 0; h < HOSTS; h++)
		if (ag_store_get(conf[h].db_dir, &st[h]) != 0)
			return NULL;
	while (!atomic_load(&poll_stop)) {
		bool any = false;
		for (int s = 0; s < HOSTS; s++) {
			unsigned long n = atomic_load(&sent_n[s]);
			for (int r = 0; r < HOSTS; r++) {
				if (r == s)
					continue;
				while (seen_n[s][r] < n && has_src(st[r], s, seen_n[s][r])) {
					lat_us[s][r][seen_n[s][r]] = bench_now_us() - sent_us[s][seen_n[s][r]];
					seen_n[s][r]++;
					any = true;
				}
			}
		}
		if (!any) {
			struct timespec ts = { 0, 100000 };
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(sa);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &l) != 0)
		return -1;
	close(fd);
	return ntohs(sa.sin_port);
}

static pid_t spawn(char *const argv[], const char *out)
{
	pid_t p = fork();

	if (p == 0) {
		FILE *f = freopen(out, "a", stdout);
		(void)f;
		dup2(1, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return p;
}

static double cpu_s(pid_t p)
{
	char path[64], buf[1024];
	unsigned long ut = 0, stt = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)p);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *q = strrchr(buf, ')');
	if (q == NULL || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
		return 0;
	return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static void sleep_until(double us)
{
	double now = bench_now_us();

	if (us > now) {
		struct timespec ts = { (time_t)((us - now) / 1e6), (long)(((long long)(us - now) % 1000000) * 1000) };
		nanosleep(&ts, NULL);
	}
}

static void run_rate(unsigned rate, unsigned secs, pid_t *daemons)
{
	unsigned long total = (unsigned long)rate * secs, per = total / HOSTS + 1;
	double cpu0 = 0, cpu1 = 0;

	if (per > PER_SENDER_MAX)
		per = PER_SENDER_MAX;
	for (int s = 0; s < HOSTS; s++) {
		atomic_store(&sent_n[s], 0);
		for (int r = 0; r < HOSTS; r++)
			seen_n[s][r] = 0;
	}
	for (int h = 0; h < HOSTS; h++)
		cpu0 += cpu_s(daemons[h]);
	atomic_store(&poll_stop, false);
	pthread_t pt;
	pthread_create(&pt, NULL, poller, NULL);
	double t0 = bench_now_us(), interval = 1e6 / rate;
	unsigned long i;
	for (i = 0; i < total && i / HOSTS < per; i++) {
		int s = (int)(i % HOSTS);
		unsigned long j = i / HOSTS;
		char a[32];
		sleep_until(t0 + (double)i * interval);
		sender_addr(s, addr_base + j, a, sizeof(a));
		struct ag_attempt at = { "bench", NULL, 0, a, strlen(a) };
		(void)ag_guard_record(&conf[s], &bench_sink, &at, false, NULL, NULL);
		sent_us[s][j] = bench_now_us();
		atomic_store(&sent_n[s], j + 1);
	}
	double took = (bench_now_us() - t0) / 1e6;
	/* wait for the stragglers, at most 5 s */
	double deadline = bench_now_us() + 5e6;
	for (;;) {
		bool all = true;
		for (int s = 0; s < HOSTS; s++)
			for (int r = 0; r < HOSTS; r++)
				if (r != s && seen_n[s][r] < atomic_load(&sent_n[s]))
					all = false;
		if (all || bench_now_us() > deadline)
			break;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&poll_stop, true);
	pthread_join(pt, NULL);
	for (int h = 0; h < HOSTS; h++)
		cpu1 += cpu_s(daemons[h]);
	/* gather */
	size_t n = 0, missing = 0;
	double *all = malloc(sizeof(double) * total * (HOSTS - 1) + 8);
	for (int s = 0; s < HOSTS; s++)
		for (int r = 0; r < HOSTS; r++) {
			if (r == s)
				continue;
			for (unsigned long j = 0; j < seen_n[s][r]; j++)
				all[n++] = lat_us[s][r][j];
			missing += atomic_load(&sent_n[s]) - seen_n[s][r];
		}
	bench_sort(all, n);
	unsigned long events = 0;
	for (int s = 0; s < HOSTS; s++)
		events += atomic_load(&sent_n[s]);
	printf("rate %5u/s (achieved %.0f/s over %.1f s): %lu events, %zu applications seen: "
	       "latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %zu not seen within 5 s; "
	       "daemons' CPU %.1f ms per 1,000 events (pushed once, applied on 3 hosts)\n",
	       rate, (double)events / took, took, events, n, bench_pct(all, n, 50) / 1000,
	       bench_pct(all, n, 99) / 1000, n ? all[n - 1] / 1000 : 0, missing,
	       events ? (cpu1 - cpu0) * 1000.0 / ((double)events / 1000.0) : 0);
	fflush(stdout);
	free(all);
	addr_base += per;
}

/* The record path, with the outbox and without, side by side. */
static void record_side_by_side(struct bench_dir *d)
{
	struct ag_conf off, on;
	int n = 20000;
	double *v = malloc(sizeof(double) * (size_t)n);

	if (bench_conf(&off, d, "nosync", "none", NULL) != 0 || bench_conf(&on, d, "outbox", "none", NULL) != 0)
		return;
	snprintf(on.sync_redis, sizeof(on.sync_redis), "127.0.0.1:1");
	on.sync_outbox_max = (uint32_t)n * 2;
	for (int k = 0; k < 2; k++) {
		struct ag_conf *c = k == 0 ? &off : &on;
		for (int i = 0; i < n; i++) {
			char a[32];
			bench_addr((unsigned long)i, a, sizeof(a));
			struct ag_attempt at = { "bench", "user", 4, a, strlen(a) };
			double t = bench_now_us();
			(void)ag_guard_record(c, &bench_sink, &at, false, "pw", NULL);
			v[i] = bench_now_us() - t;
		}
		bench_sort(v, (size_t)n);
		printf("record path %s: %d failures from fresh sources: p50 %.1f us, p99 %.1f us\n",
		       k == 0 ? "without sync       " : "with the outbox on", n, bench_pct(v, (size_t)n, 50),
		       bench_pct(v, (size_t)n, 99));
	}
	free(v);
	ag_conf_free(&off);
	ag_conf_free(&on);
}

/* The record path of a fleet host once authguard-sync has put the
 * fleet's password key into the store (sync.h): the password hashed
 * under it, read in the record's transaction, with hot-password counting
 * (spray_password_users) on, beside the same without the key. */
static void record_fleet_key(struct bench_dir *d)
{
	static const char *const names[2] = { "pw-install", "pw-fleet" };
	int n = 20000;
	double *v = malloc(sizeof(double) * (size_t)n);

	for (int k = 0; v != NULL && k < 2; k++) {
		struct ag_conf c;
		struct ag_store *s;
		uint8_t key[AG_FLEET_KEY_LEN];
		bool changed;
		if (bench_conf(&c, d, names[k], "none", NULL) != 0)
			break;
		snprintf(c.sync_redis, sizeof(c.sync_redis), "127.0.0.1:1");
		c.sync_outbox_max = (uint32_t)n * 2;
		memset(key, 0x42, sizeof(key));
		if (k == 1 && (ag_store_get(c.db_dir, &s) != 0 ||
			       ag_sync_fleet_key_put(s, key, &changed) != 0)) {
			ag_conf_free(&c);
			break;
		}
		for (int i = 0; i < n; i++) {
			char a[32], user[16];
			bench_addr((unsigned long)i + 1000000, a, sizeof(a));
			snprintf(user, sizeof(user), "u%d", i % 1000);
			struct ag_attempt at = { "bench", user, strlen(user), a, strlen(a) };
			double t = bench_now_us();
			(void)ag_guard_record(&c, &bench_sink, &at, false, "Summer2026!", NULL);
			v[i] = bench_now_us() - t;
		}
		bench_sort(v, (size_t)n);
		printf("record path, outbox on, a sprayed password, %s key: p50 %.1f us, p99 %.1f us\n",
		       k == 0 ? "install" : "fleet  ", bench_pct(v, (size_t)n, 50), bench_pct(v, (size_t)n, 99));
		ag_conf_free(&c);
	}
	free(v);
}

int main(int argc, char **argv)
{
	const char *sync = NULL, *redis = "/usr/bin/redis-server", *rates = "1000,10000";
	unsigned secs = 5;
	int opt;

	while ((opt = getopt(argc, argv, "s:r:t:R:")) != -1) {
		switch (opt) {
		case 's': sync = optarg; break;
		case 'r': rates = optarg; break;
		case 't': secs = (unsigned)atoi(optarg); break;
		case 'R': redis = optarg; break;
		default:
			fprintf(stderr, "usage: bench_sync -s authguard-sync [-r RATES] [-t SECONDS] [-R redis-server]\n");
			return 2;
		}
	}
	if (sync == NULL || access(sync, X_OK) != 0 || access(redis, X_OK) != 0) {
		fprintf(stderr, "bench_sync: need -s PATH_TO_authguard-sync and %s\n", redis);
		return 2;
	}
	struct bench_dir d;
	if (bench_dir_init(&d, NULL) != 0)
		return 1;
	int port = free_port();
	char portbuf[16], rdir[600], rlog[600], key[600];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	snprintf(rdir, sizeof(rdir), "%s/redis", d.path);
	snprintf(rlog, sizeof(rlog), "%s/redis.log", d.path);
	mkdir(rdir, 0700);
	char *rargv[] = { (char *)redis, "--port", portbuf, "--bind", "127.0.0.1", "--dir", rdir,
			  "--save", "", "--appendonly", "no", NULL };
	pid_t rp = spawn(rargv, rlog);
	snprintf(key, sizeof(key), "%s/cluster.key", d.path);
	FILE *kf = fopen(key, "w");
	if (kf == NULL)
		return 1;
	fprintf(kf, "bench-cluster-key-0123456789abcdef0123456789\n");
	fclose(kf);
	chmod(key, 0600);
	usleep(300000);
	pid_t dp[HOSTS];
	for (int h = 0; h < HOSTS; h++) {
		char sub[16], path[700], log[700];
		snprintf(sub, sizeof(sub), "h%d", h);
		if (bench_conf(&conf[h], &d, sub, "none", "1G") != 0)
			return 1;
		snprintf(conf[h].sync_redis, sizeof(conf[h].sync_redis), "127.0.0.1:%d", port);
		conf[h].ip_ban_after = 0; /* every source stays unbanned: pure propagation */
		conf[h].net_ban_after = 0;
		snprintf(path, sizeof(path), "%s/%s.conf", d.path, sub);
		snprintf(log, sizeof(log), "%s/%s.log", d.path, sub);
		FILE *f = fopen(path, "w");
		if (f == NULL)
			return 1;
		fprintf(f, "db_dir = %s\nlog = none\ndb_max_size = 1G\nip_ban_after = 0\nnet_ban_after = 0\n"
			"sync_redis = 127.0.0.1:%d\nsync_host = %s\nsync_key_file = %s\n",
			conf[h].db_dir, port, sub, key);
		fclose(f);
		char *sargv[] = { (char *)sync, "-c", path, NULL };
		dp[h] = spawn(sargv, log);
		sent_us[h] = calloc(PER_SENDER_MAX, sizeof(double));
		for (int r = 0; r < HOSTS; r++)
			lat_us[h][r] = calloc(PER_SENDER_MAX, sizeof(double));
	}
	usleep(500000);
	printf("bench_sync: %d hosts, one redis-server on 127.0.0.1:%d, %u s per rate\n", HOSTS, port, secs);
	char *rs = strdup(rates), *save = NULL;
	for (char *tok = strtok_r(rs, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
		run_rate((unsigned)atoi(tok), secs, dp);
	free(rs);
	for (int h = 0; h < HOSTS; h++) {
		kill(dp[h], SIGTERM);
		waitpid(dp[h], NULL, 0);
	}
	kill(rp, SIGTERM);
	waitpid(rp, NULL, 0);
	record_side_by_side(&d);
	record_fleet_key(&d);
	for (int h = 0; h < HOSTS; h++)
		ag_conf_free(&conf[h]);
	bench_dir_done(&d);
	return 0;
}
