"""A netns host's root and user namespace, for netns-host.sh, which runs this file with the controller's python
(`python3 -I -S hostroot.py root BASE ROOT LOWER HOSTDIR`, then `... enter BASE ROOT`). Stdlib only.

`root`: the host's root is an overlay whose layers (golden image, the host's upper dir) are idmapped mounts
(ids 0..65535 show as BASE..BASE+65535), so the image's root-owned files belong to the host's root inside,
what it writes lands on disk owned by 0..65535 (like a VM's disk), and nothing is copied or chowned.
util-linux 2.38 has no X-mount.idmap: this is the new mount API (open_tree, mount_setattr) through ctypes.
Linux 5.19+ (overlayfs over idmapped layers), on a file system with idmapped mounts (ext4, xfs, btrfs).
`enter`: pivot_root into it, detach the machine's root, become root of a new user namespace (ids BASE..),
exec the boot script. In Python because after the pivot only the host's files exist: real root must run
nothing from them (the host may have changed any of its binaries on an earlier boot).
"""

from __future__ import annotations

import ctypes
import os
import sys

SPAN = 65536  # ids per host: a full 16-bit range (apt, package users, systemd's dynamic users)
CLONE_NEWUSER = 0x10000000
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
OPEN_TREE_CLONE = 1
MOUNT_ATTR_IDMAP = 0x100000
SYS_OPEN_TREE, SYS_MOUNT_SETATTR = 428, 442  # the same numbers on every architecture
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
NAMESPACES = 0x10000000 | 0x04000000 | 0x08000000 | 0x02000000  # user, uts, ipc, cgroup
MNT_DETACH = 2
BOOT = "/usr/lib/booted/boot"
PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, PR_SET_PDEATHSIG, SIGKILL = 28, 1 << 2, 1, 9


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


LIBC = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def userns_fd(base: int, span: int = SPAN) -> int:
    """An fd of a new, empty user namespace mapping 0..span-1 to base..: a child unshares, we map it, open
    its /proc/PID/ns/user and let it exit (the fd keeps the namespace). The child names its PID as /proc
    knows it: this runs in a new PID namespace while /proc is still the machine's."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = LIBC.unshare(CLONE_NEWUSER) == 0
            os.write(ready_w, os.readlink("/proc/self").encode() if ok else b"-")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        proc_pid = os.read(ready_r, 32).decode()
        if not proc_pid.isdigit():
            raise OSError("unshare(CLONE_NEWUSER) failed: user namespaces disabled?")
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/{proc_pid}/{kind}", "wb") as f:
                f.write(f"0 {base} {span}\n".encode())
        return os.open(f"/proc/{proc_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def idmapped_tree(src: str, ns_fd: int) -> int:
    """A detached copy of the mount at `src` with the ids of `ns_fd` (on-disk id k shows as base+k)."""
    tree = _check(LIBC.syscall(SYS_OPEN_TREE, AT_FDCWD, src.encode(), OPEN_TREE_CLONE), f"open_tree {src}")
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns_fd)
    _check(LIBC.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
           f"idmapping {src}")
    return tree


def mount_root(base: int, root: str, lowers: list[str], hostdir: str) -> None:
    """The host's root at `root`: an overlay of idmapped copies of `lowers` (top first) and of `hostdir`
    (its upper/ and work/). The overlay acts on its layers with the mounter's credentials, so it is mounted
    with fsuid/fsgid `base` (on-disk root through the idmap; capabilities kept): real root's own ids 0 would
    not map into the upper layer (EOVERFLOW, and overlayfs falls back to read-only)."""
    ns_fd = userns_fd(base)
    try:
        trees = [idmapped_tree(path, ns_fd) for path in [*lowers, hostdir]]
    finally:
        os.close(ns_fd)
    top = f"/proc/self/fd/{trees[-1]}"  # detached mounts, reached through their fds: no mount point needed
    opts = f"lowerdir={':'.join(f'/proc/self/fd/{t}' for t in trees[:-1])},upperdir={top}/upper,workdir={top}/work"
    _check(LIBC.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0), "keeping capabilities")
    LIBC.setfsgid(base)
    LIBC.setfsuid(base)
    _check(LIBC.mount(b"overlay", root.encode(), b"overlay", 0, opts.encode()), f"mounting the overlay at {root}")
    for tree in trees:
        os.close(tree)  # the overlay holds its own references to its layers


def enter(base: int, root: str) -> None:
    """Make `root` the root of this mount namespace and drop the old one, then exec the boot script as root
    of a new user namespace (with its own uts, ipc and cgroup namespaces) whose ids 0..65535 are base..:
    a child still in the machine's user namespace writes the id maps (a process cannot map itself to more
    than its own id), then we take id 0 inside, keeping the capabilities the new namespace gave us, which
    the exec turns into a full set inside and nothing outside."""
    os.chdir(root)
    _check(LIBC.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(LIBC.umount2(b".", MNT_DETACH), "detaching the old root")
    os.chdir("/")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_w)
            target = os.read(ready_r, 32).decode()
            for kind in ("uid_map", "gid_map"):
                with open(f"/proc/{target}/{kind}", "wb") as f:
                    f.write(f"0 {base} {SPAN}\n".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    unshared = LIBC.unshare(NAMESPACES)
    os.write(ready_w, str(os.getpid()).encode() if unshared == 0 else b"-")
    os.close(ready_w)
    _check(unshared, "unshare")
    if os.waitpid(pid, 0)[1] != 0:
        raise OSError("could not write the user namespace's id maps")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # new ids cleared the death signal `unshare --kill-child` set: set it again, so that killing the host's
    # handle still kills this PID 1 and with it the whole host
    _check(LIBC.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "setting the parent-death signal")
    os.execve(BOOT, [BOOT], dict(os.environ))


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 5 and argv[0] == "root" and argv[1].isdigit():
            mount_root(int(argv[1]), argv[2], argv[3].split(":"), argv[4])
        elif len(argv) == 3 and argv[0] == "enter" and argv[1].isdigit():
            enter(int(argv[1]), argv[2])
        else:
            print("usage: hostroot.py root BASE ROOT LOWER[:LOWER...] HOSTDIR | enter BASE ROOT", file=sys.stderr)
            return 2
    except (OSError, KeyError) as exc:
        print(f"booted hostroot {argv[0]}: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
