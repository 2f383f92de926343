/* rules.c - which log lines report an authentication outcome (rules.h). */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <pcre2.h>

#include "ag.h"
#include "rules.h"

/* Bounds on one match, so that no admin's pattern (or line) can hold the
 * watcher: backtracking steps, and the heap a match may use. */
#define MATCH_LIMIT 200000
#define HEAP_LIMIT_KIB 1024

struct rule {
	char *name;
	char *service;         /* NULL: the (?<service>) capture, else the name */
	enum aw_outcome outcome; /* AW_NONE: from the (?<result>) capture */
	pcre2_code *ident, *msg;
};

struct aw_rules {
	struct rule *v;
	size_t n;
	pcre2_match_data *md;
	pcre2_match_context *mc;
};

/* ---- the built-in sets ------------------------------------------------------ */

struct builtin {
	const char *set, *name, *service, *ident, *outcome, *msg;
};

/* Cyrus imapd 3.x and pop3d, the plaintext paths libsasl2 reports to no
 * plugin (IMAP LOGIN, POP3 USER/PASS; sasl_checkpass()):
 *   login: HOST [ADDR] USER plaintext[+TLS] User logged in SESSIONID=<...>
 *   badlogin: HOST [ADDR] plaintext (USER) [SASL(-13): DETAIL]
 * HOST is left out when the address has no name. Lines naming a SASL
 * mechanism (AUTHENTICATE PLAIN...) are not matched: the SASL plugin saw
 * and recorded those itself. SASL(-13) is a wrong password or unknown
 * user (libsasl2 reports both as -13); other codes are back-end faults,
 * which the guard never counts. An attempt the plugin's canonuser check
 * refused was counted and logged by that check: the plugin says so in the
 * detail ("authguard: refused"), and that line is ignored. The address is
 * taken from the front of the line, before any text the client sent; the
 * detail from its end, which no user name can reach past the last '['.
 * The ident is Cyrus' "cyrus/imap", "cyrus/pop3s"... or imapd/pop3d. */
#define CY_HOST "(?:[^\\s\\[\\]]+ )?\\[(?<addr>[0-9A-Za-z.:%_-]+)\\]"
#define CY_IMAP "(?:[\\w.-]+/)?imap[\\w.-]*|imapd"
#define CY_POP "(?:[\\w.-]+/)?pop3[\\w.-]*|pop3d"
#define CY_REFUSED "badlogin: " CY_HOST " plaintext \\(.*\\) \\[SASL\\(-13\\): [^\\[\\]]*authguard: refused\\]"
#define CY_BAD "badlogin: " CY_HOST " plaintext \\((?<user>.*)\\) \\[SASL\\(-13\\): [^\\[\\]]*\\]"
#define CY_GOOD "login: " CY_HOST " (?<user>\\S+) plaintext(?:\\+TLS)? User logged in(?: SESSIONID=<[^<>\\s]*>)?"

/* The SMTP server of issue 12 (HCL Domino's wording): the host comes after
 * the user, so the pattern is anchored at the end and the address is the
 * last field, which the server writes after whatever the user was. */
#define DO_HOST " ; connecting host (?<addr>[0-9A-Fa-f.:]+)"

static const struct builtin builtins[] = {
	{ "cyrus", "cyrus-imap-refused", "imap", CY_IMAP, "ignore", CY_REFUSED },
	{ "cyrus", "cyrus-imap-fail", "imap", CY_IMAP, "failure", CY_BAD },
	{ "cyrus", "cyrus-imap-ok", "imap", CY_IMAP, "success", CY_GOOD },
	{ "cyrus", "cyrus-pop-refused", "pop", CY_POP, "ignore", CY_REFUSED },
	{ "cyrus", "cyrus-pop-fail", "pop", CY_POP, "failure", CY_BAD },
	{ "cyrus", "cyrus-pop-ok", "pop", CY_POP, "success", CY_GOOD },
	{ "domino", "domino-smtp-fail", "smtp", "\\S*", "failure",
	  "SMTP Server: Authentication failed for user (?<user>.*)" DO_HOST },
	{ "domino", "domino-smtp-ok", "smtp", "\\S*", "success",
	  "SMTP Server: Authentication succeeded for user (?<user>.*)" DO_HOST },
};

/* ---- compiling ---------------------------------------------------------------- */

static pcre2_code *compile(const char *pat, const char *rule, const char *what, char *err,
			   size_t errlen)
{
	/* bytes, never UTF (a pattern cannot turn it on: (*UTF) is refused),
	 * anchored at both ends of the field; '.' matches a newline too: a
	 * journal message may hold one (a user name "alice\n", which
	 * libsasl2 trims to alice), and a line that no rule matched because
	 * of it would be a guess nobody counts */
	const uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NEVER_UTF |
			      PCRE2_NEVER_UCP | PCRE2_DUPNAMES | PCRE2_NEVER_BACKSLASH_C |
			      PCRE2_DOTALL;
	int code;
	PCRE2_SIZE off;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &code, &off,
				       NULL);

	if (re == NULL) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(code, msg, sizeof(msg));
		snprintf(err, errlen, "rule %s: %s pattern, at offset %zu: %s", rule, what,
			 (size_t)off, (const char *)msg);
		return NULL;
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* faster if there; fine if not */
	return re;
}

static bool has_group(const pcre2_code *re, const char *name)
{
	int g = pcre2_substring_number_from_name(re, (PCRE2_SPTR)name);

	return g > 0 || g == PCRE2_ERROR_NOUNIQUESUBSTRING;
}

static int outcome_of(const char *s, enum aw_outcome *o)
{
	if (strcmp(s, "success") == 0)
		*o = AW_SUCCESS;
	else if (strcmp(s, "failure") == 0)
		*o = AW_FAILURE;
	else if (strcmp(s, "ignore") == 0)
		*o = AW_IGNORE;
	else if (strcmp(s, "result") == 0)
		*o = AW_NONE;
	else
		return AG_EINVAL;
	return 0;
}

static bool good_name(const char *s)
{
	if (*s == '\0' || strlen(s) > AW_SERVICE_MAX)
		return false;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && strchr("._-", *s) == NULL)
			return false;
	return true;
}

static int add_rule(struct aw_rules *r, const char *name, const char *service, const char *ident,
		    const char *outcome, const char *msg, char *err, size_t errlen)
{
	struct rule *u;

	if (r->n >= AW_RULES_MAX) {
		snprintf(err, errlen, "more than %d rules", AW_RULES_MAX);
		return AG_ECONF;
	}
	if (!good_name(name)) {
		snprintf(err, errlen,
			 "rule name '%.64s': 1 to %d letters, digits, '.', '_' or '-' (it is the service name)",
			 name, AW_SERVICE_MAX);
		return AG_ECONF;
	}
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->v[i].name, name) == 0) {
			snprintf(err, errlen, "rule %s: defined twice", name);
			return AG_ECONF;
		}
	u = &r->v[r->n];
	memset(u, 0, sizeof(*u));
	if (outcome_of(outcome, &u->outcome) != 0) {
		snprintf(err, errlen, "rule %s: outcome '%.32s' is not success, failure, result or ignore",
			 name, outcome);
		return AG_ECONF;
	}
	u->ident = compile(ident, name, "ident", err, errlen);
	if (u->ident == NULL)
		return AG_ECONF;
	u->msg = compile(msg, name, "message", err, errlen);
	if (u->msg == NULL) {
		pcre2_code_free(u->ident);
		return AG_ECONF;
	}
	const char *missing = NULL;
	if (u->outcome != AW_IGNORE && !has_group(u->msg, "user"))
		missing = "(?<user>...)";
	else if (u->outcome != AW_IGNORE && !has_group(u->msg, "addr"))
		missing = "(?<addr>...)";
	else if (u->outcome == AW_NONE && !has_group(u->msg, "result"))
		missing = "(?<result>...) (its outcome is 'result')";
	if (missing != NULL) {
		snprintf(err, errlen, "rule %s: the message pattern has no %s", name, missing);
		pcre2_code_free(u->ident);
		pcre2_code_free(u->msg);
		return AG_ECONF;
	}
	u->name = strdup(name);
	u->service = service != NULL ? strdup(service) : NULL;
	if (u->name == NULL || (service != NULL && u->service == NULL)) {
		free(u->name);
		free(u->service);
		pcre2_code_free(u->ident);
		pcre2_code_free(u->msg);
		snprintf(err, errlen, "out of memory");
		return AG_ENOMEM;
	}
	r->n++;
	return 0;
}

/* "NAME IDENT OUTCOME REGEX": three words separated by blanks, then the
 * pattern, verbatim to the end of the line. */
static int add_def(struct aw_rules *r, const char *def, char *err, size_t errlen)
{
	char w[3][AG_CONF_STR_MAX];
	const char *p = def;

	for (int i = 0; i < 3; i++) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t n = strcspn(p, " \t");
		if (n == 0 || n >= sizeof(w[i])) {
			snprintf(err, errlen,
				 "watch_rule '%.64s': want NAME IDENT OUTCOME REGEX", def);
			return AG_ECONF;
		}
		memcpy(w[i], p, n);
		w[i][n] = '\0';
		p += n;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0') {
		snprintf(err, errlen, "watch_rule %.64s: no REGEX after NAME IDENT OUTCOME", w[0]);
		return AG_ECONF;
	}
	return add_rule(r, w[0], NULL, w[1], w[2], p, err, errlen);
}

static int add_set(struct aw_rules *r, const char *set, char *err, size_t errlen)
{
	bool known = false;

	for (size_t i = 0; i < AG_ARRAY_LEN(builtins); i++) {
		const struct builtin *b = &builtins[i];
		if (strcmp(b->set, set) != 0)
			continue;
		known = true;
		int rc = add_rule(r, b->name, b->service, b->ident, b->outcome, b->msg, err, errlen);
		if (rc != 0)
			return rc;
	}
	if (!known) {
		snprintf(err, errlen, "watch_rules: no built-in rule set '%.64s' (there are: cyrus, domino)",
			 set);
		return AG_ECONF;
	}
	return 0;
}

int aw_rules_new(const char *sets, const struct ag_strlist *defs, struct aw_rules **r_r,
		 char *err, size_t errlen)
{
	struct aw_rules *r = calloc(1, sizeof(*r));
	int rc = 0;

	*r_r = NULL;
	if (r == NULL || (r->v = calloc(AW_RULES_MAX, sizeof(*r->v))) == NULL) {
		free(r);
		snprintf(err, errlen, "out of memory");
		return AG_ENOMEM;
	}
	for (size_t i = 0; defs != NULL && i < defs->n && rc == 0; i++)
		rc = add_def(r, defs->v[i], err, errlen);
	for (const char *p = sets != NULL ? sets : ""; rc == 0 && *p != '\0';) {
		size_t n = strcspn(p, " \t,");
		if (n > 0) {
			char set[64];
			snprintf(set, sizeof(set), "%.*s", (int)(n < 63 ? n : 63), p);
			rc = add_set(r, set, err, errlen);
		}
		p += n;
		p += strspn(p, " \t,");
	}
	if (rc == 0 && r->n == 0) {
		snprintf(err, errlen, "no rules: set watch_rules or watch_rule");
		rc = AG_ECONF;
	}
	if (rc == 0) {
		/* room for every group of the largest pattern: a match whose
		 * groups do not all fit would not be a match */
		uint32_t most = 0;
		for (size_t i = 0; i < r->n; i++) {
			uint32_t c = 0;
			(void)pcre2_pattern_info(r->v[i].msg, PCRE2_INFO_CAPTURECOUNT, &c);
			most = c > most ? c : most;
			(void)pcre2_pattern_info(r->v[i].ident, PCRE2_INFO_CAPTURECOUNT, &c);
			most = c > most ? c : most;
		}
		r->md = pcre2_match_data_create(most + 1, NULL);
		r->mc = pcre2_match_context_create(NULL);
		if (r->md == NULL || r->mc == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = AG_ENOMEM;
		} else {
			pcre2_set_match_limit(r->mc, MATCH_LIMIT);
			pcre2_set_heap_limit(r->mc, HEAP_LIMIT_KIB);
		}
	}
	if (rc != 0) {
		aw_rules_free(r);
		return rc;
	}
	*r_r = r;
	return 0;
}

void aw_rules_free(struct aw_rules *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].name);
		free(r->v[i].service);
		pcre2_code_free(r->v[i].ident);
		pcre2_code_free(r->v[i].msg);
	}
	free(r->v);
	pcre2_match_data_free(r->md);
	pcre2_match_context_free(r->mc);
	free(r);
}

size_t aw_rules_count(const struct aw_rules *r)
{
	return r != NULL ? r->n : 0;
}

/* ---- matching ------------------------------------------------------------------ */

enum aw_outcome aw_result_word(const char *s, size_t n)
{
	static const char *good[] = { "success", "succeeded", "successful", "ok", "pass",
				      "passed", "accept", "accepted", "allow", "allowed", "good" };
	static const char *bad[] = { "failure", "fail", "failed", "reject", "rejected",
				     "deny", "denied", "bad", "invalid" };

	for (size_t i = 0; i < AG_ARRAY_LEN(good); i++)
		if (strlen(good[i]) == n && strncasecmp(s, good[i], n) == 0)
			return AW_SUCCESS;
	for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
		if (strlen(bad[i]) == n && strncasecmp(s, bad[i], n) == 0)
			return AW_FAILURE;
	return AW_NONE;
}

/* The capture @name of the last match: its bytes in @subject (set, and
 * the first set one of duplicate names), or false. */
static bool capture(const struct aw_rules *r, const struct rule *u, const char *subject,
		    const char *name, const char **p, size_t *n)
{
	PCRE2_SPTR first, last;
	/* with both pointers given: the size of a name table entry, whose
	 * first two bytes are the group's number; one entry per group of
	 * that name (PCRE2_DUPNAMES) */
	int entry = pcre2_substring_nametable_scan(u->msg, (PCRE2_SPTR)name, &first, &last);

	if (entry <= 0)
		return false;
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
	uint32_t pairs = pcre2_get_ovector_count(r->md);
	for (PCRE2_SPTR e = first; e <= last; e += entry) {
		uint32_t g = ((uint32_t)e[0] << 8) | e[1];
		if (g >= pairs || ov[2 * g] == PCRE2_UNSET)
			continue;
		*p = subject + ov[2 * g];
		*n = ov[2 * g + 1] - ov[2 * g];
		return true;
	}
	return false;
}

static bool take(const char *src, size_t n, char *dst, size_t max, size_t *len_r)
{
	if (n == 0 || n > max)
		return false;
	memcpy(dst, src, n);
	dst[n] = '\0';
	if (len_r != NULL)
		*len_r = n;
	return true;
}

/* An address as a server writes it: printable ASCII, no blank (whatever
 * an admin's pattern lets through). */
static bool printable(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] <= ' ' || p[i] >= 0x7f)
			return false;
	return true;
}

static bool matches(const struct aw_rules *r, const pcre2_code *re, const char *s, size_t n)
{
	return pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, r->md, r->mc) > 0;
}

enum aw_outcome aw_rules_match(struct aw_rules *r, const char *ident, size_t ident_len,
			       const char *msg, size_t msg_len, struct aw_match *m)
{
	memset(m, 0, sizeof(*m));
	if (msg_len > AW_LINE_MAX || ident_len > AW_LINE_MAX)
		return AW_NONE;
	for (size_t i = 0; i < r->n; i++) {
		const struct rule *u = &r->v[i];
		const char *p;
		size_t n;

		if (!matches(r, u->ident, ident, ident_len) || !matches(r, u->msg, msg, msg_len))
			continue;
		/* the first rule that matches decides, even when its fields
		 * are unusable: a later, looser rule must not get a second
		 * go at a line the precise one rejected */
		m->rule = u->name;
		if (u->outcome == AW_IGNORE)
			return m->outcome = AW_IGNORE;
		enum aw_outcome o = u->outcome;
		if (o == AW_NONE) {
			if (!capture(r, u, msg, "result", &p, &n))
				return AW_NONE;
			o = aw_result_word(p, n);
			if (o == AW_NONE)
				return AW_NONE;
		}
		if (!capture(r, u, msg, "user", &p, &n) ||
		    !take(p, n, m->user, AW_USER_MAX, &m->user_len))
			return AW_NONE;
		if (!capture(r, u, msg, "addr", &p, &n) || !printable(p, n) ||
		    !take(p, n, m->addr, AW_ADDR_MAX, &m->addr_len))
			return AW_NONE;
		const char *svc = u->service != NULL ? u->service : u->name;
		if (u->service == NULL && capture(r, u, msg, "service", &p, &n) && n > 0) {
			if (!take(p, n, m->service, AW_SERVICE_MAX, NULL))
				return AW_NONE;
		} else {
			snprintf(m->service, sizeof(m->service), "%s", svc);
		}
		return m->outcome = o;
	}
	return AW_NONE;
}

/* ---- the syslog line ------------------------------------------------------------ */

static int month_of(const char *p)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (memcmp(p, months + 3 * i, 3) == 0)
			return i;
	return -1;
}

static bool digits(const char *p, size_t n, int *v)
{
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		*v = *v * 10 + (p[i] - '0');
	}
	return true;
}

/* "Dec  1 22:01:42 " (16 bytes): local time, the year that puts it
 * nearest before now + 1 day (a December line read in January). */
static int parse_bsd_time(const char *p, size_t len, int64_t now_ms, int64_t *ms_r)
{
	int mon, day, hh, mm, ss;

	if (len < 16 || p[3] != ' ' || p[6] != ' ' || p[9] != ':' || p[12] != ':' || p[15] != ' ')
		return AG_EINVAL;
	mon = month_of(p);
	if (mon < 0)
		return AG_EINVAL;
	char d[2] = { p[4] == ' ' ? '0' : p[4], p[5] };
	if (!digits(d, 2, &day) || !digits(p + 7, 2, &hh) || !digits(p + 10, 2, &mm) ||
	    !digits(p + 13, 2, &ss) || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return AG_EINVAL;
	/* mktime() looks up the zone each time: a log has the same second
	 * on many lines in a row */
	static __thread char last[15];
	static __thread int64_t last_ms, last_now;
	if (last_now != 0 && memcmp(p, last, 15) == 0 && now_ms >= last_now &&
	    now_ms - last_now < 60000) {
		*ms_r = last_ms;
		return 0;
	}
	time_t now = (time_t)(now_ms / 1000);
	struct tm lt;
	if (localtime_r(&now, &lt) == NULL)
		return AG_EINVAL;
	for (int back = 0; back < 2; back++) {
		struct tm t = { .tm_year = lt.tm_year - back, .tm_mon = mon, .tm_mday = day,
				.tm_hour = hh, .tm_min = mm, .tm_sec = ss, .tm_isdst = -1 };
		time_t v = mktime(&t);
		if (v == (time_t)-1)
			return AG_EINVAL;
		if ((int64_t)v * 1000 <= now_ms + 86400000LL || back == 1) {
			*ms_r = (int64_t)v * 1000;
			memcpy(last, p, 15);
			last_ms = *ms_r;
			last_now = now_ms;
			return 0;
		}
	}
	return AG_EINVAL;
}

/* "2026-12-01T22:01:42.123456+01:00 " (rsyslog's RFC 3339 template):
 * returns the length taken (without the blank), or 0. */
static size_t parse_rfc3339(const char *p, size_t len, int64_t *ms_r)
{
	int y, mo, d, hh, mm, ss;
	size_t i = 19;

	if (len < 21 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':')
		return 0;
	if (!digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d) ||
	    !digits(p + 11, 2, &hh) || !digits(p + 14, 2, &mm) || !digits(p + 17, 2, &ss) ||
	    mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 || y < 1970)
		return 0;
	int64_t frac = 0, scale = 1000;
	if (i < len && p[i] == '.') {
		i++;
		size_t start = i;
		while (i < len && p[i] >= '0' && p[i] <= '9' && i - start < 9) {
			if (scale > 1) {
				scale /= 10;
				frac += (p[i] - '0') * scale;
			}
			i++;
		}
		if (i == start)
			return 0;
	}
	int64_t off = 0;
	if (i < len && p[i] == 'Z') {
		i++;
	} else if (i + 6 <= len && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
		int oh, om;
		if (!digits(p + i + 1, 2, &oh) || !digits(p + i + 4, 2, &om) || oh > 23 || om > 59)
			return 0;
		off = (oh * 60 + om) * 60 * (p[i] == '-' ? -1 : 1);
		i += 6;
	} else {
		return 0;
	}
	if (i >= len || p[i] != ' ')
		return 0;
	struct tm t = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			.tm_hour = hh, .tm_min = mm, .tm_sec = ss };
	time_t v = timegm(&t);
	if (v == (time_t)-1)
		return 0;
	*ms_r = ((int64_t)v - off) * 1000 + frac;
	return i;
}

int aw_line_parse(const char *buf, size_t len, int64_t now_ms, struct aw_line *l)
{
	size_t i;

	memset(l, 0, sizeof(*l));
	if (len > AW_LINE_MAX)
		return AG_EINVAL;
	if ((i = parse_rfc3339(buf, len, &l->time_ms)) > 0)
		i++;
	else if (parse_bsd_time(buf, len, now_ms, &l->time_ms) == 0)
		i = 16;
	else
		return AG_EINVAL;
	/* host: one word */
	l->host = buf + i;
	while (i < len && buf[i] != ' ')
		i++;
	l->host_len = (size_t)(buf + i - l->host);
	if (l->host_len == 0 || i >= len)
		return AG_EINVAL;
	i++;
	/* ident[pid]: or ident: - the ident ends at '[', ':' or a blank */
	l->ident = buf + i;
	while (i < len && buf[i] != '[' && buf[i] != ':' && buf[i] != ' ')
		i++;
	l->ident_len = (size_t)(buf + i - l->ident);
	if (l->ident_len == 0 || i >= len)
		return AG_EINVAL;
	if (buf[i] == '[') {
		size_t start = ++i;
		while (i < len && buf[i] >= '0' && buf[i] <= '9')
			i++;
		if (i == start || i >= len || buf[i] != ']')
			return AG_EINVAL;
		i++;
	}
	if (i + 2 >= len || buf[i] != ':' || buf[i + 1] != ' ') {
		/* "ident:" with an empty message is no attempt either */
		return AG_EINVAL;
	}
	i += 2;
	l->msg = buf + i;
	l->msg_len = len - i;
	return 0;
}
