#!/bin/bash
# tests/policyd/run.sh - end-to-end test of authguard-policyd with a real
# Dovecot 2.3 whose passdb is passwd-file: no PAM in Dovecot at all.
#
# authguard-policyd listens on a random loopback port with an API key;
# Dovecot (imap on a loopback high port, no systemd) asks it through
# auth_policy_server_url before and after every password check. A second
# Dovecot on another port is a back end: the first one proxies some users
# to it (passdb proxy=y). The IMAP client (tests/dovecot/imapc.py) claims a
# client address per connection with ID ("x-originating-ip" ...), honoured
# from login_trusted_networks. Checked on the IMAP replies and on
# authguard's log: brute force refused after the thresholds, Dovecot's own
# delay for the tarpit status, the right password refused while banned, a
# botnet against one mailbox while its owner logs in, a ban made through
# the PAM module (real libpam under pam_wrapper, tests/policyd/pam.py)
# refused through policyd, the proxy refusing the attacker with the
# client's address (not the proxy's), policyd stopped while Dovecot runs
# (auth_policy_reject_on_fail no, then yes), bad requests and a missing
# API key refused with a log line, a clean SIGTERM.
#
# Output is TAP. Exit 0 when every check passed, 1 otherwise, 77 (skip, or
# AG_TEST_SKIP_STATUS) with a "1..0 # SKIP" plan when something is missing.
#
# Environment: as tests/dovecot/lib.sh, and
#   AG_TEST_POLICYD  the authguard-policyd binary (authguard-policyd in PATH)
#   AG_TEST_TIMEOUT  seconds before the whole run gives up (90)
#   AG_TEST_KEEP=1   keep the scratch directory (/tmp/ag-policyd.*)
set -u
. "$(dirname "$0")/../tap.sh"
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../dovecot/lib.sh" || exit 1
POLICYD=${AG_TEST_POLICYD:-$(command -v authguard-policyd 2>/dev/null || true)}
TIMEOUT=${AG_TEST_TIMEOUT:-90}
NTESTS=35

# ------------------------------------------------------------------ skip, bail
why=$(dv_missing)
[ -z "$why" ] || tap_skip_all "$why"
[ -n "$POLICYD" ] && [ -x "$POLICYD" ] || tap_skip_all "authguard-policyd not found (build it, or set AG_TEST_POLICYD)"
if LC_ALL=C nm "$POLICYD" 2>/dev/null | grep -qE ' __(a|ub)san_'; then
	tap_skip_all "$POLICYD is built with a sanitizer: the plain build runs this test"
fi
for f in "$MODULE" "$WRAPPER" "$MATRIX"; do
	[ -r "$f" ] || tap_skip_all "$f not found (the PAM scene needs pam_authguard.so, libpam-wrapper)"
done

# ------------------------------------------------------------ scratch, cleanup
S=
WDPID=
PPID_D= # authguard-policyd
BPID=   # the back-end Dovecot
DONE=0
FAILED=0
TESTNO=0
cleanup() {
	local rc=$?
	local IFS=$' \t\n'
	trap '' INT TERM HUP
	trap - EXIT
	set +f
	[ -z "$WDPID" ] || kill -TERM "$WDPID" 2>/dev/null
	client_stop
	stop_dovecot
	if [ -n "$BPID" ]; then DPID=$BPID; BPID=; stop_dovecot; fi
	[ -z "$PPID_D" ] || kill -TERM "$PPID_D" 2>/dev/null
	clean_pam_wrapper_dirs
	if [ "$DONE" != 1 ] && [ "$rc" = 0 ]; then
		echo "# the run stopped before its end"
		rc=1
	fi
	if [ -z "$S" ]; then
		:
	elif [ "$rc" = 0 ] && [ "${AG_TEST_KEEP:-0}" != 1 ]; then
		rm -rf "$S"
	else
		echo "# scratch directory kept: $S (dovecot.log, back.log, policyd.log, authguard.log, client.log)"
	fi
	exit "$rc"
}
tap_start


# ------------------------------------------------------------------- setup
dv_scratch ag-policyd || bail "$DV_ERR"
BLOG=$S/back.log
PLOG=$S/policyd.log
KEY=test-key-$RANDOM$RANDOM
printf 'X-API-Key: %s\n' "$KEY" >"$S/policyd.key"
chmod 0600 "$S/policyd.key"
# Dovecot's users: a password file, {PLAIN} so that a check costs nothing;
# px* live on the back end, the front end proxies them there.
: >"$S/users"
: >"$S/back-users"
for u in alice bob carol dora erin; do
	echo "$u:{PLAIN}pw-$u::::::" >>"$S/users"
done
chmod 0644 "$S/users"
# the PAM scene: the README's stack around pam_matrix, the same config
dv_users matrix dora || bail "$DV_ERR"
dv_stack authguard || bail "$DV_ERR"

new_port() { # a free random high port
	local p
	for _ in 1 2 3 4 5 6 7 8; do
		p=$((20000 + RANDOM % 40000))
		port_busy "$p" || { echo "$p"; return 0; }
	done
	return 1
}
PPORT=$(new_port) || bail "no free port"
# The defaults, but for a tarpit that starts later and is scaled down
# (Dovecot delays whole seconds: each tarpit is 1 s): ip_ban_after 10,
# user_lock_after 10, spray_users 6, tarpit_slots 8.
cat >"$S/authguard.conf" <<EOF
db_dir = $S/store
log = file:$LOG
tarpit_free = 7
tarpit_base = 20ms
tarpit_max = 80ms
policyd_listen = 127.0.0.1:$PPORT
policyd_api_key_file = $S/policyd.key
policyd_threads = 2
EOF

# The README's dovecot.conf lines (and a loud policy log)
REJECT_ON_FAIL=no
policy_conf() {
	cat <<EOF
auth_policy_server_url = http://127.0.0.1:$PPORT/
auth_policy_server_api_header = X-API-Key: $KEY
auth_policy_hash_nonce = authguard-test-nonce
auth_policy_request_attributes = login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id} protocol=%s session_id=%{session} mech=%m
auth_policy_reject_on_fail = $REJECT_ON_FAIL
EOF
}

# write_conf NAME PORT USERS POLICY(yes|no): a Dovecot instance of its own
# (base_dir, instance name, log). The first passdb only adds nodelay
# (Dovecot otherwise answers each failure from a 500 ms timer: see
# tests/dovecot/README.md), the password file decides.
write_conf() {
	local name=$1 port=$2 users=$3 policy=$4 log=$S/$1.log
	[ "$name" = front ] && log=$DLOG
	mkdir -p "$S/run-$name" "$S/state-$name"
	cat >"$S/$name.conf" <<EOF
protocols = imap
listen = 127.0.0.1
base_dir = $S/run-$name
state_dir = $S/state-$name
instance_name = ag-policyd-$name-$$
log_path = $log
info_log_path = $log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
login_trusted_networks = 127.0.0.0/8
default_internal_user = $IUSER
default_internal_group = $IGROUP
default_login_user = $LUSER
first_valid_uid = 1
mail_location = maildir:$S/mail/%u
passdb {
  driver = static
  args = nopassword=y nodelay=yes
  result_success = continue-fail
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $users
}
userdb {
  driver = static
  args = uid=$MUID gid=$MGID home=$S/home/%u
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
	[ "$policy" = yes ] && policy_conf >>"$S/$name.conf"
	return 0
}

# launch NAME USERS POLICY: start it on a free port; sets PORT and DPID
launch() {
	local log=$S/$1.log
	[ "$1" = front ] && log=$DLOG
	for _ in 1 2 3; do
		PORT=$(new_port) || return 1
		write_conf "$1" "$PORT" "$2" "$3"
		: >"$log"
		"$DOVECOT" -F -c "$S/$1.conf" </dev/null >>"$S/$1.stdout" 2>&1 &
		DPID=$!
		for _ in $(seq 100); do
			greets && return 0
			alive "$DPID" || break
			sleep 0.1
		done
		stop_dovecot
		grep -qs "Address already in use" "$log" "$S/$1.stdout" || break
	done
	return 1
}

start_policyd() {
	local i
	"$POLICYD" -c "$S/authguard.conf" </dev/null >>"$PLOG" 2>&1 &
	PPID_D=$!
	for i in $(seq 50); do
		{ exec 9<>"/dev/tcp/127.0.0.1/$PPORT"; } 2>/dev/null && { exec 9>&-; return 0; }
		alive "$PPID_D" || return 1
		sleep 0.1
	done
	return 1
}
stop_policyd() { # SIGTERM; sets PSTATUS (its exit status, or "still running")
	local i
	PSTATUS="still running"
	kill -TERM "$PPID_D" 2>/dev/null
	for i in $(seq 50); do
		alive "$PPID_D" || break
		sleep 0.1
	done
	if alive "$PPID_D"; then
		kill -KILL "$PPID_D" 2>/dev/null
	fi
	wait "$PPID_D"
	PSTATUS=$?
	PPID_D=
}

# attempt ADDR USER PASSWORD: one login through the front end; sets ST, MS,
# L (the log lines it wrote: exactly one expected) and F (its fields)
ATTEMPTS=0
NOT_ONE_LINE=()
EXPECT=1 # log lines an attempt writes (0 while policyd is down)
attempt() {
	local line n=0 kv
	imap_login "$1" "$2" "$3"
	ATTEMPTS=$((ATTEMPTS + 1))
	L=
	# Dovecot answers the client before its report reaches policyd:
	# wait (bounded: 3 s) for the line the report writes
	for _ in $(seq 150); do
		while IFS= read -r -u "$LOGFD" line; do
			L=$line
			n=$((n + 1))
		done
		[ "$n" -ge "$EXPECT" ] && break
		sleep 0.02
	done
	[ "$n" = "$EXPECT" ] || NOT_ONE_LINE+=("[$1] $2 -> $ST: $n log lines, $EXPECT expected")
	F=()
	for kv in $L; do F[${kv%%=*}]=${kv#*=}; done
}
declare -A F
loglines() { # loglines REGEX...: number of log lines matching every REGEX
	local p out
	out=$(cat "$LOG")
	for p in "$@"; do out=$(printf '%s\n' "$out" | grep -E -e "$p"); done
	[ -n "$out" ] && printf '%s\n' "$out" | wc -l || echo 0
}
# post COMMAND BODY [HEADER]: one request to policyd; prints "HTTP BODY"
post() {
	"$PYTHON" - "$PPORT" "$1" "$2" "${3:-}" <<-'EOF'
		import http.client, sys
		port, cmd, body, header = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
		c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
		h = {"Content-Type": "application/json"}
		if header:
		    k, v = header.split(":", 1)
		    h[k] = v.strip()
		c.request("POST", "/?command=" + cmd, body=body.encode(), headers=h)
		r = c.getresponse()
		print(r.status, r.read().decode())
	EOF
}

# ======================================================================== run
main() {
	set -f
	echo "1..$NTESTS"
	# -t: nothing beyond the loopback unless allowed, and then only with a key
	sed "s|^policyd_listen = .*|policyd_listen = 0.0.0.0:$PPORT|" "$S/authguard.conf" >"$S/remote.conf"
	"$POLICYD" -t -c "$S/remote.conf" >"$S/t1.out" 2>&1
	t1=$?
	printf 'policyd_allow_remote = yes\n' >>"$S/remote.conf"
	"$POLICYD" -t -c "$S/remote.conf" >"$S/t2.out" 2>&1
	t2=$?
	grep -v '^policyd_api_key_file' "$S/remote.conf" >"$S/remote2.conf"
	"$POLICYD" -t -c "$S/remote2.conf" >"$S/t3.out" 2>&1
	t3=$?
	"$POLICYD" -t -c "$S/authguard.conf" >"$S/t4.out" 2>&1
	t4=$?
	ok "$([ "$t1/$t2/$t3/$t4" = 2/0/2/0 ] && grep -q 'not a loopback address: set policyd_allow_remote' "$S/t1.out" &&
		grep -q 'it needs policyd_api_key_file' "$S/t3.out"; echo $?)" \
		"policyd -t: 0.0.0.0 refused (exit 2), taken with policyd_allow_remote and a key (0), refused without the key (2); the test's config passes" \
		"exit: $t1/$t2/$t3/$t4" "$(cat "$S/t1.out" "$S/t3.out")"
	start_policyd
	ok $? "authguard-policyd answers on 127.0.0.1:$PPORT" "$(cat "$PLOG")"
	[ -n "$PPID_D" ] || bail "authguard-policyd did not start"
	launch back "$S/back-users" no
	ok $? "back-end dovecot answers on 127.0.0.1:$PORT (passwd-file, no policy)" "$(tail -n 20 "$BLOG" 2>/dev/null)"
	BPID=$DPID BPORT=$PORT
	for u in px1 px2; do
		echo "$u:{PLAIN}pw-$u::::::" >>"$S/back-users"
		echo "$u:{PLAIN}pw-$u::::::proxy=y host=127.0.0.1 port=$BPORT" >>"$S/users"
	done
	DPID=
	launch front "$S/users" yes
	ok $? "dovecot $("$DOVECOT" --version | cut -d' ' -f1) answers on 127.0.0.1:$PORT: passdb passwd-file, auth_policy_server_url to policyd" \
		"$(tail -n 20 "$DLOG" "$S/front.stdout" 2>/dev/null)"
	[ -n "$DPID" ] || bail "dovecot did not start"
	client_start
	exec {LOGFD}<"$LOG"

	# Owners log in from home: those places become familiar.
	attempt 198.51.100.10 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ] && [ "${F[service]:--}" = imap ] &&
		[ "${F[user]:--}" = '"alice"' ] && [ "${F[rhost]:--}" = 198.51.100.10 ]; echo $?)" \
		"alice logs in from home: IMAP OK; one line service=imap user=\"alice\" rhost=198.51.100.10 result=success" \
		"reply $ST" "log: $L"
	attempt 198.51.100.20 carol pw-carol
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ]; echo $?)" "carol logs in from home: IMAP OK" "reply $ST" "log: $L"

	# ---------------------------------------------------------------- brute force
	echo "# ${SECONDS}s: brute force"
	BF=203.0.113.5
	r=() res=() act=() ev=() dly=() ms=() slow=()
	for i in $(seq 12); do
		attempt $BF alice "guess-$i"
		r+=("$ST") res+=("${F[result]:--}") act+=("${F[action]:--}") ev+=("${F[event]:--}") dly+=("${F[delay_ms]:--}") ms+=("$MS")
		[ "${F[delay_ms]:-0}" -le "$MS" ] 2>/dev/null || slow+=("guess $i: delay_ms=${F[delay_ms]:--} but the reply came after $MS ms")
	done
	ok "$([ "$(count NO "${r[@]}")" = 12 ] &&
		[ "${res[*]}" = "fail fail fail fail fail fail fail fail fail fail unchecked unchecked" ]; echo $?)" \
		"brute force: 12 wrong passwords for alice from $BF: 12 IMAP NO; 1-10 checked (result=fail), 11-12 refused unchecked" \
		"replies: ${r[*]}" "results: ${res[*]}"
	ok "$([ "${ev[9]}" = ban+lock ] && [ "${act[*]:10}" = "refuse refuse" ] && [ "$(count - "${ev[@]}")" = 11 ]; echo $?)" \
		"brute force: the 10th failure bans $BF and locks alice (event=${ev[9]}), then refused" "events: ${ev[*]}" "actions: ${act[*]}"
	ok "$([ "${dly[*]}" = "0 0 0 0 0 0 0 1000 1000 1000 0 0" ] &&
		[ "${act[*]:0:10}" = "allow allow allow allow allow allow allow tarpit tarpit tarpit" ] && [ ${#slow[@]} = 0 ]; echo $?)" \
		"brute force: tarpit from the 8th guess as status 1 (whole seconds: 20..80 ms round up to 1 s), and Dovecot's reply waits that long" \
		"delay_ms: ${dly[*]}" "actions: ${act[*]}" "round trips (ms): ${ms[*]}" "${slow[@]}"
	echo "# LOGIN round trips (ms), guesses 1-12: ${ms[*]}"
	attempt $BF alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[result]:--}" = unchecked ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"brute force: alice's right password from the banned address: IMAP NO, reason=banned" "reply $ST" "log: $L"
	attempt 198.51.100.10 alice pw-alice
	ok "$([ "$ST" = OK ] && [ "${F[familiar]:--}" = yes ] && [ "${F[user_state]:--}" = locked ]; echo $?)" \
		"brute force: locked alice still logs in from home (familiar=yes user_state=locked)" "reply $ST" "log: $L"
	attempt 198.51.100.99 alice pw-alice
	ok "$([ "$ST" = NO ] && [ "${F[reason]:--}" = locked ]; echo $?)" \
		"brute force: alice's right password from an unfamiliar address: IMAP NO, reason=locked" "reply $ST" "log: $L"

	# --------------------------------------------------------------------- botnet
	# (each refusal costs 0.5 s: Dovecot's failure timer, which only a
	# passdb's nodelay skips, and no passdb runs for a refused attempt)
	echo "# ${SECONDS}s: botnet"
	r=() res=() why=() own=() nlock=0
	for n in $(seq 14); do
		attempt "198.18.$n.1" carol "bot-$n"
		r+=("$ST") res+=("${F[result]:--}") why+=("${F[reason]:--}")
		case ${F[event]:--} in *lock*) nlock=$((nlock + 1)) ;; esac
		if [ $((n % 2)) = 0 ]; then
			attempt 198.51.100.20 carol pw-carol
			own+=("$ST/${F[familiar]:--}")
		fi
	done
	ok "$([ "$(count NO "${r[@]}")" = 14 ] && [ "$(count fail "${res[@]}")" = 10 ] &&
		[ "${res[*]:0:10}" = "fail fail fail fail fail fail fail fail fail fail" ] &&
		[ "$(count locked "${why[@]}")" = 4 ] && [ "$nlock" = 1 ]; echo $?)" \
		"botnet: 14 addresses, one guess each at carol: 14 IMAP NO, 10 checked, the 10th locks her, 4 refused (reason=locked)" \
		"replies: ${r[*]}" "results: ${res[*]}" "reasons: ${why[*]}" "lock events: $nlock"
	ok "$([ "$(count OK/yes "${own[@]}")" = 7 ]; echo $?)" \
		"botnet: carol logs in from home 7 times of 7 during the attack (familiar=yes)" "reply/familiar: ${own[*]}"
	ok "$([ "$(loglines 'rhost=198\.18\.' '(reason=(banned|net_banned)|event=[a-z+]*ban)')" = 0 ]; echo $?)" \
		"botnet: no bot address and no /24 was banned"

	# ------------------------------------------------- a ban made through PAM
	echo "# ${SECONDS}s: pam"
	PB=192.0.2.200
	pam=$(env LD_PRELOAD="$WRAPPER" PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$S/pam.d" \
		"$PYTHON" "$HERE/pam.py" dovecot dora $PB $(for i in $(seq 10); do echo "pam-$i"; done) 2>>"$S/client.log")
	n=0
	while IFS= read -r -u "$LOGFD" line; do n=$((n + 1)); done
	ok "$([ "$(printf '%s\n' "$pam" | grep -c PAM_AUTH_ERR)" = 10 ] && [ "$n" = 10 ] &&
		[ "$(loglines "rhost=$PB" 'service=dovecot' 'event=ban')" = 1 ]; echo $?)" \
		"pam: 10 wrong passwords for dora from $PB through the PAM module (real libpam): 10 lines, the 10th bans" \
		"pam: $(printf '%s' "$pam" | tr '\n' ' ')" "lines: $n"
	attempt $PB dora pw-dora
	ok "$([ "$ST" = NO ] && [ "${F[service]:--}" = imap ] && [ "${F[reason]:--}" = banned ]; echo $?)" \
		"pam: the ban the PAM module made refuses dora's right password through Dovecot and policyd (one store): IMAP NO, service=imap reason=banned" \
		"reply $ST" "log: $L"

	# ----------------------------------------------------------------------- proxy
	echo "# ${SECONDS}s: proxy"
	attempt 198.51.100.40 px1 pw-px1
	bl=$(grep -F 'Login: user=<px1>' "$BLOG" | tail -n 1)
	ok "$([ "$ST" = OK ] && [ "${F[rhost]:--}" = 198.51.100.40 ] && [ "${F[result]:--}" = success ] &&
		case $bl in *"rip=198.51.100.40"*) true ;; *) false ;; esac; echo $?)" \
		"proxy: px1 logs in from home through the front end to the back end (proxy=y): OK; policyd and the back end both see rhost 198.51.100.40" \
		"reply $ST" "log: $L" "back end: $bl"
	PX=203.0.113.66
	r=() res=()
	for i in $(seq 11); do
		attempt $PX px2 "px-guess-$i"
		r+=("$ST") res+=("${F[result]:--}")
	done
	attempt $PX px2 pw-px2
	r+=("$ST") res+=("${F[result]:--}/${F[reason]:--}")
	ok "$([ "$(count NO "${r[@]}")" = 12 ] && [ "$(count fail "${res[@]}")" = 10 ] &&
		[ "${res[*]:10}" = "unchecked unchecked/banned" ] && [ "$(loglines "rhost=$PX" 'event=ban')" = 1 ]; echo $?)" \
		"proxy: 11 guesses at px2 from $PX through the proxy, then the right password: 12 NO, 10 checked, banned at the proxy" \
		"replies: ${r[*]}" "results: ${res[*]}"
	ok "$(! grep -qF "$PX" "$BLOG" && ! grep -qF 'px2' "$BLOG"; echo $?)" \
		"proxy: the back end never saw $PX or px2 (the proxy refused every attempt)" "$(grep -F -e "$PX" -e px2 "$BLOG" | head -n 3)"
	ok "$([ "$(loglines 'rhost=127\.')" = 0 ] && [ "$(loglines 'rhost=none')" = 0 ]; echo $?)" \
		"proxy: every line carries the client's address, none the proxy's (no rhost=127.x, no rhost=none)"

	# ---------------------------------------------------- bad requests, API key
	echo "# ${SECONDS}s: bad requests"
	a=$(post allow '{"login":"x","remote":"192.0.2.1"}')
	b=$(post allow '{"login":"x","remote":"192.0.2.1"}' "X-API-Key: $KEY")
	c=$(post allow '{"login":1,"remote":"192.0.2.1"}' "X-API-Key: $KEY")
	d=$(post report 'not json' "X-API-Key: $KEY")
	ok "$(case "$a|$b|$c|$d" in "401 "*"|200 {\"status\":0,\"msg\":\"\"}|400 "*"|400 "*) true ;; *) false ;; esac; echo $?)" \
		"policyd: without the API key 401; with it 200 {\"status\":0...}; malformed JSON or a wrong member 400" \
		"without key: $a" "with key: $b" "bad member: $c" "not JSON: $d"
	ok "$(grep -q '(401): X-API-Key header missing' "$PLOG" && grep -q '(400): member "login" is not a string' "$PLOG" &&
		grep -q 'command=report: request refused (400): not JSON' "$PLOG"; echo $?)" \
		"policyd: each refused request is a warning line in its log" "$(tail -n 5 "$PLOG")"

	# a peer that drips its request a byte at a time is cut at
	# policyd_timeout (1 s), not kept open as long as it keeps sending
	drip=$("$PYTHON" - "$PPORT" <<-'EOF'
		import socket, sys, time
		s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=15)
		t0 = time.monotonic()
		req = b"POST /?command=allow HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 200
		state = "open"
		try:
		    for ch in req:
		        s.send(bytes([ch]))
		        time.sleep(0.25)
		        if time.monotonic() - t0 > 10:
		            break
		    else:
		        state = "sent"
		    if state == "open" and s.recv(1) == b"":
		        state = "closed"
		except socket.timeout:
		    state = "open"
		except OSError:
		    state = "closed"
		print(state, round(time.monotonic() - t0, 1))
	EOF
	)
	ok "$(case "$drip" in "closed "[0-4].*) true ;; *) false ;; esac; echo $?)" \
		"policyd: a peer sending its request a byte every 0.25 s is cut within a few seconds (policyd_timeout 1s)" \
		"client: $drip" "$(grep 'too slowly' "$PLOG" | tail -n 2)"

	# (the library says "detected connection closure" for it: excused below)
	# SIGHUP reads the key file again (and refuses a config with errors)
	KEY2=new-key-$RANDOM
	printf 'X-API-Key: %s\n' "$KEY2" >"$S/policyd.key"
	kill -HUP "$PPID_D"
	for _ in $(seq 50); do grep -q 'read again' "$PLOG" && break; sleep 0.1; done
	a=$(post allow '{"login":"x","remote":"192.0.2.1"}' "X-API-Key: $KEY")
	b=$(post allow '{"login":"x","remote":"192.0.2.1"}' "X-API-Key: $KEY2")
	printf 'X-API-Key: %s\n' "$KEY" >"$S/policyd.key"
	cp "$S/authguard.conf" "$S/authguard.conf.good"
	echo "bogus_key = 1" >>"$S/authguard.conf"
	kill -HUP "$PPID_D"
	for _ in $(seq 50); do grep -q 'reload refused' "$PLOG" && break; sleep 0.1; done
	c=$(post allow '{"login":"x","remote":"192.0.2.1"}' "X-API-Key: $KEY2")
	mv "$S/authguard.conf.good" "$S/authguard.conf"
	kill -HUP "$PPID_D"
	for _ in $(seq 50); do [ "$(grep -c 'read again' "$PLOG")" -ge 2 ] && break; sleep 0.1; done
	d=$(post allow '{"login":"x","remote":"192.0.2.1"}' "X-API-Key: $KEY")
	ok "$(case "$a|$b|$c|$d" in "401 "*"|200 "*"|200 "*"|200 "*) true ;; *) false ;; esac; echo $?)" \
		"policyd: SIGHUP takes a new API key file (old key 401, new 200); a config with errors is refused and the running one kept; back to the first key" \
		"old key: $a" "new key: $b" "bad config, new key kept: $c" "first key again: $d" "$(grep -E 'reload|read again|bogus' "$PLOG")"

	# ----------------------------------------------- policyd stopped, Dovecot runs
	echo "# ${SECONDS}s: policyd stopped"
	stop_policyd
	ok "$([ "$PSTATUS" = 0 ] && grep -q 'signal 15: stopping' "$PLOG" && tail -n 1 "$PLOG" | grep -q stopped; echo $?)" \
		"policyd stops on SIGTERM (exit $PSTATUS), saying so" "$(tail -n 3 "$PLOG")"
	dmark=$(wc -l <"$DLOG")
	EXPECT=0
	attempt 198.51.100.50 erin pw-erin
	st1=$ST
	attempt 198.51.100.50 erin wrong
	st2=$ST
	perr=$(tail -n +"$((dmark + 1))" "$DLOG" | grep -E 'policy' | grep -ciE 'error|fail')
	ok "$([ "$st1/$st2" = OK/NO ] && [ "$perr" -ge 2 ]; echo $?)" \
		"policyd down, auth_policy_reject_on_fail = no: Dovecot goes on unguarded (right password OK, wrong NO) and logs an error per request" \
		"replies: $st1 $st2" "policy errors in dovecot.log: $perr" "$(tail -n +"$((dmark + 1))" "$DLOG" | grep policy | head -n 2)"
	REJECT_ON_FAIL=yes
	write_conf front "$PORT" "$S/users" yes
	kill -HUP "$DPID"
	st3=
	for i in $(seq 40); do
		attempt 198.51.100.50 erin pw-erin
		[ "$ST" = NO ] && { st3=NO; break; }
		sleep 0.25
	done
	ok "$([ "$st3" = NO ]; echo $?)" \
		"policyd down, auth_policy_reject_on_fail = yes (Dovecot reloaded): the right password is refused" "last reply: $ST"
	start_policyd
	EXPECT=1
	attempt 198.51.100.50 erin pw-erin
	ok "$([ "$ST" = OK ] && [ "${F[result]:--}" = success ] && [ "${F[user]:--}" = '"erin"' ]; echo $?)" \
		"policyd started again: erin logs in, one line result=success" "reply $ST" "log: $L"

	# --------------------------------------------------------------------- global
	echo "# ${SECONDS}s: whole run"
	total=$(wc -l <"$LOG")
	ok "$([ ${#NOT_ONE_LINE[@]} = 0 ]; echo $?)" \
		"one log line per guarded attempt ($ATTEMPTS IMAP logins, 10 PAM attempts, $total lines)" "${NOT_ONE_LINE[@]}"
	RE='^time=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z service=(imap|dovecot) user="[a-z0-9]+" rhost=[0-9a-f.:]+ result=(success|fail|unchecked) action=(allow|tarpit|refuse)( reason=[a-z_]+)? delay_ms=[0-9]+ src_score=[0-9]+\.[0-9] user_score=[0-9]+\.[0-9] user_state=(ok|locked|none) familiar=(yes|no)( repeat=yes)?( event=[a-z_+]+)?( until=[0-9T:.Z-]+)?$'
	ok "$([ "$(grep -cvE "$RE" "$LOG")" = 0 ] && [ "$(loglines 'result=success' 'action=refuse')" = 0 ]; echo $?)" \
		"every log line is one whole record in the README's field order, no fault line, no refused success" \
		"$(grep -vE "$RE" "$LOG" | head -n 5)"
	if [ -n "$ADMIN" ]; then
		bans=$("$ADMIN" -c "$S/authguard.conf" list bans 2>&1)
		miss=()
		for want in $BF $PB $PX; do
			printf '%s\n' "$bans" | grep -qF -- "$want" || miss+=("$want")
		done
		ok "$([ ${#miss[@]} = 0 ]; echo $?)" \
			"authguard-admin list bans (the store after policyd's stop and start): the brute forcer, the PAM ban, the proxy's attacker" \
			"missing: ${miss[*]}" "$bans"
	else
		skip "authguard-admin list bans" "AG_TEST_ADMIN not set and no authguard-admin in PATH"
	fi
	stop_policyd
	perr=$(grep -iE 'error|fault|http: ' "$PLOG" | grep -vE 'bogus_key|has errors \(see above\)|detected connection closure')
	ok "$([ "$PSTATUS" = 0 ] && [ -z "$perr" ]; echo $?)" \
		"policyd stopped again cleanly; its log has no error (but the bad config's) and no complaint from the HTTP library" \
		"$perr"
	mpid=$DPID
	stop_dovecot
	left=$DV_LEFT
	DPID=$BPID BPID=
	stop_dovecot
	left="$left$DV_LEFT"
	ok "$([ -z "$left" ] && ! alive "$mpid"; echo $?)" "both Dovecot instances stopped on SIGTERM, no process left" "left: $left"
	dbad=$(cat "$DLOG" "$BLOG" | grep -E 'Fatal|Panic|segfault|killed with signal' | head -n 5)
	ok "$([ -z "$dbad" ]; echo $?)" "dovecot logged no fatal, panic or crash" "$dbad"

	echo "# $ATTEMPTS IMAP logins in ${SECONDS}s"
	if [ "$TESTNO" != "$NTESTS" ]; then
		echo "# planned $NTESTS checks, ran $TESTNO"
		return 1
	fi
	DONE=1
	[ "$FAILED" = 0 ]
}
main
exit
