# shellcheck shell=sh
# stop: stop the service and its supervisor(s), then verify it is gone (no supervisor, nothing listens on its
# port; exit 6 naming what is left). Needs lib.sh.
# shellcheck disable=SC2154
svc_lock
rm -f "$base/enabled"
svc_stop
svc_gone
