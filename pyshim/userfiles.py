"""Paths the user names: --sysroot, and the report and metrics files pyshim writes.

These are not the kernel's files (kernel.py reads and writes those under the root): a bad
one is a usage error, and a report or metrics file is written only as a new file renamed
into place, never into a directory, a device node, a FIFO or a socket that is there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from pyshim.errors import UsageError


def check_sysroot(root: str) -> str:
    """The --sysroot directory, or a usage error saying what is wrong with it (instead of
    letting a typo read as "this kernel lacks memory hotplug")."""
    if not root:
        raise UsageError("--sysroot is empty: give / or a directory holding sys/ and proc/")
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"--sysroot {root}: symlink loop") from None
        if exc.errno == errno.ENOENT:
            raise UsageError(f"--sysroot {root} does not exist") from None
        raise UsageError(f"--sysroot {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"--sysroot {root} is not a directory")
    if not os.path.isdir(os.path.join(root, "sys")):
        raise UsageError(
            f"--sysroot {root} has no sys/ directory: give / or a recorded tree (lsmem-style)"
        )
    return root


def check_output_path(path: str) -> str:
    """Where a report or metrics file may be written: a new name in an existing directory, or
    a regular file (through a symlink to one: the file it names). A directory, a device
    node, a FIFO or a socket is a usage error: the rename would put a file in its place."""
    shown = path
    if os.path.islink(path):
        path = os.path.realpath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"directory {parent} does not exist")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise UsageError(f"{shown}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{shown} is a directory: give the file to write, e.g. {shown}/r.html")
    if not stat.S_ISREG(mode):
        kind = {
            stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device",
            stat.S_IFIFO: "a FIFO",
            stat.S_IFSOCK: "a socket",
        }.get(stat.S_IFMT(mode), "not a regular file")
        raise UsageError(
            f"{shown} is {kind}, which a report would replace: give a new path or a regular file"
        )
    return path


def write_atomic(path: str, content: str, mode: int = 0o644) -> str:
    """Write `path` atomically: a tempfile in the same directory, fsync, then os.replace."""
    import tempfile  # lazy: only the writing commands need it

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pyshim-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        check_output_path(path)  # again: what is there now is what the rename replaces
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path
