# shellcheck shell=sh
# rollback: swap `current` and `previous`, print the version now current, restart. Needs lib.sh.
# shellcheck disable=SC2154
set -e
svc_lock
svc_target previous
prev=$target
if [ -z "$prev" ]; then
  echo "no previous release to roll back to" >&2
  exit 3
fi
svc_target current
cur=$target
svc_link current "$prev"
if [ -n "$cur" ]; then svc_link previous "$cur"; fi
svc_get version "$base/current/VERSION"
echo "version $version"
set +e
svc_start
