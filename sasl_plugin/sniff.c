/*
 * sniff.c - see sniff.h. Each reader walks the message once, forwards
 * only, and gives up (-1) at the first byte it does not expect: a claim
 * it cannot read is left to the mechanism, which refuses it or names the
 * user itself (the plugin's check after the step).
 */
#include "sniff.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Appends one byte of the name; false when it would not fit (with its NUL). */
static bool put(char *out, size_t out_max, size_t *n, char ch)
{
	if (ch == '\0' || *n + 1 >= out_max || *n + 1 > AGS_NAME_MAX)
		return false;
	out[(*n)++] = ch;
	return true;
}

static int done(char *out, size_t n)
{
	if (n == 0)
		return -1;
	out[n] = '\0';
	return (int)n;
}

/* ---- SCRAM ---------------------------------------------------------------- */

/* Skips one gs2-header field up to and including its ','; false if none. */
static bool skip_field(const char **p, const char *end)
{
	const char *c = memchr(*p, ',', (size_t)(end - *p));
	if (c == NULL)
		return false;
	*p = c + 1;
	return true;
}

int ags_scram_user(const char *in, size_t len, char *out, size_t out_max)
{
	const char *p = in, *end = in + len;
	size_t n = 0;

	if (in == NULL || out == NULL || out_max == 0)
		return -1;
	/* gs2-cbind-flag: "n", "y" or "p=" cb-name */
	if (p == end || (*p != 'n' && *p != 'y' && *p != 'p'))
		return -1;
	if (!skip_field(&p, end))
		return -1;
	/* authzid: empty or "a=" saslname */
	if (p < end && *p != ',' && !(end - p >= 2 && p[0] == 'a' && p[1] == '='))
		return -1;
	if (!skip_field(&p, end))
		return -1;
	/* a mandatory extension (reserved "m=") is not SCRAM as specified */
	if (end - p < 2 || p[0] != 'n' || p[1] != '=')
		return -1;
	for (p += 2; p < end && *p != ','; p++) {
		char ch = *p;
		if (ch == '=') {
			if (end - p < 3)
				return -1;
			if (p[1] == '2' && (p[2] == 'C' || p[2] == 'c'))
				ch = ',';
			else if (p[1] == '3' && (p[2] == 'D' || p[2] == 'd'))
				ch = '=';
			else
				return -1;
			p += 2;
		}
		if (!put(out, out_max, &n, ch))
			return -1;
	}
	/* the nonce must follow: a name cut short is no claim */
	if (end - p < 3 || p[1] != 'r' || p[2] != '=')
		return -1;
	return done(out, n);
}

/* ---- DIGEST-MD5 ------------------------------------------------------------ */

static bool lws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Reads one value (quoted string or token) at *p into @out (when @out is
 * not NULL) and leaves *p after it. */
static bool value(const char **p, const char *end, char *out, size_t out_max, size_t *n)
{
	const char *s = *p;

	if (s < end && *s == '"') {
		for (s++; s < end && *s != '"'; s++) {
			if (*s == '\\' && ++s == end)
				return false;
			if (*s == '\0' || (out != NULL && !put(out, out_max, n, *s)))
				return false;
		}
		if (s == end)
			return false; /* unterminated */
		*p = s + 1;
		return true;
	}
	for (; s < end && *s != ',' && !lws(*s); s++) {
		if (*s == '"' || *s == '\0')
			return false;
		if (out != NULL && !put(out, out_max, n, *s))
			return false;
	}
	*p = s;
	return true;
}

int ags_digest_user(const char *in, size_t len, char *out, size_t out_max)
{
	const char *p = in, *end = in + len;

	if (in == NULL || out == NULL || out_max == 0)
		return -1;
	while (p < end) {
		while (p < end && (lws(*p) || *p == ','))
			p++;
		if (p == end)
			break;
		const char *name = p;
		while (p < end && *p != '=' && *p != ',' && !lws(*p) && *p != '\0')
			p++;
		size_t nlen = (size_t)(p - name);
		while (p < end && lws(*p))
			p++;
		if (nlen == 0 || p == end || *p != '=')
			return -1;
		p++;
		while (p < end && lws(*p))
			p++;
		bool is_user = nlen == 8 && strncasecmp(name, "username", 8) == 0;
		size_t n = 0;
		if (!value(&p, end, is_user ? out : NULL, out_max, &n))
			return -1;
		if (is_user)
			return done(out, n);
		while (p < end && lws(*p))
			p++;
		if (p < end && *p != ',')
			return -1;
	}
	return -1;
}
