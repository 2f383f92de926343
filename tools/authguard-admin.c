/*
 * authguard-admin - see and undo what the guard did: list, show, unban,
 * unlock, ban, forget, run-time lists, firewall export, stats, gc, config.
 *
 * Every rule lives in the core library; this file parses arguments and
 * prints. Exit status: 0 ok, 1 usage or bad argument, 2 not found,
 * 3 store error, 4 configuration errors (see authguard-admin(8)).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "counters.h"
#include "guard.h"
#include "log.h"
#include "sync.h"

enum { EX_OK = 0, EX_USAGE = 1, EX_NOTFOUND = 2, EX_STORE = 3, EX_CONFIG = 4 };
/* check's verdicts (authguard-admin(8)) */
enum { EX_DELAY = 5, EX_REFUSE = 6 };

struct ctx {
	struct ag_conf c;
	struct ag_store *s;
	int64_t now;
	bool json;
	int conf_errors;
	const char *conf_path;
	bool no_store; /* none yet: read-only commands see an empty one */
};

/* ---- small helpers --------------------------------------------------------- */

static int die_store(const struct ctx *x, int rc, const char *what)
{
	const char *detail = ag_store_detail();

	fprintf(stderr, "authguard-admin: %s: %s%s%s (db_dir %s)\n", what, ag_strerror(rc),
		detail[0] != '\0' ? ": " : "", detail, x->c.db_dir);
	return EX_STORE;
}

static void fmt_time(int64_t ms, char *buf, size_t len)
{
	if (ms <= 0)
		snprintf(buf, len, "-");
	else
		ag_log_time(ms, buf, len);
}

/* Time left, for people: "2d03h", "1h05m", "4m09s", "12s". */
static void fmt_left(int64_t ms, char *buf, size_t len)
{
	int64_t s = (ms + 999) / 1000;

	if (ms <= 0)
		snprintf(buf, len, "-");
	else if (s >= 86400)
		snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
	else if (s >= 60)
		snprintf(buf, len, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
	else
		snprintf(buf, len, "%llds", (long long)s);
}

/* A user key for people: the name, escaped like the log; a long name's
 * key keeps its first 184 bytes. */
static void fmt_user(const uint8_t *k, size_t n, char *buf, size_t len)
{
	bool hashed = n == AG_USER_KEY_MAX && k[184] == 0;
	size_t w = ag_log_quote(buf, len, (const char *)k, hashed ? 184 : n, 4096);

	if (hashed && w + 12 < len)
		snprintf(buf + w, len - w, "...");
}

static void json_bytes(const uint8_t *p, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned ch = p[i];
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar((int)ch);
	}
	putchar('"');
}

static void json_str(const char *s)
{
	json_bytes((const uint8_t *)s, strlen(s));
}

static void json_user(const uint8_t *k, size_t n)
{
	bool hashed = n == AG_USER_KEY_MAX && k[184] == 0;
	json_bytes(k, hashed ? 184 : n);
	if (hashed)
		printf(", \"user_truncated\": true");
}

/* ADDRESS or PREFIX as an admin types it: "192.0.2.7", "[2001:db8::1]",
 * "192.0.2.0/24". */
static int parse_target(const char *arg, struct ag_addr *a)
{
	if (ag_addr_parse(arg, strlen(arg), a) == 0)
		return 0;
	if (ag_cidr_parse(arg, true, a) == 0)
		return 0;
	fprintf(stderr, "authguard-admin: '%s' is not an address or a prefix with its host bits clear\n",
		arg);
	return EX_USAGE;
}

static int parse_for(const char *arg, int64_t *ms)
{
	if (ag_parse_duration(arg, ms) != 0 || *ms <= 0) {
		fprintf(stderr, "authguard-admin: bad duration '%s' (examples: 90s, 30m, 2h, 7d)\n", arg);
		return EX_USAGE;
	}
	return 0;
}

/* True when there is no store yet: db_dir does not exist. (A directory
 * made in advance is opened, which makes the files in it as the module
 * would, or says what is wrong with it; any other stat() failure is left
 * to ag_store_get() to report.) */
static bool store_missing(const struct ctx *x)
{
	struct stat st;

	return stat(x->c.db_dir, &st) != 0 && errno == ENOENT;
}

/* Open the store. A command that writes creates a missing one exactly as
 * the module does (ag_store_get(): the directory 0700 if missing, its
 * parent must exist; the files 0660 less the umask, group-writable in a
 * shared directory), and says so. A command that only reads finds a
 * missing store empty, which is the truth before the first login: it
 * creates nothing (x->no_store; x->s stays NULL) and says so on stderr. */
static int open_store(struct ctx *x, bool write)
{
	struct stat st;

	if (x->s != NULL || x->no_store)
		return 0;
	if (!write && store_missing(x)) {
		x->no_store = true;
		fprintf(stderr, "authguard-admin: no store yet at %s: nothing is recorded so far "
				"(the module creates it at the first attempt)\n", x->c.db_dir);
		return 0;
	}
	bool new_dir = stat(x->c.db_dir, &st) != 0 && errno == ENOENT;
	int rc = ag_store_get(x->c.db_dir, &x->s);
	if (rc != 0)
		return die_store(x, rc, "cannot open the store");
	if (new_dir)
		fprintf(stderr, "authguard-admin: created a new store at %s (mode 0700, owned by uid %lu, "
				"as the module would; services under other accounts need the layout of "
				"SECURITY.md section 1)\n", x->c.db_dir, (unsigned long)geteuid());
	return 0;
}

/* Begin a transaction; *t is NULL (and the result 0) for a read-only
 * one when there is no store yet (open_store()): callers read nothing. */
static int begin(struct ctx *x, bool write, struct ag_txn **t)
{
	int rc = open_store(x, write);

	*t = NULL;
	if (rc != 0 || x->no_store)
		return rc;
	rc = ag_txn_begin(x->s, write, t);
	return rc != 0 ? die_store(x, rc, "cannot begin a transaction") : 0;
}

/* Begin a write transaction that undoes something (unban, unlock,
 * forget): without a store there is nothing to undo, and none is made
 * for it (*t NULL, result 0: the caller says "not found"). */
static int begin_undo(struct ctx *x, struct ag_txn **t)
{
	int rc = open_store(x, false);

	*t = NULL;
	if (rc != 0 || x->no_store)
		return rc;
	return begin(x, true, t);
}

static int commit(struct ctx *x, struct ag_txn *t)
{
	int rc = ag_txn_commit(t);
	return rc != 0 ? die_store(x, rc, "cannot write") : 0;
}

static const char *list_name(enum ag_list l)
{
	return l == AG_LIST_ALLOW ? "allow" : l == AG_LIST_PROXY ? "proxy" : "deny";
}

/* ---- list ------------------------------------------------------------------ */

struct rows {
	struct ctx *x;
	int n;
	enum { R_BANS, R_LOCKS, R_SOURCES, R_USERS } what;
};

static void row_sep(struct rows *r)
{
	if (r->x->json)
		printf("%s\n  ", r->n == 0 ? "[" : ",");
	r->n++;
}

static void src_row(void *vp, const struct ag_addr *a, const struct ag_src_rec *s)
{
	struct rows *r = vp;
	struct ctx *x = r->x;
	char addr[AG_ADDR_STRLEN], until[40], left[32], seen[40];
	bool banned = ag_src_banned(s, x->now);
	bool host = a->plen == ag_addr_width(a);
	double fails = ag_score_at(&s->fails, x->now, x->c.decay_half_life);

	if (r->what == R_BANS && !banned)
		return;
	ag_addr_format(a, addr, sizeof(addr));
	fmt_time(banned ? s->ban_until : 0, until, sizeof(until));
	fmt_left(banned ? s->ban_until - x->now : 0, left, sizeof(left));
	fmt_time(s->last_seen, seen, sizeof(seen));
	const char *why = ag_reason_name((enum ag_reason)s->ban_reason);
	row_sep(r);
	if (x->json) {
		printf("{\"target\": \"%s\", \"kind\": \"%s\", \"banned\": %s, \"reason\": \"%s\", "
		       "\"until\": \"%s\", \"until_ms\": %lld, \"ban_count\": %u, \"failures\": %.2f, "
		       "\"spray\": %.2f, \"n_fail\": %llu, \"n_success\": %llu, \"n_refused\": %llu, "
		       "\"last_seen\": \"%s\"}",
		       addr, host ? "host" : "net", banned ? "true" : "false", banned ? why : "none",
		       until, (long long)(banned ? s->ban_until : 0), s->ban_count, fails,
		       ag_score_at(&s->spray, x->now, x->c.decay_half_life),
		       (unsigned long long)s->n_fail, (unsigned long long)s->n_success,
		       (unsigned long long)s->n_refused, seen);
		return;
	}
	if (r->what == R_BANS) {
		if (r->n == 1)
			printf("%-40s %-5s %-9s %-25s %-8s %5s %8s\n", "TARGET", "KIND", "REASON", "UNTIL",
			       "LEFT", "BANS", "FAILS");
		printf("%-40s %-5s %-9s %-25s %-8s %5u %8.1f\n", addr, host ? "host" : "net", why, until,
		       left, s->ban_count, fails);
	} else {
		if (r->n == 1)
			printf("%-40s %-5s %8s %8s %8s %8s %-7s %s\n", "TARGET", "KIND", "FAILS", "N_FAIL",
			       "N_OK", "REFUSED", "STATE", "LAST_SEEN");
		printf("%-40s %-5s %8.1f %8llu %8llu %8llu %-7s %s\n", addr, host ? "host" : "net", fails,
		       (unsigned long long)s->n_fail, (unsigned long long)s->n_success,
		       (unsigned long long)s->n_refused, banned ? "banned" : "ok", seen);
	}
}

static void timed_ban_row(void *vp, const struct ag_list_entry *e)
{
	struct rows *r = vp;
	struct ctx *x = r->x;
	char addr[AG_ADDR_STRLEN], until[40], left[32];

	if (e->expires == 0 || e->expires <= x->now)
		return;
	ag_addr_format(&e->net, addr, sizeof(addr));
	fmt_time(e->expires, until, sizeof(until));
	fmt_left(e->expires - x->now, left, sizeof(left));
	row_sep(r);
	if (x->json) {
		printf("{\"target\": \"%s\", \"kind\": \"admin\", \"banned\": true, \"reason\": \"admin\", "
		       "\"until\": \"%s\", \"until_ms\": %lld, \"ban_count\": 0, \"failures\": 0}",
		       addr, until, (long long)e->expires);
		return;
	}
	if (r->n == 1)
		printf("%-40s %-5s %-9s %-25s %-8s %5s %8s\n", "TARGET", "KIND", "REASON", "UNTIL",
		       "LEFT", "BANS", "FAILS");
	printf("%-40s %-5s %-9s %-25s %-8s %5s %8s\n", addr, "admin", "admin", until, left, "-", "-");
}

static void user_row(void *vp, const uint8_t *k, size_t n, const struct ag_user_rec *u)
{
	struct rows *r = vp;
	struct ctx *x = r->x;
	char name[4 * 256], until[40], left[32], seen[40];
	bool locked = ag_user_locked(u, x->now);
	double fails = ag_score_at(&u->fails, x->now, x->c.decay_half_life);

	if (r->what == R_LOCKS && !locked)
		return;
	fmt_time(locked ? u->lock_until : 0, until, sizeof(until));
	fmt_left(locked ? u->lock_until - x->now : 0, left, sizeof(left));
	fmt_time(u->last_seen, seen, sizeof(seen));
	row_sep(r);
	if (x->json) {
		printf("{\"user\": ");
		json_user(k, n);
		printf(", \"locked\": %s, \"until\": \"%s\", \"until_ms\": %lld, \"lock_count\": %u, "
		       "\"failures\": %.2f, \"n_fail\": %llu, \"n_success\": %llu, \"n_refused\": %llu, "
		       "\"last_seen\": \"%s\"}",
		       locked ? "true" : "false", until, (long long)(locked ? u->lock_until : 0),
		       u->lock_count, fails, (unsigned long long)u->n_fail,
		       (unsigned long long)u->n_success, (unsigned long long)u->n_refused, seen);
		return;
	}
	fmt_user(k, n, name, sizeof(name));
	if (r->what == R_LOCKS) {
		if (r->n == 1)
			printf("%-32s %-25s %-8s %6s %8s\n", "USER", "UNTIL", "LEFT", "LOCKS", "FAILS");
		printf("%-32s %-25s %-8s %6u %8.1f\n", name, until, left, u->lock_count, fails);
	} else {
		if (r->n == 1)
			printf("%-32s %8s %8s %8s %8s %-7s %s\n", "USER", "FAILS", "N_FAIL", "N_OK",
			       "REFUSED", "STATE", "LAST_SEEN");
		printf("%-32s %8.1f %8llu %8llu %8llu %-7s %s\n", name, fails,
		       (unsigned long long)u->n_fail, (unsigned long long)u->n_success,
		       (unsigned long long)u->n_refused, locked ? "locked" : "ok", seen);
	}
}

static int end_rows(struct rows *r, const char *none)
{
	if (r->x->json)
		printf(r->n == 0 ? "[]\n" : "\n]\n");
	else if (r->n == 0)
		printf("%s\n", none);
	return EX_OK;
}

static int cmd_list(struct ctx *x, int argc, char **argv)
{
	struct rows r = { x, 0, R_BANS };
	struct ag_txn *t;
	int rc;

	if (argc != 1) {
		fprintf(stderr, "usage: authguard-admin list bans|locks|sources|users [--json]\n");
		return EX_USAGE;
	}
	if (strcmp(argv[0], "bans") == 0)
		r.what = R_BANS;
	else if (strcmp(argv[0], "locks") == 0)
		r.what = R_LOCKS;
	else if (strcmp(argv[0], "sources") == 0)
		r.what = R_SOURCES;
	else if (strcmp(argv[0], "users") == 0)
		r.what = R_USERS;
	else {
		fprintf(stderr, "authguard-admin: list what? bans, locks, sources or users\n");
		return EX_USAGE;
	}
	if ((rc = begin(x, false, &t)) != 0)
		return rc;
	if (t == NULL) /* no store yet: nothing to list */
		;
	else if (r.what == R_BANS || r.what == R_SOURCES)
		rc = ag_admin_each_src(t, src_row, &r);
	else
		rc = ag_admin_each_user(t, user_row, &r);
	if (t != NULL && rc == 0 && r.what == R_BANS)
		rc = ag_list_each(t, AG_LIST_DENY, timed_ban_row, &r);
	ag_txn_abort(t);
	if (rc != 0)
		return die_store(x, rc, "cannot read");
	static const char *none[] = { "no active bans", "no locked users", "no tracked sources",
				      "no tracked users" };
	return end_rows(&r, none[r.what]);
}

/* ---- show ------------------------------------------------------------------ */

struct member {
	const struct ag_addr *a;
	int64_t now;
	char out[256];
};

static void member_visit(void *vp, const struct ag_list_entry *e)
{
	struct member *m = vp;
	char net[AG_ADDR_STRLEN];
	size_t n = strlen(m->out);

	if ((e->expires != 0 && e->expires <= m->now) || !ag_addr_in(&e->net, m->a))
		return;
	ag_addr_format(&e->net, net, sizeof(net));
	snprintf(m->out + n, sizeof(m->out) - n, "%s%s(%s)", n ? " " : "", list_name(e->list), net);
}

static void show_src(struct ctx *x, const char *label, const struct ag_addr *a,
		     const struct ag_src_rec *s, bool found, bool last)
{
	char addr[AG_ADDR_STRLEN], until[40], first[40], seen[40];
	bool banned = found && ag_src_banned(s, x->now);

	ag_addr_format(a, addr, sizeof(addr));
	fmt_time(banned ? s->ban_until : 0, until, sizeof(until));
	fmt_time(found ? s->first_seen : 0, first, sizeof(first));
	fmt_time(found ? s->last_seen : 0, seen, sizeof(seen));
	if (x->json) {
		printf("  \"%s\": {\"target\": \"%s\", \"tracked\": %s, \"banned\": %s, \"reason\": \"%s\", "
		       "\"until\": \"%s\", \"ban_count\": %u, \"failures\": %.2f, \"spray\": %.2f, "
		       "\"n_fail\": %llu, \"n_success\": %llu, \"n_refused\": %llu, \"first_seen\": \"%s\", "
		       "\"last_seen\": \"%s\"}%s\n",
		       label, addr, found ? "true" : "false", banned ? "true" : "false",
		       banned ? ag_reason_name((enum ag_reason)s->ban_reason) : "none", until,
		       found ? s->ban_count : 0, found ? ag_score_at(&s->fails, x->now, x->c.decay_half_life) : 0,
		       found ? ag_score_at(&s->spray, x->now, x->c.decay_half_life) : 0,
		       (unsigned long long)(found ? s->n_fail : 0), (unsigned long long)(found ? s->n_success : 0),
		       (unsigned long long)(found ? s->n_refused : 0), first, seen, last ? "" : ",");
		return;
	}
	printf("%s %s\n", label, addr);
	if (!found) {
		printf("  not tracked\n");
		return;
	}
	printf("  state:      %s", banned ? "BANNED" : "ok");
	if (banned)
		printf(" (%s) until %s", ag_reason_name((enum ag_reason)s->ban_reason), until);
	printf("\n  bans so far: %u\n", s->ban_count);
	printf("  failures:   %.1f recent (%llu in all), %.1f distinct users recently\n",
	       ag_score_at(&s->fails, x->now, x->c.decay_half_life), (unsigned long long)s->n_fail,
	       ag_score_at(&s->spray, x->now, x->c.decay_half_life));
	printf("  successes:  %llu\n  refused:    %llu\n", (unsigned long long)s->n_success,
	       (unsigned long long)s->n_refused);
	printf("  first seen: %s\n  last seen:  %s\n", first, seen);
}

static int show_addr(struct ctx *x, struct ag_txn *t, const struct ag_addr *a)
{
	struct ag_src_rec host, net;
	struct ag_addr pfx = *a;
	bool is_host = a->plen == ag_addr_width(a);
	struct member m = { a, x->now, "" };
	int rc = AG_ENOTFOUND, rc2 = AG_ENOTFOUND;

	if (is_host)
		ag_addr_prefix(a, a->family == AG_AF_INET ? x->c.ipv4_prefix : x->c.ipv6_prefix, &pfx);
	if (t != NULL) { /* (NULL: no store yet, only the config's lists) */
		rc = ag_admin_get_src(t, a, &host);
		if (rc != 0 && rc != AG_ENOTFOUND && rc != AG_ECORRUPT)
			return die_store(x, rc, "cannot read");
		if (is_host)
			rc2 = ag_admin_get_src(t, &pfx, &net);
		static const enum ag_list all[] = { AG_LIST_ALLOW, AG_LIST_PROXY, AG_LIST_DENY };
		for (size_t i = 0; i < AG_ARRAY_LEN(all); i++)
			ag_list_each(t, all[i], member_visit, &m);
	}
	const char *conf = ag_cidrs_match(&x->c.deny, a) ? "deny" :
			   ag_cidrs_match(&x->c.trusted, a) ? "trusted" :
			   ag_cidrs_match(&x->c.proxies, a) ? "proxies" : "";
	if (rc != 0 && rc2 != 0 && m.out[0] == '\0' && conf[0] == '\0') {
		char s[AG_ADDR_STRLEN];
		ag_addr_format(a, s, sizeof(s));
		fprintf(stderr, "authguard-admin: %s is not in the store or on any list\n", s);
		return EX_NOTFOUND;
	}
	if (x->json)
		printf("{\n");
	show_src(x, is_host ? "address" : "prefix", a, &host, rc == 0, false);
	if (is_host)
		show_src(x, "network", &pfx, &net, rc2 == 0, false);
	if (x->json) {
		printf("  \"lists\": ");
		json_str(m.out);
		printf(",\n  \"config_list\": \"%s\"\n}\n", conf);
	} else {
		if (!m.out[0] && !conf[0])
			printf("lists: none\n");
		else
			printf("lists: %s%s%s%s\n", m.out, m.out[0] && conf[0] ? " " : "",
			       conf[0] ? "config:" : "", conf);
	}
	return EX_OK;
}

struct pairs {
	struct ctx *x;
	int n;
};

/* A pair row: familiarity belongs to the name as the service passed it,
 * which user_fold may file under another user key; each row names it. */
static void pair_row(void *vp, const uint8_t *k, size_t n, const struct ag_addr *src,
		     const struct ag_pair_rec *p)
{
	struct pairs *ps = vp;
	struct ctx *x = ps->x;
	char a[AG_ADDR_STRLEN], until[40], ok[40], name[1024];
	bool fam = p->familiar_until > x->now;

	if (src->family == AG_AF_NONE)
		snprintf(a, sizeof(a), "none");
	else
		ag_addr_format(src, a, sizeof(a));
	fmt_time(fam ? p->familiar_until : 0, until, sizeof(until));
	fmt_time(p->last_success, ok, sizeof(ok));
	if (x->json) {
		printf("%s\n    {\"source\": \"%s\", \"familiar\": %s, \"familiar_until\": \"%s\", "
		       "\"failures\": %.2f, \"last_success\": \"%s\", \"name\": ",
		       ps->n ? "," : "", a, fam ? "true" : "false", until,
		       ag_score_at(&p->fails, x->now, x->c.decay_half_life), ok);
		json_user(k, n);
		printf("}");
	} else {
		if (ps->n == 0)
			printf("  %-40s %-9s %-25s %8s  %-25s %s\n", "SOURCE", "FAMILIAR", "UNTIL",
			       "FAILS", "LAST_SUCCESS", "AS");
		fmt_user(k, n, name, sizeof(name));
		printf("  %-40s %-9s %-25s %8.1f  %-25s %s\n", a, fam ? "yes" : "no", until,
		       ag_score_at(&p->fails, x->now, x->c.decay_half_life), ok, name);
	}
	ps->n++;
}

static int show_user(struct ctx *x, struct ag_txn *t, const char *name)
{
	uint8_t k[AG_USER_KEY_MAX];
	struct ag_user_rec u;
	struct pairs ps = { x, 0 };
	char until[40], first[40], seen[40], esc[1024];
	size_t n = t != NULL ? ag_admin_user_key(x->s, &x->c, name, k) : 0;
	int rc = t != NULL ? ag_admin_get_user(t, k, n, &u) : AG_ENOTFOUND;

	if (rc == AG_ENOTFOUND || rc == AG_ECORRUPT) {
		ag_log_quote(esc, sizeof(esc), name, strlen(name), 200);
		fprintf(stderr, "authguard-admin: no user %s in the store%s\n", esc,
			rc == AG_ECORRUPT ? " (its record is unreadable)" : "");
		return EX_NOTFOUND;
	}
	if (rc != 0)
		return die_store(x, rc, "cannot read");
	bool locked = ag_user_locked(&u, x->now);
	fmt_time(locked ? u.lock_until : 0, until, sizeof(until));
	fmt_time(u.first_seen, first, sizeof(first));
	fmt_time(u.last_seen, seen, sizeof(seen));
	double fails = ag_score_at(&u.fails, x->now, x->c.decay_half_life);
	if (x->json) {
		printf("{\n  \"user\": ");
		json_user(k, n);
		printf(",\n  \"locked\": %s, \"until\": \"%s\", \"lock_count\": %u, \"failures\": %.2f,\n"
		       "  \"n_fail\": %llu, \"n_success\": %llu, \"n_refused\": %llu,\n"
		       "  \"first_seen\": \"%s\", \"last_seen\": \"%s\",\n  \"sources\": [",
		       locked ? "true" : "false", until, u.lock_count, fails,
		       (unsigned long long)u.n_fail, (unsigned long long)u.n_success,
		       (unsigned long long)u.n_refused, first, seen);
	} else {
		fmt_user(k, n, esc, sizeof(esc));
		printf("user %s\n  state:      %s", esc, locked ? "LOCKED for unfamiliar sources" : "ok");
		if (locked)
			printf(" until %s", until);
		printf("\n  locks so far: %u\n", u.lock_count);
		printf("  failures:   %.1f recent from unfamiliar sources (%llu in all)\n", fails,
		       (unsigned long long)u.n_fail);
		printf("  successes:  %llu\n  refused:    %llu\n", (unsigned long long)u.n_success,
		       (unsigned long long)u.n_refused);
		printf("  first seen: %s\n  last seen:  %s\nsources:\n", first, seen);
	}
	rc = ag_admin_each_pair(t, x->c.user_fold, k, n, pair_row, &ps);
	if (x->json)
		printf("%s]\n}\n", ps.n ? "\n  " : "");
	else if (ps.n == 0)
		printf("  (none)\n");
	return rc != 0 ? die_store(x, rc, "cannot read") : EX_OK;
}

static int cmd_show(struct ctx *x, int argc, char **argv)
{
	struct ag_addr a;
	struct ag_txn *t;
	bool as_user = argc == 2 && strcmp(argv[0], "--user") == 0;
	int rc;

	if (argc != 1 && !as_user) {
		fprintf(stderr, "usage: authguard-admin show ADDRESS|PREFIX|USER [--json]\n"
				"       authguard-admin show --user NAME [--json]\n");
		return EX_USAGE;
	}
	const char *arg = argv[argc - 1];
	if ((rc = begin(x, false, &t)) != 0)
		return rc;
	bool is_addr = !as_user && (ag_addr_parse(arg, strlen(arg), &a) == 0 ||
				    ag_cidr_parse(arg, true, &a) == 0);
	rc = is_addr ? show_addr(x, t, &a) : show_user(x, t, arg);
	ag_txn_abort(t);
	return rc;
}

/* ---- changes --------------------------------------------------------------- */

/* In a fleet (sync_redis), the change goes to the outbox in its own
 * transaction, so every host makes it (sync.h). @user: for an action on
 * a user. */
static int fleet(struct ctx *x, struct ag_txn *t, enum ag_sev_kind kind, const struct ag_addr *a,
		 const char *user, int list, int64_t until)
{
	struct ag_sev e = { .kind = (uint8_t)kind, .list = (uint8_t)list, .pw_hash = -1,
			    .time_ms = x->now, .until_ms = until };

	if (a != NULL)
		e.addr = *a;
	if (user != NULL) {
		e.user_len = strnlen(user, AG_SEV_USER_MAX - 1);
		memcpy(e.user, user, e.user_len);
	}
	return ag_sync_admin_local(t, &x->c, &e);
}

static int cmd_unban(struct ctx *x, int argc, char **argv)
{
	struct ag_addr a;
	struct ag_txn *t;
	int rc;

	if (argc != 1) {
		fprintf(stderr, "usage: authguard-admin unban ADDRESS|PREFIX\n");
		return EX_USAGE;
	}
	if ((rc = parse_target(argv[0], &a)) != 0 || (rc = begin_undo(x, &t)) != 0)
		return rc;
	rc = t != NULL ? ag_admin_unban(t, &a, x->now) : AG_ENOTFOUND;
	if (rc == 0)
		rc = fleet(x, t, AG_SEV_UNBAN, &a, NULL, 0, 0);
	if (rc == AG_ENOTFOUND) {
		ag_txn_abort(t);
		fprintf(stderr, "authguard-admin: %s is not banned\n", argv[0]);
		return EX_NOTFOUND;
	}
	if (rc != 0) {
		ag_txn_abort(t);
		return die_store(x, rc, "cannot unban");
	}
	if ((rc = commit(x, t)) != 0)
		return rc;
	printf("unbanned %s\n", argv[0]);
	return EX_OK;
}

static int cmd_unlock(struct ctx *x, int argc, char **argv)
{
	uint8_t k[AG_USER_KEY_MAX];
	struct ag_txn *t;
	char esc[1024];
	int rc;

	if (argc != 1) {
		fprintf(stderr, "usage: authguard-admin unlock USER\n");
		return EX_USAGE;
	}
	if ((rc = begin_undo(x, &t)) != 0)
		return rc;
	if (t != NULL) {
		size_t n = ag_admin_user_key(x->s, &x->c, argv[0], k);
		rc = ag_admin_unlock(t, k, n, x->now);
		if (rc == 0)
			rc = fleet(x, t, AG_SEV_UNLOCK, NULL, argv[0], 0, 0);
	} else {
		rc = AG_ENOTFOUND;
	}
	ag_log_quote(esc, sizeof(esc), argv[0], strlen(argv[0]), 200);
	if (rc == AG_ENOTFOUND || rc == AG_ECORRUPT) {
		ag_txn_abort(t);
		fprintf(stderr, "authguard-admin: user %s is not locked (or not in the store)\n", esc);
		return EX_NOTFOUND;
	}
	if (rc != 0) {
		ag_txn_abort(t);
		return die_store(x, rc, "cannot unlock");
	}
	if ((rc = commit(x, t)) != 0)
		return rc;
	printf("unlocked %s\n", esc);
	return EX_OK;
}

/* Parse trailing "--for DURATION"; returns the count of remaining args. */
static int take_for(int argc, char **argv, int64_t *ms, int *err)
{
	*err = 0;
	if (argc >= 2 && strcmp(argv[argc - 2], "--for") == 0) {
		*err = parse_for(argv[argc - 1], ms);
		return argc - 2;
	}
	return argc;
}

static int cmd_ban(struct ctx *x, int argc, char **argv)
{
	struct ag_list_entry e = { .list = AG_LIST_DENY };
	int64_t dur = x->c.ip_ban_time;
	struct ag_txn *t;
	int err, rc;

	argc = take_for(argc, argv, &dur, &err);
	if (err != 0)
		return err;
	if (argc != 1) {
		fprintf(stderr, "usage: authguard-admin ban ADDRESS|PREFIX [--for DURATION]\n");
		return EX_USAGE;
	}
	if ((rc = parse_target(argv[0], &e.net)) != 0 || (rc = begin(x, true, &t)) != 0)
		return rc;
	e.added = x->now;
	e.expires = x->now + dur;
	rc = ag_list_add(t, &e);
	if (rc == 0)
		rc = fleet(x, t, AG_SEV_LIST_ADD, &e.net, NULL, AG_LIST_DENY, e.expires);
	if (rc != 0) {
		ag_txn_abort(t);
		return die_store(x, rc, "cannot ban");
	}
	if ((rc = commit(x, t)) != 0)
		return rc;
	char until[40], a[AG_ADDR_STRLEN];
	ag_addr_format(&e.net, a, sizeof(a));
	fmt_time(e.expires, until, sizeof(until));
	printf("banned %s until %s\n", a, until);
	return EX_OK;
}

static int cmd_forget(struct ctx *x, int argc, char **argv)
{
	struct ag_addr a;
	struct ag_txn *t;
	long n = 0;
	int rc;

	bool as_user = argc == 2 && strcmp(argv[0], "--user") == 0;
	if (argc != 1 && !as_user) {
		fprintf(stderr, "usage: authguard-admin forget ADDRESS|USER\n"
				"       authguard-admin forget --user NAME\n");
		return EX_USAGE;
	}
	if (as_user)
		argv++;
	if ((rc = begin_undo(x, &t)) != 0)
		return rc;
	if (t == NULL) {
		rc = AG_ENOTFOUND;
	} else if (!as_user &&
	    (ag_addr_parse(argv[0], strlen(argv[0]), &a) == 0 || ag_cidr_parse(argv[0], true, &a) == 0)) {
		rc = ag_admin_forget_addr(t, &a, &n);
		if (rc == 0)
			rc = fleet(x, t, AG_SEV_FORGET_ADDR, &a, NULL, 0, 0);
	} else {
		uint8_t k[AG_USER_KEY_MAX];
		size_t kl = ag_admin_user_key(x->s, &x->c, argv[0], k);
		rc = ag_admin_forget_user(t, x->c.user_fold, k, kl, &n);
		if (rc == 0)
			rc = fleet(x, t, AG_SEV_FORGET_USER, NULL, argv[0], 0, 0);
	}
	if (rc == AG_ENOTFOUND) {
		ag_txn_abort(t);
		fprintf(stderr, "authguard-admin: nothing is recorded for %s\n", argv[0]);
		return EX_NOTFOUND;
	}
	if (rc != 0) {
		ag_txn_abort(t);
		return die_store(x, rc, "cannot forget");
	}
	if ((rc = commit(x, t)) != 0)
		return rc;
	printf("forgot %s (%ld records)\n", argv[0], n);
	return EX_OK;
}

/* ---- run-time lists ---------------------------------------------------------- */

struct lrows {
	struct ctx *x;
	int n;
};

static void list_row(void *vp, const struct ag_list_entry *e)
{
	struct lrows *r = vp;
	char a[AG_ADDR_STRLEN], added[40], exp[40];

	if (e->expires != 0 && e->expires <= r->x->now)
		return;
	ag_addr_format(&e->net, a, sizeof(a));
	fmt_time(e->added, added, sizeof(added));
	fmt_time(e->expires, exp, sizeof(exp));
	if (r->x->json)
		printf("%s\n  {\"list\": \"%s\", \"cidr\": \"%s\", \"added\": \"%s\", \"expires\": \"%s\"}",
		       r->n ? "," : "[", list_name(e->list), a, added, e->expires ? exp : "never");
	else
		printf("%-40s added %s%s%s\n", a, added, e->expires ? ", expires " : "",
		       e->expires ? exp : "");
	r->n++;
}

static int cmd_listop(struct ctx *x, enum ag_list which, int argc, char **argv)
{
	struct ag_list_entry e = { .list = which };
	struct ag_txn *t;
	int64_t dur = 0;
	int err, rc;

	argc = take_for(argc, argv, &dur, &err);
	if (err != 0)
		return err;
	if (argc == 1 && strcmp(argv[0], "list") == 0 && dur == 0) {
		struct lrows r = { x, 0 };
		if ((rc = begin(x, false, &t)) != 0)
			return rc;
		rc = t != NULL ? ag_list_each(t, which, list_row, &r) : 0;
		ag_txn_abort(t);
		if (rc != 0)
			return die_store(x, rc, "cannot read");
		if (x->json)
			printf(r.n ? "\n]\n" : "[]\n");
		else if (r.n == 0)
			printf("the run-time %s list is empty\n", list_name(which));
		return EX_OK;
	}
	bool add = argc == 2 && strcmp(argv[0], "add") == 0;
	bool del = argc == 2 && strcmp(argv[0], "del") == 0 && dur == 0;
	if (!add && !del) {
		fprintf(stderr, "usage: authguard-admin %s add CIDR [--for DURATION]\n"
				"       authguard-admin %s del CIDR\n"
				"       authguard-admin %s list [--json]\n",
			list_name(which), list_name(which), list_name(which));
		return EX_USAGE;
	}
	if ((rc = parse_target(argv[1], &e.net)) != 0 || (rc = begin(x, true, &t)) != 0)
		return rc;
	if (add) {
		e.added = x->now;
		e.expires = dur ? x->now + dur : 0;
		rc = ag_list_add(t, &e);
	} else {
		rc = ag_list_del(t, which, &e.net);
	}
	if (rc == 0)
		rc = fleet(x, t, add ? AG_SEV_LIST_ADD : AG_SEV_LIST_DEL, &e.net, NULL, (int)which,
			   add ? e.expires : 0);
	if (rc == AG_ENOTFOUND) {
		ag_txn_abort(t);
		fprintf(stderr, "authguard-admin: %s is not on the run-time %s list\n", argv[1],
			list_name(which));
		return EX_NOTFOUND;
	}
	if (rc != 0) {
		ag_txn_abort(t);
		return die_store(x, rc, "cannot change the list");
	}
	if ((rc = commit(x, t)) != 0)
		return rc;
	char a[AG_ADDR_STRLEN];
	ag_addr_format(&e.net, a, sizeof(a));
	printf("%s %s %s the run-time %s list\n", add ? "added" : "removed", a, add ? "to" : "from",
	       list_name(which));
	return EX_OK;
}

/* ---- export ---------------------------------------------------------------- */

struct banned {
	struct ag_cidrs v4, v6;
	int64_t now;
};

static void add_banned(struct banned *b, const struct ag_addr *a)
{
	(void)ag_cidrs_add(a->family == AG_AF_INET ? &b->v4 : &b->v6, a);
}

static void banned_src(void *vp, const struct ag_addr *a, const struct ag_src_rec *r)
{
	struct banned *b = vp;
	if (ag_src_banned(r, b->now))
		add_banned(b, a);
}

static void banned_deny(void *vp, const struct ag_list_entry *e)
{
	struct banned *b = vp;
	if (e->expires == 0 || e->expires > b->now)
		add_banned(b, &e->net);
}

static void print_set(const struct ag_cidrs *l, const char *sep)
{
	char a[AG_ADDR_STRLEN];

	for (size_t i = 0; i < l->n; i++) {
		ag_addr_format(&l->v[i], a, sizeof(a));
		printf("%s%s", i ? sep : "", a);
	}
}

static bool good_name(const char *s)
{
	if (*s == '\0' || strlen(s) > 24)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_'))
			return false;
	return true;
}

static int cmd_export(struct ctx *x, int argc, char **argv)
{
	struct banned b = { .now = x->now };
	const char *name = "authguard";
	struct ag_txn *t;
	int rc;

	bool sets_only = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
			name = argv[++i];
		} else if (strcmp(argv[i], "--sets-only") == 0) {
			sets_only = true;
		} else {
			argc = 0;
			break;
		}
	}
	if (argc > 1)
		argc = 1;
	if (argc != 1 || (strcmp(argv[0], "nft") != 0 && strcmp(argv[0], "ipset") != 0 &&
			  strcmp(argv[0], "plain") != 0)) {
		fprintf(stderr, "usage: authguard-admin export nft|ipset|plain [--name NAME] [--sets-only]\n");
		return EX_USAGE;
	}
	if (!good_name(name)) {
		fprintf(stderr, "authguard-admin: --name takes letters, digits and _ (at most 24)\n");
		return EX_USAGE;
	}
	if ((rc = begin(x, false, &t)) != 0)
		return rc;
	/* no store yet: no bans, but the config's deny list still goes out */
	rc = t != NULL ? ag_admin_each_src(t, banned_src, &b) : 0;
	if (rc == 0 && t != NULL)
		rc = ag_list_each(t, AG_LIST_DENY, banned_deny, &b);
	ag_txn_abort(t);
	if (rc != 0)
		return die_store(x, rc, "cannot read");
	for (size_t i = 0; i < x->c.deny.n; i++)
		add_banned(&b, &x->c.deny.v[i]);
	if (strcmp(argv[0], "plain") == 0) {
		print_set(&b.v4, "\n");
		printf(b.v4.n ? "\n" : "");
		print_set(&b.v6, "\n");
		printf(b.v6.n ? "\n" : "");
	} else if (strcmp(argv[0], "nft") == 0) {
		/* Self-contained and idempotent: loading it again (from cron,
		 * or after "flush ruleset" at boot) leaves exactly one copy of
		 * the chain's two rules and the current elements. */
		printf("# authguard: active bans and denies; load with nft -f\n"
		       "table inet %1$s {\n"
		       "\tset %1$s4 { type ipv4_addr; flags interval; auto-merge; }\n"
		       "\tset %1$s6 { type ipv6_addr; flags interval; auto-merge; }\n", name);
		if (!sets_only)
			printf("\tchain input { type filter hook input priority filter - 10; policy accept; }\n");
		printf("}\n");
		if (!sets_only)
			printf("flush chain inet %1$s input\n"
			       "add rule inet %1$s input ip saddr @%1$s4 drop\n"
			       "add rule inet %1$s input ip6 saddr @%1$s6 drop\n", name);
		printf("flush set inet %1$s %1$s4\n"
		       "flush set inet %1$s %1$s6\n", name);
		if (b.v4.n) {
			printf("add element inet %1$s %1$s4 { ", name);
			print_set(&b.v4, ", ");
			printf(" }\n");
		}
		if (b.v6.n) {
			printf("add element inet %1$s %1$s6 { ", name);
			print_set(&b.v6, ", ");
			printf(" }\n");
		}
	} else {
		printf("create %1$s4 hash:net family inet -exist\n"
		       "create %1$s6 hash:net family inet6 -exist\n"
		       "flush %1$s4\nflush %1$s6\n", name);
		char a[AG_ADDR_STRLEN];
		for (size_t i = 0; i < b.v4.n; i++) {
			ag_addr_format(&b.v4.v[i], a, sizeof(a));
			printf("add %s4 %s -exist\n", name, a);
		}
		for (size_t i = 0; i < b.v6.n; i++) {
			ag_addr_format(&b.v6.v[i], a, sizeof(a));
			printf("add %s6 %s -exist\n", name, a);
		}
	}
	ag_cidrs_clear(&b.v4);
	ag_cidrs_clear(&b.v6);
	return EX_OK;
}

/* ---- status, stats, gc, config ------------------------------------------------ */

struct counts {
	int64_t now;
	unsigned long hosts, nets, host_bans, net_bans, users, locks, pairs, timed, lists[5];
	struct ag_evict_stats ev; /* all zero if unreadable */
	int ev_rc;                /* 0, or why the eviction counters could not be read */
	struct ag_wave_rec wave;  /* the attack-wave detector; all zero if none */
	unsigned long hot_pw, pw_recs; /* hot passwords now, password records */
	const struct ag_conf *conf;
};

static ag_scan_fn count_pw;

/* The wave detector's state (record.h; see policy.h), and the
 * hot-password records: how many are hot now. */
static int gather_spray(struct ctx *x, struct ag_txn *t, struct counts *c)
{
	if (ag_admin_wave(t, &x->c, c->now, &c->wave) != 0)
		memset(&c->wave, 0, sizeof(c->wave));
	c->conf = &x->c;
	return ag_txn_scan(t, AG_DB_PW, NULL, 0, count_pw, c);
}

static enum ag_scan_op count_pw(void *vp, const void *key, size_t klen, const void *val,
				size_t vlen)
{
	struct counts *c = vp;
	struct ag_pw_rec r;

	(void)key;
	(void)klen;
	if (ag_rec_decode(AG_REC_PW, val, vlen, &r) != 0)
		return AG_SCAN_NEXT;
	c->pw_recs++;
	c->hot_pw += ag_pw_hot(c->conf, &r, c->now);
	return AG_SCAN_NEXT;
}

static void count_src(void *vp, const struct ag_addr *a, const struct ag_src_rec *r)
{
	struct counts *c = vp;
	bool host = a->plen == ag_addr_width(a);
	c->hosts += host;
	c->nets += !host;
	if (ag_src_banned(r, c->now)) {
		c->host_bans += host;
		c->net_bans += !host;
	}
}

static void count_user(void *vp, const uint8_t *k, size_t n, const struct ag_user_rec *r)
{
	struct counts *c = vp;
	(void)k;
	(void)n;
	c->users++;
	c->locks += ag_user_locked(r, c->now);
}

static void count_pair(void *vp, const uint8_t *k, size_t n, const struct ag_addr *a,
		       const struct ag_pair_rec *r)
{
	struct counts *c = vp;
	(void)k;
	(void)n;
	(void)a;
	(void)r;
	c->pairs++;
}

static void count_list(void *vp, const struct ag_list_entry *e)
{
	struct counts *c = vp;
	if (e->expires != 0 && e->expires <= c->now)
		return;
	c->lists[e->list]++;
	c->timed += e->list == AG_LIST_DENY && e->expires != 0;
}

static int gather(struct ctx *x, struct counts *c, struct ag_stats *st, unsigned *sleepers,
		  struct ag_store_info *info)
{
	struct ag_txn *t;
	int rc;

	memset(c, 0, sizeof(*c));
	c->now = x->now;
	if ((rc = begin(x, false, &t)) != 0)
		return rc;
	if (t == NULL) { /* no store yet: every count is zero */
		memset(st, 0, sizeof(*st));
		memset(info, 0, sizeof(*info));
		snprintf(info->path, sizeof(info->path), "%s", x->c.db_dir);
		*sleepers = 0;
		return 0;
	}
	rc = ag_admin_each_src(t, count_src, c);
	if (rc == 0)
		rc = ag_admin_each_user(t, count_user, c);
	/* (pairs live among the sources since issue 15.3, and older
	 * modules may still write some in the old database: counted) */
	if (rc == 0)
		rc = ag_admin_each_pair(t, false, NULL, 0, count_pair, c);
	for (int l = AG_LIST_ALLOW; rc == 0 && l <= AG_LIST_DENY; l *= 2)
		rc = ag_list_each(t, (enum ag_list)l, count_list, c);
	if (rc == 0)
		rc = ag_admin_stats(t, st);
	if (rc == 0)
		rc = ag_admin_sleepers(t, x->now, sleepers);
	if (rc == 0 && (c->ev_rc = ag_admin_evictions(t, &c->ev)) != 0)
		memset(&c->ev, 0, sizeof(c->ev)); /* said by status; the rest still counts */
	if (rc == 0)
		rc = gather_spray(x, t, c);
	ag_txn_abort(t);
	if (rc == 0)
		rc = ag_store_info(x->s, info);
	return rc != 0 ? die_store(x, rc, "cannot read") : 0;
}

static void human_bytes(uint64_t n, char *buf, size_t len)
{
	if (n >= (1ULL << 30))
		snprintf(buf, len, "%.1f GiB", (double)n / (1ULL << 30));
	else if (n >= (1ULL << 20))
		snprintf(buf, len, "%.1f MiB", (double)n / (1ULL << 20));
	else
		snprintf(buf, len, "%.1f KiB", (double)n / 1024);
}

/* The store was full and records were evicted: say how much, and when. */
static void print_evictions(const struct counts *c)
{
	const struct ag_evict_stats *e = &c->ev;
	char t[40];

	if (c->ev_rc != 0) {
		printf("evicted:  counters unreadable (%s)\n", ag_strerror(c->ev_rc));
		return;
	}
	if (e->rounds == 0) {
		printf("evicted:  none (the store has not been full)\n");
		return;
	}
	char cut[64] = "only sources whose bans were over";
	fmt_time(e->last_ms, t, sizeof(t));
	if (e->last_cutoff_ms != INT64_MAX)
		snprintf(cut, sizeof(cut), "last written %.1f s ago or more",
			 (double)e->last_cutoff_ms / 1000.0);
	printf("evicted:  %llu records in %llu rounds (%llu had to take records written in the"
	       " last %d s); last %s: %llu of %llu, %s; raise db_max_size\n",
	       (unsigned long long)e->records, (unsigned long long)e->rounds,
	       (unsigned long long)e->recent_rounds, AG_EVICT_RECENT_MS / 1000, t,
	       (unsigned long long)e->last_records, (unsigned long long)e->last_before, cut);
}

static void print_spray(struct ctx *x, const struct counts *c)
{
	const struct ag_wave_rec *w = &c->wave;
	char t[40];

	printf("spray:    %lu hot passwords now (%lu wrong-password records; "
	       "spray_password_users=%u)\n", c->hot_pw, c->pw_recs, x->c.spray_password_users);
	if (x->c.wave_factor == 0) {
		printf("wave:     off (wave_factor=0)\n");
		return;
	}
	double fast = ag_score_at(&w->fast, x->now, x->c.decay_half_life);
	double level = ag_wave_level(&x->c, w, x->now);
	if (w->first_seen == 0 || x->now - w->first_seen < x->c.wave_baseline) {
		printf("wave:     learning the host's normal (for wave_baseline after the first "
		       "unfamiliar failure); %.1f unfamiliar failures now\n", fast);
		return;
	}
	bool on = ag_wave_on(&x->c, w, x->now);
	if (on) {
		fmt_time(w->since, t, sizeof(t));
		printf("wave:     ON since %s: %.1f unfamiliar failures now, ends below %.1f; "
		       "places new to a user are tarpitted\n", t, fast, level / 2);
	} else {
		printf("wave:     off: %.1f unfamiliar failures now, a wave starts at %.1f",
		       fast, level);
		if (w->ended > 0) {
			fmt_time(w->ended, t, sizeof(t));
			printf("; the last one ended %s", t);
		}
		printf("\n");
	}
	printf("          %llu waves so far\n", (unsigned long long)w->waves);
}

/* Whether the fleet's password key is in the store (sync.h; never the
 * key itself): without it a spray over the hosts is counted per host. */
static void print_pw_key(struct ctx *x)
{
	uint8_t k[AG_FLEET_KEY_LEN];
	struct ag_txn *t;

	if (ag_txn_begin(x->s, false, &t) != 0)
		return;
	int rc = ag_sync_fleet_key_get(t, k);
	ag_txn_abort(t);
	memset(k, 0, sizeof(k));
	if (rc == 0)
		printf("pw key:   the fleet's (from the cluster key): hot and repeated passwords "
		       "count over the fleet\n");
	else
		printf("pw key:   NONE YET (authguard-sync has not started on this store): passwords "
		       "are hashed under this host's own secret and counted here only\n");
}

/* The fleet (authguard-sync(8)): the daemon's state as it last wrote it
 * (once a second), and the outbox as it is now. */
#define SYNC_STALE_MS 5000
static void print_sync(struct ctx *x)
{
	struct ag_sync_status st;
	struct ag_outbox_state ob = { 0 }, old = { 0 };
	struct ag_txn *t;
	char when[40];
	int src = AG_ENOTFOUND;

	if (x->no_store || ag_txn_begin(x->s, false, &t) != 0) {
		if (ag_sync_enabled(&x->c))
			printf("sync:     NOT RUNNING (no store yet)\n");
		return;
	}
	src = ag_sync_status_get(t, &st);
	int orc = ag_outbox_state(t, &ob);
	bool old_any = false; /* the old place (sync.h): modules loaded before an upgrade */
	if (ag_outbox_old_waiting(t, &old_any) != 0 || ag_outbox_old_state(t, &old) != 0)
		memset(&old, 0, sizeof(old));
	ag_txn_abort(t);
	if (!ag_sync_enabled(&x->c) && src != 0)
		return; /* not in a fleet */
	if (src != 0) {
		printf("sync:     NOT RUNNING (authguard-sync never ran on this store%s)\n",
		       src == AG_ENOTFOUND ? "" : ", or its state is unreadable");
	} else {
		int64_t age = x->now - st.updated_ms;
		fmt_time(st.since_ms, when, sizeof(when));
		if (age > SYNC_STALE_MS || age < -SYNC_STALE_MS) {
			fmt_time(st.updated_ms, when, sizeof(when));
			printf("sync:     NOT RUNNING (authguard-sync last wrote its state at %s)\n", when);
		} else {
			char redis[AG_CONF_STR_MAX + 200];
			if (x->c.sync_sentinels.n == 0)
				snprintf(redis, sizeof(redis), "%s", x->c.sync_redis);
			else if (st.primary[0] != '\0')
				snprintf(redis, sizeof(redis), "primary '%s' at %s", x->c.sync_sentinel_master,
					 st.primary);
			else
				snprintf(redis, sizeof(redis), "primary '%s' (not found yet)",
					 x->c.sync_sentinel_master);
			printf("sync:     %s since %s, host %s, Redis %s, stream %s\n",
			       st.connected ? "connected" : "DISCONNECTED", when, st.host, redis,
			       x->c.sync_stream);
		}
		printf("          events: %llu pushed, %llu applied, %llu duplicates skipped, %llu rejected (bad MAC)\n",
		       (unsigned long long)st.pushed, (unsigned long long)st.applied,
		       (unsigned long long)st.dups, (unsigned long long)st.rejected);
		if (st.last_error_ms != 0) {
			fmt_time(st.last_error_ms, when, sizeof(when));
			printf("          last error: %s (%s)\n", st.last_error, when);
		}
		for (unsigned i = 0; i < st.npeers; i++) {
			const struct ag_sync_peer *p = &st.peers[i];
			char ago[32];
			fmt_left(x->now - p->last_ms, ago, sizeof(ago));
			printf("          peer %s: lag %lld ms (last event, %s ago), %llu applied, %llu missed\n",
			       p->host, (long long)p->lag_ms, ago, (unsigned long long)p->applied,
			       (unsigned long long)p->gaps);
		}
	}
	uint64_t df = ob.dropped_fail + old.dropped_fail, dother = ob.dropped_other + old.dropped_other;
	if (orc == 0)
		printf("outbox:   %llu waiting (sync_outbox_max %u), %llu dropped when full "
		       "(%llu failures, %llu others)\n",
		       (unsigned long long)(ob.depth + old.depth), x->c.sync_outbox_max,
		       (unsigned long long)(df + dother), (unsigned long long)df,
		       (unsigned long long)dother);
	else
		printf("outbox:   unreadable (%s)\n", ag_strerror(orc));
	if (old_any)
		printf("          %llu of them in the old place (the meta database), put there by "
		       "modules loaded before the upgrade: authguard-sync moves them into the "
		       "outbox (an older authguard-sync pushes only those)\n",
		       (unsigned long long)old.depth);
	print_pw_key(x);
}

/* A Prometheus label value: backslash, double quote and newline escaped
 * (a peer's host id comes from the fleet's events). */
static void prom_label(const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			printf("\\%c", *v);
		else if (*v == '\n')
			printf("\\n");
		else
			putchar(*v);
	}
}

static void metric(bool prom, const char *name, const char *help, bool counter, double v)
{
	if (prom)
		printf("# HELP authguard_%s %s\n# TYPE authguard_%s %s\nauthguard_%s %.17g\n", name,
		       help, name, counter ? "counter" : "gauge", name, v);
	else
		printf("%-28s %.17g\n", name, v);
}

/* The fleet's figures for stats (nothing outside a fleet): whether
 * authguard-sync runs and is connected, so an alert can fire on a host
 * that guards alone; the outbox; each peer's lag. */
static void stats_sync(struct ctx *x, bool prom)
{
	struct ag_sync_status st;
	struct ag_outbox_state ob = { 0 }, old = { 0 };
	struct ag_txn *t;
	int src = AG_ENOTFOUND, orc = AG_ENOTFOUND;

	if (!x->no_store && ag_txn_begin(x->s, false, &t) == 0) {
		src = ag_sync_status_get(t, &st);
		orc = ag_outbox_state(t, &ob);
		if (ag_outbox_old_state(t, &old) != 0) /* (modules older than the upgrade: sync.h) */
			memset(&old, 0, sizeof(old));
		ag_txn_abort(t);
	}
	if (!ag_sync_enabled(&x->c) && src != 0)
		return;
	int64_t age = src == 0 ? x->now - st.updated_ms : 0;
	bool running = src == 0 && age <= SYNC_STALE_MS && age >= -SYNC_STALE_MS;
	metric(prom, "sync_running", "Whether authguard-sync wrote its state in the last 5 s (1) or not (0).",
	       false, running ? 1.0 : 0.0);
	metric(prom, "sync_connected", "Whether authguard-sync is running and connected to Redis (1) or not (0): at 0 this host guards with what it knows alone.",
	       false, running && st.connected ? 1.0 : 0.0);
	if (orc == 0) {
		metric(prom, "sync_outbox_depth", "Events in the outbox not yet pushed to Redis.", false,
		       (double)(ob.depth + old.depth));
		metric(prom, "sync_outbox_dropped_total", "Events dropped because the outbox was full (sync_outbox_max).",
		       true, (double)(ob.dropped_fail + ob.dropped_other + old.dropped_fail +
				      old.dropped_other));
	}
	if (src != 0)
		return;
	metric(prom, "sync_pushed_total", "Events pushed to the stream.", true, (double)st.pushed);
	metric(prom, "sync_applied_total", "Other hosts' events applied to this store.", true, (double)st.applied);
	metric(prom, "sync_duplicates_total", "Events skipped as already applied.", true, (double)st.dups);
	metric(prom, "sync_rejected_total", "Events rejected: missing or wrong MAC (not made with the cluster key).",
	       true, (double)st.rejected);
	metric(prom, "sync_last_error_timestamp_seconds", "When authguard-sync last met an error (0: never).",
	       false, (double)st.last_error_ms / 1000.0);
	static const struct { const char *name, *help; } pm[] = {
		{ "sync_peer_lag_seconds", "How old the last event applied from a peer was when it was applied." },
		{ "sync_peer_last_event_timestamp_seconds", "When the last event from a peer was applied." },
		{ "sync_peer_missed_total", "Sequence numbers of a peer never seen (events lost between it and here)." },
	};
	unsigned n = st.npeers < AG_SYNC_PEERS ? st.npeers : AG_SYNC_PEERS;
	for (size_t k = 0; k < AG_ARRAY_LEN(pm); k++) {
		if (prom && n > 0)
			printf("# HELP authguard_%s %s\n# TYPE authguard_%s %s\n", pm[k].name, pm[k].help,
			       pm[k].name, k == 2 ? "counter" : "gauge");
		for (unsigned i = 0; i < n; i++) {
			const struct ag_sync_peer *p = &st.peers[i];
			double v = k == 0 ? (double)p->lag_ms / 1000.0
				 : k == 1 ? (double)p->last_ms / 1000.0 : (double)p->gaps;
			char host[sizeof(p->host) + 1];
			snprintf(host, sizeof(host), "%.*s", (int)sizeof(p->host), p->host);
			if (prom) {
				printf("authguard_%s{peer=\"", pm[k].name);
				prom_label(host);
				printf("\"} %.17g\n", v);
			} else {
				printf("%s{%s} %.17g\n", pm[k].name, host, v);
			}
		}
	}
}

static int cmd_status(struct ctx *x, int argc, char **argv)
{
	struct counts c;
	struct ag_stats st;
	struct ag_store_info info;
	unsigned sleepers;
	char fb[32], ub[32], mb[32];
	int rc;

	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin status\n");
		return EX_USAGE;
	}
	if ((rc = gather(x, &c, &st, &sleepers, &info)) != 0)
		return rc;
	human_bytes(info.file_bytes, fb, sizeof(fb));
	human_bytes(info.used_bytes, ub, sizeof(ub));
	human_bytes(info.map_size, mb, sizeof(mb));
	if (x->no_store) {
		printf("store:    %s (no store yet: created at the first attempt)\n", info.path);
	} else {
		printf("store:    %s (data.mdb %s, %s used, map %s)\n", info.path, fb, ub, mb);
		printf("schema:   %u%s\n", info.schema,
		       info.layout < 2 ? " (layout 1: authguard-admin upgrade-store rewrites it into "
					 "layout 2, fewer pages per failure)" : "");
	}
	if (x->c.load_errno != 0)
		printf("config:   %s: %s: the built-in defaults are in force\n", x->c.load_path,
		       strerror(x->c.load_errno));
	else
		printf("config:   %s\n", x->conf_path);
	printf("mode:     %s, fail_open=%s\n", x->c.mode == AG_MODE_LOG_ONLY ? "log-only" : "enforce",
	       x->c.fail_open ? "yes" : "no");
	printf("sources:  %lu addresses, %lu prefixes tracked\n", c.hosts, c.nets);
	printf("users:    %lu tracked, %lu user x source pairs\n", c.users, c.pairs);
	printf("bans:     %lu addresses, %lu prefixes, %lu timed bans by admin\n", c.host_bans,
	       c.net_bans, c.timed);
	printf("locks:    %lu users\n", c.locks);
	printf("tarpit:   %u of %u slots sleeping now\n", sleepers, x->c.tarpit_slots);
	printf("lists:    allow %lu, proxy %lu, deny %lu (run-time); trusted %zu, proxies %zu, deny %zu (config)\n",
	       c.lists[AG_LIST_ALLOW], c.lists[AG_LIST_PROXY], c.lists[AG_LIST_DENY],
	       x->c.trusted.n, x->c.proxies.n, x->c.deny.n);
	if (!x->no_store) {
		printf("readers:  %u of %u slots held now (%u in a read); most ever at once %u",
		       info.readers, info.max_readers, info.readers_busy, info.readers_peak);
		if (info.readers_stale > 0)
			printf("; %u left by processes that are gone", info.readers_stale);
		printf("\n");
		if (ag_store_counters(x->s) != NULL)
			printf("counters: %s/%s (refusals not in any record's count: %llu)\n", info.path,
			       AG_COUNTERS_NAME, (unsigned long long)ag_counted_unattributed(x->s));
		else
			printf("counters: %s/%s unusable (%s): counts are kept in data.mdb, each refusal"
			       " takes the writer lock; see SECURITY.md\n", info.path, AG_COUNTERS_NAME,
			       ag_strerror(ag_store_counters_error(x->s)));
	}
	print_evictions(&c);
	print_spray(x, &c);
	print_sync(x);
	return EX_OK;
}

static int cmd_stats(struct ctx *x, int argc, char **argv)
{
	struct counts c;
	struct ag_stats st;
	struct ag_store_info info;
	unsigned sleepers;
	bool prom = argc == 1 && strcmp(argv[0], "--prometheus") == 0;
	int rc;

	if (argc != 0 && !prom) {
		fprintf(stderr, "usage: authguard-admin stats [--prometheus]\n");
		return EX_USAGE;
	}
	if ((rc = gather(x, &c, &st, &sleepers, &info)) != 0)
		return rc;
	const struct { const char *name, *help; double v; bool counter; } m[] = {
		{ "attempts_total", "Authentication attempts seen.", (double)st.attempts, true },
		{ "failures_total", "Failed password checks recorded.", (double)st.failures, true },
		{ "successes_total", "Successful logins recorded.", (double)st.successes, true },
		{ "refused_total", "Attempts refused before the password check.", (double)st.refused, true },
		{ "tarpitted_total", "Attempts delayed by the tarpit.", (double)st.tarpitted, true },
		{ "tarpit_delay_seconds_total", "Time spent in the tarpit.", (double)st.delay_ms / 1000.0, true },
		{ "bans_total", "Bans of addresses and prefixes.", (double)st.bans, true },
		{ "locks_total", "User lockouts.", (double)st.locks, true },
		{ "faults_total", "Store faults seen while recording.", (double)st.faults, true },
		{ "refused_unattributed_total", "Refusals in refused_total that no record's n_refused holds (the counter file's table was full near the record).", x->s != NULL ? (double)ag_counted_unattributed(x->s) : 0.0, true },
		{ "evicted_total", "Records evicted, oldest first, because the store was full.", (double)c.ev.records, true },
		{ "eviction_rounds_total", "Eviction rounds (raise db_max_size if this grows).", (double)c.ev.rounds, true },
		{ "eviction_recent_rounds_total", "Eviction rounds that had to take records written in the last 10 s.", (double)c.ev.recent_rounds, true },
		{ "last_eviction_timestamp_seconds", "When the last eviction round ended (0: never).", (double)c.ev.last_ms / 1000.0, false },
		{ "active_bans", "Addresses and prefixes banned now.", (double)(c.host_bans + c.net_bans + c.timed), false },
		{ "active_locks", "Users locked now.", (double)c.locks, false },
		{ "tracked_sources", "Addresses and prefixes in the store.", (double)(c.hosts + c.nets), false },
		{ "hot_passwords", "Wrong passwords being sprayed across users now (spray_password_users).", (double)c.hot_pw, false },
		{ "wave_active", "Whether a host-wide attack wave is on (1) or not (0).", ag_wave_on(&x->c, &c.wave, x->now) ? 1.0 : 0.0, false },
		{ "waves_total", "Attack waves started.", (double)c.wave.waves, true },
		{ "wave_unfamiliar_failures", "Failures from places new to their user, faded with decay_half_life.", ag_score_at(&c.wave.fast, x->now, x->c.decay_half_life), false },
		{ "wave_start_level", "The count of unfamiliar failures that starts a wave now.", ag_wave_level(&x->c, &c.wave, x->now), false },
	};
	for (size_t i = 0; i < AG_ARRAY_LEN(m); i++)
		metric(prom, m[i].name, m[i].help, m[i].counter, m[i].v);
	stats_sync(x, prom);
	if (!prom) {
		char t[40];
		fmt_time(st.created, t, sizeof(t));
		printf("%-28s %s\n", "since", t);
	}
	return EX_OK;
}

static int cmd_gc(struct ctx *x, int argc, char **argv)
{
	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin gc\n");
		return EX_USAGE;
	}
	/* gc writes, but a store that does not exist has nothing to drop:
	 * it is not made just for that */
	int rc = open_store(x, false);
	if (rc != 0)
		return rc;
	if (x->no_store) {
		printf("dropped 0 expired records\n");
		return EX_OK;
	}
	long n = ag_guard_gc(&x->c, x->now);
	if (n < 0)
		return die_store(x, (int)n, "gc failed");
	printf("dropped %ld expired records\n", n);
	return EX_OK;
}

/* The processes upgrade-store found with the store open, for its message. */
struct holders {
	char text[4096];
	size_t len;
	int n;
};

static void note_holder(void *ctx, long pid, const char *comm)
{
	struct holders *h = ctx;

	h->n++;
	if (h->len < sizeof(h->text) - 64)
		h->len += (size_t)snprintf(h->text + h->len, sizeof(h->text) - h->len,
					   "  pid %ld (%s)\n", pid, comm);
}

/* Rewrite a layout-1 store (made before schema 2) into layout 2, in one
 * write transaction, refused while any other process has it open: those
 * would go on reading and writing it in layout 1. */
static int cmd_upgrade_store(struct ctx *x, int argc, char **argv)
{
	struct holders h = { .len = 0 };
	struct timespec t0, t1;
	struct ag_upgrade u;

	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin upgrade-store\n");
		return EX_USAGE;
	}
	int rc = open_store(x, false);
	if (rc != 0)
		return rc;
	if (x->no_store) {
		printf("no store yet at %s: the first attempt makes one in layout 2\n", x->c.db_dir);
		return EX_OK;
	}
	if (ag_store_layout(x->s) >= 2) {
		printf("store %s: layout %u already, nothing to do\n", x->c.db_dir,
		       ag_store_layout(x->s));
		return EX_OK;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = ag_store_upgrade(&x->s, x->c.db_max_size, note_holder, &h, &u);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rc == AG_EBUSY) {
		fprintf(stderr, "authguard-admin: upgrade-store refused: %d other process%s %s the store "
				"%s open (they would go on in layout 1); stop %s (the mail services, "
				"authguard's daemons) and run it again; nothing was changed:\n%s",
			h.n, h.n == 1 ? "" : "es", h.n == 1 ? "has" : "have", x->c.db_dir,
			h.n == 1 ? "it" : "them", h.text);
		return EX_STORE;
	}
	if (rc == AG_EFULL)
		fprintf(stderr, "authguard-admin: upgrade-store: the rewrite needs room for a second "
				"copy of the sources and users while it runs: raise db_max_size\n");
	if (rc != 0)
		return die_store(x, rc, "upgrade-store failed, the store is unchanged");
	printf("upgraded %s to layout 2 (schema 2) in %.2f s: %llu source and pair records "
	       "rekeyed, %llu users moved among the sources\n", x->c.db_dir,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	       (unsigned long long)u.srcs, (unsigned long long)u.users);
	if (x->s == NULL) /* (the store replaced, but this process cannot open it again) */
		return die_store(x, u.compact_rc, "upgraded, but cannot open the store again");
	if (u.compacted) {
		printf("compacted: data.mdb %llu bytes (%llu with the old layout's pages)\n",
		       (unsigned long long)u.bytes_after, (unsigned long long)u.bytes_before);
		return EX_OK;
	}
	/* a valid store, only with as many free pages as data: LMDB's free
	 * list then costs pages at every commit */
	fprintf(stderr, "authguard-admin: upgrade-store: NOT COMPACTED (%s%s%s): the store is in "
			"layout 2 and complete, but keeps the old layout's pages free in data.mdb "
			"(%llu bytes), which costs writes at every commit; stop every process that "
			"opens the store and copy it compacted (mdb_copy -c, then the copy's data.mdb "
			"in place of the store's, lock.mdb removed)\n",
		ag_strerror(u.compact_rc), u.compact_detail[0] != '\0' ? ": " : "",
		u.compact_detail, (unsigned long long)u.bytes_before);
	return EX_OK;
}

/* Flush the store to disk: once, or with --every DURATION until SIGTERM
 * or SIGINT (a service: systemd/authguard-flush.service.in). While it
 * runs at no more than half of AG_SYNC_MS, no login attempt ever waits for
 * the disk: the attempts flush only when no process did for AG_SYNC_MS. */
static int cmd_flush(struct ctx *x, int argc, char **argv)
{
	int64_t every = 0;

	if (argc == 2 && strcmp(argv[0], "--every") == 0) {
		if (ag_parse_duration(argv[1], &every) != 0 || every < 10 || every > AG_SYNC_MS / 2) {
			fprintf(stderr, "flush --every: a duration from 10ms to %dms\n", AG_SYNC_MS / 2);
			return EX_USAGE;
		}
	} else if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin flush [--every DURATION]\n");
		return EX_USAGE;
	}
	/* a store is never made for this: the module makes it, with the
	 * owner and mode its services need (SECURITY.md) */
	int rc = open_store(x, false);
	if (rc != 0)
		return rc;
	if (every == 0) {
		if (!x->no_store)
			ag_store_sync(x->s);
		return EX_OK;
	}
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	if (sigprocmask(SIG_BLOCK, &stop, NULL) != 0) {
		perror("sigprocmask");
		return EX_STORE;
	}
	for (;;) {
		struct timespec ts = { (time_t)(every / 1000), (long)(every % 1000) * 1000000L };
		if (x->no_store && !store_missing(x)) {
			x->no_store = false; /* made since: open it now */
			if ((rc = open_store(x, false)) != 0)
				return rc;
		}
		if (!x->no_store)
			ag_store_sync(x->s);
		int sig = sigtimedwait(&stop, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			return EX_OK;
	}
}

static int cmd_check_config(struct ctx *x, int argc, char **argv)
{
	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin check-config\n");
		return EX_USAGE;
	}
	if (x->conf_errors != 0) {
		fprintf(stderr, "%d error%s\n", x->conf_errors, x->conf_errors == 1 ? "" : "s");
		return EX_CONFIG;
	}
	printf("configuration ok\n");
	return EX_OK;
}

static int cmd_dump_config(struct ctx *x, int argc, char **argv)
{
	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: authguard-admin dump-config\n");
		return EX_USAGE;
	}
	ag_conf_dump(&x->c, stdout);
	return EX_OK;
}

/* ---- check and record: the guard for scripts and servers' hooks --------------- */

/* Attempt lines (log = syslog) to syslog, LOG_AUTHPRIV, as the PAM module
 * writes them; faults and warnings to stderr as well. stdout is the
 * verdict's alone. */
static void attempt_sink(void *ctx, enum ag_level lvl, const char *msg)
{
	static const int prio[] = { LOG_INFO, LOG_WARNING, LOG_ERR };

	(void)ctx;
	syslog(LOG_AUTHPRIV | prio[lvl], "%s", msg);
	if (lvl != AG_LVL_INFO)
		fprintf(stderr, "authguard-admin: %s\n", msg);
}

struct attempt_args {
	const char *service, *user, *rhost, *result, *delay;
};

/* --service S --user U --rhost A [--result R]: each at most once; user
 * and rhost may be empty (none) */
static int take_attempt(int argc, char **argv, bool want_result, struct attempt_args *a)
{
	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		const char **slot = NULL;
		if (strcmp(argv[i], "--service") == 0)
			slot = &a->service;
		else if (strcmp(argv[i], "--user") == 0)
			slot = &a->user;
		else if (strcmp(argv[i], "--rhost") == 0)
			slot = &a->rhost;
		else if (want_result && strcmp(argv[i], "--result") == 0)
			slot = &a->result;
		else if (want_result && strcmp(argv[i], "--delay") == 0)
			slot = &a->delay;
		if (slot == NULL || i + 1 >= argc || *slot != NULL) {
			fprintf(stderr, "authguard-admin: %s: want --service S --user U --rhost A%s (each once)\n",
				argv[i], want_result ? " --result success|failure [--delay MS]" : "");
			return EX_USAGE;
		}
		*slot = argv[++i];
	}
	if (a->service == NULL || a->service[0] == '\0') {
		fprintf(stderr, "authguard-admin: --service is needed\n");
		return EX_USAGE;
	}
	if (want_result && (a->result == NULL || (strcmp(a->result, "success") != 0 &&
						  strcmp(a->result, "failure") != 0))) {
		fprintf(stderr, "authguard-admin: --result success or --result failure is needed\n");
		return EX_USAGE;
	}
	return 0;
}

static void attempt_of(const struct attempt_args *x, struct ag_attempt *a)
{
	memset(a, 0, sizeof(*a));
	a->service = x->service;
	if (x->user != NULL && x->user[0] != '\0') {
		a->user = x->user;
		a->user_len = strlen(x->user);
	}
	if (x->rhost != NULL && x->rhost[0] != '\0') {
		a->rhost = x->rhost;
		a->rhost_len = strlen(x->rhost);
	}
}

/* Before the password check: "allow", "delay MS" (the caller waits, then
 * goes on) or "refuse REASON". Nothing sleeps here. */
static int cmd_check(struct ctx *x, int argc, char **argv)
{
	struct attempt_args aa;
	struct ag_attempt a;
	struct ag_ticket t;
	struct ag_sink sink = { attempt_sink, NULL };
	int rc = take_attempt(argc, argv, false, &aa);

	if (rc != 0)
		return rc;
	attempt_of(&aa, &a);
	openlog("authguard", LOG_PID, LOG_AUTHPRIV);
	enum ag_decision d = ag_guard_check_ex(&x->c, &sink, &a, AG_CHECK_NOSLEEP, &t);
	closelog();
	if (d == AG_REFUSE) {
		printf("refuse %s\n", ag_reason_name((enum ag_reason)t.reason));
		return EX_REFUSE;
	}
	if (t.action == AG_ACT_TARPIT) {
		printf("delay %lld\n", (long long)t.delay_ms);
		return EX_DELAY;
	}
	printf("allow\n");
	return EX_OK;
}

/* After it: count the outcome (may ban or lock) and write the line. */
static int cmd_record(struct ctx *x, int argc, char **argv)
{
	struct attempt_args aa;
	struct ag_attempt a;
	struct ag_sink sink = { attempt_sink, NULL };
	struct ag_record_opts o = { 0 };
	int rc = take_attempt(argc, argv, true, &aa);

	if (rc != 0)
		return rc;
	attempt_of(&aa, &a);
	/* "delay MS" from check, waited by the caller: the attempt's one
	 * line says so, as a front end's ticket would */
	struct ag_ticket t = { .magic = AG_TICKET_MAGIC };
	if (aa.delay != NULL) {
		char *end;
		errno = 0;
		long long ms = strtoll(aa.delay, &end, 10);
		if (errno != 0 || end == aa.delay || *end != '\0' || ms < 0 || ms > 3600000) {
			fprintf(stderr, "authguard-admin: --delay %s: want the milliseconds check printed\n",
				aa.delay);
			return EX_USAGE;
		}
		t.would = AG_ACT_TARPIT;
		t.would_reason = AG_WHY_SCORE;
		t.action = x->c.mode == AG_MODE_LOG_ONLY ? AG_ACT_ALLOW : AG_ACT_TARPIT;
		t.reason = x->c.mode == AG_MODE_LOG_ONLY ? AG_WHY_NONE : AG_WHY_SCORE;
		t.delay_ms = ms;
	}
	openlog("authguard", LOG_PID, LOG_AUTHPRIV);
	rc = ag_guard_record_ex(&x->c, &sink, &a, strcmp(aa.result, "success") == 0, &o,
				aa.delay != NULL ? &t : NULL);
	closelog();
	if (rc != 0)
		return die_store(x, rc, "record");
	return EX_OK;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: authguard-admin [-c CONF] [-d DB_DIR] COMMAND [ARGS...]\n"
		"  status\n"
		"  list bans|locks|sources|users [--json]\n"
		"  show ADDRESS|PREFIX|USER [--json]      (show --user NAME for a user named like an address)\n"
		"  unban ADDRESS|PREFIX\n"
		"  unlock USER\n"
		"  ban ADDRESS|PREFIX [--for DURATION]\n"
		"  forget ADDRESS|USER                    (forget --user NAME likewise)\n"
		"  allow|proxy|deny add CIDR [--for DURATION] | del CIDR | list [--json]\n"
		"  export nft|ipset|plain [--name NAME] [--sets-only]\n"
		"  stats [--prometheus]\n"
		"  gc\n"
		"  upgrade-store                          (a store made before schema 2: into layout 2)\n"
		"  flush [--every DURATION]                (flush the store; --every: until SIGTERM)\n"
		"  check-config\n"
		"  dump-config\n"
		"  check --service S --user U --rhost A    prints allow | delay MS | refuse REASON\n"
		"  record --service S --user U --rhost A --result success|failure [--delay MS]\n"
		"exit status: 0 ok, 1 usage, 2 not found, 3 store error, 4 config errors;\n"
		"  check: 0 allow, 5 delay, 6 refuse\n");
}

static void report_stderr(void *ctx, const char *msg)
{
	struct ctx *x = ctx;
	x->conf_errors++;
	fprintf(stderr, "%s\n", msg);
}

/* Remove a "--json" flag anywhere in the arguments. */
static int take_json(int argc, char **argv, bool *json)
{
	int out = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			*json = true;
		else
			argv[out++] = argv[i];
	}
	return out;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(struct ctx *, int, char **);
	} cmds[] = {
		{ "status", cmd_status }, { "list", cmd_list }, { "show", cmd_show },
		{ "unban", cmd_unban }, { "unlock", cmd_unlock }, { "ban", cmd_ban },
		{ "forget", cmd_forget }, { "export", cmd_export }, { "stats", cmd_stats },
		{ "gc", cmd_gc }, { "flush", cmd_flush }, { "check-config", cmd_check_config },
		{ "dump-config", cmd_dump_config }, { "check", cmd_check },
		{ "record", cmd_record }, { "upgrade-store", cmd_upgrade_store },
	};
	struct ctx x = { 0 };
	const char *conf = NULL, *db = NULL;
	int opt;

	static const struct option longopts[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	while ((opt = getopt_long(argc, argv, "+c:d:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': conf = optarg; break;
		case 'd': db = optarg; break;
		case 'h': usage(stdout); return EX_OK;
		default: usage(stderr); return EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return EX_USAGE;
	}
	ag_conf_init(&x.c);
	const char *path = conf != NULL ? conf : AG_DEFAULT_CONF;
	x.conf_path = path;
	if (conf != NULL || access(path, F_OK) == 0) {
		int rc = ag_conf_load(&x.c, path, report_stderr, &x);
		if (rc < 0 && x.conf_errors == 0)
			x.conf_errors = 1;
		/* a config named with -c that cannot be read would send every
		 * command to the default store: stop */
		if (rc < 0 && conf != NULL) {
			ag_conf_free(&x.c);
			return EX_CONFIG;
		}
	} else {
		/* no config file at the default path: defaults, as the
		 * services have them; status says so */
		x.c.load_errno = ENOENT;
		snprintf(x.c.load_path, sizeof(x.c.load_path), "%s", path);
	}
	if (db != NULL) {
		char err[256];
		if (ag_conf_set(&x.c, "db_dir", db, err, sizeof(err)) != 0) {
			fprintf(stderr, "authguard-admin: -d: %s\n", err);
			ag_conf_free(&x.c); /* the defaults hold lists too */
			return EX_USAGE;
		}
	}
	x.now = ag_now_ms();
	const char *cmd = argv[0];
	argc = take_json(argc - 1, argv + 1, &x.json);
	argv++;
	int rc = -1;
	/* only these have JSON output: elsewhere the flag would be taken
	 * without a word and a script would parse a table */
	static const char *const with_json[] = { "list", "show", "allow", "proxy", "deny" };
	bool json_ok = false;
	for (size_t i = 0; i < AG_ARRAY_LEN(with_json); i++)
		json_ok = json_ok || strcmp(cmd, with_json[i]) == 0;
	if (x.json && !json_ok) {
		fprintf(stderr, "authguard-admin: %s has no --json output (list, show and allow|proxy|deny "
			"list have)\n", cmd);
		rc = EX_USAGE;
	}
	for (size_t i = 0; i < AG_ARRAY_LEN(cmds) && rc < 0; i++)
		if (strcmp(cmd, cmds[i].name) == 0)
			rc = cmds[i].fn(&x, argc, argv);
	if (rc < 0 && strcmp(cmd, "allow") == 0)
		rc = cmd_listop(&x, AG_LIST_ALLOW, argc, argv);
	if (rc < 0 && strcmp(cmd, "proxy") == 0)
		rc = cmd_listop(&x, AG_LIST_PROXY, argc, argv);
	if (rc < 0 && strcmp(cmd, "deny") == 0)
		rc = cmd_listop(&x, AG_LIST_DENY, argc, argv);
	if (rc < 0) {
		fprintf(stderr, "authguard-admin: unknown command '%s'\n", cmd);
		usage(stderr);
		rc = EX_USAGE;
	}
	if (x.conf_errors != 0 && strcmp(cmd, "check-config") != 0)
		fprintf(stderr, "authguard-admin: warning: %s has errors (see above); their defaults were used\n",
			path);
	ag_conf_free(&x.c);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "authguard-admin: cannot write output: %s\n", strerror(errno));
		return rc == EX_OK ? EX_STORE : rc;
	}
	return rc;
}
