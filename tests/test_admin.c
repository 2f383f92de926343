/*
 * test_admin.c - authguard-admin against a store made by the real module
 * through real libpam (tools/pamdrive.h, pam_matrix): every command, and that
 * its changes take effect at once in a process that already has the store
 * open (this one: the module stays loaded with its store handle).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_appl.h>

#include "pamdrive.h"
#include "record.h"
#include "store.h"
#include "sync.h"
#include "testutil.h"
#include "pamtest.h"

static char out[400], err[400];
static const char *admin;

/* Run authguard-admin -c CONF ARGS... (without the pam_wrapper preload),
 * stdout to @out, stderr to @err. Returns its exit status. */
static int run(const char *a0, ...)
{
	char conf[400];
	va_list ap;

	snprintf(conf, sizeof(conf), "%s/authguard.conf", workdir);
	va_start(ap, a0);
	int rc = tu_run_tool(admin, conf, out, err, a0, ap);
	va_end(ap);
	assert_true(rc >= 0);
	return rc;
}


static void test_unban_lets_the_address_through(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 3\nuser_lock_after = 0\n");
	fail_n(3, "alice", "203.0.113.5");
	assert_int_equal(login("alice", "alice-pw", "203.0.113.5"), PAM_AUTH_ERR);
	assert_int_equal(run("list", "bans", NULL), 0);
	assert_int_equal(tu_has(out, "203.0.113.5 "), 1);
	assert_int_equal(run("list", "bans", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"target\": \"203.0.113.5\", \"kind\": \"host\", \"banned\": true"), 1);
	assert_int_equal(run("show", "203.0.113.5", NULL), 0);
	assert_int_equal(tu_has(out, "BANNED (failures)"), 1);
	assert_int_equal(run("unban", "203.0.113.5", NULL), 0);
	assert_int_equal(login("alice", "alice-pw", "203.0.113.5"), PAM_SUCCESS);
	/* nothing left to unban */
	assert_int_equal(run("unban", "203.0.113.5", NULL), 2);
	assert_int_equal(tu_has(err, "not banned"), 1);
	assert_int_equal(run("list", "bans", NULL), 0);
	assert_int_equal(tu_has(out, "no active bans"), 1);
}

static void test_unlock_lets_the_user_in(void **state)
{
	(void)state;
	use_conf("user_lock_after = 3\nip_ban_after = 100\n");
	fail_n(1, "bob", "100.64.1.1");
	fail_n(1, "bob", "100.64.2.1");
	fail_n(1, "bob", "100.64.3.1");
	/* bob, from a place he never logged in from, is refused ... */
	assert_int_equal(login("bob", "bob-pw", "198.51.100.9"), PAM_AUTH_ERR);
	assert_int_equal(run("list", "locks", NULL), 0);
	assert_int_equal(tu_has(out, "\"bob\""), 1);
	assert_int_equal(run("show", "bob", NULL), 0);
	assert_int_equal(tu_has(out, "LOCKED"), 1);
	assert_int_equal(run("show", "--user", "bob", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"locked\": true"), 1);
	/* ... until the admin unlocks him */
	assert_int_equal(run("unlock", "bob", NULL), 0);
	assert_int_equal(login("bob", "bob-pw", "198.51.100.9"), PAM_SUCCESS);
	assert_int_equal(run("unlock", "bob", NULL), 2);
	assert_int_equal(run("unlock", "nosuchuser", NULL), 2);
	assert_int_equal(run("show", "nosuchuser", NULL), 2);
	assert_int_equal(tu_has(err, "no user \"nosuchuser\""), 1);
	/* the familiar source now shows in his record */
	assert_int_equal(run("show", "bob", NULL), 0);
	assert_int_equal(tu_has(out, "198.51.100.9"), 1);
	assert_int_equal(run("list", "users", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"user\": \"bob\""), 1);
}

static void test_runtime_lists_take_effect_at_once(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 2\n");
	/* this process opens the store now and keeps it open */
	assert_int_equal(login("alice", "alice-pw", "192.0.2.50"), PAM_SUCCESS);
	assert_int_equal(run("allow", "add", "192.0.2.0/24", NULL), 0);
	fail_n(5, "alice", "192.0.2.50");
	assert_int_equal(login("alice", "alice-pw", "192.0.2.50"), PAM_SUCCESS);
	const char *n[] = { "reason=trusted", "rhost=192.0.2.50", NULL };
	assert_int_equal(tu_count_lines(logpath, n), 6);
	assert_int_equal(run("allow", "list", NULL), 0);
	assert_int_equal(tu_has(out, "192.0.2.0/24"), 1);
	assert_int_equal(run("allow", "del", "192.0.2.0/24", NULL), 0);
	assert_int_equal(run("allow", "del", "192.0.2.0/24", NULL), 2);
	fail_n(2, "alice", "192.0.2.50");
	assert_int_equal(login("alice", "alice-pw", "192.0.2.50"), PAM_AUTH_ERR);
	/* deny, and a proxy that is never banned */
	assert_int_equal(run("deny", "add", "192.0.2.60", NULL), 0);
	assert_int_equal(login("alice", "alice-pw", "192.0.2.60"), PAM_AUTH_ERR);
	assert_int_equal(run("proxy", "add", "192.0.2.70", "--for", "1h", NULL), 0);
	fail_n(6, "carol", "192.0.2.70");
	assert_int_equal(login("bob", "bob-pw", "192.0.2.70"), PAM_SUCCESS);
	assert_int_equal(run("proxy", "list", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"cidr\": \"192.0.2.70\""), 1);
}

static void test_ban_and_export(void **state)
{
	char nft[500];

	(void)state;
	use_conf("");
	assert_int_equal(login("alice", "alice-pw", "198.51.100.77"), PAM_SUCCESS);
	assert_int_equal(run("ban", "198.51.100.0/24", "--for", "10m", NULL), 0);
	assert_int_equal(login("alice", "alice-pw", "198.51.100.77"), PAM_AUTH_ERR);
	assert_int_equal(run("ban", "2001:db8:bad::/48", NULL), 0);
	assert_int_equal(login("alice", "alice-pw", "2001:db8:bad:1::2"), PAM_AUTH_ERR);
	assert_int_equal(run("list", "bans", NULL), 0);
	assert_int_equal(tu_has(out, "198.51.100.0/24"), 1);
	assert_int_equal(run("export", "plain", NULL), 0);
	assert_int_equal(tu_has(out, "198.51.100.0/24"), 1);
	assert_int_equal(tu_has(out, "2001:db8:bad::/48"), 1);
	assert_int_equal(run("export", "ipset", NULL), 0);
	assert_int_equal(tu_has(out, "create authguard4 hash:net family inet -exist"), 1);
	assert_int_equal(tu_has(out, "add authguard6 2001:db8:bad::/48 -exist"), 1);
	assert_int_equal(run("export", "nft", "--name", "mail_guard", NULL), 0);
	assert_int_equal(tu_has(out, "add element inet mail_guard mail_guard4 { 198.51.100.0/24 }"), 1);
	assert_int_equal(tu_has(out, "add rule inet mail_guard input ip saddr @mail_guard4 drop"), 1);
	snprintf(nft, sizeof(nft), "nft -c -f '%s' >/dev/null 2>&1", out);
	if (access("/usr/sbin/nft", X_OK) == 0) {
		unsetenv("LD_PRELOAD");
		assert_int_equal(system(nft), 0);
	} else {
		printf("# nftables not installed: nft -c check of the export skipped\n");
	}
	assert_int_equal(run("export", "nft", "--name", "bad name", NULL), 1);
	assert_int_equal(run("unban", "198.51.100.0/24", NULL), 0);
	assert_int_equal(login("alice", "alice-pw", "198.51.100.77"), PAM_SUCCESS);
}

static void test_forget_status_stats_gc(void **state)
{
	(void)state;
	use_conf("");
	fail_n(2, "alice", "203.0.113.40");
	assert_int_equal(login("alice", "alice-pw", "203.0.113.41"), PAM_SUCCESS);
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "schema:   2\n"), 1);
	assert_int_equal(tu_has(out, "sources:  2 addresses, 1 prefixes tracked"), 1);
	assert_int_equal(tu_has(out, "evicted:  none (the store has not been full)"), 1);
	/* the slots held now, the peak apart and so named */
	const char *rd[] = { "readers:  ", " slots held now (", " in a read); most ever at once ", NULL };
	assert_int_equal(tu_count_lines(out, rd), 1);
	assert_int_equal(run("stats", NULL), 0);
	assert_int_equal(tu_has(out, "attempts_total               3"), 1);
	assert_int_equal(tu_has(out, "failures_total               2"), 1);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "# TYPE authguard_attempts_total counter"), 1);
	assert_int_equal(tu_has(out, "authguard_successes_total 1"), 1);
	assert_int_equal(tu_has(out, "authguard_evicted_total 0"), 1);
	assert_int_equal(tu_has(out, "authguard_last_eviction_timestamp_seconds 0"), 1);
	/* --json where there is no JSON output: an error, not a table */
	assert_int_equal(run("status", "--json", NULL), 1);
	assert_int_equal(tu_has(err, "status has no --json output"), 1);
	assert_int_equal(run("stats", "--json", NULL), 1);
	assert_int_equal(run("list", "sources", "--json", NULL), 0);
	assert_int_equal(run("list", "sources", NULL), 0);
	assert_int_equal(tu_has(out, "203.0.113.40 "), 1);
	assert_int_equal(run("forget", "203.0.113.40", NULL), 0);
	assert_int_equal(run("show", "203.0.113.40", NULL), 0);
	assert_int_equal(tu_has(out, "not tracked"), 1);
	assert_int_equal(run("forget", "--user", "alice", NULL), 0);
	assert_int_equal(run("show", "alice", NULL), 2);
	assert_int_equal(run("forget", "alice", NULL), 2);
	assert_int_equal(run("gc", NULL), 0);
	assert_int_equal(tu_has(out, "dropped "), 1);
}

/* status and stats show hot passwords and the attack-wave detector: a
 * learning store, one password sprayed at ten users (hot), and a wave
 * written into the store as the guard keeps it. */
static void test_status_spray_and_wave(void **state)
{
	(void)state;
	use_conf("");
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "spray:    0 hot passwords now"), 1);
	assert_int_equal(tu_has(out, "wave:     learning"), 1);
	for (int i = 0; i < 12; i++) { /* 10 make it hot; 2 more for a tag collision */
		char user[16], addr[32];
		snprintf(user, sizeof(user), "u%02d", i);
		snprintf(addr, sizeof(addr), "100.70.%d.1", i);
		assert_int_equal(pd_login_service(PD_SERVICE_AUTHTOK, user, "Winter2026", addr, NULL),
				 PAM_AUTH_ERR);
	}
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "spray:    1 hot passwords now (1 wrong-password records"), 1);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_hot_passwords 1"), 1);
	assert_int_equal(tu_has(out, "authguard_wave_active 0"), 1);

	struct ag_wave_rec wv = { .version = AG_REC_VERSION, .active = 1, .waves = 2 };
	int64_t now = ag_now_ms();
	wv.first_seen = now - 2 * 86400000LL;
	wv.fast.v = 100;
	wv.fast.ts = now;
	wv.since = now - 60000;
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
			rc = ag_txn_put(t, AG_DB_MAIN, AG_WAVE_KEY, AG_WAVE_KEY_LEN, &wv, sizeof(wv));
		if (rc == 0)
			rc = ag_txn_commit(t);
		_exit(rc == 0 ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "wave:     ON since "), 1);
	assert_int_equal(tu_has(out, "2 waves so far"), 1);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_wave_active 1"), 1);
	assert_int_equal(tu_has(out, "authguard_waves_total 2"), 1);
}

/* Writes @st as authguard-sync does (in a child: the tool's store stays
 * the only one this process opens). */
static void put_sync_status(const struct ag_sync_status *st)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ag_store *s;
		int rc = ag_store_get(dbdir, &s);
		if (rc == 0)
			rc = ag_sync_status_put(s, st);
		_exit(rc == 0 ? 0 : 1);
	}
	int w;
	assert_int_equal(waitpid(pid, &w, 0), pid);
	assert_true(WIFEXITED(w) && WEXITSTATUS(w) == 0);
}

/* stats shows the fleet's state for an alert: not running (never ran,
 * or its state gone stale), connected, each peer's lag with its host id
 * escaped as a label value. Outside a fleet: no sync figures. */
static void test_stats_sync_metrics(void **state)
{
	(void)state;
	use_conf("");
	fail_n(1, "alice", "203.0.113.60");
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_sync_"), 0);

	use_conf("sync_redis = 127.0.0.1:1\n");
	fail_n(1, "alice", "203.0.113.60");
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_sync_running 0"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_connected 0"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_outbox_depth 1"), 1);

	struct ag_sync_status st = { .version = AG_SYNC_STATUS_VERSION, .connected = 1, .npeers = 2 };
	int64_t now = ag_now_ms();
	st.updated_ms = st.since_ms = now;
	st.pushed = 7;
	snprintf(st.host, sizeof(st.host), "h1");
	snprintf(st.peers[0].host, sizeof(st.peers[0].host), "h2");
	st.peers[0].lag_ms = 1500;
	st.peers[0].last_ms = now;
	snprintf(st.peers[1].host, sizeof(st.peers[1].host), "odd\"h\\3\n");
	st.peers[1].gaps = 4;
	put_sync_status(&st);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_sync_running 1"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_connected 1"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_pushed_total 7"), 1);
	assert_int_equal(tu_has(out, "# TYPE authguard_sync_peer_lag_seconds gauge"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_peer_lag_seconds{peer=\"h2\"} 1.5"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_peer_missed_total{peer=\"odd\\\"h\\\\3\\n\"} 4"), 1);

	st.connected = 0;
	put_sync_status(&st);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_sync_running 1"), 1);
	assert_int_equal(tu_has(out, "authguard_sync_connected 0"), 1);
	st.connected = 1;
	st.updated_ms = now - 60000; /* the daemon stopped a minute ago */
	put_sync_status(&st);
	assert_int_equal(run("stats", NULL), 0);
	assert_int_equal(tu_has(out, "sync_running                 0"), 1);
	assert_int_equal(tu_has(out, "sync_connected               0"), 1);
}

/* With user_fold, pairs are filed under the names as given ("Alice",
 * "ALICE"), the user under "alice": show and forget --user find them all. */
static void test_user_fold_pairs_of_every_spelling(void **state)
{
	(void)state;
	use_conf("user_fold = yes\n");
	fail_n(1, "Alice", "203.0.113.50");
	fail_n(1, " ALICE", "203.0.113.51");
	assert_int_equal(login("alice", "alice-pw", "203.0.113.52"), PAM_SUCCESS);
	fail_n(1, "bob", "203.0.113.50");
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "users:    2 tracked, 4 user x source pairs"), 1);
	assert_int_equal(run("show", "--user", "ALICE", NULL), 0);
	assert_int_equal(tu_has(out, "user \"alice\""), 1);
	assert_int_equal(tu_has(out, "203.0.113."), 3);
	assert_int_equal(tu_has(out, "\"Alice\""), 1);
	assert_int_equal(tu_has(out, "\"\\x20ALICE\""), 1);
	const char *home[] = { "203.0.113.52 ", " yes ", "\"alice\"", NULL };
	assert_int_equal(tu_count_lines(out, home), 1);
	assert_int_equal(run("show", "--user", "alice", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"name\": \"Alice\"}"), 1);
	/* the user and its three pairs; bob's pair stays */
	assert_int_equal(run("forget", "--user", "Alice", NULL), 0);
	assert_int_equal(tu_has(out, "forgot Alice (4 records)"), 1);
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "users:    1 tracked, 1 user x source pairs"), 1);
	assert_int_equal(run("show", "alice", NULL), 2);
}

static void test_config_commands(void **state)
{
	char path[400];
	FILE *f;

	(void)state;
	use_conf("ip_ban_after = 7\ntrusted = 10.1.0.0/16\n");
	assert_int_equal(run("check-config", NULL), 0);
	assert_int_equal(run("dump-config", NULL), 0);
	assert_int_equal(tu_has(out, "ip_ban_after = 7"), 1);
	assert_int_equal(tu_has(out, "trusted = 10.1.0.0/16"), 1);
	assert_int_equal(tu_has(out, "ipv6_prefix = 64"), 1);
	snprintf(path, sizeof(path), "%s/authguard.conf", workdir);
	f = fopen(path, "a");
	fprintf(f, "tarpit_slots = many\nno_such_key = 1\n");
	fclose(f);
	assert_int_equal(run("check-config", NULL), 4);
	assert_int_equal(tu_has(err, "authguard.conf:8: tarpit_slots must be a whole number"), 1);
	assert_int_equal(tu_has(err, "authguard.conf:9: unknown key 'no_such_key'"), 1);
	/* other commands still work, with a warning */
	assert_int_equal(run("dump-config", NULL), 0);
	assert_int_equal(tu_has(err, "has errors"), 1);
	assert_int_equal(tu_has(out, "tarpit_slots = 8"), 1);
}

static void test_bad_arguments(void **state)
{
	char missing[400];
	snprintf(missing, sizeof(missing), "%s/no-such.conf", workdir);
	const char *argv[] = { admin, "-c", missing, "status", NULL };
	(void)state;
	use_conf("");
	/* a config named with -c that cannot be read stops every command */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 1);
		dup2(fd, 2);
		unsetenv("LD_PRELOAD");
		execv(admin, (char *const *)argv);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 4);
	assert_int_equal(run(NULL), 1);
	/* --help works like -h: the usage on standard output, status 0 */
	assert_int_equal(run("--help", NULL), 0);
	assert_int_equal(tu_has(out, "usage: authguard-admin"), 1);
	assert_int_equal(run("-h", NULL), 0);
	assert_int_equal(tu_has(out, "usage: authguard-admin"), 1);
	assert_int_equal(run("frobnicate", NULL), 1);
	assert_int_equal(tu_has(err, "unknown command 'frobnicate'"), 1);
	assert_int_equal(run("unban", "not-an-address", NULL), 1);
	assert_int_equal(tu_has(err, "not an address"), 1);
	assert_int_equal(run("unban", "192.0.2.1/24", NULL), 1);
	assert_int_equal(run("ban", "192.0.2.1", "--for", "5x", NULL), 1);
	assert_int_equal(tu_has(err, "bad duration"), 1);
	assert_int_equal(run("list", "everything", NULL), 1);
	assert_int_equal(run("allow", "add", NULL), 1);
	assert_int_equal(run("export", "pf", NULL), 1);
	assert_int_equal(run("-d", "relative/db", "status", NULL), 1);
	/* a store that cannot be made names the system call and the path */
	assert_int_equal(run("-d", "/proc/authguard-cannot-exist/db", "ban", "192.0.2.1", NULL), 3);
	assert_int_equal(tu_has(err, "mkdir /proc/authguard-cannot-exist/db: No such file or directory"), 1);
}

/* Before the first login there is no store: reading commands answer for
 * an empty one (a firewall export timer works on a new server) and make
 * nothing; writing commands make it as the module would. */
static void test_no_store_yet(void **state)
{
	const char *db = dbdir;
	char path[500];
	struct stat st;
	mode_t mask = umask(0);

	(void)state;
	umask(mask);
	use_conf("deny = 198.51.100.0/24\n");
	assert_int_equal(run("export", "nft", NULL), 0);
	assert_int_equal(tu_has(err, "no store yet at"), 1);
	/* the config's deny list still goes out, and nothing else */
	assert_int_equal(tu_has(out, "add element inet authguard authguard4 { 198.51.100.0/24 }"), 1);
	assert_int_equal(tu_has(out, "add element inet authguard authguard6"), 0);
	assert_int_equal(run("export", "plain", NULL), 0);
	assert_int_equal(run("list", "bans", NULL), 0);
	assert_int_equal(tu_has(out, "no active bans"), 1);
	assert_int_equal(run("list", "users", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "[]"), 1);
	assert_int_equal(run("stats", "--prometheus", NULL), 0);
	assert_int_equal(tu_has(out, "authguard_attempts_total 0"), 1);
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "no store yet"), 1);
	assert_int_equal(run("deny", "list", NULL), 0);
	assert_int_equal(run("gc", NULL), 0);
	assert_int_equal(tu_has(out, "dropped 0 expired records"), 1);
	assert_int_equal(run("flush", NULL), 0); /* nothing to flush: none is made for it */
	assert_int_equal(run("stats", NULL), 0);
	assert_int_equal(tu_has(out, "refused_unattributed_total"), 1);
	/* nothing to undo: not found, and still no store */
	assert_int_equal(run("unban", "192.0.2.1", NULL), 2);
	assert_int_equal(run("unlock", "alice", NULL), 2);
	assert_int_equal(run("forget", "alice", NULL), 2);
	assert_int_equal(run("show", "alice", NULL), 2);
	/* the config's lists still show */
	assert_int_equal(run("show", "198.51.100.7", NULL), 0);
	assert_int_equal(tu_has(out, "config:deny"), 1);
	assert_int_equal(access(db, F_OK), -1);
	snprintf(path, sizeof(path), "%s/data.mdb", db);
	/* a ban makes the store, as the module would: 0700, files within */
	assert_int_equal(run("ban", "192.0.2.44", NULL), 0);
	assert_int_equal(tu_has(err, "created a new store at"), 1);
	assert_int_equal(stat(db, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700 & ~mask);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660 & ~mask);
	assert_int_equal(run("export", "plain", NULL), 0);
	assert_int_equal(tu_has(out, "192.0.2.44"), 1);
	assert_int_equal(tu_has(err, "no store yet"), 0);
	tu_rmrf(db);
	assert_int_equal(run("allow", "add", "192.0.2.0/24", NULL), 0);
	assert_int_equal(run("allow", "list", NULL), 0);
	assert_int_equal(tu_has(out, "192.0.2.0/24"), 1);
	tu_rmrf(db);
}

/* "unsafe path or ownership" says which rule and which path. */
static void test_unsafe_store_named(void **state)
{
	const char *dir = dbdir;
	char conf[600];

	(void)state;
	use_conf("");
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(run("status", NULL), 3);
	assert_int_equal(tu_has(err, "unsafe path or ownership"), 1);
	snprintf(conf, sizeof(conf), "%s: db_dir is writable by others", dir);
	assert_int_equal(tu_has(err, conf), 1);
	tu_rmrf(dir);
}

/* Refusals are counted without an LMDB write (the counter file beside the
 * store): show, list and stats still show them. And the flush that keeps
 * a login from waiting for the disk: sync once, or as a service until
 * SIGTERM. */
static void test_refusals_shown_and_sync(void **state)
{
	char want[64];

	(void)state;
	use_conf("ip_ban_after = 3\nuser_lock_after = 0\n");
	fail_n(3, "carl", "203.0.113.60");
	for (int i = 0; i < 4; i++)
		assert_int_equal(login("carl", "carl-pw", "203.0.113.60"), PAM_AUTH_ERR);
	assert_int_equal(run("show", "203.0.113.60", NULL), 0);
	assert_int_equal(tu_has(out, "  refused:    4"), 1);
	assert_int_equal(run("list", "sources", "--json", NULL), 0);
	assert_int_equal(tu_has(out, "\"n_refused\": 4"), 1);
	assert_int_equal(run("stats", NULL), 0);
	snprintf(want, sizeof(want), "%-28s %d", "refused_total", 4);
	assert_int_equal(tu_has(out, want), 1);
	assert_int_equal(run("status", NULL), 0);
	assert_int_equal(tu_has(out, "/counters.ag (refusals not in any record's count: 0)"), 1);
	assert_int_equal(run("flush", NULL), 0);
	assert_int_equal(run("flush", "--every", "2s", NULL), 1);
	assert_int_equal(run("flush", "now", NULL), 1);

	char conf[400];
	snprintf(conf, sizeof(conf), "%s/authguard.conf", workdir);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open("/dev/null", O_WRONLY);
		if (o < 0 || dup2(o, 1) < 0)
			_exit(126);
		unsetenv("LD_PRELOAD");
		unsetenv("PAM_WRAPPER");
		execl(admin, admin, "-c", conf, "flush", "--every", "50ms", (char *)NULL);
		_exit(127);
	}
	/* logins go on while it runs */
	assert_int_equal(login("alice", "alice-pw", "198.51.100.61"), PAM_SUCCESS);
	/* SIGTERM once it waits for it (blocked: taken by sigtimedwait), at
	 * most 10 s from now */
	bool waiting = false;
	for (int i = 0; i < 1000 && !waiting; i++) {
		char path[64], line[128];
		unsigned long long mask = 0;
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
		FILE *fs = fopen(path, "r");
		while (fs != NULL && fgets(line, sizeof(line), fs) != NULL)
			if (sscanf(line, "SigBlk: %llx", &mask) == 1)
				waiting = (mask >> (SIGTERM - 1)) & 1;
		if (fs != NULL)
			fclose(fs);
		if (!waiting)
			usleep(10000);
	}
	assert_true(waiting);
	assert_int_equal(kill(pid, SIGTERM), 0);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static int out_is(const char *want)
{
	char buf[400] = "";
	FILE *f = fopen(out, "r");

	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (strcmp(buf, want) != 0)
		print_error("stdout '%s', want '%s'\n", buf, want);
	return strcmp(buf, want) == 0;
}

#define ATT(rhost) "--service", "imap", "--user", "alice", "--rhost", rhost

/* check and record: the same guard as the module's, for scripts and
 * servers with a hook of their own. A ban made through record refuses
 * through PAM, and one made through PAM refuses through check. */
static void test_check_and_record(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 3\nuser_lock_after = 0\ntarpit_free = 1\n"
		 "tarpit_base = 100ms\ntarpit_max = 1s\n");
	assert_int_equal(run("check", ATT("203.0.113.20"), NULL), 0);
	assert_true(out_is("allow\n"));
	assert_int_equal(run("record", ATT("203.0.113.20"), "--result", "failure", NULL), 0);
	assert_true(out_is(""));
	/* past tarpit_free: the caller is told to wait (nothing slept here) */
	assert_int_equal(run("check", ATT("203.0.113.20"), NULL), 5);
	assert_true(out_is("delay 100\n"));
	assert_int_equal(run("record", ATT("203.0.113.20"), "--result", "failure", "--delay", "100",
			     NULL), 0);
	assert_int_equal(tu_has(logpath, "rhost=203.0.113.20 result=fail action=tarpit reason=score delay_ms=100 "), 1);
	assert_int_equal(run("record", ATT("203.0.113.20"), "--result", "failure", NULL), 0);
	assert_int_equal(tu_has(logpath, "rhost=203.0.113.20 result=fail action=allow delay_ms=0 src_score=3.0 user_score=3.0 user_state=ok familiar=no event=ban "), 1);
	/* banned: refused by check, and through PAM with the right password */
	assert_int_equal(run("check", ATT("203.0.113.20"), NULL), 6);
	assert_true(out_is("refuse banned\n"));
	assert_int_equal(tu_has(logpath, "rhost=203.0.113.20 result=unchecked action=refuse reason=banned"), 1);
	assert_int_equal(login("alice", "alice-pw", "203.0.113.20"), PAM_AUTH_ERR);
	/* a ban made through PAM refuses through check */
	fail_n(3, "bob", "203.0.113.21");
	assert_int_equal(run("check", "--service", "x", "--user", "carol", "--rhost", "203.0.113.21",
			     NULL), 6);
	assert_true(out_is("refuse banned\n"));
	/* a recorded success makes the place familiar */
	assert_int_equal(run("record", ATT("198.51.100.30"), "--result", "success", NULL), 0);
	assert_int_equal(tu_has(logpath, "rhost=198.51.100.30 result=success action=allow"), 1);
	assert_int_equal(run("show", "--user", "alice", NULL), 0);
	assert_int_equal(tu_has(out, "198.51.100.30"), 1);
	/* no user, no address: the source or user rules alone */
	assert_int_equal(run("check", "--service", "x", "--user", "", "--rhost", "", NULL), 0);
	assert_true(out_is("allow\n"));
	/* usage */
	assert_int_equal(run("check", "--user", "alice", NULL), 1);
	assert_int_equal(run("check", ATT("192.0.2.1"), "--result", "failure", NULL), 1);
	assert_int_equal(run("record", ATT("192.0.2.1"), NULL), 1);
	assert_int_equal(run("record", ATT("192.0.2.1"), "--result", "maybe", NULL), 1);
	assert_int_equal(run("record", ATT("192.0.2.1"), "--result", "failure", "--delay", "x", NULL), 1);
	assert_int_equal(run("check", ATT("192.0.2.1"), "--service", "y", NULL), 1);
	assert_int_equal(run("check", "--service", NULL), 1);
	assert_int_equal(run("-d", "/proc/authguard-cannot-exist/db", "record", ATT("192.0.2.1"),
			     "--result", "failure", NULL), 3);
}

int main(int argc, char **argv)
{
	const char *wd = getenv("AG_TEST_DIR");
	struct pd_paths p = { getenv("AG_TEST_MODULE"), getenv("AG_TEST_MATRIX"),
			      getenv("AG_TEST_WRAPPER"), NULL };

	(void)argc;
	admin = getenv("AG_TEST_ADMIN");
	if (p.module == NULL || p.matrix == NULL || p.wrapper == NULL || admin == NULL) {
		printf("1..0 # SKIP AG_TEST_* not set (run via make check)\n");
		return 1;
	}
	if (wd == NULL) {
		tu_mkdtemp(workdir, sizeof(workdir), "admin");
		setenv("AG_TEST_DIR", workdir, 1);
	} else {
		snprintf(workdir, sizeof(workdir), "%s", wd);
	}
	p.workdir = workdir;
	if (pd_ensure_wrapper(&p, argv) != 0)
		return 1;
	snprintf(out, sizeof(out), "%s/out", workdir);
	snprintf(err, sizeof(err), "%s/err", workdir);
	write_passdb(0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unban_lets_the_address_through),
		cmocka_unit_test(test_unlock_lets_the_user_in),
		cmocka_unit_test(test_runtime_lists_take_effect_at_once),
		cmocka_unit_test(test_ban_and_export),
		cmocka_unit_test(test_forget_status_stats_gc),
		cmocka_unit_test(test_status_spray_and_wave),
		cmocka_unit_test(test_stats_sync_metrics),
		cmocka_unit_test(test_user_fold_pairs_of_every_spelling),
		cmocka_unit_test(test_config_commands),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_no_store_yet),
		cmocka_unit_test(test_unsafe_store_named),
		cmocka_unit_test(test_refusals_shown_and_sync),
		cmocka_unit_test(test_check_and_record),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (rc == 0)
		tu_rmrf(workdir);
	return rc;
}
