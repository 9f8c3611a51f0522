"""Impairment values as users write them ("100ms", "1%", "10mbit"): parsed, refused with what is allowed,
and spelled back; tc's arguments; and a lab's records (wanted vs environments.py) with a faked provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from booted.config import Settings
from booted.context import Booted
from booted.environments.impairment import Impairment, impairment, parse_duration, parse_percent, parse_rate
from booted.errors import ConfigError
from booted.impair.kernel import pair, tbf
from tests.fakes import FakeProvider, World


@pytest.mark.parametrize(("text", "ms"), [("100ms", 100.0), ("1.5s", 1500.0), ("500us", 0.5), ("0ms", 0.0),
                                          (" 20MS ", 20.0)])
def test_durations(text: str, ms: float) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(("text", "pct"), [("1%", 1.0), ("0.5%", 0.5), ("100%", 100.0), ("0.25%", 0.25)])
def test_percentages(text: str, pct: float) -> None:
    assert parse_percent(text) == pct


@pytest.mark.parametrize(("text", "bits"), [("10mbit", 10_000_000), ("512kbit", 512_000), ("1gbit", 10**9),
                                            ("1.5mbit", 1_500_000), ("8000bit", 8000)])
def test_rates(text: str, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(("parse", "text", "words"), [
    (parse_duration, "100", "like 100ms"), (parse_duration, "-5ms", "like 100ms"),
    (parse_duration, "2min", "like 100ms"), (parse_duration, "61s", "at most 60s"),
    (parse_percent, "1", "like 1%"), (parse_percent, "101%", "0% to 100%"), (parse_percent, "0.125%", "two decimals"),
    (parse_rate, "10mb", "like 10mbit"), (parse_rate, "10MBps", "like 10mbit"), (parse_rate, "1bit", "8kbit"),
])
def test_bad_values_say_what_is_allowed(parse: object, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse(text)  # type: ignore[operator]


def test_an_impairment_dict() -> None:
    spec = impairment({"delay": "100ms", "jitter": "10ms", "loss": "1%", "rate": "10mbit"})
    assert spec == Impairment(100.0, 10.0, 1.0, 10_000_000)
    assert spec.as_dict() == {"delay": "100ms", "jitter": "10ms", "loss": "1%", "rate": "10mbit"}
    assert impairment({"rate": "1500kbit"}).as_dict() == {"rate": "1500kbit"}
    assert not impairment({}) and impairment({"loss": "0.5%"})


@pytest.mark.parametrize(("raw", "words"), [
    ("100ms", "must be a dict"), ({"latency": "1ms"}, "unknown key"), ({"delay": 100}, "delay: 100 must be a string"),
    ({"loss": "3"}, "loss: '3' is not a percentage"), ({"delay": "10ms", "jitter": "20ms"}, "jitter 20ms is larger"),
    ({"jitter": "5ms"}, "needs a delay"),
])
def test_bad_impairments(raw: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        impairment(raw)


def test_tbf_and_names() -> None:
    assert tbf("bv1a2b3c4", 10_000_000) == ["tc", "qdisc", "replace", "dev", "bv1a2b3c4", "root", "tbf", "rate",
                                            "10000000bit", "burst", "12500", "latency", "200ms"]
    assert tbf("x", 64_000)[10] == "3200"  # at least two full frames
    assert pair("bq1a2b3c17") == ("bxq1a2b3c17", "byq1a2b3c17")


# A lab's records (booted/impair/links.py) with the provider faked at its process boundary (tests/fakes.py):
# its hosts' NICs are no links on this machine, so nothing reaches tc or nft; the database is real.
ENV = """ENVIRONMENTS = {"lab": {"provider": "netns", "network": "10.213.172.0/24", "impair": {"loss": "1%"},
    "hosts": {"a01": {}, "b01": {"impair": {"delay": "100ms", "rate": "10mbit"}}}}}
"""


def test_records_and_precedence(settings_env: dict[str, str], tmp_path: Path) -> None:
    Path(settings_env["BOOTED_ENVIRONMENTS"]).write_text(ENV)
    world = World()
    ctx = Booted(Settings.from_env(settings_env), say=lambda line: None,
                 providers={"netns": lambda s: FakeProvider(s, world)})
    try:
        links = ctx.lab().links
        ctx.lab().images(["a01", "b01"])
        rows = {r["host"]: r for r in links.status()}  # environments.py: the environment's, a host's own
        assert (rows["a01"]["loss"], rows["a01"]["delay"]) == ("1%", None)
        assert (rows["b01"]["delay"], rows["b01"]["rate"], rows["b01"]["loss"]) == ("100ms", "10mbit", None)
        assert rows["a01"]["state"].startswith("host not running")
        results = links.impair(["a01"], "lab", impairment({"delay": "20ms"}))  # a host's whole impairment
        assert [(r.host, r.ok, r.detail) for r in results] == [
            ("a01", True, "not running: recorded, applied when it starts")]
        assert {r["host"]: (r["delay"], r["loss"]) for r in links.status()}["a01"] == ("20ms", None)
        links.clear(["b01"], None)  # environments.py's too
        assert [r["host"] for r in links.status()] == ["a01"]
        with pytest.raises(ConfigError, match="no network 'back'"):
            links.impair(None, "back", impairment({"delay": "1ms"}))
        with pytest.raises(ConfigError, match="no host 'c01'"):
            links.clear(["c01"], None)
        world.running["a01"] = 4242  # running, but its NIC is no link here (VirtualBox, a remote hypervisor...)
        [result] = links.apply(["a01"])
        assert not result.ok and "no link on this machine" in result.detail
    finally:
        ctx.close()
        world.close()
