/*
 * rules.h - authguard-watch's rule engine: which log lines report an
 * authentication outcome, and whose.
 *
 * A line is first split as rsyslog writes it ("Mmm dd hh:mm:ss host
 * ident[pid]: message", or with an RFC 3339 time), then each rule whose
 * ident pattern matches the line's ident tries its message pattern. Both
 * patterns are PCRE2, matched on bytes (never as UTF-8: a line is any
 * bytes) and anchored at both ends of their field, so a rule says exactly
 * where each field lies. The message pattern names its fields with
 * captures: (?<user>...) and (?<addr>...) always, (?<service>...) and
 * (?<result>...) if the rule takes them from the line.
 *
 * The anchors are what keep a client's text out of the server's fields:
 * a rule must reach the address from the side of the line the server
 * writes (Cyrus puts "[addr]" before the user, so the pattern starts
 * there; a server that writes the host after the user is matched from
 * the end), and a user field longer than AW_USER_MAX makes the line
 * count for nothing (a syslog daemon cuts long messages, and a cut line
 * could end in text the client chose).
 *
 * Rules are tried in order; the first that matches decides, and a rule
 * whose outcome is "ignore" makes the line count for nothing (Cyrus'
 * line for an attempt the SASL plugin already refused and logged).
 */
#ifndef AW_RULES_H
#define AW_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Longest line looked at (bytes, without the newline); longer lines count
 * for nothing. */
#define AW_LINE_MAX 8192
/* Longest user, address and service a match may carry. */
#define AW_USER_MAX 256
#define AW_ADDR_MAX 64
#define AW_SERVICE_MAX 64
/* Most rules in one set of rules. */
#define AW_RULES_MAX 256

enum aw_outcome { AW_NONE = 0, AW_SUCCESS = 1, AW_FAILURE = 2, AW_IGNORE = 3 };

/* One syslog line, split. Pointers into the caller's buffer. */
struct aw_line {
	int64_t time_ms;  /* 0: the line had no time this parser reads */
	const char *host, *ident, *msg;
	size_t host_len, ident_len, msg_len;
};

/*
 * Split @len bytes at @buf (one line, without its newline) as rsyslog's
 * file format. The traditional time has no year and no zone: it is taken
 * as local time in the year that puts it nearest before @now_ms + 1 day.
 * Returns 0, or AG_EINVAL for a line of another shape.
 */
int aw_line_parse(const char *buf, size_t len, int64_t now_ms, struct aw_line *l);

struct aw_match {
	enum aw_outcome outcome;
	const char *rule;  /* the rule's name (valid while the rules live) */
	char service[AW_SERVICE_MAX + 1];
	char user[AW_USER_MAX + 1];
	char addr[AW_ADDR_MAX + 1];
	size_t user_len, addr_len;  /* the user may hold NUL bytes */
};

struct aw_rules;

/*
 * Compile the built-in sets named in @sets (blank- or comma-separated:
 * "cyrus", "domino"; NULL or "" for none) after the admin's rules in @defs
 * (watch_rule lines: "NAME IDENT OUTCOME REGEX", see authguard.conf(5)),
 * which therefore come first. On error writes why (naming the rule) to
 * @err and returns AG_ECONF (or AG_ENOMEM).
 */
int aw_rules_new(const char *sets, const struct ag_strlist *defs, struct aw_rules **r_r,
		 char *err, size_t errlen);
void aw_rules_free(struct aw_rules *r);
size_t aw_rules_count(const struct aw_rules *r);

/*
 * The outcome the first matching rule finds in message @msg from program
 * @ident. Returns AW_NONE (no rule matched, or the match carried no
 * usable user, a user or address too long, or a result word that is
 * neither success nor failure), AW_IGNORE, AW_SUCCESS or AW_FAILURE (then
 * @m is filled). Not thread-safe (one match buffer per rule set).
 */
enum aw_outcome aw_rules_match(struct aw_rules *r, const char *ident, size_t ident_len,
			       const char *msg, size_t msg_len, struct aw_match *m);

/* A result word as a rule's (?<result>) captures it: "success", "ok",
 * "failure", "failed"... (ASCII case ignored); AW_NONE for others. */
enum aw_outcome aw_result_word(const char *s, size_t n);

#endif
