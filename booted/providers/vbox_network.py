"""A VirtualBox lab's network: a host-only network whose host side is the lab gateway (where booted's nginx
listens). A vboxnetN interface (`hostonlyif`, VirtualBox 6.x and 7 outside macOS), whose name VirtualBox
picks and booted keeps in the lab folder; or with VirtualBox 7 on macOS (`vmnet`) a host-only network
named for the lab whose lower address (the host's) is the gateway."""

from __future__ import annotations

from pathlib import Path

from booted.errors import ProviderError
from booted.providers.lab import Lab
from booted.providers.vboxmanage import VBoxError, VBoxManage
from booted.providers.vm import lab_net_name

INTERFACE_FILE = "vbox-hostonlyif"  # in the lab folder: the name of its vboxnetN interface


def _interface_file(lab: Lab) -> Path:
    return lab.dir / INTERFACE_FILE


def ensure_hostonly(vbox: VBoxManage, vmnet: bool, lab: Lab) -> None:
    """The lab's host-only network with the gateway address, made once."""
    mask = str(lab.network.netmask)
    if vmnet:
        if not any(n.get("Name") == lab_net_name(lab) for n in vbox.hostonly(vmnet)):
            vbox.run("hostonlynet", "add", "--name", lab_net_name(lab), "--netmask", mask, "--lower-ip", lab.gateway,
                     "--upper-ip", str(list(lab.network.hosts())[-1]), "--enable")
        return
    recorded = _interface_file(lab)
    if recorded.exists() and recorded.read_text().strip() in {n.get("Name") for n in vbox.hostonly(vmnet)}:
        return
    out = vbox.run("hostonlyif", "create")
    name = next((w.strip("'") for w in out.split() if w.strip("'").startswith("vboxnet")), "")
    if not name:
        raise VBoxError(f"hostonlyif create did not name the interface: {out.strip()[:200]}")
    try:
        vbox.run("hostonlyif", "ipconfig", name, "--ip", lab.gateway, "--netmask", mask)
    except VBoxError:
        vbox.run("hostonlyif", "remove", name)  # not left behind half made
        raise
    lab.dir.mkdir(parents=True, exist_ok=True)
    recorded.write_text(name + "\n")


def hostonly_name(vmnet: bool, lab: Lab) -> str:
    """What a NIC names to join the lab's host-only network (ensure_hostonly made it)."""
    if vmnet:
        return lab_net_name(lab)
    recorded = _interface_file(lab)
    if not recorded.exists():
        raise ProviderError(f"lab {lab.env}: no host-only interface recorded in {recorded}")
    return recorded.read_text().strip()


def remove_hostonly(vbox: VBoxManage, vmnet: bool, lab: Lab) -> None:
    if vmnet:
        if any(n.get("Name") == lab_net_name(lab) for n in vbox.hostonly(vmnet)):
            vbox.run("hostonlynet", "remove", "--name", lab_net_name(lab))
        return
    recorded = _interface_file(lab)
    if recorded.exists():
        vbox.run("hostonlyif", "remove", recorded.read_text().strip())
        recorded.unlink()
