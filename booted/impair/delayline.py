"""booted's user-space delay line: what netem's `delay D J` does, for a kernel without netem.

Run by booted (booted/impair/kernel.py) as `python delayline.py booted-delayline IN OUT DELAY_MS
JITTER_MS`, one process per impaired link, started in its own session and tracked by its PID file. The link's
egress towards the host (OUT: a netns veth or a qemu tap, on the controller's side) is redirected by tc to
a veth pair; this process reads those frames from the pair's far end (IN), holds each for DELAY +- JITTER
ms (first in, first out: a later frame never overtakes an earlier one) and sends it out of OUT past its
qdisc (PACKET_QDISC_BYPASS: not redirected again). It imports nothing of booted (it runs as a plain
script); it ends on SIGTERM, and by itself when OUT or IN goes (the host stopped).
"""

from __future__ import annotations

import collections
import os
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20
PACKET_OUTGOING = 4
QUEUE_MAX = 20000  # frames held at once; more are dropped (netem's default limit is 1000)


def gone(link: str) -> bool:
    return not os.path.exists(f"/sys/class/net/{link}")


def run(src: str, dst: str, delay: float, jitter: float) -> int:
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind((src, ETH_P_ALL))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    tx.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)  # past OUT's tc redirect (and its nft egress hook)
    tx.bind((dst, 0))
    held: collections.deque[tuple[float, bytes]] = collections.deque()
    last_due, next_check = 0.0, 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            if gone(src) or gone(dst):
                return 0
            next_check = now + 1.0
        wait = min(1.0, max(0.0, held[0][0] - now)) if held else 1.0
        ready, _, _ = select.select([rx], [], [], wait)
        if ready:
            for _ in range(256):  # bounded: the frames due are sent between bursts
                try:
                    frame, addr = rx.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:
                    return 0  # IN went away
                if addr[2] == PACKET_OUTGOING or len(held) >= QUEUE_MAX:
                    continue
                now = time.monotonic()
                last_due = max(last_due, now + max(0.0, delay + random.uniform(-jitter, jitter)))
                held.append((last_due, frame))
        now = time.monotonic()
        while held and held[0][0] <= now:
            try:
                tx.send(held.popleft()[1])
            except OSError:
                if gone(dst):
                    return 0  # the host's link went: the host stopped


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[1] != "booted-delayline":
        print("usage: delayline.py booted-delayline IN OUT DELAY_MS JITTER_MS", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return run(argv[2], argv[3], float(argv[4]) / 1000, float(argv[5]) / 1000)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
