"""environments.py loading: ranges, validation messages naming file:line, environment selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from booted.environments import expand_range, load_environments, select_environment
from booted.errors import ConfigError


@pytest.mark.parametrize(("key", "expected"), [
    ("web[01:03]", ["web01", "web02", "web03"]),
    ("web[1:3]", ["web1", "web2", "web3"]),
    ("web[8:11]", ["web8", "web9", "web10", "web11"]),
    ("web[098:100]", ["web098", "web099", "web100"]),
    ("db[1:1]-east", ["db1-east"]),
    ("lb01", ["lb01"]),
])
def test_expand_range(key: str, expected: list[str]) -> None:
    assert expand_range(key) == expected


@pytest.mark.parametrize("key", ["web[3:1]", "web[1:]", "web[a:b]", "web]", "web[0:5000]"])
def test_expand_range_rejects(key: str) -> None:
    with pytest.raises(ValueError):
        expand_range(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "environments.py"
    path.write_text(text)
    return path


GOOD = '''ENVIRONMENTS = {
    "lab": {
        "provider": "netns",
        "network": "10.213.30.0/24",
        "hosts": {
            "lb01": {"role": "lb"},
            "web[01:03]": {"role": "worker", "service": "hello", "version": "1.0"},
        },
        "min": {"worker": 1},
    },
}
'''


def test_load_good(tmp_path: Path) -> None:
    envs = load_environments(write(tmp_path, GOOD))
    env = envs["lab"]
    assert [h.name for h in env.hosts] == ["lb01", "web01", "web02", "web03"]
    assert env.host("web02").service == "hello" and env.host("web02").version == "1.0"
    assert env.host("lb01").service is None and env.host("lb01").memory == 256
    assert str(env.gateway) == "10.213.30.1"
    assert env.minimum == {"worker": 1}
    assert select_environment(envs, None, tmp_path).name == "lab"


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('"provider": "netns"', '"provider": "docker"', 3, ["provider 'docker'", "netns, qemu"]),
    ('"10.213.30.0/24"', '"10.213.30.0/33"', 4, ["not a valid IPv4 CIDR"]),
    ('"10.213.30.0/24"', '"8.8.8.0/24"', 4, ["private range"]),
    ('"web[01:03]"', '"web[03:01]"', 7, ["host 'web[03:01]'", "after its end"]),
    ('"role": "worker", ', '"role": "worker", "colour": "red", ', 7, ["unknown key", "colour", "allowed"]),
    ('"version": "1.0"', '"version": "1.0; rm -rf /"', 7, ["version", "tag or commit"]),
    ('"lb01"', '"Web_01"', 6, ["host name 'Web_01'"]),
    ('{"worker": 1}', '{"worker": 9}', 9, ["min['worker'] = 9", "0 to 3"]),
    ('{"worker": 1}', '{"db": 1}', 9, ["no host has role 'db'"]),
    ('"provider": "netns",', '"provider": "netns", "boot": "disk",', 3, ["boot 'disk'", "provider qemu"]),
    ('"provider": "netns",', '"provider": "qemu", "boot": "usb",', 3, ["boot 'usb'", "kernel, disk"]),
])
def test_errors_name_file_line_and_fix(tmp_path: Path, old: str, new: str, line: int, words: list[str]) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_environments(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert "'lab'" in message
    for word in words:
        assert word in message, message


def test_duplicate_hosts_from_overlapping_ranges(tmp_path: Path) -> None:
    text = GOOD.replace('"lb01": {"role": "lb"}', '"web[03:04]": {"role": "lb"}')
    with pytest.raises(ConfigError, match="host 'web03' is defined twice"):
        load_environments(write(tmp_path, text))


def test_syntax_error_and_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environments.py:2: syntax error"):
        load_environments(write(tmp_path, "ENVIRONMENTS = {\n  'lab': ]\n"))
    with pytest.raises(ConfigError, match="running it failed: NameError"):
        load_environments(write(tmp_path, "ENVIRONMENTS = undefined_name\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_environments(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match="define ENVIRONMENTS"):
        load_environments(write(tmp_path, "X = 1\n"))


def test_select_environment(tmp_path: Path) -> None:
    two = GOOD.replace('"lab": {', '"lab": {', 1).replace("},\n}\n", "},\n    'other': {'network': '10.213.31.0/24',"
                                                           " 'hosts': {'a1': {}}},\n}\n")
    envs = load_environments(write(tmp_path, two))
    assert set(envs) == {"lab", "other"}
    with pytest.raises(ConfigError, match="choose one with --env NAME or BOOTED_ENV"):
        select_environment(envs, None, tmp_path)
    with pytest.raises(ConfigError, match="no environment 'nope' .defined: lab, other"):
        select_environment(envs, "nope", tmp_path)
    assert select_environment(envs, "other", tmp_path).host("a1").role == "worker"


def test_shipped_example_is_valid() -> None:
    from tests.conftest import REPO

    envs = load_environments(REPO / "environments.py")
    assert envs, "the shipped environments.py defines at least one environment"


TWO = '''ENVIRONMENTS = {
    "a": {"network": "10.213.30.0/24", "hosts": {"a1": {"role": "worker"}}},
    "b": {
        "network": "NET_B",
        "hosts": {"HOST_B": {"role": "worker", "cpus": CPUS}},
    },
}
'''


@pytest.mark.parametrize(("net", "host", "cpus", "line", "words"), [
    ("10.213.30.128/25", "b1", "1", 4, ["network 10.213.30.128/25 overlaps environment 'a'"]),
    ("10.213.31.0/24", "a1", "1", 5, ["host 'a1' is also defined in environment 'a'"]),
    ("10.213.31.0/24", "b1", "True", 6, ["environment 'b'", "cpus True"]),  # the second environment's line
    ("10.213.31.0/24", "b1\\n", "1", 6, ["host name 'b1\\n'"]),
])
def test_mistakes_across_environments(tmp_path: Path, net: str, host: str, cpus: str, line: int,
                                      words: list[str]) -> None:
    text = TWO.replace("NET_B", net).replace("HOST_B", host).replace("CPUS", cpus)
    text = text.replace('"hosts": {"' + host + '": {"role": "worker", "cpus": ' + cpus + '}}',
                        '"hosts": {\n            "' + host + '": {"role": "worker", "cpus": ' + cpus + '}}')
    with pytest.raises(ConfigError) as info:
        load_environments(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'environments.py'}:{line}:"), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("value", ["True", "False", "2.0"])
def test_booleans_and_floats_are_not_counts(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"min\['worker'\]"):
        load_environments(write(tmp_path, GOOD.replace('"min": {"worker": 1}', f'"min": {{"worker": {value}}}')))
