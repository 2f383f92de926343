/*
 * fuzz_policyd.c - libFuzzer harness for authguard-policyd's request
 * parser (policyd/map.c): what any local process, or Dovecot with any
 * auth_policy_request_attributes, may POST.
 *
 * The first byte picks the command (allow, report, none), the rest is the
 * body, in an exact-size heap block (no NUL after it). Checked:
 *  - pd_request_parse() returns 0 or -1; on -1 a reason that is a
 *    terminated, non-empty line and no document kept; on 0 a document,
 *    login and remote present, and every field's bytes readable for its
 *    length (AddressSanitizer sees a bad pointer or length);
 *  - the attempt made from it: service a terminated name of fewer than
 *    PD_SERVICE_MAX bytes, "dovecot" when no protocol was sent; user and
 *    rhost are the request's own bytes or NULL when empty;
 *  - pd_key_parse() and pd_listen_parse() on the same bytes: 0 or -1, a
 *    reason on -1, a value that fits on 0.
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "policyd.h"

static volatile unsigned char sink_byte;

static void touch(const struct pd_str *s)
{
	if (s->p == NULL) {
		CHECK(s->len == 0, "absent field with length %zu", s->len);
		return;
	}
	for (size_t i = 0; i < s->len; i++)
		sink_byte ^= (unsigned char)s->p[i];
	CHECK(memchr(s->p, '\0', s->len) == NULL, "a NUL inside a field");
}

static void check_reason(int rc, const char *err, size_t errlen)
{
	CHECK(rc == 0 || rc == -1, "rc %d", rc);
	if (rc == 0)
		return;
	CHECK(memchr(err, '\0', errlen) != NULL, "reason not terminated");
	CHECK(err[0] != '\0', "empty reason");
	CHECK(strchr(err, '\n') == NULL, "reason of more than one line: %s", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum pd_command cmds[] = { PD_CMD_ALLOW, PD_CMD_REPORT, PD_CMD_NONE };
	struct pd_request r;
	char err[256];

	if (size == 0)
		return 0;
	enum pd_command cmd = cmds[data[0] % 3];
	char *body = fuzz_memdup(data + 1, size - 1);

	memset(err, 0x5a, sizeof(err));
	int rc = pd_request_parse(cmd, body, size - 1, &r, err, sizeof(err));
	check_reason(rc, err, sizeof(err));
	if (rc == 0) {
		CHECK(cmd != PD_CMD_NONE, "a request without a command was taken");
		CHECK(r.doc != NULL, "no document");
		CHECK(r.login.p != NULL && r.remote.p != NULL, "a required field is absent");
		touch(&r.login);
		touch(&r.remote);
		touch(&r.protocol);
		touch(&r.pwhash);
		touch(&r.session);
		touch(&r.mech);
		struct ag_attempt a;
		char service[PD_SERVICE_MAX];
		pd_attempt_of(&r, &a, service);
		CHECK(a.service == service && memchr(service, '\0', sizeof(service)) != NULL,
		      "service not a terminated name");
		if (r.protocol.p == NULL || r.protocol.len == 0)
			CHECK(strcmp(service, "dovecot") == 0, "no protocol, service %s", service);
		CHECK(a.user == NULL ? r.login.len == 0 : a.user == r.login.p && a.user_len == r.login.len,
		      "user is not the login");
		CHECK(a.rhost == NULL ? r.remote.len == 0 : a.rhost == r.remote.p && a.rhost_len == r.remote.len,
		      "rhost is not the remote");
		(void)pd_pwhash_usable(&r);
		pd_request_free(&r);
		CHECK(r.doc == NULL, "document kept after free");
	} else {
		CHECK(r.doc == NULL, "document kept on failure");
	}

	struct pd_key k;
	rc = pd_key_parse(body, size - 1, &k, err, sizeof(err));
	check_reason(rc, err, sizeof(err));
	if (rc == 0)
		CHECK(k.value_len > 0 && k.value_len < sizeof(k.value) && k.header[0] != '\0',
		      "key of %zu bytes", k.value_len);

	char *text = fuzz_strdup(data + 1, size - 1);
	struct pd_listen l;
	rc = pd_listen_parse(text, &l, err, sizeof(err));
	check_reason(rc, err, sizeof(err));
	if (rc == 0)
		CHECK(l.addr_len > 0 && l.addr_len <= sizeof(l.addr), "address of %u bytes",
		      (unsigned)l.addr_len);
	free(text);
	free(body);
	return 0;
}
