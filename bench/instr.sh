#!/bin/sh
# bench/instr.sh BUILDDIR - instructions per attempt in the core, by
# callgrind (they do not vary with the load of the machine, unlike times):
# check + record (bench_guard) and a refused check (bench_refuse), at the
# source counts given in BENCH_INSTR_SOURCES (default "1000 10000"),
# collecting only inside the timed loop of each program. Needs valgrind;
# without it, says so and does nothing. Prints numbers; asserts nothing.
set -u
b=${1:-.}
vg=${AG_BENCH_VALGRIND:-valgrind}
if ! command -v "$vg" >/dev/null 2>&1; then
	echo "bench/instr.sh: no valgrind: instruction counts skipped"
	exit 0
fi
tmp=$(mktemp -d /tmp/authguard-instr.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
# one program under callgrind: instructions inside FUNCTION, per N
count() { # count N FUNCTION PROGRAM ARGS...
	cn=$1 fn=$2
	shift 2
	"$vg" -q --tool=callgrind --callgrind-out-file="$tmp/cg.out" --collect-atstart=no \
		--toggle-collect="$fn" "$@" >"$tmp/prog.out" 2>"$tmp/vg.err" || {
		echo "  $1 failed under callgrind:"
		sed 's/^/    /' "$tmp/vg.err" "$tmp/prog.out"
		return 1
	}
	total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$tmp/cg.out" | tail -n 1)
	echo "$total $cn" | awk '{ printf "%.1fk instructions per attempt", $1 / $2 / 1000 }'
	grep -o 'written per [a-z]*: [0-9]* bytes ([0-9.]* pages' "$tmp/prog.out" |
		sed 's/^/, /; s/(/= /; s/ pages/ pages/' | tr -d '\n'
	echo
}
# libtool wrapper scripts: run the real binaries with the library path
for p in bench_guard bench_refuse; do
	[ -x "$b/bench/.libs/$p" ] && [ -f "$b/bench/$p" ] && ! head -c 4 "$b/bench/$p" | grep -q ELF &&
		eval "bin_$p=\$b/bench/.libs/\$p" || eval "bin_$p=\$b/bench/\$p"
done
export LD_LIBRARY_PATH="$b/store/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "# instructions by callgrind ($("$vg" --version)), log=none"
for n in ${BENCH_INSTR_SOURCES:-1000 10000}; do
	printf 'check+record, %s sources: ' "$n"
	count 2000 run "$bin_bench_guard" -n "$n" -a 2000 -m 1G
	printf 'refused check, %s sources: ' "$n"
	count 2000 time_refusals "$bin_bench_refuse" -n "$n" -r 2000 -c 1 -m 1G
done
