# tests/dovecot/lib.sh - a real Dovecot on loopback in front of a PAM stack.
# Sourced (bash) by tests/dovecot/run.sh, bench/dovecot.sh and
# bench/compare-faillock.sh. Defines functions and defaults; does nothing
# on its own. See tests/dovecot/README.md for what was found about Dovecot
# and pam_wrapper on the way.
#
# Environment (defaults: Debian's locations):
#   AG_TEST_MODULE   pam_authguard.so   (/usr/lib/<triplet>/security/pam_authguard.so)
#   AG_TEST_WRAPPER  libpam_wrapper.so  (/usr/lib/<triplet>/libpam_wrapper.so)
#   AG_TEST_MATRIX   pam_matrix.so      (/usr/lib/<triplet>/pam_wrapper/pam_matrix.so)
#   AG_TEST_NSS_WRAPPER libnss_wrapper.so (/usr/lib/<triplet>/libnss_wrapper.so;
#                    only for the pam_unix back end: its users and hashes)
#   AG_TEST_ADMIN    authguard-admin    (optional; in PATH)
#   AG_TEST_DOVECOT  dovecot binary     (dovecot in PATH, else /usr/sbin/dovecot)
#   AG_TEST_DOVECOT_LIBEXEC  directory of Dovecot's auth binary (/usr/lib/dovecot)
#   AG_TEST_PRELOAD  auth-worker (default: pam_wrapper in the auth workers only)
#                    or all (in every Dovecot process, through import_environment)
#   AG_TEST_PYTHON   python3 (runs imapc.py, the IMAP client: Python's imaplib)

DV_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
triplet=$(gcc -dumpmachine 2>/dev/null || true)
case $triplet in *-linux-gnu) ;; *) triplet="$(uname -m)-linux-gnu" ;; esac
MODULE=${AG_TEST_MODULE:-/usr/lib/$triplet/security/pam_authguard.so}
WRAPPER=${AG_TEST_WRAPPER:-/usr/lib/$triplet/libpam_wrapper.so}
MATRIX=${AG_TEST_MATRIX:-/usr/lib/$triplet/pam_wrapper/pam_matrix.so}
NSSWRAP=${AG_TEST_NSS_WRAPPER:-/usr/lib/$triplet/libnss_wrapper.so}
ADMIN=${AG_TEST_ADMIN:-$(command -v authguard-admin 2>/dev/null || true)}
DOVECOT=${AG_TEST_DOVECOT:-$(command -v dovecot 2>/dev/null || echo /usr/sbin/dovecot)}
LIBEXEC=${AG_TEST_DOVECOT_LIBEXEC:-}
PYTHON=${AG_TEST_PYTHON:-$(command -v python3 2>/dev/null || echo python3)}
PAMDIR=/usr/lib/$triplet/security
[ -d "$PAMDIR" ] || PAMDIR=/lib/$triplet/security
IO_TIMEOUT=${IO_TIMEOUT:-10} # seconds for any one IMAP reply
DPID=
CPID=

# dv_missing: prints why Dovecot cannot be run here (nothing when it can)
dv_missing() {
	if [ ! -x "$DOVECOT" ]; then
		echo "dovecot not found ($DOVECOT): install dovecot-imapd (or set AG_TEST_DOVECOT)"
	elif ! "$PYTHON" -c 'import imaplib' 2>/dev/null; then
		echo "python3 with imaplib not found ($PYTHON): install python3 (or set AG_TEST_PYTHON)"
	elif [ ! -x "${AG_TEST_DOVECOT_LIBEXEC:-/usr/lib/dovecot}/imap-login" ] &&
		[ ! -x /usr/libexec/dovecot/imap-login ]; then
		echo "dovecot's imap-login not found: install dovecot-imapd (or set AG_TEST_DOVECOT_LIBEXEC)"
	elif [ -r "$MODULE" ] && { LC_ALL=C readelf -d "$MODULE" 2>/dev/null | grep -qE 'NEEDED.*lib(a|t|ub|m)san' ||
		LC_ALL=C nm -D --undefined-only "$MODULE" 2>/dev/null | grep -qE ' __(a|t|ub|m)san_'; }; then
		# the sanitizer runtime must be the first library of the process,
		# and Dovecot's auth binary does not load it
		echo "$MODULE is built with a sanitizer: Dovecot cannot load it (the plain build runs this test)"
	fi
}

# dv_script_init NAME: for scripts that run Dovecot one time after another
# (the benchmarks): checks what is needed (or dies), and on exit stops
# Dovecot and removes the scratch directories listed in SCRATCHES, unless
# AG_TEST_KEEP=1 or the script died (die MESSAGE: on stderr, status 1).
dv_script_init() {
	local why
	DV_NAME=$1
	KEEP=${AG_TEST_KEEP:-0}
	SCRATCHES=()
	why=$(dv_missing)
	[ -z "$why" ] || die "$why"
	dv_check || die "$DV_ERR"
	trap 'dv_script_cleanup; exit 1' INT TERM HUP
	trap dv_script_cleanup EXIT
}
die() {
	echo "${DV_NAME:-dovecot}: $*" >&2
	KEEP=1 # what went wrong is in there
	exit 1
}
dv_script_cleanup() {
	client_stop
	stop_dovecot
	clean_pam_wrapper_dirs
	if [ "$KEEP" = 1 ]; then
		[ ${#SCRATCHES[@]} = 0 ] || echo "# kept: ${SCRATCHES[*]}" >&2
	else
		rm -rf "${SCRATCHES[@]}"
	fi
}

# The dv_* functions below return 1 with the reason in DV_ERR.

# dv_check: the files every run needs; finds Dovecot's auth binary (LIBEXEC)
dv_check() {
	local f d
	for f in "$MODULE" "$WRAPPER" "$MATRIX"; do
		case $f in /*) ;; *)
			DV_ERR="$f: an absolute path is needed (AG_TEST_MODULE, AG_TEST_WRAPPER, AG_TEST_MATRIX)"
			return 1 ;;
		esac
		[ -r "$f" ] || { DV_ERR="$f not found (build first; install libpam-wrapper)"; return 1; }
	done
	[ -z "$ADMIN" ] || [ -x "$ADMIN" ] || { DV_ERR="AG_TEST_ADMIN=$ADMIN is not executable"; return 1; }
	if [ -z "$LIBEXEC" ]; then
		for d in /usr/lib/dovecot /usr/libexec/dovecot "$(dirname "$DOVECOT")/../lib/dovecot"; do
			[ -x "$d/auth" ] && LIBEXEC=$d && break
		done
	fi
	[ -x "$LIBEXEC/auth" ] || {
		DV_ERR="dovecot's auth binary not found (AG_TEST_DOVECOT_LIBEXEC: the directory of imap-login and auth)"
		return 1
	}
}

# dv_scratch PREFIX: a fresh scratch directory S with LOG (authguard's log)
# and DLOG (Dovecot's). Dovecot runs as whoever starts this. As root it
# keeps its usual privilege separation: auth workers as root (as in
# production), login processes as dovenull, internal ones as dovecot, mail
# as nobody.
dv_scratch() {
	local u
	S=$(mktemp -d "/tmp/$1.XXXXXX") || { DV_ERR="mktemp failed"; return 1; }
	chmod 0755 "$S" # as root, login processes run as dovenull and reach base_dir
	LOG=$S/authguard.log
	DLOG=$S/dovecot.log
	if [ "$(id -u)" = 0 ]; then
		for u in dovecot dovenull nobody; do
			getent passwd "$u" >/dev/null ||
				{ DV_ERR="user $u missing (dovecot-core creates dovecot and dovenull)"; return 1; }
		done
		IUSER=dovecot IGROUP=$(id -gn dovecot) LUSER=dovenull
		MUID=$(id -u nobody) MGID=$(id -g nobody)
	else
		IUSER=$(id -un) IGROUP=$(id -gn) LUSER=$IUSER
		MUID=$(id -u) MGID=$(id -g)
	fi
	mkdir -p "$S/mail" "$S/home" "$S/pam.d" "$S/run" "$S/state" "$S/faillock" ||
		{ DV_ERR="cannot populate $S"; return 1; }
	chown "$MUID:$MGID" "$S/mail" "$S/home" || { DV_ERR="cannot chown $S/mail"; return 1; }
	: >"$LOG"
}

alive() { # alive PID: the process exists and is not a zombie
	local st IFS=' '
	{ read -r _ _ st _ <"/proc/$1/stat"; } 2>/dev/null || return 1
	[ "$st" != Z ]
}
# Dovecot writes its process titles over the environment block, so its
# processes are found through the master: its children (every Dovecot
# process is one) are listed before it is stopped, and checked after.
dv_family() { # the master (DPID) and its live children
	local f st rest ppid -
	set +f
	[ -n "$DPID" ] || return 0
	alive "$DPID" && echo "$DPID"
	for f in /proc/[0-9]*/stat; do
		{ read -r st <"$f"; } 2>/dev/null || continue
		rest=${st##*) }
		ppid=${rest#* }
		ppid=${ppid%% *}
		[ "$ppid" = "$DPID" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
	done
}
stop_dovecot() { # SIGTERM, then SIGKILL after 10 s; polls, never "wait"s
	local i p fam
	DV_LEFT=
	[ -n "$DPID" ] || return 0
	fam=$(dv_family)
	kill -TERM "$DPID" 2>/dev/null
	for i in $(seq 100); do
		alive "$DPID" || break
		[ "$i" = 100 ] || sleep 0.1
	done
	if alive "$DPID"; then
		echo "# dovecot (pid $DPID) ignored SIGTERM for 10 s: SIGKILL"
		kill -KILL "$DPID" 2>/dev/null
	fi
	DPID=
	# its children see the master's end on their own; DV_LEFT: any that did not
	for i in $(seq 50); do
		DV_LEFT=
		for p in $fam; do alive "$p" && DV_LEFT="$DV_LEFT $p"; done
		[ -z "$DV_LEFT" ] && break
		sleep 0.1
	done
}
# pam_wrapper (Debian's 1.1.4) copies the service files into /tmp/pam.<one
# letter or digit> when a process starts and removes that directory only on a
# normal exit; Dovecot stops its processes by signal, so theirs stay behind
# (62 names in all, shared by everyone on the host). Remove the copies of
# this run's files once their process is gone.
clean_pam_wrapper_dirs() {
	local d p
	[ -n "${S:-}" ] || return 0
	for d in /tmp/pam.?; do
		grep -qsF "# authguard test run $S" "$d/dovecot" || continue
		p=$(cat "$d/pid" 2>/dev/null)
		[ -n "$p" ] && kill -0 "$p" 2>/dev/null && continue
		rm -rf "$d"
	done
}

# dv_users BACKEND USER...: each USER gets the password pw-USER.
#   matrix: pam_matrix's password file
#   unix:   pam_unix through nss_wrapper: passwd and group files, with
#           hashes made by the system's crypt() default method (yescrypt on
#           Debian 12), so a password check costs what it costs in production
dv_users() {
	local backend=$1 u
	shift
	case $backend in
	matrix)
		for u in "$@"; do echo "$u:pw-$u:dovecot"; done >"$S/passdb"
		;;
	unix)
		[ -r "$NSSWRAP" ] || { DV_ERR="$NSSWRAP not found: install libnss-wrapper (or set AG_TEST_NSS_WRAPPER)"; return 1; }
		# the host's own accounts first: Dovecot looks some of them up
		getent passwd root dovecot dovenull nobody "$(id -un)" | sort -u >"$S/passwd"
		getent group root dovecot dovenull nogroup "$(id -gn)" | sort -u >"$S/group"
		# The hash goes in passwd's own password field: pam_unix then takes
		# it from there (getpwnam_r, which nss_wrapper answers) and needs no
		# getspnam_r (which nss_wrapper does not answer).
		"$PYTHON" - "$MUID" "$MGID" "$S/home" "$@" >>"$S/passwd" <<-'EOF' || { DV_ERR="cannot make password hashes (python3, libcrypt)"; return 1; }
			import ctypes, ctypes.util, sys
			lib = ctypes.CDLL(ctypes.util.find_library("crypt"))
			lib.crypt_gensalt.restype = ctypes.c_char_p
			lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
			lib.crypt.restype = ctypes.c_char_p
			lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
			uid, gid, home = sys.argv[1:4]
			for u in sys.argv[4:]:
			    salt = lib.crypt_gensalt(None, 0, None, 0)  # None: the default method
			    h = lib.crypt(("pw-" + u).encode(), salt) if salt else None
			    if not h or h.startswith(b"*"):
			        sys.exit("crypt failed")
			    print("%s:%s:%s:%s:%s:%s/%s:/bin/false" % (u, h.decode(), uid, gid, u, home, u))
		EOF
		chmod 0600 "$S/passwd"
		;;
	*)
		DV_ERR="dv_users: unknown back end $backend"
		return 1
		;;
	esac
	DV_BACKEND=$backend
}

# dv_stack GUARD [PROBE]: the PAM service file "dovecot".
#   GUARD authguard: the README's five-line stack, the real pam_authguard.so
#                    (configuration $S/authguard.conf) around the back end
#         faillock:  Linux-PAM's pam_faillock, as its manual page sets it up
#                    (preauth requisite: a locked user is not even checked),
#                    deny=10 like authguard's user_lock_after; tally in $S/faillock
#         none:      the back end alone
#   PROBE yes: pam_exec right before the back end appends "RHOST USER" to
#         $S/reached, one line per attempt that reached the password check
dv_stack() {
	local guard=$1 probe=${2:-no} be pre='' post='' p=''
	case $DV_BACKEND in
	matrix) be="$MATRIX passdb=$S/passdb" ;;
	unix) be="$PAMDIR/pam_unix.so nodelay" ;;
	esac
	if [ "$probe" = yes ]; then
		printf '#!/bin/sh\nprintf "%%s %%s\\n" "$PAM_RHOST" "$PAM_USER" >>%s/reached\n' "$S" >"$S/probe"
		chmod 0755 "$S/probe"
		: >"$S/reached"
		p="auth     optional       $PAMDIR/pam_exec.so quiet $S/probe"
	fi
	case $guard in
	authguard)
		# (pam_matrix reports an unknown user as authinfo_unavail: counted too)
		pre="auth     requisite      $MODULE preauth conf=$S/authguard.conf"
		be="auth     [success=1 auth_err=ignore user_unknown=ignore authinfo_unavail=ignore default=die] $be"
		post="auth     [default=die]  $MODULE authfail conf=$S/authguard.conf
auth     sufficient     $MODULE authsucc conf=$S/authguard.conf
account  required       $MODULE conf=$S/authguard.conf"
		;;
	faillock)
		local fl="$PAMDIR/pam_faillock.so dir=$S/faillock deny=10 unlock_time=600 nodelay"
		pre="auth     requisite      $fl preauth"
		be="auth     [success=1 default=bad] $be"
		post="auth     [default=die]  $fl authfail
auth     sufficient     $fl authsucc
account  required       $fl"
		;;
	none)
		be="auth     required       $be
account  required       $PAMDIR/pam_permit.so"
		;;
	*)
		DV_ERR="dv_stack: unknown guard $guard"
		return 1
		;;
	esac
	# the first line marks the file as this run's (clean_pam_wrapper_dirs)
	printf '%s\n' "# authguard test run $S" "$pre" "$p" "$be" "$post" | sed '/^$/d' >"$S/pam.d/dovecot"
	printf 'auth required pam_deny.so\naccount required pam_deny.so\n' >"$S/pam.d/other"
}

# -------------------------------------------------------------------- dovecot
# Dovecot queues every failure and answers it from a 500 ms timer, even with
# auth_failure_delay = 0, unless the passdb result carries "nodelay"; a PAM
# passdb (run in auth workers) returns no fields on failure, and fields of a
# failed passdb are dropped. So a first passdb that always succeeds, adds
# nodelay, and turns its success into "failed so far, go on verifying"
# (continue-fail): the PAM passdb still decides every login.
# pam_wrapper goes into the auth worker processes only, the ones that call
# PAM (AG_TEST_PRELOAD=all: into every process, through import_environment,
# as DESIGN.md first had it; see README.md for why that is not the default).
# DV_WORKERS (optional) caps the auth worker processes.
write_dovecot_conf() {
	local pam_env="PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$S/pam.d" import worker=''
	if [ "$DV_BACKEND" = unix ]; then
		pam_env="LD_PRELOAD=$WRAPPER:$NSSWRAP $pam_env NSS_WRAPPER_PASSWD=$S/passwd NSS_WRAPPER_GROUP=$S/group"
	else
		pam_env="LD_PRELOAD=$WRAPPER $pam_env"
	fi
	if [ "${AG_TEST_PRELOAD:-auth-worker}" = all ]; then
		import="TZ $pam_env"
	else
		import="TZ"
		worker="  executable = $(command -v env) $pam_env $LIBEXEC/auth -w"
		if [ -n "${DV_WORKER_USER:-}" ]; then
			# Dovecot starts the worker as root and it drops to its user
			# itself: pam_wrapper, set up before, must leave its copy of
			# the service files readable (Dovecot's umask is 0077)
			printf '#!/bin/sh\numask 022\nexec %s %s %s/auth "$@"\n' "$(command -v env)" \
				"$pam_env" "$LIBEXEC" >"$S/auth-worker.sh"
			chmod 0755 "$S/auth-worker.sh"
			worker="  executable = $S/auth-worker.sh -w"
		fi
	fi
	[ -z "${DV_WORKERS:-}" ] || worker="$worker
  process_limit = $DV_WORKERS"
	# a non-root auth worker (DV_WORKER_USER), with the groups Dovecot
	# gives it (DV_WORKER_GROUPS, comma-separated: extra_groups)
	[ -z "${DV_WORKER_USER:-}" ] || worker="$worker
  user = $DV_WORKER_USER"
	[ -z "${DV_WORKER_GROUPS:-}" ] || worker="$worker
  extra_groups = $DV_WORKER_GROUPS"
	# idle auth workers are not stopped during a run (cpu_watch_*)
	worker="$worker
  idle_kill = 1h"
	[ -z "$worker" ] || worker="service auth-worker {
$worker
}"
	cat >"$S/dovecot.conf" <<EOF
protocols = imap
listen = 127.0.0.1
base_dir = $S/run
state_dir = $S/state
instance_name = ag-test-$$
log_path = $DLOG
info_log_path = $DLOG
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
login_trusted_networks = 127.0.0.0/8
import_environment = $import
default_internal_user = $IUSER
default_internal_group = $IGROUP
default_login_user = $LUSER
default_client_limit = 4000
first_valid_uid = 1
mail_location = maildir:$S/mail/%u
passdb {
  driver = static
  args = nopassword=y nodelay=yes
  result_success = continue-fail
}
passdb {
  driver = pam
  args = dovecot
}
userdb {
  driver = static
  args = uid=$MUID gid=$MGID home=$S/home/%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
  inet_listener imaps {
    port = 0
  }
}
$worker
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
}

port_busy() { { exec 9<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null && exec 9>&-; }

greets() { # does Dovecot answer "* OK" on $PORT?
	local fd line=''
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 1
	IFS= read -r -t 2 -u "$fd" line
	exec {fd}>&-
	case $line in "* OK"*) return 0 ;; esac
	return 1
}

start_dovecot() { # on a free random high port; sets PORT and DPID
	for _ in 1 2 3; do
		PORT=$((20000 + RANDOM % 40000))
		port_busy "$PORT" && continue
		write_dovecot_conf
		: >"$DLOG"
		"$DOVECOT" -F -c "$S/dovecot.conf" </dev/null >>"$S/dovecot.stdout" 2>&1 &
		DPID=$!
		for _ in $(seq 100); do
			greets && return 0
			alive "$DPID" || break
			sleep 0.1
		done
		stop_dovecot
		grep -qs "Address already in use" "$DLOG" "$S/dovecot.stdout" || break
	done
	return 1
}

# ------------------------------------------------------- non-root auth worker
# dv_worker_account: (root only) a system user WUSER for the auth worker,
# with a group of its own, and a group WGROUP for the store, both named
# after this process, made with the system's useradd/groupadd. WUSER is
# put into WGROUP in the group database (usermod -aG), which is what
# SECURITY.md once said was enough: Dovecot sets a service's groups
# itself, so only extra_groups gives them to the worker. Accounts of
# earlier runs whose process is gone are removed first.
# dv_worker_account_remove: removes this run's.
dv_worker_account() {
	local u pid
	for u in $(getent passwd | cut -d: -f1 | grep -E '^agdv[0-9]+$'); do
		pid=${u#agdv}
		kill -0 "$pid" 2>/dev/null || { userdel "$u"; groupdel "agdvg$pid"; } 2>/dev/null
	done
	WUSER=agdv$$ WGROUP=agdvg$$
	groupadd --system "$WGROUP" 2>"$S/account.err" &&
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$WUSER" 2>>"$S/account.err" &&
		usermod -a -G "$WGROUP" "$WUSER" 2>>"$S/account.err" ||
		{ DV_ERR="cannot make the test's accounts: $(cat "$S/account.err")"; return 1; }
}
dv_worker_account_remove() {
	[ -n "${WUSER:-}" ] || return 0
	userdel "$WUSER" 2>/dev/null
	groupdel "$WGROUP" 2>/dev/null
	WUSER=
}
# auth_worker_ids: "UID GIDS" (the real uid, the supplementary groups
# comma-separated) of each of this run's live auth worker processes
auth_worker_ids() {
	local p args uid groups k v
	for p in $(dv_family); do
		{ mapfile -d '' -t args <"/proc/$p/cmdline"; } 2>/dev/null || continue
		[ "${args[1]:-}" = -w ] || continue
		uid='' groups=''
		while read -r k v; do
			case $k in
			Uid:) uid=${v%%[[:space:]]*} ;;
			Groups:) groups=$(printf "%s" "$v" | tr -s " \t" ",") groups=${groups%,} ;;
			esac
		done <"/proc/$p/status" 2>/dev/null
		[ -n "$uid" ] && echo "$uid ${groups:--}"
	done
}

# auth_worker_ticks: "PID TICKS" (user + system CPU, clock ticks) for each
# of this run's live auth worker processes (the ones that run PAM)
auth_worker_ticks() {
	local p st args
	for p in $(dv_family); do
		{ mapfile -d '' -t args <"/proc/$p/cmdline"; } 2>/dev/null || continue
		[ "${args[1]:-}" = -w ] || continue
		{ read -r st <"/proc/$p/stat"; } 2>/dev/null || continue
		st=${st##*) }
		# shellcheck disable=SC2086
		set -- $st
		echo "$p $((${12} + ${13}))"
	done
}
# cpu_watch_start ... cpu_watch_stop: prints the CPU seconds this run's auth
# workers used in between. Dovecot ends a PAM auth worker after 100
# requests (passdb pam max_requests), taking its CPU time with it, so the
# workers are sampled twice a second and each one's last sample counts
# (what a worker used after its last sample is missed: at most half a
# second of it, once per 100 requests).
cpu_watch_start() {
	auth_worker_ticks >"$S/cpu.base"
	: >"$S/cpu.samples"
	(
		trap 'exit 0' TERM
		while :; do
			auth_worker_ticks >>"$S/cpu.samples"
			sleep 0.5
		done
	) &
	CPU_WATCH=$!
}
cpu_watch_stop() {
	kill -TERM "$CPU_WATCH" 2>/dev/null
	wait "$CPU_WATCH" 2>/dev/null
	auth_worker_ticks >>"$S/cpu.samples"
	awk -v hz="$(getconf CLK_TCK)" -v basefile="$S/cpu.base" '
		FILENAME == basefile { base[$1] = $2; next }
		{ if (!($1 in last) || $2 > last[$1]) last[$1] = $2 }
		END {
			for (p in last) t += last[p] - (p in base ? base[p] : 0)
			printf "%.2f", t / hz
		}' "$S/cpu.base" "$S/cpu.samples"
}

# --------------------------------------------------------------------- client
# The IMAP client is tests/dovecot/imapc.py (Python's imaplib), one process
# for the whole run as a coprocess: a request line per login, a reply line.
client_start() {
	coproc IMAPC { exec "$PYTHON" "$DV_HERE/imapc.py" "$PORT" "$IO_TIMEOUT" 2>>"$S/client.log"; }
	CPID=$IMAPC_PID
	exec {CIN}>&"${IMAPC[1]}" {COUT}<&"${IMAPC[0]}"
}
client_stop() {
	[ -n "$CPID" ] || return 0
	exec {CIN}>&- {COUT}<&-
	kill "$CPID" 2>/dev/null
	CPID=
}
# imap_login ADDR USER PASSWORD: one connection: ID with x-originating-ip,
# LOGIN, LOGOUT. Sets ST to the LOGIN status (OK, NO, BAD, or ERR-...) and MS
# to the LOGIN round trip in ms.
imap_login() {
	local reply=''
	ST=ERR-client MS=0
	printf '%s\t%s\t%s\n' "$1" "$2" "$3" >&"$CIN" 2>/dev/null || return
	if ! IFS= read -r -t $((IO_TIMEOUT * 4 + 5)) -u "$COUT" reply; then
		# a late reply would be taken for the next request's: start over
		echo "[$1] LOGIN $2 -> no answer from the client: restarted" >>"$S/client.log"
		client_stop
		client_start
		ST=ERR-client-timeout
		return
	fi
	ST=${reply% *} MS=${reply##* }
	echo "[$1] LOGIN $2 -> $ST ($MS ms)" >>"$S/client.log"
}
