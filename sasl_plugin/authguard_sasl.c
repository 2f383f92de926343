/*
 * authguard_sasl.c - Cyrus SASL glue: guards password authentication done
 * through libsasl2 (Postfix SMTP AUTH, Cyrus imapd, ...).
 *
 * Only a server mechanism sees the outcome of an authentication, so this
 * plugin *wraps* the stock mechanisms: installed alone in a private plugin
 * directory (selected with SASL_PATH), it loads the system's PLAIN, LOGIN,
 * CRAM-MD5, DIGEST-MD5 and SCRAM plugins itself and offers them under
 * their own names, with the guard around each authentication:
 *
 *   - once per authentication, before the step that carries the
 *     credential, ag_guard_check(): refuse (SASL_BADAUTH) or tarpit;
 *     for PLAIN, LOGIN, CRAM-MD5, SCRAM and DIGEST-MD5 the user name is
 *     read from the client's data (sniff.c), for the others only source
 *     rules apply there;
 *   - after a successful step, if libsasl2 authenticated another user
 *     than the one checked (none, or a name only libsasl2 resolved), that
 *     user's rules: a locked user's correct password from an unfamiliar
 *     source is refused like a wrong one;
 *   - after the final step, ag_guard_record() with the outcome, under the
 *     user libsasl2 authenticated; a step that succeeds but whose
 *     authorization (proxy policy) fails counts as a failure.
 *
 * The password check itself stays libsasl2's (pwcheck_method).
 *
 * A canonuser plugin ("authguard", selected with canon_user_plugin)
 * covers sasl_checkpass() (IMAP LOGIN and POP3 PASS in Cyrus imapd), which
 * never reaches a mechanism: there it refuses banned and locked sources
 * and tarpits before the check; the outcome is not reported by libsasl2.
 *
 * Loaded from the stock mechanisms' own directory (a link to it there, so
 * that a daemon started without SASL_PATH still finds the canonuser plugin
 * its config names, instead of failing every login), it offers no
 * mechanism and works as the canonuser plugin alone: see fallback_role.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <sasl/sasl.h>
#include <sasl/saslplug.h>

#include "conf.h"
#include "guard.h"
#include "sniff.h"

#define AGS_EXPORT __attribute__((visibility("default")))

#ifndef AG_SASL_SYSTEM_DIR
#define AG_SASL_SYSTEM_DIR "/usr/lib/sasl2"
#endif

enum mech_kind { MK_PLAIN, MK_LOGIN, MK_CRAM, MK_SCRAM, MK_DIGEST, MK_OTHER };

/* One wrapped mechanism: our glob_context. */
struct wglob {
	const sasl_server_plug_t *inner;
	enum mech_kind kind;
};

/* One authentication: our conn_context. */
struct wctx {
	const struct wglob *g;
	void *inner;
	int data_steps;       /* client messages seen */
	bool checked, user_checked, recorded;
	bool flying;          /* the check left an in-flight mark not yet dropped */
	sasl_server_params_t *sp; /* the connection's, for w_dispose() */
	struct ag_ticket ticket;
	char *user;           /* as the client sent it (PLAIN authcid, LOGIN name) */
	char *pass;           /* PLAIN/LOGIN: kept until recorded, then wiped */
	size_t pass_len;
};

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static sasl_server_plug_t *plugs;
static struct wglob *globs;
static int nplugs;

/* Set while a wrapped step runs in this thread, so the canonuser plugin
 * (called by the mechanism) does not check the same attempt twice. */
static __thread int in_wrapped_step;

/* ---- the guard's side --------------------------------------------------- */

/* Lines for log = syslog go to syslog(3) at facility authpriv, as the
 * PAM module's do: the application's SASL log callback is no place for
 * them (Postfix shows SASL_LOG_NOTE only with -v, so SMTP AUTH would log
 * no attempt at all). No openlog(): the facility goes with each message,
 * so the host's ident and its own facility stay as it set them; glibc's
 * syslog() is thread-safe, and a chrooted host keeps the socket it opened
 * before the chroot (Postfix opens it at start). Warnings and faults also
 * go to the application's log, so the mail admin sees them where the
 * daemon's own errors are. */
static void sink_fn(void *ctx, enum ag_level lvl, const char *msg)
{
	const sasl_utils_t *u = ctx;
	int prio = lvl == AG_LVL_ERR ? LOG_ERR : lvl == AG_LVL_WARN ? LOG_WARNING : LOG_INFO;

	syslog(LOG_AUTHPRIV | prio, "%s", msg);
	if (lvl != AG_LVL_INFO && u != NULL && u->log != NULL)
		u->log(u->conn, lvl == AG_LVL_ERR ? SASL_LOG_ERR : SASL_LOG_WARN, "%s", msg);
}

static void report_fn(void *ctx, const char *msg)
{
	struct ag_notes *n = ctx;
	char line[2 * sizeof(n->msg[0])]; /* cut to fit by ag_notes_add() */

	snprintf(line, sizeof(line), "authguard: config: %s (that setting was not applied)", msg);
	ag_notes_add(n, line);
}

/* The authguard config: the file named by the SASL option authguard_conf
 * (in the application's SASL config, e.g. Postfix's smtpd.conf), else the
 * default. Checked with one stat() for each authentication and parsed
 * again when it changed (conf.h: ag_conf_cached), like the PAM module.
 * Its errors are said once it is loaded, so that with log = file: they go
 * to that file too. */
static void load_conf(const sasl_utils_t *u, const struct ag_sink *sink, struct ag_conf *c)
{
	const char *path = NULL;
	unsigned len = 0;
	struct ag_notes notes = { 0 };

	if (u->getopt == NULL ||
	    u->getopt(u->getopt_context, "authguard", "authguard_conf", &path, &len) != SASL_OK ||
	    path == NULL || path[0] == '\0')
		path = AG_DEFAULT_CONF;
	/* a missing file is an error too: see pam_authguard.c */
	(void)ag_conf_cached(c, path, report_fn, &notes);
	ag_guard_say_notes(c, sink, &notes);
}

static void attempt_of(sasl_server_params_t *sp, const char *user, struct ag_attempt *a)
{
	memset(a, 0, sizeof(*a));
	a->service = sp->service;
	if (user != NULL) {
		a->user = user;
		a->user_len = strlen(user);
	}
	if (sp->ipremoteport != NULL) {
		a->rhost = sp->ipremoteport;
		a->rhost_len = sp->ipremlen ? sp->ipremlen : strlen(sp->ipremoteport);
	}
}

/* The one place core results become SASL codes: a refusal is
 * SASL_BADAUTH, what a wrong password gives (a ban is no oracle). */
static int sasl_code(enum ag_decision d)
{
	return d == AG_REFUSE ? SASL_BADAUTH : SASL_OK;
}

/* @after_step: the mechanism step has just succeeded (the password was
 * right), so a refusal's line says so. @flags: AG_CHECK_* for the check
 * before the step. */
static enum ag_decision check_flags(sasl_server_params_t *sp, const char *user, struct ag_ticket *t,
				    bool tarpit, bool after_step, unsigned flags)
{
	struct ag_conf c;
	struct ag_attempt a;
	struct ag_sink s = { sink_fn, (void *)sp->utils };

	load_conf(sp->utils, &s, &c);
	if (!tarpit)
		c.tarpit_base = 0; /* no delay, no slot taken */
	attempt_of(sp, user, &a);
	enum ag_decision d = after_step ? ag_guard_recheck(&c, &s, &a, t)
				      : ag_guard_check_ex(&c, &s, &a, flags, t);
	ag_conf_free(&c);
	return d;
}

static enum ag_decision check_as(sasl_server_params_t *sp, const char *user, struct ag_ticket *t,
				 bool tarpit, bool after_step)
{
	return check_flags(sp, user, t, tarpit, after_step, 0);
}

/* The check before a wrapped mechanism's credential step: the attempt
 * is in flight until its outcome is recorded (or it is abandoned), so
 * a parallel burst over many connections is held to the thresholds. */
static enum ag_decision check(sasl_server_params_t *sp, struct wctx *w)
{
	enum ag_decision d = check_flags(sp, w->user, &w->ticket, true, false, AG_CHECK_INFLIGHT);
	w->flying = w->ticket.flying;
	return d;
}

/* An attempt that will not be recorded (a refusal after the step, a
 * back-end error, a client that gave up): its mark goes now. */
static void abandon(sasl_server_params_t *sp, struct wctx *w)
{
	struct ag_conf c;
	struct ag_attempt a;
	struct ag_sink s = { sink_fn, (void *)sp->utils };
	struct ag_ticket t = { .magic = AG_TICKET_MAGIC, .flying = 1 };

	if (!w->flying)
		return;
	w->flying = false;
	load_conf(sp->utils, &s, &c);
	attempt_of(sp, w->user, &a);
	ag_guard_abandon(&c, &s, &a, &t);
	ag_conf_free(&c);
}

/* Returns AG_REFUSE when a success is refused after all: its password is
 * being sprayed across users and the source is new to this one
 * (hot_password; PLAIN and LOGIN only: the others carry no password). */
static enum ag_decision record(sasl_server_params_t *sp, struct wctx *w, const char *user, bool ok)
{
	struct ag_conf c;
	struct ag_attempt a;
	struct ag_sink s = { sink_fn, (void *)sp->utils };
	enum ag_decision d = AG_PROCEED;

	if (w->recorded)
		return d;
	w->recorded = true;
	struct ag_record_opts o = { .pw = w->pass, .pw_len = w->pass != NULL ? strlen(w->pass) : 0,
				    .decision_r = &d };
	load_conf(sp->utils, &s, &c);
	attempt_of(sp, user, &a);
	(void)ag_guard_record_ex(&c, &s, &a, ok, &o, w->checked ? &w->ticket : NULL);
	ag_conf_free(&c);
	if (w->flying && ((user == NULL) != (w->user == NULL) ||
			  (user != NULL && strcmp(user, w->user) != 0))) {
		/* recorded under another name than the one marked: that
		 * mark is not the record's to drop */
		abandon(sp, w);
	}
	w->flying = false;
	return d;
}

static int canon(sasl_server_params_t *sp, const char *user, unsigned len, char *out,
		 unsigned out_max, unsigned *out_len);

/* ---- reading the user from the client's data ---------------------------- */

/* The user name as libsasl2 will canonicalize it (trimmed, qualified with
 * the user realm), so check and record speak of one user. */
static char *canon_dup(sasl_server_params_t *sp, const char *p, size_t n)
{
	char buf[1024];
	unsigned out = 0;

	if (n >= sizeof(buf) - 256 || canon(sp, p, (unsigned)n, buf, sizeof(buf), &out) != SASL_OK)
		return NULL;
	char *s = sp->utils->malloc(out + 1);
	if (s != NULL) {
		memcpy(s, buf, out);
		s[out] = '\0';
	}
	return s;
}

static char *dup_n(const sasl_utils_t *u, const char *p, size_t n)
{
	char *s = u->malloc(n + 1);
	if (s != NULL) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static void wipe_free(const sasl_utils_t *u, char **p, size_t n)
{
	if (*p == NULL)
		return;
	memset(*p, 0, n);
	u->free(*p);
	*p = NULL;
}

/* PLAIN: [authzid] NUL authcid NUL passwd */
static void sniff_plain(struct wctx *w, sasl_server_params_t *sp, const char *in, unsigned len)
{
	const sasl_utils_t *u = sp->utils;
	const char *nul1 = memchr(in, '\0', len);
	if (nul1 == NULL)
		return;
	const char *authcid = nul1 + 1;
	size_t rest = len - (size_t)(authcid - in);
	const char *nul2 = memchr(authcid, '\0', rest);
	if (nul2 == NULL)
		return;
	w->user = canon_dup(sp, authcid, (size_t)(nul2 - authcid));
	w->pass_len = rest - (size_t)(nul2 - authcid) - 1;
	w->pass = dup_n(u, nul2 + 1, w->pass_len);
}

/* CRAM-MD5: the client's one message is "user SP digest", the digest 32
 * hex digits (RFC 2195). The user is the claim the digest is checked
 * against; anything else is left to the mechanism to refuse. */
static void sniff_cram(struct wctx *w, sasl_server_params_t *sp, const char *in, unsigned len)
{
	enum { DIGEST_LEN = 32 };

	if (len < DIGEST_LEN + 2 || in[len - DIGEST_LEN - 1] != ' ')
		return;
	for (unsigned i = len - DIGEST_LEN; i < len; i++) {
		char ch = in[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
			return;
	}
	size_t n = len - DIGEST_LEN - 1;
	if (memchr(in, '\0', n) == NULL)
		w->user = canon_dup(sp, in, n);
}

/* SCRAM's client-first-message and DIGEST-MD5's digest-response: the
 * first message the client sends names the user (sniff.c reads it). */
static void sniff_named(struct wctx *w, sasl_server_params_t *sp, const char *in, unsigned len)
{
	char name[AGS_NAME_MAX + 1];
	int n = w->g->kind == MK_SCRAM ? ags_scram_user(in, len, name, sizeof(name))
				       : ags_digest_user(in, len, name, sizeof(name));
	if (n > 0)
		w->user = canon_dup(sp, name, (size_t)n);
}

/* ---- the wrapped mechanism ----------------------------------------------- */

static int w_new(void *glob, sasl_server_params_t *sp, const char *challenge, unsigned challen,
		 void **conn_context)
{
	struct wglob *g = glob;
	struct wctx *w = sp->utils->malloc(sizeof(*w));
	int rc;

	if (w == NULL)
		return SASL_NOMEM;
	memset(w, 0, sizeof(*w));
	w->g = g;
	w->sp = sp;
	rc = g->inner->mech_new(g->inner->glob_context, sp, challenge, challen, &w->inner);
	if (rc != SASL_OK) {
		sp->utils->free(w);
		return rc;
	}
	*conn_context = w;
	return SASL_OK;
}

static bool is_auth_failure(int rc)
{
	switch (rc) {
	case SASL_BADAUTH: case SASL_NOUSER: case SASL_NOAUTHZ: case SASL_NOVERIFY:
	case SASL_EXPIRED: case SASL_DISABLED: case SASL_BADPROT: case SASL_WEAKPASS:
		return true;
	}
	return false; /* back end down, out of memory...: not the client's doing */
}

/* libsasl2 checks authorization after the last step: predict it, so a
 * success that will be turned down counts as a failure. */
static bool authorized(sasl_server_params_t *sp, const sasl_out_params_t *op)
{
	if (op->user == NULL || op->authid == NULL || strcmp(op->user, op->authid) == 0)
		return true;
	sasl_callback_ft proc = NULL;
	void *ctx = NULL;
	if (sp->utils->getcallback == NULL ||
	    sp->utils->getcallback(sp->utils->conn, SASL_CB_PROXY_POLICY, &proc, &ctx) != SASL_OK ||
	    proc == NULL)
		return false; /* libsasl2's default: authzid must equal authid */
	/* the generic callback type is cast back through void (*)(void) */
	sasl_authorize_t *auth = (sasl_authorize_t *)(void (*)(void))proc;
	return auth(sp->utils->conn, ctx, op->user, op->ulen, op->authid, op->alen, sp->user_realm,
		    sp->urlen, sp->propctx) == SASL_OK;
}

/* Does this client message carry the credential (so the check runs
 * before it reaches the mechanism)? Reads the user for PLAIN/LOGIN. */
static bool credential_step(struct wctx *w, sasl_server_params_t *sp, const char *in, unsigned len)
{
	const sasl_utils_t *u = sp->utils;
	/* an empty message is a step of LOGIN all the same (an empty name,
	 * an empty password): skipping it would take the password for the
	 * name, or let an empty password reach the back end unchecked */
	if (in == NULL || (len == 0 && w->g->kind != MK_LOGIN))
		return false;
	w->data_steps++;
	switch (w->g->kind) {
	case MK_PLAIN:
		if (w->user == NULL)
			sniff_plain(w, sp, in, len);
		return true;
	case MK_LOGIN:
		if (w->data_steps == 1) {
			w->user = canon_dup(sp, in, len);
			return false;
		}
		w->pass_len = len;
		w->pass = dup_n(u, in, len);
		return true;
	case MK_CRAM:
		if (w->user == NULL)
			sniff_cram(w, sp, in, len);
		return true;
	case MK_SCRAM:
	case MK_DIGEST:
		if (w->user == NULL && w->data_steps == 1)
			sniff_named(w, sp, in, len);
		return true;
	case MK_OTHER:
		return true;
	}
	return true;
}

/* Whom the attempt is about: the user libsasl2 canonicalised in the step
 * (its own trimming, the application's canon_user callback, the
 * canon_user_plugin), else the name read from the client's data. */
static const char *step_user(const struct wctx *w, const sasl_out_params_t *op)
{
	return op != NULL && op->authid != NULL ? op->authid : w->user;
}

/* Is that another user than the one checked before the step (none, or a
 * spelling the client's data did not show)? */
static bool needs_recheck(const struct wctx *w, const char *who)
{
	if (!w->checked || who == NULL)
		return false;
	return !w->user_checked || strcmp(w->user, who) != 0;
}

/* The user's rules once more, after the step. One delay per attempt: the
 * tarpit only if check did not sleep one. A refusal writes the attempt's
 * line; else the harder of the two verdicts (a delay slept here, what
 * log-only mode would have done) goes into the ticket for record's line. */
static enum ag_decision recheck(sasl_server_params_t *sp, struct wctx *w, const char *who)
{
	struct ag_ticket t;
	enum ag_decision d = check_as(sp, who, &t, w->ticket.action != AG_ACT_TARPIT, true);

	t.fault |= w->ticket.fault;
	if (t.action > w->ticket.action || t.would > w->ticket.would)
		w->ticket = t;
	else
		w->ticket.fault = t.fault;
	return d;
}

static int w_step(void *conn_context, sasl_server_params_t *sp, const char *in, unsigned inlen,
		  const char **out, unsigned *outlen, sasl_out_params_t *op)
{
	struct wctx *w = conn_context;
	bool cred = credential_step(w, sp, in, inlen);
	int rc;

	if (cred && !w->checked) {
		w->checked = true;
		w->user_checked = w->user != NULL;
		if (check(sp, w) == AG_REFUSE) {
			w->recorded = true; /* the refusal wrote its line */
			wipe_free(sp->utils, &w->pass, w->pass_len);
			sp->utils->seterror(sp->utils->conn, 0, "authentication failed");
			return sasl_code(AG_REFUSE);
		}
	}
	if (cred && (w->g->kind == MK_PLAIN || w->g->kind == MK_LOGIN || w->g->kind == MK_CRAM) &&
	    op != NULL) {
		/* PLAIN, LOGIN and CRAM-MD5 canonicalise the user in this step, before
		 * the password check: what op holds is an earlier attempt's */
		op->authid = NULL;
		op->alen = 0;
	}
	in_wrapped_step++;
	rc = w->g->inner->mech_step(w->inner, sp, in, inlen, out, outlen, op);
	in_wrapped_step--;
	const char *who = step_user(w, op);
	if (rc == SASL_OK && needs_recheck(w, who) && recheck(sp, w, who) == AG_REFUSE) {
		/* a locked user's right password: refused like a wrong one */
		w->recorded = true; /* the refusal wrote its line */
		sp->utils->seterror(sp->utils->conn, 0, "authentication failed");
		rc = sasl_code(AG_REFUSE);
	} else if (rc == SASL_OK) {
		if (record(sp, w, who, authorized(sp, op)) == AG_REFUSE) {
			sp->utils->seterror(sp->utils->conn, 0, "authentication failed");
			rc = sasl_code(AG_REFUSE);
		}
	} else if (is_auth_failure(rc)) {
		record(sp, w, who, false);
	}
	if (rc != SASL_CONTINUE) {
		abandon(sp, w); /* not recorded: a refusal after the step, a back-end error */
		wipe_free(sp->utils, &w->pass, w->pass_len);
	}
	return rc;
}

static void w_dispose(void *conn_context, const sasl_utils_t *u)
{
	struct wctx *w = conn_context;

	if (w == NULL)
		return;
	if (w->sp != NULL)
		abandon(w->sp, w); /* the client gave up in the middle of the exchange */
	if (w->inner != NULL && w->g->inner->mech_dispose != NULL)
		w->g->inner->mech_dispose(w->inner, u);
	wipe_free(u, &w->pass, w->pass_len);
	if (w->user != NULL)
		u->free(w->user);
	u->free(w);
}

static void w_free(void *glob, const sasl_utils_t *u)
{
	struct wglob *g = glob;

	if (g->inner->mech_free != NULL)
		g->inner->mech_free(g->inner->glob_context, u);
}

static int w_setpass(void *glob, sasl_server_params_t *sp, const char *user, const char *pass,
		     unsigned passlen, const char *oldpass, unsigned oldpasslen, unsigned flags)
{
	struct wglob *g = glob;
	return g->inner->setpass(g->inner->glob_context, sp, user, pass, passlen, oldpass,
				 oldpasslen, flags);
}

static int w_user_query(void *glob, sasl_server_params_t *sp, const char *user, int maxmech,
			const char **mechlist)
{
	struct wglob *g = glob;
	return g->inner->user_query(g->inner->glob_context, sp, user, maxmech, mechlist);
}

static int w_idle(void *glob, void *conn_context, sasl_server_params_t *sp)
{
	struct wglob *g = glob;
	struct wctx *w = conn_context;
	return g->inner->idle(g->inner->glob_context, w != NULL ? w->inner : NULL, sp);
}

static int w_avail(void *glob, sasl_server_params_t *sp, void **conn_context)
{
	struct wglob *g = glob;
	void *inner = NULL;
	int rc = g->inner->mech_avail(g->inner->glob_context, sp, &inner);

	if (inner != NULL) {
		/* the mechanism made its context here: wrap it */
		struct wctx *w = sp->utils->malloc(sizeof(*w));
		if (w == NULL) {
			if (g->inner->mech_dispose != NULL)
				g->inner->mech_dispose(inner, sp->utils);
			return SASL_NOMEM;
		}
		memset(w, 0, sizeof(*w));
		w->g = g;
		w->inner = inner;
		*conn_context = w;
	}
	return rc;
}

/* ---- loading the stock mechanisms ---------------------------------------- */

static enum mech_kind kind_of(const char *name)
{
	if (strcmp(name, "PLAIN") == 0)
		return MK_PLAIN;
	if (strcmp(name, "LOGIN") == 0)
		return MK_LOGIN;
	if (strcmp(name, "CRAM-MD5") == 0)
		return MK_CRAM;
	if (strncmp(name, "SCRAM-", 6) == 0)
		return MK_SCRAM;
	if (strcmp(name, "DIGEST-MD5") == 0)
		return MK_DIGEST;
	return MK_OTHER;
}

/* ---- fallback role: loaded from libsasl2's own directory ------------------- */

/* Without SASL_PATH, libsasl2 loads only its own directory, where the stock
 * mechanisms are. A daemon whose config names canon_user_plugin authguard
 * (Cyrus imapd: README) then fails every authentication if the plugin is
 * not there ("desired canon_user plugin authguard not found"). A link to
 * this plugin in that directory prevents the outage; there it must not
 * offer its wrapped mechanisms (two plugins would offer each one, picked
 * in readdir() order), so only the canonuser part works: banned, denied
 * and locked sources are refused and the tarpit applies on every path
 * (the stock mechanisms call the canonuser too), but no outcome is
 * counted. It says so, loudly, when it is first used in a process. */
static atomic_bool fallback_role;
static atomic_bool fallback_told;
static char fallback_dir[256];

/* Was this library loaded from DIR (the same directory, through links)? */
static bool loaded_from(const char *dir)
{
	Dl_info info;
	char mine[PATH_MAX], theirs[PATH_MAX];

	if (dladdr((void *)&loaded_from, &info) == 0 || info.dli_fname == NULL)
		return false;
	const char *slash = strrchr(info.dli_fname, '/');
	if (slash == NULL || (size_t)(slash - info.dli_fname) >= sizeof(mine))
		return false;
	char here[PATH_MAX];
	memcpy(here, info.dli_fname, (size_t)(slash - info.dli_fname));
	here[slash - info.dli_fname] = '\0';
	/* the directory the library was opened from (a link's, not its
	 * target's): where libsasl2 looked */
	if (realpath(here[0] != '\0' ? here : "/", mine) == NULL || realpath(dir, theirs) == NULL)
		return false;
	return strcmp(mine, theirs) == 0;
}

static void tell_fallback(const sasl_utils_t *u)
{
	char msg[640];

	if (atomic_exchange(&fallback_told, true))
		return;
	snprintf(msg, sizeof(msg),
		 "authguard fault: plugin loaded from the stock mechanisms' directory %s (SASL_PATH does "
		 "not name authguard's private directory): only its canonuser part runs; the SASL "
		 "mechanisms are not guarded and no attempt is counted (banned and locked sources are "
		 "still refused); set SASL_PATH as README.md says",
		 fallback_dir);
	sink_fn((void *)u, AG_LVL_ERR, msg);
}

/* Append the mechanisms of one stock plugin library. */
static void load_one(const sasl_utils_t *u, const char *dir, const char *file, int max_version)
{
	char path[1024];
	void *h;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		u->log(NULL, SASL_LOG_DEBUG, "authguard: no %s (%s)", path, dlerror());
		return;
	}
	sasl_server_plug_init_t *init = (sasl_server_plug_init_t *)dlsym(h, "sasl_server_plug_init");
	sasl_server_plug_t *list = NULL;
	int version = 0, count = 0;
	if (init == NULL || init(u, max_version, &version, &list, &count) != SASL_OK || count <= 0 ||
	    version < SASL_SERVER_PLUG_VERSION) {
		u->log(NULL, SASL_LOG_ERR, "authguard: cannot use the mechanisms of %s", path);
		return; /* the library stays loaded: its code may be referenced */
	}
	sasl_server_plug_t *np = realloc(plugs, (size_t)(nplugs + count) * sizeof(*np));
	if (np == NULL)
		return;
	plugs = np;
	struct wglob *ng = realloc(globs, (size_t)(nplugs + count) * sizeof(*ng));
	if (ng == NULL)
		return;
	globs = ng;
	for (int i = 0; i < count; i++) {
		/* the glob pointers are fixed up once every library is in */
		globs[nplugs] = (struct wglob){ &list[i], kind_of(list[i].mech_name) };
		sasl_server_plug_t *p = &plugs[nplugs];
		*p = list[i];
		p->mech_new = w_new;
		p->mech_step = w_step;
		p->mech_dispose = w_dispose;
		p->mech_free = w_free;
		p->setpass = list[i].setpass != NULL ? w_setpass : NULL;
		p->user_query = list[i].user_query != NULL ? w_user_query : NULL;
		p->idle = list[i].idle != NULL ? w_idle : NULL;
		p->mech_avail = list[i].mech_avail != NULL ? w_avail : NULL;
		nplugs++;
	}
}

AGS_EXPORT int sasl_server_plug_init(const sasl_utils_t *utils, int max_version, int *out_version,
				     sasl_server_plug_t **pluglist, int *plugcount);

int sasl_server_plug_init(const sasl_utils_t *utils, int max_version, int *out_version,
			  sasl_server_plug_t **pluglist, int *plugcount)
{
	static const char *const files[] = {
		"libplain.so.2", "liblogin.so.2", "libcrammd5.so.2", "libdigestmd5.so.2", "libscram.so.2",
	};
	const char *dir = NULL, *want = NULL;
	unsigned len = 0;

	if (max_version < SASL_SERVER_PLUG_VERSION)
		return SASL_BADVERS;
	if (utils->getopt == NULL ||
	    utils->getopt(utils->getopt_context, "authguard", "authguard_mech_dir", &dir, &len) != SASL_OK ||
	    dir == NULL || dir[0] == '\0')
		dir = AG_SASL_SYSTEM_DIR;
	if (loaded_from(dir)) {
		/* libsasl2 notes a plugin that offers nothing at debug level only;
		 * the canonuser part tells when it is used (tell_fallback) */
		snprintf(fallback_dir, sizeof(fallback_dir), "%s", dir);
		atomic_store(&fallback_role, true);
		return SASL_NOMECH;
	}
	atomic_store(&fallback_role, false);
	if (utils->getopt != NULL)
		(void)utils->getopt(utils->getopt_context, "authguard", "authguard_mechs", &want, &len);
	pthread_mutex_lock(&init_mu);
	/* each sasl_server_init() builds the list anew */
	free(plugs);
	free(globs);
	plugs = NULL;
	globs = NULL;
	nplugs = 0;
	for (size_t i = 0; i < AG_ARRAY_LEN(files); i++)
		load_one(utils, dir, files[i], max_version);
	for (int i = 0; i < nplugs; i++)
		plugs[i].glob_context = &globs[i];
	/* authguard_mechs: only these (blank- or comma-separated) */
	if (want != NULL && want[0] != '\0') {
		int k = 0;
		for (int i = 0; i < nplugs; i++) {
			size_t n = strlen(plugs[i].mech_name);
			const char *p = want;
			bool keep = false;
			while ((p = strstr(p, plugs[i].mech_name)) != NULL) {
				bool start = p == want || p[-1] == ' ' || p[-1] == ',';
				bool end = p[n] == '\0' || p[n] == ' ' || p[n] == ',';
				if (start && end) {
					keep = true;
					break;
				}
				p += n;
			}
			if (keep) {
				plugs[k] = plugs[i];
				globs[k] = globs[i];
				plugs[k].glob_context = &globs[k];
				k++;
			}
		}
		nplugs = k;
	}
	pthread_mutex_unlock(&init_mu);
	if (nplugs == 0) {
		utils->log(NULL, SASL_LOG_ERR, "authguard: no mechanism found in %s", dir);
		return SASL_NOMECH;
	}
	*out_version = SASL_SERVER_PLUG_VERSION;
	*pluglist = plugs;
	*plugcount = nplugs;
	return SASL_OK;
}

/* ---- client mechanisms: the stock ones, untouched ------------------------------- */

/* SASL_PATH names the private directory for the whole process, so a
 * program that is a SASL client too (Postfix's smtp, delivering to a relay
 * that wants AUTH; it reads the same import_environment) would find no
 * client mechanism there. So the plugin offers, as a client plugin, the
 * client mechanisms of every plugin library in the mechanism directory,
 * exactly as they are: the guard has nothing to do on the client side. */
static pthread_mutex_t client_mu = PTHREAD_MUTEX_INITIALIZER;
static sasl_client_plug_t *cplugs;
static int ncplugs;

/* Is @path this very library (mech_dir pointed at the private directory)? */
static bool is_self(const char *path)
{
	static const char self_anchor = 0;
	Dl_info info;
	struct stat a, b;

	return dladdr(&self_anchor, &info) != 0 && info.dli_fname != NULL &&
	       stat(info.dli_fname, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* Append the client mechanisms of the library at @path, if it has any. */
static void load_client(const sasl_utils_t *u, const char *path, int max_version)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);

	if (h == NULL) {
		u->log(NULL, SASL_LOG_DEBUG, "authguard: no %s (%s)", path, dlerror());
		return;
	}
	sasl_client_plug_init_t *init = (sasl_client_plug_init_t *)dlsym(h, "sasl_client_plug_init");
	sasl_client_plug_t *list = NULL;
	int version = 0, count = 0;
	if (init == NULL)
		return; /* an auxprop or canonuser library: nothing for clients */
	if (init(u, max_version, &version, &list, &count) != SASL_OK || count <= 0 ||
	    version < SASL_CLIENT_PLUG_VERSION) {
		u->log(NULL, SASL_LOG_ERR, "authguard: cannot use the client mechanisms of %s", path);
		return; /* the library stays loaded: its code may be referenced */
	}
	sasl_client_plug_t *np = realloc(cplugs, (size_t)(ncplugs + count) * sizeof(*np));
	if (np == NULL) {
		u->log(NULL, SASL_LOG_ERR, "authguard: out of memory loading %s", path);
		return;
	}
	cplugs = np;
	memcpy(cplugs + ncplugs, list, (size_t)count * sizeof(*list));
	ncplugs += count;
}

/* libsasl2 loads the files of a plugin directory whose names end in .so
 * (Debian's libplain.so ... links): the same here, in name order. */
static bool plugin_name(const char *name)
{
	size_t n = strlen(name);
	return n > 3 && strcmp(name + n - 3, ".so") == 0 && strcmp(name, "authguard.so") != 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int only_plugins(const struct dirent *e)
{
	return plugin_name(e->d_name);
}

AGS_EXPORT int sasl_client_plug_init(const sasl_utils_t *utils, int max_version, int *out_version,
				     sasl_client_plug_t **pluglist, int *plugcount);

int sasl_client_plug_init(const sasl_utils_t *utils, int max_version, int *out_version,
			  sasl_client_plug_t **pluglist, int *plugcount)
{
	const char *dir = NULL;
	unsigned len = 0;
	struct dirent **names = NULL;

	if (max_version < SASL_CLIENT_PLUG_VERSION)
		return SASL_BADVERS;
	if (utils->getopt == NULL ||
	    utils->getopt(utils->getopt_context, "authguard", "authguard_mech_dir", &dir, &len) != SASL_OK ||
	    dir == NULL || dir[0] == '\0')
		dir = AG_SASL_SYSTEM_DIR;
	/* loaded from the stock directory itself (the fallback link):
	 * libsasl2 loads the stock client mechanisms from there already;
	 * offering them again would list each twice and initialise each
	 * twice (DIGEST-MD5's second reauth cache leaks) */
	if (loaded_from(dir))
		return SASL_NOMECH;
	int n = scandir(dir, &names, only_plugins, by_name);
	if (n < 0) {
		utils->log(NULL, SASL_LOG_ERR, "authguard: cannot read %s: %s", dir, strerror(errno));
		return SASL_NOMECH;
	}
	pthread_mutex_lock(&client_mu);
	/* each sasl_client_init() builds the list anew */
	free(cplugs);
	cplugs = NULL;
	ncplugs = 0;
	for (int i = 0; i < n; i++) {
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (!is_self(path))
			load_client(utils, path, max_version);
		free(names[i]);
	}
	free(names);
	int count = ncplugs;
	pthread_mutex_unlock(&client_mu);
	if (count == 0) {
		utils->log(NULL, SASL_LOG_ERR, "authguard: no client mechanism found in %s", dir);
		return SASL_NOMECH;
	}
	*out_version = SASL_CLIENT_PLUG_VERSION;
	*pluglist = cplugs;
	*plugcount = count;
	return SASL_OK;
}

/* ---- canonuser: the sasl_checkpass() path ------------------------------------ */

/* What libsasl2's internal canonicalization does: trim blanks; with a
 * user realm, qualify a bare name with "@realm". */
static int canon(sasl_server_params_t *sp, const char *user, unsigned len, char *out,
		 unsigned out_max, unsigned *out_len)
{
	size_t a, b;

	if (len == 0)
		len = (unsigned)strlen(user);
	/* what libsasl2 2.1.28's own canonicalisation (lib/canonusr.c) trims:
	 * isspace() in the C locale, fixed rather than the daemon's locale (no
	 * glibc locale counts a byte >= 0x80 as space; where another libc's
	 * would, the user is checked again after the step under the name
	 * libsasl2 reports, see w_step) */
	ag_user_trim(user, len, &a, &b);
	user += a;
	len = (unsigned)(b - a);
	if (len == 0)
		return SASL_BADPROT;
	bool qualify = sp != NULL && sp->user_realm != NULL && sp->user_realm[0] != '\0' &&
		       memchr(user, '@', len) == NULL;
	size_t rl = qualify ? strlen(sp->user_realm) : 0;
	size_t need = len + (qualify ? 1 + rl : 0);
	if (need >= out_max)
		return SASL_BUFOVER;
	memmove(out, user, len);
	if (qualify) {
		out[len] = '@';
		memcpy(out + len + 1, sp->user_realm, rl);
	}
	out[need] = '\0';
	*out_len = (unsigned)need;
	return SASL_OK;
}

/* libsasl2 2.1.28's sasl_checkpass() with auxprop canonicalises the user
 * twice: once as given, then its own canonical output again. One attempt
 * must sleep one tarpit. So the call that follows a check at once (within
 * CU_AGAIN_MS, same thread, same connection) with exactly that check's
 * canonical name as its input is checked without the tarpit: a ban or a
 * lock still refuses it, only the delay is not slept twice. */
#define CU_AGAIN_MS 100
static __thread struct {
	const void *conn;
	int64_t ms;
	unsigned len;
	char name[256];
} cu_last;

static bool cu_again(const sasl_server_params_t *sp, const char *in, unsigned len)
{
	int64_t now = ag_now_ms();
	bool again = cu_last.conn != NULL && cu_last.conn == (const void *)sp->utils->conn &&
		     now >= cu_last.ms && now - cu_last.ms < CU_AGAIN_MS && len == cu_last.len &&
		     memcmp(in, cu_last.name, len) == 0;

	cu_last.conn = NULL; /* one repeat at most */
	return again;
}

static int cu_server(void *glob, sasl_server_params_t *sp, const char *user, unsigned len,
		     unsigned flags, char *out, unsigned out_max, unsigned *out_len)
{
	(void)glob;
	if (len == 0 && user != NULL)
		len = (unsigned)strlen(user);
	/* before canon(): libsasl2 passes its own buffer as both */
	bool again = (flags & SASL_CU_AUTHID) != 0 && !in_wrapped_step && user != NULL &&
		     cu_again(sp, user, len);
	int rc = canon(sp, user, len, out, out_max, out_len);

	if (rc != SASL_OK || in_wrapped_step || (flags & SASL_CU_AUTHID) == 0)
		return rc;
	if (atomic_load(&fallback_role))
		tell_fallback(sp->utils);
	/* sasl_checkpass() (or, in the fallback role, a stock mechanism): the
	 * password has not been checked yet */
	char *name = sp->utils->malloc(*out_len + 1);
	if (name == NULL)
		return SASL_NOMEM;
	memcpy(name, out, *out_len);
	name[*out_len] = '\0';
	enum ag_decision d = check_as(sp, name, NULL, !again, false);
	if (d == AG_REFUSE) {
		/* Cyrus writes a refused LOGIN's badlogin line like a wrong
		 * password's, with this in its [SASL(-13): ...] detail: so
		 * authguard-watch does not count again what the check just
		 * counted and logged. The client sees only the code. */
		sp->utils->seterror(sp->utils->conn, SASL_NOLOG, "authguard: refused");
	}
	if (!again && d == AG_PROCEED && *out_len < sizeof(cu_last.name)) {
		cu_last.conn = sp->utils->conn;
		cu_last.len = *out_len;
		memcpy(cu_last.name, name, *out_len);
		cu_last.ms = ag_now_ms(); /* after any sleep */
	}
	sp->utils->free(name);
	return sasl_code(d);
}

static int cu_client(void *glob, sasl_client_params_t *cp, const char *user, unsigned len,
		     unsigned flags, char *out, unsigned out_max, unsigned *out_len)
{
	(void)glob;
	(void)cp;
	(void)flags;
	return canon(NULL, user, len, out, out_max, out_len);
}

static sasl_canonuser_plug_t cu_plug = {
	0, 0, NULL, "authguard", NULL, cu_server, cu_client, NULL, NULL, NULL,
};

AGS_EXPORT int sasl_canonuser_init(const sasl_utils_t *utils, int max_version, int *out_version,
				   sasl_canonuser_plug_t **plug, const char *plugname);

int sasl_canonuser_init(const sasl_utils_t *utils, int max_version, int *out_version,
			sasl_canonuser_plug_t **plug, const char *plugname)
{
	(void)utils;
	(void)plugname;
	if (max_version < SASL_CANONUSER_PLUG_VERSION)
		return SASL_BADVERS;
	*out_version = SASL_CANONUSER_PLUG_VERSION;
	*plug = &cu_plug;
	return SASL_OK;
}
