# tests/sync/lib.sh - helpers of the fleet tests (tests/sync/failover.sh; the
# same as tests/sync/run.sh's): hosts h1..hN under $S/hN, each with its
# authguard.conf and store. Needs S, ADMIN, PYTHON and WAIT_S set.

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
