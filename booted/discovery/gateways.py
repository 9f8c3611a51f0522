"""booted's parts on the lab gateways: nginx (boot endpoint, releases, installer files) and the apt proxy,
served on the gateways of every lab that is up, and the lab's known_hosts. The labs are handed in (a
callable that lists them), never looked up: the run above owns the registry of labs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from booted.discovery import bootlog, nginx, watch
from booted.discovery.aptproxy import AptProxy
from booted.errors import ProviderError
from booted.kit import Kit
from booted.remote import releases
from booted.state.records import Image


class GatewayLab(Protocol):
    """What the gateway work needs of a lab: where booted listens for it, where a host's SSH is reached."""

    @property
    def name(self) -> str: ...

    def listen_addresses(self) -> list[str]: ...

    def ssh_endpoint(self, image: Image) -> tuple[str, int]: ...


class Gateways:
    def __init__(self, kit: Kit, labs: Callable[[], Iterable[GatewayLab]]) -> None:
        self.kit, self.labs = kit, labs

    def addresses(self) -> set[str]:
        return {a for lab in self.labs() for a in lab.listen_addresses()}

    def serve(self, keep: bool = False) -> str:
        """nginx and the apt proxy on the gateways of every lab that is up; both stop when none is (nginx
        stays on loopback with `keep`). Returns what nginx did."""
        settings = self.kit.settings
        with self.kit.locks.nginx():
            addresses = self.addresses()
            state = nginx.serve(settings, addresses, keep)
            listen = sorted(addresses & (nginx.local_addresses() | {"127.0.0.1"}))
            apt = AptProxy(settings)
            if listen:
                try:  # optional: without it the lab still boots and serves, it just cannot install packages
                    said = apt.ensure(listen)
                except ProviderError as exc:
                    said = f"failed: {exc}"
                if not said.startswith(("running", "started")):
                    self.kit.say(f"apt proxy {said}")
            else:
                apt.stop()
                releases.discard(settings)
            return state

    def down(self) -> list[str]:
        """Warnings for booted's parts (nginx, apt proxy) that are down while a lab is up."""
        return watch.down(self.kit.settings, self.addresses())

    def restart_nginx(self) -> tuple[str, Path | None]:
        """Take in what the boot log has, restart nginx with a new boot log; the old one is kept."""
        bootlog.read_new(self.kit.inventory, self.kit.settings.boot_log)
        with self.kit.locks.nginx():
            server = nginx.Nginx(self.kit.settings)
            server.stop()
            kept = server.rotate_log()
            return nginx.serve(self.kit.settings, self.addresses(), True), kept

    def pin_host_keys(self) -> None:
        """known_hosts: every host key at its lab IP, and at [addr]:port where a host's SSH is forwarded."""
        labs = {lab.name: lab for lab in self.labs()}
        pins = []
        for image in self.kit.inventory.images():
            pins.append((image.ip, image.hostkey))
            addr, port = labs[image.env].ssh_endpoint(image) if image.env in labs else (image.ip, 22)
            if (addr, port) != (image.ip, 22):
                pins.append((f"[{addr}]:{port}", image.hostkey))
        self.kit.keys.write_known_hosts(pins)

    def forget_image(self, name: str) -> None:
        """Drop a deleted image's record, host key and pins: its IP and MAC go back to the pool."""
        self.kit.inventory.release_image(name)
        self.kit.keys.drop_host_key(name)
        self.pin_host_keys()
