#!/bin/bash
# bench/compare-faillock.sh - authguard against Linux-PAM's pam_faillock (and
# against nothing), on the same attacks through the same harness.
#
# For each guard (none, pam_faillock, pam_authguard) a fresh real Dovecot on
# loopback authenticates IMAP logins through real libpam (pam_wrapper) with
# pam_unix checking yescrypt hashes (nss_wrapper provides the users). The same
# client (tests/dovecot/imapc.py, Python's imaplib) plays the same scenarios,
# the ones tests/dovecot/run.sh asserts for authguard. A pam_exec probe placed
# right before pam_unix counts the attempts that reached the password check.
#
#   bench/compare-faillock.sh            (from a build tree: see bench/README.md)
#
# pam_faillock is set up as its manual page does (preauth as requisite, so a
# locked user is not even checked; authfail; authsucc), with deny=10 like
# authguard's user_lock_after; authguard has its defaults but a tarpit scaled
# down to 20..320 ms. Environment as for tests/dovecot (lib.sh), plus
# AG_TEST_KEEP=1 to keep the scratch directories.
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/dovecot/lib.sh" || exit 1

dv_script_init compare-faillock

USERS="alice carol dave erin frank gina hank ivan u01 u02 u03 u04 u05 u06 u07 u08"
HOME_OF_alice=198.51.100.10 HOME_OF_carol=198.51.100.20 HOME_OF_dave=198.51.100.40
declare -A GUESSES REACHED OWNER

# try ADDR USER PASSWORD: one login; an attempt the server never answered
# (ERR-...) is counted in ERRORS, not as a guess
ERRORS=0
try() {
	imap_login "$@"
	case $ST in OK | NO) return 0 ;; esac
	ERRORS=$((ERRORS + 1))
	echo "# [$1] $2: $ST" >&2
	return 1
}

# reached_since N: probe lines after the first N, from addresses that are not
# an owner's home (198.51.100.0/24)
reached_since() { tail -n "+$(($1 + 1))" "$S/reached" | grep -cv '^198\.51\.100\.'; }
mark() { wc -l <"$S/reached"; }

# one scenario per function; each sets G (attacker guesses) and O (owner
# logins that succeeded, "ok/tried")
sc_brute() {
	local i ok=0
	G=0
	for i in $(seq 12); do try 203.0.113.5 alice "guess-$i" && G=$((G + 1)); done
	try "$HOME_OF_alice" alice pw-alice
	[ "$ST" = OK ] && ok=1
	O="$ok/1"
}
sc_botnet() {
	local n ok=0
	G=0
	for n in $(seq 40); do
		try "198.18.$n.1" carol "bot-$n" && G=$((G + 1))
		if [ $((n % 4)) = 0 ]; then
			try "$HOME_OF_carol" carol pw-carol
			[ "$ST" = OK ] && ok=$((ok + 1))
		fi
	done
	O="$ok/10"
}
sc_botnet_away() {
	local n ok=0
	G=0
	for n in $(seq 40); do try "198.19.$n.1" dave "bot-$n" && G=$((G + 1)); done
	try "$HOME_OF_dave" dave pw-dave
	[ "$ST" = OK ] && ok=1
	O="$ok/1"
}
sc_spray() {
	local r u
	G=0
	for r in 1 2 3; do
		for u in u01 u02 u03 u04 u05 u06 u07 u08; do
			try 192.0.2.77 "$u" "spray-$r" && G=$((G + 1))
		done
	done
	O=-
}
sc_ipv6() {
	local n ip users=(erin frank gina hank ivan)
	G=0
	for n in $(seq 40); do
		ip=$(printf '2001:db8:1:2:%x:%x:%x:%x' $((RANDOM | 0x100)) $RANDOM $RANDOM $((n + 0x100)))
		try "$ip" "${users[$((n % 5))]}" "v6-$n" && G=$((G + 1))
	done
	O=-
}
SCENARIOS="brute botnet botnet_away spray ipv6"
declare -A TITLE=(
	[brute]="brute force: 12 guesses at alice from one address, then alice from home"
	[botnet]="botnet: 40 addresses x 1 guess at carol, carol logs in from home every 4th"
	[botnet_away]="botnet: 40 addresses x 1 guess at dave, then dave from home"
	[spray]="spraying: one address, 8 mailboxes x 3 rounds"
	[ipv6]="IPv6: 40 addresses of one /64, 1 guess each over 5 mailboxes"
)

run_guard() { # run_guard GUARD
	local g=$1 sc m t0
	dv_scratch ag-compare || die "$DV_ERR"
	SCRATCHES+=("$S")
	dv_users unix $USERS || die "$DV_ERR"
	dv_stack "$g" yes || die "$DV_ERR"
	printf 'db_dir = %s/store\nlog = file:%s\ntarpit_base = 20ms\ntarpit_max = 320ms\n' "$S" "$LOG" >"$S/authguard.conf"
	start_dovecot || die "dovecot did not start ($g): see $DLOG"
	client_start
	t0=$SECONDS
	# the owners log in from home first (their usual place)
	for u in alice carol dave; do
		eval "imap_login \$HOME_OF_$u $u pw-$u"
		[ "$ST" = OK ] || die "$u cannot log in from home with $g ($ST): see $S"
	done
	for sc in $SCENARIOS; do
		m=$(mark)
		"sc_$sc"
		# the same attacks in every run, or the columns do not compare
		[ -z "${GUESSES[$sc]:-}" ] || [ "${GUESSES[$sc]}" = "$G" ] ||
			die "$sc: $G guesses answered with $g, ${GUESSES[$sc]} before"
		GUESSES[$sc]=$G
		REACHED[$g:$sc]=$(reached_since "$m")
		OWNER[$g:$sc]=$O
		# the probe must see what it is there to see
		if [ "$g" = none ] && [ "${REACHED[$g:$sc]}" != "$G" ]; then
			die "$sc: without a guard all $G guesses should reach pam_unix; the probe saw ${REACHED[$g:$sc]}"
		fi
	done
	[ "$ERRORS" = 0 ] || die "$g: $ERRORS logins got no answer from Dovecot (see $S/client.log)"
	client_stop
	stop_dovecot
	clean_pam_wrapper_dirs
	echo "# $g: done in $((SECONDS - t0)) s"
}

echo "# authguard vs pam_faillock vs nothing: real Dovecot $("$DOVECOT" --version | cut -d' ' -f1), pam_unix (yescrypt), $(nproc) cores"
echo "# authguard: defaults (ip_ban_after=10 net_ban_after=30 spray_users=6 user_lock_after=10) but" \
	"tarpit_base=20ms tarpit_max=320ms; pam_faillock: deny=10 unlock_time=600 nodelay, preauth requisite"
GUARDS="none faillock authguard"
for g in $GUARDS; do run_guard "$g"; done

echo
echo "attacker guesses that reached the password check (pam_unix), and owner logins that succeeded"
printf '%-72s %7s | %8s %8s %9s | %6s %8s %9s\n' scenario guesses none faillock authguard none faillock authguard
printf '%-72s %7s | %8s %8s %9s | %6s %8s %9s\n' '' '' "(reached)" '' '' "(owner)" '' ''
declare -A TR TOK TOWN
TG=0
for sc in $SCENARIOS; do
	printf '%-72s %7s | %8s %8s %9s | %6s %8s %9s\n' "${TITLE[$sc]}" "${GUESSES[$sc]}" \
		"${REACHED[none:$sc]}" "${REACHED[faillock:$sc]}" "${REACHED[authguard:$sc]}" \
		"${OWNER[none:$sc]}" "${OWNER[faillock:$sc]}" "${OWNER[authguard:$sc]}"
	TG=$((TG + GUESSES[$sc]))
	for g in $GUARDS; do
		TR[$g]=$((${TR[$g]:-0} + REACHED[$g:$sc]))
		case ${OWNER[$g:$sc]} in */*)
			o=${OWNER[$g:$sc]}
			TOK[$g]=$((${TOK[$g]:-0} + ${o%/*})) TOWN[$g]=$((${TOWN[$g]:-0} + ${o#*/})) ;;
		esac
	done
done
printf '%-72s %7s | %8s %8s %9s | %6s %8s %9s\n' "in all" "$TG" \
	"${TR[none]}" "${TR[faillock]}" "${TR[authguard]}" \
	"${TOK[none]}/${TOWN[none]}" "${TOK[faillock]}/${TOWN[faillock]}" "${TOK[authguard]}/${TOWN[authguard]}"
