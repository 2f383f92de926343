/*
 * fuzz_conf.c - libFuzzer harness for the config parser (store/conf.c).
 *
 * The input is a config file. Checked:
 *  - ag_conf_load() on it: every report is one "PATH:LINE: message" with
 *    LINE a line of the input and no control bytes; one report per error
 *    counted in the return value; every key ends within its documented
 *    range (the checks below restate README's table, not conf.c's);
 *  - ag_user_strip() on the input as a user name with the loaded
 *    user_strip_domains: the whole name, or a prefix ending at an '@';
 *  - the dump of the loaded config (ag_conf_dump) is itself a clean config
 *    that loads back to the same values;
 *  - ag_conf_set() with the input split at the first '=': on error a
 *    message without control bytes and the config untouched, never a write
 *    past a small error buffer; on success a config within range;
 *  - ag_conf_apply_args() with the input's lines as module arguments;
 *  - ag_parse_duration() / ag_parse_size() on the input as a C string:
 *    a value only for digits plus a known unit, never negative, and a
 *    duration formats (ag_format_duration) to text that parses back.
 * Nothing may leak (LeakSanitizer runs at the end of each input).
 */
#include "config.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "record.h"

#define SEC 1000LL
#define DAY (86400LL * SEC)

static char path_in[64], path_dump[64];
static FILE *devnull;

static void cleanup(void)
{
	unlink(path_in);
	unlink(path_dump);
}

static void setup(void)
{
	if (path_in[0] != '\0')
		return;
	snprintf(path_in, sizeof(path_in), "/tmp/authguard-fuzz-conf.%ld", (long)getpid());
	snprintf(path_dump, sizeof(path_dump), "/tmp/authguard-fuzz-dump.%ld", (long)getpid());
	devnull = fopen("/dev/null", "we");
	CHECK(devnull != NULL, "cannot open /dev/null");
	atexit(cleanup);
}

static void write_file(const char *path, const void *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "cannot create %s", path);
	for (size_t off = 0; off < size;) {
		ssize_t n = write(fd, (const char *)data + off, size - off);
		CHECK(n > 0, "cannot write %s", path);
		off += (size_t)n;
	}
	CHECK(close(fd) == 0, "cannot close %s", path);
}

static void check_text(const char *msg, const char *what)
{
	for (const char *p = msg; *p != '\0'; p++)
		CHECK((unsigned char)*p >= 0x20 && *p != 0x7f,
		      "%s: control byte 0x%02x in message '%s'", what, (unsigned char)*p, msg);
}

struct report_ctx {
	const char *path;
	unsigned max_line;
	int count;
};

/* "PATH:LINE: message", LINE within the file, no control bytes. */
static void load_report(void *ctxp, const char *msg)
{
	struct report_ctx *ctx = ctxp;
	size_t plen = strlen(ctx->path);

	check_text(msg, "load report");
	CHECK(strncmp(msg, ctx->path, plen) == 0 && msg[plen] == ':',
	      "report does not start with 'PATH:': '%s'", msg);
	const char *p = msg + plen + 1;
	unsigned long line = 0;
	size_t digits = 0;
	while (*p >= '0' && *p <= '9' && digits < 12) {
		line = line * 10 + (unsigned long)(*p - '0');
		p++;
		digits++;
	}
	CHECK(digits > 0 && p[0] == ':' && p[1] == ' ' && p[2] != '\0',
	      "report is not 'PATH:LINE: message': '%s'", msg);
	CHECK(line >= 1 && line <= ctx->max_line, "report names line %lu of a %u-line file: '%s'",
	      line, ctx->max_line, msg);
	ctx->count++;
}

static void args_report(void *ctxp, const char *msg)
{
	struct report_ctx *ctx = ctxp;

	check_text(msg, "argument report");
	CHECK(strncmp(msg, "argument '", 10) == 0, "argument report: '%s'", msg);
	ctx->count++;
}

static void check_dur(int64_t v, int64_t lo, int64_t hi, const char *name)
{
	CHECK(v >= lo && v <= hi, "%s = %lld outside [%lld, %lld]", name, (long long)v,
	      (long long)lo, (long long)hi);
}

static void check_cidrs(const struct ag_cidrs *l, const char *name)
{
	CHECK(l->n <= l->cap && (l->n == 0 || l->v != NULL), "%s: broken list", name);
	for (size_t i = 0; i < l->n; i++) {
		const struct ag_addr *a = &l->v[i];
		unsigned w = ag_addr_width(a);
		CHECK(w != 0 && a->plen <= w, "%s[%zu]: family %u plen %u", name, i, a->family,
		      a->plen);
		struct ag_addr m;
		ag_addr_prefix(a, a->plen, &m);
		CHECK(memcmp(&m, a, sizeof(m)) == 0, "%s[%zu]: host bits set", name, i);
	}
}

/* Every key within the range README documents. */
static void check_conf(const struct ag_conf *c)
{
	CHECK(memchr(c->db_dir, '\0', sizeof(c->db_dir)) != NULL && c->db_dir[0] == '/',
	      "db_dir not an absolute path");
	check_dur(c->db_max_size, 8LL << 20, 1LL << 40, "db_max_size");
	CHECK(c->mode <= AG_MODE_LOG_ONLY, "mode = %u", c->mode);
	CHECK(c->fail_open <= 1, "fail_open = %u", c->fail_open);
	CHECK(c->log_kind <= AG_LOG_NONE, "log kind = %u", c->log_kind);
	CHECK(memchr(c->log_path, '\0', sizeof(c->log_path)) != NULL, "log path unterminated");
	if (c->log_kind == AG_LOG_FILE)
		CHECK(c->log_path[0] == '/', "log file not an absolute path");
	check_dur(c->decay_half_life, SEC, 365 * DAY, "decay_half_life");
	check_dur(c->tarpit_free, 0, 1000000, "tarpit_free");
	check_dur(c->tarpit_base, 0, 60 * SEC, "tarpit_base");
	check_dur(c->tarpit_max, 0, 60 * SEC, "tarpit_max");
	check_dur(c->tarpit_slots, 0, 100000, "tarpit_slots");
	check_dur(c->ip_ban_after, 0, 1000000, "ip_ban_after");
	check_dur(c->ip_ban_time, SEC, 365 * DAY, "ip_ban_time");
	check_dur(c->ip_ban_max, SEC, 365 * DAY, "ip_ban_max");
	check_dur(c->net_ban_after, 0, 1000000, "net_ban_after");
	check_dur(c->ipv4_prefix, 8, 32, "ipv4_prefix");
	check_dur(c->ipv6_prefix, 16, 128, "ipv6_prefix");
	check_dur(c->spray_users, 0, 1000000, "spray_users");
	check_dur(c->user_lock_after, 0, 1000000, "user_lock_after");
	check_dur(c->user_lock_time, SEC, 365 * DAY, "user_lock_time");
	check_dur(c->familiar_ttl, SEC, 3650 * DAY, "familiar_ttl");
	CHECK(c->user_fold <= 1, "user_fold = %u", c->user_fold);
	check_cidrs(&c->trusted, "trusted");
	check_cidrs(&c->proxies, "proxies");
	check_cidrs(&c->deny, "deny");
}

static bool cidrs_eq(const struct ag_cidrs *x, const struct ag_cidrs *y)
{
	return x->n == y->n && (x->n == 0 || memcmp(x->v, y->v, x->n * sizeof(*x->v)) == 0);
}

/* Every value the config holds (not the bookkeeping). */
static bool strlist_eq(const struct ag_strlist *x, const struct ag_strlist *y)
{
	if (x->n != y->n)
		return false;
	for (size_t i = 0; i < x->n; i++)
		if (strcmp(x->v[i], y->v[i]) != 0)
			return false;
	return true;
}

/* ag_user_strip() on the input as a user name, with the loaded domains:
 * it keeps a prefix that ends before an '@', or the whole name. */
static void check_strip(const struct ag_conf *c, const uint8_t *data, size_t size)
{
	for (int fold = 0; fold < 2; fold++) {
		size_t n = ag_user_strip(fold, (const char *)data, size, c->user_strip_domains.v,
					 c->user_strip_domains.n);
		CHECK(n == size || (n > 0 && n < size && data[n] == '@'),
		      "ag_user_strip kept %zu of %zu bytes", n, size);
	}
}

static bool conf_eq(const struct ag_conf *x, const struct ag_conf *y)
{
	return strcmp(x->db_dir, y->db_dir) == 0 && x->db_max_size == y->db_max_size &&
	       x->mode == y->mode && x->fail_open == y->fail_open && x->log_kind == y->log_kind &&
	       (x->log_kind != AG_LOG_FILE || strcmp(x->log_path, y->log_path) == 0) &&
	       x->decay_half_life == y->decay_half_life && x->tarpit_free == y->tarpit_free &&
	       x->tarpit_base == y->tarpit_base && x->tarpit_max == y->tarpit_max &&
	       x->tarpit_slots == y->tarpit_slots && x->ip_ban_after == y->ip_ban_after &&
	       x->ip_ban_time == y->ip_ban_time && x->ip_ban_max == y->ip_ban_max &&
	       x->net_ban_after == y->net_ban_after && x->ipv4_prefix == y->ipv4_prefix &&
	       x->ipv6_prefix == y->ipv6_prefix && x->spray_users == y->spray_users &&
	       x->user_lock_after == y->user_lock_after && x->user_lock_time == y->user_lock_time &&
	       x->familiar_ttl == y->familiar_ttl && x->user_fold == y->user_fold &&
	       strlist_eq(&x->user_strip_domains, &y->user_strip_domains) &&
	       cidrs_eq(&x->trusted, &y->trusted) && cidrs_eq(&x->proxies, &y->proxies) &&
	       cidrs_eq(&x->deny, &y->deny);
}

/* The dump of @c is a clean config file that loads back to @c. A list too
 * long for one config line (4095 bytes) cannot be written back, so the
 * round trip is skipped for it. */
static void check_dump(const struct ag_conf *c)
{
	FILE *f = fopen(path_dump, "we");
	CHECK(f != NULL, "cannot create %s", path_dump);
	ag_conf_dump(c, f);
	CHECK(fclose(f) == 0, "cannot write %s", path_dump);

	f = fopen(path_dump, "re");
	CHECK(f != NULL, "cannot read %s", path_dump);
	char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	bool whole = feof(f);
	fclose(f);
	if (!whole)
		return;
	buf[n] = '\0';
	CHECK(memchr(buf, '\0', n) == NULL, "NUL byte in dump");
	unsigned lines = 0;
	for (char *p = buf, *nl; *p != '\0'; p = nl + 1) {
		nl = strchr(p, '\n');
		CHECK(nl != NULL, "dump does not end with a newline");
		if (nl - p >= 4000)
			return;
		*nl = '\0';
		CHECK(strstr(p, " = ") != NULL && strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
			(size_t)(strstr(p, " = ") - p), "dump line '%s' is not 'key = value'", p);
		*nl = '\n';
		lines++;
	}
	CHECK(lines > 0, "empty dump");

	struct ag_conf back;
	struct report_ctx rc = { path_dump, lines, 0 };
	ag_conf_init(&back);
	int errors = ag_conf_load(&back, path_dump, load_report, &rc);
	CHECK(errors == 0, "the dump does not load cleanly (%d errors)", errors);
	CHECK(conf_eq(&back, c), "the dump loads back to a different config");
	ag_conf_free(&back);
}

static void check_set(struct ag_conf *c, const char *key, const char *value)
{
	static const size_t errlens[] = { 512, 16, 1 };

	for (size_t i = 0; i < sizeof(errlens) / sizeof(errlens[0]); i++) {
		struct ag_conf before = *c;
		char *err = malloc(errlens[i]); /* exact size: ASan sees an overrun */
		CHECK(err != NULL, "out of memory");
		memset(err, 'x', errlens[i]);
		err[errlens[i] - 1] = '\0';
		int rc = ag_conf_set(c, key, value, err, errlens[i]);
		if (rc != 0) {
			CHECK(rc == AG_ECONF, "ag_conf_set returned %d", rc);
			CHECK(memchr(err, '\0', errlens[i]) != NULL, "error not NUL-terminated");
			check_text(err, "ag_conf_set error");
			CHECK(memcmp(&before, c, sizeof(before)) == 0,
			      "a failed ag_conf_set changed the config");
		}
		free(err);
		check_conf(c);
	}
}

static void check_numbers(const char *s)
{
	int64_t v = -12345;
	int rc = ag_parse_duration(s, &v);

	if (rc == 0) {
		char text[64];
		int64_t back = -1;
		CHECK(s[0] >= '0' && s[0] <= '9', "duration '%s' accepted", s);
		CHECK(v >= 0, "duration '%s' = %lld", s, (long long)v);
		ag_format_duration(v, text, sizeof(text));
		CHECK(ag_parse_duration(text, &back) == 0 && back == v,
		      "duration %lld formats as '%s', which does not parse back", (long long)v, text);
	} else {
		CHECK(rc == AG_EINVAL || rc == AG_ERANGE, "ag_parse_duration returned %d", rc);
	}
	v = -12345;
	rc = ag_parse_size(s, &v);
	if (rc == 0) {
		CHECK(s[0] >= '0' && s[0] <= '9', "size '%s' accepted", s);
		CHECK(v >= 0, "size '%s' = %lld", s, (long long)v);
	} else {
		CHECK(rc == AG_EINVAL || rc == AG_ERANGE, "ag_parse_size returned %d", rc);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ag_conf c;

	setup();

	/* the whole input as a config file */
	unsigned lines = 0;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (size > 0 && data[size - 1] != '\n')
		lines++;
	write_file(path_in, data, size);
	struct report_ctx rctx = { path_in, lines, 0 };
	ag_conf_init(&c);
	check_conf(&c);
	int errors = ag_conf_load(&c, path_in, load_report, &rctx);
	CHECK(errors >= 0, "ag_conf_load returned %d on a readable file", errors);
	CHECK(errors == rctx.count, "%d errors returned, %d reported", errors, rctx.count);
	check_conf(&c);
	check_strip(&c, data, size);
	ag_conf_dump(&c, devnull);
	/* the round trip reads a second file: only when it can tell something */
	struct ag_conf defaults;
	ag_conf_init(&defaults);
	if (!conf_eq(&c, &defaults) || size == 0)
		check_dump(&c);
	ag_conf_free(&defaults);

	struct ag_conf copy;
	CHECK(ag_conf_copy(&copy, &c) == 0 && conf_eq(&copy, &c), "copy differs");
	ag_conf_free(&copy);
	ag_conf_free(&c);

	/* split at the first '=' into one key and value */
	char *s = fuzz_strdup(data, size);
	char *eq = strchr(s, '=');
	ag_conf_init(&c);
	if (eq != NULL) {
		*eq = '\0';
		check_set(&c, s, eq + 1);
		*eq = '=';
	} else {
		check_set(&c, s, "");
	}

	/* the lines as module arguments "key=value" */
	const char *argv[64];
	int argc = 0;
	for (char *p = s; argc < 64;) {
		argv[argc++] = p;
		char *nl = strchr(p, '\n');
		if (nl == NULL)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	struct report_ctx actx = { "", 0, 0 };
	errors = ag_conf_apply_args(&c, argc, argv, args_report, &actx);
	CHECK(errors == actx.count, "%d argument errors returned, %d reported", errors, actx.count);
	check_conf(&c);
	ag_conf_dump(&c, devnull);
	ag_conf_free(&c);
	free(s);

	/* durations and sizes on the input as a C string */
	s = fuzz_strdup(data, size);
	check_numbers(s);
	free(s);
	return 0;
}
