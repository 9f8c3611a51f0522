# shellcheck shell=sh
# backends: replace the service's backend list (read live by a proxy such as the lb) atomically.
# booted sets: list (ip:port,... or empty), on_backends (the command that applies it live, or empty); needs
# lib.sh.
# shellcheck disable=SC2154
set -e
svc_lock
svc_backends "$list"
echo "backends: ${list:-none}"
svc_apply_backends
