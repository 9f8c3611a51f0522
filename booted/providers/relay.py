"""stdin/stdout <-> TCP relay. QEMU user-mode networking's `guestfwd=...-cmd:` runs it once per guest
connection, so a VM's boot call to its gateway reaches booted's nginx on 127.0.0.1."""

import os
import select
import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    stdin_open = True
    while True:
        ready, _, _ = select.select([sock] + ([0] if stdin_open else []), [], [], 60)
        if not ready:
            return
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                sock.sendall(data)
            else:
                stdin_open = False
                sock.shutdown(socket.SHUT_WR)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            os.write(1, data)


if __name__ == "__main__":
    main()
