#!/bin/bash
# tests/sync/refused.sh - Redis refuses some XADDs of a pipelined batch and
# takes the ones after them (as it does when it runs out of memory between
# them): nothing may be lost (issue 13, "nothing lost"). A real
# redis-server on a random loopback port; h1's authguard-sync talks to it
# through tests/sync/refuse_proxy.py, which answers chosen XADDs with
# Redis's OOM error; h2's talks to it directly. Events are recorded with
# authguard-admin record as a front end does.
#
# Checked: 1. eight failures waiting in h1's outbox go in one batch of
# which the 3rd and 4th XADD are refused: all eight arrive on h2, once
# (before the fix the two went again under their old numbers, behind the
# receivers' mark, and h2 skipped them as duplicates: 6); h1 says it sent
# them again under new numbers; h2 counts the two old numbers as missed;
# h1's outbox drains. 2. a refusal with nothing taken after it in its
# batch: the event goes again under its own number, nothing is missed.
# 3. a refusal, a later XADD taken, and the link cut before its reply
# (what Redis took is not known): on the next link h1 looks at the stream
# again, and the refused one goes under a new number: all arrive, once.
#
# Output is TAP; every wait is bounded (WAIT_S), the whole run by
# AG_TEST_TIMEOUT (60 s). SKIP when redis-server, python3 or the binaries
# are missing, or authguard-sync is built with a sanitizer.
# Environment: AG_TEST_SYNC, AG_TEST_ADMIN (make check sets them),
# AG_TEST_REDIS (redis-server), AG_TEST_KEEP=1 keeps the scratch directory.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../tap.sh"
. "$HERE/lib.sh"
WAIT_S=15
TIMEOUT=${AG_TEST_TIMEOUT:-60}
NTESTS=16

sync_test_needs

S=$(mktemp -d /tmp/ag-refused.XXXXXX) || exit 1
WDPID=
RPID=
PXPID=
SPIDS=("" "" "")
cleanup() {
	local rc=$? p
	trap - EXIT
	for p in "${SPIDS[1]}" "${SPIDS[2]}"; do
		[ -z "$p" ] || kill -TERM "$p" 2>/dev/null
	done
	[ -z "$PXPID" ] || kill -TERM "$PXPID" 2>/dev/null
	[ -z "$RPID" ] || kill -KILL "$RPID" 2>/dev/null
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	{ wait; } 2>/dev/null
	scratch_end "$rc" "hN/sync.log, redis.log, proxy.log"
}
tap_start
echo "1..$NTESTS"

# ---------------------------------------------------------------- Redis, the proxy
PORT=
redis_start --save '' --appendonly no
# XADDs through the proxy, counted from 1: the 3rd and 4th (phase 1), the
# 13th (phase 2) and the 16th (phase 3) are refused; at the 18th the link
# is cut (phase 3)
"$PYTHON" "$HERE/refuse_proxy.py" 0 "$PORT" 3,4,13,16 "$S/proxy.port" 18 >>"$S/proxy.log" 2>&1 &
PXPID=$!
wait_for test -s "$S/proxy.port" || bail "refuse_proxy.py did not start (proxy.log)"
PPORT=$(cat "$S/proxy.port")

# ---------------------------------------------------------------- hosts
head -c 48 /dev/urandom | base64 >"$S/cluster.key"
chmod 600 "$S/cluster.key"
counting_host 1 "$PPORT" # through the proxy
counting_host 2 "$PORT"
start_sync() { # start_sync HOST
	"$SYNC" -c "$S/h$1/authguard.conf" >>"$S/h$1/sync.log" 2>&1 &
	SPIDS[$1]=$!
	wait_for connected "$1" || bail "authguard-sync on h$1 did not connect (h$1/sync.log)"
}
missed_of() { # missed_of HOST PEER: sequence numbers of PEER never seen
	admin "$1" status 2>/dev/null | sed -n "s/^ *peer $2: .* \([0-9]*\) missed$/\1/p"
}
start_sync 2
"$SYNC" -c "$S/h2/authguard.conf" >"$S/second.log" 2>&1
is "$?" 2 "a second authguard-sync on h2's store does not start"
ok "$(grep -q 'another authguard-sync runs on the store' "$S/second.log"; echo $?)" "... and says why"

# ---------------------------------------------------- 1. refused, later ones taken
# eight failures wait in h1's outbox before its daemon starts: one batch
A=192.0.2.90
for n in 1 2 3 4 5 6 7 8; do record_fail 1 "u$n" $A; done
is "$(outbox_of 1)" 8 "1: eight failures wait in h1's outbox"
start_sync 1
ok "$(wait_for eval '[ "$(fails_of 2 $A)" = 8 ]'; echo $?)" \
	"1: all eight reach h2 although Redis refused the 3rd and 4th of their batch" \
	"h2 has $(fails_of 2 $A)"
ok "$(wait_for eval '[ "$(outbox_of 1)" = 0 ]'; echo $?)" "1: h1's outbox drains"
sleep 1 # anything counted twice would show by now
is "$(fails_of 2 $A) $(fails_of 1 $A)" "8 8" "1: each counted once on h2 (and h1)"
ok "$(grep -q 'Redis refused 2 events of a batch and took later ones: they go again under new numbers (9 on)' \
	"$S/h1/sync.log"; echo $?)" "1: h1 says it sent the two again under new numbers"
ok "$(grep -q "fault: Redis 127.0.0.1:$PPORT refuses XADD to authguard: OOM" "$S/h1/sync.log"; echo $?)" \
	"1: ... and the refusal is a fault line"
is "$(missed_of 2 h1)" 2 "1: h2 counts the two old numbers as missed"

# ---------------------------------------------------- 2. refused, nothing after it
# XADDs 9 and 10 were the two again; 11 and 12 go through, 13 is refused
# and is the last of its batch: it goes again under its own number
B=198.51.100.90
for n in 1 2 3; do record_fail 1 "b$n" $B; done
ok "$(wait_for eval '[ "$(fails_of 2 $B)" = 3 ] && [ "$(outbox_of 1)" = 0 ]'; echo $?)" \
	"2: three more failures, the last XADD refused: all three reach h2"
sleep 1
is "$(fails_of 2 $B) $(missed_of 2 h1)" "3 2" "2: each once, nothing more missed"
is "$(grep -c 'go again under new numbers' "$S/h1/sync.log")" 1 \
	"2: no renumbering when nothing after the refusal was taken"

# ---------------------------------------------------- 3. refused, taken, link cut
# XADD 14 was the 13th again; five failures wait in h1's outbox while its
# daemon is stopped: one batch, XADDs 15-19: 16 refused, 17 taken, 18
# taken but its reply never comes (the link is cut), 19 never sent
kill -TERM "${SPIDS[1]}"
wait "${SPIDS[1]}" 2>/dev/null
SPIDS[1]=
C=192.0.2.91
for n in 1 2 3 4 5; do record_fail 1 "c$n" $C; done
start_sync 1
ok "$(wait_for eval '[ "$(fails_of 2 $C)" = 5 ] && [ "$(outbox_of 1)" = 0 ]'; echo $?)" \
	"3: a refusal, a later XADD taken, the link cut: all five reach h2" "h2 has $(fails_of 2 $C)"
sleep 1
is "$(fails_of 2 $C) $(fails_of 1 $C)" "5 5" "3: each counted once"
ok "$(grep -q '1 events of the outbox are missing from the stream between ones it holds' \
	"$S/h1/sync.log"; echo $?)" "3: h1 found the gap when it looked at the stream on the new link"
is "$(missed_of 2 h1)" 3 "3: h2 counts the one old number as missed (3 in all)"

