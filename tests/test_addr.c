/* test_addr.c - client address parsing, normalisation, prefixes and CIDR
 * lists (store/addr.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

#define CANARY 0xA5
/* In a case table: take strlen() of the input. */
#define SLEN ((size_t)-1)

static size_t case_len(const char *s, size_t len)
{
	return len == SLEN ? strlen(s) : len;
}

static const char *fmt(const struct ag_addr *a, char buf[AG_ADDR_STRLEN])
{
	ag_addr_format(a, buf, AG_ADDR_STRLEN);
	return buf;
}

/* A printable rendering of a test input, for failure messages. */
static const char *show(const char *s, size_t len)
{
	static char out[160];
	size_t o = 0;

	if (s == NULL)
		return "(NULL)";
	for (size_t i = 0; i < len && o + 5 < sizeof(out); i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x20 && ch < 0x7f)
			out[o++] = (char)ch;
		else
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", ch);
	}
	out[o] = '\0';
	return out;
}

/* ---- ag_addr_parse: addresses --------------------------------------------- */

struct parse_ok {
	const char *in;
	size_t len;
	uint8_t family;
	const char *norm; /* ag_addr_format of the result */
};

static const struct parse_ok parse_ok_cases[] = {
	/* IPv4 */
	{ "192.0.2.1", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "0.0.0.0", SLEN, AG_AF_INET, "0.0.0.0" },
	{ "255.255.255.255", SLEN, AG_AF_INET, "255.255.255.255" },
	{ "127.0.0.1", SLEN, AG_AF_INET, "127.0.0.1" },
	/* IPv6, normalised to the RFC 5952 text */
	{ "2001:db8::1", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "2001:DB8:0:0:0:0:0:1", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "2001:0db8:0000:0000:0000:0000:0000:0001", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "::", SLEN, AG_AF_INET6, "::" },
	{ "::1", SLEN, AG_AF_INET6, "::1" },
	{ "1:2:3:4:5:6:7:8", SLEN, AG_AF_INET6, "1:2:3:4:5:6:7:8" },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SLEN, AG_AF_INET6,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
	{ "fe80::1", SLEN, AG_AF_INET6, "fe80::1" },
	/* IPv4-compatible (not mapped) stays IPv6 */
	{ "::192.0.2.1", SLEN, AG_AF_INET6, "::192.0.2.1" },
	{ "::ffff:0:c000:201", SLEN, AG_AF_INET6, "::ffff:0:c000:201" },
	/* IPv4-mapped IPv6 becomes IPv4 */
	{ "::ffff:192.0.2.1", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "::FFFF:192.0.2.1", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "::ffff:c000:201", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "0:0:0:0:0:ffff:192.0.2.1", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "::ffff:0.0.0.0", SLEN, AG_AF_INET, "0.0.0.0" },
	{ "[::ffff:192.0.2.1]:993", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "::ffff:192.0.2.1;993", SLEN, AG_AF_INET, "192.0.2.1" },
	/* with a port */
	{ "[2001:db8::1]:993", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "[2001:db8::1]", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "[2001:db8::1]:0", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "[2001:db8::1]:65535", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "192.0.2.7:993", SLEN, AG_AF_INET, "192.0.2.7" },
	{ "192.0.2.7:0", SLEN, AG_AF_INET, "192.0.2.7" },
	{ "192.0.2.7:65535", SLEN, AG_AF_INET, "192.0.2.7" },
	{ "192.0.2.7:00993", SLEN, AG_AF_INET, "192.0.2.7" },
	/* SASL: "addr;port" */
	{ "192.0.2.7;993", SLEN, AG_AF_INET, "192.0.2.7" },
	{ "2001:db8::7;993", SLEN, AG_AF_INET6, "2001:db8::7" },
	{ "2001:db8::7;65535", SLEN, AG_AF_INET6, "2001:db8::7" },
	/* zone ids are dropped */
	{ "fe80::1%eth0", SLEN, AG_AF_INET6, "fe80::1" },
	{ "fe80::1%1", SLEN, AG_AF_INET6, "fe80::1" },
	{ "[fe80::1%eth0]:993", SLEN, AG_AF_INET6, "fe80::1" },
	{ "fe80::1%eth0;993", SLEN, AG_AF_INET6, "fe80::1" },
	{ "fe80::1%eth0.100", SLEN, AG_AF_INET6, "fe80::1" },
	{ "fe80::1%br-lan_2", SLEN, AG_AF_INET6, "fe80::1" },
	{ "fe80::1%abcdefghijklmno", SLEN, AG_AF_INET6, "fe80::1" }, /* 15: IFNAMSIZ - 1 */
	{ " fe80::1%eth0 ", SLEN, AG_AF_INET6, "fe80::1" },
	/* surrounding blanks */
	{ " 192.0.2.1", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "192.0.2.1 ", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "\t 192.0.2.1 \r\n", SLEN, AG_AF_INET, "192.0.2.1" },
	{ "  2001:db8::1\t", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ " [2001:db8::1]:993 ", SLEN, AG_AF_INET6, "2001:db8::1" },
	{ "\n192.0.2.7;993\n", SLEN, AG_AF_INET, "192.0.2.7" },
	/* only @len bytes are read */
	{ "192.0.2.1567", 9, AG_AF_INET, "192.0.2.1" },
	{ "192.0.2.1\0garbage", 9, AG_AF_INET, "192.0.2.1" },
	{ "::1]", 3, AG_AF_INET6, "::1" },
	{ "192.0.2.7:9930", 13, AG_AF_INET, "192.0.2.7" },
};

static void test_parse_ok(void **state)
{
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(parse_ok_cases); i++) {
		const struct parse_ok *c = &parse_ok_cases[i];
		size_t len = case_len(c->in, c->len);
		struct ag_addr a;
		char buf[AG_ADDR_STRLEN];

		memset(&a, CANARY, sizeof(a));
		int rc = ag_addr_parse(c->in, len, &a);
		if (rc != 0 || a.family != c->family || strcmp(fmt(&a, buf), c->norm) != 0)
			print_error("case %zu '%s': rc %d family %u '%s'\n", i, show(c->in, len), rc,
				    a.family, rc == 0 ? buf : "-");
		assert_int_equal(rc, 0);
		assert_int_equal(a.family, c->family);
		assert_int_equal(a.plen, c->family == AG_AF_INET ? 32 : 128);
		assert_string_equal(fmt(&a, buf), c->norm);
		/* an IPv4 address uses b[0..3] only */
		if (c->family == AG_AF_INET)
			for (size_t j = 4; j < sizeof(a.b); j++)
				assert_int_equal(a.b[j], 0);

		/* the same bytes in an exact-size block (no NUL after them): a
		 * sanitizer catches any read past @len */
		char *exact = malloc(len > 0 ? len : 1);
		struct ag_addr b;
		assert_non_null(exact);
		memcpy(exact, c->in, len);
		assert_int_equal(ag_addr_parse(exact, len, &b), 0);
		assert_memory_equal(&a, &b, sizeof(a));
		free(exact);

		/* normalised text parses back to the same address */
		struct ag_addr back;
		assert_int_equal(ag_addr_parse(buf, strlen(buf), &back), 0);
		assert_memory_equal(&back, &a, sizeof(a));
	}
}

/* "::ffff:192.0.2.1" and "192.0.2.1" are the very same source. */
static void test_parse_mapped_equal(void **state)
{
	static const char *forms[] = {
		"::ffff:192.0.2.1", "[::ffff:192.0.2.1]:143", "::ffff:c000:0201",
		"192.0.2.1;25", " 192.0.2.1 ", "0000:0000:0000:0000:0000:ffff:c000:0201",
	};
	struct ag_addr v4, a;

	(void)state;
	assert_int_equal(ag_addr_parse("192.0.2.1", 9, &v4), 0);
	for (size_t i = 0; i < AG_ARRAY_LEN(forms); i++) {
		assert_int_equal(ag_addr_parse(forms[i], strlen(forms[i]), &a), 0);
		assert_int_equal(a.family, AG_AF_INET);
		assert_memory_equal(&a, &v4, sizeof(a));
	}
}

/* ---- ag_addr_parse: not an address ---------------------------------------- */

struct parse_bad {
	const char *in;
	size_t len;
};

static const struct parse_bad parse_bad_cases[] = {
	/* host names */
	{ "mail.example.com", SLEN },
	{ "localhost", SLEN },
	{ "mail.example.com:993", SLEN },
	{ "localhost;993", SLEN },
	{ "[localhost]:993", SLEN },
	{ "xn--nxasmq6b.example", SLEN },
	/* empty and blank */
	{ "", SLEN },
	{ " ", SLEN },
	{ " \t\r\n", SLEN },
	{ "192.0.2.1", 0 },
	/* garbage */
	{ "garbage", SLEN },
	{ "-", SLEN },
	{ ":", SLEN },
	{ ";", SLEN },
	{ "[]", SLEN },
	{ "[]:80", SLEN },
	{ "%", SLEN },
	{ "unknown", SLEN },
	{ "(null)", SLEN },
	/* bad IPv4 */
	{ "1.2.3", SLEN },
	{ "1.2.3.", SLEN },
	{ "1.2.3.4.", SLEN },
	{ ".1.2.3.4", SLEN },
	{ "1.2.3.4.5", SLEN },
	{ "256.1.1.1", SLEN },
	{ "1.2.3.256", SLEN },
	{ "1.2.3.-1", SLEN },
	{ "01.2.3.4", SLEN },       /* leading zero: octal in inet_aton */
	{ "0x7f.0.0.1", SLEN },
	{ "127.1", SLEN },
	{ "2130706433", SLEN },     /* a number inet_aton would take */
	{ "1.2.3.4/24", SLEN },
	{ "+1.2.3.4", SLEN },
	{ "1.2.3.4 5.6.7.8", SLEN },
	{ "1.2.3.4\nresult=success", SLEN },
	{ "1.2.3.4%eth0", SLEN },
	/* bad ports */
	{ "192.0.2.7:65536", SLEN },
	{ "192.0.2.7:99999", SLEN },
	{ "192.0.2.7:100000", SLEN },
	{ "192.0.2.7:", SLEN },
	{ "192.0.2.7:-1", SLEN },
	{ "192.0.2.7:80a", SLEN },
	{ "192.0.2.7: 80", SLEN },
	{ "192.0.2.7:0x50", SLEN },
	{ "192.0.2.7;", SLEN },
	{ "192.0.2.7;65536", SLEN },
	{ "192.0.2.7;abc", SLEN },
	{ "192.0.2.7;80;80", SLEN },
	{ "192.0.2.7:80;80", SLEN },
	{ "[2001:db8::1]:65536", SLEN },
	{ "[2001:db8::1]:", SLEN },
	{ "[2001:db8::1]80", SLEN },
	{ "[2001:db8::1]:80:80", SLEN },
	{ "[2001:db8::1]:abc", SLEN },
	{ "[192.0.2.1]x", SLEN },
	/* unbalanced brackets */
	{ "[::1", SLEN },
	{ "::1]:80", SLEN },
	{ "::1]", SLEN },
	{ "[::1", 4 },
	{ "[[::1]]", SLEN },
	{ "[", SLEN },
	{ "]", SLEN },
	/* bad IPv6 */
	{ ":::", SLEN },
	{ "::1::", SLEN },
	{ "2001:db8::1::2", SLEN },
	{ "12345::1", SLEN },
	{ "1:2:3:4:5:6:7:8:9", SLEN },
	{ "1:2:3:4:5:6:7", SLEN },
	{ "g::1", SLEN },
	{ "::ffff:256.0.0.1", SLEN },
	{ "fe80::1%", SLEN },
	/* a zone id is an interface name or index, nothing more */
	{ "fe80::1%eth0 garbage", SLEN },
	{ "fe80::1%eth0:993", SLEN },
	{ "fe80::1%eth0%eth1", SLEN },
	{ "fe80::1%\x01", SLEN },
	{ "fe80::1%eth0\nresult=success", SLEN },
	{ "fe80::1%abcdefghijklmnop", SLEN }, /* 16 */
	{ "::1%eth0]:80", SLEN },
	{ "[fe80::1%]:80", SLEN },
	{ "[fe80::1%eth0]]:80", SLEN },
	{ "fe80::1%/64", SLEN },
	{ "%eth0", SLEN },
	{ "2001:db8::/32", SLEN },
	/* embedded NUL inside @len */
	{ "192.0.2.1\0", 10 },
	{ "\0" "192.0.2.1", 10 },
	{ "192.0.2.1\0garbage", 17 },
	{ "192.0.\0.1", 9 },
	{ "2001:db8::1\0", 12 },
	{ "192.0.2.7:99\0", 13 },
	/* not UTF-8, or not ASCII */
	{ "\xff\xfe", SLEN },
	{ "\xc0\xaf", SLEN },
	{ "192.0.2.1\xff", SLEN },
	{ "\x80" "192.0.2.1", SLEN },
	{ "\xef\xbc\x91\xef\xbc\x99\xef\xbc\x92.0.2.1", SLEN }, /* full-width digits */
	{ "192\xe3\x80\x82" "0.2.1", SLEN },                    /* ideographic full stop */
	{ "\xa0" "192.0.2.1", SLEN },                           /* NBSP is not a blank */
	{ "192.0.2.1\v", SLEN },
	{ "\f192.0.2.1", SLEN },
};

static void check_no_address(const char *in, size_t len, const char *what)
{
	struct ag_addr a;
	char buf[AG_ADDR_STRLEN];

	memset(&a, CANARY, sizeof(a));
	int rc = ag_addr_parse(in, len, &a);
	if (rc != AG_EINVAL || a.family != AG_AF_NONE)
		print_error("%s '%s' (len %zu): rc %d family %u\n", what,
			    in != NULL ? show(in, len < 100 ? len : 100) : "(NULL)", len, rc, a.family);
	assert_int_equal(rc, AG_EINVAL);
	assert_int_equal(a.family, AG_AF_NONE);
	assert_string_equal(fmt(&a, buf), "none");
}

static void test_parse_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(parse_bad_cases); i++) {
		const struct parse_bad *c = &parse_bad_cases[i];
		size_t len = case_len(c->in, c->len);

		check_no_address(c->in, len, "table");
		if (len > 0) {
			char *exact = malloc(len);
			assert_non_null(exact);
			memcpy(exact, c->in, len);
			check_no_address(exact, len, "exact copy");
			free(exact);
		}
	}
	check_no_address(NULL, 0, "NULL");
	check_no_address(NULL, 9, "NULL with a length");
}

/* Inputs longer than AG_ADDR_INPUT_MAX, and a 10 KiB one. */
static void test_parse_long(void **state)
{
	const size_t big = 10 * 1024;
	char *s = malloc(big + 1);

	(void)state;
	assert_non_null(s);

	/* garbage of every length around the limit */
	for (size_t n = AG_ADDR_INPUT_MAX - 2; n <= AG_ADDR_INPUT_MAX + 2; n++) {
		memset(s, '1', n);
		check_no_address(s, n, "digits");
		memset(s, ':', n);
		check_no_address(s, n, "colons");
	}

	/* a real address followed by a huge port or a long tail */
	strcpy(s, "192.0.2.7:");
	memset(s + 10, '9', big - 10);
	s[big] = '\0';
	check_no_address(s, big, "huge port");
	strcpy(s, "192.0.2.7;");
	memset(s + 10, '0', AG_ADDR_INPUT_MAX);
	check_no_address(s, 10 + AG_ADDR_INPUT_MAX, "long zero port");
	memset(s, 'a', big);
	memcpy(s, "192.0.2.7", 9);
	check_no_address(s, big, "10 KiB tail");

	/* a zone id long enough to overflow a small buffer */
	strcpy(s, "fe80::1%");
	memset(s + 8, 'e', AG_ADDR_INPUT_MAX - 8);
	check_no_address(s, AG_ADDR_INPUT_MAX, "long zone");
	check_no_address(s, big / 2, "longer zone");

	/* a bracketed 10 KiB string */
	memset(s, '1', big);
	s[0] = '[';
	s[big - 4] = ']';
	memcpy(s + big - 3, ":80", 3);
	check_no_address(s, big, "10 KiB bracket");

	/* 10 KiB of blanks only */
	memset(s, ' ', big);
	check_no_address(s, big, "10 KiB blanks");
	free(s);
}

/* ---- ag_addr_format ------------------------------------------------------- */

static void test_format(void **state)
{
	struct ag_addr none, v6;
	char buf[AG_ADDR_STRLEN + 8];

	(void)state;
	memset(&none, 0, sizeof(none));
	ag_addr_format(&none, buf, sizeof(buf));
	assert_string_equal(buf, "none");

	/* an unknown family is "none" too */
	none.family = 5;
	ag_addr_format(&none, buf, sizeof(buf));
	assert_string_equal(buf, "none");

	/* the longest text fits AG_ADDR_STRLEN */
	assert_int_equal(ag_cidr_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/127", false,
				       &v6), 0);
	memset(buf, CANARY, sizeof(buf));
	ag_addr_format(&v6, buf, AG_ADDR_STRLEN);
	assert_string_equal(buf, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
	v6.b[14] = 0x7f;
	ag_addr_format(&v6, buf, AG_ADDR_STRLEN);
	assert_true(strlen(buf) < AG_ADDR_STRLEN);

	/* small buffers: truncated, terminated, nothing written past @len */
	for (size_t len = 0; len <= 12; len++) {
		memset(buf, CANARY, sizeof(buf));
		ag_addr_format(&v6, buf, len);
		for (size_t j = len; j < sizeof(buf); j++)
			assert_int_equal((unsigned char)buf[j], CANARY);
		if (len > 0) {
			assert_true(memchr(buf, '\0', len) != NULL);
			assert_int_equal(strlen(buf), len - 1);
		}
	}
}

/* ---- ag_cidr_parse -------------------------------------------------------- */

struct cidr_case {
	const char *in;
	int strict_rc;
	const char *strict_norm; /* NULL when strict_rc != 0 */
	int loose_rc;
	const char *loose_norm;
};

static const struct cidr_case cidr_cases[] = {
	{ "192.0.2.0/24", 0, "192.0.2.0/24", 0, "192.0.2.0/24" },
	{ "192.0.2.1/24", AG_EINVAL, NULL, 0, "192.0.2.0/24" },
	{ "192.0.2.255/24", AG_EINVAL, NULL, 0, "192.0.2.0/24" },
	{ "192.0.2.1", 0, "192.0.2.1", 0, "192.0.2.1" },
	{ "192.0.2.1/32", 0, "192.0.2.1", 0, "192.0.2.1" },
	{ "192.0.2.1/33", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "192.0.2.1/99", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "192.0.2.1/999", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "192.0.2.1/4294967328", AG_EINVAL, NULL, AG_EINVAL, NULL }, /* 2^32 + 32 */
	{ "0.0.0.0/0", 0, "0.0.0.0/0", 0, "0.0.0.0/0" },
	{ "192.0.2.1/0", AG_EINVAL, NULL, 0, "0.0.0.0/0" },
	{ "10.1.31.0/20", AG_EINVAL, NULL, 0, "10.1.16.0/20" },
	{ "10.1.16.0/20", 0, "10.1.16.0/20", 0, "10.1.16.0/20" },
	{ "255.255.255.255/1", AG_EINVAL, NULL, 0, "128.0.0.0/1" },
	{ "::ffff:192.0.2.0/24", 0, "192.0.2.0/24", 0, "192.0.2.0/24" },
	{ "2001:db8::/32", 0, "2001:db8::/32", 0, "2001:db8::/32" },
	{ "2001:db8::1/32", AG_EINVAL, NULL, 0, "2001:db8::/32" },
	{ "2001:db8:1:fff8::/61", 0, "2001:db8:1:fff8::/61", 0, "2001:db8:1:fff8::/61" },
	{ "2001:db8:1:fffc::/61", AG_EINVAL, NULL, 0, "2001:db8:1:fff8::/61" },
	{ "::/0", 0, "::/0", 0, "::/0" },
	{ "::1/0", AG_EINVAL, NULL, 0, "::/0" },
	{ "::1/128", 0, "::1", 0, "::1" },
	{ "::1/129", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "2001:db8::/200", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "fe80::/10", 0, "fe80::/10", 0, "fe80::/10" },
	{ "2001:DB8::/32", 0, "2001:db8::/32", 0, "2001:db8::/32" },
	/* malformed */
	{ "/", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "/24", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/abc", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/2a", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/-1", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/+8", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/ 8", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/8 ", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/0032", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4/24/8", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4//24", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ " 1.2.3.0/24", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3/24", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "256.0.0.0/8", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "1.2.3.4:80", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "[::1]/128", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "example.com/24", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "any", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "*", AG_EINVAL, NULL, AG_EINVAL, NULL },
	{ "\xff\xfe/8", AG_EINVAL, NULL, AG_EINVAL, NULL },
};

static void test_cidr_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cidr_cases); i++) {
		const struct cidr_case *c = &cidr_cases[i];
		for (int strict = 1; strict >= 0; strict--) {
			int want = strict ? c->strict_rc : c->loose_rc;
			const char *norm = strict ? c->strict_norm : c->loose_norm;
			struct ag_addr a;
			char buf[AG_ADDR_STRLEN];

			memset(&a, CANARY, sizeof(a));
			int rc = ag_cidr_parse(c->in, strict, &a);
			if (rc != want)
				print_error("'%s' strict=%d: rc %d want %d\n", show(c->in, strlen(c->in)),
					    strict, rc, want);
			assert_int_equal(rc, want);
			if (want != 0) {
				assert_int_equal(a.family, AG_AF_NONE);
				continue;
			}
			assert_string_equal(fmt(&a, buf), norm);
			/* bits past the prefix are always zero */
			struct ag_addr m;
			ag_addr_prefix(&a, a.plen, &m);
			assert_memory_equal(&m, &a, sizeof(a));
		}
	}
	{
		struct ag_addr a;
		memset(&a, CANARY, sizeof(a));
		assert_int_equal(ag_cidr_parse(NULL, false, &a), AG_EINVAL);
		assert_int_equal(a.family, AG_AF_NONE);
	}
	/* a long string is rejected without overflowing anything */
	{
		char big[4096];
		struct ag_addr a;
		memset(big, '1', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		assert_int_equal(ag_cidr_parse(big, false, &a), AG_EINVAL);
		big[100] = '/';
		assert_int_equal(ag_cidr_parse(big, false, &a), AG_EINVAL);
		memcpy(big, "10.0.0.0/", 9);
		assert_int_equal(ag_cidr_parse(big, false, &a), AG_EINVAL);
	}
}

/* ---- ag_addr_prefix, ag_addr_width ---------------------------------------- */

static void test_prefix(void **state)
{
	static const struct {
		const char *in;
		unsigned plen;
		const char *want;
	} cases[] = {
		{ "192.0.2.77", 24, "192.0.2.0/24" },
		{ "192.0.2.77", 32, "192.0.2.77" },
		{ "192.0.2.77", 0, "0.0.0.0/0" },
		{ "10.1.31.77", 20, "10.1.16.0/20" },
		{ "10.1.31.77", 23, "10.1.30.0/23" },
		{ "10.1.31.77", 25, "10.1.31.0/25" },
		{ "10.1.31.200", 25, "10.1.31.128/25" },
		{ "10.1.31.77", 33, "10.1.31.77" },    /* clamped to the width */
		{ "10.1.31.77", 128, "10.1.31.77" },
		{ "10.1.31.77", 1000, "10.1.31.77" },
		{ "255.255.255.255", 1, "128.0.0.0/1" },
		{ "255.255.255.255", 7, "254.0.0.0/7" },
		{ "255.255.255.255", 31, "255.255.255.254/31" },
		{ "192.0.2.0/24", 28, "192.0.2.0/24" }, /* not wider than the network */
		{ "192.0.2.0/24", 16, "192.0.0.0/16" },
		{ "2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64" },
		{ "2001:db8:1:ffff::1", 61, "2001:db8:1:fff8::/61" },
		{ "2001:db8:1:ffff::1", 63, "2001:db8:1:fffe::/63" },
		{ "2001:db8:1:ffff::1", 65, "2001:db8:1:ffff::/65" },
		{ "2001:db8::7", 127, "2001:db8::6/127" },
		{ "2001:db8::7", 128, "2001:db8::7" },
		{ "2001:db8::7", 129, "2001:db8::7" },
		{ "2001:db8::7", 0, "::/0" },
		{ "2001:db8::7", 48, "2001:db8::/48" },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, "8000::/1" },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 97, "ffff:ffff:ffff:ffff:ffff:ffff:8000:0/97" },
		{ "2001:db8::/32", 64, "2001:db8::/32" },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_addr a, r, self;
		char buf[AG_ADDR_STRLEN];

		assert_int_equal(ag_cidr_parse(cases[i].in, true, &a), 0);
		memset(&r, CANARY, sizeof(r));
		ag_addr_prefix(&a, cases[i].plen, &r);
		if (strcmp(fmt(&r, buf), cases[i].want) != 0)
			print_error("%s /%u: got %s\n", cases[i].in, cases[i].plen, buf);
		assert_string_equal(fmt(&r, buf), cases[i].want);
		assert_int_equal(r.family, a.family);
		/* in place */
		self = a;
		ag_addr_prefix(&self, cases[i].plen, &self);
		assert_memory_equal(&self, &r, sizeof(r));
		/* the network contains the address */
		assert_true(ag_addr_in(&r, &a));
	}

	/* every prefix length of an all-ones address keeps exactly plen bits */
	static const char *ones[] = { "255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" };
	for (size_t f = 0; f < AG_ARRAY_LEN(ones); f++) {
		struct ag_addr a, r;
		assert_int_equal(ag_cidr_parse(ones[f], true, &a), 0);
		for (unsigned plen = 0; plen <= ag_addr_width(&a) + 1; plen++) {
			unsigned bits = 0;
			ag_addr_prefix(&a, plen, &r);
			for (size_t j = 0; j < sizeof(r.b); j++)
				bits += (unsigned)__builtin_popcount(r.b[j]);
			unsigned want = plen > ag_addr_width(&a) ? ag_addr_width(&a) : plen;
			assert_int_equal(bits, want);
			assert_int_equal(r.plen, want);
			/* and they are the leading bits */
			for (unsigned b = 0; b < want; b++)
				assert_true(r.b[b / 8] & (0x80 >> (b % 8)));
		}
	}

	/* no address: stays none */
	{
		struct ag_addr none, r;
		char buf[AG_ADDR_STRLEN];
		memset(&none, 0, sizeof(none));
		ag_addr_prefix(&none, 24, &r);
		assert_int_equal(r.family, AG_AF_NONE);
		assert_int_equal(r.plen, 0);
		assert_string_equal(fmt(&r, buf), "none");
	}
}

static void test_width(void **state)
{
	struct ag_addr a;

	(void)state;
	assert_int_equal(ag_addr_parse("192.0.2.1", 9, &a), 0);
	assert_int_equal(ag_addr_width(&a), 32);
	assert_int_equal(ag_addr_parse("::1", 3, &a), 0);
	assert_int_equal(ag_addr_width(&a), 128);
	assert_int_equal(ag_addr_parse("::ffff:10.0.0.1", 15, &a), 0);
	assert_int_equal(ag_addr_width(&a), 32);
	assert_int_equal(ag_addr_parse("nope", 4, &a), AG_EINVAL);
	assert_int_equal(ag_addr_width(&a), 0);
	a.family = 9;
	assert_int_equal(ag_addr_width(&a), 0);
}

/* ---- ag_addr_in ----------------------------------------------------------- */

static void test_addr_in(void **state)
{
	static const struct {
		const char *net, *a;
		bool want;
	} cases[] = {
		{ "192.0.2.0/24", "192.0.2.0", true },
		{ "192.0.2.0/24", "192.0.2.255", true },
		{ "192.0.2.0/24", "192.0.3.0", false },
		{ "192.0.2.0/24", "192.0.1.255", false },
		{ "192.0.2.0/24", "192.0.2.128/25", true },  /* a smaller network inside */
		{ "192.0.2.0/24", "192.0.2.0/24", true },
		{ "192.0.2.0/24", "192.0.0.0/16", false },   /* a larger one is not */
		{ "192.0.0.0/24", "192.0.0.0/16", false },   /* even at the same start */
		{ "0.0.0.0/1", "0.0.0.0/0", false },
		{ "2001:db8::/64", "2001:db8::/48", false },
		{ "::/1", "::/0", false },
		{ "192.0.2.0/24", "::ffff:192.0.2.9", true },
		{ "192.0.2.0/24", "2001:db8::1", false },    /* family mismatch */
		{ "192.0.2.0/24", "::c000:209", false },
		{ "0.0.0.0/0", "203.0.113.9", true },
		{ "0.0.0.0/0", "::", false },
		{ "0.0.0.0/0", "::1", false },
		{ "::/0", "2001:db8::1", true },
		{ "::/0", "0.0.0.0", false },
		{ "::/0", "192.0.2.1", false },
		{ "::/96", "::192.0.2.1", true },
		{ "::/96", "192.0.2.1", false },
		{ "192.0.2.1", "192.0.2.1", true },
		{ "192.0.2.1", "192.0.2.2", false },
		{ "192.0.2.1", "192.0.2.0/24", false },
		{ "10.1.16.0/20", "10.1.31.255", true },
		{ "10.1.16.0/20", "10.1.32.0", false },
		{ "10.1.16.0/20", "10.1.15.255", false },
		{ "2001:db8::/32", "2001:db8:ffff::1", true },
		{ "2001:db8::/32", "2001:db9::1", false },
		{ "2001:db8:1:fff8::/61", "2001:db8:1:ffff:ffff::1", true },
		{ "2001:db8:1:fff8::/61", "2001:db8:1:fff7::1", false },
		{ "2001:db8::1", "2001:db8::1", true },
		{ "2001:db8::1", "2001:db8::2", false },
		{ "::1", "127.0.0.1", false },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_addr net, a;

		assert_int_equal(ag_cidr_parse(cases[i].net, true, &net), 0);
		assert_int_equal(ag_cidr_parse(cases[i].a, true, &a), 0);
		bool got = ag_addr_in(&net, &a);
		if (got != cases[i].want)
			print_error("%s in %s: got %d\n", cases[i].a, cases[i].net, got);
		assert_int_equal(got, cases[i].want);
	}

	/* nothing is inside "no address", and "no address" is inside nothing */
	struct ag_addr none, any4, any6;
	memset(&none, 0, sizeof(none));
	assert_int_equal(ag_cidr_parse("0.0.0.0/0", true, &any4), 0);
	assert_int_equal(ag_cidr_parse("::/0", true, &any6), 0);
	assert_false(ag_addr_in(&none, &none));
	assert_false(ag_addr_in(&none, &any4));
	assert_false(ag_addr_in(&any4, &none));
	assert_false(ag_addr_in(&any6, &none));
}

/* ---- CIDR lists ----------------------------------------------------------- */

static void add_cidr(struct ag_cidrs *l, const char *s)
{
	struct ag_addr a;

	assert_int_equal(ag_cidr_parse(s, true, &a), 0);
	assert_int_equal(ag_cidrs_add(l, &a), 0);
}

static bool match(const struct ag_cidrs *l, const char *s)
{
	struct ag_addr a;

	assert_int_equal(ag_addr_parse(s, strlen(s), &a), 0);
	return ag_cidrs_match(l, &a);
}

static void test_cidrs(void **state)
{
	static const char *nets[] = {
		"192.0.2.0/24", "198.51.100.7", "2001:db8::/32", "10.0.0.0/8",
		"172.16.0.0/12", "fe80::/10", "203.0.113.128/25", "::1",
		"100.64.0.0/10", "2001:db8:ffff::/48", /* more than the initial capacity */
	};
	static const struct {
		const char *a;
		bool want;
	} probes[] = {
		{ "192.0.2.200", true },     { "192.0.3.1", false },
		{ "198.51.100.7", true },    { "198.51.100.8", false },
		{ "2001:db8::42", true },    { "2001:db9::42", false },
		{ "10.255.255.255", true },  { "11.0.0.0", false },
		{ "172.31.0.1", true },      { "172.32.0.1", false },
		{ "fe80::1%eth0", true },    { "fec0::1", false },
		{ "203.0.113.129", true },   { "203.0.113.127", false },
		{ "::1", true },             { "::2", false },
		{ "100.127.0.1", true },     { "100.128.0.1", false },
		{ "::ffff:10.1.2.3", true }, { "::ffff:11.1.2.3", false },
	};
	struct ag_cidrs l = { 0 }, copy = { 0 }, empty_copy;

	(void)state;
	/* empty */
	assert_false(match(&l, "192.0.2.1"));
	assert_int_equal(ag_cidrs_copy(&empty_copy, &l), 0);
	assert_int_equal(empty_copy.n, 0);
	ag_cidrs_clear(&empty_copy);

	for (size_t i = 0; i < AG_ARRAY_LEN(nets); i++)
		add_cidr(&l, nets[i]);
	assert_int_equal(l.n, AG_ARRAY_LEN(nets));
	assert_true(l.cap >= l.n);
	for (size_t i = 0; i < AG_ARRAY_LEN(probes); i++) {
		if (match(&l, probes[i].a) != probes[i].want)
			print_error("probe %s\n", probes[i].a);
		assert_int_equal(match(&l, probes[i].a), probes[i].want);
	}
	/* entries keep their order and value */
	for (size_t i = 0; i < AG_ARRAY_LEN(nets); i++) {
		char buf[AG_ADDR_STRLEN];
		assert_string_equal(fmt(&l.v[i], buf), nets[i]);
	}
	/* "no address" matches nothing, even a catch-all list */
	{
		struct ag_addr none;
		memset(&none, 0, sizeof(none));
		assert_false(ag_cidrs_match(&l, &none));
	}

	/* deep copy: survives the original being cleared and reused */
	assert_int_equal(ag_cidrs_copy(&copy, &l), 0);
	assert_int_equal(copy.n, l.n);
	assert_true(copy.v != l.v);
	ag_cidrs_clear(&l);
	assert_int_equal(l.n, 0);
	assert_null(l.v);
	assert_false(match(&l, "192.0.2.200"));
	for (size_t i = 0; i < AG_ARRAY_LEN(probes); i++)
		assert_int_equal(match(&copy, probes[i].a), probes[i].want);

	/* the cleared list is reusable; the copy is independent of it */
	add_cidr(&l, "0.0.0.0/0");
	assert_int_equal(l.n, 1);
	assert_true(match(&l, "11.0.0.0"));
	assert_false(match(&l, "2001:db9::1"));
	assert_false(match(&copy, "11.0.0.0"));
	/* and the copy can grow on its own */
	add_cidr(&copy, "11.0.0.0/8");
	assert_true(match(&copy, "11.0.0.0"));
	assert_int_equal(l.n, 1);

	ag_cidrs_clear(&l);
	ag_cidrs_clear(&copy);
	ag_cidrs_clear(&copy); /* twice is harmless */
	assert_int_equal(copy.n, 0);

	/* many entries */
	for (unsigned i = 0; i < 1000; i++) {
		struct ag_addr a;
		char s[32];
		snprintf(s, sizeof(s), "10.%u.%u.0/24", i / 256, i % 256);
		assert_int_equal(ag_cidr_parse(s, true, &a), 0);
		assert_int_equal(ag_cidrs_add(&l, &a), 0);
	}
	assert_int_equal(l.n, 1000);
	assert_true(match(&l, "10.3.231.9"));  /* entry 999 */
	assert_false(match(&l, "10.3.232.9")); /* entry 1000 was never added */
	ag_cidrs_clear(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_mapped_equal),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_long),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_width),
		cmocka_unit_test(test_addr_in),
		cmocka_unit_test(test_cidrs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
