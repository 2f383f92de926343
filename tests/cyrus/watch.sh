#!/bin/bash
# tests/cyrus/watch.sh - a real Cyrus imapd with authguard-watch following
# its log (issue 12): IMAP LOGIN and POP3 USER/PASS, the plaintext paths
# libsasl2 reports to no plugin.
#
# lib.sh's Cyrus (imapd and pop3d on loopback, README.md's imapd.conf
# lines, the SASL plugin's canonuser) writes its syslog as rsyslog lines
# to a file; the real authguard-watch (as Cyrus's user, on the same store)
# follows that file with the built-in cyrus rules. A real client
# (saslc.py) plays: Cyrus before the watcher (what issue 12 found: wrong
# LOGINs neither counted nor slowed, the right password then accepted, no
# line), the watcher's first start (it records what Cyrus logged before,
# within watch_max_age), a LOGIN-only owner at home, IMAP LOGIN and POP3
# USER/PASS brute force (counted, tarpitted, banned; the right password
# then refused), a botnet that locks the owner's mailbox while the watcher
# is SIGKILLed and restarted mid-attack (no line lost or doubled), the
# owner still in from home, AUTHENTICATE PLAIN (the plugin's own record,
# never counted twice). Each attempt must have exactly one attempt line:
# the inline check's when it refused, the watcher's otherwise.
#
# TAP; skips (1..0 # SKIP) as tests/cyrus/run.sh does, and when
# authguard-watch or authguard-admin is not built. Environment: lib.sh's,
# AG_TEST_WATCH (the watcher), AG_TEST_TIMEOUT (120), AG_TEST_KEEP=1.
set -u
. "$(dirname "$0")/../tap.sh"
export LC_ALL=C
. "$(dirname "$0")/lib.sh" || exit 1
WATCH=${AG_TEST_WATCH:-$CY_HERE/../../build/watch/authguard-watch}
TIMEOUT=${AG_TEST_TIMEOUT:-120}
NTESTS=28

why=$(cy_missing)
[ -n "$why" ] || [ -x "$WATCH" ] || why="$WATCH not built"
[ -n "$why" ] || [ -n "$ADMIN" ] || why="authguard-admin not found (AG_TEST_ADMIN)"
[ -n "$why" ] || ! sanitized "$WATCH" || why="$WATCH is built with a sanitizer (the plain build runs this test)"
if [ -n "$why" ]; then
	tap_skip_all "$why"
fi

S=
WDPID=
WPID=
DONE=0
FAILED=0
TESTNO=0
cleanup() {
	local rc=$?
	local IFS=$' \t\n'
	trap '' INT TERM HUP
	trap - EXIT
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	[ -z "$WPID" ] || kill -KILL "$WPID" 2>/dev/null
	if [ "$DONE" != 1 ] && [ "$rc" = 0 ]; then
		echo "# the run stopped before its end"
		rc=1
	fi
	[ "$rc" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ] && KEEP=0 || KEEP=1
	cy_cleanup
	exit "$rc"
}
tap_start

echo "1..$NTESTS"

# ---------------------------------------------------------------- set-up
cy_scratch ag-cywatch || bail "$CY_ERR"
cy_users alice bob carol dave erin || bail "$CY_ERR"
# small thresholds, so the run is short; each actor in a /24 of its own
cy_agconf "ip_ban_after = 5" "user_lock_after = 8" "net_ban_after = 0" "spray_users = 0" \
	"watch_source = file:$SYSLOG" "watch_rules = cyrus"
if ! cy_as_user test -x "$WATCH" 2>/dev/null; then
	mkdir -p "$S/copy" && cp "$WATCH" "$S/copy/" && WATCH=$S/copy/${WATCH##*/} ||
		bail "cannot copy $WATCH into $S"
fi
: >"$S/watch.err"
cy_start || bail "$CY_ERR"
cy_client_start

# the watcher as Cyrus's user (the store is that user's, 0700)
start_watch() {
	if [ "$(id -u)" = 0 ] && [ "$CY_USER" != root ]; then
		setpriv --reuid="$CY_USER" --regid="$CY_GROUP" --clear-groups -- \
			"$WATCH" -c "$AGCONF" 2>>"$S/watch.err" &
	else
		"$WATCH" -c "$AGCONF" 2>>"$S/watch.err" &
	fi
	WPID=$!
}
admin() { cy_as_user "$ADMIN" -c "$AGCONF" "$@"; }
nlines() { grep -c '^time=' "$LOG"; }
wait_lines() { # wait_lines N: until the attempt log has N lines (10 s at most)
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(nlines)" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# attempt PROTO METHOD SRC USER PASSWORD: one authentication; then, unless
# the watcher is down (NOWAIT=1), until its line is there. Sets ST, MS, L
# (the attempt's line) and F (its fields).
ATTEMPTS=0
NOWAIT=0
declare -A F
attempt() {
	local kv
	cy_try "$@"
	ATTEMPTS=$((ATTEMPTS + 1))
	L=
	F=()
	[ "$NOWAIT" = 1 ] && return
	wait_lines "$ATTEMPTS"
	L=$(grep '^time=' "$LOG" | sed -n "${ATTEMPTS}p")
	for kv in $L; do F[${kv%%=*}]=${kv#*=}; done
}
# brute PROTO SRC USER: 12 wrong passwords through the plaintext path;
# sets STS (replies), RES (result:reason:event of each line), MSS
brute() {
	local i
	STS=() RES=() MSS=()
	for ((i = 1; i <= 12; i++)); do
		attempt "$1" LOGIN "$2" "$3" "wrong-$i"
		STS+=("$ST")
		MSS+=("$MS")
		RES+=("${F[result]:-}:${F[reason]:-}:${F[event]:-}:${F[service]:-}")
	done
}
want_brute() { # want_brute SERVICE: what brute's lines must say
	local i w=()
	for ((i = 1; i <= 12; i++)); do
		if [ $i -lt 5 ]; then w+=("fail:::$1")
		elif [ $i = 5 ]; then w+=("fail::ban:$1")
		else w+=("unchecked:banned::$1"); fi
	done
	echo "${w[*]}"
}

# ---------------------------------------------------------------- before the watcher
BEFORE=
for i in 1 2 3 4 5 6; do
	NOWAIT=1 attempt imap LOGIN 127.0.55.5 dave "wrong-$i"
	BEFORE+="$ST "
done
NOWAIT=1 attempt imap LOGIN 127.0.55.5 dave pw-dave
BEFORE+="$ST"
ok "$({ [ "$BEFORE" = "NO NO NO NO NO NO OK" ]; } && echo 0 || echo 1)" \
	"before: 6 wrong IMAP LOGINs, then the right password is accepted (issue 12)" "replies: $BEFORE"
ok "$({ [ "$(nlines)" = 0 ]; } && echo 0 || echo 1)" "before: no attempt line for them" "$(cat "$LOG")"

# ---------------------------------------------------------------- the watcher starts
start_watch
wait_lines 7
n=$(grep -c 'user="dave" rhost=127.0.55.5 result=fail' "$LOG")
s=$(grep -c 'user="dave" rhost=127.0.55.5 result=success' "$LOG")
ok "$({ [ "$n" = 6 ] && [ "$s" = 1 ] && [ "$(nlines)" = 7 ]; } && echo 0 || echo 1)" \
	"first start: what Cyrus logged before (within watch_max_age) is recorded once: 6 failures, 1 success" \
	"$(cat "$LOG")" "$(tail -n 3 "$S/watch.err")"

# ---------------------------------------------------------------- a LOGIN-only owner at home
attempt imap LOGIN 127.0.1.1 alice pw-alice
ok "$({ [ "$ST" = OK ] && [ "${F[result]:-}" = success ] && [ "${F[rhost]:-}" = 127.0.1.1 ] &&
	[ "${F[service]:-}" = imap ] && [ "${F[user]:-}" = '"alice"' ]; } && echo 0 || echo 1)" \
	"alice's IMAP LOGIN from home: OK, recorded as a success (service=imap)" "$ST: $L"
admin show --user alice >"$S/show.out" 2>&1
ok "$({ grep -q 127.0.1.1 "$S/show.out"; } && echo 0 || echo 1)" "the LOGIN made her home familiar" "$(cat "$S/show.out")"

# ---------------------------------------------------------------- IMAP LOGIN brute force
brute imap 127.0.66.6 carol
ok "$({ [ "${STS[*]}" = "NO NO NO NO NO NO NO NO NO NO NO NO" ]; } && echo 0 || echo 1)" "IMAP LOGIN brute force: 12 wrong passwords refused" "${STS[*]}"
w=$(want_brute imap)
ok "$({ [ "${RES[*]}" = "$w" ]; } && echo 0 || echo 1)" \
	"IMAP LOGIN: 5 failures counted, the 5th bans (event=ban), the next 7 refused before the check" \
	"got:  ${RES[*]}" "want: $w"
# past tarpit_free (3) the canonuser check sleeps before the 4th and 5th
ok "$({ [ "${MSS[3]}" -ge 20 ] && [ "${MSS[4]}" -ge 40 ]; } && echo 0 || echo 1)" \
	"IMAP LOGIN: the 4th and 5th are tarpitted (>= 20 and 40 ms)" "ms: ${MSS[*]}"
attempt imap LOGIN 127.0.66.6 carol pw-carol
ok "$({ [ "$ST" = NO ] && [ "${F[reason]:-}" = banned ] && [ "${F[result]:-}" = unchecked ]; } && echo 0 || echo 1)" \
	"IMAP LOGIN: then the right password is refused (reason=banned)" "$ST: $L"

# ---------------------------------------------------------------- many LOGINs in one connection
# issue 12: "30 failed LOGINs inside one connection, the same": 8 here,
# counted, tarpitted and banned like separate connections
before=$ATTEMPTS
"$PYTHON" "$CY_HERE/loginmany.py" "$IMAP_PORT" 127.0.44.4 erin "$LOG" w1 w2 w3 w4 w5 w6 w7 w8 >"$S/many.out" 2>>"$S/client.log"
ATTEMPTS=$((ATTEMPTS + $(wc -l <"$S/many.out")))
replies=$(awk '{ print $1 }' "$S/many.out" | tr '\n' ' ')
got=$(grep 'rhost=127.0.44.4 ' "$LOG" | sed -E 's/.* result=([a-z]+) .*/\1/; s/$//' | tr '\n' ' ')
ev=$(grep 'rhost=127.0.44.4 ' "$LOG" | grep -c ' event=ban')
ms=($(awk '{ print $2 }' "$S/many.out"))
ok "$({ [ "$replies" = "NO NO NO NO NO NO NO NO " ] && [ "$got" = "fail fail fail fail fail unchecked unchecked unchecked " ] && [ "$ev" = 1 ]; } && echo 0 || echo 1)" \
	"8 LOGINs in one connection: 5 counted, the 5th bans, 3 refused" "replies: $replies" "results: $got"
ok "$({ [ "${ms[3]:-0}" -ge 20 ] && [ "${ms[4]:-0}" -ge 40 ]; } && echo 0 || echo 1)" \
	"8 LOGINs in one connection: the 4th and 5th tarpitted (>= 20 and 40 ms)" "ms: ${ms[*]}"

# ---------------------------------------------------------------- POP3 USER/PASS brute force
brute pop3 127.0.77.7 bob
ok "$({ [ "${STS[*]}" = "NO NO NO NO NO NO NO NO NO NO NO NO" ]; } && echo 0 || echo 1)" "POP3 USER/PASS brute force: 12 wrong passwords refused" "${STS[*]}"
w=$(want_brute pop)
ok "$({ [ "${RES[*]}" = "$w" ]; } && echo 0 || echo 1)" \
	"POP3 PASS: 5 failures counted (service=pop), the 5th bans, the next 7 refused" \
	"got:  ${RES[*]}" "want: $w"
attempt pop3 LOGIN 127.0.77.7 bob pw-bob
ok "$({ [ "$ST" = NO ] && [ "${F[reason]:-}" = banned ]; } && echo 0 || echo 1)" \
	"POP3 PASS: then the right password is refused (reason=banned)" "$ST: $L"
attempt pop3 LOGIN 127.0.66.6 bob pw-bob
ok "$({ [ "$ST" = NO ] && [ "${F[reason]:-}" = banned ]; } && echo 0 || echo 1)" \
	"the address banned over IMAP LOGIN is refused over POP3 for another user" "$ST: $L"

# ---------------------------------------------------------------- a botnet locks alice
# 8 addresses, one wrong LOGIN each (none is banned); the watcher is
# SIGKILLed after the 3rd, misses the 4th and 5th while down, and goes on
# from its kept position when restarted
for i in 1 2 3; do attempt imap LOGIN 127.0.$((100 + i)).1 alice "bot-$i"; done
kill -KILL "$WPID"
wait "$WPID" 2>/dev/null
WPID=
for i in 4 5; do NOWAIT=1 attempt imap LOGIN 127.0.$((100 + i)).1 alice "bot-$i"; done
start_watch
wait_lines "$ATTEMPTS"
for i in 6 7 8; do attempt imap LOGIN 127.0.$((100 + i)).1 alice "bot-$i"; done
LOCKLINE=$L
sleep 0.3
per=$(for i in 1 2 3 4 5 6 7 8; do grep -c "user=\"alice\" rhost=127.0.$((100 + i)).1 result=fail" "$LOG"; done | tr '\n' ' ')
ok "$({ [ "$per" = "1 1 1 1 1 1 1 1 " ]; } && echo 0 || echo 1)" \
	"botnet: each of 8 failures recorded exactly once across the watcher's SIGKILL and restart" "per address: $per"
case $LOCKLINE in *" event=lock"*) lk=0 ;; *) lk=1 ;; esac
ok "$lk" "botnet: the 8th failure locks alice (user_lock_after = 8)" "$LOCKLINE"
attempt imap LOGIN 127.0.200.1 alice pw-alice
ok "$({ [ "$ST" = NO ] && [ "${F[reason]:-}" = locked ]; } && echo 0 || echo 1)" \
	"locked: alice's right password from a stranger's address is refused (reason=locked)" "$ST: $L"
attempt imap LOGIN 127.0.1.1 alice pw-alice
ok "$({ [ "$ST" = OK ] && [ "${F[familiar]:-}" = yes ] && [ "${F[user_state]:-}" = locked ] &&
	[ "${F[result]:-}" = success ]; } && echo 0 || echo 1)" \
	"locked: alice still gets in from home over IMAP LOGIN (familiar=yes user_state=locked)" "$ST: $L"
attempt pop3 LOGIN 127.0.1.1 alice pw-alice
ok "$({ [ "$ST" = OK ] && [ "${F[service]:-}" = pop ]; } && echo 0 || echo 1)" "locked: and over POP3 USER/PASS" "$ST: $L"

# ---------------------------------------------------------------- AUTHENTICATE PLAIN: never twice
attempt imap PLAIN 127.0.88.8 dave wrong
ok "$({ [ "$ST" = NO ] && [ "${F[result]:-}" = fail ]; } && echo 0 || echo 1)" "AUTHENTICATE PLAIN: the plugin records the failure" "$ST: $L"
# a line from the watcher after it: Cyrus's PLAIN badlogin line was read by then
attempt imap LOGIN 127.0.2.2 dave pw-dave
n=$(grep -c 'rhost=127.0.88.8 ' "$LOG")
ok "$({ [ "$ST" = OK ] && [ "$n" = 1 ]; } && echo 0 || echo 1)" \
	"AUTHENTICATE PLAIN: the watcher does not count Cyrus's line for it again" "$n lines for 127.0.88.8"

# ---------------------------------------------------------------- the whole run
sleep 0.3
ok "$({ [ "$(nlines)" = "$ATTEMPTS" ]; } && echo 0 || echo 1)" "one attempt line per attempt ($ATTEMPTS attempts)" \
	"$(nlines) lines"
refused=$(grep -c ' result=unchecked action=refuse ' "$LOG")
marked=$(grep -c 'plaintext (.*) \[SASL(-13): .*authguard: refused\]$' "$SYSLOG")
ok "$({ [ "$refused" -gt 0 ] && [ "$refused" = "$marked" ]; } && echo 0 || echo 1)" \
	"each refusal is marked in Cyrus's badlogin line (authguard: refused) and not counted again" \
	"$refused refusals, $marked marked lines"
admin list bans >"$S/bans.out" 2>&1
ok "$({ grep -q '127.0.66.6' "$S/bans.out" && grep -q '127.0.77.7' "$S/bans.out" &&
	! grep -q '127.0.1.1' "$S/bans.out"; } && echo 0 || echo 1)" "authguard-admin list bans: both attackers, not the owner's home" \
	"$(cat "$S/bans.out")"
admin stats >"$S/stats.out" 2>&1
f=$(awk '$1 == "failures_total" { print $2 }' "$S/stats.out")
# failures: dave 6 + carol 5 + one connection 5 + bob 5 + botnet 8 + PLAIN 1
ok "$({ [ "$f" = 30 ]; } && echo 0 || echo 1)" "failures_total 30: every counted failure once" "$(cat "$S/stats.out")"
kill -TERM "$WPID"
wait "$WPID"
rc=$?
WPID=
ok "$({ [ "$rc" = 0 ]; } && echo 0 || echo 1)" "the watcher stops on SIGTERM (exit 0)" "exit $rc" "$(tail -n 3 "$S/watch.err")"
bad=$(grep -E 'DBERROR|IOERROR|fatal|segfault|AddressSanitizer|runtime error' "$SYSLOG" "$S/watch.err" | head -n 3)
ok "$({ [ -z "$bad" ]; } && echo 0 || echo 1)" "no error, crash or sanitizer report in Cyrus's log or the watcher's" "$bad"
echo "# the watcher: $(grep stopping "$S/watch.err" | tail -n 1)"

[ "$TESTNO" = "$NTESTS" ] || { echo "# ran $TESTNO checks, planned $NTESTS"; FAILED=1; }
DONE=1
[ "$FAILED" = 0 ]
