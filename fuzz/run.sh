#!/bin/sh
# fuzz/run.sh [SECONDS] - build the libFuzzer harnesses and run each one for
# SECONDS (default 60; FUZZ_SECONDS sets it when no argument is given;
# 0 only replays the seed corpus). Prints one line per harness and exits
# non-zero if any harness crashed (1) or could not be built (2).
#
# Needs clang with its fuzzer runtime (Debian: clang libclang-rt-14-dev)
# and a config.h from the normal build: $CONFIG_H_DIR, else build/, else
# the top directory.
#
# Environment:
#   FUZZ_SECONDS     seconds per harness when no argument is given
#   CONFIG_H_DIR     directory holding config.h
#   FUZZ_CC          compiler (default clang)
#   FUZZ_CFLAGS      extra compiler flags
#   FUZZ_ONLY        run only these harnesses, e.g. "addr conf"
#   FUZZ_PARALLEL    1 (default): all harnesses at once; 0: one after another
#   FUZZ_WORKDIR     scratch directory (default: a fresh mktemp -d, removed)
#
# Crash inputs and their logs go to fuzz/artifacts/ (git-ignored). Reproduce
# one with: <scratch>/bin/fuzz_NAME fuzz/artifacts/fuzz_NAME-crash-...
# (FUZZ_WORKDIR keeps the binaries).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

secs=${1:-${FUZZ_SECONDS:-60}}
case $secs in
'' | *[!0-9]*)
	echo "usage: fuzz/run.sh [SECONDS]  (SECONDS: a whole number, got '$secs')" >&2
	exit 2
	;;
esac

# ---- config.h -----------------------------------------------------------------
if [ -n "${CONFIG_H_DIR:-}" ]; then
	cfgdir=$CONFIG_H_DIR
elif [ -f build/config.h ]; then
	cfgdir=build
else
	cfgdir=.
fi
if [ ! -f "$cfgdir/config.h" ]; then
	echo "fuzz/run.sh: no config.h in '$cfgdir': build first (tools/quickstart test," >&2
	echo "  or ./configure), or point CONFIG_H_DIR at the directory holding it" >&2
	exit 2
fi
cfgdir=$(cd "$cfgdir" && pwd)

# ---- compiler -----------------------------------------------------------------
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "fuzz/run.sh: '$cc' not found; on Debian: apt-get install clang libclang-rt-14-dev" >&2
	exit 2
fi

# ---- scratch ------------------------------------------------------------------
if [ -n "${FUZZ_WORKDIR:-}" ]; then
	work=$FUZZ_WORKDIR
	mkdir -p "$work"
	work=$(cd "$work" && pwd)
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/authguard-fuzz.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	trap 'exit 130' INT TERM
fi
artifacts=$top/fuzz/artifacts
mkdir -p "$work/bin" "$work/corpus" "$artifacts"

# ---- the harnesses: name, -max_len, store sources ------------------------------
harnesses=${FUZZ_ONLY:-addr conf log record watch policyd sync sasl}

max_len() {
	case $1 in
	addr) echo 300 ;;      # past AG_ADDR_INPUT_MAX (255)
	conf) echo 5000 ;;     # past the 4095-byte config line
	log) echo 1024 ;;      # past AG_LOG_USER_MAX and the 64-byte fields
	record) echo 512 ;;    # header + four records (440 bytes)
	watch) echo 9000 ;;    # past AW_LINE_MAX (8192)
	policyd) echo 4096 ;;  # Dovecot's requests are a few hundred bytes
	sync) echo 1200 ;;     # past AG_SEV_WIRE_MAX (896)
	sasl) echo 1200 ;;     # past twice AGS_NAME_MAX (512), escapes included
	esac
}

# The whole core's C files, as Makefile.am lists them for libagcore (a harness
# that links the guard follows the core without a second list to keep).
core_sources() {
	awk '/^store_libagcore_la_SOURCES[ \t]*=/ { on = 1 }
		on { for (i = 1; i <= NF; i++) if ($i ~ /\.c$/) printf "%s ", $i
		     if ($NF != "\\") on = 0 }' Makefile.am
}

sources() {
	case $1 in
	addr) echo "store/addr.c" ;;
	conf) echo "store/conf.c store/addr.c store/record.c store/hash.c" ;;
	log) echo "store/log.c store/addr.c" ;;
	record) echo "store/record.c store/hash.c store/policy.c store/conf.c store/addr.c" ;;
	watch) echo "watch/rules.c" ;;
	policyd) echo "policyd/map.c $(core_sources)" ;;
	sync) echo "store/sync_event.c store/addr.c" ;;
	sasl) echo "sasl_plugin/sniff.c" ;;
	*)
		echo "fuzz/run.sh: unknown harness '$1'" >&2
		exit 2
		;;
	esac
}

# libraries a harness needs beyond libc
libs() {
	case $1 in
	watch) pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8 ;;
	policyd) echo "-ljansson -llmdb" ;;
	esac
}

dict() {
	if [ -f "fuzz/$1.dict" ]; then
		echo "-dict=$top/fuzz/$1.dict"
	fi
}

for h in $harnesses; do
	src=$(sources "$h")
	# shellcheck disable=SC2086 # word splitting of the source list and flags is wanted
	if ! "$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-std=c11 -Wall -Wextra -I"$cfgdir" -I. -Istore -Iwatch -Ipolicyd -Isasl_plugin -DSYSCONFDIR='"/etc"' \
		${FUZZ_CFLAGS:-} -o "$work/bin/fuzz_$h" "fuzz/fuzz_$h.c" $src $(libs "$h") -lm -pthread \
		>"$work/build_$h.log" 2>&1; then
		cat "$work/build_$h.log" >&2
		echo "fuzz_$h: build failed (clang needs its fuzzer runtime: apt-get install clang libclang-rt-14-dev)" >&2
		exit 2
	fi
	if [ -s "$work/build_$h.log" ]; then
		cat "$work/build_$h.log" >&2
	fi
done

# ---- run ----------------------------------------------------------------------
: "${ASAN_OPTIONS:=detect_leaks=1}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS UBSAN_OPTIONS

if [ "$secs" -eq 0 ]; then
	limit=-runs=0
else
	limit=-max_total_time=$secs
fi

run_one() {
	h=$1
	mkdir -p "$work/corpus/$h"
	cp fuzz/corpus/"$h"/* "$work/corpus/$h/"
	# shellcheck disable=SC2046 # dict() gives zero or one word
	"$work/bin/fuzz_$h" "$limit" -max_len="$(max_len "$h")" -timeout=25 \
		-print_final_stats=1 -artifact_prefix="$artifacts/fuzz_$h-" $(dict "$h") \
		"$work/corpus/$h" >"$work/fuzz_$h.log" 2>&1
}

pids=""
for h in $harnesses; do
	if [ "${FUZZ_PARALLEL:-1}" = 0 ]; then
		if run_one "$h"; then echo 0; else echo $?; fi >"$work/rc_$h"
	else
		(if run_one "$h"; then echo 0; else echo $?; fi >"$work/rc_$h") &
		pids="$pids $!"
	fi
done
for p in $pids; do
	wait "$p" || true
done

# ---- report -------------------------------------------------------------------
failed=0
for h in $harnesses; do
	log=$work/fuzz_$h.log
	rc=$(cat "$work/rc_$h" 2>/dev/null || echo 99)
	runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
	if [ -z "$runs" ]; then
		runs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
	fi
	runs=${runs:-0}
	if [ "$rc" -eq 0 ]; then
		echo "fuzz_$h: $runs runs, no crash"
		continue
	fi
	failed=1
	unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	cp "$log" "$artifacts/fuzz_$h.log"
	echo "fuzz_$h: CRASH after $runs runs (exit $rc): ${unit:-no input saved}; log: fuzz/artifacts/fuzz_$h.log"
	# the sanitizer's or the invariant's own words, and the top of the stack
	grep -E -A 14 'invariant failed|runtime error|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" |
		head -n 30 | sed 's/^/    /'
done
exit $failed
