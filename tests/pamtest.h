/*
 * pamtest.h - what the tests that drive the real module through libpam
 * (test_pam, test_admin) share: one scenario per test (a fresh store, log
 * and configuration in the work directory), logins through pamdrive, and
 * counting the log's lines. Include after cmocka.h, pamdrive.h and
 * testutil.h; the including file sets workdir up.
 */
#ifndef PAMTEST_H
#define PAMTEST_H

static char workdir[256], logpath[400], dbdir[400];
static int scenario;

/* A fresh store and log for the next scenario, with a fast tarpit unless
 * @extra sets one; @extra lines are appended to the configuration. */
static inline void use_conf(const char *extra)
{
	char path[400];
	FILE *f;

	scenario++;
	snprintf(path, sizeof(path), "%s/authguard.conf", workdir);
	snprintf(logpath, sizeof(logpath), "%s/log-%d", workdir, scenario);
	snprintf(dbdir, sizeof(dbdir), "%s/db-%d", workdir, scenario);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "db_dir = %s\nlog = file:%s\n%s\n", dbdir, logpath, extra);
	if (strstr(extra, "tarpit_base") == NULL)
		fprintf(f, "tarpit_base = 1ms\ntarpit_max = 4ms\n");
	fclose(f);
}

static inline int login(const char *user, const char *pw, const char *rhost)
{
	return pd_login(user, pw, rhost, NULL);
}

/* Log lines of the current scenario that contain both @a and @b. */
static inline int lines(const char *a, const char *b)
{
	const char *n[] = { a, b, NULL };
	return tu_count_lines(logpath, n);
}

/* @n wrong passwords for @user from @rhost, each one refused. */
static inline void fail_n(int n, const char *user, const char *rhost)
{
	for (int i = 0; i < n; i++) {
		char pw[32];
		snprintf(pw, sizeof(pw), "wrong-%d", i);
		assert_int_equal(login(user, pw, rhost), PAM_AUTH_ERR);
	}
}

/* pam_matrix's password file: alice, bob and carol, and @extra users
 * u00.. with passwords pw00.. */
static inline void write_passdb(int extra)
{
	char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/passdb", workdir);
	f = fopen(path, "w");
	if (f == NULL)
		abort();
	fprintf(f, "alice:alice-pw:%1$s\nbob:bob-pw:%1$s\ncarol:carol-pw:%1$s\n", PD_SERVICE);
	for (int i = 0; i < extra; i++)
		fprintf(f, "u%02d:pw%02d:%s\n", i, i, PD_SERVICE);
	fclose(f);
}

#endif
