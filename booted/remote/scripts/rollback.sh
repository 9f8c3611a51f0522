# shellcheck shell=sh
# rollback: swap `current` and `previous`, print the version now current, restart. Needs lib.sh.
# shellcheck disable=SC2154
set -e
svc_lock
if [ ! -L "$base/previous" ]; then
  echo "no previous release to roll back to" >&2
  exit 3
fi
cur=$(readlink "$base/current")
prev=$(readlink "$base/previous")
svc_link current "$prev"
svc_link previous "$cur"
echo "version $(cat "$base/current/VERSION")"
set +e
svc_start
