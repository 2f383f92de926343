#!/bin/bash
# tests/sync/run.sh - the fleet (issue 13): four simulated hosts of one mail
# service, each with its own config and store, its own authguard-sync and
# the real pam_authguard.so driven through real libpam (pam_matrix:
# tests/sync/pamhost), share one real redis-server on a random
# loopback port. Checked: a brute force spread round-robin over the four
# hosts is banned after ip_ban_after failures in all; a ban made on one
# host refuses on another; a botnet against one mailbox locks strangers
# out on every host while the owner, familiar on host 1, logs in on host 3;
# unban and unlock on one host lift them everywhere; a password sprayed
# one user per host is hot on all of them (the fleet's password key); the
# nftables export of a host that never saw an address holds another's
# ban of it; Redis killed (-9) in
# the middle of an attack and restarted: every event arrives and none
# counts twice; a host stopped while the stream was trimmed past its position
# catches up from a peer's snapshot; a forged event (no cluster key) is
# rejected; authguard-sync killed (-9) after pushing events it had not yet
# deleted from its outbox: after the restart none is lost, none is pushed
# or counted twice.
#
# Output is TAP (tests/tap.sh); every wait is bounded (propagation: WAIT_S
# seconds), the whole run by AG_TEST_TIMEOUT (300 s). SKIP when
# redis-server or the binaries are missing, or the module or
# authguard-sync is built with a sanitizer (libpam's process would need
# its runtime first).
# Environment: AG_TEST_SYNC, AG_TEST_PAMHOST, AG_TEST_ADMIN, AG_TEST_MODULE,
# AG_TEST_MATRIX (make check sets them), AG_TEST_REDIS (redis-server),
# AG_TEST_KEEP=1 keeps the scratch directory.
set -u
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../tap.sh"
. "$HERE/lib.sh"
WAIT_S=10
TIMEOUT=${AG_TEST_TIMEOUT:-300}
NTESTS=48

sync_test_needs
PAMHOST=${AG_TEST_PAMHOST:-}
MODULE=${AG_TEST_MODULE:-}
[ -n "$PAMHOST" ] && [ -x "$PAMHOST" ] || tap_skip_all "${PAMHOST:-pamhost} not built (run through make check)"
if [ -r "$MODULE" ] && { readelf -d "$MODULE" 2>/dev/null | grep -qE 'NEEDED.*lib(a|t|ub|m)san' ||
	nm -D --undefined-only "$MODULE" 2>/dev/null | grep -qE ' __(a|t|ub|m)san_'; }; then
	tap_skip_all "$MODULE is built with a sanitizer (the plain build runs this test)"
fi

S=$(mktemp -d /tmp/ag-sync.XXXXXX) || exit 1
WDPID=
PORT=
RPID=
SPIDS=("" "" "" "" "")
cleanup() {
	local rc=$? i
	trap - EXIT
	for i in 1 2 3 4; do
		[ -z "${SPIDS[$i]}" ] || kill -TERM "${SPIDS[$i]}" 2>/dev/null
	done
	[ -z "$RPID" ] || kill -KILL "$RPID" 2>/dev/null
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	{ wait; } 2>/dev/null
	scratch_end "$rc" "hN/sync.log, hN/attempts.log, redis.log"
}
tap_start
echo "1..$NTESTS"

# ---------------------------------------------------------------- Redis
PORT=$(free_port)
# h4 logs in as an ACL user with only the commands authguard-sync(8) lists
# (the test's own redis-cli and the forger use the default user)
printf '%s\n' 'user default on nopass ~* &* +@all' \
	'user agsync on >h4-redis-secret ~authguard* +xadd +xread +xrevrange +xinfo +set +get +sadd +smembers' \
	>"$S/users.acl"
echo h4-redis-secret >"$S/redis.pw"
chmod 600 "$S/redis.pw"
start_redis() {
	# persistent (AOF, fsync each write): killed with -9, it keeps what it acknowledged
	redis_start --appendonly yes --appendfsync always --save '' --aclfile "$S/users.acl"
}
start_redis

# ---------------------------------------------------------------- hosts
head -c 48 /dev/urandom | base64 >"$S/cluster.key"
chmod 600 "$S/cluster.key"
for i in 1 2 3 4; do
	d=$S/h$i
	mkdir -p "$d"
	cat >"$d/authguard.conf" <<EOF
db_dir = $d/db
log = file:$d/attempts.log
tarpit_base = 0
ip_ban_after = 8
user_lock_after = 6
spray_users = 0
net_ban_after = 0
spray_password_users = 4
sync_redis = 127.0.0.1:$PORT
sync_host = h$i
sync_key_file = $S/cluster.key
sync_stream = authguard
sync_snapshot_every = 1s
EOF
	printf 'alice:alice-secret:authguard-demo\nbob:bob-secret:authguard-demo\n' >"$d/passdb"
done
printf 'sync_redis_user = agsync\nsync_redis_password_file = %s\n' "$S/redis.pw" \
	>>"$S/h4/authguard.conf"
start_sync() {
	"$SYNC" -c "$S/h$1/authguard.conf" >>"$S/h$1/sync.log" 2>&1 &
	SPIDS[$1]=$!
}
for i in 1 2 3 4; do start_sync $i; done

# (admin, fails_of, wait_for, refuses, allows, connected, outbox_of: lib.sh)
login() { # login HOST USER PASSWORD RHOST: prints ok | fail CODE
	"$PAMHOST" "$S/h$1" "$2" "$3" "$4"
}
login_pw() { # the same, the module given the password too (PAM_AUTHTOK)
	AG_PAMHOST_AUTHTOK=1 "$PAMHOST" "$S/h$1" "$2" "$3" "$4"
}
# failures "in all" a host's store holds for a user (0 if none)
user_fails_of() {
	admin "$1" show --user "$2" 2>/dev/null | sed -n 's/.*(\([0-9]*\) in all).*/\1/p' | head -1 | grep . || echo 0
}
all_fails() { # all_fails ADDR N: every host holds N failures for ADDR
	local i
	for i in 1 2 3 4; do [ "$(fails_of $i "$1")" = "$2" ] || return 1; done
}
all_user_fails() {
	local i
	for i in 1 2 3 4; do [ "$(user_fails_of $i "$1")" = "$2" ] || return 1; done
}
for i in 1 2 3 4; do
	wait_for connected $i || bail "authguard-sync on h$i did not connect (h$i/sync.log)"
done
ok 0 "all four connected (h4 as Redis ACL user agsync, with only the commands it needs)"
ok "$(admin 3 status | grep -q "^pw key: *the fleet's"; echo $?)" \
	"authguard-admin status: the fleet's password key is in h3's store"

# ---------------------------------------------------- 1. round-robin brute force
A=192.0.2.10
for n in 1 2 3 4 5 6 7 8; do
	h=$(( (n - 1) % 4 + 1 ))
	r=$(login $h "bf$n" wrong "$A")
	[ "$r" != ok ] || bail "a wrong password logged in"
	wait_for all_fails $A $n || break
done
is "$(fails_of 1 $A) $(fails_of 2 $A) $(fails_of 3 $A) $(fails_of 4 $A)" "8 8 8 8" \
	"round robin: every host counted all 8 failures"
ok "$(refuses 1 $A && refuses 2 $A && refuses 3 $A && refuses 4 $A; echo $?)" \
	"round robin: banned on all four hosts after ip_ban_after=8 in all (not 4 x 8)"
r=$(login 2 alice alice-secret $A)
is "$r" "fail 7" "round robin: the banned source is refused on h2 even with the right password"
is "$(grep -c "service=authguard-demo user=\"alice\" rhost=$A .*action=refuse reason=banned" \
	"$S/h2/attempts.log")" 1 \
	"round robin: h2's attempt line says banned"

# ---------------------------------------------------- 2. a ban on h1 refuses on h2
B=198.51.100.77
admin 1 ban $B --for 1h >/dev/null
wait_for refuses 2 $B
ok $? "admin ban on h1 refuses on h2 within ${WAIT_S}s"
is "$(login 2 alice alice-secret $B)" "fail 7" "admin ban: a real login from it on h2 is refused"
ok "$(wait_for refuses 4 $B; echo $?)" "admin ban: h4 refuses it too"

# ---------------------------------------------------- 3. botnet against one mailbox
HOME_IP=203.0.113.5
is "$(login 1 alice alice-secret $HOME_IP)" ok "botnet: alice logs in on h1 from home"
for n in 1 2 3 4 5 6; do
	h=$(( n % 4 + 1 ))
	login $h alice "guess$n" "198.18.0.$n" >/dev/null
	wait_for all_user_fails alice $n || break
done
is "$(user_fails_of 1 alice) $(user_fails_of 2 alice) $(user_fails_of 3 alice) $(user_fails_of 4 alice)" \
	"6 6 6 6" "botnet: every host counted the 6 failures against alice"
is "$(login 4 alice alice-secret 198.18.1.1)" "fail 7" \
	"botnet: a stranger with alice's password is refused on h4 (locked)"
is "$(login 2 alice alice-secret 198.18.1.2)" "fail 7" "botnet: ... and on h2"
is "$(login 3 alice alice-secret $HOME_IP)" ok \
	"botnet: alice, familiar on h1, logs in on h3 from home"

# ---------------------------------------------------- 4. unlock, unban on one host
admin 2 unlock alice >/dev/null
wait_for allows 4 198.18.1.3 alice
ok $? "unlock on h2 lifts the lock on h4"
is "$(login 4 alice alice-secret 198.18.1.3)" ok "unlock: alice logs in on h4 from a new place"
admin 3 unban $B >/dev/null
wait_for allows 1 $B
ok $? "unban on h3 lifts h1's ban"
ok "$(wait_for allows 2 $B && wait_for allows 4 $B; echo $?)" "unban: h2 and h4 let it in too"

# ---------------------------------------------------- 4b. a password sprayed over the fleet
# spray_password_users = 4: four users, one on each host, each from a
# place of its own, all with bob's password: one spray (the hosts hash
# passwords under the fleet's key, which authguard-sync derives)
BOB_HOME=203.0.113.6
is "$(login_pw 1 bob bob-secret $BOB_HOME)" ok "spray: bob logs in on h1 from home"
for n in 1 2 3 4; do
	login_pw $n "sp$n" bob-secret "198.18.2.$n" >/dev/null
	wait_for all_user_fails "sp$n" 1 || break
done
is "$(login_pw 2 bob bob-secret 198.18.3.1)" "fail 7" \
	"spray: 1 user per host, 4 in all: bob's password from a new place is refused on h2"
is "$(grep -c 'user="bob" rhost=198.18.3.1 .*action=refuse reason=hot_password' \
	"$S/h2/attempts.log")" 1 "spray: h2's attempt line says hot_password"
ok "$(wait_for eval '[ "$(fails_of 4 198.18.3.1)" = 1 ]'; echo $?)" \
	"spray: the refusal reaches h4 as the failure it was (not a success: no familiar place)"
is "$(login_pw 4 bob bob-secret 198.18.3.1)" "fail 7" "spray: ... so h4 refuses that place too"
is "$(login_pw 3 bob bob-secret $BOB_HOME)" ok "spray: bob, familiar on h1, logs in on h3 from home"

# ---------------------------------------------------- 4c. nftables export across the fleet
F=192.0.2.90
G=198.51.100.99
for n in 1 2 3 4 5 6 7 8; do login 1 "nf$n" wrong $F >/dev/null; done
admin 1 ban $G --for 1h >/dev/null
wait_for refuses 3 $F && wait_for refuses 3 $G
ok $? "export: h1's rule ban and admin ban reach h3"
admin 3 export nft >"$S/h3.nft"
ok "$(grep -q "^add element inet authguard authguard4 {.* $F[ ,/]" "$S/h3.nft" &&
	grep -q "^add element inet authguard authguard4 {.* $G[ ,/]" "$S/h3.nft" &&
	! grep -q "service=authguard-[a-z]* .*rhost=$F " "$S/h3/attempts.log"; echo $?)" \
	"export nft on h3, which never saw $F: its set holds h1's bans of $F and $G"

# ---------------------------------------------------- 5. Redis killed mid-attack
C=192.0.2.30
for n in 1 2 3; do login $n "k$n" wrong $C >/dev/null; done
wait_for all_fails $C 3
ok $? "before the crash: 3 failures everywhere"
kill -KILL "$RPID"
wait "$RPID" 2>/dev/null
RPID=
for n in 4 5 6 7; do
	h=$(( n % 4 + 1 ))
	login $h "k$n" wrong $C >/dev/null
done
sleep 1 # the daemons notice and say so
ok "$(grep -q 'fault: Redis .* unreachable' "$S/h1/sync.log"; echo $?)" \
	"Redis away: a fault line in h1's log"
ok "$(admin 2 status | grep -q '^sync: *DISCONNECTED'; echo $?)" \
	"Redis away: authguard-admin status says disconnected"
ok "$(admin 2 stats --prometheus | grep -qx 'authguard_sync_connected 0'; echo $?)" \
	"Redis away: the Prometheus export says authguard_sync_connected 0"
start_redis
wait_for all_fails $C 7
ok $? "Redis back: every host catches up to the 7 failures"
wait_for connected 2
ok "$(admin 2 stats --prometheus | grep -qx 'authguard_sync_connected 1'; echo $?)" \
	"Redis back: authguard_sync_connected 1"
sleep 1 # anything counted twice would show by now
is "$(fails_of 1 $C) $(fails_of 2 $C) $(fails_of 3 $C) $(fails_of 4 $C)" "7 7 7 7" \
	"Redis back: no failure counted twice"

# ---------------------------------------------------- 6. a forged event
# a deny of alice's home address, well formed, with a MAC under another key
"$PYTHON" - "$PORT" <<'EOF'
import hashlib, hmac, socket, struct, sys, time
now = int(time.time() * 1000)
ev = bytes([1, 3, 4, 0, 0, 0]) + struct.pack(">qqQ", now, now + 3600000, 999999)
ev += bytes([4, 32]) + bytes([203, 0, 113, 5]) + bytes(12) + bytes([0, 0, 0, 0])
epoch = struct.pack(">Q", 42)
mac = hmac.new(b"not the cluster key, but 32 bytes long", b"authguard-sync 1\0authguard\0h9\0" + epoch + ev,
               hashlib.sha256).digest()
args = [b"XADD", b"authguard", b"*", b"h", b"h9", b"o", epoch, b"e", ev, b"m", mac]
cmd = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(cmd)
s.recv(100)
EOF
wait_for grep -q 'rejected: bad MAC' "$S/h3/sync.log"
ok $? "forged event: rejected and logged on h3"
is "$(login 3 alice alice-secret $HOME_IP)" ok "forged event: it banned nothing"

# ---------------------------------------------------- 7. away longer than the stream keeps
kill -TERM "${SPIDS[4]}"
wait "${SPIDS[4]}"
SPIDS[4]=
D=192.0.2.50
E=198.51.100.88
for n in 1 2 3 4 5 6 7 8; do
	login $(( n % 3 + 1 )) "d$n" wrong $D >/dev/null
	wait_for eval '[ "$(fails_of 1 $D)" = '$n' ] && [ "$(fails_of 2 $D)" = '$n' ] && [ "$(fails_of 3 $D)" = '$n' ]' || break
done
admin 1 ban $E --for 1h >/dev/null
wait_for refuses 3 $E
"$REDIS_CLI" -p "$PORT" XTRIM authguard MAXLEN 0 >/dev/null # all of it, unread by h4
sleep 2.5 # h1..h3 publish their snapshots every second (sync_snapshot_every)
start_sync 4
wait_for refuses 4 $D
ok $? "away too long: h4 catches up from a snapshot: the brute force's ban"
ok "$(wait_for refuses 4 $E; echo $?)" "away too long: ... and the admin ban"
ok "$(grep -q 'caught up from h[123].s snapshot' "$S/h4/sync.log"; echo $?)" \
	"away too long: h4's log says it caught up from a snapshot"
login 1 "d9" wrong 192.0.2.51 >/dev/null
wait_for eval '[ "$(fails_of 4 192.0.2.51)" = 1 ]'
ok $? "away too long: h4 reads on from the snapshot's position"

# ---------------------------------------------------- 8. the pusher killed before it deleted
# h2's daemon holds what it pushed for a minute (AUTHGUARD_SYNC_DRAIN_MS),
# so the kill surely comes between the push and the delete
kill -TERM "${SPIDS[2]}"
wait "${SPIDS[2]}"
AUTHGUARD_SYNC_DRAIN_MS=60000 "$SYNC" -c "$S/h2/authguard.conf" >>"$S/h2/sync.log" 2>&1 &
SPIDS[2]=$!
wait_for connected 2 || bail "authguard-sync on h2 did not reconnect (h2/sync.log)"
G=192.0.2.70
dups_of() { admin "$1" status | sed -n 's/.* \([0-9]*\) duplicates skipped.*/\1/p'; }
for n in 1 2 3 4 5; do login 2 "g$n" wrong $G >/dev/null; done
wait_for all_fails $G 5
ok $? "pusher killed: the 5 failures on h2 reached every host"
DUPS_BEFORE="$(dups_of 1) $(dups_of 3) $(dups_of 4)"
is "$(outbox_of 2)" 5 "pusher killed: pushed, not yet deleted from h2's outbox"
kill -KILL "${SPIDS[2]}"
wait "${SPIDS[2]}" 2>/dev/null
start_sync 2
wait_for eval '[ "$(outbox_of 2)" = 0 ]'
ok $? "pusher killed: after the restart h2's outbox is emptied"
ok "$(grep -q 'events up to [0-9]* of this host were in the stream already' "$S/h2/sync.log"; echo $?)" \
	"pusher killed: the restart found its events in the stream and did not send them again"
login 2 g6 wrong $G >/dev/null
wait_for all_fails $G 6
sleep 1 # anything pushed twice would be skipped as a duplicate by now
is "$(fails_of 1 $G) $(fails_of 2 $G) $(fails_of 3 $G) $(fails_of 4 $G) / $(dups_of 1) $(dups_of 3) $(dups_of 4)" \
	"6 6 6 6 / $DUPS_BEFORE" "pusher killed: the next failure arrives, nothing counted or pushed twice"

# ---------------------------------------------------- start checks
grep -v '^sync_key_file' "$S/h1/authguard.conf" >"$S/nokey.conf"
"$SYNC" -c "$S/nokey.conf" >"$S/nokey.out" 2>&1
rc=$?
ok "$([ $rc = 2 ] && grep -q 'sync_key_file is not set' "$S/nokey.out"; echo $?)" \
	"no sync_key_file: authguard-sync refuses to start (exit 2, says why)"
cp "$S/cluster.key" "$S/open.key"
chmod 644 "$S/open.key"
sed "s|^sync_key_file = .*|sync_key_file = $S/open.key|" "$S/h1/authguard.conf" >"$S/openkey.conf"
"$SYNC" -c "$S/openkey.conf" >"$S/openkey.out" 2>&1
rc=$?
ok "$([ $rc = 2 ] && grep -q 'others cannot read' "$S/openkey.out"; echo $?)" \
	"a key file others can read: refused (exit 2)"
"$SYNC" -t -c "$S/h1/authguard.conf" >/dev/null 2>&1
is $? 0 "-t: a good config, key and store (exit 0)"

# ---------------------------------------------------- stop
stopped=0
for i in 1 2 3 4; do
	kill -TERM "${SPIDS[$i]}"
	wait "${SPIDS[$i]}" || stopped=1
	SPIDS[$i]=
done
ok $stopped "SIGTERM: every authguard-sync stops cleanly (status 0)"
