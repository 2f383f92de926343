/*
 * fuzz_sync.c - libFuzzer harness for the fleet's event decoder
 * (store/sync_event.c): what authguard-sync reads from Redis (after the MAC,
 * but a key holder's bug or a newer version's event must not hurt either)
 * and from the outbox of a damaged store.
 * Checked:
 *  - ag_sev_decode() reads only @size bytes and never fails open: on
 *    success every length is in bounds, the kind is known, an admin
 *    action on an address carries a well-formed network (bits past the
 *    prefix clear), an action on a user a name without NUL;
 *  - a hot-password key (version 2) only on a failure for a user;
 *  - what decodes encodes back to the very same bytes (one layout, no
 *    two readings of one event), and decodes again to the same event.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "sync.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ag_sev e, e2;
	uint8_t buf[AG_SEV_WIRE_MAX];

	if (ag_sev_decode(data, size, &e) != 0)
		return 0;
	CHECK(e.kind >= AG_SEV_FAIL && e.kind <= AG_SEV_KIND_MAX, "kind %u", e.kind);
	CHECK(e.rhost_len < AG_SEV_RHOST_MAX && e.service_len < AG_SEV_SERVICE_MAX &&
		      e.user_len < AG_SEV_USER_MAX, "lengths %zu %zu %zu", e.rhost_len,
	      e.service_len, e.user_len);
	CHECK(e.time_ms >= 0 && e.until_ms >= 0, "negative time");
	CHECK(e.pw_hash >= -1 && e.pw_hash <= 0xffff, "pw_hash %d", (int)e.pw_hash);
	if (e.kind == AG_SEV_LIST_ADD || e.kind == AG_SEV_LIST_DEL || e.kind == AG_SEV_UNBAN ||
	    e.kind == AG_SEV_FORGET_ADDR || e.kind == AG_SEV_SNAP_BAN || e.kind == AG_SEV_SNAP_FAMILIAR) {
		unsigned w = ag_addr_width(&e.addr);
		CHECK(w != 0 && e.addr.plen <= w, "address family %u plen %u", e.addr.family,
		      e.addr.plen);
		struct ag_addr n;
		ag_addr_prefix(&e.addr, e.addr.plen, &n);
		CHECK(memcmp(&n, &e.addr, sizeof(n)) == 0, "bits past the prefix");
	}
	if (e.kind == AG_SEV_UNLOCK || e.kind == AG_SEV_FORGET_USER || e.kind == AG_SEV_SNAP_LOCK ||
	    e.kind == AG_SEV_SNAP_FAMILIAR)
		CHECK(e.user_len > 0 && memchr(e.user, '\0', e.user_len) == NULL, "admin user name");
	if (e.has_pw_key)
		CHECK(e.kind == AG_SEV_FAIL && e.user_len > 0, "password key on kind %u, user %zu",
		      e.kind, e.user_len);
	size_t n = ag_sev_encode(&e, buf);
	CHECK(n == size && memcmp(buf, data, size) == 0, "re-encoding differs (%zu vs %zu bytes)", n,
	      size);
	CHECK(ag_sev_decode(buf, n, &e2) == 0, "the re-encoding does not decode");
	CHECK(memcmp(&e, &e2, sizeof(e)) == 0, "decoding twice differs");
	return 0;
}
