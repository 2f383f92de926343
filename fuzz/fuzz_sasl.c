/*
 * fuzz_sasl.c - libFuzzer harness for the SASL plugin's readers of a
 * client's first message (sasl_plugin/sniff.c): SCRAM's
 * client-first-message and DIGEST-MD5's digest-response, both sent by
 * anyone who connects, before any password is checked.
 *
 * The whole input goes to both readers (an exact-size heap copy, so
 * AddressSanitizer sees a read past its end). Checked:
 *  - the result is -1 or a length in 1..AGS_NAME_MAX; the name is
 *    NUL-terminated there and holds no NUL;
 *  - into a buffer of every size from 1 to 24 bytes: nothing is written
 *    past it, and a name is returned only if it fits with its NUL, equal
 *    to the one read into the full buffer;
 *  - a name read back from a message made of it (SCRAM: escaped, between
 *    "n,,n=" and ",r=x"; DIGEST-MD5: a quoted string with backslashes) is
 *    the same name: what the reader returns is what the client claimed.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "sniff.h"

typedef int (*sniff_fn)(const char *, size_t, char *, size_t);

static void check_result(const char *what, int r, const char *out)
{
	if (r == -1)
		return;
	CHECK(r >= 1 && r <= AGS_NAME_MAX, "%s: length %d", what, r);
	CHECK(out[r] == '\0', "%s: no NUL at %d", what, r);
	CHECK(memchr(out, '\0', (size_t)r) == NULL, "%s: NUL inside the name", what);
}

static void check_sizes(const char *what, sniff_fn fn, const char *in, size_t len, int full,
			const char *name)
{
	char buf[32];

	for (size_t sz = 1; sz <= 24; sz++) {
		memset(buf, 0xA5, sizeof(buf));
		int r = fn(in, len, buf, sz);
		for (size_t i = sz; i < sizeof(buf); i++)
			CHECK((unsigned char)buf[i] == 0xA5, "%s: byte %zu written past %zu", what, i, sz);
		if (full >= 0 && (size_t)full < sz) {
			CHECK(r == full && memcmp(buf, name, (size_t)full + 1) == 0,
			      "%s: size %zu gives %d, the full buffer %d", what, sz, r, full);
		} else {
			CHECK(r == -1, "%s: a name of %d bytes returned into %zu", what, r, sz);
		}
	}
}

/* The name made into a message again, and read back. */
static void check_round_trip(bool scram, const char *name, int n)
{
	char msg[4 * AGS_NAME_MAX + 16], back[AGS_NAME_MAX + 1];
	size_t m = 0;

	if (scram)
		m += (size_t)snprintf(msg, sizeof(msg), "n,,n=");
	else
		m += (size_t)snprintf(msg, sizeof(msg), "username=\"");
	for (int i = 0; i < n; i++) {
		char ch = name[i];
		if (scram && (ch == ',' || ch == '=')) {
			memcpy(msg + m, ch == ',' ? "=2C" : "=3D", 3);
			m += 3;
			continue;
		}
		if (!scram && (ch == '"' || ch == '\\'))
			msg[m++] = '\\';
		msg[m++] = ch;
	}
	memcpy(msg + m, scram ? ",r=x" : "\"", scram ? 4 : 1);
	m += scram ? 4 : 1;
	int r = scram ? ags_scram_user(msg, m, back, sizeof(back))
		      : ags_digest_user(msg, m, back, sizeof(back));
	CHECK(r == n && memcmp(back, name, (size_t)n) == 0, "%s: '%s' read back as %d bytes",
	      scram ? "scram" : "digest", name, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size ? size : 1);
	char out[AGS_NAME_MAX + 1];

	if (in == NULL)
		abort();
	memcpy(in, data, size);
	for (int scram = 0; scram <= 1; scram++) {
		const char *what = scram ? "scram" : "digest";
		sniff_fn fn = scram ? ags_scram_user : ags_digest_user;
		int r = fn(in, size, out, sizeof(out));
		check_result(what, r, out);
		check_sizes(what, fn, in, size, r, out);
		if (r > 0)
			check_round_trip(scram, out, r);
	}
	free(in);
	return 0;
}
