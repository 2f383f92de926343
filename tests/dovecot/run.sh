#!/bin/bash
# tests/dovecot/run.sh - end-to-end test against a real IMAP server.
#
# A real Dovecot 2.3 (imap on a loopback high port, no systemd, no root
# needed) authenticates with passdb PAM through real libpam under cwrap's
# pam_wrapper; the PAM stack is the README's, the real pam_authguard.so around
# pam_matrix. A real IMAP client (imapc.py: Python's imaplib) claims a client
# address per connection with ID ("x-originating-ip" ...), which Dovecot
# honours from login_trusted_networks, and plays the README's attacks: brute
# force, a botnet against one mailbox while its owner logs in, spraying, IPv6
# rotation inside one /64, and six attackers at once. The checks are on the
# IMAP replies (OK/NO) and on authguard's log, line by line.
#
# Output is TAP. Exit 0 when every check passed, 1 otherwise, and 77 (skip)
# with "SKIP: ..." on stderr and a "1..0 # SKIP" plan when dovecot or python3
# is not installed (AG_TEST_SKIP_STATUS=0 for automake's tap-driver, which
# reports the skip from the plan but counts any non-zero exit as an error).
#
# Environment: lib.sh says where the pieces are found (AG_TEST_MODULE,
# AG_TEST_WRAPPER, AG_TEST_MATRIX, AG_TEST_ADMIN, AG_TEST_DOVECOT, ...), and
#   AG_TEST_TIMEOUT  seconds before the whole run gives up (120)
#   AG_TEST_KEEP=1   keep the scratch directory (/tmp/ag-dovecot.*) even on success
set -u
. "$(dirname "$0")/../tap.sh"
export LC_ALL=C
. "$(dirname "$0")/lib.sh" || exit 1
TIMEOUT=${AG_TEST_TIMEOUT:-120}
NTESTS=38

# ------------------------------------------------------------------ skip, bail
why=$(dv_missing)
if [ -n "$why" ]; then
	tap_skip_all "$why"
fi
dv_check || bail "$DV_ERR"

# ------------------------------------------------------------ scratch, cleanup
S=
WDPID=
DONE=0
PARPIDS=()
FAILED=0
TESTNO=0
cleanup() {
	local rc=$?
	# a trap may run inside "IFS= read": put word splitting back
	local IFS=$' \t\n'
	trap '' INT TERM HUP
	trap - EXIT
	set +f
	# no "wait" in here: in a trap, bash may never see a child's end
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	# a client connection cut short by a signal would hold up Dovecot's stop
	client_stop
	[ ${#PARPIDS[@]} = 0 ] || kill -TERM "${PARPIDS[@]}" 2>/dev/null
	stop_dovecot
	clean_pam_wrapper_dirs
	dv_worker_account_remove
	if [ "$DONE" != 1 ] && [ "$rc" = 0 ]; then
		echo "# the run stopped before its end"
		rc=1
	fi
	if [ -z "$S" ]; then
		:
	elif [ "$rc" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$S"
	else
		echo "# scratch directory kept: $S (dovecot.log, authguard.log, client.log)"
	fi
	exit "$rc"
}
tap_start



# ------------------------------------------------------------ scratch, setup
dv_scratch ag-dovecot || bail "$DV_ERR"
USERS="alice bob carol dora erin frank gina hank ivan"
for i in 01 02 03 04 05 06 07 08 p1 p2 p3 p4 p5 p6; do USERS="$USERS u$i"; done
dv_users matrix $USERS || bail "$DV_ERR"
dv_stack authguard || bail "$DV_ERR"
# The defaults, but for a tarpit scaled down to 20..320 ms so the run takes
# seconds: ip_ban_after 10, net_ban_after 30, spray_users 6, user_lock_after
# 10, tarpit_free 3, tarpit_slots 8, ipv4_prefix 24, ipv6_prefix 64.
cat >"$S/authguard.conf" <<EOF
db_dir = $S/store
log = file:$LOG
tarpit_base = 20ms
tarpit_max = 320ms
EOF

# attempt ADDR USER PASSWORD: one sequential login. Sets ST, MS, L (the log
# lines it wrote: exactly one is expected, read through a descriptor kept
# open on the log) and F (its fields: ${F[result]}...). An attempt that did
# not write exactly one line is kept in NOT_ONE_LINE.
ATTEMPTS=0
LINES_SEEN=0
NOT_ONE_LINE=()
exec {LOGFD}<"$LOG"
attempt() {
	local line n=0 kv
	imap_login "$1" "$2" "$3"
	ATTEMPTS=$((ATTEMPTS + 1))
	L=
	while IFS= read -r -u "$LOGFD" line; do
		L=$line
		n=$((n + 1))
	done
	LINES_SEEN=$((LINES_SEEN + n))
	[ "$n" = 1 ] || NOT_ONE_LINE+=("[$1] $2 -> $ST: $n log lines")
	F=()
	for kv in $L; do F[${kv%%=*}]=${kv#*=}; done
}
declare -A F
loglines() { # loglines REGEX...: number of log lines matching every REGEX
	local p out
	out=$(cat "$LOG")
	for p in "$@"; do out=$(printf '%s\n' "$out" | grep -E -e "$p"); done
	[ -n "$out" ] && printf '%s\n' "$out" | wc -l || echo 0
}

# ------------------------------------------------------- non-root auth worker
# The auth worker as a system user with the store's group, as SECURITY.md
# and the README give it: the store directory root:WGROUP 2750, its files
# 0660 root:WGROUP, made in advance. First the old, wrong recipe (the user
# is in WGROUP in the group database only, usermod -aG): Dovecot sets the
# worker's groups itself, so the worker cannot open the store, and the
# guard must say so (a fault line) while logins go on unguarded
# (fail_open). Then with extra_groups, comma-separated as documented: the
# guard guards (a ban, refusals). Six checks; skipped unless root.
NONROOT_CHECKS=(
	"non-root worker, usermod only: the auth worker runs as the test's user, without the store's group"
	"non-root worker, usermod only: a loud fault naming the store file it cannot open, fail_open=yes, no ban"
	"non-root worker, extra_groups: the auth worker runs as the test's user, with the store's group"
	"non-root worker, extra_groups: brute force banned at the 5th failure, then refused (reason=banned)"
	"non-root worker, extra_groups: one log line per attempt, no fault"
	"non-root worker, extra_groups: authguard-admin list bans (as root) on the store the worker wrote"
)
nonroot_worker() {
	local d ids wgid r=() res=() why=() ev=() i faults extra n0
	if [ "$(id -u)" != 0 ]; then
		for d in "${NONROOT_CHECKS[@]}"; do skip "$d" "not root: cannot make the test's system user"; done
		return
	fi
	if ! dv_worker_account; then
		ok 1 "${NONROOT_CHECKS[0]}" "$DV_ERR"
		for d in "${NONROOT_CHECKS[@]:1}"; do skip "$d" "no test accounts"; done
		return
	fi
	wgid=$(getent group "$WGROUP" | cut -d: -f3)
	# what the worker loads and reads must be reachable for its user
	mkdir -p "$S/lib" && cp "$MODULE" "$MATRIX" "$WRAPPER" "$S/lib/" && chmod -R a+rX "$S/lib"
	MODULE=$S/lib/$(basename "$MODULE") MATRIX=$S/lib/$(basename "$MATRIX")
	WRAPPER=$S/lib/$(basename "$WRAPPER")
	dv_stack authguard || bail "$DV_ERR"
	chmod -R a+rX "$S/pam.d" "$S/passdb"
	install -d -o root -g "$WGROUP" -m 2750 "$S/wstore"
	install -o root -g "$WGROUP" -m 0660 /dev/null "$S/wstore/data.mdb"
	install -o root -g "$WGROUP" -m 0660 /dev/null "$S/wstore/lock.mdb"
	LOG=$S/authguard-worker.log
	install -o "$WUSER" -m 0600 /dev/null "$LOG"
	cat >"$S/authguard.conf" <<-EOF
		db_dir = $S/wstore
		log = file:$LOG
		tarpit_base = 20ms
		tarpit_max = 320ms
		ip_ban_after = 5
	EOF
	chmod 0644 "$S/authguard.conf"

	# the wrong recipe: user only
	DV_WORKER_USER=$WUSER DV_WORKER_GROUPS=''
	start_dovecot || bail "dovecot did not start with a non-root auth worker: $(tail -n 5 "$DLOG")"
	client_start
	for i in 1 2 3 4 5 6; do
		imap_login 203.0.113.60 alice "nr-$i"
		r+=("$ST")
	done
	ids=$(auth_worker_ids)
	ok "$([ -n "$ids" ] && ! printf '%s\n' "$ids" | grep -qvE "^$(id -u "$WUSER") " &&
		! printf '%s\n' "$ids" | grep -qE "[ ,]$wgid(,|$)"; echo $?)" \
		"${NONROOT_CHECKS[0]}" "auth workers (uid groups): $ids"
	faults=$(grep -F 'authguard fault:' "$LOG")
	ok "$(printf '%s\n' "$faults" | grep -qF "permission denied: open $S/wstore/lock.mdb: Permission denied" &&
		printf '%s\n' "$faults" | grep -qF 'fail_open=yes: attempts go on unguarded' &&
		[ "$(count NO "${r[@]}")" = 6 ] && ! grep -q 'event=ban' "$LOG"; echo $?)" \
		"${NONROOT_CHECKS[1]}" "replies: ${r[*]}" "log: $(head -n 4 "$LOG")"
	client_stop
	stop_dovecot

	# the documented recipe: extra_groups, comma-separated
	extra=$WGROUP
	getent group shadow >/dev/null && extra="shadow,$WGROUP"
	DV_WORKER_GROUPS=$extra
	: >"$LOG"
	exec {LOGFD}<"$LOG"
	n0=$ATTEMPTS
	NOT_ONE_LINE=()
	start_dovecot || bail "dovecot did not start with extra_groups = $extra: $(tail -n 5 "$DLOG")"
	client_start
	r=()
	for i in 1 2 3 4 5 6; do
		attempt 203.0.113.61 alice "nr-$i"
		r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}") ev+=("${F[event]:--}")
	done
	attempt 203.0.113.61 alice pw-alice
	r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}")
	attempt 198.51.100.10 alice pw-alice
	r+=("$ST")
	ids=$(auth_worker_ids)
	ok "$([ -n "$ids" ] && ! printf '%s\n' "$ids" | grep -qvE "^$(id -u "$WUSER") " &&
		! printf '%s\n' "$ids" | grep -qvE "[ ,]$wgid(,|$)"; echo $?)" \
		"${NONROOT_CHECKS[2]} (extra_groups = $extra)" "auth workers (uid groups): $ids"
	ok "$([ "${r[*]}" = "NO NO NO NO NO NO NO OK" ] &&
		[ "${res[*]}" = "fail fail fail fail fail unchecked unchecked" ] &&
		[ "${ev[4]}" = ban ] && [ "${why[*]:5}" = "banned banned" ]; echo $?)" \
		"${NONROOT_CHECKS[3]}; the right password too; alice in from home" \
		"replies: ${r[*]}" "results: ${res[*]}" "events: ${ev[*]}" "reasons: ${why[*]}"
	ok "$([ ${#NOT_ONE_LINE[@]} = 0 ] && [ "$(wc -l <"$LOG")" = $((ATTEMPTS - n0)) ] &&
		! grep -q 'authguard fault' "$LOG"; echo $?)" \
		"${NONROOT_CHECKS[4]}" "${NOT_ONE_LINE[@]}" "$(grep 'fault' "$LOG" | head -n 3)"
	if [ -n "$ADMIN" ]; then
		d=$("$ADMIN" -c "$S/authguard.conf" list bans 2>&1)
		ok "$(printf '%s\n' "$d" | grep -qF 203.0.113.61; echo $?)" "${NONROOT_CHECKS[5]}" "$d"
	else
		skip "${NONROOT_CHECKS[5]}" "AG_TEST_ADMIN not set and no authguard-admin in PATH"
	fi
	client_stop
	stop_dovecot
	DV_WORKER_USER='' DV_WORKER_GROUPS=''
}

# ======================================================================== run
# The whole run is one function, parsed before it starts: a signal that
# lands while bash reads the script file could otherwise end it early.
main() {
	set -f # no globbing of log fields
	echo "1..$NTESTS"
	start_dovecot
	ok $? "dovecot $("$DOVECOT" --version | cut -d' ' -f1) answers on 127.0.0.1:$PORT (run as $(id -un)), passdb pam under pam_wrapper" \
		"$(tail -n 20 "$DLOG" "$S/dovecot.stdout" 2>/dev/null)"
	[ -n "$DPID" ] || bail "dovecot did not start"
	client_start

	# Owners log in from home first: those sources become familiar.
	attempt 198.51.100.10 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ] && [ "${F[service]:--}" = dovecot ] &&
		[ "${F[user]:--}" = '"alice"' ] && [ "${F[rhost]:--}" = 198.51.100.10 ]; echo $?)" \
		"alice logs in from home 198.51.100.10: IMAP OK; log service=dovecot user=\"alice\" rhost=198.51.100.10 result=success" \
		"reply $ST" "log: $L"
	attempt 198.51.100.20 carol pw-carol
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ]; echo $?)" \
		"carol logs in from home 198.51.100.20: IMAP OK" "reply $ST" "log: $L"

	# ---------------------------------------------------------------- brute force
	BF=203.0.113.5
	r=() res=() act=() why=() ev=() dly=() ms=() slow=()
	for i in $(seq 12); do
		attempt $BF alice "guess-$i"
		r+=("$ST") res+=("${F[result]:--}") act+=("${F[action]:--}") why+=("${F[reason]:--}") ev+=("${F[event]:--}") dly+=("${F[delay_ms]:--}")
		ms+=("$MS")
		[ "${F[delay_ms]:-0}" -le "$MS" ] 2>/dev/null || slow+=("guess $i: delay_ms=${F[delay_ms]:--} but the reply came after $MS ms")
	done
	ok "$([ "$(count NO "${r[@]}")" = 12 ]; echo $?)" \
		"brute force: 12 wrong passwords for alice from $BF: 12 IMAP NO" "replies: ${r[*]}"
	ok "$([ "${res[*]}" = "fail fail fail fail fail fail fail fail fail fail unchecked unchecked" ]; echo $?)" \
		"brute force: guesses 1-10 reach the password check (result=fail), 11-12 do not (result=unchecked)" "results: ${res[*]}"
	ok "$([ "${ev[9]}" = ban+lock ] && [ "${why[*]:10}" = "banned banned" ] && [ "${act[*]:10}" = "refuse refuse" ] &&
		[ "$(count - "${ev[@]}")" = 11 ]; echo $?)" \
		"brute force: the 10th failure bans $BF and locks alice (event=${ev[9]}); 11-12 refused (action=refuse reason=banned)" \
		"events: ${ev[*]}" "reasons: ${why[*]}" "actions: ${act[*]}"
	ok "$([ "${dly[*]}" = "0 0 0 20 40 80 160 320 320 320 0 0" ] &&
		[ "${act[*]:0:10}" = "allow allow allow tarpit tarpit tarpit tarpit tarpit tarpit tarpit" ] &&
		[ ${#slow[@]} = 0 ]; echo $?)" \
		"brute force: tarpit from the 4th guess, doubling 20 to 320 ms (the cap), and the IMAP reply waits that long; refusals are not delayed" \
		"delay_ms: ${dly[*]}" "actions: ${act[*]}" "${slow[@]}"
	echo "# LOGIN round trips (ms), guesses 1-12: ${ms[*]}"
	attempt $BF alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[result]:--}" = unchecked ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"brute force: alice's right password from the banned address: IMAP NO, result=unchecked reason=banned (no oracle)" \
		"reply $ST" "log: $L"
	attempt 198.51.100.10 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[familiar]:--}" = yes ] && [ "${F[user_state]:--}" = locked ]; echo $?)" \
		"brute force: locked alice still logs in from home (IMAP OK, familiar=yes user_state=locked)" "reply $ST" "log: $L"
	attempt 198.51.100.99 alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[result]:--}" = unchecked ] && [ "${F[reason]:--}" = locked ]; echo $?)" \
		"brute force: alice's right password from an unfamiliar address: IMAP NO, reason=locked" "reply $ST" "log: $L"

	# --------------------------------------------------------------------- botnet
	# 40 addresses, each in its own /24, one guess each against carol; carol logs
	# in from home after every 4th guess.
	r=() res=() why=() own=() ownfam=() nlock=0
	for n in $(seq 40); do
		attempt "198.18.$n.1" carol "bot-$n"
		r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}")
		case ${F[event]:--} in *lock*) nlock=$((nlock + 1)) ;; esac
		if [ $((n % 4)) = 0 ]; then
			attempt 198.51.100.20 carol pw-carol
			own+=("$ST") ownfam+=("${F[result]:--}/${F[familiar]:--}")
		fi
	done
	ok "$([ "$(count NO "${r[@]}")" = 40 ]; echo $?)" \
		"botnet: 40 guesses from 40 addresses against carol: 40 IMAP NO" "replies: ${r[*]}"
	ok "$([ "$(count fail "${res[@]}")" = 10 ] && [ "${res[*]:0:10}" = "fail fail fail fail fail fail fail fail fail fail" ] &&
		[ "$(count locked "${why[@]}")" = 30 ] && [ "$nlock" = 1 ]; echo $?)" \
		"botnet: 10 guesses reach the password check, the 10th locks carol, the other 30 are refused unchecked (reason=locked)" \
		"results: ${res[*]}" "reasons: ${why[*]}" "lock events: $nlock"
	ok "$([ "$(count OK "${own[@]}")" = 10 ] && [ "$(count success/yes "${ownfam[@]}")" = 10 ]; echo $?)" \
		"botnet: carol logs in from home $(count OK "${own[@]}") of 10 times during the attack (result=success familiar=yes)" \
		"replies: ${own[*]}" "result/familiar: ${ownfam[*]}"
	attempt 198.51.100.21 carol pw-carol
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = locked ]; echo $?)" \
		"botnet: carol's right password from a new address: IMAP NO, reason=locked" "reply $ST" "log: $L"
	ok "$([ "$(loglines 'rhost=198\.18\.' '(reason=(banned|net_banned)|event=[a-z+]*ban)')" = 0 ]; echo $?)" \
		"botnet: no bot address and no /24 was banned (one failure each)"

	# ---------------------------------------------------------------------- spray
	SP=192.0.2.77
	r=() res=() why=() ev=()
	for i in 01 02 03 04 05 06 07 08; do
		attempt $SP "u$i" "spray-$i"
		r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}") ev+=("${F[event]:--}")
	done
	ok "$([ "$(count NO "${r[@]}")" = 8 ] && [ "${res[*]}" = "fail fail fail fail fail fail unchecked unchecked" ] &&
		[ "${ev[*]}" = "- - - - - ban - -" ] && [ "${why[*]:6}" = "banned banned" ]; echo $?)" \
		"spray: 8 mailboxes from $SP: 8 IMAP NO; the 6th distinct user bans it (event=${ev[5]}), the 7th and 8th are refused unchecked" \
		"replies: ${r[*]}" "results: ${res[*]}" "events: ${ev[*]}" "reasons: ${why[*]}"
	attempt $SP u01 pw-u01
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"spray: u01's right password from $SP: IMAP NO, reason=banned" "reply $ST" "log: $L"
	attempt 198.51.100.30 u01 pw-u01
	ok "$([ "$ST" = OK ] && [ "${F[user_state]:--}" = ok ]; echo $?)" \
		"spray: u01 logs in from elsewhere (one failure locks nobody)" "reply $ST" "log: $L"

	# ----------------------------------------------------------------------- IPv6
	# 30 addresses rotating inside 2001:db8:1:2::/64, one guess each, over five
	# mailboxes (6 each: under the user lock, and one failure per address).
	r=() res=() ev=() bad=()
	V6USERS=(erin frank gina hank ivan)
	for n in $(seq 30); do
		ip=$(printf '2001:db8:1:2:%x:%x:%x:%x' $((RANDOM | 0x100)) $RANDOM $RANDOM $((n + 0x100)))
		attempt "$ip" "${V6USERS[$((n % 5))]}" "v6-$n"
		r+=("$ST") res+=("${F[result]:--}") ev+=("${F[event]:--}")
		[ "${F[rhost]:--}" = "$ip" ] || bad+=("$ip logged as rhost=${F[rhost]:--}")
	done
	ok "$([ "$(count NO "${r[@]}")" = 30 ] && [ "$(count fail "${res[@]}")" = 30 ] && [ ${#bad[@]} = 0 ]; echo $?)" \
		"ipv6: 30 guesses from 30 addresses of 2001:db8:1:2::/64: 30 IMAP NO, all checked; rhost is the claimed address" \
		"replies: ${r[*]}" "results: ${res[*]}" "${bad[@]}"
	ok "$([ "${ev[29]}" = net_ban ] && [ "$(count - "${ev[@]}")" = 29 ]; echo $?)" \
		"ipv6: the 30th failure bans the /64 (event=${ev[29]}); no address is banned on its own" "events: ${ev[*]}"
	attempt 2001:db8:1:2::cafe erin pw-erin
	ok "$([ "$ST" = NO ] && [ "${F[result]:--}" = unchecked ] && [ "${F[reason]:--}" = net_banned ]; echo $?)" \
		"ipv6: the right password from a fresh address of the /64: IMAP NO, reason=net_banned" "reply $ST" "log: $L"
	attempt 2001:db8:1:3::1 erin pw-erin
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ]; echo $?)" \
		"ipv6: the neighbouring /64 is not banned (erin logs in from 2001:db8:1:3::1)" "reply $ST" "log: $L"

	# The owner's own /64 turned against her (SECURITY.md F10): dora logs in
	# from 2001:db8:5:6::1, then 30 addresses of that /64 guess at her, one
	# each. Familiar for 10 failures, then 10 count toward her lock, then
	# refused.
	attempt 2001:db8:5:6::1 dora pw-dora
	r=() res=() why=() ev=()
	r+=("$ST")
	for n in $(seq 30); do
		ip=$(printf '2001:db8:5:6:%x:%x:%x:%x' $((RANDOM | 0x100)) $RANDOM $RANDOM $((n + 0x100)))
		attempt "$ip" dora "fam-$n"
		r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}") ev+=("${F[event]:--}")
	done
	ok "$([ "${r[*]}" = "OK$(printf ' NO%.0s' $(seq 30))" ] && [ "$(count fail "${res[@]}")" = 20 ] &&
		[ "${res[*]:20}" = "$(printf 'unchecked %.0s' $(seq 10) | sed 's/ $//')" ] &&
		[ "$(count locked "${why[@]}")" = 10 ] && [ "${ev[19]}" = lock ]; echo $?)" \
		"ipv6: rotating addresses inside dora's own familiar /64: 20 reach the password check (10 while familiar, 10 toward the lock), the 20th locks her, the last 10 are refused (reason=locked)" \
		"replies: ${r[*]}" "results: ${res[*]}" "reasons: ${why[*]}" "events: ${ev[*]}"

	# ------------------------------------------------------------------- parallel
	# Six attackers at once, each with its own address (own /24) and mailbox, 12
	# guesses each: several auth worker processes share the store and the log.
	for k in 1 2 3 4 5 6; do
		# each attacker its own client process
		for i in $(seq 12); do
			printf '100.64.%s.9\tup%s\tpar-%s\n' "$k" "$k" "$i"
		done | "$PYTHON" "$DV_HERE/imapc.py" "$PORT" "$IO_TIMEOUT" 2>>"$S/client.log" |
			cut -d' ' -f1 >"$S/par-$k.out" &
		PARPIDS+=($!)
	done
	for p in "${PARPIDS[@]}"; do wait "$p"; done
	PARPIDS=()
	bad=()
	for k in 1 2 3 4 5 6; do
		nno=$(grep -cx NO "$S/par-$k.out")
		nf=$(loglines "rhost=100\.64\.$k\.9 " 'result=fail')
		nr=$(loglines "rhost=100\.64\.$k\.9 " 'result=unchecked action=refuse reason=banned')
		nb=$(loglines "rhost=100\.64\.$k\.9 " 'event=ban')
		[ "$nno/$nf/$nr/$nb" = "12/10/2/1" ] || bad+=("100.64.$k.9: NO=$nno fail=$nf refused=$nr ban_events=$nb")
	done
	ATTEMPTS=$((ATTEMPTS + 72))
	n=0
	while IFS= read -r -u "$LOGFD" line; do n=$((n + 1)); done
	LINES_SEEN=$((LINES_SEEN + n))
	workers=$(grep -oE 'auth-worker\([0-9]+\)' "$DLOG" | sort -u | wc -l)
	ok "$([ ${#bad[@]} = 0 ]; echo $?)" \
		"parallel: 6 attackers x 12 guesses at once: per address 12 IMAP NO, 10 checked, one ban, 2 refused (banned)" "${bad[@]}"
	ok "$([ "$n" = 72 ]; echo $?)" "parallel: 72 attempts wrote 72 log lines ($workers auth worker processes in all)" "lines: $n"

	# --------------------------------------------------------------------- global
	total=$(wc -l <"$LOG")
	ok "$([ ${#NOT_ONE_LINE[@]} = 0 ] && [ "$total" = "$ATTEMPTS" ]; echo $?)" \
		"one log line per attempt: $ATTEMPTS IMAP logins, $total log lines" "${NOT_ONE_LINE[@]}"
	RE='^time=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z service=dovecot user="[a-z0-9]+" rhost=[0-9a-f.:]+ result=(success|fail|unchecked) action=(allow|tarpit|refuse)( reason=[a-z_]+)? delay_ms=[0-9]+ src_score=[0-9]+\.[0-9] user_score=[0-9]+\.[0-9] user_state=(ok|locked|none) familiar=(yes|no)( repeat=yes)?( sprayed=yes)?( wave=on)?( event=[a-z_+]+)?( until=[0-9T:.Z-]+)?$'
	ok "$([ "$(grep -cvE "$RE" "$LOG")" = 0 ]; echo $?)" \
		"every log line is one whole record in the README's field order, and no fault was logged" \
		"$(grep -vE "$RE" "$LOG" | head -n 5)"
	ok "$([ "$(loglines 'result=success' 'action=refuse')" = 0 ] && [ "$(loglines 'rhost=none')" = 0 ]; echo $?)" \
		"no successful login was refused, and every attempt had its client address (no rhost=none)"
	if [ -n "$ADMIN" ]; then
		bans=$("$ADMIN" -c "$S/authguard.conf" list bans 2>&1)
		miss=()
		for want in 203.0.113.5 192.0.2.77 2001:db8:1:2::/64 100.64.1.9 100.64.6.9; do
			printf '%s\n' "$bans" | grep -qF -- "$want" || miss+=("$want")
		done
		printf '%s\n' "$bans" | grep -qE '198\.18\.' && miss+=("a 198.18.x.x bot is listed")
		ok "$([ ${#miss[@]} = 0 ]; echo $?)" \
			"authguard-admin list bans on the store Dovecot wrote: the brute forcer, the sprayer, the /64, the parallel attackers" \
			"missing or unexpected: ${miss[*]}" "$bans"
		locks=$("$ADMIN" -c "$S/authguard.conf" list locks 2>&1)
		ok "$(printf '%s\n' "$locks" | grep -q alice && printf '%s\n' "$locks" | grep -q carol &&
			! printf '%s\n' "$locks" | grep -qE 'u0[1-8]|erin'; echo $?)" \
			"authguard-admin list locks: alice and carol, none of the sprayed or IPv6 mailboxes" "$locks"
	else
		skip "authguard-admin list bans" "AG_TEST_ADMIN not set and no authguard-admin in PATH"
		skip "authguard-admin list locks" "AG_TEST_ADMIN not set and no authguard-admin in PATH"
	fi

	# Stop Dovecot here so the last checks see its whole log and no process left.
	mpid=$DPID
	nfam=$(dv_family | wc -l)
	stop_dovecot
	left=$DV_LEFT
	ok "$([ -z "$left" ] && ! alive "$mpid" && [ "$nfam" -ge 5 ]; echo $?)" \
		"dovecot stopped on SIGTERM: its $nfam processes (master and children) are gone" "left: $left"
	# pam_wrapper's known races (see README.md): processes starting together
	# pick the same /tmp/pam.X (the second logs "File exists" and shares the
	# first one's copy of the same service files), or read a pid file being
	# written. Noted, not failed: every attempt's outcome and log line is
	# checked above.
	PWRAP_RACE='PWRAP_ERROR.*(Failed to create pam_wrapper config dir: /tmp/pam\.. - File exists|Failed to parse pid, buf=)$'
	grep -E "$PWRAP_RACE" "$DLOG" | sed 's/^/# note: /'
	dbad=$(grep -E 'Fatal|Panic|Error|segfault|killed with signal|PWRAP' "$DLOG" | grep -vE "$PWRAP_RACE" | head -n 5)
	ok "$([ -z "$dbad" ]; echo $?)" "dovecot logged no error, fatal, panic or crash" "$dbad"

	nonroot_worker

	n=$(grep -c '^imapc: ' "$S/client.log")
	[ "$n" = 0 ] || echo "# note: $n connections tried again (no greeting from Dovecot in ${IO_TIMEOUT}s; nothing attempted)"
	echo "# $ATTEMPTS IMAP logins in ${SECONDS}s"
	if [ "$TESTNO" != "$NTESTS" ]; then
		echo "# planned $NTESTS checks, ran $TESTNO"
		return 1
	fi
	DONE=1
	[ "$FAILED" = 0 ]
}
main
exit
