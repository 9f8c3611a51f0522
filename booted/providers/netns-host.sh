# shellcheck shell=sh
# A netns host, run by booted as `sh -c THIS booted-host ROOT LOWER UPPER WORK IDENTITY INIT NETNS NAME` in
# the host's new mount, pid and uts namespaces (inside its network namespace). Every path arrives as an
# argument, never in the text. The host's root is a private overlay on the golden image.
#   busybox init: mount proc, a fresh sysfs, /dev, /run, /tmp, copy the identity, chroot into the boot script.
#   systemd: systemd-nspawn boots the image's systemd on that overlay, in this network namespace, with the
#   identity bound at /run/booted (booted.service runs the same boot script).
set -e
root=$1 lower=$2 upper=$3 work=$4 ident=$5 init=$6 ns=$7 name=$8
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
if [ "$init" = systemd ]; then
  # nspawn keeps per-container state under /run/systemd/nspawn and insists it be a tmpfs: give it one in
  # this private mount namespace (the machine's /run is untouched)
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755,size=4m tmpfs /run/systemd/nspawn
  # a cgroup of its own in every hierarchy systemd uses, so two hosts' systemds never share one
  for h in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    if [ -f "$h/cgroup.procs" ]; then
      mkdir -p "$h/booted/$ns"
      echo $$ >"$h/booted/$ns/cgroup.procs"
    fi
  done
  exec systemd-nspawn --quiet --boot --register=no --keep-unit --machine="$name" --directory="$root" \
    --network-namespace-path="/run/netns/$ns" --bind="$ident:/run/booted" --console=pipe \
    --resolv-conf=off --timezone=off --link-journal=no --capability=CAP_NET_ADMIN
fi
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755,size=64m tmpfs "$root/run"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$root/tmp"
mkdir -p "$root/run/booted"
cp "$ident"/* "$root/run/booted/"
exec chroot "$root" /usr/lib/booted/boot
