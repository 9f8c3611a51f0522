"""Boot benchmark: time to serving on the qemu provider for 1, 4 and 8 VMs.

    .venv/bin/python bench/boot.py           # 1, 4 and 8 VMs, one after the other (needs root + QEMU)
    .venv/bin/python bench/boot.py --smoke   # 1 VM
    .venv/bin/python bench/boot.py --inits busybox,systemd   # both images: busybox init and Debian's systemd
    .venv/bin/python bench/boot.py --smoke --net 106         # N VMs on 10.213.<106+N>.0/24 (default 80+N)

Each size gets a private state directory and its own network with N hosts running hello 1.0. The number
is the wall time of `fab env_start_all` (Python start-up, VMs launched BOOTED_BOOT_PARALLEL at a time,
discovery, deploy, start and test of hello), with the kernel, initramfs, disk image and accelerator verdict
already cached (prepared first, not timed). "all SSH" is when the last VM's sshd listened, from the
boot timeline (fab env_timeline --json). Every lab is stopped in `finally` and checked for leftover QEMU
processes and taps.
Hosts serve at first boot (they pull hello from booted's nginx before they phone home), so env_start_all
only tests them. Last lines: `boot4_over_boot1=<ratio>` (nan with --smoke), then
`serving_over_ssh=<1 VM> serving8_over_ssh8=<8 VMs> ssh_over_floor=<1 VM>` (serving time over the time the last
VM answered SSH; nan without 8; ssh_over_floor: the 1-VM run's QEMU exec to sshd listening, over the floor:
booted's own QEMU command line (qemu_cmdline.host_command) with its kernel and initramfs booting to an init that
prints a line and powers off, exec to that line, the median of 3 boots in this run, bench/_bootfloor.py), and with
both inits
`systemd_over_busybox_ssh1=<ratio>` (1 VM, until it answers SSH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _benchlib as lib
import _bootfloor
from _benchlib import BenchError, say

from booted.config import Settings
from booted.images.vm_assets import Assets
from booted.providers.procs import processes

ENV = '''ENVIRONMENTS = {{
    "bench": {{
        "provider": "qemu",
        "network": "{net}",
        "init": "{init}",
        "hosts": {{"web[01:{n:02d}]": {{"role": "worker", "service": "hello", "version": "1.0"}}}},
    }},
}}
'''


def prepare(inits: list[str]) -> tuple[str, str, Assets]:
    """Build (or find) the golden images, the qemu assets and the accel verdict outside the timed runs: the
    accelerator, why, and the first init's assets (the floor boots its kernel, initramfs and disk)."""
    from booted.images.golden import ensure_golden
    from booted.images.vm_assets import ensure_assets
    from booted.lab.handle import SYSTEMD_PACKAGES
    from booted.providers.qemuctl import detect_accel

    settings = Settings.from_env({**os.environ, "BOOTED_CACHE_DIR": os.environ.get("BOOTED_CACHE_DIR")
                                  or str(lib.GOLDEN_CACHE)})
    accel = why = ""
    floor: Assets | None = None
    for init in inits:
        golden = ensure_golden(settings, say, SYSTEMD_PACKAGES if init == "systemd" else ())
        assets = ensure_assets(settings.cache_dir, golden, say, settings.path)
        accel, why = detect_accel(settings.cache_dir, assets.kernel.vmlinuz, settings.accel)
        floor = floor or assets
    assert floor is not None
    return accel, why, floor


def leftovers(lab_id: str) -> list[str]:
    found = [f"tap {n}" for n in os.listdir("/sys/class/net") if n.startswith(f"bq{lab_id}")]
    return found + [f"qemu {pid}" for pid, argv in processes() if any(a.startswith(f"booted-{lab_id}-")
                                                                       for a in argv)]


def run(n: int, init: str, work: Path, logs: Path, net: int = 80) -> dict[str, float]:
    state, envfile = work / f"state{init}{n}", work / f"environments{init}{n}.py"
    envfile.write_text(ENV.format(net=f"10.213.{net + n}.0/24", n=n, init=init))
    env = lib.booted_env(state, envfile)
    lab_id = Settings.from_env(env).lab_id("bench")
    try:
        say(f"{n} VM(s): fab env_start_all")
        began = time.time()
        seconds, proc = lib.timed([lib.FAB, "env_start_all"], env=env, log=logs / f"start{n}.log")
        if f"{n} ok, 0 failed" not in proc.stdout:
            raise BenchError(f"{n} VM(s): not all hosts served:\n{proc.stdout[-2000:]}")
        # when each VM's sshd listened (the boot timeline: its moment on this machine's clock)
        _, timeline = lib.timed([lib.FAB, "env_timeline", "--json"], env=env, log=logs / f"timeline{n}.log")
        rows = [t for t in json.loads(timeline.stdout) if t["moments"].get("sshd") is not None]
        ssh = [t["start"] + t["moments"]["sshd"] - began for t in rows]
        # from QEMU's exec (the process's start) to sshd listening, per VM
        exec_ssh = [t["moments"]["sshd"] - t["moments"]["created"] for t in rows
                    if t["moments"].get("created") is not None]
        say(f"{n} VM(s): serving after {seconds:.1f}s")
    finally:
        stop_s, _ = lib.timed([lib.FAB, "env_stop"], env=env, check=False, log=logs / f"stop{n}.log")
        left = leftovers(lab_id)
        if left:
            raise BenchError(f"{n} VM(s): left behind after env_stop: {', '.join(left)}")
    nan = float("nan")
    return {"serving": seconds, "ssh": max(ssh) if ssh else nan, "stop": stop_s,
            "exec_ssh": max(exec_ssh) if exec_ssh else nan}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="boot just 1 VM")
    parser.add_argument("--inits", default="busybox", help="comma list of busybox, systemd (default busybox)")
    parser.add_argument("--net", type=int, default=80, help="N VMs use the network 10.213.<net+N>.0/24 (default 80)")
    args = parser.parse_args()
    inits = [i for i in args.inits.split(",") if i]
    if not inits or set(inits) - {"busybox", "systemd"}:
        parser.error("--inits takes busybox and/or systemd")
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        print("bench/boot.py needs root and qemu-system-x86_64", file=sys.stderr)
        return 2
    sizes = [1] if args.smoke else [1, 4, 8]
    accel, why, assets = prepare(inits)
    work = Path(tempfile.mkdtemp(prefix="booted-bench-boot-"))
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for init in inits:
            for n in sizes:
                results[(init, n)] = run(n, init, work, work / "logs", args.net)
        say("the floor: 3 boots to a one-line init")
        floors = sorted(_bootfloor.floor_seconds(assets, accel))
    except (BenchError, RuntimeError) as exc:
        print(f"FAILED: {exc}\n(logs in {work / 'logs'})", file=sys.stderr)
        return 1
    print(lib.machine())
    print(f"accelerator: {accel} ({why}); boots at once: BOOTED_BOOT_PARALLEL="
          f"{os.environ.get('BOOTED_BOOT_PARALLEL') or f'{2 * (os.cpu_count() or 1)} (default)'}")
    rows = [(init, n, f"{r['serving']:.1f}", f"{r['ssh']:.1f}", f"{r['serving'] / n:.1f}", f"{r['stop']:.1f}")
            for (init, n), r in results.items()]
    print(lib.table(("init", "VMs", "serving s", "all SSH s", "s per VM", "env_stop s"), rows))
    floor = floors[len(floors) // 2]
    one_exec = results[(inits[0], 1)]["exec_ssh"]
    print(f"QEMU exec to sshd listening (1 VM, {inits[0]}): {one_exec:.2f}s; the floor (exec to a one-line init's "
          f"console line; 3 boots, min/median/max): {floors[0]:.2f}/{floor:.2f}/{floors[-1]:.2f}s")
    shutil.rmtree(work, ignore_errors=True)
    first = inits[0]
    ratio = results[(first, 4)]["serving"] / results[(first, 1)]["serving"] if (first, 4) in results else float("nan")
    print(f"boot4_over_boot1={ratio:.2f}")
    one, eight = results[(first, 1)], results.get((first, 8))
    line = (f"serving_over_ssh={one['serving'] / one['ssh']:.2f} "
            f"serving8_over_ssh8={eight['serving'] / eight['ssh'] if eight else float('nan'):.2f} "
            f"ssh_over_floor={one_exec / floor:.2f}")
    if {"busybox", "systemd"} <= set(inits):
        line += f" systemd_over_busybox_ssh1={results[('systemd', 1)]['ssh'] / results[('busybox', 1)]['ssh']:.2f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
