"""The provider contract: an abstract base class with the shared parts implemented once.

A provider makes hosts exist. What is really its own: `start`, `stop`, `host_of` (which of its processes
is which host), `clone` (copy a host's disk) and `teardown`. Shared here: the tool and root check, the
/proc scan of handle processes, destroy of a host's folder, and the default network (the lab bridge with
the gateway, where booted's nginx listens), made once per start by the lab handle's prepare_network call.
`start` returns once hosts are launched: the one wait for their boot is discovery's (discovery/wait.py),
which asks `why_not_booted` about a host that stays silent. The VM providers share more in providers/vm.py.
Errors are ProviderError / NeedsRoot / ToolMissing; nothing is reported done that was not done. The types
every provider module shares (Lab, Boot) are in providers/lab.py.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from booted.config import Settings
from booted.errors import ConfigError, NeedsRoot, ProviderError, ToolMissing
from booted.hosts.identity import Identity
from booted.providers import procs
from booted.providers.bridge import ensure_bridge
from booted.providers.lab import Lab
from booted.providers.links import link_exists

Progress = Callable[[str], None]


@dataclass(frozen=True)
class InstallMedia:
    """What an installer boots: its kernel, initrd and command line, and the user's installer ISO if any
    (attached as a CD: RHEL-family installers take their packages from it)."""

    kernel: Path
    initrd: Path
    append: str
    iso: Path | None = None


@dataclass(frozen=True)
class Started:
    """A host the provider started: the PID of its handle process (VM, namespace init...)."""

    name: str
    pid: int


class Provider(ABC):
    """What every provider implements; one instance per lab handle, made with the run's Settings."""

    name: ClassVar[str]
    tools: ClassVar[dict[str, str]] = {}  # program -> Debian package that has it
    needs_root: ClassVar[bool] = False
    # running()'s PID is a process inside the host's own network namespace: env_status reads its sockets there
    own_netns: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # shared ----------------------------------------------------------------------------------------
    def root_needed(self, lab: Lab | None) -> str | None:
        """Why this lab needs root here (None: it does not). Providers with a root-free mode override it."""
        return f"the {self.name} provider needs root (namespaces, bridge, mounts)" if self.needs_root else None

    def check(self, lab: Lab | None = None) -> None:
        """Raise a clear error if this machine cannot run the provider (tool missing, not root) for `lab`."""
        missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in self.tools.items()
                   if self.settings.which(tool) is None and not Path(tool).exists()]
        if missing:
            raise ToolMissing(f"the {self.name} provider needs {', '.join(missing)} (or run setup.sh)")
        why = self.root_needed(lab)
        if why and not self.settings.is_root:
            raise NeedsRoot(f"{why}: run fab as root, e.g. sudo -E fab ...")

    def processes(self, lab: Lab) -> dict[str, tuple[int, list[str]]]:
        """This lab's live handle processes, found in /proc: host name -> (PID, argv)."""
        found: dict[str, tuple[int, list[str]]] = {}
        for pid, argv in procs.processes():
            name = self.host_of(lab, argv)
            if name is not None and procs.alive(pid):
                found[name] = (pid, argv)
        return found

    def running(self, lab: Lab) -> dict[str, int]:
        """Hosts that really run now, observed on the machine: name -> handle PID (works without root)."""
        return {name: pid for name, (pid, _) in self.processes(lab).items()}

    def destroy(self, lab: Lab, name: str) -> None:
        """Remove a stopped host's folder (its disk: overlay upper, qcow2...)."""
        if name in self.running(lab):
            raise ProviderError(f"host {name} is running: stop it first (fab image_stop {name})")
        shutil.rmtree(lab.host_dir(name), ignore_errors=True)

    def discard(self, lab: Lab, name: str) -> None:
        """What env_stop does to a stopped host: its disk goes (the writes since the golden image), except an
        installed disk (`installed.*`: an installer's work, kept until image_del)."""
        hdir = lab.host_dir(name)
        if not any(hdir.glob("installed.*")):
            self.destroy(lab, name)
            return
        for entry in hdir.iterdir():
            if entry.name.startswith("installed."):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def prepare_network(self, lab: Lab) -> None:
        """Create the lab network (the bridge with the gateway address) before any host boots."""
        ensure_bridge(lab)

    def listen_addresses(self, lab: Lab) -> list[str]:
        """Where booted's nginx must listen for this lab's boot calls (nothing when the lab is down)."""
        return [lab.gateway] if link_exists(lab.bridge) else []

    def endpoints(self, lab: Lab, name: str) -> dict[int, tuple[str, int]]:
        """Where the controller reaches a running host's ports when not at its lab IP (user-mode VMs:
        guest port -> 127.0.0.1:forwarded port); empty when the host answers at its lab IP."""
        return {}

    def local_nics(self, lab: Lab, name: str, ip: str) -> dict[str, str]:
        """A host's NICs as links on this machine, the controller's side of each: network -> interface
        (booted/impair/ impairs them). {}: none here (user-mode networking, a remote hypervisor...)."""
        return {}

    def place(self, lab: Lab, hosts: list[Identity], recorded: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Which hypervisor each host runs on (providers with several; the others place nothing): returns
        (host -> hypervisor name, host -> why it could not be placed). `recorded`: where hosts were placed
        before (their disks are there); pins in environments.py are the provider's own options."""
        return {}, {}

    def why_not_booted(self, lab: Lab, name: str) -> str:
        """What the provider sees of a started host that did not phone home in time (its VM is gone, its
        hypervisor's bridge may not reach the lab network...), for the message of the one wait (discovery/
        wait.py); "" when it sees nothing."""
        return ""

    def console(self, lab: Lab, name: str) -> Path:
        """The host's console log on this machine (a provider whose hosts run elsewhere fetches it first)."""
        return lab.host_dir(name) / "console.log"

    @staticmethod
    def new_disk(lab: Lab, new: str, disk: str) -> Path:
        """The path of a clone's disk; refuses to overwrite one."""
        target = lab.host_dir(new) / disk
        if target.exists():
            raise ProviderError(f"host {new} already has a disk at {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def check_install(self) -> None:
        """Raise a clear error unless this provider can boot an installer here (checked before anything is
        made or downloaded). Providers that can override it and install()."""
        raise ConfigError(f"the {self.name} provider cannot run an installer: installer-based images need "
                          "provider qemu with a tap network (as root) or provider virtualbox")

    def install(self, lab: Lab, host: Identity, media: InstallMedia, timeout: float, progress: Progress
                ) -> tuple[bool, str]:
        """Run an installer onto the host's own disk until it powers off: (ok, what happened)."""
        self.check_install()
        raise AssertionError("a provider whose check_install passes implements install")

    # snapshots (booted/snapshots/): a provider that can keep them overrides these ----------------------
    # what a snapshot keeps of a host ("": none yet); True when a restored host continues where it was paused
    # (its memory was saved: qemu, libvirt) instead of booting from its restored disk (netns)
    snapshot_keeps: ClassVar[str] = ""
    restore_resumes: ClassVar[bool] = False
    # True when `pause`/`resume` work (a paused host keeps its memory and runs on where it stopped): the
    # monitor's warm pool boots no host for a provider without it
    can_pause: ClassVar[bool] = False

    def _no_snapshots(self) -> ProviderError:
        return ProviderError(f"the {self.name} provider cannot take snapshots yet (README: Snapshots)")

    def pause(self, lab: Lab, names: list[str]) -> dict[str, str]:
        """Pause running hosts, all at once (their processes stop where they are); host -> error."""
        raise self._no_snapshots()

    def resume(self, lab: Lab, names: list[str]) -> dict[str, str]:
        """Let paused hosts run on; host -> error. Resuming a host that is not paused does nothing."""
        raise self._no_snapshots()

    def resume_command(self, lab: Lab, names: list[str]) -> list[str] | None:
        """A command that resumes these hosts without booted (run by a watchdog when a snapshot's run dies
        while they are paused); None: the next run resumes them."""
        return None

    def save(self, lab: Lab, name: str, folder: Path) -> list[str]:
        """Save a host's state (paused, or stopped with its disk kept) into `folder`, which exists and is
        empty; return the image files it depends on (kept while the snapshot is: golden generations)."""
        raise self._no_snapshots()

    def restore(self, lab: Lab, name: str, folder: Path) -> None:
        """Put a stopped host's saved state from `folder` back (the lab handle starts it after)."""
        raise self._no_snapshots()

    def drop(self, lab: Lab, names: list[str]) -> None:
        """Before a restore puts back hosts' whole state: end their processes at once, without a clean
        shutdown (what they would save is replaced). The stop that follows does the rest; default: nothing."""
        return None

    def start_saved(self, lab: Lab, hosts: list[Identity]) -> tuple[list[Started], dict[str, str]]:
        """restore_resumes providers: start restored hosts from their saved memory (their identities as at
        their boot: names, NICs) on the networks prepare_network made; they continue where they were paused
        and do not phone home. Returns the started ones and host -> error for the others."""
        raise self._no_snapshots()

    def forget(self, lab: Lab, name: str, folder: Path) -> None:
        """A snapshot of the host is deleted: drop what the provider keeps of it outside `folder` (VirtualBox's,
        libvirt's own snapshots). The folder itself is booted's to remove."""
        return None

    # a provider's own ------------------------------------------------------------------------------
    @abstractmethod
    def host_of(self, lab: Lab, argv: list[str]) -> str | None:
        """The host of this lab a process with this argv is the handle of, or None."""

    @abstractmethod
    def start(self, lab: Lab, hosts: list[Identity], progress: Progress) -> tuple[list[Started], dict[str, str]]:
        """Start hosts on the network prepare_network made, and return once they are launched: the wait for
        their boot is discovery's. Returns the started ones and host -> error for the others."""

    @abstractmethod
    def stop(self, lab: Lab, names: list[str]) -> dict[str, str]:
        """Stop hosts; return host -> error for those that could not be stopped. Stopped hosts are gone."""

    @abstractmethod
    def clone(self, lab: Lab, src: str, new: str) -> None:
        """Give host `new` a copy of host `src`'s disk (its writes since the golden image)."""

    @abstractmethod
    def teardown(self, lab: Lab) -> None:
        """Remove the lab network once no host runs; reap leftovers of crashed runs."""
