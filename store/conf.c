/* conf.c - the config table and its strict parser. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

/* T_STRING and T_STRLIST values are taken verbatim to the end of the line
 * (a '#' in them is not a comment: regular expressions use it); T_STRLIST
 * and T_CIDRS keys may be given on several lines, entries accumulate. */
enum ctype { T_PATH, T_MODE, T_BOOL, T_LOG, T_DURATION, T_COUNT, T_SIZE, T_CIDRS, T_STRING,
	     T_STRLIST,
	     T_PREFIXES, /* "LEN[:AFTER] ...", into a struct ag_prefixes */
	     T_DOMAINS, /* mail domains, comma- or blank-separated, into a struct ag_strlist */
	     T_HOSTPORTS /* host:port, [v6]:port, comma- or blank-separated, into a struct ag_strlist */ };

struct ckey {
	const char *name;
	enum ctype type;
	size_t off;
	int64_t min, max;  /* counts; durations in ms */
	const char *def;
};

#define OFF(f) offsetof(struct ag_conf, f)
#define SEC 1000LL
#define DAY (86400LL * SEC)

/* The public contract: names are fixed; authguard.conf(5) explains each. */
static const struct ckey keys[] = {
	{ "db_dir", T_PATH, OFF(db_dir), 0, 0, AG_DEFAULT_DB_DIR },
	{ "db_max_size", T_SIZE, OFF(db_max_size), 8LL << 20, 1LL << 40, "128M" },
	{ "mode", T_MODE, OFF(mode), 0, 0, "enforce" },
	{ "fail_open", T_BOOL, OFF(fail_open), 0, 0, "yes" },
	{ "log", T_LOG, OFF(log_kind), 0, 0, "syslog" },
	{ "decay_half_life", T_DURATION, OFF(decay_half_life), SEC, 365 * DAY, "10m" },
	{ "tarpit_free", T_COUNT, OFF(tarpit_free), 0, 1000000, "3" },
	{ "tarpit_base", T_DURATION, OFF(tarpit_base), 0, 60 * SEC, "500ms" },
	{ "tarpit_max", T_DURATION, OFF(tarpit_max), 0, 60 * SEC, "15s" },
	{ "tarpit_slots", T_COUNT, OFF(tarpit_slots), 0, 100000, "8" },
	{ "ip_ban_after", T_COUNT, OFF(ip_ban_after), 0, 1000000, "10" },
	{ "ip_ban_time", T_DURATION, OFF(ip_ban_time), SEC, 365 * DAY, "1h" },
	{ "ip_ban_max", T_DURATION, OFF(ip_ban_max), SEC, 365 * DAY, "1d" },
	{ "net_ban_after", T_COUNT, OFF(net_ban_after), 0, 1000000, "30" },
	{ "ipv4_prefix", T_COUNT, OFF(ipv4_prefix), 8, 32, "24" },
	{ "ipv6_prefix", T_COUNT, OFF(ipv6_prefix), 16, 128, "64" },
	{ "spray_users", T_COUNT, OFF(spray_users), 0, 1000000, "6" },
	{ "user_lock_after", T_COUNT, OFF(user_lock_after), 0, 1000000, "10" },
	{ "user_lock_time", T_DURATION, OFF(user_lock_time), SEC, 365 * DAY, "15m" },
	{ "familiar_ttl", T_DURATION, OFF(familiar_ttl), SEC, 3650 * DAY, "30d" },
	{ "user_fold", T_BOOL, OFF(user_fold), 0, 0, "yes" },
	{ "user_strip_domains", T_DOMAINS, OFF(user_strip_domains), 0, 0, "" },
	{ "trusted", T_CIDRS, OFF(trusted), 0, 0, "" },
	{ "proxies", T_CIDRS, OFF(proxies), 0, 0, "" },
	{ "deny", T_CIDRS, OFF(deny), 0, 0, "" },
	/* hot passwords and attack waves (issue 14 items 1, 2) */
	{ "spray_password_users", T_COUNT, OFF(spray_password_users), 0, 1000000, "10" },
	{ "wave_factor", T_COUNT, OFF(wave_factor), 0, 1000000, "4" },
	{ "wave_min_failures", T_COUNT, OFF(wave_min_failures), 1, 1000000, "30" },
	{ "wave_baseline", T_DURATION, OFF(wave_baseline), 3600 * SEC, 365 * DAY, "1d" },
	/* authguard-watch (checked further when the watcher starts) */
	{ "watch_source", T_STRLIST, OFF(watch_source), 0, 0, "" },
	{ "watch_rules", T_STRING, OFF(watch_rules), 0, 0, "cyrus" },
	{ "watch_rule", T_STRLIST, OFF(watch_rule), 0, 0, "" },
	{ "watch_max_age", T_DURATION, OFF(watch_max_age), 0, 365 * DAY, "1h" },
	/* authguard-policyd (Dovecot's auth policy server) */
	{ "policyd_listen", T_STRLIST, OFF(policyd_listen), 0, 0, "127.0.0.1:8642" },
	{ "policyd_allow_remote", T_BOOL, OFF(policyd_allow_remote), 0, 0, "no" },
	{ "policyd_api_key_file", T_STRING, OFF(policyd_api_key_file), 0, 0, "" },
	{ "policyd_threads", T_COUNT, OFF(policyd_threads), 1, 64, "4" },
	{ "policyd_max_connections", T_COUNT, OFF(policyd_max_connections), 1, 100000, "512" },
	{ "policyd_max_request", T_SIZE, OFF(policyd_max_request), 1024, 1LL << 20, "8k" },
	{ "policyd_timeout", T_DURATION, OFF(policyd_timeout), 100, 60 * SEC, "1s" },
	/* authguard-sync (checked further when the sync daemon starts) */
	{ "sync_redis", T_STRING, OFF(sync_redis), 0, 0, "" },
	{ "sync_host", T_STRING, OFF(sync_host), 0, 0, "" },
	{ "sync_key_file", T_STRING, OFF(sync_key_file), 0, 0, "" },
	{ "sync_stream", T_STRING, OFF(sync_stream), 0, 0, "authguard" },
	{ "sync_redis_user", T_STRING, OFF(sync_redis_user), 0, 0, "" },
	{ "sync_redis_password_file", T_STRING, OFF(sync_redis_password_file), 0, 0, "" },
	{ "sync_stream_max", T_COUNT, OFF(sync_stream_max), 1000, 100000000, "1000000" },
	{ "sync_outbox_max", T_COUNT, OFF(sync_outbox_max), 100, 100000000, "100000" },
	{ "sync_snapshot_every", T_DURATION, OFF(sync_snapshot_every), SEC, DAY, "5m" },
	/* authguard-sync: Redis Sentinel and replica acknowledgements (issue 13 item 5) */
	{ "sync_sentinels", T_HOSTPORTS, OFF(sync_sentinels), 0, 0, "" },
	{ "sync_sentinel_master", T_STRING, OFF(sync_sentinel_master), 0, 0, "" },
	{ "sync_wait_replicas", T_COUNT, OFF(sync_wait_replicas), 0, 16, "0" },
	{ "sync_wait_timeout", T_DURATION, OFF(sync_wait_timeout), 10, 60 * SEC, "1s" },
	/* prefix hierarchy, slow time scale, attempts in flight (issue 14);
	 * min/max of a T_PREFIXES key bound its lengths */
	{ "ipv4_prefixes", T_PREFIXES, OFF(ipv4_prefixes), 8, 32, "24" },
	{ "ipv6_prefixes", T_PREFIXES, OFF(ipv6_prefixes), 16, 128, "64 48:60" },
	{ "ipv6_familiar_prefix", T_COUNT, OFF(ipv6_familiar_prefix), 16, 128, "64" },
	{ "slow_half_life", T_DURATION, OFF(slow_half_life), SEC, 365 * DAY, "1d" },
	{ "ip_slow_ban_after", T_COUNT, OFF(ip_slow_ban_after), 0, 1000000, "40" },
	{ "user_slow_lock_after", T_COUNT, OFF(user_slow_lock_after), 0, 1000000, "30" },
	{ "user_slow_lock_time", T_DURATION, OFF(user_slow_lock_time), SEC, 365 * DAY, "6h" },
	{ "inflight_max", T_COUNT, OFF(inflight_max), 0, 100000, "4096" },
	{ "inflight_ttl", T_DURATION, OFF(inflight_ttl), SEC, 3600 * SEC, "30s" },
};

_Static_assert(AG_ARRAY_LEN(keys) <= AG_ARRAY_LEN(((struct ag_conf *)0)->set_line),
	       "set_line too small");

/* Messages quote values; keep control bytes (newlines) out of them. */
static void scrub(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

static const struct ckey *find_key(const char *name)
{
	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

struct unit {
	const char *u;
	int64_t mult;
};

/* A whole number followed by exactly one of @units' suffixes; the product
 * must fit in int64_t. */
static int parse_scaled(const char *s, const struct unit *units, size_t n, int64_t *r)
{
	const char *p = s;
	int64_t v = 0;

	if (!isdigit((unsigned char)*p))
		return AG_EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (INT64_MAX - (*p - '0')) / 10)
			return AG_ERANGE;
		v = v * 10 + (*p - '0');
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(p, units[i].u) != 0)
			continue;
		if (v > INT64_MAX / units[i].mult)
			return AG_ERANGE;
		*r = v * units[i].mult;
		return 0;
	}
	return AG_EINVAL;
}

int ag_parse_duration(const char *s, int64_t *ms_r)
{
	static const struct unit units[] = {
		{ "ms", 1 }, { "s", SEC }, { "", SEC }, { "m", 60 * SEC },
		{ "h", 3600 * SEC }, { "d", DAY },
	};
	return parse_scaled(s, units, AG_ARRAY_LEN(units), ms_r);
}

void ag_format_duration(int64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % DAY == 0)
		snprintf(buf, len, "%lldd", (long long)(ms / DAY));
	else if (ms != 0 && ms % (3600 * SEC) == 0)
		snprintf(buf, len, "%lldh", (long long)(ms / (3600 * SEC)));
	else if (ms != 0 && ms % (60 * SEC) == 0)
		snprintf(buf, len, "%lldm", (long long)(ms / (60 * SEC)));
	else if (ms % SEC == 0)
		snprintf(buf, len, "%llds", (long long)(ms / SEC));
	else
		snprintf(buf, len, "%lldms", (long long)ms);
}

int ag_parse_size(const char *s, int64_t *bytes_r)
{
	static const struct unit units[] = {
		{ "", 1 }, { "k", 1LL << 10 }, { "K", 1LL << 10 }, { "M", 1LL << 20 },
		{ "G", 1LL << 30 }, { "T", 1LL << 40 },
	};
	return parse_scaled(s, units, AG_ARRAY_LEN(units), bytes_r);
}

static void format_size(int64_t b, char *buf, size_t len)
{
	static const char units[] = "TGMk";
	for (int i = 0; i < 4; i++) {
		int64_t m = 1LL << (10 * (4 - i));
		if (b != 0 && b % m == 0) {
			snprintf(buf, len, "%lld%c", (long long)(b / m), units[i]);
			return;
		}
	}
	snprintf(buf, len, "%lld", (long long)b);
}

static int parse_count(const char *s, int64_t min, int64_t max, uint32_t *r)
{
	int64_t v = 0;

	if (*s == '\0')
		return AG_EINVAL;
	for (const char *p = s; *p != '\0'; p++) {
		if (!isdigit((unsigned char)*p))
			return AG_EINVAL;
		v = v * 10 + (*p - '0');
		if (v > max)
			return AG_ERANGE;
	}
	if (v < min)
		return AG_ERANGE;
	*r = (uint32_t)v;
	return 0;
}

static int parse_bool(const char *s, uint32_t *r)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < AG_ARRAY_LEN(yes); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*r = 1;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*r = 0;
			return 0;
		}
	}
	return AG_EINVAL;
}

/* Parse a list of CIDRs separated by commas and/or blanks into @out
 * (appended). On error names the bad entry in @err. */
/* The next entry of a list separated by commas and/or blanks: its start
 * in *@w and length in *@n, and *@s moved past it. False at the end. */
static bool next_entry(const char **s, const char **w, size_t *n)
{
	*s += strspn(*s, ", \t");
	if (**s == '\0')
		return false;
	*w = *s;
	*n = strcspn(*s, ", \t");
	*s += *n;
	return true;
}

static int parse_cidrs(const char *s, struct ag_cidrs *out, char *err, size_t errlen)
{
	char word[128];
	const char *w;
	size_t n;

	while (next_entry(&s, &w, &n)) {
		if (n >= sizeof(word)) {
			snprintf(err, errlen, "list entry too long");
			return AG_EINVAL;
		}
		memcpy(word, w, n);
		word[n] = '\0';
		struct ag_addr a;
		if (ag_cidr_parse(word, true, &a) != 0) {
			snprintf(err, errlen, "'%s' is not an address or CIDR with host bits clear", word);
			return AG_EINVAL;
		}
		if (ag_cidrs_add(out, &a) != 0) {
			snprintf(err, errlen, "out of memory");
			return AG_ENOMEM;
		}
	}
	return 0;
}

/* The lists kept as struct ag_strlist. */
static bool strlist_type(enum ctype t)
{
	return t == T_STRLIST || t == T_DOMAINS || t == T_HOSTPORTS;
}

static void strlist_clear(struct ag_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int strlist_add(struct ag_strlist *l, const char *v)
{
	char *dup = strdup(v);
	char **nv = dup != NULL ? realloc(l->v, (l->n + 1) * sizeof(*nv)) : NULL;

	if (nv == NULL) {
		free(dup);
		return AG_ENOMEM;
	}
	l->v = nv;
	l->v[l->n++] = dup;
	return 0;
}

static int strlist_copy(struct ag_strlist *dst, const struct ag_strlist *src)
{
	memset(dst, 0, sizeof(*dst));
	for (size_t i = 0; i < src->n; i++)
		if (strlist_add(dst, src->v[i]) != 0)
			return AG_ENOMEM;
	return 0;
}

/* Parse mail domains separated by commas and/or blanks into @out
 * (appended), each lowered and without a leading '@': what ag_user_strip()
 * compares. A domain is letters, digits, '-', '_' and inner dots. */
static int parse_domains(const char *key, const char *s, struct ag_strlist *out, char *err,
			 size_t errlen)
{
	char word[256];
	const char *w;
	size_t n;

	while (next_entry(&s, &w, &n)) {
		if (*w == '@') {
			w++;
			n--;
		}
		bool ok = n > 0 && n < sizeof(word) && w[0] != '.' && w[n - 1] != '.';
		for (size_t i = 0; ok && i < n; i++) {
			char ch = (char)tolower((unsigned char)w[i]);
			ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
			     ch == '_' || (ch == '.' && w[i + 1] != '.');
			word[i] = ch;
		}
		if (!ok) {
			snprintf(err, errlen, "%s: '%.*s' is not a mail domain", key,
				 (int)(n < 64 ? n : 64), w);
			return AG_EINVAL;
		}
		word[n] = '\0';
		if (strlist_add(out, word) != 0) {
			snprintf(err, errlen, "out of memory");
			return AG_ENOMEM;
		}
	}
	return 0;
}

/* One "host:port" or "[v6]:port" of a T_HOSTPORTS list: a name or an IPv4
 * address (letters, digits, '.', '-', '_'), an IPv6 address in brackets,
 * a port from 1 to 65535. */
static bool hostport_ok(const char *w, size_t n)
{
	size_t hl = n;

	while (hl > 0 && w[hl - 1] != ':')
		hl--;
	if (hl < 2 || n - hl == 0 || n - hl > 5 || hl - 1 > 255)
		return false;
	hl--; /* the host's length, before the last ':' */
	bool v6 = hl > 2 && w[0] == '[' && w[hl - 1] == ']';

	for (size_t i = v6 ? 1 : 0; i < (v6 ? hl - 1 : hl); i++) {
		unsigned char ch = (unsigned char)w[i];
		bool ok = v6 ? isxdigit(ch) || ch == ':' || ch == '.'
			     : isalnum(ch) || ch == '.' || ch == '-' || ch == '_';
		if (!ok)
			return false;
	}
	unsigned port = 0;
	for (size_t i = hl + 1; i < n; i++) {
		if (!isdigit((unsigned char)w[i]))
			return false;
		port = port * 10 + (unsigned)(w[i] - '0');
	}
	return port >= 1 && port <= 65535;
}

/* host:port entries separated by commas and/or blanks into @out
 * (appended), as given. */
static int parse_hostports(const char *key, const char *s, struct ag_strlist *out, char *err,
			   size_t errlen)
{
	char word[300];
	const char *w;
	size_t n;

	while (next_entry(&s, &w, &n)) {
		if (n >= sizeof(word) || !hostport_ok(w, n)) {
			snprintf(err, errlen, "%s: '%.*s' is not host:port or [IPv6]:port", key,
				 (int)(n < 64 ? n : 64), w);
			return AG_EINVAL;
		}
		memcpy(word, w, n);
		word[n] = '\0';
		if (strlist_add(out, word) != 0) {
			snprintf(err, errlen, "out of memory");
			return AG_ENOMEM;
		}
	}
	return 0;
}

/* ---- network levels (issue 14) ------------------------------------------ */

/* Keep @p longest prefix first, one entry per length (the first given
 * wins): the guard reads level 0 as the network of ipv4_prefix /
 * ipv6_prefix, the one tarpit slots are counted against. */
static void prefixes_sort(struct ag_prefixes *p)
{
	for (uint32_t i = 1; i < p->n; i++)
		for (uint32_t j = i; j > 0 && p->len[j] > p->len[j - 1]; j--) {
			uint32_t l = p->len[j], a = p->after[j];
			p->len[j] = p->len[j - 1];
			p->after[j] = p->after[j - 1];
			p->len[j - 1] = l;
			p->after[j - 1] = a;
		}
	uint32_t n = 0;
	for (uint32_t i = 0; i < p->n; i++)
		if (n == 0 || p->len[i] != p->len[n - 1]) {
			p->len[n] = p->len[i];
			p->after[n++] = p->after[i];
		}
	p->n = n;
}

/* "LEN[:AFTER] ..." (blank- or comma-separated), 1 to AG_PREFIX_LEVELS
 * distinct lengths from k->min to k->max; AFTER is a count (0: no ban at
 * that level), absent: net_ban_after. */
static int parse_prefixes(const struct ckey *k, const char *s, struct ag_prefixes *out, char *err,
			  size_t errlen)
{
	struct ag_prefixes p = { 0 };
	char word[32];
	const char *w;
	size_t n;

	while (next_entry(&s, &w, &n)) {
		bool ok = n < sizeof(word) && p.n < AG_PREFIX_LEVELS;
		uint32_t len = 0, after = 0;
		if (ok) {
			memcpy(word, w, n);
			word[n] = '\0';
			char *colon = strchr(word, ':');
			if (colon != NULL)
				*colon = '\0';
			ok = parse_count(word, k->min, k->max, &len) == 0 &&
			     (colon == NULL || parse_count(colon + 1, 0, 1000000, &after) == 0);
			/* 0 in the record means "net_ban_after": keep an
			 * explicit 0 apart as UINT32_MAX ("never") */
			if (ok && colon != NULL && after == 0)
				after = UINT32_MAX;
		}
		if (!ok) {
			snprintf(err, errlen,
				 "%s takes 1 to %d prefix lengths from %lld to %lld, each as LEN or "
				 "LEN:FAILURES, not '%.*s'",
				 k->name, AG_PREFIX_LEVELS, (long long)k->min, (long long)k->max,
				 (int)(n < 64 ? n : 64), w);
			return AG_ECONF;
		}
		p.len[p.n] = len;
		p.after[p.n++] = after;
	}
	if (p.n == 0) {
		snprintf(err, errlen, "%s needs at least one prefix length", k->name);
		return AG_ECONF;
	}
	prefixes_sort(&p);
	*out = p;
	return 0;
}

/* Make @len the narrowest level of @p (keeping that level's count);
 * levels as narrow or narrower go. */
static void prefixes_narrowest(struct ag_prefixes *p, uint32_t len)
{
	uint32_t n = 1;

	if (p->n == 0)
		p->after[0] = 0;
	p->len[0] = len;
	for (uint32_t i = 1; i < p->n; i++)
		if (p->len[i] < len) {
			p->len[n] = p->len[i];
			p->after[n++] = p->after[i];
		}
	p->n = n;
}

/* ipv4_prefix / ipv6_prefix name the narrowest level of ipv4_prefixes /
 * ipv6_prefixes: setting either sets the other (the later line wins). */
static void prefixes_sync(struct ag_conf *c, const struct ckey *k)
{
	if (k->off == OFF(ipv4_prefixes))
		c->ipv4_prefix = c->ipv4_prefixes.len[0];
	else if (k->off == OFF(ipv6_prefixes))
		c->ipv6_prefix = c->ipv6_prefixes.len[0];
	else if (k->off == OFF(ipv4_prefix))
		prefixes_narrowest(&c->ipv4_prefixes, c->ipv4_prefix);
	else if (k->off == OFF(ipv6_prefix))
		prefixes_narrowest(&c->ipv6_prefixes, c->ipv6_prefix);
}

static void dump_prefixes(const struct ag_prefixes *p, FILE *out)
{
	for (uint32_t i = 0; i < p->n; i++) {
		fprintf(out, "%s%u", i ? " " : "", p->len[i]);
		if (p->after[i] == UINT32_MAX)
			fputs(":0", out);
		else if (p->after[i] != 0)
			fprintf(out, ":%u", p->after[i]);
	}
}

static int set_value_raw(struct ag_conf *c, const struct ckey *k, const char *v, bool append,
			 char *err, size_t errlen);

static int set_value(struct ag_conf *c, const struct ckey *k, const char *v, bool append,
		     char *err, size_t errlen)
{
	int rc = set_value_raw(c, k, v, append, err, errlen);

	if (rc == 0)
		prefixes_sync(c, k);
	return rc;
}

static int set_value_raw(struct ag_conf *c, const struct ckey *k, const char *v, bool append,
			 char *err, size_t errlen)
{
	void *field = (char *)c + k->off;
	int64_t d;
	uint32_t u;
	int rc;

	switch (k->type) {
	case T_PATH:
		if (v[0] != '/' || strlen(v) >= AG_PATH_MAX) {
			snprintf(err, errlen, "%s must be an absolute path", k->name);
			return AG_ECONF;
		}
		strcpy(field, v);
		return 0;
	case T_MODE:
		if (strcmp(v, "enforce") == 0)
			c->mode = AG_MODE_ENFORCE;
		else if (strcmp(v, "log-only") == 0)
			c->mode = AG_MODE_LOG_ONLY;
		else {
			snprintf(err, errlen, "mode must be 'enforce' or 'log-only', not '%.64s'", v);
			return AG_ECONF;
		}
		return 0;
	case T_BOOL:
		if (parse_bool(v, &u) != 0) {
			snprintf(err, errlen, "%s must be yes or no, not '%.64s'", k->name, v);
			return AG_ECONF;
		}
		*(uint32_t *)field = u;
		return 0;
	case T_LOG:
		if (strcmp(v, "syslog") == 0)
			c->log_kind = AG_LOG_SYSLOG;
		else if (strcmp(v, "none") == 0)
			c->log_kind = AG_LOG_NONE;
		else if (strncmp(v, "file:/", 6) == 0 && strlen(v + 5) < AG_PATH_MAX) {
			c->log_kind = AG_LOG_FILE;
			strcpy(c->log_path, v + 5);
		} else {
			snprintf(err, errlen, "log must be 'syslog', 'none' or 'file:/absolute/path'");
			return AG_ECONF;
		}
		return 0;
	case T_DURATION:
		rc = ag_parse_duration(v, &d);
		if (rc != 0 || d < k->min || d > k->max) {
			char lo[32], hi[32];
			ag_format_duration(k->min, lo, sizeof(lo));
			ag_format_duration(k->max, hi, sizeof(hi));
			snprintf(err, errlen, "%s must be a duration from %s to %s (units ms, s, m, h, d), not '%.64s'",
				 k->name, lo, hi, v);
			return AG_ECONF;
		}
		*(int64_t *)field = d;
		return 0;
	case T_SIZE:
		if (ag_parse_size(v, &d) != 0 || d < k->min || d > k->max) {
			char lo[32], hi[32];
			format_size(k->min, lo, sizeof(lo));
			format_size(k->max, hi, sizeof(hi));
			snprintf(err, errlen, "%s must be a size from %s to %s (units k, M, G, T), not '%.64s'",
				 k->name, lo, hi, v);
			return AG_ECONF;
		}
		*(int64_t *)field = d;
		return 0;
	case T_COUNT:
		if (parse_count(v, k->min, k->max, &u) != 0) {
			snprintf(err, errlen, "%s must be a whole number from %lld to %lld, not '%.64s'",
				 k->name, (long long)k->min, (long long)k->max, v);
			return AG_ECONF;
		}
		*(uint32_t *)field = u;
		return 0;
	case T_CIDRS: {
		struct ag_cidrs tmp = { 0 };
		if (append && ag_cidrs_copy(&tmp, field) != 0) {
			snprintf(err, errlen, "out of memory");
			return AG_ECONF;
		}
		if (parse_cidrs(v, &tmp, err, errlen) != 0) {
			ag_cidrs_clear(&tmp);
			return AG_ECONF;
		}
		ag_cidrs_clear(field);
		*(struct ag_cidrs *)field = tmp;
		return 0;
	}
	case T_STRING:
		if (strlen(v) >= AG_CONF_STR_MAX) {
			snprintf(err, errlen, "%s is longer than %d bytes", k->name, AG_CONF_STR_MAX - 1);
			return AG_ECONF;
		}
		strcpy(field, v);
		return 0;
	case T_STRLIST: {
		struct ag_strlist *l = field;
		if (!append)
			strlist_clear(l);
		if (*v == '\0')
			return 0;
		if (strlen(v) >= AG_CONF_STR_MAX) {
			snprintf(err, errlen, "%s entry is longer than %d bytes", k->name,
				 AG_CONF_STR_MAX - 1);
			return AG_ECONF;
		}
		if (strlist_add(l, v) != 0) {
			snprintf(err, errlen, "out of memory");
			return AG_ENOMEM;
		}
		return 0;
	}
	case T_DOMAINS:
	case T_HOSTPORTS: {
		struct ag_strlist tmp = { 0 };
		if (append && strlist_copy(&tmp, field) != 0) {
			strlist_clear(&tmp);
			snprintf(err, errlen, "out of memory");
			return AG_ENOMEM;
		}
		rc = k->type == T_DOMAINS ? parse_domains(k->name, v, &tmp, err, errlen)
					  : parse_hostports(k->name, v, &tmp, err, errlen);
		if (rc != 0) {
			strlist_clear(&tmp);
			return rc == AG_ENOMEM ? AG_ENOMEM : AG_ECONF;
		}
		strlist_clear(field);
		*(struct ag_strlist *)field = tmp;
		return 0;
	}
	case T_PREFIXES:
		return parse_prefixes(k, v, field, err, errlen);
	}
	return AG_ECONF;
}

void ag_conf_init(struct ag_conf *c)
{
	char err[256];

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
		(void)set_value(c, &keys[i], keys[i].def, false, err, sizeof(err));
}

void ag_conf_free(struct ag_conf *c)
{
	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++) {
		void *field = (char *)c + keys[i].off;
		if (keys[i].type == T_CIDRS)
			ag_cidrs_clear(field);
		else if (strlist_type(keys[i].type))
			strlist_clear(field);
	}
}

int ag_conf_copy(struct ag_conf *dst, const struct ag_conf *src)
{
	int rc = 0;

	*dst = *src;
	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++) {
		void *d = (char *)dst + keys[i].off;
		const void *f = (const char *)src + keys[i].off;
		if (keys[i].type == T_CIDRS) {
			memset(d, 0, sizeof(struct ag_cidrs));
			if (rc == 0)
				rc = ag_cidrs_copy(d, f);
		} else if (strlist_type(keys[i].type)) {
			memset(d, 0, sizeof(struct ag_strlist));
			if (rc == 0)
				rc = strlist_copy(d, f);
		}
	}
	if (rc != 0) {
		ag_conf_free(dst);
		ag_conf_init(dst);
		return AG_ENOMEM;
	}
	return 0;
}

int ag_conf_set(struct ag_conf *c, const char *key, const char *value, char *err, size_t errlen)
{
	const struct ckey *k = find_key(key);
	int rc;

	if (k == NULL) {
		snprintf(err, errlen, "unknown key '%.64s'", key);
		rc = AG_ECONF;
	} else {
		rc = set_value(c, k, value, false, err, errlen);
	}
	if (rc != 0 && errlen > 0)
		scrub(err);
	return rc;
}

static void report_at(ag_conf_report_fn *report, void *ctx, const char *path, unsigned line,
		      const char *msg)
{
	char buf[AG_PATH_MAX + 512];

	if (report == NULL)
		return;
	snprintf(buf, sizeof(buf), "%s:%u: %s", path, line, msg);
	scrub(buf);
	report(ctx, buf);
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/* Handle one line of a config file; returns 0 or AG_ECONF with @err set. */
static bool verbatim(const struct ckey *k)
{
	return k->type == T_STRING || k->type == T_STRLIST;
}

static bool is_list(const struct ckey *k)
{
	return k->type == T_CIDRS || strlist_type(k->type);
}

static int load_line(struct ag_conf *c, char *line, unsigned lineno, char *err, size_t errlen)
{
	char *s = trim(line);
	if (*s == '#' || *s == '\0')
		return 0;
	char *eq = strchr(s, '='), *hash = strchr(s, '#');
	if (hash != NULL && (eq == NULL || hash < eq)) {
		*hash = '\0';
		eq = NULL;
	}
	if (eq == NULL) {
		snprintf(err, errlen, "expected 'key = value'");
		return AG_ECONF;
	}
	*eq = '\0';
	char *key = trim(s);
	const struct ckey *k = find_key(key);
	if (k == NULL) {
		snprintf(err, errlen, "unknown key '%.64s'", key);
		return AG_ECONF;
	}
	char *val = eq + 1;
	if (!verbatim(k) && (hash = strchr(val, '#')) != NULL)
		*hash = '\0';
	val = trim(val);
	/* an empty string key is "not set" (a path to no file) */
	if (*val == '\0' && !is_list(k) && k->type != T_STRING) {
		snprintf(err, errlen, "%s has no value", key);
		return AG_ECONF;
	}
	unsigned *seen = &c->set_line[k - keys];
	if (*seen != 0 && !is_list(k)) {
		snprintf(err, errlen, "%s is already set on line %u", key, *seen);
		return AG_ECONF;
	}
	int rc = set_value(c, k, val, *seen != 0, err, errlen);
	if (rc != 0)
		return rc == AG_ENOMEM ? AG_ENOMEM : AG_ECONF;
	*seen = lineno;
	return 0;
}

/* Read all of @fd (a regular file of @size bytes at fstat() time) into
 * @f; returns 0 or an errno. */
static int read_all(int fd, off_t size, struct ag_conf_file *f)
{
	size_t cap = (size_t)size + 1;

	f->text = malloc(cap);
	if (f->text == NULL)
		return ENOMEM;
	for (;;) {
		ssize_t n = read(fd, f->text + f->len, cap - f->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno != 0 ? errno : EIO;
		if (n == 0)
			return 0;
		f->len += (size_t)n;
		if (f->len < cap)
			continue;
		/* it grew since fstat() */
		if (cap > AG_CONF_FILE_MAX)
			return EFBIG;
		char *t = realloc(f->text, cap * 2);
		if (t == NULL)
			return ENOMEM;
		f->text = t;
		cap *= 2;
	}
}

int ag_conf_file_read(struct ag_conf_file *f, const char *path)
{
	struct stat st;
	int fd;

	memset(f, 0, sizeof(*f));
	/* O_NONBLOCK: a FIFO in its place is refused, not waited on */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		f->err = errno != 0 ? errno : EIO;
	else if (fstat(fd, &st) != 0)
		f->err = errno != 0 ? errno : EIO;
	else if (!S_ISREG(st.st_mode))
		f->err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
	else if (st.st_size > AG_CONF_FILE_MAX)
		f->err = EFBIG;
	else
		f->err = read_all(fd, st.st_size, f);
	if (fd >= 0)
		close(fd);
	if (f->err == 0)
		return 0;
	ag_conf_file_free(f);
	return AG_EIO;
}

void ag_conf_file_free(struct ag_conf_file *f)
{
	int err = f->err;

	free(f->text);
	memset(f, 0, sizeof(*f));
	f->err = err;
}

/* The file could not be read: defaults, and the guard is told. */
static int load_failed(struct ag_conf *c, const char *path, int err, ag_conf_report_fn *report,
		       void *ctx)
{
	char msg[128];

	c->load_errno = err;
	snprintf(c->load_path, sizeof(c->load_path), "%s", path);
	if (err == EFBIG)
		snprintf(msg, sizeof(msg), "cannot read: larger than %d KiB", AG_CONF_FILE_MAX / 1024);
	else
		snprintf(msg, sizeof(msg), "cannot read: %s", strerror(err));
	report_at(report, ctx, path, 0, msg);
	return AG_EIO;
}

int ag_conf_file_parse(struct ag_conf *c, const char *path, const struct ag_conf_file *f,
		       ag_conf_report_fn *report, void *ctx)
{
	char line[4096], err[512];
	unsigned lineno = 0;
	int errors = 0;

	c->load_errno = 0;
	if (f->err != 0)
		return load_failed(c, path, f->err, report, ctx);
	memset(c->set_line, 0, sizeof(c->set_line));
	/* one pass: each line is found with memchr() and copied once; it is
	 * too long past sizeof(line) - 1 bytes before its newline */
	for (size_t at = 0; at < f->len; lineno++) {
		const char *p = f->text + at, *nl = memchr(p, '\n', f->len - at);
		size_t n = nl != NULL ? (size_t)(nl - p) : f->len - at;
		const char *why = NULL;

		at += n + (nl != NULL);
		if (n >= sizeof(line) - 1)
			why = "line too long";
		else if (memchr(p, '\0', n) != NULL)
			why = "NUL byte in line";
		if (why == NULL) {
			memcpy(line, p, n);
			line[n] = '\0';
			int rc = load_line(c, line, lineno + 1, err, sizeof(err));
			if (rc == 0)
				continue;
			if (rc == AG_ENOMEM && c->load_errno == 0) {
				/* a list cut short is not the file: say so on
				 * every attempt line, as for a file not read */
				c->load_errno = ENOMEM;
				snprintf(c->load_path, sizeof(c->load_path), "%s", path);
			}
			why = err;
		}
		report_at(report, ctx, path, lineno + 1, why);
		errors++;
	}
	return errors;
}

int ag_conf_load(struct ag_conf *c, const char *path, ag_conf_report_fn *report, void *ctx)
{
	struct ag_conf_file f;

	(void)ag_conf_file_read(&f, path);
	int rc = ag_conf_file_parse(c, path, &f, report, ctx);
	ag_conf_file_free(&f);
	return rc;
}

int ag_conf_apply_args(struct ag_conf *c, int argc, const char **argv,
		       ag_conf_report_fn *report, void *ctx)
{
	char key[64], err[512], buf[768];
	int errors = 0;

	for (int i = 0; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		if (eq == NULL)
			continue;
		size_t klen = (size_t)(eq - argv[i]);
		if (klen >= sizeof(key))
			klen = sizeof(key) - 1;
		memcpy(key, argv[i], klen);
		key[klen] = '\0';
		if (strcmp(key, "conf") == 0)
			continue;
		if (ag_conf_set(c, key, eq + 1, err, sizeof(err)) != 0) {
			snprintf(buf, sizeof(buf), "argument '%.128s': %s", argv[i], err);
			scrub(buf);
			if (report != NULL)
				report(ctx, buf);
			errors++;
		}
	}
	return errors;
}

static void dump_cidrs(const struct ag_cidrs *l, FILE *out)
{
	char a[AG_ADDR_STRLEN];

	for (size_t i = 0; i < l->n; i++) {
		ag_addr_format(&l->v[i], a, sizeof(a));
		fprintf(out, "%s%s", i ? ", " : "", a);
	}
}

void ag_conf_dump(const struct ag_conf *c, FILE *out)
{
	static const char *modes[] = { "enforce", "log-only" };
	char d[32];

	for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++) {
		const struct ckey *k = &keys[i];
		const void *field = (const char *)c + k->off;
		fprintf(out, "%s = ", k->name);
		switch (k->type) {
		case T_PATH: fputs(field, out); break;
		case T_MODE: fputs(modes[c->mode & 1], out); break;
		case T_BOOL: fputs(*(const uint32_t *)field ? "yes" : "no", out); break;
		case T_LOG:
			if (c->log_kind == AG_LOG_FILE)
				fprintf(out, "file:%s", c->log_path);
			else
				fputs(c->log_kind == AG_LOG_NONE ? "none" : "syslog", out);
			break;
		case T_DURATION:
			ag_format_duration(*(const int64_t *)field, d, sizeof(d));
			fputs(d, out);
			break;
		case T_COUNT: fprintf(out, "%u", *(const uint32_t *)field); break;
		case T_SIZE:
			format_size(*(const int64_t *)field, d, sizeof(d));
			fputs(d, out);
			break;
		case T_CIDRS: dump_cidrs(field, out); break;
		case T_STRING: fputs(field, out); break;
		case T_PREFIXES: dump_prefixes(field, out); break;
		case T_DOMAINS:
		case T_HOSTPORTS: {
			const struct ag_strlist *l = field;
			for (size_t j = 0; j < l->n; j++)
				fprintf(out, "%s%s", j ? ", " : "", l->v[j]);
			break;
		}
		case T_STRLIST: {
			const struct ag_strlist *l = field;
			/* one "key = value" line per entry */
			for (size_t j = 0; j < l->n; j++) {
				if (j > 0)
					fprintf(out, "\n%s = ", k->name);
				fputs(l->v[j], out);
			}
			break;
		}
		}
		fputc('\n', out);
	}
}
