/* lists.c - run-time lists: key = list letter + source key. */
#include "config.h"

#include <string.h>

#include "lists.h"
#include "record.h"

struct list_val {
	int64_t added, expires;
};

static char letter(enum ag_list l)
{
	return l == AG_LIST_ALLOW ? 'A' : l == AG_LIST_PROXY ? 'P' : 'D';
}

static void make_key(enum ag_list l, const struct ag_addr *net, uint8_t key[1 + AG_SRC_KEY_LEN])
{
	key[0] = (uint8_t)letter(l);
	ag_src_key(net, key + 1);
}

static int decode(enum ag_list l, const void *key, size_t klen, const void *val, size_t vlen,
		  struct ag_list_entry *e)
{
	struct list_val lv;

	if (klen != 1 + AG_SRC_KEY_LEN || vlen != sizeof(lv))
		return AG_ECORRUPT;
	if (ag_src_key_decode((const uint8_t *)key + 1, klen - 1, &e->net) != 0)
		return AG_ECORRUPT;
	memcpy(&lv, val, sizeof(lv));
	e->list = l;
	e->added = lv.added;
	e->expires = lv.expires;
	return 0;
}

struct match_ctx {
	enum ag_list list;
	const struct ag_addr *host;
	int64_t now;
	bool hit;
};

static enum ag_scan_op match_visit(void *ctxp, const void *key, size_t klen, const void *val,
				   size_t vlen)
{
	struct match_ctx *m = ctxp;
	struct ag_list_entry e;

	if (decode(m->list, key, klen, val, vlen, &e) != 0)
		return AG_SCAN_NEXT;
	if ((e.expires == 0 || e.expires > m->now) && ag_addr_in(&e.net, m->host)) {
		m->hit = true;
		return AG_SCAN_STOP;
	}
	return AG_SCAN_NEXT;
}

int ag_lists_match(struct ag_txn *t, const struct ag_addr *host, int64_t now)
{
	static const enum ag_list all[] = { AG_LIST_ALLOW, AG_LIST_PROXY, AG_LIST_DENY };
	int mask = 0;
	uint64_t n;
	int rc = ag_txn_entries(t, AG_DB_LIST, &n);

	/* most stores have no run-time list at all: one count, not three
	 * cursors (each a malloc and a descent), on every check */
	if (rc != 0)
		return rc;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < AG_ARRAY_LEN(all); i++) {
		uint8_t prefix[2] = { (uint8_t)letter(all[i]), host->family };
		struct match_ctx m = { all[i], host, now, false };
		rc = ag_txn_scan(t, AG_DB_LIST, prefix, sizeof(prefix), match_visit, &m);
		if (rc != 0)
			return rc;
		if (m.hit)
			mask |= (int)all[i];
	}
	return mask;
}

int ag_list_add(struct ag_txn *t, const struct ag_list_entry *e)
{
	uint8_t key[1 + AG_SRC_KEY_LEN];
	struct list_val lv = { e->added, e->expires };

	if (e->net.family == AG_AF_NONE)
		return AG_EINVAL;
	make_key(e->list, &e->net, key);
	return ag_txn_put(t, AG_DB_LIST, key, sizeof(key), &lv, sizeof(lv));
}

int ag_list_del(struct ag_txn *t, enum ag_list list, const struct ag_addr *net)
{
	uint8_t key[1 + AG_SRC_KEY_LEN];

	make_key(list, net, key);
	return ag_txn_del(t, AG_DB_LIST, key, sizeof(key));
}

int ag_list_timed_del(struct ag_txn *t, enum ag_list list, const struct ag_addr *net)
{
	uint8_t key[1 + AG_SRC_KEY_LEN];
	struct ag_list_entry e;
	const void *val;
	size_t vlen;
	int rc;

	make_key(list, net, key);
	rc = ag_txn_get(t, AG_DB_LIST, key, sizeof(key), &val, &vlen);
	if (rc != 0)
		return rc;
	if (decode(list, key, sizeof(key), val, vlen, &e) != 0 || e.expires == 0)
		return AG_ENOTFOUND;
	return ag_txn_del(t, AG_DB_LIST, key, sizeof(key));
}

struct each_ctx {
	enum ag_list list;
	ag_list_fn *fn;
	void *ctx;
};

static enum ag_scan_op each_visit(void *ctxp, const void *key, size_t klen, const void *val,
				  size_t vlen)
{
	struct each_ctx *ec = ctxp;
	struct ag_list_entry e;

	if (decode(ec->list, key, klen, val, vlen, &e) == 0)
		ec->fn(ec->ctx, &e);
	return AG_SCAN_NEXT;
}

int ag_list_each(struct ag_txn *t, enum ag_list list, ag_list_fn *fn, void *ctx)
{
	uint8_t prefix[1] = { (uint8_t)letter(list) };
	struct each_ctx ec = { list, fn, ctx };

	return ag_txn_scan(t, AG_DB_LIST, prefix, sizeof(prefix), each_visit, &ec);
}
