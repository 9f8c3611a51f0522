"""Running the user's environments.py (bounded in time: it must only define ENVIRONMENTS) and pointing
errors at its lines."""

from __future__ import annotations

import ast
import runpy
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from booted.errors import ConfigError

LOAD_TIMEOUT = 10.0  # seconds environments.py may run; it only defines a dict (BOOTED_LOAD_TIMEOUT)


class Lines:
    """Line numbers of keys in the environments file, for error messages. `where(env, host, key)` follows
    that path through the ENVIRONMENTS literal (a key may skip levels: a host key is found under the
    environment's 'hosts'), so an error in the second environment points into the second environment."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.root: ast.AST | None = None
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError:
            return
        self.root = tree
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                    isinstance(t, ast.Name) and t.id == "ENVIRONMENTS" for t in node.targets):
                self.root = node.value

    @staticmethod
    def _find(node: ast.AST, key: str) -> tuple[int, ast.AST] | None:
        for sub in ast.walk(node):  # breadth first: the shallowest match
            if isinstance(sub, ast.Dict):
                for k, v in zip(sub.keys, sub.values):
                    if isinstance(k, ast.Constant) and k.value == key:
                        return k.lineno, v
        return None

    def at(self, *keys: str) -> str:
        node, line = self.root, None
        for key in keys:
            found = self._find(node, key) if node is not None else None
            if found is not None:
                line, node = found
        return f"{self.path}:{line}" if line is not None else str(self.path)


def run_file(path: Path, timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
    """The names the user's file defines. It runs in a thread with a deadline, so a file that waits or
    loops is an error naming its line instead of a hang; an exception, `exit()` included, names its line."""
    if not path.exists():
        raise ConfigError(f"{path}: not found. Create it (see README: 'environments.py') "
                          "or point BOOTED_ENVIRONMENTS at your file")
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["names"] = runpy.run_path(str(path))
        except BaseException as exc:  # relayed to the caller, SystemExit included
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"loading {path.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():  # left behind (a daemon thread): the run ends with this error
        frame = sys._current_frames().get(thread.ident or 0)
        raise ConfigError(f"{path}{_line(path, frame=frame)}: still running after {timeout:g} s "
                          "(BOOTED_LOAD_TIMEOUT): environments.py must only define ENVIRONMENTS; move waiting, "
                          "loops and network calls out of it")
    exc = box.get("error")
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        raise ConfigError(f"{path}:{exc.lineno}: syntax error: {exc.msg}")
    if isinstance(exc, SystemExit):
        raise ConfigError(f"{path}{_line(path, exc.__traceback__)}: it calls exit() (SystemExit {exc.code!r}): "
                          "environments.py must only define ENVIRONMENTS; remove the exit")
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if exc is not None:  # the user's code failed: report where, never a traceback
        raise ConfigError(f"{path}{_line(path, exc.__traceback__)}: running it failed: {type(exc).__name__}: {exc}")
    names: dict[str, Any] = box["names"]
    return names


def _line(path: Path, tb: TracebackType | None = None, frame: FrameType | None = None) -> str:
    """':N', the innermost line of `path` in a traceback or a running thread's stack ('' if none)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    while frame is not None and line is None:
        if frame.f_code.co_filename == str(path):
            line = frame.f_lineno
        frame = frame.f_back
    return f":{line}" if line is not None else ""
