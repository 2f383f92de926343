/*
 * pam_authguard.c - PAM glue: module arguments and PAM items in, the
 * guard's decision out as a PAM return code.
 *
 *   auth     requisite      pam_authguard.so preauth
 *   auth     [success=1 auth_err=ignore user_unknown=ignore default=die] pam_unix.so
 *   auth     [default=die]  pam_authguard.so authfail
 *   auth     sufficient     pam_authguard.so authsucc
 *   account  required       pam_authguard.so
 */
#include "config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "conf.h"
#include "guard.h"

#define PAG_EXPORT __attribute__((visibility("default")))
#define TICKET_KEY "pam_authguard_ticket"
#define RECORDED_KEY "pam_authguard_recorded"
#define USER_KEY "pam_authguard_user"
#define REFUSED_KEY "pam_authguard_refused"

enum phase { PH_NONE, PH_PREAUTH, PH_AUTHFAIL, PH_AUTHSUCC };

static void sink_fn(void *ctx, enum ag_level lvl, const char *msg)
{
	int prio = lvl == AG_LVL_ERR ? LOG_ERR : lvl == AG_LVL_WARN ? LOG_WARNING : LOG_INFO;

	pam_syslog((pam_handle_t *)ctx, prio, "%s", msg);
}

/* Errors in the module arguments are reported with the first attempt and
 * then at most once a minute per process, not on every attempt. */
static _Atomic int64_t last_conf_report;

/* Config errors are gathered while the config is read, and said once it
 * is: with log = file: they go to that file as well as to syslog. */
struct report_ctx {
	struct ag_notes *notes;
	bool quiet;
};

static void report_fn(void *ctx, const char *msg)
{
	struct report_ctx *r = ctx;
	char line[2 * sizeof(r->notes->msg[0])]; /* cut to fit by ag_notes_add() */

	if (r->quiet)
		return;
	snprintf(line, sizeof(line), "config: %s (that setting was not applied)", msg);
	ag_notes_add(r->notes, line);
}

/* Read the config: file (conf=PATH or the default), then key=value
 * arguments over it; bad lines are logged (to syslog through @sink, and to
 * the log file with log = file:) and keep their defaults. Also picks the
 * phase out of the arguments. */
static void load_conf(const struct ag_sink *sink, int argc, const char **argv, struct ag_conf *c,
		      enum phase *ph)
{
	const char *path = AG_DEFAULT_CONF;
	int64_t now = ag_now_ms(), last = last_conf_report;
	struct ag_notes notes = { 0 };
	struct report_ctx r = { &notes, last != 0 && now - last < 60000 && now >= last };
	int errors = 0;
	char msg[300];

	*ph = PH_NONE;
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], "conf=", 5) == 0) {
			path = argv[i] + 5;
		} else if (strcmp(argv[i], "preauth") == 0) {
			*ph = PH_PREAUTH;
		} else if (strcmp(argv[i], "authfail") == 0) {
			*ph = PH_AUTHFAIL;
		} else if (strcmp(argv[i], "authsucc") == 0) {
			*ph = PH_AUTHSUCC;
		} else if (strchr(argv[i], '=') == NULL) {
			snprintf(msg, sizeof(msg), "unknown module argument '%.200s'", argv[i]);
			report_fn(&r, msg);
			errors++;
		}
	}
	/* parsed once per change of the file, and its errors reported then
	 * (not rate-limited: that is once already); a missing file is an
	 * error too (a chroot without it, a typo): the guard would run on
	 * defaults without its lists, and says so on every attempt line */
	struct report_ctx fr = { &notes, false };
	(void)ag_conf_cached(c, path, report_fn, &fr);
	errors += ag_conf_apply_args(c, argc, argv, report_fn, &r);
	if (errors != 0 && !r.quiet)
		last_conf_report = now;
	ag_guard_say_notes(c, sink, &notes);
}

/* Fill @a from the PAM items; strings stay owned by PAM. */
static void get_attempt(pam_handle_t *pamh, struct ag_attempt *a, bool prompt_user)
{
	const void *item = NULL;
	const char *user = NULL;

	memset(a, 0, sizeof(*a));
	if (pam_get_item(pamh, PAM_SERVICE, &item) == PAM_SUCCESS)
		a->service = item;
	if (prompt_user)
		(void)pam_get_user(pamh, &user, NULL);
	else if (pam_get_item(pamh, PAM_USER, &item) == PAM_SUCCESS)
		user = item;
	if (user != NULL) {
		a->user = user;
		a->user_len = strlen(user);
	}
	item = NULL;
	if (pam_get_item(pamh, PAM_RHOST, &item) == PAM_SUCCESS && item != NULL) {
		a->rhost = item;
		a->rhost_len = strlen(item);
	}
}

static void free_data(pam_handle_t *pamh, void *data, int status)
{
	(void)pamh;
	(void)status;
	free(data);
}

/* The one place core results become PAM codes. A refusal is
 * PAM_AUTH_ERR, the code of an ordinary wrong password, so the client
 * learns nothing (a ban is no oracle) and "requisite" stops the stack
 * before any password is checked. */
static int pam_code(enum phase ph, enum ag_decision d)
{
	switch (ph) {
	case PH_AUTHFAIL:
		return PAM_AUTH_ERR;
	case PH_AUTHSUCC:
		/* a right password refused after all (hot_password): what a
		 * wrong one gives */
		return d == AG_REFUSE ? PAM_AUTH_ERR : PAM_SUCCESS;
	case PH_NONE:
	case PH_PREAUTH:
		break;
	}
	return d == AG_REFUSE ? PAM_AUTH_ERR : PAM_SUCCESS;
}

static void mark_recorded(pam_handle_t *pamh)
{
	(void)pam_set_data(pamh, RECORDED_KEY, (void *)1, NULL);
}

static bool was_recorded(pam_handle_t *pamh)
{
	const void *d = NULL;
	return pam_get_data(pamh, RECORDED_KEY, &d) == PAM_SUCCESS && d != NULL;
}

/* A success refused after all (hot_password) by an earlier phase. */
static bool was_refused(pam_handle_t *pamh)
{
	const void *d = NULL;
	return pam_get_data(pamh, REFUSED_KEY, &d) == PAM_SUCCESS && d != NULL;
}

static const struct ag_ticket *get_ticket(pam_handle_t *pamh)
{
	const void *d = NULL;
	if (pam_get_data(pamh, TICKET_KEY, &d) != PAM_SUCCESS)
		return NULL;
	return d;
}

static void run_preauth(pam_handle_t *pamh, const struct ag_conf *c,
			const struct ag_sink *sink, enum ag_decision *d)
{
	struct ag_attempt a;
	struct ag_ticket *t = calloc(1, sizeof(*t));
	struct ag_ticket local;

	get_attempt(pamh, &a, true);
	/* the stack's authfail / authsucc record it: in flight until then */
	*d = ag_guard_check_ex(c, sink, &a, AG_CHECK_INFLIGHT, t != NULL ? t : &local);
	/* record against the name checked here, even if a later module
	 * rewrites PAM_USER (Dovecot reads it back; maps are supported) */
	char *name = a.user != NULL ? strdup(a.user) : NULL;
	if (name != NULL && pam_set_data(pamh, USER_KEY, name, free_data) != PAM_SUCCESS)
		free(name);
	if (t != NULL && pam_set_data(pamh, TICKET_KEY, t, free_data) != PAM_SUCCESS)
		free(t);
	(void)pam_set_data(pamh, RECORDED_KEY, NULL, NULL);
	(void)pam_set_data(pamh, REFUSED_KEY, NULL, NULL);
	if (*d == AG_REFUSE)
		mark_recorded(pamh); /* its log line is written */
}

/* Returns AG_REFUSE when a success is refused after all. */
static enum ag_decision run_record(pam_handle_t *pamh, const struct ag_conf *c,
				   const struct ag_sink *sink, bool success)
{
	struct ag_attempt a;
	const void *tok = NULL;
	enum ag_decision d = AG_PROCEED;

	if (was_recorded(pamh))
		return was_refused(pamh) ? AG_REFUSE : d;
	get_attempt(pamh, &a, false);
	const void *checked = NULL;
	if (pam_get_data(pamh, USER_KEY, &checked) == PAM_SUCCESS && checked != NULL) {
		a.user = checked;
		a.user_len = strlen(checked);
	}
	/* a success's password too: one being sprayed across users, from a
	 * place new to this one, is refused after all (hot_password) */
	(void)pam_get_item(pamh, PAM_AUTHTOK, &tok);
	struct ag_record_opts o = { .pw = tok, .pw_len = tok != NULL ? strlen(tok) : 0,
				    .decision_r = &d };
	(void)ag_guard_record_ex(c, sink, &a, success, &o, get_ticket(pamh));
	mark_recorded(pamh);
	/* the account phase refuses it too: authsucc is "sufficient" in
	 * the README's stack, whose failure libpam ignores */
	if (d == AG_REFUSE)
		(void)pam_set_data(pamh, REFUSED_KEY, (void *)1, NULL);
	return d;
}

PAG_EXPORT int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct ag_conf c;
	struct ag_sink sink = { sink_fn, pamh };
	enum ag_decision d = AG_PROCEED;
	enum phase ph;

	(void)flags;
	load_conf(&sink, argc, argv, &c, &ph);
	switch (ph) {
	case PH_NONE:
	case PH_PREAUTH:
		run_preauth(pamh, &c, &sink, &d);
		break;
	case PH_AUTHFAIL:
		run_record(pamh, &c, &sink, false);
		break;
	case PH_AUTHSUCC:
		d = run_record(pamh, &c, &sink, true);
		break;
	}
	ag_conf_free(&c);
	return pam_code(ph, d);
}

PAG_EXPORT int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	(void)pamh;
	(void)flags;
	(void)argc;
	(void)argv;
	return PAM_SUCCESS;
}

/* The account phase runs only after a successful authentication: record
 * the success unless authsucc already did. */
PAG_EXPORT int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
	struct ag_conf c;
	struct ag_sink sink = { sink_fn, pamh };
	enum phase ph;

	(void)flags;
	load_conf(&sink, argc, argv, &c, &ph);
	enum ag_decision d = run_record(pamh, &c, &sink, true);
	ag_conf_free(&c);
	return d == AG_REFUSE ? PAM_AUTH_ERR : PAM_SUCCESS;
}
