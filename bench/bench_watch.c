/*
 * bench_watch - how long a log line takes to become a record in the
 * store, through the real authguard-watch.
 *
 * A writer appends Cyrus badlogin lines to a file at a steady rate (each
 * with a new address and user, so every line makes fresh records), the
 * watcher follows the file, and a reader follows the attempt log the
 * guard writes right after each record's commit. The lag of a line is the
 * time from its write() to the moment its attempt line is read back
 * (inotify wakes the reader; the figure includes that wake-up). Then a
 * burst: many lines written at once, and the rate they are recorded at.
 * Prints numbers, asserts nothing.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static char dir[600], mail_log[700], attempts[700], conf[700];
static double *sent;   /* write time of line i (us) */
static double *seen;   /* when its attempt line was read (us) */
static volatile unsigned long n_seen;
static unsigned long n_total;
static volatile int reader_stop;

static void die(const char *what)
{
	fprintf(stderr, "bench_watch: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Follow the attempt log; user="bNNN" names the line. */
static void *reader(void *arg)
{
	(void)arg;
	int ino = inotify_init1(IN_CLOEXEC);
	int fd = -1;
	char buf[1 << 16], line[2048];
	size_t ll = 0;

	while (fd < 0 && !reader_stop) {
		fd = open(attempts, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			usleep(1000);
	}
	if (fd < 0)
		return NULL;
	(void)inotify_add_watch(ino, attempts, IN_MODIFY);
	while (!reader_stop) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0) {
			/* wait for the next write, at most 20 ms */
			fd_set fs;
			FD_ZERO(&fs);
			FD_SET(ino, &fs);
			struct timeval tv = { 0, 20000 };
			if (select(ino + 1, &fs, NULL, NULL, &tv) > 0) {
				char ev[4096];
				if (read(ino, ev, sizeof(ev)) < 0 && errno != EAGAIN)
					break;
			}
			continue;
		}
		double now = bench_now_us();
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = buf[i];
				continue;
			}
			line[ll] = '\0';
			ll = 0;
			const char *u = strstr(line, " user=\"b");
			if (u == NULL)
				continue;
			unsigned long k = strtoul(u + 8, NULL, 10);
			if (k < n_total && seen[k] == 0) {
				seen[k] = now;
				n_seen++;
			}
		}
	}
	close(fd);
	close(ino);
	return NULL;
}

static void put_line(int fd, unsigned long i)
{
	char l[400], a[64], ts[32];
	time_t t = time(NULL);
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%b %e %H:%M:%S", &tm);
	bench_addr(i + 1000, a, sizeof(a));
	int n = snprintf(l, sizeof(l),
			 "%s mail cyrus/imap[4242]: badlogin: host.example [%s] plaintext (b%lu) "
			 "[SASL(-13): authentication failure: checkpass failed]\n",
			 ts, a, i);
	sent[i] = bench_now_us();
	if (write(fd, l, (size_t)n) != n)
		die("write");
}

static void wait_seen(unsigned long want, double max_s)
{
	double end = bench_now_us() + max_s * 1e6;
	while (n_seen < want && bench_now_us() < end)
		usleep(2000);
}

static void report(const char *what, unsigned long from, unsigned long to)
{
	size_t n = 0;
	double *lag = malloc((to - from) * sizeof(double));
	unsigned long lost = 0;

	if (lag == NULL)
		die("malloc");
	for (unsigned long i = from; i < to; i++) {
		if (seen[i] == 0)
			lost++;
		else
			lag[n++] = (seen[i] - sent[i]) / 1000.0;
	}
	bench_sort(lag, n);
	printf("%s: %zu lines recorded%s, lag ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", what,
	       n, lost ? " (some not seen in time)" : "", bench_pct(lag, n, 50), bench_pct(lag, n, 90),
	       bench_pct(lag, n, 99), n ? lag[n - 1] : 0.0);
	if (lost)
		printf("%s: %lu lines not recorded within the wait\n", what, lost);
	free(lag);
}

int main(int argc, char **argv)
{
	const char *watch = getenv("AG_BENCH_WATCH");
	double rate = 2000, secs = 10;
	unsigned long burst = 20000;
	int opt;

	while ((opt = getopt(argc, argv, "r:s:b:w:")) != -1) {
		switch (opt) {
		case 'r': rate = atof(optarg); break;
		case 's': secs = atof(optarg); break;
		case 'b': burst = strtoul(optarg, NULL, 10); break;
		case 'w': watch = optarg; break;
		default:
			fprintf(stderr, "usage: bench_watch [-r LINES_PER_S] [-s SECONDS] [-b BURST] [-w AUTHGUARD_WATCH]\n");
			return 2;
		}
	}
	if (watch == NULL)
		watch = "watch/authguard-watch";
	if (rate <= 0 || secs <= 0) {
		fprintf(stderr, "bench_watch: -r and -s must be positive\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "/tmp/authguard-bench-watch.XXXXXX");
	if (mkdtemp(dir) == NULL)
		die("mkdtemp");
	snprintf(mail_log, sizeof(mail_log), "%s/mail.log", dir);
	snprintf(attempts, sizeof(attempts), "%s/attempts.log", dir);
	snprintf(conf, sizeof(conf), "%s/authguard.conf", dir);
	FILE *f = fopen(conf, "w");
	if (f == NULL)
		die(conf);
	/* defaults, except the log: every line a new address and user, so
	 * no rule fires and each line makes fresh records */
	fprintf(f, "db_dir = %s/db\nlog = file:%s\nwatch_source = file:%s\nwatch_rules = cyrus\n",
		dir, attempts, mail_log);
	fclose(f);
	char db[700];
	snprintf(db, sizeof(db), "%s/db", dir);
	if (mkdir(db, 0700) != 0)
		die(db);
	int fd = open(mail_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		die(mail_log);

	unsigned long steady = (unsigned long)(rate * secs);
	n_total = 1 + steady + burst;
	sent = calloc(n_total, sizeof(double));
	seen = calloc(n_total, sizeof(double));
	if (sent == NULL || seen == NULL)
		die("calloc");

	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, 2);
		execl(watch, watch, "-c", conf, (char *)NULL);
		_exit(127);
	}
	pthread_t th;
	if (pthread_create(&th, NULL, reader, NULL) != 0)
		die("pthread_create");
	/* the first line: the watcher is up once it is recorded */
	put_line(fd, 0);
	wait_seen(1, 10);
	if (n_seen < 1) {
		fprintf(stderr, "bench_watch: %s did not record the first line in 10 s\n", watch);
		kill(pid, SIGKILL);
		return 1;
	}
	printf("bench_watch: %s, %ld cores, a new address and user on every line, attempt log to a file\n",
	       watch, sysconf(_SC_NPROCESSORS_ONLN));

	/* steady: one line every 1/rate s, on an absolute schedule */
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	long step_ns = (long)(1e9 / rate);
	for (unsigned long i = 1; i <= steady; i++) {
		next.tv_nsec += step_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		put_line(fd, i);
	}
	wait_seen(1 + steady, 30);
	char what[64];
	snprintf(what, sizeof(what), "steady %.0f lines/s for %.0f s", rate, secs);
	report(what, 1, 1 + steady);

	/* burst: all at once; the rate they become records at */
	unsigned long before = n_seen;
	double t0 = bench_now_us();
	for (unsigned long i = 1 + steady; i < n_total; i++)
		put_line(fd, i);
	wait_seen(before + burst, 120);
	double t1 = 0;
	for (unsigned long i = 1 + steady; i < n_total; i++)
		t1 = seen[i] > t1 ? seen[i] : t1;
	if (burst > 0 && t1 > t0)
		printf("burst of %lu lines: recorded in %.2f s, %.0f lines/s\n", burst, (t1 - t0) / 1e6,
		       (double)(n_seen - before) / ((t1 - t0) / 1e6));

	kill(pid, SIGTERM);
	int st;
	waitpid(pid, &st, 0);
	reader_stop = 1;
	pthread_join(th, NULL);
	close(fd);
	char cmd[800];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_watch: could not remove %s\n", dir);
	return 0;
}
