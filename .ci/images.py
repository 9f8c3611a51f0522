"""CI: build the images the suite boots before the suite runs, as a user's first `fab env_start_all` would
(the README's test command builds them in its first tests instead; here the suite's time is the tests' own):
the golden image (busybox and systemd), the VM assets of each (kernel, initramfs, disk), the bootable disk
(raw, qcow2) and the Debian installer's netboot files. Cached under BOOTED_CACHE_DIR; a no-op when built."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from booted.config import Settings  # noqa: E402 (after the path is set)
from booted.images.bootdisk import ensure_bootdisk  # noqa: E402
from booted.images.golden import ensure_golden  # noqa: E402
from booted.images.netboot import ensure_netboot  # noqa: E402
from booted.images.vm_assets import ensure_assets  # noqa: E402
from booted.lab.handle import SYSTEMD_PACKAGES  # noqa: E402
from booted.providers.vm import INITS  # noqa: E402


def say(text: str) -> None:
    print(f"ci-images: {text}", flush=True)


def main() -> int:
    began = time.monotonic()
    settings = Settings.from_env(dict(os.environ), REPO)
    for extra in ((), SYSTEMD_PACKAGES):
        golden = ensure_golden(settings, say, extra)
        assets = ensure_assets(settings.cache_dir, golden, say, settings.path)
        if not extra:
            for fmt in ("raw", "qcow2"):
                ensure_bootdisk(settings.cache_dir, assets, INITS["busybox"], say, settings.path, fmt)
    ensure_netboot(settings.cache_dir, say, settings.path)
    say(f"images ready in {time.monotonic() - began:.0f}s ({settings.cache_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
