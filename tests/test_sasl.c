/*
 * test_sasl.c - the authguard SASL plugin inside real libsasl2: a real
 * server (our private plugin directory: authguard.so and the sasldb
 * auxprop) talks to a real libsasl2 client (the system's mechanisms);
 * users live in a real sasldb made with saslpasswd2. No mocks.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>

#include <sasl/sasl.h>
#include <sasl/saslplug.h>
#include <security/pam_appl.h>

#include "ag.h"
#include "pamdrive.h"
#include "testutil.h"

#define REALM "test.example"

typedef int (*cb_fn)(void); /* the type of sasl_callback_t.proc */

static char workdir[256], plugdir[400], dbpath[400], confpath[400], logpath[400];
static const char *sysdir = AG_SASL_SYSTEM_DIR;
static const char *canon_plugin = "authguard";
static int scenario;

/* ---- libsasl2 callbacks ------------------------------------------------------ */

static int srv_getpath(void *ctx, const char **path)
{
	(void)ctx;
	*path = plugdir;
	return SASL_OK;
}

static int cli_getpath(void *ctx, const char **path)
{
	(void)ctx;
	*path = sysdir;
	return SASL_OK;
}

static int srv_getopt(void *ctx, const char *plugin, const char *option, const char **result,
		      unsigned *len)
{
	(void)ctx;
	(void)plugin;
	const char *v = NULL;
	if (strcmp(option, "pwcheck_method") == 0)
		v = "auxprop";
	else if (strcmp(option, "auxprop_plugin") == 0)
		v = "sasldb";
	else if (strcmp(option, "sasldb_path") == 0)
		v = dbpath;
	else if (strcmp(option, "authguard_conf") == 0)
		v = confpath;
	else if (strcmp(option, "canon_user_plugin") == 0)
		v = canon_plugin;
	if (v == NULL)
		return SASL_FAIL;
	*result = v;
	if (len != NULL)
		*len = (unsigned)strlen(v);
	return SASL_OK;
}

/* What went to syslog(3) and to the application's SASL log callback, for
 * the tests of where lines go. The test program's syslog() takes the
 * place of libc's for the plugin (linked --export-dynamic; the fortified
 * entry point too, for a plugin built with _FORTIFY_SOURCE). */
#define CAUGHT_MAX 64
struct caught {
	pthread_mutex_t mu;
	int n;
	int level[CAUGHT_MAX];
	char msg[CAUGHT_MAX][1100];
};
static struct caught sys_lines = { PTHREAD_MUTEX_INITIALIZER, 0, { 0 }, { "" } };
static struct caught app_lines = { PTHREAD_MUTEX_INITIALIZER, 0, { 0 }, { "" } };

static void catch_line(struct caught *c, int level, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
static void catch_line(struct caught *c, int level, const char *fmt, va_list ap)
{
	pthread_mutex_lock(&c->mu);
	if (c->n < CAUGHT_MAX) {
		c->level[c->n] = level;
		vsnprintf(c->msg[c->n], sizeof(c->msg[0]), fmt, ap);
		c->n++;
	}
	pthread_mutex_unlock(&c->mu);
}

static void caught_reset(void)
{
	pthread_mutex_lock(&sys_lines.mu);
	sys_lines.n = 0;
	pthread_mutex_unlock(&sys_lines.mu);
	pthread_mutex_lock(&app_lines.mu);
	app_lines.n = 0;
	pthread_mutex_unlock(&app_lines.mu);
}

/* Lines caught with exactly @level that contain @a and @b (NULL: any). */
static int caught_count(struct caught *c, int level, const char *a, const char *b)
{
	int n = 0;
	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < c->n; i++)
		if (c->level[i] == level && (a == NULL || strstr(c->msg[i], a) != NULL) &&
		    (b == NULL || strstr(c->msg[i], b) != NULL))
			n++;
	pthread_mutex_unlock(&c->mu);
	return n;
}

__attribute__((visibility("default"))) void syslog(int pri, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void syslog(int pri, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	catch_line(&sys_lines, pri, fmt, ap);
	va_end(ap);
}

__attribute__((visibility("default"))) void __syslog_chk(int pri, int flag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
	va_list ap;
	(void)flag;
	va_start(ap, fmt);
	catch_line(&sys_lines, pri, fmt, ap);
	va_end(ap);
}

static int srv_log(void *ctx, int level, const char *msg)
{
	(void)ctx;
	pthread_mutex_lock(&app_lines.mu);
	if (app_lines.n < CAUGHT_MAX) {
		app_lines.level[app_lines.n] = level;
		snprintf(app_lines.msg[app_lines.n], sizeof(app_lines.msg[0]), "%s", msg);
		app_lines.n++;
	}
	pthread_mutex_unlock(&app_lines.mu);
	return SASL_OK;
}

/* Proxy policy: only "boss" may act as someone else. */
static int srv_authorize(sasl_conn_t *conn, void *ctx, const char *requested, unsigned rlen,
			 const char *auth, unsigned alen, const char *realm, unsigned urlen,
			 struct propctx *propctx)
{
	(void)conn; (void)ctx; (void)realm; (void)urlen; (void)propctx;
	if (rlen == alen && memcmp(requested, auth, alen) == 0)
		return SASL_OK;
	return alen >= 4 && strncmp(auth, "boss", 4) == 0 ? SASL_OK : SASL_NOAUTHZ;
}

/* An application's canon_user callback, as Cyrus imapd's "magic plus":
 * "alice+box" is alice. libsasl2 runs it before any canonuser plugin, so
 * the plugin's reading of the client's data cannot know it. */
static int srv_canon(sasl_conn_t *conn, void *ctx, const char *in, unsigned inlen, unsigned flags,
		     const char *realm, char *out, unsigned out_max, unsigned *out_len)
{
	(void)conn; (void)ctx; (void)flags; (void)realm;
	unsigned n = 0;
	bool skip = false;
	for (unsigned i = 0; i < inlen; i++) {
		skip = in[i] == '+' || (skip && in[i] != '@');
		if (!skip && n + 1 < out_max)
			out[n++] = in[i];
	}
	out[n] = '\0';
	*out_len = n;
	return SASL_OK;
}

static sasl_callback_t srv_cbs[] = {
	{ SASL_CB_GETPATH, (cb_fn)(void (*)(void))srv_getpath, NULL },
	{ SASL_CB_GETOPT, (cb_fn)(void (*)(void))srv_getopt, NULL },
	{ SASL_CB_LOG, (cb_fn)(void (*)(void))srv_log, NULL },
	{ SASL_CB_PROXY_POLICY, (cb_fn)(void (*)(void))srv_authorize, NULL },
	{ SASL_CB_CANON_USER, (cb_fn)(void (*)(void))srv_canon, NULL },
	{ SASL_CB_LIST_END, NULL, NULL },
};

static sasl_callback_t cli_global[] = {
	{ SASL_CB_GETPATH, (cb_fn)(void (*)(void))cli_getpath, NULL },
	{ SASL_CB_LIST_END, NULL, NULL },
};

struct who {
	const char *authid, *authzid, *pw;
	sasl_secret_t *secret;
};

static int cli_simple(void *ctx, int id, const char **result, unsigned *len)
{
	struct who *w = ctx;
	*result = id == SASL_CB_USER ? (w->authzid ? w->authzid : "") : w->authid;
	if (len != NULL)
		*len = (unsigned)strlen(*result);
	return SASL_OK;
}

static int cli_pass(sasl_conn_t *conn, void *ctx, int id, sasl_secret_t **psecret)
{
	struct who *w = ctx;
	(void)conn;
	(void)id;
	*psecret = w->secret;
	return SASL_OK;
}

/* One authentication, start to end. Returns the server's result. */
static int auth(const char *mech, const char *user, const char *pw, const char *authz,
		const char *rhost)
{
	struct who w = { user, authz, pw, NULL };
	size_t n = strlen(pw);
	w.secret = calloc(1, sizeof(sasl_secret_t) + n + 1);
	w.secret->len = n;
	memcpy(w.secret->data, pw, n);
	sasl_callback_t cbs[] = {
		{ SASL_CB_AUTHNAME, (cb_fn)(void (*)(void))cli_simple, &w },
		{ SASL_CB_USER, (cb_fn)(void (*)(void))cli_simple, &w },
		{ SASL_CB_PASS, (cb_fn)(void (*)(void))cli_pass, &w },
		{ SASL_CB_LIST_END, NULL, NULL },
	};
	sasl_conn_t *s = NULL, *c = NULL;
	const char *out = NULL, *sout = NULL, *chosen = NULL;
	unsigned outlen = 0, soutlen = 0;
	int r = sasl_server_new("smtp", "mail.test", REALM, "127.0.0.1;25", rhost, NULL, 0, &s);
	assert_int_equal(r, SASL_OK);
	assert_int_equal(sasl_client_new("smtp", "mail.test", NULL, NULL, cbs, 0, &c), SASL_OK);
	int cr = sasl_client_start(c, mech, NULL, &out, &outlen, &chosen);
	assert_true(cr == SASL_OK || cr == SASL_CONTINUE);
	r = sasl_server_start(s, mech, out, outlen, &sout, &soutlen);
	while (r == SASL_CONTINUE) {
		cr = sasl_client_step(c, sout, soutlen, NULL, &out, &outlen);
		if (cr != SASL_OK && cr != SASL_CONTINUE)
			break;
		r = sasl_server_step(s, out, outlen, &sout, &soutlen);
	}
	sasl_dispose(&c);
	sasl_dispose(&s);
	free(w.secret);
	return r;
}

/* One authentication as a hand-made client sends it, the name's bytes
 * as given (libsasl2's own client would trim them): PLAIN's one message,
 * or LOGIN's name and password. Returns the server's result. */
static int raw_auth(const char *mech, const char *user, const char *pw, const char *rhost)
{
	sasl_conn_t *s = NULL;
	const char *out = NULL;
	unsigned outlen = 0;
	char msg[512];
	size_t ul = strlen(user), pl = strlen(pw);
	int r;

	assert_true(ul + pl + 2 <= sizeof(msg));
	assert_int_equal(sasl_server_new("smtp", "mail.test", REALM, "127.0.0.1;25", rhost, NULL, 0, &s),
			 SASL_OK);
	if (strcmp(mech, "PLAIN") == 0) {
		msg[0] = '\0';
		memcpy(msg + 1, user, ul);
		msg[1 + ul] = '\0';
		memcpy(msg + 2 + ul, pw, pl);
		r = sasl_server_start(s, mech, msg, (unsigned)(ul + pl + 2), &out, &outlen);
	} else {
		r = sasl_server_start(s, mech, NULL, 0, &out, &outlen);
		if (r == SASL_CONTINUE)
			r = sasl_server_step(s, user, (unsigned)ul, &out, &outlen);
		if (r == SASL_CONTINUE)
			r = sasl_server_step(s, pw, (unsigned)pl, &out, &outlen);
	}
	sasl_dispose(&s);
	return r;
}

/* sasl_checkpass(), as Cyrus imapd's IMAP LOGIN uses it; @detail (may be
 * NULL) gets sasl_errdetail(), which Cyrus writes into its badlogin line. */
static int checkpass_detail(const char *user, const char *pw, const char *rhost, char *detail,
			    size_t dlen)
{
	sasl_conn_t *s = NULL;
	assert_int_equal(sasl_server_new("imap", "mail.test", REALM, "127.0.0.1;143", rhost, NULL, 0, &s),
			 SASL_OK);
	int r = sasl_checkpass(s, user, (unsigned)strlen(user), pw, (unsigned)strlen(pw));
	if (detail != NULL) {
		const char *d = r != SASL_OK ? sasl_errdetail(s) : "";
		snprintf(detail, dlen, "%s", d != NULL ? d : "");
	}
	sasl_dispose(&s);
	return r;
}

static int checkpass(const char *user, const char *pw, const char *rhost)
{
	return checkpass_detail(user, pw, rhost, NULL, 0);
}

/* ---- set-up -------------------------------------------------------------------- */

static void use_conf(const char *extra)
{
	FILE *f;

	scenario++;
	snprintf(logpath, sizeof(logpath), "%s/log-%d", workdir, scenario);
	f = fopen(confpath, "w");
	assert_non_null(f);
	fprintf(f, "db_dir = %s/db-%d\nlog = file:%s\ntarpit_base = 1ms\ntarpit_max = 4ms\n%s\n",
		workdir, scenario, logpath, extra);
	fclose(f);
}

static int lines(const char *a, const char *b)
{
	const char *n[] = { a, b, NULL };
	return tu_count_lines(logpath, n);
}

static void fail_n(const char *mech, int n, const char *user, const char *rhost)
{
	for (int i = 0; i < n; i++) {
		char pw[32];
		snprintf(pw, sizeof(pw), "wrong-%d", i);
		assert_int_equal(auth(mech, user, pw, NULL, rhost), SASL_BADAUTH);
	}
}

static const char *const mechs[] = { "PLAIN", "LOGIN" };

static void test_bruteforce_tarpit_then_ban(void **state)
{
	(void)state;
	for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
		use_conf("ip_ban_after = 5\nuser_lock_after = 0\n");
		assert_int_equal(auth(mechs[m], "alice", "alice-pw", NULL, "203.0.113.1;4711"), SASL_OK);
		fail_n(mechs[m], 5, "alice", "203.0.113.9;5000");
		assert_int_equal(lines("action=tarpit", "rhost=203.0.113.9"), 2);
		assert_int_equal(lines("event=ban", "rhost=203.0.113.9"), 1);
		/* the right password while banned: refused before any check */
		assert_int_equal(auth(mechs[m], "alice", "alice-pw", NULL, "203.0.113.9;5001"), SASL_BADAUTH);
		assert_int_equal(lines("result=unchecked action=refuse reason=banned", "service=smtp"), 1);
		assert_int_equal(lines("user=\"alice@test.example\"", "result=fail"), 5);
		assert_int_equal(auth(mechs[m], "alice", "alice-pw", NULL, "203.0.113.2;1"), SASL_OK);
	}
}

static void test_botnet_locks_strangers_not_the_owner(void **state)
{
	(void)state;
	for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
		use_conf("user_lock_after = 5\n");
		assert_int_equal(auth(mechs[m], "carol", "carol-pw", NULL, "198.51.100.20;1"), SASL_OK);
		for (int i = 0; i < 6; i++) {
			char addr[40];
			snprintf(addr, sizeof(addr), "100.64.%d.1;2525", i);
			fail_n(mechs[m], 1, "carol", addr);
		}
		assert_int_equal(auth(mechs[m], "carol", "carol-pw", NULL, "100.65.0.1;1"), SASL_BADAUTH);
		assert_int_equal(lines("reason=locked", "rhost=100.65.0.1"), 1);
		assert_int_equal(auth(mechs[m], "carol", "carol-pw", NULL, "198.51.100.20;2"), SASL_OK);
	}
}

/* CRAM-MD5 as a hand-made client sends it: the server's challenge
 * answered with @resp as given. Returns the server's result. */
static int raw_cram(const char *resp, const char *rhost)
{
	sasl_conn_t *s = NULL;
	const char *out = NULL;
	unsigned outlen = 0;

	assert_int_equal(sasl_server_new("smtp", "mail.test", REALM, "127.0.0.1;25", rhost, NULL, 0, &s),
			 SASL_OK);
	int r = sasl_server_start(s, "CRAM-MD5", NULL, 0, &out, &outlen);
	if (r == SASL_CONTINUE)
		r = sasl_server_step(s, resp, (unsigned)strlen(resp), &out, &outlen);
	sasl_dispose(&s);
	return r;
}

/* CRAM-MD5: the user is read from the client's answer ("user digest"),
 * so source and user rules apply before the exchange and every line
 * names the user (a banned attempt logged user=none before); a name
 * only libsasl2 resolves gets the user's lock right after it. */
static void test_cram_md5(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 3\nuser_lock_after = 3\n");
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "198.51.100.5;1"), SASL_OK);
	fail_n("CRAM-MD5", 3, "bob", "203.0.113.30;1");
	assert_int_equal(lines("result=fail", "user=\"bob@test.example\""), 3);
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "203.0.113.30;2"), SASL_BADAUTH);
	assert_int_equal(lines("result=unchecked action=refuse reason=banned",
			       "user=\"bob@test.example\""), 1);
	assert_int_equal(lines("user=none", "time="), 0);
	/* bob is locked now for strangers: refused before the exchange */
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "203.0.113.31;1"), SASL_BADAUTH);
	assert_int_equal(lines("result=unchecked action=refuse reason=locked", "rhost=203.0.113.31"), 1);
	/* a name only the application's canon_user maps to bob: the right
	 * password was checked, then the lock applied, and the line says so */
	assert_int_equal(auth("CRAM-MD5", "bob+box", "bob-pw", NULL, "203.0.113.32;1"), SASL_BADAUTH);
	assert_int_equal(lines("result=success action=refuse reason=locked", "rhost=203.0.113.32"), 1);
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "198.51.100.5;2"), SASL_OK);

	/* odd answers fail; one without a name names none, the others are
	 * recorded under the name the mechanism itself read from them */
	use_conf("");
	static const char *const odd[] = {
		"nospace", " 0123456789abcdef0123456789abcdef",
		"carol 0123456789abcdef0123456789abcdeg", "carol 0123456789abcdef0123456789abcde",
		"carol  0123456789abcdef0123456789abcdef0",
	};
	for (size_t i = 0; i < AG_ARRAY_LEN(odd); i++)
		assert_true(raw_cram(odd[i], "192.0.2.50;1") != SASL_OK);
	assert_int_equal(lines("user=none", "rhost=192.0.2.50"), 2);
	assert_int_equal(lines("user=\"carol@test.example\"", "result=fail"), 3);
	/* a well-formed answer with a wrong digest (hex in any case) */
	assert_true(raw_cram("carol 0123456789ABCDEF0123456789abcdef", "192.0.2.51;1") != SASL_OK);
	assert_int_equal(lines("user=\"carol@test.example\"", "rhost=192.0.2.51"), 1);
	assert_int_equal(lines(" result=", "time="), 6);
}

/* SCRAM and DIGEST-MD5: the user is read from the client's first
 * message (sasl_plugin/sniff.c), so a banned attempt's line names it (it
 * said user=none before) and a locked user is refused before the
 * exchange, while the owner still logs in from a familiar place. */
static void test_scram_and_digest_name_the_user(void **state)
{
	(void)state;
	static const char *const named[] = { "SCRAM-SHA-256", "DIGEST-MD5" };
	for (size_t m = 0; m < AG_ARRAY_LEN(named); m++) {
		use_conf("ip_ban_after = 3\nuser_lock_after = 3\n");
		assert_int_equal(auth(named[m], "bob", "bob-pw", NULL, "198.51.100.5;1"), SASL_OK);
		fail_n(named[m], 3, "bob", "203.0.113.30;1");
		assert_int_equal(lines("result=fail", "user=\"bob@test.example\""), 3);
		assert_int_equal(auth(named[m], "bob", "bob-pw", NULL, "203.0.113.30;2"), SASL_BADAUTH);
		assert_int_equal(lines("result=unchecked action=refuse reason=banned",
				       "user=\"bob@test.example\""), 1);
		assert_int_equal(lines("user=none", "time="), 0);
		/* locked for strangers: refused before the exchange */
		assert_int_equal(auth(named[m], "bob", "bob-pw", NULL, "203.0.113.31;1"), SASL_BADAUTH);
		assert_int_equal(lines("result=unchecked action=refuse reason=locked",
				       "rhost=203.0.113.31"), 1);
		assert_int_equal(auth(named[m], "bob", "bob-pw", NULL, "198.51.100.5;2"), SASL_OK);
	}
}

/* One exchange held open between its steps, so several are in flight
 * at once over separate connections, as a parallel burst makes them. */
struct exch {
	struct who w;
	sasl_callback_t cbs[4];
	sasl_conn_t *s, *c;
	const char *sout;
	unsigned soutlen;
	int r;
};

/* Up to the step that carries the credential being checked (the
 * server's answer to the client's first message): SASL_CONTINUE, or
 * the refusal. */
static int exch_begin(struct exch *e, const char *mech, const char *user, const char *pw,
		      const char *rhost)
{
	const char *out = NULL, *chosen = NULL;
	unsigned outlen = 0;
	size_t n = strlen(pw);

	memset(e, 0, sizeof(*e));
	e->w = (struct who){ user, NULL, pw, calloc(1, sizeof(sasl_secret_t) + n + 1) };
	assert_non_null(e->w.secret);
	e->w.secret->len = n;
	memcpy(e->w.secret->data, pw, n);
	e->cbs[0] = (sasl_callback_t){ SASL_CB_AUTHNAME, (cb_fn)(void (*)(void))cli_simple, &e->w };
	e->cbs[1] = (sasl_callback_t){ SASL_CB_USER, (cb_fn)(void (*)(void))cli_simple, &e->w };
	e->cbs[2] = (sasl_callback_t){ SASL_CB_PASS, (cb_fn)(void (*)(void))cli_pass, &e->w };
	e->cbs[3] = (sasl_callback_t){ SASL_CB_LIST_END, NULL, NULL };
	assert_int_equal(sasl_server_new("smtp", "mail.test", REALM, "127.0.0.1;25", rhost, NULL, 0, &e->s),
			 SASL_OK);
	assert_int_equal(sasl_client_new("smtp", "mail.test", NULL, NULL, e->cbs, 0, &e->c), SASL_OK);
	int cr = sasl_client_start(e->c, mech, NULL, &out, &outlen, &chosen);
	assert_true(cr == SASL_OK || cr == SASL_CONTINUE);
	e->r = sasl_server_start(e->s, mech, out, outlen, &e->sout, &e->soutlen);
	return e->r;
}

/* The rest of the exchange; returns the server's result. */
static int exch_finish(struct exch *e)
{
	const char *out = NULL;
	unsigned outlen = 0;

	while (e->r == SASL_CONTINUE) {
		int cr = sasl_client_step(e->c, e->sout, e->soutlen, NULL, &out, &outlen);
		if (cr != SASL_OK && cr != SASL_CONTINUE)
			break;
		e->r = sasl_server_step(e->s, out, outlen, &e->sout, &e->soutlen);
	}
	return e->r;
}

/* The client goes away (the exchange is not finished). */
static void exch_drop(struct exch *e)
{
	sasl_dispose(&e->c);
	sasl_dispose(&e->s);
	free(e->w.secret);
}

/* Attempts in flight through the SASL plugin (issue 14's marks): three
 * SCRAM exchanges open at once from one source with ip_ban_after = 3
 * hold the source, so a fourth is refused (reason=inflight) before its
 * password is checked; the three fail and ban it. Exchanges the client
 * gives up on drop their marks: a fourth then goes on. */
static void test_parallel_exchanges_in_flight(void **state)
{
	(void)state;
	struct exch e[4];

	use_conf("ip_ban_after = 3\nuser_lock_after = 10\n");
	for (int i = 0; i < 3; i++)
		assert_int_equal(exch_begin(&e[i], "SCRAM-SHA-256", "bob", "wrong", "203.0.113.70;1"),
				 SASL_CONTINUE);
	assert_int_equal(exch_begin(&e[3], "SCRAM-SHA-256", "bob", "bob-pw", "203.0.113.70;2"),
			 SASL_BADAUTH);
	exch_drop(&e[3]);
	assert_int_equal(lines("reason=inflight", "rhost=203.0.113.70"), 1);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(exch_finish(&e[i]), SASL_BADAUTH);
		exch_drop(&e[i]);
	}
	assert_int_equal(lines("result=fail", "rhost=203.0.113.70"), 3);
	assert_int_equal(lines("event=ban", "rhost=203.0.113.70"), 1);

	/* given up: the marks go with the connections */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 3; i++)
			assert_int_equal(exch_begin(&e[i], "SCRAM-SHA-256", "bob", "wrong", "203.0.113.71;1"),
					 SASL_CONTINUE);
		for (int i = 0; i < 3; i++)
			exch_drop(&e[i]);
	}
	assert_int_equal(exch_begin(&e[0], "SCRAM-SHA-256", "bob", "bob-pw", "203.0.113.71;2"),
			 SASL_CONTINUE);
	assert_int_equal(exch_finish(&e[0]), SASL_OK);
	exch_drop(&e[0]);
	assert_int_equal(lines("reason=inflight", "rhost=203.0.113.71"), 0);
}

static void test_proxy_and_log_only(void **state)
{
	(void)state;
	for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
		use_conf("proxies = 192.0.2.10\nip_ban_after = 3\nuser_lock_after = 3\n");
		for (int i = 0; i < 8; i++) {
			char u[16];
			snprintf(u, sizeof(u), "u%02d", i);
			fail_n(mechs[m], 1, u, "192.0.2.10;1");
		}
		assert_int_equal(auth(mechs[m], "bob", "bob-pw", NULL, "192.0.2.10;2"), SASL_OK);
		fail_n(mechs[m], 3, "alice", "192.0.2.10;3");
		assert_int_equal(auth(mechs[m], "alice", "alice-pw", NULL, "192.0.2.10;4"), SASL_BADAUTH);
		assert_int_equal(lines("reason=locked", "rhost=192.0.2.10"), 1);
		assert_int_equal(lines("event=ban", "rhost=192.0.2.10"), 0);

		use_conf("mode = log-only\nip_ban_after = 3\n");
		fail_n(mechs[m], 6, "alice", "203.0.113.50;1");
		assert_int_equal(auth(mechs[m], "alice", "alice-pw", NULL, "203.0.113.50;2"), SASL_OK);
		assert_int_equal(lines("mode=log-only would=refuse", "reason=banned"), 4);
		assert_int_equal(lines("result=unchecked", "time="), 0);
	}
}

/* The canonuser plugin libsasl2 uses in the mechanisms: its own (no
 * canon_user_plugin, as in the README's Postfix set-up) or ours (imapd). */
static const char *const canon_plugins[] = { NULL, "authguard" };

static int restore_canon(void **state)
{
	(void)state;
	canon_plugin = "authguard";
	return 0;
}

static int attempt_lines(void)
{
	return lines(" result=", "time=");
}

/* Spellings libsasl2 trims to "alice" (isspace() at both ends). */
static const char *const blank_alice[] = {
	"\valice\v", "\falice", "alice\f", " \t\valice\r\n", "\r\nalice", "\v\f alice\t",
};

/* Every spelling libsasl2 authenticates as alice counts toward alice: the
 * lock comes after user_lock_after failures, as for "alice", and then
 * every spelling is refused before the check; one line per attempt. */
static void test_blank_spellings_are_one_user(void **state)
{
	(void)state;
	for (size_t p = 0; p < AG_ARRAY_LEN(canon_plugins); p++) {
		for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
			canon_plugin = canon_plugins[p];
			use_conf("user_lock_after = 5\nip_ban_after = 0\n");
			int n = 3 * (int)AG_ARRAY_LEN(blank_alice);
			for (int i = 0; i < n; i++) {
				char addr[40];
				snprintf(addr, sizeof(addr), "100.64.%d.1;2525", i);
				assert_int_equal(raw_auth(mechs[m], blank_alice[i % AG_ARRAY_LEN(blank_alice)],
							  "wrong", addr),
						 SASL_BADAUTH);
				assert_int_equal(lines("event=lock", "time="), i >= 4);
			}
			assert_int_equal(lines("result=fail", "user=\"alice@test.example\""), 5);
			assert_int_equal(lines("result=unchecked action=refuse reason=locked", "time="), n - 5);
			/* locked: the right password from a stranger is refused */
			assert_int_equal(raw_auth(mechs[m], "\valice\v", "alice-pw", "100.65.0.1;1"),
					 SASL_BADAUTH);
			assert_int_equal(lines("reason=locked", "rhost=100.65.0.1"), 1);
			assert_int_equal(attempt_lines(), n + 1);
		}
	}
}

/* A name only the application's canon_user callback maps to alice: the
 * plugin cannot tell before the step, so it records the outcome under
 * the user libsasl2 authenticated and applies that user's lock after
 * the step: the right password from a stranger is refused like a wrong
 * one, the owner's familiar address still gets in. */
static void test_alias_is_checked_after_the_step(void **state)
{
	(void)state;
	for (size_t p = 0; p < AG_ARRAY_LEN(canon_plugins); p++) {
		for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
			canon_plugin = canon_plugins[p];
			use_conf("user_lock_after = 5\nip_ban_after = 0\n");
			assert_int_equal(raw_auth(mechs[m], "alice", "alice-pw", "198.51.100.20;1"),
					 SASL_OK);
			for (int i = 0; i < 5; i++) {
				char addr[40], user[40];
				snprintf(addr, sizeof(addr), "100.64.%d.1;2525", i);
				snprintf(user, sizeof(user), "alice+%d", i);
				assert_int_equal(raw_auth(mechs[m], user, "wrong", addr), SASL_BADAUTH);
			}
			assert_int_equal(lines("result=fail", "user=\"alice@test.example\""), 5);
			assert_int_equal(lines("event=lock", "user=\"alice@test.example\""), 1);
			assert_int_equal(raw_auth(mechs[m], "alice+box", "alice-pw", "100.65.0.2;1"),
					 SASL_BADAUTH);
			/* the password was checked, and right: the line says so */
			assert_int_equal(lines("result=success action=refuse reason=locked",
					       "rhost=100.65.0.2"), 1);
			assert_int_equal(lines("result=success action=allow", "time="), 1);
			assert_int_equal(raw_auth(mechs[m], "alice+box", "alice-pw", "198.51.100.20;2"),
					 SASL_OK);
			assert_int_equal(lines("result=success action=allow",
					       "user=\"alice@test.example\""), 2);
			assert_int_equal(attempt_lines(), 8);
		}
	}
	/* log-only: let in, and the one line tells what would have been done */
	use_conf("mode = log-only\nuser_lock_after = 2\nip_ban_after = 0\n");
	fail_n("PLAIN", 2, "alice", "100.64.9.1;1");
	assert_int_equal(raw_auth("PLAIN", "alice+box", "alice-pw", "100.65.0.3;1"), SASL_OK);
	assert_int_equal(lines("result=success action=allow mode=log-only would=refuse reason=locked",
			       "rhost=100.65.0.3"), 1);
	assert_int_equal(attempt_lines(), 3);
}

/* A counter of authguard-admin stats on this scenario's store. */
static long admin_stat(const char *name)
{
	const char *admin = getenv("AG_TEST_ADMIN");
	char path[420], cmd[1400], line[256];
	size_t n = strlen(name);
	long v = -1;

	assert_non_null(admin);
	snprintf(path, sizeof(path), "%s/stats.out", workdir);
	snprintf(cmd, sizeof(cmd), "env -u LD_PRELOAD '%s' -c '%s' stats > '%s'", admin, confpath, path);
	assert_int_equal(system(cmd), 0);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, name, n) == 0 && line[n] == ' ')
			v = strtol(line + n, NULL, 10);
	fclose(f);
	return v;
}

/* The check after the step (the user's rules, for CRAM-MD5 and for a
 * name only libsasl2 resolved) delays an attempt only if the check before
 * did not: the store counts one delay for each line that shows one. */
static void test_one_tarpit_per_attempt(void **state)
{
	(void)state;
	use_conf("tarpit_free = 1\nip_ban_after = 0\nuser_lock_after = 0\nproxies = 192.0.2.10\n");
	fail_n("CRAM-MD5", 3, "bob", "203.0.113.90;1");
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "203.0.113.90;2"), SASL_OK);
	for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++)
		assert_int_equal(raw_auth(mechs[m], "alice+box", "alice-pw", "203.0.113.90;3"), SASL_OK);
	assert_int_equal(lines("result=success action=tarpit", "rhost=203.0.113.90"), 3);
	/* behind a proxy only the user's score counts, known after the step */
	fail_n("CRAM-MD5", 3, "bob", "192.0.2.10;1");
	assert_int_equal(auth("CRAM-MD5", "bob", "bob-pw", NULL, "192.0.2.10;2"), SASL_OK);
	assert_int_equal(lines("result=success action=tarpit", "rhost=192.0.2.10"), 1);
	assert_int_equal(admin_stat("tarpitted_total"), lines("action=tarpit", "time="));
	assert_int_equal(attempt_lines(), 10);
}

/* A successful step whose authorization fails is a failure. */
static void test_failed_authorization_counts(void **state)
{
	(void)state;
	use_conf("");
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", "bob", "198.51.100.60;1") == SASL_OK, 0);
	assert_int_equal(lines("result=fail", "rhost=198.51.100.60"), 1);
	assert_int_equal(auth("PLAIN", "boss", "boss-pw", "alice", "198.51.100.61;1"), SASL_OK);
	assert_int_equal(lines("result=success", "rhost=198.51.100.61"), 1);
}

/* sasl_checkpass() (Cyrus imapd's LOGIN, POP3 PASS): a banned source is
 * refused before the password check, through the canonuser plugin. */
static void test_checkpass_path(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 3\n");
	assert_int_equal(checkpass("alice", "alice-pw", "203.0.113.70;1"), SASL_OK);
	fail_n("PLAIN", 3, "alice", "203.0.113.71;1");
	assert_int_equal(checkpass("alice", "alice-pw", "203.0.113.71;2"), SASL_BADAUTH);
	assert_int_equal(lines("reason=banned", "service=imap"), 1);
}

/* Cyrus logs a refused LOGIN as a badlogin, like a wrong password:
 * sasl_errdetail() says "authguard: refused" for a refusal (so
 * authguard-watch does not count what the check already counted and
 * logged), and not for a wrong password. */
static void test_checkpass_refusal_detail(void **state)
{
	char d[256];

	(void)state;
	use_conf("ip_ban_after = 2\n");
	assert_int_equal(checkpass_detail("alice", "wrong", "203.0.113.72;1", d, sizeof(d)),
			 SASL_BADAUTH);
	assert_null(strstr(d, "authguard"));
	assert_non_null(strstr(d, "SASL(-13)"));
	assert_int_equal(checkpass_detail("alice", "wrong", "203.0.113.72;2", d, sizeof(d)),
			 SASL_BADAUTH);
	fail_n("PLAIN", 2, "alice", "203.0.113.72;3");
	assert_int_equal(checkpass_detail("alice", "alice-pw", "203.0.113.72;4", d, sizeof(d)),
			 SASL_BADAUTH);
	assert_non_null(strstr(d, "SASL(-13): "));
	assert_non_null(strstr(d, ": authguard: refused"));
	/* the client is told nothing of it: the same code as a wrong password */
	assert_string_equal(sasl_errstring(SASL_BADAUTH, NULL, NULL), "authentication failure");
}

/* sasl_checkpass() with auxprop canonicalises the user twice (libsasl2
 * 2.1.28): one attempt must still be one delay (before: two), and a name
 * given already in its canonical form is no way around the tarpit. */
static void test_checkpass_one_tarpit(void **state)
{
	(void)state;
	use_conf("tarpit_free = 1\nip_ban_after = 0\nuser_lock_after = 0\n");
	fail_n("PLAIN", 1, "alice", "203.0.113.75;1");
	for (int i = 0; i < 3; i++)
		assert_int_equal(checkpass("alice", "wrong", "203.0.113.75;2"), SASL_BADAUTH);
	assert_int_equal(admin_stat("tarpitted_total"), 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(checkpass("alice@" REALM, "wrong", "203.0.113.75;3"), SASL_BADAUTH);
	assert_int_equal(admin_stat("tarpitted_total"), 6);
}

/* A ban made through the PAM module is refused through SASL: the same
 * store and config. The PAM side runs in a child (tools/pamdrive.h). */
static void test_ban_through_pam_refused_through_sasl(void **state)
{
	(void)state;
	use_conf("ip_ban_after = 4\n");
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char self[1024];
		if (pd_self_exe(self, sizeof(self)) == 0)
			execl(self, "test_sasl", "--pam-fail", "4", "alice", "203.0.113.80", (char *)NULL);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(lines("event=ban", "service=" PD_SERVICE), 1);
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", NULL, "203.0.113.80;25"), SASL_BADAUTH);
	assert_int_equal(lines("reason=banned", "service=smtp"), 1);
}

/* Run this test as a PAM client (tools/pamdrive.h; see main): ARGS...
 * after the program name. Returns its exit status. */
static int pam_child(const char *mode, const char *a1, const char *a2, const char *a3)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char self[1024];
		if (pd_self_exe(self, sizeof(self)) == 0)
			execl(self, "test_sasl", mode, a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* authguard-admin -c CONF ARGS (a shell word list); its exit status. */
static int admin_run(const char *args)
{
	const char *admin = getenv("AG_TEST_ADMIN");
	char cmd[1400];

	assert_non_null(admin);
	snprintf(cmd, sizeof(cmd), "env -u LD_PRELOAD '%s' -c '%s' %s >/dev/null 2>&1", admin,
		 confpath, args);
	int st = system(cmd);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* With a user realm (Postfix's smtpd_sasl_local_domain; here the
 * server's realm) libsasl2 names the user "alice@test.example", while a
 * PAM service (Dovecot, saslauthd) names her "alice". user_strip_domains
 * makes them one user: failures through both count toward one lock, the
 * lock and her familiar places hold on both, and authguard-admin finds
 * her under either name. Without it, neither front end locks her. */
static void test_one_user_across_pam_and_sasl(void **state)
{
	(void)state;
	use_conf("user_lock_after = 5\nip_ban_after = 0\nuser_strip_domains = " REALM "\n");
	assert_int_equal(pam_child("--pam-login", "alice", "alice-pw", "198.51.100.20"), 0);
	assert_int_equal(pam_child("--pam-fail", "3", "alice", "100.64.1.1"), 0);
	fail_n("PLAIN", 2, "alice", "100.64.2.1;1");
	assert_int_equal(lines("event=lock", "time="), 1);
	/* SASL, a stranger, the right password: refused for the lock */
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", NULL, "100.65.0.1;1"), SASL_BADAUTH);
	assert_int_equal(lines("reason=locked", "rhost=100.65.0.1"), 1);
	/* PAM, a stranger: refused too (the wrong password's guess is not
	 * even checked) */
	assert_int_equal(pam_child("--pam-fail", "1", "alice", "100.65.0.2"), 0);
	assert_int_equal(lines("result=unchecked action=refuse reason=locked", "rhost=100.65.0.2"), 1);
	/* SASL from home, where she logged in through PAM: in */
	assert_int_equal(auth("LOGIN", "alice", "alice-pw", NULL, "198.51.100.20;2"), SASL_OK);
	/* the admin's name for her may be either */
	assert_int_equal(admin_run("unlock alice@" REALM), 0);
	assert_int_equal(admin_run("unlock alice"), 2); /* (no longer locked) */
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", NULL, "100.65.0.3;1"), SASL_OK);
	assert_int_equal(admin_run("forget alice"), 0);
	assert_int_equal(admin_run("show alice@" REALM), 2);

	/* the same without the key: two users, neither locked */
	use_conf("user_lock_after = 5\nip_ban_after = 0\n");
	assert_int_equal(pam_child("--pam-fail", "3", "alice", "100.64.1.1"), 0);
	fail_n("PLAIN", 2, "alice", "100.64.2.1;1");
	assert_int_equal(lines("event=lock", "time="), 0);
}

static void *thread_auths(void *p)
{
	intptr_t id = (intptr_t)p;
	for (int i = 0; i < 30; i++) {
		char addr[40];
		snprintf(addr, sizeof(addr), "10.9.%d.%d;1", (int)id, i);
		int r = auth(i % 2 ? "PLAIN" : "LOGIN", "bob", i % 3 ? "bob-pw" : "nope", NULL, addr);
		if (r != (i % 3 ? SASL_OK : SASL_BADAUTH))
			return (void *)1;
	}
	return NULL;
}

static void test_threads_and_fork(void **state)
{
	pthread_t th[2];
	void *res;

	(void)state;
	use_conf("user_lock_after = 0\nip_ban_after = 0\n");
	for (intptr_t i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, thread_auths, (void *)i), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_null(res);
	}
	assert_int_equal(lines("user=\"bob@test.example\"", "time="), 60);
	/* initialised here, authenticating in children */
	fflush(NULL);
	pid_t kids[3];
	for (int k = 0; k < 3; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			char addr[40];
			snprintf(addr, sizeof(addr), "10.8.%d.1;1", k);
			_exit(auth("PLAIN", "bob", "bob-pw", NULL, addr) == SASL_OK ? 0 : 1);
		}
	}
	for (int k = 0; k < 3; k++) {
		int st;
		assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(lines("rhost=10.8.", "result=success"), 3);
}

/* Distributed spraying through PLAIN and LOGIN: one password fails for
 * ten users, each from its own address: hot. Then a mailbox that uses it
 * is refused from a new place (SASL_BADAUTH, reason=hot_password), while
 * its owner's home, familiar from before the spray, gets in, told. */
static void test_hot_password_refused_after_the_step(void **state)
{
	(void)state;
	for (size_t m = 0; m < AG_ARRAY_LEN(mechs); m++) {
		use_conf("");
		assert_int_equal(auth(mechs[m], "vic2", "Summer2026!", NULL, "198.51.100.32;1"), SASL_OK);
		/* ten users make it hot; the eleventh is there because users are
		 * told apart by 16-bit tags: two of ten share one in about one
		 * store of 1,500, and the password is hot one user later */
		for (int i = 0; i < 11; i++) {
			char u[16], addr[40];
			snprintf(u, sizeof(u), "u%02d", i % 10);
			if (i == 10)
				snprintf(u, sizeof(u), "boss");
			snprintf(addr, sizeof(addr), "100.66.%d.1;2525", i);
			assert_int_equal(auth(mechs[m], u, "Summer2026!", NULL, addr), SASL_BADAUTH);
		}
		int said = lines("result=fail", "sprayed=yes");
		assert_true(said == 1 || said == 2);
		assert_int_equal(auth(mechs[m], "vic1", "Summer2026!", NULL, "100.66.99.1;1"), SASL_BADAUTH);
		assert_int_equal(lines("result=success action=refuse reason=hot_password",
				       "user=\"vic1@test.example\""), 1);
		assert_int_equal(auth(mechs[m], "vic2", "Summer2026!", NULL, "198.51.100.32;2"), SASL_OK);
		assert_int_equal(lines("result=success action=allow", "sprayed=yes"), 1);
		/* a user with a password of her own is untouched from a new place */
		assert_int_equal(auth(mechs[m], "bob", "bob-pw", NULL, "100.66.98.1;1"), SASL_OK);
	}
}

/* ---- main -------------------------------------------------------------------- */

static void mkuser(const char *user, const char *pw)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "printf '%%s' '%s' | saslpasswd2 -p -c -f '%s' -u %s %s", pw, dbpath,
		 REALM, user);
	if (system(cmd) != 0) {
		fprintf(stderr, "saslpasswd2 failed for %s\n", user);
		abort();
	}
}

static int mutex_lock(void *m) { return pthread_mutex_lock(m) == 0 ? SASL_OK : SASL_FAIL; }
static int mutex_unlock(void *m) { return pthread_mutex_unlock(m) == 0 ? SASL_OK : SASL_FAIL; }
static void *mutex_alloc(void)
{
	pthread_mutex_t *m = malloc(sizeof(*m));
	pthread_mutex_init(m, NULL);
	return m;
}
static void mutex_free(void *m)
{
	pthread_mutex_destroy(m);
	free(m);
}

/* test_sasl --pam-fail N USER RHOST: N failed logins through the PAM
 * module (tools/pamdrive.h, with the same authguard.conf);
 * test_sasl --pam-login USER PW RHOST: one that must succeed. */
static int pam_fail(char **argv)
{
	struct pd_paths p = { getenv("AG_TEST_MODULE"), getenv("AG_TEST_MATRIX"),
			      getenv("AG_TEST_WRAPPER"), workdir };
	if (pd_ensure_wrapper(&p, argv) != 0)
		return 2;
	if (strcmp(argv[1], "--pam-login") == 0)
		return pd_login(argv[2], argv[3], argv[4], NULL) == PAM_SUCCESS ? 0 : 3;
	for (int i = 0; i < atoi(argv[2]); i++)
		if (pd_login(argv[3], "wrong", argv[4], NULL) != PAM_AUTH_ERR)
			return 3;
	return 0;
}

/* log = syslog, the default: one line per attempt through syslog(3) at
 * authpriv.info, none through the application's SASL log callback
 * (Postfix shows SASL_LOG_NOTE only with -v: SMTP AUTH would log no
 * attempt at all). */
static void test_syslog_is_the_default(void **state)
{
	FILE *f;

	(void)state;
	use_conf("");
	f = fopen(confpath, "w");
	assert_non_null(f);
	fprintf(f, "db_dir = %s/db-%d\ntarpit_base = 0\n", workdir, scenario);
	fclose(f);
	caught_reset();
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", NULL, "203.0.113.71;1"), SASL_OK);
	assert_int_equal(auth("LOGIN", "alice", "nope", NULL, "203.0.113.71;2"), SASL_BADAUTH);
	assert_int_equal(auth("CRAM-MD5", "alice", "nope", NULL, "203.0.113.71;3"), SASL_BADAUTH);
	assert_int_equal(caught_count(&sys_lines, LOG_AUTHPRIV | LOG_INFO, " result=", NULL), 3);
	assert_int_equal(caught_count(&sys_lines, LOG_AUTHPRIV | LOG_INFO, "result=success", "rhost=203.0.113.71"), 1);
	assert_int_equal(caught_count(&sys_lines, LOG_AUTHPRIV | LOG_INFO, "result=fail", "rhost=203.0.113.71"), 2);
	for (int lvl = SASL_LOG_NONE; lvl <= SASL_LOG_PASS; lvl++)
		assert_int_equal(caught_count(&app_lines, lvl, " result=", NULL), 0);
}

/* Faults and config errors: to syslog (authpriv.err), to the
 * application's log (SASL_LOG_ERR: Postfix logs it as a warning), and with
 * log = file: to that file, even when the bad line comes before the log
 * key. A store directory that cannot be made says why: mkdir, the
 * directory and the errno's words. */
static void test_faults_are_seen_everywhere(void **state)
{
	FILE *f;
	char missing[600];
	const char *cfg[] = { "config: ", "authguard.conf:1: ", "tarpit_free", NULL };
	const char *mk[] = { "authguard fault: ", "mkdir ", "/no-such-dir/db", "No such file or directory", NULL };

	(void)state;
	use_conf("");
	snprintf(missing, sizeof(missing), "%s/no-such-dir/db", workdir);
	f = fopen(confpath, "w");
	assert_non_null(f);
	fprintf(f, "tarpit_free = banana\ndb_dir = %s\nlog = file:%s\n", missing, logpath);
	fclose(f);
	caught_reset();
	/* fail_open = yes: the attempt goes on, unguarded and said so */
	assert_int_equal(auth("PLAIN", "alice", "alice-pw", NULL, "203.0.113.72;1"), SASL_OK);
	assert_int_equal(tu_count_lines(logpath, cfg), 1);
	assert_int_equal(caught_count(&sys_lines, LOG_AUTHPRIV | LOG_ERR, "config: ", "tarpit_free"), 1);
	assert_int_equal(caught_count(&app_lines, SASL_LOG_ERR, "config: ", "tarpit_free"), 1);
	assert_int_equal(tu_count_lines(logpath, mk), 1);
	assert_int_equal(caught_count(&sys_lines, LOG_AUTHPRIV | LOG_ERR, "mkdir ", "No such file or directory"), 1);
	assert_int_equal(caught_count(&app_lines, SASL_LOG_ERR, "mkdir ", "No such file or directory"), 1);
}

/* The README's SASL_PATH names the private directory for the whole
 * process, so a program that is also a SASL client (Postfix's smtp
 * delivering to a relay that wants AUTH) finds its client mechanisms
 * there: the plugin offers the stock ones, untouched. Run in a process of
 * its own (--private-client), whose client library loads from plugdir. */
static int private_client(void)
{
	static const char *const want[] = { "PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256" };

	scenario = 1000; /* its own store and log */
	use_conf("");
	if (sasl_server_init(srv_cbs, "authguard-test") != SASL_OK)
		return 2;
	static sasl_callback_t cbs[] = {
		{ SASL_CB_GETPATH, (cb_fn)(void (*)(void))srv_getpath, NULL },
		{ SASL_CB_LIST_END, NULL, NULL },
	};
	if (sasl_client_init(cbs) != SASL_OK)
		return 3;
	for (size_t i = 0; i < AG_ARRAY_LEN(want); i++) {
		int r = auth(want[i], "alice", "alice-pw", NULL, "198.51.100.80;1");
		if (r != SASL_OK) {
			fprintf(stderr, "client mechanism %s from the private directory: %s\n", want[i],
				sasl_errstring(r, NULL, NULL));
			return 4;
		}
	}
	sasl_done();
	return 0;
}

static void test_private_dir_serves_clients(void **state)
{
	char self[600];

	(void)state;
	assert_int_equal(pd_self_exe(self, sizeof(self)), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(self, self, "--private-client", (char *)NULL);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* The plugin linked into the stock directory as libauthguard.so (the
 * README's fallback for a lost SASL_PATH) must not offer the client
 * mechanisms libsasl2 loads from there anyway: each would be listed and
 * initialised twice. From its private directory it offers them. Run in a
 * fresh process (--client-plug DIR LINK), whose first load of the plugin
 * is through LINK. */
static int fb_getopt(void *ctx, const char *plugin, const char *option, const char **result,
		     unsigned *len)
{
	(void)plugin;
	if (strcmp(option, "authguard_mech_dir") != 0)
		return SASL_FAIL;
	*result = ctx;
	*len = (unsigned)strlen(ctx);
	return SASL_OK;
}

static void fb_log(sasl_conn_t *conn, int level, const char *fmt, ...)
{
	(void)conn;
	(void)level;
	(void)fmt;
}

static int client_plug(const char *dir, const char *link)
{
	void *h = dlopen(link, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL)
		return 20;
	sasl_client_plug_init_t *init = (sasl_client_plug_init_t *)dlsym(h, "sasl_client_plug_init");
	if (init == NULL)
		return 21;
	sasl_utils_t u;
	memset(&u, 0, sizeof(u));
	u.getopt = fb_getopt;
	u.getopt_context = (void *)dir;
	u.log = fb_log;
	sasl_client_plug_t *list = NULL;
	int ver = 0, n = 0;
	int rc = init(&u, SASL_CLIENT_PLUG_VERSION, &ver, &list, &n);
	return rc == SASL_OK ? (n > 0 ? 0 : 22) : rc == SASL_NOMECH ? 1 : 23;
}

static int run_client_plug(const char *dir, const char *link)
{
	char self[600];

	assert_int_equal(pd_self_exe(self, sizeof(self)), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(self, self, "--client-plug", dir, link, (char *)NULL);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_fallback_offers_no_client_mechanism(void **state)
{
	char dir[500], link[600], target[600], priv[600];
	const char *plugin = getenv("AG_TEST_SASL_PLUGIN");

	(void)state;
	/* a stand-in for the stock directory: one stock mechanism and the link */
	snprintf(dir, sizeof(dir), "%s/stock", workdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(link, sizeof(link), "%s/libplain.so", dir);
	snprintf(target, sizeof(target), "%s/libplain.so.2", sysdir);
	assert_int_equal(symlink(target, link), 0);
	snprintf(link, sizeof(link), "%s/libauthguard.so", dir);
	assert_int_equal(symlink(plugin, link), 0);
	assert_int_equal(run_client_plug(dir, link), 1); /* SASL_NOMECH */
	/* the same plugin from its private directory offers the stock ones */
	snprintf(priv, sizeof(priv), "%s/authguard.so", plugdir);
	assert_int_equal(run_client_plug(dir, priv), 0);
}

/* LOGIN's two messages may each be empty: an empty name is still the
 * name's step (the password must not be taken for the user, nor land in
 * the log), and an empty password is still the credential (a banned
 * source is refused before the mechanism sees it). */
static void test_login_empty_messages(void **state)
{
	const char *pw[] = { "SecretPw123", NULL };
	const char *ban[] = { "rhost=198.51.100.77", "result=unchecked action=refuse reason=banned", NULL };

	(void)state;
	use_conf("ip_ban_after = 3\nuser_lock_after = 0\nspray_users = 0");
	assert_int_not_equal(raw_auth("LOGIN", "", "SecretPw123", "198.51.100.76;1"), SASL_OK);
	assert_int_equal(tu_count_lines(logpath, pw), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(raw_auth("LOGIN", "alice", "wrong", "198.51.100.77;1"), SASL_BADAUTH);
	assert_int_not_equal(raw_auth("LOGIN", "alice", "", "198.51.100.77;1"), SASL_OK);
	assert_int_equal(tu_count_lines(logpath, ban), 1);
}

int main(int argc, char **argv)
{
	const char *plugin = getenv("AG_TEST_SASL_PLUGIN");
	const char *wd = getenv("AG_TEST_DIR");
	char link[500];

	if (plugin == NULL) {
		printf("1..0 # SKIP AG_TEST_SASL_PLUGIN not set (run via make check)\n");
		return 1;
	}
	if (wd == NULL) {
		tu_mkdtemp(workdir, sizeof(workdir), "sasl");
		setenv("AG_TEST_DIR", workdir, 1);
	} else {
		snprintf(workdir, sizeof(workdir), "%s", wd);
	}
	snprintf(confpath, sizeof(confpath), "%s/authguard.conf", workdir);
	if (argc == 4 && strcmp(argv[1], "--client-plug") == 0)
		return client_plug(argv[2], argv[3]);
	if (argc == 5 && (strcmp(argv[1], "--pam-fail") == 0 || strcmp(argv[1], "--pam-login") == 0))
		return pam_fail(argv);
	snprintf(plugdir, sizeof(plugdir), "%s/plugins", workdir);
	snprintf(dbpath, sizeof(dbpath), "%s/sasldb2", workdir);
	if (argc == 2 && strcmp(argv[1], "--private-client") == 0) {
		sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
		return private_client();
	}
	mkdir(plugdir, 0700);
	/* the private plugin directory: authguard.so and the sasldb auxprop */
	snprintf(link, sizeof(link), "%s/authguard.so", plugdir);
	if (symlink(plugin, link) != 0)
		perror("symlink");
	snprintf(link, sizeof(link), "%s/libsasldb.so", plugdir);
	char target[500];
	snprintf(target, sizeof(target), "%s/libsasldb.so.2", sysdir);
	if (symlink(target, link) != 0)
		perror("symlink");
	mkuser("alice", "alice-pw");
	mkuser("bob", "bob-pw");
	mkuser("carol", "carol-pw");
	mkuser("boss", "boss-pw");
	mkuser("vic1", "Summer2026!");
	mkuser("vic2", "Summer2026!");
	for (int i = 0; i < 10; i++) {
		char u[16], pw[16];
		snprintf(u, sizeof(u), "u%02d", i);
		snprintf(pw, sizeof(pw), "pw%02d", i);
		mkuser(u, pw);
	}
	/* the PAM side of the cross test reads pam_matrix's passdb */
	char passdb[400];
	snprintf(passdb, sizeof(passdb), "%s/passdb", workdir);
	FILE *f = fopen(passdb, "w");
	fprintf(f, "alice:alice-pw:%s\n", PD_SERVICE);
	fclose(f);

	sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
	if (sasl_server_init(srv_cbs, "authguard-test") != SASL_OK ||
	    sasl_client_init(cli_global) != SASL_OK) {
		fprintf(stderr, "sasl init failed\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bruteforce_tarpit_then_ban),
		cmocka_unit_test(test_botnet_locks_strangers_not_the_owner),
		cmocka_unit_test(test_cram_md5),
		cmocka_unit_test(test_scram_and_digest_name_the_user),
		cmocka_unit_test(test_parallel_exchanges_in_flight),
		cmocka_unit_test(test_proxy_and_log_only),
		cmocka_unit_test_teardown(test_blank_spellings_are_one_user, restore_canon),
		cmocka_unit_test_teardown(test_alias_is_checked_after_the_step, restore_canon),
		cmocka_unit_test(test_one_tarpit_per_attempt),
		cmocka_unit_test(test_failed_authorization_counts),
		cmocka_unit_test(test_checkpass_path),
		cmocka_unit_test(test_checkpass_refusal_detail),
		cmocka_unit_test(test_checkpass_one_tarpit),
		cmocka_unit_test(test_ban_through_pam_refused_through_sasl),
		cmocka_unit_test(test_one_user_across_pam_and_sasl),
		cmocka_unit_test(test_threads_and_fork),
		cmocka_unit_test(test_syslog_is_the_default),
		cmocka_unit_test(test_faults_are_seen_everywhere),
		cmocka_unit_test(test_private_dir_serves_clients),
		cmocka_unit_test(test_fallback_offers_no_client_mechanism),
		cmocka_unit_test(test_login_empty_messages),
		cmocka_unit_test(test_hot_password_refused_after_the_step),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	sasl_done();
	if (rc == 0)
		tu_rmrf(workdir);
	return rc;
}
