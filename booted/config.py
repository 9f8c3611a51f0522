"""Settings read from BOOTED_* environment variables; one immutable object passed everywhere."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _int(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number (allowed: {low}..{high})") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range (allowed: {low}..{high})")
    return value


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or allowed[0]
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: allowed values are {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything that varies between machines, users and test runs."""

    project_root: Path
    state_dir: Path
    cache_dir: Path
    environments_file: Path
    boot_log: Path
    env_name: str | None
    user: str
    password: str | None
    http_port: int
    parallel: int
    boot_timeout: int
    boot_parallel: int
    qemu_net: str
    services_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, project_root: Path | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        root = Path(project_root or env.get("BOOTED_PROJECT") or PROJECT_ROOT).resolve()
        state = Path(env.get("BOOTED_STATE_DIR") or root / ".booted").resolve()
        user = env.get("BOOTED_USER") or "root"
        if not user.replace("-", "").replace("_", "").isalnum() or not user[0].isalpha():
            raise ConfigError(f"BOOTED_USER={user!r} is not a valid login name (letters, digits, - and _)")
        return cls(
            project_root=root,
            state_dir=state,
            cache_dir=Path(env.get("BOOTED_CACHE_DIR") or state / "cache").resolve(),
            environments_file=Path(env.get("BOOTED_ENVIRONMENTS") or root / "environments.py").resolve(),
            boot_log=Path(env.get("BOOTED_LOG") or state / "nginx" / "boot.log").resolve(),
            env_name=env.get("BOOTED_ENV") or None,
            user=user,
            password=env.get("BOOTED_PW") or None,
            http_port=_int(env, "BOOTED_HTTP_PORT", 8470, 1, 65535),
            parallel=_int(env, "BOOTED_PARALLEL", 32, 1, 1024),
            boot_timeout=_int(env, "BOOTED_BOOT_TIMEOUT", 60, 1, 3600),
            boot_parallel=_int(env, "BOOTED_BOOT_PARALLEL", 2 * (os.cpu_count() or 1), 1, 1024),
            qemu_net=_choice(env, "BOOTED_QEMU_NET", ("auto", "tap", "user")),
            services_dir=Path(env.get("BOOTED_SERVICES") or root / "service").resolve(),
        )

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    def lab_id(self, env_name: str) -> str:
        """Short id naming this lab's bridge, namespaces and interfaces (unique per state dir and env)."""
        return hashlib.sha256(f"{self.state_dir}\0{env_name}".encode()).hexdigest()[:6]
