#!/bin/bash
# tests/install/run.sh - the README's Install section, every command as
# written, on a clean root; then the installed files at work.
#
#   tests/install/run.sh --on-this-machine   as root on a throwaway machine
#                                            (CI: .ci/run, after the suite)
#   tests/install/run.sh --overlay           as root: the same inside a
#                                            throwaway overlay of / in a
#                                            private mount namespace (this
#                                            machine keeps nothing of it)
#   tests/install/run.sh                     1..0 # SKIP: it installs into
#                                            /usr, so never from make check
#
# The README marks its shell blocks with <!-- install-test: NAME -->; every
# block of the Install section must carry a mark, and each is run from a
# fresh copy of the source tree (git's files), with set -e:
#   A. deb-install (apt-get build-dep, dpkg-buildpackage, apt-get install),
#      then lintian, the files, the conffile, the group and the store's
#      modes, the units, the SASL section's sasldb-link block, every
#      multiarch path the docs name, the demonstration against the installed
#      module, logins through the system's libpam with the installed config
#      and store, the gc timer's command as its unit runs it, a reinstall
#      keeping an edited config, deb-remove (store and config kept) and
#      deb-purge (both gone);
#   B. src-build (apt-get install, autoreconf, configure, make, make
#      install) and src-store, then the same checks, and make uninstall.
# Run as root, "sudo" adds nothing: it is a shell function running its
# arguments (CI has no sudo). On a machine not booted with systemd (a
# container), "systemctl ... --now" enables only, and says so; the units are
# checked with systemd-analyze verify and the gc unit's ExecStart is run as
# its user would be (an unprivileged member of the authguard group).
# Environment: AG_INSTALL_PARTS ("deb src": which of A and B), DEB_BUILD_OPTIONS and MAKEFLAGS (default "nocheck
# parallel=2" and -j2: the package's build skips the upstream suite, which
# CI has run already).
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
triplet=x86_64-linux-gnu # the README's; checked below
libdir=/usr/lib/$triplet

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

# ---- --overlay: re-run inside a throwaway copy-on-write root -------------------
overlay() {
	[ "$(id -u)" -eq 0 ] || skip_all "--overlay needs root"
	command -v unshare >/dev/null || skip_all "no unshare(1)"
	ov=$(mktemp -d /tmp/authguard-overlay.XXXXXX) || exit 1
	mkdir "$ov/upper" "$ov/work" "$ov/root"
	rc=0
	# /run is not bound: the host's systemd (if any) must stay out of reach
	unshare -m --propagation private /bin/bash -c '
		set -e
		ov=$1 top=$2
		mount -t overlay overlay -o "lowerdir=/,upperdir=$ov/upper,workdir=$ov/work" "$ov/root"
		for m in /proc /sys /dev; do mount --rbind "$m" "$ov/root$m"; done
		mount -t tmpfs tmpfs "$ov/root/run"
		# a tree on another file system than / is not in the overlay
		[ "$(findmnt -n -o TARGET --target "$top")" = / ] || mount --rbind "$top" "$ov/root$top"
		cp -L /etc/resolv.conf "$ov/root/etc/resolv.conf.ag" 2>/dev/null &&
			mv -f "$ov/root/etc/resolv.conf.ag" "$ov/root/etc/resolv.conf" || true
		exec chroot "$ov/root" /bin/bash "$top/tests/install/run.sh" --on-this-machine
	' overlay "$ov" "$top" || rc=$?
	rm -rf "$ov"
	exit "$rc"
}

case "${1:-}" in
--on-this-machine) ;;
--overlay) overlay ;;
*) skip_all "installs into /usr: run as root with --on-this-machine (a throwaway machine) or --overlay" ;;
esac

[ "$(id -u)" -eq 0 ] || skip_all "needs root"
arch=$(dpkg --print-architecture 2>/dev/null)
[ "$arch" = amd64 ] || skip_all "the README's commands name amd64 paths; this is '$arch'"
git -c safe.directory="$top" -C "$top" rev-parse --git-dir >/dev/null 2>&1 || skip_all "needs a git checkout (the README's 'autoreconf -fi' path)"
for cmd in python3 setpriv; do
	command -v "$cmd" >/dev/null || skip_all "no $cmd"
done
# a clean root: nothing of authguard installed before (anything left by
# an earlier test is a defect to fix, not a reason to skip)
unclean() {
	echo "Bail out! not a clean root: $*"
	exit 1
}
for f in /etc/security/authguard.conf /var/lib/authguard "$libdir/security/pam_authguard.so" \
	"$libdir/authguard" /usr/sbin/authguard-admin; do
	[ -e "$f" ] && unclean "$f exists"
done
getent group authguard >/dev/null && unclean "the authguard group exists"
dpkg-query -W authguard >/dev/null 2>&1 && unclean "dpkg knows the package authguard"

export DEBIAN_FRONTEND=noninteractive
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-nocheck parallel=2}"
export MAKEFLAGS="${MAKEFLAGS:--j2}"
work=$(mktemp -d /tmp/authguard-install.XXXXXX) || exit 1
aptconf=/etc/apt/apt.conf.d/99authguard-install-test
pamsvc=/etc/pam.d/authguard-install-test

cleanup() {
	rm -f "$aptconf" "$pamsvc" "$libdir/authguard/sasl2/libsasldb.so"
	if dpkg-query -W -f='${db:Status-Status}' authguard 2>/dev/null | grep -qv not-installed; then
		apt-get purge -qq authguard >/dev/null 2>&1
	fi
	[ -f "$work/src/authguard/Makefile" ] && make -C "$work/src/authguard" uninstall >/dev/null 2>&1
	command -v systemctl >/dev/null && systemctl disable authguard-gc.timer >/dev/null 2>&1
	rm -rf /var/lib/authguard "$libdir/authguard"
	getent group authguard >/dev/null && groupdel authguard
	rm -rf "$work"
}
trap cleanup EXIT
# The README's apt-get lines, unattended (the commands stay as written)
printf 'APT::Get::Assume-Yes "true";\nquiet "1";\n' >"$aptconf"

n=0
failed=0
ok() { # ok CONDITION-RC DESCRIPTION
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=$((failed + 1))
	fi
}
check() { # check DESCRIPTION COMMAND...: ok when COMMAND succeeds
	local d=$1
	shift
	"$@" >"$work/check.out" 2>&1
	local rc=$?
	ok $rc "$d"
	[ $rc -eq 0 ] || sed 's/^/#   /' "$work/check.out" | tail -n 20
	return $rc
}
note() { echo "# $*"; }

# ---- the README's blocks --------------------------------------------------------
mkdir -p "$work/blocks"
awk -v dir="$work/blocks" '
	/^## / { install = ($0 == "## Install") }
	match($0, /^<!-- install-test: [a-z-]+ -->$/) {
		name = $3; want = 1; next
	}
	want && /^```sh$/ { out = dir "/" name ".sh"; want = 0; inblock = 1; printf "" >out; next }
	want { want = 0 }
	inblock && /^```$/ { inblock = 0; close(out); out = ""; next }
	inblock { print >out; next }
	install && /^```sh$/ { print "unmarked block in the Install section, line " NR >(dir "/UNMARKED") }
' "$top/README.md"
[ -e "$work/blocks/UNMARKED" ] && sed 's/^/# /' "$work/blocks/UNMARKED"
ok "$([ ! -e "$work/blocks/UNMARKED" ]; echo $?)" "every shell block of the README's Install section is marked"
for b in deb-install deb-remove deb-purge src-build src-store sasldb-link; do
	[ -s "$work/blocks/$b.sh" ] || { ok 1 "README block '$b' found"; exit 1; }
done

# What the blocks run with: root's sudo is the command itself; without a
# running systemd, "--now" cannot start a unit (verified offline instead).
cat >"$work/prelude.sh" <<'EOF'
sudo() { "$@"; }
if [ ! -d /run/systemd/system ]; then
	systemctl() {
		_now=
		_args=
		for _a in "$@"; do
			case $_a in --now) _now=1 ;; *) _args="$_args $_a" ;; esac
		done
		[ -n "$_now" ] && echo "install test: not booted with systemd: 'systemctl$_args' without --now" >&2
		# shellcheck disable=SC2086
		command systemctl $_args
	}
fi
EOF

# run_block NAME DIR: runs the README's block NAME in DIR (set -e, traced)
run_block() {
	local t0=$SECONDS
	(cd "$2" && /bin/sh -ec ". '$work/prelude.sh'; set -x; . '$work/blocks/$1.sh'") >"$work/$1.log" 2>&1
	local rc=$?
	ok $rc "README block '$1' runs as written ($((SECONDS - t0)) s)"
	[ $rc -eq 0 ] || sed 's/^/#   /' "$work/$1.log" | tail -n 30
	grep -h '^install test:' "$work/$1.log" | sed 's/^/# /'
	return $rc
}

# fresh_tree DIR: the source tree as a clone has it (git's files, edits included)
fresh_tree() {
	mkdir -p "$1" &&
		(cd "$top" && git -c safe.directory="$top" ls-files -co --exclude-standard -z | grep -zv '^build' |
			xargs -0 cp -P --parents -t "$1")
}

# modes DESCRIPTION PATH EXPECTED: stat -c '%U:%G %a' of PATH
modes() {
	local got
	got=$(stat -c '%U:%G %a' "$2" 2>&1)
	ok "$([ "$got" = "$3" ]; echo $?)" "$1: $2 is $3"
	[ "$got" = "$3" ] || note "  got: $got"
}

# installed_checks UNITDIR BUILDTREE: what both ways must leave behind
installed_checks() {
	local unitdir=$1 tree=$2 f
	for f in "$libdir/security/pam_authguard.so" "$libdir/authguard/sasl2/authguard.so" \
		/usr/sbin/authguard-admin /etc/security/authguard.conf \
		/usr/share/man/man8/pam_authguard.8* /usr/share/man/man5/authguard.conf.5* \
		/usr/share/man/man8/authguard-admin.8* \
		"$unitdir/authguard-gc.service" "$unitdir/authguard-gc.timer" \
		"$unitdir/authguard-nft.service" "$unitdir/authguard-nft.timer"; do
		ok "$([ -f "$f" ]; echo $?)" "installed: $f"
	done
	local other=
	[ -d "$libdir/authguard/sasl2" ] || other=" (no such directory)"
	for f in "$libdir/authguard/sasl2"/*; do
		[ -e "$f" ] || continue
		case ${f##*/} in authguard.so | libsasldb.so) ;; *) other="$other ${f##*/}" ;; esac
	done
	ok "$([ -z "$other" ]; echo $?)" "the SASL plugin is alone in its directory$other"
	check "the gc unit runs /usr/sbin/authguard-admin gc" \
		grep -qx 'ExecStart=/usr/sbin/authguard-admin gc' "$unitdir/authguard-gc.service"
	check "the authguard group exists" getent group authguard
	modes "store directory" /var/lib/authguard "root:authguard 2750"
	modes "store file" /var/lib/authguard/data.mdb "root:authguard 660"
	modes "store file" /var/lib/authguard/lock.mdb "root:authguard 660"
	if command -v systemd-analyze >/dev/null; then
		# every unit, the daemons' too once they come
		check "systemd-analyze verify accepts the units" systemd-analyze verify --man=no \
			"$unitdir"/authguard*.service "$unitdir"/authguard*.timer
	else
		ok 0 "systemd-analyze verify # SKIP no systemd-analyze"
	fi
	if command -v systemctl >/dev/null; then
		check "authguard-gc.timer is enabled" sh -c 'test "$(systemctl is-enabled authguard-gc.timer)" = enabled'
		check "authguard-nft.timer is not enabled" sh -c 'test "$(systemctl is-enabled authguard-nft.timer)" = disabled'
	fi

	# the SASL section's link, and every multiarch path the docs name
	run_block sasldb-link "$tree"
	local paths
	paths=$(sed 's/\\-/-/g' "$top/README.md" "$top/SECURITY.md" "$top"/doc/*.[58] |
		grep -ohE "/usr/lib/$triplet/(security/pam_authguard|authguard)[^] \`'\")*]*" |
		sed 's/[.,:;]*$//' | sort -u)
	ok "$([ "$(echo "$paths" | wc -w)" -ge 4 ]; echo $?)" "the docs name the module's and the plugin's paths"
	for f in $paths; do
		ok "$([ -e "$f" ]; echo $?)" "a path the docs name exists: $f"
	done
	if command -v saslpluginviewer >/dev/null; then
		SASL_PATH=$libdir/authguard/sasl2 saslpluginviewer -s -a >"$work/pv.out" 2>&1
		check "SASL_PATH=$libdir/authguard/sasl2: libsasl2 loads the plugin's PLAIN" \
			sh -c "grep -A1 '^Plugin \"hguard\"' '$work/pv.out' | grep -q 'SASL mechanism: PLAIN,'"
		check "... and the sasldb auxprop through the README's link" grep -q 'Plugin "sasldb"' "$work/pv.out"
	else
		ok 0 "libsasl2 loads the plugin # SKIP no saslpluginviewer (sasl2-bin)"
	fi

	# the demonstration, against the installed module
	local demo=$tree/tools/authguard-demo
	if [ -x "$demo" ] && [ -e "$(pkg-config --variable=modules pam_wrapper 2>/dev/null)/pam_matrix.so" ]; then
		AG_DEMO_MODULE=$libdir/security/pam_authguard.so "$demo" >"$work/demo.out" 2>&1
		ok $? "the demonstration runs against the installed module"
		check "... which it names" grep -qx "module: $libdir/security/pam_authguard.so" "$work/demo.out"
		check "... and no attacker got in" grep -q '^== in all: .* 0 were granted' "$work/demo.out"
		grep '^== in all' "$work/demo.out" | sed 's/^/# /'
	else
		ok 0 "the demonstration # SKIP no demo binary or no pam_wrapper"
	fi

	pam_checks
	gc_check "$unitdir"
}

# Logins through the system's libpam: the module by its bare name (so it is
# where libpam looks), the installed config and store; the tarpit off and
# the attempt lines in a file, by module arguments.
pam_checks() {
	local matrix log args codes
	matrix=$(pkg-config --variable=modules pam_wrapper 2>/dev/null)/pam_matrix.so
	if [ ! -e "$matrix" ]; then
		ok 0 "logins through libpam # SKIP no pam_matrix.so (libpam-wrapper)"
		return
	fi
	log=$work/attempts.log
	rm -f "$log"
	printf 'alice:alice-secret:authguard-install-test\n' >"$work/passdb"
	args="tarpit_base=0 log=file:$log"
	cat >"$pamsvc" <<EOF
auth     requisite      pam_authguard.so preauth $args
auth     [success=1 auth_err=ignore user_unknown=ignore authinfo_unavail=ignore default=die] $matrix passdb=$work/passdb
auth     [default=die]  pam_authguard.so authfail $args
auth     sufficient     pam_authguard.so authsucc $args
account  required       pam_authguard.so $args
EOF
	{
		echo "alice alice-secret 198.51.100.7"
		for i in 1 2 3 4 5 6 7 8 9 10; do echo "alice guess$i 203.0.113.9"; done
		echo "alice alice-secret 203.0.113.9"
		echo "alice alice-secret 198.51.100.7"
	} | python3 "$here/pamlogin.py" authguard-install-test >"$work/codes" 2>&1
	codes=$(tr '\n' ' ' <"$work/codes")
	ok "$([ "$codes" = "0 7 7 7 7 7 7 7 7 7 7 7 0 " ]; echo $?)" \
		"logins: owner in, 10 guesses failed, the right password refused once banned, owner in from home"
	note "  PAM codes: $codes"
	ok "$([ "$(wc -l <"$log")" -eq 13 ]; echo $?)" "one attempt line per attempt (13)"
	check "the 12th was refused before the password check" \
		sh -c "sed -n 12p '$log' | grep -q 'result=unchecked action=refuse reason=banned'"
	check "root's authguard-admin sees the ban in the installed store" \
		sh -c "authguard-admin list bans | grep -q 203.0.113.9"
	# a member of the group, not root, as the timers run
	check "a member of the group reads the same store" \
		sh -c "setpriv --reuid=nobody --regid=authguard --clear-groups authguard-admin stats | grep -Eq '^attempts_total +13\$'"
	setpriv --reuid=nobody --regid=authguard --clear-groups authguard-admin export nft >"$work/ban.nft" 2>&1
	check "... and exports the ban for nftables" grep -q 'add element inet authguard authguard4 { 203.0.113.9' "$work/ban.nft"
	if command -v nft >/dev/null && nft -c -f "$work/ban.nft" >"$work/nft.out" 2>&1; then
		ok 0 "nft -c accepts the export"
	else
		ok 0 "nft -c accepts the export # SKIP $(head -c 120 "$work/nft.out" 2>/dev/null || echo no nft)"
	fi
	rm -f "$pamsvc"
}

# The gc unit's command, as the unit runs it
gc_check() {
	local cmd
	if [ -d /run/systemd/system ]; then
		check "systemctl start authguard-gc.service succeeds" systemctl start authguard-gc.service
	else
		cmd=$(sed -n 's/^ExecStart=//p' "$1/authguard-gc.service")
		# shellcheck disable=SC2086
		check "the gc unit's command succeeds as an unprivileged member of the group" \
			setpriv --reuid=nobody --regid=authguard --clear-groups $cmd
	fi
}

t_start=$SECONDS

parts=${AG_INSTALL_PARTS:-deb src}

# ==== A. the Debian package ==========================================================
case " $parts " in *" deb "*) ;; *) note "A skipped (AG_INSTALL_PARTS=$parts)" ;; esac
if [ "${parts#*deb}" != "$parts" ] && note "A. the Debian package" &&
	fresh_tree "$work/deb/authguard" && run_block deb-install "$work/deb/authguard"; then
	if command -v lintian >/dev/null; then
		lintian --fail-on error "$work"/deb/authguard_*_amd64.changes >"$work/lintian.out" 2>&1
		ok $? "lintian: no errors"
		grep -E '^[EWI]: ' "$work/lintian.out" | sed 's/^/#   /'
	else
		ok 0 "lintian # SKIP not installed"
	fi
	check "dpkg: authguard is installed" \
		sh -c "test \"\$(dpkg-query -W -f='\${db:Status-Status}' authguard)\" = installed"
	check "/etc/security/authguard.conf is a conffile" \
		sh -c "dpkg-query -W -f='\${Conffiles}' authguard | grep -q '^ /etc/security/authguard.conf '"
	installed_checks /lib/systemd/system "$work/deb/authguard"
	rm -f "$libdir/authguard/sasl2/libsasldb.so" # the admin's link, not the package's

	# an edited config survives a reinstall, and the store too
	echo "# edited by the install test" >>/etc/security/authguard.conf
	(cd "$work/deb" && apt-get install --reinstall ./authguard_*_amd64.deb) >"$work/reinstall.log" 2>&1
	ok $? "reinstall"
	check "... keeps the edited config" grep -qx '# edited by the install test' /etc/security/authguard.conf
	check "... and the store" sh -c "authguard-admin stats | grep -Eq '^attempts_total +13\$'"

	run_block deb-remove "$work/deb/authguard"
	check "remove: the module is gone" test ! -e "$libdir/security/pam_authguard.so"
	check "remove: the edited config is kept" grep -qx '# edited by the install test' /etc/security/authguard.conf
	check "remove: the store is kept" test -s /var/lib/authguard/data.mdb
	run_block deb-purge "$work/deb/authguard"
	check "purge: the config is gone" test ! -e /etc/security/authguard.conf
	check "purge: the store is gone" test ! -e /var/lib/authguard
	check "purge: nothing of the package is left" test ! -e "$libdir/authguard" -a ! -e /usr/sbin/authguard-admin
	check "purge: the group stays (as documented)" getent group authguard
fi
note "A took $((SECONDS - t_start)) s"

# ==== B. from source ==================================================================
t_b=$SECONDS
case " $parts " in *" src "*) ;; *) note "B skipped (AG_INSTALL_PARTS=$parts)" ;; esac
if [ "${parts#*src}" != "$parts" ] && note "B. from source" && fresh_tree "$work/src/authguard" &&
	run_block src-build "$work/src/authguard" && run_block src-store "$work/src/authguard"; then
	installed_checks /usr/lib/systemd/system "$work/src/authguard"
	# the README says it is safe to run again
	run_block src-store "$work/src/authguard"
	check "src-store again keeps the store" sh -c "authguard-admin stats | grep -Eq '^attempts_total +13\$'"
	modes "store directory" /var/lib/authguard "root:authguard 2750"
	rm -f "$libdir/authguard/sasl2/libsasldb.so"
	command -v systemctl >/dev/null && systemctl disable authguard-gc.timer >/dev/null 2>&1
	(cd "$work/src/authguard" && make uninstall) >"$work/uninstall.log" 2>&1
	ok $? "make uninstall"
	check "make uninstall: the module and the plugin are gone" \
		test ! -e "$libdir/security/pam_authguard.so" -a ! -e "$libdir/authguard/sasl2/authguard.so"
fi
note "B took $((SECONDS - t_b)) s; in all $((SECONDS - t_start)) s"

echo "1..$n"
echo "install test: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
