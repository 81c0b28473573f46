"""Writing files under a root that someone else may have prepared (--sysroot trees).

A path that looks inside the root can still lead out of it: a symlink (in any component,
swapped in after a check), or a hard link to a file outside, which no path check can see.
So writes look at what is opened rather than at names: the parent directory is opened with
openat2(RESOLVE_BENEATH), which refuses every resolution that leaves the root, as the
kernel does it (no window between check and use); the file found there must be a regular
file with one link on the root's own filesystem. The new content then replaces it by a
rename inside that directory: a reader sees the old text or the new, never a torn or empty
file, and whatever the old name was linked to is left alone.

On the live machine (root "/") nothing is outside the root, and kernel attributes take the
other road: kernel.Sysfs writes them in one write() without truncating.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
from collections.abc import Iterator

from pyshim.errors import OperationFailed

SYS_OPENAT2 = 437  # the same number on every architecture (added after the unified table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
_OPEN_HOW = struct.Struct("QQQ")  # struct open_how: flags, mode, resolve


class Escape(OperationFailed):
    """A path under the root resolves to something outside it."""


def _openat2(dir_fd: int, rel: str, flags: int) -> int:
    import ctypes  # lazy: only writes under a --sysroot tree need it

    libc = ctypes.CDLL(None, use_errno=True)
    how = _OPEN_HOW.pack(flags | os.O_CLOEXEC, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    fd = libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(rel), how, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return int(fd)


def _walk_beneath(dir_fd: int, rel: str) -> int:
    """What openat2(RESOLVE_BENEATH) does, for kernels before 5.6: the directory `rel`
    (relative), each component opened O_NOFOLLOW, symlinks resolved by hand and refused when
    absolute or when their `..` climbs above the root."""
    stack = [os.dup(dir_fd)]
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) == 1:
                    raise OSError(errno.EXDEV, "leaves the root", rel)
                os.close(stack.pop())
                continue
            try:
                fd = os.open(
                    name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=stack[-1],
                )
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                try:
                    target = os.readlink(name, dir_fd=stack[-1])
                except OSError:
                    raise exc from None
                links += 1
                if target.startswith("/") or links > 40:
                    raise OSError(errno.EXDEV, "leaves the root", rel) from None
                parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            stack.append(fd)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def open_dir_beneath(root: str, rel: str) -> int:
    """A descriptor of directory `rel` resolved beneath `root`; Escape when it leads out.
    Under "/" nothing is outside: the path is opened as it resolves (absolute symlinks too)."""
    if os.path.isabs(rel):
        raise Escape(f"refusing to write outside {root}: {rel} is an absolute path")
    if root == "/":
        return os.open(os.path.join(root, rel), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            return _openat2(root_fd, rel or ".", os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise Escape(f"refusing to write outside {root}: {rel} leads out of it") from None
            if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter
                raise
        try:
            return _walk_beneath(root_fd, rel)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise Escape(f"refusing to write outside {root}: {rel} leads out of it") from None
            raise
    finally:
        os.close(root_fd)


@contextlib.contextmanager
def parent_beneath(root: str, rel: str) -> Iterator[tuple[int, str]]:
    """(descriptor of rel's directory beneath root, rel's last component)."""
    directory, _, name = rel.rpartition("/")
    if not name or name in (".", ".."):
        raise OperationFailed(f"not a file name: {rel!r}")
    fd = open_dir_beneath(root, directory)
    try:
        yield fd, name
    finally:
        os.close(fd)


def check_replaceable(root: str, dir_fd: int, name: str, shown: str, must_exist: bool) -> int:
    """The mode of `name` in dir_fd when it may be replaced: a regular file with one link on
    the root's filesystem (under "/", any regular file or symlink: nothing is outside it);
    with must_exist False a missing file is fine (mode 0o644)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        if must_exist:
            raise
        return 0o644
    if root == "/":
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise OperationFailed(f"{shown} is not a regular file: refusing to replace it")
        return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o644
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        raise Escape(
            f"refusing to write outside {root}: {shown} is a symbolic link (to {target}), "
            "which a kernel attribute or configuration file never is"
        )
    if not stat.S_ISREG(st.st_mode):
        raise OperationFailed(f"{shown} is not a regular file: refusing to replace it")
    if st.st_nlink > 1:
        raise Escape(
            f"refusing to write {shown}: it has {st.st_nlink} hard links, so the same file "
            f"may be outside {root}"
        )
    if st.st_dev != os.stat(root).st_dev:
        raise Escape(f"refusing to write {shown}: it is on another filesystem than {root}")
    return stat.S_IMODE(st.st_mode)


def replace_beneath(root: str, rel: str, data: bytes, must_exist: bool) -> str:
    """Replace (or, unless must_exist, create) root/rel with data, atomically, beneath root."""
    shown = os.path.join(root, rel)
    with parent_beneath(root, rel) as (dir_fd, name):
        mode = check_replaceable(root, dir_fd, name, shown, must_exist)
        tmp = f".{name}.pyshim-{os.getpid()}"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=dir_fd,
        )
        try:
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, "short write", shown)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    return shown


def makedirs_beneath(root: str, directory: str) -> None:
    """mkdir -p root/directory, each level resolved beneath root (a symlinked etc/ that
    leads out is refused, not followed)."""
    done = ""
    for part in [p for p in directory.split("/") if p]:
        parent_fd = open_dir_beneath(root, done)
        try:
            try:
                os.stat(part, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(part, 0o755, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)
        done = f"{done}/{part}" if done else part
    os.close(open_dir_beneath(root, done))
