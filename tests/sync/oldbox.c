/* oldbox.c - for tests/sync/rollback.sh: what a module of the version
 * before the outbox moved to the unnamed database (issue 13) does with a
 * failed attempt's event, by the raw puts that version made: into the
 * meta database's outbox, keys "sync.q" + class + 8-byte big-endian
 * number, the state "sync.ob" beside them (made with a random epoch when
 * there is none), in one transaction per event. Only the event: the
 * attempt itself is not recorded in this store. Usage: oldbox DB_DIR USER
 * RHOST COUNT; prints the epoch and the numbers it gave. Exit 0, or 1 on
 * a store error. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "store.h"
#include "sync.h"

static int put_one(struct ag_store *s, const char *user, const char *rhost, uint64_t *epoch_r,
		   uint64_t *seq_r)
{
	struct ag_outbox_state st = { .version = AG_OUTBOX_VERSION, .next_seq = 1 };
	struct ag_sev e = { .kind = AG_SEV_FAIL, .pw_hash = -1, .time_ms = ag_now_ms() };
	uint8_t key[15] = { 's', 'y', 'n', 'c', '.', 'q', 0 }, buf[AG_SEV_WIRE_MAX];
	const void *val;
	size_t vlen;
	struct ag_txn *t;
	int rc = ag_txn_begin(s, true, &t);

	if (rc != 0)
		return rc;
	if (ag_txn_get(t, AG_DB_META, "sync.ob", 7, &val, &vlen) == 0 && vlen == sizeof(st))
		memcpy(&st, val, sizeof(st));
	else if (getrandom(&st.epoch, sizeof(st.epoch), 0) != (ssize_t)sizeof(st.epoch))
		rc = AG_EIO;
	e.user_len = strnlen(user, AG_SEV_USER_MAX - 1);
	memcpy(e.user, user, e.user_len);
	e.rhost_len = strnlen(rhost, AG_SEV_RHOST_MAX - 1);
	memcpy(e.rhost, rhost, e.rhost_len);
	e.service_len = 4;
	memcpy(e.service, "imap", 4);
	e.seq = st.next_seq++;
	ag_put_be64(key + 7, e.seq);
	if (rc == 0)
		rc = ag_txn_put(t, AG_DB_META, key, sizeof(key), buf, ag_sev_encode(&e, buf));
	st.depth++;
	st.total++;
	if (rc == 0)
		rc = ag_txn_put(t, AG_DB_META, "sync.ob", 7, &st, sizeof(st));
	if (rc != 0) {
		ag_txn_abort(t);
		return rc;
	}
	*epoch_r = st.epoch;
	*seq_r = e.seq;
	return ag_txn_commit(t);
}

int main(int argc, char **argv)
{
	struct ag_store *s;

	if (argc != 5 || atoi(argv[4]) <= 0) {
		fprintf(stderr, "usage: oldbox DB_DIR USER RHOST COUNT\n");
		return 1;
	}
	int rc = ag_store_get(argv[1], &s);
	for (int i = 0; rc == 0 && i < atoi(argv[4]); i++) {
		uint64_t epoch, seq;
		rc = put_one(s, argv[2], argv[3], &epoch, &seq);
		if (rc == 0)
			printf("epoch %016" PRIx64 " #%" PRIu64 "\n", epoch, seq);
	}
	if (rc != 0) {
		fprintf(stderr, "oldbox: %s: %s\n", ag_strerror(rc), ag_store_detail());
		return 1;
	}
	ag_store_sync(s);
	return 0;
}
