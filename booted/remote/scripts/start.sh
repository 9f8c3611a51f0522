# shellcheck shell=sh
# start: (re)start the service supervised and wait until it answers. Needs lib.sh.
svc_lock
svc_start
