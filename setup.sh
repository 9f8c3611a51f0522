#!/usr/bin/env bash
# Set up booted on a fresh Debian 12 machine, as root: the Debian packages it drives, and a virtualenv
# (.venv) with booted, Fabric and the test tools. Safe to run again (it converges).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export DEBIAN_FRONTEND=noninteractive

packages=(nginx apt-cacher-ng systemd-container openssh-client debootstrap iproute2 nftables ethtool util-linux curl iputils-ping openssl git ca-certificates
          python3-venv qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio kmod extlinux syslinux-common fdisk mmdebstrap
          libvirt-clients libxml2-utils libvirt-daemon libvirt-daemon-driver-qemu xorriso pxelinux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # booted runs its own nginx and apt-cacher-ng: keep the packages' services from starting during install.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
fi

# libvirt's QEMU runs as libvirt-qemu (libvirt-daemon-system makes that user; it needs systemd, so here we do)
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
# /dev/kvm as Debian's udev rule makes it (root:kvm 0660) where no udev ran: libvirt checks it as libvirt-qemu,
# and a root-only /dev/kvm makes it probe QEMU again on every call (30 s each)
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" = root ]; then chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi

python=${BOOTED_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done. Run: .venv/bin/fab env_start_all   (or: . .venv/bin/activate; fab --list)"
