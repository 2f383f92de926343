/* sync_event.c - the fleet's events on the wire and in the outbox: a
 * versioned, byte-order-independent layout (see sync.h). Kept apart from
 * sync.c so that the fuzz harness needs nothing but this and addr.c. */
#include "config.h"

#include <string.h>

#include "sync.h"

/* ---- encoding ---------------------------------------------------------------- */

/* version 1: version kind list flags | pw_hash(2) | time(8) until(8) seq(8) |
 * family plen addr(16) | rhost_len(1) service_len(1) user_len(2) | bytes.
 * Version 2 (a failure with a fleet password key, sync.h): the same with
 * the 4-byte key after pw_hash. An event without one is still written as
 * version 1, so a host that reads only version 1 misses nothing else. */
#define SEV_V1 1
#define SEV_V2 2
#define SEV_FIXED (4 + 2 + 24 + 18 + 4)
#define SEV_HAS_PW 1u
#define SEV_HAS_PW_KEY 2u

const char *ag_sev_name(unsigned kind)
{
	switch (kind) {
	case AG_SEV_FAIL: return "fail";
	case AG_SEV_OK: return "success";
	case AG_SEV_LIST_ADD: return "list_add";
	case AG_SEV_LIST_DEL: return "list_del";
	case AG_SEV_UNBAN: return "unban";
	case AG_SEV_UNLOCK: return "unlock";
	case AG_SEV_FORGET_ADDR: return "forget_addr";
	case AG_SEV_FORGET_USER: return "forget_user";
	case AG_SEV_SNAP_BAN: return "snap_ban";
	case AG_SEV_SNAP_LOCK: return "snap_lock";
	case AG_SEV_SNAP_FAMILIAR: return "snap_familiar";
	}
	return "unknown";
}

size_t ag_sev_encode(const struct ag_sev *e, uint8_t *buf)
{
	size_t rl = e->rhost_len < AG_SEV_RHOST_MAX ? e->rhost_len : AG_SEV_RHOST_MAX - 1;
	size_t sl = e->service_len < AG_SEV_SERVICE_MAX ? e->service_len : AG_SEV_SERVICE_MAX - 1;
	size_t ul = e->user_len < AG_SEV_USER_MAX ? e->user_len : AG_SEV_USER_MAX - 1;
	uint8_t *p = buf;

	*p++ = e->has_pw_key ? SEV_V2 : SEV_V1;
	*p++ = e->kind;
	*p++ = e->list;
	*p++ = (e->pw_hash >= 0 ? SEV_HAS_PW : 0) | (e->has_pw_key ? SEV_HAS_PW_KEY : 0);
	*p++ = (uint8_t)((e->pw_hash >= 0 ? e->pw_hash : 0) >> 8);
	*p++ = (uint8_t)(e->pw_hash >= 0 ? e->pw_hash : 0);
	if (e->has_pw_key) {
		memcpy(p, e->pw_key, AG_SEV_PW_KEY_LEN);
		p += AG_SEV_PW_KEY_LEN;
	}
	ag_put_be64(p, (uint64_t)e->time_ms);
	ag_put_be64(p + 8, (uint64_t)e->until_ms);
	ag_put_be64(p + 16, e->seq);
	p += 24;
	*p++ = e->addr.family;
	*p++ = e->addr.plen;
	memcpy(p, e->addr.b, 16);
	p += 16;
	*p++ = (uint8_t)rl;
	*p++ = (uint8_t)sl;
	*p++ = (uint8_t)(ul >> 8);
	*p++ = (uint8_t)ul;
	memcpy(p, e->rhost, rl);
	p += rl;
	memcpy(p, e->service, sl);
	p += sl;
	memcpy(p, e->user, ul);
	p += ul;
	return (size_t)(p - buf);
}

int ag_sev_decode(const uint8_t *buf, size_t len, struct ag_sev *e)
{
	memset(e, 0, sizeof(*e));
	if (len < SEV_FIXED || (buf[0] != SEV_V1 && buf[0] != SEV_V2))
		return AG_ECORRUPT;
	/* version 2 is version 1 with a password key: only with the flag */
	size_t x = buf[0] == SEV_V2 ? AG_SEV_PW_KEY_LEN : 0;
	unsigned flags = buf[3];
	e->kind = buf[1];
	e->list = buf[2];
	if (e->kind < AG_SEV_FAIL || e->kind > AG_SEV_KIND_MAX ||
	    (flags & ~(SEV_HAS_PW | SEV_HAS_PW_KEY)) != 0 ||
	    ((flags & SEV_HAS_PW_KEY) != 0) != (x != 0) || len < SEV_FIXED + x)
		return AG_ECORRUPT;
	if (!(flags & SEV_HAS_PW) && (buf[4] | buf[5]) != 0)
		return AG_ECORRUPT; /* one layout per event: no stray bytes */
	e->pw_hash = (flags & SEV_HAS_PW) ? (int32_t)((buf[4] << 8) | buf[5]) : -1;
	if (x != 0) {
		/* a hot-password key is a failure's, for a user */
		if (e->kind != AG_SEV_FAIL)
			return AG_ECORRUPT;
		e->has_pw_key = true;
		memcpy(e->pw_key, buf + 6, AG_SEV_PW_KEY_LEN);
	}
	e->time_ms = (int64_t)ag_get_be64(buf + 6 + x);
	e->until_ms = (int64_t)ag_get_be64(buf + 14 + x);
	e->seq = ag_get_be64(buf + 22 + x);
	if (e->time_ms < 0 || e->until_ms < 0)
		return AG_ECORRUPT;
	const uint8_t *p = buf + 30 + x;
	e->addr.family = p[0];
	e->addr.plen = p[1];
	memcpy(e->addr.b, p + 2, 16);
	p += 18;
	e->rhost_len = p[0];
	e->service_len = p[1];
	e->user_len = (size_t)p[2] << 8 | p[3];
	p += 4;
	if (e->rhost_len >= AG_SEV_RHOST_MAX || e->service_len >= AG_SEV_SERVICE_MAX ||
	    e->user_len >= AG_SEV_USER_MAX ||
	    len != SEV_FIXED + x + e->rhost_len + e->service_len + e->user_len ||
	    (e->has_pw_key && e->user_len == 0))
		return AG_ECORRUPT;
	memcpy(e->rhost, p, e->rhost_len);
	p += e->rhost_len;
	memcpy(e->service, p, e->service_len);
	p += e->service_len;
	memcpy(e->user, p, e->user_len);
	/* what the kind needs must be there and well formed */
	bool is_addr = e->kind == AG_SEV_LIST_ADD || e->kind == AG_SEV_LIST_DEL ||
		       e->kind == AG_SEV_UNBAN || e->kind == AG_SEV_FORGET_ADDR ||
		       e->kind == AG_SEV_SNAP_BAN || e->kind == AG_SEV_SNAP_FAMILIAR;
	if (is_addr) {
		unsigned w = ag_addr_width(&e->addr);
		if (w == 0 || e->addr.plen > w)
			return AG_ECORRUPT;
		struct ag_addr n;
		ag_addr_prefix(&e->addr, e->addr.plen, &n);
		if (memcmp(&n, &e->addr, sizeof(n)) != 0)
			return AG_ECORRUPT; /* bits past the prefix */
	} else {
		static const uint8_t zero[16];
		if (e->addr.family != AG_AF_NONE || e->addr.plen != 0 || memcmp(e->addr.b, zero, 16) != 0)
			return AG_ECORRUPT;
	}
	bool is_list = e->kind == AG_SEV_LIST_ADD || e->kind == AG_SEV_LIST_DEL;
	if (is_list ? e->list != AG_LIST_ALLOW && e->list != AG_LIST_PROXY && e->list != AG_LIST_DENY
		    : e->list != 0)
		return AG_ECORRUPT;
	if ((e->kind == AG_SEV_UNLOCK || e->kind == AG_SEV_FORGET_USER ||
	     e->kind == AG_SEV_SNAP_LOCK || e->kind == AG_SEV_SNAP_FAMILIAR) &&
	    (e->user_len == 0 || memchr(e->user, '\0', e->user_len) != NULL))
		return AG_ECORRUPT; /* admin names are C strings */
	return 0;
}

