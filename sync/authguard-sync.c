/*
 * authguard-sync - the fleet daemon (issue 13): one per host, it pushes
 * the store's outbox to a Redis stream and applies the other hosts'
 * events to the local store, so the hosts of one mail service act as one
 * guard. Redis is never on the authentication path: every host decides
 * from its own store; this daemon only keeps the stores in step.
 *
 * Two threads, each with its own Redis connection:
 *   pusher: the oldest outbox events (in sequence order) are sent with one
 *           pipelined XADD each (MAXLEN ~ sync_stream_max), then deleted
 *           from the outbox; a crash in between sends them again, and the
 *           receivers skip them (the sender's sequence number, sync.h).
 *   reader: XREAD BLOCK from the position kept in the store; each entry's
 *           HMAC-SHA256 under the cluster key is checked (a bad or missing
 *           one is rejected and logged), the host's own entries skipped,
 *           the rest applied with the position in the same transaction.
 * The main thread waits for signals and writes the state authguard-admin
 * status shows, once a second. While Redis is away both threads retry
 * with a growing delay (up to 5 s) and a fault line is logged at once and
 * every 30 s; when it is back the outbox (what happened meanwhile) goes
 * out and the stream is read on from the position: every event arrives.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "agd.h"
#include "guard.h"
#include "store.h"
#include "sync.h"

#define NAME "authguard-sync"
#define KEY_MIN 32
#define KEY_MAX 4096
#define MAC_LEN 32
#define PUSH_BATCH 256
#define READ_BATCH 512
#define READ_BLOCK_MS 500
#define IO_TIMEOUT_MS 3000
#define BACKOFF_MAX_MS 5000
#define FAULT_EVERY_MS 30000
#define IDLE_POLL_MS 2 /* the pusher looks at the outbox this often (a read transaction) */
#define READ_GATHER_MS 2
/* Sent events are deleted from the outbox in one transaction once
 * DRAIN_AFTER were sent (an event is about 110 bytes with its key), or
 * the oldest of them waited DRAIN_EVERY_MS: a few transactions a second
 * rather than one per push, while the queue stays small enough to share
 * the meta database's leaf that a record writes anyway (sync.c); a
 * deeper tree would cost every record a page per level (bench_sync -P). */
#define DRAIN_EVERY_MS 250
#define DRAIN_AFTER 16
/* Older modules' events (the old place, sync.h): looked for this often
 * (a cursor's look in a read transaction the pusher has open anyway; at
 * every 2 ms poll it cost the idle daemon measurably), and moved into the
 * outbox as soon as seen, again at once while a move fills a batch. */
#define OLD_LOOK_MS 20
#define FLUSH_EVERY_MS 500
#define RESUME_SCAN 8192
#define RESUME_PAGES 16 /* at start: this host's entries among the newest 131072 */
#define SENTINEL_TIMEOUT_MS 1000
#define ROLE_CHECK_MS 1000

static const char usage[] =
	"usage: " NAME " [-c CONF] [-t] [-h] [-V]\n"
	"  -c CONF  config file (default " AG_DEFAULT_CONF ")\n"
	"  -t       check the config, the key and the store, then exit\n"
	"Pushes this host's events to the Redis stream sync_stream at sync_redis and\n"
	"applies the other hosts' (authguard-sync(8)).\n";

static struct {
	struct agd d;
	struct ag_store *s;
	uint8_t key[KEY_MAX];
	size_t key_len;
	char host[64];
	char password[512];
	atomic_bool stop;
	atomic_bool restart;     /* SIGHUP: the threads stop, the new config goes in */
	char primary[AG_CONF_STR_MAX]; /* with Sentinel: the primary last followed (under mu) */
	pthread_mutex_t mu; /* guards st and the fault times */
	struct ag_sync_status st;
	uint64_t outbox_dropped; /* last seen, to log new drops */
	bool old_seen;           /* the old place's events were met (logged once) */
	/* per peer (in memory): the last sequence number, for gaps */
	struct { char host[64]; uint64_t epoch, seq; } seen[AG_SYNC_PEERS];
	unsigned nseen;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* ---- state and faults ------------------------------------------------------------ */

struct link {
	const char *role;      /* "push", "read" */
	redisContext *rc;
	int64_t down_since;    /* 0: up */
	int64_t last_fault;
	int64_t backoff;
	char addr[AG_CONF_STR_MAX]; /* the server it talks to (with Sentinel: the primary named) */
	int64_t role_checked;  /* with Sentinel: when ROLE last said "master" */
	unsigned sentinel_first; /* the sentinel that answered last: asked first */
	unsigned wait_short;   /* WAITs in a row that fewer replicas answered */
	int64_t last_moved;    /* the last fault line of link_moved() */
	unsigned long ups;     /* connections made: the pusher looks back after each */
};

/* What a log line calls the Redis a link talks to: the address it dialled
 * last (with Sentinel, the primary they named), before that the config's. */
static const char *where(const struct link *l)
{
	return l->addr[0] != '\0' ? l->addr : g.d.conf.sync_redis;
}

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g.mu);
	va_start(ap, fmt);
	vsnprintf(g.st.last_error, sizeof(g.st.last_error), fmt, ap);
	va_end(ap);
	g.st.last_error_ms = ag_now_ms();
	pthread_mutex_unlock(&g.mu);
}

static void set_connected(bool up)
{
	pthread_mutex_lock(&g.mu);
	if (g.st.connected != (uint32_t)up) {
		g.st.connected = up;
		g.st.since_ms = ag_now_ms();
	}
	pthread_mutex_unlock(&g.mu);
}

/* The events waiting: in the outbox, and in the old place that modules
 * loaded before an upgrade still write (sync.h), until they are moved. */
static uint64_t outbox_depth(void)
{
	struct ag_outbox_state ob = { 0 }, old = { 0 };
	struct ag_txn *t;

	if (ag_txn_begin(g.s, false, &t) == 0) {
		(void)ag_outbox_state(t, &ob);
		(void)ag_outbox_old_state(t, &old);
		ag_txn_abort(t);
	}
	return ob.depth + old.depth;
}

/* Redis went away (or never came): a fault line at once, then every 30 s
 * while it lasts, saying what the host does meanwhile. */
static void link_down(struct link *l, const char *reason)
{
	int64_t now = ag_now_ms();
	char why[256];

	/* @reason may be the context's own errstr */
	snprintf(why, sizeof(why), "%s", reason[0] != '\0' ? reason : "connection lost");
	if (l->rc != NULL) {
		redisFree(l->rc);
		l->rc = NULL;
	}
	set_error("%s: %s", l->role, why);
	set_connected(false);
	if (l->down_since == 0)
		l->down_since = now;
	if (l->last_fault == 0 || now - l->last_fault >= FAULT_EVERY_MS) {
		l->last_fault = now;
		agd_log(AG_LVL_ERR,
			NAME " fault: Redis %s (%s) unreachable for %" PRId64 " s: %s; this host "
			"guards with what it knows, %" PRIu64 " events wait in the outbox",
			where(l), l->role, (now - l->down_since) / 1000, why, outbox_depth());
	}
	l->backoff = l->backoff == 0 ? 100 : l->backoff * 2;
	if (l->backoff > BACKOFF_MAX_MS)
		l->backoff = BACKOFF_MAX_MS;
}

static bool running(void)
{
	return !atomic_load(&g.stop) && !atomic_load(&g.restart);
}

static void sleep_ms(int64_t ms)
{
	/* in small steps, so SIGTERM (or SIGHUP) is seen quickly */
	while (ms > 0 && running()) {
		int64_t step = ms < 50 ? ms : 50;
		struct timespec ts = { 0, (long)step * 1000000L };
		nanosleep(&ts, NULL);
		ms -= step;
	}
}

/* ---- Redis ----------------------------------------------------------------------------- */

static bool sentinel_mode(void)
{
	return g.d.conf.sync_sentinels.n > 0;
}

/* "host:port" or "[v6]:port" into @host (brackets dropped) and *@port;
 * false if it is neither (the config checked it, a sentinel may not). */
static bool split_hostport(const char *a, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(a, ':');
	size_t hl = colon != NULL ? (size_t)(colon - a) : 0;
	char *end;

	if (hl == 0 || hl >= hostlen || !isdigit((unsigned char)colon[1]))
		return false; /* strtol would take " 80", "+80" */
	long p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
		return false;
	memcpy(host, a, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	*port = (int)p;
	return true;
}

/* A connection to @addr (host:port, or unix:/path) with @ms for the
 * connect and for each reply, or NULL with why in @err. */
static redisContext *dial(const char *addr, int64_t ms, char *err, size_t errlen)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
	redisContext *rc;
	char host[256];
	int port;

	if (strncmp(addr, "unix:", 5) == 0) {
		rc = redisConnectUnixWithTimeout(addr + 5, tv);
	} else if (split_hostport(addr, host, sizeof(host), &port)) {
		rc = redisConnectWithTimeout(host, port, tv);
	} else {
		snprintf(err, errlen, "'%s' is not host:port", addr);
		return NULL;
	}
	if (rc == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (rc->err) {
		snprintf(err, errlen, "%s", rc->errstr);
		redisFree(rc);
		return NULL;
	}
	(void)redisSetTimeout(rc, tv);
	return rc;
}

/* AUTH with sync_redis_user / sync_redis_password_file (if a password is
 * set). @optional (a sentinel): one that has no password takes none. */
static bool auth(redisContext *rc, bool optional, char *err, size_t errlen)
{
	redisReply *r;

	if (g.password[0] == '\0')
		return true;
	if (g.d.conf.sync_redis_user[0] != '\0')
		r = redisCommand(rc, "AUTH %s %s", g.d.conf.sync_redis_user, g.password);
	else
		r = redisCommand(rc, "AUTH %s", g.password);
	bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
	/* Redis 6 and later, and 5 ("no password is set") */
	if (!ok && optional && r != NULL && r->type == REDIS_REPLY_ERROR &&
	    (strstr(r->str, "without any password configured") != NULL ||
	     strstr(r->str, "no password is set") != NULL))
		ok = true;
	if (!ok)
		snprintf(err, errlen, "AUTH refused: %s",
			 r == NULL ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	if (r != NULL)
		freeReplyObject(r);
	return ok;
}

/* Append "; " and a formatted reason to @err (what each sentinel said). */
static void add_reason(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_reason(char *err, size_t errlen, const char *fmt, ...)
{
	size_t n = strlen(err);
	va_list ap;

	if (n > 0 && n + 2 < errlen) {
		memcpy(err + n, "; ", 3);
		n += 2;
	}
	va_start(ap, fmt);
	if (n < errlen)
		vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
}

/* Ask the sentinels in turn (the one that answered last first) for the
 * address of sync_sentinel_master: "host:port" into @addr and the
 * sentinel that said it into @from; false with what each said in @err. */
static bool ask_sentinels(struct link *l, char *addr, size_t addrlen, char *from, size_t fromlen,
			  char *err, size_t errlen)
{
	const struct ag_strlist *s = &g.d.conf.sync_sentinels;
	const char *name = g.d.conf.sync_sentinel_master;

	err[0] = '\0';
	for (size_t k = 0; k < s->n && running(); k++) {
		size_t i = (l->sentinel_first + k) % s->n;
		char why[256] = "";
		redisContext *rc = dial(s->v[i], SENTINEL_TIMEOUT_MS, why, sizeof(why));
		if (rc == NULL || !auth(rc, true, why, sizeof(why))) {
			add_reason(err, errlen, "sentinel %s: %s", s->v[i], why);
			if (rc != NULL)
				redisFree(rc);
			continue;
		}
		redisReply *r = redisCommand(rc, "SENTINEL get-master-addr-by-name %s", name);
		bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			  r->element[0]->type == REDIS_REPLY_STRING &&
			  r->element[1]->type == REDIS_REPLY_STRING && r->element[0]->len > 0 &&
			  r->element[0]->len < 200 && r->element[1]->len < 6;
		if (ok) {
			const char *h = r->element[0]->str;
			if (strchr(h, ':') != NULL) /* IPv6 */
				snprintf(addr, addrlen, "[%s]:%s", h, r->element[1]->str);
			else
				snprintf(addr, addrlen, "%s:%s", h, r->element[1]->str);
			char host[256];
			int port;
			ok = split_hostport(addr, host, sizeof(host), &port);
			if (!ok)
				add_reason(err, errlen, "sentinel %s: a bad address for '%s'", s->v[i], name);
		} else if (r == NULL) {
			add_reason(err, errlen, "sentinel %s: %s", s->v[i], rc->errstr);
		} else if (r->type == REDIS_REPLY_NIL) {
			add_reason(err, errlen, "sentinel %s knows no primary named '%s'", s->v[i], name);
		} else {
			add_reason(err, errlen, "sentinel %s: %s", s->v[i],
				   r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		}
		if (r != NULL)
			freeReplyObject(r);
		redisFree(rc);
		if (ok) {
			l->sentinel_first = (unsigned)i;
			snprintf(from, fromlen, "%s", s->v[i]);
			return true;
		}
	}
	return false;
}

/* The role the server on @rc says it has ("master", "slave", ...) into
 * @role; false on a lost link (why in @err). */
static bool role_of(redisContext *rc, char *role, size_t rolelen, char *err, size_t errlen)
{
	redisReply *r = redisCommand(rc, "ROLE");

	if (r == NULL) {
		snprintf(err, errlen, "%s", rc->errstr);
		return false;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	    r->element[0]->type == REDIS_REPLY_STRING)
		snprintf(role, rolelen, "%s", r->element[0]->str);
	else
		snprintf(role, rolelen, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unknown");
	freeReplyObject(r);
	return true;
}

/* The primary both links follow: said once when it is first known, and
 * as a fault when it changes (the old and the new one named). */
static void note_primary(const char *addr, const char *from)
{
	char old[sizeof(g.primary)];

	pthread_mutex_lock(&g.mu);
	snprintf(old, sizeof(old), "%s", g.primary);
	snprintf(g.primary, sizeof(g.primary), "%s", addr);
	pthread_mutex_unlock(&g.mu);
	if (old[0] == '\0')
		agd_log(AG_LVL_INFO, "Redis primary '%s' is %s (sentinel %s)",
			g.d.conf.sync_sentinel_master, addr, from);
	else if (strcmp(old, addr) != 0)
		agd_log(AG_LVL_ERR, NAME " fault: Redis primary '%s' changed from %s to %s "
			"(sentinel %s): following it; what waits in the outbox goes there",
			g.d.conf.sync_sentinel_master, old, addr, from);
}

static redisContext *redis_open(struct link *l, char *err, size_t errlen)
{
	char from[300] = "", role[32];
	int64_t io_ms = IO_TIMEOUT_MS;

	/* a WAIT may block for sync_wait_timeout before it answers */
	if (g.d.conf.sync_wait_replicas > 0)
		io_ms += g.d.conf.sync_wait_timeout;
	if (!sentinel_mode()) {
		snprintf(l->addr, sizeof(l->addr), "%s", g.d.conf.sync_redis);
	} else if (!ask_sentinels(l, l->addr, sizeof(l->addr), from, sizeof(from), err, errlen)) {
		snprintf(l->addr, sizeof(l->addr), "primary '%.200s' (sentinels)",
			 g.d.conf.sync_sentinel_master);
		return NULL;
	}
	redisContext *rc = dial(l->addr, io_ms, err, errlen);
	if (rc == NULL)
		return NULL;
	if (!auth(rc, false, err, errlen)) {
		redisFree(rc);
		return NULL;
	}
	if (sentinel_mode()) {
		/* the sentinels' word may be stale (a failover under way):
		 * only a primary takes the stream */
		if (!role_of(rc, role, sizeof(role), err, errlen)) {
			redisFree(rc);
			return NULL;
		}
		if (strcmp(role, "master") != 0) {
			snprintf(err, errlen, "sentinel %s names it primary '%.200s' but its ROLE is '%s'",
				 from, g.d.conf.sync_sentinel_master, role);
			redisFree(rc);
			return NULL;
		}
		l->role_checked = ag_now_ms();
		note_primary(l->addr, from);
	}
	return rc;
}

/* Connected, or why not (then after the backoff). */
static bool link_up(struct link *l)
{
	char err[1024];

	if (l->rc != NULL)
		return true;
	if (l->backoff > 0)
		sleep_ms(l->backoff);
	if (!running())
		return false;
	err[0] = '\0';
	l->rc = redis_open(l, err, sizeof(err));
	if (l->rc == NULL) {
		link_down(l, err);
		return false;
	}
	if (l->down_since != 0)
		agd_log(AG_LVL_INFO, "Redis %s (%s) reachable again after %" PRId64 " s; %" PRIu64
			" events to push", where(l), l->role,
			(ag_now_ms() - l->down_since) / 1000, outbox_depth());
	l->down_since = l->last_fault = 0;
	l->ups++;
	if (l->wait_short == 0) /* else the delay keeps growing: see replicas_have() */
		l->backoff = 0;
	set_connected(true);
	return true;
}

/* The primary's role is gone (READONLY, a blocked read cut off when the
 * server became a replica, a WAIT no replica answers): drop the link so
 * that the next one asks the sentinels again. Said as a fault. */
static void link_moved(struct link *l, const char *why, bool always)
{
	int64_t now = ag_now_ms();

	if (always || now - l->last_moved >= FAULT_EVERY_MS) {
		l->last_moved = now;
		agd_log(AG_LVL_ERR, NAME " fault: Redis %s (%s): %s; %s", where(l), l->role, why,
		sentinel_mode() ? "asking the sentinels for the primary again"
				: "connecting again");
	}
	set_error("%s: %s: %s", l->role, where(l), why);
	if (l->rc != NULL) {
		redisFree(l->rc);
		l->rc = NULL;
	}
	l->backoff = l->backoff == 0 ? 100 : l->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
									   : l->backoff * 2;
}

/* Errors that say the server is not (or no longer) the primary. */
static bool moved_error(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR &&
	       (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "UNBLOCKED", 9) == 0);
}

/* With Sentinel, once a second: is the server still the primary? (A
 * primary cut off from the sentinels is replaced while it still takes
 * writes; when it comes back it is made a replica.) False when the link
 * was dropped. */
static bool still_primary(struct link *l)
{
	char role[32], err[256], why[300];
	int64_t now = ag_now_ms();

	if (!sentinel_mode() || l->rc == NULL || now - l->role_checked < ROLE_CHECK_MS)
		return l->rc != NULL;
	l->role_checked = now;
	if (!role_of(l->rc, role, sizeof(role), err, sizeof(err))) {
		link_down(l, err);
		return false;
	}
	if (strcmp(role, "master") == 0)
		return true;
	snprintf(why, sizeof(why), "its ROLE is '%s' now", role);
	link_moved(l, why, true);
	return false;
}

/* ---- the MAC ----------------------------------------------------------------------------- */

/* The cluster key's HMAC, set up once per thread (pusher, reader) and
 * re-initialised per entry: OpenSSL's one-shot HMAC() fetches the digest
 * and prepares the key on every call, three times the cost, and was the
 * largest CPU cost of the daemon at 10,000 events/s. */
static __thread EVP_MAC_CTX *mac_ctx;

static EVP_MAC_CTX *mac_get(void)
{
	if (mac_ctx == NULL) {
		EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
		OSSL_PARAM p[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
				   OSSL_PARAM_construct_end() };
		mac_ctx = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
		EVP_MAC_free(m);
		if (mac_ctx != NULL && !EVP_MAC_init(mac_ctx, g.key, g.key_len, p)) {
			EVP_MAC_CTX_free(mac_ctx);
			mac_ctx = NULL;
		}
	}
	return mac_ctx;
}

/* At the end of a thread that used mac(). */
static void mac_done(void)
{
	EVP_MAC_CTX_free(mac_ctx);
	mac_ctx = NULL;
}

/* HMAC-SHA256 under the cluster key over what the entry says: the stream
 * (an entry copied to another stream does not verify), the sender, its
 * outbox epoch and the event. False (and @out zero) if OpenSSL failed:
 * then nothing verifies, not even a zero MAC. */
static bool mac(const char *host, size_t hlen, const uint8_t epoch[8], const uint8_t *ev,
		size_t evlen, uint8_t out[MAC_LEN])
{
	uint8_t buf[64 + 1024 + 8 + AG_SEV_WIRE_MAX];
	size_t n = 0, sl = strlen(g.d.conf.sync_stream), olen = 0;
	EVP_MAC_CTX *c = mac_get();

	memcpy(buf, "authguard-sync 1", 17), n = 17;
	memcpy(buf + n, g.d.conf.sync_stream, sl), n += sl;
	buf[n++] = 0;
	memcpy(buf + n, host, hlen), n += hlen;
	buf[n++] = 0;
	memcpy(buf + n, epoch, 8), n += 8;
	memcpy(buf + n, ev, evlen), n += evlen;
	/* (a NULL key: the one set up above, from its start again) */
	if (c == NULL || !EVP_MAC_init(c, NULL, 0, NULL) || !EVP_MAC_update(c, buf, n) ||
	    !EVP_MAC_final(c, out, &olen, MAC_LEN) || olen != MAC_LEN) {
		memset(out, 0, MAC_LEN);
		return false;
	}
	return true;
}

/* ---- pushing ------------------------------------------------------------------------- */

/* sync_wait_replicas: have the @n events just added reached that many
 * replicas (WAIT)? Only then may they leave the outbox: a primary that
 * dies before its replica copied them would take them along. When fewer
 * answer they stay and go again later (the receivers skip what they
 * applied already), after a growing delay; with Sentinel the link is
 * dropped too, as the primary may be cut off from its replicas and
 * replaced. True also when the key is 0. */
static bool replicas_have(struct link *l, int n)
{
	unsigned want = g.d.conf.sync_wait_replicas;
	char nrep[16], ms[24];

	if (want == 0)
		return true;
	snprintf(nrep, sizeof(nrep), "%u", want);
	snprintf(ms, sizeof(ms), "%" PRId64, g.d.conf.sync_wait_timeout);
	const char *argv[] = { "WAIT", nrep, ms };
	redisReply *r = redisCommandArgv(l->rc, 3, argv, NULL);
	if (r == NULL) {
		link_down(l, l->rc->errstr);
		return false;
	}
	long long got = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	char why[512];
	if (got >= (long long)want) {
		freeReplyObject(r);
		l->wait_short = 0;
		return true;
	}
	if (got < 0)
		snprintf(why, sizeof(why), "WAIT refused: %s",
			 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
	else
		snprintf(why, sizeof(why), "%lld of sync_wait_replicas=%u replicas have the last %d "
			 "events after %" PRId64 " ms; they stay in the outbox and go again",
			 got, want, n, g.d.conf.sync_wait_timeout);
	freeReplyObject(r);
	l->wait_short++;
	if (sentinel_mode()) {
		link_moved(l, why, l->wait_short == 1);
	} else {
		int64_t now = ag_now_ms();
		set_error("push: %s", why);
		if (l->wait_short == 1 || now - l->last_fault >= FAULT_EVERY_MS) {
			l->last_fault = now;
			agd_log(AG_LVL_ERR, NAME " fault: Redis %s: %s", where(l), why);
		}
		l->backoff = l->backoff == 0 ? 100 : l->backoff * 2 > BACKOFF_MAX_MS ?
			     BACKOFF_MAX_MS : l->backoff * 2;
	}
	return false;
}

/* What the pusher has sent: the events numbered up to @seq of outbox
 * @epoch are in the stream (and, with sync_wait_replicas, on that many
 * replicas). Kept in memory; the events are deleted from the outbox in
 * bulk (drain()), so the pusher takes the writer lock a few times a
 * second rather than after every batch. A crash (SIGKILL) in between
 * sends the undeleted ones again after the restart: the receivers skip
 * them by their sequence number (sync.h), and the restart looks for them
 * in the stream first (pushed_in_stream()). */
struct pushed {
	uint64_t epoch, seq;   /* sent */
	uint64_t deleted;      /* deleted from the outbox up to */
	int64_t since;         /* when the oldest sent one not deleted was sent */
	uint64_t depth;        /* the outbox's, at the last look */
	bool old_waiting;      /* events in the old place at the last look (sync.h) */
	int64_t old_looked;    /* when the old place was last looked at */
};

/* How long sent events may wait to be deleted: DRAIN_EVERY_MS, or
 * AUTHGUARD_SYNC_DRAIN_MS (the fleet test holds them, to kill the daemon
 * in between: authguard-sync(8)). */
static int64_t drain_every = DRAIN_EVERY_MS;
#define DRAIN_EVERY_MAX_MS INT64_C(86400000)

/* AUTHGUARD_SYNC_DRAIN_MS, if set, into drain_every: the whole value a
 * number of milliseconds from 1 to DRAIN_EVERY_MAX_MS, or the daemon
 * does not start (a typo must not leave the default silently in force,
 * nor a 0 that deletes after every batch). Returns 0 or -1 (said why). */
static int drain_from_env(void)
{
	const char *de = getenv("AUTHGUARD_SYNC_DRAIN_MS");
	char *end;

	if (de == NULL)
		return 0;
	errno = 0;
	long long v = isdigit((unsigned char)de[0]) ? strtoll(de, &end, 10) : 0;
	if (!isdigit((unsigned char)de[0]) || errno != 0 || *end != '\0' || v < 1 ||
	    v > DRAIN_EVERY_MAX_MS) {
		agd_log(AG_LVL_ERR, "AUTHGUARD_SYNC_DRAIN_MS=%.64s: must be a number of milliseconds "
			"from 1 to %" PRId64, de, DRAIN_EVERY_MAX_MS);
		return -1;
	}
	drain_every = v;
	return 0;
}

/* A Redis that refused an XADD of a pipelined batch (out of memory, say)
 * and took later ones: the receivers' mark is past the refused events'
 * numbers, so pushed again as they are they would be skipped as
 * duplicates. They go back into the outbox under new numbers (after the
 * batch), in one write transaction; the receivers count the old numbers
 * as missed, which they were, until their events come under the new ones.
 * @holes: the refused ones' indices in @ev, those before @last only. */
static int renumber(struct ag_txn *t, struct ag_sev *ev, int n)
{
	/* out of the outbox, and in again under the next numbers (after all
	 * that the outbox numbered so far), in @t */
	int rc = ag_outbox_done(t, ev, n);

	for (int i = 0; rc == 0 && i < n; i++)
		rc = ag_outbox_put(t, &g.d.conf, &ev[i]);
	return rc;
}

static bool renumber_holes(struct ag_sev *ev, const int *holes, int nholes, int last)
{
	struct ag_sev *moved = malloc(sizeof(*moved) * (size_t)nholes);
	struct ag_txn *t;
	int n = 0, rc;

	if (moved == NULL) {
		agd_log(AG_LVL_ERR, NAME ": out of memory renumbering events Redis refused; "
			"the batch goes again from the first of them");
		return false;
	}
	for (int i = 0; i < nholes; i++)
		if (holes[i] < last)
			moved[n++] = ev[holes[i]];
	rc = ag_txn_begin(g.s, true, &t);
	if (rc == 0)
		rc = renumber(t, moved, n);
	if (rc == 0)
		rc = ag_txn_commit(t);
	else
		ag_txn_abort(t);
	if (rc != 0) {
		set_error("push: store: %s", ag_strerror(rc));
		agd_log(AG_LVL_ERR, NAME " fault: renumbering %d events Redis refused: %s; "
			"the batch goes again from the first of them", n, ag_strerror(rc));
		free(moved);
		return false;
	}
	agd_log(AG_LVL_WARN, NAME ": Redis refused %d events of a batch and took later ones: "
		"they go again under new numbers (%" PRIu64 " on); the other hosts count "
		"the old numbers as missed", n, moved[0].seq);
	free(moved);
	return true;
}

static int push_batch(struct link *l, struct ag_sev *ev, struct pushed *pd)
{
	struct ag_txn *t;
	struct ag_outbox_state ob;
	int rc = ag_txn_begin(g.s, false, &t), n;

	if (rc != 0)
		return rc;
	rc = ag_outbox_state(t, &ob);
	if (rc == 0 && ob.epoch != pd->epoch) { /* a new outbox: numbered from 1 again */
		pd->epoch = ob.epoch;
		pd->seq = pd->deleted = 0;
	}
	pd->depth = ob.depth;
	/* the common case while idle: one read of the counters, no scan;
	 * every OLD_LOOK_MS a cursor's look at the old place too (modules
	 * older than this version write there: move_old() takes them over) */
	bool more = ob.next_seq > pd->seq + 1 && ob.depth > 0;
	int64_t looked = ag_now_ms();
	if (rc == 0 && !pd->old_waiting &&
	    (looked - pd->old_looked >= OLD_LOOK_MS || looked < pd->old_looked)) {
		pd->old_looked = looked;
		rc = ag_outbox_old_waiting(t, &pd->old_waiting);
	}
	n = rc != 0 ? rc : more ? ag_outbox_peek_after(t, pd->seq, ev, PUSH_BATCH) : 0;
	ag_txn_abort(t);
	if (n <= 0)
		return n;
	uint64_t dropped = ob.dropped_fail + ob.dropped_other;
	if (dropped > g.outbox_dropped) {
		agd_log(AG_LVL_WARN, NAME ": the outbox was full (sync_outbox_max=%u): %" PRIu64
			" events dropped, oldest failures first (%" PRIu64 " failures, %" PRIu64
			" others in all)", g.d.conf.sync_outbox_max, dropped - g.outbox_dropped,
			ob.dropped_fail, ob.dropped_other);
		g.outbox_dropped = dropped;
	}
	uint8_t epoch[8];
	ag_put_be64(epoch, ob.epoch);
	char maxlen[24];
	snprintf(maxlen, sizeof(maxlen), "%u", g.d.conf.sync_stream_max);
	size_t hl = strlen(g.host);
	for (int i = 0; i < n; i++) {
		uint8_t buf[AG_SEV_WIRE_MAX], m[MAC_LEN];
		size_t len = ag_sev_encode(&ev[i], buf);
		if (!mac(g.host, hl, epoch, buf, len, m)) {
			/* (OpenSSL failed: out of memory?) nothing of the batch
			 * is sent: the connection, with what was queued on it,
			 * goes; the events stay in the outbox */
			link_down(l, "computing the events' HMAC failed (OpenSSL); nothing sent");
			return 0;
		}
		const char *argv[] = { "XADD", g.d.conf.sync_stream, "MAXLEN", "~", maxlen, "*",
				       "h", g.host, "o", (const char *)epoch, "e", (const char *)buf,
				       "m", (const char *)m };
		size_t argl[] = { 4, strlen(g.d.conf.sync_stream), 6, 1, strlen(maxlen), 1,
				  1, hl, 1, 8, 1, len, 1, MAC_LEN };
		if (redisAppendCommandArgv(l->rc, 14, argv, argl) != REDIS_OK) {
			link_down(l, l->rc->errstr);
			return 0;
		}
	}
	int ok = 0, last = 0, nholes = 0;
	bool refused = false, moved = false;
	int holes[PUSH_BATCH];
	for (int i = 0; i < n; i++) {
		/* every reply is read, even after an error: one left unread
		 * would be taken for the next command's */
		redisReply *r = NULL;
		if (redisGetReply(l->rc, (void **)&r) != REDIS_OK) {
			link_down(l, l->rc->errstr);
			return 0; /* what Redis took goes again: the receivers skip it */
		}
		if (moved_error(r)) {
			moved = true;
		} else if (r->type == REDIS_REPLY_ERROR && !refused) {
			/* Redis is there but refuses (ACL, out of memory, a wrong
			 * key type): as loud as Redis away, as often */
			int64_t now = ag_now_ms();
			refused = true;
			set_error("push: XADD: %s", r->str);
			if (l->last_fault == 0 || now - l->last_fault >= FAULT_EVERY_MS) {
				l->last_fault = now;
				agd_log(AG_LVL_ERR, NAME " fault: Redis %s refuses XADD to %s: %s; %" PRIu64
					" events wait in the outbox", where(l),
					g.d.conf.sync_stream, r->str, ob.depth);
			}
			l->backoff = l->backoff == 0 ? 100 : l->backoff * 2 > BACKOFF_MAX_MS ?
				     BACKOFF_MAX_MS : l->backoff * 2;
		}
		if (r->type != REDIS_REPLY_ERROR && ok == i)
			ok = i + 1; /* each in order: the first ok are in the stream */
		if (r->type != REDIS_REPLY_ERROR)
			last = i + 1;
		else if (!moved_error(r))
			holes[nholes++] = i;
		freeReplyObject(r);
	}
	if (moved) {
		link_moved(l, "it refuses writes (READONLY: a replica now)", true);
		return 0;
	}
	int took = ok; /* the events now in the stream */
	if (last > ok) {
		if (renumber_holes(ev, holes, nholes, last)) {
			took = last;
			for (int i = 0; i < nholes; i++)
				took -= holes[i] < last;
			ok = last; /* pushed up to there; the holes have new numbers */
		} /* (else a store fault, said: the batch goes again from the hole) */
	}
	/* a delay grown by XADD errors or missing acknowledgements ends
	 * only with a batch taken and acknowledged */
	if (ok > 0 && !replicas_have(l, ok))
		return 0;
	if (!refused)
		l->backoff = 0;
	if (ok == 0)
		return 0;
	if (pd->seq <= pd->deleted)
		pd->since = ag_now_ms();
	pd->seq = ev[ok - 1].seq;
	pthread_mutex_lock(&g.mu);
	g.st.pushed += (uint64_t)took;
	pthread_mutex_unlock(&g.mu);
	return ok;
}

/* Delete what was pushed from the outbox, in one write transaction. */
static int drain(struct pushed *pd)
{
	struct ag_txn *t;
	int rc = ag_txn_begin(g.s, true, &t);

	if (rc != 0)
		return rc;
	struct ag_outbox_state ob;
	rc = ag_outbox_state(t, &ob);
	/* (another epoch: the store was made anew; nothing of it was sent) */
	if (rc == 0)
		rc = ag_outbox_done_upto(t, ob.epoch == pd->epoch ? pd->seq : 0, NULL);
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_commit(t);
	if (rc == 0)
		pd->deleted = pd->seq;
	return rc;
}

/* Events that modules of an older version put into the old place (the
 * meta database, sync.h) go into the outbox, renumbered under its epoch,
 * in the transaction that deletes them there: from then on they are
 * pushed like any other, and nothing of the old numbering is ever pushed
 * by this daemon (what an older daemon pushed of it was deleted at start:
 * old_in_stream()). */
static int move_old(struct pushed *pd)
{
	struct ag_txn *t;
	int moved = 0, rc = ag_txn_begin(g.s, true, &t);

	if (rc != 0)
		return rc;
	rc = ag_outbox_old_move(t, &g.d.conf, PUSH_BATCH, &moved);
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	rc = ag_txn_commit(t);
	if (rc == 0 && moved > 0 && !g.old_seen) {
		g.old_seen = true;
		agd_log(AG_LVL_INFO, NAME ": events of modules loaded before the upgrade (in the "
			"old place, the meta database) go into the outbox under its epoch; a "
			"restart of the services that load them ends this");
	}
	pd->old_waiting = moved == PUSH_BATCH;
	return rc;
}

/* Due: the oldest sent one waited drain_every, DRAIN_AFTER were sent, or
 * the outbox is half full (what was sent must not push out what was not). */
static bool drain_due(const struct pushed *pd)
{
	if (pd->seq <= pd->deleted)
		return false;
	int64_t now = ag_now_ms();
	if (now - pd->since >= drain_every || now < pd->since || pd->seq - pd->deleted >= DRAIN_AFTER)
		return true;
	return pd->depth >= g.d.conf.sync_outbox_max / 2;
}

static void reject(const char *id, const char *why);

/* ---- snapshots ------------------------------------------------------------------------- */

#define SNAP_MAGIC "AGSNAP1"
#define SNAP_MAX_ENTRIES 200000
#define SNAP_TTL_S "604800"

static void snap_key(char *buf, size_t len, const char *host)
{
	snprintf(buf, len, "%s:snap:%s", g.d.conf.sync_stream, host);
}

static void snap_mac(const uint8_t *data, size_t len, uint8_t out[MAC_LEN])
{
	unsigned olen = MAC_LEN;

	if (HMAC(EVP_sha256(), g.key, (int)g.key_len, data, len, out, &olen) == NULL)
		memset(out, 0, MAC_LEN);
}

/* What this store knows that matters, with the stream position it is
 * good from (read first: what is applied meanwhile is in the stream
 * after it), for a host that was away too long (sync.h). */
static int publish_snapshot(struct link *l)
{
	char pos[64], key[AG_CONF_STR_MAX + 128], set[AG_CONF_STR_MAX + 16];
	uint8_t *entries;
	size_t elen, n;
	int rc = ag_sync_pos(g.s, pos, sizeof(pos));

	if (rc == 0)
		rc = ag_sync_snapshot_make(g.s, &g.d.conf, ag_guard_now(), SNAP_MAX_ENTRIES, &entries,
					   &elen, &n);
	if (rc != 0)
		return rc;
	size_t pl = strlen(pos), hl = strlen(g.host);
	size_t total = 8 + 8 + 1 + pl + 1 + hl + elen + MAC_LEN;
	uint8_t *b = malloc(total);
	if (b == NULL) {
		free(entries);
		return AG_ENOMEM;
	}
	size_t o = 0;
	memcpy(b, SNAP_MAGIC, 8), o = 8;
	ag_put_be64(b + o, (uint64_t)ag_now_ms()), o += 8;
	b[o++] = (uint8_t)pl;
	memcpy(b + o, pos, pl), o += pl;
	b[o++] = (uint8_t)hl;
	memcpy(b + o, g.host, hl), o += hl;
	if (elen > 0) /* none: an empty snapshot, entries NULL */
		memcpy(b + o, entries, elen), o += elen;
	free(entries);
	/* the stream's name is under the MAC too: a snapshot of another fleet does not verify */
	uint8_t *m = malloc(o + strlen(g.d.conf.sync_stream) + 1);
	if (m == NULL) {
		free(b);
		return AG_ENOMEM;
	}
	size_t sl = strlen(g.d.conf.sync_stream);
	memcpy(m, g.d.conf.sync_stream, sl);
	m[sl] = 0;
	memcpy(m + sl + 1, b, o);
	snap_mac(m, sl + 1 + o, b + o);
	free(m);
	o += MAC_LEN;
	snap_key(key, sizeof(key), g.host);
	snprintf(set, sizeof(set), "%s:snaps", g.d.conf.sync_stream);
	const char *a1[] = { "SET", key, (const char *)b, "EX", SNAP_TTL_S };
	size_t l1[] = { 3, strlen(key), o, 2, strlen(SNAP_TTL_S) };
	const char *a2[] = { "SADD", set, g.host };
	size_t l2[] = { 4, strlen(set), hl };
	redisReply *r1 = redisCommandArgv(l->rc, 5, a1, l1);
	redisReply *r2 = r1 != NULL ? redisCommandArgv(l->rc, 3, a2, l2) : NULL;
	free(b);
	bool ok = r1 != NULL && r2 != NULL && r1->type != REDIS_REPLY_ERROR &&
		  r2->type != REDIS_REPLY_ERROR;
	if (r1 == NULL || r2 == NULL)
		link_down(l, l->rc->errstr);
	else if (!ok)
		set_error("snapshot: %s", r1->type == REDIS_REPLY_ERROR ? r1->str : r2->str);
	if (r1 != NULL)
		freeReplyObject(r1);
	if (r2 != NULL)
		freeReplyObject(r2);
	return 0;
}

/* Stream ids "MS-SEQ": <0, 0, >0. */
static int id_cmp(const char *a, const char *b)
{
	unsigned long long am = 0, as = 0, bm = 0, bs = 0;

	(void)sscanf(a, "%llu-%llu", &am, &as);
	(void)sscanf(b, "%llu-%llu", &bm, &bs);
	if (am != bm)
		return am < bm ? -1 : 1;
	return as < bs ? -1 : as > bs;
}

/* A verified snapshot of another host: its time, its position, where
 * its entries are. */
static bool snap_parse(const redisReply *r, int64_t *time_r, char *pos, size_t poslen,
		       const uint8_t **ent, size_t *elen)
{
	const uint8_t *b = (const uint8_t *)r->str;
	size_t len = r->len, sl = strlen(g.d.conf.sync_stream);

	if (r->type != REDIS_REPLY_STRING || len < 8 + 8 + 2 + MAC_LEN || memcmp(b, SNAP_MAGIC, 8) != 0)
		return false;
	uint8_t *m = malloc(sl + 1 + len);
	if (m == NULL)
		return false;
	memcpy(m, g.d.conf.sync_stream, sl);
	m[sl] = 0;
	memcpy(m + sl + 1, b, len - MAC_LEN);
	uint8_t want[MAC_LEN];
	snap_mac(m, sl + 1 + len - MAC_LEN, want);
	free(m);
	if (CRYPTO_memcmp(want, b + len - MAC_LEN, MAC_LEN) != 0)
		return false;
	size_t o = 8;
	*time_r = (int64_t)ag_get_be64(b + o), o += 8;
	size_t pl = b[o++];
	if (pl == 0 || pl >= poslen || o + pl + 1 > len - MAC_LEN)
		return false;
	memcpy(pos, b + o, pl), pos[pl] = '\0', o += pl;
	size_t hl = b[o++];
	if (o + hl > len - MAC_LEN)
		return false;
	o += hl;
	*ent = b + o;
	*elen = len - MAC_LEN - o;
	return true;
}

/* On each connection: if the stream was trimmed past our position (we
 * were away longer than it keeps), catch up from the freshest peer's
 * snapshot and read on from its position. Returns false on a lost link. */
static bool maybe_catch_up(struct link *l, char *pos, size_t poslen)
{
	const char *a[] = { "XINFO", "STREAM", g.d.conf.sync_stream };
	redisReply *r = redisCommandArgv(l->rc, 3, a, NULL);
	char last[64] = "", first[64] = "", deleted[64] = "";
	long long length = -1, added = -1;

	if (r == NULL) {
		link_down(l, l->rc->errstr);
		return false;
	}
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		const redisReply *k = r->element[i], *v = r->element[i + 1];
		if (k->type != REDIS_REPLY_STRING)
			continue;
		if (strcmp(k->str, "length") == 0 && v->type == REDIS_REPLY_INTEGER)
			length = v->integer;
		else if (strcmp(k->str, "entries-added") == 0 && v->type == REDIS_REPLY_INTEGER)
			added = v->integer;
		else if (strcmp(k->str, "last-generated-id") == 0 && v->type == REDIS_REPLY_STRING &&
			 v->len < 64)
			snprintf(last, sizeof(last), "%s", v->str);
		else if (strcmp(k->str, "first-entry") == 0 && v->type == REDIS_REPLY_ARRAY &&
			 v->elements == 2 && v->element[0]->type == REDIS_REPLY_STRING &&
			 v->element[0]->len < 64)
			snprintf(first, sizeof(first), "%s", v->element[0]->str);
	}
	freeReplyObject(r);
	/* Entries were trimmed (added > length) that we had not read: all of
	 * them when the stream is empty and its last id is past ours; else
	 * when even its first entry is past ours (those before it are gone;
	 * at worst, right at the boundary, the snapshot is applied for
	 * nothing: it only raises end times). */
	/* Our position is past the stream's last id: the entries after it
	 * were on a primary that lost them (it died before its replica had
	 * them, and the replica took over; or a Redis restarted from an
	 * older file). What this Redis adds comes after its own last id,
	 * which may be before ours (another clock): read on from there,
	 * the sender's sequence numbers skip what was applied already. */
	if (last[0] != '\0' && strcmp(pos, "0") != 0 && id_cmp(pos, last) > 0) {
		agd_log(AG_LVL_WARN, NAME ": position %s is past the last entry %s of %s at %s (a "
			"primary that lost entries, or a Redis restarted from an older file): reading "
			"on from %s", pos, last, g.d.conf.sync_stream, where(l), last);
		snprintf(pos, poslen, "%s", last);
		return true;
	}
	bool trimmed = added >= 0 && length >= 0 && added > length;
	bool missed = trimmed && ((length == 0 && last[0] && id_cmp(last, pos) > 0) ||
				  (length > 0 && first[0] && id_cmp(first, pos) > 0));
	if (!missed)
		return true;
	snprintf(deleted, sizeof(deleted), "%s", length == 0 ? last : first);
	char set[AG_CONF_STR_MAX + 16];
	snprintf(set, sizeof(set), "%s:snaps", g.d.conf.sync_stream);
	const char *a2[] = { "SMEMBERS", set };
	redisReply *hosts = redisCommandArgv(l->rc, 2, a2, NULL);
	if (hosts == NULL) {
		link_down(l, l->rc->errstr);
		return false;
	}
	redisReply *best = NULL;
	int64_t best_time = 0;
	char best_pos[64] = "", best_host[64] = "";
	for (size_t i = 0; hosts->type == REDIS_REPLY_ARRAY && i < hosts->elements; i++) {
		const redisReply *h = hosts->element[i];
		if (h->type != REDIS_REPLY_STRING || h->len >= 64 || strcmp(h->str, g.host) == 0)
			continue;
		char key[AG_CONF_STR_MAX + 128];
		snap_key(key, sizeof(key), h->str);
		const char *a3[] = { "GET", key };
		redisReply *sr = redisCommandArgv(l->rc, 2, a3, NULL);
		if (sr == NULL)
			break;
		int64_t t = 0;
		char p[64];
		const uint8_t *ent;
		size_t elen;
		if (snap_parse(sr, &t, p, sizeof(p), &ent, &elen) && t > best_time) {
			if (best != NULL)
				freeReplyObject(best);
			best = sr;
			best_time = t;
			snprintf(best_pos, sizeof(best_pos), "%s", p);
			snprintf(best_host, sizeof(best_host), "%s", h->str);
		} else {
			if (sr->type == REDIS_REPLY_STRING)
				reject(key, "snapshot: bad MAC or format");
			freeReplyObject(sr);
		}
	}
	freeReplyObject(hosts);
	if (best == NULL) {
		set_error("read: the stream was trimmed past %s (entries up to %s lost) and no "
			  "peer's snapshot is there", pos, deleted);
		agd_log(AG_LVL_ERR, NAME " fault: the stream was trimmed past this host's position "
			"%s (entries up to %s are gone) and no peer has published a snapshot: what "
			"they held is missed; reading on", pos, deleted);
		return true;
	}
	int64_t t;
	char p[64];
	const uint8_t *ent;
	size_t elen, n = 0;
	(void)snap_parse(best, &t, p, sizeof(p), &ent, &elen);
	int rc = ag_sync_snapshot_apply(&g.d.conf, ent, elen, best_pos, &n);
	freeReplyObject(best);
	if (rc != 0) {
		set_error("read: snapshot of %s: %s", best_host, ag_strerror(rc));
		agd_log(AG_LVL_ERR, NAME " fault: applying %s's snapshot: %s", best_host, ag_strerror(rc));
		return true;
	}
	agd_log(AG_LVL_WARN, NAME ": this host was away longer than the stream keeps (trimmed up "
		"to about %s, past its position %s): caught up from %s's snapshot (%zu bans, locks, "
		"familiar places and list entries), reading on from %s", deleted, pos, best_host, n,
		best_pos);
	snprintf(pos, poslen, "%s", best_pos);
	return true;
}

/* One of this host's entries of the current epoch in the stream: its
 * number and event bytes. */
struct own {
	uint64_t seq;
	char *e;     /* a copy (malloc) */
	size_t len;
	bool lost;   /* an event whose record the rollback took (rolled_back()) */
};

static int own_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct own *)a)->seq, y = ((const struct own *)b)->seq;

	return x < y ? -1 : x > y;
}

static bool verified_own(const redisReply *en, uint64_t epoch, uint64_t *seq_r,
			 const redisReply **e_r);

/* Is the stream's event @o the outbox's event @ev? Both go through this
 * build's encoder, so a daemon upgraded in between compares contents, not
 * layouts. */
static bool same_event(const struct own *o, const struct ag_sev *ev)
{
	uint8_t a[AG_SEV_WIRE_MAX], b[AG_SEV_WIRE_MAX];
	struct ag_sev se;

	if (ag_sev_decode((const uint8_t *)o->e, o->len, &se) != 0)
		return false;
	size_t la = ag_sev_encode(&se, a), lb = ag_sev_encode(ev, b);
	return la == lb && memcmp(a, b, la) == 0;
}

/* Which outbox the look back at start compares with the stream: the
 * outbox, or the old place that modules of an older version write
 * (sync.h), whose events an older daemon may have pushed. */
struct box {
	bool old;
	const char *what; /* for log lines */
};
static const struct box BOX_NEW = { false, "the outbox" };
static const struct box BOX_OLD = { true, "the old place's (older modules' events, in the meta database)" };

static int box_state(struct ag_txn *t, const struct box *b, struct ag_outbox_state *st)
{
	return b->old ? ag_outbox_old_state(t, st) : ag_outbox_state(t, st);
}

static int box_peek_after(struct ag_txn *t, const struct box *b, uint64_t after, struct ag_sev *ev,
			  int max)
{
	return b->old ? ag_outbox_old_peek_after(t, after, ev, max)
		      : ag_outbox_peek_after(t, after, ev, max);
}

static int box_done(struct ag_txn *t, const struct box *b, const struct ag_sev *ev, int n)
{
	return b->old ? ag_outbox_old_done(t, ev, n) : ag_outbox_done(t, ev, n);
}

/*
 * The store rolled back? With MDB_NOSYNC an OS crash brings the store
 * back at its last flush: records, outbox and numbering together. The
 * stream keeps what was pushed after it, so the numbers the outbox hands
 * out again are already there with other events, and the receivers would
 * skip them as duplicates. Proof of it: one of our entries of this epoch
 * numbered at or past the outbox's next number, or one whose number the
 * outbox holds with another event. Then, in one write transaction, the
 * outbox's events that ARE in the stream (same number, same event) are
 * deleted (pushed: sending them again under another epoch would count
 * them twice), and the rest goes under a new epoch (ag_outbox_new_epoch()),
 * which every receiver takes as a new sender. The numbering goes on where
 * it is: the new epoch alone tells the events apart, and the receivers'
 * gap count sees no jump. @own: sorted, all numbered past pd->seq; those
 * that the rollback took from this store (numbered past the outbox's
 * numbering, or another event under their number) are marked lost.
 * *@rolled_r: whether it did. Returns 0 or AG_E*.
 * In the old place (@b->old) no new epoch is taken: what is left there is
 * moved into the outbox, under its epoch, and never pushed under the old
 * one by this daemon.
 */
/*
 * Not rolled back, but with gaps: events of the outbox numbered below the
 * stream's last one of ours that the stream does not hold (Redis refused
 * them and took later ones, and the daemon was stopped before it
 * renumbered them: renumber_holes()). Pushed again under their numbers
 * they would be skipped as duplicates: they go under new ones, and the
 * outbox's events the stream does hold are deleted (pushed), all in the
 * same transaction. Only where the stream cannot have lost it to its
 * trimming, which takes the oldest first: @anchored (the look back met an
 * entry of ours at or below what the outbox holds), or one of ours
 * numbered below it is there. In the old place the
 * events found are deleted likewise, gaps or not: the rest is moved under
 * the outbox's epoch anyway.
 */
static int rolled_back(const struct box *b, struct pushed *pd, struct own *own, size_t n,
		       bool anchored, bool *rolled_r)
{
	struct ag_txn *t;
	struct ag_outbox_state ob;

	*rolled_r = false;
	if (n == 0)
		return 0; /* (the common start: no writer lock) */
	struct ag_sev *ev = malloc(sizeof(*ev) * PUSH_BATCH * 2);
	struct ag_sev *holes = ev != NULL ? ev + PUSH_BATCH : NULL;
	int rc = ev == NULL ? AG_ENOMEM : ag_txn_begin(g.s, true, &t);
	if (rc != 0) {
		free(ev);
		return rc;
	}
	rc = box_state(t, b, &ob);
	bool rolled = rc == 0 && ob.epoch == pd->epoch && own[n - 1].seq >= ob.next_seq;
	uint64_t matched = 0, renumbered = 0, after = pd->seq;
	size_t i = 0;
	/* walk the outbox beside the stream's entries, up to their last */
	while (rc == 0 && ob.epoch == pd->epoch && after < own[n - 1].seq) {
		int k = box_peek_after(t, b, after, ev, PUSH_BATCH);
		if (k <= 0) {
			rc = k;
			break;
		}
		after = ev[k - 1].seq;
		int sent = 0, nholes = 0;
		for (int x = 0; x < k; x++) {
			while (i < n && own[i].seq < ev[x].seq)
				i++; /* (not in the outbox: dropped when full) */
			bool same = false, other = false;
			for (size_t j = i; j < n && own[j].seq == ev[x].seq; j++) {
				if (same_event(&own[j], &ev[x]))
					same = true;
				else
					other = own[j].lost = true;
			}
			if (other)
				rolled = true;
			if (same)
				ev[sent++] = ev[x];
			else if (!other && !b->old && ev[x].seq < own[n - 1].seq &&
				 (anchored || own[0].seq < ev[x].seq))
				holes[nholes++] = ev[x];
		}
		/* deleted in this transaction, kept only if it is committed */
		if (sent > 0)
			rc = box_done(t, b, ev, sent);
		matched += (uint64_t)sent;
		/* the holes' new numbers come after the stream's last of ours:
		 * this walk ends before it meets them again */
		if (rc == 0 && nholes > 0)
			rc = renumber(t, holes, nholes);
		renumbered += (uint64_t)nholes;
	}
	if (rc == 0 && !rolled && (renumbered > 0 || (b->old && matched > 0))) {
		rc = ag_txn_commit(t);
		free(ev);
		if (rc != 0)
			return rc;
		if (b->old)
			agd_log(AG_LVL_INFO, NAME ": %" PRIu64 " events of %s were pushed by an "
				"older daemon: deleted there, not sent again", matched, b->what);
		else
			agd_log(AG_LVL_WARN, NAME ": %" PRIu64 " events of the outbox are missing "
				"from the stream between ones it holds (Redis refused them, and this "
				"daemon stopped or lost its link before it numbered them again): they "
				"go again under new numbers; the other hosts count the old numbers as "
				"missed", renumbered);
		return 0;
	}
	uint64_t epoch = pd->epoch;
	if (rc == 0 && rolled && !b->old)
		rc = ag_outbox_new_epoch(t, &epoch);
	struct ag_outbox_state now = { 0 };
	if (rc == 0 && rolled)
		rc = box_state(t, b, &now);
	uint64_t first = now.next_seq; /* what goes first under the new epoch */
	int k = rc == 0 && rolled ? box_peek_after(t, b, pd->seq, ev, 1) : 0;
	if (k < 0)
		rc = k;
	else if (k == 1)
		first = ev[0].seq;
	if (rc != 0 || !rolled) {
		ag_txn_abort(t);
		free(ev);
		return rc;
	}
	rc = ag_txn_commit(t);
	free(ev);
	if (rc != 0)
		return rc;
	if (b->old)
		agd_log(AG_LVL_WARN, "the store was rolled back (an OS crash?): the stream holds this "
			"host's events #%" PRIu64 "..#%" PRIu64 " of %s old epoch, %" PRIu64 " of "
			"those waiting there among them (not sent again); %" PRIu64 " events waiting "
			"there, from #%" PRIu64 " on, go into the outbox under its epoch",
			own[0].seq, own[n - 1].seq, b->what, matched, now.depth, first);
	else
		agd_log(AG_LVL_WARN, "the store was rolled back (an OS crash?): the stream holds this "
			"host's events #%" PRIu64 "..#%" PRIu64 ", %" PRIu64 " of the outbox's among "
			"them (not sent again); %" PRIu64 " events waiting, from #%" PRIu64 " on, and "
			"all new ones are sent under a new epoch", own[0].seq, own[n - 1].seq, matched,
			now.depth, first);
	for (size_t j = 0; j < n; j++)
		own[j].lost = own[j].lost || own[j].seq >= now.next_seq;
	pd->epoch = epoch;
	*rolled_r = true;
	return 0;
}

/* The events of this host that the rollback took from its store (its
 * records, bans, locks) are in the stream: applied again here as a remote
 * event is, in their order, under this host's own mark for their epoch
 * (never the stream position: the reader's), so a second start after a
 * crash in between applies none twice. */
static void take_back(const struct own *own, size_t n, uint64_t epoch)
{
	struct ag_sync_from f = { .host = g.host, .epoch = epoch, .stream_id = NULL };
	size_t done = 0, failed = 0;
	int last = 0;

	for (size_t j = 0; j < n; j++) {
		struct ag_sev e;
		if (!own[j].lost || ag_sev_decode((const uint8_t *)own[j].e, own[j].len, &e) != 0)
			continue;
		int rc = ag_sync_apply(&g.d.conf, &g.d.sink, &e, &f);
		if (rc < 0)
			failed++, last = rc;
		else if (rc != AG_SYNC_DUP)
			done++;
	}
	if (failed > 0)
		agd_log(AG_LVL_WARN, "%zu events of this host that the rollback took from the store "
			"were taken back from the stream, %zu could not be applied (%s%s%s)", done,
			failed, ag_strerror(last), ag_store_detail()[0] ? ": " : "", ag_store_detail());
	else if (done > 0)
		agd_log(AG_LVL_INFO, "%zu events of this host that the rollback took from the store "
			"were taken back from the stream", done);
}

/* The stream id just before @id ("ms-seq"), for the next page back
 * (XREVRANGE's exclusive "(" needs Redis 6.2); false at the very start. */
static bool id_before(const char *id, char *buf, size_t len)
{
	unsigned long long ms, sq;
	char tail;

	if (sscanf(id, "%llu-%llu%c", &ms, &sq, &tail) != 2)
		return false;
	if (sq > 0)
		snprintf(buf, len, "%llu-%llu", ms, sq - 1);
	else if (ms > 0)
		snprintf(buf, len, "%llu-%llu", ms - 1, ULLONG_MAX);
	else
		return false;
	return true;
}

static void own_free(struct own *own, size_t n)
{
	for (size_t i = 0; own != NULL && i < n; i++)
		free(own[i].e);
	free(own);
}

/* At start: the events a predecessor pushed but had not deleted yet (it
 * was killed), and those a rolled back store lost (an OS crash), are this
 * host's newest entries of its epoch in the stream. They are looked for
 * from the newest entry back, RESUME_SCAN entries a page, up to
 * RESUME_PAGES pages (other hosts may have pushed many meanwhile), until
 * an entry numbered at or below what the outbox still holds shows that
 * the rest is older. Those numbered on from what the outbox holds,
 * without a gap (a refused XADD in the middle of a pipeline leaves one),
 * count as pushed; only entries under the cluster key count. Anything not
 * found is pushed again (and skipped by the receivers). Unless the entries
 * show that the store was rolled back (rolled_back()). Returns false on a
 * lost link or a store fault (then nothing may be pushed yet). @b: the
 * outbox, or the old place (old_in_stream()). */
static bool pushed_in_stream(struct link *l, const struct box *b, struct pushed *pd)
{
	char count[16], end[64] = "+";
	struct own *own = malloc(sizeof(*own) * RESUME_SCAN);
	size_t n = 0;
	bool done = own == NULL, anchored = false;

	snprintf(count, sizeof(count), "%d", RESUME_SCAN);
	for (int page = 0; !done && page < RESUME_PAGES; page++) {
		const char *a[] = { "XREVRANGE", g.d.conf.sync_stream, end, "-", "COUNT", count };
		redisReply *r = redisCommandArgv(l->rc, 6, a, NULL);
		if (r == NULL) {
			link_down(l, l->rc->errstr);
			own_free(own, n);
			return false;
		}
		if (r->type == REDIS_REPLY_ERROR)
			agd_log(AG_LVL_WARN, NAME ": XREVRANGE refused (%s): events sent before a "
				"restart but not yet deleted from the outbox are sent again (the "
				"receivers skip them), and a store rolled back by an OS crash is not "
				"seen; let the ACL user run +xrevrange (authguard-sync(8))", r->str);
		const char *last = NULL;
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && !done; i++) {
			const redisReply *en = r->element[i], *e;
			uint64_t seq;
			if (en->type == REDIS_REPLY_ARRAY && en->elements == 2 &&
			    en->element[0]->type == REDIS_REPLY_STRING)
				last = en->element[0]->str;
			if (!verified_own(en, pd->epoch, &seq, &e))
				continue;
			if (seq <= pd->seq) {
				done = anchored = true; /* deleted before: what comes before it is older */
			} else if (n == RESUME_SCAN) {
				done = true;
			} else if ((own[n].e = malloc(e->len + 1)) != NULL) {
				memcpy(own[n].e, e->str, e->len);
				own[n].seq = seq;
				own[n].len = e->len;
				own[n].lost = false;
				n++;
			}
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements < RESUME_SCAN || last == NULL ||
		    !id_before(last, end, sizeof(end)))
			done = true; /* the stream's start */
		freeReplyObject(r);
	}
	if (own == NULL)
		return true; /* (everything is pushed again) */
	qsort(own, n, sizeof(*own), own_cmp);
	bool rolled;
	uint64_t old_epoch = pd->epoch;
	int rc = rolled_back(b, pd, own, n, anchored, &rolled);
	if (rc == 0 && rolled)
		take_back(own, n, old_epoch);
	uint64_t at = pd->seq;
	for (size_t i = 0; rc == 0 && !rolled && i < n && own[i].seq <= at + 1; i++)
		at = own[i].seq;
	own_free(own, n);
	if (rc != 0) {
		set_error("push: store: %s", ag_strerror(rc));
		agd_log(AG_LVL_ERR, NAME " fault: comparing %s with the stream: %s%s%s", b->what,
			ag_strerror(rc), ag_store_detail()[0] ? ": " : "", ag_store_detail());
		return false;
	}
	if (at > pd->seq) {
		agd_log(AG_LVL_INFO, NAME ": events up to %" PRIu64 " of this host%s%s were in the "
			"stream already (pushed before a restart or a lost link): not sent again", at,
			b->old ? " in " : "", b->old ? b->what : "");
		pd->seq = at;
	}
	return true;
}

/*
 * At start, after the outbox's look back: the old place (sync.h) holds
 * events of modules loaded before an upgrade, and an older daemon, killed
 * before it deleted what it had pushed, may have pushed some of them
 * under the old place's epoch. Those are looked for in the stream as the
 * outbox's are (pushed_in_stream(): the same rules, a rollback too) and
 * deleted there; only what is left is moved into the outbox (move_old()),
 * so none is counted twice. Nothing to do (one read) when the old place
 * is empty. Returns false on a lost link or a store fault.
 */
static bool old_in_stream(struct link *l, struct ag_sev *ev)
{
	struct ag_outbox_state ob;
	struct ag_txn *t;
	bool any = false;
	int k = 0, rc = ag_txn_begin(g.s, false, &t);

	if (rc != 0)
		goto fault;
	rc = ag_outbox_old_waiting(t, &any);
	if (rc == 0 && any && (rc = ag_outbox_old_state(t, &ob)) == AG_ECORRUPT) {
		rc = 0; /* (an old writer starts it again) */
		ob.version = 0;
	}
	if (rc == 0 && any)
		k = ag_outbox_old_peek_after(t, 0, ev, 1);
	ag_txn_abort(t);
	rc = rc != 0 ? rc : k < 0 ? k : 0;
	if (rc != 0)
		goto fault;
	if (!any || k == 0 || ob.version == 0)
		return true; /* (none, or none with a number and an epoch: moved as they are) */
	struct pushed po = { .epoch = ob.epoch, .seq = ev[0].seq - 1 };
	uint64_t before = po.seq;
	if (!pushed_in_stream(l, &BOX_OLD, &po))
		return false;
	if (po.seq == before)
		return true;
	/* found in the stream, numbered on without a gap: pushed, deleted */
	uint64_t n = 0;
	rc = ag_txn_begin(g.s, true, &t);
	if (rc == 0) {
		rc = ag_outbox_old_done_upto(t, po.seq, &n);
		if (rc == 0)
			rc = ag_txn_commit(t);
		else
			ag_txn_abort(t);
	}
	if (rc != 0)
		goto fault;
	if (n > 0) /* (else rolled_back() deleted them, and said so) */
		agd_log(AG_LVL_INFO, NAME ": %" PRIu64 " events of %s were pushed by an older "
			"daemon: deleted there, not sent again", n, BOX_OLD.what);
	return true;
fault:
	set_error("push: store: %s", ag_strerror(rc));
	agd_log(AG_LVL_ERR, NAME " fault: reading %s: %s%s%s", BOX_OLD.what, ag_strerror(rc),
		ag_store_detail()[0] ? ": " : "", ag_store_detail());
	return false;
}

static void *pusher(void *arg)
{
	struct link l = { .role = "push" };
	struct ag_sev *ev = malloc(sizeof(*ev) * PUSH_BATCH);

	(void)arg;
	if (ev == NULL) {
		agd_log(AG_LVL_ERR, NAME ": out of memory");
		atomic_store(&g.stop, true);
		return NULL;
	}
	int64_t last_snap = 0;
	struct pushed pd = { 0 };
	struct ag_txn *t;
	int drc = ag_txn_begin(g.s, false, &t);
	if (drc == 0) {
		/* sent and deleted: everything before the oldest event left,
		 * or everything numbered so far when none is left */
		struct ag_outbox_state ob;
		if (ag_outbox_state(t, &ob) == 0) {
			pd.epoch = ob.epoch;
			if (ob.depth == 0 && ob.next_seq > 0)
				pd.seq = pd.deleted = ob.next_seq - 1;
			else if (ag_outbox_peek_after(t, 0, ev, PUSH_BATCH) > 0)
				pd.seq = pd.deleted = ev[0].seq - 1;
			/* (else damaged entries only: from 0, nothing skipped) */
		}
		ag_txn_abort(t);
	}
	if (drc != 0)
		set_error("push: store: %s", ag_strerror(drc));
	bool resumed = false, resumed_old = false;
	unsigned long ups = 0;
	int64_t move_fault = 0;
	while (running()) {
		if (!link_up(&l) || !still_primary(&l))
			continue;
		/* a link lost with a batch on it: what Redis took of it is not
		 * known, nor whether it refused some before others (gaps): the
		 * stream is looked at again, as at start */
		if (l.ups != ups) {
			ups = l.ups;
			resumed = false;
		}
		if (!resumed || !resumed_old) { /* what a killed predecessor sent but did not delete */
			if (!resumed)
				resumed = pushed_in_stream(&l, &BOX_NEW, &pd);
			if (resumed)
				resumed_old = old_in_stream(&l, ev);
			if (!resumed || !resumed_old) { /* nothing pushed before that is known */
				if (l.rc != NULL)
					sleep_ms(1000); /* (a store fault) */
				continue;
			}
		}
		int64_t now = ag_now_ms();
		if (now - last_snap >= g.d.conf.sync_snapshot_every || now < last_snap) {
			last_snap = now;
			int src = publish_snapshot(&l);
			if (src != 0)
				set_error("snapshot: %s", ag_strerror(src));
			if (l.rc == NULL)
				continue;
		}
		int n = push_batch(&l, ev, &pd);
		if (n >= 0 && pd.old_waiting) {
			/* (a fault of its own: it must not hold back the
			 * drain below, or what was pushed stays and fills the
			 * outbox) */
			int mr = move_old(&pd);
			if (mr != 0) {
				set_error("push: store: moving %s: %s", BOX_OLD.what, ag_strerror(mr));
				if (now - move_fault >= FAULT_EVERY_MS || now < move_fault) {
					move_fault = now;
					agd_log(AG_LVL_ERR, NAME " fault: moving %s into the outbox: "
						"%s%s%s; they wait there", BOX_OLD.what, ag_strerror(mr),
						ag_store_detail()[0] ? ": " : "", ag_store_detail());
				}
				pd.old_waiting = false; /* tried again at the next look (OLD_LOOK_MS) */
			} else if (pd.old_waiting) {
				n = PUSH_BATCH; /* (more: at once) */
			}
		}
		if (n >= 0 && drain_due(&pd)) {
			int dr = drain(&pd);
			n = dr != 0 ? dr : n;
		}
		if (n < 0) {
			set_error("push: store: %s", ag_strerror(n));
			agd_log(AG_LVL_ERR, NAME " fault: reading the outbox: %s%s%s", ag_strerror(n),
				ag_store_detail()[0] ? ": " : "", ag_store_detail());
			sleep_ms(1000);
		} else if (n < PUSH_BATCH) {
			/* refused by Redis: wait longer each time, up to 5 s */
			sleep_ms(l.rc != NULL && l.backoff > 0 ? l.backoff : IDLE_POLL_MS);
		}
	}
	if (pd.seq > pd.deleted)
		(void)drain(&pd); /* a clean stop sends nothing twice */
	if (l.rc != NULL)
		redisFree(l.rc);
	mac_done();
	free(ev);
	return NULL;
}

/* ---- reading --------------------------------------------------------------------------- */

static struct ag_sync_peer *peer(const char *host)
{
	for (unsigned i = 0; i < g.st.npeers; i++)
		if (strcmp(g.st.peers[i].host, host) == 0)
			return &g.st.peers[i];
	if (g.st.npeers == AG_SYNC_PEERS)
		return NULL;
	struct ag_sync_peer *p = &g.st.peers[g.st.npeers++];
	memset(p, 0, sizeof(*p));
	snprintf(p->host, sizeof(p->host), "%s", host);
	return p;
}

static const redisReply *field(const redisReply *kv, const char *name)
{
	for (size_t i = 0; i + 1 < kv->elements; i += 2)
		if (kv->element[i]->type == REDIS_REPLY_STRING && kv->element[i]->len == strlen(name) &&
		    memcmp(kv->element[i]->str, name, kv->element[i]->len) == 0 &&
		    kv->element[i + 1]->type == REDIS_REPLY_STRING)
			return kv->element[i + 1];
	return NULL;
}

static int64_t last_reject_log;

static void reject(const char *id, const char *why)
{
	int64_t now = ag_now_ms();

	pthread_mutex_lock(&g.mu);
	g.st.rejected++;
	uint64_t n = g.st.rejected;
	pthread_mutex_unlock(&g.mu);
	set_error("read: entry %s rejected: %s", id, why);
	if (now - last_reject_log >= 10000 || n == 1) {
		last_reject_log = now;
		agd_log(AG_LVL_WARN, NAME ": stream %s entry %s rejected: %s (%" PRIu64
			" rejected in all): someone without the cluster key can write to Redis",
			g.d.conf.sync_stream, id, why, n);
	}
}

/* One stream entry into @it (its id into @id): true when it is another
 * host's event to apply; false when it is skipped (ours, or rejected and
 * logged), which moves the position on all the same. */
static bool entry(const redisReply *en, struct ag_sync_item *it, char id[64])
{
	if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
	    en->element[0]->type != REDIS_REPLY_STRING || en->element[0]->len >= 64)
		return false; /* not an entry: keeps the last good id */
	snprintf(id, 64, "%s", en->element[0]->str);
	const redisReply *kv = en->element[1];
	if (kv->type != REDIS_REPLY_ARRAY) {
		reject(id, "no fields");
		return false;
	}
	const redisReply *h = field(kv, "h"), *o = field(kv, "o"), *e = field(kv, "e"),
			 *m = field(kv, "m");
	if (h == NULL || o == NULL || e == NULL || m == NULL || o->len != 8 || h->len == 0 ||
	    h->len >= 64 || memchr(h->str, '\0', h->len) != NULL || e->len > AG_SEV_WIRE_MAX) {
		reject(id, "fields missing or malformed");
		return false;
	}
	/* our own: skipped before the MAC (a quarter of the entries over four
	 * hosts); skipping applies nothing, so one forged under our name does
	 * nothing either */
	if (h->len == strlen(g.host) && memcmp(h->str, g.host, h->len) == 0)
		return false;
	uint8_t want[MAC_LEN];
	if (!mac(h->str, h->len, (const uint8_t *)o->str, (const uint8_t *)e->str, e->len, want) ||
	    m->len != MAC_LEN || CRYPTO_memcmp(want, m->str, MAC_LEN) != 0) {
		reject(id, "bad MAC");
		return false;
	}
	if (ag_sev_decode((const uint8_t *)e->str, e->len, &it->e) != 0) {
		reject(id, "the event does not decode (a newer authguard's?)");
		return false;
	}
	it->epoch = ag_get_be64((const uint8_t *)o->str);
	memcpy(it->host, h->str, h->len);
	it->host[h->len] = '\0';
	snprintf(it->stream_id, sizeof(it->stream_id), "%s", id);
	return true;
}

/* @en is an entry of this host's outbox @epoch under the cluster key:
 * its sequence number into *@seq_r, its event field into *@e_r. */
static bool verified_own(const redisReply *en, uint64_t epoch, uint64_t *seq_r,
			 const redisReply **e_r)
{
	if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
	    en->element[1]->type != REDIS_REPLY_ARRAY)
		return false;
	const redisReply *kv = en->element[1];
	const redisReply *h = field(kv, "h"), *o = field(kv, "o"), *e = field(kv, "e"),
			 *m = field(kv, "m");
	if (h == NULL || o == NULL || e == NULL || m == NULL || o->len != 8 ||
	    h->len != strlen(g.host) || memcmp(h->str, g.host, h->len) != 0 ||
	    ag_get_be64((const uint8_t *)o->str) != epoch || e->len > AG_SEV_WIRE_MAX ||
	    m->len != MAC_LEN)
		return false;
	uint8_t want[MAC_LEN];
	struct ag_sev ev;
	if (!mac(h->str, h->len, (const uint8_t *)o->str, (const uint8_t *)e->str, e->len, want) ||
	    CRYPTO_memcmp(want, m->str, MAC_LEN) != 0 ||
	    ag_sev_decode((const uint8_t *)e->str, e->len, &ev) != 0)
		return false;
	*seq_r = ev.seq;
	*e_r = e;
	return true;
}

/* The results of a batch, for authguard-admin status. */
static void note_applied(const struct ag_sync_item *items, size_t n)
{
	int64_t now = ag_now_ms();

	pthread_mutex_lock(&g.mu);
	for (size_t i = 0; i < n; i++) {
		const struct ag_sync_item *it = &items[i];
		if (it->result == AG_SYNC_DUP) {
			g.st.dups++;
			continue;
		}
		g.st.applied++;
		struct ag_sync_peer *p = peer(it->host);
		if (p == NULL)
			continue;
		p->applied++;
		p->last_ms = now;
		p->lag_ms = now - it->e.time_ms;
		if (p->last_seq != 0 && it->e.seq > p->last_seq + 1)
			p->gaps += it->e.seq - p->last_seq - 1;
		p->last_seq = it->e.seq;
	}
	pthread_mutex_unlock(&g.mu);
}

/* Apply what one XREAD returned, in one transaction with the position
 * after its last entry. Returns 0 or AG_E* (then the position is kept
 * where it was: the same entries are read again). */
static int apply_reply(const redisReply *ents, struct ag_sync_item *items, char *pos)
{
	size_t n = 0;
	char last[64], id[64];

	snprintf(last, sizeof(last), "%s", pos);
	for (size_t i = 0; i < ents->elements && i < READ_BATCH; i++) {
		id[0] = '\0';
		if (entry(ents->element[i], &items[n], id))
			n++;
		if (id[0] != '\0')
			snprintf(last, sizeof(last), "%s", id);
	}
	if (strcmp(last, pos) == 0)
		return 0;
	int rc = ag_sync_apply_batch(&g.d.conf, &g.d.sink, items, n, last);
	if (rc != 0)
		return rc;
	note_applied(items, n);
	snprintf(pos, 64, "%s", last);
	return 0;
}

static void *reader(void *arg)
{
	struct link l = { .role = "read" };
	char pos[64], block[16], count[16];
	struct ag_sync_item *items = malloc(sizeof(*items) * READ_BATCH);

	(void)arg;
	if (items == NULL) {
		agd_log(AG_LVL_ERR, NAME ": out of memory");
		atomic_store(&g.stop, true);
		return NULL;
	}
	snprintf(block, sizeof(block), "%d", READ_BLOCK_MS);
	snprintf(count, sizeof(count), "%d", READ_BATCH);
	if (ag_sync_pos(g.s, pos, sizeof(pos)) != 0)
		snprintf(pos, sizeof(pos), "0");
	bool fresh = true;
	while (running()) {
		if (l.rc == NULL)
			fresh = true;
		if (!link_up(&l) || !still_primary(&l))
			continue;
		if (fresh) { /* (re)connected: were we away too long? */
			fresh = false;
			if (!maybe_catch_up(&l, pos, sizeof(pos)))
				continue;
		}
		const char *argv[] = { "XREAD", "COUNT", count, "BLOCK", block, "STREAMS",
				       g.d.conf.sync_stream, pos };
		redisReply *r = redisCommandArgv(l.rc, 8, argv, NULL);
		if (r == NULL) {
			link_down(&l, l.rc->errstr);
			continue;
		}
		if (moved_error(r)) { /* a primary made a replica under our read */
			char why[300];
			snprintf(why, sizeof(why), "XREAD: %s", r->str);
			freeReplyObject(r);
			link_moved(&l, why, true);
			continue;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			int64_t now = ag_now_ms();
			set_error("read: XREAD: %s", r->str);
			if (l.last_fault == 0 || now - l.last_fault >= FAULT_EVERY_MS) {
				l.last_fault = now;
				agd_log(AG_LVL_ERR, NAME " fault: Redis %s refuses XREAD on %s: %s; "
					"nothing from the other hosts arrives", where(&l),
					g.d.conf.sync_stream, r->str);
			}
			freeReplyObject(r);
			sleep_ms(1000);
			continue;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
		    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
		    r->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
			size_t got = r->element[0]->element[1]->elements;
			int rc = apply_reply(r->element[0]->element[1], items, pos);
			if (rc < 0) {
				set_error("read: store: %s", ag_strerror(rc));
				agd_log(AG_LVL_ERR, NAME " fault: applying the events after %s: %s%s%s; "
					"trying again", pos, ag_strerror(rc),
					ag_store_detail()[0] ? ": " : "", ag_store_detail());
				sleep_ms(1000);
			} else if (got > 0 && got < READ_BATCH) {
				/* Events are coming: let a few more gather before the
				 * next read. Each read is applied in one transaction,
				 * and at 10,000 events/s a read came back with two or
				 * three: a commit each, most of the daemon's CPU. */
				struct timespec ts = { 0, READ_GATHER_MS * 1000000L };
				nanosleep(&ts, NULL);
			}
		}
		freeReplyObject(r);
	}
	if (l.rc != NULL)
		redisFree(l.rc);
	mac_done();
	free(items);
	return NULL;
}

/* ---- start ------------------------------------------------------------------------------ */

/* Read a secret file (the cluster key, the Redis password): a regular
 * file no one else may read; trailing blanks and newlines dropped. */
static int read_secret(const char *what, const char *path, uint8_t *buf, size_t max, size_t *len_r)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		agd_log(AG_LVL_ERR, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IROTH | S_IWOTH))) {
		agd_log(AG_LVL_ERR, "%s %s: must be a regular file that others cannot read "
			"(chmod 0640, group of the store)", what, path);
		close(fd);
		return -1;
	}
	ssize_t n = read(fd, buf, max);
	close(fd);
	if (n < 0 || (size_t)n >= max) {
		agd_log(AG_LVL_ERR, "%s %s: %s", what, path, n < 0 ? strerror(errno) : "too long");
		return -1;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	*len_r = (size_t)n;
	return 0;
}

/* What configure() reads besides the config: applied with it. */
struct secrets {
	uint8_t key[KEY_MAX];
	size_t key_len;
	char host[64];
	char password[512];
};

/* With Sentinel: the sentinels and the primary's name (checked as far
 * as the config can be: whether they know it is seen when asked). */
static int configure_sentinels(const struct ag_conf *c)
{
	const char *m = c->sync_sentinel_master;

	if (c->sync_sentinels.n == 0) {
		if (m[0] == '\0')
			return 0;
		agd_log(AG_LVL_ERR, "sync_sentinel_master = %.200s but sync_sentinels is not set", m);
		return -1;
	}
	if (c->sync_redis[0] != '\0') {
		agd_log(AG_LVL_ERR, "sync_redis and sync_sentinels are both set: with Sentinel the "
			"primary's address comes from the sentinels (set one of them)");
		return -1;
	}
	bool ok = m[0] != '\0' && strlen(m) <= 200;
	for (const char *p = m; ok && *p != '\0'; p++)
		ok = (unsigned char)*p > ' ' && *p != 0x7f;
	if (!ok) {
		agd_log(AG_LVL_ERR, "sync_sentinel_master must be the primary's name at the "
			"sentinels (1 to 200 bytes, no blanks)%s", m[0] == '\0' ? ": it is not set" : "");
		return -1;
	}
	return 0;
}

/* Check the sync keys of @c and read its key and password files into
 * @out. Returns 0 or -1 (said why). */
static int configure(const struct ag_conf *c, struct secrets *out)
{
	memset(out, 0, sizeof(*out));
	if (!ag_sync_enabled(c)) {
		agd_log(AG_LVL_ERR, "neither sync_redis nor sync_sentinels is set in %s: no Redis to "
			"sync through", g.d.conf_path);
		return -1;
	}
	if (configure_sentinels(c) != 0)
		return -1;
	char rhost[AG_CONF_STR_MAX];
	int rport;
	if (c->sync_redis[0] != '\0' && strncmp(c->sync_redis, "unix:/", 6) != 0 &&
	    !split_hostport(c->sync_redis, rhost, sizeof(rhost), &rport)) {
		agd_log(AG_LVL_ERR, "sync_redis = %s: must be host:port (port 1 to 65535) or unix:/path",
			c->sync_redis);
		return -1;
	}
	if (c->sync_key_file[0] == '\0') {
		agd_log(AG_LVL_ERR, "sync_key_file is not set: the fleet's events must be "
			"authenticated (the same key file on every host; authguard-sync(8))");
		return -1;
	}
	if (read_secret("sync_key_file", c->sync_key_file, out->key, sizeof(out->key),
			&out->key_len) != 0)
		return -1;
	if (out->key_len < KEY_MIN) {
		agd_log(AG_LVL_ERR, "sync_key_file %s: %zu bytes; at least %d are needed "
			"(head -c 32 /dev/urandom | base64 > FILE)", c->sync_key_file, out->key_len,
			KEY_MIN);
		return -1;
	}
	if (c->sync_redis_password_file[0] != '\0') {
		size_t n;
		if (read_secret("sync_redis_password_file", c->sync_redis_password_file,
				(uint8_t *)out->password, sizeof(out->password), &n) != 0)
			return -1;
		out->password[n] = '\0';
		char *nl = strchr(out->password, '\n');
		if (nl != NULL)
			*nl = '\0';
	}
	if (strlen(c->sync_host) >= sizeof(out->host) || strlen(c->sync_stream) == 0 ||
	    strlen(c->sync_stream) > 512) {
		agd_log(AG_LVL_ERR, "sync_host must be shorter than 64 bytes, sync_stream 1 to 512 bytes");
		return -1;
	}
	if (c->sync_host[0] != '\0') {
		memcpy(out->host, c->sync_host, strlen(c->sync_host) + 1);
	} else if (gethostname(out->host, sizeof(out->host) - 1) != 0 || out->host[0] == '\0') {
		agd_log(AG_LVL_ERR, "sync_host is not set and the host name is unknown");
		return -1;
	}
	return 0;
}

/* Make @sec the daemon's (its threads stopped, or not started yet). */
static void use_secrets(struct secrets *sec)
{
	OPENSSL_cleanse(g.key, sizeof(g.key));
	memcpy(g.key, sec->key, sec->key_len);
	g.key_len = sec->key_len;
	memcpy(g.host, sec->host, sizeof(g.host));
	memcpy(g.password, sec->password, sizeof(g.password));
	OPENSSL_cleanse(sec, sizeof(*sec));
}

/* Where the events go, for the log and systemd's status. */
static void describe(const struct ag_conf *c, char *buf, size_t len)
{
	if (c->sync_sentinels.n == 0) {
		snprintf(buf, len, "Redis %s", c->sync_redis);
		return;
	}
	int n = snprintf(buf, len, "Redis primary '%.200s' via sentinels",
			 c->sync_sentinel_master);
	for (size_t i = 0; i < c->sync_sentinels.n && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - (size_t)n, "%s%s", i ? ", " : " ",
			      c->sync_sentinels.v[i]);
}

/* The fleet's password key (sync.h): derived from the cluster key under
 * a label of its own (so it neither is nor reveals the key that signs
 * events), into the store, where the guard of every process on this host
 * reads it. A changed cluster key changes it: the hot-password and
 * repeat records made under the old one fade. */
static int publish_pw_key(void)
{
	static const char label[] = "authguard-sync fleet password key 1";
	uint8_t out[MAC_LEN];
	unsigned olen = MAC_LEN;
	bool changed = false;

	if (HMAC(EVP_sha256(), g.key, (int)g.key_len, (const uint8_t *)label, sizeof(label) - 1,
		 out, &olen) == NULL) {
		agd_log(AG_LVL_ERR, "cannot derive the fleet's password key (HMAC-SHA256)");
		return -1;
	}
	int rc = ag_sync_fleet_key_put(g.s, out, &changed);
	OPENSSL_cleanse(out, sizeof(out));
	if (rc != 0) {
		agd_log(AG_LVL_ERR, "store %s: cannot keep the fleet's password key: %s",
			g.d.conf.db_dir, ag_strerror(rc));
		return -1;
	}
	if (changed)
		agd_log(AG_LVL_INFO, "the fleet's password key is in the store (first start, or a "
			"new cluster key): passwords are hashed alike on every host from now on");
	return 0;
}

/* Admin stamps older than anything that may still arrive (sync.h): once
 * at start, then once an hour, in batches of short transactions. */
#define STAMP_GC_EVERY_MS 3600000
static void gc_stamps(void)
{
	static int64_t last;
	int64_t now = ag_now_ms();
	long n = 0;

	if (last != 0 && now - last < STAMP_GC_EVERY_MS && now >= last)
		return;
	last = now;
	int rc = ag_sync_gc_stamps(g.s, ag_guard_now(), 1000, &n);
	if (rc != 0)
		agd_log(AG_LVL_WARN, NAME ": collecting old admin stamps: %s (tried again in an hour)",
			ag_strerror(rc));
	else if (n > 0)
		agd_log(AG_LVL_INFO, "%ld admin stamps older than %d days collected", n,
			(int)(AG_SYNC_STAMP_KEEP_MS / 86400000));
}

static void write_status(void)
{
	struct ag_sync_status st;

	pthread_mutex_lock(&g.mu);
	g.st.updated_ms = ag_now_ms();
	snprintf(g.st.primary, sizeof(g.st.primary), "%.*s", (int)sizeof(g.st.primary) - 1, g.primary);
	st = g.st;
	pthread_mutex_unlock(&g.mu);
	int rc = ag_sync_status_put(g.s, &st);
	if (rc != 0)
		agd_log(AG_LVL_WARN, NAME ": cannot keep the state for authguard-admin status: %s",
			ag_strerror(rc));
}

static bool tp_running;

static int start_threads(pthread_t *tp, pthread_t *tr)
{
	if (pthread_create(tp, NULL, pusher, NULL) != 0) {
		agd_log(AG_LVL_ERR, "cannot start threads");
		return -1;
	}
	if (pthread_create(tr, NULL, reader, NULL) != 0) {
		agd_log(AG_LVL_ERR, "cannot start threads");
		atomic_store(&g.stop, true);
		pthread_join(*tp, NULL);
		return -1;
	}
	tp_running = true;
	return 0;
}

/* SIGHUP: the config and its files read again and checked while the
 * threads go on; a bad one is refused (said why) and the running one
 * kept. A good one: the threads stop (within a Redis timeout: their
 * state is in the store: the outbox, the stream position), the new
 * config goes in, they start again and connect to what it says. Returns
 * -1 only when the threads cannot be started again. */
static int reload(pthread_t *tp, pthread_t *tr)
{
	struct ag_conf c;
	struct secrets sec;

	if (agd_conf_read(&g.d, &c) != 0)
		return 0;
	if (configure(&c, &sec) != 0) {
		agd_log(AG_LVL_WARN, "reload refused: %s has a sync setting that cannot be used (see "
			"above); still running with the config read before", g.d.conf_path);
		ag_conf_free(&c);
		OPENSSL_cleanse(&sec, sizeof(sec));
		return 0;
	}
	if (strcmp(c.db_dir, g.d.conf.db_dir) != 0) {
		agd_log(AG_LVL_WARN, "reload: db_dir = %s takes a restart; still syncing %s", c.db_dir,
			g.d.conf.db_dir);
		snprintf(c.db_dir, sizeof(c.db_dir), "%s", g.d.conf.db_dir);
	}
	atomic_store(&g.restart, true);
	pthread_join(*tp, NULL);
	pthread_join(*tr, NULL);
	tp_running = false;
	atomic_store(&g.restart, false);
	ag_conf_free(&g.d.conf);
	g.d.conf = c;
	use_secrets(&sec);
	/* a new cluster key makes a new password key (said if it did) */
	(void)publish_pw_key();
	char where_to[2 * AG_CONF_STR_MAX];
	describe(&g.d.conf, where_to, sizeof(where_to));
	agd_log(AG_LVL_INFO, "config %s read again: host %s, %s, stream %s", g.d.conf_path, g.host,
		where_to, g.d.conf.sync_stream);
	pthread_mutex_lock(&g.mu);
	snprintf(g.st.host, sizeof(g.st.host), "%s", g.host);
	g.primary[0] = '\0'; /* the next one found is said, and from which sentinel */
	pthread_mutex_unlock(&g.mu);
	return start_threads(tp, tr);
}

/* One daemon per store: two would push the same outbox twice (under two
 * epochs, when one is of an older version and the other moves its
 * events: counted twice on every host). An flock() on the store's data
 * file, held while the process lives (LMDB itself locks with fcntl() on
 * lock.mdb and never flocks data.mdb, so the two do not meet). */
static int one_per_store(const char *db_dir)
{
	char path[AG_CONF_STR_MAX + 16];
	snprintf(path, sizeof(path), "%s/data.mdb", db_dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		agd_log(AG_LVL_ERR, "store %s: %s: %s", db_dir, path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK)
			agd_log(AG_LVL_ERR, "another authguard-sync runs on the store %s (one per "
				"store; its own config's db_dir): not started", db_dir);
		else
			agd_log(AG_LVL_ERR, "store %s: locking %s: %s", db_dir, path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd; /* (kept open: the lock goes with the process) */
}

int main(int argc, char **argv)
{
	int rc = agd_start(&g.d, NAME, usage, NULL, NULL, argc, argv);

	if (rc == 2)
		return 2;
	if (rc == 1 && !g.d.check_only)
		return 0; /* help, version */
	if (drain_from_env() != 0) {
		agd_finish(&g.d);
		return 2;
	}
	struct secrets sec;
	if (configure(&g.d.conf, &sec) != 0) {
		agd_finish(&g.d);
		return 2;
	}
	use_secrets(&sec);
	char where_to[2 * AG_CONF_STR_MAX];
	describe(&g.d.conf, where_to, sizeof(where_to));
	if (rc == 1) {
		if (g.d.check_only)
			printf("%s: host %s, %s, stream %s\n", NAME, g.host, where_to,
			       g.d.conf.sync_stream);
		agd_finish(&g.d);
		return 0;
	}
	if ((rc = ag_store_get(g.d.conf.db_dir, &g.s)) != 0) {
		agd_log(AG_LVL_ERR, "store %s: %s", g.d.conf.db_dir, ag_strerror(rc));
		agd_finish(&g.d);
		return 2;
	}
	if (one_per_store(g.d.conf.db_dir) < 0) {
		agd_finish(&g.d);
		return 2;
	}
	if (publish_pw_key() != 0) {
		agd_finish(&g.d);
		return 2;
	}
	int sigfd = agd_signals();
	if (sigfd < 0) {
		agd_log(AG_LVL_ERR, "signals: %s", strerror(errno));
		return 2;
	}
	g.st.version = AG_SYNC_STATUS_VERSION;
	snprintf(g.st.host, sizeof(g.st.host), "%s", g.host);
	g.st.since_ms = ag_now_ms();
	{
		struct ag_txn *t;
		struct ag_outbox_state ob;
		if (ag_txn_begin(g.s, false, &t) == 0) {
			if (ag_outbox_state(t, &ob) == 0)
				g.outbox_dropped = ob.dropped_fail + ob.dropped_other;
			ag_txn_abort(t);
		}
	}
	pthread_t tp, tr;
	if (start_threads(&tp, &tr) != 0)
		return 2;
	char status[3 * AG_CONF_STR_MAX + 128];
	snprintf(status, sizeof(status), "host %s, %s, stream %s", g.host, where_to,
		 g.d.conf.sync_stream);
	agd_log(AG_LVL_INFO, "%s", status);
	agd_ready(status);
	int64_t last_status = 0;
	while (!atomic_load(&g.stop)) {
		struct pollfd p = { .fd = sigfd, .events = POLLIN };
		(void)poll(&p, 1, FLUSH_EVERY_MS);
		/* The host-wide flush (store.h), here: the threads that apply
		 * and push then never find it due and wait for the disk (tens
		 * of milliseconds: the tail of the propagation time), and
		 * neither do the services recording attempts. */
		ag_store_sync(g.s);
		int sig;
		while ((sig = agd_signal_take(sigfd)) != 0) {
			if (sig == SIGHUP) {
				if (reload(&tp, &tr) != 0)
					atomic_store(&g.stop, true); /* no threads: said why */
			} else {
				atomic_store(&g.stop, true);
			}
		}
		int64_t now = ag_now_ms();
		if (now - last_status >= 1000 || now < last_status) {
			last_status = now;
			write_status();
		}
		gc_stamps();
	}
	agd_stopping();
	if (tp_running) {
		pthread_join(tp, NULL);
		pthread_join(tr, NULL);
	}
	pthread_mutex_lock(&g.mu);
	g.st.connected = 0;
	pthread_mutex_unlock(&g.mu);
	write_status();
	agd_log(AG_LVL_INFO, "stopping: %" PRIu64 " events pushed, %" PRIu64 " applied, %" PRIu64
		" duplicates, %" PRIu64 " rejected", g.st.pushed, g.st.applied, g.st.dups, g.st.rejected);
	close(sigfd);
	agd_finish(&g.d);
	return 0;
}
