/*
 * agd.h - what the authguard daemons share (authguard-policyd,
 * authguard-watch, ...): command line, config, logging, signals and
 * systemd readiness. Not part of the core: the plugins never link it.
 *
 * A daemon runs in the foreground until SIGTERM (or SIGINT), as systemd
 * expects; its own messages go to stderr (the journal, under systemd,
 * with sd-daemon priority prefixes), attempt lines to the configured
 * log destination like every front end (syslog: LOG_AUTHPRIV).
 */
#ifndef AGD_H
#define AGD_H

#include <stdbool.h>

#include "conf.h"
#include "log.h"

struct agd {
	const char *name;       /* "authguard-policyd": syslog ident, messages */
	const char *conf_path;  /* -c, or the default */
	struct ag_conf conf;    /* as loaded (free with agd_finish) */
	struct ag_sink sink;    /* for ag_guard_*: attempt lines and faults */
	bool check_only;        /* -t: check the config and the store, then exit */
};

/*
 * Parse the common options (-c CONF, -t, -h/--help, -V/--version; @extra
 * lists the daemon's own option letters for getopt, handled by
 * @opt(d, letter, optarg), which returns 0 or -1 after printing why),
 * load the config (every bad line is printed; any bad line, or a config
 * that cannot be read, refuses the start: a daemon that would run on
 * defaults it was not given is a guard that is not what the admin
 * wrote), and open the store so that a store the daemon cannot use is
 * said at start, not at the first attempt.
 * Returns 0 to run, 1 when the daemon should exit 0 now (help, version;
 * with -t, d->check_only is set and the config is still loaded: the
 * daemon checks its own part, then calls agd_finish()), or 2 when it must
 * exit with status 2 (reason printed).
 */
int agd_start(struct agd *d, const char *name, const char *usage, const char *extra,
	      int (*opt)(struct agd *d, int letter, const char *arg), int argc, char **argv);

/* Release what agd_start() holds. */
void agd_finish(struct agd *d);

/* The daemon's own message (not an attempt line), one line. */
void agd_log(enum ag_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Block SIGTERM, SIGINT and SIGHUP in the calling thread (call it before
 * any thread is started, so every thread inherits the mask) and return a
 * signalfd that reports them, or -1 (errno). SIGPIPE is ignored.
 */
int agd_signals(void);

/* The signal read from @fd (non-blocking), or 0 if none is pending. */
int agd_signal_take(int fd);

/*
 * Re-read the config (on SIGHUP). A config with errors is refused and
 * the running one kept (said in the log). Returns 0 when @d->conf was
 * replaced, -1 when it was kept.
 */
int agd_reload(struct agd *d);

/*
 * Read the config again into @c (initialised here; the caller frees it
 * with ag_conf_free()), with the checks of agd_start(): every bad line is
 * said, and any refuses it. For a daemon whose threads read d->conf: it
 * checks the new config while they run, then swaps it in when they are
 * stopped. Returns 0, or -1 (said why; @c holds nothing).
 */
int agd_conf_read(struct agd *d, struct ag_conf *c);

/* systemd: READY=1, STOPPING=1, STATUS=... (no-ops without NOTIFY_SOCKET). */
void agd_ready(const char *status);
void agd_stopping(void);

#endif
