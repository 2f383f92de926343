#!/bin/bash
# tests/watch/run.sh - the real authguard-watch on log files and stdin.
#
# A writer appends Cyrus-shaped rsyslog lines to a file while the watcher
# follows it; the watcher is SIGKILLed mid-stream again and again and
# restarted, and the store must end up with exactly one record per
# failure and success line (authguard-admin stats), and the attempt log
# with exactly one line each. Then: rotation by renaming, truncation,
# rotation while the watcher is stopped, the first start's age bound,
# hostile lines (a fake [addr] in the user name, an overlong line, NUL
# bytes, invalid UTF-8), stdin, a clean SIGTERM, and -t on bad rules.
#
# Output is TAP; every wait is bounded. Environment: AG_TEST_WATCH and
# AG_TEST_ADMIN (the binaries; from the build tree by default),
# AG_TEST_KEEP=1 keeps the scratch directory.
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
WATCH=${AG_TEST_WATCH:-$here/../../build/watch/authguard-watch}
ADMIN=${AG_TEST_ADMIN:-$here/../../build/tools/authguard-admin}
NTESTS=36

for b in "$WATCH" "$ADMIN"; do
	if [ ! -x "$b" ]; then
		echo "1..0 # SKIP $b not built"
		exit "${AG_TEST_SKIP_STATUS:-77}"
	fi
done

S=$(mktemp -d /tmp/ag-watch.XXXXXX) || exit 1
WPID=
WRPID=
FAILED=0
TESTNO=0
cleanup() {
	local rc=$?
	trap - EXIT
	[ -z "$WRPID" ] || kill "$WRPID" 2>/dev/null
	[ -z "$WPID" ] || kill -KILL "$WPID" 2>/dev/null
	if [ "$rc" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$S"
	else
		echo "# scratch directory kept: $S"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "Bail out! interrupted"; exit 1' INT TERM HUP

echo "1..$NTESTS"
ok() {
	TESTNO=$((TESTNO + 1))
	if [ "$1" = 0 ]; then
		echo "ok $TESTNO - $2"
	else
		echo "not ok $TESTNO - $2"
		FAILED=1
	fi
}
is() { # is GOT WANT NAME
	[ "$1" = "$2" ]
	local r=$?
	[ $r = 0 ] || echo "# got '$1', want '$2'"
	ok $r "$3"
}

# thresholds off: every line is counted and nothing is refused, so the
# counts are exact
mkconf() { # mkconf NAME SOURCE [extra lines]
	local name=$1 src=$2
	shift 2
	mkdir -p "$S/$name.db"
	{
		echo "db_dir = $S/$name.db"
		echo "log = file:$S/$name.attempts"
		echo "ip_ban_after = 0"
		echo "net_ban_after = 0"
		echo "spray_users = 0"
		echo "user_lock_after = 0"
		echo "tarpit_base = 0"
		echo "watch_source = $src"
		for l in "$@"; do echo "$l"; done
	} >"$S/$name.conf"
}
stat_of() { # stat_of CONF NAME
	"$ADMIN" -c "$1" stats 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'
}
# What the host records hold, summed (each line of the kill test has an
# address of its own): failures (fail), successes (ok) or both (all). They
# commit with the record and the watcher's position; the host-wide stats
# are added right after the commit (counters.ag), so a SIGKILL in between
# can leave one attempt out of those (README: "Refusals write nothing").
held() { # held CONF fail|ok|all
	"$ADMIN" -c "$1" list sources 2>/dev/null |
		awk -v w="$2" '$2 == "host" { f += $4; s += $5 }
			END { print (w == "fail" ? f : w == "ok" ? s : f + s) + 0 }'
}
wait_held() { # wait_held CONF WANT (at most 30 s)
	local i
	for ((i = 0; i < 300; i++)); do
		[ "$(held "$1" all)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# wait until CONF's attempts_total is WANT (at most 30 s)
wait_attempts() {
	local i
	for ((i = 0; i < 300; i++)); do
		[ "$(stat_of "$1" attempts_total)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# wait until CONF's store knows ADDRESS (at most 30 s)
wait_addr() {
	local i
	for ((i = 0; i < 300; i++)); do
		"$ADMIN" -c "$1" show "$2" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
start() { # start CONF
	"$WATCH" -c "$1" 2>>"$S/watch.err" &
	WPID=$!
}
stop() { # stop: SIGTERM, wait; sets STOP_RC
	kill -TERM "$WPID"
	wait "$WPID"
	STOP_RC=$?
	WPID=
}

# Lines: "f" failure (imap), "p" failure (pop), "s" success, and noise
# that must not count: a mechanism's line, the plugin's refusal, a
# back-end fault, another program.
stamp() { date '+%b %e %H:%M:%S'; }
lines() { # lines FROM TO: a deterministic mix, numbered
	local now
	now=$(stamp)
	awk -v from="$1" -v to="$2" -v now="$now" 'BEGIN {
	for (i = from; i < to; i++) {
		a = "10." int(i / 65536) % 256 "." int(i / 256) % 256 "." i % 256
		k = i % 10
		if (k < 5)
			printf "%s mail cyrus/imap[%d]: badlogin: host%d.example [%s] plaintext (user%d) [SASL(-13): authentication failure: checkpass failed]\n", now, 100 + k, i, a, i % 50
		else if (k == 5)
			printf "%s mail cyrus/pop3[%d]: badlogin: [%s] plaintext (user%d) [SASL(-13): authentication failure: checkpass failed]\n", now, 100 + k, a, i % 50
		else if (k == 6)
			printf "%s mail cyrus/imap[%d]: login: localhost [%s] user%d plaintext User logged in SESSIONID=<cyrus-%d>\n", now, 100 + k, a, i % 50, i
		else if (k == 7)
			printf "%s mail cyrus/imap[%d]: login: localhost [%s] user%d PLAIN User logged in SESSIONID=<cyrus-%d>\n", now, 100 + k, a, i % 50, i
		else if (k == 8)
			printf "%s mail cyrus/imap[%d]: badlogin: localhost [%s] plaintext (user%d) [SASL(-13): authentication failure: authguard: refused]\n", now, 100 + k, a, i % 50
		else
			printf "%s mail postfix/smtpd[%d]: connect from unknown[%s]\n", now, 100 + k, a
	} }'
}
# of N lines from 0: 6 in 10 record (5 failures + 1 pop failure, 1 success)
counted() { # counted FROM TO
	awk -v from="$1" -v to="$2" 'BEGIN { n = 0; for (i = from; i < to; i++) if (i % 10 <= 6) n++; print n }'
}

# ---------------------------------------------------------------- kill -9 mid-stream
mkconf kill "file:$S/mail.log"
C=$S/kill.conf
: >"$S/mail.log"
TOTAL=12000
(
	for ((b = 0; b < TOTAL; b += 300)); do
		lines $b $((b + 300)) >>"$S/mail.log"
		sleep 0.05
	done
) &
WRPID=$!
kills=0
mid=0
start "$C"
for ((k = 0; k < 6; k++)); do
	sleep 0.3
	got=$(held "$C" all)
	kill -KILL "$WPID" 2>/dev/null
	wait "$WPID" 2>/dev/null
	kills=$((kills + 1))
	[ -n "$got" ] && [ "$got" -gt 0 ] && [ "$got" -lt "$(counted 0 $TOTAL)" ] && mid=$((mid + 1))
	echo "# SIGKILL $kills with $got records in the store"
	start "$C"
done
wait "$WRPID"
WRPID=
want=$(counted 0 $TOTAL)
wait_held "$C" "$want"
ok $? "after $kills SIGKILLs, $want records for $want counting lines of $TOTAL (got $(held "$C" all))"
sleep 0.5 # a count on its way past $want would have moved on by now
ok $([ "$mid" -ge 3 ] && echo 0 || echo 1) "at least 3 of the SIGKILLs came mid-stream ($mid)"
is "$(held "$C" fail)" $((TOTAL * 6 / 10)) "failures: each failure line once"
is "$(held "$C" ok)" $((TOTAL / 10)) "successes: each plaintext success once"
# the attempt line is written after the record's commit: a SIGKILL in
# between costs that line (never the record), so at most one per kill
within() { # within GOT WANT SLACK NAME
	[ "$1" -le "$2" ] && [ "$1" -ge $(($2 - $3)) ]
	local r=$?
	[ $r = 0 ] || echo "# got $1, want $2 (at most $3 fewer)"
	ok $r "$4"
}
within "$(wc -l <"$S/kill.attempts")" "$want" "$kills" "one attempt line per counted line (a SIGKILL may cost the line being written)"
within "$(grep -c ' result=success ' "$S/kill.attempts")" $((TOTAL / 10)) "$kills" "attempt lines: successes"
within "$(grep -c 'service=pop ' "$S/kill.attempts")" $((TOTAL / 10)) "$kills" "attempt lines: POP3 failures as service pop"
# no address recorded twice: every failing address fails exactly once
dups=$(grep -o ' rhost=[^ ]* result=fail' "$S/kill.attempts" | sort | uniq -d | wc -l)
is "$dups" 0 "no failure line recorded twice"

# a restart with nothing new adds nothing
sleep 0.3
stop
is "$STOP_RC" 0 "SIGTERM: exit status 0"
start "$C"
sleep 0.5
is "$(held "$C" all)" "$want" "a restart reads nothing twice"

# ---------------------------------------------------------------- rotation, truncation
base=$want
lines 20000 20100 >>"$S/mail.log"
mv "$S/mail.log" "$S/mail.log.1"
lines 20100 20200 >"$S/mail.log"
want=$((base + $(counted 20000 20200)))
wait_held "$C" "$want"
ok $? "rotation by renaming: the old file's last lines and the new file's ($(held "$C" all) of $want)"

: >"$S/mail.log"
sleep 0.5
lines 20200 20250 >>"$S/mail.log"
want=$((want + $(counted 20200 20250)))
wait_held "$C" "$want"
ok $? "truncated in place: read again from its start ($(held "$C" all) of $want)"

# rotated while stopped: the rest of PATH.1 first, then the new file
stop
lines 20250 20300 >>"$S/mail.log"
mv "$S/mail.log" "$S/mail.log.1"
lines 20300 20350 >"$S/mail.log"
want=$((want + $(counted 20250 20350)))
start "$C"
wait_held "$C" "$want"
ok $? "rotated while stopped: PATH.1's rest, then the new file ($(held "$C" all) of $want)"
sleep 0.3
stop
is "$(held "$C" all)" "$want" "rotation and truncation: nothing read twice"

# ---------------------------------------------------------------- first start: the age bound
mkconf old "file:$S/old.log" "watch_max_age = 1h"
old=$(date -d '-2 hours' '+%b %e %H:%M:%S')
{
	echo "$old mail cyrus/imap[1]: badlogin: [192.0.2.200] plaintext (old) [SASL(-13): authentication failure: checkpass failed]"
	lines 0 10
} >"$S/old.log"
start "$S/old.conf"
wait_attempts "$S/old.conf" "$(counted 0 10)"
ok $? "first start: the fresh lines are counted"
"$ADMIN" -c "$S/old.conf" show 192.0.2.200 >/dev/null 2>&1
is $? 2 "first start: a line older than watch_max_age is skipped"
stop

# watch_max_age = 0: nothing from before the start, everything after it
# (a syslog time has whole seconds: the start's own second counts)
mkconf zero "file:$S/zero.log" "watch_max_age = 0"
echo "$(date -d '-3 seconds' '+%b %e %H:%M:%S') mail cyrus/imap[1]: badlogin: [192.0.2.210] plaintext (z) [SASL(-13): authentication failure: x]" >"$S/zero.log"
start "$S/zero.conf"
sleep 0.3
for i in 1 2 3; do
	echo "$(stamp) mail cyrus/imap[1]: badlogin: [192.0.2.21$i] plaintext (z) [SASL(-13): authentication failure: x]" >>"$S/zero.log"
	sleep 0.4
done
wait_addr "$S/zero.conf" 192.0.2.213
sleep 0.3
is "$(stat_of "$S/zero.conf" attempts_total)" 3 "watch_max_age = 0: the lines written after the start are counted, the one before is not"
stop

# ---------------------------------------------------------------- hostile lines
mkconf hostile "file:$S/hostile.log"
now=$(stamp)
{
	# a fake address inside the user name: the server's comes first
	echo "$now mail cyrus/imap[1]: badlogin: localhost [203.0.113.5] plaintext (x [192.0.2.66] y) [SASL(-13): authentication failure: checkpass failed]"
	# an overlong line that would name another address
	printf '%s mail cyrus/imap[1]: badlogin: [192.0.2.67] plaintext (%s) [SASL(-13): authentication failure: x]\n' "$now" "$(head -c 9000 /dev/zero | tr '\0' u)"
	# NUL bytes and invalid UTF-8 in the user
	printf '%s mail cyrus/imap[1]: badlogin: [203.0.113.6] plaintext (a\0b\377\303) [SASL(-13): authentication failure: x]\n' "$now"
	# a user imitating the plugin's refusal: still counted
	echo "$now mail cyrus/imap[1]: badlogin: [203.0.113.7] plaintext (x) [SASL(-13): authentication failure: authguard: refused) [SASL(-13): authentication failure: checkpass failed]"
	# garbage, and a line with no newline yet (read once it is whole)
	head -c 3000 /dev/urandom | tr '\n' ' '
	echo
	printf '%s mail cyrus/imap[1]: badlogin: [203.0.113.8] plaintext (late) [SASL(-13): authentication failure: x]' "$now"
} >"$S/hostile.log"
start "$S/hostile.conf"
wait_attempts "$S/hostile.conf" 3
ok $? "hostile lines: the three well-formed failures counted"
echo >>"$S/hostile.log"
wait_attempts "$S/hostile.conf" 4
ok $? "a line is read once its newline is there"
"$ADMIN" -c "$S/hostile.conf" show 192.0.2.66 >/dev/null 2>&1
is $? 2 "a fake [addr] in a user name is never recorded"
"$ADMIN" -c "$S/hostile.conf" show 192.0.2.67 >/dev/null 2>&1
is $? 2 "an overlong line is not recorded"
"$ADMIN" -c "$S/hostile.conf" show 203.0.113.5 >/dev/null 2>&1
is $? 0 "the server's address is recorded"
grep -q 'user="a\\x00b\\xff\\xc3"' "$S/hostile.attempts"
ok $? "a user with NUL and invalid UTF-8 is recorded byte for byte, escaped in the line"
stop
is "$STOP_RC" 0 "the watcher survived the hostile lines and stopped cleanly"

# ---------------------------------------------------------------- SIGHUP
# the rules are read again: an admin's ignore rule takes effect; a config
# with an error is refused and the running one kept
mkconf hup "file:$S/hup.log"
: >"$S/hup.log"
start "$S/hup.conf"
sleep 0.3
lines 0 10 >>"$S/hup.log"
wait_attempts "$S/hup.conf" "$(counted 0 10)"
ok $? "SIGHUP: counting before"
echo 'watch_rule = quiet cyrus/imap ignore badlogin: \S+ \[10\.0\.0\.\d+\] .*' >>"$S/hup.conf"
kill -HUP "$WPID"
sleep 0.5
lines 0 10 >>"$S/hup.log"
echo "$(stamp) mail cyrus/imap[1]: badlogin: [203.0.113.90] plaintext (z) [SASL(-13): authentication failure: x]" >>"$S/hup.log"
# the same ten lines again: only the pop3 failure and the success count,
# plus the new address
want=$(($(counted 0 10) + 3))
wait_addr "$S/hup.conf" 203.0.113.90
is "$(stat_of "$S/hup.conf" attempts_total)" "$want" "SIGHUP: the new ignore rule applies (the last line is in, and the count is exact)"
echo 'watch_rule = broken x failure (' >>"$S/hup.conf"
kill -HUP "$WPID"
sleep 0.5
echo "$(stamp) mail cyrus/imap[1]: badlogin: [203.0.113.91] plaintext (z) [SASL(-13): authentication failure: x]" >>"$S/hup.log"
wait_attempts "$S/hup.conf" $((want + 1))
ok $? "SIGHUP with a broken rule: still running on the rules read before"
stop

# ---------------------------------------------------------------- stdin
mkconf stdin stdin
lines 0 100 | "$WATCH" -c "$S/stdin.conf" 2>>"$S/watch.err"
is $? 0 "stdin: exit 0 at the end of input"
is "$(stat_of "$S/stdin.conf" attempts_total)" "$(counted 0 100)" "stdin: every counting line recorded"

# ---------------------------------------------------------------- the journal
# A test machine runs no journald: systemd-journal-remote writes journal
# files from export-format entries, and the watcher reads that directory
# (AG_TEST_JOURNAL_DIR, a test hook) as it reads the system's journal.
JR=${AG_TEST_JOURNAL_REMOTE:-/lib/systemd/systemd-journal-remote}
if [ -x "$JR" ]; then
	mkdir -p "$S/journal"
	BOOT=$(tr -d - </proc/sys/kernel/random/boot_id)
	MONO=1000
	jentry() { # jentry UNIT IDENT MESSAGE [USEC]
		MONO=$((MONO + 1))
		printf '__REALTIME_TIMESTAMP=%s\n__MONOTONIC_TIMESTAMP=%s\n_BOOT_ID=%s\n_HOSTNAME=mail\n_SYSTEMD_UNIT=%s\nSYSLOG_IDENTIFIER=%s\nMESSAGE=%s\n\n' \
			"${4:-$(date +%s%6N)}" "$MONO" "$BOOT" "$1" "$2" "$3"
	}
	jwrite() { "$JR" --output="$S/journal/remote.journal" "$1" 2>>"$S/jr.err"; }
	jbad() { echo "badlogin: localhost [$1] plaintext ($2) [SASL(-13): authentication failure: checkpass failed]"; }
	{
		jentry cyrus-imapd.service cyrus/imap "$(jbad 192.0.2.101 carol)" $(($(date +%s%6N) - 7200000000))
		for i in 1 2 3; do jentry cyrus-imapd.service cyrus/imap "$(jbad 198.51.100.$i carol)"; done
		jentry cyrus-imapd.service cyrus/pop3 "login: localhost [198.51.100.9] carol plaintext User logged in"
		# the same words under the ident from another unit: not Cyrus
		jentry evil.service cyrus/imap "$(jbad 192.0.2.102 carol)"
	} >"$S/j1.export"
	jwrite "$S/j1.export"
	mkconf journal "journal:cyrus-imapd.service" "watch_max_age = 1h"
	export AG_TEST_JOURNAL_DIR=$S/journal
	start "$S/journal.conf"
	wait_attempts "$S/journal.conf" 4
	ok $? "journal by unit: 3 failures and a POP3 success recorded ($(stat_of "$S/journal.conf" attempts_total) of 4)"
	"$ADMIN" -c "$S/journal.conf" show 192.0.2.102 >/dev/null 2>&1
	r1=$?
	"$ADMIN" -c "$S/journal.conf" show 192.0.2.101 >/dev/null 2>&1
	r2=$?
	ok $([ $r1 = 2 ] && [ $r2 = 2 ] && echo 0 || echo 1) "journal: another unit's line and a line older than watch_max_age are not counted"
	# SIGKILL, more entries while it is down, restart: from the cursor
	kill -KILL "$WPID"
	wait "$WPID" 2>/dev/null
	{ for i in 4 5; do jentry cyrus-imapd.service cyrus/imap "$(jbad 198.51.100.$i carol)"; done; } >"$S/j2.export"
	jwrite "$S/j2.export"
	start "$S/journal.conf"
	wait_attempts "$S/journal.conf" 6
	ok $? "journal: after SIGKILL, on from the kept cursor ($(stat_of "$S/journal.conf" attempts_total) of 6)"
	{ jentry cyrus-imapd.service cyrus/imap "$(jbad 198.51.100.6 carol)"; } >"$S/j3.export"
	jwrite "$S/j3.export"
	wait_attempts "$S/journal.conf" 7
	ok $? "journal: a new entry is followed ($(stat_of "$S/journal.conf" attempts_total) of 7)"
	stop
	unset AG_TEST_JOURNAL_DIR
else
	for i in 1 2 3 4; do
		TESTNO=$((TESTNO + 1))
		echo "ok $TESTNO # SKIP journal: $JR not installed (Debian: systemd-journal-remote)"
	done
fi

# ---------------------------------------------------------------- bad config
mkconf bad "file:$S/x.log" "watch_rule = broken imapd failure (?<user>a"
out=$("$WATCH" -c "$S/bad.conf" -t 2>&1)
rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "rule broken: message pattern"
ok $? "-t: a rule that does not compile refuses the start (exit $rc)"

out=$("$WATCH" -c "$S/kill.conf" -t 2>&1)
rc=$?
[ $rc = 0 ] && echo "$out" | grep -q "6 rules, 1 sources"
ok $? "-t: a good config, its rules and sources and the store are usable (exit $rc)"
mkconf nosrc "file:/x"
grep -v '^watch_source' "$S/nosrc.conf" >"$S/nosrc2.conf"
out=$("$WATCH" -c "$S/nosrc2.conf" 2>&1)
rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "no watch_source"
ok $? "no watch_source: the start is refused (exit $rc)"

if grep -E 'AddressSanitizer|runtime error|LeakSanitizer' "$S/watch.err" >/dev/null; then
	grep -E -A5 'AddressSanitizer|runtime error|LeakSanitizer' "$S/watch.err" | sed 's/^/# /'
	FAILED=1
fi
[ "$TESTNO" = "$NTESTS" ] || { echo "# ran $TESTNO checks, planned $NTESTS"; FAILED=1; }
exit $FAILED
