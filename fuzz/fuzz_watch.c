/*
 * fuzz_watch.c - authguard-watch's syslog line parser and rules
 * (watch/rules.c) on hostile lines.
 *
 * Invariants, beyond the sanitizers:
 *   - aw_line_parse(): on success every field lies inside the input, in
 *     order, the ident and host are non-empty words, the message is
 *     non-empty and runs to the end of the line;
 *   - aw_rules_match() with the input as the message of Cyrus' and the
 *     SMTP server's idents, and as a whole line: a match carries a user
 *     of 1 to AW_USER_MAX bytes and an address of 1 to AW_ADDR_MAX, both
 *     found in the message, and the address is the server's field: for
 *     Cyrus the first bracketed text of the line, right after the
 *     "login: " / "badlogin: " and an optional host word; for the SMTP
 *     server the end of the line. No user name can move it.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "rules.h"

static struct aw_rules *rules;

static void init(void)
{
	static char def[] =
		"gateway gatewayd result auth addr=(?<addr>[0-9a-fA-F.:]+) result=(?<result>\\w+) user=(?<user>.+)";
	char *v[1] = { def };
	struct ag_strlist l = { v, 1 };
	char err[512];

	if (rules == NULL && aw_rules_new("cyrus domino", &l, &rules, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_watch: %s\n", err);
		abort();
	}
}

static bool inside(const char *p, size_t n, const uint8_t *data, size_t size)
{
	return p >= (const char *)data && p + n <= (const char *)data + size;
}

/* The Cyrus line's server-written prefix: "login: " or "badlogin: ", an
 * optional host word, then "[ADDR]". */
static void check_cyrus_addr(const char *msg, size_t len, const struct aw_match *m)
{
	size_t i;

	if (len >= 7 && memcmp(msg, "login: ", 7) == 0)
		i = 7;
	else if (len >= 10 && memcmp(msg, "badlogin: ", 10) == 0)
		i = 10;
	else
		CHECK(false, "a Cyrus match on a line that is not login:/badlogin:");
	const char *b = memchr(msg + i, '[', len - i);
	CHECK(b != NULL, "a Cyrus match without '['");
	size_t at = (size_t)(b - msg) + 1;
	CHECK(at + m->addr_len < len && memcmp(msg + at, m->addr, m->addr_len) == 0 &&
			   msg[at + m->addr_len] == ']',
		   "Cyrus address '%s' is not the line's first bracketed field", m->addr);
	/* and only one word (or none) between the prefix and it */
	for (size_t k = i; k + 1 < at; k++)
		CHECK(msg[k] != '[' && msg[k] != ']' &&
				   (msg[k] != ' ' || k + 2 == at),
			   "more than a host word before Cyrus' address");
}

static void check_match(const char *ident, const char *msg, size_t len)
{
	struct aw_match m;
	enum aw_outcome o = aw_rules_match(rules, ident, strlen(ident), msg, len, &m);

	CHECK(o >= AW_NONE && o <= AW_IGNORE, "outcome %d", (int)o);
	if (o != AW_SUCCESS && o != AW_FAILURE)
		return;
	CHECK(m.rule != NULL, "a match without a rule");
	CHECK(m.user_len >= 1 && m.user_len <= AW_USER_MAX, "user length %zu", m.user_len);
	CHECK(m.addr_len >= 1 && m.addr_len <= AW_ADDR_MAX && strlen(m.addr) == m.addr_len,
		   "address length %zu", m.addr_len);
	CHECK(m.user[m.user_len] == '\0', "user not terminated");
	CHECK(memmem(msg, len, m.user, m.user_len) != NULL, "user not in the line");
	CHECK(memmem(msg, len, m.addr, m.addr_len) != NULL, "address not in the line");
	CHECK(m.service[0] != '\0' && strlen(m.service) <= AW_SERVICE_MAX, "service");
	if (strncmp(m.rule, "cyrus-", 6) == 0) {
		check_cyrus_addr(msg, len, &m);
	} else if (strncmp(m.rule, "domino-", 7) == 0) {
		static const char tail[] = " ; connecting host ";
		size_t t = sizeof(tail) - 1;
		CHECK(len > m.addr_len + t &&
				   memcmp(msg + len - m.addr_len, m.addr, m.addr_len) == 0 &&
				   memcmp(msg + len - m.addr_len - t, tail, t) == 0,
			   "SMTP server address '%s' is not the line's last field", m.addr);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct aw_line l;

	init();
	/* an exact-size copy: ASan sees any read past the end */
	char *buf = fuzz_memdup(data, size);
	if (aw_line_parse(buf, size, 1796162502000LL, &l) == 0) {
		CHECK(inside(l.host, l.host_len, (const uint8_t *)buf, size) &&
				   inside(l.ident, l.ident_len, (const uint8_t *)buf, size) &&
				   inside(l.msg, l.msg_len, (const uint8_t *)buf, size),
			   "a field outside the line");
		CHECK(l.host_len > 0 && l.ident_len > 0 && l.msg_len > 0, "an empty field");
		CHECK(l.host < l.ident && l.ident < l.msg, "fields out of order");
		CHECK(l.msg + l.msg_len == buf + size, "the message stops before the line");
		CHECK(memchr(l.host, ' ', l.host_len) == NULL &&
				   memchr(l.ident, ' ', l.ident_len) == NULL,
			   "a blank in the host or ident");
		char ident[AW_LINE_MAX + 1];
		memcpy(ident, l.ident, l.ident_len);
		ident[l.ident_len] = '\0';
		check_match(ident, l.msg, l.msg_len);
	}
	static const char *const idents[] = { "cyrus/imap", "pop3d", "domino", "gatewayd" };
	for (size_t i = 0; i < sizeof(idents) / sizeof(idents[0]); i++)
		check_match(idents[i], buf, size);
	free(buf);
	return 0;
}
