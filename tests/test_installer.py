"""Kickstart and preseed files rendered per host from kickstart/*.j2: every rendering booted makes passes
its validator (pykickstart RHEL9; debconf-set-selections -c), a template mistake names the template and
line, and no secret but the password hash reaches them. Served by booted's real nginx (integration)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from booted.config import Settings
from booted.errors import ConfigError
from booted.hosts.identity import Identity, hash_password
from booted.images.installer import KINDS, publish, render, validate
from booted.remote.releases import discard
from tests.conftest import REPO

MIRROR = "http://deb.debian.org/debian"


def identity(tmp: Path, user: str = "root", pw_hash: str | None = None) -> Identity:
    key = tmp / "web01_key"
    key.write_text("PRIVATE HOST KEY\n")
    Path(f"{key}.pub").write_text("ssh-ed25519 AAAA host\n")
    return Identity(name="web01", ip="10.213.95.3", prefix=24, gateway="10.213.95.1", mac="52:54:0a:d5:5f:03",
                    boot_url="http://10.213.95.1:8470/booted", login_user=user, pw_hash=pw_hash, host_key=key,
                    authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBooted lab", boot_token="f" * 32,
                    apt_proxy="http://10.213.95.1:8471")


def settings(tmp: Path, root: Path = REPO) -> Settings:
    return Settings.from_env({"BOOTED_STATE_DIR": str(tmp / "state"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                             root)


@pytest.fixture(autouse=True)
def _served_dir_removed(tmp_path: Path) -> Iterator[None]:
    """As root, a private state dir's served files live under /run: removed after each test."""
    yield
    discard(settings(tmp_path))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("user", "password"), [("root", None), ("labuser", "s3cret pw")])
def test_every_rendering_passes_its_validator(tmp_path: Path, kind: str, user: str, password: str | None) -> None:
    pw_hash = hash_password(password, "/usr/bin:/bin") if password else None
    ident = identity(tmp_path, user, pw_hash)
    s = settings(tmp_path)
    text, setup = render(s, kind, ident, "lab", MIRROR)
    validate(kind, text, "test", s.path)
    assert "10.213.95.3" in text and "http://10.213.95.1:8470/kickstart/web01.setup.sh" in text
    assert "PRIVATE HOST KEY" not in text + setup and "f" * 32 not in text + setup  # identity: seed disk only
    if kind == "preseed":  # Debian's installer asks the lab's apt proxy for the mirror
        assert "\nd-i mirror/http/proxy string http://10.213.95.1:8471\n" in text
    if password:
        assert pw_hash in text and password not in text  # type: ignore[operator]
    else:
        assert ("rootpw --lock" in text) if kind == "kickstart" else ("root-password-crypted password !" in text)
    assert setup.startswith("#!/bin/sh") and "blkid -L BOOTEDSEED" in setup and "phone_home() {" not in text
    assert "phone_home" in setup  # booted's own boot script, verbatim


def test_published_where_nginx_serves_it(tmp_path: Path) -> None:
    s = settings(tmp_path)
    rendered = publish(s, "kickstart", identity(tmp_path), "lab", MIRROR)
    assert rendered.url == "http://10.213.95.1:8470/kickstart/web01.ks"
    assert rendered.path.read_text().startswith("# booted kickstart for web01")
    assert (rendered.path.parent / "web01.setup.sh").stat().st_mode & 0o777 == 0o644


def test_a_template_mistake_names_template_and_line(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "kickstart", root / "kickstart")
    ks = root / "kickstart" / "rhel9.ks.j2"
    ks.write_text(ks.read_text().replace("poweroff\n", "poweroff\n{% if %}\n"))
    with pytest.raises(ConfigError, match=r"rhel9\.ks\.j2:\d+: "):
        render(settings(tmp_path, root), "kickstart", identity(tmp_path), "lab", MIRROR)
    ks.write_text((REPO / "kickstart" / "rhel9.ks.j2").read_text().replace("poweroff\n", "poweroff\n{{ nosuch }}\n"))
    with pytest.raises(ConfigError, match="'nosuch' is undefined"):
        render(settings(tmp_path, root), "kickstart", identity(tmp_path), "lab", MIRROR)


def test_the_validators_reject_what_installers_would(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pykickstart .RHEL9. rejects it"):
        validate("kickstart", "text\nnetwork --bootproto=static --nosuchoption\n", "bad.ks", "/usr/bin:/bin")
    with pytest.raises(ConfigError, match="debconf-set-selections -c rejects it"):
        validate("preseed", "d-i netcfg/get_hostname\n", "bad.preseed", "/usr/bin:/bin")


@pytest.mark.integration
def test_booted_nginx_serves_exact_names_only(tmp_path: Path) -> None:
    from booted.discovery.nginx import Nginx

    s = Settings.from_env({"BOOTED_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                           "BOOTED_HTTP_PORT": "18479"}, REPO)
    publish(s, "preseed", identity(tmp_path), "lab", MIRROR)
    nginx = Nginx(s)
    nginx.ensure(["127.0.0.1"])
    try:
        with urllib.request.urlopen("http://127.0.0.1:18479/kickstart/web01.preseed", timeout=5) as resp:
            assert b"netcfg/get_ipaddress string 10.213.95.3" in resp.read()
        for path in ("/kickstart/", "/kickstart/web01.j2", "/kickstart/../state.db", "/kickstart/rhel9.ks.j2"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:18479{path}", timeout=5)
            assert info.value.code in (400, 404), path
    finally:
        nginx.stop()
