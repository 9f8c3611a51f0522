# shellcheck shell=sh
# booted's service functions on a lab host, sent before every operation's script.
# booted sets these first, each value quoted: base (the service's folder), service (its name), url (its
# health URL as the host itself reaches it), port and port_hex (its port), reuse_port (non-empty: restart without a gap),
# on_backends (a proxy's command that applies a changed backend list).
# shellcheck disable=SC2154

# The work is finished even when the controller goes away mid-way (its timeout closes the SSH connection, or
# it is killed): hangups and broken pipes are ignored, and the output is kept in files and printed when the
# script ends. Otherwise the first `echo` after the controller left would end the script, say between
# starting a new supervisor and ending the old one. fds 3 and 4 are the SSH session's: nothing started in
# the background may keep them (the session would not end).
trap '' HUP PIPE
svc_out=$(mktemp) && svc_err=$(mktemp) || exit 1
exec 3>&1 4>&2 >"$svc_out" 2>"$svc_err"
trap 'svc_rc=$?; cat "$svc_out" >&3; cat "$svc_err" >&4; rm -f "$svc_out" "$svc_err"; exit "$svc_rc"' EXIT

# Hold the service's lock on this host for the rest of the script (fd 9): one operation at a time, also
# when two controllers or a killed run's leftover command reach the host at once.
svc_lock() {
  mkdir -p "$base"
  exec 9>"$base/.lock"
  if ! flock -w 30 9; then
    echo "another operation on $service holds $base/.lock for more than 30s" >&2
    exit 4
  fi
}

# End a supervisor and everything it started (its process group): SIGTERM, up to 5 s for the service to
# finish what it is doing, then SIGKILL.
svc_end_group() {
  kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
  i=0
  while [ "$i" -lt 50 ] && { kill -0 "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
}

# The pids of this service's supervisors (run.sh loops), however they were started: one, or none.
svc_supervisors() {
  pgrep -fx "sh $base/run.sh" || true
}

# End every supervisor of this service but $1 (a pid; empty: all of them). A run killed between starting a new
# supervisor and ending the old one must not leave two serving side by side: this runs, under the lock,
# before and after every start and in every stop.
svc_reap() {
  for pid in $(svc_supervisors); do
    if [ "$pid" != "$1" ]; then
      svc_end_group "$pid"
      echo "ended a second supervisor (pid $pid)"
    fi
  done
}

# Stop the supervisor and everything it started; prints what it did.
svc_stop() {
  pidf="$base/supervisor.pid"
  if svc_running; then
    svc_end_group "$(cat "$pidf")"
    echo stopped
  else
    echo "was not running"
  fi
  rm -f "$pidf"
  svc_reap ""
}

# Verify that the service is gone: no supervisor, and nothing listens on its port (waits up to 3 s for
# them to go); exit status 6 and what is left, otherwise.
svc_gone() {
  i=0
  while :; do
    left=$(svc_supervisors)
    svc_listening
    if [ -z "$left" ] && [ "$listening" -eq 0 ]; then
      echo "verified gone: no supervisor, nothing listens on port $port"
      return 0
    fi
    if [ "$i" -ge 30 ]; then break; fi
    sleep 0.1
    i=$((i + 1))
  done
  who=""
  if command -v ss >/dev/null 2>&1; then
    who=$(ss -H -lntp "sport = :$port" 2>/dev/null | sed -n 's/.*users:(\(.*\))$/\1/p' | head -n 3 | tr '\n' ' ')
  fi
  echo "$service is not gone: supervisor pid(s) [$(echo "$left" | tr '\n' ' ')], $listening socket(s) still" \
    "listen on port $port ${who}" >&2
  return 6
}

# What a start now would run: the current release and run.sh's checksum.
svc_want() {
  echo "$(readlink "$base/current") $(cksum <"$base/run.sh")"
}

# (Re)start the supervisor of the current release and wait until it listens (30 s) and its health URL answers
# (10 s more). Exactly one supervisor runs afterwards: any other is ended (svc_reap).
# The service is marked wanted (`enabled`, until stop.sh) and what was started is noted (`started`), so a
# deploy after a killed run can tell that the running process is not the current release.
# A service with reuse_port (it binds with SO_REUSEPORT and finishes its requests on SIGTERM) is restarted
# without a gap: the new process starts beside the old one, and once it listens too the old one is ended;
# the kernel hands the connections still queued on the old listener to the new one (tcp_migrate_req, set
# at boot).
svc_start() {
  if [ ! -e "$base/current" ]; then
    echo "$service is not deployed here: run fab ${service}_deploy" >&2
    return 3
  fi
  touch "$base/enabled"
  old=""
  if [ -n "$reuse_port" ] && svc_running; then
    old=$(cat "$base/supervisor.pid")
    svc_reap "$old"
  else
    svc_stop
  fi
  svc_listening
  want=$((listening + 1))
  svc_want >"$base/started"
  # the supervisor gets default signal handling back, and none of this script's descriptors
  (trap - HUP PIPE; exec setsid sh "$base/run.sh") >>"$base/service.log" 2>&1 </dev/null 3>&- 4>&- 9>&- &
  new=$!
  echo "$new" >"$base/supervisor.pid"
  # wait for the new listener: one question to the kernel per try (svc_listening)
  i=0
  while [ "$i" -lt $((${old:-0} > 0 ? 100 : 300)) ]; do
    svc_listening
    if [ "$listening" -ge "$want" ]; then break; fi
    sleep 0.1
    i=$((i + 1))
  done
  if [ -n "$old" ]; then
    svc_end_group "$old"
    echo "overlapped"
  fi
  svc_reap "$new"
  i=0
  while [ "$i" -lt 50 ]; do
    if curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; then
      echo started
      return 0
    fi
    sleep 0.2
    i=$((i + 1))
  done
  echo "$service did not answer $url; last log lines:" >&2
  tail -n 3 "$base/service.log" >&2
  return 1
}

# How many sockets listen on the service's port: sets $listening. One question to the kernel (ss asks for
# listening sockets only, filtered by port, over netlink: 12 ms per try with 10,000 connections open, where
# reading /proc/net/tcp in this shell took 1.3 s); without ss, one awk pass over /proc/net/tcp{,6} (48 ms).
svc_listening() {
  if command -v ss >/dev/null 2>&1; then
    listening=$(ss -H -lnt "sport = :$port" 2>/dev/null | wc -l)
  else
    tables=""
    for table in /proc/net/tcp /proc/net/tcp6; do
      if [ -r "$table" ]; then tables="$tables $table"; fi
    done
    if [ -z "$tables" ]; then listening=0; return 0; fi
    # shellcheck disable=SC2086 # the table names are split on purpose
    listening=$(awk -v p=":$port_hex" '$4 == "0A" && substr($2, length($2) - 4) == p { n++ } END { print n + 0 }' \
      $tables)
  fi
}

# Point the symlink $base/$1 at $2 atomically (a unique temporary link renamed over it).
svc_link() {
  link=$(mktemp -u "$base/.$1.XXXXXX")
  ln -s "$2" "$link"
  mv -T "$link" "$base/$1"
}

# Write the backend list a proxy reads live ($base/backends), atomically.
svc_backends() {
  mkdir -p "$base"
  tmp=$(mktemp "$base/.backends.XXXXXX")
  printf '%s\n' "$1" >"$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$base/backends"
}

# Tell a running proxy its backend list changed: the service's `on_backends` command ($on_backends, run in the
# current release) applies it live; a proxy without one reads the file itself.
svc_apply_backends() {
  if [ -n "$on_backends" ] && svc_running; then
    (cd "$base/current" && sh -c "$on_backends") </dev/null
  fi
}

# True when the supervisor runs.
svc_running() {
  [ -f "$base/supervisor.pid" ] && kill -0 "$(cat "$base/supervisor.pid")" 2>/dev/null
}
