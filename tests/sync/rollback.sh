#!/bin/bash
# tests/sync/rollback.sh - an OS crash rolls a host's store back (issue 13):
# the store runs with MDB_NOSYNC, so after a power cut LMDB comes back at
# its last flush, records and outbox together, while the Redis stream
# keeps what authguard-sync pushed after it. The rollback is made by hand:
# h1's store files (data.mdb, counters.ag) copied aside, events recorded
# and pushed, the copy put back. A real redis-server on a random loopback
# port, three simulated hosts (h3 starts only at the end and reads the
# whole stream), events recorded with authguard-admin record as a front
# end does.
#
# Checked: 1. the outbox empty at the copy; K failures pushed after it;
# the copy back; J failures on another address: h2 gets all J exactly
# once (before issue 13's fix they were numbered as the K and never
# pushed), the K are not counted twice, h1 says what happened and takes
# the K it lost back from the stream.
# 2. the outbox holding pushed, not yet deleted events at the copy (the
# daemon stopped with SIGSTOP for it, as a power cut stops it, and later
# killed with -9): those are found in the stream and not sent again under
# the new epoch (they would count twice), the new ones arrive. A late host
# reads the old epochs and the new ones and counts each once; no peer
# shows missed sequence numbers; a plain restart finds no rollback.
# 3. the same behind 10000 entries of another host (the look back at
# start reads the stream a page at a time).
# 4. the upgrade: modules loaded before it put their events into the old
# place (the meta database's outbox, its own epoch and numbers; written
# here by tests/sync/oldbox as that version did), new ones into the
# outbox: status counts both, the daemon moves the old place's into the
# outbox, and each event reaches h2 and h3 exactly once, also those an
# old writer adds while the new daemon runs.
# 5. (only with AG_TEST_OLD_SYNC and AG_TEST_OLD_ADMIN: the previous
# version's authguard-sync and authguard-admin) the previous daemon
# pushes old modules' events and is killed before it deletes them; the
# new daemon finds them in the stream and sends none twice. h1's store
# is then made by the previous authguard-admin (layout 1: the previous
# version refuses the layout 2 of a store the new code makes), so 1.-4.
# run the new code on a store as the previous version left it; at the end
# upgrade-store, refused while the daemon has the store open, rewrites it
# with the counts kept, and the previous authguard-admin refuses it by name.
#
# Output is TAP; every wait is bounded (WAIT_S), the whole run by
# AG_TEST_TIMEOUT (60 s). SKIP when redis-server, python3 or the binaries
# are missing, or authguard-sync is built with a sanitizer.
# Environment: AG_TEST_SYNC, AG_TEST_ADMIN,
# AG_TEST_OLDBOX (make check sets them), AG_TEST_REDIS (redis-server),
# AG_TEST_OLD_SYNC, AG_TEST_OLD_ADMIN (5. above), AG_TEST_KEEP=1 keeps the
# scratch directory.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../tap.sh"
. "$HERE/lib.sh"
WAIT_S=15
TIMEOUT=${AG_TEST_TIMEOUT:-60}
NTESTS=42

sync_test_needs
OLDBOX=${AG_TEST_OLDBOX:-}
[ -n "$OLDBOX" ] && [ -x "$OLDBOX" ] || tap_skip_all "tests/sync/oldbox not built (run through make check)"
OLD_SYNC=${AG_TEST_OLD_SYNC:-}
OLD_ADMIN=${AG_TEST_OLD_ADMIN:-}

S=$(mktemp -d /tmp/ag-rollback.XXXXXX) || exit 1
WDPID=
RPID=
SPIDS=("" "" "" "")
cleanup() {
	local rc=$? p
	trap - EXIT
	for p in "${SPIDS[1]}" "${SPIDS[2]}" "${SPIDS[3]}"; do
		[ -z "$p" ] || { kill -CONT "$p"; kill -TERM "$p"; } 2>/dev/null
	done
	[ -z "$RPID" ] || kill -KILL "$RPID" 2>/dev/null
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	{ wait; } 2>/dev/null
	scratch_end "$rc" "hN/sync.log, redis.log"
}
tap_start
echo "1..$NTESTS"

# ---------------------------------------------------------------- Redis
PORT=
redis_start --save '' --appendonly no

# ---------------------------------------------------------------- hosts
head -c 48 /dev/urandom | base64 >"$S/cluster.key"
chmod 600 "$S/cluster.key"
for i in 1 2 3; do counting_host $i "$PORT"; done
start_sync() { # start_sync HOST [ENV...]
	local h=$1
	shift
	env "$@" "$SYNC" -c "$S/h$h/authguard.conf" >>"$S/h$h/sync.log" 2>&1 &
	SPIDS[$h]=$!
	wait_for connected "$h" || bail "authguard-sync on h$h did not connect (h$h/sync.log)"
}
stop_sync() { # stop_sync HOST [SIGNAL]
	kill "-${2:-TERM}" "${SPIDS[$1]}"
	wait "${SPIDS[$1]}" 2>/dev/null
	SPIDS[$1]=
}
save_store() { cp "$S/h1/db/data.mdb" "$S/h1/db/counters.ag" "$S/saved/"; }
# the "power cut": h1's store back at the copy (lock.mdb is made anew by
# the first process to open the store, as after a reboot)
restore_store() { cp "$S/saved/data.mdb" "$S/saved/counters.ag" "$S/h1/db/"; }
# failures "in all" of the address itself (lib.sh's fails_of shows its
# network's when the address is not tracked)
addr_fails() {
	admin "$1" show "$2" 2>/dev/null | sed -n '/^address/,/^network/s/.*(\([0-9]*\) in all).*/\1/p' |
		head -1 | grep . || echo 0
}
fails() { # fails HOST ADDR...: the counts, space separated
	local h=$1 a out=
	shift
	for a in "$@"; do out="$out $(addr_fails "$h" "$a")"; done
	echo "${out# }"
}
missed_of() { # missed_of HOST PEER: sequence numbers of PEER never seen
	admin "$1" status 2>/dev/null | sed -n "s/^ *peer $2: .* \([0-9]*\) missed$/\1/p"
}
rollbacks() { grep -c 'the store was rolled back' "$S/h1/sync.log"; }
mkdir -p "$S/saved"
OLD=
if [ -n "$OLD_SYNC" ] && [ -x "$OLD_SYNC" ] && [ -n "$OLD_ADMIN" ] && [ -x "$OLD_ADMIN" ]; then
	OLD=1 # h1's store made by the previous version (5. above), no event in it
	echo "db_dir = $S/h1/db" >"$S/make.conf"
	{ "$OLD_ADMIN" -c "$S/make.conf" allow add 192.0.2.255 &&
		"$OLD_ADMIN" -c "$S/make.conf" allow del 192.0.2.255; } >/dev/null ||
		bail "the previous authguard-admin did not make h1's store"
fi
start_sync 1
start_sync 2

A0=192.0.2.80
record_fail 1 w1 $A0
record_fail 1 w2 $A0
wait_for eval '[ "$(addr_fails 2 $A0)" = 2 ] && [ "$(outbox_of 1)" = 0 ]'
ok $? "before: h1's failures reach h2, h1's outbox drains"

# ---------------------------------------------------- 1. the outbox empty at the copy
stop_sync 1
save_store
start_sync 1
A=192.0.2.81
for n in 1 2 3 4 5; do record_fail 1 "a$n" $A; done
wait_for eval '[ "$(addr_fails 2 $A)" = 5 ]'
ok $? "1: 5 failures on h1 after the copy reach h2"
stop_sync 1
restore_store
ok "$(admin 1 show $A | grep -q 'not tracked'; echo $?)" \
	"1: h1's store rolled back to the copy (the 5 are gone from it)"
B=198.51.100.81
for n in 1 2 3; do record_fail 1 "b$n" $B; done
start_sync 1
ok "$(wait_for eval '[ "$(addr_fails 2 $B)" = 3 ]'; echo $?)" \
	"1: the 3 failures recorded after the rollback reach h2 (numbered as 3 of the 5 in the stream)"
wait_for eval '[ "$(outbox_of 1)" = 0 ]'
sleep 1 # anything pushed or counted twice would show by now
is "$(fails 2 $A0 $A $B)" "2 5 3" "1: on h2 each counts once (the 5 not again)"
is "$(fails 1 $A0 $A $B)" "2 5 3" "1: h1 took the 5 the rollback lost back from the stream"
ok "$(grep -q ': 5 events of this host that the rollback took from the store were taken back' \
	"$S/h1/sync.log"; echo $?)" "1: ... and says so"
is "$(rollbacks)" 1 "1: h1 logs the rollback once"
ok "$(grep -q 'rolled back (an OS crash?).* 3 events waiting, from #3 on, and all new ones are sent under a new epoch' \
	"$S/h1/sync.log"; echo $?)" "1: ... saying how many go under a new epoch, from which number on"

# ---------------------------------------------------- 2. pushed, not deleted at the copy
# h1's daemon holds what it pushed (AUTHGUARD_SYNC_DRAIN_MS): 4 failures
# pushed and still in its outbox when the copy is made
stop_sync 1
start_sync 1 AUTHGUARD_SYNC_DRAIN_MS=600000
C=192.0.2.82
for n in 1 2 3 4; do record_fail 1 "c$n" $C; done
wait_for eval '[ "$(addr_fails 2 $C)" = 4 ]'
ok $? "2: 4 failures on h1 reach h2"
is "$(outbox_of 1)" 4 "2: ... and are still in h1's outbox (pushed, not deleted)"
kill -STOP "${SPIDS[1]}"
save_store
kill -CONT "${SPIDS[1]}"
for n in 5 6 7; do record_fail 1 "c$n" $C; done
wait_for eval '[ "$(addr_fails 2 $C)" = 7 ]'
ok $? "2: 3 more after the copy reach h2"
stop_sync 1 KILL
restore_store
D=198.51.100.82
for n in 1 2; do record_fail 1 "d$n" $D; done
start_sync 1
wait_for eval '[ "$(outbox_of 1)" = 0 ] && [ "$(addr_fails 2 $D)" = 2 ]'
ok $? "2: after the rollback h1's outbox drains and h2 gets the 2 new failures"
sleep 1
is "$(fails 2 $C $D)" "7 2" "2: the 4 pushed before the copy are not sent again under the new epoch"
is "$(fails 1 $C $D)" "7 2" "2: h1 holds the 4 and took the 3 lost ones back"
ok "$(grep 'rolled back' "$S/h1/sync.log" | tail -1 | grep -q ', 4 of the outbox.s among them (not sent again); 2 events waiting'; echo $?)" \
	"2: h1's log says 4 were in the stream, 2 go under the new epoch"

# ---------------------------------------------------- a late reader, a plain restart
start_sync 3
wait_for eval '[ "$(fails 3 $A0 $A $B $C $D)" = "2 5 3 7 2" ]'
ok $? "h3, started last, reads three epochs of h1 and counts each event once"
stop_sync 1
start_sync 1
E=192.0.2.83
record_fail 1 e1 $E
ok "$(wait_for eval '[ "$(addr_fails 2 $E)" = 1 ] && [ "$(addr_fails 3 $E)" = 1 ]'; echo $?)" \
	"a plain restart: the next failure arrives everywhere"
is "$(rollbacks)" 2 "a plain restart finds no rollback"
sleep 1 # the status is written once a second
is "$(missed_of 2 h1) $(missed_of 3 h1)" "0 0" "no peer counts missed sequence numbers of h1"

# ---------------------------------------------------- 3. behind many entries of other hosts
# while h1 is down, 10000 entries of another host come first in the
# stream (more than one page of the look back at start)
stop_sync 1
save_store
start_sync 1
F=192.0.2.84
for n in 1 2 3; do record_fail 1 "f$n" $F; done
wait_for eval '[ "$(addr_fails 2 $F)" = 3 ] && [ "$(outbox_of 1)" = 0 ]'
ok $? "3: 3 failures on h1 after the copy reach h2"
stop_sync 1
"$REDIS_CLI" -h 127.0.0.1 -p "$PORT" eval "for i = 1, 10000 do redis.call('XADD', KEYS[1], '*',
	'h', 'filler', 'o', '12345678', 'e', 'x', 'm', 'y') end" 1 authguard >/dev/null
restore_store
G=198.51.100.84
for n in 1 2; do record_fail 1 "g$n" $G; done
start_sync 1
ok "$(wait_for eval '[ "$(addr_fails 2 $G)" = 2 ]'; echo $?)" \
	"3: behind 10000 other entries the rollback is found: the 2 new failures reach h2"
wait_for eval '[ "$(outbox_of 1)" = 0 ]'
sleep 1
is "$(fails 2 $F $G) / $(fails 1 $F $G) / $(rollbacks)" "3 2 / 3 2 / 3" \
	"3: counted once on h2, the 3 taken back on h1, the rollback logged"

# ---------------------------------------------------- 4. the upgrade: the old place
stop_sync 1
H=192.0.2.86
I=198.51.100.86
"$OLDBOX" "$S/h1/db" o1 $H 3 >/dev/null
record_fail 1 n1 $I
"$OLDBOX" "$S/h1/db" o2 $H 2 >/dev/null
record_fail 1 n2 $I
is "$(outbox_of 1)" 7 "4: 7 events wait on h1: 5 of old modules, 2 of new ones"
ok "$(admin 1 status | grep -q '^ *5 of them in the old place'; echo $?)" \
	"4: status says 5 are in the old place"
start_sync 1
wait_for eval '[ "$(fails 2 $H $I)" = "5 2" ] && [ "$(outbox_of 1)" = 0 ]'
ok $? "4: the old place's 5 and the outbox's 2 reach h2, h1's outbox drains"
"$OLDBOX" "$S/h1/db" o3 $H 2 >/dev/null
wait_for eval '[ "$(fails 2 $H)" = 7 ] && [ "$(fails 3 $H)" = 7 ] && [ "$(outbox_of 1)" = 0 ]'
ok $? "4: 2 more an old writer puts there while the daemon runs reach h2 and h3"
sleep 1
is "$(fails 2 $H $I) / $(fails 3 $H $I)" "7 2 / 7 2" "4: each counted once on h2 and on h3"
ok "$(admin 1 status | grep -q 'in the old place' && echo 1 || echo 0)" \
	"4: status shows nothing left in the old place"
ok "$(grep -q 'events of modules loaded before the upgrade' "$S/h1/sync.log"; echo $?)" \
	"4: h1 says it moves the old place's events"
is "$(missed_of 2 h1) $(missed_of 3 h1) $(rollbacks)" "0 0 3" "4: no peer counts missed numbers, no rollback seen"

# ---------------------------------------------------- 5. the previous daemon killed
if [ -n "$OLD" ]; then
	stop_sync 1
	J=192.0.2.87
	K=198.51.100.87
	old_admin() { "$OLD_ADMIN" -c "$S/h1/authguard.conf" "$@"; }
	old_fail() { old_admin record --service imap --user "$1" --rhost "$2" --result failure >/dev/null; }
	# the previous daemon, holding what it pushed (never deleted: killed)
	AUTHGUARD_SYNC_DRAIN_MS=600000 "$OLD_SYNC" -c "$S/h1/authguard.conf" >>"$S/h1/sync.log" 2>&1 &
	SPIDS[1]=$!
	wait_for eval 'old_admin status 2>/dev/null | grep -q "^sync: *connected"' ||
		bail "the previous authguard-sync on h1 did not connect (h1/sync.log)"
	for n in 1 2 3 4; do old_fail "j$n" $J; done
	wait_for eval '[ "$(fails 2 $J)" = 4 ]'
	ok $? "5: the previous daemon pushes the previous module's 4 failures"
	stop_sync 1 KILL
	for n in 5 6; do old_fail "j$n" $J; done
	record_fail 1 k1 $K
	is "$(outbox_of 1)" 7 "5: 7 wait: 4 pushed, 2 not, in the old place; 1 in the outbox"
	start_sync 1
	wait_for eval '[ "$(fails 2 $K)" = 1 ] && [ "$(outbox_of 1)" = 0 ]'
	sleep 1 # anything sent twice would show by now
	is "$(fails 2 $J $K) / $(fails 3 $J $K)" "6 1 / 6 1" \
		"5: the 4 pushed by the previous daemon are not sent again, the rest arrive once"
	ok "$(grep -q '4 events of the old place.s .* were pushed by an older daemon' "$S/h1/sync.log"; echo $?)" \
		"5: h1 says it found the 4 in the stream"
	is "$(fails 1 $J)" 6 "5: the previous module recorded on the new code's store"
	is "$(admin 1 status | sed -n 's/^schema: *\([0-9]*\).*/\1/p')" 1 \
		"5: h1's store, made by the previous version, is still in layout 1"
	out=$(admin 1 upgrade-store 2>&1)
	ok "$([ $? = 3 ] && echo "$out" | grep -q "^  pid ${SPIDS[1]} ("; echo $?)" \
		"5: upgrade-store refuses while authguard-sync has the store open, naming it" "$out"
	stop_sync 1
	out=$(admin 1 upgrade-store 2>&1)
	ok $? "5: upgrade-store rewrites h1's store once no process has it open" "$out"
	is "$(fails 1 $J $K) $(admin 1 status | sed -n 's/^schema: *\([0-9]*\).*/\1/p')" "6 1 2" \
		"5: the counts are kept, the store is in layout 2"
	out=$(old_admin status 2>&1)
	ok "$([ $? = 3 ] && echo "$out" | grep -q 'newer version of authguard'; echo $?)" \
		"5: the previous authguard-admin refuses the upgraded store by name" "$out"
	start_sync 1
else
	for n in 1 2 3 4 5 6 7 8 9 10; do
		skip "5: the previous daemon killed ($n)" "AG_TEST_OLD_SYNC and AG_TEST_OLD_ADMIN not set"
	done
fi

stopped=0
for i in 1 2 3; do
	kill -TERM "${SPIDS[$i]}"
	wait "${SPIDS[$i]}" || stopped=1
	SPIDS[$i]=
done
ok $stopped "SIGTERM: every daemon stops cleanly (status 0)"
exit 0
