#!/bin/sh
# install-keeps-config.sh - a second `make install` must never overwrite an
# authguard.conf the admin edited; the shipped one goes beside it, and
# `make uninstall` removes the file only as shipped. Runs the install and
# uninstall rules for the config alone, into a throwaway DESTDIR.
set -u
: "${AG_TEST_MAKE:=make}" "${AG_TEST_SECURITYCONFDIR:?run via make check}" "${srcdir:=.}"
d=$(mktemp -d /tmp/authguard-install.XXXXXX) || exit 99
trap 'rm -rf "$d"' EXIT
conf="$d$AG_TEST_SECURITYCONFDIR/authguard.conf"
n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
inst() { $AG_TEST_MAKE -s "$1" DESTDIR="$d" >"$d/out" 2>&1; }
echo "1..5"
inst install-data-local
cmp -s "$srcdir/authguard.conf" "$conf"
ok $? "a first install puts the shipped authguard.conf in place"
echo "mode = log-only  # edited" >>"$conf"
cp "$conf" "$d/edited"
inst install-data-local
cmp -s "$d/edited" "$conf"
ok $? "a second install keeps the edited file"
cmp -s "$srcdir/authguard.conf" "$conf.dist" && grep -q "kept" "$d/out"
ok $? "and puts the shipped one beside it as authguard.conf.dist, saying so"
inst uninstall-local
cmp -s "$d/edited" "$conf" && [ ! -e "$conf.dist" ]
ok $? "uninstall keeps the edited file, removes the .dist"
cp "$srcdir/authguard.conf" "$conf"
inst uninstall-local
[ ! -e "$conf" ]
ok $? "uninstall removes the file as shipped"
[ "$fails" = 0 ]
