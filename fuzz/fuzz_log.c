/*
 * fuzz_log.c - libFuzzer harness for the attempt log line (store/log.c).
 *
 * The input is what a client controls: the user name, the service name
 * (through the SASL/PAM caller) and the raw remote host text. Checked:
 *  - ag_log_quote() into buffers of many sizes (canaries after each, and
 *    exact-size heap blocks for AddressSanitizer): never writes past
 *    @outlen, always NUL-terminates, returns the string length, gives
 *    "..." whose content is only printable ASCII other than blank and '=',
 *    and unescapes to a prefix of the input that is cut only where the
 *    next escape would not fit (and not at all when the buffer is large
 *    enough), never past @max bytes;
 *  - ag_log_format() with the input as user, service and rhost_raw, and
 *    every other field at its longest realistic value: the line fits in
 *    AG_LOG_LINE_MAX, holds only printable ASCII (no '\n', '\r' or NUL
 *    before its end), has exactly one " result=" and one " user=", parses
 *    as the documented fields in order, keeps the first AG_LOG_USER_MAX
 *    bytes of the user name exactly, adds user_len=N exactly for longer
 *    names, and ends with every trailing field intact (no value can push
 *    a field off the end);
 *  - ag_log_format() into short buffers gives a NUL-terminated prefix of
 *    the same line and writes nothing past the buffer.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "addr.h"
#include "fuzz.h"
#include "log.h"

#define CANARY 0xA5
#define NCANARY 16

/* Bytes ag_log_quote() spends on one input byte. */
static size_t esc_len(unsigned char ch)
{
	if (ch == '"' || ch == '\\')
		return 2;
	if (ch <= 0x20 || ch >= 0x7f || ch == '=')
		return 4;
	return 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Parse a quoted value at *@pp ("..." as ag_log_quote writes it); store up
 * to @cap unescaped bytes in @out and their count in *@k_r; leave *@pp past
 * the closing quote. Every escape must be one the writer would use.
 */
static void take_quoted(const char **pp, uint8_t *out, size_t cap, size_t *k_r, const char *what)
{
	const char *p = *pp;
	size_t k = 0;

	CHECK(*p == '"', "%s: value does not start with a quote: '%s'", what, p);
	p++;
	for (;;) {
		unsigned char ch = (unsigned char)*p;
		unsigned char v;
		CHECK(ch != '\0', "%s: unterminated quoted value", what);
		if (ch == '"') {
			p++;
			break;
		}
		if (ch == '\\') {
			if (p[1] == '"' || p[1] == '\\') {
				v = (unsigned char)p[1];
				p += 2;
			} else {
				CHECK(p[1] == 'x' && hexval(p[2]) >= 0 && hexval(p[3]) >= 0,
				      "%s: bad escape '%.4s'", what, p);
				v = (unsigned char)(hexval(p[2]) * 16 + hexval(p[3]));
				CHECK(esc_len(v) == 4, "%s: byte 0x%02x escaped needlessly", what, v);
				p += 4;
			}
		} else {
			CHECK(ch > 0x20 && ch < 0x7f && ch != '=',
			      "%s: raw byte 0x%02x inside a quoted value", what, ch);
			v = ch;
			p++;
		}
		CHECK(k < cap, "%s: quoted value longer than its source", what);
		out[k++] = v;
	}
	*pp = p;
	*k_r = k;
}

/* Check a quoted value of @in (@len bytes, at most @max kept) written into
 * @outlen bytes: a prefix of the input, cut only where the next escape
 * could not fit. @q is the quoted text, @qlen its length. */
static void check_quoted_prefix(const char *q, size_t qlen, const uint8_t *in, size_t len,
				size_t max, size_t outlen, const char *what)
{
	size_t want = len < max ? len : max;
	uint8_t *dec = malloc(want + 1);
	size_t k;
	const char *p = q;

	CHECK(dec != NULL, "out of memory");
	take_quoted(&p, dec, want, &k, what);
	CHECK((size_t)(p - q) == qlen, "%s: text after the closing quote", what);
	CHECK(k == 0 || memcmp(dec, in, k) == 0, "%s: value is not the input", what);
	if (k < want)
		CHECK(qlen - 1 + esc_len(in[k]) + 2 > outlen,
		      "%s: cut after %zu of %zu bytes though %zu more fit in %zu", what, k, want,
		      esc_len(in[k]), outlen);
	free(dec);
}

static void check_quote_one(const uint8_t *in, size_t len, size_t outlen, size_t max)
{
	char *buf = malloc(outlen + NCANARY);

	CHECK(buf != NULL, "out of memory");
	memset(buf, CANARY, outlen + NCANARY);
	size_t n = ag_log_quote(buf, outlen, (const char *)in, len, max);
	for (size_t i = outlen; i < outlen + NCANARY; i++)
		CHECK((uint8_t)buf[i] == CANARY, "ag_log_quote wrote past %zu bytes (at %zu)",
		      outlen, i);
	if (outlen == 0) {
		CHECK(n == 0, "wrote %zu bytes into none", n);
	} else if (outlen < 3) {
		CHECK(n == 0 && buf[0] == '\0', "outlen %zu: returned %zu", outlen, n);
	} else {
		CHECK(n >= 2 && n < outlen, "outlen %zu: returned %zu", outlen, n);
		CHECK(buf[n] == '\0' && strlen(buf) == n, "outlen %zu: length %zu, returned %zu",
		      outlen, strlen(buf), n);
		check_quoted_prefix(buf, n, in, in != NULL ? len : 0, max, outlen, "ag_log_quote");
	}
	free(buf);
}

static void check_quote(const uint8_t *in, size_t len)
{
	static const size_t maxes[] = { 0, 1, 64, AG_LOG_USER_MAX, SIZE_MAX };
	size_t big = 4 * len + 3;
	const size_t sizes[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 67, 131, 4 * AG_LOG_USER_MAX + 8,
				 big, big - 1 };

	for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++)
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
			check_quote_one(in, len, sizes[s], maxes[m]);
	check_quote_one(NULL, len, 16, SIZE_MAX); /* no input: "" */

	/* a buffer large enough keeps every byte up to max */
	char *buf = malloc(big);
	CHECK(buf != NULL, "out of memory");
	size_t n = ag_log_quote(buf, big, (const char *)in, len, SIZE_MAX);
	const char *p = buf;
	uint8_t *dec = malloc(len + 1);
	size_t k;
	CHECK(dec != NULL, "out of memory");
	take_quoted(&p, dec, len, &k, "ag_log_quote (large buffer)");
	CHECK(k == len && (size_t)(p - buf) == n, "a large enough buffer kept %zu of %zu bytes",
	      k, len);
	free(dec);
	free(buf);
}

/* ---- the whole line ------------------------------------------------------- */

static void expect(const char **pp, const char *lit, const char *line)
{
	size_t n = strlen(lit);

	CHECK(strncmp(*pp, lit, n) == 0, "expected '%s' at '%.40s' in line '%s'", lit, *pp, line);
	*pp += n;
}

/* A bare word: [A-Za-z0-9._:/@+-]+ */
static size_t bare_len(const char *p)
{
	size_t n = 0;

	while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
	       (p[n] >= '0' && p[n] <= '9') || (p[n] != '\0' && strchr("._:/@+-", p[n]) != NULL))
		n++;
	return n;
}

static size_t count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void check_line(const struct ag_logline *l, const char *service)
{
	char *line = malloc(AG_LOG_LINE_MAX + NCANARY);
	char t[64], a[AG_ADDR_STRLEN], tail[512];

	CHECK(line != NULL, "out of memory");
	memset(line, CANARY, AG_LOG_LINE_MAX + NCANARY);
	ag_log_format(l, line, AG_LOG_LINE_MAX);
	for (size_t i = AG_LOG_LINE_MAX; i < AG_LOG_LINE_MAX + NCANARY; i++)
		CHECK((uint8_t)line[i] == CANARY, "ag_log_format wrote past AG_LOG_LINE_MAX");
	size_t len = strnlen(line, AG_LOG_LINE_MAX);
	CHECK(len < AG_LOG_LINE_MAX, "line not NUL-terminated within AG_LOG_LINE_MAX");
	for (size_t i = 0; i < len; i++)
		CHECK(line[i] >= 0x20 && line[i] < 0x7f, "byte 0x%02x at %zu in line '%s'",
		      (unsigned char)line[i], i, line);
	CHECK(count_of(line, " result=") == 1, "%zu ' result=' in line '%s'",
	      count_of(line, " result="), line);
	CHECK(count_of(line, " user=") == 1, "%zu ' user=' in line '%s'", count_of(line, " user="),
	      line);

	/* field by field */
	const char *p = line;
	expect(&p, "time=", line);
	ag_log_time(l->time_ms, t, sizeof(t));
	expect(&p, t, line);
	expect(&p, " service=", line);
	size_t slen = strlen(service);
	if (*p == '"') {
		const char *q = p;
		uint8_t dec[64];
		size_t k;
		take_quoted(&p, dec, sizeof(dec), &k, "service");
		check_quoted_prefix(q, (size_t)(p - q), (const uint8_t *)service, slen, 64, 67,
				    "service");
	} else {
		size_t n = bare_len(p);
		CHECK(n > 0 && n == slen && n <= 64 && memcmp(p, service, n) == 0,
		      "service field '%.*s' is not the service", (int)n, p);
		p += n;
	}
	expect(&p, " user=", line);
	if (l->user == NULL) {
		expect(&p, "none", line);
	} else {
		size_t want = l->user_len < AG_LOG_USER_MAX ? l->user_len : AG_LOG_USER_MAX;
		uint8_t dec[AG_LOG_USER_MAX];
		size_t k;
		take_quoted(&p, dec, sizeof(dec), &k, "user");
		CHECK(k == want && memcmp(dec, l->user, k) == 0,
		      "user field keeps %zu bytes, not the first %zu of the name", k, want);
		if (l->user_len > AG_LOG_USER_MAX) {
			char ul[48];
			snprintf(ul, sizeof(ul), " user_len=%zu", l->user_len);
			expect(&p, ul, line);
		}
	}
	expect(&p, " rhost=", line);
	if (l->addr != NULL && l->addr->family != AG_AF_NONE) {
		ag_addr_format(l->addr, a, sizeof(a));
		expect(&p, a, line);
	} else {
		expect(&p, "none", line);
		if (l->rhost_raw != NULL && l->rhost_len > 0) {
			expect(&p, " rhost_raw=", line);
			const char *q = p;
			uint8_t dec[64];
			size_t k;
			take_quoted(&p, dec, sizeof(dec), &k, "rhost_raw");
			check_quoted_prefix(q, (size_t)(p - q), (const uint8_t *)l->rhost_raw,
					    l->rhost_len, 64, 67, "rhost_raw");
		}
	}

	/* the rest, from the fixed fields, must be there whole */
	size_t o = (size_t)snprintf(tail, sizeof(tail), " result=%s action=%s", l->result, l->action);
	if (l->would != NULL)
		o += (size_t)snprintf(tail + o, sizeof(tail) - o, " mode=log-only would=%s", l->would);
	if (l->reason != NULL)
		o += (size_t)snprintf(tail + o, sizeof(tail) - o, " reason=%s", l->reason);
	o += (size_t)snprintf(tail + o, sizeof(tail) - o,
			      " delay_ms=%lld src_score=%.1f user_score=%.1f user_state=%s familiar=%s",
			      (long long)l->delay_ms, l->src_score, l->user_score,
			      l->user_state != NULL ? l->user_state : "unknown",
			      l->familiar ? "yes" : "no");
	if (l->repeat_pw)
		o += (size_t)snprintf(tail + o, sizeof(tail) - o, " repeat=yes");
	if (l->event != NULL)
		o += (size_t)snprintf(tail + o, sizeof(tail) - o, " event=%s", l->event);
	if (l->until > 0) {
		ag_log_time(l->until, t, sizeof(t));
		o += (size_t)snprintf(tail + o, sizeof(tail) - o, " until=%s", t);
	}
	CHECK(o < sizeof(tail), "harness: tail too long");
	CHECK(strcmp(p, tail) == 0, "line ends '%s', want '%s' (cut or changed); line '%s'", p,
	      tail, line);

	/* a short buffer holds a prefix of the same line */
	static const size_t shorts[] = { 1, 2, 10, 40, 100, 300, 700 };
	for (size_t i = 0; i < sizeof(shorts) / sizeof(shorts[0]); i++) {
		size_t n = shorts[i];
		char *s = malloc(n); /* exact size: ASan sees an overrun */
		CHECK(s != NULL, "out of memory");
		memset(s, CANARY, n);
		ag_log_format(l, s, n);
		size_t m = strnlen(s, n);
		CHECK(m < n, "line into %zu bytes not NUL-terminated", n);
		CHECK(m == (len < n - 1 ? len : n - 1) && memcmp(s, line, m) == 0,
		      "line into %zu bytes is not a prefix of the full line", n);
		free(s);
	}
	free(line);
}

/* ---- driving it ----------------------------------------------------------- */

static const struct {
	const char *result, *action, *would, *reason, *user_state, *event;
} fixed[] = {
	/* the longest of each field the guard writes */
	{ "unchecked", "refuse", "refuse", "tarpit_full", "unknown", "ban+net_ban+lock" },
	{ "success", "allow", NULL, NULL, "ok", NULL },
	{ "fail", "tarpit", "tarpit", "net_banned", "locked", "lock" },
	{ "fail", "allow", NULL, "trusted", "none", "ban" },
};
static const double scores[] = { 0, 0.5, 12.3, 999999999999.9, 1000000000001.0 };
/* the clock (ag_now_ms: 0 if it fails), and expiries, which come from
 * stored records (any value >= 0) */
static const int64_t times[] = { 1795000000123LL, 0, 999, 253402300799999LL };
static const int64_t untils[] = { 0, 999, 1795000600123LL, 253402300799999LL, INT64_MAX };
static const int64_t delays[] = { 0, 500, 60000 };

static void addr_of(unsigned sel, const char *raw, size_t rlen, struct ag_addr *a)
{
	switch (sel % 5) {
	case 0: memset(a, 0, sizeof(*a)); break;
	case 1: (void)ag_addr_parse("192.0.2.7", 9, a); break;
	case 2: (void)ag_addr_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 39, a); break;
	case 3: (void)ag_cidr_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127", true, a); break;
	default: (void)ag_addr_parse(raw, rlen, a); break; /* what the guard does */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ag_logline l;
	struct ag_addr a;
	char *service, *user, *rhost;

	check_quote(data, size);

	/* 1: the whole input in every client-controlled field, the rest longest */
	service = fuzz_strdup(data, size);
	user = fuzz_memdup(data, size);
	memset(&l, 0, sizeof(l));
	memset(&a, 0, sizeof(a));
	l.time_ms = times[0];
	l.service = service;
	l.user = user;
	l.user_len = size;
	l.addr = &a;
	l.rhost_raw = user;
	l.rhost_len = size;
	l.result = fixed[0].result;
	l.action = fixed[0].action;
	l.would = fixed[0].would;
	l.reason = fixed[0].reason;
	l.delay_ms = 60000;
	l.event = fixed[0].event;
	l.until = INT64_MAX;
	l.src_score = l.user_score = scores[4];
	l.user_state = fixed[0].user_state;
	l.familiar = true;
	l.repeat_pw = true;
	check_line(&l, service);
	l.time_ms = times[3];
	check_line(&l, service);
	free(service);
	free(user);
	if (size < 4)
		return 0;

	/* 2: the input split into user, service and rhost; its first bytes
	 * choose the other fields */
	unsigned f = data[0], g = data[1];
	size_t rest = size - 4;
	size_t ulen = (size_t)data[2] | ((size_t)(f & 1) << 8);
	if (ulen > rest)
		ulen = rest;
	size_t slen = data[3];
	if (slen > rest - ulen)
		slen = rest - ulen;
	const uint8_t *p = data + 4;
	user = fuzz_memdup(p, ulen);
	service = fuzz_strdup(p + ulen, slen);
	rhost = fuzz_memdup(p + ulen + slen, rest - ulen - slen);
	size_t rlen = rest - ulen - slen;

	memset(&l, 0, sizeof(l));
	size_t fx = (f >> 1) % (sizeof(fixed) / sizeof(fixed[0]));
	l.time_ms = times[(g >> 4) % (sizeof(times) / sizeof(times[0]))];
	l.service = (f & 0x08) && slen == 0 ? NULL : service;
	l.user = (f & 0x10) ? NULL : user;
	l.user_len = ulen;
	addr_of(g & 0x0f, rhost, rlen, &a);
	l.addr = (f & 0x20) ? NULL : &a;
	l.rhost_raw = (f & 0x40) ? NULL : rhost;
	l.rhost_len = rlen;
	l.result = fixed[fx].result;
	l.action = fixed[fx].action;
	l.would = fixed[fx].would;
	l.reason = fixed[fx].reason;
	l.user_state = (f & 0x80) ? NULL : fixed[fx].user_state;
	l.event = fixed[fx].event;
	l.delay_ms = delays[g % 3];
	l.until = untils[g % (sizeof(untils) / sizeof(untils[0]))];
	l.src_score = scores[f % 5];
	l.user_score = scores[g % 5];
	l.familiar = (g & 1) != 0;
	l.repeat_pw = (g & 2) != 0;
	check_line(&l, l.service != NULL ? l.service : "");
	free(user);
	free(service);
	free(rhost);
	return 0;
}
