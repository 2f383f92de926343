/*
 * conf.h - authguard configuration: one table of keys, strict parsing.
 *
 * The same parser serves the config file, PAM module arguments, SASL
 * options and authguard-admin. Errors are reported as "file:line: message"
 * through a callback; the offending line keeps its default.
 */
#ifndef AG_CONF_H
#define AG_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"

#define AG_DEFAULT_CONF SYSCONFDIR "/security/authguard.conf"
#define AG_PATH_MAX 1024

/* A list of strings (a key given on several lines adds to it). */
struct ag_strlist {
	char **v;
	size_t n;
};

/* Network levels of one address family (ipv4_prefixes, ipv6_prefixes):
 * prefix lengths, longest (narrowest) first, each with the failures that
 * ban a network of that size (0: net_ban_after). */
#define AG_PREFIX_LEVELS 3
struct ag_prefixes {
	uint32_t n;
	uint32_t len[AG_PREFIX_LEVELS];
	uint32_t after[AG_PREFIX_LEVELS];
};

/* Longest value of a string key (with NUL). */
#define AG_CONF_STR_MAX 1024

enum ag_mode { AG_MODE_ENFORCE = 0, AG_MODE_LOG_ONLY = 1 };
enum ag_log_kind { AG_LOG_SYSLOG = 0, AG_LOG_FILE = 1, AG_LOG_NONE = 2 };

struct ag_conf {
	char db_dir[AG_PATH_MAX];
	int64_t db_max_size;      /* bytes the store may grow to */
	uint32_t mode;            /* enum ag_mode */
	uint32_t fail_open;       /* bool */
	uint32_t log_kind;        /* enum ag_log_kind */
	char log_path[AG_PATH_MAX];
	int64_t decay_half_life;  /* all durations in milliseconds */
	uint32_t tarpit_free;
	int64_t tarpit_base;
	int64_t tarpit_max;
	uint32_t tarpit_slots;
	uint32_t ip_ban_after;
	int64_t ip_ban_time;
	int64_t ip_ban_max;
	uint32_t net_ban_after;
	uint32_t ipv4_prefix;
	uint32_t ipv6_prefix;
	uint32_t spray_users;
	uint32_t user_lock_after;
	int64_t user_lock_time;
	int64_t familiar_ttl;
	uint32_t user_fold;       /* bool: ASCII case and surrounding blanks do not matter */
	/* domains whose "@domain" ends a name that is the same user without
	 * it (lower case, without '@'; see ag_user_strip()) */
	struct ag_strlist user_strip_domains;
	struct ag_cidrs trusted;
	struct ag_cidrs proxies;
	struct ag_cidrs deny;
	/* hot passwords and attack waves (issue 14 items 1, 2) */
	uint32_t spray_password_users; /* distinct users a wrong password fails for: hot */
	uint32_t wave_factor;          /* unfamiliar failures over the baseline: a wave */
	uint32_t wave_min_failures;    /* and at least this many within decay_half_life */
	int64_t wave_baseline;         /* half-life of the host's learned normal */
	/* keys of the daemons (authguard-policyd, -watch, -sync) go below;
	 * string keys as char[AG_CONF_STR_MAX], lists as struct ag_strlist */
	/* authguard-watch */
	struct ag_strlist watch_source;    /* journal:ID,..., file:/path, stdin */
	char watch_rules[AG_CONF_STR_MAX]; /* built-in rule sets */
	struct ag_strlist watch_rule;      /* "NAME IDENT OUTCOME REGEX" */
	int64_t watch_max_age;             /* first start: older lines are skipped */
	/* authguard-policyd: Dovecot's auth policy server */
	struct ag_strlist policyd_listen;  /* host:port, one per entry */
	uint32_t policyd_allow_remote;     /* bool: addresses beyond loopback */
	char policyd_api_key_file[AG_CONF_STR_MAX]; /* "" = no key */
	uint32_t policyd_threads;          /* per listening address */
	uint32_t policyd_max_connections;  /* per listening address */
	int64_t policyd_max_request;       /* body bytes */
	int64_t policyd_timeout;           /* ms for one request to arrive */
	/* authguard-sync (sync.h); sync_redis set: the outbox is kept */
	char sync_redis[AG_CONF_STR_MAX];  /* host:port or unix:/path; "" = no fleet */
	char sync_host[AG_CONF_STR_MAX];   /* this host's id; "" = the host name */
	char sync_key_file[AG_CONF_STR_MAX]; /* the cluster key */
	char sync_stream[AG_CONF_STR_MAX]; /* the Redis stream's key */
	char sync_redis_user[AG_CONF_STR_MAX]; /* ACL user; "" = AUTH with the password alone */
	char sync_redis_password_file[AG_CONF_STR_MAX]; /* "" = no AUTH */
	uint32_t sync_stream_max;          /* XADD MAXLEN ~ */
	uint32_t sync_outbox_max;          /* events kept while Redis is away */
	int64_t sync_snapshot_every;       /* publish a snapshot this often */
	/* authguard-sync: Redis Sentinel, replica acknowledgements */
	struct ag_strlist sync_sentinels;  /* host:port entries; none: sync_redis */
	char sync_sentinel_master[AG_CONF_STR_MAX]; /* the primary's name at the sentinels */
	uint32_t sync_wait_replicas;       /* WAIT for this many replicas; 0: off */
	int64_t sync_wait_timeout;         /* ... at most this long per batch */
	/* prefix hierarchy, slow time scale, attempts in flight (issue 14) */
	struct ag_prefixes ipv4_prefixes;  /* [0].len is ipv4_prefix */
	struct ag_prefixes ipv6_prefixes;  /* [0].len is ipv6_prefix */
	uint32_t ipv6_familiar_prefix;     /* the unit of familiarity for IPv6 */
	int64_t slow_half_life;            /* the second, slow time scale */
	uint32_t ip_slow_ban_after;
	uint32_t user_slow_lock_after;
	int64_t user_slow_lock_time;
	uint32_t inflight_max;             /* host-wide marks; 0: not counted */
	int64_t inflight_ttl;
	/* bookkeeping: line on which each key was set (0 = default) */
	unsigned set_line[96];
	/* the last load could not read its file, or ran out of memory
	 * parsing it (errno; 0 = neither): the built-in defaults are in force
	 * (all or in part), and every attempt line and a fault line say so */
	int load_errno;
	char load_path[AG_PATH_MAX];
};

/* Error report: @msg is a complete "where: what" sentence without newline. */
typedef void ag_conf_report_fn(void *ctx, const char *msg);

/* Fill @c with the defaults. Never fails. */
AG_API void ag_conf_init(struct ag_conf *c);

/* Release the lists held by @c (it may be initialised again). */
AG_API void ag_conf_free(struct ag_conf *c);

/* Deep copy; returns 0 or AG_ENOMEM (then @dst holds defaults). */
AG_API int ag_conf_copy(struct ag_conf *dst, const struct ag_conf *src);

/*
 * Set one key from text. On error writes a message (without location) to
 * @err and returns AG_ECONF; @c is unchanged for that key. List keys
 * replace the whole list.
 */
AG_API int ag_conf_set(struct ag_conf *c, const char *key, const char *value,
		       char *err, size_t errlen);

/*
 * Read a config file. Each bad line is reported as "PATH:LINE: message"
 * and skipped (the key keeps its previous value). Returns the number of
 * errors (0 = clean), or AG_EIO if the file cannot be read, is missing,
 * is not a regular file or is larger than AG_CONF_FILE_MAX (reported too,
 * and kept in load_errno/load_path). Reads the file on every call: the
 * front ends use ag_conf_cached().
 * In a file, a list key may be given on several lines; entries accumulate.
 */
AG_API int ag_conf_load(struct ag_conf *c, const char *path,
			ag_conf_report_fn *report, void *ctx);

/*
 * The config file @path as this process last parsed it, revalidated on
 * every call with one stat() (device, inode, size, mtime and ctime to the
 * nanosecond; a file changed in the last few seconds is also read again
 * and compared, since two writes in one clock tick share a timestamp):
 * an edit, a replaced file, or a file that appears or disappears is seen
 * on the next call. When the file is parsed (first use, or a change), its
 * bad lines are reported through @report as ag_conf_load() does; an
 * unchanged file is not reported again. A file that cannot be read gives
 * the defaults with load_errno/load_path set on every call, and is
 * reported when that state is first seen.
 *
 * @c receives a deep copy (defaults overlaid by the file) which the caller
 * owns: release it with ag_conf_free(); module arguments go on top of it.
 * Returns what parsing the file returned (0 or the number of bad lines,
 * or AG_EIO), or AG_ENOMEM (then @c holds the defaults, with load_errno
 * ENOMEM so the guard says config=unreadable). Thread-safe and fork-safe;
 * at most AG_CONF_CACHE_PATHS paths are kept (the least recently used is
 * dropped, and parsed and reported again when next used).
 */
#define AG_CONF_CACHE_PATHS 4
AG_API int ag_conf_cached(struct ag_conf *c, const char *path, ag_conf_report_fn *report,
			  void *ctx);

/* Test hooks: drop every cached file; the clock (ms since the epoch) that
 * decides whether a file changed too recently to trust its timestamps
 * (NULL: the real one); how many times a cached file was read. */
AG_API void ag_conf_cache_forget(void);
AG_API void ag_conf_cache_set_clock(int64_t (*now_fn)(void));
AG_API unsigned long ag_conf_cache_reads(void);

/* ---- inside the core: the file reader, shared with the cache ------------ */

/* Config files larger than this are refused (load_errno EFBIG). */
#define AG_CONF_FILE_MAX (256 * 1024)

/* A config file's bytes, or why it could not be read. */
struct ag_conf_file {
	char *text;  /* malloc'ed, @len bytes, not NUL-terminated */
	size_t len;
	int err;     /* 0, or the errno (EISDIR/EINVAL: not a regular file) */
};

/* Read @path whole into @f. Returns 0 or AG_EIO (f->err says why; no text). */
AG_API int ag_conf_file_read(struct ag_conf_file *f, const char *path);

/* Release f->text (f->err is kept). */
AG_API void ag_conf_file_free(struct ag_conf_file *f);

/* Parse @f (as read from @path) into @c; returns as ag_conf_load(). */
AG_API int ag_conf_file_parse(struct ag_conf *c, const char *path, const struct ag_conf_file *f,
			      ag_conf_report_fn *report, void *ctx);

/*
 * Apply "key=value" words (PAM module arguments). Words that are not of
 * that form are ignored here (the caller handles flags such as "preauth").
 * Errors are reported as "argument 'WORD': message". Returns the number
 * of errors.
 */
AG_API int ag_conf_apply_args(struct ag_conf *c, int argc, const char **argv,
			      ag_conf_report_fn *report, void *ctx);

/* Print every key with its effective value, one "key = value" a line. */
AG_API void ag_conf_dump(const struct ag_conf *c, FILE *out);

/* Parse a duration ("250ms", "30s", "15m", "1h", "7d", bare = seconds).
 * Returns 0 or AG_EINVAL/AG_ERANGE. */
AG_API int ag_parse_duration(const char *s, int64_t *ms_r);

/* Parse a size ("64M", "1G", "512k", bare = bytes). Returns 0 or
 * AG_EINVAL/AG_ERANGE. */
AG_API int ag_parse_size(const char *s, int64_t *bytes_r);

/* Format a duration with the largest exact unit ("90s", "1h", "250ms"). */
AG_API void ag_format_duration(int64_t ms, char *buf, size_t len);

#endif
