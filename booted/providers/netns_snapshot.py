"""Snapshots of netns hosts: the cgroup freezer pauses a whole host at once, its overlay's upper dir (all it
wrote since the golden image) is copied while it is paused, and a restore puts that layer back into a
stopped host, which then boots on the golden generation the layer was written on.

Each host runs in a freezer cgroup of its own, `booted/<netns>` (netns-host.sh puts its init there at boot;
a pause also sweeps in every process of the host's network namespace, for hosts booted before that). cgroup
v1's freezer hierarchy when the machine has one, else cgroup v2's `cgroup.freeze`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

FREEZER_ROOTS = (Path("/sys/fs/cgroup/freezer"), Path("/sys/fs/cgroup"))
LOWER = "lower"  # in a host's folder: the image layers its upper dir was last written on (netns.py writes it)
PINNED = "lower-pinned"  # written by a restore: the host boots on these layers while its restored upper lives
UPPER = "upper"
WAIT = 5.0  # seconds a freeze may take to settle


def freezer(ns: str) -> Path | None:
    """The host's freezer cgroup (not necessarily made yet), or None on a machine without a freezer."""
    for root in FREEZER_ROOTS:
        if (root / "cgroup.procs").is_file():
            return root / "booted" / ns
    return None


def _v2(group: Path) -> bool:
    return not str(group).startswith(str(FREEZER_ROOTS[0]) + "/")


def _by_netns(namespaces: list[str]) -> dict[str, set[str]]:
    """The processes of each of these network namespaces, in one pass over /proc."""
    inodes: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(f"/run/netns/{ns}")
            inodes[(st.st_dev, st.st_ino)] = ns
        except OSError:
            continue
    out: dict[str, set[str]] = {ns: set() for ns in namespaces}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
            except OSError:
                continue
            owner = inodes.get((st.st_dev, st.st_ino))
            if owner is not None:
                out[owner].add(pid)
    return out


def _members(group: Path) -> set[str]:
    try:
        return set((group / "cgroup.procs").read_text().split())
    except OSError:
        return set()


def _sweep(groups: dict[str, Path]) -> dict[str, set[str]]:
    """Move every process of each host's network namespace (netns -> its cgroup) into the host's cgroup;
    returns, per netns, the processes that were outside."""
    strays = {ns: pids - _members(groups[ns]) for ns, pids in _by_netns(list(groups)).items()}
    for ns, pids in strays.items():
        for pid in pids:
            try:
                (groups[ns] / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # it exited meanwhile
    return strays


def _state(group: Path) -> str:
    try:
        if _v2(group):
            return "FROZEN" if "frozen 1" in (group / "cgroup.events").read_text() else "THAWED"
        return (group / "freezer.state").read_text().strip()
    except OSError:
        return ""


def _set(group: Path, frozen: bool) -> None:
    if _v2(group):
        (group / "cgroup.freeze").write_text("1" if frozen else "0")
    else:
        (group / "freezer.state").write_text("FROZEN" if frozen else "THAWED")


def freeze(namespaces: dict[str, str]) -> dict[str, str]:
    """Freeze hosts (host -> its netns): all are asked at once, then waited for; host -> error."""
    errors: dict[str, str] = {}
    groups: dict[str, Path] = {}  # netns -> its cgroup
    for host, ns in namespaces.items():
        group = freezer(ns)
        if group is None:
            errors[host] = "this machine has no cgroup freezer (cgroup v1 freezer or cgroup v2)"
            continue
        try:
            group.mkdir(parents=True, exist_ok=True)
            groups[ns] = group
        except OSError as exc:
            errors[host] = f"could not make its freezer cgroup: {exc}"
    _sweep(groups)
    for host, ns in namespaces.items():
        if ns in groups:
            try:
                _set(groups[ns], True)
            except OSError as exc:
                errors[host] = f"could not freeze: {exc}"
    waiting = {ns: g for ns, g in groups.items() if not any(namespaces[h] == ns for h in errors)}
    deadline = time.monotonic() + WAIT
    while waiting and time.monotonic() < deadline:
        strays = _sweep(waiting)  # processes forked between the sweep and the freeze
        waiting = {ns: g for ns, g in waiting.items() if strays[ns] or _state(g) != "FROZEN"}
        if waiting:
            time.sleep(0.005)
    by_ns = {ns: host for host, ns in namespaces.items()}
    for ns, group in waiting.items():
        errors[by_ns[ns]] = f"did not freeze within {WAIT:.0f} s (state {_state(group) or 'unknown'})"
    return errors


def thaw(namespaces: dict[str, str]) -> dict[str, str]:
    """Let hosts run on (a host that is not frozen, or has no cgroup, is left as it is); host -> error."""
    errors: dict[str, str] = {}
    for host, ns in namespaces.items():
        group = freezer(ns)
        if group is None or not group.is_dir():
            continue
        try:
            _set(group, False)
        except OSError as exc:
            errors[host] = f"could not thaw: {exc}"
    return errors


def thaw_command(namespaces: list[str]) -> list[str] | None:
    """A shell command that thaws these hosts' cgroups (the watchdog's, when booted's run dies)."""
    groups = [g for g in (freezer(ns) for ns in namespaces) if g is not None]
    if not groups:
        return None
    lines = [f"echo 0 > {g}/cgroup.freeze" if _v2(g) else f"echo THAWED > {g}/freezer.state" for g in groups]
    return ["sh", "-c", "; ".join(f"{line} 2>/dev/null" for line in lines) + "; true"]


def copy_tree(src: Path, dest: Path) -> None:
    """A copy with owners, modes, devices (overlay whiteouts) and xattrs (overlay's opaque marks)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True, capture_output=True, timeout=600)


def save(host_dir: Path, folder: Path) -> list[str]:
    """A copy of the host's upper dir into `folder`, with the layers it was written on (returned)."""
    upper = host_dir / UPPER
    if upper.is_dir():
        copy_tree(upper, folder / UPPER)
    else:
        (folder / UPPER).mkdir()
    lowers = _lowers(host_dir)
    (folder / LOWER).write_text("\n".join(lowers) + "\n")
    return lowers


def _lowers(host_dir: Path) -> list[str]:
    for name in (PINNED, LOWER):
        try:
            return [line for line in (host_dir / name).read_text().splitlines() if line]
        except OSError:
            continue
    return []


def restore(host_dir: Path, folder: Path) -> None:
    """The saved upper dir back into a stopped host's folder (the old one and overlay's work dir go), and its
    layers pinned; a re-run after a crash redoes it."""
    host_dir.mkdir(parents=True, exist_ok=True)
    fresh = host_dir / ".upper.restoring"
    shutil.rmtree(fresh, ignore_errors=True)
    copy_tree(folder / UPPER, fresh)
    for old in (UPPER, "work"):
        shutil.rmtree(host_dir / old, ignore_errors=True)
    os.rename(fresh, host_dir / UPPER)
    (host_dir / "work").mkdir()
    try:
        lowers = (folder / LOWER).read_text()
    except OSError:
        lowers = ""
    if lowers.strip():
        (host_dir / PINNED).write_text(lowers)


def pinned_lower(host_dir: Path) -> str | None:
    """The layers a restored host boots on (`a:b:c`), when they all still exist; None: the current image's."""
    try:
        lowers = [line for line in (host_dir / PINNED).read_text().splitlines() if line]
    except OSError:
        return None
    return ":".join(lowers) if lowers and all(Path(p).is_dir() for p in lowers) else None
