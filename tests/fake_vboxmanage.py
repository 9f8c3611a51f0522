"""A stand-in for VBoxManage (VirtualBox is not packaged for Debian 12, so it cannot run here): it keeps
VirtualBox's state (VMs, snapshots, media, host-only networks, what runs) in a JSON file, logs every
command line, and answers in VirtualBox's own formats, replayed from output recorded from VirtualBox 7
(tests/data/vboxmanage/*.txt; see the README there for where each recording comes from).

Installed by tests as an executable `VBoxManage` that runs `python fake_vboxmanage.py STATE_FILE ARGS...`.
Failures it can inject (keys in the state file): "locked": {"startvm": N} fails the next N startvm calls
with VirtualBox's locked-session error; "version": "6.1.50r161033" plays VirtualBox 6.1; "networks_conf":
true plays a host whose /etc/vbox/networks.conf allows the lab's addresses (without it, a host-only
address outside 192.168.56.0/21 is refused, as VirtualBox 6.1.28+ does); "crash": [VM names] start those VMs,
which power off at once (a guest that dies right away). It plays a Linux host: host-only
interfaces (`hostonlyif`), never macOS's host-only networks."""

from __future__ import annotations

import fcntl
import json
import sys
import uuid
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "vboxmanage"


def recorded(file: str, **values: str) -> str:
    text = (DATA / file).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.exit(code)


def error(text: str) -> None:
    fail(f"VBoxManage: error: {text}")


def opt(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args[:-1] else default


def main(state_file: Path, args: list[str]) -> None:
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    state.setdefault("version", "7.0.20r163906")
    vms, nets, media = state.setdefault("vms", {}), state.setdefault("nets", {}), state.setdefault("media", [])
    with open(state_file.with_suffix(".log"), "a") as log:
        log.write(json.dumps(args) + "\n")
    out = ""
    cmd = args[0] if args else ""

    def vm(name: str) -> dict:  # type: ignore[type-arg]
        if name not in vms:
            error(f"Could not find a registered machine named '{name}'\n"
                  "VBoxManage: error: Details: code VBOX_E_OBJECT_NOT_FOUND (0x80bb0001), component "
                  "VirtualBoxWrap, interface IVirtualBox, callee nsISupports\n"
                  f"VBoxManage: error: Context: \"FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())\" "
                  f"at line 2621 of file VBoxManageInfo.cpp")
        return vms[name]  # type: ignore[no-any-return]

    if cmd == "--version":
        out = state["version"] + "\n"
    elif cmd == "list":
        what = args[1]
        if what == "runningvms":  # an installer runs for "install_polls" looks (default 2), then powers off
            for v in vms.values():
                if v["state"] == "running" and v.get("installing") is not None:
                    v["installing"] -= 1
                    if v["installing"] < 0:
                        v["state"], v["installing"] = "poweroff", None
                        v["installed"] = True
        if what in ("vms", "runningvms"):
            out = "".join(recorded("list-vms.txt", name=n, uuid=v["uuid"]) for n, v in vms.items()
                          if what == "vms" or v["state"] == "running")
        elif what == "hostonlyifs":  # a Linux host: host-only interfaces on 6.x and 7.x alike
            out = "\n".join(recorded("list-hostonlyifs.txt", name=n, **v) for n, v in nets.items())
        else:
            error(f"Invalid parameter '{what}'")
    elif cmd == "showvminfo":
        v = vm(args[1])
        out = recorded("showvminfo.txt", name=args[1], uuid=v["uuid"], state=v["state"],
                       mac=v.get("mac", "080027000000"), net=v.get("net", ""))
    elif cmd == "createvm":
        name = opt(args, "--name")
        if name in vms:
            error(f"Machine settings file '{name}.vbox' already exists")
        vms[name] = {"uuid": str(uuid.uuid4()), "state": "poweroff", "snapshots": [], "disks": {}}
        out = f"Virtual machine '{name}' is created and registered.\nUUID: {vms[name]['uuid']}\n"
    elif cmd == "storagectl":
        vm(args[1])
    elif cmd == "storageattach":
        v = vm(args[1])
        if v["state"] == "running":
            fail(recorded("error-locked.txt", name=args[1]))
        medium = opt(args, "--medium")
        controller = opt(args, "--storagectl")
        port = opt(args, "--port") if controller == "SATA" else f"{controller}:{opt(args, '--port')}"
        if medium == "none":
            v["disks"].pop(port, None)
        else:
            if not Path(medium).exists():
                error(f"Could not find file for the medium '{medium}' (VERR_FILE_NOT_FOUND)")
            v["disks"][port] = medium
            if medium not in media:
                media.append(medium)
    elif cmd == "snapshot":
        v = vm(args[1])
        v["snapshots"].append(args[3])
        out = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
        out += f"Snapshot taken. UUID: {uuid.uuid4()}\n"
    elif cmd == "clonevm":
        source, name = vm(args[1]), opt(args, "--name")
        if opt(args, "--snapshot") not in source["snapshots"]:
            error(f"Could not find a snapshot named '{opt(args, '--snapshot')}'")
        if name in vms:
            error(f"Machine settings file '{name}.vbox' already exists")
        vms[name] = {"uuid": str(uuid.uuid4()), "state": "poweroff", "snapshots": [],
                     "disks": {"0": f"differencing image of {source['disks'].get('0')}"}}
        out = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
        out += f"Machine has been successfully cloned as \"{name}\"\n"
    elif cmd == "modifyvm":
        v = vm(args[1])
        if v["state"] == "running":
            fail(recorded("error-locked.txt", name=args[1]))
        v["mac"] = opt(args, "--macaddress1", v.get("mac", ""))
        v["net"] = opt(args, "--hostonlyadapter1", v.get("net", ""))
        for key in ("--nic1", "--nic2", "--nattftpprefix1", "--nattftpfile1", "--macaddress2", "--boot1"):
            if key in args:
                v[key.strip("-")] = opt(args, key)
        for net in (v["net"], opt(args, "--hostonlyadapter2")):
            if net and net not in nets:
                error(f"Host-only network '{net}' does not exist")
    elif cmd == "createmedium":
        path = Path(opt(args, "--filename"))
        if path.exists():
            error(f"Failed to create medium\nVBoxManage: error: Could not create the medium storage unit "
                  f"'{path}'.\nVBoxManage: error: VD: Cannot create image '{path}' (VERR_ALREADY_EXISTS)")
        path.write_bytes(b"<<< Oracle VM VirtualBox Disk Image >>>\n")
        media.append(str(path))
        out = f"0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\nMedium created. UUID: {uuid.uuid4()}\n"
    elif cmd == "convertfromraw":
        src, dst = args[1], args[2]
        if not Path(src).exists():
            error(f"Cannot open file '{src}': VERR_FILE_NOT_FOUND")
        if Path(dst).exists():
            error(f"Cannot create file '{dst}': VERR_ALREADY_EXISTS")
        Path(dst).write_bytes(b"<<< Oracle VM VirtualBox Disk Image >>>\n")
        out = (f"Converting from raw image file=\"{src}\" to file=\"{dst}\"...\n"
               "Creating dynamic image with size 1048576 bytes (1MB)...\n")
    elif cmd == "closemedium":
        path = args[2]
        if path in media:
            media.remove(path)
        if "--delete" in args:
            Path(path).unlink(missing_ok=True)
    elif cmd == "startvm":
        v = vm(args[1])
        locked = state.setdefault("locked", {})
        if locked.get("startvm", 0) > 0:
            locked["startvm"] -= 1
            state_file.write_text(json.dumps(state))
            fail(recorded("error-locked-startvm.txt", name=args[1]))
        if v["state"] == "running":
            fail(recorded("error-locked-startvm.txt", name=args[1]))
        v["state"] = "running"
        if v.get("boot1") == "net":  # PXE from the NAT network's TFTP server: the boot file must be there
            tftp = Path(v.get("nattftpprefix1", "/nonexistent"))
            if v.get("nic1") != "nat" or not (tftp / v.get("nattftpfile1", "")).is_file() \
                    or not (tftp / "pxelinux.cfg" / "default").is_file():
                v["state"] = "poweroff"  # no boot medium: the real VM would sit at a PXE error; the test sees it
                fail("VBoxManage: error: fake: nothing to PXE-boot (no NAT NIC 1 or no TFTP boot file)")
            v["installing"] = state.get("install_polls", 2)
        if args[1] in state.get("crash", []):
            v["state"] = "poweroff"
        out = f"Waiting for VM \"{args[1]}\" to power on...\nVM \"{args[1]}\" has been successfully started.\n"
    elif cmd == "controlvm":
        v = vm(args[1])
        if v["state"] != "running":
            error(f"Machine '{args[1]}' is not currently running")
        v["state"] = "poweroff"  # acpipowerbutton: the guest's acpid powers off at once; poweroff: hard
        out = "0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n" if args[2] == "poweroff" else ""
    elif cmd == "unregistervm":
        v = vm(args[1])
        if v["state"] == "running":
            fail(recorded("error-locked.txt", name=args[1]))
        del vms[args[1]]
        if "--delete" in args:
            for medium in v["disks"].values():
                if medium in media:
                    media.remove(medium)
                if medium.startswith("/") and ("seed" in medium or medium.endswith("installed.vdi")):
                    Path(medium).unlink(missing_ok=True)  # --delete removes the VM's disks (never a DVD)
    elif cmd == "hostonlyif":
        if args[1] == "create":
            name = f"vboxnet{len(nets)}"
            nets[name] = {"ip": "192.168.56.1", "mask": "255.255.255.0"}
            out = (f"0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%\n"
                   f"Interface '{name}' was successfully created\n")
        elif args[1] == "ipconfig":
            if not state.get("networks_conf") and not opt(args, "--ip").startswith("192.168.5"):
                fail(recorded("error-accessdenied.txt"))  # 6.1.28+: outside 192.168.56.0/21
            nets[args[2]] = {"ip": opt(args, "--ip"), "mask": opt(args, "--netmask")}
        elif args[1] == "remove":
            nets.pop(args[2], None)
    else:
        fail(f"Syntax error: Invalid command '{cmd}'", 2)
    state_file.write_text(json.dumps(state))
    sys.stdout.write(out)


if __name__ == "__main__":
    # one command at a time, as VirtualBox's VBoxSVC serializes them (the provider starts hosts in parallel)
    with open(f"{sys.argv[1]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        main(Path(sys.argv[1]), sys.argv[2:])
