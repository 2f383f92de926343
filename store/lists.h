/*
 * lists.h - run-time allow/proxy/deny lists kept in the store, so an entry
 * added by authguard-admin takes effect at once in every process.
 * They add to the config's static lists (trusted, proxies, deny).
 */
#ifndef AG_LISTS_H
#define AG_LISTS_H

#include <stdint.h>

#include "addr.h"
#include "store.h"

enum ag_list { AG_LIST_ALLOW = 1, AG_LIST_PROXY = 2, AG_LIST_DENY = 4 };

struct ag_list_entry {
	enum ag_list list;
	struct ag_addr net;
	int64_t added;
	int64_t expires; /* 0 = never */
};

/* Which run-time lists hold @host at @now: a mask of enum ag_list, or a
 * negative AG_E* code. */
AG_API int ag_lists_match(struct ag_txn *t, const struct ag_addr *host, int64_t now);

/* Add (or refresh) an entry. Returns 0 or AG_E*. */
AG_API int ag_list_add(struct ag_txn *t, const struct ag_list_entry *e);

/* Remove an entry; AG_ENOTFOUND if it was not there. */
AG_API int ag_list_del(struct ag_txn *t, enum ag_list list, const struct ag_addr *net);

/* Remove the entry for exactly @net only if it is a timed one (expires
 * set): how "unban" lifts a ban made with "ban". AG_ENOTFOUND otherwise. */
AG_API int ag_list_timed_del(struct ag_txn *t, enum ag_list list, const struct ag_addr *net);

typedef void ag_list_fn(void *ctx, const struct ag_list_entry *e);
/* Visit every entry of @list. Returns 0 or AG_E*. */
AG_API int ag_list_each(struct ag_txn *t, enum ag_list list, ag_list_fn *fn, void *ctx);

#endif
