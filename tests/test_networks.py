"""Several networks per environment: validation messages naming file:line, each host's addresses and NICs,
the lab's bridges and link names, a service on a named network (unit: nothing is started)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from booted.environments import load_environments
from booted.errors import ConfigError
from booted.hosts.identity import Identity, Nic
from booted.lab.preflight import check_networks
from booted.providers.lab import Lab
from booted.providers.qemu_cmdline import extra_nics
from booted.remote.services import Service, backend_addresses, listen_address
from booted.state.records import Image

TWO = '''ENVIRONMENTS = {
    "tiers": {
        "networks": {
            "mgmt": "10.213.230.0/24",
            "back": {"network": "10.213.231.0/24"},
            "data": {"network": "10.213.232.0/23", "gateway": True},
        },
        "hosts": {
            "lb": {"role": "lb", "service": "lb", "networks": ["mgmt", "back"]},
            "w[1:2]": {"service": "hello", "networks": ["back", "mgmt"]},
            "solo": {},
        },
    },
}
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "environments.py"
    path.write_text(text)
    return path


def test_two_networks(tmp_path: Path) -> None:
    env = load_environments(write(tmp_path, TWO))["tiers"]
    assert [(n.name, str(n.cidr), n.gateway) for n in env.networks] == [
        ("mgmt", "10.213.230.0/24", True), ("back", "10.213.231.0/24", False), ("data", "10.213.232.0/23", True)]
    assert str(env.network) == "10.213.230.0/24" and str(env.gateway) == "10.213.230.1"
    assert [n.name for n in env.host_nets("w1")] == ["mgmt", "back"]  # the environment's order: eth0 is mgmt
    assert [n.name for n in env.host_nets("solo")] == ["mgmt"]
    assert env.address("10.213.230.7", "back") == "10.213.231.7"
    assert env.address("10.213.230.7", "data") == "10.213.232.7"
    assert env.address("10.213.230.7", None) == "10.213.230.7"
    assert env.networks[1].where == f"{tmp_path / 'environments.py'}:5"
    plain = load_environments(write(tmp_path, TWO.replace('{"network": "10.213.231.0/24"}', '"10.213.231.0/24"')))
    assert [n.gateway for n in plain["tiers"].networks] == [True, False, True]  # a CIDR alone: no gateway


def test_single_network_is_named_after_the_environment(tmp_path: Path) -> None:
    env = load_environments(write(tmp_path, 'ENVIRONMENTS = {"lab": {"network": "10.213.233.0/24", '
                                            '"hosts": {"a": {}}}}\n'))["lab"]
    assert [(n.name, str(n.cidr)) for n in env.networks] == [("lab", "10.213.233.0/24")]
    assert env.host_nets("a")[0].name == "lab"


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('"back": {"network": "10.213.231.0/24"}', '"back": "10.213.230.128/25"', 5,
     ["network 'back' (10.213.230.128/25) overlaps network 'mgmt' (10.213.230.0/24)"]),
    ('"networks": ["mgmt", "back"]}', '"networks": ["mgmt", "front"]}', 9,
     ["host 'lb'", "unknown network 'front'", "networks: mgmt, back, data"]),
    ('"w[1:2]": {"service": "hello", "networks": ["back", "mgmt"]}', '"w[1:2]": {"networks": ["back"]}', 10,
     ["host 'w[1:2]'", "every host is on the first network 'mgmt'"]),
    ('"back": {"network"', '"Back_1": {"network"', 5, ["network name 'Back_1'"]),
    ('"back": {"network": "10.213.231.0/24"}', '"back": {"network": "10.213.231.0/24", "gw": 1}', 5,
     ["unknown key(s) ['gw']"]),
    ('"back": {"network": "10.213.231.0/24"}', '"back": {"network": "10.213.231.0/24", "gateway": "yes"}', 5,
     ["'gateway' is True or False"]),
    ('"back": {"network": "10.213.231.0/24"}', '"back": "10.213.231.0/25"', 5,
     ["smaller than the first network"]),
    ('"back": {"network": "10.213.231.0/24"}', '"back": "8.8.8.0/24"', 5, ["must be a private range"]),
    ('"networks": ["mgmt", "back"]}', '"networks": "back"}', 9, ["must be a list of network names"]),
    ('"networks": ["mgmt", "back"]}', '"networks": ["mgmt", "mgmt"]}', 9, ["named twice"]),
    ('"networks": {', '"network": "10.213.240.0/24", "networks": {', 3, ["either 'network'", "not both"]),
])
def test_network_mistakes(tmp_path: Path, old: str, new: str, line: int, words: list[str]) -> None:
    assert old in TWO
    path = write(tmp_path, TWO.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_environments(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: environment 'tiers': "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_providers_without_several_networks_refuse(tmp_path: Path, provider: str) -> None:
    path = write(tmp_path, TWO.replace('"networks": {', f'"provider": "{provider}", "networks": {{', 1))
    with pytest.raises(ConfigError, match=rf"^{path}:5: environment 'tiers': several networks are not supported "
                                          rf"for provider '{provider}' yet"):
        load_environments(path)


def test_networks_of_two_environments_may_not_overlap(tmp_path: Path) -> None:
    text = TWO.replace("}\n}\n", '}, "other": {"network": "10.213.231.0/24", "hosts": {"x": {}}}}\n', 1)
    path = write(tmp_path, text.replace('"solo": {},\n        },\n    },\n}', '"solo": {},\n        },\n    },'
                                        '\n    "other": {"network": "10.213.231.0/24", "hosts": {"x": {}}},\n}'))
    with pytest.raises(ConfigError, match=r"environment 'other': network 10.213.231.0/24 overlaps environment "
                                          r"'tiers'"):
        load_environments(path)


def service(name: str, network: str | None = None, upstream: str | None = None) -> Service:
    return Service(name, Path(f"/srv/service/{name}"), 8000, "exec true", "/health", "", upstream, network=network)


def test_service_network_checked_before_start(tmp_path: Path) -> None:
    env = load_environments(write(tmp_path, TWO))["tiers"]
    services = {"hello": service("hello", "back"), "lb": service("lb", upstream="hello")}
    for host in ("lb", "w1", "solo"):
        check_networks(env, env.host(host), services)  # lb reaches hello on back: it is on back
    lonely = env.host("solo").__class__("solo", "worker", "hello", None, where=f"{tmp_path}/environments.py:13")
    with pytest.raises(ConfigError, match=r"environments.py:13: environment 'tiers': host 'solo' runs 'hello', and "
                                          r"service 'hello' listens on network 'back'.*add 'back'"):
        check_networks(env, lonely, services)
    with pytest.raises(ConfigError, match=r"service 'hello' listens on network 'nowhere', which environment "
                                          r"'tiers' does not have"):
        check_networks(env, env.host("w1"), {"hello": service("hello", "nowhere")})


def test_service_addresses_on_its_network(tmp_path: Path) -> None:
    env = load_environments(write(tmp_path, TWO))["tiers"]
    hello = service("hello", "back")
    images = [Image(name=n, env="tiers", provider="netns", role="worker", service="hello", version=None, ip=ip,
                    mac="52:54:00:00:00:00", hostkey="", memory=256, cpus=1, created=0.0, pid=None, started=None)
              for n, ip in (("w1", "10.213.230.3"), ("w2", "10.213.230.4"))]
    assert backend_addresses(hello, images, {"w1", "w2"}, env.address) == ["10.213.231.3:8000", "10.213.231.4:8000"]
    assert backend_addresses(hello, images, {"w1"}) == ["10.213.230.3:8000"]  # no environment: the lab IP
    assert listen_address(env, hello, "10.213.230.3") == ("10.213.231.3", True)  # back: no controller address
    assert listen_address(env, service("hello", "data"), "10.213.230.3") == ("10.213.232.3", False)
    assert listen_address(env, service("hello"), "10.213.230.3") == ("", False)


def test_lab_bridges_and_link_names() -> None:
    nets = (("mgmt", ipaddress.IPv4Network("10.213.230.0/24"), True),
            ("back", ipaddress.IPv4Network("10.213.231.0/24"), False))
    lab = Lab("tiers", "abc123", nets[0][1], Path("/nonexistent"), nets=nets)
    assert lab.bridges == ["btabc123", "btabc123x1"]
    assert lab.bridge_of("back") == "btabc123x1" and lab.bridge_of("mgmt") == "btabc123"
    assert lab.link("v", "10.213.230.7") == "bvabc1237" and lab.link("v", "10.213.231.7") == "bvabc1237x1"
    assert len(lab.link("q", "10.213.231.254")) <= 15
    single = Lab("lab", "abc123", nets[0][1], Path("/nonexistent"))
    assert [(n.name, n.bridge) for n in single.networks] == [("lab", "btabc123")]


def test_identity_and_qemu_nics() -> None:
    """What a host is told of its other NICs (BOOTED_NICS, read by the boot script) and the tap and virtio NIC
    qemu gives each."""
    ident = Identity("w1", "10.213.230.3", 24, "10.213.230.1", "52:54:0a:d5:e6:03", "http://x/booted", "booted",
                     None, Path("/nonexistent"), "ssh-ed25519 AAAA", network="mgmt",
                     extra=(Nic("back", "eth1", "10.213.231.3", 24, "52:54:0a:d5:e7:03"),))
    assert "BOOTED_NICS=eth1=10.213.231.3/24\n" in ident.env_text()
    assert [n.iface for n in ident.nics] == ["eth0", "eth1"]
    nets = (("mgmt", ipaddress.IPv4Network("10.213.230.0/24"), True),
            ("back", ipaddress.IPv4Network("10.213.231.0/24"), False))
    lab = Lab("tiers", "abc123", nets[0][1], Path("/nonexistent"), nets=nets)
    assert extra_nics(lab, ident) == ["-netdev", "tap,id=n1,ifname=bqabc1233x1,script=no,downscript=no",
                                      "-device", "virtio-net-pci,netdev=n1,mac=52:54:0a:d5:e7:03"]
