/*
 * sniff.h - the user name a SASL client's message claims, read before the
 * mechanism sees the message, so that a banned or locked attempt is
 * refused under its user's name and the user's rules apply before the
 * exchange. Pure functions on untrusted bytes (no libsasl2): fuzzed by
 * fuzz/fuzz_sasl.c.
 *
 * A name read here is only a claim: the plugin checks again, after the
 * step, under the name libsasl2 authenticated, whenever the two differ.
 */
#ifndef AUTHGUARD_SASL_SNIFF_H
#define AUTHGUARD_SASL_SNIFF_H

#include <stddef.h>

/* Longest name returned (the plugin's canonicalisation buffer is 1 KiB). */
#define AGS_NAME_MAX 512

/* SCRAM (RFC 5802) client-first-message:
 *   gs2-cbind-flag "," [ "a=" authzid ] "," [ "m=" ext "," ] "n=" name "," "r=" ...
 * with "=2C" for ',' and "=3D" for '=' in the name. Writes the decoded
 * name and a NUL into @out (@out_max bytes) and returns its length, or -1
 * if the message carries no well-formed, non-empty name that fits. */
int ags_scram_user(const char *in, size_t len, char *out, size_t out_max);

/* DIGEST-MD5 (RFC 2831) digest-response: the value of its first
 * "username" directive (a quoted string, backslash escapes undone, or a
 * token). Same results as ags_scram_user(). */
int ags_digest_user(const char *in, size_t len, char *out, size_t out_max);

#endif
