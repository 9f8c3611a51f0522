# shellcheck shell=sh
# run.sh: the supervisor loop. Runs the service's start command (the function `start_command`, written
# by booted from service.toml) in the current release, and restarts it one second after it exits.
# booted sets: base, service; and defines start_command.
# shellcheck disable=SC2154
while :; do
  (cd "$base/current" && start_command)
  echo "booted: $service exited ($?), restarting in 1s" >&2
  sleep 1
done
