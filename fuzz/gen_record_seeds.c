/*
 * gen_record_seeds.c - writes the seed corpus of fuzz_record: records as
 * the store holds them, made by the real policy (a brute force, a spray,
 * an owner's logins), then truncated and damaged copies, source keys, and
 * structured views (fuzz_record.h).
 *
 * Records are the host's C layout (x86_64 here); run it again on another
 * ABI. It was run once to fill fuzz/corpus/record/:
 *
 *   cc -std=c11 -I. -Istore -DSYSCONFDIR='"/etc"' fuzz/gen_record_seeds.c \
 *      store/record.c store/hash.c store/policy.c store/conf.c store/addr.c \
 *      -lm -o /tmp/gen && /tmp/gen fuzz/corpus/record
 *
 * (-I. or -Ibuild: wherever config.h is.)
 */
#include "config.h"

#include <stddef.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "conf.h"
#include "fuzz_record.h"
#include "policy.h"
#include "record.h"

static const char *dir;

static void put(const char *name, const void *data, size_t len)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* A structured input: header, then the view's four records. */
static void put_view(const char *name, unsigned flags, unsigned conf, unsigned clock,
		     unsigned pw, uint32_t uhash, const struct ag_view *v)
{
	uint8_t buf[FUZZ_REC_HDR + 2 * sizeof(struct ag_src_rec) + sizeof(struct ag_user_rec) +
		    sizeof(struct ag_pair_rec)];
	size_t o = FUZZ_REC_HDR;

	buf[0] = (uint8_t)flags;
	buf[1] = (uint8_t)(conf | clock << 4);
	buf[2] = (uint8_t)pw;
	buf[3] = (uint8_t)(pw >> 8);
	for (int i = 0; i < 4; i++)
		buf[4 + i] = (uint8_t)(uhash >> (8 * i));
	memcpy(buf + o, &v->src, sizeof(v->src));
	o += sizeof(v->src);
	memcpy(buf + o, &v->net, sizeof(v->net));
	o += sizeof(v->net);
	memcpy(buf + o, &v->user, sizeof(v->user));
	o += sizeof(v->user);
	memcpy(buf + o, &v->pair, sizeof(v->pair));
	o += sizeof(v->pair);
	put(name, buf, o);
}

int main(int argc, char **argv)
{
	struct ag_conf c;
	struct ag_view v, attack, owner, spray;
	struct ag_verdict vd;
	struct ag_events ev;
	int64_t now = FUZZ_REC_NOW - 3600 * 1000;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	ag_conf_init(&c);

	/* fresh records, as ag_view_init makes them */
	ag_view_init(&v);
	put("src-fresh", &v.src, sizeof(v.src));

	/* a brute force: one address, one user, wrong passwords (some
	 * repeated), until the address and then the user are banned/locked */
	ag_view_init(&attack);
	attack.has_addr = attack.has_user = true;
	attack.user_hash = 0x5eed0001u | 1u;
	for (int i = 0; i < 14; i++) {
		attack.pw_hash = (i * 37) % 5 * 1000 + 17;
		ag_policy_check(&c, &attack, now, &vd);
		ag_policy_record(&c, &attack, now, false, &ev);
		now += 700;
	}
	put("src-banned-failures", &attack.src, sizeof(attack.src));
	put("user-locked", &attack.user, sizeof(attack.user));
	put("pair-pw-ring", &attack.pair, sizeof(attack.pair));

	/* a spray: one address, many users */
	ag_view_init(&spray);
	spray.has_addr = spray.has_user = true;
	for (int i = 0; i < 8; i++) {
		spray.user_hash = (uint32_t)(0x1000 + 77 * i) | 1u;
		memset(&spray.user, 0, sizeof(spray.user));
		spray.user.version = AG_REC_VERSION;
		ag_policy_record(&c, &spray, now, false, &ev);
		now += 300;
	}
	put("src-banned-spray", &spray.src, sizeof(spray.src));

	/* a network banned by many neighbours */
	struct ag_src_rec net = attack.net;
	for (int i = 0; i < 40; i++) {
		struct ag_view n;
		ag_view_init(&n);
		n.has_addr = true;
		n.net = net;
		ag_policy_record(&c, &n, now, false, &ev);
		net = n.net;
		now += 100;
	}
	put("net-banned", &net, sizeof(net));

	/* an admin ban (authguard-admin ban ADDR) */
	struct ag_src_rec adm = v.src;
	adm.ban_until = now + 86400000;
	adm.ban_by_admin = 1;
	adm.ban_reason = AG_WHY_ADMIN;
	adm.ban_count = 1;
	put("src-admin-ban", &adm, sizeof(adm));

	/* the owner logs in from home, fails once, logs in again */
	ag_view_init(&owner);
	owner.has_addr = owner.has_user = true;
	owner.user_hash = 0x0a11ce01u;
	ag_policy_record(&c, &owner, now, true, &ev);
	owner.pw_hash = 4242;
	ag_policy_record(&c, &owner, now + 5000, false, &ev);
	ag_policy_record(&c, &owner, now + 9000, true, &ev);
	put("pair-familiar", &owner.pair, sizeof(owner.pair));

	/* host-wide counters */
	struct ag_stats st = { AG_REC_VERSION, 0, now - 86400000LL * 30, 123456, 2345, 121111,
			       1900, 450, 225000, 12, 3, 1 };
	put("stats", &st, sizeof(st));

	/* truncated and over-long copies: rejected, never read past */
	put("src-banned-truncated", &attack.src, sizeof(attack.src) - 1);
	put("user-locked-truncated", &attack.user, sizeof(attack.user) - 1);
	put("pair-truncated", &owner.pair, sizeof(owner.pair) - 8);
	put("version-only", &attack.src, 4);
	uint8_t longer[sizeof(struct ag_user_rec) + 1];
	memcpy(longer, &attack.user, sizeof(attack.user));
	longer[sizeof(attack.user)] = 0;
	put("user-plus-one", longer, sizeof(longer));

	/* version 1 records (before the slow counts, issue 14): read as
	 * version 2 with the slow counts at zero */
	struct ag_src_rec v1s = attack.src;
	v1s.version = 1;
	put("src-version-1", &v1s, offsetof(struct ag_src_rec, slow));
	struct ag_user_rec v1u = attack.user;
	v1u.version = 1;
	put("user-version-1", &v1u, offsetof(struct ag_user_rec, slow));

	/* damaged: each must be rejected */
	struct ag_src_rec bad = attack.src;
	bad.fails.v = nan("");
	put("src-nan-score", &bad, sizeof(bad));
	struct ag_user_rec badu = attack.user;
	badu.version = AG_REC_VERSION + 1;
	put("user-newer-version", &badu, sizeof(badu));
	struct ag_pair_rec badp = attack.pair;
	badp.pw_next = AG_RECENT_PW;
	put("pair-ring-index-out", &badp, sizeof(badp));

	/* source keys */
	struct ag_addr a;
	uint8_t key[AG_SRC_KEY_LEN];
	ag_addr_parse("192.0.2.7", 9, &a);
	ag_src_key(&a, key);
	put("key-host-v4", key, sizeof(key));
	ag_cidr_parse("2001:db8:1:2::/64", true, &a);
	ag_src_key(&a, key);
	put("key-net-v6", key, sizeof(key));
	key[17] = 1; /* a host bit past /64 */
	put("key-host-bits-set", key, sizeof(key));

	/* pair keys (issue 15.3): in the source database, after the host; with
	 * no address; in the old pair database */
	uint8_t pk[AG_PAIR_KEY_MAX], none[AG_SRC_KEY_LEN] = { 0 };
	ag_addr_parse("192.0.2.7", 9, &a);
	ag_src_key(&a, key);
	put("key-pair-v4", pk, ag_pair_key(key, (const uint8_t *)"alice", 5, pk));
	put("key-pair-no-address", pk, ag_pair_key(none, (const uint8_t *)"bob", 3, pk));
	put("key-pair-old", pk, ag_pair_key_old((const uint8_t *)"alice", 5, key, pk));

	/* structured views */
	put_view("view-brute-force", FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_PW, 0, 0, 17,
		 attack.user_hash, &attack);
	put_view("view-owner-at-home", FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_SUCCESS, 0, 0, 0,
		 owner.user_hash, &owner);
	struct ag_view mixed = owner;
	mixed.user = attack.user;
	mixed.net = net;
	put_view("view-locked-user-familiar-host", FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_PW, 0,
		 0, 4242, owner.user_hash, &mixed);
	put_view("view-proxy", FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_PROXY, 0, 0, 0,
		 attack.user_hash, &attack);
	put_view("view-trusted-denied", FUZZ_REC_ADDR | FUZZ_REC_TRUSTED | FUZZ_REC_DENIED, 0, 0,
		 0, 0, &attack);
	put_view("view-harsh-config-year-9999", FUZZ_REC_ADDR | FUZZ_REC_USER | FUZZ_REC_PW, 1, 2,
		 1017, spray.user_hash, &spray);
	put_view("view-mild-config-clock-zero", FUZZ_REC_ADDR | FUZZ_REC_USER, 2, 1, 0,
		 attack.user_hash, &attack);
	ag_conf_free(&c);
	return 0;
}
