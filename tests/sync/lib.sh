# tests/sync/lib.sh - helpers of the fleet tests (tests/sync/*.sh): hosts
# h1..hN under $S/hN, each with its authguard.conf and store; a plain
# redis-server; the end of cleanup(). Needs S, ADMIN, PYTHON and WAIT_S
# set (sync_test_needs sets ADMIN, PYTHON, REDIS and REDIS_CLI).

# sync_test_needs: what these tests run, or SKIP with the reason; sets
# SYNC, ADMIN, REDIS, REDIS_CLI and PYTHON (tap.sh must be sourced)
sync_test_needs() {
	SYNC=${AG_TEST_SYNC:-}
	ADMIN=${AG_TEST_ADMIN:-}
	REDIS=${AG_TEST_REDIS:-$(command -v redis-server)}
	REDIS_CLI=$(command -v redis-cli)
	PYTHON=$(command -v python3)
	[ -n "$REDIS" ] && [ -x "$REDIS" ] || tap_skip_all "redis-server not found: install redis-server (or set AG_TEST_REDIS)"
	[ -n "$REDIS_CLI" ] || tap_skip_all "redis-cli not found: install redis-tools"
	[ -n "$PYTHON" ] || tap_skip_all "python3 not found (free ports are picked with it)"
	local b
	for b in "$SYNC" "$ADMIN"; do
		[ -n "$b" ] && [ -x "$b" ] || tap_skip_all "${b:-a binary} not built (run through make check)"
	done
	if nm "$SYNC" 2>/dev/null | grep -qE ' __(a|t|ub|m)san_' ||
		readelf -d "$SYNC" 2>/dev/null | grep -qE 'NEEDED.*lib(a|t|ub|m)san'; then
		tap_skip_all "$SYNC is built with a sanitizer (the plain build runs this test)"
	fi
}

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
admin() { # admin HOST ARGS...
	local h=$1
	shift
	"$ADMIN" -c "$S/h$h/authguard.conf" "$@"
}
# failures "in all" a host's store holds for an address (0 if none)
fails_of() {
	admin "$1" show "$2" 2>/dev/null | sed -n 's/.*(\([0-9]*\) in all).*/\1/p' | head -1 | grep . || echo 0
}
# wait_for CMD...: until it succeeds, at most WAIT_S seconds
wait_for() {
	local i
	for i in $(seq $((WAIT_S * 20))); do
		"$@" && return 0
		sleep 0.05
	done
	return 1
}
refuses() { # refuses HOST ADDR [USER]
	admin "$1" check --service probe --user "${3:-nobody}" --rhost "$2" | grep -q '^refuse'
}
allows() {
	admin "$1" check --service probe --user "${3:-nobody}" --rhost "$2" | grep -q '^allow'
}
connected() {
	admin "$1" status 2>/dev/null | grep -q '^sync: *connected'
}
# the events waiting in a host's outbox (authguard-admin status)
outbox_of() {
	admin "$1" status 2>/dev/null | sed -n 's/^outbox: *\([0-9]*\) waiting.*/\1/p'
}
# record HOST USER ADDR: one failed attempt, as a front end records it
record_fail() {
	admin "$1" record --service imap --user "$2" --rhost "$3" --result failure >/dev/null
}
# redis_start [ARGS...]: a redis-server on 127.0.0.1:$PORT (a free port
# when PORT is empty), its files in $S/redis, its log $S/redis.log, with
# ARGS; sets PORT and RPID; bails when it does not answer
redis_start() {
	[ -n "${PORT:-}" ] || PORT=$(free_port)
	mkdir -p "$S/redis"
	"$REDIS" --port "$PORT" --bind 127.0.0.1 --dir "$S/redis" --daemonize no "$@" \
		>>"$S/redis.log" 2>&1 &
	RPID=$!
	wait_for redis_up || bail "redis-server did not start (redis.log)"
}
redis_up() { "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; }
# scratch_end RC FILES: the end of a test's cleanup(): $S removed after a
# clean run (unless AG_TEST_KEEP=1), else kept and said, naming FILES to
# look at; exits with RC, or 1 when a check failed
scratch_end() {
	local rc=$1
	if [ "$rc" = 0 ] && [ "$FAILED" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$S"
	else
		echo "# scratch directory kept: $S ($2)"
	fi
	[ "$FAILED" = 0 ] || rc=1
	exit "$rc"
}
# counting_conf HOST: the lines of host HOST's authguard.conf that count
# every failure but ban and lock nothing (the tests read the counts); the
# sync keys but Redis's place (sync_host, the cluster key $S/cluster.key)
counting_conf() {
	cat <<EOF
db_dir = $S/h$1/db
log = file:$S/h$1/attempts.log
tarpit_base = 0
ip_ban_after = 1000
user_lock_after = 0
spray_users = 0
net_ban_after = 0
sync_host = h$1
sync_key_file = $S/cluster.key
sync_snapshot_every = 1m
EOF
}
# counting_host HOST REDIS_PORT: $S/hHOST with counting_conf's config,
# synced through 127.0.0.1:REDIS_PORT
counting_host() {
	mkdir -p "$S/h$1"
	{ counting_conf "$1"; echo "sync_redis = 127.0.0.1:$2"; } >"$S/h$1/authguard.conf"
}
