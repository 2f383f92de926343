/* addr.c - address parsing and prefix arithmetic (no I/O). */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool all_digits(const char *s, size_t n)
{
	if (n == 0 || n > 5)
		return false;
	unsigned long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v <= 65535;
}

/* Parse exactly @n bytes as a bare IPv4 or IPv6 literal (IPv6 may carry a
 * %zone, which is dropped). */
static int parse_literal(const char *s, size_t n, struct ag_addr *a)
{
	char buf[64];

	if (n == 0 || n >= sizeof(buf))
		return AG_EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';

	memset(a, 0, sizeof(*a));
	if (memchr(buf, ':', n) == NULL) {
		if (inet_pton(AF_INET, buf, a->b) != 1)
			return AG_EINVAL;
		a->family = AG_AF_INET;
		a->plen = 32;
		return 0;
	}
	char *zone = strchr(buf, '%');
	if (zone != NULL) {
		/* an interface name or index: nothing else may hide after '%' */
		size_t zlen = strlen(zone + 1);
		if (zlen == 0 || zlen >= 16 ||
		    strspn(zone + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "0123456789._-") != zlen)
			return AG_EINVAL;
		*zone = '\0';
	}
	if (inet_pton(AF_INET6, buf, a->b) != 1)
		return AG_EINVAL;
	if (memcmp(a->b, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(a->b, a->b + 12, 4);
		memset(a->b + 4, 0, 12);
		a->family = AG_AF_INET;
		a->plen = 32;
		return 0;
	}
	a->family = AG_AF_INET6;
	a->plen = 128;
	return 0;
}

/* Split off a port: "[v6]:p", "[v6]", "v4:p", "addr;p". Sets *n to the
 * length of the address part, *skip to bytes to skip in front. */
static int strip_port(const char *s, size_t len, size_t *skip, size_t *n)
{
	*skip = 0;
	*n = len;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (close == NULL)
			return AG_EINVAL;
		size_t inner = (size_t)(close - s) - 1;
		size_t rest = len - (size_t)(close - s) - 1;
		if (rest > 0 && !(close[1] == ':' && all_digits(close + 2, rest - 1)))
			return AG_EINVAL;
		*skip = 1;
		*n = inner;
		return 0;
	}
	const char *semi = memchr(s, ';', len);
	if (semi != NULL) {
		size_t at = (size_t)(semi - s);
		if (!all_digits(semi + 1, len - at - 1))
			return AG_EINVAL;
		*n = at;
		return 0;
	}
	const char *colon = memchr(s, ':', len);
	if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL) {
		/* exactly one colon: IPv4 (or a name) with a port */
		size_t at = (size_t)(colon - s);
		if (!all_digits(colon + 1, len - at - 1))
			return AG_EINVAL;
		*n = at;
	}
	return 0;
}

int ag_addr_parse(const char *s, size_t len, struct ag_addr *a_r)
{
	size_t skip, n;

	memset(a_r, 0, sizeof(*a_r));
	if (s == NULL)
		return AG_EINVAL;
	while (len > 0 && is_blank(s[0])) {
		s++;
		len--;
	}
	while (len > 0 && is_blank(s[len - 1]))
		len--;
	if (len == 0 || len > AG_ADDR_INPUT_MAX || memchr(s, '\0', len) != NULL)
		return AG_EINVAL;
	if (strip_port(s, len, &skip, &n) != 0)
		return AG_EINVAL;
	int rc = parse_literal(s + skip, n, a_r);
	if (rc != 0)
		memset(a_r, 0, sizeof(*a_r));
	return rc;
}

unsigned ag_addr_width(const struct ag_addr *a)
{
	return a->family == AG_AF_INET ? 32 : a->family == AG_AF_INET6 ? 128 : 0;
}

void ag_addr_prefix(const struct ag_addr *a, unsigned plen, struct ag_addr *r)
{
	unsigned width = ag_addr_width(a);
	struct ag_addr out;

	memset(&out, 0, sizeof(out));
	out.family = a->family;
	if (plen > width)
		plen = width;
	if (plen > a->plen)
		plen = a->plen;
	out.plen = (uint8_t)plen;
	unsigned full = plen / 8, bits = plen % 8;
	memcpy(out.b, a->b, full);
	if (bits != 0)
		out.b[full] = (uint8_t)(a->b[full] & (0xff << (8 - bits)));
	*r = out;
}

bool ag_addr_in(const struct ag_addr *net, const struct ag_addr *a)
{
	struct ag_addr m;

	if (net->family == AG_AF_NONE || net->family != a->family || a->plen < net->plen)
		return false;
	ag_addr_prefix(a, net->plen, &m);
	return memcmp(m.b, net->b, sizeof(m.b)) == 0;
}

int ag_cidr_parse(const char *s, bool strict, struct ag_addr *a_r)
{
	memset(a_r, 0, sizeof(*a_r));
	if (s == NULL)
		return AG_EINVAL;
	size_t len = strlen(s);
	const char *slash = strchr(s, '/');
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	struct ag_addr a;

	if (parse_literal(s, alen, &a) != 0)
		return AG_EINVAL;
	unsigned plen = ag_addr_width(&a);
	if (slash != NULL) {
		const char *p = slash + 1;
		unsigned v = 0;
		if (*p == '\0' || strlen(p) > 3)
			return AG_EINVAL;
		for (; *p != '\0'; p++) {
			if (*p < '0' || *p > '9')
				return AG_EINVAL;
			v = v * 10 + (unsigned)(*p - '0');
		}
		if (v > plen)
			return AG_EINVAL;
		plen = v;
	}
	ag_addr_prefix(&a, plen, a_r);
	if (strict && memcmp(a_r->b, a.b, sizeof(a.b)) != 0) {
		memset(a_r, 0, sizeof(*a_r));
		return AG_EINVAL;
	}
	return 0;
}

void ag_addr_format(const struct ag_addr *a, char *buf, size_t len)
{
	char tmp[INET6_ADDRSTRLEN];
	const char *p = NULL;

	if (len == 0)
		return;
	if (a->family == AG_AF_INET)
		p = inet_ntop(AF_INET, a->b, tmp, sizeof(tmp));
	else if (a->family == AG_AF_INET6)
		p = inet_ntop(AF_INET6, a->b, tmp, sizeof(tmp));
	if (p == NULL) {
		snprintf(buf, len, "none");
		return;
	}
	if (a->plen < ag_addr_width(a))
		snprintf(buf, len, "%s/%u", tmp, (unsigned)a->plen);
	else
		snprintf(buf, len, "%s", tmp);
}

int ag_cidrs_add(struct ag_cidrs *l, const struct ag_addr *a)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct ag_addr *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			return AG_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *a;
	return 0;
}

bool ag_cidrs_match(const struct ag_cidrs *l, const struct ag_addr *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (ag_addr_in(&l->v[i], a))
			return true;
	return false;
}

void ag_cidrs_clear(struct ag_cidrs *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

int ag_cidrs_copy(struct ag_cidrs *dst, const struct ag_cidrs *src)
{
	memset(dst, 0, sizeof(*dst));
	if (src->n == 0)
		return 0;
	dst->v = malloc(src->n * sizeof(*dst->v));
	if (dst->v == NULL)
		return AG_ENOMEM;
	memcpy(dst->v, src->v, src->n * sizeof(*dst->v));
	dst->n = dst->cap = src->n;
	return 0;
}
