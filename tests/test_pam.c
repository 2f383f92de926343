/*
 * test_pam.c - the real pam_authguard.so through real libpam (service
 * files in the test's own directory: tools/pamdrive.h) with cwrap's
 * pam_matrix as the password check: the five-line stack
 * of the README, driven like a mail server drives it (PAM_RHOST set,
 * pam_authenticate then pam_acct_mgmt). Outcomes are asserted through PAM
 * return codes and the attempt log.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <sys/wait.h>

#include <security/pam_appl.h>

#include "pamdrive.h"
#include "policy.h"
#include "record.h"
#include "store.h"
#include "testutil.h"
#include "pamtest.h"

static void test_bruteforce_tarpit_then_ban(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 5\nuser_lock_after = 0\n");
	fail_n(5, "alice", "203.0.113.1");
	assert_int_equal(lines("action=tarpit", "rhost=203.0.113.1"), 2);
	assert_int_equal(lines("event=ban", "rhost=203.0.113.1"), 1);
	/* the right password while banned: refused, never checked */
	assert_int_equal(login("alice", "alice-pw", "203.0.113.1"), PAM_AUTH_ERR);
	assert_int_equal(lines("result=unchecked action=refuse reason=banned", "rhost=203.0.113.1"), 1);
	/* the same port-suffixed and IPv4-mapped forms are the same source */
	assert_int_equal(login("alice", "alice-pw", "::ffff:203.0.113.1"), PAM_AUTH_ERR);
	assert_int_equal(login("alice", "alice-pw", "[::ffff:203.0.113.1]:993"), PAM_AUTH_ERR);
	/* another address is not affected */
	assert_int_equal(login("alice", "alice-pw", "203.0.113.2"), PAM_SUCCESS);
}

static void test_botnet_locks_strangers_not_the_owner(void **state)
{
	(void)state;
	use_conf("user_lock_after = 5\n");
	assert_int_equal(login("carol", "carol-pw", "198.51.100.20"), PAM_SUCCESS);
	for (int i = 0; i < 10; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "100.64.%d.1", i);
		fail_n(1, "carol", addr);
	}
	assert_int_equal(lines("event=lock", "user=\"carol\""), 1);
	/* a stranger with the right password is refused ... */
	assert_int_equal(login("carol", "carol-pw", "100.65.0.1"), PAM_AUTH_ERR);
	assert_int_equal(lines("reason=locked", "rhost=100.65.0.1"), 1);
	/* ... and so is an attempt without a client address ... */
	assert_int_equal(login("carol", "carol-pw", NULL), PAM_AUTH_ERR);
	/* ... while the owner logs in from home as usual, again and again */
	for (int i = 0; i < 3; i++)
		assert_int_equal(login("carol", "carol-pw", "198.51.100.20"), PAM_SUCCESS);
	/* and the other users are untouched */
	assert_int_equal(login("bob", "bob-pw", "100.65.0.1"), PAM_SUCCESS);
}

static void test_ipv6_rotation_banned_as_prefix(void **state)
{
	(void)state;
	use_conf("net_ban_after = 10\nip_ban_after = 100\nuser_lock_after = 0\nspray_users = 0\n");
	for (int i = 0; i < 10; i++) {
		char addr[64];
		snprintf(addr, sizeof(addr), "2001:db8:7:7:%x::%x", i + 1, i * 3 + 1);
		fail_n(1, "bob", addr);
	}
	assert_int_equal(lines("event=net_ban", "rhost=2001:db8:7:7:"), 1);
	assert_int_equal(login("bob", "bob-pw", "2001:db8:7:7::99"), PAM_AUTH_ERR);
	assert_int_equal(login("bob", "bob-pw", "[2001:db8:7:7:ffff::1]:993"), PAM_AUTH_ERR);
	assert_int_equal(lines("reason=net_banned", "result=unchecked"), 2);
	assert_int_equal(login("bob", "bob-pw", "2001:db8:7:8::1"), PAM_SUCCESS);
}

static void test_proxy_never_banned_users_still_protected(void **state)
{
	(void)state;
	use_conf("proxies = 192.0.2.10\nip_ban_after = 5\nspray_users = 3\nuser_lock_after = 5\n");
	for (int i = 0; i < 30; i++) {
		char u[16];
		snprintf(u, sizeof(u), "u%02d", i);
		fail_n(1, u, "192.0.2.10");
	}
	assert_int_equal(lines("event=ban", "rhost=192.0.2.10"), 0);
	assert_int_equal(lines("action=tarpit", "rhost=192.0.2.10"), 0);
	assert_int_equal(login("bob", "bob-pw", "192.0.2.10"), PAM_SUCCESS);
	/* behind the proxy, guessing one mailbox still locks it there */
	fail_n(5, "alice", "192.0.2.10");
	assert_int_equal(lines("event=lock", "user=\"alice\""), 1);
	assert_int_equal(login("alice", "alice-pw", "192.0.2.10"), PAM_AUTH_ERR);
	assert_int_equal(lines("reason=locked", "rhost=192.0.2.10"), 1);
}

/* pam_matrix tells "Alice" from "alice", as pam_unix does; user_fold (the
 * default) counts them as one user. The owner of "Alice" logs in from a
 * /64 every 9 guesses at "alice" there, one fresh address each: that makes
 * the /64 familiar for "Alice" only, so the guesses at "alice" lock her
 * after user_lock_after, and she still gets in from home. */
static void test_user_fold_familiar_only_to_exact_name(void **state)
{
	char path[400];
	int n = 60;

	(void)state;
	snprintf(path, sizeof(path), "%s/passdb", workdir);
	FILE *f = fopen(path, "a");
	assert_non_null(f);
	fprintf(f, "Alice:Alice-pw:%s\n", PD_SERVICE);
	fclose(f);
	use_conf("");
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
	for (int i = 0; i < n; i++) {
		char addr[64], pw[32];
		if (i % 9 == 0) {
			snprintf(addr, sizeof(addr), "2001:db8:5:6::%x", 2 * i + 2);
			assert_int_equal(login("Alice", "Alice-pw", addr), PAM_SUCCESS);
		}
		snprintf(addr, sizeof(addr), "2001:db8:5:6::%x", 2 * i + 1);
		snprintf(pw, sizeof(pw), "guess-%d", i);
		assert_int_equal(login("alice", pw, addr), PAM_AUTH_ERR);
	}
	int reached = lines("result=fail", "user=\"alice\"");
	printf("# %d of %d guesses at \"alice\" reached the password check\n", reached, n);
	assert_int_equal(reached, 10);
	assert_int_equal(lines("result=unchecked action=refuse reason=locked", "user=\"alice\""), n - 10);
	assert_int_equal(login("alice", "alice-pw", "2001:db8:5:6::ffff"), PAM_AUTH_ERR);
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
	assert_int_equal(login("Alice", "Alice-pw", "2001:db8:5:6::fffe"), PAM_SUCCESS);
}

/* user_strip_domains: "alice@example.org" (as a service that passes the
 * whole address names her) and "alice" are one user: failures under
 * every spelling count toward one lock, the lock refuses every spelling,
 * and her familiar place is familiar under every spelling. A domain not
 * listed is another user. */
static void test_strip_domains_one_user(void **state)
{
	static const char *const names[] = {
		"alice@example.org", "Alice@EXAMPLE.org", "alice", "alice@example.net ",
		"alice@Example.Net",
	};

	(void)state;
	use_conf("user_lock_after = 5\nuser_strip_domains = example.org, @Example.NET\n");
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
	for (size_t i = 0; i < (sizeof(names) / sizeof(names[0])); i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "100.64.%zu.1", i);
		fail_n(1, names[i], addr);
		assert_int_equal(lines("event=lock", "time="), i == (sizeof(names) / sizeof(names[0])) - 1);
	}
	/* the log keeps each name as the service gave it */
	assert_int_equal(lines("result=fail", "user=\"Alice@EXAMPLE.org\""), 1);
	assert_int_equal(login("alice", "alice-pw", "100.65.0.1"), PAM_AUTH_ERR);
	assert_int_equal(login("alice@example.org", "x", "100.65.0.1"), PAM_AUTH_ERR);
	assert_int_equal(lines("result=unchecked action=refuse reason=locked", "rhost=100.65.0.1"), 2);
	/* a domain not listed is its own user, not locked */
	assert_int_equal(login("alice@example.com", "x", "100.65.0.2"), PAM_AUTH_ERR);
	assert_int_equal(lines("result=fail", "user=\"alice@example.com\""), 1);
	/* her home is familiar for alice@example.org too: checked, not refused */
	assert_int_equal(login("alice@example.org", "x", "198.51.100.20"), PAM_AUTH_ERR);
	assert_int_equal(lines("result=fail", "rhost=198.51.100.20"), 1);
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
}

/* The logins read this run's own service directory (pam_start_confdir):
 * pam_wrapper, whose runtime directory is one of 62 host-wide names in
 * /tmp picked racily, is not loaded, so suites running in parallel cannot
 * share or delete each other's copy of the service files. pam_wrapper
 * says where its copy is in PAM_WRAPPER_RUNTIME_DIR once it is set up.
 * (A run its caller started under the wrapper, by hand, keeps it.) */
static bool started_under_wrapper;

static void test_own_service_dir_no_pam_wrapper(void **state)
{
	(void)state;
	if (started_under_wrapper)
		skip();
#ifdef HAVE_PAM_START_CONFDIR
	use_conf("");
	assert_int_equal(login("alice", "alice-pw", "192.0.2.77"), PAM_SUCCESS);
	assert_null(getenv("PAM_WRAPPER_RUNTIME_DIR"));
	assert_null(getenv("PAM_WRAPPER"));
	const char *dir = getenv(PD_CONFDIR_ENV);
	assert_non_null(dir);
	assert_int_equal(strncmp(dir, workdir, strlen(workdir)), 0);
	assert_int_equal(lines("result=success", "rhost=192.0.2.77"), 1);
#else
	skip(); /* Linux-PAM before 1.4: pam_wrapper it is */
#endif
}

static void test_trusted_untouched(void **state)
{
	(void)state;
	use_conf("trusted = 192.0.2.20\nip_ban_after = 3\nuser_lock_after = 3\n");
	fail_n(20, "alice", "192.0.2.20");
	assert_int_equal(login("alice", "alice-pw", "192.0.2.20"), PAM_SUCCESS);
	assert_int_equal(lines("reason=trusted", "rhost=192.0.2.20"), 21);
	assert_int_equal(lines("action=tarpit", "rhost=192.0.2.20"), 0);
	/* nothing was counted against alice either */
	assert_int_equal(login("alice", "alice-pw", "203.0.113.99"), PAM_SUCCESS);
}

static void test_deny_always_refuses(void **state)
{
	(void)state;
	use_conf("deny = 192.0.2.30/32, 2001:db8:dead::/48\n");
	assert_int_equal(login("alice", "alice-pw", "192.0.2.30"), PAM_AUTH_ERR);
	assert_int_equal(login("alice", "alice-pw", "2001:db8:dead:1::5"), PAM_AUTH_ERR);
	assert_int_equal(lines("reason=deny", "result=unchecked"), 2);
	assert_int_equal(login("alice", "alice-pw", "192.0.2.31"), PAM_SUCCESS);
}

static void test_log_only_changes_no_outcome(void **state)
{
	(void)state;
	use_conf("mode = log-only\nip_ban_after = 5\ndeny = 192.0.2.40\n");
	fail_n(10, "alice", "203.0.113.7");
	assert_int_equal(login("alice", "alice-pw", "203.0.113.7"), PAM_SUCCESS);
	assert_int_equal(login("alice", "alice-pw", "192.0.2.40"), PAM_SUCCESS);
	assert_int_equal(lines("mode=log-only would=refuse", "reason=banned"), 6);
	assert_int_equal(lines("mode=log-only would=refuse", "reason=deny"), 1);
	assert_int_equal(lines("mode=log-only would=tarpit", "rhost=203.0.113.7"), 2);
	assert_int_equal(lines("result=unchecked", "time="), 0);
	assert_int_equal(lines("event=ban", "mode=log-only"), 1);
}

static void test_log_line_carries_every_field(void **state)
{
	(void)state;
	use_conf("");
	fail_n(1, "alice", "203.0.113.8");
	assert_int_equal(login("alice", "alice-pw", "203.0.113.8"), PAM_SUCCESS);
	static const char *fields[] = {
		"time=20", " service=" PD_SERVICE, " user=\"alice\"", " rhost=203.0.113.8",
		" result=fail", " action=allow", " delay_ms=0", " src_score=1.0",
		" user_score=1.0", " user_state=ok", " familiar=no", NULL,
	};
	assert_int_equal(tu_count_lines(logpath, fields), 1);
	/* familiar= tells how the attempt was judged: the first login from a
	 * place was not from a familiar one, the next is */
	assert_int_equal(lines(" result=success", " familiar=no"), 1);
	assert_int_equal(login("alice", "alice-pw", "203.0.113.8"), PAM_SUCCESS);
	assert_int_equal(lines(" result=success", " familiar=yes"), 1);
	const char *any[] = { "time=", NULL };
	assert_int_equal(tu_count_lines(logpath, any), 3); /* one line per attempt */
}

static void test_many_processes_lose_no_count(void **state)
{
	enum { PROCS = 8, EACH = 40 };
	char extra[256];
	pid_t pids[PROCS];

	(void)state;
	snprintf(extra, sizeof(extra),
		 "decay_half_life = 365d\nip_ban_after = %d\ntarpit_base = 0\nuser_lock_after = 0\n"
		 "spray_users = 0\nnet_ban_after = 0\n", PROCS * EACH);
	use_conf(extra);
	char each[16], rfd[16], gfd[16];
	int ready[2], go[2];
	snprintf(each, sizeof(each), "%d", EACH);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	snprintf(rfd, sizeof(rfd), "%d", ready[1]);
	snprintf(gfd, sizeof(gfd), "%d", go[0]);
	fflush(NULL);
	for (int i = 0; i < PROCS; i++) {
		/* separate processes, as a server's auth workers are: each
		 * loads libpam, the module and the store on its own. They
		 * start one at a time (where pam_wrapper is used, 1.1.4 picks
		 * its runtime directory racily), then all go at once. */
		char byte;
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			char self[1024];
			if (pd_self_exe(self, sizeof(self)) == 0)
				execl(self, "test_pam", "--hammer", each, "alice", "nope", "203.0.113.60",
				      rfd, gfd, (char *)NULL);
			_exit(127);
		}
		/* a worker that dies before it is ready fails the test, not hangs it */
		struct pollfd pfd = { ready[0], POLLIN, 0 };
		assert_int_equal(poll(&pfd, 1, 60000), 1);
		assert_int_equal(read(ready[0], &byte, 1), 1);
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]); /* EOF on the go pipe: every worker starts now */
	for (int i = 0; i < PROCS; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(lines("result=fail", "rhost=203.0.113.60"), PROCS * EACH);
	/* exactly the last failure reached the threshold: no count was lost */
	assert_int_equal(lines("event=ban", "rhost=203.0.113.60"), 1);
	assert_int_equal(login("alice", "alice-pw", "203.0.113.60"), PAM_AUTH_ERR);
}

/* A config file the module cannot read (missing, as in a chroot that
 * lacks it): the defaults are in force and the file's lists are not, so
 * every attempt line says config=missing, and a fault line names the file
 * and the cause (once a minute per process). */
static void test_missing_config_is_loud(void **state)
{
	char log[600];
	const char *every[] = { "config=missing", "service=" PD_SERVICE_NOCONF, NULL };
	const char *attempts[] = { " result=", NULL };
	const char *why[] = { "authguard fault: config ", "/no-such.conf: cannot read: No such file or directory",
			      "NOT applied", NULL };

	(void)state;
	snprintf(log, sizeof(log), "%s/log-noconf", workdir);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pd_login_service(PD_SERVICE_NOCONF, "bob", "bob-pw", "192.0.2.44", NULL),
				 PAM_SUCCESS);
	assert_int_equal(pd_login_service(PD_SERVICE_NOCONF, "bob", "nope", "192.0.2.44", NULL),
			 PAM_AUTH_ERR);
	assert_int_equal(tu_count_lines(log, attempts), 4);
	assert_int_equal(tu_count_lines(log, every), 4);
	assert_int_equal(tu_count_lines(log, why), 1);
}

/* A bad line in the config is reported where the attempts go (log =
 * file:), not only to syslog: on a host without a syslog daemon it would
 * be seen nowhere. The bad line comes before the log key: the report
 * waits until the destination is known. */
static void test_config_errors_in_the_log_file(void **state)
{
	char path[400];
	FILE *f;
	const char *bad[] = { "config: ", "authguard.conf:1: ", "tarpit_free", "not applied", NULL };

	(void)state;
	use_conf("");
	snprintf(path, sizeof(path), "%s/authguard.conf", workdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "tarpit_free = banana\ndb_dir = %s\nlog = file:%s\n", dbdir, logpath);
	fclose(f);
	assert_int_equal(login("bob", "bob-pw", "192.0.2.61"), PAM_SUCCESS);
	assert_int_equal(login("bob", "bob-pw", "192.0.2.61"), PAM_SUCCESS);
	/* once per change of the file, not once per attempt */
	assert_int_equal(tu_count_lines(logpath, bad), 1);
	assert_int_equal(lines("result=success", "192.0.2.61"), 2);
}

static void test_hostile_rhost_and_user(void **state)
{
	static char big[10240];
	const char *rhosts[] = { "mail.example.com", "", "[::1", "999.1.1.1", "::1::2", "1.2.3.4:99999",
				 big, "\xff\xfe", NULL };

	(void)state;
	memset(big, '7', sizeof(big) - 1);
	use_conf("");
	for (const char **r = rhosts; *r != NULL; r++)
		assert_int_equal(login("bob", "bob-pw", *r), PAM_SUCCESS);
	assert_int_equal(login("bob", "bob-pw", NULL), PAM_SUCCESS);
	assert_int_equal(lines("rhost=none", "result=success"), 9);
	/* a user name built to forge a field cannot */
	assert_int_equal(login("x\" result=success\nuser=\"alice", "pw", "192.0.2.9"), PAM_AUTH_ERR);
	assert_int_equal(lines("result=success", "192.0.2.9"), 0);
	assert_int_equal(lines("result=fail", "192.0.2.9"), 1);
	char longuser[4096];
	memset(longuser, 'u', sizeof(longuser) - 1);
	longuser[sizeof(longuser) - 1] = '\0';
	assert_int_equal(login(longuser, "pw", "192.0.2.9"), PAM_AUTH_ERR);
	assert_int_equal(lines("user_len=4095", "result=fail"), 1);
}

/* ---- distributed spraying and attack waves (issue 14) ----------------- */

/* SPRAY_USERS mailboxes s000..; every SPRAY_EVERY-th one (from
 * SPRAY_FIRST on) uses the sprayed password, the others their own. */
enum { SPRAY_USERS = 150, SPRAY_FIRST = 12, SPRAY_EVERY = 25 };
#define SPRAYED "Summer2026!"

/* A login through the stack that keeps PAM_AUTHTOK, as pam_unix does. */
static int login_tok(const char *user, const char *pw, const char *rhost)
{
	return pd_login_service(PD_SERVICE_AUTHTOK, user, pw, rhost, NULL);
}

static bool spray_victim(int i)
{
	return i >= SPRAY_FIRST && (i - SPRAY_FIRST) % SPRAY_EVERY == 0;
}

static void spray_passdb(void)
{
	static bool done;
	char path[400];

	if (done)
		return;
	done = true;
	snprintf(path, sizeof(path), "%s/passdb", workdir);
	FILE *f = fopen(path, "a");
	assert_non_null(f);
	for (int i = 0; i < SPRAY_USERS; i++) {
		if (spray_victim(i))
			fprintf(f, "s%03d:%s:%s\n", i, SPRAYED, PD_SERVICE);
		else
			fprintf(f, "s%03d:own-pw-%03d:%s\n", i, i, PD_SERVICE);
	}
	fclose(f);
}

/* One password against every mailbox once, each try from an address (and
 * /24) of its own: no address, network or mailbox fails twice. Returns the
 * mailboxes taken. */
static int spray(void)
{
	int taken = 0;

	for (int i = 0; i < SPRAY_USERS; i++) {
		char user[16], addr[32];
		snprintf(user, sizeof(user), "s%03d", i);
		snprintf(addr, sizeof(addr), "100.%d.%d.7", 64 + i / 256, i % 256);
		taken += login_tok(user, SPRAYED, addr) == PAM_SUCCESS;
	}
	return taken;
}

/* Before: with spray_password_users = 0 (today's rules) every try reaches
 * the check and every mailbox with that password is taken. After (the
 * default, 10): the password is hot after its 10th distinct user, and the
 * right logins with it from places new to their owners are refused
 * (reason=hot_password, the same PAM_AUTH_ERR as a wrong password). The
 * owner of one of them still logs in from home, and the line says the
 * password is being sprayed; from a new place she is refused. */
static void test_distributed_spray_hot_password(void **state)
{
	int victims = 0;

	(void)state;
	spray_passdb();
	for (int i = 0; i < SPRAY_USERS; i++)
		victims += spray_victim(i);

	use_conf("spray_password_users = 0\n");
	int before = spray();
	int reached_before = lines("result=", "user=\"s");
	printf("# spraying before: %d of %d tries reached the check, %d of %d mailboxes taken\n",
	       reached_before, SPRAY_USERS, before, victims);
	assert_int_equal(reached_before, SPRAY_USERS);
	assert_int_equal(before, victims);

	use_conf("");
	/* the owner of s037 logs in from home before the spray */
	assert_int_equal(login_tok("s037", SPRAYED, "198.51.100.37"), PAM_SUCCESS);
	int after = spray();
	int reached_after = lines("result=", "user=\"s") - 1;
	int hot = lines("result=success action=refuse reason=hot_password", "user=\"s");
	printf("# spraying after: %d of %d tries reached the check, %d of %d mailboxes taken, "
	       "%d right guesses refused (hot_password)\n", reached_after, SPRAY_USERS, after,
	       victims, hot);
	assert_int_equal(after, 0);
	assert_int_equal(hot, victims);
	/* the first ten failures made it hot; every later one says so (one
	 * later when two of the first ten users share a 16-bit tag: about
	 * one store in 1,500) */
	int said = lines("result=fail", "sprayed=yes");
	assert_true(said == SPRAY_USERS - victims - 9 || said == SPRAY_USERS - victims - 10);
	/* the owner at home: in, and told */
	assert_int_equal(login_tok("s037", SPRAYED, "198.51.100.37"), PAM_SUCCESS);
	assert_int_equal(lines("result=success action=allow", "sprayed=yes"), 1);
	/* from a new place: refused like a wrong password */
	assert_int_equal(login_tok("s037", SPRAYED, "198.51.100.200"), PAM_AUTH_ERR);
	/* another user with her own password, from a new place: untouched */
	assert_int_equal(login_tok("s001", "own-pw-001", "203.0.113.201"), PAM_SUCCESS);
	/* log-only: the spray's hits go on, and the lines say what would be done */
	use_conf("mode = log-only\n");
	assert_int_equal(spray(), victims);
	assert_int_equal(lines("would=refuse", "reason=hot_password"), victims);
}

/* Write the wave detector's state into the scenario's store, from a child
 * process (the module holds the store open in this one). */
static void seed_wave(const struct ag_wave_rec *wv)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ag_store *s;
		struct ag_txn *t;
		int rc = ag_store_get(dbdir, &s);
		if (rc == 0)
			rc = ag_txn_begin(s, true, &t);
		if (rc == 0)
			rc = ag_txn_put(t, AG_DB_MAIN, AG_WAVE_KEY, AG_WAVE_KEY_LEN, wv, sizeof(*wv));
		if (rc == 0)
			rc = ag_txn_commit(t);
		_exit(rc == 0 ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* An attack wave: the store has learned a quiet host (its first day is
 * over; the baseline is empty), then guesses from fresh addresses at many
 * mailboxes (credential stuffing: each pair once, each from its own
 * place). At wave_min_failures the wave starts (event=wave_start); from
 * then on every try from a place new to its user sleeps from its first try
 * (reason=wave), the owner at home does not (wave=on in her line), and a
 * user's new phone is slowed by tarpit_base once and is familiar after. A
 * wave whose count has faded is over by itself (event=wave_end). */
static void test_wave_tarpits_new_places(void **state)
{
	enum { STUFF = 50, MIN_FAILS = 20 };
	char extra[128];
	struct ag_wave_rec wv = { .version = AG_REC_VERSION };

	(void)state;
	snprintf(extra, sizeof(extra), "wave_min_failures = %d\n", MIN_FAILS);
	use_conf(extra);
	wv.first_seen = ag_now_ms() - 2 * 86400000LL;
	seed_wave(&wv);
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
	for (int i = 0; i < STUFF; i++) {
		char user[24], pw[24], addr[40];
		snprintf(user, sizeof(user), "u%02d", i % 50);
		snprintf(pw, sizeof(pw), "leak-%d", i);
		snprintf(addr, sizeof(addr), "100.%d.%d.9", 80 + i / 256, i % 256);
		assert_int_equal(login(user, pw, addr), PAM_AUTH_ERR);
	}
	assert_int_equal(lines("event=wave_start", "result=fail"), 1);
	int slowed = lines("action=tarpit reason=wave", "rhost=100.");
	printf("# wave: %d of %d stuffing tries slowed from their first try\n", slowed, STUFF);
	assert_int_equal(slowed, STUFF - MIN_FAILS);
	/* the owner at home: not touched, and her line says a wave is on */
	assert_int_equal(login("alice", "alice-pw", "198.51.100.20"), PAM_SUCCESS);
	assert_int_equal(lines("result=success action=allow", "wave=on"), 1);
	/* bob's new phone: slowed once, in, familiar from then on */
	assert_int_equal(login("bob", "bob-pw", "203.0.113.50"), PAM_SUCCESS);
	assert_int_equal(lines("result=success action=tarpit reason=wave", "rhost=203.0.113.50"), 1);
	assert_int_equal(login("bob", "bob-pw", "203.0.113.50"), PAM_SUCCESS);
	assert_int_equal(lines("result=success action=allow", "rhost=203.0.113.50"), 1);

	/* a wave whose count faded long ago: over, without anyone ending it */
	use_conf(extra);
	wv.active = 1;
	wv.fast.v = 1000;
	wv.fast.ts = ag_now_ms() - 86400000LL; /* 144 half-lives ago */
	wv.since = wv.fast.ts;
	wv.waves = 1;
	seed_wave(&wv);
	assert_int_equal(login("u01", "nope", "100.90.0.1"), PAM_AUTH_ERR);
	assert_int_equal(lines("action=allow", "rhost=100.90.0.1"), 1);
	assert_int_equal(lines("event=wave_end", "rhost=100.90.0.1"), 1);
	assert_int_equal(lines("wave=on", "time="), 0);
}

/* ---- issue 14: a parallel burst, networks of several sizes ---------------- */

/* @procs processes, each one wrong login for @user from @rhost, all let
 * go at once when every one is ready (as test_many_processes_lose_no_count
 * starts its workers). */
static void burst(int procs, const char *user, const char *rhost)
{
	pid_t pids[32];
	int ready[2], go[2];
	char rfd[16], gfd[16];

	assert_true(procs <= 32);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	snprintf(rfd, sizeof(rfd), "%d", ready[1]);
	snprintf(gfd, sizeof(gfd), "%d", go[0]);
	fflush(NULL);
	for (int i = 0; i < procs; i++) {
		char byte;
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			char self[1024];
			if (pd_self_exe(self, sizeof(self)) == 0)
				execl(self, "test_pam", "--hammer", "1", user, "nope", rhost, rfd, gfd,
				      (char *)NULL);
			_exit(127);
		}
		struct pollfd pfd = { ready[0], POLLIN, 0 };
		assert_int_equal(poll(&pfd, 1, 60000), 1);
		assert_int_equal(read(ready[0], &byte, 1), 1);
	}
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
	for (int i = 0; i < procs; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

/* 24 guesses at once from one address, each its own process through
 * libpam (a server's auth workers), with a tarpit long enough that all
 * are past the check before the first is recorded: with the attempts in
 * flight counted, at most ip_ban_after = 5 reach the password check (the
 * bound: none over); the rest are refused before it. */
static void test_parallel_burst_through_pam(void **state)
{
	const char *conf = "ip_ban_after = 5\nuser_lock_after = 0\ntarpit_free = 1\n"
			   "tarpit_base = 300ms\ntarpit_max = 300ms\ntarpit_slots = 100\n";
	char off[256];

	(void)state;
	snprintf(off, sizeof(off), "%sinflight_max = 0\n", conf);
	use_conf(off);
	burst(24, "alice", "203.0.113.77");
	int before = lines("result=fail", "rhost=203.0.113.77");
	use_conf(conf);
	burst(24, "alice", "203.0.113.77");
	int after = lines("result=fail", "rhost=203.0.113.77");
	print_message("24 parallel guesses through libpam, ip_ban_after = 5: %d reached the check "
		      "before, %d after\n", before, after);
	assert_true(after <= 5);
	assert_int_equal(lines("result=unchecked", "rhost=203.0.113.77"), 24 - after);
	assert_true(lines("reason=inflight", "rhost=203.0.113.77") >= 1);
}

/* A new /64 and a new user name each try, all inside one /48: no /64
 * ever fails twice, the /48 is banned at its count (60, the default),
 * and the owner's familiar host inside it still logs in. */
static void test_ipv6_rotation_in_48_banned_as_48(void **state)
{
	char addr[64], user[16];

	(void)state;
	use_conf("");
	assert_int_equal(login("alice", "alice-pw", "2001:db8:48:1::10"), PAM_SUCCESS);
	int reached = 0;
	for (int i = 0; i < 200; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:48:%x::%x", 0x100 + i, i + 1);
		snprintf(user, sizeof(user), "u%02d", i % 50);
		int rc = login(user, "nope", addr);
		assert_int_equal(rc, PAM_AUTH_ERR);
		reached = lines("result=fail", "rhost=2001:db8:48:");
	}
	print_message("/64 rotation inside one /48: %d of 200 reached the check\n", reached);
	assert_int_equal(reached, 60);
	assert_int_equal(lines("event=net_ban", "rhost=2001:db8:48:"), 1);
	assert_int_equal(lines("reason=net_banned", "result=unchecked"), 140);
	/* a stranger elsewhere in the /48 with a right password: refused */
	assert_int_equal(login("bob", "bob-pw", "2001:db8:48:ffff::1"), PAM_AUTH_ERR);
	/* the owner at home (her /64, another privacy address): in */
	assert_int_equal(login("alice", "alice-pw", "2001:db8:48:1::beef"), PAM_SUCCESS);
	/* the next /48 is another network */
	assert_int_equal(login("bob", "bob-pw", "2001:db8:49:1::1"), PAM_SUCCESS);
}

/* Networks banned as /48 (one level, as an admin raising ipv6_prefix to
 * 48 used to): familiarity stays the /64's. A stranger in another /64 of
 * the owner's /48 counts toward her lock and is refused once she is
 * locked, while she logs in from her own /64. */
static void test_stranger_in_owners_48_not_familiar(void **state)
{
	char addr[64];

	(void)state;
	use_conf("ipv6_prefixes = 48\nip_ban_after = 0\nspray_users = 0\n");
	assert_int_equal(login("alice", "alice-pw", "2001:db8:50:1::10"), PAM_SUCCESS);
	for (int i = 0; i < 10; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:50:2::%x", i + 1);
		fail_n(1, "alice", addr);
	}
	assert_int_equal(lines("event=lock", "user=\"alice\""), 1);
	assert_int_equal(lines("familiar=yes", "rhost=2001:db8:50:2:"), 0);
	assert_int_equal(login("alice", "alice-pw", "2001:db8:50:2::99"), PAM_AUTH_ERR);
	assert_int_equal(lines("reason=locked", "rhost=2001:db8:50:2::99"), 1);
	assert_int_equal(login("alice", "alice-pw", "2001:db8:50:1::77"), PAM_SUCCESS);
}

/* test_pam --hammer N USER PASSWORD RHOST READY_FD GO_FD: say ready,
 * wait for go, make N failed logins; exit 0 if every one failed. */
static int hammer(char **argv)
{
	int n = atoi(argv[2]), ready = atoi(argv[6]), go = atoi(argv[7]);
	char byte;

	if (write(ready, "r", 1) != 1)
		return 4;
	close(ready);
	while (read(go, &byte, 1) > 0)
		;
	close(go);
	for (int k = 0; k < n; k++)
		if (login(argv[3], argv[4], argv[5]) != PAM_AUTH_ERR)
			return 3;
	return 0;
}

int main(int argc, char **argv)
{
	const char *wd = getenv("AG_TEST_DIR");
	/* by hand, that is: not re-executed by pd_ensure_wrapper(), which
	 * passes its lock on in AG_PWRAP_LOCK_FD */
	const char *pw = getenv("PAM_WRAPPER");
	started_under_wrapper = pw != NULL && strcmp(pw, "1") == 0 && getenv("AG_PWRAP_LOCK_FD") == NULL;
	struct pd_paths p = { getenv("AG_TEST_MODULE"), getenv("AG_TEST_MATRIX"),
			      getenv("AG_TEST_WRAPPER"), NULL };

	if (argc == 8 && strcmp(argv[1], "--hammer") == 0)
		return hammer(argv);

	if (p.module == NULL || p.matrix == NULL || p.wrapper == NULL) {
		printf("1..0 # SKIP AG_TEST_MODULE/AG_TEST_MATRIX/AG_TEST_WRAPPER not set (run via make check)\n");
		return 1;
	}
	if (wd == NULL) {
		tu_mkdtemp(workdir, sizeof(workdir), "pam");
		setenv("AG_TEST_DIR", workdir, 1);
	} else {
		snprintf(workdir, sizeof(workdir), "%s", wd);
	}
	p.workdir = workdir;
	/* --write-services: set up pam_wrapper's service files and stop, so a
	 * run under valgrind can start with the wrapper's environment and
	 * need no re-exec */
	if (argc == 2 && strcmp(argv[1], "--write-services") == 0)
		return pd_write_services(&p) == 0 ? 0 : 1;
	if (pd_ensure_wrapper(&p, argv) != 0)
		return 1;
	write_passdb(50);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bruteforce_tarpit_then_ban),
		cmocka_unit_test(test_botnet_locks_strangers_not_the_owner),
		cmocka_unit_test(test_ipv6_rotation_banned_as_prefix),
		cmocka_unit_test(test_proxy_never_banned_users_still_protected),
		cmocka_unit_test(test_user_fold_familiar_only_to_exact_name),
		cmocka_unit_test(test_strip_domains_one_user),
		cmocka_unit_test(test_own_service_dir_no_pam_wrapper),
		cmocka_unit_test(test_trusted_untouched),
		cmocka_unit_test(test_deny_always_refuses),
		cmocka_unit_test(test_log_only_changes_no_outcome),
		cmocka_unit_test(test_log_line_carries_every_field),
		cmocka_unit_test(test_missing_config_is_loud),
		cmocka_unit_test(test_config_errors_in_the_log_file),
		cmocka_unit_test(test_many_processes_lose_no_count),
		cmocka_unit_test(test_hostile_rhost_and_user),
		cmocka_unit_test(test_distributed_spray_hot_password),
		cmocka_unit_test(test_wave_tarpits_new_places),
		cmocka_unit_test(test_parallel_burst_through_pam),
		cmocka_unit_test(test_ipv6_rotation_in_48_banned_as_48),
		cmocka_unit_test(test_stranger_in_owners_48_not_familiar),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (rc == 0)
		tu_rmrf(workdir);
	return rc;
}
