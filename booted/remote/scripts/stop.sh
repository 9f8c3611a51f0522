# shellcheck shell=sh
# stop: stop the service and its supervisor. Needs lib.sh.
# shellcheck disable=SC2154
svc_lock
rm -f "$base/enabled"
svc_stop
