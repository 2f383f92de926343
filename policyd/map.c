/* map.c - Dovecot's auth policy requests to the guard and back (policyd.h). */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "ag.h"
#include "hash.h"
#include "policyd.h"

enum pd_command pd_command_of(const char *arg)
{
	if (arg == NULL)
		return PD_CMD_NONE;
	if (strcmp(arg, "allow") == 0)
		return PD_CMD_ALLOW;
	if (strcmp(arg, "report") == 0)
		return PD_CMD_REPORT;
	return PD_CMD_NONE;
}

/* A reason may quote what a peer sent (jansson's "near '...'", a listen
 * value): one line of printable bytes, whatever it quotes. */
static int fail(char *err, size_t errlen)
{
	for (size_t i = 0; i < errlen && err[i] != '\0'; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = '?';
	return -1;
}

/* ---- the request ------------------------------------------------------------ */

/* Member @name of @doc as a string into @out; absent leaves @out NULL.
 * Returns -1 (with @err) if it is there but not a string. */
static int get_str(json_t *doc, const char *name, bool required, struct pd_str *out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(doc, name);

	out->p = NULL;
	out->len = 0;
	if (v == NULL) {
		if (!required)
			return 0;
		snprintf(err, errlen, "member \"%s\" is missing (auth_policy_request_attributes must name it)",
			 name);
		return -1;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "member \"%s\" is not a string", name);
		return -1;
	}
	out->p = json_string_value(v);
	out->len = json_string_length(v);
	return 0;
}

static int get_bool(json_t *doc, const char *name, bool required, bool *out, char *err,
		    size_t errlen)
{
	json_t *v = json_object_get(doc, name);

	*out = false;
	if (v == NULL) {
		if (!required)
			return 0;
		snprintf(err, errlen, "member \"%s\" is missing", name);
		return -1;
	}
	if (!json_is_boolean(v)) {
		snprintf(err, errlen, "member \"%s\" is not true or false", name);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

int pd_request_parse(enum pd_command cmd, const char *body, size_t len, struct pd_request *r,
		     char *err, size_t errlen)
{
	json_error_t je;
	json_t *doc;

	memset(r, 0, sizeof(*r));
	r->cmd = cmd;
	if (cmd == PD_CMD_NONE) {
		snprintf(err, errlen, "no command (URL?command=allow or report)");
		return -1;
	}
	/* NUL inside strings stays refused (no JSON_ALLOW_NUL): every value
	 * is used as text; a repeated member would make "which one" a guess */
	doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (doc == NULL) {
		snprintf(err, errlen, "not JSON: %s at byte %d", je.text, je.position);
		return fail(err, errlen);
	}
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "not a JSON object");
		json_decref(doc);
		return -1;
	}
	r->doc = doc;
	if (get_str(doc, "login", true, &r->login, err, errlen) != 0 ||
	    get_str(doc, "remote", true, &r->remote, err, errlen) != 0 ||
	    get_str(doc, "protocol", false, &r->protocol, err, errlen) != 0 ||
	    get_str(doc, "pwhash", false, &r->pwhash, err, errlen) != 0 ||
	    get_str(doc, "session_id", false, &r->session, err, errlen) != 0 ||
	    get_str(doc, "mech", false, &r->mech, err, errlen) != 0)
		goto bad;
	if (cmd == PD_CMD_REPORT &&
	    (get_bool(doc, "success", true, &r->success, err, errlen) != 0 ||
	     get_bool(doc, "policy_reject", false, &r->policy_reject, err, errlen) != 0))
		goto bad;
	return 0;
bad:
	pd_request_free(r);
	return fail(err, errlen);
}

void pd_request_free(struct pd_request *r)
{
	if (r->doc != NULL)
		json_decref(r->doc);
	memset(r, 0, sizeof(*r));
}

void pd_attempt_of(const struct pd_request *r, struct ag_attempt *a, char service[PD_SERVICE_MAX])
{
	memset(a, 0, sizeof(*a));
	if (r->protocol.p != NULL && r->protocol.len > 0)
		snprintf(service, PD_SERVICE_MAX, "%.*s", (int)r->protocol.len, r->protocol.p);
	else
		snprintf(service, PD_SERVICE_MAX, "dovecot");
	a->service = service;
	/* an empty value is Dovecot's way of saying it has none */
	if (r->login.len > 0) {
		a->user = r->login.p;
		a->user_len = r->login.len;
	}
	if (r->remote.len > 0) {
		a->rhost = r->remote.p;
		a->rhost_len = r->remote.len;
	}
}

bool pd_pwhash_usable(const struct pd_request *r)
{
	if (r->pwhash.p == NULL || r->pwhash.len == 0)
		return false;
	/* Dovecot hashes the password it was given; a challenge-response
	 * mechanism gives none, and the hash is then the same for every
	 * guess: the "same wrong password" rule must not see it */
	if (r->mech.p == NULL)
		return true;
	return (r->mech.len == 5 && strncasecmp(r->mech.p, "PLAIN", 5) == 0) ||
	       (r->mech.len == 5 && strncasecmp(r->mech.p, "LOGIN", 5) == 0);
}

int pd_status_of(enum ag_decision d, const struct ag_ticket *t)
{
	if (d == AG_REFUSE)
		return -1;
	if (t == NULL || t->action != AG_ACT_TARPIT)
		return 0;
	int64_t ms = t->delay_ms > 0 ? t->delay_ms : 1;
	int64_t s = (ms + 999) / 1000;
	return s > INT_MAX ? INT_MAX : (int)s;
}

size_t pd_reply(int status, char *buf, size_t len)
{
	int n = snprintf(buf, len, "{\"status\":%d,\"msg\":\"\"}", status);

	return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

/* ---- the API key ---------------------------------------------------------------- */

static bool is_token_char(unsigned char c)
{
	return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int pd_key_parse(const char *text, size_t len, struct pd_key *k, char *err, size_t errlen)
{
	const char *p = text, *end = text + len;

	memset(k, 0, sizeof(*k));
	while (p < end && isspace((unsigned char)*p))
		p++;
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	if (p == end) {
		snprintf(err, errlen, "is empty");
		return -1;
	}
	for (const char *q = p; q < end; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f) {
			snprintf(err, errlen, "must be one line of text (as auth_policy_server_api_header)");
			return -1;
		}
	const char *colon = memchr(p, ':', (size_t)(end - p));
	const char *v = p;
	if (colon != NULL) {
		size_t hl = (size_t)(colon - p);
		if (hl == 0 || hl >= sizeof(k->header)) {
			snprintf(err, errlen, "has a header name that is empty or too long");
			return -1;
		}
		for (size_t i = 0; i < hl; i++)
			if (!is_token_char((unsigned char)p[i])) {
				snprintf(err, errlen, "has a header name with a blank or a separator in it");
				return -1;
			}
		memcpy(k->header, p, hl);
		v = colon + 1;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
	} else {
		snprintf(k->header, sizeof(k->header), "X-API-Key");
	}
	size_t vl = (size_t)(end - v);
	if (vl == 0 || vl >= sizeof(k->value)) {
		snprintf(err, errlen, "has a key that is empty or longer than %d bytes", PD_KEY_MAX - 1);
		return -1;
	}
	memcpy(k->value, v, vl);
	k->value_len = vl;
	return 0;
}

bool pd_key_matches(const struct pd_key *k, const char *got, size_t got_len)
{
	/* over the whole expected key whatever was sent: the time says
	 * nothing of how much of it was right */
	unsigned diff = (unsigned)(got_len != k->value_len) | (unsigned)(got == NULL);

	for (size_t i = 0; i < k->value_len; i++) {
		unsigned char g = got != NULL && i < got_len ? (unsigned char)got[i] : 0;
		diff |= (unsigned)(g ^ (unsigned char)k->value[i]);
	}
	return diff == 0 && k->value_len > 0;
}

/* ---- listening addresses ------------------------------------------------------------- */

int pd_listen_parse(const char *s, struct pd_listen *l, char *err, size_t errlen)
{
	char host[64];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hl;
	unsigned long port;
	char *e;

	memset(l, 0, sizeof(*l));
	snprintf(l->text, sizeof(l->text), "%s", s);
	if (colon == NULL) {
		snprintf(err, errlen, "'%.64s' is not host:port", s);
		return fail(err, errlen);
	}
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h = s + 1;
		hl -= 2;
	} else if (memchr(s, ':', hl) != NULL) {
		snprintf(err, errlen, "'%.64s': an IPv6 address goes in brackets, [::1]:port", s);
		return fail(err, errlen);
	}
	if (hl == 0 || hl >= sizeof(host)) {
		snprintf(err, errlen, "'%.64s' has no host, or one too long", s);
		return fail(err, errlen);
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &e, 10);
	if (!isdigit((unsigned char)colon[1]) || *e != '\0' || errno != 0 || port == 0 || port > 65535) {
		snprintf(err, errlen, "'%.64s': the port must be a number from 1 to 65535", s);
		return fail(err, errlen);
	}
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	struct sockaddr_in *in4 = (struct sockaddr_in *)&l->addr;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&l->addr;
	if (h == s && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		l->addr_len = sizeof(*in4);
		l->loopback = (ntohl(in4->sin_addr.s_addr) >> 24) == 127;
	} else if (h != s && inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		l->addr_len = sizeof(*in6);
		l->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	} else {
		snprintf(err, errlen, "'%.64s': the host must be an IPv4 address, [IPv6] or localhost", s);
		return fail(err, errlen);
	}
	return 0;
}

/* ---- pairing a login's requests --------------------------------------------------------- */

int pd_sessions_init(struct pd_sessions *s)
{
	memset(s->e, 0, sizeof(s->e));
	if (getrandom(s->secret, sizeof(s->secret), 0) != (ssize_t)sizeof(s->secret))
		return AG_EIO;
	return pthread_mutex_init(&s->mu, NULL) == 0 ? 0 : AG_ENOMEM;
}

void pd_sessions_destroy(struct pd_sessions *s)
{
	pthread_mutex_destroy(&s->mu);
}

uint64_t pd_session_key(const struct pd_sessions *s, const struct pd_request *r)
{
	const struct pd_str *parts[] = { &r->session, &r->login, &r->remote, &r->pwhash };
	unsigned char buf[4 * 256 + 4];
	size_t n = 0;
	uint64_t h;

	if (r->session.p == NULL || r->session.len == 0)
		return 0;
	/* each part as its length and at most 256 bytes: enough to tell
	 * logins apart (this is a cache key, not a guard decision) */
	for (size_t i = 0; i < AG_ARRAY_LEN(parts); i++) {
		size_t l = parts[i]->len < 256 ? parts[i]->len : 256;
		buf[n++] = (unsigned char)(parts[i]->len & 0xff);
		if (l > 0)
			memcpy(buf + n, parts[i]->p, l);
		n += l;
	}
	h = ag_siphash(s->secret, buf, n);
	return h != 0 ? h : 1;
}

#define PD_WAYS 4

static struct pd_session *slot_find(struct pd_sessions *s, uint64_t key, int64_t now)
{
	size_t base = (size_t)(key % (PD_SESSIONS / PD_WAYS)) * PD_WAYS;

	for (size_t i = base; i < base + PD_WAYS; i++)
		if (s->e[i].key == key && now - s->e[i].at < PD_SESSION_TTL_MS && now >= s->e[i].at)
			return &s->e[i];
	return NULL;
}

/* A place for @key: its own, a free or stale one, else the oldest. */
static struct pd_session *slot_claim(struct pd_sessions *s, uint64_t key, int64_t now)
{
	size_t base = (size_t)(key % (PD_SESSIONS / PD_WAYS)) * PD_WAYS;
	struct pd_session *best = &s->e[base];

	for (size_t i = base; i < base + PD_WAYS; i++) {
		struct pd_session *e = &s->e[i];
		if (e->key == key || e->key == 0 || now - e->at >= PD_SESSION_TTL_MS)
			return e;
		if (e->at < best->at)
			best = e;
	}
	return best;
}

/* ---- handling a request ---------------------------------------------------------------- */

static int64_t now_of(const struct pd_ctx *ctx)
{
	return ctx->now != NULL ? ctx->now() : ag_now_ms();
}

static int bad_request(const char *why, char *reply, size_t replylen, size_t *len_r, char *out,
		       size_t outlen)
{
	json_t *o = json_pack("{s:s}", "error", why);
	char *txt = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

	snprintf(out, outlen, "%s", why);
	snprintf(reply, replylen, "%s", txt != NULL ? txt : "{\"error\":\"bad request\"}");
	*len_r = strlen(reply);
	free(txt);
	json_decref(o);
	return 400;
}

/* The harder of two tickets (the attempt's log line tells the harder). */
static void merge_ticket(struct ag_ticket *into, const struct ag_ticket *t)
{
	uint8_t fault = into->fault | t->fault;

	if (t->action > into->action || t->would > into->would)
		*into = *t;
	into->fault = fault;
}

static int handle_allow(const struct pd_ctx *ctx, const struct pd_request *r)
{
	struct ag_attempt a;
	char service[PD_SERVICE_MAX];
	struct ag_ticket t, first = { 0 };
	uint64_t key = pd_session_key(ctx->sessions, r);
	int64_t now = now_of(ctx);
	bool after = false;
	struct pd_session *e;

	pd_attempt_of(r, &a, service);
	if (key != 0) {
		pthread_mutex_lock(&ctx->sessions->mu);
		e = slot_find(ctx->sessions, key, now);
		/* the allow after the password check comes once, and no
		 * sooner than Dovecot's delay of the first one let it */
		if (e != NULL && !e->rechecked &&
		    now - e->at >= (int64_t)pd_status_of(AG_PROCEED, &e->ticket) * 1000 - 100) {
			e->rechecked = true;
			first = e->ticket;
			after = true;
		}
		pthread_mutex_unlock(&ctx->sessions->mu);
	}

	enum ag_decision d;
	if (after) {
		/* one delay per login: none now if the first check gave one */
		struct ag_conf c = *ctx->conf; /* shallow: read only */
		if (first.action == AG_ACT_TARPIT)
			c.tarpit_base = 0;
		d = ag_guard_check_ex(&c, ctx->sink, &a, AG_CHECK_NOSLEEP | AG_CHECK_PASSWORD_OK, &t);
	} else {
		d = ag_guard_check_ex(ctx->conf, ctx->sink, &a, AG_CHECK_NOSLEEP, &t);
	}
	int status = pd_status_of(d, &t);
	/* the attempt's line says what was done: Dovecot's whole seconds */
	if (t.action == AG_ACT_TARPIT && status > 0)
		t.delay_ms = (int64_t)status * 1000;
	if (key != 0 && d != AG_REFUSE) {
		/* a refusal wrote its line; its report carries policy_reject */
		pthread_mutex_lock(&ctx->sessions->mu);
		if (after) {
			e = slot_find(ctx->sessions, key, now);
			if (e != NULL)
				merge_ticket(&e->ticket, &t);
		} else {
			e = slot_claim(ctx->sessions, key, now);
			e->key = key;
			e->at = now;
			e->rechecked = false;
			e->ticket = t;
		}
		pthread_mutex_unlock(&ctx->sessions->mu);
	}
	return status;
}

static void handle_report(const struct pd_ctx *ctx, const struct pd_request *r)
{
	struct ag_attempt a;
	char service[PD_SERVICE_MAX];
	struct ag_ticket t;
	bool have_ticket = false;
	uint64_t key = pd_session_key(ctx->sessions, r);

	if (key != 0) {
		pthread_mutex_lock(&ctx->sessions->mu);
		struct pd_session *e = slot_find(ctx->sessions, key, now_of(ctx));
		if (e != NULL) {
			t = e->ticket;
			have_ticket = true;
			e->key = 0;
		}
		pthread_mutex_unlock(&ctx->sessions->mu);
	}
	/* refused by our own allow: that refusal was the attempt, counted
	 * and logged then; counting it again would ban on our own word */
	if (r->policy_reject)
		return;
	pd_attempt_of(r, &a, service);
	struct ag_record_opts o = { 0 };
	if (!r->success && pd_pwhash_usable(r)) {
		o.pw = r->pwhash.p;
		o.pw_len = r->pwhash.len;
		/* salted per user: a stale password, never one across users */
		o.pw_per_user = true;
	}
	(void)ag_guard_record_ex(ctx->conf, ctx->sink, &a, r->success, &o,
				 have_ticket ? &t : NULL);
}

int pd_handle(const struct pd_ctx *ctx, enum pd_command cmd, const char *body, size_t len,
	      char *reply, size_t replylen, size_t *reply_len_r, char *why, size_t whylen)
{
	struct pd_request r;
	char err[256];
	int status = 0;

	why[0] = '\0';
	if (pd_request_parse(cmd, body, len, &r, err, sizeof(err)) != 0)
		return bad_request(err, reply, replylen, reply_len_r, why, whylen);
	if (cmd == PD_CMD_ALLOW)
		status = handle_allow(ctx, &r);
	else
		handle_report(ctx, &r);
	pd_request_free(&r);
	*reply_len_r = pd_reply(status, reply, replylen);
	return 200;
}
