# shellcheck shell=sh
# deploy: unpack an uploaded release, write run.sh, switch `current` atomically (the old one becomes
# `previous`), keep only those two, and restart the service if it runs and something changed.
# booted sets: rel (releases/<id>), tgz (the uploaded archive), run_sh (run.sh's text), restart (non-empty:
# restart a running service here); needs lib.sh.
# shellcheck disable=SC2154
set -e
mkdir -p "$base/releases"
if [ ! -d "$base/$rel" ]; then
  tmp=$(mktemp -d "$base/releases/.unpack.XXXXXX")
  tar -xzf "$tgz" -C "$tmp"
  chmod 755 "$tmp"
  mv -T "$tmp" "$base/$rel" 2>/dev/null || rm -rf "$tmp"  # another run unpacked it first: same content
fi
rm -f "$tgz"
newrun=
tmp=$(mktemp "$base/.run.sh.XXXXXX")
printf '%s' "$run_sh" >"$tmp"
if cmp -s "$tmp" "$base/run.sh"; then
  rm -f "$tmp"
else
  mv "$tmp" "$base/run.sh"
  newrun=1
fi
cur=$(readlink "$base/current" || true)
changed=$newrun
if [ "$cur" != "$rel" ]; then
  if [ -n "$cur" ]; then svc_link previous "$cur"; fi
  svc_link current "$rel"
  echo switched
  changed=1
else
  echo unchanged
fi
keep=$(readlink "$base/current")
prev=$(readlink "$base/previous" || true)
for d in "$base"/releases/*; do
  r="releases/${d##*/}"
  [ "$r" = "$keep" ] || [ "$r" = "$prev" ] || rm -rf "$d"
done
# a running service is restarted in the same SSH command when its release or run.sh changed
if [ -n "$restart" ] && [ -n "$changed" ] && svc_running; then
  set +e
  svc_start
fi
