"""tests/fake_vboxmanage.py with what VirtualBox snapshots of booted's hosts need: `controlvm VM pause|resume`,
`snapshot VM take|restore|delete`, `discardstate`, `modifyvm VM --name NEW`; every other command is the
recorded fake's. A paused VM still counts as running (`list runningvms` lists paused VMs); a snapshot taken
of a running or paused VM keeps its saved state, so restoring it leaves the VM `saved`. The messages follow
VBoxManageSnapshot.cpp and ConsoleImpl.cpp; unlike the fake's tests/data files they were not recorded."""

from __future__ import annotations

import fcntl
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_vboxmanage as fake

PROGRESS = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"


def ours(state_file: Path, args: list[str]) -> bool:
    """Handle the snapshot commands (True), or leave the command to the recorded fake (False)."""
    cmd, sub = (args[0] if args else ""), ""
    if cmd == "controlvm" and args[2:3] in (["pause"], ["resume"]):
        sub = args[2]
    elif cmd == "modifyvm" and "--name" in args:
        sub = "rename"
    elif cmd not in ("snapshot", "discardstate"):
        return False
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    with open(state_file.with_suffix(".log"), "a") as log:
        log.write(json.dumps(args) + "\n")
    vms = state.setdefault("vms", {})
    if args[1] not in vms:
        fake.error(f"Could not find a registered machine named '{args[1]}'")
    v = vms[args[1]]
    out = ""
    if sub == "pause":
        if v["state"] != "running" or v.get("paused"):
            fake.error(f"Cannot pause the machine as it is not running (machine state: {v['state']})")
        v["paused"] = True
    elif sub == "resume":
        if not v.get("paused"):
            fake.error(f"Cannot resume the machine as it is not paused (machine state: {v['state']})")
        v["paused"] = False
    elif sub == "rename":
        vms[fake.opt(args, "--name")] = vms.pop(args[1])
    elif cmd == "discardstate":
        if v["state"] != "saved":
            fake.error("Machine in invalid state 2 -- powered off")
        v["state"] = "poweroff"
    elif args[2] == "take":
        v["snapshots"].append(args[3])
        v.setdefault("online", {})[args[3]] = v["state"] == "running"
        out = PROGRESS + f"Snapshot taken. UUID: {uuid.uuid4()}\n"
    elif args[2] in ("restore", "delete"):
        if args[3] not in v["snapshots"]:
            fake.error(f"Could not find a snapshot named '{args[3]}'")
        if args[2] == "restore":
            if v["state"] == "running":
                fake.error("Cannot restore a snapshot of a running machine")
            v["state"] = "saved" if v.get("online", {}).get(args[3]) else "poweroff"
            v["restored"] = args[3]
            out = f"Restoring snapshot '{args[3]}' ({uuid.uuid4()})\n" + PROGRESS
        else:
            v["snapshots"].remove(args[3])
            out = f"Deleting snapshot '{args[3]}' ({uuid.uuid4()})\n" + PROGRESS
    state_file.write_text(json.dumps(state))
    sys.stdout.write(out)
    return True


if __name__ == "__main__":
    with open(f"{sys.argv[1]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ours(Path(sys.argv[1]), sys.argv[2:]):
            fake.main(Path(sys.argv[1]), sys.argv[2:])
