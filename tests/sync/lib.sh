# tests/sync/lib.sh - helpers of the fleet tests (tests/sync/failover.sh; the
# same as tests/sync/run.sh's): hosts h1..hN under $S/hN, each with its
# authguard.conf and store. Needs S, ADMIN, PYTHON and WAIT_S set
# (sync_test_needs sets ADMIN and PYTHON).

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
