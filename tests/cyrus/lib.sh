# tests/cyrus/lib.sh - a real Cyrus imapd (master, imapd, pop3d) on loopback,
# with the authguard SASL plugin set up as README.md says.
# Sourced (bash) by tests/cyrus/run.sh; defines functions and defaults and
# does nothing on its own. See tests/cyrus/README.md for what was found
# about Cyrus on the way.
#
# Cyrus comes from Debian's cyrus-common, cyrus-imapd and cyrus-pop3d .debs,
# unpacked (they cannot be installed beside dovecot-imapd): cy_missing
# fetches them with `apt-get download` and unpacks them with `dpkg -x` into
# $CY_DEBS/root the first time. Their shared libraries come as ordinary
# packages (libxapian30 libical3 ...: see .ci/run).
#
# ---- interface ---------------------------------------------------------------
#   why=$(cy_missing)   why Cyrus cannot run here, nothing when it can (fetches
#                       and unpacks the .debs if not there yet)
#   cy_scratch PREFIX   a fresh scratch directory $S, laid out below
#   cy_users USER...    sasldb users; each one's password is pw-USER
#   cy_sysdir           $S/sysdir: a stand-in for libsasl2's own plugin
#                       directory with README.md's libauthguard.so link in it
#   cy_agconf [LINE...] writes $AGCONF: the test defaults (db_dir = $S/store,
#                       log = file:$LOG, tarpit_base = 20ms, tarpit_max =
#                       320ms), then each LINE ("key = value"; the default
#                       of that key is left out); a LINE "-key" only leaves
#                       that default out (e.g. -log: authguard's own default,
#                       log = syslog)
#   cy_start            starts Cyrus's master (imapd and pop3d) on two free
#                       random ports of 127.0.0.1: IMAP_PORT, POP_PORT; MPID
#                       the master's pid. Returns 1 (reason in CY_ERR) if
#                       either port does not greet within 10 s. Knobs, read
#                       when it is called:
#                         CY_SASL_PATH  SASL_PATH given to the master
#                                       (default $S/sasl2; "-": none at all)
#                         CY_CANON      sasl_canon_user_plugin (default
#                                       authguard; empty: the line is left out)
#                         CY_AGCONF_PATH  sasl_authguard_conf (default $AGCONF)
#                         CY_SASL_LOG_LEVEL  sasl_log_level (default 4, as
#                                       README.md says; empty: left out)
#                         CY_IMAPD_EXTRA  more imapd.conf lines
#   cy_stop             SIGTERM to the master, SIGKILL after 10 s; no Cyrus
#                       process of this run is left (CY_LEFT: pids that were)
#   cy_client_start / cy_client_stop   the client, saslc.py (Python's imaplib
#                       and poplib), as a coprocess for the whole run
#   cy_try PROTO METHOD SRC USER PASS  one connection, one authentication:
#                       PROTO imap|pop3; METHOD PLAIN (AUTHENTICATE PLAIN /
#                       AUTH PLAIN: the wrapped mechanism) or LOGIN (IMAP
#                       LOGIN / POP3 USER+PASS: sasl_checkpass, the canonuser);
#                       SRC a loopback address such as 127.0.5.5 (each /24 a
#                       different network for the guard). Sets ST (OK, NO,
#                       BAD, ERR-...) and MS (round trip in ms).
#   cy_as_user CMD...   runs CMD as Cyrus's user (e.g. authguard-admin on the
#                       store Cyrus wrote: it refuses a store of another user)
#   cy_cleanup          stops everything; removes $S unless KEEP=1
#
# Files in $S:
#   $SYSLOG          Cyrus's log: every syslog(3) call of every process of
#                    the run (master, imapd, pop3d, libsasl2, the plugin with
#                    log = syslog), one rsyslog-format line each
#                    ("Mmm dd hh:mm:ss host ident[pid]: message"), written by
#                    tests/cyrus/syslog_shim.so (LD_PRELOAD, AG_SYSLOG_FILE).
#                    Cyrus's idents: cyrus/imap, cyrus/pop3, master.
#   $LOG             authguard's attempt log (when log = file:$LOG)
#   $AGCONF          authguard.conf (imapd.conf's sasl_authguard_conf)
#   $S/etc/imapd.conf, $S/etc/cyrus.conf   Cyrus's configuration
#   $S/config        Cyrus's configdirectory; $S/spool its partition
#   $S/sasl2         the private SASL plugin directory: authguard.so and the
#                    libsasldb.so link, as README.md says
#   $S/sasldb2       the users (saslpasswd2 -f)
#   $S/store         authguard's store (db_dir)
#   $S/client.log    the client's requests and answers
#
# Cyrus refuses to run its services as root: started as root, the master
# makes itself CY_USER (cyrus_user in imapd.conf; nobody here, the run's
# files are given to it); started as another user, everything runs as
# that user. The processes of the run are the master's children.
#
# By hand (from a build tree; AG_TEST_KEEP=1 keeps $S):
#   AG_TEST_SASL_PLUGIN=$PWD/sasl_plugin/.libs/authguard.so \
#   AG_TEST_SYSLOG_SHIM=$PWD/tests/cyrus/.libs/syslog_shim.so \
#   AG_TEST_CYRUS_DEBS=$PWD/tests/cyrus/debs ../tests/cyrus/run.sh
# or in a script of your own:
#   . tests/cyrus/lib.sh; why=$(cy_missing); cy_scratch ag-x; cy_users alice
#   cy_agconf; cy_start; cy_client_start; cy_try imap PLAIN 127.0.1.1 alice pw-alice
#   echo "$ST"; tail "$SYSLOG" "$LOG"; cy_cleanup
#
# Environment (defaults: Debian's locations):
#   AG_TEST_SASL_PLUGIN  authguard.so (/usr/lib/<triplet>/authguard/sasl2/authguard.so)
#   AG_TEST_SYSLOG_SHIM  syslog_shim.so (built by make check: tests/cyrus/.libs/)
#   AG_TEST_CYRUS_DEBS   where the .debs are fetched and unpacked (tests/cyrus/debs
#                        beside this file; make check: the build tree's)
#   AG_TEST_CYRUS_ROOT   an unpacked Cyrus root to use instead (nothing fetched)
#   AG_TEST_ADMIN        authguard-admin (optional; in PATH)
#   AG_TEST_PYTHON       python3
#   AG_TEST_SASLPASSWD   saslpasswd2 (sasl2-bin)

CY_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
triplet=$(gcc -dumpmachine 2>/dev/null || true)
case $triplet in *-linux-gnu) ;; *) triplet="$(uname -m)-linux-gnu" ;; esac
PLUGIN=${AG_TEST_SASL_PLUGIN:-/usr/lib/$triplet/authguard/sasl2/authguard.so}
SHIM=${AG_TEST_SYSLOG_SHIM:-$CY_HERE/../../build/tests/cyrus/.libs/syslog_shim.so}
CY_DEBS=${AG_TEST_CYRUS_DEBS:-$CY_HERE/debs}
CY_ROOT=${AG_TEST_CYRUS_ROOT:-$CY_DEBS/root}
ADMIN=${AG_TEST_ADMIN:-$(command -v authguard-admin 2>/dev/null || true)}
PYTHON=${AG_TEST_PYTHON:-$(command -v python3 2>/dev/null || echo python3)}
SASLPASSWD=${AG_TEST_SASLPASSWD:-$(command -v saslpasswd2 2>/dev/null || echo /usr/sbin/saslpasswd2)}
SASL_SYSDIR=/usr/lib/$triplet/sasl2
CY_BIN=$CY_ROOT/usr/lib/cyrus/bin
CY_LIBS=$CY_ROOT/usr/lib/$triplet
CY_PKGS="cyrus-common cyrus-imapd cyrus-pop3d"
CY_REALM=authguard-test.example # Cyrus's servername, the sasldb users' realm
IO_TIMEOUT=${IO_TIMEOUT:-10}    # seconds for any one reply
MPID=
CPID=

sanitized() { # sanitized FILE: built with a sanitizer runtime
	LC_ALL=C readelf -d "$1" 2>/dev/null | grep -qE 'NEEDED.*lib(a|t|ub|m)san' ||
		LC_ALL=C nm -D --undefined-only "$1" 2>/dev/null | grep -qE ' __(a|t|ub|m)san_'
}

# cy_fetch: the .debs of the candidate version, unpacked into $CY_ROOT
# (made whole in a temporary directory, then renamed: a run that dies
# half-way leaves nothing that looks usable). Returns 1 with CY_ERR.
cy_fetch() {
	local tmp p
	[ -x "$CY_BIN/imapd" ] && return 0
	mkdir -p "$CY_DEBS" || { CY_ERR="cannot make $CY_DEBS"; return 1; }
	tmp=$(mktemp -d "$CY_DEBS/fetch.XXXXXX") || { CY_ERR="mktemp in $CY_DEBS failed"; return 1; }
	chmod 0755 "$tmp" # apt's _apt user writes the download as root's helper
	command -v apt-get >/dev/null || { CY_ERR="no apt-get: cannot fetch $CY_PKGS"; rm -rf "$tmp"; return 1; }
	# shellcheck disable=SC2086 # a list of package names
	if ! (cd "$tmp" && apt-get download -q $CY_PKGS) >"$tmp/apt.log" 2>&1; then
		CY_ERR="apt-get download $CY_PKGS failed: $(grep -E '^E:' "$tmp/apt.log" | head -n 1)"
		rm -rf "$tmp"
		return 1
	fi
	for p in $CY_PKGS; do
		set -- "$tmp"/"${p}"_*.deb
		[ -r "$1" ] && dpkg -x "$1" "$tmp/root" ||
			{ CY_ERR="dpkg -x of $p failed"; rm -rf "$tmp"; return 1; }
	done
	rm -f "$tmp"/*.deb "$tmp/apt.log"
	if ! mv -T "$tmp/root" "$CY_ROOT" 2>/dev/null; then
		rm -rf "$tmp"
		[ -x "$CY_BIN/imapd" ] || { CY_ERR="cannot move the unpacked root to $CY_ROOT"; return 1; }
	fi
	rm -rf "$tmp"
}

# cy_missing: prints why the test cannot run here (nothing when it can)
cy_missing() {
	local f miss
	for f in "$PLUGIN" "$SHIM"; do
		case $f in /*) ;; *) echo "$f: an absolute path is needed"; return ;; esac
		[ -r "$f" ] || { echo "$f not found (build first: make check builds syslog_shim.so)"; return; }
		if sanitized "$f"; then
			# the sanitizer runtime must be the first library of the process
			echo "$f is built with a sanitizer: Cyrus cannot load it (the plain build runs this test)"
			return
		fi
	done
	"$PYTHON" -c 'import imaplib, poplib' 2>/dev/null ||
		{ echo "python3 with imaplib not found ($PYTHON): install python3"; return; }
	[ -x "$SASLPASSWD" ] || { echo "saslpasswd2 not found: install sasl2-bin"; return; }
	[ -r "$SASL_SYSDIR/libsasldb.so.2" ] ||
		{ echo "$SASL_SYSDIR/libsasldb.so.2 not found: install libsasl2-modules-db"; return; }
	cy_fetch || { echo "Cyrus not available: $CY_ERR"; return; }
	for f in master imapd pop3d; do
		[ -x "$CY_BIN/$f" ] || { echo "$CY_BIN/$f missing"; return; }
	done
	miss=$(LD_LIBRARY_PATH=$CY_LIBS ldd "$CY_BIN/imapd" "$CY_BIN/pop3d" 2>/dev/null |
		awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')
	[ -z "$miss" ] || echo "Cyrus's libraries not found: ${miss}(install libxapian30 libical3, see .ci/run)"
}

# cy_scratch PREFIX: the fresh scratch directory S (see the top)
cy_scratch() {
	local d
	S=$(mktemp -d "/tmp/$1.XXXXXX") || { CY_ERR="mktemp failed"; return 1; }
	chmod 0755 "$S"
	LOG=$S/authguard.log
	SYSLOG=$S/syslog.log
	AGCONF=$S/authguard.conf
	if [ "$(id -u)" = 0 ]; then
		CY_USER=nobody CY_GROUP=$(id -gn nobody 2>/dev/null) ||
			{ CY_ERR="user nobody missing"; return 1; }
	else
		CY_USER=$(id -un) CY_GROUP=$(id -gn)
	fi
	# Cyrus's services run as CY_USER and exec or load these: in a tree that
	# user cannot reach (a build under /root) they would not start, so they
	# are copied into $S then.
	if ! cy_as_user test -x "$CY_BIN/imapd" -a -r "$PLUGIN" -a -r "$SHIM" 2>/dev/null; then
		mkdir -p "$S/copy" && cp -a "$CY_ROOT" "$S/copy/root" && cp "$PLUGIN" "$SHIM" "$S/copy/" ||
			{ CY_ERR="cannot copy Cyrus and the plugin into $S"; return 1; }
		CY_ROOT=$S/copy/root CY_BIN=$S/copy/root/usr/lib/cyrus/bin CY_LIBS=$S/copy/root/usr/lib/$triplet
		PLUGIN=$S/copy/${PLUGIN##*/} SHIM=$S/copy/${SHIM##*/}
	fi
	if [ -n "$ADMIN" ] && ! cy_as_user test -x "$ADMIN" 2>/dev/null; then
		mkdir -p "$S/copy" && cp "$ADMIN" "$S/copy/" && ADMIN=$S/copy/${ADMIN##*/} ||
			{ CY_ERR="cannot copy $ADMIN into $S"; return 1; }
	fi
	for d in etc config config/db config/socket config/proc config/lock spool sasl2 store; do
		mkdir -p "$S/$d" || { CY_ERR="cannot populate $S"; return 1; }
	done
	ln -s "$PLUGIN" "$S/sasl2/authguard.so" &&
		ln -s "$SASL_SYSDIR/libsasldb.so.2" "$S/sasl2/libsasldb.so" ||
		{ CY_ERR="cannot link the plugins into $S/sasl2"; return 1; }
	: >"$LOG" && : >"$SYSLOG" && : >"$S/client.log" || { CY_ERR="cannot make the logs"; return 1; }
	chown -R "$CY_USER:$CY_GROUP" "$S/config" "$S/spool" "$S/store" "$LOG" "$SYSLOG" ||
		{ CY_ERR="cannot give $S to $CY_USER"; return 1; }
	chmod 0700 "$S/store"
	cy_agconf
}

# cy_sysdir: $S/sysdir, a stand-in for libsasl2's own plugin directory (the
# one it reads without SASL_PATH; the test must not touch the real one):
# links to every plugin there, plus README.md's libauthguard.so link.
# Cyrus uses it with CY_SASL_PATH=$S/sysdir and, since the plugin loads the
# stock mechanisms from there too, sasl_authguard_mech_dir: $S/sysdir.
cy_sysdir() {
	local f -
	set +f
	mkdir -p "$S/sysdir" || { CY_ERR="cannot make $S/sysdir"; return 1; }
	for f in "$SASL_SYSDIR"/*.so*; do
		ln -sf "$f" "$S/sysdir/${f##*/}" || { CY_ERR="cannot link $f"; return 1; }
	done
	ln -sf "$PLUGIN" "$S/sysdir/libauthguard.so" || { CY_ERR="cannot link $PLUGIN"; return 1; }
}

# cy_users USER...: each USER gets the password pw-USER (sasldb, realm CY_REALM)
cy_users() {
	local u
	for u in "$@"; do
		printf 'pw-%s' "$u" | "$SASLPASSWD" -p -c -f "$S/sasldb2" -u "$CY_REALM" "$u" ||
			{ CY_ERR="saslpasswd2 failed for $u"; return 1; }
	done
	chown "$CY_USER:$CY_GROUP" "$S/sasldb2" && chmod 0600 "$S/sasldb2"
}

# cy_agconf [LINE...]: authguard.conf; a LINE replaces the default of its key
cy_agconf() {
	local l k skip=' '
	for l in "$@"; do
		k=${l#-}
		k=${k%%=*}
		k=${k%% *}
		skip="$skip$k "
	done
	{
		echo "# authguard test run $S"
		for l in "db_dir = $S/store" "log = file:$LOG" "tarpit_base = 20ms" "tarpit_max = 320ms"; do
			k=${l%% *}
			case $skip in *" $k "*) ;; *) echo "$l" ;; esac
		done
		for l in "$@"; do
			case $l in -*) ;; *) echo "$l" ;; esac
		done
	} >"$AGCONF"
}

write_cyrus_conf() {
	{
		echo "# authguard test run $S"
		echo "configdirectory: $S/config"
		echo "partition-default: $S/spool"
		echo "defaultpartition: default"
		echo "proc_path: $S/config/proc"
		echo "mboxname_lockpath: $S/config/lock"
		echo "master_pid_file: $S/master.pid"
		echo "servername: $CY_REALM"
		echo "cyrus_user: $CY_USER"
		echo "cyrus_group: $CY_GROUP"
		echo "allowplaintext: yes"
		# Cyrus sleeps 3 s after each failed login by default: the
		# guard's tarpit is what is measured here
		echo "failedloginpause: 0"
		echo "sasl_sasldb_path: $S/sasldb2"
		# README.md's lines
		echo "sasl_pwcheck_method: auxprop"
		echo "sasl_auxprop_plugin: sasldb"
		echo "sasl_mech_list: PLAIN LOGIN"
		[ -z "${CY_CANON-authguard}" ] || echo "sasl_canon_user_plugin: ${CY_CANON-authguard}"
		echo "sasl_authguard_conf: ${CY_AGCONF_PATH:-$AGCONF}"
		# pop3d (unlike imapd) leaves SASL's log to libsasl2, which drops
		# what is below sasl_log_level (default 1, errors): 4 lets the
		# attempt lines (notices) through
		[ -z "${CY_SASL_LOG_LEVEL-4}" ] || echo "sasl_log_level: ${CY_SASL_LOG_LEVEL-4}"
		[ -z "${CY_IMAPD_EXTRA:-}" ] || printf '%s\n' "$CY_IMAPD_EXTRA"
	} >"$S/etc/imapd.conf"
	cat >"$S/etc/cyrus.conf" <<-EOF
		# authguard test run $S
		START {
		  recover cmd="$CY_BIN/ctl_cyrusdb -C $S/etc/imapd.conf -r"
		}
		SERVICES {
		  imap cmd="$CY_BIN/imapd -C $S/etc/imapd.conf" listen="127.0.0.1:$IMAP_PORT" prefork=0 maxchild=20
		  pop3 cmd="$CY_BIN/pop3d -C $S/etc/imapd.conf" listen="127.0.0.1:$POP_PORT" prefork=0 maxchild=20
		}
	EOF
}

alive() { # alive PID: the process exists and is not a zombie
	local st IFS=' '
	{ read -r _ _ st _ <"/proc/$1/stat"; } 2>/dev/null || return 1
	[ "$st" != Z ]
}
port_busy() { { exec 9<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && exec 9>&-; }
greets() { # greets PORT: a "* OK" or "+OK" greeting within 2 s (in CY_GREETING)
	local fd line=''
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
	IFS= read -r -t 2 -u "$fd" line
	exec {fd}>&-
	CY_GREETING=${line%$'\r'}
	case $line in "* OK"* | "+OK"*) return 0 ;; esac
	return 1
}
# cy_as_user CMD...: CMD as Cyrus's user (what reads the store Cyrus wrote)
cy_as_user() {
	if [ "$(id -u)" = 0 ] && [ "$CY_USER" != root ]; then
		setpriv --reuid="$CY_USER" --regid="$CY_GROUP" --clear-groups -- "$@"
	else
		"$@"
	fi
}

cy_family() { # the master (MPID) and its live children
	local f st rest ppid -
	set +f
	[ -n "$MPID" ] || return 0
	alive "$MPID" && echo "$MPID"
	for f in /proc/[0-9]*/stat; do
		{ read -r st <"$f"; } 2>/dev/null || continue
		rest=${st##*) }
		ppid=${rest#* }
		ppid=${ppid%% *}
		[ "$ppid" = "$MPID" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
	done
}

cy_start() {
	local env try i
	CY_ERR=
	for try in 1 2 3; do
		IMAP_PORT=$((20000 + RANDOM % 40000))
		POP_PORT=$((20000 + RANDOM % 40000))
		[ "$IMAP_PORT" != "$POP_PORT" ] || continue
		port_busy "$IMAP_PORT" && continue
		port_busy "$POP_PORT" && continue
		write_cyrus_conf
		rm -f "$S/master.pid"
		env=(LD_LIBRARY_PATH="$CY_LIBS" LD_PRELOAD="$SHIM" AG_SYSLOG_FILE="$SYSLOG")
		case ${CY_SASL_PATH-$S/sasl2} in
		-) ;;
		*) env+=(SASL_PATH="${CY_SASL_PATH-$S/sasl2}") ;;
		esac
		# in a session of its own: on SIGTERM the master signals its whole
		# process group, which would otherwise be this script's (when both
		# run as one user); not a group leader here, setsid does not fork
		setsid env -u SASL_PATH "${env[@]}" "$CY_BIN/master" -C "$S/etc/imapd.conf" -M "$S/etc/cyrus.conf" \
			-p "$S/master.pid" </dev/null >>"$S/master.out" 2>&1 &
		MPID=$!
		i=$((SECONDS + 10))
		while [ "$SECONDS" -le "$i" ]; do
			greets "$POP_PORT" && greets "$IMAP_PORT" && return 0
			alive "$MPID" || break
			sleep 0.1
		done
		cy_stop
		grep -qs "Address already in use" "$SYSLOG" "$S/master.out" || break
	done
	CY_ERR="Cyrus did not greet on 127.0.0.1:$IMAP_PORT and :$POP_PORT within 10 s: $(tail -n 3 "$S/master.out" "$SYSLOG" 2>/dev/null | tr '\n' ' ')"
	return 1
}

cy_stop() { # SIGTERM, then SIGKILL after 10 s; polls, never "wait"s
	local i p fam
	CY_LEFT=
	[ -n "$MPID" ] || return 0
	fam=$(cy_family)
	kill -TERM "$MPID" 2>/dev/null
	for i in $(seq 100); do
		alive "$MPID" || break
		sleep 0.1
	done
	if alive "$MPID"; then
		echo "# cyrus master (pid $MPID) ignored SIGTERM for 10 s: SIGKILL"
		kill -KILL "$MPID" 2>/dev/null
	fi
	MPID=
	for i in $(seq 50); do
		CY_LEFT=
		for p in $fam; do alive "$p" && CY_LEFT="$CY_LEFT $p"; done
		[ -z "$CY_LEFT" ] && break
		sleep 0.1
	done
	for p in $CY_LEFT; do kill -KILL "$p" 2>/dev/null; done
}

# --------------------------------------------------------------------- client
cy_client_start() {
	coproc SASLC { exec "$PYTHON" "$CY_HERE/saslc.py" "$IMAP_PORT" "$POP_PORT" "$IO_TIMEOUT" 2>>"$S/client.log"; }
	CPID=$SASLC_PID
	exec {CIN}>&"${SASLC[1]}" {COUT}<&"${SASLC[0]}"
}
cy_client_stop() {
	[ -n "$CPID" ] || return 0
	exec {CIN}>&- {COUT}<&-
	kill "$CPID" 2>/dev/null
	CPID=
}
cy_try() {
	local reply=''
	ST=ERR-client MS=0
	printf '%s\t%s\t%s\t%s\t%s\n' "$@" >&"$CIN" 2>/dev/null || return
	if ! IFS= read -r -t $((IO_TIMEOUT * 2 + 5)) -u "$COUT" reply; then
		# a late reply would be taken for the next request's: start over
		echo "[$3] $1 $2 $4 -> no answer from the client: restarted" >>"$S/client.log"
		cy_client_stop
		cy_client_start
		ST=ERR-client-timeout
		return
	fi
	ST=${reply% *} MS=${reply##* }
	echo "[$3] $1 $2 $4 -> $ST ($MS ms)" >>"$S/client.log"
}

cy_cleanup() {
	cy_client_stop
	cy_stop
	[ -n "${S:-}" ] || return 0
	if [ "${KEEP:-0}" = 1 ]; then
		echo "# kept: $S" >&2
	else
		rm -rf "$S"
	fi
}
