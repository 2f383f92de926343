/* test_log.c - value quoting, the attempt log line and the log file
 * (store/log.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "testutil.h"

#define CANARY 0xA5
#define SLEN ((size_t)-1)
#define T0 1795441286123LL /* 2026-11-23T13:41:26.123Z */
#define T0_TEXT "2026-11-23T13:41:26.123Z"

static size_t count_sub(const char *hay, const char *needle)
{
	size_t n = 0, nl = strlen(needle);

	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + nl, needle))
		n++;
	return n;
}

/* ---- ag_log_quote --------------------------------------------------------- */

struct quote_case {
	const char *in;
	size_t len;
	size_t max;
	const char *want;
};

static const struct quote_case quote_cases[] = {
	{ "bob", SLEN, 128, "\"bob\"" },
	{ "", SLEN, 128, "\"\"" },
	{ NULL, 5, 128, "\"\"" },
	{ "alice@example.com", SLEN, 128, "\"alice@example.com\"" },
	{ "a\"b", SLEN, 128, "\"a\\\"b\"" },
	{ "\"", SLEN, 128, "\"\\\"\"" },
	{ "a\\b", SLEN, 128, "\"a\\\\b\"" },
	{ "\\", SLEN, 128, "\"\\\\\"" },
	{ "\\\"", SLEN, 128, "\"\\\\\\\"\"" },
	{ "a\nb", SLEN, 128, "\"a\\x0ab\"" },
	{ "\r", SLEN, 128, "\"\\x0d\"" },
	{ "\t", SLEN, 128, "\"\\x09\"" },
	{ "\x1b[2J", SLEN, 128, "\"\\x1b[2J\"" },
	{ "\x01\x1f", SLEN, 128, "\"\\x01\\x1f\"" },
	{ "a\0b", 3, 128, "\"a\\x00b\"" },
	{ "\0\0", 2, 128, "\"\\x00\\x00\"" },
	{ "\x7f", SLEN, 128, "\"\\x7f\"" },
	{ "\x80\xff", SLEN, 128, "\"\\x80\\xff\"" },
	{ "\xc3\xa9t\xc3\xa9", SLEN, 128, "\"\\xc3\\xa9t\\xc3\\xa9\"" }, /* UTF-8 "été" */
	{ "\xc0\xaf", SLEN, 128, "\"\\xc0\\xaf\"" },                    /* overlong '/' */
	{ "~!#$%&'()*+,-./:;<>?@[]^_`{|}", SLEN, 128, "\"~!#$%&'()*+,-./:;<>?@[]^_`{|}\"" },
	/* blanks and '=' are escaped too, so " result=" never appears in a value */
	{ " ", SLEN, 128, "\"\\x20\"" },
	{ "=", SLEN, 128, "\"\\x3d\"" },
	{ "a=b c", SLEN, 128, "\"a\\x3db\\x20c\"" },
	{ " result=success", SLEN, 128, "\"\\x20result\\x3dsuccess\"" },
	/* only @len bytes, at most @max of them */
	{ "abcdef", 2, 128, "\"ab\"" },
	{ "abcdef", SLEN, 3, "\"abc\"" },
	{ "abcdef", SLEN, 0, "\"\"" },
	{ "abcdef", SLEN, 6, "\"abcdef\"" },
	{ "\n\n\n\n", SLEN, 2, "\"\\x0a\\x0a\"" },
	{ "ab\"cd", SLEN, 3, "\"ab\\\"\"" },
};

/* Undo ag_log_quote(): returns the byte count, or -1 if @s is not exactly
 * one well-formed quoted value with nothing but escapes for '"', '\\',
 * blanks, '=', control and non-ASCII bytes. */
static long unquote(const char *s, size_t slen, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	if (slen < 2 || s[0] != '"' || s[slen - 1] != '"')
		return -1;
	for (size_t i = 1; i < slen - 1; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch != '\\') {
			if (ch == '"' || ch <= 0x20 || ch >= 0x7f || ch == '=')
				return -1;
			out[n++] = (char)ch;
			continue;
		}
		if (i + 1 < slen - 1 && (s[i + 1] == '"' || s[i + 1] == '\\')) {
			out[n++] = s[++i];
			continue;
		}
		if (i + 3 < slen - 1 && s[i + 1] == 'x' && s[i + 2] != '\0' && s[i + 3] != '\0' &&
		    strchr(hex, s[i + 2]) != NULL && strchr(hex, s[i + 3]) != NULL) {
			unsigned v = (unsigned)((strchr(hex, s[i + 2]) - hex) * 16 +
						(strchr(hex, s[i + 3]) - hex));
			/* only what must be escaped is */
			if (v > 0x20 && v < 0x7f && v != '=' && v != '"' && v != '\\')
				return -1;
			if (v == '"' || v == '\\')
				return -1;
			out[n++] = (char)v;
			i += 3;
			continue;
		}
		return -1;
	}
	return (long)n;
}

static void test_quote_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(quote_cases); i++) {
		const struct quote_case *c = &quote_cases[i];
		size_t len = c->len == SLEN ? strlen(c->in) : c->len;
		char out[600], back[600];

		memset(out, CANARY, sizeof(out));
		size_t n = ag_log_quote(out, sizeof(out), c->in, len, c->max);
		if (strcmp(out, c->want) != 0)
			print_error("case %zu: got %s want %s\n", i, out, c->want);
		assert_string_equal(out, c->want);
		assert_int_equal(n, strlen(out));
		/* and it reads back as the (cut) input */
		long b = unquote(out, n, back);
		size_t kept = c->in == NULL ? 0 : len < c->max ? len : c->max;
		assert_int_equal(b, (long)kept);
		if (kept > 0)
			assert_memory_equal(back, c->in, kept);
	}
}

/* Every byte value, alone: one escape or itself, and it reads back. */
static void test_quote_all_bytes(void **state)
{
	(void)state;
	for (int v = 0; v < 256; v++) {
		char in = (char)v, out[16], back[4];
		size_t n = ag_log_quote(out, sizeof(out), &in, 1, 128);
		bool plain = v > 0x20 && v < 0x7f && v != '"' && v != '\\' && v != '=';

		assert_int_equal(n, plain ? 3 : v == '"' || v == '\\' ? 4 : 6);
		assert_int_equal(unquote(out, n, back), 1);
		assert_int_equal((unsigned char)back[0], v);
		assert_null(strchr(out, '\n'));
		assert_null(strchr(out, ' '));
	}
}

/* Small outputs: never a byte past @outlen, always terminated, never half
 * an escape, and always a well-formed quoted value once there is room for
 * the quotes. */
static void test_quote_small_output(void **state)
{
	static const struct {
		const char *in;
		size_t len;
	} inputs[] = {
		{ "abc", 3 }, { "\n\n\n", 3 }, { "a\"b\\c", 5 }, { "\xff" "a\x00" "b", 4 },
		{ "", 0 }, { "a b=c", 5 }, { "abcdefghijklmnopqrstuvwxyz", 26 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(inputs); i++) {
		char full[256];
		size_t full_n = ag_log_quote(full, sizeof(full), inputs[i].in, inputs[i].len, 128);

		for (size_t outlen = 0; outlen <= full_n + 2; outlen++) {
			unsigned char buf[300];
			char back[300];

			memset(buf, CANARY, sizeof(buf));
			size_t n = ag_log_quote((char *)buf, outlen, inputs[i].in, inputs[i].len, 128);
			for (size_t j = outlen; j < sizeof(buf); j++)
				if (buf[j] != CANARY) {
					print_error("input %zu outlen %zu: byte %zu overwritten\n", i,
						    outlen, j);
					fail();
				}
			if (outlen == 0) {
				assert_int_equal(n, 0);
				continue;
			}
			assert_non_null(memchr(buf, '\0', outlen));
			assert_int_equal(strlen((char *)buf), n);
			assert_true(n < outlen);
			if (outlen < 3) {
				/* no room for "" and a NUL */
				assert_int_equal(n, 0);
				continue;
			}
			/* "" at least, a prefix of the full quoting at an escape
			 * boundary, and it reads back as a prefix of the input */
			long b = unquote((char *)buf, n, back);
			assert_true(b >= 0);
			assert_memory_equal(buf, full, n - 1);
			if (b > 0)
				assert_memory_equal(back, inputs[i].in, (size_t)b);
			if (outlen > full_n)
				assert_string_equal((char *)buf, full);
		}
	}
}

/* ---- ag_log_time ---------------------------------------------------------- */

static void test_log_time(void **state)
{
	static const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ 999, "1970-01-01T00:00:00.999Z" },
		{ 1000, "1970-01-01T00:00:01.000Z" },
		{ T0, T0_TEXT },
		{ 951782400000LL, "2000-02-29T00:00:00.000Z" },
		{ 4107542399999LL, "2100-02-28T23:59:59.999Z" },
		{ 253402300799999LL, "9999-12-31T23:59:59.999Z" },
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		ag_log_time(cases[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
	}
	/* a short buffer is cut, not overrun */
	memset(buf, CANARY, sizeof(buf));
	ag_log_time(T0, buf, 11);
	assert_string_equal(buf, "2026-11-23");
	for (size_t j = 11; j < sizeof(buf); j++)
		assert_int_equal((unsigned char)buf[j], CANARY);
}

/* ---- ag_log_format -------------------------------------------------------- */

static const struct ag_addr addr4 = { AG_AF_INET, 32, { 192, 0, 2, 7 } };
static const struct ag_addr addr6 = { AG_AF_INET6, 128, { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 } };
static const struct ag_addr addr_none = { AG_AF_NONE, 0, { 0 } };

static const char *const line_keys[] = {
	"time", "service", "user", "user_len", "rhost", "rhost_raw", "result", "action",
	"mode", "would", "reason", "delay_ms", "src_score", "user_score", "user_state",
	"familiar", "repeat", "event", "until", "config",
};

struct field {
	char key[32];
	const char *val; /* into the line */
	size_t vlen;
};

/* Split a log line into key=value fields (single spaces between; a value
 * is a bare word or one quoted value). Every key must be known and appear
 * once. Returns the number of fields, or -1 (with a message). */
static int parse_line(const char *line, struct field *f, int max)
{
	const char *p = line;
	int n = 0;

	while (*p != '\0') {
		const char *eq = p;
		while ((*eq >= 'a' && *eq <= 'z') || *eq == '_')
			eq++;
		if (eq == p || *eq != '=' || n >= max) {
			print_error("bad field at '%.40s'\n", p);
			return -1;
		}
		snprintf(f[n].key, sizeof(f[n].key), "%.*s", (int)(eq - p), p);
		const char *v = eq + 1, *end = v;
		if (*v == '"') {
			end = v + 1;
			while (*end != '\0' && *end != '"')
				end += *end == '\\' && end[1] != '\0' ? 2 : 1;
			if (*end != '"') {
				print_error("unterminated value for %s\n", f[n].key);
				return -1;
			}
			end++;
		} else {
			while (*end != '\0' && *end != ' ' && *end != '"')
				end++;
		}
		f[n].val = v;
		f[n].vlen = (size_t)(end - v);
		bool known = false;
		for (size_t k = 0; k < AG_ARRAY_LEN(line_keys); k++)
			known |= strcmp(line_keys[k], f[n].key) == 0;
		for (int j = 0; j < n; j++)
			if (strcmp(f[j].key, f[n].key) == 0) {
				print_error("field %s twice\n", f[n].key);
				return -1;
			}
		if (!known) {
			print_error("unknown field %s\n", f[n].key);
			return -1;
		}
		n++;
		if (*end == '\0')
			break;
		if (*end != ' ' || end[1] == '\0' || end[1] == ' ') {
			print_error("bad separator at '%.40s'\n", end);
			return -1;
		}
		p = end + 1;
	}
	return n;
}

static const struct field *get_field(const struct field *f, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (strcmp(f[i].key, key) == 0)
			return &f[i];
	return NULL;
}

/* Format @l into a buffer with canaries after AG_LOG_LINE_MAX, and check
 * the invariants every line has. Returns the number of fields. */
static int format_checked(const struct ag_logline *l, char *line, struct field *f, int maxf)
{
	char buf[AG_LOG_LINE_MAX + 64];

	memset(buf, CANARY, sizeof(buf));
	ag_log_format(l, buf, AG_LOG_LINE_MAX);
	for (size_t j = AG_LOG_LINE_MAX; j < sizeof(buf); j++)
		assert_int_equal((unsigned char)buf[j], CANARY);
	assert_non_null(memchr(buf, '\0', AG_LOG_LINE_MAX));
	memcpy(line, buf, AG_LOG_LINE_MAX);
	assert_null(strchr(line, '\n'));
	assert_null(strchr(line, '\r'));
	for (const char *p = line; *p != '\0'; p++)
		assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
	assert_memory_equal(line, "time=", 5);
	assert_int_equal(count_sub(line, " result="), 1);
	assert_int_equal(count_sub(line, " user="), 1);
	assert_int_equal(count_sub(line, " action="), 1);
	assert_int_equal(count_sub(line, " rhost="), 1);
	int n = parse_line(line, f, maxf);
	if (n < 0)
		print_error("line: %s\n", line);
	assert_true(n > 0);
	return n;
}

static struct ag_logline base_line(void)
{
	struct ag_logline l = { 0 };

	l.time_ms = T0;
	l.service = "imap";
	l.user = "alice";
	l.user_len = 5;
	l.addr = &addr4;
	l.result = "fail";
	l.action = "tarpit";
	l.reason = "score";
	l.delay_ms = 1500;
	l.src_score = 4.0;
	l.user_score = 2.5;
	l.user_state = "ok";
	return l;
}

#define BASE_HEAD "time=" T0_TEXT " service=imap user=\"alice\" rhost=192.0.2.7"
#define BASE_TAIL " delay_ms=1500 src_score=4.0 user_score=2.5 user_state=ok familiar=no"

enum variant {
	V_BASE, V_NO_USER, V_NO_ADDR, V_RAW, V_RAW_EMPTY, V_RAW_HOSTILE, V_NONE_FAMILY_NULL_RAW,
	V_LOG_ONLY, V_EVENT, V_UNTIL_ONLY, V_REPEAT, V_SERVICE_NULL, V_SERVICE_BLANK,
	V_SERVICE_LONG, V_STATE_NULL, V_V6, V_FAMILIAR, V_SCORES, V_NO_REASON, V_USER_129,
	V_USER_128, V_ALL,
};

static const struct {
	enum variant v;
	const char *want;
} format_cases[] = {
	{ V_BASE, BASE_HEAD " result=fail action=tarpit reason=score" BASE_TAIL },
	{ V_NO_USER, "time=" T0_TEXT " service=imap user=none rhost=192.0.2.7 result=fail"
		     " action=tarpit reason=score delay_ms=1500 src_score=4.0 user_score=2.5"
		     " user_state=none familiar=no" },
	{ V_NO_ADDR, "time=" T0_TEXT " service=imap user=\"alice\" rhost=none result=fail"
		     " action=tarpit reason=score" BASE_TAIL },
	{ V_RAW, "time=" T0_TEXT " service=imap user=\"alice\" rhost=none"
		 " rhost_raw=\"mail.example.com\" result=fail action=tarpit reason=score" BASE_TAIL },
	{ V_RAW_EMPTY, "time=" T0_TEXT " service=imap user=\"alice\" rhost=none result=fail"
		       " action=tarpit reason=score" BASE_TAIL },
	{ V_RAW_HOSTILE, "time=" T0_TEXT " service=imap user=\"alice\" rhost=none"
			 " rhost_raw=\"x\\x0a\\x20result\\x3dsuccess\\x20\\\"\" result=fail"
			 " action=tarpit reason=score" BASE_TAIL },
	{ V_NONE_FAMILY_NULL_RAW, "time=" T0_TEXT " service=imap user=\"alice\" rhost=none"
				  " result=fail action=tarpit reason=score" BASE_TAIL },
	{ V_LOG_ONLY, BASE_HEAD " result=fail action=allow mode=log-only would=refuse"
		      " reason=banned delay_ms=0 src_score=4.0 user_score=2.5 user_state=ok"
		      " familiar=no" },
	{ V_EVENT, BASE_HEAD " result=fail action=tarpit reason=score" BASE_TAIL
		   " event=ban+lock until=2026-11-23T14:41:26.123Z" },
	{ V_UNTIL_ONLY, BASE_HEAD " result=unchecked action=refuse reason=banned" BASE_TAIL
			" until=2026-11-23T14:41:26.123Z" },
	{ V_REPEAT, BASE_HEAD " result=fail action=tarpit reason=score" BASE_TAIL " repeat=yes" },
	{ V_SERVICE_NULL, "time=" T0_TEXT " service=\"\" user=\"alice\" rhost=192.0.2.7"
			  " result=fail action=tarpit reason=score" BASE_TAIL },
	{ V_SERVICE_BLANK, "time=" T0_TEXT " service=\"my\\x20svc\\x0aresult\\x3dsuccess\""
			   " user=\"alice\" rhost=192.0.2.7 result=fail action=tarpit reason=score"
			   BASE_TAIL },
	{ V_SERVICE_LONG, "time=" T0_TEXT " service=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			  "aaaaaaaaaaaaaaaaaaaa\" user=\"alice\" rhost=192.0.2.7 result=fail"
			  " action=tarpit reason=score" BASE_TAIL },
	{ V_STATE_NULL, BASE_HEAD " result=fail action=tarpit reason=score delay_ms=1500"
			" src_score=4.0 user_score=2.5 user_state=unknown familiar=no" },
	{ V_V6, "time=" T0_TEXT " service=imap user=\"alice\" rhost=2001:db8::1 result=fail"
		" action=tarpit reason=score" BASE_TAIL },
	{ V_FAMILIAR, BASE_HEAD " result=success action=allow delay_ms=0 src_score=4.0"
		      " user_score=2.5 user_state=ok familiar=yes" },
	{ V_SCORES, BASE_HEAD " result=fail action=tarpit reason=score delay_ms=1500"
		    " src_score=0.0 user_score=12.4 user_state=ok familiar=no" },
	{ V_NO_REASON, BASE_HEAD " result=fail action=allow delay_ms=0 src_score=4.0"
		       " user_score=2.5 user_state=ok familiar=no" },
	{ V_USER_129, NULL },
	{ V_USER_128, NULL },
	{ V_ALL, "time=" T0_TEXT " service=dovecot user=\"bob\" rhost=2001:db8::1"
		 " result=unchecked action=refuse mode=log-only would=refuse reason=net_banned"
		 " delay_ms=60000 src_score=120.5 user_score=30.0 user_state=locked familiar=yes"
		 " repeat=yes event=ban+net_ban+lock until=2026-11-24T13:41:26.123Z config=unreadable" },
};

static char long_user[300];

static struct ag_logline variant_line(enum variant v)
{
	struct ag_logline l = base_line();

	switch (v) {
	case V_BASE: break;
	case V_NO_USER: l.user = NULL; l.user_len = 0; l.user_state = "none"; break;
	case V_NO_ADDR: l.addr = NULL; break;
	case V_RAW: l.addr = &addr_none; l.rhost_raw = "mail.example.com"; l.rhost_len = 16; break;
	case V_RAW_EMPTY: l.addr = &addr_none; l.rhost_raw = "mail"; l.rhost_len = 0; break;
	case V_RAW_HOSTILE:
		l.addr = &addr_none;
		l.rhost_raw = "x\n result=success \"";
		l.rhost_len = strlen(l.rhost_raw);
		break;
	case V_NONE_FAMILY_NULL_RAW: l.addr = &addr_none; l.rhost_raw = NULL; l.rhost_len = 9; break;
	case V_LOG_ONLY:
		l.action = "allow";
		l.would = "refuse";
		l.reason = "banned";
		l.delay_ms = 0;
		break;
	case V_EVENT: l.event = "ban+lock"; l.until = T0 + 3600000; break;
	case V_UNTIL_ONLY:
		l.result = "unchecked";
		l.action = "refuse";
		l.reason = "banned";
		l.until = T0 + 3600000;
		break;
	case V_REPEAT: l.repeat_pw = true; break;
	case V_SERVICE_NULL: l.service = NULL; break;
	case V_SERVICE_BLANK: l.service = "my svc\nresult=success"; break;
	case V_SERVICE_LONG:
		l.service = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; /* 65 */
		break;
	case V_STATE_NULL: l.user_state = NULL; break;
	case V_V6: l.addr = &addr6; break;
	case V_FAMILIAR:
		l.result = "success";
		l.action = "allow";
		l.reason = NULL;
		l.delay_ms = 0;
		l.familiar = true;
		break;
	case V_SCORES: l.src_score = 0.04; l.user_score = 12.36; break;
	case V_NO_REASON: l.action = "allow"; l.reason = NULL; l.delay_ms = 0; break;
	case V_USER_129: l.user = long_user; l.user_len = 129; break;
	case V_USER_128: l.user = long_user; l.user_len = 128; break;
	case V_ALL:
		l.service = "dovecot";
		l.user = "bob";
		l.user_len = 3;
		l.addr = &addr6;
		l.rhost_raw = "ignored: the address is known";
		l.rhost_len = 29;
		l.result = "unchecked";
		l.action = "refuse";
		l.would = "refuse";
		l.reason = "net_banned";
		l.delay_ms = 60000;
		l.src_score = 120.5;
		l.user_score = 30.0;
		l.user_state = "locked";
		l.familiar = true;
		l.repeat_pw = true;
		l.event = "ban+net_ban+lock";
		l.until = T0 + 86400000;
		l.config = "unreadable";
		break;
	}
	return l;
}

static void test_format_table(void **state)
{
	(void)state;
	memset(long_user, 'u', sizeof(long_user));
	for (size_t i = 0; i < AG_ARRAY_LEN(format_cases); i++) {
		struct ag_logline l = variant_line(format_cases[i].v);
		char line[AG_LOG_LINE_MAX];
		struct field f[32];
		int n = format_checked(&l, line, f, 32);

		if (format_cases[i].want != NULL) {
			if (strcmp(line, format_cases[i].want) != 0)
				print_error("case %zu:\n got %s\nwant %s\n", i, line, format_cases[i].want);
			assert_string_equal(line, format_cases[i].want);
		}
		/* the fields every line has */
		static const char *const always[] = {
			"time", "service", "user", "rhost", "result", "action", "delay_ms",
			"src_score", "user_score", "user_state", "familiar",
		};
		for (size_t k = 0; k < AG_ARRAY_LEN(always); k++)
			assert_non_null(get_field(f, n, always[k]));
		/* mode/would only in log-only, event/until only when set */
		assert_int_equal(get_field(f, n, "would") != NULL, l.would != NULL);
		assert_int_equal(get_field(f, n, "mode") != NULL, l.would != NULL);
		assert_int_equal(get_field(f, n, "event") != NULL, l.event != NULL);
		assert_int_equal(get_field(f, n, "until") != NULL, l.until > 0);
		assert_int_equal(get_field(f, n, "repeat") != NULL, l.repeat_pw);
		assert_int_equal(get_field(f, n, "user_len") != NULL,
				 l.user != NULL && l.user_len > AG_LOG_USER_MAX);
	}

	/* the user_len boundary */
	{
		struct ag_logline l = variant_line(V_USER_129);
		char line[AG_LOG_LINE_MAX], back[256];
		struct field f[32];
		int n = format_checked(&l, line, f, 32);
		const struct field *u = get_field(f, n, "user");
		assert_non_null(strstr(line, " user_len=129 "));
		assert_int_equal(unquote(u->val, u->vlen, back), AG_LOG_USER_MAX);
		l = variant_line(V_USER_128);
		n = format_checked(&l, line, f, 32);
		assert_null(strstr(line, "user_len="));
		u = get_field(f, n, "user");
		assert_int_equal(unquote(u->val, u->vlen, back), 128);
	}
}

/* Hostile user names cannot end the field, add one, or split the line. */
static void test_format_hostile_user(void **state)
{
	static const struct {
		const char *name;
		size_t len;
	} small[] = {
		{ "x\ny", SLEN },
		{ "x\" result=success", SLEN },
		{ " result=success", SLEN },
		{ "result=success", SLEN },
		{ "a\r\nresult=success user=root", SLEN },
		{ "\0result=success", 15 },
		{ "user=\"root\" rhost=10.0.0.1", SLEN },
		{ "\\\" result=success \\", SLEN },
		{ "\\", SLEN },
		{ "\"", SLEN },
		{ "\xff\xfe result=success", SLEN },
		{ "\xe2\x80\xa8result=success", SLEN }, /* U+2028 LINE SEPARATOR */
		{ "\x1b[1A\x1b[2Ktime=2000-01-01", SLEN },
		{ "", SLEN },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(small) + 6; i++) {
		const size_t mib = 1024 * 1024;
		char *big = NULL;
		const char *name;
		size_t len;

		if (i < AG_ARRAY_LEN(small)) {
			name = small[i].name;
			len = small[i].len == SLEN ? strlen(name) : small[i].len;
		} else {
			/* 1 MiB names: plain, newlines, quotes, backslashes,
			 * repeated fake fields, and 128 + 1 quotes */
			static const char fill[] = { 'A', '\n', '"', '\\', 0, '"' };
			size_t k = i - AG_ARRAY_LEN(small);
			len = k == 5 ? AG_LOG_USER_MAX + 1 : mib;
			big = malloc(len);
			assert_non_null(big);
			if (k == 4) {
				static const char fake[] = " result=success\n";
				for (size_t j = 0; j < len; j++)
					big[j] = fake[j % (sizeof(fake) - 1)];
			} else {
				memset(big, fill[k], len);
			}
			name = big;
		}

		struct ag_logline l = base_line();
		char line[AG_LOG_LINE_MAX], back[AG_LOG_USER_MAX + 8], want_len[40];
		struct field f[32];
		l.user = name;
		l.user_len = len;
		int n = format_checked(&l, line, f, 32);

		/* the line is complete: it ends with the last field */
		assert_true(strlen(line) > strlen(" familiar=no"));
		assert_string_equal(line + strlen(line) - strlen(" familiar=no"), " familiar=no");
		assert_string_equal(get_field(f, n, "result")->val, "fail action=tarpit reason=score"
				    BASE_TAIL);
		/* the user field holds the name (cut to AG_LOG_USER_MAX) */
		const struct field *u = get_field(f, n, "user");
		size_t kept = len < AG_LOG_USER_MAX ? len : AG_LOG_USER_MAX;
		assert_int_equal(unquote(u->val, u->vlen, back), (long)kept);
		assert_memory_equal(back, name, kept);
		/* user_len says how long it really was */
		snprintf(want_len, sizeof(want_len), " user_len=%zu ", len);
		assert_int_equal(strstr(line, want_len) != NULL, len > AG_LOG_USER_MAX);
		assert_int_equal(count_sub(line, "user_len="), len > AG_LOG_USER_MAX);
		free(big);
	}
}

/* The worst a line can hold: a hostile 1 MiB user name, a hostile raw
 * rhost and a hostile service name, with every optional field set. Each
 * field is cut to fit; the line never is. */
static void test_format_worst_case(void **state)
{
	static const struct {
		unsigned char user, raw, service;
	} fills[] = {
		{ 0x01, 0xff, 0xff }, { '"', '"', '"' }, { ' ', '=', '\n' }, { 'A', 'B', 'C' },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(fills); i++) {
		const size_t mib = 1024 * 1024;
		char *user = malloc(mib), raw[4096], service[512];
		struct ag_logline l = { 0 };
		char line[AG_LOG_LINE_MAX];
		struct field f[32];

		assert_non_null(user);
		memset(user, fills[i].user, mib);
		memset(raw, fills[i].raw, sizeof(raw));
		memset(service, fills[i].service, sizeof(service) - 1);
		service[sizeof(service) - 1] = '\0';
		l.time_ms = T0;
		l.service = service;
		l.user = user;
		l.user_len = mib;
		l.addr = &addr_none;
		l.rhost_raw = raw;
		l.rhost_len = sizeof(raw);
		l.result = "unchecked";
		l.action = "refuse";
		l.would = "refuse";
		l.reason = "tarpit_full";
		l.delay_ms = 60000;
		l.src_score = 999999999999.9;
		l.user_score = 999999999999.9;
		l.user_state = "locked";
		l.familiar = true;
		l.repeat_pw = true;
		l.event = "ban+net_ban+lock";
		l.until = 253402300799999LL; /* 9999-12-31 */
		l.config = "unreadable";

		int n = format_checked(&l, line, f, 32);
		if (n != (int)AG_ARRAY_LEN(line_keys))
			print_error("fill %zu: %d fields, line of %zu bytes: %s\n", i, n, strlen(line),
				    line);
		assert_int_equal(n, (int)AG_ARRAY_LEN(line_keys));
		const char *tail = " until=9999-12-31T23:59:59.999Z config=unreadable";
		assert_string_equal(line + strlen(line) - strlen(tail), tail);
		assert_non_null(strstr(line, " user_len=1048576 "));
		free(user);
	}
}

/* A buffer shorter than a line: cut, terminated, never overrun. */
static void test_format_small_buffer(void **state)
{
	struct ag_logline l = variant_line(V_ALL);
	char full[AG_LOG_LINE_MAX];

	(void)state;
	ag_log_format(&l, full, sizeof(full));
	for (size_t len = 0; len <= strlen(full) + 1; len++) {
		char buf[AG_LOG_LINE_MAX + 16];
		memset(buf, CANARY, sizeof(buf));
		ag_log_format(&l, buf, len);
		for (size_t j = len; j < sizeof(buf); j++)
			assert_int_equal((unsigned char)buf[j], CANARY);
		if (len == 0)
			continue;
		assert_int_equal(strlen(buf), len - 1 < strlen(full) ? len - 1 : strlen(full));
		assert_memory_equal(buf, full, strlen(buf));
	}
}

/* ---- ag_log_file_write ---------------------------------------------------- */

struct fx {
	char dir[256];
	char path[300];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tu_mkdtemp(f->dir, sizeof(f->dir), "log");
	snprintf(f->path, sizeof(f->path), "%s/attempts.log", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	tu_rmrf(f->dir);
	free(f);
	return 0;
}

/* The whole file, NUL-terminated (malloc'ed), or NULL if it cannot be read. */
static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf;
	long n;

	if (fp == NULL)
		return NULL;
	assert_int_equal(fseek(fp, 0, SEEK_END), 0);
	n = ftell(fp);
	assert_true(n >= 0);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static void assert_file(const char *path, const char *want)
{
	char *got = slurp(path);

	if (got == NULL)
		print_error("cannot read %s\n", path);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_file_write(void **state)
{
	struct fx *f = *state;
	struct stat st;
	mode_t old = umask(0);

	assert_int_equal(ag_log_file_write(f->path, "line one"), 0);
	umask(old);
	assert_int_equal(ag_log_file_write(f->path, "line two"), 0);
	assert_file(f->path, "line one\nline two\n");
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);

	/* an empty line is a newline */
	assert_int_equal(ag_log_file_write(f->path, ""), 0);
	assert_file(f->path, "line one\nline two\n\n");
}

/* As @uid, a member of group @gid only, with umask 077: write @line. */
static int write_as(uid_t uid, gid_t gid, const char *path, const char *line)
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
			_exit(4);
		umask(077);
		_exit(ag_log_file_write(path, line) == 0 ? 0 : 5);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/* One log file for several services (Postfix's smtpd as postfix, Cyrus
 * as cyrus, Dovecot's auth as root or dovecot): in a directory shared
 * through its group (root:authguard 2770) the first service to write
 * creates the file, and every other member of the group can write to it,
 * whatever the umasks. Outside such a directory the mode is 0640 less the
 * umask, as before. */
static void test_file_shared_dir(void **state)
{
	struct fx *f = *state;
	char dir[400], path[450];
	struct stat st;
	const gid_t group = 40000;

	snprintf(dir, sizeof(dir), "%s/shared", f->dir);
	snprintf(path, sizeof(path), "%s/attempts.log", dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	if (geteuid() != 0) {
		/* no other users to be: the mode, as this user */
		assert_int_equal(chmod(dir, 02770), 0);
		mode_t old = umask(077);
		assert_int_equal(ag_log_file_write(path, "mine"), 0);
		umask(old);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0660);
		return;
	}
	assert_int_equal(chown(f->dir, 0, 0), 0);
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(chown(dir, 0, group), 0);
	assert_int_equal(chmod(dir, 02770), 0);
	assert_int_equal(write_as(40001, group, path, "from the first service"), 0);
	assert_int_equal(write_as(40002, group, path, "from the second"), 0);
	ag_log_file_write(path, "from root");
	assert_file(path, "from the first service\nfrom the second\nfrom root\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0660);
	assert_int_equal(st.st_uid, 40001);
	assert_int_equal(st.st_gid, group);
	/* not a member: cannot write (errno says so, for the fault line) */
	assert_int_equal(write_as(40003, 40003, path, "stranger"), 5);

	/* a directory that is not shared: 0640 less the umask */
	char plain[450];
	snprintf(plain, sizeof(plain), "%s/plain.log", f->dir);
	mode_t old = umask(077);
	assert_int_equal(ag_log_file_write(plain, "x"), 0);
	umask(old);
	assert_int_equal(stat(plain, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	errno = 0;
	assert_int_equal(ag_log_file_write("/proc/no/such/file", "x"), AG_EIO);
	assert_int_equal(errno, ENOENT);
}

static void test_file_append(void **state)
{
	struct fx *f = *state;
	char other[400];

	/* a file that already has lines: appended to, never truncated */
	FILE *fp = fopen(f->path, "w");
	assert_non_null(fp);
	fputs("old 1\nold 2\n", fp);
	fclose(fp);
	assert_int_equal(ag_log_file_write(f->path, "new"), 0);
	assert_file(f->path, "old 1\nold 2\nnew\n");

	/* someone else appends in between: both kept, in order */
	fp = fopen(f->path, "a");
	assert_non_null(fp);
	fputs("foreign\n", fp);
	fclose(fp);
	assert_int_equal(ag_log_file_write(f->path, "newer"), 0);
	assert_file(f->path, "old 1\nold 2\nnew\nforeign\nnewer\n");

	/* alternating between two files: each line goes where it was sent */
	snprintf(other, sizeof(other), "%s/other.log", f->dir);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ag_log_file_write(other, "o"), 0);
		assert_int_equal(ag_log_file_write(f->path, "p"), 0);
	}
	assert_file(other, "o\no\no\n");
	assert_file(f->path, "old 1\nold 2\nnew\nforeign\nnewer\np\np\np\n");
}

/* logrotate: rename (and optionally create), or remove, or truncate. */
static void test_file_rotation(void **state)
{
	struct fx *f = *state;
	char rotated[400], rotated2[400];

	snprintf(rotated, sizeof(rotated), "%s.1", f->path);
	snprintf(rotated2, sizeof(rotated2), "%s.2", f->path);

	assert_int_equal(ag_log_file_write(f->path, "before"), 0);
	/* renamed away: a new file is created for the next line */
	assert_int_equal(rename(f->path, rotated), 0);
	assert_int_equal(ag_log_file_write(f->path, "after"), 0);
	assert_file(rotated, "before\n");
	assert_file(f->path, "after\n");

	/* renamed, and an empty file created in its place ("create") */
	assert_int_equal(rename(f->path, rotated2), 0);
	int fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0640);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ag_log_file_write(f->path, "third"), 0);
	assert_file(rotated2, "after\n");
	assert_file(f->path, "third\n");

	/* removed */
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(ag_log_file_write(f->path, "fourth"), 0);
	assert_file(f->path, "fourth\n");

	/* truncated in place ("copytruncate"): appends at the new end */
	assert_int_equal(truncate(f->path, 0), 0);
	assert_int_equal(ag_log_file_write(f->path, "fifth"), 0);
	assert_file(f->path, "fifth\n");
	assert_file(rotated, "before\n");
}

/* Lines longer than AG_LOG_LINE_MAX are cut; shorter ones are whole. */
static void test_file_long_line(void **state)
{
	struct fx *f = *state;
	char *line = malloc(3 * AG_LOG_LINE_MAX);
	char *want = malloc(3 * AG_LOG_LINE_MAX);

	assert_non_null(line);
	assert_non_null(want);
	static const size_t lens[] = { AG_LOG_LINE_MAX - 1, AG_LOG_LINE_MAX, AG_LOG_LINE_MAX + 1,
				       3 * AG_LOG_LINE_MAX - 1 };
	for (size_t i = 0; i < AG_ARRAY_LEN(lens); i++) {
		memset(line, (int)('a' + i), lens[i]);
		line[lens[i]] = '\0';
		assert_int_equal(unlink(f->path) == 0 || errno == ENOENT, 1);
		assert_int_equal(ag_log_file_write(f->path, line), 0);
		size_t kept = lens[i] < AG_LOG_LINE_MAX ? lens[i] : AG_LOG_LINE_MAX;
		memset(want, (int)('a' + i), kept);
		want[kept] = '\n';
		want[kept + 1] = '\0';
		assert_file(f->path, want);
	}
	free(line);
	free(want);
}

static void test_file_errors(void **state)
{
	struct fx *f = *state;
	char path[400], target[400];

	/* no such directory */
	snprintf(path, sizeof(path), "%s/missing/attempts.log", f->dir);
	assert_int_equal(ag_log_file_write(path, "x"), AG_EIO);

	/* a directory */
	assert_int_equal(ag_log_file_write(f->dir, "x"), AG_EIO);

	/* a symlink is never followed */
	snprintf(target, sizeof(target), "%s/target", f->dir);
	snprintf(path, sizeof(path), "%s/link.log", f->dir);
	FILE *fp = fopen(target, "w");
	assert_non_null(fp);
	fputs("precious\n", fp);
	fclose(fp);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(ag_log_file_write(path, "x"), AG_EIO);
	assert_file(target, "precious\n");

	/* a good path works again afterwards */
	assert_int_equal(ag_log_file_write(f->path, "ok"), 0);
	assert_file(f->path, "ok\n");

	/* the log file replaced by a symlink after it was opened: the next
	 * write notices (another inode) and refuses to follow */
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(symlink(target, f->path), 0);
	assert_int_equal(ag_log_file_write(f->path, "evil"), AG_EIO);
	assert_file(target, "precious\n");

	/* a hard link to another file (a member of a shared log directory's
	 * group could make one): refused, the other file untouched */
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(link(target, f->path), 0);
	errno = 0;
	assert_int_equal(ag_log_file_write(f->path, "evil"), AG_EIO);
	assert_int_equal(errno, EMLINK);
	assert_file(target, "precious\n");

	/* and replaced by a regular file again: back to normal */
	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(ag_log_file_write(f->path, "back"), 0);
	assert_file(f->path, "back\n");
}

/* Many processes append at once (after fork, each reopens its own
 * descriptor): every line arrives whole. */
static void test_file_concurrent(void **state)
{
	struct fx *f = *state;
	enum { PROCS = 4, EACH = 200, LEN = 900 };
	pid_t pids[PROCS];

	/* the parent has the file open before forking */
	assert_int_equal(ag_log_file_write(f->path, "start"), 0);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			char line[LEN + 1];
			memset(line, 'A' + p, LEN);
			line[LEN] = '\0';
			int bad = 0;
			for (int i = 0; i < EACH; i++) {
				int w = snprintf(line, 12, "%d:%04d:", p, i);
				if (w != 7)
					_exit(2);
				line[w] = (char)('A' + p);
				bad += ag_log_file_write(f->path, line) != 0;
			}
			_exit(bad == 0 ? 0 : 1);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int status;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	assert_int_equal(ag_log_file_write(f->path, "end"), 0);

	char *all = slurp(f->path), *save = NULL;
	int seen[PROCS][EACH] = { { 0 } }, lines = 0;
	assert_non_null(all);
	for (char *ln = strtok_r(all, "\n", &save); ln != NULL; ln = strtok_r(NULL, "\n", &save)) {
		lines++;
		if (strcmp(ln, "start") == 0 || strcmp(ln, "end") == 0)
			continue;
		int p, i;
		assert_int_equal(sscanf(ln, "%d:%d:", &p, &i), 2);
		assert_true(p >= 0 && p < PROCS && i >= 0 && i < EACH);
		assert_int_equal(strlen(ln), LEN);
		for (size_t j = 7; j < LEN; j++)
			assert_int_equal(ln[j], 'A' + p);
		seen[p][i]++;
	}
	free(all);
	assert_int_equal(lines, PROCS * EACH + 2);
	for (int p = 0; p < PROCS; p++)
		for (int i = 0; i < EACH; i++)
			assert_int_equal(seen[p][i], 1);
	static const char *const needles[] = { "end", NULL };
	assert_int_equal(tu_count_lines(f->path, needles), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_table),
		cmocka_unit_test(test_quote_all_bytes),
		cmocka_unit_test(test_quote_small_output),
		cmocka_unit_test(test_log_time),
		cmocka_unit_test(test_format_table),
		cmocka_unit_test(test_format_hostile_user),
		cmocka_unit_test(test_format_worst_case),
		cmocka_unit_test(test_format_small_buffer),
		cmocka_unit_test_setup_teardown(test_file_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_shared_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_concurrent, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
