/*
 * bench_policyd - authguard-policyd under load: requests per second and
 * latency of allow+report pairs, as Dovecot sends them, over keep-alive
 * HTTP/1.1 connections from many clients at once; then the same decisions
 * made in this process through the guard (what the PAM module costs
 * before PAM's own overhead), for comparison.
 *
 *   bench_policyd -d PATH [-c CLIENTS] [-t SECONDS] [-T THREADS] [-s SOURCES]
 *
 * Starts the daemon at PATH (authguard-policyd) on a scratch store and a
 * random loopback port, with log = none (the guard, not syslog, is
 * timed), runs CLIENTS threads (100) for SECONDS (5), each a connection
 * of its own doing allow then report, a fresh-looking source each time
 * from SOURCES (100000) addresses and 1000 users, one report in four a
 * success. Prints numbers; asserts nothing.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "store.h"
#include "util.h"

static int port;
static unsigned long sources = 100000;
static double stop_at;
static atomic_ulong errors;

struct client {
	pthread_t th;
	unsigned id;
	double *allow_us, *pair_us; /* per pair */
	size_t n, cap;
	unsigned long seed;
};

static unsigned long rnd(unsigned long *s)
{
	*s = *s * 6364136223846793005UL + 1442695040888963407UL;
	return *s >> 33;
}

static int connect_one(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One request and its whole response on @fd. Returns 0, or -1. */
static int exchange(int fd, const char *cmd, const char *body)
{
	char req[1024], resp[2048];
	int n = snprintf(req, sizeof(req),
			 "POST /?command=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s",
			 cmd, strlen(body), body);
	size_t got = 0;

	if (write(fd, req, (size_t)n) != n)
		return -1;
	for (;;) {
		ssize_t r = read(fd, resp + got, sizeof(resp) - 1 - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
		resp[got] = '\0';
		char *end = strstr(resp, "\r\n\r\n");
		if (end == NULL)
			continue;
		char *cl = strcasestr(resp, "\r\nContent-Length:");
		if (cl == NULL || cl > end)
			return -1;
		size_t len = strtoul(cl + 17, NULL, 10);
		if (got >= (size_t)(end + 4 - resp) + len)
			return strncmp(resp, "HTTP/1.1 200", 12) == 0 ? 0 : -1;
	}
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	int fd = connect_one();
	char body[512], addr[64], sess[32];

	if (fd < 0) {
		atomic_fetch_add(&errors, 1);
		return NULL;
	}
	for (unsigned long k = 0; bench_now_us() < stop_at; k++) {
		unsigned long i = rnd(&c->seed) % sources, u = rnd(&c->seed) % 1000;
		bool ok = rnd(&c->seed) % 4 == 0;
		bench_addr(i, addr, sizeof(addr));
		snprintf(sess, sizeof(sess), "c%u-%lu", c->id, k);
		snprintf(body, sizeof(body),
			 "{\"device_id\":\"\",\"login\":\"user%lu\",\"protocol\":\"imap\",\"pwhash\":\"%03lx\","
			 "\"remote\":\"%s\",\"session_id\":\"%s\"",
			 u, rnd(&c->seed) % 4096, addr, sess);
		char allow[600], report[700];
		snprintf(allow, sizeof(allow), "%s}", body);
		snprintf(report, sizeof(report), "%s,\"success\":%s,\"policy_reject\":false}", body,
			 ok ? "true" : "false");
		double t0 = bench_now_us();
		if (exchange(fd, "allow", allow) != 0) {
			atomic_fetch_add(&errors, 1);
			break;
		}
		double t1 = bench_now_us();
		if (exchange(fd, "report", report) != 0) {
			atomic_fetch_add(&errors, 1);
			break;
		}
		double t2 = bench_now_us();
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 4096;
			c->allow_us = realloc(c->allow_us, c->cap * sizeof(double));
			c->pair_us = realloc(c->pair_us, c->cap * sizeof(double));
			if (c->allow_us == NULL || c->pair_us == NULL)
				abort();
		}
		c->allow_us[c->n] = t1 - t0;
		c->pair_us[c->n] = t2 - t0;
		c->n++;
	}
	close(fd);
	return NULL;
}

static pid_t start_daemon(const char *path, const char *conf)
{
	pid_t pid = fork();

	if (pid == 0) {
		execl(path, path, "-c", conf, (char *)NULL);
		perror(path);
		_exit(127);
	}
	for (int i = 0; i < 100 && pid > 0; i++) {
		int fd = connect_one();
		if (fd >= 0) {
			close(fd);
			return pid;
		}
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (pid > 0)
		kill(pid, SIGKILL);
	return -1;
}

/* The same decisions in this process: check, then record, on the guard. */
static void in_process(const struct ag_conf *c, double secs)
{
	size_t cap = 1 << 20, n = 0;
	double *v = malloc(cap * sizeof(double));
	unsigned long seed = 7;
	char addr[64], user[32], pw[8];
	double end = bench_now_us() + secs * 1e6;

	if (v == NULL)
		return;
	while (n < cap && bench_now_us() < end) {
		unsigned long i = rnd(&seed) % sources, u = rnd(&seed) % 1000;
		bool ok = rnd(&seed) % 4 == 0;
		bench_addr(i, addr, sizeof(addr));
		snprintf(user, sizeof(user), "user%lu", u);
		snprintf(pw, sizeof(pw), "%03lx", rnd(&seed) % 4096);
		struct ag_attempt a = { .service = "imap", .user = user, .user_len = strlen(user),
					.rhost = addr, .rhost_len = strlen(addr) };
		struct ag_ticket t;
		struct ag_record_opts o = { .pw = pw, .pw_len = 3 };
		double t0 = bench_now_us();
		if (ag_guard_check_ex(c, &bench_sink, &a, AG_CHECK_NOSLEEP, &t) == AG_PROCEED)
			(void)ag_guard_record_ex(c, &bench_sink, &a, ok, &o, &t);
		v[n++] = bench_now_us() - t0;
	}
	bench_sort(v, n);
	printf("in process (check + record, 1 thread, what the PAM module adds before PAM): "
	       "%.0f decisions/s, p50 %.1f us, p99 %.1f us\n",
	       n / secs, bench_pct(v, n, 50), bench_pct(v, n, 99));
	free(v);
}

int main(int argc, char **argv)
{
	const char *daemon = NULL;
	unsigned nclients = 100, threads = 2;
	double secs = 5;
	int ch;

	while ((ch = getopt(argc, argv, "d:c:t:T:s:")) != -1) {
		switch (ch) {
		case 'd': daemon = optarg; break;
		case 'c': nclients = (unsigned)strtoul(optarg, NULL, 10); break;
		case 't': secs = strtod(optarg, NULL); break;
		case 'T': threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': sources = strtoul(optarg, NULL, 10); break;
		default:
			fprintf(stderr, "usage: bench_policyd -d AUTHGUARD-POLICYD [-c CLIENTS] [-t SECONDS] [-T THREADS] [-s SOURCES]\n");
			return 2;
		}
	}
	if (daemon == NULL || nclients == 0 || secs <= 0 || sources == 0) {
		fprintf(stderr, "bench_policyd: -d PATH of authguard-policyd is needed\n");
		return 2;
	}
	struct bench_dir d;
	struct ag_conf c;
	if (bench_dir_init(&d, NULL) != 0 || bench_conf(&c, &d, "store", "none", NULL) != 0)
		return 1;
	srand((unsigned)getpid());
	port = 20000 + rand() % 40000;
	char conf[600];
	snprintf(conf, sizeof(conf), "%s/authguard.conf", d.path);
	FILE *f = fopen(conf, "w");
	if (f == NULL) {
		perror(conf);
		return 1;
	}
	fprintf(f, "db_dir = %s\nlog = none\npolicyd_listen = 127.0.0.1:%d\npolicyd_threads = %u\n"
		   "policyd_max_connections = %u\n",
		c.db_dir, port, threads, nclients + 16);
	fclose(f);
	bench_print_settings("bench_policyd", &c);
	pid_t pid = start_daemon(daemon, conf);
	if (pid < 0) {
		fprintf(stderr, "bench_policyd: %s did not start on port %d\n", daemon, port);
		return 1;
	}
	struct client *cl = calloc(nclients, sizeof(*cl));
	if (cl == NULL)
		return 1;
	stop_at = bench_now_us() + secs * 1e6;
	double t0 = bench_now_us();
	for (unsigned i = 0; i < nclients; i++) {
		cl[i].id = i;
		cl[i].seed = 1000 + i;
		if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0) {
			fprintf(stderr, "bench_policyd: pthread_create failed\n");
			return 1;
		}
	}
	size_t total = 0;
	for (unsigned i = 0; i < nclients; i++) {
		pthread_join(cl[i].th, NULL);
		total += cl[i].n;
	}
	double elapsed = (bench_now_us() - t0) / 1e6;
	kill(pid, SIGTERM);
	int st = 0;
	waitpid(pid, &st, 0);

	double *allow = malloc((total + 1) * sizeof(double)), *pair = malloc((total + 1) * sizeof(double));
	size_t k = 0;
	for (unsigned i = 0; i < nclients; i++) {
		memcpy(allow + k, cl[i].allow_us, cl[i].n * sizeof(double));
		memcpy(pair + k, cl[i].pair_us, cl[i].n * sizeof(double));
		k += cl[i].n;
		free(cl[i].allow_us);
		free(cl[i].pair_us);
	}
	bench_sort(allow, total);
	bench_sort(pair, total);
	printf("authguard-policyd, %u keep-alive clients, %u threads, %.1f s: %zu allow+report pairs, "
	       "%.0f pairs/s = %.0f requests (decisions)/s, %lu errors, daemon exit %d\n",
	       nclients, threads, elapsed, total, total / elapsed, 2 * total / elapsed,
	       (unsigned long)atomic_load(&errors), WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	printf("  allow round trip: p50 %.0f us, p99 %.0f us; allow+report pair: p50 %.0f us, p99 %.0f us\n",
	       bench_pct(allow, total, 50), bench_pct(allow, total, 99), bench_pct(pair, total, 50),
	       bench_pct(pair, total, 99));
	free(allow);
	free(pair);
	free(cl);
	in_process(&c, secs < 3 ? secs : 3);
	ag_conf_free(&c);
	ag_store_forget_all();
	bench_dir_done(&d);
	return 0;
}
