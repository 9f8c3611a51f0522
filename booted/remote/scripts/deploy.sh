# shellcheck shell=sh
# deploy: fetch a release from booted's nginx (or take an uploaded one), unpack it, write run.sh, switch
# `current` atomically (the old one becomes `previous`), keep only those two, and (re)start the service
# where it is wanted (started and not stopped since) unless it already runs exactly the current release and
# run.sh: this also repairs a host left half-way by a killed run.
# booted sets: rel (releases/<id>), fetch and sha256 (the release's URL on booted's nginx and its checksum;
# exit 7 when it cannot be fetched), tgz (else: the uploaded archive), run_sh (run.sh's text) and run_id (its
# second line, which names its content), restart
# (non-empty: restart a running service here), start (non-empty: start it even if it was not wanted here: a
# first boot), setup (service.toml's setup command, or empty), upstream (non-empty: the
# service fronts others; list is their ip:port,... written to $base/backends, which it reads live, or which
# on_backends applies live); needs lib.sh.
# The last line says whether the service runs here now (state=running / state=stopped).
# The setup command runs in the new release before it is switched to, once per release and host; if it
# fails, the previous release stays current (and running) and its output's tail is the host's reason.
# shellcheck disable=SC2154
set -e
svc_lock
if [ ! -d "$base/$rel" ]; then
  if [ -n "$fetch" ]; then
    tgz="$base/.incoming.$$"
    if [ -n "$svc_bb" ]; then  # busybox's wget, bounded by its timeout (curl's -m; its -T crashes busybox 1.35)
      # shellcheck disable=SC2086 # svc_bb: a path, or nothing
      set -- $svc_bb timeout 60 $svc_bb wget -q -O "$tgz" "$fetch"
    else
      set -- curl -fsS --connect-timeout 5 -m 60 -o "$tgz" "$fetch"
    fi
    if ! "$@"; then
      rm -f "$tgz"
      echo "could not fetch $fetch" >&2
      exit 7
    fi
    got=$($svc_bb sha256sum <"$tgz")
    if [ "${got%% *}" != "$sha256" ]; then
      rm -f "$tgz"
      echo "$fetch: checksum ${got%% *} is not the release's $sha256" >&2
      exit 7
    fi
  fi
  tmp="$base/releases/.unpack.$$"
  if [ -e "$tmp" ]; then rm -rf "$tmp"; fi  # a killed run's, of the same pid
  # shellcheck disable=SC2174 # the mode is for the new release only
  $svc_bb mkdir -p -m 755 "$tmp"
  $svc_bb tar -xzf "$tgz" -C "$tmp"
  $svc_bb mv -T "$tmp" "$base/$rel" 2>/dev/null || rm -rf "$tmp"  # another run unpacked it first: same content
fi
if [ -n "$setup" ] && [ ! -e "$base/$rel/.booted-setup-done" ]; then
  if (cd "$base/$rel" && sh -c "$setup") >"$base/$rel/.booted-setup.log" 2>&1 </dev/null; then
    : >"$base/$rel/.booted-setup-done"
    echo setup-ran
  else
    code=$?
    if [ -n "$tgz" ]; then rm -f "$tgz"; fi
    svc_target current
    echo "setup failed (exit $code), ${target:-nothing} stays current:" >&2
    tail -n 3 "$base/$rel/.booted-setup.log" >&2
    exit 5
  fi
fi
# run.sh is rewritten (renamed over: a running supervisor keeps reading the old one) only when its id changed
svc_get have_id "$base/run.sh.id"
if [ "$have_id" != "$run_id" ] || [ ! -f "$base/run.sh" ]; then
  printf '%s' "$run_sh" >"$base/.run.sh.new"
  $svc_bb mv -f "$base/.run.sh.new" "$base/run.sh"
  printf '%s\n' "$run_id" >"$base/run.sh.id"
fi
svc_target current
cur=$target
if [ "$cur" != "$rel" ]; then
  if [ -n "$cur" ]; then svc_link previous "$cur"; fi
  svc_link current "$rel"
  prev=$cur
  echo switched
else
  svc_target previous
  prev=$target
  echo unchanged
fi
if [ -n "$upstream" ]; then
  svc_backends "$list"
  svc_apply_backends
fi
# keep the current and previous releases; whatever else goes in one rm, with the uploaded archive
set --
for d in "$base"/releases/*; do
  if [ ! -e "$d" ]; then continue; fi
  r="releases/${d##*/}"
  [ "$r" = "$rel" ] || [ "$r" = "$prev" ] || set -- "$@" "$d"
done
if [ -n "$tgz" ]; then set -- "$@" "$tgz"; fi
if [ "$#" -gt 0 ]; then $svc_bb rm -rf -- "$@"; fi
# restarted in the same SSH command: wanted here, and not running exactly this release and run.sh
if [ -n "$restart" ] && { [ -n "$start" ] || [ -f "$base/enabled" ] || svc_running; }; then
  svc_want
  svc_get started "$base/started"
  if ! svc_running || [ "$want_now" != "$started" ]; then
    set +e
    svc_start || exit
    set -e
  fi
fi
# what the host runs now (booted proves it by asking the service before it records the version)
if svc_running; then echo state=running; else echo state=stopped; fi
