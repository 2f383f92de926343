#!/bin/bash
# bench/dovecot.sh - what authguard costs and saves in front of a real Dovecot.
#
# A real Dovecot on loopback, passdb PAM through real libpam (pam_wrapper),
# pam_unix checking yescrypt hashes (nss_wrapper provides the users: four
# owners o1..o4 and 46 more mailboxes). bench/imapload.py runs ATTACKERS
# threads logging in with wrong passwords as fast as Dovecot answers, and one
# owner thread logging in with the right password from the owners' homes.
#
#   1. guard off (pam_unix alone) and guard on (the README's stack, default
#      settings): the owners' LOGIN latency p50/p99 and logins/s, first
#      without attack (5 s) then under attack; attacker attempts/s; then the
#      attackers alone for a third of the attack's time, to measure the
#      auth worker processes' CPU seconds per attacker attempt once the
#      attack is under way.
#   2. more attackers than tarpit_slots, each on its own address, with every
#      ban and lock switched off so that they all stay in the tarpit: how many
#      attempts slept, how many were refused because every slot was taken,
#      and whether the owners still got in (and how fast).
#
#   bench/dovecot.sh [-a ATTACKERS] [-t SECONDS] [-m botnet|fixed] [-u MAILBOXES]
#
# Defaults: 16 attackers, 20 s under attack, botnet (a fresh address per
# attempt) guessing 10 mailboxes (the four owners' and six more; at most 50). From a build tree, like tests/dovecot/run.sh (see bench/README.md):
#   AG_TEST_MODULE=$PWD/pam_authguard/.libs/pam_authguard.so ../bench/dovecot.sh
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/dovecot/lib.sh" || exit 1

ATTACKERS=16 SECS=20 MODE=botnet QUIET_SECS=5 BOXES=10
while getopts a:t:m:u: opt; do
	case $opt in
	a) ATTACKERS=$OPTARG ;;
	t) SECS=$OPTARG ;;
	m) MODE=$OPTARG ;;
	u) BOXES=$OPTARG ;;
	*) echo "usage: $0 [-a ATTACKERS] [-t SECONDS] [-m botnet|fixed] [-u MAILBOXES]" >&2; exit 2 ;;
	esac
done
dv_script_init bench/dovecot.sh

USERS="o1 o2 o3 o4"
for i in $(seq -w 1 46); do USERS="$USERS m$i"; done

# setup GUARD [authguard.conf lines...]: a fresh Dovecot; owners log in once
setup() {
	local g=$1 u
	shift
	dv_scratch ag-bench || die "$DV_ERR"
	SCRATCHES+=("$S")
	dv_users unix $USERS || die "$DV_ERR"
	dv_stack "$g" || die "$DV_ERR"
	{
		echo "db_dir = $S/store"
		echo "log = file:$LOG"
		printf '%s\n' "$@"
	} >"$S/authguard.conf"
	start_dovecot || die "dovecot did not start: see $DLOG"
	client_start
	for u in 1 2 3 4; do
		imap_login "198.51.100.$u" "o$u" "pw-o$u"
		[ "$ST" = OK ] || die "o$u cannot log in ($ST): see $S"
	done
	client_stop
}
teardown() {
	stop_dovecot
	clean_pam_wrapper_dirs
}
# settings: authguard's settings in this run, on one line (when the admin
# tool is at hand: AG_TEST_ADMIN, as make bench-dovecot sets it)
settings() {
	[ -n "$ADMIN" ] || { echo "(set AG_TEST_ADMIN to print them)"; return; }
	"$ADMIN" -c "$S/authguard.conf" dump-config 2>&1 |
		grep -vE '^(db_dir|log|trusted|proxies|deny) ' | tr '\n' ' ' | sed 's/ = /=/g'
}
# load SECONDS ATTACKERS MODE [OWNER_THREAD]: runs imapload; sets R (its
# key=value line) and CPU (auth worker CPU seconds used meanwhile)
load() {
	cpu_watch_start
	R=$("$PYTHON" "$here/imapload.py" "$PORT" "$1" "$2" "$3" 4 "$BOXES" "${4:-1}") || die "imapload failed"
	CPU=$(cpu_watch_stop)
}
val() { # val KEY: from R
	local kv
	for kv in $R; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}" && return; done
	echo 0
}
logcount() { grep -cE "$1" "$LOG" 2>/dev/null || true; }

echo "# bench/dovecot.sh: Dovecot $("$DOVECOT" --version | cut -d' ' -f1), $(nproc) cores, pam_unix yescrypt," \
	"$ATTACKERS attackers ($MODE) on $BOXES mailboxes, ${SECS}s under attack, client on the same machine"
printf '%-9s | %-29s | %-40s | %-12s %-14s\n' guard "owners alone" "owners under attack" "attack" "auth CPU"
printf '%-9s | %7s %7s %6s %6s | %7s %7s %8s %6s %8s | %-12s %-14s\n' '' p50_ms p99_ms per_s ok p50_ms p99_ms max_ms per_s ok tries/s "s/attempt"
for g in none authguard; do
	setup "$g"
	load "$QUIET_SECS" 0 "$MODE"
	q50=$(val owner_p50_ms) q99=$(val owner_p99_ms) qps=$(val owner_per_s)
	qok="$(val owner_ok)/$(val owner_tried)"
	load "$SECS" "$ATTACKERS" "$MODE"
	R_ATTACK=$R
	# the attackers alone: auth worker CPU per attacker attempt
	load $((SECS / 3 > 5 ? SECS / 3 : 5)) "$ATTACKERS" "$MODE" 0
	per_attack=$(awk -v c="$CPU" -v a="$(val attack_tried)" 'BEGIN { printf "%.4f", a ? c / a : 0 }')
	alone_n=$(val attack_tried)
	R=$R_ATTACK
	printf '%-9s | %7s %7s %6s %6s | %7s %7s %8s %6s %8s | %-12s %-14s\n' "$([ "$g" = none ] && echo off || echo on)" \
		"$q50" "$q99" "$qps" "$qok" "$(val owner_p50_ms)" "$(val owner_p99_ms)" "$(val owner_max_ms)" \
		"$(val owner_per_s)" "$(val owner_ok)/$(val owner_tried)" "$(val attack_per_s)" "$per_attack"
	if [ "$g" = authguard ]; then
		A='rhost=(10|172\.16)\.'
		echo "#   authguard: $(settings)"
		echo "#   guard on: attacker attempts $(val attack_tried) under attack + $alone_n alone:" \
			"$(logcount "$A.* result=fail") reached the password check, $(logcount "$A.* action=refuse") refused unchecked," \
			"$(logcount "$A.* action=tarpit") tarpitted; client errors $(val attack_err)"
	else
		echo "#   guard off: every one of $(val attack_tried) attacker attempts (and $alone_n more alone) reached" \
			"the password check; client errors $(val attack_err)"
	fi
	teardown
done

# ------------------------------------------------------ tarpit slots exhausted
NA=$((ATTACKERS > 24 ? ATTACKERS : 24))
echo
echo "# $NA attackers on their own addresses (fixed), tarpit_slots = 8, bans and locks off so all stay in the tarpit (default 500ms..15s), ${SECS}s"
setup authguard "ip_ban_after = 0" "net_ban_after = 0" "spray_users = 0" "user_lock_after = 0"
echo "#   authguard: $(settings)"
load "$SECS" "$NA" fixed
A='rhost=172\.16\.'
echo "  attacker attempts $(val attack_tried): $(logcount "$A.* action=tarpit") slept in the tarpit," \
	"$(logcount "$A.* reason=tarpit_full") refused because all 8 slots were taken, $(logcount "$A.* action=allow") let through at once"
echo "  owners: $(val owner_ok) of $(val owner_tried) logins succeeded, LOGIN p50 $(val owner_p50_ms) ms, p99 $(val owner_p99_ms) ms, max $(val owner_max_ms) ms"
teardown
