# shellcheck shell=sh
# booted's service functions on a lab host, sent before every operation's script.
# booted sets these first, each value quoted: base (the service's folder), service (its name), url (its
# health URL as the host itself reaches it), port and port_hex (its port), reuse_port (non-empty: restart without a gap),
# on_backends (a proxy's command that applies a changed backend list).
# shellcheck disable=SC2154

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
  kill -TERM "-$1" 2>/dev/null
  i=0
  while [ "$i" -lt 50 ] && kill -0 "-$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "-$1" 2>/dev/null || true
}

# Stop the supervisor and everything it started; prints what it did.
svc_stop() {
  pidf="$base/supervisor.pid"
  if [ -f "$pidf" ] && pid=$(cat "$pidf") && kill -0 "$pid" 2>/dev/null; then
    svc_end_group "$pid"
    echo stopped
  else
    echo "was not running"
  fi
  rm -f "$pidf"
}

# What a start now would run: the current release and run.sh's checksum.
svc_want() {
  echo "$(readlink "$base/current") $(cksum <"$base/run.sh")"
}

# (Re)start the supervisor of the current release and wait until it listens (30 s) and its health URL answers
# (10 s more).
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
  else
    svc_stop
  fi
  svc_want >"$base/started"
  setsid sh "$base/run.sh" >>"$base/service.log" 2>&1 </dev/null 9>&- &
  echo $! >"$base/supervisor.pid"
  # wait for the new listener (read from /proc: no process started per try, which matters on 50 hosts
  # sharing two cores), then for the health URL
  want=1
  if [ -n "$old" ]; then want=2; fi
  i=0
  while [ "$i" -lt $((want == 2 ? 100 : 300)) ]; do
    svc_listening
    if [ "$listening" -ge "$want" ]; then break; fi
    sleep 0.1
    i=$((i + 1))
  done
  if [ -n "$old" ]; then
    svc_end_group "$old"
    echo "overlapped"
  fi
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

# How many sockets listen on the service's port ($port_hex), from /proc/net/tcp{,6}: sets $listening.
svc_listening() {
  listening=0
  for table in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$table" ] || continue
    while read -r _ local _ st _; do
      case "$local" in
        *":$port_hex") if [ "$st" = 0A ]; then listening=$((listening + 1)); fi ;;
      esac
    done <"$table"
  done
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
