/* agd.c - the daemons' common skeleton (see agd.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "ag.h"
#include "agd.h"
#include "store.h"

static const char *ident = "authguard";

/* Under systemd stderr is the journal: "<N>" gives the line its
 * priority there; on a terminal the prefix would be noise. */
static bool to_journal(void)
{
	return getenv("JOURNAL_STREAM") != NULL;
}

static void vlog(enum ag_level lvl, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_INFO, LOG_WARNING, LOG_ERR };
	static const char *word[] = { "", "warning: ", "error: " };
	char msg[2048];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* one line: a newline from a config value or a peer must not
	 * start a line of its own */
	for (char *p = msg; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (to_journal())
		fprintf(stderr, "<%d>%s%s\n", prio[lvl], word[lvl], msg);
	else
		fprintf(stderr, "%s: %s%s\n", ident, word[lvl], msg);
	fflush(stderr);
}

void agd_log(enum ag_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, fmt, ap);
	va_end(ap);
}

/* Attempt lines (log = syslog) go to syslog, LOG_AUTHPRIV, like the PAM
 * module's; faults and warnings to the daemon's log as well, where the
 * admin of a daemon looks first. */
static void sink_fn(void *ctx, enum ag_level lvl, const char *msg)
{
	static const int prio[] = { LOG_INFO, LOG_WARNING, LOG_ERR };

	(void)ctx;
	syslog(LOG_AUTHPRIV | prio[lvl], "%s", msg);
	if (lvl != AG_LVL_INFO)
		agd_log(lvl, "%s", msg);
}

static void report(void *ctx, const char *msg)
{
	int *errors = ctx;

	(*errors)++;
	agd_log(AG_LVL_ERR, "%s", msg);
}

static int load(const char *path, struct ag_conf *c)
{
	int errors = 0;

	ag_conf_init(c);
	int rc = ag_conf_load(c, path, report, &errors);
	if (rc < 0 || errors > 0) {
		agd_log(AG_LVL_ERR, "%s: %s", path,
			rc < 0 ? "cannot be read (see above)" : "has errors (see above)");
		ag_conf_free(c);
		return -1;
	}
	return 0;
}

int agd_start(struct agd *d, const char *name, const char *usage, const char *extra,
	      int (*opt)(struct agd *d, int letter, const char *arg), int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char optstring[64];
	int ch;

	memset(d, 0, sizeof(*d));
	d->name = ident = name;
	d->conf_path = AG_DEFAULT_CONF;
	d->sink.fn = sink_fn;
	snprintf(optstring, sizeof(optstring), "c:thV%s", extra != NULL ? extra : "");
	while ((ch = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': d->conf_path = optarg; break;
		case 't': d->check_only = true; break;
		case 'h': printf("%s", usage); return 1;
		case 'V': printf("%s %s\n", name, PACKAGE_VERSION); return 1;
		case '?': fprintf(stderr, "%s", usage); return 2;
		default:
			if (opt == NULL || opt(d, ch, optarg) != 0)
				return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n%s", name, argv[optind], usage);
		return 2;
	}
	if (d->conf_path[0] != '/') {
		agd_log(AG_LVL_ERR, "-c %s: the config must be an absolute path", d->conf_path);
		return 2;
	}
	if (load(d->conf_path, &d->conf) != 0)
		return 2;
	openlog(name, LOG_PID, LOG_AUTHPRIV);
	struct ag_store *s;
	int rc = ag_store_get(d->conf.db_dir, &s);
	if (rc != 0) {
		const char *detail = ag_store_detail();
		agd_log(AG_LVL_ERR, "store %s: %s%s%s", d->conf.db_dir, ag_strerror(rc),
			detail[0] != '\0' ? ": " : "", detail);
		ag_conf_free(&d->conf);
		return 2;
	}
	if (d->check_only) {
		/* the config stays loaded: the daemon checks its own part */
		printf("%s: config %s and store %s are usable\n", name, d->conf_path, d->conf.db_dir);
		return 1;
	}
	return 0;
}

void agd_finish(struct agd *d)
{
	ag_conf_free(&d->conf);
	ag_store_forget_all();
	closelog();
}

int agd_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int agd_signal_take(int fd)
{
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	return (int)si.ssi_signo;
}

int agd_conf_read(struct agd *d, struct ag_conf *c)
{
	if (load(d->conf_path, c) != 0) {
		agd_log(AG_LVL_WARN, "reload refused: still running with the config read before");
		return -1;
	}
	return 0;
}

int agd_reload(struct agd *d)
{
	struct ag_conf c;

	if (agd_conf_read(d, &c) != 0)
		return -1;
	ag_conf_free(&d->conf);
	d->conf = c;
	agd_log(AG_LVL_INFO, "config %s read again", d->conf_path);
	return 0;
}

void agd_ready(const char *status)
{
	if (status != NULL)
		sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	else
		sd_notify(0, "READY=1");
}

void agd_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}
