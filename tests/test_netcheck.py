"""netcheck's socket-table probe without root: the sock_diag request and reply, through a socketpair standing
in for the kernel's netlink socket, the settle rule with the namespace reads faked (the
kernel boundary), cgroup lines, and a process in this machine's own namespace left to the banner probe."""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

import pytest

from booted import netcheck
from booted.netcheck import DIAG_MSG, Listener, _frozen, listening, lookup


def reply(port: int, queued: int, backlog: int, inode: int, state: int = 10) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message as the kernel sends it (nlmsghdr + inet_diag_msg)."""
    body = DIAG_MSG.pack(socket.AF_INET, state, 0, 0, socket.htons(port), 0, bytes(16), bytes(16), 0, 0, 0, queued,
                         backlog, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), netcheck.SOCK_DIAG_BY_FAMILY, 0, 1, 0) + body


def error(code: int) -> bytes:
    return struct.pack("=IHHIIi", 36, netcheck.NLMSG_ERROR, 0, 1, 0, -code) + bytes(16)


def test_lookup_asks_for_one_address_and_port_and_reads_the_reply() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, kernel:
        kernel.send(reply(22, 2, 128, 501))
        got = lookup(ours, "10.213.7.5", 22)
        request = kernel.recv(1024)
    assert got == Listener(22, 2, 128, 501)
    length, kind, flags = struct.unpack_from("=IHH", request)
    family, proto, _, _, states, sport, dport = struct.unpack_from("=BBBBIHH", request, 16)
    src, dst = request[28:32], request[44:48]
    cookie = struct.unpack_from("=II", request, len(request) - 8)
    assert (length, kind, flags) == (len(request), 20, 0x1)  # a request, not a dump
    assert (family, proto, states, socket.ntohs(sport), dport) == (socket.AF_INET, socket.IPPROTO_TCP, 1 << 10, 22, 0)
    assert (socket.inet_ntoa(src), dst, cookie) == ("10.213.7.5", bytes(4), (0xFFFFFFFF, 0xFFFFFFFF))


def test_lookup_says_none_when_nothing_listens_and_raises_other_errors() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, kernel:
        kernel.send(error(errno.ENOENT))
        assert lookup(ours, "10.213.7.5", 22) is None
        kernel.send(reply(22, 0, 128, 7, state=1))  # an established socket is not a listener
        assert lookup(ours, "10.213.7.5", 22) is None
        kernel.send(error(errno.EPERM))
        with pytest.raises(OSError, match="sock_diag"):
            lookup(ours, "10.213.7.5", 22)


def test_connections_left_waiting_mean_hung_and_taken_ones_mean_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts whose port 22 has connections queued are looked up again after `settle`: fewer queued (taken) is
    serving, as many (nothing taken) is not, nor a new socket. The namespace reads are faked (a process
    boundary)."""
    reads = iter([{"busy": Listener(22, 2, 128, 7), "hung": Listener(22, 1, 128, 8), "idle": Listener(22, 0, 128, 9),
                   "nossh": None, "new": Listener(22, 1, 128, 10)},
                  {"busy": Listener(22, 1, 128, 7), "hung": Listener(22, 1, 128, 8), "new": Listener(22, 0, 128, 11)}])
    asked: list[set[str]] = []

    def tables(spaces: dict[str, tuple[str, str]], port: int) -> dict[str, Listener | None]:
        asked.append(set(spaces))
        return next(reads)
    monkeypatch.setattr(netcheck, "listeners", tables)
    monkeypatch.setattr(netcheck, "_netns_inode", lambda pid: 1 if pid == "self" else int(pid))
    monkeypatch.setattr(netcheck, "_holder_serves", lambda pid, inode: True)
    hosts = {"busy": 11, "hung": 12, "idle": 13, "nossh": 14, "new": 15}
    got = listening({name: (pid, "10.0.0.1") for name, pid in hosts.items()}, settle=0.0)
    assert got == {"busy": True, "hung": False, "idle": True, "nossh": False, "new": False}
    assert asked == [set(hosts), {"busy", "hung", "new"}]


def test_a_process_in_this_namespace_is_left_to_the_banner_probe() -> None:
    assert listening({"vm": (os.getpid(), "127.0.0.1"), "nopid": (0, "")}) == {"vm": None, "nopid": None}


def test_frozen_reads_the_cgroup_of_each_line(tmp_path: Path) -> None:
    """v1's freezer.state and v2's cgroup.events, in a stand-in cgroup tree."""
    (tmp_path / "freezer/booted/h1").mkdir(parents=True)
    (tmp_path / "booted/h2").mkdir(parents=True)
    (tmp_path / "freezer/booted/h1/freezer.state").write_text("FROZEN\n")
    (tmp_path / "booted/h2/cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert _frozen("6:freezer:/booted/h1", str(tmp_path)) is True
    assert _frozen("0::/booted/h2", str(tmp_path)) is True
    (tmp_path / "freezer/booted/h1/freezer.state").write_text("THAWED\n")
    (tmp_path / "booted/h2/cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert _frozen("6:freezer:/booted/h1", str(tmp_path)) is False
    assert _frozen("0::/booted/h2", str(tmp_path)) is False
    assert _frozen("0::/", str(tmp_path)) is False and _frozen("9:name=systemd:/booted/h1", str(tmp_path)) is False
    assert _frozen("6:freezer:/no/such/group", str(tmp_path)) is False  # gone meanwhile: the process state says
