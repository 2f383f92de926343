/* test_policyd.c - authguard-policyd's request mapping (policyd/map.c):
 * parsing Dovecot's requests (and hostile ones), the status mapping, the
 * API key, listening addresses, and allow/report against a real store in
 * a temporary directory with a fake clock. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policyd.h"
#include "store.h"
#include "testutil.h"

static int64_t fake_ms = 1750000000000LL;
static int64_t fake_now(void) { return fake_ms; }

/* ---- parsing ---------------------------------------------------------------- */

static void test_command(void **state)
{
	(void)state;
	assert_int_equal(pd_command_of("allow"), PD_CMD_ALLOW);
	assert_int_equal(pd_command_of("report"), PD_CMD_REPORT);
	assert_int_equal(pd_command_of(NULL), PD_CMD_NONE);
	assert_int_equal(pd_command_of(""), PD_CMD_NONE);
	assert_int_equal(pd_command_of("Allow"), PD_CMD_NONE);
	assert_int_equal(pd_command_of("allow "), PD_CMD_NONE);
}

/* What Dovecot 2.3 sends with its default auth_policy_request_attributes. */
#define DOVECOT_ALLOW                                                                     \
	"{\"device_id\":\"\",\"login\":\"alice\",\"protocol\":\"imap\",\"pwhash\":\"9f3\","  \
	"\"remote\":\"192.0.2.7\",\"session_id\":\"k2lJvNcJ4u1/AAAB\"}"
#define DOVECOT_REPORT                                                                    \
	"{\"device_id\":\"\",\"login\":\"alice\",\"protocol\":\"imap\",\"pwhash\":\"9f3\","  \
	"\"remote\":\"192.0.2.7\",\"session_id\":\"k2lJvNcJ4u1/AAAB\",\"success\":false,"    \
	"\"policy_reject\":false}"

static void test_parse_dovecot(void **state)
{
	struct pd_request r;
	struct ag_attempt a;
	char err[256], service[PD_SERVICE_MAX];

	(void)state;
	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, DOVECOT_ALLOW, strlen(DOVECOT_ALLOW), &r, err,
					  sizeof(err)), 0);
	assert_int_equal(r.login.len, 5);
	assert_memory_equal(r.login.p, "alice", 5);
	assert_memory_equal(r.remote.p, "192.0.2.7", 9);
	assert_memory_equal(r.pwhash.p, "9f3", 3);
	assert_int_equal(r.session.len, 16);
	assert_null(r.mech.p);
	pd_attempt_of(&r, &a, service);
	assert_string_equal(a.service, "imap");
	assert_int_equal(a.user_len, 5);
	assert_int_equal(a.rhost_len, 9);
	assert_true(pd_pwhash_usable(&r));
	pd_request_free(&r);

	assert_int_equal(pd_request_parse(PD_CMD_REPORT, DOVECOT_REPORT, strlen(DOVECOT_REPORT), &r,
					  err, sizeof(err)), 0);
	assert_false(r.success);
	assert_false(r.policy_reject);
	pd_request_free(&r);

	/* the same report without policy_reject (older Dovecot): false */
	static const char old[] = "{\"login\":\"a\",\"remote\":\"192.0.2.7\",\"success\":true}";
	assert_int_equal(pd_request_parse(PD_CMD_REPORT, old, strlen(old), &r, err, sizeof(err)), 0);
	assert_true(r.success);
	assert_false(r.policy_reject);
	pd_request_free(&r);
}

/* Empty values are "none"; no protocol is service=dovecot. */
static void test_attempt_mapping(void **state)
{
	static const char body[] = "{\"login\":\"\",\"remote\":\"\",\"protocol\":\"\"}";
	static const char v6[] = "{\"login\":\"b\\u00e9a\",\"remote\":\"2001:db8::1\",\"protocol\":\"pop3\"}";
	struct pd_request r;
	struct ag_attempt a;
	char err[256], service[PD_SERVICE_MAX];

	(void)state;
	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, body, strlen(body), &r, err, sizeof(err)), 0);
	pd_attempt_of(&r, &a, service);
	assert_null(a.user);
	assert_null(a.rhost);
	assert_string_equal(a.service, "dovecot");
	assert_false(pd_pwhash_usable(&r));
	pd_request_free(&r);

	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, v6, strlen(v6), &r, err, sizeof(err)), 0);
	pd_attempt_of(&r, &a, service);
	assert_string_equal(a.service, "pop3");
	assert_int_equal(a.user_len, 4); /* UTF-8 é is two bytes */
	assert_memory_equal(a.user, "b\xc3\xa9" "a", 4);
	assert_memory_equal(a.rhost, "2001:db8::1", 11);
	pd_request_free(&r);
}

/* pwhash stands for a password only with PLAIN or LOGIN (or no mech). */
static void test_pwhash_mech(void **state)
{
	static const struct {
		const char *mech;
		bool usable;
	} cases[] = {
		{ NULL, true }, { "PLAIN", true }, { "login", true }, { "CRAM-MD5", false },
		{ "SCRAM-SHA-256", false }, { "", false }, { "PLAINX", false },
	};
	char body[256], err[256];
	struct pd_request r;

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		if (cases[i].mech != NULL)
			snprintf(body, sizeof(body), "{\"login\":\"a\",\"remote\":\"\",\"pwhash\":\"ab\",\"mech\":\"%s\"}",
				 cases[i].mech);
		else
			snprintf(body, sizeof(body), "{\"login\":\"a\",\"remote\":\"\",\"pwhash\":\"ab\"}");
		assert_int_equal(pd_request_parse(PD_CMD_ALLOW, body, strlen(body), &r, err, sizeof(err)), 0);
		if (pd_pwhash_usable(&r) != cases[i].usable)
			print_error("mech %s\n", cases[i].mech ? cases[i].mech : "(none)");
		assert_int_equal(pd_pwhash_usable(&r), cases[i].usable);
		pd_request_free(&r);
	}
}

/* Whatever a peer sends, a reason and no crash, no leak (ASan). */
static void test_parse_hostile(void **state)
{
	static const struct {
		enum pd_command cmd;
		const char *body;
		const char *needle; /* in the reason */
	} cases[] = {
		{ PD_CMD_ALLOW, "", "not JSON" },
		{ PD_CMD_ALLOW, "{", "not JSON" },
		{ PD_CMD_ALLOW, "null", "not JSON" },
		{ PD_CMD_ALLOW, "[]", "not a JSON object" },
		{ PD_CMD_ALLOW, "\"login\"", "not JSON" },
		{ PD_CMD_ALLOW, "{}", "\"login\" is missing" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\"}", "\"remote\" is missing" },
		{ PD_CMD_ALLOW, "{\"remote\":\"192.0.2.1\"}", "\"login\" is missing" },
		{ PD_CMD_ALLOW, "{\"login\":1,\"remote\":\"\"}", "\"login\" is not a string" },
		{ PD_CMD_ALLOW, "{\"login\":null,\"remote\":\"\"}", "not a string" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":[\"x\"]}", "\"remote\" is not a string" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":\"\",\"protocol\":{}}", "\"protocol\"" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":\"\",\"pwhash\":7}", "\"pwhash\"" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":\"\",\"session_id\":false}", "\"session_id\"" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"login\":\"b\",\"remote\":\"\"}", "not JSON" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\\u0000b\",\"remote\":\"\"}", "not JSON" },
		{ PD_CMD_ALLOW, "{\"login\":\"\xff\xfe\",\"remote\":\"\"}", "not JSON" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":\"\"} x", "not JSON" },
		{ PD_CMD_ALLOW, "{\"login\":\"a\",\"remote\":\"\"}{}", "not JSON" },
		{ PD_CMD_ALLOW, "{'login':'a','remote':''}", "not JSON" },
		{ PD_CMD_REPORT, "{\"login\":\"a\",\"remote\":\"\"}", "\"success\" is missing" },
		{ PD_CMD_REPORT, "{\"login\":\"a\",\"remote\":\"\",\"success\":\"true\"}", "\"success\"" },
		{ PD_CMD_REPORT, "{\"login\":\"a\",\"remote\":\"\",\"success\":1}", "\"success\"" },
		{ PD_CMD_REPORT, "{\"login\":\"a\",\"remote\":\"\",\"success\":true,\"policy_reject\":0}",
		  "\"policy_reject\"" },
		{ PD_CMD_NONE, "{\"login\":\"a\",\"remote\":\"\"}", "no command" },
	};
	char err[256];
	struct pd_request r;

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		err[0] = '\0';
		int rc = pd_request_parse(cases[i].cmd, cases[i].body, strlen(cases[i].body), &r, err,
					  sizeof(err));
		if (rc != -1 || strstr(err, cases[i].needle) == NULL)
			print_error("case %zu '%s': rc %d, reason '%s'\n", i, cases[i].body, rc, err);
		assert_int_equal(rc, -1);
		assert_non_null(strstr(err, cases[i].needle));
		assert_null(r.doc);
	}

	/* nesting deeper than jansson's limit, and a body that is not
	 * NUL-terminated (only @len bytes are read) */
	size_t n = 100000;
	char *deep = malloc(2 * n + 64);
	assert_non_null(deep);
	strcpy(deep, "{\"login\":\"a\",\"remote\":\"\",\"x\":");
	size_t at = strlen(deep);
	memset(deep + at, '[', n);
	memset(deep + at + n, ']', n);
	deep[at + 2 * n] = '}';
	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, deep, at + 2 * n + 1, &r, err, sizeof(err)), -1);
	free(deep);
	char *exact = malloc(sizeof(DOVECOT_ALLOW) - 1);
	memcpy(exact, DOVECOT_ALLOW, sizeof(DOVECOT_ALLOW) - 1);
	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, exact, sizeof(DOVECOT_ALLOW) - 1, &r, err,
					  sizeof(err)), 0);
	pd_request_free(&r);
	assert_int_equal(pd_request_parse(PD_CMD_ALLOW, exact, sizeof(DOVECOT_ALLOW) - 2, &r, err,
					  sizeof(err)), -1);
	free(exact);
}

/* ---- status and reply ---------------------------------------------------------- */

static void test_status(void **state)
{
	struct ag_ticket t = { .magic = AG_TICKET_MAGIC, .action = AG_ACT_TARPIT };
	static const struct {
		int64_t ms;
		int status;
	} tarpit[] = { { 0, 1 }, { 1, 1 }, { 20, 1 }, { 500, 1 }, { 1000, 1 }, { 1001, 2 },
		       { 2000, 2 }, { 15000, 15 }, { 60000, 60 } };
	char buf[64];

	(void)state;
	assert_int_equal(pd_status_of(AG_REFUSE, &t), -1);
	assert_int_equal(pd_status_of(AG_PROCEED, NULL), 0);
	for (size_t i = 0; i < AG_ARRAY_LEN(tarpit); i++) {
		t.delay_ms = tarpit[i].ms;
		assert_int_equal(pd_status_of(AG_PROCEED, &t), tarpit[i].status);
	}
	t.action = AG_ACT_ALLOW;
	t.delay_ms = 5000; /* log-only: what would have been done */
	assert_int_equal(pd_status_of(AG_PROCEED, &t), 0);

	assert_int_equal(pd_reply(-1, buf, sizeof(buf)), strlen("{\"status\":-1,\"msg\":\"\"}"));
	assert_string_equal(buf, "{\"status\":-1,\"msg\":\"\"}");
	pd_reply(3, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":3,\"msg\":\"\"}");
	/* a short buffer: cut, terminated */
	assert_int_equal(pd_reply(3, buf, 5), 4);
	assert_string_equal(buf, "{\"st");
}

/* ---- the API key ------------------------------------------------------------------ */

static void test_key(void **state)
{
	struct pd_key k;
	char err[160];

	(void)state;
	assert_int_equal(pd_key_parse("s3cret\n", 7, &k, err, sizeof(err)), 0);
	assert_string_equal(k.header, "X-API-Key");
	assert_string_equal(k.value, "s3cret");
	assert_true(pd_key_matches(&k, "s3cret", 6));
	assert_false(pd_key_matches(&k, "s3cre", 5));
	assert_false(pd_key_matches(&k, "s3cret!", 7));
	assert_false(pd_key_matches(&k, "S3cret", 6));
	assert_false(pd_key_matches(&k, "", 0));
	assert_false(pd_key_matches(&k, NULL, 0));
	/* only @got_len bytes count: "s3cret" cut to 3 is not the key */
	assert_false(pd_key_matches(&k, "s3cret", 3));

	static const char auth[] = "  Authorization: Bearer abc:def  \n";
	assert_int_equal(pd_key_parse(auth, strlen(auth), &k, err, sizeof(err)), 0);
	assert_string_equal(k.header, "Authorization");
	assert_string_equal(k.value, "Bearer abc:def");
	assert_true(pd_key_matches(&k, "Bearer abc:def", 14));

	static const char *bad[] = { "", " \n\n ", "a\nb", ": x", "X-Key:", "X Key: v",
				     "X-Key:   \t", "a\x01" "b" };
	for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		assert_int_equal(pd_key_parse(bad[i], strlen(bad[i]), &k, err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
	}
	char big[PD_KEY_MAX + 10];
	memset(big, 'k', sizeof(big));
	assert_int_equal(pd_key_parse(big, sizeof(big), &k, err, sizeof(err)), -1);
}

/* ---- listening addresses --------------------------------------------------------------- */

static void test_listen(void **state)
{
	struct pd_listen l;
	char err[160];

	(void)state;
	assert_int_equal(pd_listen_parse("127.0.0.1:8642", &l, err, sizeof(err)), 0);
	assert_true(l.loopback);
	assert_int_equal(l.addr.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&l.addr)->sin_port), 8642);
	assert_int_equal(pd_listen_parse("127.8.9.10:1", &l, err, sizeof(err)), 0);
	assert_true(l.loopback);
	assert_int_equal(pd_listen_parse("localhost:65535", &l, err, sizeof(err)), 0);
	assert_true(l.loopback);
	assert_int_equal(pd_listen_parse("[::1]:8642", &l, err, sizeof(err)), 0);
	assert_true(l.loopback);
	assert_int_equal(l.addr.ss_family, AF_INET6);
	assert_int_equal(pd_listen_parse("0.0.0.0:8642", &l, err, sizeof(err)), 0);
	assert_false(l.loopback);
	assert_int_equal(pd_listen_parse("192.0.2.1:8642", &l, err, sizeof(err)), 0);
	assert_false(l.loopback);
	assert_int_equal(pd_listen_parse("[::]:8642", &l, err, sizeof(err)), 0);
	assert_false(l.loopback);
	assert_int_equal(pd_listen_parse("[::ffff:127.0.0.1]:8642", &l, err, sizeof(err)), 0);
	assert_false(l.loopback); /* a v4-mapped address: not taken as loopback */

	static const char *bad[] = { "", "8642", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
				     "127.0.0.1:65536", "127.0.0.1:86a", "127.0.0.1:-1", "::1:8642",
				     "[::1]", "[127.0.0.1]:80", "[::1:80", "mail.example.com:80",
				     ":80", "127.0.0.1: 80", "127.0.0.1:+80" };
	for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		if (pd_listen_parse(bad[i], &l, err, sizeof(err)) != -1)
			print_error("'%s' was taken\n", bad[i]);
		assert_int_equal(pd_listen_parse(bad[i], &l, err, sizeof(err)), -1);
		assert_true(err[0] != '\0');
	}
}

/* ---- allow and report against a real store --------------------------------------------- */

struct fx {
	char dir[256];
	char log[300];
	struct ag_conf c;
	struct ag_sink sink;
	struct pd_sessions *s;
	struct pd_ctx ctx;
	int nwarn;
};

static void sink(void *ctx, enum ag_level lvl, const char *msg)
{
	struct fx *f = ctx;

	(void)msg;
	if (lvl >= AG_LVL_WARN)
		f->nwarn++;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256], v[400];

	tu_mkdtemp(f->dir, sizeof(f->dir), "policyd");
	ag_conf_init(&f->c);
	snprintf(f->c.db_dir, sizeof(f->c.db_dir), "%s/db", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/attempts.log", f->dir);
	snprintf(v, sizeof(v), "file:%s", f->log);
	assert_int_equal(ag_conf_set(&f->c, "log", v, err, sizeof(err)), 0);
	f->sink.fn = sink;
	f->sink.ctx = f;
	f->s = malloc(sizeof(*f->s));
	assert_non_null(f->s);
	assert_int_equal(pd_sessions_init(f->s), 0);
	f->ctx.conf = &f->c;
	f->ctx.sink = &f->sink;
	f->ctx.sessions = f->s;
	f->ctx.now = fake_now;
	fake_ms += 86400000LL * 30; /* each test far from the last */
	ag_guard_set_clock(fake_now);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	pd_sessions_destroy(f->s);
	free(f->s);
	ag_conf_free(&f->c);
	ag_store_forget_all();
	tu_rmrf(f->dir);
	free(f);
	return 0;
}

/* One request; returns the reply's status (or -1000 - HTTP status). */
static int req(struct fx *f, enum pd_command cmd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int req(struct fx *f, enum pd_command cmd, const char *fmt, ...)
{
	char body[2048], reply[512], why[256];
	size_t rlen = 0;
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	int http = pd_handle(&f->ctx, cmd, body, strlen(body), reply, sizeof(reply), &rlen, why,
			     sizeof(why));
	assert_int_equal(rlen, strlen(reply));
	if (http != 200)
		return -1000 - http;
	assert_int_equal(sscanf(reply, "{\"status\":%d,\"msg\":\"\"}", &status), 1);
	return status;
}

static int allow(struct fx *f, const char *user, const char *ip, const char *pw, const char *sess)
{
	return req(f, PD_CMD_ALLOW,
		   "{\"login\":\"%s\",\"remote\":\"%s\",\"protocol\":\"imap\",\"pwhash\":\"%s\",\"session_id\":\"%s\"}",
		   user, ip, pw, sess);
}

static int report(struct fx *f, const char *user, const char *ip, const char *pw, const char *sess,
		  bool success, bool policy_reject)
{
	return req(f, PD_CMD_REPORT,
		   "{\"login\":\"%s\",\"remote\":\"%s\",\"protocol\":\"imap\",\"pwhash\":\"%s\",\"session_id\":\"%s\","
		   "\"success\":%s,\"policy_reject\":%s}",
		   user, ip, pw, sess, success ? "true" : "false", policy_reject ? "true" : "false");
}

/* What Dovecot does for one login with the default settings: allow; if
 * refused, a report with policy_reject; else (after its delay) the
 * password check, for a right one a second allow, then the report.
 * Returns the first allow's status. */
static int login(struct fx *f, const char *user, const char *ip, const char *pw, bool right)
{
	static unsigned seq;
	char sess[32];

	snprintf(sess, sizeof(sess), "sess%u", ++seq);
	int st = allow(f, user, ip, pw, sess);
	if (st < 0) {
		assert_int_equal(report(f, user, ip, pw, sess, false, true), 0);
		return st;
	}
	fake_ms += (int64_t)st * 1000 + 5;
	if (right && allow(f, user, ip, pw, sess) < 0) {
		assert_int_equal(report(f, user, ip, pw, sess, false, true), 0);
		return st;
	}
	assert_int_equal(report(f, user, ip, pw, sess, right, false), 0);
	return st;
}

static int lines(struct fx *f, const char *a, const char *b)
{
	const char *needles[] = { a, b, NULL }; /* b NULL: a alone */
	return tu_count_lines(f->log, needles);
}

static int nlines(struct fx *f)
{
	const char *needles[] = { "time=", NULL };
	return tu_count_lines(f->log, needles);
}

/* Brute force: each wrong password one line result=fail; the 10th bans;
 * then refused (status -1), the right password too; a policy_reject
 * report adds nothing. service= is the protocol. */
static void test_brute_force(void **state)
{
	struct fx *f = *state;
	char pw[32];
	int st[12];

	f->c.tarpit_base = 500;
	f->c.tarpit_max = 2000;
	f->c.tarpit_slots = 100;
	for (int i = 0; i < 12; i++) {
		snprintf(pw, sizeof(pw), "h%d", i);
		st[i] = login(f, "alice", "203.0.113.5", pw, false);
		fake_ms += 100;
	}
	/* tarpit from the 4th: 500 ms doubling, in Dovecot's whole seconds */
	static const int want[] = { 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, -1, -1 };
	for (int i = 0; i < 12; i++) {
		if (st[i] != want[i])
			print_error("attempt %d: status %d, want %d\n", i + 1, st[i], want[i]);
		assert_int_equal(st[i], want[i]);
	}
	assert_int_equal(nlines(f), 12);
	assert_int_equal(lines(f, "result=fail", "service=imap"), 10);
	assert_int_equal(lines(f, "event=ban", NULL), 1);
	assert_int_equal(lines(f, "result=unchecked action=refuse reason=banned", NULL), 2);
	/* the delay Dovecot applied is the one in the attempt's line */
	assert_int_equal(lines(f, "action=tarpit reason=score delay_ms=1000 ", NULL), 2);
	assert_int_equal(lines(f, "action=tarpit reason=score delay_ms=2000 ", NULL), 5);
	/* the right password from there: refused, one line */
	assert_int_equal(login(f, "alice", "203.0.113.5", "right", true), -1);
	assert_int_equal(nlines(f), 13);
	assert_int_equal(lines(f, "result=success", NULL), 0);
	assert_int_equal(f->nwarn, 0);
}

/* A report with policy_reject (our own refusal) is not a second failure;
 * one without a session is still recorded. */
static void test_policy_reject_once(void **state)
{
	struct fx *f = *state;

	f->c.ip_ban_after = 3;
	f->c.tarpit_free = 100;
	for (int i = 0; i < 3; i++)
		assert_int_equal(login(f, "bob", "198.51.100.9", i == 0 ? "a" : i == 1 ? "b" : "c", false), 0);
	assert_int_equal(lines(f, "event=ban", NULL), 1);
	/* refused: the report Dovecot sends then carries policy_reject */
	for (int i = 0; i < 5; i++)
		assert_int_equal(login(f, "bob", "198.51.100.9", "d", false), -1);
	assert_int_equal(lines(f, "result=fail", NULL), 3);
	assert_int_equal(lines(f, "reason=banned", NULL), 5);
	assert_int_equal(nlines(f), 8);
	/* a report with neither session nor allow: recorded as it says */
	assert_int_equal(req(f, PD_CMD_REPORT, "{\"login\":\"eve\",\"remote\":\"192.0.2.99\",\"success\":false}"), 0);
	assert_int_equal(lines(f, "user=\"eve\" rhost=192.0.2.99 result=fail action=allow", NULL), 1);
	assert_int_equal(lines(f, "service=dovecot", NULL), 1);
}

/* The same wrong password again does not count toward the user's lock
 * (repeat=yes), unless the mechanism hashed no password. */
static void test_same_password(void **state)
{
	struct fx *f = *state;
	char ip[32];

	f->c.user_lock_after = 3;
	f->c.tarpit_free = 100;
	for (int i = 0; i < 6; i++) {
		snprintf(ip, sizeof(ip), "192.0.2.%d", 10 + i % 2);
		assert_int_equal(login(f, "carol", ip, "stale", false), 0);
	}
	/* two places, the first failure of each counts: no lock */
	assert_int_equal(lines(f, "event=lock", NULL), 0);
	assert_int_equal(lines(f, "repeat=yes", NULL), 4);
	assert_int_equal(login(f, "carol", "192.0.2.10", "right", true), 0);
	assert_int_equal(lines(f, "result=success", NULL), 1);

	/* CRAM-MD5: Dovecot hashes no password, every guess the same hash */
	for (int i = 0; i < 3; i++) {
		char sess[16];
		snprintf(sess, sizeof(sess), "cram%d", i);
		assert_int_equal(req(f, PD_CMD_ALLOW,
				     "{\"login\":\"dan\",\"remote\":\"192.0.2.20\",\"pwhash\":\"00\",\"mech\":\"CRAM-MD5\",\"session_id\":\"%s\"}",
				     sess), 0);
		assert_int_equal(req(f, PD_CMD_REPORT,
				     "{\"login\":\"dan\",\"remote\":\"192.0.2.20\",\"pwhash\":\"00\",\"mech\":\"CRAM-MD5\",\"session_id\":\"%s\",\"success\":false}",
				     sess), 0);
	}
	assert_int_equal(lines(f, "user=\"dan\"", "event=lock"), 1);
	assert_int_equal(lines(f, "user=\"dan\"", "repeat=yes"), 0);
}

/* The allow Dovecot sends after a right password (auth_policy_check_after_auth)
 * is not a second delay; the report's line carries the first one's verdict. */
static void test_after_auth(void **state)
{
	struct fx *f = *state;

	f->c.tarpit_free = 1;
	f->c.tarpit_base = 1500;
	f->c.tarpit_max = 1500;
	assert_int_equal(login(f, "erin", "192.0.2.30", "x", false), 0);
	assert_int_equal(allow(f, "erin", "192.0.2.30", "y", "S1"), 2);
	/* too soon for Dovecot's delay of 2 s: not the allow after the check */
	fake_ms += 500;
	assert_int_equal(allow(f, "erin", "192.0.2.30", "y", "S1"), 2);
	fake_ms += 2100;
	assert_int_equal(allow(f, "erin", "192.0.2.30", "y", "S1"), 0);
	assert_int_equal(report(f, "erin", "192.0.2.30", "y", "S1", true, false), 0);
	assert_int_equal(lines(f, "result=success action=tarpit reason=score delay_ms=2000", NULL), 1);
	/* the entry went with the report: a next login in the same session,
	 * long after, is a first allow again (the source's failures stay) */
	fake_ms += 5000;
	assert_int_equal(allow(f, "erin", "192.0.2.30", "y", "S1"), 2);
	assert_int_equal(nlines(f), 2);
}

/* A refusal in the allow after the password check: result=success (the
 * password was right), and its report adds nothing. */
static void test_after_auth_refused(void **state)
{
	struct fx *f = *state;
	char err[256];

	f->c.tarpit_free = 100;
	assert_int_equal(allow(f, "gina", "192.0.2.40", "p", "S2"), 0);
	/* an admin ban lands while the password is being checked */
	assert_int_equal(ag_conf_set(&f->c, "deny", "192.0.2.40", err, sizeof(err)), 0);
	fake_ms += 10;
	assert_int_equal(allow(f, "gina", "192.0.2.40", "p", "S2"), -1);
	assert_int_equal(report(f, "gina", "192.0.2.40", "p", "S2", false, true), 0);
	assert_int_equal(nlines(f), 1);
	assert_int_equal(lines(f, "result=success action=refuse reason=deny", NULL), 1);
}

/* A malformed request: 400 with a JSON reason, nothing recorded. */
static void test_handle_bad(void **state)
{
	struct fx *f = *state;
	char reply[512], why[256];
	size_t rlen;
	static const char *bodies[] = { "", "{", "{\"login\":\"a\"}", "[1,2]", "{\"login\":\"a\",\"remote\":\"\",\"success\":\"no\"}" };

	for (size_t i = 0; i < AG_ARRAY_LEN(bodies); i++) {
		for (int cmd = PD_CMD_NONE; cmd <= PD_CMD_REPORT; cmd++) {
			why[0] = '\0';
			int http = pd_handle(&f->ctx, (enum pd_command)cmd, bodies[i], strlen(bodies[i]), reply,
					     sizeof(reply), &rlen, why, sizeof(why));
			if (cmd == PD_CMD_ALLOW && i == 4)
				assert_int_equal(http, 200); /* success is a report's */
			else
				assert_int_equal(http, 400);
			if (http == 400) {
				assert_true(why[0] != '\0');
				assert_memory_equal(reply, "{\"error\":\"", 10);
				assert_int_equal(rlen, strlen(reply));
			}
		}
	}
	/* a reason with quotes comes out as valid JSON */
	assert_int_equal(pd_handle(&f->ctx, PD_CMD_ALLOW, "{\"remote\":\"\"}", 13, reply, sizeof(reply),
				   &rlen, why, sizeof(why)), 400);
	assert_string_equal(reply, "{\"error\":\"member \\\"login\\\" is missing (auth_policy_request_attributes must name it)\"}");
	assert_int_equal(nlines(f), 0); /* the one well-formed allow went on: no line */
}

/* The table is bounded: many sessions overwrite the oldest, nothing breaks. */
static void test_sessions_bounded(void **state)
{
	struct fx *f = *state;
	char sess[32];

	f->c.log_kind = AG_LOG_NONE;
	for (int i = 0; i < PD_SESSIONS * 2; i++) {
		snprintf(sess, sizeof(sess), "s%d", i);
		assert_int_equal(allow(f, "hank", "192.0.2.50", "p", sess), 0);
	}
	/* the newest are there: their report finds the ticket (no crash,
	 * no lost report either way) */
	snprintf(sess, sizeof(sess), "s%d", PD_SESSIONS * 2 - 1);
	assert_int_equal(report(f, "hank", "192.0.2.50", "p", sess, true, false), 0);
	snprintf(sess, sizeof(sess), "s%d", 0);
	assert_int_equal(report(f, "hank", "192.0.2.50", "p", sess, true, false), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command),
		cmocka_unit_test(test_parse_dovecot),
		cmocka_unit_test(test_attempt_mapping),
		cmocka_unit_test(test_pwhash_mech),
		cmocka_unit_test(test_parse_hostile),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_listen),
		cmocka_unit_test_setup_teardown(test_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy_reject_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_password, setup, teardown),
		cmocka_unit_test_setup_teardown(test_after_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_after_auth_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handle_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sessions_bounded, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
