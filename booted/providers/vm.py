"""The VM base: what the qemu, libvirt and virtualbox providers share.

- the name rule: a host's VM is `booted-<lab id>-<host>`, the lab's network in a hypervisor `booted-<lab id>`;
- `host_of`: a VM's process names it after an option (`-name`, `--comment`);
- the golden image as VM disk assets and as a bootable disk (images/);
- "launch, then return": `start` launches the hosts that do not run yet, at most BOOTED_BOOT_PARALLEL
  launches at once, prints a line per host and returns. A launch ends when the hypervisor runs the VM, not
  when the guest has booted: waiting for the boot-log line and SSH is discovery's (discovery/wait.py), which
  asks `why_not_booted` about a host that stays silent. The lab network is the handle's prepare_network call.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import ClassVar

from booted.hosts.identity import Identity
from booted.images.bootdisk import ensure_bootdisk
from booted.images.golden import ensure_golden
from booted.images.vm_assets import Assets, ensure_assets
from booted.providers.base import Progress, Provider, Started
from booted.providers.lab import Lab

# the kernel's init= argument per environment "init" (the golden image's layer holds both)
INITS = {"busybox": "init=/usr/lib/booted/init", "systemd": "init=/lib/systemd/systemd systemd.show_status=0"}
# one host's launch: the PID of its VM's process on this machine (0: elsewhere; None: not started), an error
Launch = Callable[[Identity], tuple[int | None, str | None]]


def vm_name(lab: Lab, host: str) -> str:
    return f"booted-{lab.lab_id}-{host}"


def lab_net_name(lab: Lab) -> str:
    """The lab's network as a hypervisor names it (libvirt network, VirtualBox host-only network)."""
    return f"booted-{lab.lab_id}"


def host_of_vm(lab: Lab, vm: str) -> str | None:
    """The host of this lab a VM name stands for, or None (another lab's VM, or not booted's)."""
    prefix = vm_name(lab, "")
    return vm[len(prefix):] if vm.startswith(prefix) else None


class VmProvider(Provider):
    """A provider whose hosts are virtual machines."""

    process: ClassVar[str]  # the program a VM runs as on this machine
    name_option: ClassVar[str]  # its option whose value is the VM's name

    @staticmethod
    def name_in_option(value: str) -> str:
        """The VM's name in the value of `name_option` (libvirt's QEMU adds to it)."""
        return value

    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """`<process> ... <name_option> booted-<lab id>-<host> ...`"""
        if not argv or not argv[0].endswith(self.process) or self.name_option not in argv[:-1]:
            return None
        return host_of_vm(lab, self.name_in_option(argv[argv.index(self.name_option) + 1]))

    def golden_assets(self, packages: tuple[str, ...], progress: Progress) -> Assets:
        """The golden image with these extra packages as VM disk assets (kernel, initramfs, ext4 disk)."""
        golden = ensure_golden(self.settings, progress, packages)
        return ensure_assets(self.settings.cache_dir, golden, progress, self.settings.path)

    def bootable_disk(self, assets: Assets, init: str, progress: Progress, fmt: str) -> Path:
        """The golden disk with its own boot loader booting `init` (INITS), in the format `fmt`."""
        return ensure_bootdisk(self.settings.cache_dir, assets, init, progress, self.settings.path, fmt)

    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        running = self.running(lab)
        wanted = {h.name for h in hosts}
        started = [Started(name, pid) for name, pid in running.items() if name in wanted]
        todo = [h for h in hosts if h.name not in running]
        if not todo:
            return started, {}
        launch, errors = self.launcher(lab, todo, progress)
        todo = [h for h in todo if h.name not in errors]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, min(self.settings.boot_parallel, len(todo)))) as pool:
            futures = {pool.submit(launch, host): host for host in todo}
            for done, future in enumerate(as_completed(futures), 1):
                host = futures[future]
                pid, error = future.result()
                if pid is not None:
                    started.append(Started(host.name, pid))
                else:
                    error = error or "did not start"
                if error:
                    errors[host.name] = error
                progress(f"  [{time.monotonic() - t0:5.1f}s] {self.launch_label(host)}: {error or 'launched'} "
                         f"({done}/{len(todo)})")
        return started, errors

    def launch_label(self, host: Identity) -> str:
        """How a host's launch line names it."""
        return host.name

    def why_not_booted(self, lab: Lab, name: str) -> str:
        return "" if name in self.running(lab) else "the VM stopped while booting (see its console.log)"

    @abstractmethod
    def launcher(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[Launch, dict[str, str]]:
        """Make what `hosts` need before their VMs launch (disks, identity, the lab's network in the
        hypervisor); returns how to launch one, and host -> error for those that cannot be launched."""
