"""The service folders' names, read without parsing them: `fab` builds its task list from this alone (so a
`fab --list` or a task that is not a service's imports none of the service machinery)."""

from __future__ import annotations

from pathlib import Path

from booted.rules import SERVICE_NAME


def folders(services_dir: Path) -> list[str]:
    """Names of the service folders (those with a service.toml), without parsing them."""
    if not services_dir.is_dir():
        return []
    return sorted(p.name for p in services_dir.iterdir()
                  if (p / "service.toml").is_file() and SERVICE_NAME.match(p.name))
