# shellcheck shell=sh
# booted's probes of a service on a lab host, sent after lib.sh: does it answer its health URL, how many
# sockets listen on its port, and the wait until they do. Built-ins and /proc files where they can (see lib.sh).
# shellcheck disable=SC2154

# Does the health URL answer with a status below 400, as curl -f takes it (retried for up to 10 s)? Under bash a
# request over /dev/tcp (no process: the URL is http://IP:PORT/PATH with the host's own IP: a connection is taken
# or refused at once; the answer is waited for 2 s); other shells run one curl that retries by itself.
svc_healthy() {
  if [ -n "${BASH_VERSION:-}" ]; then
    svc_hp=${url#http://}
    svc_path=/${svc_hp#*/}
    svc_hp=${svc_hp%%/*}
    # shellcheck disable=SC3028 # bash only
    svc_end=$((SECONDS + 10))
    while :; do
      svc_status=""
      # shellcheck disable=SC3025,SC3045 # bash only (checked above): /dev/tcp, read -t
      if { exec 5<>"/dev/tcp/${svc_hp%:*}/${svc_hp##*:}"; } 2>/dev/null; then
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$svc_path" "$svc_hp" >&5 2>/dev/null &&
          read -r -t 2 _ svc_status _ <&5 2>/dev/null
        exec 5<&-
      fi
      case $svc_status in [123][0-9][0-9]) return 0 ;; esac  # what curl -f takes: any answer below 400
      # shellcheck disable=SC3028 # bash only
      if [ "$SECONDS" -ge "$svc_end" ]; then return 1; fi
      svc_nap 0.5
    done
  fi
  curl -fsS -m 2 --retry 10 --retry-delay 1 --retry-max-time 10 --retry-all-errors -o /dev/null "$url" 2>/dev/null
}

# How many sockets listen on the service's port: sets $listening. One question to the kernel (ss asks for
# listening sockets only, filtered by port, over netlink: it never walks the table of connections, which
# reading /proc/net/tcp does (the machine's whole hash table: 7 ms a read, even on an idle host)); without
# ss, one awk pass over /proc/net/tcp{,6}. With svc_scan set (a first boot's serve.sh: under emulation a program
# costs 0.1-0.4 s, and a VM's table is small) the shell reads /proc/net/tcp{,6} itself.
svc_listening() {
  if [ -n "${svc_scan:-}" ]; then
    listening=0
    for table in /proc/net/tcp /proc/net/tcp6; do
      if [ ! -r "$table" ]; then continue; fi
      while read -r _ svc_local _ svc_st _; do
        case $svc_local:$svc_st in *":$port_hex:0A") listening=$((listening + 1)) ;; esac
      done <"$table"
    done
  elif command -v ss >/dev/null 2>&1; then
    svc_ss=$(ss -H -lnt "sport = :$port" 2>/dev/null) || :
    svc_ifs=$IFS
    IFS='
'
    set -f
    # shellcheck disable=SC2086 # split into lines on purpose
    set -- $svc_ss
    set +f
    IFS=$svc_ifs
    listening=$#
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

# The TCP sockets in use in this network namespace (/proc/net/sockstat{,6}: counters, no table walk) into
# $tcp_inuse: it changes when a socket starts listening (or a connection comes or goes), so a wait asks ss
# only then.
svc_inuse() {
  tcp_inuse=""
  for f in /proc/net/sockstat /proc/net/sockstat6; do
    if [ -r "$f" ]; then
      while read -r kind _ n _; do
        case $kind in TCP:|TCP6:) tcp_inuse="$tcp_inuse $n" ;; esac
      done <"$f"
    fi
  done
}

# Wait (up to $1 tries of 0.05 s) until $want sockets listen on the port. ss runs when the namespace's count
# of TCP sockets changed since the last look ($before: when $want was counted), and at least once a second.
svc_wait_listening() {
  seen=$before
  i=0
  while [ "$i" -lt "$1" ]; do
    svc_inuse
    if [ "$tcp_inuse" != "$seen" ] || [ $((i % 20)) -eq 19 ]; then
      seen=$tcp_inuse
      svc_listening
      if [ "$listening" -ge "$want" ]; then return 0; fi
    fi
    svc_nap 0.05
    i=$((i + 1))
  done
  return 1
}
