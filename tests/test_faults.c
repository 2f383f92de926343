/*
 * test_faults.c - faults and hostile conditions: processes killed while
 * recording, a damaged store file, a store the process may not open, the
 * clock stepping back, a thousand processes at once against a small
 * tarpit, memory over 100,000 attempts, a 1 MiB user name, processes
 * coming and going in a group-shared store directory. Authentication
 * must go on (or be refused, as fail_open says), the fault must be
 * logged, and no committed record may be lost.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "admin.h"
#include "guard.h"
#include "store.h"
#include "testutil.h"

struct fx {
	char dir[256];
	char log[300];
	struct ag_conf c;
	int faults;
	int evict_lines; /* fault lines about eviction */
	int unguarded;   /* fault lines saying attempts went on unguarded */
	int mem_lines;   /* eviction lines saying repeat-ban memory went */
	int logfile_lines; /* fault lines saying the log file cannot be written */
};

static void sink(void *ctx, enum ag_level lvl, const char *msg)
{
	struct fx *f = ctx;
	if (lvl >= AG_LVL_WARN && strstr(msg, "authguard fault") != NULL)
		f->faults++;
	if (lvl >= AG_LVL_WARN && strstr(msg, "raise db_max_size") != NULL)
		f->evict_lines++;
	if (lvl >= AG_LVL_WARN && strstr(msg, "attempts go on unguarded") != NULL)
		f->unguarded++;
	if (lvl >= AG_LVL_WARN && strstr(msg, "REPEAT-BAN MEMORY TOO") != NULL)
		f->mem_lines++;
	if (lvl == AG_LVL_ERR && strstr(msg, "authguard fault: log file ") != NULL &&
	    strstr(msg, ": cannot write: Permission denied") != NULL)
		f->logfile_lines++;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256], v[400];

	tu_mkdtemp(f->dir, sizeof(f->dir), "faults");
	ag_conf_init(&f->c);
	snprintf(f->c.db_dir, sizeof(f->c.db_dir), "%s/db", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/attempts.log", f->dir);
	snprintf(v, sizeof(v), "file:%s", f->log);
	assert_int_equal(ag_conf_set(&f->c, "log", v, err, sizeof(err)), 0);
	f->c.tarpit_base = 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	ag_guard_set_pace_clock(NULL); /* a test that failed half way */
	ag_conf_free(&f->c);
	ag_store_forget_all();
	tu_rmrf(f->dir);
	free(f);
	return 0;
}

static enum ag_decision attempt(struct fx *f, const char *user, const char *rhost, bool ok)
{
	struct ag_sink s = { sink, f };
	struct ag_attempt a = { "imap", user, user ? strlen(user) : 0, rhost, rhost ? strlen(rhost) : 0 };
	struct ag_ticket t;
	enum ag_decision d = ag_guard_check(&f->c, &s, &a, &t);
	if (d == AG_PROCEED)
		ag_guard_record(&f->c, &s, &a, ok, "pw", &t);
	return d;
}

static void count_one_src(void *ctx, const struct ag_addr *a, const struct ag_src_rec *r)
{
	(void)a;
	(void)r;
	++*(long *)ctx;
}

static uint64_t n_fail_of(struct fx *f, const char *addr)
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_addr a;
	struct ag_src_rec r;

	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	int rc0 = ag_store_get(f->c.db_dir, &s);
	if (rc0 == 0)
		rc0 = ag_txn_begin(s, false, &t);
	if (rc0 != 0)
		fail_msg("store: %s (%s)", ag_strerror(rc0), ag_store_detail());
	int rc = ag_admin_get_src(t, &a, &r);
	ag_txn_abort(t);
	return rc == 0 ? r.n_fail : 0;
}

/* Writers killed with SIGKILL at random moments while others keep going:
 * the survivors' counts are exact, a killed writer's committed attempts
 * are all there (at most one more: killed after commit, before telling),
 * and the store still works. */
static void test_sigkill_while_recording(void **state)
{
	struct fx *f = *state;
	enum { PROCS = 6 };
	pid_t pid[PROCS];
	int pipes[PROCS][2];

	f->c.ip_ban_after = f->c.net_ban_after = f->c.spray_users = f->c.user_lock_after = 0;
	f->c.log_kind = AG_LOG_NONE;
	attempt(f, "init", "192.0.2.1", true); /* create the store */
	ag_store_forget_all();
	for (int i = 0; i < PROCS; i++) {
		assert_int_equal(pipe(pipes[i]), 0);
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0) {
			char addr[32];
			close(pipes[i][0]);
			snprintf(addr, sizeof(addr), "198.51.100.%d", i + 1);
			for (int k = 0; k < (i % 2 ? 100000 : 400); k++) {
				attempt(f, "victim", addr, false);
				if (write(pipes[i][1], "x", 1) != 1)
					_exit(3);
			}
			_exit(0);
		}
		close(pipes[i][1]);
	}
	usleep(150000);
	for (int i = 1; i < PROCS; i += 2) /* the odd ones would run for long */
		kill(pid[i], SIGKILL);
	for (int i = 0; i < PROCS; i++) {
		char buf[4096];
		ssize_t n;
		long told = 0;
		int st;
		while ((n = read(pipes[i][0], buf, sizeof(buf))) > 0)
			told += n;
		close(pipes[i][0]);
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		char addr[32];
		snprintf(addr, sizeof(addr), "198.51.100.%d", i + 1);
		uint64_t stored = n_fail_of(f, addr);
		if (i % 2 == 0) {
			assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
			assert_int_equal(stored, 400);
		} else {
			assert_true(WIFSIGNALED(st));
			assert_true(stored >= (uint64_t)told && stored <= (uint64_t)told + 1);
		}
	}
	/* the store is still good for everyone */
	for (int i = 0; i < 10; i++)
		assert_int_equal(attempt(f, "after", "203.0.113.1", false), AG_PROCEED);
	assert_int_equal(n_fail_of(f, "203.0.113.1"), 10);
	assert_int_equal(f->faults, 0);
}

/* The layout SECURITY.md recommends shares the store through its
 * directory's group (setgid). Processes come and go there all the time
 * (Dovecot's auth workers, Postfix's smtpd): long-lived writers keep going
 * while short-lived ones open the store, record a few attempts and exit.
 * No process may crash or hang, no committed attempt may be lost, and the
 * store must read back whole. (An open and close of lock.mdb by path after
 * the environment was open dropped the process's lock on it, and the next
 * newcomer re-initialised the lock file under the others' feet.) */
enum { SHARED_LONG = 3, SHARED_SHORT = 120, SHARED_SHORT_N = 4, SHARED_AT_ONCE = 4 };

static void shared_long_worker(struct fx *f, int i, int stop_fd, int out_fd)
{
	char addr[32], msg[32];
	long n = 0;

	alarm(120);
	snprintf(addr, sizeof(addr), "198.51.100.%d", i + 1);
	for (;;) {
		struct pollfd pfd = { stop_fd, POLLIN, 0 };
		if (n >= 200 && poll(&pfd, 1, 0) != 0)
			break; /* the parent closed its end: the short ones are done */
		attempt(f, "long", addr, false);
		n++;
	}
	int len = snprintf(msg, sizeof(msg), "%ld", n);
	_exit(write(out_fd, msg, (size_t)len) == len && f->faults == 0 ? 0 : 5);
}

static void shared_short_worker(struct fx *f, int j)
{
	char addr[32];

	alarm(60);
	snprintf(addr, sizeof(addr), "10.1.%d.%d", j / 200, j % 200 + 1);
	for (int k = 0; k < SHARED_SHORT_N; k++)
		attempt(f, "short", addr, false);
	_exit(f->faults == 0 ? 0 : 5);
}

/* Waits for one child; a crash, a hang (SIGALRM) or a fault is counted. */
static int shared_reap(pid_t pid)
{
	int st;
	pid_t got = waitpid(pid, &st, 0);

	if (got <= 0)
		return 1;
	if (WIFSIGNALED(st)) {
		print_message("process %d died of signal %d\n", (int)got, WTERMSIG(st));
		return 1;
	}
	return WEXITSTATUS(st) != 0;
}

static void test_shared_group_dir_processes_come_and_go(void **state)
{
	struct fx *f = *state;
	pid_t lpid[SHARED_LONG], spid[SHARED_AT_ONCE] = { 0 };
	int stop[2], out[SHARED_LONG][2], bad = 0;

	f->c.ip_ban_after = f->c.net_ban_after = f->c.spray_users = f->c.user_lock_after = 0;
	f->c.log_kind = AG_LOG_NONE;
	assert_int_equal(mkdir(f->c.db_dir, 0750), 0);
	assert_int_equal(chmod(f->c.db_dir, 02750), 0); /* root:authguard 2750, as documented */
	attempt(f, "init", "192.0.2.1", false);      /* the store exists; nothing of it stays open */
	ag_store_forget_all();
	assert_int_equal(pipe(stop), 0);
	fflush(NULL);
	for (int i = 0; i < SHARED_LONG; i++) {
		assert_int_equal(pipe(out[i]), 0);
		lpid[i] = fork();
		assert_true(lpid[i] >= 0);
		if (lpid[i] == 0) {
			close(stop[1]);
			close(out[i][0]);
			shared_long_worker(f, i, stop[0], out[i][1]);
		}
		close(out[i][1]);
	}
	close(stop[0]);
	for (int j = 0; j < SHARED_SHORT; j++) {
		int slot = j % SHARED_AT_ONCE;
		if (spid[slot] > 0)
			bad += shared_reap(spid[slot]);
		spid[slot] = fork();
		assert_true(spid[slot] >= 0);
		if (spid[slot] == 0) {
			close(stop[1]);
			shared_short_worker(f, j);
		}
	}
	for (int slot = 0; slot < SHARED_AT_ONCE; slot++)
		bad += shared_reap(spid[slot]);
	close(stop[1]);
	long told[SHARED_LONG];
	for (int i = 0; i < SHARED_LONG; i++) {
		char buf[32] = "";
		ssize_t n = read(out[i][0], buf, sizeof(buf) - 1);
		close(out[i][0]);
		told[i] = n > 0 ? strtol(buf, NULL, 10) : -1;
		bad += shared_reap(lpid[i]);
	}
	assert_int_equal(bad, 0);
	/* nothing lost, and every record reads back */
	for (int i = 0; i < SHARED_LONG; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "198.51.100.%d", i + 1);
		assert_int_equal(n_fail_of(f, addr), told[i]);
	}
	for (int j = 0; j < SHARED_SHORT; j++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "10.1.%d.%d", j / 200, j % 200 + 1);
		assert_int_equal(n_fail_of(f, addr), SHARED_SHORT_N);
	}
	struct ag_store *s;
	struct ag_store_info info;
	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	assert_int_equal(ag_store_info(s, &info), 0);
	print_message("long-lived writers recorded %ld, %ld, %ld attempts; store file %llu bytes, map %llu\n",
		      told[0], told[1], told[2], (unsigned long long)info.file_bytes,
		      (unsigned long long)info.map_size);
	/* hosts and their /24s: the first store, the long-lived, the short-lived
	 * (source records alone: the pairs are filed among them) */
	long srcs = 0;
	struct ag_txn *t;
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_admin_each_src(t, count_one_src, &srcs), 0);
	ag_txn_abort(t);
	assert_int_equal(srcs, 2 + (SHARED_LONG + 1) + (SHARED_SHORT + (SHARED_SHORT + 199) / 200));
	assert_int_equal(f->faults, 0);
}

/* A store file overwritten with garbage, or cut short: no crash; the
 * fault is logged; fail_open decides. */
static void test_damaged_store_file(void **state)
{
	struct fx *f = *state;
	char p[AG_PATH_MAX + 16];

	for (int variant = 0; variant < 2; variant++) {
		ag_store_forget_all();
		tu_rmrf(f->dir);
		assert_int_equal(mkdir(f->dir, 0700), 0);
		for (int i = 0; i < 200; i++) {
			char addr[32];
			snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 200, i % 200);
			attempt(f, "u", addr, false);
		}
		ag_store_forget_all();
		snprintf(p, sizeof(p), "%s/data.mdb", f->c.db_dir);
		if (variant == 0) {
			int fd = open(p, O_WRONLY);
			char junk[65536];
			for (size_t i = 0; i < sizeof(junk); i++)
				junk[i] = (char)(i * 7 + 3);
			assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
			close(fd);
		} else {
			assert_int_equal(truncate(p, 4096), 0);
		}
		/* in a child: a damaged map must never take the test down with it */
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			f->faults = 0;
			f->c.fail_open = 1;
			if (attempt(f, "u", "10.0.0.1", true) != AG_PROCEED || f->faults != 1)
				_exit(2);
			f->c.fail_open = 0;
			if (attempt(f, "u", "10.0.0.1", true) != AG_REFUSE)
				_exit(3);
			_exit(0);
		}
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		if (!WIFEXITED(st))
			fail_msg("variant %d: child died with signal %d", variant, WTERMSIG(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

/* A store the service's user may not open: fail_open decides, the
 * fault is logged, nothing crashes. Its log file (root's, 0640) cannot
 * be written either: that is a fault line of its own, once. */
static void test_store_not_permitted(void **state)
{
	struct fx *f = *state;

	attempt(f, "u", "192.0.2.1", true);
	ag_store_forget_all();
	assert_int_equal(chmod(f->dir, 0755), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(4); /* not root: nothing to test */
		f->c.fail_open = 1;
		if (attempt(f, "u", "192.0.2.1", true) != AG_PROCEED || f->faults != 2 ||
		    f->logfile_lines != 1)
			_exit(2);
		f->c.fail_open = 0;
		if (attempt(f, "u", "192.0.2.1", true) != AG_REFUSE)
			_exit(3);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 4)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

static int64_t fake_ms;
static int64_t fake_now(void) { return fake_ms; }

/* The pacing clock of a full store's upkeep (ag_guard_set_pace_clock()),
 * held still a day past the wall clock and past where the test before
 * left it: whatever the tests before left to wait is over, and nothing
 * ends until the test moves it on. */
static int64_t pace_ms;
static int64_t pace_now(void) { return pace_ms; }
static void freeze_pace(void)
{
	int64_t wall = ag_now_ms();

	pace_ms = (pace_ms > wall ? pace_ms : wall) + 86400000LL;
	ag_guard_set_pace_clock(pace_now);
}

/* The clock steps back by an hour in the middle of an attack: no crash,
 * nothing forgotten, no ban lifted early. */
static void test_clock_steps_back(void **state)
{
	struct fx *f = *state;

	fake_ms = 1800000000000LL;
	ag_guard_set_clock(fake_now);
	f->c.ip_ban_after = 5;
	for (int i = 0; i < 5; i++)
		attempt(f, "u", "203.0.113.5", false);
	assert_int_equal(attempt(f, "u", "203.0.113.5", true), AG_REFUSE);
	fake_ms -= 3600 * 1000;
	assert_int_equal(attempt(f, "u", "203.0.113.5", true), AG_REFUSE);
	for (int i = 0; i < 3; i++)
		assert_int_equal(attempt(f, "v", "203.0.113.6", false), AG_PROCEED);
	fake_ms += 5400 * 1000; /* back to 30 minutes after the ban began */
	assert_int_equal(attempt(f, "u", "203.0.113.5", true), AG_REFUSE); /* still in its hour */
	fake_ms += 1800 * 1000 + 1;
	assert_int_equal(attempt(f, "u", "203.0.113.5", true), AG_PROCEED); /* and it ends */
	ag_guard_set_clock(NULL);
}

/* ---- a store kept full (issue 16) ------------------------------------------ */

static struct ag_src_rec src_of(struct fx *f, const char *addr)
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_addr a;
	struct ag_src_rec r = { 0 };

	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	if (ag_admin_get_src(t, &a, &r) != 0)
		memset(&r, 0, sizeof(r));
	ag_txn_abort(t);
	return r;
}

static struct ag_user_rec user_of(struct fx *f, const char *user)
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_user_rec r = { 0 };
	uint8_t key[AG_USER_KEY_MAX];

	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	size_t klen = ag_admin_user_key(s, &f->c, user, key);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	if (ag_admin_get_user(t, key, klen, &r) != 0)
		memset(&r, 0, sizeof(r));
	ag_txn_abort(t);
	return r;
}

static struct ag_evict_stats evictions_of(struct fx *f)
{
	struct ag_store *s;
	struct ag_txn *t;
	struct ag_evict_stats e;

	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	assert_int_equal(ag_txn_begin(s, false, &t), 0);
	assert_int_equal(ag_admin_evictions(t, &e), 0);
	ag_txn_abort(t);
	return e;
}

/* A wrong password, the @k-th of the guesser's list. */
static enum ag_decision guess(struct fx *f, const char *user, const char *rhost, int k)
{
	struct ag_sink s = { sink, f };
	struct ag_attempt a = { "imap", user, strlen(user), rhost, strlen(rhost) };
	struct ag_ticket t;
	char pw[32];
	enum ag_decision d = ag_guard_check(&f->c, &s, &a, &t);

	snprintf(pw, sizeof(pw), "guess%d", k);
	if (d == AG_PROCEED)
		ag_guard_record(&f->c, &s, &a, false, pw, &t);
	return d;
}

/* Run authguard-admin -c CONF -d DB ARGS... with the store at @f, its
 * stdout to @out. Returns its exit status. */
static int admin_run(struct fx *f, const char *out, const char *a0, const char *a1)
{
	const char *admin = getenv("AG_TEST_ADMIN");
	char conf[400];
	const char *argv[] = { admin, "-c", conf, "-d", f->c.db_dir, a0, a1, NULL };
	FILE *cf;
	int st;

	if (admin == NULL)
		fail_msg("AG_TEST_ADMIN is not set (run through make check)");
	snprintf(conf, sizeof(conf), "%s/authguard.conf", f->dir);
	cf = fopen(conf, "w");
	assert_non_null(cf);
	fprintf(cf, "log = none\n");
	fclose(cf);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (o < 0 || dup2(o, 1) < 0)
			_exit(126);
		execv(admin, (char *const *)argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* @n fresh (user, /64) places, two different wrong passwords each, 2 ms
 * apart on the fake clock (500 failures a second): each makes four
 * records (host, /64, user, pair) with two failures, none weak in the old
 * sense, none reaching a rule. */
static void flood(struct fx *f, int from, int n)
{
	char addr[64], user[32];

	for (int i = from; i < from + n; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:%x:%x::1", i >> 12, i & 0xfff);
		snprintf(user, sizeof(user), "flood%d", i);
		for (int k = 0; k < 2; k++) {
			guess(f, user, addr, k);
			fake_ms += 2;
		}
	}
}

/* A flood of one-shot (user, /64) places keeps an 8M store at
 * db_max_size while one fresh IPv4 address guesses at one user, a guess
 * every 300 places (1.2 s; halfway to its ban, as long as it takes an
 * eviction round to run). The records the guesser writes are the
 * newest in the store, so eviction, oldest first, never takes them: it
 * is banned after ip_ban_after guesses, the user is locked. Before the
 * fix its records went as weak between guesses and every guess reached
 * the password check. An address banned once an hour before the flood
 * keeps its repeat-ban memory through it: its next ban is twice as long.
 * Eviction is logged and counted. */
static void test_store_kept_full(void **state)
{
	struct fx *f = *state;
	const char *guesser = "198.51.100.7", *old = "203.0.113.50";
	enum { GUESSES = 20, SPACING = 300 };
	int reached = 0, place = 0;

	/* the flood's /64s share a few /48s: one level, or the /48 ban
	 * (issue 14) stops it before the store fills */
	f->c.ipv6_prefixes.n = 1;

	fake_ms = 1800000000000LL;
	ag_guard_set_clock(fake_now);
	f->c.db_max_size = 8LL << 20;
	f->c.log_kind = AG_LOG_NONE;
	/* the old offender: banned for ip_ban_time, the ban over an hour on */
	for (uint32_t i = 0; i < f->c.ip_ban_after; i++)
		guess(f, "root", old, (int)i);
	assert_int_equal(src_of(f, old).ban_until - fake_ms, f->c.ip_ban_time);
	fake_ms += f->c.ip_ban_time + 60000;

	flood(f, place, 12000); /* the store is full */
	place += 12000;
	struct ag_evict_stats e0 = evictions_of(f);
	uint64_t rounds_at_first = 0, rounds_at_ban = 0;
	for (int g = 0; g < GUESSES; g++) {
		flood(f, place, SPACING);
		place += SPACING;
		if (g == 0)
			rounds_at_first = evictions_of(f).rounds;
		/* halfway to a ban, the flood goes on until a round has run */
		for (int k = 0; g == GUESSES / 4 && k < 200 &&
				evictions_of(f).rounds == rounds_at_first; k++) {
			flood(f, place, 100);
			place += 100;
		}
		enum ag_decision d = guess(f, "victim", guesser, g);
		fake_ms += 2;
		reached += d == AG_PROCEED;
		if (d == AG_PROCEED)
			rounds_at_ban = evictions_of(f).rounds;
	}
	struct ag_src_rec gs = src_of(f, guesser);
	struct ag_user_rec vu = user_of(f, "victim");
	struct ag_src_rec os = src_of(f, old);
	struct ag_evict_stats e1 = evictions_of(f);
	/* the old offender comes back */
	for (uint32_t i = 0; i < f->c.ip_ban_after; i++)
		guess(f, "root", old, (int)i);
	int64_t next_ban = src_of(f, old).ban_until - fake_ms;
	struct ag_store *s;
	uint64_t used, map;
	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	assert_int_equal(ag_store_usage(s, &used, &map), 0);
	print_message("guesses that reached the check: %d of %d; guesser n_fail %" PRIu64
		      ", banned %d; victim locked %d; old offender ban_count %u, next ban %" PRId64
		      " min; eviction rounds %" PRIu64 " (%" PRIu64 " during the guesses), records %" PRIu64
		      ", lines %d, faults %d; used %" PRIu64 " of %" PRIu64 "\n",
		      reached, GUESSES, gs.n_fail, gs.ban_until > fake_ms, vu.lock_until > fake_ms,
		      os.ban_count, next_ban / 60000, e1.rounds, rounds_at_ban - rounds_at_first,
		      e1.records, f->evict_lines, f->faults, used, map);
	assert_true(used <= map && map <= (uint64_t)f->c.db_max_size);
	/* the guesser got ip_ban_after guesses, no more, and was banned */
	assert_int_equal(reached, (int)f->c.ip_ban_after);
	assert_int_equal(gs.n_fail, f->c.ip_ban_after);
	assert_true(gs.ban_until > fake_ms);
	assert_true(vu.lock_until > fake_ms);
	/* ... while the store was being evicted around it */
	assert_true(e0.rounds >= 1);
	assert_true(rounds_at_ban > rounds_at_first);
	assert_true(e1.records > e0.records && e1.last_ms > 0);
	assert_true(f->evict_lines >= 1);
	/* the old offender's repeat-ban memory survived: twice as long */
	assert_int_equal(os.ban_count, 1);
	assert_int_equal(next_ban, 2 * f->c.ip_ban_time);

	/* authguard-admin says so */
	struct ag_evict_stats e = evictions_of(f);
	char out[400], want[200];
	snprintf(out, sizeof(out), "%s/admin.out", f->dir);
	assert_int_equal(admin_run(f, out, "status", NULL), 0);
	snprintf(want, sizeof(want), "evicted:  %" PRIu64 " records in %" PRIu64 " rounds (",
		 e.records, e.rounds);
	const char *st[] = { want, "raise db_max_size", NULL };
	assert_int_equal(tu_count_lines(out, st), 1);
	assert_int_equal(admin_run(f, out, "stats", "--prometheus"), 0);
	snprintf(want, sizeof(want), "authguard_evicted_total %" PRIu64 "\n", e.records);
	const char *m1[] = { want, NULL };
	assert_int_equal(tu_count_lines(out, m1), 1);
	const char *m2[] = { "# TYPE authguard_eviction_rounds_total counter", NULL };
	assert_int_equal(tu_count_lines(out, m2), 1);
	ag_guard_set_clock(NULL);
}

/* Write @r for host @addr straight into the store. */
static int put_src(struct fx *f, struct ag_txn *t, const char *addr, const struct ag_src_rec *r)
{
	struct ag_addr a;
	uint8_t key[AG_SRC_KEY_LEN];

	(void)f;
	assert_int_equal(ag_addr_parse(addr, strlen(addr), &a), 0);
	ag_src_key(&a, key);
	return ag_txn_put(t, AG_DB_SRC, key, sizeof(key), r, sizeof(*r));
}

static void mem_addr(char *buf, size_t n, int i)
{
	snprintf(buf, n, "2001:db8:bad:%x::1", i);
}

/* A store at db_max_size filled with repeat-ban memory (IPv6 hosts each
 * banned once by a rule, the bans over, ending two a second: the cheap
 * way to fill it with records that could never be evicted) and a few
 * ordinary records, plus an active ban and an admin's ban that is over,
 * both older than all. A flood of one-shot places then needs room: the
 * ordinary records are not enough, so ban memory goes, oldest ban end
 * first; no write fails (no "attempts go on unguarded"), the newest
 * memory stays, and the active ban and the admin's are never taken.
 * Before the tiers every write failed once the ordinary records were
 * gone. */
static void test_store_full_of_ban_memory(void **state)
{
	struct fx *f = *state;
	const char *banned = "192.0.2.99", *admin = "192.0.2.98";
	struct ag_store *s;
	struct ag_txn *t;
	char addr[64];
	int n = 0, rc = 0;

	/* the flood's /64s share a few /48s: one level, or the /48 ban
	 * (issue 14) stops it before the store fills */
	f->c.ipv6_prefixes.n = 1;

	/* past the fault lines' once-a-minute of the tests before; the
	 * pacing clock a day past theirs (no wait left from their rounds)
	 * and still from here on: one look, one round, however slow */
	fake_ms = 1900000000000LL;
	ag_guard_set_clock(fake_now);
	freeze_pace();
	f->c.db_max_size = 8LL << 20;
	f->c.log_kind = AG_LOG_NONE;
	guess(f, "first", "192.0.2.1", 0); /* creates the store */
	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	(void)ag_store_grow(s, f->c.db_max_size); /* to db_max_size, if it is not yet */
	struct ag_src_rec r = { .version = AG_REC_VERSION, .first_seen = fake_ms - 2 * 86400000LL };
	r.last_seen = r.first_seen;
	r.ban_count = 1;
	r.ban_until = fake_ms + 3600000; /* active, the oldest write of all */
	assert_int_equal(ag_txn_begin(s, true, &t), 0);
	assert_int_equal(put_src(f, t, banned, &r), 0);
	r.ban_until = fake_ms - 60000; /* an admin's, over */
	r.ban_by_admin = 1;
	assert_int_equal(put_src(f, t, admin, &r), 0);
	r.ban_by_admin = 0;
	for (int i = 0; i < 50; i++) { /* ordinary, never banned */
		struct ag_src_rec o = r;
		o.ban_count = 0;
		o.ban_until = 0;
		snprintf(addr, sizeof(addr), "198.51.100.%d", i);
		assert_int_equal(put_src(f, t, addr, &o), 0);
	}
	assert_int_equal(ag_txn_commit(t), 0);
	/* ban memory until the map is full: record n's ban ended n/2 s after
	 * the first's, the last one a minute ago or more */
	while (rc == 0) {
		assert_int_equal(ag_txn_begin(s, true, &t), 0);
		for (int k = 0; k < 200 && rc == 0; k++, n++) {
			mem_addr(addr, sizeof(addr), n);
			r.ban_until = fake_ms - 60000 - (100000 - n) * 500LL;
			r.last_seen = r.ban_until - f->c.ip_ban_time;
			rc = put_src(f, t, addr, &r);
		}
		rc = rc == 0 ? ag_txn_commit(t) : (ag_txn_abort(t), rc);
		if (rc != 0)
			n -= 200; /* that batch is not in */
	}
	assert_int_equal(rc, AG_EFULL);
	assert_true(n > 10000 && n < 100000);
	f->faults = f->evict_lines = 0;

	flood(f, 0, 3000);
	struct ag_evict_stats e = evictions_of(f);
	char first[64], last[64];
	mem_addr(first, sizeof(first), 0);
	mem_addr(last, sizeof(last), n - 1);
	print_message("ban-memory records %d; rounds %" PRIu64 ", records %" PRIu64
		      "; unguarded lines %d, memory lines %d, eviction lines %d\n",
		      n, e.rounds, e.records, f->unguarded, f->mem_lines, f->evict_lines);
	assert_int_equal(f->unguarded, 0);
	assert_true(e.rounds >= 1);
	assert_true(f->mem_lines >= 1);
	assert_int_equal(src_of(f, first).ban_count, 0);  /* the oldest memory went */
	assert_int_equal(src_of(f, last).ban_count, 1);   /* the newest stays */
	assert_true(src_of(f, banned).ban_until > fake_ms); /* an active ban never goes */
	assert_int_equal(src_of(f, admin).ban_by_admin, 1); /* nor an admin's */
	/* one round made room for the whole flood: what it wrote after that
	 * round all stays (before: a round per place, each taking the places
	 * before it, the only weak records; with the pacing clock still, a
	 * write that found no room after the round went on unguarded, said
	 * above). The round itself took the ordinary records first, the
	 * first place's first failure with them. */
	assert_int_equal(e.rounds, 1);
	assert_int_equal(src_of(f, "2001:db8:0:1::1").n_fail, 2);
	snprintf(addr, sizeof(addr), "2001:db8:%x:%x::1", 2999 >> 12, 2999 & 0xfff);
	assert_int_equal(src_of(f, addr).n_fail, 2);
	ag_guard_set_clock(NULL);
	ag_guard_set_pace_clock(NULL);
}

/* A store at db_max_size full of active bans (nothing may evict them)
 * and a few ordinary records: each write that fails for want of room
 * could start a round (a pass over the whole store holding the writer
 * lock for a batch at a time), and each round finds the few records the
 * flood itself just wrote. A round that finds far less than it needs
 * keeps this process out of eviction for a second: on the pacing clock,
 * held still, one round for 300 attempts; a second later, one more
 * (before: one per attempt, 600). */
static void test_store_full_rounds_limited(void **state)
{
	struct fx *f = *state;
	struct ag_store *s;
	struct ag_txn *t;
	char addr[64];
	int n = 0, rc = 0;

	/* the flood's /64s share a few /48s: one level, or the /48 ban
	 * (issue 14) stops it before the store fills */
	f->c.ipv6_prefixes.n = 1;

	fake_ms = 2000000000000LL; /* past the tests before: see above */
	ag_guard_set_clock(fake_now);
	freeze_pace();
	f->c.db_max_size = 8LL << 20;
	f->c.log_kind = AG_LOG_NONE;
	guess(f, "first", "192.0.2.1", 0);
	assert_int_equal(ag_store_get(f->c.db_dir, &s), 0);
	(void)ag_store_grow(s, f->c.db_max_size);
	struct ag_src_rec r = { .version = AG_REC_VERSION, .first_seen = fake_ms - 60000 };
	r.last_seen = r.first_seen;
	r.ban_count = 1;
	r.ban_until = fake_ms + 3600000;
	while (rc == 0) {
		assert_int_equal(ag_txn_begin(s, true, &t), 0);
		for (int k = 0; k < 200 && rc == 0; k++, n++) {
			mem_addr(addr, sizeof(addr), n);
			rc = put_src(f, t, addr, &r);
		}
		rc = rc == 0 ? ag_txn_commit(t) : (ag_txn_abort(t), rc);
	}
	assert_int_equal(rc, AG_EFULL);
	flood(f, 0, 150);
	struct ag_evict_stats e1 = evictions_of(f);
	pace_ms += 1001; /* EVICT_IDLE_MS on */
	flood(f, 150, 150);
	struct ag_evict_stats e = evictions_of(f);
	print_message("active bans %d; 2 x 300 attempts a second apart: rounds %" PRIu64
		      " then %" PRIu64 ", records %" PRIu64 "; unguarded lines %d\n",
		      n, e1.rounds, e.rounds, e.records, f->unguarded);
	assert_int_equal(e1.rounds, 1);
	assert_int_equal(e.rounds, 2);
	/* what is lost is said: the writes that found no room went on unguarded */
	assert_true(f->unguarded >= 1);
	mem_addr(addr, sizeof(addr), 0);
	assert_true(src_of(f, addr).ban_until > fake_ms);
	ag_guard_set_clock(NULL);
	ag_guard_set_pace_clock(NULL);
}

/* A thousand processes at once, each a different source due for the
 * tarpit, against tarpit_slots = 4: never more than four sleep. Each
 * sleep lasts 60 s, so no slot frees while the test runs, however slow
 * the machine: every process is either refused at once or asleep, and
 * the store never shows more than four asleep. The sleepers are then
 * killed. */
static void test_thousand_processes_small_tarpit(void **state)
{
	struct fx *f = *state;
#ifdef __SANITIZE_ADDRESS__
	enum { PROCS = 250 }; /* each sanitized process is heavy; 1000 in the plain run */
#else
	enum { PROCS = 1000 };
#endif
	static pid_t pids[PROCS];
	int go[2], res[2];
	char byte;

	f->c.tarpit_free = 1;
	f->c.tarpit_base = f->c.tarpit_max = 60000;
	f->c.tarpit_slots = 4;
	f->c.ip_ban_after = f->c.net_ban_after = f->c.spray_users = f->c.user_lock_after = 0;
	f->c.log_kind = AG_LOG_NONE;
	struct ag_conf prep = f->c;
	prep.tarpit_base = 0;
	struct ag_sink s = { sink, f };
	for (int i = 0; i < PROCS; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "10.%d.%d.1", i / 250, i % 250);
		struct ag_attempt a = { "imap", "u", 1, addr, strlen(addr) };
		ag_guard_record(&prep, &s, &a, false, NULL, NULL);
	}
	ag_store_forget_all();
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(res), 0);
	fflush(NULL);
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			char addr[32];
			close(go[1]);
			close(res[0]);
			while (read(go[0], &byte, 1) > 0)
				;
			snprintf(addr, sizeof(addr), "10.%d.%d.1", i / 250, i % 250);
			struct ag_attempt a = { "imap", "u", 1, addr, strlen(addr) };
			struct ag_ticket t;
			enum ag_decision d = ag_guard_check(&f->c, &s, &a, &t);
			char r = d == AG_REFUSE && t.reason == AG_WHY_TARPIT_FULL ? 'r' : 'x';
			if (write(res[1], &r, 1) != 1)
				_exit(2);
			_exit(0);
		}
	}
	close(go[0]);
	close(res[1]);
	close(go[1]); /* all at once */
	struct ag_store *st0;
	assert_int_equal(ag_store_get(f->c.db_dir, &st0), 0);
	int refused = 0, other = 0;
	unsigned asleep = 0;
	for (int k = 0; k < 1200 && refused + other + (int)asleep < PROCS; k++) {
		struct pollfd pfd = { res[0], POLLIN, 0 };
		if (poll(&pfd, 1, 50) == 1) {
			char buf[256];
			ssize_t n = read(res[0], buf, sizeof(buf));
			for (ssize_t j = 0; j < n; j++) {
				refused += buf[j] == 'r';
				other += buf[j] != 'r';
			}
		}
		struct ag_txn *t;
		assert_int_equal(ag_txn_begin(st0, false, &t), 0);
		assert_int_equal(ag_admin_sleepers(t, ag_now_ms(), &asleep), 0);
		ag_txn_abort(t);
		assert_true(asleep <= 4);
	}
	for (int i = 0; i < PROCS; i++)
		kill(pids[i], SIGKILL);
	int st;
	while (wait(&st) > 0)
		;
	close(res[0]);
	assert_int_equal(other, 0);
	assert_true(asleep >= 1 && asleep <= 4);
	assert_int_equal(refused + (int)asleep, PROCS);
}

/* 100,000 attempts in one process leave the heap flat. */
static void test_memory_flat(void **state)
{
	struct fx *f = *state;
	char addr[32], user[32];

	f->c.log_kind = AG_LOG_NONE;
	f->c.ip_ban_after = f->c.net_ban_after = f->c.spray_users = f->c.user_lock_after = 0;
	size_t before = 0;
	for (int i = 0; i < 100000; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		snprintf(user, sizeof(user), "user%d", i % 1000);
		attempt(f, user, addr, i % 5 == 0);
		if (i == 9999)
			before = mallinfo2().uordblks;
	}
	size_t after = mallinfo2().uordblks;
	print_message("heap in use after 10k attempts: %zu bytes, after 100k: %zu bytes\n", before, after);
	assert_true(after <= before + 16384);
}

/* A 1 MiB user name with every byte value goes through and cannot
 * split or forge the line. */
static void test_huge_hostile_user(void **state)
{
	struct fx *f = *state;
	size_t n = 1 << 20;
	char *user = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		user[i] = (char)(i % 255 + 1);
	memcpy(user + 100, "\" result=success\n", 17);
	user[n] = '\0';
	assert_int_equal(attempt(f, user, "192.0.2.50", false), AG_PROCEED);
	assert_int_equal(attempt(f, user, "192.0.2.50", false), AG_PROCEED);
	const char *any[] = { "time=", NULL };
	assert_int_equal(tu_count_lines(f->log, any), 2);
	const char *len[] = { "user_len=1048576", "result=fail", NULL };
	assert_int_equal(tu_count_lines(f->log, len), 2);
	const char *forged[] = { "result=success", NULL };
	assert_int_equal(tu_count_lines(f->log, forged), 0);
	free(user);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sigkill_while_recording, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_group_dir_processes_come_and_go, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_store_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_not_permitted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clock_steps_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_kept_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_full_of_ban_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_full_rounds_limited, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thousand_processes_small_tarpit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_flat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_hostile_user, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
