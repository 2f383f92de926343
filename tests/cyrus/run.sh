#!/bin/bash
# tests/cyrus/run.sh - end-to-end test against a real Cyrus imapd.
#
# Debian's Cyrus imapd 3.6 (master, imapd, pop3d from the .debs, unpacked:
# see lib.sh) runs on two loopback high ports with README.md's imapd.conf
# lines: sasldb users, SASL_PATH naming a private plugin directory with
# authguard.so, sasl_canon_user_plugin: authguard. A real client (saslc.py:
# Python's imaplib and poplib) connects from many loopback addresses
# (127.0.x.y: one /24 per actor) and plays brute force over IMAP
# AUTHENTICATE PLAIN and over POP3 AUTH PLAIN, the banned attacker with the
# right password, the owners from home, IMAP LOGIN and POP3 USER/PASS
# (sasl_checkpass, the canonuser path), then broken setups and a Cyrus
# started without SASL_PATH (issue 10, item 4). The checks are on the
# replies and on Cyrus's own log: the default `log = syslog` sends the
# attempt lines through libsasl2 to Cyrus's syslog, which syslog_shim.so
# (LD_PRELOAD) writes to a file.
#
# Output is TAP. Exit 0 when every check passed, 1 otherwise, and 77 (skip)
# with "SKIP: ..." on stderr and a "1..0 # SKIP" plan when Cyrus cannot be
# fetched or run here, or the build is sanitized (AG_TEST_SKIP_STATUS=0
# for automake's tap-driver, as in tests/dovecot/run.sh).
#
# Environment: lib.sh (AG_TEST_SASL_PLUGIN, AG_TEST_SYSLOG_SHIM,
# AG_TEST_CYRUS_DEBS, AG_TEST_ADMIN, ...), and
#   AG_TEST_TIMEOUT  seconds before the whole run gives up (120)
#   AG_TEST_KEEP=1   keep the scratch directory (/tmp/ag-cyrus.*) even on success
set -u
. "$(dirname "$0")/../tap.sh"
export LC_ALL=C
. "$(dirname "$0")/lib.sh" || exit 1
TIMEOUT=${AG_TEST_TIMEOUT:-120}
NTESTS=29

# ------------------------------------------------------------------ skip, bail
why=$(cy_missing)
if [ -n "$why" ]; then
	tap_skip_all "$why"
fi

S=
WDPID=
DONE=0
FAILED=0
TESTNO=0
cleanup() {
	local rc=$?
	local IFS=$' \t\n'
	trap '' INT TERM HUP
	trap - EXIT
	set +f
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	if [ "$DONE" != 1 ] && [ "$rc" = 0 ]; then
		echo "# the run stopped before its end"
		rc=1
	fi
	[ "$rc" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ] && KEEP=0 || KEEP=1
	cy_cleanup
	exit "$rc"
}
tap_start


# An attempt line, wherever it is written (through libsasl2's log callback
# "SASL time=... service=...", or straight to syslog), starts at "time=".
ATTEMPT_RE=' time=[0-9T:.Z-]+ service=[a-z0-9]+ '

# attempt PROTO METHOD SRC USER PASSWORD: one sequential authentication.
# Sets ST, MS, L (the attempt line it wrote, from "time=" on) and F (its
# fields). Each attempt's lines are read from Cyrus's log through a
# descriptor kept open on it; one that did not write exactly EXPECT_LINES
# (1, or 0 where README.md says none is written) goes in WRONG_LINES.
ATTEMPTS=0
LINES_SEEN=0
WRONG_LINES=()
EXPECT_LINES=1
declare -A F
attempt() {
	local line n=0 kv
	cy_try "$@"
	ATTEMPTS=$((ATTEMPTS + 1))
	L=
	while IFS= read -r -u "$LOGFD" line; do
		[[ $line =~ $ATTEMPT_RE ]] || continue
		L="time=${line#* time=}"
		n=$((n + 1))
	done
	LINES_SEEN=$((LINES_SEEN + n))
	[ "$n" = "$EXPECT_LINES" ] || WRONG_LINES+=("[$3] $1 $2 $4 -> $ST: $n attempt lines, $EXPECT_LINES expected")
	F=()
	for kv in $L; do F[${kv%%=*}]=${kv#*=}; done
}
syslog_since() { # the lines Cyrus logged since the descriptor was last read
	local line
	while IFS= read -r -u "$LOGFD" line; do printf '%s\n' "$line"; done
}
restart() { # restart: Cyrus again with the knobs as set now; a fresh log read
	cy_client_stop
	cy_stop
	syslog_since >/dev/null
	cy_start || return 1
	cy_client_start
}

# brute PROTO SRC USER: 12 wrong passwords through PLAIN, then checks
brute() {
	local proto=$1 src=$2 user=$3 i
	local r=() res=() act=() why=() ev=() dly=() ms=() slow=()
	for i in $(seq 12); do
		attempt "$proto" PLAIN "$src" "$user" "guess-$i"
		r+=("$ST") res+=("${F[result]:--}") act+=("${F[action]:--}") why+=("${F[reason]:--}")
		ev+=("${F[event]:--}") dly+=("${F[delay_ms]:--}") ms+=("$MS")
		[ "${F[delay_ms]:-0}" -le "$MS" ] 2>/dev/null ||
			slow+=("guess $i: delay_ms=${F[delay_ms]:--} but the reply came after $MS ms")
	done
	ok "$([ "$(count NO "${r[@]}")" = 12 ] &&
		[ "${res[*]}" = "fail fail fail fail fail fail fail fail fail fail unchecked unchecked" ]; echo $?)" \
		"$proto brute force: 12 wrong passwords for $user from $src through PLAIN: 12 refused; 1-10 reach the password check (result=fail), 11-12 do not (result=unchecked)" \
		"replies: ${r[*]}" "results: ${res[*]}"
	ok "$([ "${ev[9]}" = ban+lock ] && [ "${why[*]:10}" = "banned banned" ] && [ "${act[*]:10}" = "refuse refuse" ] &&
		[ "$(count - "${ev[@]}")" = 11 ]; echo $?)" \
		"$proto brute force: the 10th failure bans $src and locks $user (event=${ev[9]}); 11-12 refused (action=refuse reason=banned)" \
		"events: ${ev[*]}" "reasons: ${why[*]}" "actions: ${act[*]}"
	ok "$([ "${dly[*]}" = "0 0 0 20 40 80 160 320 320 320 0 0" ] &&
		[ "${act[*]:0:10}" = "allow allow allow tarpit tarpit tarpit tarpit tarpit tarpit tarpit" ] &&
		[ ${#slow[@]} = 0 ]; echo $?)" \
		"$proto brute force: tarpitted from the 4th guess, 20 doubling to 320 ms, and the reply waits that long" \
		"delay_ms: ${dly[*]}" "actions: ${act[*]}" "${slow[@]}"
	echo "# $proto round trips (ms), guesses 1-12: ${ms[*]}"
}

# ======================================================================== run
main() {
	local out r x
	set -f
	echo "1..$NTESTS"
	cy_scratch ag-cyrus || bail "$CY_ERR"
	cy_users alice bob carol || bail "$CY_ERR"
	# authguard.conf: the defaults (log = syslog among them) but for the
	# store directory and a tarpit scaled down to 20..320 ms
	cy_agconf -log
	exec {LOGFD}<"$SYSLOG"
	cy_start
	ok $? "Cyrus imapd answers on 127.0.0.1:$IMAP_PORT (IMAP) and :$POP_PORT (POP3), run as $CY_USER, README's imapd.conf lines, log = syslog (the default)" \
		"$CY_ERR"
	[ -n "$MPID" ] || bail "Cyrus did not start"
	echo "# ${CY_GREETING#\* OK }"
	cy_client_start

	# ------------------------------------------------------------------ owners
	attempt imap PLAIN 127.0.1.1 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ] && [ "${F[service]:--}" = imap ] &&
		[ "${F[user]:--}" = '"alice"' ] && [ "${F[rhost]:--}" = 127.0.1.1 ]; echo $?)" \
		"alice logs in from home 127.0.1.1 (IMAP AUTHENTICATE PLAIN): OK; Cyrus's log has service=imap user=\"alice\" rhost=127.0.1.1 result=success" \
		"reply $ST" "line: $L"
	attempt pop3 PLAIN 127.0.2.2 bob pw-bob
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ] && [ "${F[service]:--}" = pop ]; echo $?)" \
		"bob logs in from home 127.0.2.2 (POP3 AUTH PLAIN): OK, service=pop result=success" "reply $ST" "line: $L"

	# ------------------------------------------------------ brute force, IMAP
	brute imap 127.0.66.6 alice
	attempt imap PLAIN 127.0.66.6 alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[result]:--}" = unchecked ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"IMAP: alice's right password from the banned address (AUTHENTICATE PLAIN): NO, result=unchecked reason=banned (no oracle)" \
		"reply $ST" "line: $L"
	attempt imap LOGIN 127.0.66.6 alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"IMAP: alice's right password from the banned address through LOGIN (sasl_checkpass, the canonuser): NO, reason=banned" \
		"reply $ST" "line: $L"
	attempt imap PLAIN 127.0.1.1 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[familiar]:--}" = yes ] && [ "${F[user_state]:--}" = locked ]; echo $?)" \
		"IMAP: locked alice still logs in from home (OK, familiar=yes user_state=locked)" "reply $ST" "line: $L"
	attempt imap PLAIN 127.0.99.9 alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = locked ]; echo $?)" \
		"IMAP: alice's right password from an unfamiliar address: NO, reason=locked" "reply $ST" "line: $L"
	# the checkpass path records nothing (README.md): no attempt line
	EXPECT_LINES=0
	attempt imap LOGIN 127.0.1.1 alice pw-alice
	EXPECT_LINES=1
	ok "$([ "$ST" = OK ]; echo $?)" "IMAP: alice logs in from home through LOGIN: OK" "reply $ST"

	# ------------------------------------------------------ brute force, POP3
	brute pop3 127.0.77.7 bob
	attempt pop3 PLAIN 127.0.77.7 bob pw-bob
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"POP3: bob's right password from the banned address (AUTH PLAIN): -ERR, reason=banned" "reply $ST" "line: $L"
	attempt pop3 LOGIN 127.0.77.7 bob pw-bob
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"POP3: bob's right password from the banned address through USER/PASS: -ERR, reason=banned" "reply $ST" "line: $L"
	attempt pop3 PLAIN 127.0.2.2 bob pw-bob
	ok "$([ "$ST" = OK ] && [ "${F[familiar]:--}" = yes ]; echo $?)" \
		"POP3: locked bob still logs in from home (+OK, familiar=yes)" "reply $ST" "line: $L"
	# an address banned over POP3 is banned over IMAP (one store)
	attempt imap PLAIN 127.0.77.7 carol pw-carol
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"the address banned over POP3 is refused over IMAP too, for another user (reason=banned)" "reply $ST" "line: $L"

	# -------------------------------------------------------------- one line
	ok "$([ ${#WRONG_LINES[@]} = 0 ]; echo $?)" \
		"one attempt line per attempt in Cyrus's log with log = syslog ($LINES_SEEN lines for $ATTEMPTS attempts, LOGIN successes write none)" \
		"${WRONG_LINES[@]}"
	if [ -n "$ADMIN" ]; then
		out=$(cy_as_user "$ADMIN" -c "$AGCONF" list bans 2>&1)
		ok "$(printf '%s\n' "$out" | grep -q '127\.0\.66\.6' && printf '%s\n' "$out" | grep -q '127\.0\.77\.7' &&
			! printf '%s\n' "$out" | grep -qE '127\.0\.(1\.1|2\.2)'; echo $?)" \
			"authguard-admin list bans on the store Cyrus wrote: both attackers, no owner" "$out"
	else
		skip "authguard-admin list bans" "AG_TEST_ADMIN not set and no authguard-admin in PATH"
	fi
	# what syslog_shim.so writes, for every reader of the file (the format
	# rsyslog writes: "Mmm dd hh:mm:ss host ident[pid]: message")
	out=$(grep -vE '^[A-Z][a-z]{2} [ 1-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [^ ]+ [^ []+\[[0-9]+\]: ' "$SYSLOG" | head -n 3)
	ok "$([ -z "$out" ] && [ "$(wc -l <"$SYSLOG")" -ge "$ATTEMPTS" ]; echo $?)" \
		"Cyrus's log: $(wc -l <"$SYSLOG") lines, each in rsyslog's format (Mmm dd hh:mm:ss host ident[pid]: message)" "$out"
	out=$(grep -E 'DBERROR|IOERROR|fatal|segfault|signal' "$SYSLOG" | head -n 5)
	ok "$([ -z "$out" ]; echo $?)" "Cyrus logged no database error, fatal error or crash" "$out"

	# --------------------------------------------------------------- the stop
	mpid=$MPID
	nfam=$(cy_family | wc -l)
	cy_client_stop
	cy_stop
	syslog_since >/dev/null
	ok "$([ -z "$CY_LEFT" ] && ! alive "$mpid" && [ "$nfam" -ge 2 ]; echo $?)" \
		"Cyrus stopped on SIGTERM: its $nfam processes (master and services) are gone" "left: $CY_LEFT"


	# ------------------------------------ pop3d without sasl_log_level: 4
	# Not asserted: what README's sasl_log_level line is for. pop3d leaves
	# SASL's log to libsasl2, whose default callback drops notices (the
	# attempt lines) below sasl_log_level 4 (issue 10, item 5).
	CY_SASL_LOG_LEVEL=
	cy_start || bail "Cyrus did not start again: $CY_ERR"
	cy_client_start
	cy_try pop3 PLAIN 127.0.2.2 bob pw-bob
	cy_try pop3 PLAIN 127.0.88.8 bob wrong
	out=$(syslog_since | grep -cE "$ATTEMPT_RE")
	echo "# note: pop3d without sasl_log_level: 4 (log = syslog): $out attempt lines for 2 attempts"
	cy_client_stop
	cy_stop
	unset CY_SASL_LOG_LEVEL

	# ------------------------------------------------------ broken: the store
	# A store directory Cyrus's user cannot write: fail_open = yes (the
	# default) lets the login through, and the fault is in Cyrus's log.
	mkdir -p "$S/rostore" && chown "$CY_USER:$CY_GROUP" "$S/rostore" && chmod 0555 "$S/rostore"
	cp "$AGCONF" "$S/authguard.conf.good"
	sed -i "s|^db_dir = .*|db_dir = $S/rostore|" "$AGCONF"
	cy_start || bail "Cyrus did not start again: $CY_ERR"
	cy_client_start
	cy_try imap PLAIN 127.0.1.1 alice pw-alice
	out=$(syslog_since)
	ok "$([ "$ST" = OK ] && printf '%s\n' "$out" | grep -q "authguard fault: .*db_dir=$S/rostore"; echo $?)" \
		"store not writable: alice logs in (fail_open = yes) and Cyrus's log has the fault naming db_dir" \
		"reply $ST" "log: $out"
	printf '%s\n' "$out" | grep -m1 'authguard fault' | sed 's/^.*authguard fault/# authguard fault/'
	# the config is read again when it changes: fail_open = no refuses
	sleep 1 # a new mtime second for the config cache
	echo "fail_open = no" >>"$AGCONF"
	cy_try imap PLAIN 127.0.1.1 alice pw-alice
	out=$(syslog_since)
	# (the fault itself is logged once a minute per process: the line says it)
	ok "$([ "$ST" = NO ] && printf '%s\n' "$out" | grep -qE "$ATTEMPT_RE.*result=unchecked action=refuse reason=fault"; echo $?)" \
		"store not writable, fail_open = no: alice is refused, and Cyrus's log says why (result=unchecked action=refuse reason=fault)" "reply $ST" "log: $out"
	# ----------------------------------------------------- broken: no config
	cp "$S/authguard.conf.good" "$AGCONF"
	CY_AGCONF_PATH=$S/missing.conf
	restart || bail "Cyrus did not start again: $CY_ERR"
	unset CY_AGCONF_PATH
	cy_try imap PLAIN 127.0.1.1 alice pw-alice
	out=$(syslog_since)
	ok "$(printf '%s\n' "$out" | grep -q "authguard.*$S/missing.conf.*No such file"; echo $?)" \
		"config missing: Cyrus's log names the missing authguard.conf (reply $ST)" "log: $out"

	# ------------------------------------------- item 4: no SASL_PATH at all
	# README's imapd.conf, Cyrus started without SASL_PATH, and no link in
	# libsasl2's own directory: libsasl2 finds no canonuser "authguard".
	CY_SASL_PATH=-
	restart || bail "Cyrus did not start again: $CY_ERR"
	r=()
	for x in "imap PLAIN" "imap LOGIN" "pop3 PLAIN" "pop3 LOGIN"; do
		cy_try $x 127.0.1.1 alice pw-alice
		r+=("$ST")
	done
	out=$(syslog_since)
	ok "$([ "${r[*]}" = "NO NO NO NO" ] && printf '%s\n' "$out" | grep -q 'desired canon_user plugin authguard not found'; echo $?)" \
		"without SASL_PATH and without README's link, every login is refused, the owner's from home too (IMAP PLAIN, LOGIN, POP3 PLAIN, USER/PASS: ${r[*]}); Cyrus logs 'desired canon_user plugin authguard not found'" \
		"replies: ${r[*]}" "log: $out"

	# The same, with README's link to the plugin in libsasl2's own directory
	# (a stand-in: $S/sysdir, all of that directory's plugins and the link;
	# the plugin loads the stock mechanisms from the same place). No outage,
	# the fallback says so loudly, and banned sources are still refused.
	cy_sysdir || bail "$CY_ERR"
	CY_SASL_PATH=$S/sysdir
	CY_IMAPD_EXTRA="sasl_authguard_mech_dir: $S/sysdir"
	restart || bail "Cyrus did not start again: $CY_ERR"
	r=()
	for x in "imap PLAIN" "imap LOGIN" "pop3 PLAIN" "pop3 LOGIN"; do
		cy_try $x 127.0.1.1 alice pw-alice
		r+=("$ST")
	done
	out=$(syslog_since)
	ok "$([ "${r[*]}" = "OK OK OK OK" ] && ! printf '%s\n' "$out" | grep -qE "$ATTEMPT_RE" &&
		[ "$(printf '%s\n' "$out" | grep -c "cyrus/imap\[.*authguard fault: plugin loaded from the stock mechanisms' directory $S/sysdir")" -ge 1 ] &&
		[ "$(printf '%s\n' "$out" | grep -c "cyrus/pop3\[.*authguard fault: plugin loaded from the stock mechanisms' directory $S/sysdir")" -ge 1 ]; echo $?)" \
		"without SASL_PATH, with README's libauthguard.so link in libsasl2's directory: the owner logs in (IMAP PLAIN, LOGIN, POP3 PLAIN, USER/PASS: ${r[*]}), imapd and pop3d each log that the mechanisms are not guarded, and they are not (no wrapped mechanism beside the stock ones: no attempt line)" \
		"replies: ${r[*]}" "log: $out"
	r=() why=()
	for x in "imap PLAIN" "imap LOGIN" "pop3 PLAIN" "pop3 LOGIN"; do
		attempt $x 127.0.66.6 alice pw-alice
		r+=("$ST") why+=("${F[reason]:--}")
	done
	ok "$([ "${r[*]}" = "NO NO NO NO" ] && [ "${why[*]}" = "banned banned banned banned" ]; echo $?)" \
		"the same: the address banned earlier is still refused on every path with the right password (${r[*]}: reason=${why[*]})" \
		"replies: ${r[*]}" "reasons: ${why[*]}"
	unset CY_SASL_PATH CY_IMAPD_EXTRA

	echo "# $ATTEMPTS attempts in ${SECONDS}s"
	if [ "$TESTNO" != "$NTESTS" ]; then
		echo "# planned $NTESTS checks, ran $TESTNO"
		return 1
	fi
	DONE=1
	[ "$FAILED" = 0 ]
}
main
exit
