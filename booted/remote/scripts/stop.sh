# shellcheck shell=sh
# stop: stop the service and its supervisor. Needs lib.sh.
svc_stop
