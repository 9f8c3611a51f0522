"""Packing a service into a release archive, streamed: files go from disk (or `git archive`) through gzip
into an unnamed temporary file, never whole into memory. A release holds regular files, folders and
symlinks only, and at most MAX_RELEASE_MB of them; anything else is refused by name before a byte is
written. The archive is reproducible (sorted, mtime 0, no owners), so its checksum names its content.
Each Python file that compiles goes with its bytecode (__pycache__/NAME.<tag>.pyc, hash-checked: valid whatever
the files' times, ignored by another Python version): a host's Python starts the service without compiling it
(under software emulation, ~0.1 s per module)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import marshal
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from booted.errors import ConfigError, DeployError

MAX_RELEASE_MB = 100  # the most a release may hold (its files' sizes added up, before compression)
CHUNK = 1 << 20
KINDS = {stat.S_IFSOCK: "a socket", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device"}


class Blob:
    """A release's bytes in an unnamed temporary file (gone when collected); read with pread, so threads
    may share it."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.size = os.fstat(file.fileno()).st_size
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        self.sha256 = digest.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        offset = 0
        while offset < self.size:
            chunk = os.pread(self.file.fileno(), min(CHUNK, self.size - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def read(self) -> bytes:
        return b"".join(self.chunks())


@dataclass(frozen=True, eq=False)
class Release:
    """A packaged version of a service: a tar.gz whose VERSION file says `version`."""

    service: str
    version: str
    blob: Blob

    @property
    def data(self) -> bytes:
        """The whole archive in memory (tests, and the SFTP fallback of a deploy)."""
        return self.blob.read()

    @property
    def sha256(self) -> str:
        return self.blob.sha256

    @property
    def id(self) -> str:
        return f"{self.version}-{self.sha256[:10]}"


def check_folder(folder: Path, limit_mb: int = MAX_RELEASE_MB) -> list[tuple[Path, os.stat_result]]:
    """What a release of `folder` holds, in archive order: (path, lstat). ConfigError for a file that is not
    a regular file, folder or symlink, or when the files add up to more than `limit_mb`."""
    entries: list[tuple[Path, os.stat_result]] = []
    total = 0
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if "__pycache__" in rel.parts or rel.name == "VERSION":
            continue
        st = path.lstat()
        kind = KINDS.get(stat.S_IFMT(st.st_mode))
        if kind is not None:
            raise ConfigError(f"{path}: {kind} in service folder {folder}: a release holds regular files, folders "
                              "and symlinks only; move it out of the folder")
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
        entries.append((path, st))
    if total > limit_mb << 20:
        largest = max((e for e in entries if stat.S_ISREG(e[1].st_mode)), key=lambda e: e[1].st_size)
        raise ConfigError(f"service folder {folder} holds {total / 2**20:.1f} MB (largest: "
                          f"{largest[0].relative_to(folder)}, {largest[1].st_size / 2**20:.1f} MB): a release may hold "
                          f"at most {limit_mb} MB (MAX_RELEASE_MB in booted/remote/packing.py); keep large data out of "
                          "the service folder (fetch it in the service's `setup` command)")
    return entries


def _archive() -> tuple[IO[bytes], gzip.GzipFile, tarfile.TarFile]:
    raw = tempfile.TemporaryFile(prefix="booted-release-")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
    return raw, gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT)


def _bytecode(source: bytes, name: str) -> bytes | None:
    """The hash-checked bytecode of a Python file (None: it does not compile here), in memory: a .pyc is the
    magic number, the flags (0b11: hash-based, checked), the source's hash and the marshalled code (PEP 552)."""
    try:
        code = compile(source, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little") + importlib.util.source_hash(source) \
        + marshal.dumps(code)


def _add_bytecode(tar: tarfile.TarFile, name: str, source: bytes, dirs: set[str]) -> None:
    """Add the bytecode of the Python file `name` (an archive path) beside it, if it compiles."""
    if not name.endswith(".py") or sys.implementation.cache_tag is None:
        return
    code = _bytecode(source, name)
    if code is None:
        return
    folder, _, file = name.rpartition("/")
    cache = f"{folder}/__pycache__" if folder else "__pycache__"
    if cache not in dirs:
        dirs.add(cache)
        info = tarfile.TarInfo(cache)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    info = tarfile.TarInfo(f"{cache}/{file[:-3]}.{sys.implementation.cache_tag}.pyc")
    info.size, info.mode = len(code), 0o644
    tar.addfile(info, io.BytesIO(code))


def _close(raw: IO[bytes], gz: gzip.GzipFile, tar: tarfile.TarFile, version: str) -> Blob:
    data = f"{version}\n".encode()
    info = tarfile.TarInfo("VERSION")
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))
    tar.close()
    gz.close()
    raw.flush()
    return Blob(raw)


def tar_folder(folder: Path, version: str) -> Blob:
    """The release archive of an in-tree service folder (checked first: check_folder)."""
    entries = check_folder(folder)
    raw, gz, tar = _archive()
    dirs: set[str] = set()
    for path, st in entries:
        info = tar.tarinfo(str(path.relative_to(folder)))
        info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = st.st_mode & 0o7777, 0, 0, 0, "", ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            tar.addfile(info)
        else:
            info.size = st.st_size
            try:
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
                if path.suffix == ".py":
                    _add_bytecode(tar, info.name, path.read_bytes(), dirs)
            except OSError as exc:
                raise DeployError(f"{path}: could not be packed (did it change while booted read it?): {exc}") from None
    return _close(raw, gz, tar, version)


def tar_repo(repo: Path, tree: str, version: str, what: str, limit_mb: int = MAX_RELEASE_MB) -> Blob:
    """The release archive of `git archive <tree>`, streamed, at most `limit_mb` of files."""
    proc = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", tree], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    raw, gz, out = _archive()
    dirs: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as src:
            for member in src:
                if member.name in ("VERSION", "./VERSION") or member.name.startswith("/") or ".." in member.name:
                    continue
                total += member.size if member.isfile() else 0
                if total > limit_mb << 20:
                    raise ConfigError(f"{what}: {repo} at {tree} holds more than {limit_mb} MB: a release may hold at "
                                      f"most {limit_mb} MB (MAX_RELEASE_MB in booted/remote/packing.py); keep large "
                                      "data out of the service (fetch it in the service's `setup` command)")
                if member.isfile() and member.name.endswith(".py"):
                    data = src.extractfile(member).read()  # type: ignore[union-attr]
                    out.addfile(member, io.BytesIO(data))
                    _add_bytecode(out, member.name, data, dirs)
                else:
                    out.addfile(member, src.extractfile(member) if member.isfile() else None)
    except tarfile.TarError as exc:
        raise DeployError(f"{what}: git archive {tree} failed: {proc.stderr.read().decode().strip() or exc}") from None
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    err = proc.stderr.read().decode().strip()
    proc.stderr.close()
    if proc.returncode not in (0, -9) and err:
        raise DeployError(f"{what}: git archive {tree} failed: {err}")
    return _close(raw, gz, out, version)
