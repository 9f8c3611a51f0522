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
    ('"provider": "netns",', '"provider": "netns", "boot": "disk",', 3, ["'boot' is for provider qemu", "netns"]),
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


@pytest.mark.parametrize("net", ["127.0.0.0/24", "169.254.0.0/24", "0.0.0.0/24", "240.0.0.0/24", "100.64.0.0/24",
                                 "192.0.0.0/24", "198.18.0.0/24", "172.32.0.0/24"])
def test_only_rfc1918_networks(tmp_path: Path, net: str) -> None:
    path = write(tmp_path, GOOD.replace('"10.213.30.0/24"', f'"{net}"'))
    with pytest.raises(ConfigError, match=rf"^{path}:4: environment 'lab': network '{net}' must be a private range "
                                          r"\(10/8, 172.16/12, 192.168/16\)"):
        load_environments(path)


@pytest.mark.parametrize("value", ['float("nan")', 'float("inf")', '-float("inf")', "1e999"])
@pytest.mark.parametrize("key", ["max", "target", "monitor"])
def test_nan_and_infinity_are_not_numbers(tmp_path: Path, key: str, value: str) -> None:
    entry = {"max": f'"max": {{"worker": {value}}}', "target": f'"target": {{"worker": {value}}}',
             "monitor": f'"monitor": {{"interval": {value}}}'}[key]
    path = write(tmp_path, GOOD.replace('"min": {"worker": 1},', f'"min": {{"worker": 1}},\n        {entry},'))
    with pytest.raises(ConfigError) as info:
        load_environments(path)
    assert str(info.value).startswith(f"{path}:10: environment 'lab': "), info.value


def test_a_file_that_does_not_finish_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "import time\n\nwhile True:\n    time.sleep(0.01)\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: still running after 0.3 s \(BOOTED_LOAD_TIMEOUT\): "
                                          "environments.py must only define ENVIRONMENTS"):
        load_environments(path, timeout=0.3)


@pytest.mark.parametrize(("code", "what"), [("0", "SystemExit 0"), ("'bye'", "SystemExit 'bye'")])
def test_exit_in_the_file_is_an_error(tmp_path: Path, code: str, what: str) -> None:
    path = write(tmp_path, f"import sys\nENVIRONMENTS = {{}}\nsys.exit({code})\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: it calls exit\(\) \({what}\): environments.py must only "
                                          "define ENVIRONMENTS; remove the exit"):
        load_environments(path)


def test_a_failure_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "X = 1\nENVIRONMENTS = {'lab': 1 / 0}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: running it failed: ZeroDivisionError"):
        load_environments(path)


ADDRS = [{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
         {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.168.1.5", "prefixlen": 24},
                                          {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
         {"ifname": "btaaaaaa", "addr_info": [{"family": "inet", "local": "10.213.30.1", "prefixlen": 24}]},
         {"ifname": "vboxnet0", "addr_info": [{"family": "inet", "local": "10.213.31.1", "prefixlen": 24}]},
         {"ifname": "btbbbbbb", "addr_info": [{"family": "inet", "local": "10.213.32.1", "prefixlen": 24}]}]
ROUTES = [{"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"},
          {"dst": "192.168.1.0/24", "dev": "eth0"}, {"dst": "10.213.30.0/24", "dev": "btaaaaaa"},
          {"dst": "172.20.0.0/16", "gateway": "192.168.1.7", "dev": "eth0"}, {"dst": "10.99.0.7", "dev": "wg0"}]


def fake_ip(tmp_path: Path) -> str:
    """An `ip` that prints recorded `ip -j -4 addr` / `ip -j -4 route` output."""
    import json

    (tmp_path / "addr.json").write_text(json.dumps(ADDRS))
    (tmp_path / "route.json").write_text(json.dumps(ROUTES))
    tool = tmp_path / "ip"
    tool.write_text(f'#!/bin/sh\ncase "$3" in addr) cat {tmp_path}/addr.json;; route) cat {tmp_path}/route.json;; '
                    "esac\n")
    tool.chmod(0o755)
    return str(tool)


@pytest.mark.parametrize(("net", "own", "words"), [
    ("10.213.30.0/24", "btaaaaaa", None),  # the lab's own bridge, up with its hosts
    ("10.213.31.0/24", "btcccccc", None),  # a host-only interface holding exactly the lab's gateway
    ("10.213.32.0/24", "btcccccc", "address 10.213.32.1/24 on btbbbbbb (another booted lab's bridge"),
    ("10.213.30.0/24", "btcccccc", "address 10.213.30.1/24 on btaaaaaa (another booted lab's bridge"),
    ("192.168.1.0/25", "btcccccc", "address 192.168.1.5/24 on eth0"),
    ("172.20.5.0/24", "btcccccc", "route 172.20.0.0/16 via 192.168.1.7 dev eth0"),
    ("10.99.0.0/24", "btcccccc", "route 10.99.0.7/32 dev wg0"),
    ("10.0.0.0/16", "btcccccc", None),  # the default route covers everything: not a claim
])
def test_the_network_may_not_overlap_this_machines(tmp_path: Path, net: str, own: str, words: str | None) -> None:
    from booted.environments.machine import check_machine, claims

    path = write(tmp_path, GOOD.replace('"10.213.30.0/24"', f'"{net}"'))
    env = load_environments(path)["lab"]
    found = claims(env, fake_ip(tmp_path))
    if words is None:
        check_machine(env, [own], found)
        return
    with pytest.raises(ConfigError) as info:
        check_machine(env, [own], found)
    assert str(info.value).startswith(f"{path}:4: environment 'lab': network {net} overlaps this machine's {words}")
    assert "choose a network no interface or route of this machine uses" in str(info.value)


def test_host_images_made_on_another_network(tmp_path: Path) -> None:
    from booted.lab.preflight import check_images
    from booted.state.records import Image

    path = write(tmp_path, GOOD)
    env = load_environments(path)["lab"]
    images = [Image(n, "lab", "netns", "worker", None, None, ip, "52:54:00:00:00:01", "", 256, 1, 0.0, None, None)
              for n, ip in (("web01", "10.213.29.2"), ("web02", "10.213.30.3"), ("web03", "10.213.29.4"))]
    with pytest.raises(ConfigError) as info:
        check_images(env, images)
    assert str(info.value) == (f"{path}:4: environment 'lab': network is now 10.213.30.0/24, but host image(s) web01 "
                               "(10.213.29.2), web03 (10.213.29.4) were made on the old one and keep their address; "
                               "delete them first: fab image_del web01,web03 (they are made again on the new network)")
    check_images(env, images[1:2])


def test_impair_per_environment_and_host(tmp_path: Path) -> None:
    from booted.environments.impairment import Impairment
    text = GOOD.replace('"min": {"worker": 1},', '"min": {"worker": 1},\n        "impair": {"loss": "1%"},').replace(
        '"lb01": {"role": "lb"}', '"lb01": {"role": "lb", "impair": {"delay": "100ms", "rate": "10mbit"}}')
    env = load_environments(write(tmp_path, text))["lab"]
    assert env.impair == Impairment(loss_pct=1.0)
    assert env.host("lb01").impair == Impairment(delay_ms=100.0, rate_bits=10_000_000)
    assert env.host("web01").impair is None  # the environment's applies


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('"lb01": {"role": "lb"}', '"lb01": {"role": "lb", "impair": {"delay": "100"}}', 6,
     ["host 'lb01'", "impair: delay: '100' is not a duration", "100ms"]),
    ('"lb01": {"role": "lb"}', '"lb01": {"role": "lb",\n "impair": {"delay": "1ms",\n "loss": "200%"}}', 8,
     ["impair: loss: '200%'", "0% to 100%"]),
    ('"min": {"worker": 1},', '"min": {"worker": 1},\n        "impair": {"speed": "1mbit"},', 10,
     ["impair: unknown key(s) ['speed']", "delay, jitter, loss, rate"]),
    ('"min": {"worker": 1},', '"min": {"worker": 1},\n        "impair": "slow",', 10, ["impair: must be a dict"]),
    ('"min": {"worker": 1},', '"min": {"worker": 1},\n        "impair": {"rate": "10mb"},', 10,
     ["rate: '10mb' is not a rate", "10mbit"]),
])
def test_impair_errors_name_file_line(tmp_path: Path, old: str, new: str, line: int, words: list[str]) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_environments(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert "environment 'lab'" in message
    for word in words:
        assert word in message, message
