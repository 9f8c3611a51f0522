# shellcheck shell=sh
# stats: print a proxy's counters as JSON (the service's `stats` command, run in the current release). Read
# only: no lock. booted sets: stats; needs lib.sh.
# shellcheck disable=SC2154
set -e
cd "$base/current"
sh -c "$stats" </dev/null
