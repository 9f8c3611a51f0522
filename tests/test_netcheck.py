"""netcheck's socket-table probe without root: the sock_diag reply parser fed recorded-shape bytes through a
socketpair (standing in for the kernel's netlink socket), the settle rule with the namespace reads faked (the
kernel boundary), cgroup lines, and a process in this machine's own namespace left to the banner probe."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

from booted import netcheck
from booted.netcheck import DIAG_MSG, Listener, _dump, _frozen, listening


def diag(port: int, queued: int, backlog: int, inode: int) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message as the kernel sends it (nlmsghdr + inet_diag_msg)."""
    body = DIAG_MSG.pack(socket.AF_INET, 10, 0, 0, socket.htons(port), 0, bytes(16), bytes(16), 0, 0, 0, queued,
                         backlog, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), netcheck.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def test_dump_reads_every_listener_until_done() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, kernel:
        kernel.send(diag(22, 0, 128, 501) + diag(8000, 3, 64, 502))  # two in one datagram, then DONE
        kernel.send(struct.pack("=IHHII", 20, netcheck.NLMSG_DONE, 2, 1, 0) + bytes(4))
        got = _dump(ours, socket.AF_INET)
        request = kernel.recv(1024)
    assert got == [Listener(22, 0, 128, 501), Listener(8000, 3, 64, 502)]
    length, kind, flags = struct.unpack_from("=IHH", request)
    family, proto, _, _, states = struct.unpack_from("=BBBBI", request, 16)
    assert (length, kind, flags) == (len(request), 20, 0x301)
    assert (family, proto, states) == (socket.AF_INET, socket.IPPROTO_TCP, 1 << 10)


def test_dump_raises_the_kernels_error() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, kernel:
        kernel.send(struct.pack("=IHHIIi", 36, netcheck.NLMSG_ERROR, 0, 1, 0, -1) + bytes(16))
        with pytest.raises(OSError, match="sock_diag"):
            _dump(ours, socket.AF_INET)


def test_connections_left_waiting_mean_hung_and_taken_ones_mean_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts whose port 22 has connections queued are read again after `settle`: fewer queued (taken) is
    serving, as many (nothing taken) is not. Both namespace reads are faked (a process boundary)."""
    reads = iter([{"busy": [Listener(22, 2, 128, 7)], "hung": [Listener(22, 1, 128, 8)],
                   "idle": [Listener(22, 0, 128, 9)], "nossh": [Listener(8000, 0, 64, 10)]},
                  {"busy": [Listener(22, 1, 128, 7)], "hung": [Listener(22, 1, 128, 8)]}])
    asked: list[set[str]] = []

    def tables(spaces: dict[str, str]) -> dict[str, list[Listener]]:
        asked.append(set(spaces))
        return next(reads)
    monkeypatch.setattr(netcheck, "socket_tables", tables)
    monkeypatch.setattr(netcheck, "_netns_inode", lambda pid: 1 if pid == "self" else int(pid))
    monkeypatch.setattr(netcheck, "_holder_serves", lambda pid, inode: True)
    got = listening({"busy": 11, "hung": 12, "idle": 13, "nossh": 14}, settle=0.0)
    assert got == {"busy": True, "hung": False, "idle": True, "nossh": False}
    assert asked == [{"busy", "hung", "idle", "nossh"}, {"busy", "hung"}]


def test_a_process_in_this_namespace_is_left_to_the_banner_probe() -> None:
    assert listening({"vm": os.getpid(), "nopid": 0}) == {"vm": None, "nopid": None}


def test_frozen_reads_the_cgroup_of_each_line(tmp_path: Path) -> None:
    """v1's freezer.state and v2's cgroup.events, in a stand-in cgroup tree."""
    (tmp_path / "freezer/booted/h1").mkdir(parents=True)
    (tmp_path / "booted/h2").mkdir(parents=True)
    (tmp_path / "freezer/booted/h1/freezer.state").write_text("FROZEN\n")
    (tmp_path / "booted/h2/cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert _frozen("6:freezer:/booted/h1", tmp_path) is True
    assert _frozen("0::/booted/h2", tmp_path) is True
    (tmp_path / "freezer/booted/h1/freezer.state").write_text("THAWED\n")
    (tmp_path / "booted/h2/cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert _frozen("6:freezer:/booted/h1", tmp_path) is False
    assert _frozen("0::/booted/h2", tmp_path) is False
    assert _frozen("0::/", tmp_path) is False and _frozen("9:name=systemd:/booted/h1", tmp_path) is False
    assert _frozen("6:freezer:/no/such/group", tmp_path) is False  # gone meanwhile: the process state says
