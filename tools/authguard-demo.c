/*
 * authguard-demo - the real pam_authguard.so, through real libpam (its
 * service files in the demo's own directory, pam_matrix from cwrap's
 * pam_wrapper package holding the test passwords), against
 * a simulated attack on a throwaway store. Prints what happened.
 *
 * Timings are scaled down (tarpit_base 20ms, tarpit_max 320ms) so the
 * whole run takes seconds; the rules are the shipped ones.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <security/pam_appl.h>

#include "pamdrive.h"

#ifndef AG_BUILD_MODULE
#define AG_BUILD_MODULE "pam_authguard.so"
#endif

struct tally {
	const char *name;
	int attempts, refused_early, reached_check, tarpitted, granted;
	double attacker_ms;
};

struct owner {
	int tries, ok;
	double total_ms, max_ms;
};

static char workdir[512];

/* Count log lines per outcome since @from (byte offset); returns new end. */
static long scan_log(long from, struct tally *t)
{
	char path[600], line[2048];
	FILE *f;

	snprintf(path, sizeof(path), "%s/attempts.log", workdir);
	f = fopen(path, "r");
	if (f == NULL)
		return from;
	fseek(f, from, SEEK_SET);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "rhost=198.51.100.") != NULL)
			continue; /* the owners at home */
		if (strstr(line, "result=unchecked") != NULL)
			t->refused_early++;
		else
			t->reached_check++;
		if (strstr(line, "action=tarpit") != NULL)
			t->tarpitted++;
	}
	long end = ftell(f);
	fclose(f);
	return end;
}

static void attack(struct tally *t, const char *user, const char *pw, const char *rhost)
{
	double ms;
	int rc = pd_login(user, pw, rhost, &ms);

	t->attempts++;
	t->attacker_ms += ms;
	if (rc == PAM_SUCCESS)
		t->granted++;
}

static void owner_login(struct owner *o, const char *user, const char *pw, const char *rhost)
{
	double ms;
	int rc = pd_login(user, pw, rhost, &ms);

	o->tries++;
	o->ok += rc == PAM_SUCCESS;
	o->total_ms += ms;
	if (ms > o->max_ms)
		o->max_ms = ms;
}

static void report(const struct tally *t, const struct owner *o)
{
	printf("\n== %s\n", t->name);
	printf("   attacker attempts made ............ %d\n", t->attempts);
	printf("   reached the password check ........ %d\n", t->reached_check);
	printf("   refused early (no password check) . %d\n", t->refused_early);
	printf("   slowed by the tarpit .............. %d\n", t->tarpitted);
	printf("   attacker logins granted ........... %d\n", t->granted);
	printf("   attacker time spent ............... %.0f ms\n", t->attacker_ms);
	if (o != NULL && o->tries > 0)
		printf("   owner logins (familiar address) ... %d of %d succeeded, avg %.2f ms, max %.2f ms\n",
		       o->ok, o->tries, o->total_ms / o->tries, o->max_ms);
}

/* The config file, replaced whole (a new file: the module sees the change
 * at once), with @extra lines after the common ones. */
static int write_conf(const char *db, const char *extra)
{
	char path[600], tmp[620];
	FILE *f;

	snprintf(path, sizeof(path), "%s/authguard.conf", workdir);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "# written by authguard-demo\n"
		   "db_dir = %s/%s\n"
		   "log = file:%s/attempts.log\n"
		   "tarpit_base = 20ms\n"
		   "tarpit_max = 320ms\n%s",
		workdir, db, workdir, extra);
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}

/* Distributed spraying: SPRAY_N mailboxes, one in SPRAY_EVERY with the
 * sprayed password, each tried once from an address (and /24) of its
 * own, through the stack that keeps PAM_AUTHTOK as pam_unix does. */
enum { SPRAY_N = 600, SPRAY_EVERY = 50 };

static void spray_scene(struct tally *t, struct owner *home)
{
	/* the owner of spray025 logs in from home first */
	double ms;
	int rc = pd_login_service(PD_SERVICE_AUTHTOK, "spray025", "Summer2026!", "198.51.100.25", &ms);
	home->tries++;
	home->ok += rc == PAM_SUCCESS;
	for (int i = 0; i < SPRAY_N; i++) {
		char u[24], addr[40];
		snprintf(u, sizeof(u), "spray%03d", i);
		snprintf(addr, sizeof(addr), "100.%d.%d.33", 96 + i / 256, i % 256);
		rc = pd_login_service(PD_SERVICE_AUTHTOK, u, "Summer2026!", addr, &ms);
		t->attempts++;
		t->attacker_ms += ms;
		t->granted += rc == PAM_SUCCESS;
	}
	/* and again after it, while the password is hot */
	rc = pd_login_service(PD_SERVICE_AUTHTOK, "spray025", "Summer2026!", "198.51.100.25", &ms);
	home->tries++;
	home->ok += rc == PAM_SUCCESS;
}

static int setup_files(void)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/authguard.conf", workdir);
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "# written by authguard-demo\n"
		   "db_dir = %s/db\n"
		   "log = file:%s/attempts.log\n"
		   "tarpit_base = 20ms\n"
		   "tarpit_max = 320ms\n",
		workdir, workdir);
	fclose(f);
	snprintf(path, sizeof(path), "%s/passdb", workdir);
	f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fprintf(f, "owner-alice:alice-secret:%s\n", PD_SERVICE);
	fprintf(f, "owner-carol:carol-secret:%s\n", PD_SERVICE);
	for (int i = 0; i < 40; i++)
		fprintf(f, "user%02d:pw%02d-secret:%s\n", i, i, PD_SERVICE);
	for (int i = 0; i < SPRAY_N; i++)
		fprintf(f, "spray%03d:%s:%s\n", i,
			i % SPRAY_EVERY == SPRAY_EVERY / 2 ? "Summer2026!" : "own-secret", PD_SERVICE_AUTHTOK);
	fclose(f);
	return 0;
}

static void print_sample(void)
{
	char path[600], line[2048], last_ban[2048] = "", last_lock[2048] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/attempts.log", workdir);
	f = fopen(path, "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "event=ban") != NULL && last_ban[0] == '\0')
			snprintf(last_ban, sizeof(last_ban), "%s", line);
		if (strstr(line, "event=lock") != NULL && last_lock[0] == '\0')
			snprintf(last_lock, sizeof(last_lock), "%s", line);
	}
	fclose(f);
	printf("\nSample log lines (%s):\n  %s  %s", path, last_ban, last_lock);
}

int main(int argc, char **argv)
{
	struct pd_paths p = { AG_BUILD_MODULE, AG_PAM_MATRIX, AG_PAM_WRAPPER, NULL };
	const char *wd = getenv("AG_DEMO_DIR");
	const char *mod = getenv("AG_DEMO_MODULE");
	char addr[64];
	long off = 0;

	(void)argc;
	/* an installed module instead of the build tree's (tests/install) */
	if (mod != NULL && mod[0] != '\0')
		p.module = mod;
	if (wd == NULL) {
		snprintf(workdir, sizeof(workdir), "/tmp/authguard-demo.XXXXXX");
		if (mkdtemp(workdir) == NULL) {
			perror("mkdtemp");
			return 1;
		}
		setenv("AG_DEMO_DIR", workdir, 1);
	} else {
		snprintf(workdir, sizeof(workdir), "%s", wd);
	}
	p.workdir = workdir;
	if (pd_ensure_wrapper(&p, argv) != 0)
		return 1;
	if (setup_files() != 0) {
		perror("writing demo files");
		return 1;
	}
	printf("authguard demonstration: real pam_authguard.so via real libpam\n");
	printf("module: %s\n", p.module);
	printf("store: %s/db   (tarpit scaled to 20ms..320ms for a quick run)\n", workdir);

	/* 1. The owners log in from home: those addresses become familiar. */
	struct owner alice = { 0 }, carol = { 0 };
	owner_login(&alice, "owner-alice", "alice-secret", "198.51.100.10");
	owner_login(&carol, "owner-carol", "carol-secret", "198.51.100.20");
	off = scan_log(off, &(struct tally){ 0 });

	/* 2. Brute force: one address, one mailbox, then the right password. */
	struct tally bf = { .name = "brute force: 203.0.113.66 guesses owner-alice's password" };
	for (int i = 0; i < 60; i++) {
		char pw[32];
		snprintf(pw, sizeof(pw), "guess%d", i);
		attack(&bf, "owner-alice", pw, "203.0.113.66");
	}
	attack(&bf, "owner-alice", "alice-secret", "203.0.113.66");
	off = scan_log(off, &bf);
	report(&bf, NULL);
	printf("   the right password from the banned address was %s\n",
	       bf.granted == 0 ? "refused (a ban is no oracle)" : "ACCEPTED");

	/* 3. Spraying: one address, many mailboxes, one password each. */
	struct tally sp = { .name = "spraying: 203.0.113.77 tries 40 mailboxes" };
	for (int i = 0; i < 40; i++) {
		char u[16];
		snprintf(u, sizeof(u), "user%02d", i);
		attack(&sp, u, "Summer2026!", "203.0.113.77");
	}
	off = scan_log(off, &sp);
	report(&sp, NULL);

	/* 4. A botnet against one mailbox while its owner keeps logging in. */
	struct tally bn = { .name = "botnet: 150 addresses x 3 guesses against owner-carol" };
	for (int i = 0; i < 150; i++) {
		snprintf(addr, sizeof(addr), "100.%d.%d.%d", 64 + i / 50, i % 50, 1 + i % 200);
		for (int k = 0; k < 3; k++) {
			char pw[32];
			snprintf(pw, sizeof(pw), "bot%d-%d", i, k);
			attack(&bn, "owner-carol", pw, addr);
		}
		if (i % 10 == 0)
			owner_login(&carol, "owner-carol", "carol-secret", "198.51.100.20");
	}
	off = scan_log(off, &bn);
	report(&bn, &carol);

	/* 5. IPv6: new address per guess, all inside one /64. */
	struct tally v6 = { .name = "IPv6 rotation: 80 addresses inside 2001:db8:5:6::/64" };
	for (int i = 0; i < 80; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:5:6:%x:%x::%x", i * 7 + 1, i * 13 + 2, i + 3);
		char u[16];
		snprintf(u, sizeof(u), "user%02d", i % 40);
		attack(&v6, u, "letmein", addr);
	}
	off = scan_log(off, &v6);
	report(&v6, NULL);

	/* 6. And alice, under attack all along, still gets in from home. */
	owner_login(&alice, "owner-alice", "alice-secret", "198.51.100.10");
	printf("\n== owners\n   owner-alice from home: %d of %d logins succeeded\n"
	       "   owner-carol from home: %d of %d logins succeeded\n",
	       alice.ok, alice.tries, carol.ok, carol.tries);

	/* 7. Distributed spraying, before (spray_password_users = 0, the
	 * rules without hot passwords) and after (the default), each on a
	 * store of its own. */
	struct tally d0 = { .name = "distributed spraying, BEFORE (spray_password_users = 0): "
				    "600 mailboxes, one try each from its own address, 12 use the password" };
	struct tally d1 = { .name = "distributed spraying, AFTER (the default: hot at 10 users)" };
	struct owner h0 = { 0 }, h1 = { 0 };
	if (write_conf("db-spray-before", "spray_password_users = 0\n") != 0 ||
	    (spray_scene(&d0, &h0), off = scan_log(off, &d0), write_conf("db-spray-after", "")) != 0) {
		perror("writing the config");
		return 1;
	}
	spray_scene(&d1, &h1);
	off = scan_log(off, &d1);
	report(&d0, NULL);
	printf("   owner of spray025 from home ....... %d of %d logins succeeded\n", h0.ok, h0.tries);
	report(&d1, NULL);
	printf("   owner of spray025 from home ....... %d of %d logins succeeded (the line says sprayed=yes)\n",
	       h1.ok, h1.tries);
	printf("   mailboxes taken: %d before, %d after\n", d0.granted, d1.granted);

	int total = bf.attempts + sp.attempts + bn.attempts + v6.attempts;
	int reached = bf.reached_check + sp.reached_check + bn.reached_check + v6.reached_check;
	printf("\n== in all: %d of %d attacker attempts reached the password check; %d were granted\n",
	       reached, total, bf.granted + sp.granted + bn.granted + v6.granted);
	print_sample();
	printf("\nEvery attempt's line: %s/attempts.log\n", workdir);
	return alice.ok == alice.tries && carol.ok == carol.tries && h1.ok == h1.tries ? 0 : 2;
}
