#!/bin/sh
# vbox.sh: the VBoxManage commands booted's VirtualBox provider (booted/providers/virtualbox.py) issues to
# make, configure and start one host, for people who want to see them or run them by hand. A test runs
# this script and the provider against the same fake VBoxManage and checks both issue the same commands.
#
#   vbox.sh [-n] VM BASE MAC NET HOSTDIR SEED [MEMORY] [CPUS] [MAJOR] [FRESH]
#
#   VM       the VM's name (booted names it booted-<lab id>-<host>)
#   BASE     the registered base VM of the golden disk (booted-base-<key>), with a snapshot named "base"
#   MAC      52:54:0a:d5:07:03 or 52540AD50703
#   NET      the lab's host-only interface (vboxnetN; on macOS with VirtualBox 7: host-only network)
#   HOSTDIR  the host's folder (its console.log goes there; the clone's folder is made beside it)
#   SEED     the seed disk (a VDI with the host's identity: booted makes it from hosts/seed.py)
#   MEMORY   MB (default 256)  CPUS (default 1)  MAJOR: VirtualBox's major version (default: asked)
#   FRESH    1: clone the base first (default 1; 0 for a VM that exists)
#   -n       print the commands instead of running them
set -eu
run=""
if [ "${1:-}" = "-n" ]; then run="echo"; shift; fi
if [ "$#" -lt 6 ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
vm=$1 base=$2 mac=$(printf '%s' "$3" | tr -d ':' | tr '[:lower:]' '[:upper:]') net=$4 hdir=$5 seed=$6
memory=${7:-256} cpus=${8:-1} major=${9:-} fresh=${10:-1}
export LANG=C LC_ALL=C
if [ -z "$major" ]; then major=$(VBoxManage --version | cut -d. -f1); fi
if [ "$fresh" = 1 ]; then
  $run VBoxManage clonevm "$base" --snapshot base --options link --name "$vm" --basefolder "$(dirname "$hdir")" \
    --register
fi
if [ "$(uname -s)" = Darwin ] && [ "$major" -ge 7 ]; then
  nic="--nic1 hostonlynet --host-only-net1"
else
  nic="--nic1 hostonly --hostonlyadapter1"
fi
# shellcheck disable=SC2086 # $nic is two options and their values
$run VBoxManage modifyvm "$vm" --memory "$memory" --cpus "$cpus" $nic "$net" --macaddress1 "$mac" \
  --uart1 0x3F8 4 --uartmode1 file "$hdir/console.log" --boot1 disk
$run VBoxManage storageattach "$vm" --storagectl SATA --port 1 --device 0 --type hdd --medium "$seed"
$run VBoxManage startvm "$vm" --type headless
