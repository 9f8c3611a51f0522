# shellcheck shell=sh
# booted's service functions on a lab host, sent before every operation's script.
# booted sets these first, each value quoted: base (the service's folder), service (its name), url (its
# health URL as the host itself reaches it), port and port_hex (its port), reuse_port (non-empty: restart without a gap),
# on_backends (a proxy's command that applies a changed backend list).
# Few processes (a deploy on 50 hosts sharing two cores pays for each one): the shell's built-ins do what
# they can (read for cat, a /proc scan for pgrep, /proc/net/tcp for ss, cd -P for readlink, fixed names under
# the lock for mktemp), every wait is a loop of built-ins (bash's read -t on a FIFO as sleep; other shells
# run sleep(1)), and the health check is one curl that retries by itself.
# shellcheck disable=SC2154

# The work is finished even when the controller goes away mid-way (its timeout closes the SSH connection, or
# it is killed): hangups and broken pipes are ignored, and once the lock is held the output is kept in files
# and printed when the script ends. Otherwise the first `echo` after the controller left would end the
# script, say between starting a new supervisor and ending the old one. fds 3 and 4 are the SSH session's:
# nothing started in the background may keep them (the session would not end).
trap '' HUP PIPE

# Static busybox's applets where the host has /bin/busybox (a VM's image, this machine's root for netns hosts):
# no dynamic linking, which under software emulation costs a dynamically linked program 0.1-0.2 s, an applet
# a tenth of that. Only applets that do what the system's program does here (sha256sum, tar with its built-in
# gzip, mkdir, mv, rm, setsid, sleep, wget); the system's program otherwise.
svc_bb=""
if [ -x /bin/busybox ]; then svc_bb=/bin/busybox; fi

# Hold the service's lock on this host for the rest of the script (fd 9): one operation at a time, also
# when two controllers or a killed run's leftover command reach the host at once. Then keep the output in
# $base/.out and .err (only the holder of the lock writes them) until the script ends.
svc_lock() {
  [ -d "$base" ] || $svc_bb mkdir -p "$base"
  exec 9>"$base/.lock"
  if ! flock -w 30 9; then
    echo "another operation on $service holds $base/.lock for more than 30s" >&2
    exit 4
  fi
  exec 3>&1 4>&2 >"$base/.out" 2>"$base/.err"
  trap 'svc_rc=$?; svc_cat "$base/.out" >&3; svc_cat "$base/.err" >&4; exit "$svc_rc"' EXIT
}

# Print a text file (cat without a process).
svc_cat() {
  while IFS= read -r svc_line || [ -n "$svc_line" ]; do printf '%s\n' "$svc_line"; done <"$1"
}

# The first line of file $2 into variable $1 (empty when there is no such file).
svc_get() {
  eval "$1="
  if [ -f "$2" ]; then IFS= read -r "$1" <"$2" || :; fi
}

# Wait $1 seconds: bash's read -t on a FIFO nobody writes (no process); other shells run sleep.
svc_nap() {
  if [ -n "${BASH_VERSION:-}" ]; then
    [ -p "$base/.nap" ] || $svc_bb mkfifo "$base/.nap" 2>/dev/null || :
    if [ -p "$base/.nap" ]; then
      # shellcheck disable=SC3045 # bash only (checked above)
      read -r -t "$1" _ <>"$base/.nap" || :
      return 0
    fi
  fi
  $svc_bb sleep "$1"
}

# The release the symlink $base/$1 points at (releases/<id>) into $target; empty when there is no such
# link or it dangles.
svc_target() {
  target=""
  if [ -L "$base/$1" ] && cd -P "$base/$1" 2>/dev/null; then
    target="releases/${PWD##*/}"
    cd / || :
  fi
}

# End a supervisor and everything it started (its process group): SIGTERM, up to 5 s for the service to
# finish what it is doing, then SIGKILL.
svc_end_group() {
  kill -TERM "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null
  i=0
  while [ "$i" -lt 100 ] && { kill -0 "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }; do
    svc_nap 0.05
    i=$((i + 1))
  done
  kill -KILL "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null || true
}

# The pids of this service's supervisors (the processes `sh $base/run.sh`, however they were started) into
# $sups: one, or none. A scan of /proc (what pgrep -fx does, in this shell; the arguments' NULs drop out).
svc_supervisors() {
  sups=""
  for d in /proc/[0-9]*; do
    c=""
    IFS= read -r c 2>/dev/null <"$d/cmdline" || :
    if [ "$c" = "sh$base/run.sh" ]; then sups="$sups ${d#/proc/}"; fi
  done
}

# End every supervisor of this service but $1 (a pid; empty: all of them). A run killed between starting a new
# supervisor and ending the old one must not leave two serving side by side: this runs, under the lock,
# before and after every start and in every stop.
svc_reap() {
  svc_supervisors
  for pid in $sups; do
    if [ "$pid" != "$1" ]; then
      svc_end_group "$pid"
      echo "ended a second supervisor (pid $pid)"
    fi
  done
}

# Stop the supervisor and everything it started; prints what it did.
svc_stop() {
  if svc_running; then
    svc_end_group "$svc_pid"
    echo stopped
  else
    echo "was not running"
  fi
  if [ -s "$base/supervisor.pid" ]; then : >"$base/supervisor.pid"; fi  # emptied: no supervisor
  svc_reap ""
}

# Verify that the service is gone: no supervisor, and nothing listens on its port (waits up to 3 s for
# them to go); exit status 6 and what is left, otherwise.
svc_gone() {
  i=0
  while :; do
    svc_supervisors
    svc_listening
    if [ -z "$sups" ] && [ "$listening" -eq 0 ]; then
      echo "verified gone: no supervisor, nothing listens on port $port"
      return 0
    fi
    if [ "$i" -ge 30 ]; then break; fi
    svc_nap 0.1
    i=$((i + 1))
  done
  who=""
  if command -v ss >/dev/null 2>&1; then
    who=$(ss -H -lntp "sport = :$port" 2>/dev/null | sed -n 's/.*users:(\(.*\))$/\1/p' | head -n 3 | tr '\n' ' ')
  fi
  echo "$service is not gone: supervisor pid(s) [${sups# }], $listening socket(s) still" \
    "listen on port $port ${who}" >&2
  return 6
}

# What a start now would run, into $want_now: the current release and run.sh's id (run.sh.id, written with it:
# a digest of its text).
svc_want() {
  svc_target current
  svc_get want_id "$base/run.sh.id"
  want_now="$target $want_id"
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
  : >"$base/enabled"
  old=""
  if [ -n "$reuse_port" ] && svc_running; then
    old=$svc_pid
    svc_reap "$old"
  else
    svc_stop
  fi
  svc_inuse
  # shellcheck disable=SC2034 # before and want are read by svc_wait_listening (probe.sh)
  before=$tcp_inuse
  svc_listening
  # shellcheck disable=SC2034
  want=$((listening + 1))
  svc_want
  printf '%s\n' "$want_now" >"$base/started"
  # the supervisor gets default signal handling back, and none of this script's descriptors
  (trap - HUP PIPE; exec $svc_bb setsid sh "$base/run.sh") >>"$base/service.log" 2>&1 </dev/null 3>&- 4>&- 9>&- &
  new=$!
  echo "$new" >"$base/supervisor.pid"
  # wait for the new listener (10 s beside an old one, else 30 s)
  svc_wait_listening $((${old:-0} > 0 ? 200 : 600)) || :
  if [ -n "$old" ]; then
    svc_end_group "$old"
    echo "overlapped"
  fi
  svc_reap "$new"
  if svc_healthy; then
    echo started
    return 0
  fi
  echo "$service did not answer $url; last log lines:" >&2
  tail -n 3 "$base/service.log" >&2
  return 1
}

# Point the symlink $base/$1 at $2 atomically (ln -f makes a temporary link and renames it over the old).
svc_link() {
  if [ -n "$svc_bb" ]; then  # busybox's ln -f removes, then links: a new link renamed over the old instead
    $svc_bb ln -sfn "$2" "$base/.$1.new" && $svc_bb mv -fT "$base/.$1.new" "$base/$1"
  else
    ln -sfnT "$2" "$base/$1"
  fi
}

# Write the backend list a proxy reads live ($base/backends), atomically.
svc_backends() {
  [ -d "$base" ] || mkdir -p "$base"
  printf '%s\n' "$1" >"$base/.backends.new"
  chmod 644 "$base/.backends.new"
  mv -f "$base/.backends.new" "$base/backends"
}

# Tell a running proxy its backend list changed: the service's `on_backends` command ($on_backends, run in the
# current release) applies it live; a proxy without one reads the file itself.
svc_apply_backends() {
  if [ -n "$on_backends" ] && svc_running; then
    (cd "$base/current" && sh -c "$on_backends") </dev/null
  fi
}

# True when the supervisor runs; its pid in $svc_pid.
svc_running() {
  svc_get svc_pid "$base/supervisor.pid"
  [ -n "$svc_pid" ] && kill -0 "$svc_pid" 2>/dev/null
}
