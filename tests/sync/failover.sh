#!/bin/bash
# tests/sync/failover.sh - the fleet on a highly available Redis (issue 13
# item 5): a real primary, one replica (--replicaof) and a real Sentinel
# (redis-server --sentinel; quorum 1, down-after 1 s) on random loopback
# ports, all with a password; three simulated hosts (three stores, three
# authguard-sync with sync_sentinels and sync_wait_replicas = 1), events
# recorded with authguard-admin record as a front end does.
#
# Checked: both daemons find the primary through the sentinel; a healthy
# replica acknowledges (WAIT) and the outbox drains; with the replica
# stopped (SIGSTOP, its link cut) and host 2 not reading either, host 1's failures
# stay in its outbox (fewer acknowledgements than asked); the primary is
# killed (-9) in the middle of the brute force, Sentinel promotes the
# replica (which never had those failures), both daemons follow (a fault
# line naming the old and the new primary) and every failure arrives on
# host 2 exactly once (counts equal); host 3, which read on from the old
# primary what the replica never got, reads on from the new primary's last
# entry and counts each once too; a ban on host 2 after the failover
# reaches host 1; the old primary back as a replica drains the outboxes.
# SIGHUP: a new sentinel list (a second sentinel, without a password) is
# followed without a restart; a config with a bad value or a key file
# others can read is refused and the running one kept; a wrong primary
# name is loud (fault line, status disconnected) and a good one after it
# reconnects. Start checks: a missing master name, both sync_redis and
# sync_sentinels. Host 3 logs in as an ACL user that has only the commands
# authguard-sync(8) lists, on the servers and on the sentinel.
#
# Output is TAP; every wait is bounded (WAIT_S), the whole run by
# AG_TEST_TIMEOUT (60 s). SKIP when redis-server, redis-cli, python3 or
# the binaries are missing, or authguard-sync is built with a sanitizer.
# Environment: AG_TEST_SYNC, AG_TEST_ADMIN (make check sets them),
# AG_TEST_REDIS (redis-server), AG_TEST_KEEP=1 keeps the scratch directory.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../tap.sh"
. "$HERE/lib.sh"
WAIT_S=20
TIMEOUT=${AG_TEST_TIMEOUT:-60}
NTESTS=35

sync_test_needs

S=$(mktemp -d /tmp/ag-failover.XXXXXX) || exit 1
WDPID=
P1PID= P2PID= S1PID= S2PID=
SPIDS=("" "" "" "")
cleanup() {
	local rc=$? p
	trap - EXIT
	for p in "${SPIDS[1]}" "${SPIDS[2]}" "${SPIDS[3]}"; do
		[ -z "$p" ] || { kill -CONT "$p"; kill -TERM "$p"; } 2>/dev/null
	done
	for p in "$S1PID" "$S2PID" "$P1PID" "$P2PID"; do
		[ -z "$p" ] || { kill -CONT "$p"; kill -KILL "$p"; } 2>/dev/null
	done
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	{ wait; } 2>/dev/null
	scratch_end "$rc" "hN/sync.log, redis-*.log, sentinel-*.log"
}
tap_start
echo "1..$NTESTS"

# ---------------------------------------------------------------- Redis
PW=failover-redis-secret
echo "$PW" >"$S/redis.pw"
chmod 600 "$S/redis.pw"
UPW=failover-h3-secret
echo "$UPW" >"$S/agsync.pw"
chmod 600 "$S/agsync.pw"
ACL_CMDS="+xadd +xread +xrevrange +xinfo +set +get +sadd +smembers +wait +role"
P1=$(free_port) P2=$(free_port) SP1=$(free_port) SP2=$(free_port)
red() { # red PORT ARGS...: redis-cli with the password
	local p=$1
	shift
	"$REDIS_CLI" -h 127.0.0.1 -p "$p" -a "$PW" --no-auth-warning "$@" 2>/dev/null
}
start_redis() { # start_redis PORT [ARGS...]: prints nothing, sets LASTPID
	local p=$1 i
	shift
	mkdir -p "$S/redis-$p"
	"$REDIS" --port "$p" --bind 127.0.0.1 --dir "$S/redis-$p" --save '' --appendonly no \
		--requirepass "$PW" --masterauth "$PW" --repl-diskless-sync-delay 0 \
		--daemonize no "$@" >>"$S/redis-$p.log" 2>&1 &
	LASTPID=$!
	for i in $(seq 100); do
		if red "$p" ping | grep -q PONG; then
			# h3's user: the commands authguard-sync(8) lists for
			# Sentinel and WAIT, nothing else (ACLs do not replicate:
			# on each server)
			red "$p" acl setuser agsync on ">$UPW" '~authguard*' $ACL_CMDS |
				grep -q OK || bail "ACL SETUSER on $p failed"
			return 0
		fi
		sleep 0.05
	done
	bail "redis-server on $p did not start (redis-$p.log)"
}
start_sentinel() { # start_sentinel PORT PRIMARY_PORT [requirepass]: sets LASTPID
	local p=$1 m=$2 i
	{
		echo "port $p"
		echo "bind 127.0.0.1"
		echo "dir $S"
		echo "sentinel monitor ag 127.0.0.1 $m 1"
		echo "sentinel auth-pass ag $PW"
		echo "sentinel down-after-milliseconds ag 1000"
		echo "sentinel failover-timeout ag 3000"
		[ "${3:-}" != requirepass ] || {
			echo "requirepass $PW"
			# a sentinel with ACL users: h3's may only ask for the primary
			echo "user agsync on >$UPW +sentinel|get-master-addr-by-name"
		}
	} >"$S/sentinel-$p.conf"
	"$REDIS" "$S/sentinel-$p.conf" --sentinel >>"$S/sentinel-$p.log" 2>&1 &
	LASTPID=$!
	for i in $(seq 100); do
		"$REDIS_CLI" -h 127.0.0.1 -p "$p" -a "$PW" --no-auth-warning ping 2>/dev/null |
			grep -q PONG && return 0
		sleep 0.05
	done
	bail "sentinel on $p did not start (sentinel-$p.log)"
}
sentinel() { # sentinel PORT ARGS...
	local p=$1
	shift
	"$REDIS_CLI" -h 127.0.0.1 -p "$p" -a "$PW" --no-auth-warning sentinel "$@" 2>/dev/null
}
start_redis "$P1"
P1PID=$LASTPID
start_redis "$P2" --replicaof 127.0.0.1 "$P1"
P2PID=$LASTPID
replica_up() { red "$P2" info replication | grep -q '^master_link_status:up'; }
wait_for replica_up || bail "the replica did not sync with the primary (redis-$P2.log)"
start_sentinel "$SP1" "$P1" requirepass
S1PID=$LASTPID
knows_replica() { sentinel "$SP1" replicas ag | grep -qx "$P2"; }
wait_for knows_replica || bail "the sentinel did not find the replica (sentinel-$SP1.log)"

# ---------------------------------------------------------------- hosts
head -c 48 /dev/urandom | base64 >"$S/cluster.key"
chmod 600 "$S/cluster.key"
conf() { # conf HOST [SENTINELS [MASTER]]: the host's config
	counting_conf "$1"
	cat <<EOF
sync_sentinels = ${2:-127.0.0.1:$SP1}
sync_sentinel_master = ${3:-ag}
$(if [ "$1" = 3 ]; then
	printf 'sync_redis_user = agsync\nsync_redis_password_file = %s\n' "$S/agsync.pw"
else
	printf 'sync_redis_password_file = %s\n' "$S/redis.pw"
fi)
sync_wait_replicas = 1
sync_wait_timeout = 1s
EOF
}
for i in 1 2 3; do
	mkdir -p "$S/h$i"
	conf $i >"$S/h$i/authguard.conf"
done
start_sync() {
	"$SYNC" -c "$S/h$1/authguard.conf" >>"$S/h$1/sync.log" 2>&1 &
	SPIDS[$1]=$!
}
start_sync 1
start_sync 2
start_sync 3
for i in 1 2 3; do
	wait_for connected $i || bail "authguard-sync on h$i did not connect (h$i/sync.log)"
done
logged() { grep -qF -- "$2" "$S/h$1/sync.log"; } # logged HOST TEXT
primary_in_status() { admin "$1" status 2>/dev/null | grep -qF "Redis primary 'ag' at 127.0.0.1:$2,"; }
ok "$(logged 1 "primary 'ag' is 127.0.0.1:$P1 (sentinel 127.0.0.1:$SP1)" &&
	logged 2 "primary 'ag' is 127.0.0.1:$P1 (sentinel 127.0.0.1:$SP1)"; echo $?)" \
	"both daemons found the primary through the sentinel (with AUTH)"
ok "$(logged 3 "primary 'ag' is 127.0.0.1:$P1 (sentinel 127.0.0.1:$SP1)"; echo $?)" \
	"h3 too, as an ACL user with only the documented commands (servers and sentinel)"
ok "$(wait_for primary_in_status 1 "$P1"; echo $?)" \
	"authguard-admin status names the primary's address"

# ---------------------------------------------------- 1. a healthy replica acknowledges
A=192.0.2.60
for n in 1 2 3 4 5; do record_fail 1 "u$n" $A; done
wait_for eval '[ "$(fails_of 2 $A)" = 5 ]'
ok $? "before the failover: h1's 5 failures arrive on h2"
wait_for eval '[ "$(outbox_of 1)" = 0 ]'
ok $? "the replica acknowledged (WAIT 1): h1's outbox is empty"
ok "$(! grep -q 'replicas have the last' "$S/h1/sync.log"; echo $?)" \
	"no acknowledgement was missing so far"

# ---------------------------------------------------- 2. the replica stalls, the primary dies
# The replica takes nothing more: stopped, its link cut (else what the
# primary sends waits in its socket buffer and arrives all the same); h2
# reads nothing more from the primary (a host that lags, or is away), in
# the same way. h1's daemon reconnects at once.
kill -STOP "$P2PID"
red "$P1" client kill type replica >/dev/null
kill -STOP "${SPIDS[2]}"
red "$P1" client kill type normal >/dev/null
for n in 6 7 8 9 10 11 12 13 14 15; do record_fail 1 "u$n" $A; done
wait_for logged 1 "0 of sync_wait_replicas=1 replicas have the last"
ok $? "replica stopped: h1 says WAIT got 0 of 1 acknowledgements"
ok "$([ "$(outbox_of 1)" -ge 10 ]; echo $?)" \
	"replica stopped: the 10 unacknowledged failures stay in h1's outbox"
in_primary() { [ "$(red "$P1" xlen authguard)" -ge 15 ]; }
ok "$(wait_for in_primary; echo $?)" "... although the primary has them in its stream"
# h3 reads on: it applies from the primary what the replica never gets
wait_for eval '[ "$(fails_of 3 $A)" = 15 ]' || bail "h3 did not read the 15 failures from the primary"
# h1's daemon held until h3 has looked at the new primary (else what h1
# pushes there may come first, and h3's position is no longer past its end)
kill -STOP "${SPIDS[1]}"
kill -KILL "$P1PID"
{ wait "$P1PID"; } 2>/dev/null
P1PID=
kill -CONT "$P2PID" "${SPIDS[2]}"
for n in 16 17 18 19 20 21 22 23 24 25; do record_fail 1 "u$n" $A; done
promoted() { sentinel "$SP1" get-master-addr-by-name ag | grep -qx "$P2"; }
wait_for promoted
ok $? "Sentinel promoted the replica"
wait_for logged 3 "is past the last entry"
ok $? "h3 read entries the new primary never had: it reads on from that primary's last entry"
kill -CONT "${SPIDS[1]}"
ok "$(wait_for eval '[ "$(fails_of 2 $A)" = 25 ]'; echo $?)" \
	"every failure arrived on h2 (25), the 10 the dead primary took along too"
sleep 1 # anything counted twice would show by now
is "$(fails_of 1 $A) $(fails_of 2 $A)" "25 25" "each exactly once: the counts are equal"
is "$(fails_of 3 $A)" 25 "h3 counted each once too"
ok "$(wait_for logged 1 "primary 'ag' changed from 127.0.0.1:$P1 to 127.0.0.1:$P2"; echo $?)" \
	"h1's fault line names the old and the new primary"
ok "$(wait_for logged 2 "primary 'ag' changed from 127.0.0.1:$P1 to 127.0.0.1:$P2"; echo $?)" \
	"h2's too"
ok "$(wait_for primary_in_status 1 "$P2"; echo $?)" \
	"authguard-admin status on h1 names the primary it follows now (the new one)"
B=198.51.100.60
admin 2 ban $B --for 1h >/dev/null
wait_for refuses 1 $B
ok $? "after the failover: a ban on h2 reaches h1"
# the old primary back, as a replica of the new one: acknowledgements again
start_redis "$P1" --replicaof 127.0.0.1 "$P2"
P1PID=$LASTPID
wait_for eval '[ "$(outbox_of 1)" = 0 ] && [ "$(outbox_of 2)" = 0 ]'
ok $? "the old primary back as a replica: both outboxes drain"

# ---------------------------------------------------- 3. SIGHUP
# a second sentinel (no password: AUTH is sent only when asked for) alone
# in h1's list
start_sentinel "$SP2" "$P2"
S2PID=$LASTPID
conf 1 "127.0.0.1:$SP2" >"$S/h1/authguard.conf"
kill -HUP "${SPIDS[1]}"
wait_for logged 1 "primary 'ag' is 127.0.0.1:$P2 (sentinel 127.0.0.1:$SP2)"
ok $? "SIGHUP: h1 asks the new sentinel list (a sentinel without a password)"
ok "$(logged 1 "read again: host h1, Redis primary 'ag' via sentinels 127.0.0.1:$SP2"; echo $?)" \
	"SIGHUP: h1's log says what it reads now"
C=192.0.2.61
record_fail 1 c1 $C
ok "$(wait_for eval '[ "$(fails_of 2 $C)" = 1 ]'; echo $?)" "SIGHUP: h1's events still reach h2"
# refused reloads: a bad value; a key file others can read
{ conf 1 "127.0.0.1:$SP2"; echo "sync_wait_replicas = 99"; } >"$S/h1/authguard.conf"
kill -HUP "${SPIDS[1]}"
wait_for logged 1 "reload refused"
ok $? "SIGHUP with a bad value: refused, said in the log"
cp "$S/cluster.key" "$S/open.key"
chmod 644 "$S/open.key"
conf 1 "127.0.0.1:$SP2" | sed "s|^sync_key_file = .*|sync_key_file = $S/open.key|" \
	>"$S/h1/authguard.conf"
n=$(grep -c 'reload refused' "$S/h1/sync.log")
kill -HUP "${SPIDS[1]}"
wait_for eval '[ "$(grep -c "reload refused" "$S/h1/sync.log")" -gt '"$n"' ]'
ok "$([ $? = 0 ] && logged 1 'others cannot read'; echo $?)" \
	"SIGHUP with a key file others can read: refused, said why"
record_fail 1 c2 $C
ok "$(kill -0 "${SPIDS[1]}" && wait_for eval '[ "$(fails_of 2 $C)" = 2 ]'; echo $?)" \
	"after the refused reloads h1 runs on with the config it had"
# a wrong primary name is loud; the right one after it reconnects
conf 2 "127.0.0.1:$SP1" nosuch >"$S/h2/authguard.conf"
kill -HUP "${SPIDS[2]}"
wait_for logged 2 "sentinel 127.0.0.1:$SP1 knows no primary named 'nosuch'"
ok $? "a wrong sync_sentinel_master: a fault line naming it"
disconnected() { admin 2 status 2>/dev/null | grep -q '^sync: *DISCONNECTED'; }
ok "$(wait_for disconnected; echo $?)" "... and authguard-admin status says disconnected"
record_fail 1 c3 $C
conf 2 >"$S/h2/authguard.conf"
kill -HUP "${SPIDS[2]}"
ok "$(wait_for connected 2 && wait_for eval '[ "$(fails_of 2 $C)" = 3 ]'; echo $?)" \
	"the right name again: h2 reconnects and gets what h1 recorded meanwhile"

# ---------------------------------------------------- start checks
conf 1 | grep -v '^sync_sentinel_master' >"$S/nomaster.conf"
"$SYNC" -t -c "$S/nomaster.conf" >"$S/nomaster.out" 2>&1
rc=$?
ok "$([ $rc = 2 ] && grep -q 'sync_sentinel_master must be' "$S/nomaster.out"; echo $?)" \
	"sync_sentinels without sync_sentinel_master: refused (exit 2, says why)"
{ conf 1; echo "sync_redis = 127.0.0.1:$P2"; } >"$S/both.conf"
"$SYNC" -t -c "$S/both.conf" >"$S/both.out" 2>&1
rc=$?
ok "$([ $rc = 2 ] && grep -q 'both set' "$S/both.out"; echo $?)" \
	"sync_redis and sync_sentinels both: refused (exit 2)"
# numbers are read whole: a bad one stops the start, never a silent default
conf 1 >"$S/drain.conf"
bad=
for v in 12x 0 "" -5 " 5" 86400001 99999999999999999999; do
	AUTHGUARD_SYNC_DRAIN_MS=$v "$SYNC" -t -c "$S/drain.conf" >"$S/drain.out" 2>&1
	rc=$?
	[ $rc = 2 ] && grep -q "AUTHGUARD_SYNC_DRAIN_MS=$v: must be a number of milliseconds from 1 to" \
		"$S/drain.out" || bad="$bad [$v]:$rc"
done
ok "$([ -z "$bad" ]; echo $?)" "AUTHGUARD_SYNC_DRAIN_MS not a number from 1 to 86400000: refused (exit 2, says why)" "$bad"
AUTHGUARD_SYNC_DRAIN_MS=600000 "$SYNC" -t -c "$S/drain.conf" >"$S/drain.out" 2>&1
ok $? "AUTHGUARD_SYNC_DRAIN_MS=600000: taken" "$(cat "$S/drain.out")"
bad=
for r in "127.0.0.1:${P2}x" "127.0.0.1: $P2" "127.0.0.1:+$P2" 127.0.0.1:0 127.0.0.1:65536; do
	{ conf 1 | grep -v '^sync_sentinel'; echo "sync_redis = $r"; } >"$S/port.conf"
	"$SYNC" -t -c "$S/port.conf" >"$S/port.out" 2>&1
	rc=$?
	[ $rc = 2 ] && grep -q "sync_redis = $r: must be host:port" "$S/port.out" || bad="$bad [$r]:$rc"
done
ok "$([ -z "$bad" ]; echo $?)" "sync_redis with a port that is not a whole number from 1 to 65535: refused (exit 2)" "$bad"

# ---------------------------------------------------- stop
stopped=0
for i in 1 2 3; do
	kill -TERM "${SPIDS[$i]}"
	wait "${SPIDS[$i]}" || stopped=1
	SPIDS[$i]=
done
ok $stopped "SIGTERM: every daemon stops cleanly (status 0)"
ok "$(! grep -q NOPERM "$S/h3/sync.log"; echo $?)" \
	"h3's ACL user was never refused a command (no NOPERM in its log)"
exit 0
