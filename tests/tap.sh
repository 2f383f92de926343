# tests/tap.sh - what the end-to-end shell tests share: TAP results, and a
# watchdog that bounds the whole run. Source it, define cleanup() and set
# TIMEOUT (seconds), then call tap_start before starting any daemon.
FAILED=0
TESTNO=0

# tap_start: cleanup() on exit; a bail-out line on SIGINT/SIGHUP, and on the
# watchdog's SIGTERM once TIMEOUT has passed (its pid in WDPID: cleanup()
# kills it)
tap_start() {
	trap cleanup EXIT
	trap 'echo "Bail out! interrupted"; exit 1' INT HUP
	trap 'echo "Bail out! timed out after ${TIMEOUT}s (AG_TEST_TIMEOUT)"; exit 1' TERM
	# the watchdog ends its own sleep when told, else signals the test
	(
		trap 'kill "$s" 2>/dev/null; exit 0' TERM
		sleep "$TIMEOUT" &
		s=$!
		wait "$s" && kill -TERM $$
	) </dev/null >/dev/null 2>&1 &
	WDPID=$!
}

ok() { # ok STATUS DESCRIPTION [DIAGNOSTIC...]: STATUS 0 passes
	local st=$1 desc=$2 d
	shift 2
	TESTNO=$((TESTNO + 1))
	if [ "$st" = 0 ]; then
		echo "ok $TESTNO - $desc"
	else
		FAILED=$((FAILED + 1))
		echo "not ok $TESTNO - $desc"
		for d in "$@"; do printf '%s\n' "$d" | sed 's/^/#   /'; done
	fi
}

is() { # is GOT WANT DESCRIPTION: passes when GOT equals WANT
	if [ "$1" = "$2" ]; then ok 0 "$3"; else ok 1 "$3" "got:  $1" "want: $2"; fi
}

skip() { # skip DESCRIPTION REASON
	TESTNO=$((TESTNO + 1))
	echo "ok $TESTNO - $1 # SKIP $2"
}

count() { # count WORD ITEMS...: how many ITEMS equal WORD
	local w=$1 n=0 x
	shift
	for x in "$@"; do [ "$x" = "$w" ] && n=$((n + 1)); done
	echo "$n"
}

bail() { # bail REASON...: the whole run cannot go on
	echo "Bail out! $*"
	exit 1
}

tap_skip_all() { # tap_skip_all REASON: nothing can run here (automake's SKIP)
	echo "SKIP: $1" >&2
	echo "1..0 # SKIP $1"
	exit "${AG_TEST_SKIP_STATUS:-77}"
}
