# shellcheck shell=sh
# A netns host, run by booted as `sh -c THIS booted-host ROOT LOWER HOSTDIR IDENTITY INIT NETNS NAME BASE ADDR
# PYTHON HOSTROOT NICS` (NICS: "eth1=ADDR/PREFIX ...", its NICs on the lab's other networks) as real root in
# the host's new mount, pid and uts namespaces (inside its network namespace).
# Every path arrives as an argument, never in the text. It contains the host (README: "How a netns host is
# contained"):
# - the host's network (lo, eth0 and its address, the sysctls it needs) is set here: the netns belongs to the
#   machine's user namespace, and the host's root, in a user namespace of its own, cannot configure it;
# - its root: an overlay of the golden image and HOSTDIR/upper on idmapped layers (on-disk ids 0..65535 show
#   as BASE..BASE+65535), mounted by hostroot.py; its identity: a copy in a tmpfs owned by the host's root;
# - busybox init: a read-only sysfs, proc with /proc/sys and friends read-only or masked, a minimal /dev
#   (null zero full random urandom tty, a private devpts, shm), tmpfs /run and /tmp; then hostroot.py
#   pivot_roots into the overlay, detaches the machine's root and execs the boot script as root of a new user
#   namespace (ids BASE.. outside): no capability toward the machine, its mounts, its processes or even this
#   network namespace. Nothing of the host's own files ever runs as real root.
# - systemd: systemd-nspawn boots the image's systemd on that overlay, in this network namespace, with
#   --private-users=BASE:65536 (its own pivot_root, minimal /dev, masked /proc, bounded capabilities).
set -e
root=$1 lower=$2 hdir=$3 ident=$4 init=$5 ns=$6 name=$7 base=$8 addr=$9 python=${10} hostroot=${11} nics=${12:-}

ip link set lo up
ip link set eth0 up
ip addr replace "$addr" dev eth0
for nic in $nics; do
  ip link set "${nic%%=*}" up
  ip addr replace "${nic#*=}" dev "${nic%%=*}"
done
echo 0 >/proc/sys/net/ipv4/ip_unprivileged_port_start  # sshd binds port 22 as a user-namespace root
echo "0 2147483647" >/proc/sys/net/ipv4/ping_group_range  # ping without CAP_NET_RAW (ICMP sockets)
# queued connections move to another listener of the port when one closes (Linux 5.14+; best effort)
echo 1 >/proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || true

"$python" -I -S "$hostroot" root "$base" "$root" "$lower" "$hdir"
boot=$hdir/boot
mount -t tmpfs -o "mode=0755,uid=$base,gid=$base,size=4m" tmpfs "$boot"
cp "$ident"/* "$boot/"
chown -R "$base:$base" "$boot"

# a freezer cgroup of its own (cgroup v1's freezer hierarchy, else v2): env_snapshot pauses the whole host at once
for h in /sys/fs/cgroup/freezer /sys/fs/cgroup; do
  if [ -f "$h/cgroup.procs" ]; then
    { mkdir -p "$h/booted/$ns" && echo $$ >"$h/booted/$ns/cgroup.procs"; } 2>/dev/null || true
    break
  fi
done

if [ "$init" = systemd ]; then
  # nspawn keeps per-container state under /run/systemd/nspawn and insists it be a tmpfs: give it one in
  # this private mount namespace (the machine's /run is untouched)
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755,size=4m tmpfs /run/systemd/nspawn
  mount -t proc proc /proc  # this PID namespace's: nspawn writes its child's id maps by /proc/PID
  # a cgroup of its own in every hierarchy systemd uses, so two hosts' systemds never share one
  for h in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    if [ -f "$h/cgroup.procs" ]; then
      mkdir -p "$h/booted/$ns"
      echo $$ >"$h/booted/$ns/cgroup.procs"
    fi
  done
  # no --network-namespace-path: nspawn would join it from inside the user namespace, which may not; the
  # container shares the network namespace this script already runs in
  exec systemd-nspawn --quiet --boot --register=no --keep-unit --machine="$name" --directory="$root" \
    --private-users="$base:65536" --private-users-ownership=off \
    --bind="$boot:/run/booted" --console=pipe \
    --resolv-conf=off --timezone=off --link-journal=no
fi

r=$root
for d in proc sys dev run tmp; do  # mount points the host could have made symlinks on an earlier boot
  if [ -L "$r/$d" ] || [ ! -d "$r/$d" ]; then echo "booted: /$d in the host is not a directory" >&2; exit 1; fi
done
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
for p in sys sysrq-trigger irq bus fs; do  # what Docker makes read-only
  if [ -e "$r/proc/$p" ]; then mount --bind -o ro "$r/proc/$p" "$r/proc/$p"; fi
done
for p in kcore keys timer_list sched_debug latency_stats; do  # and masks
  if [ -e "$r/proc/$p" ]; then mount --bind /dev/null "$r/proc/$p"; fi
done
for p in acpi scsi asound; do
  if [ -d "$r/proc/$p" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k tmpfs "$r/proc/$p"; fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t tmpfs -o "mode=0755,uid=$base,gid=$base,size=64k,nosuid,noexec" tmpfs "$r/dev"
node() { mknod -m 0666 "$r/dev/$1" c "$2" "$3"; }
node null 1 3; node zero 1 5; node full 1 7; node random 1 8; node urandom 1 9; node tty 5 0
mkdir -m 0755 "$r/dev/pts"
mkdir -m 1777 "$r/dev/shm"
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2 ptmx:pts/ptmx; do
  ln -s "${l#*:}" "$r/dev/${l%%:*}"
done
chown -R -h "$base:$base" "$r/dev"
mount -t devpts -o "newinstance,ptmxmode=0666,mode=0620,gid=$((base + 5))" devpts "$r/dev/pts"
mount -t tmpfs -o "mode=1777,uid=$base,gid=$base,size=64m,nosuid,nodev" tmpfs "$r/dev/shm"
mount -t tmpfs -o "mode=0755,uid=$base,gid=$base,size=64m,nosuid,nodev" tmpfs "$r/run"
mount -t tmpfs -o "mode=1777,uid=$base,gid=$base,size=256m,nosuid,nodev" tmpfs "$r/tmp"
mkdir "$r/run/booted"
mount --move "$boot" "$r/run/booted"

# pivot_root into the overlay, detach the machine's root, exec the boot script as root of a user namespace
exec "$python" -I -S "$hostroot" enter "$base" "$r"
