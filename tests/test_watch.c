/* test_watch.c - authguard-watch's rules and syslog line parser
 * (watch/rules.c): the built-in sets on real and forged lines, admin
 * rules, and the hostile inputs a log follower must survive. */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ag.h"
#include "rules.h"

#define SLEN ((size_t)-1)

static struct aw_rules *rules_of(const char *sets, const char *const *defs)
{
	struct ag_strlist l = { 0 };
	char *v[16];
	char err[512] = "";
	struct aw_rules *r = NULL;

	for (; defs != NULL && defs[l.n] != NULL; l.n++)
		v[l.n] = (char *)defs[l.n];
	l.v = v;
	int rc = aw_rules_new(sets, &l, &r, err, sizeof(err));
	if (rc != 0)
		print_error("aw_rules_new: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(r);
	return r;
}

static enum aw_outcome match(struct aw_rules *r, const char *ident, const char *msg, size_t len,
			     struct aw_match *m)
{
	return aw_rules_match(r, ident, strlen(ident), msg, len == SLEN ? strlen(msg) : len, m);
}

struct mcase {
	const char *ident, *msg;
	enum aw_outcome want;
	const char *service, *user, *addr;
};

static void run_cases(struct aw_rules *r, const struct mcase *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct aw_match m;
		enum aw_outcome o = match(r, cs[i].ident, cs[i].msg, SLEN, &m);
		if (o != cs[i].want)
			print_error("case %zu (%s: %s): outcome %d, want %d\n", i, cs[i].ident,
				    cs[i].msg, o, cs[i].want);
		assert_int_equal(o, cs[i].want);
		if (o != AW_SUCCESS && o != AW_FAILURE)
			continue;
		if (strcmp(m.user, cs[i].user) != 0 || strcmp(m.addr, cs[i].addr) != 0 ||
		    strcmp(m.service, cs[i].service) != 0)
			print_error("case %zu: service '%s' user '%s' addr '%s'\n", i, m.service,
				    m.user, m.addr);
		assert_string_equal(m.service, cs[i].service);
		assert_string_equal(m.user, cs[i].user);
		assert_int_equal(m.user_len, strlen(cs[i].user));
		assert_string_equal(m.addr, cs[i].addr);
		assert_non_null(m.rule);
	}
}

/* ---- Cyrus ------------------------------------------------------------------ */

/* The lines Cyrus imapd 3.6 and pop3d write, and the ones that must not
 * count: SASL mechanisms (the plugin recorded those), back-end faults,
 * the plugin's own refusals, invalid names. */
static const struct mcase cyrus_cases[] = {
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "imap", "alice", "127.0.0.1" },
	{ "cyrus/imap", "login: localhost [127.0.0.1] alice plaintext User logged in SESSIONID=<cyrus-1234-1733090000-1-123456789>",
	  AW_SUCCESS, "imap", "alice", "127.0.0.1" },
	{ "cyrus/imaps", "login: mail.example.net [2001:db8::7] bob plaintext+TLS User logged in SESSIONID=<x>",
	  AW_SUCCESS, "imap", "bob", "2001:db8::7" },
	{ "imapd", "login: [192.0.2.9] carol plaintext User logged in",
	  AW_SUCCESS, "imap", "carol", "192.0.2.9" },
	{ "imapd", "badlogin: [192.0.2.9] plaintext (carol@example.org) [SASL(-13): user not found: checkpass failed]",
	  AW_FAILURE, "imap", "carol@example.org", "192.0.2.9" },
	{ "cyrus/pop3", "badlogin: localhost [127.0.0.1] plaintext (dave) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "pop", "dave", "127.0.0.1" },
	{ "pop3d", "login: localhost [127.0.0.1] dave plaintext User logged in SESSIONID=<cyrus-9>",
	  AW_SUCCESS, "pop", "dave", "127.0.0.1" },
	/* AUTHENTICATE PLAIN and friends: the SASL plugin recorded them */
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] PLAIN (alice) [SASL(-13): authentication failure: Password verification failed]",
	  AW_NONE, NULL, NULL, NULL },
	{ "cyrus/imap", "login: localhost [127.0.0.1] alice PLAIN User logged in SESSIONID=<x>",
	  AW_NONE, NULL, NULL, NULL },
	{ "cyrus/pop3", "badlogin: localhost [127.0.0.1] LOGIN (alice) [authentication failure]",
	  AW_NONE, NULL, NULL, NULL },
	{ "cyrus/imap", "login: localhost [127.0.0.1] alice CRAM-MD5+TLS User logged in",
	  AW_NONE, NULL, NULL, NULL },
	/* refused by the plugin's canonuser check, which counted and logged it */
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-13): authentication failure: authguard: refused]",
	  AW_IGNORE, NULL, NULL, NULL },
	{ "cyrus/pop3", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-13): authentication failure: authguard: refused]",
	  AW_IGNORE, NULL, NULL, NULL },
	/* back-end faults are never counted */
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-1): generic failure: checkpass failed]",
	  AW_NONE, NULL, NULL, NULL },
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-4): no mechanism available: x]",
	  AW_NONE, NULL, NULL, NULL },
	/* no password was checked */
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] plaintext (al ice) invalid user", AW_NONE, NULL, NULL, NULL },
	{ "cyrus/imap", "badlogin: localhost [127.0.0.1] anonymous login refused", AW_NONE, NULL, NULL, NULL },
	/* other programs, other services */
	{ "postfix/smtpd", "badlogin: localhost [127.0.0.1] plaintext (alice) [SASL(-13): authentication failure: x]",
	  AW_NONE, NULL, NULL, NULL },
	{ "cyrus/lmtp", "login: localhost [127.0.0.1] alice plaintext User logged in", AW_NONE, NULL, NULL, NULL },
	{ "cyrus/imap", "", AW_NONE, NULL, NULL, NULL },
	/* more text after the line's end: not Cyrus' line */
	{ "cyrus/imap", "login: localhost [127.0.0.1] alice plaintext User logged in SESSIONID=<x> trailing",
	  AW_NONE, NULL, NULL, NULL },
};

static void test_cyrus(void **state)
{
	(void)state;
	struct aw_rules *r = rules_of("cyrus", NULL);

	assert_int_equal(aw_rules_count(r), 6);
	run_cases(r, cyrus_cases, sizeof(cyrus_cases) / sizeof(cyrus_cases[0]));
	aw_rules_free(r);
}

/* A user name is the client's text: a fake "[addr]", a fake detail, a
 * fake refusal, parentheses, brackets. The address is always the one
 * the server wrote; a client cannot make its failure vanish or land on
 * another address. */
static const struct mcase forged_cases[] = {
	/* a fake address inside the user: the server's comes first */
	{ "cyrus/imap", "badlogin: localhost [203.0.113.5] plaintext (x [192.0.2.1] y) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "imap", "x [192.0.2.1] y", "203.0.113.5" },
	{ "cyrus/imap", "badlogin: localhost [203.0.113.5] plaintext (localhost [192.0.2.1] plaintext (bob) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "imap", "localhost [192.0.2.1] plaintext (bob", "203.0.113.5" },
	/* a user that imitates the plugin's refusal: the real detail, at the
	 * end, is a wrong password, so it counts */
	{ "cyrus/imap", "badlogin: localhost [203.0.113.5] plaintext (x) [SASL(-13): authentication failure: authguard: refused) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "imap", "x) [SASL(-13): authentication failure: authguard: refused", "203.0.113.5" },
	/* a user that imitates a back-end fault: counts all the same */
	{ "cyrus/imap", "badlogin: localhost [203.0.113.5] plaintext (x) [SASL(-1): generic failure: y) [SASL(-13): authentication failure: checkpass failed]",
	  AW_FAILURE, "imap", "x) [SASL(-1): generic failure: y", "203.0.113.5" },
	/* the server's host name field holds no brackets or blanks: a line
	 * whose "host" is not one word is no Cyrus line */
	{ "cyrus/imap", "badlogin: evil [192.0.2.1] x [203.0.113.5] plaintext (u) [SASL(-13): authentication failure: z]",
	  AW_NONE, NULL, NULL, NULL },
	/* an address field with a blank in it is no address field */
	{ "cyrus/imap", "badlogin: localhost [203.0.113.5 ] plaintext (u) [SASL(-13): authentication failure: z]",
	  AW_NONE, NULL, NULL, NULL },
	/* a success line's user is what SASL authenticated, one word */
	{ "cyrus/imap", "login: localhost [203.0.113.5] a b plaintext User logged in", AW_NONE, NULL, NULL, NULL },
};

static void test_cyrus_forged(void **state)
{
	(void)state;
	struct aw_rules *r = rules_of("cyrus", NULL);

	run_cases(r, forged_cases, sizeof(forged_cases) / sizeof(forged_cases[0]));
	aw_rules_free(r);
}

/* ---- the SMTP server of issue 12 ---------------------------------------------- */

static const struct mcase domino_cases[] = {
	{ "domino", "SMTP Server: Authentication failed for user jdoe ; connecting host 198.51.100.20",
	  AW_FAILURE, "smtp", "jdoe", "198.51.100.20" },
	{ "domino", "SMTP Server: Authentication succeeded for user jdoe ; connecting host 198.51.100.20",
	  AW_SUCCESS, "smtp", "jdoe", "198.51.100.20" },
	{ "domino", "SMTP Server: Authentication failed for user John Doe/Acme ; connecting host 2001:db8::25",
	  AW_FAILURE, "smtp", "John Doe/Acme", "2001:db8::25" },
	/* the host comes after the user: a user carrying a fake host still
	 * has the real one after it, and the pattern takes the last */
	{ "domino", "SMTP Server: Authentication failed for user x ; connecting host 192.0.2.1 ; connecting host 198.51.100.20",
	  AW_FAILURE, "smtp", "x ; connecting host 192.0.2.1", "198.51.100.20" },
	/* a line that ends with something else is not the server's */
	{ "domino", "SMTP Server: Authentication failed for user x ; connecting host 192.0.2.1 extra", AW_NONE, NULL, NULL, NULL },
	{ "domino", "SMTP Server: Authentication failed for user   ; connecting host 192.0.2.1", AW_FAILURE, "smtp", " ", "192.0.2.1" },
	/* no user */
	{ "domino", "SMTP Server: Authentication failed for user  ; connecting host 192.0.2.1", AW_NONE, NULL, NULL, NULL },
	{ "domino", "SMTP Server: Authentication failed for user ; connecting host 192.0.2.1", AW_NONE, NULL, NULL, NULL },
};

static void test_domino(void **state)
{
	(void)state;
	struct aw_rules *r = rules_of("domino", NULL);

	run_cases(r, domino_cases, sizeof(domino_cases) / sizeof(domino_cases[0]));
	aw_rules_free(r);
}

/* A user name long enough that a syslog daemon could have cut the line
 * (and with it the real host at its end) counts for nothing. */
static void test_long_user(void **state)
{
	(void)state;
	struct aw_rules *r = rules_of("domino cyrus", NULL);
	char line[AW_LINE_MAX + 64], user[AW_USER_MAX + 2];
	struct aw_match m;

	memset(user, 'u', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	snprintf(line, sizeof(line),
		 "SMTP Server: Authentication failed for user %s ; connecting host 192.0.2.1", user);
	assert_int_equal(match(r, "domino", line, SLEN, &m), AW_NONE);
	user[AW_USER_MAX] = '\0'; /* exactly the cap: fine */
	snprintf(line, sizeof(line),
		 "SMTP Server: Authentication failed for user %s ; connecting host 192.0.2.1", user);
	assert_int_equal(match(r, "domino", line, SLEN, &m), AW_FAILURE);
	assert_int_equal(m.user_len, AW_USER_MAX);
	/* a message past AW_LINE_MAX is not looked at */
	char *big = malloc(AW_LINE_MAX + 2);
	assert_non_null(big);
	memset(big, 'x', AW_LINE_MAX + 1);
	memcpy(big, "badlogin: [192.0.2.1] plaintext (", 33);
	memcpy(big + AW_LINE_MAX + 1 - 48, ") [SASL(-13): authentication failure: x]", 41);
	big[AW_LINE_MAX + 1] = '\0';
	assert_int_equal(match(r, "cyrus/imap", big, strlen(big), &m), AW_NONE);
	free(big);
	aw_rules_free(r);
}

/* NUL bytes, invalid UTF-8, control bytes: matched as bytes, never
 * crash, and the user is carried byte for byte with its length. */
static void test_bytes(void **state)
{
	(void)state;
	struct aw_rules *r = rules_of("cyrus", NULL);
	static const char line[] = "badlogin: localhost [203.0.113.5] plaintext (a\0b\xff\xc3(\x1b[1m) [SASL(-13): authentication failure: x]";
	struct aw_match m;

	assert_int_equal(match(r, "cyrus/imap", line, sizeof(line) - 1, &m), AW_FAILURE);
	assert_int_equal(m.user_len, 10);
	assert_memory_equal(m.user, "a\0b\xff\xc3(\x1b[1m", 10);
	assert_string_equal(m.addr, "203.0.113.5");
	/* invalid UTF-8 in the ident and an address field */
	assert_int_equal(match(r, "cyrus/im\xffp", line, sizeof(line) - 1, &m), AW_NONE);
	static const char l2[] = "badlogin: localhost [203.0\xff.113.5] plaintext (u) [SASL(-13): x]";
	assert_int_equal(match(r, "cyrus/imap", l2, sizeof(l2) - 1, &m), AW_NONE);
	static const char l2b[] = "badlogin: localhost [203.0\0.113.5] plaintext (u) [SASL(-13): x]";
	assert_int_equal(match(r, "cyrus/imap", l2b, sizeof(l2b) - 1, &m), AW_NONE);
	/* a newline in a journal message (a user "alice\n") is a byte like
	 * any other: the line still counts, for that user and address */
	static const char l4[] = "badlogin: localhost [203.0.113.9] plaintext (alice\n) [SASL(-13): authentication failure: x]";
	assert_int_equal(match(r, "cyrus/imap", l4, sizeof(l4) - 1, &m), AW_FAILURE);
	assert_string_equal(m.user, "alice\n");
	assert_string_equal(m.addr, "203.0.113.9");
	/* a NUL before the line's end is no end */
	static const char l3[] = "login: localhost [203.0.113.5] alice plaintext User logged in\0 SESSIONID=<x>";
	assert_int_equal(match(r, "cyrus/imap", l3, sizeof(l3) - 1, &m), AW_NONE);
	aw_rules_free(r);
}

/* ---- the admin's rules --------------------------------------------------------- */

/* The mail gateway of issue 12: one line per attempt with time, user,
 * address and result, the user last (so the pattern reads the address
 * from the front), and a second form with the user first. */
static void test_admin_rules(void **state)
{
	(void)state;
	static const char *const defs[] = {
		"gw-noise gatewayd ignore auth time=\\S+ user=probe .*",
		"gateway gatewayd result auth time=\\S+ addr=(?<addr>[0-9a-fA-F.:]+) result=(?<result>\\w+) user=(?<user>.+)",
		"gw2 gw2d result (?<user>.+) from (?<addr>[0-9a-fA-F.:]+) (?<service>imap|smtp) (?<result>\\w+) # a '#' is no comment",
		NULL,
	};
	static const struct mcase cases[] = {
		{ "gatewayd", "auth time=2026-12-01T22:00:00Z addr=192.0.2.44 result=failed user=alice", AW_FAILURE, "gateway", "alice", "192.0.2.44" },
		{ "gatewayd", "auth time=2026-12-01T22:00:00Z addr=192.0.2.44 result=OK user=alice", AW_SUCCESS, "gateway", "alice", "192.0.2.44" },
		{ "gatewayd", "auth time=2026-12-01T22:00:00Z addr=192.0.2.44 result=pending user=alice", AW_NONE, NULL, NULL, NULL },
		/* the user is last: a fake address in it is only a user name */
		{ "gatewayd", "auth time=t addr=192.0.2.44 result=failed user=x addr=198.51.100.1 result=ok", AW_FAILURE, "gateway", "x addr=198.51.100.1 result=ok", "192.0.2.44" },
		/* the first matching rule decides: an ignore rule first */
		{ "gatewayd", "auth time=t user=probe addr=192.0.2.44 result=failed", AW_IGNORE, NULL, NULL, NULL },
		{ "gw2d", "bob from 2001:db8::1 imap rejected # a '#' is no comment", AW_FAILURE, "imap", "bob", "2001:db8::1" },
		/* user first: the fields after it are anchored at the end */
		{ "gw2d", "x from 192.0.2.1 imap ok from 2001:db8::1 smtp rejected # a '#' is no comment", AW_FAILURE, "smtp", "x from 192.0.2.1 imap ok", "2001:db8::1" },
		{ "gw2d", "bob from 2001:db8::1 imap rejected", AW_NONE, NULL, NULL, NULL },
		/* the ident is anchored too */
		{ "gatewayd2", "auth time=t addr=192.0.2.44 result=failed user=alice", AW_NONE, NULL, NULL, NULL },
		{ "xgatewayd", "auth time=t addr=192.0.2.44 result=failed user=alice", AW_NONE, NULL, NULL, NULL },
		/* the built-in set comes after */
		{ "imapd", "login: [192.0.2.9] carol plaintext User logged in", AW_SUCCESS, "imap", "carol", "192.0.2.9" },
	};
	struct aw_rules *r = rules_of("cyrus", defs);

	assert_int_equal(aw_rules_count(r), 9);
	run_cases(r, cases, sizeof(cases) / sizeof(cases[0]));
	aw_rules_free(r);
}

static void bad_rules(const char *sets, const char *def, const char *want)
{
	char *v[1] = { (char *)def };
	struct ag_strlist l = { v, def != NULL };
	char err[512] = "";
	struct aw_rules *r = (struct aw_rules *)&l;

	int rc = aw_rules_new(sets, &l, &r, err, sizeof(err));
	if (rc != AG_ECONF || strstr(err, want) == NULL)
		print_error("'%s' / '%s': rc %d, err '%s' (want '%s')\n", sets ? sets : "",
			    def ? def : "", rc, err, want);
	assert_int_equal(rc, AG_ECONF);
	assert_null(r);
	assert_non_null(strstr(err, want));
}

static void test_rule_errors(void **state)
{
	(void)state;
	bad_rules("cyrus, nonesuch", NULL, "no built-in rule set 'nonesuch'");
	bad_rules("", NULL, "no rules");
	bad_rules(NULL, "x y", "want NAME IDENT OUTCOME REGEX");
	bad_rules(NULL, "x y success", "no REGEX");
	bad_rules(NULL, "x y maybe (?<user>a)(?<addr>b)", "outcome 'maybe'");
	bad_rules(NULL, "x y success (?<user>a", "rule x: message pattern, at offset");
	bad_rules(NULL, "x ( success (?<user>a)(?<addr>b)", "rule x: ident pattern");
	bad_rules(NULL, "x y success (?<user>a)", "no (?<addr>...)");
	bad_rules(NULL, "x y failure (?<addr>a)", "no (?<user>...)");
	bad_rules(NULL, "x y result (?<user>a)(?<addr>b)", "no (?<result>...)");
	bad_rules(NULL, "x/y y success (?<user>a)(?<addr>b)", "rule name 'x/y'");
	bad_rules(NULL, "x y success (*UTF)(?<user>a)(?<addr>b)", "rule x: message pattern");
	bad_rules("cyrus", "cyrus-imap-ok y success (?<user>a)(?<addr>b)", "defined twice");
}

/* A pattern that backtracks without end stops at the match limit: no
 * match, in bounded time. */
static void test_match_limit(void **state)
{
	(void)state;
	static const char *const defs[] = { "slow x failure (?<user>(a+)+)(?<addr>b)", NULL };
	struct aw_rules *r = rules_of(NULL, defs);
	char line[64];
	struct aw_match m;

	memset(line, 'a', 40);
	line[40] = 'c';
	line[41] = '\0';
	assert_int_equal(match(r, "x", line, SLEN, &m), AW_NONE);
	assert_int_equal(match(r, "x", "aab", SLEN, &m), AW_FAILURE);
	aw_rules_free(r);
}

static void test_result_words(void **state)
{
	(void)state;
	assert_int_equal(aw_result_word("success", 7), AW_SUCCESS);
	assert_int_equal(aw_result_word("OK", 2), AW_SUCCESS);
	assert_int_equal(aw_result_word("Accepted", 8), AW_SUCCESS);
	assert_int_equal(aw_result_word("FAILED", 6), AW_FAILURE);
	assert_int_equal(aw_result_word("rejected", 8), AW_FAILURE);
	assert_int_equal(aw_result_word("okay", 4), AW_NONE);
	assert_int_equal(aw_result_word("ok", 1), AW_NONE);
	assert_int_equal(aw_result_word("", 0), AW_NONE);
}

/* ---- the syslog line --------------------------------------------------------- */

static void test_line_parse(void **state)
{
	(void)state;
	struct aw_line l;
	/* 2026-12-01 22:01:42 local time */
	struct tm t = { .tm_year = 126, .tm_mon = 11, .tm_mday = 1, .tm_hour = 22, .tm_min = 1,
			.tm_sec = 42, .tm_isdst = -1 };
	int64_t when = (int64_t)mktime(&t) * 1000;
	int64_t now = when + 5000;
	static const char l1[] = "Dec  1 22:01:42 mail cyrus/imap[4242]: badlogin: localhost [127.0.0.1] plaintext (a) [x]";

	assert_int_equal(aw_line_parse(l1, sizeof(l1) - 1, now, &l), 0);
	assert_true(l.time_ms == when);
	assert_int_equal(l.host_len, 4);
	assert_memory_equal(l.host, "mail", 4);
	assert_int_equal(l.ident_len, 10);
	assert_memory_equal(l.ident, "cyrus/imap", 10);
	assert_int_equal(l.msg_len, strlen("badlogin: localhost [127.0.0.1] plaintext (a) [x]"));
	assert_memory_equal(l.msg, "badlogin:", 9);

	/* no pid; two-digit day */
	static const char l2[] = "Dec 01 22:01:42 mail imapd: login: x";
	assert_int_equal(aw_line_parse(l2, sizeof(l2) - 1, now, &l), 0);
	assert_true(l.time_ms == when);
	assert_int_equal(l.ident_len, 5);

	/* a December line read on January 2nd is last year's */
	struct tm j = { .tm_year = 127, .tm_mon = 0, .tm_mday = 2, .tm_hour = 1, .tm_isdst = -1 };
	assert_int_equal(aw_line_parse(l1, sizeof(l1) - 1, (int64_t)mktime(&j) * 1000, &l), 0);
	assert_true(l.time_ms == when);
	/* a line up to a day ahead (clock skew, a zone change) stays this year */
	assert_int_equal(aw_line_parse(l1, sizeof(l1) - 1, when - 3600 * 1000, &l), 0);
	assert_true(l.time_ms == when);

	/* RFC 3339 */
	static const char l3[] = "2026-12-01T22:01:42.123456+01:00 mail cyrus/pop3[7]: login: y";
	assert_int_equal(aw_line_parse(l3, sizeof(l3) - 1, now, &l), 0);
	assert_true(l.time_ms == 1796162502123LL - 3600 * 1000);
	assert_memory_equal(l.ident, "cyrus/pop3", 10);
	static const char l4[] = "2026-12-01T22:01:42Z mail x: y";
	assert_int_equal(aw_line_parse(l4, sizeof(l4) - 1, now, &l), 0);
	assert_true(l.time_ms == 1796162502000LL);

	/* shapes that are not a syslog line */
	static const char *const bad[] = {
		"", "Dec  1 22:01:42", "Dec  1 22:01:42 mail", "Dec  1 22:01:42 mail imapd",
		"Dec  1 22:01:42 mail imapd[12] x", "Dec  1 22:01:42 mail imapd[]: x",
		"Dec  1 22:01:42 mail imapd[1a]: x", "Dec  1 22:01:42 mail imapd:",
		"Dec  1 22:01:42 mail imapd: ", "Foo  1 22:01:42 mail imapd: x",
		"Dec 32 22:01:42 mail imapd: x", "Dec  1 24:01:42 mail imapd: x",
		"Dec  1 22:01:42  imapd: x", "2026-13-01T22:01:42Z mail x: y",
		"2026-12-01T22:01:42 mail x: y", "2026-12-01T22:01:42.Z mail x: y",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (aw_line_parse(bad[i], strlen(bad[i]), now, &l) != AG_EINVAL)
			print_error("'%s' parsed\n", bad[i]);
		assert_int_equal(aw_line_parse(bad[i], strlen(bad[i]), now, &l), AG_EINVAL);
	}
	/* too long */
	char *big = malloc(AW_LINE_MAX + 1);
	assert_non_null(big);
	memset(big, 'x', AW_LINE_MAX + 1);
	memcpy(big, l1, sizeof(l1) - 1);
	assert_int_equal(aw_line_parse(big, AW_LINE_MAX + 1, now, &l), AG_EINVAL);
	assert_int_equal(aw_line_parse(big, AW_LINE_MAX, now, &l), 0);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cyrus),
		cmocka_unit_test(test_cyrus_forged),
		cmocka_unit_test(test_domino),
		cmocka_unit_test(test_long_user),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_admin_rules),
		cmocka_unit_test(test_rule_errors),
		cmocka_unit_test(test_match_limit),
		cmocka_unit_test(test_result_words),
		cmocka_unit_test(test_line_parse),
	};

	setenv("TZ", "Europe/Berlin", 1);
	tzset();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
