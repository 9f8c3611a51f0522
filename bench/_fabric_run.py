"""Bare Fabric reference runs for bench/fanout.py (run as a subprocess so Python start-up counts).

    python bench/_fabric_run.py true JOB.json     # the floor: ThreadingGroup runs `true` on every host
    python bench/_fabric_run.py deploy JOB.json   # floor + work: the same deploy/start/test as booted,
                                                  # hand-written, one connection per host, one process

Same lab key, same pinned known_hosts (unknown or changed host keys are refused). Exit 1 if any host fails.
"""

from __future__ import annotations

import io
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import paramiko
from fabric import Config, Connection, ThreadingGroup


def _pin(conn: Connection, known_hosts: str) -> None:
    conn.client.load_host_keys(known_hosts)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())


def main() -> int:
    mode, job_path = sys.argv[1], sys.argv[2]
    with open(job_path) as fh:
        job = json.load(fh)
    hosts = job["hosts"]
    config = Config(ssh_config=paramiko.SSHConfig())  # no ~/.ssh/config, like booted's Fleet
    kwargs = {"key_filename": job["key"], "look_for_keys": False, "allow_agent": False}
    if mode == "true":
        group = ThreadingGroup(*[h["ip"] for h in hosts], user="root", config=config, connect_kwargs=kwargs)
        for conn in group:
            _pin(conn, job["known_hosts"])
        group.run("true", hide=True, in_stream=False)  # raises GroupException if any host fails
        group.close()
        return 0
    if mode != "deploy":
        raise SystemExit(f"unknown mode {mode!r}")
    conns = {h["name"]: Connection(h["ip"], user="root", config=config, connect_kwargs=kwargs) for h in hosts}
    for conn in conns.values():
        _pin(conn, job["known_hosts"])
    tarballs: dict[str, bytes] = {}
    for h in hosts:
        if h["tarball"] not in tarballs:
            with open(h["tarball"], "rb") as fh:
                tarballs[h["tarball"]] = fh.read()

    def deploy(h: dict[str, str]) -> None:
        conn = conns[h["name"]]
        conn.put(io.BytesIO(tarballs[h["tarball"]]), h["incoming"])
        conn.run(h["deploy_script"], hide=True, in_stream=False)

    def start(h: dict[str, str]) -> None:
        conns[h["name"]].run(h["start_script"], hide=True, in_stream=False)

    def test(h: dict[str, str]) -> None:
        with urllib.request.urlopen(f"http://{h['ip']}:8000/health", timeout=5) as resp:
            data = json.loads(resp.read(65536))
        if data.get("host") != h["name"] or data.get("version") != h["version"]:
            raise RuntimeError(f"{h['name']}: /health says {data}")

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for step in (deploy, start, test):  # a barrier between steps, like booted, Ansible and pyinfra
            list(pool.map(step, hosts))
    for conn in conns.values():
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
