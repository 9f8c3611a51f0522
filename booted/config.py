"""Settings: the only reader of the process environment (BOOTED_*, <NAME>_REPO, PATH, the effective user).

One immutable object, made once per run by the task layer (or a test) and passed down; nothing below it
reads os.environ again. A bad value is a ConfigError naming the variable and what is allowed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from booted.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*\Z")
# The whole environment of the long-lived processes booted starts (hosts, VMs, nginx): nothing of the
# user's, so no secret (BOOTED_PW, a token) can be read from /proc/PID/environ.
CHILD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SBIN = ("/usr/sbin", "/sbin")  # a user's PATH often lacks them; nginx, debootstrap, mkfs live there


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


def _size(env: dict[str, str], name: str, default: int, low: int) -> int:
    """Bytes, optionally with a K, M or G suffix (powers of 1024)."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    scale = 1024 ** ("KMG".index(raw[-1].upper()) + 1) if raw[-1].upper() in "KMG" else 1
    try:
        value = int(raw[:-1] if scale > 1 else raw) * scale
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a size (bytes, or a number with K, M or G)") from None
    if value < low:
        raise ConfigError(f"{name}={raw!r} is too small (at least {low // 1024}K)")
    return value


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or allowed[0]
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: allowed values are {', '.join(allowed)}")
    return value


def _mirror(env: dict[str, str], name: str) -> str | None:
    """A Debian mirror URL: it becomes a line of the golden image's apt sources, so one word, http(s)."""
    value = env.get(name) or None
    if value is not None and not re.fullmatch(r"https?://[^\s\[\]]+", value):
        raise ConfigError(f"{name}={value!r} is not a mirror URL (http:// or https://, no spaces), e.g. "
                          "http://deb.debian.org/debian")
    return value


def _safe_path(name: str, path: Path) -> Path:
    """A path booted writes into nginx's config or a mount option: only characters that need no quoting
    there (a space, ',', ':' or ';' would break the overlay mount or inject into nginx's config)."""
    if not SAFE_PATH.match(str(path)):
        bad = sorted({c for c in str(path) if not SAFE_PATH.match("/" + c)})
        raise ConfigError(f"{name}={str(path)!r} contains {' '.join(repr(c) for c in bad)}: booted puts this path "
                          "in nginx's config and in mount options; use letters, digits and . _ - + @ / only")
    return path


def _root(env: dict[str, str], project_root: Path | None) -> Path:
    return Path(project_root or env.get("BOOTED_PROJECT") or PROJECT_ROOT).resolve()


@dataclass(frozen=True)
class Settings:
    """Everything that varies between machines, users and test runs."""

    project_root: Path
    state_dir: Path
    cache_dir: Path
    environments_file: Path
    boot_log: Path
    boot_log_max: int  # bytes all boot-log files may take together (BOOTED_BOOT_LOG_MAX)
    env_name: str | None
    user: str
    password: str | None
    http_port: int
    apt_port: int  # booted's apt proxy on each lab gateway (BOOTED_APT_PORT)
    parallel: int
    boot_timeout: int
    boot_parallel: int
    lock_wait: int  # seconds a run waits for another run's lock on the same lab, host or nginx
    load_timeout: int  # seconds environments.py may run (BOOTED_LOAD_TIMEOUT; it only defines a dict)
    timeout: int | None  # seconds every remote step may take (BOOTED_TIMEOUT; None: each operation's default)
    qemu_net: str  # qemu only: auto | tap | user (BOOTED_QEMU_NET)
    accel: str  # qemu only: auto | kvm | tcg (BOOTED_ACCEL)
    mirror: str | None  # the Debian mirror for the golden image (BOOTED_MIRROR; None: the one apt uses)
    security_mirror: str | None  # its security updates (BOOTED_SECURITY_MIRROR; None: the one apt uses)
    services_dir: Path
    repos: tuple[tuple[str, str], ...]  # (NAME_REPO, path) for every <NAME>_REPO variable that is set
    is_root: bool
    path: str  # where tools are looked up: PATH, then /usr/sbin and /sbin
    snapshot_hold: int = 0  # seconds env_snapshot keeps the lab paused after saving (BOOTED_SNAPSHOT_HOLD; tests)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, project_root: Path | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        root = _safe_path("the booted checkout (BOOTED_PROJECT)", _root(env, project_root))
        state = _safe_path("BOOTED_STATE_DIR", Path(env.get("BOOTED_STATE_DIR") or root / ".booted").resolve())
        user = env.get("BOOTED_USER") or "root"
        if not user.isascii() or not user.replace("-", "").replace("_", "").isalnum() or not user[0].isalpha() \
                or len(user) > 32:
            raise ConfigError(f"BOOTED_USER={user!r} is not a valid login name (ASCII letters, digits, - and _, "
                              "starting with a letter, at most 32)")
        return cls(
            project_root=root,
            state_dir=state,
            cache_dir=_safe_path("BOOTED_CACHE_DIR", Path(env.get("BOOTED_CACHE_DIR") or state / "cache").resolve()),
            environments_file=Path(env.get("BOOTED_ENVIRONMENTS") or root / "environments.py").resolve(),
            boot_log=_safe_path("BOOTED_LOG", Path(env.get("BOOTED_LOG") or state / "nginx" / "boot.log").resolve()),
            boot_log_max=_size(env, "BOOTED_BOOT_LOG_MAX", 64 << 20, 64 << 10),
            env_name=env.get("BOOTED_ENV") or None,
            user=user,
            password=env.get("BOOTED_PW") or None,
            http_port=_int(env, "BOOTED_HTTP_PORT", 8470, 1, 65535),
            apt_port=_int(env, "BOOTED_APT_PORT", 8471, 1, 65535),
            parallel=_int(env, "BOOTED_PARALLEL", 32, 1, 1024),
            boot_timeout=_int(env, "BOOTED_BOOT_TIMEOUT", 60, 1, 3600),
            boot_parallel=_int(env, "BOOTED_BOOT_PARALLEL", 2 * (os.cpu_count() or 1), 1, 1024),
            lock_wait=_int(env, "BOOTED_LOCK_WAIT", 600, 0, 86400),
            load_timeout=_int(env, "BOOTED_LOAD_TIMEOUT", 10, 1, 3600),
            timeout=_int(env, "BOOTED_TIMEOUT", 0, 0, 86400) or None,
            qemu_net=_choice(env, "BOOTED_QEMU_NET", ("auto", "tap", "user")),
            accel=_choice(env, "BOOTED_ACCEL", ("auto", "kvm", "tcg")),
            mirror=_mirror(env, "BOOTED_MIRROR"),
            security_mirror=_mirror(env, "BOOTED_SECURITY_MIRROR"),
            services_dir=cls.services_dir_of(env, root),
            repos=tuple(sorted((k, v) for k, v in env.items() if k.endswith("_REPO") and v)),
            is_root=os.geteuid() == 0,
            path=os.pathsep.join([env.get("PATH", ""), *SBIN]),
            snapshot_hold=_int(env, "BOOTED_SNAPSHOT_HOLD", 0, 0, 600),
        )

    @staticmethod
    def services_dir_of(env: dict[str, str] | os._Environ[str], project_root: Path | None = None) -> Path:
        """Where service folders are (BOOTED_SERVICES): read on its own when `fab` builds its task list,
        so a bad value elsewhere is reported by the task that runs, not by making tasks vanish."""
        return Path(env.get("BOOTED_SERVICES") or _root(dict(env), project_root) / "service").resolve()

    @classmethod
    def task_services_dir(cls) -> Path:
        return cls.services_dir_of(os.environ)

    def daemon_env(self) -> dict[str, str]:
        """The whole environment of a booted process this run starts (the monitor): CHILD_ENV, with PATH as
        this run looks tools up, and these settings as BOOTED_* / <NAME>_REPO variables. Nothing else of the
        user's: never BOOTED_PW (the monitor gets the password on its stdin) nor a token."""
        values = {"BOOTED_PROJECT": self.project_root, "BOOTED_STATE_DIR": self.state_dir,
                  "BOOTED_CACHE_DIR": self.cache_dir, "BOOTED_ENVIRONMENTS": self.environments_file,
                  "BOOTED_LOG": self.boot_log, "BOOTED_BOOT_LOG_MAX": self.boot_log_max, "BOOTED_USER": self.user,
                  "BOOTED_HTTP_PORT": self.http_port,
                  "BOOTED_APT_PORT": self.apt_port, "BOOTED_PARALLEL": self.parallel,
                  "BOOTED_BOOT_TIMEOUT": self.boot_timeout, "BOOTED_BOOT_PARALLEL": self.boot_parallel,
                  "BOOTED_LOCK_WAIT": self.lock_wait, "BOOTED_LOAD_TIMEOUT": self.load_timeout,
                  "BOOTED_TIMEOUT": self.timeout or 0,
                  "BOOTED_QEMU_NET": self.qemu_net, "BOOTED_ACCEL": self.accel, "BOOTED_MIRROR": self.mirror or "",
                  "BOOTED_SECURITY_MIRROR": self.security_mirror or "", "BOOTED_SERVICES": self.services_dir}
        return {**CHILD_ENV, "PATH": self.path, **{k: str(v) for k, v in values.items()}, **dict(self.repos)}

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    def repo(self, variable: str) -> str | None:
        """The value of a <NAME>_REPO variable, if set."""
        return dict(self.repos).get(variable)

    def which(self, tool: str) -> str | None:
        """A tool's path (PATH, then sbin), or None."""
        return shutil.which(tool, path=self.path)

    @property
    def served_dir(self) -> Path:
        """Where booted's nginx serves files from: releases/ (content-addressed .tar.gz) and kickstart/
        (rendered installer files). As root its workers run as nobody: when nobody cannot walk into the
        state directory (booted makes it 0700; one it has not made yet will be), a folder of this state
        directory under /run instead (rebuilt on demand; removed when nginx stops)."""
        if not self.is_root or (self.state_dir.exists() and _others_can_enter(self.state_dir)):
            return self.state_dir / "served"
        return Path("/run") / f"booted-{hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]}"

    @property
    def releases_dir(self) -> Path:
        return self.served_dir / "releases"

    def lab_id(self, env_name: str) -> str:
        """Short id naming this lab's bridge, namespaces and interfaces (unique per state dir and env)."""
        return hashlib.sha256(f"{self.state_dir}\0{env_name}".encode()).hexdigest()[:6]


def _others_can_enter(path: Path) -> bool:
    """Whether any user may walk down to `path` (o+x on it and every folder above it that exists)."""
    for folder in (path, *path.parents):
        try:
            if not folder.stat().st_mode & 0o001:
                return False
        except FileNotFoundError:
            continue
    return True
