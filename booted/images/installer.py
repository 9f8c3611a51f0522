"""Installer-based hosts: kickstart (RHEL-family installers) and preseed (Debian's installer) files rendered
per host from the Jinja2 templates in kickstart/, validated (pykickstart RHEL9 for a kickstart,
`debconf-set-selections -c` for a preseed), and published where booted's nginx serves them to the lab
(/kickstart/<host>.ks, <host>.preseed, <host>.setup.sh). The installed system runs booted's setup script
once (kickstart %post, preseed late_command): booted's boot script as a unit, the identity from the seed
disk at every boot, so no secret travels over the network besides the BOOTED_PW hash the installer needs."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from booted.config import Settings
from booted.errors import ConfigError, ToolMissing
from booted.hosts.identity import Identity

KINDS = {"kickstart": ("rhel9.ks.j2", "ks"), "preseed": ("debian12.preseed.j2", "preseed")}
SETUP = "booted-setup.sh.j2"
GUEST_BOOT = Path(__file__).resolve().parent.parent / "guest" / "boot"


@dataclass(frozen=True)
class Rendered:
    """A host's installer file and its setup script, where nginx serves them."""

    kind: str
    path: Path
    url: str
    setup_url: str


def render(settings: Settings, kind: str, ident: Identity, env: str, mirror: str) -> tuple[str, str]:
    """(the installer file, the setup script) for one host; a template mistake names the template and line."""
    if kind not in KINDS:
        raise ConfigError(f"installer {kind!r}: one of {', '.join(KINDS)}")
    import jinja2

    folder = settings.project_root / "kickstart"
    jenv = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=False,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    network = ipaddress.IPv4Network(f"{ident.ip}/{ident.prefix}", strict=False)
    base = f"http://{ident.gateway}:{settings.http_port}/kickstart/{ident.name}"
    split = urlsplit(mirror)
    values = {"name": ident.name, "ip": ident.ip, "mac": ident.mac, "netmask": str(network.netmask),
              "gateway": ident.gateway, "env": env, "user": ident.login_user, "pw_hash": ident.pw_hash or "",
              "authorized_key": ident.authorized_key, "setup_url": f"{base}.setup.sh",
              "apt_proxy": ident.apt_proxy, "mirror_host": split.hostname or "deb.debian.org",
              "mirror_dir": split.path or "/debian", "boot_script": GUEST_BOOT.read_text().rstrip("\n")}
    out = []
    for template in (KINDS[kind][0], SETUP):
        try:
            out.append(jenv.get_template(template).render(**values))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{folder / template}:{exc.lineno}: {exc.message}") from None
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"{folder / template}: {exc.message} (the values are: {', '.join(values)})") from None
    return out[0], out[1]


def validate(kind: str, text: str, where: str, path: str) -> None:
    """Raise ConfigError naming `where` when the installer would reject `text`."""
    if kind == "kickstart":
        from pykickstart.errors import KickstartError
        from pykickstart.parser import KickstartParser
        from pykickstart.version import RHEL9, makeVersion

        try:
            KickstartParser(makeVersion(RHEL9)).readKickstartFromString(text)
        except KickstartError as exc:
            raise ConfigError(f"{where}: pykickstart (RHEL9) rejects it: {str(exc).strip()}") from None
        return
    tool = shutil.which("debconf-set-selections", path=path)
    if tool is None:
        raise ToolMissing("debconf-set-selections not found: apt-get install debconf (to check preseed files)")
    with tempfile.NamedTemporaryFile("w", suffix=".preseed") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run([tool, "-c", f.name], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        raise ConfigError(f"{where}: debconf-set-selections -c rejects it: {proc.stderr.strip()[-400:]}")


def publish(settings: Settings, kind: str, ident: Identity, env: str, mirror: str) -> Rendered:
    """Render, validate and place a host's installer file and setup script where nginx serves them."""
    installer, setup = render(settings, kind, ident, env, mirror)
    template = settings.project_root / "kickstart" / KINDS[kind][0]
    validate(kind, installer, f"{template} rendered for {ident.name}", settings.path)
    folder = settings.served_dir / "kickstart"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for name, text in ((f"{ident.name}.{KINDS[kind][1]}", installer), (f"{ident.name}.setup.sh", setup)):
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        tmp.write_text(text)
        tmp.chmod(0o644)  # nginx's workers read it; it holds no secret but the password hash the installer needs
        tmp.replace(folder / name)
    base = f"http://{ident.gateway}:{settings.http_port}/kickstart/{ident.name}"
    return Rendered(kind, folder / f"{ident.name}.{KINDS[kind][1]}", f"{base}.{KINDS[kind][1]}", f"{base}.setup.sh")
