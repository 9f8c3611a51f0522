"""Helpers shared by the benchmarks: paths, timing, tables, the machine description."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere imports booted from this checkout
    sys.path.insert(0, str(ROOT))

VENV_BIN = ROOT / ".venv" / "bin"
BIN = VENV_BIN if (VENV_BIN / "fab").exists() else Path(sys.executable).parent
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
FAB = str(BIN / "fab")
GOLDEN_CACHE = ROOT / ".booted" / "cache"


class BenchError(RuntimeError):
    """A benchmark step failed (its output is in the message)."""


def say(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def booted_env(state_dir: Path, environments: Path | None = None, **extra: str) -> dict[str, str]:
    """os.environ plus the BOOTED_* variables that point booted at a private state directory."""
    env = dict(os.environ)
    env["BOOTED_STATE_DIR"] = str(state_dir)
    env["BOOTED_CACHE_DIR"] = os.environ.get("BOOTED_CACHE_DIR") or str(GOLDEN_CACHE)
    if environments is not None:
        env["BOOTED_ENVIRONMENTS"] = str(environments)
    env.pop("BOOTED_ENV", None)
    env.update(extra)
    return env


def timed(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT,
          check: bool = True, log: Path | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command, return (wall seconds, result); BenchError with its output when it fails.
    `log`: also keep its output there."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=env, cwd=str(cwd), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n# exit {proc.returncode}, {seconds:.3f}s\n{proc.stdout}\n"
                       f"--- stderr\n{proc.stderr}")
    if check and proc.returncode != 0:
        out = (proc.stdout[-2500:] + "\n" + proc.stderr[-2500:]).strip()
        raise BenchError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{out}")
    return seconds, proc


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    """nproc, CPU model, kernel, Python and the date: printed with every result."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU(s), {model}, Linux {platform.release()}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}")


def run_in_tmp(name: str, body: Callable[[Path], int]) -> int:
    """Run a benchmark in its own temporary directory (always removed); a BenchError is one line, exit 1."""
    tmp = Path(tempfile.mkdtemp(prefix=f"booted-bench-{name}-"))
    try:
        return body(tmp)
    except BenchError as exc:
        print(f"bench/{name}.py: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
