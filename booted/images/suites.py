"""Where the golden image's packages come from, and whether they moved on since it was built.

The image names three suites: bookworm, bookworm-updates (from the main mirror) and bookworm-security (from
the security mirror), each taken from this machine's apt sources unless BOOTED_MIRROR / BOOTED_SECURITY_MIRROR
say otherwise. A suite "moved on" when the hash of its package list (main/binary-ARCH/Packages, as its signed
InRelease names it) differs from the one the image was built from: the InRelease `Date` is no use for that,
since updates and security re-sign theirs every few hours even when no package changed.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from booted.config import Settings

SUITE = "bookworm"
SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
FETCH_TIMEOUT = 10  # seconds per InRelease: an unreachable mirror costs this once, then the cached image is used
Fetch = Callable[[str], bytes]  # URL -> body; raises OSError when the mirror cannot be reached


def _apt_uri(pattern: str, sources: Path) -> str | None:
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        match = re.search(rf"(?m)^(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(https?://\S+/{pattern})/?\s", text)
        if match:
            return match.group(1)
    return None


def default_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses (BOOTED_MIRROR overrides it): the only network booted builds from."""
    return _apt_uri("debian", sources) or "http://deb.debian.org/debian"


def default_security_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The security mirror apt already uses (BOOTED_SECURITY_MIRROR overrides it), else Debian's own."""
    return _apt_uri("debian-security", sources) or "http://deb.debian.org/debian-security"


@dataclass(frozen=True)
class Mirrors:
    """The two URLs the golden image's packages come from (and its hosts' apt, through booted's apt proxy)."""

    main: str
    security: str

    @classmethod
    def of(cls, settings: Settings, sources: Path = Path("/etc/apt")) -> Mirrors:
        return cls((settings.mirror or default_mirror(sources)).rstrip("/"),
                   (settings.security_mirror or default_security_mirror(sources)).rstrip("/"))

    def source_lines(self) -> list[str]:
        """One-line apt sources, as the image's /etc/apt/sources.list holds them."""
        return [f"deb {self.main} {SUITE} main", f"deb {self.main} {SUITE}-updates main",
                f"deb {self.security} {SUITE}-security main"]

    def sources_list(self) -> str:
        return "\n".join(self.source_lines()) + "\n"

    def inrelease_urls(self) -> dict[str, str]:
        """suite -> the URL of its InRelease file."""
        return {suite: f"{self.security if suite.endswith('-security') else self.main}/dists/{suite}/InRelease"
                for suite in SUITES}


def native_arch() -> str:
    """dpkg's architecture of this machine (what debootstrap and mmdebstrap build by default)."""
    proc = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "amd64"


def packages_hash(release: str, arch: str) -> str | None:
    """The SHA256 of main/binary-ARCH/Packages named in a Release or InRelease file (None: not there)."""
    sha256 = release.partition("\nSHA256:\n")[2]
    match = re.search(rf"(?m)^ ([0-9a-f]{{64}})\s+\d+\s+main/binary-{re.escape(arch)}/Packages$", sha256)
    return match.group(1) if match else None


def codename(release: str) -> str | None:
    match = re.search(r"(?m)^Codename:\s*(\S+)$", release)
    return match.group(1) if match else None


def http_get(url: str) -> bytes:
    """GET url (the process boundary the tests replace); OSError when it fails, whatever the reason."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            body: bytes = response.read()
    except (http.client.HTTPException, ValueError) as exc:  # a broken answer; URLError and timeouts are OSErrors
        raise OSError(f"{url}: {exc}") from exc
    return body


def mirror_state(mirrors: Mirrors, arch: str, fetch: Fetch = http_get) -> dict[str, str]:
    """suite -> its package-list hash, as the mirrors serve it now. OSError when a mirror does not answer or
    answers with something that is not that suite's InRelease (a captive portal, a proxy's error page)."""
    state: dict[str, str] = {}
    for suite, url in mirrors.inrelease_urls().items():
        text = fetch(url).decode("utf-8", errors="replace")
        digest = packages_hash(text, arch)
        if digest is None or codename(text) != suite:
            raise OSError(f"{url} is not {suite}'s InRelease for {arch}")
        state[suite] = digest
    return state


def built_state(rootfs: Path, arch: str) -> dict[str, str]:
    """suite -> the package-list hash a built image's apt lists were made from (its own InRelease files)."""
    state: dict[str, str] = {}
    for path in sorted((rootfs / "var/lib/apt/lists").glob("*_InRelease")):
        text = path.read_text(errors="replace")
        name, digest = codename(text), packages_hash(text, arch)
        if name in SUITES and digest:
            state[name] = digest
    return state
