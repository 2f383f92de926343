/* test_conf.c - the configuration table, its parsers, the config file
 * reader and the module argument parser (store/conf.c). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "testutil.h"

#define CANARY 0xA5
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* The keys of the public contract, in the order ag_conf_dump() prints them. */
static const char *const all_keys[] = {
	"db_dir", "db_max_size", "mode", "fail_open", "log", "decay_half_life", "tarpit_free",
	"tarpit_base", "tarpit_max", "tarpit_slots", "ip_ban_after", "ip_ban_time",
	"ip_ban_max", "net_ban_after", "ipv4_prefix", "ipv6_prefix", "spray_users",
	"user_lock_after", "user_lock_time", "familiar_ttl", "user_fold", "user_strip_domains",
	"trusted", "proxies", "deny",
	/* hot passwords and attack waves */
	"spray_password_users", "wave_factor", "wave_min_failures", "wave_baseline",
	/* authguard-watch */
	"watch_source", "watch_rules", "watch_rule", "watch_max_age",
	/* authguard-policyd */
	"policyd_listen", "policyd_allow_remote", "policyd_api_key_file", "policyd_threads",
	"policyd_max_connections", "policyd_max_request", "policyd_timeout",
	/* authguard-sync */
	"sync_redis", "sync_host", "sync_key_file", "sync_stream", "sync_redis_user",
	"sync_redis_password_file", "sync_stream_max", "sync_outbox_max", "sync_snapshot_every",
	/* authguard-sync: Sentinel, replica acknowledgements */
	"sync_sentinels", "sync_sentinel_master", "sync_wait_replicas", "sync_wait_timeout",
	/* prefix hierarchy, slow time scale, attempts in flight (issue 14) */
	"ipv4_prefixes", "ipv6_prefixes", "ipv6_familiar_prefix", "slow_half_life",
	"ip_slow_ban_after", "user_slow_lock_after", "user_slow_lock_time", "inflight_max",
	"inflight_ttl",
};

/* ipv4_prefix / ipv6_prefix are the narrowest level of ipv4_prefixes /
 * ipv6_prefixes: setting one may change the other. */
static bool partners(const char *a, const char *b)
{
	static const char *const pairs[][2] = { { "ipv4_prefix", "ipv4_prefixes" },
						{ "ipv6_prefix", "ipv6_prefixes" } };

	for (size_t i = 0; i < AG_ARRAY_LEN(pairs); i++)
		if ((strcmp(a, pairs[i][0]) == 0 && strcmp(b, pairs[i][1]) == 0) ||
		    (strcmp(a, pairs[i][1]) == 0 && strcmp(b, pairs[i][0]) == 0))
			return true;
	return false;
}

/* ---- helpers -------------------------------------------------------------- */

/* ag_conf_dump() into a malloc'ed string. */
static char *dump(const struct ag_conf *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	ag_conf_dump(c, f);
	assert_int_equal(fclose(f), 0);
	assert_non_null(buf);
	return buf;
}

/* The value ag_conf_dump() prints for @key (trailing blanks dropped). */
static void dump_value(const struct ag_conf *c, const char *key, char *out, size_t outlen)
{
	char *d = dump(c), *save = NULL;
	size_t klen = strlen(key);
	int found = 0;

	for (char *line = strtok_r(d, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, key, klen) != 0 || strncmp(line + klen, " = ", 3) != 0) {
			/* "key =" with an empty value and its blank trimmed */
			if (!(strncmp(line, key, klen) == 0 && strcmp(line + klen, " =") == 0))
				continue;
			snprintf(out, outlen, "%s", "");
			found++;
			continue;
		}
		snprintf(out, outlen, "%s", line + klen + 3);
		size_t n = strlen(out);
		while (n > 0 && out[n - 1] == ' ')
			out[--n] = '\0';
		found++;
	}
	free(d);
	if (found != 1)
		print_error("key '%s' is in the dump %d times\n", key, found);
	assert_int_equal(found, 1);
}

static void assert_dump_value(const struct ag_conf *c, const char *key, const char *want)
{
	char v[AG_PATH_MAX + 64];

	dump_value(c, key, v, sizeof(v));
	if (strcmp(v, want) != 0)
		print_error("%s: dump says '%s', expected '%s'\n", key, v, want);
	assert_string_equal(v, want);
}

/* Collects what a report callback is given. */
struct cap {
	int n;
	char msg[32][AG_PATH_MAX + 600];
};

/* No newline, nor any other control byte, that could forge or garble a
 * log line. */
static void assert_no_control(const char *msg)
{
	for (const char *p = msg; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			print_error("control byte 0x%02x in '%s'\n", (unsigned char)*p, msg);
		assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
	}
}

static void capture(void *ctx, const char *msg)
{
	struct cap *c = ctx;

	assert_non_null(msg);
	/* one sentence, no newline */
	assert_no_control(msg);
	if (c->n < (int)AG_ARRAY_LEN(c->msg))
		snprintf(c->msg[c->n], sizeof(c->msg[0]), "%s", msg);
	c->n++;
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

struct fx {
	char dir[256];
	char path[300];
	struct ag_conf c;
	struct cap cap;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tu_mkdtemp(f->dir, sizeof(f->dir), "conf");
	snprintf(f->path, sizeof(f->path), "%s/authguard.conf", f->dir);
	ag_conf_init(&f->c);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ag_conf_free(&f->c);
	tu_rmrf(f->dir);
	free(f);
	return 0;
}

/* ---- defaults ------------------------------------------------------------- */

/* authguard.conf at the top of the source tree. */
static FILE *open_shipped_conf(char *path, size_t len)
{
	const char *srcdir = getenv("srcdir");
	const char *me = __FILE__;
	const char *tail = strstr(me, "tests/test_conf.c");
	char guess[512];
	FILE *f;

	if (srcdir != NULL) {
		snprintf(path, len, "%s/authguard.conf", srcdir);
		if ((f = fopen(path, "r")) != NULL)
			return f;
	}
	if (tail != NULL) {
		snprintf(guess, sizeof(guess), "%.*sauthguard.conf", (int)(tail - me), me);
		snprintf(path, len, "%s", guess);
		if ((f = fopen(path, "r")) != NULL)
			return f;
	}
	snprintf(path, len, "authguard.conf");
	f = fopen(path, "r");
	if (f == NULL)
		print_error("cannot find authguard.conf (set srcdir)\n");
	assert_non_null(f);
	return f;
}

struct doc_default {
	char key[64];
	char value[256];
};

/* The "#key = value" lines of the shipped file: every option, commented
 * out at its default. */
static size_t read_documented(struct doc_default *out, size_t max, char *path, size_t pathlen)
{
	FILE *f = open_shipped_conf(path, pathlen);
	char line[1024];
	size_t n = 0;

	while (fgets(line, sizeof(line), f) != NULL) {
		size_t k = 0;
		if (line[0] != '#' || !islower((unsigned char)line[1]))
			continue;
		while (islower((unsigned char)line[1 + k]) || isdigit((unsigned char)line[1 + k]) ||
		       line[1 + k] == '_')
			k++;
		if (strncmp(line + 1 + k, " =", 2) != 0)
			continue;
		assert_true(n < max);
		snprintf(out[n].key, sizeof(out[n].key), "%.*s", (int)k, line + 1);
		const char *v = line + 1 + k + 2;
		while (*v == ' ')
			v++;
		snprintf(out[n].value, sizeof(out[n].value), "%s", v);
		size_t vl = strlen(out[n].value);
		while (vl > 0 && isspace((unsigned char)out[n].value[vl - 1]))
			out[n].value[--vl] = '\0';
		n++;
	}
	fclose(f);
	return n;
}

/* ag_conf_init() gives exactly the defaults authguard.conf documents. */
static void test_defaults_documented(void **state)
{
	struct fx *f = *state;
	struct doc_default doc[96];
	char shipped[1024];
	size_t n = read_documented(doc, AG_ARRAY_LEN(doc), shipped, sizeof(shipped));

	/* every key is documented, once */
	assert_int_equal(n, AG_ARRAY_LEN(all_keys));
	for (size_t i = 0; i < AG_ARRAY_LEN(all_keys); i++) {
		int seen = 0;
		for (size_t j = 0; j < n; j++)
			seen += strcmp(doc[j].key, all_keys[i]) == 0;
		if (seen != 1)
			print_error("%s is documented %d times\n", all_keys[i], seen);
		assert_int_equal(seen, 1);
	}
	/* and its documented default is what ag_conf_init() sets */
	for (size_t j = 0; j < n; j++)
		assert_dump_value(&f->c, doc[j].key, doc[j].value);

	/* the same file with every default uncommented loads cleanly and
	 * changes nothing */
	{
		char text[8192] = "";
		struct ag_conf c;
		char *before = dump(&f->c), *after;

		for (size_t j = 0; j < n; j++) {
			size_t at = strlen(text);
			int w = snprintf(text + at, sizeof(text) - at, "%s = %s\n", doc[j].key,
					 doc[j].value);
			assert_true(w > 0 && (size_t)w < sizeof(text) - at);
		}
		write_file(f->path, text, strlen(text));
		ag_conf_init(&c);
		assert_int_equal(ag_conf_load(&c, f->path, capture, &f->cap), 0);
		assert_int_equal(f->cap.n, 0);
		after = dump(&c);
		assert_string_equal(after, before);
		free(after);
		ag_conf_free(&c);

		/* and the shipped file itself is clean */
		ag_conf_init(&c);
		assert_int_equal(ag_conf_load(&c, shipped, capture, &f->cap), 0);
		assert_int_equal(f->cap.n, 0);
		after = dump(&c);
		assert_string_equal(after, before);
		free(after);
		ag_conf_free(&c);
		free(before);
	}
}

/* The defaults, field by field. */
static void test_defaults_values(void **state)
{
	struct fx *f = *state;
	const struct ag_conf *c = &f->c;

	assert_string_equal(c->db_dir, AG_DEFAULT_DB_DIR);
	assert_string_equal(c->db_dir, "/var/lib/authguard");
	assert_int_equal(c->mode, AG_MODE_ENFORCE);
	assert_int_equal(c->fail_open, 1);
	assert_int_equal(c->log_kind, AG_LOG_SYSLOG);
	assert_true(c->decay_half_life == 10 * MIN);
	assert_int_equal(c->tarpit_free, 3);
	assert_true(c->tarpit_base == 500);
	assert_true(c->tarpit_max == 15 * SEC);
	assert_int_equal(c->tarpit_slots, 8);
	assert_int_equal(c->ip_ban_after, 10);
	assert_true(c->ip_ban_time == HOUR);
	assert_true(c->ip_ban_max == DAY);
	assert_int_equal(c->net_ban_after, 30);
	assert_int_equal(c->ipv4_prefix, 24);
	assert_int_equal(c->ipv6_prefix, 64);
	assert_int_equal(c->spray_users, 6);
	assert_int_equal(c->user_lock_after, 10);
	assert_true(c->user_lock_time == 15 * MIN);
	assert_true(c->familiar_ttl == 30 * DAY);
	assert_true(c->db_max_size == 128LL << 20);
	assert_int_equal(c->user_fold, 1);
	assert_int_equal(c->trusted.n, 0);
	assert_int_equal(c->proxies.n, 0);
	assert_int_equal(c->deny.n, 0);
	/* hot passwords and attack waves */
	assert_int_equal(c->spray_password_users, 10);
	assert_int_equal(c->wave_factor, 4);
	assert_int_equal(c->wave_min_failures, 30);
	assert_true(c->wave_baseline == DAY);
	/* authguard-watch */
	assert_int_equal(c->watch_source.n, 0);
	assert_string_equal(c->watch_rules, "cyrus");
	assert_int_equal(c->watch_rule.n, 0);
	assert_true(c->watch_max_age == HOUR);
	/* authguard-sync: no fleet unless sync_redis is set */
	assert_string_equal(c->sync_redis, "");
	assert_string_equal(c->sync_host, "");
	assert_string_equal(c->sync_key_file, "");
	assert_string_equal(c->sync_stream, "authguard");
	assert_string_equal(c->sync_redis_user, "");
	assert_string_equal(c->sync_redis_password_file, "");
	assert_int_equal(c->sync_stream_max, 1000000);
	assert_int_equal(c->sync_outbox_max, 100000);
	assert_true(c->sync_snapshot_every == 5 * MIN);
	/* no Sentinel, no replica acknowledgements unless asked */
	assert_int_equal(c->sync_sentinels.n, 0);
	assert_string_equal(c->sync_sentinel_master, "");
	assert_int_equal(c->sync_wait_replicas, 0);
	assert_true(c->sync_wait_timeout == 1000);
	/* issue 14 */
	assert_int_equal(c->ipv4_prefixes.n, 1);
	assert_int_equal(c->ipv4_prefixes.len[0], 24);
	assert_int_equal(c->ipv6_prefixes.n, 2);
	assert_int_equal(c->ipv6_prefixes.len[0], 64);
	assert_int_equal(c->ipv6_prefixes.after[0], 0);
	assert_int_equal(c->ipv6_prefixes.len[1], 48);
	assert_int_equal(c->ipv6_prefixes.after[1], 60);
	assert_int_equal(c->ipv6_familiar_prefix, 64);
	assert_true(c->slow_half_life == DAY);
	assert_int_equal(c->ip_slow_ban_after, 40);
	assert_int_equal(c->user_slow_lock_after, 30);
	assert_true(c->user_slow_lock_time == 6 * HOUR);
	assert_int_equal(c->inflight_max, 4096);
	assert_true(c->inflight_ttl == 30 * SEC);
	for (size_t i = 0; i < AG_ARRAY_LEN(c->set_line); i++)
		assert_int_equal(c->set_line[i], 0);
	assert_string_equal(AG_DEFAULT_CONF, SYSCONFDIR "/security/authguard.conf");
}

/* ag_conf_dump() prints every key exactly once, "key = value" a line. */
static void test_dump_keys(void **state)
{
	struct fx *f = *state;
	char *d = dump(&f->c), *save = NULL;
	size_t lines = 0;

	for (const char *p = d; *p != '\0'; p++)
		lines += *p == '\n';
	assert_int_equal(lines, AG_ARRAY_LEN(all_keys));
	assert_int_equal(d[strlen(d) - 1], '\n');

	size_t i = 0;
	for (char *line = strtok_r(d, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save), i++) {
		size_t kl = strlen(all_keys[i]);
		assert_true(i < AG_ARRAY_LEN(all_keys));
		assert_memory_equal(line, all_keys[i], kl);
		assert_memory_equal(line + kl, " =", 2);
	}
	assert_int_equal(i, AG_ARRAY_LEN(all_keys));
	free(d);
	for (size_t k = 0; k < AG_ARRAY_LEN(all_keys); k++) {
		char v[AG_PATH_MAX + 64];
		dump_value(&f->c, all_keys[k], v, sizeof(v)); /* asserts exactly once */
	}
}

/* ---- durations ------------------------------------------------------------ */

static void test_parse_duration(void **state)
{
	static const struct {
		const char *in;
		int rc;
		int64_t ms;
	} cases[] = {
		{ "250ms", 0, 250 },
		{ "30s", 0, 30 * SEC },
		{ "15m", 0, 15 * MIN },
		{ "1h", 0, HOUR },
		{ "7d", 0, 7 * DAY },
		{ "0", 0, 0 },
		{ "10", 0, 10 * SEC },
		{ "0ms", 0, 0 },
		{ "0d", 0, 0 },
		{ "1ms", 0, 1 },
		{ "007s", 0, 7 * SEC },
		{ "1000ms", 0, SEC },
		{ "9223372036854775807ms", 0, INT64_MAX },
		{ "9223372036854775s", 0, 9223372036854775LL * SEC },
		{ "9223372036854775", 0, 9223372036854775LL * SEC },
		{ "106751991167d", 0, 106751991167LL * DAY },
		{ "2562047788015h", 0, 2562047788015LL * HOUR },
		/* malformed */
		{ "", AG_EINVAL, 0 },
		{ "5x", AG_EINVAL, 0 },
		{ "-1s", AG_EINVAL, 0 },
		{ "-0", AG_EINVAL, 0 },
		{ "+5s", AG_EINVAL, 0 },
		{ "1.5s", AG_EINVAL, 0 },
		{ "1,5s", AG_EINVAL, 0 },
		{ " 5s", AG_EINVAL, 0 },
		{ "5s ", AG_EINVAL, 0 },
		{ "5 s", AG_EINVAL, 0 },
		{ "5\ts", AG_EINVAL, 0 },
		{ "5s\n", AG_EINVAL, 0 },
		{ "s", AG_EINVAL, 0 },
		{ "ms", AG_EINVAL, 0 },
		{ "5S", AG_EINVAL, 0 },
		{ "5MS", AG_EINVAL, 0 },
		{ "5sec", AG_EINVAL, 0 },
		{ "5mss", AG_EINVAL, 0 },
		{ "5ss", AG_EINVAL, 0 },
		{ "5w", AG_EINVAL, 0 },
		{ "5y", AG_EINVAL, 0 },
		{ "5us", AG_EINVAL, 0 },
		{ "1h30m", AG_EINVAL, 0 },
		{ "0x10", AG_EINVAL, 0 },
		{ "1e3", AG_EINVAL, 0 },
		{ "\xef\xbc\x95s", AG_EINVAL, 0 }, /* full-width 5 */
		/* too big */
		{ "9223372036854775808ms", AG_ERANGE, 0 },
		{ "9223372036854775808", AG_ERANGE, 0 },
		{ "9223372036854776s", AG_ERANGE, 0 },
		{ "106751991168d", AG_ERANGE, 0 },
		{ "2562047788016h", AG_ERANGE, 0 },
		{ "99999999999999999999", AG_ERANGE, 0 },
		{ "18446744073709551616ms", AG_ERANGE, 0 },
		{ "18446744073709551617d", AG_ERANGE, 0 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		int64_t ms = -12345;
		int rc = ag_parse_duration(cases[i].in, &ms);
		if (rc != cases[i].rc || (rc == 0 && ms != cases[i].ms))
			print_error("'%s': rc %d ms %lld\n", cases[i].in, rc, (long long)ms);
		assert_int_equal(rc, cases[i].rc);
		if (rc == 0)
			assert_true(ms == cases[i].ms);
	}

	/* a thousand digits: an error, not an overflow */
	char big[1001];
	int64_t ms;
	memset(big, '9', 1000);
	big[1000] = '\0';
	assert_int_equal(ag_parse_duration(big, &ms), AG_ERANGE);
	memset(big, '0', 999);
	big[999] = '5';
	assert_int_equal(ag_parse_duration(big, &ms), 0);
	assert_true(ms == 5 * SEC);
}

static void test_format_duration(void **state)
{
	static const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
		{ 0, "0s" },
		{ 1, "1ms" },
		{ 250, "250ms" },
		{ 999, "999ms" },
		{ 1000, "1s" },
		{ 1500, "1500ms" },
		{ 59 * SEC, "59s" },
		{ 90 * SEC, "90s" },
		{ MIN, "1m" },
		{ 15 * MIN, "15m" },
		{ 61 * MIN, "61m" },
		{ HOUR, "1h" },
		{ 25 * HOUR, "25h" },
		{ DAY, "1d" },
		{ 30 * DAY, "30d" },
		{ 365 * DAY, "365d" },
		{ DAY + 1, "86400001ms" },
	};
	char buf[32];

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		int64_t back;
		ag_format_duration(cases[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].want);
		/* and it parses back */
		assert_int_equal(ag_parse_duration(buf, &back), 0);
		assert_true(back == cases[i].ms);
	}
	/* a short buffer is cut, not overrun */
	char small[8 + 8];
	memset(small, CANARY, sizeof(small));
	ag_format_duration(86400001, small, 8);
	assert_string_equal(small, "8640000");
	for (size_t j = 8; j < sizeof(small); j++)
		assert_int_equal((unsigned char)small[j], CANARY);
}

/* ---- ag_conf_set ---------------------------------------------------------- */

struct set_case {
	const char *key, *value;
	int rc;
	const char *dump; /* the key's dump value afterwards */
};

static const struct set_case set_cases[] = {
	/* paths */
	{ "db_dir", "/srv/authguard", 0, "/srv/authguard" },
	{ "db_dir", "/", 0, "/" },
	{ "db_dir", "relative/dir", AG_ECONF, "/var/lib/authguard" },
	{ "db_dir", "", AG_ECONF, "/var/lib/authguard" },
	{ "db_dir", " /srv", AG_ECONF, "/var/lib/authguard" },
	/* mode */
	{ "mode", "log-only", 0, "log-only" },
	{ "mode", "enforce", 0, "enforce" },
	{ "mode", "bad", AG_ECONF, "enforce" },
	{ "mode", "Enforce", AG_ECONF, "enforce" },
	{ "mode", "log_only", AG_ECONF, "enforce" },
	{ "mode", "logonly", AG_ECONF, "enforce" },
	{ "mode", "enforce ", AG_ECONF, "enforce" },
	{ "mode", "", AG_ECONF, "enforce" },
	/* booleans (more in test_conf_set_bool) */
	{ "fail_open", "no", 0, "no" },
	{ "fail_open", "maybe", AG_ECONF, "yes" },
	/* log */
	{ "log", "syslog", 0, "syslog" },
	{ "log", "none", 0, "none" },
	{ "log", "file:/var/log/authguard.log", 0, "file:/var/log/authguard.log" },
	{ "log", "file:relative", AG_ECONF, "syslog" },
	{ "log", "file:relative/x.log", AG_ECONF, "syslog" },
	{ "log", "file:", AG_ECONF, "syslog" },
	{ "log", "file", AG_ECONF, "syslog" },
	{ "log", "/var/log/authguard.log", AG_ECONF, "syslog" },
	{ "log", "FILE:/x", AG_ECONF, "syslog" },
	{ "log", "stderr", AG_ECONF, "syslog" },
	{ "log", "Syslog", AG_ECONF, "syslog" },
	{ "log", "", AG_ECONF, "syslog" },
	/* durations with their ranges */
	{ "decay_half_life", "1s", 0, "1s" },
	{ "decay_half_life", "1000ms", 0, "1s" },
	{ "decay_half_life", "999ms", AG_ECONF, "10m" },
	{ "decay_half_life", "0", AG_ECONF, "10m" },
	{ "decay_half_life", "365d", 0, "365d" },
	{ "decay_half_life", "366d", AG_ECONF, "10m" },
	{ "decay_half_life", "8760h", 0, "365d" },
	{ "decay_half_life", "8761h", AG_ECONF, "10m" },
	{ "tarpit_base", "0", 0, "0s" },
	{ "tarpit_base", "60s", 0, "1m" },
	{ "tarpit_base", "60001ms", AG_ECONF, "500ms" },
	{ "tarpit_max", "0", 0, "0s" },
	{ "tarpit_max", "60s", 0, "1m" },
	{ "tarpit_max", "61s", AG_ECONF, "15s" },
	{ "tarpit_max", "1m", 0, "1m" },
	{ "tarpit_max", "2m", AG_ECONF, "15s" },
	{ "tarpit_max", "-1s", AG_ECONF, "15s" },
	{ "tarpit_max", "15", 0, "15s" },
	{ "tarpit_max", "abc", AG_ECONF, "15s" },
	{ "tarpit_max", "", AG_ECONF, "15s" },
	{ "tarpit_max", "99999999999999999999d", AG_ECONF, "15s" },
	{ "ip_ban_time", "0", AG_ECONF, "1h" },
	{ "ip_ban_time", "1s", 0, "1s" },
	{ "ip_ban_max", "365d", 0, "365d" },
	{ "ip_ban_max", "366d", AG_ECONF, "1d" },
	{ "user_lock_time", "90s", 0, "90s" },
	{ "familiar_ttl", "3650d", 0, "3650d" },
	{ "familiar_ttl", "3651d", AG_ECONF, "30d" },
	{ "familiar_ttl", "999ms", AG_ECONF, "30d" },
	/* sizes */
	{ "db_max_size", "8M", 0, "8M" },
	{ "db_max_size", "1G", 0, "1G" },
	{ "db_max_size", "9216k", 0, "9M" },
	{ "db_max_size", "8389632", 0, "8193k" },
	{ "db_max_size", "1T", 0, "1T" },
	{ "db_max_size", "8191k", AG_ECONF, "128M" },
	{ "db_max_size", "2T", AG_ECONF, "128M" },
	{ "db_max_size", "64MB", AG_ECONF, "128M" },
	{ "db_max_size", "-1M", AG_ECONF, "128M" },
	{ "db_max_size", "99999999999999999999G", AG_ECONF, "128M" },
	{ "user_fold", "no", 0, "no" },
	{ "user_fold", "sometimes", AG_ECONF, "yes" },
	/* mail domains: lowered, without '@', commas and/or blanks */
	{ "user_strip_domains", "example.org", 0, "example.org" },
	{ "user_strip_domains", "@Example.ORG, mail-1.example.net\tx_y.test", 0,
	  "example.org, mail-1.example.net, x_y.test" },
	{ "user_strip_domains", "", 0, "" },
	{ "user_strip_domains", " , ", 0, "" },
	{ "user_strip_domains", "example.org, bad/domain", AG_ECONF, "" },
	{ "user_strip_domains", "@", AG_ECONF, "" },
	{ "user_strip_domains", "alice@example.org", AG_ECONF, "" },
	{ "user_strip_domains", ".example.org", AG_ECONF, "" },
	{ "user_strip_domains", "example.org.", AG_ECONF, "" },
	{ "user_strip_domains", "example..org", AG_ECONF, "" },
	{ "user_strip_domains", "ex\xc3\xa4mple.org", AG_ECONF, "" },
	{ "user_strip_domains", "example.org # a comment", AG_ECONF, "" },
	/* counts with their ranges */
	{ "ipv4_prefix", "7", AG_ECONF, "24" },
	{ "ipv4_prefix", "8", 0, "8" },
	{ "ipv4_prefix", "32", 0, "32" },
	{ "ipv4_prefix", "33", AG_ECONF, "24" },
	{ "ipv4_prefix", "0", AG_ECONF, "24" },
	{ "ipv4_prefix", "016", 0, "16" },
	{ "ipv6_prefix", "15", AG_ECONF, "64" },
	{ "ipv6_prefix", "16", 0, "16" },
	{ "ipv6_prefix", "128", 0, "128" },
	{ "ipv6_prefix", "129", AG_ECONF, "64" },
	{ "tarpit_free", "0", 0, "0" },
	{ "tarpit_free", "1000000", 0, "1000000" },
	{ "tarpit_free", "1000001", AG_ECONF, "3" },
	{ "tarpit_free", "-1", AG_ECONF, "3" },
	{ "tarpit_free", "+1", AG_ECONF, "3" },
	{ "tarpit_free", "", AG_ECONF, "3" },
	{ "tarpit_free", " 5", AG_ECONF, "3" },
	{ "tarpit_free", "5 ", AG_ECONF, "3" },
	{ "tarpit_free", "1e3", AG_ECONF, "3" },
	{ "tarpit_free", "0x10", AG_ECONF, "3" },
	{ "tarpit_free", "5s", AG_ECONF, "3" },
	{ "tarpit_free", "4294967296", AG_ECONF, "3" },
	{ "tarpit_free", "99999999999999999999999999", AG_ECONF, "3" },
	{ "tarpit_slots", "0", 0, "0" },
	{ "tarpit_slots", "100000", 0, "100000" },
	{ "tarpit_slots", "100001", AG_ECONF, "8" },
	{ "ip_ban_after", "0", 0, "0" },
	{ "net_ban_after", "1000000", 0, "1000000" },
	{ "spray_users", "1000001", AG_ECONF, "6" },
	{ "user_lock_after", "7", 0, "7" },
	/* hot passwords and attack waves */
	{ "spray_password_users", "0", 0, "0" },
	{ "spray_password_users", "1000001", AG_ECONF, "10" },
	{ "wave_factor", "0", 0, "0" },
	{ "wave_min_failures", "0", AG_ECONF, "30" },
	{ "wave_min_failures", "1", 0, "1" },
	{ "wave_baseline", "59m", AG_ECONF, "1d" },
	{ "wave_baseline", "7d", 0, "7d" },
	/* CIDR lists: commas and/or blanks */
	{ "trusted", "192.0.2.0/24, 2001:db8::/32", 0, "192.0.2.0/24, 2001:db8::/32" },
	{ "trusted", "192.0.2.1 198.51.100.0/24\t10.0.0.0/8", 0,
	  "192.0.2.1, 198.51.100.0/24, 10.0.0.0/8" },
	{ "trusted", ",,, 192.0.2.1 ,, ,", 0, "192.0.2.1" },
	{ "trusted", "::ffff:192.0.2.1", 0, "192.0.2.1" },
	{ "trusted", "", 0, "" },
	{ "trusted", " , ", 0, "" },
	{ "proxies", "2001:db8:1::/48,198.51.100.7", 0, "2001:db8:1::/48, 198.51.100.7" },
	{ "deny", "0.0.0.0/0, ::/0", 0, "0.0.0.0/0, ::/0" },
	{ "trusted", "192.0.2.0/24, bogus", AG_ECONF, "" },
	{ "trusted", "192.0.2.1/24", AG_ECONF, "" },
	{ "trusted", "192.0.2.0/33", AG_ECONF, "" },
	{ "trusted", "mail.example.com", AG_ECONF, "" },
	{ "trusted", "192.0.2.0/24;10.0.0.0/8", AG_ECONF, "" },
	{ "trusted", "192.0.2.1:25", AG_ECONF, "" },
	{ "deny", "192.0.2.0 / 24", AG_ECONF, "" },
	{ "proxies", "192.0.2.1\n198.51.100.1", AG_ECONF, "" },
	/* authguard-watch: strings verbatim ('#' is no comment), durations */
	{ "watch_source", "file:/var/log/mail.log", 0, "file:/var/log/mail.log" },
	{ "watch_rules", "cyrus, domino", 0, "cyrus, domino" },
	{ "watch_rules", "", 0, "" },
	{ "watch_rule", "gw gatewayd result ^user=(?<user>\\S+) #x", 0,
	  "gw gatewayd result ^user=(?<user>\\S+) #x" },
	{ "watch_max_age", "0", 0, "0s" },
	{ "watch_max_age", "30m", 0, "30m" },
	{ "watch_max_age", "366d", AG_ECONF, "1h" },
	/* authguard-sync */
	{ "sync_redis", "unix:/run/redis/redis.sock", 0, "unix:/run/redis/redis.sock" },
	{ "sync_redis", "10.0.0.5:6379", 0, "10.0.0.5:6379" },
	{ "sync_host", "mx1", 0, "mx1" },
	{ "sync_key_file", "/etc/authguard/cluster.key", 0, "/etc/authguard/cluster.key" },
	{ "sync_stream", "ag:fleet", 0, "ag:fleet" },
	{ "sync_redis_user", "authguard", 0, "authguard" },
	{ "sync_redis_password_file", "/etc/authguard/redis.pw", 0, "/etc/authguard/redis.pw" },
	{ "sync_stream_max", "5000", 0, "5000" },
	{ "sync_stream_max", "999", AG_ECONF, "1000000" },
	{ "sync_outbox_max", "100", 0, "100" },
	{ "sync_outbox_max", "99", AG_ECONF, "100000" },
	{ "sync_snapshot_every", "1s", 0, "1s" },
	{ "sync_snapshot_every", "2d", AG_ECONF, "5m" },
	/* authguard-sync with Sentinel: host:port lists, IPv6 in brackets */
	{ "sync_sentinels", "10.0.0.1:26379, 10.0.0.2:26379 sentinel-3.example:26380", 0,
	  "10.0.0.1:26379, 10.0.0.2:26379, sentinel-3.example:26380" },
	{ "sync_sentinels", "[2001:db8::1]:26379,[::1]:1", 0, "[2001:db8::1]:26379, [::1]:1" },
	{ "sync_sentinels", "", 0, "" },
	{ "sync_sentinels", "localhost:65535", 0, "localhost:65535" },
	{ "sync_sentinels", "10.0.0.1", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:", AG_ECONF, "" },
	{ "sync_sentinels", ":26379", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:0", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:65536", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:263790", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:2x", AG_ECONF, "" },
	{ "sync_sentinels", "::1:26379", AG_ECONF, "" },
	{ "sync_sentinels", "[::1]x:26379", AG_ECONF, "" },
	{ "sync_sentinels", "[]:26379", AG_ECONF, "" },
	{ "sync_sentinels", "a/b:26379", AG_ECONF, "" },
	{ "sync_sentinels", "10.0.0.1:26379, unix:/run/sentinel.sock", AG_ECONF, "" },
	{ "sync_sentinel_master", "mymaster", 0, "mymaster" },
	{ "sync_wait_replicas", "1", 0, "1" },
	{ "sync_wait_replicas", "16", 0, "16" },
	{ "sync_wait_replicas", "17", AG_ECONF, "0" },
	{ "sync_wait_timeout", "250ms", 0, "250ms" },
	{ "sync_wait_timeout", "5ms", AG_ECONF, "1s" },
	{ "sync_wait_timeout", "61s", AG_ECONF, "1s" },
	/* issue 14: prefix levels (longest first, one per length), the
	 * familiarity unit, the slow scale, attempts in flight */
	{ "ipv6_prefixes", "48:60 64 32:500", 0, "64 48:60 32:500" },
	{ "ipv6_prefixes", "64,48:0", 0, "64 48:0" },
	{ "ipv6_prefixes", "64 64:9", 0, "64" },
	{ "ipv6_prefixes", "56", 0, "56" },
	{ "ipv6_prefixes", "64 56 48 32", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", "15", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", "129", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", "64:", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", "64:x", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", "/64", AG_ECONF, "64 48:60" },
	{ "ipv6_prefixes", " ", AG_ECONF, "64 48:60" },
	{ "ipv4_prefixes", "24 16:200", 0, "24 16:200" },
	{ "ipv4_prefixes", "33", AG_ECONF, "24" },
	{ "ipv4_prefixes", "7", AG_ECONF, "24" },
	{ "ipv6_familiar_prefix", "56", 0, "56" },
	{ "ipv6_familiar_prefix", "129", AG_ECONF, "64" },
	{ "slow_half_life", "12h", 0, "12h" },
	{ "slow_half_life", "0", AG_ECONF, "1d" },
	{ "ip_slow_ban_after", "0", 0, "0" },
	{ "user_slow_lock_after", "1000001", AG_ECONF, "30" },
	{ "user_slow_lock_time", "1d", 0, "1d" },
	{ "inflight_max", "0", 0, "0" },
	{ "inflight_max", "100001", AG_ECONF, "4096" },
	{ "inflight_ttl", "2m", 0, "2m" },
	{ "inflight_ttl", "500ms", AG_ECONF, "30s" },
	/* keys */
	{ "nope", "1", AG_ECONF, NULL },
	{ "", "1", AG_ECONF, NULL },
	{ "Mode", "enforce", AG_ECONF, NULL },
	{ "mode ", "enforce", AG_ECONF, NULL },
	{ " mode", "enforce", AG_ECONF, NULL },
	{ "conf", "/etc/x", AG_ECONF, NULL },
	{ "set_line", "1", AG_ECONF, NULL },
	{ "log_path", "/tmp/x", AG_ECONF, NULL },
	/* authguard-policyd */
	{ "policyd_listen", "[::1]:10000", 0, "[::1]:10000" },
	{ "policyd_listen", "", 0, "" },
	{ "policyd_allow_remote", "yes", 0, "yes" },
	{ "policyd_allow_remote", "maybe", AG_ECONF, "no" },
	{ "policyd_api_key_file", "/etc/authguard/policyd.key", 0, "/etc/authguard/policyd.key" },
	{ "policyd_api_key_file", "", 0, "" },
	{ "policyd_threads", "1", 0, "1" },
	{ "policyd_threads", "0", AG_ECONF, "4" },
	{ "policyd_threads", "65", AG_ECONF, "4" },
	{ "policyd_max_connections", "100000", 0, "100000" },
	{ "policyd_max_connections", "0", AG_ECONF, "512" },
	{ "policyd_max_request", "1M", 0, "1M" },
	{ "policyd_max_request", "1023", AG_ECONF, "8k" },
	{ "policyd_max_request", "2M", AG_ECONF, "8k" },
	{ "policyd_timeout", "100ms", 0, "100ms" },
	{ "policyd_timeout", "99ms", AG_ECONF, "1s" },
	{ "policyd_timeout", "61s", AG_ECONF, "1s" },
};

/* Each case on fresh defaults: the key's value afterwards, an error
 * message on failure, and no other key touched. */
static void test_conf_set(void **state)
{
	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(set_cases); i++) {
		const struct set_case *sc = &set_cases[i];
		struct ag_conf c, fresh;
		char err[512];

		ag_conf_init(&c);
		ag_conf_init(&fresh);
		memset(err, CANARY, sizeof(err));
		err[0] = '\0';
		int rc = ag_conf_set(&c, sc->key, sc->value, err, sizeof(err));
		if (rc != sc->rc)
			print_error("case %zu %s = '%s': rc %d (%s)\n", i, sc->key, sc->value, rc,
				    rc != 0 ? err : "");
		assert_int_equal(rc, sc->rc);
		if (rc != 0) {
			assert_true(err[0] != '\0');
			assert_non_null(memchr(err, '\0', sizeof(err)));
			assert_no_control(err);
		}
		if (sc->dump != NULL)
			assert_dump_value(&c, sc->key, sc->dump);
		/* every other key is untouched */
		for (size_t k = 0; k < AG_ARRAY_LEN(all_keys); k++) {
			char got[AG_PATH_MAX + 64], want[AG_PATH_MAX + 64];
			if (strcmp(all_keys[k], sc->key) == 0 || partners(all_keys[k], sc->key))
				continue;
			dump_value(&c, all_keys[k], got, sizeof(got));
			dump_value(&fresh, all_keys[k], want, sizeof(want));
			assert_string_equal(got, want);
		}
		ag_conf_free(&c);
		ag_conf_free(&fresh);
	}
}

/* The old keys ipv4_prefix / ipv6_prefix name the narrowest level of the
 * hierarchy, whichever is set last. */
static void test_prefix_levels_old_keys(void **state)
{
	struct ag_conf c;
	char err[512];

	(void)state;
	ag_conf_init(&c);
	assert_int_equal(ag_conf_set(&c, "ipv6_prefix", "56", err, sizeof(err)), 0);
	assert_dump_value(&c, "ipv6_prefixes", "56 48:60");
	assert_int_equal(ag_conf_set(&c, "ipv6_prefix", "48", err, sizeof(err)), 0);
	assert_dump_value(&c, "ipv6_prefixes", "48"); /* one level per length */
	assert_int_equal(ag_conf_set(&c, "ipv6_prefixes", "60 40:99", err, sizeof(err)), 0);
	assert_int_equal(c.ipv6_prefix, 60);
	assert_int_equal(ag_conf_set(&c, "ipv4_prefix", "16", err, sizeof(err)), 0);
	assert_dump_value(&c, "ipv4_prefixes", "16");
	/* a narrowest level with its own count keeps it */
	assert_int_equal(ag_conf_set(&c, "ipv4_prefixes", "28:5 20", err, sizeof(err)), 0);
	assert_int_equal(c.ipv4_prefix, 28);
	assert_int_equal(ag_conf_set(&c, "ipv4_prefix", "24", err, sizeof(err)), 0);
	assert_dump_value(&c, "ipv4_prefixes", "24:5 20");
	ag_conf_free(&c);
}

/* The messages name the key, the allowed range and the bad value. */
static void test_conf_set_messages(void **state)
{
	static const struct {
		const char *key, *value, *needle;
	} cases[] = {
		{ "ipv4_prefix", "33", "ipv4_prefix must be a whole number from 8 to 32, not '33'" },
		{ "ipv4_prefix", "7", "from 8 to 32" },
		{ "tarpit_max", "61s", "tarpit_max must be a duration from 0s to 1m" },
		{ "tarpit_max", "61s", "'61s'" },
		{ "decay_half_life", "1ms", "from 1s to 365d" },
		{ "fail_open", "maybe", "'maybe'" },
		{ "mode", "bad", "'bad'" },
		{ "log", "file:relative", "file:/absolute/path" },
		{ "db_dir", "x", "absolute path" },
		{ "trusted", "192.0.2.0/24, bogus", "'bogus'" },
		{ "trusted", "192.0.2.1/24", "'192.0.2.1/24'" },
		{ "nope", "1", "unknown key 'nope'" },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		struct ag_conf c;
		char err[512] = "";

		ag_conf_init(&c);
		assert_int_equal(ag_conf_set(&c, cases[i].key, cases[i].value, err, sizeof(err)),
				 AG_ECONF);
		if (strstr(err, cases[i].needle) == NULL)
			print_error("%s = %s: message '%s' lacks '%s'\n", cases[i].key, cases[i].value,
				    err, cases[i].needle);
		assert_non_null(strstr(err, cases[i].needle));
		ag_conf_free(&c);
	}

	/* a huge bad value or key is cut in the message */
	{
		struct ag_conf c;
		char err[512], big[5000];
		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		ag_conf_init(&c);
		assert_int_equal(ag_conf_set(&c, "mode", big, err, sizeof(err)), AG_ECONF);
		assert_true(strlen(err) < 200);
		assert_int_equal(ag_conf_set(&c, big, "1", err, sizeof(err)), AG_ECONF);
		assert_true(strlen(err) < 200);
		ag_conf_free(&c);
	}

	/* tiny error buffers are never overrun */
	for (size_t len = 1; len <= 16; len++) {
		struct ag_conf c;
		char err[32];
		memset(err, CANARY, sizeof(err));
		ag_conf_init(&c);
		assert_int_equal(ag_conf_set(&c, "ipv4_prefix", "99", err, len), AG_ECONF);
		assert_int_equal(strlen(err), len - 1);
		for (size_t j = len; j < sizeof(err); j++)
			assert_int_equal((unsigned char)err[j], CANARY);
		assert_int_equal(ag_conf_set(&c, "trusted", "bogus", err, len), AG_ECONF);
		for (size_t j = len; j < sizeof(err); j++)
			assert_int_equal((unsigned char)err[j], CANARY);
		ag_conf_free(&c);
	}
}

static void test_conf_set_bool(void **state)
{
	static const struct {
		const char *in;
		int rc;
		uint32_t want;
	} cases[] = {
		{ "yes", 0, 1 },   { "no", 0, 0 },     { "true", 0, 1 },  { "false", 0, 0 },
		{ "on", 0, 1 },    { "off", 0, 0 },    { "1", 0, 1 },     { "0", 0, 0 },
		{ "maybe", AG_ECONF, 0 }, { "YES", AG_ECONF, 0 }, { "Yes", AG_ECONF, 0 },
		{ "y", AG_ECONF, 0 },     { "n", AG_ECONF, 0 },   { "2", AG_ECONF, 0 },
		{ "-1", AG_ECONF, 0 },    { "", AG_ECONF, 0 },    { "yes ", AG_ECONF, 0 },
		{ " no", AG_ECONF, 0 },   { "01", AG_ECONF, 0 },  { "yesno", AG_ECONF, 0 },
		{ "enable", AG_ECONF, 0 },
	};

	(void)state;
	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		for (uint32_t start = 0; start <= 1; start++) {
			struct ag_conf c;
			char err[256];

			ag_conf_init(&c);
			c.fail_open = start;
			int rc = ag_conf_set(&c, "fail_open", cases[i].in, err, sizeof(err));
			if (rc != cases[i].rc)
				print_error("fail_open = '%s': rc %d\n", cases[i].in, rc);
			assert_int_equal(rc, cases[i].rc);
			assert_int_equal(c.fail_open, rc == 0 ? cases[i].want : start);
			ag_conf_free(&c);
		}
	}
}

/* log=: the kind and the path, and a failure keeps both. */
static void test_conf_set_log(void **state)
{
	struct fx *f = *state;
	char err[256], big[AG_PATH_MAX + 16];

	assert_int_equal(ag_conf_set(&f->c, "log", "file:/var/log/ag.log", err, sizeof(err)), 0);
	assert_int_equal(f->c.log_kind, AG_LOG_FILE);
	assert_string_equal(f->c.log_path, "/var/log/ag.log");
	assert_int_equal(ag_conf_set(&f->c, "log", "file:rel", err, sizeof(err)), AG_ECONF);
	assert_int_equal(f->c.log_kind, AG_LOG_FILE);
	assert_string_equal(f->c.log_path, "/var/log/ag.log");
	assert_int_equal(ag_conf_set(&f->c, "log", "none", err, sizeof(err)), 0);
	assert_int_equal(f->c.log_kind, AG_LOG_NONE);
	assert_int_equal(ag_conf_set(&f->c, "log", "syslog", err, sizeof(err)), 0);
	assert_int_equal(f->c.log_kind, AG_LOG_SYSLOG);

	/* the longest path that fits, and one byte more */
	memcpy(big, "file:", 5);
	memset(big + 5, 'a', AG_PATH_MAX - 1);
	big[5] = '/';
	big[5 + AG_PATH_MAX - 1] = '\0';
	assert_int_equal(ag_conf_set(&f->c, "log", big, err, sizeof(err)), 0);
	assert_int_equal(f->c.log_kind, AG_LOG_FILE);
	assert_int_equal(strlen(f->c.log_path), AG_PATH_MAX - 1);
	big[5 + AG_PATH_MAX - 1] = 'a';
	big[5 + AG_PATH_MAX] = '\0';
	assert_int_equal(ag_conf_set(&f->c, "log", big, err, sizeof(err)), AG_ECONF);
	assert_int_equal(strlen(f->c.log_path), AG_PATH_MAX - 1);

	/* db_dir likewise */
	assert_int_equal(ag_conf_set(&f->c, "db_dir", big + 5 + 1, err, sizeof(err)), AG_ECONF);
	assert_int_equal(ag_conf_set(&f->c, "db_dir", big + 5, err, sizeof(err)), AG_ECONF);
	big[5 + AG_PATH_MAX - 1] = '\0';
	assert_int_equal(ag_conf_set(&f->c, "db_dir", big + 5, err, sizeof(err)), 0);
	assert_int_equal(strlen(f->c.db_dir), AG_PATH_MAX - 1);
	assert_string_equal(f->c.db_dir, big + 5);
}

/* In a file, policyd_listen given twice listens twice (the first line
 * replaces the default), a string key may be empty ("not set"), and a
 * '#' in a string value is kept. */
static void test_load_policyd(void **state)
{
	struct fx *f = *state;
	static const char text[] = "policyd_listen = 127.0.0.1:9000\n"
				   "policyd_listen = [::1]:9000\n"
				   "policyd_api_key_file =\n";
	static const char text2[] = "policyd_api_key_file = /etc/a#b\n";
	struct ag_conf c;

	write_file(f->path, text, strlen(text));
	ag_conf_init(&c);
	assert_int_equal(c.policyd_listen.n, 1);
	assert_string_equal(c.policyd_listen.v[0], "127.0.0.1:8642");
	assert_int_equal(ag_conf_load(&c, f->path, capture, &f->cap), 0);
	assert_int_equal(f->cap.n, 0);
	assert_int_equal(c.policyd_listen.n, 2);
	assert_string_equal(c.policyd_listen.v[0], "127.0.0.1:9000");
	assert_string_equal(c.policyd_listen.v[1], "[::1]:9000");
	assert_string_equal(c.policyd_api_key_file, "");
	ag_conf_free(&c);

	write_file(f->path, text2, strlen(text2));
	ag_conf_init(&c);
	assert_int_equal(ag_conf_load(&c, f->path, capture, &f->cap), 0);
	assert_string_equal(c.policyd_api_key_file, "/etc/a#b");
	ag_conf_free(&c);
}

/* A list set through ag_conf_set replaces the list; a bad entry fails the
 * whole value and leaves the old list as it was. */
static void test_conf_set_list(void **state)
{
	struct fx *f = *state;
	char err[256];

	assert_int_equal(ag_conf_set(&f->c, "trusted", "192.0.2.0/24, 198.51.100.7", err,
				     sizeof(err)), 0);
	assert_int_equal(f->c.trusted.n, 2);
	assert_int_equal(ag_conf_set(&f->c, "trusted", "203.0.113.0/24 2001:db8::/32", err,
				     sizeof(err)), 0);
	assert_dump_value(&f->c, "trusted", "203.0.113.0/24, 2001:db8::/32");

	static const char *bad[] = {
		"10.0.0.0/8, bogus", "bogus, 10.0.0.0/8", "10.0.0.0/8 10.0.0.1/8",
		"10.0.0.0/8,,,,::1/129", "10.0.0.0/8, 0123456789012345678901234567890123456789"
		"0123456789012345678901234567890123456789012345678901234567890123456789"
		"0123456789",
	};
	for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
		err[0] = '\0';
		assert_int_equal(ag_conf_set(&f->c, "trusted", bad[i], err, sizeof(err)), AG_ECONF);
		assert_true(err[0] != '\0');
		assert_dump_value(&f->c, "trusted", "203.0.113.0/24, 2001:db8::/32");
		assert_int_equal(f->c.trusted.n, 2);
	}
	/* the lists are separate */
	assert_int_equal(f->c.proxies.n, 0);
	assert_int_equal(f->c.deny.n, 0);
	/* an empty value empties the list */
	assert_int_equal(ag_conf_set(&f->c, "trusted", "", err, sizeof(err)), 0);
	assert_int_equal(f->c.trusted.n, 0);
}

/* user_strip_domains in a file: lines add up, a bad line adds nothing
 * (and is reported), a '#' after the domains is a comment; copies are deep. */
static void test_strip_domains_lines(void **state)
{
	struct fx *f = *state;
	static const char text[] = "user_strip_domains = example.org\n"
				   "user_strip_domains = Example.NET, bad/one\n"
				   "user_strip_domains = @mail.test # the submission domain\n";
	struct ag_conf copy;

	write_file(f->path, text, strlen(text));
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 1);
	assert_int_equal(f->cap.n, 1);
	assert_non_null(strstr(f->cap.msg[0], ":2: user_strip_domains: 'bad/one' is not a mail domain"));
	assert_dump_value(&f->c, "user_strip_domains", "example.org, mail.test");
	assert_int_equal(ag_conf_copy(&copy, &f->c), 0);
	assert_true(copy.user_strip_domains.v != f->c.user_strip_domains.v);
	assert_string_equal(copy.user_strip_domains.v[1], "mail.test");
	ag_conf_free(&copy);
}

/* sync_sentinels on several lines adds to the list; a '#' ends the value
 * (not a verbatim key); a bad entry is named and the line keeps nothing */
static void test_sentinels_lines(void **state)
{
	struct fx *f = *state;
	static const char text[] = "sync_sentinels = 10.0.0.1:26379\n"
				   "sync_sentinels = 10.0.0.2:26379, 10.0.0.3\n"
				   "sync_sentinels = [2001:db8::3]:26379 # the third site\n"
				   "sync_sentinel_master = fleet\n";
	struct ag_conf copy;

	write_file(f->path, text, strlen(text));
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 1);
	assert_int_equal(f->cap.n, 1);
	assert_non_null(strstr(f->cap.msg[0],
			       ":2: sync_sentinels: '10.0.0.3' is not host:port or [IPv6]:port"));
	assert_dump_value(&f->c, "sync_sentinels", "10.0.0.1:26379, [2001:db8::3]:26379");
	assert_string_equal(f->c.sync_sentinel_master, "fleet");
	assert_int_equal(ag_conf_copy(&copy, &f->c), 0);
	assert_true(copy.sync_sentinels.v != f->c.sync_sentinels.v);
	assert_string_equal(copy.sync_sentinels.v[1], "[2001:db8::3]:26379");
	ag_conf_free(&copy);
}

/* ---- ag_conf_load --------------------------------------------------------- */

static void test_load_good(void **state)
{
	struct fx *f = *state;
	static const char text[] =
		"# authguard test config\r\n"                     /* 1 */
		"\r\n"                                            /* 2 */
		"   \t  \r\n"                                     /* 3 */
		"mode = log-only   # trying it first\r\n"         /* 4 */
		"\tfail_open=no\r\n"                              /* 5 */
		"trusted = 192.0.2.0/24, 198.51.100.7\r\n"        /* 6 */
		"log = file:/var/log/authguard.log\r\n"           /* 7 */
		"  trusted\t=\t2001:db8::/32 203.0.113.0/25  \r\n" /* 8 */
		"trusted =\r\n"                                   /* 9 */
		"proxies =\r\n"                                   /* 10 */
		"#ipv6_prefix = 48\r\n"                           /* 11 */
		"ipv6_prefix = 56\r\n"                            /* 12 */
		"deny = 10.0.0.0/8 # no private nets from outside\r\n" /* 13 */
		"decay_half_life = 90s\n"                         /* 14: LF only */
		"familiar_ttl = 7d";                              /* 15: no newline */

	write_file(f->path, text, sizeof(text) - 1);
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 0);
	for (int i = 0; i < f->cap.n && i < 32; i++)
		print_error("unexpected report: %s\n", f->cap.msg[i]);
	assert_int_equal(f->cap.n, 0);

	assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
	assert_int_equal(f->c.fail_open, 0);
	assert_int_equal(f->c.log_kind, AG_LOG_FILE);
	assert_string_equal(f->c.log_path, "/var/log/authguard.log");
	assert_dump_value(&f->c, "trusted",
			  "192.0.2.0/24, 198.51.100.7, 2001:db8::/32, 203.0.113.0/25");
	assert_int_equal(f->c.trusted.n, 4);
	assert_int_equal(f->c.proxies.n, 0);
	assert_dump_value(&f->c, "deny", "10.0.0.0/8");
	assert_int_equal(f->c.ipv6_prefix, 56);
	assert_true(f->c.decay_half_life == 90 * SEC);
	assert_true(f->c.familiar_ttl == 7 * DAY);
	/* untouched keys keep their defaults */
	assert_int_equal(f->c.ipv4_prefix, 24);
	assert_true(f->c.tarpit_max == 15 * SEC);

	/* the lines each key was set on (a list: its last line) */
	unsigned want[] = { 4, 5, 7, 9, 10, 12, 13, 14, 15 };
	unsigned got[AG_ARRAY_LEN(f->c.set_line)];
	size_t n = 0;
	for (size_t i = 0; i < AG_ARRAY_LEN(f->c.set_line); i++)
		if (f->c.set_line[i] != 0)
			got[n++] = f->c.set_line[i];
	assert_int_equal(n, AG_ARRAY_LEN(want));
	for (size_t i = 0; i < AG_ARRAY_LEN(want); i++) {
		int seen = 0;
		for (size_t j = 0; j < n; j++)
			seen += got[j] == want[i];
		assert_int_equal(seen, 1);
	}

	/* loading the same file again: no "already set", lists not doubled */
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 0);
	assert_int_equal(f->cap.n, 0);
	assert_int_equal(f->c.trusted.n, 4);
	assert_int_equal(f->c.deny.n, 1);
}

struct want_report {
	unsigned line;
	const char *needle;
};

static void check_reports(const struct fx *f, const struct want_report *w, size_t nw)
{
	if (f->cap.n != (int)nw)
		for (int i = 0; i < f->cap.n && i < 32; i++)
			print_error("report: %s\n", f->cap.msg[i]);
	assert_int_equal(f->cap.n, (int)nw);
	for (size_t i = 0; i < nw; i++) {
		char prefix[400];
		snprintf(prefix, sizeof(prefix), "%s:%u: ", f->path, w[i].line);
		const char *m = f->cap.msg[i];
		if (strncmp(m, prefix, strlen(prefix)) != 0 || strstr(m, w[i].needle) == NULL)
			print_error("report %zu: '%s', want '%s...%s'\n", i, m, prefix, w[i].needle);
		assert_memory_equal(m, prefix, strlen(prefix));
		assert_non_null(strstr(m + strlen(prefix), w[i].needle));
	}
}

static void test_load_errors(void **state)
{
	struct fx *f = *state;
	char *text = malloc(16384);
	size_t n = 0;

	assert_non_null(text);
#define L(s) (n += (size_t)sprintf(text + n, "%s\n", s))
	L("# bad lines");                              /* 1 */
	L("mode = log-only");                          /* 2 */
	L("mode = enforce");                           /* 3: already set on line 2 */
	L("bogus = 1");                                /* 4: unknown key */
	L("tarpit_free 5");                            /* 5: missing '=' */
	L("tarpit_free =");                            /* 6: no value */
	memset(text + n, 'a', 5000);                   /* 7: 5000-byte line */
	n += 5000;
	L(" = 1");
	L("ipv4_prefix = 33");                         /* 8 */
	L("tarpit_max = 61s");                         /* 9 */
	L("fail_open = maybe");                        /* 10 */
	L("log = file:relative");                      /* 11 */
	L("trusted = 192.0.2.0/24, bogus");            /* 12 */
	L("tarpit_free = 5");                          /* 13: fine (5 and 6 failed) */
	L("= 5");                                      /* 14 */
	L("db_dir = relative/path");                   /* 15 */
	L("ipv4_prefix = 16");                         /* 16: fine (8 failed) */
	L("deny = 192.0.2.1");                         /* 17 */
	L("deny = 198.51.100.0/24, 10.0.0.1/8");       /* 18: the whole line fails */
	L("tarpit_free = 6");                          /* 19: already set on line 13 */
	L("Mode = enforce");                           /* 20 */
	L("mode");                                     /* 21 */
	L("=");                                        /* 22 */
	L("ipv6_prefix = 64 64");                      /* 23 */
	L("deny = 203.0.113.0/24");                    /* 24: still adds up after 18 */
#undef L
	write_file(f->path, text, n);
	free(text);

	const struct want_report w[] = {
		{ 3, "mode is already set on line 2" },
		{ 4, "unknown key 'bogus'" },
		{ 5, "expected 'key = value'" },
		{ 6, "tarpit_free has no value" },
		{ 7, "line too long" },
		{ 8, "ipv4_prefix must be a whole number from 8 to 32" },
		{ 9, "tarpit_max must be a duration" },
		{ 10, "fail_open must be yes or no" },
		{ 11, "log must be" },
		{ 12, "'bogus'" },
		{ 14, "unknown key ''" },
		{ 15, "db_dir must be an absolute path" },
		{ 18, "'10.0.0.1/8'" },
		{ 19, "tarpit_free is already set on line 13" },
		{ 20, "unknown key 'Mode'" },
		{ 21, "expected 'key = value'" },
		{ 22, "unknown key ''" },
		{ 23, "ipv6_prefix must be" },
	};
	int rc = ag_conf_load(&f->c, f->path, capture, &f->cap);
	assert_int_equal(rc, (int)AG_ARRAY_LEN(w));
	check_reports(f, w, AG_ARRAY_LEN(w));

	/* bad lines are skipped: first values kept, defaults otherwise */
	assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
	assert_int_equal(f->c.tarpit_free, 5);
	assert_int_equal(f->c.ipv4_prefix, 16);
	assert_int_equal(f->c.ipv6_prefix, 64);
	assert_true(f->c.tarpit_max == 15 * SEC);
	assert_int_equal(f->c.fail_open, 1);
	assert_int_equal(f->c.log_kind, AG_LOG_SYSLOG);
	assert_string_equal(f->c.db_dir, "/var/lib/authguard");
	assert_int_equal(f->c.trusted.n, 0);
	assert_dump_value(&f->c, "deny", "192.0.2.1, 203.0.113.0/24");

	/* without a report callback: the same count, nothing else */
	struct ag_conf c2;
	ag_conf_init(&c2);
	assert_int_equal(ag_conf_load(&c2, f->path, NULL, NULL), (int)AG_ARRAY_LEN(w));
	assert_int_equal(c2.tarpit_free, 5);
	ag_conf_free(&c2);
}

/* Long lines: one error each, and the line numbers after them stay right. */
static void test_load_long_lines(void **state)
{
	struct fx *f = *state;
	const size_t big = 3 * 4096 + 17;
	char *text = malloc(4 * big + 4000);
	size_t n = 0;

	assert_non_null(text);
	/* 1: a long but acceptable line: blanks inside a list value */
	n += (size_t)sprintf(text + n, "trusted = 192.0.2.1");
	memset(text + n, ' ', 3000);
	n += 3000;
	n += (size_t)sprintf(text + n, "198.51.100.1\n");
	/* 2: a long comment */
	text[n++] = '#';
	memset(text + n, 'c', big);
	n += big;
	text[n++] = '\n';
	/* 3: a long value */
	n += (size_t)sprintf(text + n, "mode = ");
	memset(text + n, 'x', big);
	n += big;
	text[n++] = '\n';
	/* 4 */
	n += (size_t)sprintf(text + n, "mode = log-only\n");
	/* 5: a long line with no newline at the end of the file */
	memset(text + n, 'z', big);
	n += big;
	write_file(f->path, text, n);
	free(text);

	const struct want_report w[] = {
		{ 2, "line too long" },
		{ 3, "line too long" },
		{ 5, "line too long" },
	};
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), (int)AG_ARRAY_LEN(w));
	check_reports(f, w, AG_ARRAY_LEN(w));
	assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
	assert_dump_value(&f->c, "trusted", "192.0.2.1, 198.51.100.1");
}

/* A NUL byte cannot hide the rest of a line, or shift the line count. */
static void test_load_nul(void **state)
{
	struct fx *f = *state;
	char text[8192];
	size_t n = 0;

#define RAW(s) (memcpy(text + n, s, sizeof(s) - 1), n += sizeof(s) - 1)
	RAW("deny = 192.0.2.1\0, 198.51.100.1\n");     /* 1 */
	RAW("mode = log-only\n");                      /* 2 */
	RAW("a\0");                                    /* 3: NUL, then 5000 bytes */
	memset(text + n, 'x', 5000);
	n += 5000;
	RAW("\n");
	RAW("ipv4_prefix = 20\n");                     /* 4 */
	RAW("\0\n");                                   /* 5 */
	RAW("ipv6_prefix = 48\n");                     /* 6 */
#undef RAW
	write_file(f->path, text, n);

	const struct want_report w[] = {
		{ 1, "NUL" },
		{ 3, "" },
		{ 5, "NUL" },
	};
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), (int)AG_ARRAY_LEN(w));
	check_reports(f, w, AG_ARRAY_LEN(w));
	assert_int_equal(f->c.deny.n, 0);
	assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
	assert_int_equal(f->c.ipv4_prefix, 20);
	assert_int_equal(f->c.ipv6_prefix, 48);
}

/* Control bytes in a bad value or argument never reach a message. */
static void test_messages_control_bytes(void **state)
{
	struct fx *f = *state;
	static const char text[] =
		"mode = a\rb\n"                             /* 1 */
		"fail_open = \x1b[2J\x1b[H\n"               /* 2 */
		"trusted = 192.0.2.1\v198.51.100.1\n"       /* 3 */
		"bogus\x7f = 1\n"                           /* 4 */
		"tarpit_max = 1\x08\x08\x08\x08ok\n";          /* 5 */
	const struct want_report w[] = {
		{ 1, "mode must be" },
		{ 2, "fail_open must be" },
		{ 3, "is not an address" },
		{ 4, "unknown key" },
		{ 5, "tarpit_max must be" },
	};

	write_file(f->path, text, sizeof(text) - 1);
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), (int)AG_ARRAY_LEN(w));
	check_reports(f, w, AG_ARRAY_LEN(w)); /* capture() checks every byte */

	const char *argv[] = {
		"mode=enforce\nfake: config is fine", "trusted=192.0.2.1\n198.51.100.1",
		"bad\nkey=1", "fail_open=\r\n",
	};
	f->cap.n = 0;
	assert_int_equal(ag_conf_apply_args(&f->c, 4, argv, capture, &f->cap), 4);
	assert_int_equal(f->cap.n, 4);
	for (int i = 0; i < 4; i++)
		assert_memory_equal(f->cap.msg[i], "argument '", 10);
}

static void test_load_unreadable(void **state)
{
	struct fx *f = *state;
	char missing[400], prefix[420];
	struct ag_conf before;
	char *d0, *d1;

	ag_conf_init(&before);
	d0 = dump(&before);

	/* a missing file */
	snprintf(missing, sizeof(missing), "%s/no-such.conf", f->dir);
	assert_int_equal(ag_conf_load(&f->c, missing, capture, &f->cap), AG_EIO);
	assert_int_equal(f->cap.n, 1);
	snprintf(prefix, sizeof(prefix), "%s:0: ", missing);
	assert_memory_equal(f->cap.msg[0], prefix, strlen(prefix));
	assert_non_null(strstr(f->cap.msg[0], strerror(ENOENT)));
	d1 = dump(&f->c);
	assert_string_equal(d1, d0);
	free(d1);

	/* the guard is told: each attempt line will say so */
	assert_int_equal(f->c.load_errno, ENOENT);
	assert_string_equal(f->c.load_path, missing);

	/* without a callback */
	assert_int_equal(ag_conf_load(&f->c, missing, NULL, NULL), AG_EIO);

	/* a directory: an error, never "clean", and unreadable */
	f->cap.n = 0;
	int rc = ag_conf_load(&f->c, f->dir, capture, &f->cap);
	assert_int_equal(rc, AG_EIO);
	assert_int_equal(f->cap.n, 1);
	snprintf(prefix, sizeof(prefix), "%s:", f->dir);
	assert_memory_equal(f->cap.msg[0], prefix, strlen(prefix));
	assert_int_equal(f->c.load_errno, EISDIR);

	/* an empty file is clean and changes nothing */
	f->cap.n = 0;
	write_file(f->path, "", 0);
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 0);
	assert_int_equal(f->cap.n, 0);
	assert_int_equal(f->c.load_errno, 0); /* read again: clean */
	d1 = dump(&f->c);
	assert_string_equal(d1, d0);
	free(d1);
	free(d0);
	ag_conf_free(&before);
}

/* ---- module arguments ----------------------------------------------------- */

static void truncate_to(const char *path, off_t len)
{
	assert_int_equal(truncate(path, len), 0);
}

/* A file larger than the reader's bound is refused, loudly. */
static void test_load_too_big(void **state)
{
	struct fx *f = *state;
	size_t n = AG_CONF_FILE_MAX + 1;
	char *text = malloc(n);

	assert_non_null(text);
	memset(text, '\n', n);
	write_file(f->path, text, n);
	free(text);
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), AG_EIO);
	assert_int_equal(f->cap.n, 1);
	assert_non_null(strstr(f->cap.msg[0], "larger than"));
	assert_int_equal(f->c.load_errno, EFBIG);
	/* one byte less is a file of blank lines */
	truncate_to(f->path, AG_CONF_FILE_MAX);
	f->cap.n = 0;
	assert_int_equal(ag_conf_load(&f->c, f->path, capture, &f->cap), 0);
	assert_int_equal(f->c.load_errno, 0);
}

/* ---- ag_conf_cached -------------------------------------------------------- */

/* A clock an hour ahead: no test file counts as just changed, so only the
 * stat() stamp can reveal an edit. */
static int64_t clock_ahead(void)
{
	return ag_now_ms() + 3600 * 1000;
}

/* The epoch: every file counts as just changed, read again on each use. */
static int64_t clock_epoch(void)
{
	return 0;
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };

	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static int cache_setup(void **state)
{
	ag_conf_cache_forget();
	ag_conf_cache_set_clock(NULL);
	return setup(state);
}

static int cache_teardown(void **state)
{
	ag_conf_cache_forget();
	ag_conf_cache_set_clock(NULL);
	return teardown(state);
}

/* A file stat() sees but open() cannot (here: no descriptor left, as in a
 * busy daemon) is not kept as unreadable until its next edit: the next
 * use reads it. In a child, whose descriptor limit is lowered. */
static void test_cache_read_error_retried(void **state)
{
	struct fx *f = *state;

	write_file(f->path, "tarpit_free = 7\n", 16);
	ag_conf_cache_set_clock(clock_ahead); /* an old file: stat() alone would do */
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit low = { 32, 32 };
		struct ag_conf c;
		int held[64], n = 0;
		if (setrlimit(RLIMIT_NOFILE, &low) != 0)
			_exit(4);
		while (n < 64 && (held[n] = open("/dev/null", O_RDONLY)) >= 0)
			n++;
		int rc = ag_conf_cached(&c, f->path, NULL, NULL);
		if (rc != AG_EIO || c.load_errno != EMFILE)
			_exit(2);
		ag_conf_free(&c);
		while (n > 0)
			close(held[--n]);
		rc = ag_conf_cached(&c, f->path, NULL, NULL);
		_exit(rc == 0 && c.load_errno == 0 && c.tarpit_free == 7 ? 0 : 3);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ag_conf_cached() into f->c (freed first); returns its result. */
static int cached(struct fx *f, const char *path)
{
	ag_conf_free(&f->c);
	return ag_conf_cached(&f->c, path, capture, &f->cap);
}

/* An unchanged file is parsed (and its bad line reported) once; each call
 * gets the same values in a copy of its own. */
static void test_cache_unchanged(void **state)
{
	struct fx *f = *state;
	static const char text[] = "mode = log-only\nbogus = 1\ntrusted = 192.0.2.0/24\n";
	static const struct {
		int64_t (*clock)(void);
		unsigned long reads; /* in 20 calls; 0: not checked */
	} cases[] = {
		{ NULL, 0 },           /* the real clock: read again or not */
		{ clock_ahead, 1 },    /* old enough: only stat() */
		{ clock_epoch, 20 },   /* just changed: read, compared, not parsed */
	};

	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		ag_conf_cache_forget();
		ag_conf_cache_set_clock(cases[i].clock);
		write_file(f->path, text, sizeof(text) - 1);
		f->cap.n = 0;
		unsigned long reads0 = ag_conf_cache_reads();
		for (int k = 0; k < 20; k++) {
			assert_int_equal(cached(f, f->path), 1);
			assert_int_equal(f->cap.n, 1);
			assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
			assert_int_equal(f->c.load_errno, 0);
			assert_dump_value(&f->c, "trusted", "192.0.2.0/24");
			/* the caller's copy: changing it changes nothing cached */
			f->c.mode = AG_MODE_ENFORCE;
			ag_cidrs_clear(&f->c.trusted);
		}
		assert_non_null(strstr(f->cap.msg[0], ":2: unknown key"));
		if (cases[i].reads != 0)
			assert_int_equal(ag_conf_cache_reads() - reads0, cases[i].reads);
	}
}

/* The ways a file changes; each must be seen on the next call. Contents
 * A and B have the same size; the mtime is set back to the same second. */
enum edit { ED_NSEC, ED_SIZE, ED_RENAME, ED_SAME_STAMP };

static const char text_a[] = "ipv4_prefix = 20\n", text_b[] = "ipv4_prefix = 21\n";
static const time_t edit_sec = 1000000000;

static void do_edit(struct fx *f, enum edit how)
{
	char tmp[400];

	switch (how) {
	case ED_NSEC: /* same size, same second, other nanoseconds */
		write_file(f->path, text_b, sizeof(text_b) - 1);
		set_mtime(f->path, edit_sec, 200);
		break;
	case ED_SIZE: /* only the size differs (and the content) */
		write_file(f->path, "ipv4_prefix = 21  \n", 19);
		set_mtime(f->path, edit_sec, 100);
		break;
	case ED_RENAME: /* a new inode renamed over it, stamps alike */
		snprintf(tmp, sizeof(tmp), "%s.new", f->path);
		write_file(tmp, text_b, sizeof(text_b) - 1);
		set_mtime(tmp, edit_sec, 100);
		assert_int_equal(rename(tmp, f->path), 0);
		break;
	case ED_SAME_STAMP: /* rewritten in place, size and mtime kept */
		write_file(f->path, text_b, sizeof(text_b) - 1);
		set_mtime(f->path, edit_sec, 100);
		break;
	}
}

static void test_cache_edits(void **state)
{
	struct fx *f = *state;
	static const struct {
		enum edit how;
		int64_t (*clock)(void); /* NULL: the real one */
	} cases[] = {
		{ ED_NSEC, clock_ahead },
		{ ED_SIZE, clock_ahead },
		{ ED_RENAME, clock_ahead },
		/* stamps alike but for the ctime, which one clock tick can
		 * hide: a file changed just now is compared byte by byte */
		{ ED_SAME_STAMP, clock_epoch },
	};
	int missed = 0;

	for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
		ag_conf_cache_forget();
		ag_conf_cache_set_clock(cases[i].clock);
		write_file(f->path, text_a, sizeof(text_a) - 1);
		set_mtime(f->path, edit_sec, 100);
		assert_int_equal(cached(f, f->path), 0);
		assert_int_equal(f->c.ipv4_prefix, 20);
		assert_int_equal(cached(f, f->path), 0);
		do_edit(f, cases[i].how);
		assert_int_equal(cached(f, f->path), 0);
		if (f->c.ipv4_prefix != 21) {
			print_error("case %zu: the edit was missed\n", i);
			missed++;
		}
	}
	assert_int_equal(missed, 0);
	assert_int_equal(f->cap.n, 0);
}

/* A missing file: ENOENT on every call, reported once; it appears, goes
 * away and comes back, each seen on the next call. */
static void test_cache_missing(void **state)
{
	struct fx *f = *state;

	ag_conf_cache_set_clock(clock_ahead);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(cached(f, f->path), AG_EIO);
		assert_int_equal(f->c.load_errno, ENOENT);
		assert_string_equal(f->c.load_path, f->path);
	}
	assert_int_equal(f->cap.n, 1);
	assert_non_null(strstr(f->cap.msg[0], strerror(ENOENT)));

	write_file(f->path, text_a, sizeof(text_a) - 1);
	assert_int_equal(cached(f, f->path), 0);
	assert_int_equal(f->c.load_errno, 0);
	assert_int_equal(f->c.ipv4_prefix, 20);

	assert_int_equal(unlink(f->path), 0);
	assert_int_equal(cached(f, f->path), AG_EIO);
	assert_int_equal(f->c.load_errno, ENOENT);
	assert_int_equal(f->c.ipv4_prefix, 24); /* defaults */
	assert_int_equal(f->cap.n, 2);

	write_file(f->path, text_b, sizeof(text_b) - 1);
	assert_int_equal(cached(f, f->path), 0);
	assert_int_equal(f->c.load_errno, 0);
	assert_int_equal(f->c.ipv4_prefix, 21);
	assert_int_equal(f->cap.n, 2);
}

/* More paths than the cache holds: each still right; the least recently
 * used was dropped, so it is parsed (and reported) again. */
static void test_cache_bounded(void **state)
{
	struct fx *f = *state;
	char path[AG_CONF_CACHE_PATHS + 2][400];
	const int n = AG_CONF_CACHE_PATHS + 2;

	ag_conf_cache_set_clock(clock_ahead);
	for (int i = 0; i < n; i++) {
		char text[64];
		snprintf(path[i], sizeof(path[i]), "%s/c%d.conf", f->dir, i);
		int len = snprintf(text, sizeof(text), "ipv4_prefix = %d\nbogus = 1\n", 10 + i);
		write_file(path[i], text, (size_t)len);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < n; i++) {
			assert_int_equal(cached(f, path[i]), 1);
			assert_int_equal(f->c.ipv4_prefix, 10 + i);
		}
	}
	assert_int_equal(f->cap.n, 2 * n);
	/* the most recent ones are still cached */
	assert_int_equal(cached(f, path[n - 1]), 1);
	assert_int_equal(f->cap.n, 2 * n);
}

/* Threads hammering one path while it is replaced: every copy is one
 * whole version of the file, and the last version wins. */
struct hammer {
	const char *path;
	atomic_int bad;
	atomic_bool stop;
};

static void *hammer_fn(void *arg)
{
	struct hammer *h = arg;

	/* at least 3000 calls, and on until the last rename is done */
	for (int k = 0; k < 3000 || !atomic_load(&h->stop); k++) {
		struct ag_conf c;
		int rc = ag_conf_cached(&c, h->path, NULL, NULL);
		bool a = c.ipv4_prefix == 20 && c.trusted.n == 1;
		bool b = c.ipv4_prefix == 21 && c.trusted.n == 2;
		if (rc != 0 || c.load_errno != 0 || !(a || b))
			atomic_fetch_add(&h->bad, 1);
		ag_conf_free(&c);
	}
	return NULL;
}

static void test_cache_threads(void **state)
{
	struct fx *f = *state;
	static const char *const text[] = {
		"ipv4_prefix = 20\ntrusted = 192.0.2.0/24\n",
		"ipv4_prefix = 21\ntrusted = 192.0.2.0/24, 198.51.100.0/24\n",
	};
	struct hammer h = { .path = f->path };
	pthread_t t[4];
	char tmp[400];

	snprintf(tmp, sizeof(tmp), "%s.new", f->path);
	write_file(f->path, text[0], strlen(text[0]));
	for (size_t i = 0; i < AG_ARRAY_LEN(t); i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_fn, &h), 0);
	for (int k = 1; k <= 200; k++) {
		write_file(tmp, text[k % 2], strlen(text[k % 2]));
		assert_int_equal(rename(tmp, f->path), 0);
	}
	atomic_store(&h.stop, true);
	for (size_t i = 0; i < AG_ARRAY_LEN(t); i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(atomic_load(&h.bad), 0);
	assert_int_equal(cached(f, f->path), 0);
	assert_int_equal(f->c.ipv4_prefix, 20); /* k = 200 */
	assert_int_equal(f->cap.n, 0);
}

static void test_apply_args(void **state)
{
	struct fx *f = *state;
	char longarg[300];
	const char *argv[] = {
		"preauth",                              /* a flag: ignored */
		"mode=log-only",
		"tarpit_max=61s",                       /* error */
		"conf=/nonexistent/authguard.conf",     /* the caller's: ignored */
		"ipv4_prefix=16",
		"debug",
		"trusted=192.0.2.0/24,198.51.100.7",
		"=x",                                   /* error: empty key */
		"bogus=1",                              /* error */
		"fail_open=no=yes",                     /* error: value "no=yes" */
		"tarpit_free=",                         /* error: empty value */
		longarg,                                /* error: unknown long key */
		"log=file:/var/log/ag.log",
		"",
	};

	memset(longarg, 'k', sizeof(longarg) - 3);
	strcpy(longarg + sizeof(longarg) - 3, "=1");

	int rc = ag_conf_apply_args(&f->c, (int)AG_ARRAY_LEN(argv), argv, capture, &f->cap);
	assert_int_equal(rc, 6);
	assert_int_equal(f->cap.n, 6);
	assert_int_equal(f->c.mode, AG_MODE_LOG_ONLY);
	assert_true(f->c.tarpit_max == 15 * SEC);
	assert_int_equal(f->c.ipv4_prefix, 16);
	assert_dump_value(&f->c, "trusted", "192.0.2.0/24, 198.51.100.7");
	assert_int_equal(f->c.fail_open, 1);
	assert_int_equal(f->c.tarpit_free, 3);
	assert_int_equal(f->c.log_kind, AG_LOG_FILE);
	assert_string_equal(f->c.log_path, "/var/log/ag.log");

	static const char *const want[] = {
		"argument 'tarpit_max=61s': tarpit_max must be a duration",
		"argument '=x': unknown key ''",
		"argument 'bogus=1': unknown key 'bogus'",
		"argument 'fail_open=no=yes': fail_open must be yes or no",
		"argument 'tarpit_free=': tarpit_free must be a whole number",
		"argument 'kkkk",
	};
	for (size_t i = 0; i < AG_ARRAY_LEN(want); i++) {
		if (strncmp(f->cap.msg[i], want[i], strlen(want[i])) != 0)
			print_error("report %zu: '%s'\n", i, f->cap.msg[i]);
		assert_memory_equal(f->cap.msg[i], want[i], strlen(want[i]));
	}
	/* nothing reported mentions the ignored words */
	for (int i = 0; i < f->cap.n; i++) {
		assert_null(strstr(f->cap.msg[i], "preauth"));
		assert_null(strstr(f->cap.msg[i], "conf=/nonexistent"));
		assert_null(strstr(f->cap.msg[i], "debug"));
	}
	/* the long argument is cut in its message */
	assert_true(strlen(f->cap.msg[5]) < 400);

	/* arguments override earlier values, and later arguments win */
	const char *over[] = { "mode=enforce", "ipv4_prefix=20", "ipv4_prefix=28",
			       "trusted=203.0.113.1" };
	assert_int_equal(ag_conf_apply_args(&f->c, 4, over, NULL, NULL), 0);
	assert_int_equal(f->c.mode, AG_MODE_ENFORCE);
	assert_int_equal(f->c.ipv4_prefix, 28);
	assert_dump_value(&f->c, "trusted", "203.0.113.1");

	/* errors are counted without a callback; nothing at all is fine */
	const char *bad[] = { "mode=x", "ipv6_prefix=1" };
	assert_int_equal(ag_conf_apply_args(&f->c, 2, bad, NULL, NULL), 2);
	assert_int_equal(ag_conf_apply_args(&f->c, 0, NULL, NULL, NULL), 0);
	assert_int_equal(f->c.mode, AG_MODE_ENFORCE);
}

/* ---- copy and free -------------------------------------------------------- */

static bool conf_matches(const struct ag_conf *c, const char *s)
{
	struct ag_addr a;

	assert_int_equal(ag_addr_parse(s, strlen(s), &a), 0);
	return ag_cidrs_match(&c->trusted, &a);
}

static void test_copy(void **state)
{
	struct fx *f = *state;
	struct ag_conf *src = malloc(sizeof(*src)), copy;
	char err[256];

	(void)f;
	assert_non_null(src);
	ag_conf_init(src);
	assert_int_equal(ag_conf_set(src, "trusted", "192.0.2.0/24, 2001:db8::/32", err,
				     sizeof(err)), 0);
	assert_int_equal(ag_conf_set(src, "proxies", "198.51.100.7", err, sizeof(err)), 0);
	assert_int_equal(ag_conf_set(src, "deny", "203.0.113.0/24", err, sizeof(err)), 0);
	assert_int_equal(ag_conf_set(src, "mode", "log-only", err, sizeof(err)), 0);
	assert_int_equal(ag_conf_set(src, "log", "file:/var/log/x.log", err, sizeof(err)), 0);
	char *d_src = dump(src);

	memset(&copy, CANARY, sizeof(copy));
	assert_int_equal(ag_conf_copy(&copy, src), 0);
	assert_true(copy.trusted.v != src->trusted.v);
	assert_true(copy.proxies.v != src->proxies.v);
	assert_true(copy.deny.v != src->deny.v);

	/* free (and scribble over) the original: the copy still works */
	ag_conf_free(src);
	memset(src, 0x5a, sizeof(*src));
	free(src);
	char *d_copy = dump(&copy);
	assert_string_equal(d_copy, d_src);
	assert_true(conf_matches(&copy, "192.0.2.9"));
	assert_true(conf_matches(&copy, "2001:db8::9"));
	assert_false(conf_matches(&copy, "198.51.100.7"));

	/* the copy is a full conf: it can be changed and copied again */
	assert_int_equal(ag_conf_set(&copy, "trusted", "10.0.0.0/8", err, sizeof(err)), 0);
	struct ag_conf copy2;
	assert_int_equal(ag_conf_copy(&copy2, &copy), 0);
	assert_int_equal(ag_conf_set(&copy, "deny", "", err, sizeof(err)), 0);
	assert_int_equal(copy2.deny.n, 1);
	assert_int_equal(copy2.trusted.n, 1);
	ag_conf_free(&copy2);

	/* a copy of the defaults has empty lists */
	struct ag_conf def, def_copy;
	ag_conf_init(&def);
	assert_int_equal(ag_conf_copy(&def_copy, &def), 0);
	assert_int_equal(def_copy.trusted.n, 0);
	char *a = dump(&def), *b = dump(&def_copy);
	assert_string_equal(a, b);
	free(a);
	free(b);
	ag_conf_free(&def_copy);
	ag_conf_free(&def);

	/* free twice, then init again: harmless */
	ag_conf_free(&copy);
	ag_conf_free(&copy);
	assert_int_equal(copy.trusted.n, 0);
	ag_conf_init(&copy);
	assert_int_equal(copy.mode, AG_MODE_ENFORCE);
	ag_conf_free(&copy);
	free(d_src);
	free(d_copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults_documented, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defaults_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_keys, setup, teardown),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_format_duration),
		cmocka_unit_test(test_conf_set),
		cmocka_unit_test(test_conf_set_messages),
		cmocka_unit_test(test_prefix_levels_old_keys),
		cmocka_unit_test(test_conf_set_bool),
		cmocka_unit_test_setup_teardown(test_conf_set_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conf_set_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_strip_domains_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sentinels_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_policyd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_nul, setup, teardown),
		cmocka_unit_test_setup_teardown(test_messages_control_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_unreadable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_unchanged, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_cache_edits, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_cache_missing, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_cache_bounded, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_cache_threads, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_cache_read_error_retried, cache_setup, cache_teardown),
		cmocka_unit_test_setup_teardown(test_apply_args, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
