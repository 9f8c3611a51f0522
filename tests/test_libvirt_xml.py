"""The libvirt XML booted generates (network, pool, domain), checked against libvirt's own RNG
schemas (virt-xml-validate) and defined in libvirt's test driver (virsh -c test:///default: libvirt's
real parser and checks, in-process, no daemon). Names with XML characters are escaped, never injected."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from booted.providers.libvirt_xml import DomainSpec, domain_xml, network_xml, pool_xml

UUID = "6b1c2f4e-8a0d-5f3e-9b7a-2c4d6e8f0a1b"
pytestmark = pytest.mark.skipif(shutil.which("virsh") is None or shutil.which("virt-xml-validate") is None,
                                reason="needs libvirt-clients (virsh, virt-xml-validate): run setup.sh")


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def validate(path: Path, kind: str) -> None:
    proc = subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def spec(tmp: Path, name: str = "booted-abc123-web01") -> DomainSpec:
    return DomainSpec(name, UUID, 256, 1, tmp / "web01.qcow2", tmp / "seed.img", "booted-abc123", "52:54:0a:d5:07:03",
                      tmp / "console.log")


def test_the_xml_passes_libvirts_schemas(tmp_path: Path) -> None:
    validate(write(tmp_path, "net.xml", network_xml("booted-abc123", "btabc123")), "network")
    validate(write(tmp_path, "pool.xml", pool_xml("booted", tmp_path / "pool")), "storagepool")
    validate(write(tmp_path, "dom.xml", domain_xml(spec(tmp_path))), "domain")


def test_libvirts_test_driver_defines_them(tmp_path: Path) -> None:
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    golden = pool_dir / "golden.raw"
    golden.write_bytes(b"\0" * 4096)
    files = {
        "net": write(tmp_path, "net.xml", network_xml("booted-abc123", "btabc123")),
        "pool": write(tmp_path, "pool.xml", pool_xml("booted", pool_dir)),
        "dom": write(tmp_path, "dom.xml", domain_xml(spec(tmp_path))),
    }
    script = (f"net-define {files['net']}; net-dumpxml booted-abc123; pool-define {files['pool']}; "
              f"define {files['dom']}; dumpxml booted-abc123-web01; list --all --name")
    proc = subprocess.run(["virsh", "-c", "test:///default", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "<forward mode='bridge'/>" in out and "<bridge name='btabc123'/>" in out  # over the lab bridge
    assert f"<uuid>{UUID}</uuid>" in out
    assert "<mac address='52:54:0a:d5:07:03'/>" in out and "<source network='booted-abc123'" in out
    assert "booted-abc123-web01" in out.split("</domain>")[-1]  # listed after the definition


def test_names_are_escaped_not_injected(tmp_path: Path) -> None:
    text = domain_xml(spec(tmp_path, name="x</name><devices/><name>y"))
    assert "<name>x&lt;/name&gt;&lt;devices/&gt;&lt;name&gt;y</name>" in text
    with pytest.raises(ValueError, match="domain type"):
        domain_xml(DomainSpec("n", UUID, 1, 1, tmp_path, tmp_path, "n", "m", tmp_path, kind="xen"))
