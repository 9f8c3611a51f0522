"""Services as data: discovery, release packaging from the tree and from a git repo (<NAME>_REPO)."""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from booted.errors import ConfigError, DeployError
from booted.remote.services import discover, get_service, load_service, package
from tests.conftest import REPO


def files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_hello_is_discovered() -> None:
    services = discover(REPO / "service")
    hello = services["hello"]
    assert hello.port == 8000 and hello.health == "/health" and hello.repo_var == "HELLO_REPO"


def test_in_tree_release_is_reproducible() -> None:
    hello = get_service(REPO / "service", "hello")
    one, two = package(hello, None), package(hello, "1.0")
    assert one.version == "1.0" and one.data == two.data and one.id == two.id
    content = files(one.data)
    assert content["VERSION"] == b"1.0\n" and b"def main" in content["app.py"]


def test_in_tree_has_one_version() -> None:
    hello = get_service(REPO / "service", "hello")
    with pytest.raises(DeployError, match="only version 1.0.*Set HELLO_REPO"):
        package(hello, "2.0")


def test_unknown_service_and_bad_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown service 'nope'.*hello"):
        get_service(REPO / "service", "nope")
    hello = get_service(REPO / "service", "hello")
    with pytest.raises(ConfigError, match="tag or commit"):
        package(hello, "1.0;reboot")


def test_a_new_folder_is_a_new_service(tmp_path: Path) -> None:
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "service.toml").write_text('port = 9000\nstart = "exec python3 -m http.server"\n')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "service.toml").write_text("port = 'x'\n")
    with pytest.raises(ConfigError, match="broken/service.toml: 'port'"):
        discover(tmp_path)
    (tmp_path / "broken" / "service.toml").unlink()
    assert list(discover(tmp_path)) == ["echo"]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def test_release_from_repo(tmp_path: Path) -> None:
    repo = tmp_path / "hello-repo"
    (repo / "service" / "hello").mkdir(parents=True)
    app = repo / "service" / "hello" / "app.py"
    git(repo, "init", "-q")
    for version in ("1.0", "1.1"):
        app.write_text(f"print('v{version}')\n")
        (repo / "service" / "hello" / "service.toml").write_text('port = 8000\nstart = "x"\n')
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", version)
        git(repo, "tag", version)
    hello = get_service(REPO / "service", "hello")
    release = package(hello, "1.0", str(repo))
    content = files(release.data)
    assert release.version == "1.0" and content["VERSION"] == b"1.0\n" and content["app.py"] == b"print('v1.0')\n"
    assert files(package(hello, "1.1", str(repo)).data)["app.py"] == b"print('v1.1')\n"
    with pytest.raises(DeployError, match="'9.9' is not a tag or commit.*1.0, 1.1"):
        package(hello, "9.9", str(repo))


@pytest.mark.parametrize(("toml", "words"), [
    ('port = 9000\nstart = "x"\nhealht = "/h"\n', "unknown key(s) ['healht']"),
    ('port = true\nstart = "x"\n', "'port' must be a number"),
    ('port = 9000\nstart = "run --peer {nosuch}"\n', "'start' uses {nosuch}: the placeholders are"),
    ('port = 9000\nstart = "x"\nhealth = "/h x"\n', "'health' must be a URL path"),
    ('port = 9000\nstart = "x"\nupstream = "ghost"\n', "'upstream' = 'ghost' is not a service"),
])
def test_service_toml_mistakes_are_found_when_loading(tmp_path: Path, toml: str, words: str) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "service.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        discover(tmp_path)
    assert "svc/service.toml" in str(info.value) and words in str(info.value), str(info.value)


@pytest.mark.parametrize(("var", "value"), [("BOOTED_STATE_DIR", "/tmp/a b"), ("BOOTED_STATE_DIR", "/tmp/x;y"),
                                            ("BOOTED_CACHE_DIR", "/tmp/c,d"), ("BOOTED_LOG", "/tmp/l:og")])
def test_paths_that_reach_nginx_or_mounts_are_checked(var: str, value: str) -> None:
    from booted.config import Settings

    with pytest.raises(ConfigError, match=f"{var}=.*booted puts this path in nginx's config"):
        Settings.from_env({var: value})


@pytest.mark.parametrize("user", ["jürgen", "1root", "a b", "x" * 40])
def test_login_user_is_checked(user: str) -> None:
    from booted.config import Settings

    with pytest.raises(ConfigError, match="BOOTED_USER="):
        Settings.from_env({"BOOTED_USER": user})


def test_proxy_commands_need_an_upstream(tmp_path: Path) -> None:
    folder = tmp_path / "proxy"
    folder.mkdir()
    (folder / "service.toml").write_text('port = 80\nstart = "exec x"\nstats = "python3 ctl.py stats"\n')
    with pytest.raises(ConfigError, match="'on_backends' and 'stats' are for a proxy"):
        load_service(folder)
    (folder / "service.toml").write_text('port = 80\nstart = "exec x"\nupstream = "hello"\non_backends = ""\n')
    with pytest.raises(ConfigError, match="'on_backends' must be a shell command"):
        load_service(folder)
    (folder / "service.toml").write_text('port = 80\nstart = "exec x"\nupstream = "hello"\n'
                                         'on_backends = "ctl {nope}"\n')
    with pytest.raises(ConfigError, match=r"'on_backends' uses \{nope\}"):
        load_service(folder)


def test_the_lb_is_haproxy_driven_live(tmp_path: Path) -> None:
    from booted.remote.deploy import backends_script, stats_script
    from booted.remote.fanout import Target

    lb = load_service(REPO / "service" / "lb")
    assert lb.upstream == "hello" and "haproxy" in lb.packages
    target = Target("lb01", "10.0.0.2")
    assert "on_backends='python3 haproxyctl.py apply'" in backends_script(lb, target, "10.0.0.3:8000")
    assert "stats='python3 haproxyctl.py stats'" in stats_script(lb, target)


@pytest.mark.parametrize(("start", "words"), [
    ("exec app --port {port:>99999999999999999999}", "uses {port:>99999999999999999999}: placeholders are plain"),
    ("exec app --bind {ip!r}", "uses {ip!r}: placeholders are plain"),
    ("exec app --bind {ip.real}", "uses {ip.real}: the placeholders are"),
    ("exec app --bind {ip[0]}", "uses {ip[0]}: the placeholders are"),
    ("exec app {", "'start': Single '{' encountered in format string"),
    ("exec app }", "'start': Single '}' encountered"),
])
def test_placeholders_are_plain(tmp_path: Path, start: str, words: str) -> None:
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "service.toml").write_text(f"port = 9000\nstart = {start!r}\n")
    with pytest.raises(ConfigError) as info:
        load_service(tmp_path / "echo")
    assert str(info.value).startswith(f"{tmp_path / 'echo' / 'service.toml'}: "), info.value
    assert words in str(info.value), info.value


def echo(tmp_path: Path) -> Path:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "service.toml").write_text('port = 9000\nstart = "exec python3 -m http.server {port}"\n')
    (folder / "VERSION").write_text("1.0\n")
    return folder


@pytest.mark.parametrize("kind", ["socket", "fifo"])
def test_non_regular_files_are_refused_by_name(tmp_path: Path, kind: str) -> None:
    import os
    import socket

    from booted.remote.services import check_release

    folder = echo(tmp_path)
    (folder / "run").mkdir()
    odd = folder / "run" / "ctl"
    if kind == "fifo":
        os.mkfifo(odd)  # opening it to pack would block forever
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(odd))
    service = load_service(folder)
    what = "a socket" if kind == "socket" else "a FIFO (named pipe)"
    for call in (lambda: check_release(service, "1.0"), lambda: package(service, "1.0")):
        with pytest.raises(ConfigError, match=rf"^{odd}: {re.escape(what)} in service folder {folder}: a release "
                                              "holds regular files, folders and symlinks only; move it out"):
            call()


def test_a_folder_over_the_limit_is_refused_with_the_limit(tmp_path: Path) -> None:
    from booted.remote.packing import check_folder

    folder = echo(tmp_path)
    with open(folder / "data.bin", "wb") as fh:
        fh.truncate(3 << 20)
    (folder / "link").symlink_to("data.bin")  # a symlink counts as a link, not as its target's size
    with pytest.raises(ConfigError) as info:
        check_folder(folder, limit_mb=2)
    assert str(info.value) == (f"service folder {folder} holds 3.0 MB (largest: data.bin, 3.0 MB): a release may hold "
                               "at most 2 MB (MAX_RELEASE_MB in booted/remote/packing.py); keep large data out of the "
                               "service folder (fetch it in the service's `setup` command)")
    assert [p.name for p, _ in check_folder(folder, limit_mb=4)] == ["data.bin", "link", "service.toml"]


def test_a_release_is_packed_streaming(tmp_path: Path) -> None:
    import tracemalloc

    folder = echo(tmp_path)
    with open(folder / "data.bin", "wb") as fh:
        fh.truncate(60 << 20)
    tracemalloc.start()
    try:
        release = package(load_service(folder), "1.0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"packing a 60 MB folder peaked at {peak >> 20} MB of Python memory"
    assert release.blob.size < 1 << 20 and release.id == f"1.0-{release.sha256[:10]}"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(release.data))) as tar:
        assert tar.getmember("data.bin").size == 60 << 20 and tar.getmember("VERSION").size == 4


def test_a_release_carries_the_bytecode_python_uses(tmp_path: Path) -> None:
    """hello's release holds app.py's hash-checked bytecode; a real python3 started the way service.toml starts
    hello imports app from it without compiling (python3 -v says so). A file that does not compile is packed
    without bytecode; so are the files of a release from a repo."""
    import sys

    hello = get_service(REPO / "service", "hello")
    assert "import app; app.main()" in hello.start
    content = files(package(hello, None).data)
    pyc = f"__pycache__/app.{sys.implementation.cache_tag}.pyc"
    assert pyc in content
    with tarfile.open(fileobj=io.BytesIO(package(hello, None).data)) as tar:
        tar.extractall(tmp_path / "rel", filter="data")
    proc = subprocess.run([sys.executable, "-v", "-c", "import app"], cwd=tmp_path / "rel", capture_output=True,
                          text=True, env={"PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    assert f"{tmp_path / 'rel' / pyc} matches" in proc.stderr and f"code object from '{tmp_path / 'rel' / pyc}'" \
        in proc.stderr

    repo = tmp_path / "repo"
    (repo / "service" / "hello" / "lib").mkdir(parents=True)
    (repo / "service" / "hello" / "lib" / "ok.py").write_text("X = 1\n")
    (repo / "service" / "hello" / "bad.py").write_text("def (:\n")
    (repo / "service" / "hello" / "service.toml").write_text('port = 8000\nstart = "x"\n')
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "1.0")
    git(repo, "tag", "1.0")
    names = set(files(package(hello, "1.0", str(repo)).data))
    assert f"lib/__pycache__/ok.{sys.implementation.cache_tag}.pyc" in names, names
    assert not any(n.endswith(f"bad.{sys.implementation.cache_tag}.pyc") for n in names)
