/*
 * bench_pam - what a guard costs through real libpam: no guard,
 * Linux-PAM's pam_faillock and pam_authguard (one or more builds of it,
 * side by side), each in front of pam_matrix, driven by the same program:
 * libpam reads the service files from the run's directory
 * (pam_start_confdir(); under cwrap's pam_wrapper where libpam has no such
 * call), nss_wrapper gives the users pam_faillock looks up. Prints
 * numbers; asserts nothing.
 *
 *   bench_pam [-a ATTEMPTS] [-r ROUNDS] [-i CALLGRIND_ATTEMPTS] [-l none|file]
 *             [-M LABEL=PATH]... [-d DIR]
 *
 * Scenarios, the same attempts for every stack:
 *   success  the right password from the user's usual place
 *   fail     a wrong password, each attempt from a new address (one per
 *            /24) at one of 1,000 users, so no rule fires
 *   refused  a wrong password from a source (authguard: banned) or at a
 *            user (pam_faillock: locked) that the guard refuses before the
 *            password is checked; without a guard, a plain failure
 * Each (stack, scenario) runs in a child process of its own with a fresh
 * store (or tally directory); -r rounds are interleaved and the median of
 * each figure is printed. With valgrind in PATH (or AG_BENCH_VALGRIND), a
 * further child per pair runs -i attempts under callgrind, collecting
 * only inside the measured loop: instructions per attempt, which do not
 * vary with the load of the machine.
 */
#include "config.h"

#include <crypt.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_appl.h>

#include "../tools/pamdrive.h"

#define MAX_STACKS 6
#define USERS 1000
#define HOME_ADDR "198.51.100.10"
#define BAD_ADDR "203.0.113.5"
#define WARMUP 20

struct stack {
	char label[64];
	char kind; /* 'n' none, 'f' faillock, 'a' authguard */
	char module[1024];
};

static const char *const scenarios[] = { "success", "fail", "refused" };
#define N_SCEN 3

static struct stack stacks[MAX_STACKS];
static int n_stacks;
static char matrix[1024], wrapper[1024], nss_wrapper[1024], faillock[1024], permit[1024];
static char workdir[512];
static const char *logmode = "none";

/* ---- files -------------------------------------------------------------- */

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL) {
		fprintf(stderr, "bench_pam: cannot write %s: %s\n", path, strerror(errno));
		return -1;
	}
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The directory of the shared object that holds @sym. */
static int dir_of(void *sym, char *buf, size_t len)
{
	Dl_info info;

	if (dladdr(sym, &info) == 0 || info.dli_fname == NULL)
		return -1;
	snprintf(buf, len, "%s", info.dli_fname);
	char *d = dirname(buf);
	memmove(buf, d, strlen(d) + 1);
	return 0;
}

/* Users for nss_wrapper (pam_faillock ignores a user it cannot look up)
 * and pam_matrix's password file for @service. */
static int write_users(const char *dir, const char *service)
{
	char path[1100];
	FILE *pw, *db;

	snprintf(path, sizeof(path), "%s/passwd", dir);
	pw = fopen(path, "w");
	snprintf(path, sizeof(path), "%s/passdb", dir);
	db = fopen(path, "w");
	if (pw == NULL || db == NULL) {
		fprintf(stderr, "bench_pam: cannot write users in %s\n", dir);
		if (pw != NULL)
			fclose(pw);
		if (db != NULL)
			fclose(db);
		return -1;
	}
	for (int i = -2; i < USERS; i++) {
		char name[32];
		if (i == -2)
			snprintf(name, sizeof(name), "alice");
		else if (i == -1)
			snprintf(name, sizeof(name), "mallory");
		else
			snprintf(name, sizeof(name), "u%d", i);
		fprintf(pw, "%s:x:%d:%d::%s:/bin/false\n", name, 20000 + i + 2, 20000, dir);
		fprintf(db, "%s:pw-%s:%s\n", name, name, service);
	}
	fclose(db);
	if (fclose(pw) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/group", dir);
	return write_text(path, "bench:x:20000:\n");
}

/* The PAM service "bench" of stack @s in @dir/pam.d, the config file, the
 * users. */
static int write_run(const struct stack *s, const char *dir)
{
	char path[1100], text[16384], be[2100], conf[2400];

	if (mkdir(dir, 0700) != 0) {
		fprintf(stderr, "bench_pam: cannot create %s: %s\n", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/pam.d", dir);
	if (mkdir(path, 0700) != 0 || write_users(dir, "bench") != 0)
		return -1;
	snprintf(be, sizeof(be), "%s passdb=%s/passdb", matrix, dir);
	switch (s->kind) {
	case 'n':
		snprintf(text, sizeof(text),
			 "auth     required       %s\n"
			 "account  required       %s\n", be, permit);
		break;
	case 'f': /* as pam_faillock(8) sets it up; deny=10 like user_lock_after */
		snprintf(text, sizeof(text),
			 "auth     requisite      %1$s dir=%2$s/faillock deny=10 unlock_time=600 nodelay preauth\n"
			 "auth     [success=1 default=bad] %3$s\n"
			 "auth     [default=die]  %1$s dir=%2$s/faillock deny=10 unlock_time=600 nodelay authfail\n"
			 "auth     sufficient     %1$s dir=%2$s/faillock deny=10 unlock_time=600 nodelay authsucc\n"
			 "account  required       %1$s dir=%2$s/faillock deny=10 unlock_time=600 nodelay\n",
			 faillock, dir, be);
		snprintf(path, sizeof(path), "%s/faillock", dir);
		if (mkdir(path, 0700) != 0)
			return -1;
		break;
	default: /* the README's stack */
		snprintf(text, sizeof(text),
			 "auth     requisite      %1$s preauth conf=%2$s/authguard.conf\n"
			 "auth     [success=1 auth_err=ignore user_unknown=ignore authinfo_unavail=ignore default=die] %3$s\n"
			 "auth     [default=die]  %1$s authfail conf=%2$s/authguard.conf\n"
			 "auth     sufficient     %1$s authsucc conf=%2$s/authguard.conf\n"
			 "account  required       %1$s conf=%2$s/authguard.conf\n",
			 s->module, dir, be);
		/* the shipped defaults but a tarpit short enough that the
		 * ban in the refused scenario is made in a moment */
		snprintf(conf, sizeof(conf),
			 "db_dir = %1$s/store\nlog = %2$s%3$s%4$s\ntarpit_base = 1ms\ntarpit_max = 4ms\n",
			 dir, strcmp(logmode, "file") == 0 ? "file:" : "none",
			 strcmp(logmode, "file") == 0 ? dir : "",
			 strcmp(logmode, "file") == 0 ? "/attempts.log" : "");
		snprintf(path, sizeof(path), "%s/authguard.conf", dir);
		if (write_text(path, conf) != 0)
			return -1;
	}
	snprintf(path, sizeof(path), "%s/pam.d/bench", dir);
	if (write_text(path, text) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/pam.d/other", dir);
	return write_text(path, "auth required pam_deny.so\naccount required pam_deny.so\n");
}

/* ---- the child: one stack, one scenario ----------------------------------- */

static int login(const char *user, const char *pw, const char *rhost)
{
	return pd_login_service("bench", user, pw, rhost, NULL);
}

/* The i-th attempt of @scen (i < 0: set-up and warm-up). */
static int attempt(const char *scen, long i)
{
	char user[32], pw[40], addr[32];

	if (strcmp(scen, "success") == 0) {
		return login("alice", "pw-alice", HOME_ADDR);
	} else if (strcmp(scen, "fail") == 0) {
		unsigned long k = (unsigned long)(i + WARMUP);
		snprintf(user, sizeof(user), "u%lu", k % USERS);
		snprintf(pw, sizeof(pw), "guess-%lu", k);
		snprintf(addr, sizeof(addr), "10.%lu.%lu.1", (k / 250) % 250, k % 250);
		return login(user, pw, addr);
	}
	snprintf(pw, sizeof(pw), "guess-%ld", i);
	return login("mallory", pw, BAD_ADDR);
}

/* PAM results of the measured attempts, by code */
static long results[64];

/* Collected by callgrind (--toggle-collect): nothing else is. */
void bench_pam_measured(const char *scen, long n, double *lat);
__attribute__((noinline)) void bench_pam_measured(const char *scen, long n, double *lat)
{
	for (long i = 0; i < n; i++) {
		double t0 = pd_now_ms();
		int rc = attempt(scen, i);
		lat[i] = (pd_now_ms() - t0) * 1000.0;
		results[rc >= 0 && rc < 64 ? rc : 63]++;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int child(const char *scen, long n)
{
	double *lat = calloc((size_t)n, sizeof(*lat)), sum = 0;

	if (lat == NULL)
		return 1;
	if (strcmp(scen, "refused") == 0)
		for (int i = 0; i < 12; i++) /* ban the source, lock the user */
			(void)login("mallory", "wrong", BAD_ADDR);
	for (long i = -WARMUP; i < 0; i++)
		(void)attempt(scen, i);
	if (strcmp(scen, "success") == 0 && login("alice", "pw-alice", HOME_ADDR) != PAM_SUCCESS) {
		fprintf(stderr, "bench_pam: the right password was refused\n");
		return 1;
	}
	double t0 = pd_now_ms();
	bench_pam_measured(scen, n, lat);
	double wall = pd_now_ms() - t0;
	qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
	for (long i = 0; i < n; i++)
		sum += lat[i];
	int most = 0;
	for (int i = 1; i < 64; i++)
		most = results[i] > results[most] ? i : most;
	printf("%.1f %.1f %.1f %.0f %d %ld\n", lat[n / 2], lat[n * 99 / 100], sum / (double)n,
	       (double)n * 1000.0 / wall, most, results[most]);
	free(lat);
	return 0;
}

/* ---- the parent -------------------------------------------------------------- */

struct fig {
	double p50, p99, mean, rate, instr;
	int code;     /* the PAM result most attempts had */
	long n_code;  /* how many had it */
};

/* Run the child for stack @s, scenario @scen, @n attempts, in a fresh
 * directory, under callgrind when @vg is set. */
static int run_child(const struct stack *s, const char *scen, long n, const char *vg,
		     struct fig *f)
{
	static int seq;
	char dir[1000], nbuf[32], self[1024], cgout[1100], line[256], preload[2200];
	int pfd[2];

	snprintf(dir, sizeof(dir), "%s/run%d", workdir, ++seq);
	if (write_run(s, dir) != 0 || pd_self_exe(self, sizeof(self)) != 0 || pipe(pfd) != 0)
		return -1;
	snprintf(nbuf, sizeof(nbuf), "%ld", n);
	snprintf(cgout, sizeof(cgout), "%s/callgrind.out", dir);
	/* pam_wrapper picks its runtime directory with lstat then mkdir:
	 * the lock keeps out other programs starting at the same moment;
	 * the child lets it go once under the wrapper (pd_ensure_wrapper) */
	int lk = open("/tmp/authguard-pam_wrapper.lock", O_RDWR | O_CREAT, 0600);
	if (lk >= 0)
		(void)flock(lk, LOCK_EX);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char path[1100], num[16];
		close(pfd[0]);
		dup2(pfd[1], 1);
		snprintf(path, sizeof(path), "%s/pam.d", dir);
#ifdef HAVE_PAM_START_CONFDIR
		/* libpam reads the service files from there itself
		 * (pam_start_confdir(), tools/pamdrive.c), as a real daemon
		 * reads /etc/pam.d: no pam_wrapper in the figures */
		setenv(PD_CONFDIR_ENV, path, 1);
		snprintf(preload, sizeof(preload), "%s", nss_wrapper);
#else
		setenv("PAM_WRAPPER", "1", 1);
		setenv("PAM_WRAPPER_SERVICE_DIR", path, 1);
		snprintf(preload, sizeof(preload), "%s:%s", wrapper, nss_wrapper);
#endif
		setenv("LD_PRELOAD", preload, 1);
		snprintf(path, sizeof(path), "%s/passwd", dir);
		setenv("NSS_WRAPPER_PASSWD", path, 1);
		snprintf(path, sizeof(path), "%s/group", dir);
		setenv("NSS_WRAPPER_GROUP", path, 1);
		snprintf(num, sizeof(num), "%d", lk);
		setenv("AG_PWRAP_LOCK_FD", num, 1);
		if (vg != NULL) {
			char out[1200];
			snprintf(out, sizeof(out), "--callgrind-out-file=%s", cgout);
			execlp(vg, vg, "-q", "--tool=callgrind", out, "--collect-atstart=no",
			       "--toggle-collect=bench_pam_measured", self, "-C", scen, nbuf,
			       (char *)NULL);
		} else {
			execl(self, self, "-C", scen, nbuf, (char *)NULL);
		}
		_exit(127);
	}
	if (lk >= 0)
		close(lk);
	close(pfd[1]);
	FILE *in = fdopen(pfd[0], "r");
	int got = in != NULL && fgets(line, sizeof(line), in) != NULL &&
		  sscanf(line, "%lf %lf %lf %lf %d %ld", &f->p50, &f->p99, &f->mean, &f->rate, &f->code,
			 &f->n_code) == 6;
	if (in != NULL)
		fclose(in);
	int st;
	waitpid(pid, &st, 0);
	if (!got || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench_pam: %s/%s failed (see %s)\n", s->label, scen, dir);
		return -1;
	}
	f->instr = 0;
	if (vg != NULL) {
		FILE *cg = fopen(cgout, "r");
		while (cg != NULL && fgets(line, sizeof(line), cg) != NULL) {
			double v;
			if (sscanf(line, "totals: %lf", &v) == 1 || sscanf(line, "summary: %lf", &v) == 1)
				f->instr = v / (double)n;
		}
		if (cg != NULL)
			fclose(cg);
	}
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

/* The system's default crypt(3) method (yescrypt on Debian 12), the
 * right password checked as pam_unix does: p50 in microseconds. */
static double crypt_us(int runs)
{
	char *setting = crypt_gensalt_ra(NULL, 0, NULL, 0), *hash;
	void *data = NULL;
	int size = 0;
	double v[64];

	if (setting == NULL || (hash = crypt_ra("pw", setting, &data, &size)) == NULL)
		return 0;
	char *stored = strdup(hash);
	if (runs > 64)
		runs = 64;
	for (int i = 0; i < runs && stored != NULL; i++) {
		double t0 = pd_now_ms();
		hash = crypt_ra("pw", stored, &data, &size);
		v[i] = (pd_now_ms() - t0) * 1000.0;
		if (hash == NULL || strcmp(hash, stored) != 0)
			runs = 0;
	}
	free(stored);
	free(setting);
	free(data);
	return runs > 0 ? median(v, runs) : 0;
}

static const char *find_valgrind(void)
{
	const char *v = getenv("AG_BENCH_VALGRIND");
	static char buf[1100];

	if (v != NULL)
		return v[0] != '\0' ? v : NULL;
	const char *path = getenv("PATH");
	for (const char *p = path; p != NULL && *p != '\0';) {
		const char *e = strchr(p, ':');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		snprintf(buf, sizeof(buf), "%.*s/valgrind", (int)len, p);
		if (access(buf, X_OK) == 0)
			return buf;
		p = e != NULL ? e + 1 : NULL;
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_pam [-a ATTEMPTS] [-r ROUNDS] [-i CALLGRIND_ATTEMPTS]"
			" [-l none|file] [-M LABEL=PATH]... [-d DIR]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long attempts = 2000, cg_attempts = 300;
	int rounds = 3, opt;
	const char *dir = NULL;

	if (argc == 4 && strcmp(argv[1], "-C") == 0) {
#ifdef HAVE_PAM_START_CONFDIR
		/* no wrapper to wait for: the lock goes at once */
		const char *lk = getenv("AG_PWRAP_LOCK_FD");
		if (lk != NULL && lk[0] >= '0' && lk[0] <= '9' && atoi(lk) > 2)
			close(atoi(lk));
		unsetenv("AG_PWRAP_LOCK_FD");
#else
		struct pd_paths none = { 0 };
		if (pd_ensure_wrapper(&none, argv) != 0) /* lets the lock go */
			return 1;
#endif
		return child(argv[2], atol(argv[3]));
	}
	while ((opt = getopt(argc, argv, "a:r:i:l:M:d:h")) != -1) {
		switch (opt) {
		case 'a': attempts = atol(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'i': cg_attempts = atol(optarg); break;
		case 'l': logmode = optarg; break;
		case 'd': dir = optarg; break;
		case 'M': {
			const char *eq = strchr(optarg, '=');
			if (eq == NULL || n_stacks >= MAX_STACKS - 2)
				usage();
			struct stack *s = &stacks[2 + n_stacks++];
			snprintf(s->label, sizeof(s->label), "%.*s", (int)(eq - optarg), optarg);
			snprintf(s->module, sizeof(s->module), "%s", eq + 1);
			s->kind = 'a';
			break;
		}
		default: usage();
		}
	}
	if (attempts < 10 || rounds < 1 || rounds > 15 || cg_attempts < 0 ||
	    (strcmp(logmode, "none") != 0 && strcmp(logmode, "file") != 0))
		usage();
	if (n_stacks == 0) {
		struct stack *s = &stacks[2 + n_stacks++];
		snprintf(s->label, sizeof(s->label), "authguard");
		snprintf(s->module, sizeof(s->module), "%s", AG_BUILD_MODULE);
		s->kind = 'a';
	}
	stacks[0] = (struct stack){ .label = "no guard", .kind = 'n' };
	stacks[1] = (struct stack){ .label = "pam_faillock", .kind = 'f' };
	n_stacks += 2;
	snprintf(matrix, sizeof(matrix), "%s", AG_PAM_MATRIX);
	snprintf(wrapper, sizeof(wrapper), "%s", AG_PAM_WRAPPER);
	char libdir[512], wdir[1024];
	if (dir_of((void *)pam_start, libdir, sizeof(libdir)) != 0) {
		fprintf(stderr, "bench_pam: cannot tell where libpam is\n");
		return 1;
	}
	snprintf(faillock, sizeof(faillock), "%s/security/pam_faillock.so", libdir);
	snprintf(permit, sizeof(permit), "%s/security/pam_permit.so", libdir);
	snprintf(wdir, sizeof(wdir), "%s", wrapper);
	const char *nw = getenv("AG_BENCH_NSS_WRAPPER");
	snprintf(nss_wrapper, sizeof(nss_wrapper), "%s/libnss_wrapper.so", dirname(wdir));
	if (nw != NULL)
		snprintf(nss_wrapper, sizeof(nss_wrapper), "%s", nw);
	const char *need[] = { matrix, wrapper, nss_wrapper, faillock, permit };
	for (int i = 0; i < 5; i++)
		if (access(need[i], R_OK) != 0) {
			fprintf(stderr, "bench_pam: missing %s (libpam-wrapper, libnss-wrapper,"
					" libpam-modules)\n", need[i]);
			return 1;
		}
	for (int i = 2; i < n_stacks; i++)
		if (access(stacks[i].module, R_OK) != 0) {
			fprintf(stderr, "bench_pam: missing %s (build first)\n", stacks[i].module);
			return 1;
		}
	if (dir != NULL)
		snprintf(workdir, sizeof(workdir), "%s", dir);
	else
		snprintf(workdir, sizeof(workdir), "/tmp/bench_pam.XXXXXX");
	if ((dir == NULL && mkdtemp(workdir) == NULL) ||
	    (dir != NULL && mkdir(workdir, 0700) != 0 && errno != EEXIST)) {
		fprintf(stderr, "bench_pam: cannot create %s\n", workdir);
		return 1;
	}
	const char *vg = cg_attempts > 0 ? find_valgrind() : NULL;
	printf("# bench_pam: %ld attempts x %d rounds (interleaved; medians), %ld under callgrind%s;"
	       " pam_matrix back end; log=%s; %ld cores\n",
	       attempts, rounds, vg != NULL ? cg_attempts : 0L, vg != NULL ? "" : " (no valgrind)",
	       logmode, sysconf(_SC_NPROCESSORS_ONLN));
	for (int i = 2; i < n_stacks; i++)
		printf("# %s: %s\n", stacks[i].label, stacks[i].module);
	fflush(stdout);

	static struct fig figs[MAX_STACKS][N_SCEN][15];
	static double instr[MAX_STACKS][N_SCEN];
	int rc = 0;
	for (int r = 0; r < rounds && rc == 0; r++)
		for (int sc = 0; sc < N_SCEN && rc == 0; sc++)
			for (int s = 0; s < n_stacks && rc == 0; s++)
				rc = run_child(&stacks[s], scenarios[sc], attempts, NULL, &figs[s][sc][r]);
	for (int sc = 0; sc < N_SCEN && rc == 0 && vg != NULL; sc++)
		for (int s = 0; s < n_stacks && rc == 0; s++) {
			struct fig f;
			rc = run_child(&stacks[s], scenarios[sc], cg_attempts, vg, &f);
			instr[s][sc] = f.instr;
		}
	double cr = rc == 0 ? crypt_us(10) : 0;
	if (rc == 0) {
			printf("\n%-8s %-14s %14s %12s %9s %9s %9s %10s  %s\n", "scenario", "stack",
		       "instr/attempt", "added instr", "p50 us", "p99 us", "mean us", "attempts/s",
		       "PAM result (of the last round)");
		for (int sc = 0; sc < N_SCEN; sc++)
			for (int s = 0; s < n_stacks; s++) {
				double v[4][15];
				for (int r = 0; r < rounds; r++) {
					v[0][r] = figs[s][sc][r].p50;
					v[1][r] = figs[s][sc][r].p99;
					v[2][r] = figs[s][sc][r].mean;
					v[3][r] = figs[s][sc][r].rate;
				}
				char in[32] = "-", add[32] = "-";
				if (vg != NULL) {
					snprintf(in, sizeof(in), "%.0fk", instr[s][sc] / 1000);
					if (s > 0)
						snprintf(add, sizeof(add), "%+.0fk",
							 (instr[s][sc] - instr[0][sc]) / 1000);
				}
				const struct fig *last = &figs[s][sc][rounds - 1];
				printf("%-8s %-14s %14s %12s %9.0f %9.0f %9.0f %10.0f  %ld x %s\n",
				       scenarios[sc], stacks[s].label, in, add, median(v[0], rounds),
				       median(v[1], rounds), median(v[2], rounds), median(v[3], rounds),
				       last->n_code, pam_strerror(NULL, last->code));
			}
		if (cr > 0) {
			printf("\ncrypt(3) default method, right password: p50 %.0f us\n", cr);
			/* s = 0: no guard's plain failure, what libpam, pam_wrapper and
			 * pam_matrix cost without any guard: the floor of this harness */
			for (int s = 0; s < n_stacks; s++) {
				double v[15];
				for (int r = 0; r < rounds; r++)
					v[r] = figs[s][2][r].p50;
				printf("%s through PAM, %s: %.3f%% of that (p50)\n",
				       s == 0 ? "plain failed attempt" : "refused attempt", stacks[s].label,
				       100.0 * median(v, rounds) / cr);
			}
		}
	}
	if (dir == NULL)
		nftw(workdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return rc == 0 ? 0 : 1;
}
