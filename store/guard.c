/* guard.c - check and record: store transactions around the pure policy,
 * the tarpit, faults and the attempt log line. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "counters.h"
#include "guard.h"
#include "hash.h"
#include "lists.h"
#include "store.h"
#include "sync.h"

/* check_txn(): the read-only pass found something to write */
#define AG_EAGAIN_WRITE 1

static int64_t (*clock_fn)(void) = ag_now_ms;

int64_t ag_guard_now(void)
{
	return clock_fn();
}

void ag_guard_set_clock(int64_t (*now_fn)(void))
{
	clock_fn = now_fn != NULL ? now_fn : ag_now_ms;
}

/* The wall clock of the per-process pacing below (evict(), maintain(),
 * maybe_maintain()): the guard's clock is the records' time, and a test
 * that moves it on by hours must not also move the pacing on. */
static int64_t (*pace_fn)(void) = ag_now_ms;
static void (*between_fn)(void *);
static void *between_arg;

void ag_guard_set_between_passes(void (*fn)(void *), void *arg)
{
	between_fn = fn;
	between_arg = arg;
}

void ag_guard_set_pace_clock(int64_t (*now_fn)(void))
{
	pace_fn = now_fn != NULL ? now_fn : ag_now_ms;
}

/* One attempt resolved against the store. */
struct op {
	const struct ag_conf *c;
	const struct ag_sink *sink;
	const struct ag_attempt *a;
	struct ag_store *s;
	int64_t now;
	struct ag_addr host, net, pairsrc;
	uint8_t hkey[AG_SRC_KEY_LEN], nkey[AG_SRC_KEY_LEN];
	uint8_t ukey[AG_USER_KEY_MAX];
	size_t ulen;
	uint8_t pkey[AG_SRC_PAIR_KEY_MAX]; /* the pair, in the source database */
	size_t plen;
	uint8_t okey[AG_PAIR_KEY_MAX];     /* its key in the old pair database */
	size_t olen;
	bool old_pair; /* op_load() found a copy there (an older module's) */
	bool old_wave; /* ... and of the wave state in the meta database */
	uint8_t pwkey[AG_PW_KEY_LEN]; /* with v.has_pw */
	struct ag_view v;
	bool damaged; /* a record could not be decoded and was reset */
	bool have_src, have_user; /* the host's and the user's records exist */
	bool user_counted; /* record: the user's n_fail goes to the counter file */
	bool wrote; /* a write transaction was committed */
	struct ag_verdict ro; /* check: the read-only pass's verdict */
	bool have_ro;
	/* issue 14: the wider networks' keys; the attempt's in-flight mark */
	uint8_t wkey[AG_PREFIX_LEVELS - 1][AG_SRC_KEY_LEN];
	bool want_flight; /* check: mark the attempt as in flight */
	bool may_fly;     /* check: the caller records it (AG_CHECK_INFLIGHT) */
	bool flew;        /* check: a mark was put (committed with op->wrote) */
};

/* ---- faults ------------------------------------------------------------ */

enum fault_kind {
	FAULT_OPEN, FAULT_TXN, FAULT_DAMAGED, FAULT_HOUSEKEEPING,
	FAULT_EVICT, /* eviction round; @what says it all */
	FAULT_CONFIG, /* the config file could not be read */
	FAULT_LOGFILE, /* the log file could not be written */
	FAULT_KINDS
};
static _Atomic int64_t last_fault_ms[FAULT_KINDS];

/* True at most once a minute per process and kind, so a flood of one
 * fault neither fills the log nor hides a different one (on the guard's
 * clock: tests that move it on see each fault again). */
static bool fault_due(enum fault_kind kind)
{
	int64_t now = clock_fn(), last = last_fault_ms[kind];

	if (last != 0 && now - last < 60000 && now >= last)
		return false;
	return atomic_compare_exchange_strong(&last_fault_ms[kind], &last, now);
}

static void to_sink(const struct ag_sink *sink, enum ag_level lvl, const char *line)
{
	if (sink != NULL && sink->fn != NULL)
		sink->fn(sink->ctx, lvl, line);
}

/* The log file cannot be written: say so, and why, where the front end
 * logs (the file is the one thing that cannot carry the message). */
static void logfile_fault(const struct ag_conf *c, const struct ag_sink *sink, int err)
{
	char msg[AG_PATH_MAX + 256];

	if (!fault_due(FAULT_LOGFILE))
		return;
	snprintf(msg, sizeof(msg),
		 "authguard fault: log file %s: cannot write: %s (uid %ld, gid %ld); "
		 "its lines go to syslog instead",
		 c->log_path, strerror(err), (long)geteuid(), (long)getegid());
	to_sink(sink, AG_LVL_ERR, msg);
}

static void emit(const struct ag_conf *c, const struct ag_sink *sink, enum ag_level lvl,
		 const char *line, bool attempt_line)
{
	if (attempt_line && c->log_kind == AG_LOG_NONE)
		return;
	if (c->log_kind == AG_LOG_FILE) {
		if (ag_log_file_write(c->log_path, line) == 0) {
			if (attempt_line)
				return;
		} else {
			logfile_fault(c, sink, errno);
			if (attempt_line)
				lvl = AG_LVL_WARN; /* the file failed: do not lose the line */
		}
	}
	to_sink(sink, lvl, line);
}

void ag_guard_say(const struct ag_conf *c, const struct ag_sink *sink, enum ag_level lvl,
		  const char *msg)
{
	emit(c, sink, lvl, msg, false);
}

void ag_notes_add(void *ctx, const char *msg)
{
	struct ag_notes *n = ctx;

	if (n->n < AG_NOTES_MAX)
		snprintf(n->msg[n->n++], sizeof(n->msg[0]), "%s", msg);
	else
		n->more++;
}

void ag_guard_say_notes(const struct ag_conf *c, const struct ag_sink *sink,
			const struct ag_notes *n)
{
	for (unsigned i = 0; i < n->n; i++)
		ag_guard_say(c, sink, AG_LVL_ERR, n->msg[i]);
	if (n->more > 0) {
		char msg[160];
		snprintf(msg, sizeof(msg), "authguard: config: %u more errors not shown "
			 "(authguard-admin check-config lists them all)", n->more);
		ag_guard_say(c, sink, AG_LVL_ERR, msg);
	}
}

/* Log a fault (rate-limited: fault_due()). */
static void fault(const struct ag_conf *c, const struct ag_sink *sink, enum fault_kind kind,
		  int rc, const char *what)
{
	char msg[AG_PATH_MAX + 256];

	if (!fault_due(kind))
		return;
	/* the store's words: LMDB's, or which rule or system call failed
	 * on which path (an unsafe directory, a missing parent, ...) */
	const char *detail = rc == AG_ESTORE || rc == AG_ECORRUPT || rc == AG_EUNSAFE ||
			     rc == AG_EIO || rc == AG_EPERM ? ag_store_detail() : "";
	/* a system call's failure on a path names itself: "mkdir
	 * /var/lib/authguard: No such file or directory" (a chroot without
	 * the store) must not read as "input/output error" */
	const char *code = rc == AG_EIO && detail[0] ? "" : ag_strerror(rc);
	const char *sep = detail[0] && code[0] ? ": " : "";
	if (kind == FAULT_EVICT)
		snprintf(msg, sizeof(msg), "authguard fault: %s; raise db_max_size (db_dir=%s)", what,
			 c->db_dir);
	else if (kind == FAULT_HOUSEKEEPING)
		snprintf(msg, sizeof(msg), "authguard fault: %s: %s%s%s (db_dir=%s); attempts are not affected",
			 what, code, sep, detail, c->db_dir);
	else
		snprintf(msg, sizeof(msg), "authguard fault: %s: %s%s%s (db_dir=%s); fail_open=%s: %s",
			 what, code, sep, detail, c->db_dir,
			 c->fail_open ? "yes" : "no",
			 c->fail_open ? "attempts go on unguarded" : "attempts are refused");
	emit(c, sink, AG_LVL_ERR, msg, false);
}

/* The config file could not be read: the built-in defaults are in force,
 * so its deny, trusted and proxies lists and its thresholds are not. Each
 * attempt line says so (config=); this line says why, once a minute, at
 * the attempt log's destination and the front end's. */
static void config_fault(const struct ag_conf *c, const struct ag_sink *sink)
{
	char msg[AG_PATH_MAX + 256];

	if (c->load_errno == 0 || !fault_due(FAULT_CONFIG))
		return;
	snprintf(msg, sizeof(msg),
		 "authguard fault: config %s: cannot read: %s; running on built-in defaults: "
		 "the file's lists (deny, trusted, proxies) and settings are NOT applied",
		 c->load_path, strerror(c->load_errno));
	emit(c, sink, AG_LVL_ERR, msg, false);
}

static const char *config_state(const struct ag_conf *c)
{
	if (c->load_errno == 0)
		return NULL;
	return c->load_errno == ENOENT ? "missing" : "unreadable";
}

/* ---- resolving an attempt ---------------------------------------------- */

/* The host's wider networks: the levels of ipv4_prefixes / ipv6_prefixes
 * past the first (which is op->net), each with its own ban count. */
static void wide_prepare(struct op *op)
{
	const struct ag_prefixes *p = op->host.family == AG_AF_INET ? &op->c->ipv4_prefixes
								   : &op->c->ipv6_prefixes;

	op->v.n_wide = 0;
	for (uint32_t i = 1; i < p->n && i < AG_PREFIX_LEVELS; i++) {
		struct ag_addr w;
		unsigned k = op->v.n_wide;
		if (p->len[i] >= op->net.plen)
			continue; /* not wider than the first level (an old ipv6_prefix) */
		ag_addr_prefix(&op->host, p->len[i], &w);
		ag_src_key(&w, op->wkey[k]);
		/* net_ban_after = 0 keeps its old meaning: no network bans */
		op->v.wide_after[k] = op->c->net_ban_after == 0 || p->after[i] == UINT32_MAX ? 0
				      : p->after[i] == 0 ? op->c->net_ban_after
							 : p->after[i];
		op->v.n_wide++;
	}
}

static int op_prepare(struct op *op, const struct ag_conf *c, const struct ag_sink *sink,
		      const struct ag_attempt *a)
{
	memset(op, 0, sizeof(*op));
	op->c = c;
	op->sink = sink;
	op->a = a;
	op->now = clock_fn();
	ag_view_init(&op->v);
	if (a->rhost != NULL && ag_addr_parse(a->rhost, a->rhost_len, &op->host) == 0) {
		unsigned plen = op->host.family == AG_AF_INET ? c->ipv4_prefix : c->ipv6_prefix;
		op->v.has_addr = true;
		ag_addr_prefix(&op->host, plen, &op->net);
		/* IPv6 clients rotate privacy addresses inside their prefix:
		 * familiarity follows that prefix there (ipv6_familiar_prefix,
		 * apart from the ban levels: a /48 banned as one network must
		 * not make the whole /48 familiar), the host for IPv4. */
		if (op->host.family == AG_AF_INET)
			op->pairsrc = op->host;
		else
			ag_addr_prefix(&op->host, c->ipv6_familiar_prefix, &op->pairsrc);
		ag_src_key(&op->host, op->hkey);
		ag_src_key(&op->net, op->nkey);
		wide_prepare(op);
		op->v.trusted = ag_cidrs_match(&c->trusted, &op->host);
		op->v.proxy = ag_cidrs_match(&c->proxies, &op->host);
		op->v.denied = ag_cidrs_match(&c->deny, &op->host);
	}
	op->v.has_user = a->user != NULL && a->user_len > 0;
	int rc = ag_store_get(c->db_dir, &op->s);
	if (rc != 0)
		return rc;
	const uint8_t *secret = ag_store_secret(op->s);
	if (op->v.has_user) {
		uint8_t skey[AG_SRC_KEY_LEN] = { 0 }, xkey[AG_USER_KEY_MAX];
		/* one mailbox, one user on every service: a listed domain
		 * goes before the name is keyed (user_strip_domains) */
		size_t ulen = ag_user_strip(c->user_fold, a->user, a->user_len,
					    c->user_strip_domains.v, c->user_strip_domains.n);
		rc = ag_user_canon(secret, c->user_fold, a->user, ulen, op->ukey, &op->ulen,
				   &op->v.user_hash);
		if (rc != 0)
			return rc;
		if (op->v.has_addr)
			ag_src_key(&op->pairsrc, skey);
		/* failures and locks are the folded user's; the pair (and so
		 * familiarity) is the exact name's, or the owner of "Alice"
		 * would make her places familiar for "alice"; a stripped
		 * domain is the same mailbox, so her places are hers with or
		 * without it */
		size_t xlen = ag_user_key(secret, a->user, ulen, xkey);
		op->plen = ag_pair_key(skey, xkey, xlen, op->pkey);
		op->olen = ag_pair_key_old(xkey, xlen, skey, op->okey);
	}
	return 0;
}

static int read_rec(struct op *op, struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
		    enum ag_rec_kind kind, void *out, bool *found)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, db, key, klen, &val, &vlen);

	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	uint8_t tmp[sizeof(struct ag_src_rec) + sizeof(struct ag_pair_rec)];
	if (ag_rec_decode(kind, val, vlen, tmp) != 0) {
		op->damaged = true; /* keep the fresh record; logged by the caller */
		return 0;
	}
	memcpy(out, tmp, ag_rec_size(kind));
	if (found != NULL)
		*found = true;
	return 0;
}

/* A copy an older module keeps in its own place (the old pair database,
 * the wave state in meta): *present_r whether there is one, readable or
 * not, so that the next write removes it (a damaged one would otherwise
 * stay, reset and counted as a fault on every attempt that reads it);
 * *decoded_r whether @out holds it. */
static int read_old(struct op *op, struct ag_txn *t, enum ag_db db, const void *key, size_t klen,
		    enum ag_rec_kind kind, void *out, bool *present_r, bool *decoded_r)
{
	const void *val;
	size_t vlen;
	int rc = ag_txn_get(t, db, key, klen, &val, &vlen);

	*present_r = *decoded_r = false;
	if (rc == AG_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	*present_r = true;
	if (ag_rec_decode(kind, val, vlen, out) != 0)
		op->damaged = true; /* the new place's copy (or a fresh one) stands */
	else
		*decoded_r = true;
	return 0;
}

/* The host's wave state (record.h): in the unnamed database, with what
 * older modules counted in the old place since folded in. */
static int load_wave(struct op *op, struct ag_txn *t)
{
	struct ag_wave_rec old = op->v.wave;
	bool found = false;
	int rc = read_rec(op, t, AG_DB_MAIN, AG_WAVE_KEY, AG_WAVE_KEY_LEN, AG_REC_WAVE,
			  &op->v.wave, &found);

	bool decoded = false;
	op->old_wave = false;
	if (rc == 0)
		rc = read_old(op, t, AG_DB_META, AG_WAVE_KEY_OLD, AG_WAVE_KEY_OLD_LEN, AG_REC_WAVE,
			      &old, &op->old_wave, &decoded);
	if (rc != 0 || !decoded)
		return rc;
	if (found)
		ag_wave_merge(&op->v.wave, &old, op->now, op->c->decay_half_life,
			      op->c->wave_baseline);
	else
		op->v.wave = old; /* the first write since the upgrade: all of it */
	return 0;
}

/* The hot-password record of the attempt's password, and the host's wave
 * state (issue 14). */
static int load_spray(struct op *op, struct ag_txn *t)
{
	int rc = 0;

	if (op->v.has_pw)
		rc = read_rec(op, t, AG_DB_PW, op->pwkey, sizeof(op->pwkey), AG_REC_PW, &op->v.pw,
			      NULL);
	if (rc == 0 && op->c->wave_factor > 0)
		rc = load_wave(op, t);
	return rc;
}

static int save_spray(struct op *op, struct ag_txn *t)
{
	int rc = 0;

	if (op->v.w_pw)
		rc = ag_txn_put(t, AG_DB_PW, op->pwkey, sizeof(op->pwkey), &op->v.pw,
				sizeof(op->v.pw));
	if (rc == 0 && op->v.w_wave)
		rc = ag_txn_put(t, AG_DB_MAIN, AG_WAVE_KEY, AG_WAVE_KEY_LEN, &op->v.wave,
				sizeof(op->v.wave));
	if (rc == 0 && op->v.w_wave && op->old_wave) { /* folded in (load_wave()) */
		rc = ag_txn_del(t, AG_DB_META, AG_WAVE_KEY_OLD, AG_WAVE_KEY_OLD_LEN);
		rc = rc == AG_ENOTFOUND ? 0 : rc;
	}
	return rc;
}

/* The pair: in the source database, and a copy an older module may have
 * written in the old pair database since (an empty database costs no
 * page to look in), folded in so that its counts go on; op_save() then
 * writes the one and deletes the other. */
static int load_pair(struct op *op, struct ag_txn *t)
{
	struct ag_pair_rec old = op->v.pair;
	bool found = false;
	int rc = read_rec(op, t, AG_DB_SRC, op->pkey, op->plen, AG_REC_PAIR, &op->v.pair, &found);

	bool decoded = false;
	op->old_pair = false;
	if (rc == 0) /* an old copy goes when the pair is written (op_save()) */
		rc = read_old(op, t, AG_DB_PAIR, op->okey, op->olen, AG_REC_PAIR, &old,
			      &op->old_pair, &decoded);
	if (rc != 0 || !decoded)
		return rc;
	if (found)
		ag_pair_merge(&op->v.pair, &old, op->now, op->c->decay_half_life);
	else
		op->v.pair = old;
	return 0;
}

static int op_load(struct op *op, struct ag_txn *t)
{
	int rc = 0;

	if (op->v.has_addr) {
		int m = ag_lists_match(t, &op->host, op->now);
		if (m < 0)
			return m;
		op->v.trusted = op->v.trusted || (m & AG_LIST_ALLOW) != 0;
		op->v.proxy = op->v.proxy || (m & AG_LIST_PROXY) != 0;
		op->v.denied = op->v.denied || (m & AG_LIST_DENY) != 0;
	}
	if (op->v.trusted && !op->v.denied)
		return 0;
	op->have_src = op->have_user = false;
	if (op->v.has_addr) {
		rc = read_rec(op, t, AG_DB_SRC, op->hkey, sizeof(op->hkey), AG_REC_SRC, &op->v.src,
			      &op->have_src);
		if (rc == 0)
			rc = read_rec(op, t, AG_DB_SRC, op->nkey, sizeof(op->nkey), AG_REC_SRC, &op->v.net,
				      NULL);
		for (unsigned i = 0; rc == 0 && i < op->v.n_wide; i++)
			rc = read_rec(op, t, AG_DB_SRC, op->wkey[i], AG_SRC_KEY_LEN, AG_REC_SRC,
				      &op->v.wide[i], NULL);
	}
	if (rc == 0 && op->v.has_user) {
		rc = read_rec(op, t, AG_DB_USER, op->ukey, op->ulen, AG_REC_USER, &op->v.user,
			      &op->have_user);
		if (rc == 0)
			rc = load_pair(op, t);
	}
	if (rc == 0)
		rc = load_spray(op, t);
	return rc;
}

static int op_save(struct op *op, struct ag_txn *t)
{
	struct ag_view *v = &op->v;
	int rc = 0;

	if (v->w_src)
		rc = ag_txn_put(t, AG_DB_SRC, op->hkey, sizeof(op->hkey), &v->src, sizeof(v->src));
	if (rc == 0 && v->w_net)
		rc = ag_txn_put(t, AG_DB_SRC, op->nkey, sizeof(op->nkey), &v->net, sizeof(v->net));
	if (rc == 0 && v->w_user)
		rc = ag_txn_put(t, AG_DB_USER, op->ukey, op->ulen, &v->user, sizeof(v->user));
	if (rc == 0 && v->w_pair)
		rc = ag_txn_put(t, AG_DB_SRC, op->pkey, op->plen, &v->pair, sizeof(v->pair));
	if (rc == 0 && v->w_pair && op->old_pair) { /* moved (load_pair()) */
		rc = ag_txn_del(t, AG_DB_PAIR, op->okey, op->olen);
		rc = rc == AG_ENOTFOUND ? 0 : rc;
	}
	if (rc == 0)
		rc = save_spray(op, t);
	for (unsigned i = 0; rc == 0 && i < v->n_wide; i++)
		if (v->w_wide[i])
			rc = ag_txn_put(t, AG_DB_SRC, op->wkey[i], AG_SRC_KEY_LEN, &v->wide[i],
					sizeof(v->wide[i]));
	return rc;
}

/* Add to the host-wide counters in the store: only when there is no
 * counter file (counters.h), which holds them otherwise. */
static int bump_stats(struct ag_txn *t, const struct ag_stats *d)
{
	if (ag_store_counters(ag_txn_store(t)) != NULL)
		return 0; /* added after the commit: ag_count_stats() */
	struct ag_stats st = { .version = AG_REC_VERSION };
	const void *val;
	size_t vlen;

	if (ag_txn_get(t, AG_DB_META, "stats", 5, &val, &vlen) != 0 ||
	    ag_rec_decode(AG_REC_STATS, val, vlen, &st) != 0) {
		memset(&st, 0, sizeof(st));
		st.version = AG_REC_VERSION;
	}
	st.attempts += d->attempts;
	st.failures += d->failures;
	st.successes += d->successes;
	st.refused += d->refused;
	st.tarpitted += d->tarpitted;
	st.delay_ms += d->delay_ms;
	st.bans += d->bans;
	st.locks += d->locks;
	st.faults += d->faults;
	return ag_txn_put(t, AG_DB_META, "stats", 5, &st, sizeof(st));
}

/* ---- the tarpit ---------------------------------------------------------- */

static _Atomic uint32_t slot_seq;

/* In-flight marks share AG_DB_SLOT with the tarpit slots (see
 * flight_count()) under keys of their own. */
#define FLIGHT_MARK 0xff
#define FLIGHT_KEY_LEN 17

struct slot_scan {
	int64_t now;
	uint32_t live, max;
	uint8_t owner[AG_SRC_KEY_LEN]; /* see slot_owner() */
	size_t olen;
	uint32_t mine;        /* live slots held by that owner */
	uint32_t by_user;     /* live slots held by users (see slot_owner()) */
};

/* Whom a slot is counted against: the sleeper's network (its key), or,
 * for an attempt without an address or through a proxy (where one
 * address stands for many clients), its user: a marker byte and the
 * user's keyed hash. The lengths differ, so the two never match. */
#define SLOT_USER_MARK 0xff

static void slot_owner(const struct op *op, struct slot_scan *ss)
{
	if (op->v.has_addr && !op->v.proxy) {
		memcpy(ss->owner, op->nkey, AG_SRC_KEY_LEN);
		ss->olen = AG_SRC_KEY_LEN;
		return;
	}
	ss->owner[0] = SLOT_USER_MARK;
	memcpy(ss->owner + 1, &op->v.user_hash, sizeof(op->v.user_hash));
	ss->olen = 1 + sizeof(op->v.user_hash);
}

static enum ag_scan_op slot_visit(void *ctx, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct slot_scan *ss = ctx;
	const uint8_t *k = key;
	int64_t end = 0;

	if (klen == 16)
		end = (int64_t)ag_get_be64(k);
	if (klen == FLIGHT_KEY_LEN && k[0] == FLIGHT_MARK)
		return AG_SCAN_STOP; /* the in-flight marks sort after every slot */
	if (klen != 16 || end <= ss->now)
		return AG_SCAN_DELETE;
	if (vlen == ss->olen && memcmp(val, ss->owner, vlen) == 0)
		ss->mine++;
	if (vlen == 1 + sizeof(((struct ag_view *)0)->user_hash) &&
	    *(const uint8_t *)val == SLOT_USER_MARK)
		ss->by_user++;
	return ++ss->live >= ss->max ? AG_SCAN_STOP : AG_SCAN_NEXT;
}

/* Take one of tarpit_slots host-wide sleeping places until now + @ms.
 * A place frees itself when its time is up, so a killed sleeper never
 * leaks one. One owner (a network; a user without an address or behind a
 * proxy) may hold at most a quarter of the places (at least one), so a
 * single source cannot starve everyone else's tarpit; and users (names an
 * attacker picks freely) hold at most half of them together, so guesses
 * through a proxy cannot starve the clients that come directly.
 * Returns 0, 1 when no place may be taken, or AG_E*. */
static int slot_take(struct op *op, struct ag_txn *t, int64_t ms)
{
	struct slot_scan ss = { .now = op->now, .max = op->c->tarpit_slots };
	uint32_t per_source = op->c->tarpit_slots / 4 > 0 ? op->c->tarpit_slots / 4 : 1;
	uint8_t key[16];
	int64_t end = op->now + ms;
	uint32_t pid = (uint32_t)getpid(), seq = atomic_fetch_add(&slot_seq, 1);

	if (ss.max == 0)
		return 1;
	slot_owner(op, &ss);
	int rc = ag_txn_scan(t, AG_DB_SLOT, NULL, 0, slot_visit, &ss);
	if (rc != 0)
		return rc;
	uint32_t users = ss.max / 2 > 0 ? ss.max / 2 : 1;
	if (ss.live >= ss.max || ss.mine >= per_source)
		return 1;
	if (ss.olen != AG_SRC_KEY_LEN && ss.by_user >= users)
		return 1;
	ag_put_be64(key, (uint64_t)end);
	memcpy(key + 8, &pid, 4);
	memcpy(key + 12, &seq, 4);
	return ag_txn_put(t, AG_DB_SLOT, key, sizeof(key), ss.owner, ss.olen);
}

/* ---- attempts in flight (issue 14) ------------------------------------------ */

/* An attempt that passed the check and is not recorded yet (its password
 * being checked, or sleeping in the tarpit) leaves a mark in AG_DB_SLOT:
 * FLIGHT_MARK, its expiry (8 bytes, big-endian), pid and a sequence
 * number; the value says whose it is: the host's key (when source rules
 * apply to it), the user's keyed hash. FLIGHT_MARK sorts the marks after
 * every tarpit slot (whose keys begin with their expiry's top byte, 0
 * for ages to come). The check that would take a source or a user past
 * a threshold if everything in flight failed is refused (policy:
 * inflight_full()), so a parallel burst is held to the thresholds: the
 * check and its mark are one write transaction, and write transactions
 * are serialised. The record drops one matching mark; a mark whose
 * attempt never comes back (a killed process, a front end that never
 * records) goes at its expiry: now + tarpit delay + inflight_ttl. At most
 * inflight_max marks live host-wide; past that an attempt goes on
 * unmarked (as before issue 14) rather than being refused. */
#define FLIGHT_VAL_LEN (1 + AG_SRC_KEY_LEN + 4)
#define FLIGHT_HAS_SRC 1u
#define FLIGHT_HAS_USER 2u

struct flight_scan {
	int64_t now;
	uint8_t val[FLIGHT_VAL_LEN]; /* this attempt's */
	uint32_t live, src, user;
	bool drop;                   /* record: delete the first match */
	bool dropped;
};

static void flight_val(const struct op *op, uint8_t val[FLIGHT_VAL_LEN])
{
	memset(val, 0, FLIGHT_VAL_LEN);
	if (op->v.has_addr && !op->v.proxy) {
		val[0] |= FLIGHT_HAS_SRC;
		memcpy(val + 1, op->hkey, AG_SRC_KEY_LEN);
	}
	if (op->v.has_user) {
		val[0] |= FLIGHT_HAS_USER;
		memcpy(val + 1 + AG_SRC_KEY_LEN, &op->v.user_hash, 4);
	}
}

static enum ag_scan_op flight_visit(void *ctx, const void *key, size_t klen, const void *val,
				    size_t vlen)
{
	struct flight_scan *fs = ctx;
	const uint8_t *k = key, *v = val, *mine = fs->val;
	int64_t end = 0;

	if (klen != FLIGHT_KEY_LEN || vlen != FLIGHT_VAL_LEN)
		return AG_SCAN_DELETE;
	end = (int64_t)ag_get_be64(k + 1);
	if (end <= fs->now)
		return AG_SCAN_DELETE;
	bool src = (v[0] & mine[0] & FLIGHT_HAS_SRC) && memcmp(v + 1, mine + 1, AG_SRC_KEY_LEN) == 0;
	bool user = (v[0] & mine[0] & FLIGHT_HAS_USER) &&
		    memcmp(v + 1 + AG_SRC_KEY_LEN, mine + 1 + AG_SRC_KEY_LEN, 4) == 0;
	if (fs->drop && !fs->dropped && memcmp(v, mine, FLIGHT_VAL_LEN) == 0) {
		fs->dropped = true;
		return AG_SCAN_DELETE;
	}
	fs->live++;
	fs->src += src;
	fs->user += user;
	return AG_SCAN_NEXT;
}

/* Whether this check marks its attempt: one whose caller records it
 * (AG_CHECK_INFLIGHT) that goes on (tarpitted or not) from a place
 * unfamiliar to its user, in enforce mode. An owner's
 * login from home stays a read-only check. */
static bool flight_wanted(const struct op *op, const struct ag_verdict *vd)
{
	return op->may_fly && op->c->inflight_max > 0 && op->c->mode == AG_MODE_ENFORCE &&
	       vd->action != AG_ACT_REFUSE && !op->v.trusted && !vd->familiar &&
	       ((op->v.has_addr && !op->v.proxy) || op->v.has_user);
}

/* Count the live marks of this attempt's host and user into the view
 * (dropping expired ones); *live_r: all live marks. */
static int flight_count(struct op *op, struct ag_txn *t, uint32_t *live_r)
{
	uint8_t prefix = FLIGHT_MARK;
	struct flight_scan fs = { .now = op->now };

	flight_val(op, fs.val);
	int rc = ag_txn_scan(t, AG_DB_SLOT, &prefix, 1, flight_visit, &fs);
	op->v.flight_src = fs.src;
	op->v.flight_user = fs.user;
	*live_r = fs.live;
	return rc;
}

static int flight_put(struct op *op, struct ag_txn *t, int64_t delay_ms)
{
	uint8_t key[FLIGHT_KEY_LEN], val[FLIGHT_VAL_LEN];
	int64_t end = op->now + delay_ms + op->c->inflight_ttl;
	uint32_t pid = (uint32_t)getpid(), seq = atomic_fetch_add(&slot_seq, 1);

	key[0] = FLIGHT_MARK;
	ag_put_be64(key + 1, (uint64_t)end);
	memcpy(key + 9, &pid, 4);
	memcpy(key + 13, &seq, 4);
	flight_val(op, val);
	return ag_txn_put(t, AG_DB_SLOT, key, sizeof(key), val, sizeof(val));
}

/* The record: the attempt is no longer in flight (its first mark goes). */
static int flight_drop(struct op *op, struct ag_txn *t)
{
	uint8_t prefix = FLIGHT_MARK;
	struct flight_scan fs = { .now = op->now, .drop = true };

	if (op->c->inflight_max == 0 || op->v.trusted)
		return 0;
	flight_val(op, fs.val);
	return ag_txn_scan(t, AG_DB_SLOT, &prefix, 1, flight_visit, &fs);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- the log line ---------------------------------------------------------- */

static void log_attempt(struct op *op, const char *result, const struct ag_ticket *t,
			const struct ag_verdict *vd, const struct ag_events *ev)
{
	struct ag_logline l = { 0 };
	char line[AG_LOG_LINE_MAX];
	char event[32] = "";
	bool log_only = op->c->mode == AG_MODE_LOG_ONLY;

	if (op->c->log_kind == AG_LOG_NONE)
		return; /* emit() would drop it: do not format it either */

	l.time_ms = op->now;
	l.service = op->a->service;
	l.user = op->v.has_user ? op->a->user : NULL;
	l.user_len = op->a->user_len;
	l.addr = &op->host;
	l.rhost_raw = op->a->rhost;
	l.rhost_len = op->a->rhost != NULL ? op->a->rhost_len : 0;
	l.result = result;
	l.action = ag_action_name((enum ag_action)t->action);
	if (t->action != AG_ACT_ALLOW || t->reason == AG_WHY_TRUSTED || t->fault)
		l.reason = ag_reason_name((enum ag_reason)(t->fault ? AG_WHY_FAULT : t->reason));
	if (log_only) {
		l.would = ag_action_name((enum ag_action)t->would);
		if (t->would != AG_ACT_ALLOW)
			l.reason = ag_reason_name((enum ag_reason)t->would_reason);
	}
	l.delay_ms = t->delay_ms;
	if (vd != NULL) {
		l.src_score = vd->src_score;
		l.user_score = vd->user_score;
		l.familiar = vd->familiar;
		l.until = vd->until;
		l.wave = vd->wave;
	}
	l.user_state = !op->v.has_user ? "none" : op->v.user.lock_until > op->now ? "locked" : "ok";
	l.config = config_state(op->c);
	if (ev != NULL) {
		snprintf(event, sizeof(event), "%s%s%s%s", ev->host_banned ? "ban" : "",
			 ev->host_banned && ev->net_banned ? "+" : "", ev->net_banned ? "net_ban" : "",
			 !ev->user_locked ? ""
			 : ev->slow_lock ? (ev->host_banned || ev->net_banned ? "+slow_lock" : "slow_lock")
			 : ev->host_banned || ev->net_banned ? "+lock" : "lock");
		if (ev->wave_started || ev->wave_ended) /* event=...wave_start, wave_end */
			snprintf(event + strlen(event), sizeof(event) - strlen(event), "%swave_%s",
				 event[0] != '\0' ? "+" : "", ev->wave_started ? "start" : "end");
		l.event = event[0] != '\0' ? event : NULL;
		l.until = ev->host_banned || ev->net_banned ? ev->ban_until : ev->lock_until;
		l.repeat_pw = ev->repeat_pw;
		l.sprayed = ev->hot_pw;
		l.wave = ev->wave;
	}
	ag_log_format(&l, line, sizeof(line));
	emit(op->c, op->sink, AG_LVL_INFO, line, true);
}

/* ---- check --------------------------------------------------------------- */

/* A refusal by the read-only pass: counted in the counter file (the
 * records the store holds, and host-wide), never in a write transaction.
 * The records' last_seen stays as the last write left it (the refusal
 * time is in the counter file): a refused source is banned, or its
 * network, or on the deny list, and a refused user is locked, so no rule
 * and no eviction order reads it. */
static void count_refusal(struct op *op)
{
	struct ag_stats d = { .attempts = 1, .refused = 1 };

	if (op->have_src)
		ag_count_refusal(op->s, AG_DB_SRC, op->hkey, sizeof(op->hkey), op->now);
	if (op->have_user)
		ag_count_refusal(op->s, AG_DB_USER, op->ukey, op->ulen, op->now);
	ag_count_stats(op->s, &d);
}

/* Decide in a read-only transaction; a refusal is counted without a
 * write (count_refusal()); only a verdict that takes a tarpit slot or a
 * damaged record needs the write transaction, which decides again from
 * fresh data. */
static int check_txn(struct op *op, struct ag_verdict *vd, bool write)
{
	struct ag_txn *t;
	struct ag_stats d = { 0 };
	bool enforce = op->c->mode == AG_MODE_ENFORCE;
	int rc = ag_txn_begin(op->s, write, &t);

	if (rc != 0)
		return rc;
	rc = op_load(op, t);
	if (rc != 0)
		goto fail;
	uint32_t flights = 0;
	if (write && op->want_flight) {
		rc = flight_count(op, t, &flights);
		if (rc != 0)
			goto fail;
	}
	ag_policy_check(op->c, &op->v, op->now, vd);
	if (!write) {
		ag_txn_abort(t);
		op->want_flight = flight_wanted(op, vd);
		if (op->damaged || op->want_flight)
			return AG_EAGAIN_WRITE; /* the mark is a write */
		if (enforce && vd->action == AG_ACT_REFUSE && ag_store_counters(op->s) != NULL) {
			count_refusal(op);
			return 0;
		}
		if (enforce && vd->action == AG_ACT_REFUSE)
			return AG_EAGAIN_WRITE; /* no counter file: counted in the store */
		return enforce && vd->action == AG_ACT_TARPIT ? AG_EAGAIN_WRITE : 0;
	}
	if (enforce && vd->action == AG_ACT_TARPIT) {
		rc = slot_take(op, t, vd->delay_ms);
		if (rc < 0)
			goto fail;
		if (rc == 1) {
			/* every slot busy: refuse rather than tie up a worker */
			vd->action = AG_ACT_REFUSE;
			vd->reason = AG_WHY_TARPIT_FULL;
			vd->delay_ms = 0;
			op->v.src.n_refused++;
			op->v.w_src = op->v.has_addr;
		}
	}
	if (op->want_flight && flights < op->c->inflight_max && flight_wanted(op, vd)) {
		rc = flight_put(op, t, vd->action == AG_ACT_TARPIT ? vd->delay_ms : 0);
		if (rc != 0)
			goto fail;
		op->flew = true;
	}
	/* attempts that go on (all of them in log-only mode) are counted
	 * when their result is recorded */
	d.attempts = d.refused = enforce && vd->action == AG_ACT_REFUSE;
	d.tarpitted = enforce && vd->action == AG_ACT_TARPIT;
	d.delay_ms = d.tarpitted ? (uint64_t)vd->delay_ms : 0;
	if (!enforce)
		op->v.w_src = op->v.w_user = false; /* nothing was refused */
	d.faults = op->damaged;
	rc = op_save(op, t);
	if (rc == 0)
		rc = bump_stats(t, &d);
	if (rc != 0)
		goto fail;
	rc = ag_txn_commit(t);
	if (rc == 0) {
		op->wrote = true;
		ag_count_stats(op->s, &d); /* host-wide: counters.h */
	}
	return rc;
fail:
	ag_txn_abort(t);
	return rc;
}

static void maybe_maintain(struct op *op);
static long maintain(const struct ag_conf *c, const struct ag_sink *sink, struct ag_store *s,
		     int64_t now, bool full);

/* Run @fn in a write transaction; on a full map, grow it (up to
 * db_max_size) or make room, and try once more. */
static int with_retry(struct op *op, int (*fn)(struct op *, void *), void *arg)
{
	int rc = fn(op, arg);

	if (rc == AG_EFULL) {
		int grown = ag_store_grow(op->s, op->c->db_max_size);
		if (grown == 0 || maintain(op->c, op->sink, op->s, op->now, true) > 0)
			rc = fn(op, arg);
		else if (grown == AG_ENOMEM)
			rc = AG_ENOMEM;
	}
	if (rc == 0 && op->damaged)
		fault(op->c, op->sink, FAULT_DAMAGED, AG_ECORRUPT, "damaged record reset");
	if (rc == 0) {
		if (op->wrote)
			ag_store_maybe_sync(op->s);
		maybe_maintain(op);
	}
	return rc;
}

/* The store is full (at db_max_size, eviction due): an in-flight mark is
 * not worth an eviction round of its own. The attempt goes on unmarked,
 * as before issue 14: the read-only verdict if it needed no write, else
 * the write pass without the mark; the record that follows makes room
 * as it always did. */
static int check_unmarked(struct op *op, struct ag_verdict *vd, const struct ag_view *fresh)
{
	op->want_flight = false;
	op->v = *fresh;
	if (op->ro.action == AG_ACT_ALLOW) {
		*vd = op->ro;
		return 0;
	}
	int rc = check_txn(op, vd, true);
	if (rc != 0)
		op->v = *fresh;
	return rc;
}

static int check_fn(struct op *op, void *arg)
{
	struct ag_view fresh = op->v;
	int rc = check_txn(op, arg, false);

	op->v = fresh;
	if (rc == AG_EAGAIN_WRITE) {
		op->ro = *(struct ag_verdict *)arg;
		op->have_ro = true;
		op->damaged = false;
		rc = check_txn(op, arg, true);
		if (rc != 0)
			op->v = fresh;
		if (rc == AG_EFULL && op->want_flight)
			rc = check_unmarked(op, arg, &fresh);
	}
	return rc;
}

enum ag_decision ag_guard_check(const struct ag_conf *c, const struct ag_sink *sink,
				const struct ag_attempt *a, struct ag_ticket *t_r)
{
	return ag_guard_check_ex(c, sink, a, 0, t_r);
}

enum ag_decision ag_guard_recheck(const struct ag_conf *c, const struct ag_sink *sink,
				  const struct ag_attempt *a, struct ag_ticket *t_r)
{
	return ag_guard_check_ex(c, sink, a, AG_CHECK_PASSWORD_OK, t_r);
}

enum ag_decision ag_guard_check_ex(const struct ag_conf *c, const struct ag_sink *sink,
				   const struct ag_attempt *a, unsigned flags, struct ag_ticket *t_r)
{
	bool password_ok = (flags & AG_CHECK_PASSWORD_OK) != 0;
	struct ag_ticket t = { .magic = AG_TICKET_MAGIC };
	struct ag_verdict vd = { 0 };
	struct op op;
	int rc = op_prepare(&op, c, sink, a);

	op.may_fly = (flags & AG_CHECK_INFLIGHT) != 0;
	config_fault(c, sink);
	if (rc == 0)
		rc = with_retry(&op, check_fn, &vd);
	if (rc != 0) {
		fault(c, sink, op.s == NULL ? FAULT_OPEN : FAULT_TXN, rc, "check");
		t.fault = 1;
		memset(&vd, 0, sizeof(vd));
		if (op.s != NULL && op.have_ro && op.ro.action == AG_ACT_REFUSE) {
			/* the store could be read and said no: a failed
			 * write of the refusal count must not lift it */
			vd = op.ro;
		} else if (op.s != NULL && op.have_ro && op.ro.action == AG_ACT_TARPIT) {
			/* it said "slow down", but no tarpit slot could be
			 * taken: what a tarpit does when every slot is busy,
			 * rather than let the source go on at full speed */
			vd = op.ro;
			vd.action = AG_ACT_REFUSE;
			vd.reason = AG_WHY_TARPIT_FULL;
			vd.delay_ms = 0;
		} else if (!c->fail_open) {
			vd.action = AG_ACT_REFUSE;
			vd.reason = AG_WHY_FAULT;
		}
	}
	t.would = (uint8_t)vd.action;
	t.would_reason = (uint8_t)vd.reason;
	t.delay_ms = vd.delay_ms;
	t.flying = rc == 0 && op.flew && op.wrote;
	if (c->mode == AG_MODE_LOG_ONLY) {
		/* log-only never refuses, not even on a fault */
		t.action = AG_ACT_ALLOW;
		t.reason = vd.reason == AG_WHY_TRUSTED ? AG_WHY_TRUSTED : AG_WHY_NONE;
	} else {
		t.action = (uint8_t)vd.action;
		t.reason = (uint8_t)vd.reason;
	}
	if (t_r != NULL)
		*t_r = t;
	if (t.action == AG_ACT_REFUSE) {
		log_attempt(&op, password_ok ? "success" : "unchecked", &t, &vd, NULL);
		return AG_REFUSE;
	}
	if (t.action == AG_ACT_TARPIT && !(flags & AG_CHECK_NOSLEEP))
		sleep_ms(t.delay_ms);
	return AG_PROCEED;
}

static int abandon_fn(struct op *op, void *arg)
{
	struct ag_txn *t;
	int rc = ag_txn_begin(op->s, true, &t);

	(void)arg;
	if (rc != 0)
		return rc;
	rc = flight_drop(op, t);
	if (rc == 0)
		return ag_txn_commit(t);
	ag_txn_abort(t);
	return rc;
}

void ag_guard_abandon(const struct ag_conf *c, const struct ag_sink *sink,
		      const struct ag_attempt *a, const struct ag_ticket *t)
{
	struct op op;

	if (t == NULL || t->magic != AG_TICKET_MAGIC || !t->flying)
		return;
	/* a mark that cannot be dropped expires by itself: no fault line */
	if (op_prepare(&op, c, sink, a) == 0)
		(void)with_retry(&op, abandon_fn, NULL);
}

/* ---- record -------------------------------------------------------------- */

/* The attempt's password as the record gets it (ag_record_opts). */
struct pw_in {
	const char *pw;           /* local: the password or a digest, or NULL */
	size_t len;
	bool per_user;
	bool remote;              /* from the fleet: its hashes instead */
	int remote_hash;
	const uint8_t *remote_key;
};

/* What op_load() read (the view and the flags it sets in op) and in which
 * snapshot: a success's read-only pass (record_quiet()) keeps it for its
 * write transaction, which takes it instead of reading again when its id
 * says nothing was committed since (ag_txn_id()). */
struct op_loaded {
	bool valid;
	uint64_t txnid; /* of the read transaction */
	struct ag_view v;
	bool damaged, have_src, have_user, old_pair, old_wave;
};

struct rec_arg {
	bool success, remote;
	int (*in_txn)(struct ag_txn *t, void *arg);
	void *in_arg;
	struct ag_events ev;
	struct ag_verdict vd;
	struct pw_in pw;
	bool fleet_pw; /* the hashes are under the fleet's key (sync.h) */
	struct op_loaded *kept; /* (not zeroed with the rest: only .valid) */
};

/* The key passwords are hashed under: the fleet's when this host is in
 * a fleet that has one (sync.h), so that every host files one password,
 * and counts one user in its record, alike; else the install secret. */
static const uint8_t *pw_secret(struct op *op, struct ag_txn *t, uint8_t fk[AG_FLEET_KEY_LEN])
{
	if (ag_sync_enabled(op->c) && ag_sync_fleet_key_get(t, fk) == 0)
		return fk;
	return ag_store_secret(op->s);
}

/* The user's tag in a hot-password record under @key: the install
 * secret's from the user hash op_prepare() made, another key's from the
 * name keyed again (as op_prepare() keys it: stripped, folded). */
static int pw_user_tag(struct op *op, const uint8_t *key, uint16_t *tag_r)
{
	if (key == ag_store_secret(op->s)) {
		*tag_r = ag_pw_user_tag(key, op->v.user_hash);
		return 0;
	}
	const struct ag_conf *c = op->c;
	uint8_t k[AG_USER_KEY_MAX];
	size_t klen, ulen = ag_user_strip(c->user_fold, op->a->user, op->a->user_len,
					  c->user_strip_domains.v, c->user_strip_domains.n);
	uint32_t h;
	int rc = ag_user_canon(key, c->user_fold, op->a->user, ulen, k, &klen, &h);
	if (rc == 0)
		*tag_r = ag_pw_user_tag(key, h);
	return rc;
}

/* The attempt's password hashes into op->v, inside the record's @t (the
 * fleet's key is read there): the pair's 16-bit hash of a wrong password
 * and, with spray_password_users, the hot-password key and the user's
 * tag. A remote attempt brings its sender's: they count here as the
 * sender's count there when both hosts hash under the fleet's key. */
static int pw_prepare(struct op *op, struct ag_txn *t, const struct pw_in *in, bool success,
		      bool *fleet_r)
{
	uint8_t fk[AG_FLEET_KEY_LEN];
	int rc = 0;

	*fleet_r = false;
	op->v.pw_hash = -1;
	op->v.has_pw = false;
	if (in->remote ? success : in->pw == NULL || in->len == 0)
		return 0; /* nothing to hash: no key read */
	const uint8_t *key = pw_secret(op, t, fk);
	bool fleet = key == fk, spray = op->c->spray_password_users > 0 && op->v.has_user;
	*fleet_r = fleet;
	if (in->remote) {
		op->v.pw_hash = in->remote_hash >= 0 ? in->remote_hash & 0xffff : -1;
		/* a key made under the fleet's key, counted under the same */
		if (in->remote_key != NULL && fleet && spray) {
			memcpy(op->pwkey, in->remote_key, AG_PW_KEY_LEN);
			rc = pw_user_tag(op, key, &op->v.user_tag);
			op->v.has_pw = rc == 0;
		}
		return rc;
	}
	op->v.pw_hash = (int)(ag_siphash(key, in->pw, in->len) & 0xffff);
	if (spray && !in->per_user) {
		ag_pw_key(key, in->pw, in->len, op->pwkey);
		rc = pw_user_tag(op, key, &op->v.user_tag);
		op->v.has_pw = rc == 0;
	}
	return rc;
}

/* What goes to the fleet with a local failure: its hot-password key,
 * when it is the fleet's and the failure counted toward it (a place new
 * to the user: sync.h says why no more). */
static const uint8_t *pw_key_to_send(const struct op *op, const struct rec_arg *arg,
				     bool recorded_success)
{
	if (recorded_success || !arg->fleet_pw || !op->v.has_pw || arg->ev.familiar || op->v.proxy)
		return NULL;
	return op->pwkey;
}

/* A failure that changed only n_fail and last_seen in the user's record
 * (from a place familiar to the user, or with the password that last
 * failed there: the user's counts leave those out) is not written there,
 * but counted in the counter file (counters.h: ag_count_fail()), whose
 * slot for it is claimed here: the users' tree is then not written at
 * all (2-3 pages of a failure's 7-13, issue 15). Not in a batch of the
 * fleet's remote attempts (ag_guard_record_remote_txn(): its caller
 * commits), nor for a damaged or new record. */
static bool user_quiet_failure(struct op *op, const struct ag_user_rec *before)
{
	struct ag_user_rec after = op->v.user;

	if (!op->v.w_user || !op->have_user || op->damaged || after.n_fail != before->n_fail + 1)
		return false;
	after.n_fail = before->n_fail;
	after.last_seen = before->last_seen;
	return memcmp(&after, before, sizeof(after)) == 0 &&
	       ag_count_fail_claim(op->s, op->ukey, op->ulen);
}

/* The record itself, inside @t: what a local attempt and one applied
 * from another host of the fleet share (@remote). @d receives its stats.
 * @loaded: op->v holds the records as this transaction sees them already. */
static int record_in(struct op *op, struct ag_txn *t, bool success, bool remote,
		     struct ag_events *ev, struct ag_stats *d, bool loaded)
{
	int rc = loaded ? 0 : op_load(op, t);

	if (rc != 0)
		return rc;
	struct ag_user_rec before = op->v.user;
	ag_policy_record(op->c, &op->v, op->now, success, ev);
	op->user_counted = !success && !remote && user_quiet_failure(op, &before);
	if (op->user_counted)
		op->v.w_user = false;
	d->attempts = 1;
	d->successes = success;
	d->failures = !success;
	d->bans = ev->host_banned + ev->net_banned;
	d->locks = ev->user_locked;
	d->faults = op->damaged;
	rc = op_save(op, t);
	return rc == 0 ? bump_stats(t, d) : rc;
}

static int record_fn(struct op *op, void *argp)
{
	struct rec_arg *arg = argp;
	struct ag_view fresh = op->v;
	struct ag_stats d = { 0 };
	struct ag_txn *t;
	int rc = ag_txn_begin(op->s, true, &t);

	if (rc != 0)
		return rc;
	/* this attempt is no longer in flight (its mark was read by the
	 * check; the record reads the store afresh) */
	rc = flight_drop(op, t);
	if (rc == 0)
		rc = pw_prepare(op, t, &arg->pw, arg->success, &arg->fleet_pw);
	/* the read-only pass's records, if this transaction sees the same
	 * snapshot (the hashes pw_prepare() just made are the same too: the
	 * key is read from that snapshot). Any commit in between, by any
	 * process or thread (an eviction round before a retry too), and they
	 * are read again. The flight marks go first, with the view as it was
	 * (flight_drop() looks at its trusted). */
	bool loaded = rc == 0 && arg->kept->valid && ag_txn_id(t) == arg->kept->txnid + 1;
	if (loaded) {
		op->v = arg->kept->v;
		op->damaged = arg->kept->damaged;
		op->have_src = arg->kept->have_src;
		op->have_user = arg->kept->have_user;
		op->old_pair = arg->kept->old_pair;
		op->old_wave = arg->kept->old_wave;
	}
	if (rc == 0)
		rc = record_in(op, t, arg->success, false, &arg->ev, &d, loaded);
	if (rc == 0) {
		arg->vd.familiar = arg->ev.familiar;
		arg->vd.user_score = ag_score_at(&op->v.user.fails, op->now, op->c->decay_half_life);
		arg->vd.src_score = ag_score_at(op->v.has_addr && !op->v.proxy ? &op->v.src.fails
									       : &op->v.pair.fails,
						op->now, op->c->decay_half_life);
	}
	/* the fleet's copy commits with the record (sync.h); a success
	 * refused as a hot password's hit went down as a failure, and goes
	 * to the others as one (as a success it would make the place
	 * familiar there) */
	if (rc == 0 && !arg->remote) {
		bool ok = arg->success && !(arg->ev.hot_refused && op->c->mode == AG_MODE_ENFORCE);
		rc = ag_sync_attempt(t, op->c, op->a, ok, op->v.pw_hash, pw_key_to_send(op, arg, ok),
				     op->now);
	}
	if (rc == 0 && arg->in_txn != NULL)
		rc = arg->in_txn(t, arg->in_arg);
	if (rc == 0) {
		rc = ag_txn_commit(t);
		if (rc == 0) {
			op->wrote = true;
			ag_count_stats(op->s, &d); /* host-wide: counters.h */
			if (op->user_counted)
				ag_count_fail(op->s, op->ukey, op->ulen, op->now);
			return 0;
		}
		op->v = fresh;
		return rc;
	}
	ag_txn_abort(t);
	op->v = fresh;
	return rc;
}

/* A success turned into a refusal: its line says refuse, hot_password
 * (log-only: would=refuse). */
static void hot_ticket(struct ag_ticket *t, bool enforce)
{
	if (enforce) {
		t->action = AG_ACT_REFUSE;
		t->reason = AG_WHY_HOT_PASSWORD;
	}
	t->would = AG_ACT_REFUSE;
	t->would_reason = AG_WHY_HOT_PASSWORD;
}

/* A success that would move only counters and timestamps (issue 15): from
 * a place familiar to its user, whose pair has nothing to clear and whose
 * familiarity was renewed less than familiar_ttl / QUIET_RENEW_DIV ago
 * (30d: 11 h). Nothing a later decision reads changes, so nothing is
 * written: the host-wide counters count it (the counter file), the
 * host's, user's and pair's n_success and last_seen stay as the last
 * write left them (a user record that holds nothing else is dropped by
 * the clean-up anyway), and in a fleet no event is sent (each peer
 * renewed the place with the success that renewed it here). */
#define QUIET_RENEW_DIV 64

static bool pair_clean(const struct ag_pair_rec *p)
{
	if (p->fails.v != 0.0 || p->pw_next != 0)
		return false;
	for (int i = 0; i < AG_RECENT_PW; i++)
		if (p->pw[i] != 0 || p->pw_ts[i] != 0)
			return false;
	return true;
}

static bool quiet_success(const struct op *op)
{
	const struct ag_view *v = &op->v;
	int64_t age = op->now - v->pair.last_success;

	return !op->damaged && !v->trusted && !v->denied && ag_pair_familiar(v, op->now) &&
	       pair_clean(&v->pair) && age >= 0 && age < op->c->familiar_ttl / QUIET_RENEW_DIV &&
	       !(v->has_pw && ag_pw_hot(op->c, &v->pw, op->now));
}

/* The read-only pass of a success's record: 1 if it was quiet (counted,
 * nothing written), 0 if it needs its write transaction, or AG_E*. */
static int record_quiet(struct op *op, struct rec_arg *arg)
{
	struct ag_view fresh = op->v;
	struct ag_txn *t;
	int rc = ag_txn_begin(op->s, false, &t);

	if (rc != 0)
		return rc;
	bool fleet;
	uint64_t txnid = ag_txn_id(t);
	rc = pw_prepare(op, t, &arg->pw, true, &fleet); /* for the hot-password record */
	if (rc == 0)
		rc = op_load(op, t);
	ag_txn_abort(t);
	bool quiet = rc == 0 && quiet_success(op);
	if (rc == 0 && !quiet)
		*arg->kept = (struct op_loaded){ .valid = true, .txnid = txnid, .v = op->v,
						 .damaged = op->damaged, .have_src = op->have_src,
						 .have_user = op->have_user, .old_pair = op->old_pair,
						 .old_wave = op->old_wave };
	if (quiet) {
		struct ag_stats d = { .attempts = 1, .successes = 1 };
		arg->ev.familiar = arg->vd.familiar = true;
		arg->ev.wave = arg->vd.wave = ag_wave_on(op->c, &op->v.wave, op->now);
		arg->vd.user_score = ag_score_at(&op->v.user.fails, op->now, op->c->decay_half_life);
		arg->vd.src_score = ag_score_at(&op->v.src.fails, op->now, op->c->decay_half_life);
		ag_count_stats(op->s, &d);
		maybe_maintain(op); /* the clean-up goes on with the store's use */
		return 1;
	}
	op->v = fresh;
	op->damaged = false;
	return rc;
}

int ag_guard_record(const struct ag_conf *c, const struct ag_sink *sink,
		    const struct ag_attempt *a, bool success, const char *password,
		    const struct ag_ticket *tk)
{
	struct ag_record_opts o = { .pw = password };

	o.pw_len = password != NULL ? strlen(password) : 0;
	return ag_guard_record_ex(c, sink, a, success, &o, tk);
}

int ag_guard_record_ex(const struct ag_conf *c, const struct ag_sink *sink,
		       const struct ag_attempt *a, bool success, const struct ag_record_opts *o,
		       const struct ag_ticket *tk)
{
	struct ag_ticket t = { .magic = AG_TICKET_MAGIC };
	struct op_loaded kept;
	kept.valid = false;
	struct rec_arg arg = { .success = success, .remote = o->remote, .in_txn = o->in_txn,
			       .in_arg = o->arg, .kept = &kept,
			       .pw = { .pw = o->pw, .len = o->pw != NULL ? o->pw_len : 0,
				       .per_user = o->pw_per_user, .remote = o->remote,
				       .remote_hash = o->remote_pw_hash,
				       .remote_key = o->remote_pw_key } };
	struct op op;
	int rc;

	if (tk != NULL && tk->magic == AG_TICKET_MAGIC)
		t = *tk;
	config_fault(c, sink);
	rc = op_prepare(&op, c, sink, a);
	if (o->when_ms > 0 && o->when_ms < op.now)
		op.now = o->when_ms;
	/* the password's hashes are made in the record's transaction
	 * (pw_prepare()), under the key it finds there. A familiar success
	 * may need no write; not for a caller whose own data commits with
	 * the record (in_txn), nor without a counter file to count it in */
	int quiet = 0;
	if (rc == 0 && success && !o->remote && o->in_txn == NULL && !t.flying &&
	    ag_store_counters(op.s) != NULL) /* (a mark to drop is a write) */
		quiet = record_quiet(&op, &arg);
	if (quiet < 0)
		rc = quiet;
	else if (rc == 0 && quiet == 0) {
		if (between_fn != NULL && kept.valid)
			between_fn(between_arg);
		rc = with_retry(&op, record_fn, &arg);
	}
	if (rc != 0) {
		fault(c, sink, op.s == NULL ? FAULT_OPEN : FAULT_TXN, rc, "record");
		t.fault = 1;
	}
	bool refused = rc == 0 && arg.ev.hot_refused && c->mode == AG_MODE_ENFORCE;
	if (rc == 0 && arg.ev.hot_refused)
		hot_ticket(&t, c->mode == AG_MODE_ENFORCE);
	if (o->decision_r != NULL)
		*o->decision_r = refused ? AG_REFUSE : AG_PROCEED;
	if (!o->remote) /* the sender wrote its line */
		log_attempt(&op, success ? "success" : "fail", &t, &arg.vd, &arg.ev);
	return rc;
}

/* ---- authguard-sync: remote attempts in the caller's transaction ------------ */

/* The record of a remote attempt (sync.h): record_in(), as for a local one,
 * inside @t, which the caller (ag_sync_apply_batch()) commits with many
 * others: no outbox, no log line, no retry (on a full map the caller
 * aborts and applies one by one through ag_guard_record_ex()). The
 * host-wide counters to add after the commit are added to @d. */
int ag_guard_record_remote_txn(struct ag_txn *t, const struct ag_conf *c,
			       const struct ag_attempt *a, bool success, int64_t when_ms,
			       int pw_hash, const uint8_t *pw_key, struct ag_stats *d)
{
	struct pw_in in = { .remote = true, .remote_hash = pw_hash, .remote_key = pw_key };
	struct ag_events ev;
	struct op op;
	bool fleet;
	int rc = op_prepare(&op, c, NULL, a);

	if (rc != 0)
		return rc;
	if (when_ms > 0 && when_ms < op.now)
		op.now = when_ms;
	rc = pw_prepare(&op, t, &in, success, &fleet);
	if (rc != 0)
		return rc;
	struct ag_stats one = { 0 };
	rc = record_in(&op, t, success, true, &ev, &one, false);
	if (rc == 0 && d != NULL) {
		d->attempts += one.attempts;
		d->successes += one.successes;
		d->failures += one.failures;
		d->bans += one.bans;
		d->locks += one.locks;
		d->faults += one.faults;
	}
	return rc;
}

/* ---- garbage collection and eviction -------------------------------------- */

#define GC_BATCH_DELETES 1000
#define GC_BATCH_VISITS 20000

/* Eviction: when the store is at db_max_size and still over 3/4 full after
 * the dead records went, records that no rule protects (see ag_src_weak())
 * go by the age of their last write, oldest first, until the store would
 * be down to EVICT_TARGET_NUM/EVICT_TARGET_DEN of db_max_size. Half: a
 * round costs a pass over the whole store, so each one frees a quarter of
 * it or more (from 3/4) and the next is that far away; what the lower
 * target costs is the oldest records, the ones a rule is least likely to
 * need. Records written in the last AG_EVICT_RECENT_MS go only when nothing
 * older may (a flood that fills the store that fast), and that is said.
 * Repeat-ban memory (ag_src_ban_memory()) is a second tier: only when the
 * weak records cannot make enough room does it go too, oldest ban end
 * first (the memory with the least time left before ban() forgets it; a
 * failure after the ban moves last_seen, never the ban's end), and that
 * is said; then recent weak records spared above. Active bans, locks and
 * familiar pairs never go.
 * Ages are counted in log-scale buckets, four to each power of two of
 * milliseconds, so the cutoff is off by at most a quarter of its age.
 * A full store costs passes over it, so per process: a write that fails
 * for want of room starts a round at most every EVICT_FULL_GAP_MS; after
 * a round that dropped less than half of what it needed, none for
 * EVICT_IDLE_MS; the dead records are looked for at most every
 * GC_PASS_GAP_MS. */
#define EVICT_TARGET_NUM 1
#define EVICT_TARGET_DEN 2
#define EVICT_BUCKETS 184 /* ages up to 2^47 ms */
#define EVICT_IDLE_MS 1000
#define EVICT_FULL_GAP_MS 250
#define GC_PASS_GAP_MS 1000

struct gc_ctx {
	const struct ag_conf *c;
	struct ag_store *s;   /* dropped records' refusal counts go too */
	int64_t now;
	enum ag_db db;        /* the database scanned */
	enum ag_rec_kind kind; /* of the record visited (pairs live among sources) */
	bool evict;           /* also drop weak records (the store is full) */
	struct ag_txn *t;     /* migrate: the batch's write transaction */
	bool migrate;         /* move the old pair database's live pairs (see below) */
	long moved, batch_moved;
	int err;              /* what stopped the scan (a failed move) */
	bool keep_unknown;    /* keep what does not decode (the background pass) */
	uint64_t *ages;       /* evict: count weak records by age, drop nothing */
	uint64_t *mem_ages;   /* ... and ban-memory records by age of the ban's end */
	int64_t cutoff;       /* evict: drop weak records last written this long ago */
	bool take_mem;        /* evict: drop ban memory too, ... */
	int64_t mem_cutoff;   /* ... of bans that ended this long ago */
	uint64_t goal;        /* evict: stop once the store holds this many records */
	long dropped, batch_dropped, visited, max_visits;
	long mem_dropped, batch_mem; /* of them, ban memory */
	bool is_mem;          /* the record just judged went as ban memory */
	long max_deletes;     /* per batch; 0: GC_BATCH_DELETES */
	uint8_t resume[512];  /* where the next batch starts */
	size_t resume_len;
	bool more;
};

static unsigned age_bucket(int64_t age)
{
	unsigned e = 3;

	if (age < 8)
		return age > 0 ? (unsigned)age : 0;
	if (age >= INT64_C(1) << 47)
		age = (INT64_C(1) << 47) - 1;
	while ((age >> (e + 1)) != 0)
		e++;
	return 8 + (e - 3) * 4 + (unsigned)((age >> (e - 2)) & 3);
}

/* The least age in bucket @b. */
static int64_t bucket_floor(unsigned b)
{
	if (b < 8)
		return b;
	return (int64_t)(4 + (b - 8) % 4) << (3 + (b - 8) / 4 - 2);
}

static int64_t last_write(const struct gc_ctx *g, const void *r)
{
	switch (g->kind) {
	case AG_REC_SRC: return ((const struct ag_src_rec *)r)->last_seen;
	case AG_REC_USER: return ((const struct ag_user_rec *)r)->last_seen;
	case AG_REC_PAIR: return ((const struct ag_pair_rec *)r)->last_seen;
	case AG_REC_PW: return ((const struct ag_pw_rec *)r)->last_seen;
	case AG_REC_STATS: case AG_REC_WAVE: break;
	}
	return 0;
}

/* Whether a weak record goes: in the counting pass it is counted and kept. */
static bool evictable(struct gc_ctx *g, const void *r)
{
	int64_t age = g->now - last_write(g, r);

	if (age < 0)
		age = 0; /* written "in the future": a clock step, treat as now */
	if (g->ages != NULL) {
		g->ages[age_bucket(age)]++;
		return false;
	}
	return age >= g->cutoff;
}

/* Whether a source's repeat-ban memory goes (tier two); counted instead
 * in the counting pass. */
static bool mem_evictable(struct gc_ctx *g, const struct ag_src_rec *r)
{
	int64_t age = g->now - r->ban_until; /* >= 0: the ban is over */

	if (g->ages != NULL) {
		g->mem_ages[age_bucket(age)]++;
		return false;
	}
	return g->take_mem && age >= g->mem_cutoff;
}

static bool rec_droppable(struct gc_ctx *g, const void *key, size_t klen, const void *val,
			  size_t vlen)
{
	union {
		struct ag_src_rec s;
		struct ag_user_rec u;
		struct ag_pair_rec p;
		struct ag_pw_rec w;
	} r;
	bool dead = false, weak = false, mem = false;

	if (ag_rec_decode(g->kind, val, vlen, &r) != 0)
		return !g->keep_unknown && g->ages == NULL; /* damaged, or another version's */
	switch (g->kind) {
	case AG_REC_SRC:
		if (r.s.ban_by_admin != 0 && r.s.ban_until > g->now)
			return false;
		dead = ag_src_dead(g->c, &r.s, g->now);
		weak = g->evict && ag_src_weak(g->c, &r.s, g->now);
		mem = g->evict && !dead && ag_src_ban_memory(g->c, &r.s, g->now);
		break;
	case AG_REC_USER:
		dead = ag_user_dead(g->c, &r.u, g->now);
		weak = g->evict && ag_user_weak(g->c, &r.u, g->now);
		/* its age: also from the failures counted beside it (counters.h) */
		if (weak && g->s != NULL) {
			uint64_t n = 0;
			ag_counted_fails(g->s, key, klen, &n, &r.u.last_seen);
		}
		break;
	case AG_REC_PAIR:
		dead = ag_pair_dead(g->c, &r.p, g->now);
		weak = g->evict && ag_pair_weak(g->c, &r.p, g->now);
		break;
	case AG_REC_PW: /* nothing protects a hot password from eviction */
		dead = ag_pw_dead(g->c, &r.w, g->now);
		weak = g->evict;
		break;
	case AG_REC_STATS: case AG_REC_WAVE:
		return false;
	}
	if (g->ages != NULL) { /* counting; the dead go in the deleting pass anyway */
		if (weak && !dead)
			(void)evictable(g, &r);
		else if (mem)
			(void)mem_evictable(g, &r.s);
		return false;
	}
	if (dead || (weak && evictable(g, &r)))
		return true;
	g->is_mem = mem && mem_evictable(g, &r.s);
	return g->is_mem;
}

/* One pass over the record databases in short transactions (the writer
 * lock is held for one batch at a time, not for the whole store). The
 * old pair database first: what it still holds (pairs older modules
 * wrote) is moved on by the passes that migrate. */
static const struct { enum ag_db db; enum ag_rec_kind kind; } gc_dbs[] = {
	{ AG_DB_PAIR, AG_REC_PAIR }, { AG_DB_USER, AG_REC_USER }, { AG_DB_SRC, AG_REC_SRC },
	{ AG_DB_PW, AG_REC_PW },
};

static enum ag_rec_kind gc_kind(enum ag_db db)
{
	for (size_t i = 0; i < AG_ARRAY_LEN(gc_dbs); i++)
		if (gc_dbs[i].db == db)
			return gc_dbs[i].kind;
	return AG_REC_STATS;
}

/* Move a live pair of the old pair database to its place in the source
 * database (folded into a copy already there), as the guard does when it
 * writes one: the hourly pass and authguard-admin gc empty the old
 * database in bounded batches, so that a store whose older modules are
 * gone ends with none. AG_ENOTFOUND: not a pair key. */
static int migrate_pair(struct gc_ctx *g, const void *key, size_t klen, const void *val,
			size_t vlen)
{
	const uint8_t *ukey;
	size_t ulen;
	struct ag_addr src;
	struct ag_pair_rec r, mine;
	uint8_t skey[AG_SRC_KEY_LEN] = { 0 }, nkey[AG_SRC_PAIR_KEY_MAX];
	const void *cur;
	size_t curlen;

	if (ag_pair_key_decode(key, klen, true, &ukey, &ulen, &src) != 0)
		return AG_ENOTFOUND;
	/* a pair's key with a value that does not decode (only older
	 * modules write here: damage, not a newer version): nothing to move,
	 * it goes */
	if (ag_rec_decode(AG_REC_PAIR, val, vlen, &r) != 0)
		return 0;
	if (src.family != AG_AF_NONE)
		ag_src_key(&src, skey);
	size_t nlen = ag_pair_key(skey, ukey, ulen, nkey);
	int rc = ag_txn_get(g->t, AG_DB_SRC, nkey, nlen, &cur, &curlen);
	if (rc == 0 && ag_rec_decode(AG_REC_PAIR, cur, curlen, &mine) == 0) {
		ag_pair_merge(&mine, &r, g->now, g->c->decay_half_life);
		r = mine;
	} else if (rc != 0 && rc != AG_ENOTFOUND) {
		return rc;
	}
	return ag_txn_put(g->t, AG_DB_SRC, nkey, nlen, &r, sizeof(r));
}

static enum ag_scan_op gc_visit(void *ctxp, const void *key, size_t klen, const void *val,
				size_t vlen)
{
	struct gc_ctx *g = ctxp;

	long max_deletes = g->max_deletes > 0 ? g->max_deletes : GC_BATCH_DELETES;

	if (g->batch_dropped + g->batch_moved >= max_deletes || ++g->visited > g->max_visits) {
		/* this batch is done: the next one starts at this key */
		g->resume_len = klen < sizeof(g->resume) ? klen : sizeof(g->resume);
		memcpy(g->resume, key, g->resume_len);
		g->more = true;
		return AG_SCAN_STOP;
	}
	g->is_mem = false;
	g->kind = g->db == AG_DB_SRC && klen != AG_SRC_KEY_LEN ? AG_REC_PAIR : gc_kind(g->db);
	if (!rec_droppable(g, key, klen, val, vlen)) {
		if (!g->migrate || g->db != AG_DB_PAIR)
			return AG_SCAN_NEXT;
		int rc = migrate_pair(g, key, klen, val, vlen);
		if (rc == AG_ENOTFOUND)
			return AG_SCAN_NEXT; /* a key of no pair: left as it is */
		if (rc != 0) {
			g->err = rc;
			return AG_SCAN_STOP;
		}
		g->batch_moved++;
		return AG_SCAN_DELETE;
	}
	g->batch_dropped++;
	g->batch_mem += g->is_mem;
	if (g->s != NULL && (g->kind == AG_REC_SRC || g->kind == AG_REC_USER))
		ag_count_forget(g->s, g->kind == AG_REC_SRC ? AG_DB_SRC : AG_DB_USER, key, klen);
	return AG_SCAN_DELETE;
}


static uint64_t store_records(struct ag_store *s)
{
	struct ag_store_info info;

	if (ag_store_info(s, &info) != 0)
		return 0;
	return info.entries[AG_DB_SRC] + info.entries[AG_DB_USER] + info.entries[AG_DB_PAIR] +
	       info.entries[AG_DB_PW];
}

/* One batch of @g in database @i, from g->resume. A full map can refuse
 * even deletes (each copies the pages it touches): then the batch is
 * tried again with half as many, down to one. */
static int gc_batch(struct gc_ctx *g, struct ag_store *s, size_t i)
{
	bool write = g->ages == NULL;
	uint8_t from[sizeof(g->resume)];
	size_t from_len = g->resume_len;
	int rc;

	memcpy(from, g->resume, from_len);
	g->max_deletes = GC_BATCH_DELETES;
	g->s = s;
	for (;;) {
		struct ag_txn *t;
		rc = ag_txn_begin(s, write, &t);
		if (rc != 0)
			return rc;
		g->more = false;
		g->batch_dropped = g->batch_mem = g->batch_moved = g->visited = 0;
		g->t = t;
		g->err = 0;
		/* relies on @from being a key the last batch was given (or
		 * empty): in layout 2 store.c maps it as a key, so the batch
		 * goes on where the last stopped in the stored order; the
		 * users' database is the sources' 0x01 range there, and a scan
		 * of the sources steps over it */
		rc = ag_txn_scan_from(t, gc_dbs[i].db, from, from_len, gc_visit, g);
		rc = rc == 0 ? g->err : rc;
		if (rc == 0 && write)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
		if (rc != AG_EFULL || g->max_deletes == 1)
			break;
		g->max_deletes /= 2;
	}
	if (rc == 0) {
		g->dropped += g->batch_dropped;
		g->mem_dropped += g->batch_mem;
		g->moved += g->batch_moved;
	}
	return rc;
}

/* Run @g over the record databases: in write transactions that drop what
 * rec_droppable() says, or (counting) in read-only ones. With a goal, the
 * store's own count is read once per database (another process may evict
 * too), and what this one drops is subtracted from it in between. */
static long gc_run(struct gc_ctx *g, struct ag_store *s)
{
	g->max_visits = GC_BATCH_VISITS;
	for (size_t i = 0; i < AG_ARRAY_LEN(gc_dbs); i++) {
		uint64_t held = g->goal != 0 ? store_records(s) : 0;
		long from = g->dropped;
		g->db = gc_dbs[i].db;
		g->kind = gc_dbs[i].kind;
		g->resume_len = 0;
		do {
			uint64_t mine = (uint64_t)(g->dropped - from);
			if (g->goal != 0 && (held <= mine || held - mine <= g->goal))
				return g->dropped;
			int rc = gc_batch(g, s, i);
			if (rc != 0)
				return rc;
		} while (g->more);
	}
	return g->dropped;
}

/* @migrate: also move the old pair database's live pairs (not when
 * making room in a full store: a move writes a page before it frees one). */
static long gc_pass(const struct ag_conf *c, struct ag_store *s, int64_t now, bool migrate)
{
	struct gc_ctx g = { .c = c, .now = now, .migrate = migrate };

	return gc_run(&g, s);
}

long ag_guard_gc(const struct ag_conf *c, int64_t now)
{
	struct ag_store *s;
	int rc = ag_store_get(c->db_dir, &s);

	return rc != 0 ? rc : gc_pass(c, s, now, true);
}

/* One eviction round's plan and result. */
struct evict_round {
	uint64_t before, need, weak, mem, dropped, mem_dropped;
	int64_t cutoff, mem_cutoff;
	bool recent;  /* it takes records written in the last AG_EVICT_RECENT_MS */
	bool take_mem; /* it takes repeat-ban memory */
};

/* The oldest buckets of @ages down to @least that hold @want records (or
 * all of them): the least age to take, INT64_MAX for none; adds what it
 * takes to @got. */
static int64_t evict_cut(const uint64_t *ages, unsigned least, uint64_t want, uint64_t *got)
{
	unsigned b = EVICT_BUCKETS;
	uint64_t n = 0;

	while (b > least && n < want)
		n += ages[--b];
	*got += n;
	return b < EVICT_BUCKETS && n > 0 ? bucket_floor(b) : INT64_MAX;
}

/* Count the weak and the ban-memory records by age (read-only batches)
 * and pick the cutoffs: the weak ones oldest first until @r->need, but
 * none younger than AG_EVICT_RECENT_MS while any older one is left; if
 * that is not enough, ban memory oldest ban end first; then the recent
 * weak ones. */
static int evict_plan(const struct ag_conf *c, struct ag_store *s, int64_t now,
		      struct evict_round *r)
{
	uint64_t ages[EVICT_BUCKETS] = { 0 }, mem_ages[EVICT_BUCKETS] = { 0 }, got = 0, older = 0;
	struct gc_ctx g = { .c = c, .now = now, .evict = true, .ages = ages, .mem_ages = mem_ages };
	long rc = gc_run(&g, s);
	unsigned least = 0;

	if (rc < 0)
		return (int)rc;
	for (unsigned i = 0; i < EVICT_BUCKETS; i++) {
		r->weak += ages[i];
		r->mem += mem_ages[i];
		older += bucket_floor(i) >= AG_EVICT_RECENT_MS ? ages[i] : 0;
	}
	while (older > 0 && bucket_floor(least) < AG_EVICT_RECENT_MS)
		least++; /* enough older ones to go on with: spare the recent */
	r->cutoff = evict_cut(ages, least, r->need, &got);
	r->mem_cutoff = INT64_MAX;
	if (got < r->need && r->mem > 0) {
		r->mem_cutoff = evict_cut(mem_ages, 0, r->need - got, &got);
		r->take_mem = r->mem_cutoff != INT64_MAX;
	}
	if (got < r->need && least > 0) { /* the spared recent ones last */
		uint64_t all = 0; /* from the oldest: all the older ones, then these */
		int64_t recent = evict_cut(ages, 0, older + (r->need - got), &all);
		r->cutoff = recent != INT64_MAX ? recent : r->cutoff;
	}
	r->recent = r->cutoff < AG_EVICT_RECENT_MS;
	return 0;
}

/* Add the round to the host-wide counters (leaving a newer version's alone). */
static int evict_note(struct ag_store *s, int64_t now, const struct evict_round *r,
		      struct ag_evict_stats *e)
{
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t);

	if (rc != 0)
		return rc;
	rc = ag_admin_evictions(t, e);
	if (rc == AG_ENEWER) {
		ag_txn_abort(t);
		return 0;
	}
	if (rc != 0) { /* damaged: start again */
		memset(e, 0, sizeof(*e));
		e->version = AG_EVICT_VERSION;
	}
	e->rounds++;
	e->records += r->dropped;
	e->recent_rounds += r->recent;
	e->last_ms = now > 0 ? now : 1;
	e->last_cutoff_ms = r->cutoff;
	e->last_records = r->dropped;
	e->last_before = r->before;
	rc = ag_txn_put(t, AG_DB_META, "evict", 5, e, sizeof(*e));
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	return ag_txn_commit(t);
}

static void evict_say(const struct ag_conf *c, const struct ag_sink *sink,
		      const struct evict_round *r, const struct ag_evict_stats *e)
{
	char what[480], mem[160] = "";

	if (r->take_mem)
		snprintf(mem, sizeof(mem),
			 ", REPEAT-BAN MEMORY TOO: %" PRIu64 " sources whose ban ended %.1f s ago or"
			 " more (their records went, counts and all: their next ban is not doubled)",
			 r->mem_dropped, (double)r->mem_cutoff / 1000.0);
	if (r->weak == 0 && !r->take_mem)
		snprintf(what, sizeof(what),
			 "store full at db_max_size=%" PRId64 "M and nothing may be evicted (%" PRIu64
			 " records, all banned, locked or familiar)",
			 c->db_max_size >> 20, r->before);
	else
		snprintf(what, sizeof(what),
			 "store full at db_max_size=%" PRId64 "M: evicted %" PRIu64 " of %" PRIu64
			 " records, oldest first: those last written %.1f s ago or more%s%s"
			 " (%" PRIu64 " rounds, %" PRIu64 " records in all)",
			 c->db_max_size >> 20, r->dropped, r->before,
			 r->cutoff == INT64_MAX ? 0.0 : (double)r->cutoff / 1000.0,
			 r->recent ? ", RECENT ONES TOO: nothing older was left" : "", mem, e->rounds,
			 e->records);
	fault(c, sink, FAULT_EVICT, 0, what);
}

/* Per process (wall clock, pace_fn): no round before evict_quiet_until_ms (after a
 * round that found too little to evict, or a full round a moment ago);
 * the last gc_pass() of maintain(). */
static _Atomic int64_t evict_quiet_until_ms, last_gc_pass_ms;

/* True while @until (a wall-clock time no more than @span ahead) is to
 * come; a clock stepped back ends the wait. */
static bool still_before(int64_t wall, int64_t until, int64_t span)
{
	return wall < until && until - wall <= span;
}

/* One eviction round. @full: a write has just failed for want of room;
 * otherwise (the periodic look) a round is only started once the store
 * holds more than half of what the last round took again, since pages
 * that deletes left half empty keep the store looking full. Returns the
 * records evicted, or AG_E*. */
static long evict(const struct ag_conf *c, const struct ag_sink *sink, struct ag_store *s,
		  int64_t now, uint64_t used, bool full)
{
	struct evict_round r = { .before = store_records(s) };
	struct ag_evict_stats e = { 0 };
	struct ag_txn *t;
	int64_t wall = pace_fn();
	uint64_t target = (uint64_t)c->db_max_size / EVICT_TARGET_DEN * EVICT_TARGET_NUM;

	if (!full && ag_txn_begin(s, false, &t) == 0) {
		int rc = ag_admin_evictions(t, &e);
		ag_txn_abort(t);
		if (rc == 0 && e.rounds > 0) {
			uint64_t left = e.last_before > e.last_records ? e.last_before - e.last_records : 0;
			if (r.before <= left + e.last_records / 2)
				return 0;
		}
	}
	/* records go in proportion to the bytes that must */
	if (used > target)
		r.need = (uint64_t)((double)r.before * (double)(used - target) / (double)used);
	if (r.need == 0)
		return 0;
	int rc = evict_plan(c, s, now, &r);
	if (rc != 0)
		return rc;
	if (r.weak > 0 || r.take_mem) {
		struct gc_ctx g = { .c = c, .now = now, .evict = true, .cutoff = r.cutoff,
				    .take_mem = r.take_mem, .mem_cutoff = r.mem_cutoff,
				    .goal = r.before - r.need };
		long n = gc_run(&g, s);
		if (n < 0)
			return n;
		r.dropped = (uint64_t)n;
		r.mem_dropped = (uint64_t)g.mem_dropped;
		rc = evict_note(s, now, &r, &e);
	} else {
		memset(&e, 0, sizeof(e));
	}
	if (r.dropped < r.need / 2) /* too little to be worth a pass for a while */
		evict_quiet_until_ms = wall + EVICT_IDLE_MS;
	else if (full)
		evict_quiet_until_ms = wall + EVICT_FULL_GAP_MS;
	evict_say(c, sink, &r, &e);
	return rc != 0 ? rc : (long)r.dropped;
}

/* Make room: drop dead records; if the store is still over 3/4 full at
 * db_max_size, evict (see evict()). */
static long maintain(const struct ag_conf *c, const struct ag_sink *sink, struct ag_store *s,
		     int64_t now, bool full)
{
	uint64_t used, map;
	int64_t wall = pace_fn();
	long n = 0;

	if (still_before(wall, evict_quiet_until_ms, EVICT_IDLE_MS))
		return 0; /* a round a moment ago: it found too little, or is this recent */
	if (!still_before(wall, last_gc_pass_ms + GC_PASS_GAP_MS, GC_PASS_GAP_MS)) {
		last_gc_pass_ms = wall;
		n = gc_pass(c, s, now, false);
	}
	if (n < 0)
		return n;
	if (ag_store_usage(s, &used, &map) == 0 && used * 4 > (uint64_t)c->db_max_size * 3) {
		long m = evict(c, sink, s, now, used, full);
		if (m < 0)
			return m;
		n += m;
	}
	return n;
}

/* ---- the hourly background pass ------------------------------------------ */

/* Dead records (nothing a rule needs any more: names, addresses, password
 * hashes of old failures) would otherwise stay until the store nears
 * db_max_size. So a host-wide pass over the record databases starts at most
 * once an hour, and goes on in small steps, one per maintenance look of any
 * process (every 64 writes), each in its own short write transaction. Where
 * it is, and when the last pass ended, is kept in the store ("gc" in meta):
 * the processes share it. The stored state is checked like any record. */
#define GC_EVERY_MS INT64_C(3600000)
#define GC_STEP_VISITS 5000
#define GC_STATE_VERSION 1
#define GC_RETRY_MS 60000

struct gc_state {
	uint32_t version;
	uint32_t db;          /* index in gc_dbs */
	int64_t done_ms;      /* when the last whole pass ended */
	uint32_t resume_len;  /* where the next step starts in gc_dbs[db] */
	uint8_t resume[512];  /* any key the store takes (at most 511 bytes) */
};

/* Reads the pass state into @st. Returns false when it belongs to another
 * (newer) version of authguard sharing the store: leave the pass to it. */
static bool gc_state_get(struct ag_txn *t, struct gc_state *st)
{
	const void *val;
	size_t vlen;
	uint32_t version = 0;

	if (ag_txn_get(t, AG_DB_META, "gc", 2, &val, &vlen) == 0 && vlen >= sizeof(version)) {
		memcpy(&version, val, sizeof(version));
		if (version > GC_STATE_VERSION)
			return false;
		if (version == GC_STATE_VERSION && vlen == sizeof(*st)) {
			memcpy(st, val, sizeof(*st));
			if (st->db < AG_ARRAY_LEN(gc_dbs) && st->resume_len <= sizeof(st->resume) &&
			    st->done_ms >= 0)
				return true;
		}
	}
	memset(st, 0, sizeof(*st)); /* none yet, or damaged: start a pass */
	st->version = GC_STATE_VERSION;
	return true;
}

static bool gc_due(const struct gc_state *st, int64_t now)
{
	if (st->db != 0 || st->resume_len != 0 || st->done_ms == 0)
		return true; /* under way, or never run */
	if (now >= st->done_ms)
		return now - st->done_ms >= GC_EVERY_MS;
	/* processes read the clock at slightly different times; only a clock
	 * set back by more than the period starts a pass early */
	return st->done_ms - now > GC_EVERY_MS;
}

/* One step of the hourly pass, if one is due: up to GC_STEP_VISITS records
 * looked at, going on into the next database while that budget lasts (so a
 * small store is done in one step). Returns records dropped, or a negative
 * AG_E* code. */
static long gc_step(const struct ag_conf *c, struct ag_store *s, int64_t now)
{
	struct gc_state st;
	struct ag_txn *t;
	long dropped = 0, budget = GC_STEP_VISITS;
	int rc = ag_txn_begin(s, false, &t);

	if (rc != 0)
		return rc;
	bool ours = gc_state_get(t, &st);
	ag_txn_abort(t);
	if (!ours || !gc_due(&st, now))
		return 0; /* the common case: a read, no write */
	rc = ag_txn_begin(s, true, &t);
	if (rc != 0)
		return rc;
	/* again: another process may have moved it on */
	if (!gc_state_get(t, &st) || !gc_due(&st, now)) {
		ag_txn_abort(t);
		return 0;
	}
	while (rc == 0 && budget > 0) {
		struct gc_ctx g = { .c = c, .s = s, .now = now, .db = gc_dbs[st.db].db,
				    .kind = gc_dbs[st.db].kind, .keep_unknown = true,
				    .max_visits = budget, .t = t, .migrate = true };
		memcpy(g.resume, st.resume, st.resume_len);
		g.resume_len = st.resume_len;
		/* (as gc_batch(); a key kept from before upgrade-store resumes
		 * in layout 2's order: this pass may skip or see again a few
		 * records, the next one sees them) */
		rc = ag_txn_scan_from(t, gc_dbs[st.db].db, g.resume, g.resume_len, gc_visit, &g);
		rc = rc == 0 ? g.err : rc;
		if (rc != 0)
			break;
		dropped += g.batch_dropped;
		if (g.more) {
			st.resume_len = (uint32_t)g.resume_len;
			memcpy(st.resume, g.resume, g.resume_len);
			break;
		}
		st.resume_len = 0;
		if (++st.db == AG_ARRAY_LEN(gc_dbs)) {
			st.db = 0;
			st.done_ms = now > 0 ? now : 1;
			break;
		}
		budget -= g.visited;
	}
	if (rc == 0)
		rc = ag_txn_put(t, AG_DB_META, "gc", 2, &st, sizeof(st));
	if (rc == 0)
		rc = ag_txn_commit(t);
	else
		ag_txn_abort(t);
	return rc != 0 ? rc : dropped;
}

static _Atomic int64_t last_maintain_ms, last_gc_fail_ms;

/* Every 64 writes a process looks at how full the store is (a short read
 * transaction; memory reads, no system call). Past 3/4 of the map, or of
 * db_max_size if that is smaller, it grows the map; once at db_max_size
 * it makes room (at most once a second per process) before writes fail.
 * Below that, it takes a step of the hourly clean-up when one is due. */
static _Atomic uint32_t writes_since_look;

static void maybe_maintain(struct op *op)
{
	uint64_t used, map;

	if (atomic_fetch_add(&writes_since_look, 1) % 64 != 0)
		return;
	if (ag_store_usage(op->s, &used, &map) != 0)
		return;
	uint64_t max = (uint64_t)op->c->db_max_size, limit = map < max ? map : max;
	if (used * 4 <= limit * 3) {
		/* after a failed step (a damaged page, a full map) this process
		 * leaves the pass alone for a minute */
		int64_t failed = last_gc_fail_ms, now = pace_fn();
		if (failed != 0 && now - failed < GC_RETRY_MS && now >= failed)
			return;
		long n = gc_step(op->c, op->s, op->now);
		if (n < 0) {
			last_gc_fail_ms = now;
			fault(op->c, op->sink, FAULT_HOUSEKEEPING, (int)n, "the hourly clean-up");
		}
		return;
	}
	if (map < max && ag_store_grow(op->s, op->c->db_max_size) == 0)
		return;
	int64_t now = pace_fn(), last = last_maintain_ms;
	if (now - last < 1000 && now >= last)
		return;
	if (!atomic_compare_exchange_strong(&last_maintain_ms, &last, now))
		return;
	long n = maintain(op->c, op->sink, op->s, op->now, false);
	if (n < 0)
		fault(op->c, op->sink, FAULT_TXN, (int)n, "making room in the store");
}
