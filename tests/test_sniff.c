/* test_sniff.c - the user names read from SCRAM's and DIGEST-MD5's first
 * client message before the mechanism sees it (sasl_plugin/sniff.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sniff.h"

typedef int (*sniff_fn)(const char *, size_t, char *, size_t);

struct sniff_case {
	const char *in;
	size_t len;       /* 0: strlen(in) */
	const char *want; /* NULL: no name (-1) */
};

static void run_cases(sniff_fn fn, const struct sniff_case *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char out[AGS_NAME_MAX + 1];
		size_t len = c[i].len ? c[i].len : strlen(c[i].in);
		memset(out, 0xA5, sizeof(out));
		int r = fn(c[i].in, len, out, sizeof(out));
		if (c[i].want == NULL) {
			if (r != -1)
				fail_msg("case %zu (%s): got '%s', want none", i, c[i].in, out);
			continue;
		}
		if (r < 0)
			fail_msg("case %zu (%s): no name, want '%s'", i, c[i].in, c[i].want);
		assert_int_equal(r, (int)strlen(c[i].want));
		assert_string_equal(out, c[i].want);
	}
}

static void test_scram(void **state)
{
	(void)state;
	static const struct sniff_case cases[] = {
		{ "n,,n=alice,r=rOprNGfwEbeRWgbNEkqO", 0, "alice" },
		{ "y,,n=alice,r=abc", 0, "alice" },
		{ "p=tls-unique,,n=alice,r=abc", 0, "alice" },
		{ "n,a=admin,n=alice,r=abc", 0, "alice" },        /* the authzid is not the user */
		{ "n,,n=al=2Cice=3D,r=abc", 0, "al,ice=" },       /* RFC 5802 escapes */
		{ "n,,n=al=2cice,r=abc", 0, "al,ice" },
		{ "n,,n=alice@example.org,r=abc", 0, "alice@example.org" },
		{ "n,,n=al=2Xice,r=abc", 0, NULL },               /* a bad escape */
		{ "n,,n=alice=2,r=abc", 0, NULL },
		{ "n,,n=alice=", 0, NULL },
		{ "n,,m=ext,n=alice,r=abc", 0, NULL },            /* a mandatory extension */
		{ "n,,n=,r=abc", 0, NULL },                       /* empty */
		{ "n,,n=alice", 0, NULL },                        /* no nonce: cut short */
		{ "n,,n=alice,", 0, NULL },
		{ "n,,n=alice,x=abc", 0, NULL },
		{ "x,,n=alice,r=abc", 0, NULL },                  /* no gs2 flag */
		{ "n,b=admin,n=alice,r=abc", 0, NULL },
		{ "n,n=alice,r=abc", 0, NULL },                   /* no authzid field */
		{ "n", 0, NULL },
		{ "", 0, NULL },
		{ "n,,n=al\0ice,r=abc", 16, NULL },               /* NUL inside the name */
		{ "n,,n=alice,r=abc", 10, NULL },                 /* the length is the end */
	};
	run_cases(ags_scram_user, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_digest(void **state)
{
	(void)state;
	static const struct sniff_case cases[] = {
		{ "username=\"alice\",realm=\"example.org\",nonce=\"abc\",nc=00000001", 0, "alice" },
		{ "charset=utf-8,username=\"alice\",nonce=\"a,b\"", 0, "alice" },
		{ "nonce=\"x,username=mallory\",username=\"alice\"", 0, "alice" }, /* inside a quote */
		{ "realm=\"r\" , USERNAME = \"alice\"", 0, "alice" },             /* case, spaces */
		{ "username=alice,nonce=x", 0, "alice" },                         /* a token */
		{ "username=\"al\\\"ice\\\\\"", 0, "al\"ice\\" },                 /* escapes undone */
		{ "username=\"alice\",username=\"bob\"", 0, "alice" },            /* the first */
		{ "username=\"\"", 0, NULL },
		{ "username=\"alice", 0, NULL },                                  /* unterminated */
		{ "username=\"alice\\", 0, NULL },
		{ "username", 0, NULL },
		{ "username alice", 0, NULL },
		{ "=\"alice\"", 0, NULL },
		{ "realm=\"r\"x,username=\"alice\"", 0, NULL },                   /* junk after a value */
		{ "nonce=\"abc\"", 0, NULL },                                     /* none */
		{ "", 0, NULL },
		{ "username=\"al\0ice\"", 17, NULL },
		{ "username=al\"ice", 0, NULL },
	};
	run_cases(ags_digest_user, cases, sizeof(cases) / sizeof(cases[0]));
}

/* A name longer than fits is no name (never a cut one), and the output
 * is never written past its size. */
static void test_limits(void **state)
{
	(void)state;
	char in[2 * AGS_NAME_MAX], out[AGS_NAME_MAX + 8];
	char user[AGS_NAME_MAX + 2];

	for (size_t n = AGS_NAME_MAX - 1; n <= AGS_NAME_MAX + 1; n++) {
		memset(user, 'u', n);
		user[n] = '\0';
		snprintf(in, sizeof(in), "n,,n=%s,r=abc", user);
		memset(out, 0xA5, sizeof(out));
		int r = ags_scram_user(in, strlen(in), out, sizeof(out));
		assert_int_equal(r, n <= AGS_NAME_MAX ? (int)n : -1);
		assert_int_equal((unsigned char)out[AGS_NAME_MAX + 1], 0xA5);
		snprintf(in, sizeof(in), "username=\"%s\"", user);
		r = ags_digest_user(in, strlen(in), out, sizeof(out));
		assert_int_equal(r, n <= AGS_NAME_MAX ? (int)n : -1);
	}
	/* a small buffer: only what fits with its NUL */
	char small[6];
	assert_int_equal(ags_scram_user("n,,n=alice,r=x", 14, small, sizeof(small)), 5);
	assert_int_equal(ags_scram_user("n,,n=alicex,r=x", 15, small, sizeof(small)), -1);
	assert_int_equal(ags_digest_user("username=alice", 14, small, sizeof(small)), 5);
	assert_int_equal(ags_digest_user("username=alicex", 15, small, sizeof(small)), -1);
	assert_int_equal(ags_scram_user(NULL, 3, small, sizeof(small)), -1);
	assert_int_equal(ags_digest_user("username=a", 10, NULL, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scram),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
