/*
 * policyd.h - authguard-policyd's request mapping, apart from the HTTP
 * server so that tests and the fuzzer drive it directly.
 *
 * Dovecot's auth policy client POSTs a JSON object to URL?command=allow
 * before it checks a password and to URL?command=report after (with
 * "success" and "policy_reject"). The object's members are the ones
 * auth_policy_request_attributes names; those read here:
 *
 *   login       the user name asked for (%{requested_username}); required
 *   remote      the client's address (%{rip}); required
 *   protocol    imap, pop3, submission... (%s): the log line's service=
 *   pwhash      Dovecot's digest of the password (%{hashed_password}):
 *               the "same wrong password again" rule, without the password
 *   session_id  %{session}: pairs a login's requests (the allow made
 *               after a right password, the report with its allow's verdict)
 *   mech        %m (optional): pwhash is used only for PLAIN and LOGIN,
 *               the mechanisms whose password Dovecot hashes
 *
 * Every value Dovecot sends is a JSON string; "success" and
 * "policy_reject" are JSON booleans. Anything else is left alone.
 */
#ifndef AG_POLICYD_H
#define AG_POLICYD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"
#include "guard.h"
#include "log.h"

enum pd_command { PD_CMD_NONE = 0, PD_CMD_ALLOW, PD_CMD_REPORT };

/* The command in URL?command=...; PD_CMD_NONE if it is none of ours. */
enum pd_command pd_command_of(const char *arg);

struct pd_str {
	const char *p; /* NULL: absent; points into the parsed document */
	size_t len;
};

struct pd_request {
	enum pd_command cmd;
	struct pd_str login, remote, protocol, pwhash, session, mech;
	bool success, policy_reject;
	void *doc; /* the parsed document (json_t *), owned */
};

/*
 * Parse a request body for @cmd. Returns 0, or -1 with a one-line reason
 * in @err (the reply is then 400): not JSON, not an object, a member of
 * the wrong type, a required one missing, duplicate members. No length
 * is refused but the body's (policyd_max_request): a 400 lets Dovecot go
 * on unguarded (auth_policy_reject_on_fail = no), so whatever Dovecot may
 * send is taken.
 * On 0, release @r with pd_request_free().
 */
int pd_request_parse(enum pd_command cmd, const char *body, size_t len, struct pd_request *r,
		     char *err, size_t errlen);
void pd_request_free(struct pd_request *r);

/* The guard's attempt for @r; @service receives the service name (the
 * protocol, or "dovecot" when none was sent). */
#define PD_SERVICE_MAX 64
void pd_attempt_of(const struct pd_request *r, struct ag_attempt *a, char service[PD_SERVICE_MAX]);

/* Whether @r's pwhash stands for a password (see "mech" above). */
bool pd_pwhash_usable(const struct pd_request *r);

/*
 * The reply's status for a check's verdict: -1 refuse, 0 go on, N > 0
 * Dovecot delays the attempt N seconds. Dovecot counts whole seconds, so
 * a tarpit is rounded up (a 500 ms delay becomes 1 s): never down to 0,
 * which would let the attempt go on undelayed.
 */
int pd_status_of(enum ag_decision d, const struct ag_ticket *t);

/* {"status":N,"msg":""} into @buf; returns its length. */
size_t pd_reply(int status, char *buf, size_t len);

/* ---- the API key -------------------------------------------------------------- */

/* What Dovecot's auth_policy_server_api_header sends: "Name: value" is
 * header Name with that value, a bare value is X-API-Key. */
#define PD_KEY_MAX 512
struct pd_key {
	char header[128];
	char value[PD_KEY_MAX];
	size_t value_len;
};

/* Parse the key file's text (the same text as Dovecot's setting, one
 * line; blanks around it and a final newline are dropped). Returns 0 or
 * -1 with the reason in @err. */
int pd_key_parse(const char *text, size_t len, struct pd_key *k, char *err, size_t errlen);

/* Whether @got (may be NULL) is @k's value; the time it takes does not
 * depend on where the two differ. */
bool pd_key_matches(const struct pd_key *k, const char *got, size_t got_len);

/* ---- listening addresses ---------------------------------------------------------- */

struct pd_listen {
	struct sockaddr_storage addr; /* a sockaddr_in or sockaddr_in6 */
	socklen_t addr_len;
	bool loopback;
	char text[80]; /* as given, for messages */
};

/* "127.0.0.1:8642", "[::1]:8642", "localhost:8642" (the loopback
 * address). Returns 0 or -1 with the reason in @err. */
int pd_listen_parse(const char *s, struct pd_listen *l, char *err, size_t errlen);

/* ---- pairing a login's requests ------------------------------------------------------ */

/*
 * Dovecot asks "allow" twice for a right password when
 * auth_policy_check_after_auth is on (its default): before the check and
 * after it, with the same members. The second is told from the first by
 * the session (and user, address and pwhash) seen in an allow without a
 * report since: it is checked as a right password, and never delayed a
 * second time. The report takes the allow's ticket, so the attempt's one
 * log line says what was done before the check (a tarpit, its delay), as
 * the PAM module's does.
 * A fixed table of PD_SESSIONS entries, oldest overwritten: memory is
 * bounded, and a lost entry costs only that precision.
 */
#define PD_SESSIONS 8192
#define PD_SESSION_TTL_MS (120 * 1000)

struct pd_session {
	uint64_t key;   /* 0: free */
	int64_t at;     /* ms, when the allow was answered */
	bool rechecked; /* the allow after the password check came */
	struct ag_ticket ticket;
};

struct pd_sessions {
	pthread_mutex_t mu;
	uint8_t secret[16];
	struct pd_session e[PD_SESSIONS];
};

int pd_sessions_init(struct pd_sessions *s);
void pd_sessions_destroy(struct pd_sessions *s);

/* The key of @r's login (0 when it has no session: nothing is paired). */
uint64_t pd_session_key(const struct pd_sessions *s, const struct pd_request *r);

/* ---- handling a request -------------------------------------------------------------- */

struct pd_ctx {
	const struct ag_conf *conf;
	const struct ag_sink *sink;
	struct pd_sessions *sessions;
	int64_t (*now)(void); /* NULL: ag_now_ms */
};

/*
 * Answer one request (@body of @len bytes for @cmd) into @reply (at
 * least 64 bytes). Returns the HTTP status: 200 with the JSON reply, or
 * 400 (malformed) with a JSON error in @reply and the reason in @why for
 * the log. A store fault is the guard's to handle (fail_open): the reply
 * is still 200.
 */
int pd_handle(const struct pd_ctx *ctx, enum pd_command cmd, const char *body, size_t len,
	      char *reply, size_t replylen, size_t *reply_len_r, char *why, size_t whylen);

#endif
