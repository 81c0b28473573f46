"""Careless and hostile input, one table: each case must end in its documented exit code with
one line on stderr naming the cause, no traceback, no write outside the sysroot, and no hang.

Each case copies a committed tree, damages it the way the case says, and runs the CLI in this
process with spies on every call that could write a file and an alarm that bounds the time.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from unit_helpers import Result, tree_path

from pyshim.cli import Environment, main

SECONDS = 10
MEM = "sys/devices/system/memory"
DEV = "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.0"
DEV_LINK = "sys/bus/dax/devices/dax0.0"  # the path pyshim reads, and names in its messages
KMEM_ATTR = "sys/bus/dax/drivers/kmem/memmap_on_memory"


def put(rel: str, text: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).write_text(text)

    return damage


def both(*damages: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for each in damages:
            each(root)

    return damage


def device_size(size: int) -> Callable[[Path], None]:
    """The device (one mapping from 4 GiB) claims size bytes: its size file and mapping."""
    return both(
        put(f"{DEV}/size", f"{size}\n"),
        put(f"{DEV}/mapping0/end", f"{(1 << 32) + size - 1:#x}\n"),
    )


def replace_with(rel: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).unlink()
        make(root / rel)

    return damage


def remove(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).unlink()

    return damage


def symlink_outside(rel: str) -> Callable[[Path], None]:
    """Point a file at a copy outside the root (the write must be refused)."""

    def damage(root: Path) -> None:
        outside = root.parent / "outside"
        outside.mkdir()
        (outside / "target").write_text((root / rel).read_text())
        (root / rel).unlink()
        (root / rel).symlink_to(outside / "target")

    return damage


def no_damage(root: Path) -> None:
    return None


def hard_link_outside(rel: str) -> Callable[[Path], None]:
    """Make root/rel a hard link to a file outside the root: same name, same content, and
    no symlink anywhere for a path check to see."""

    def damage(root: Path) -> None:
        outside = root.parent / "outside"
        outside.mkdir()
        (outside / "target").write_text((root / rel).read_text())
        (root / rel).unlink()
        os.link(outside / "target", root / rel)

    return damage


def directory_outside(rel: str, target: Callable[[Path], str]) -> Callable[[Path], None]:
    """Move directory root/rel outside the root and leave a symlink (text `target`) to it."""

    def damage(root: Path) -> None:
        outside = root.parent / "outside"
        outside.mkdir()
        shutil.move(root / rel, outside / "moved")
        (root / rel).symlink_to(target(root))

    return damage


def outside_untouched(root: Path) -> None:
    """The file outside the root still holds what the tree held (the kmem attribute: on)."""
    for path in (root.parent / "outside").rglob("*"):
        if path.is_file() and path.name in ("target", "memmap_on_memory"):
            assert path.read_text() == "on\n", path


def attribute_is(value: str) -> Callable[[Path], None]:
    def verify(root: Path) -> None:
        assert (root / KMEM_ATTR).read_text().strip() == value

    return verify


def nothing_to_verify(root: Path) -> None:
    return None


@dataclass
class Case:
    name: str
    argv: list[str]  # {root} is the damaged tree, {parent} the directory that holds it
    code: int
    needle: str  # must appear in the one line on stderr
    damage: Callable[[Path], None] = no_damage
    tree: str = "patched_on"
    absent: list[str] = field(default_factory=list)  # must not appear on stderr
    verify: Callable[[Path], None] = nothing_to_verify  # the tree after the run
    stdout_errno: int | None = None  # stdout fails every write and flush with this errno


CASES = [
    # set: only the listed words reach the kernel
    Case("set-force", ["set", "force"], 2, "invalid value 'force': use one of global, on, off"),
    Case("set-nonsense", ["set", "nonsense"], 2, "use one of global, on, off"),
    Case("set-yellow", ["set", "yellow"], 2, "invalid value 'yellow'"),
    Case("set-test", ["set", "test"], 2, "invalid value 'test'"),
    Case("set-1234", ["set", "1234"], 2, "invalid value '1234'"),
    Case("set-escape", ["set", "on"], 1, "refusing to write outside", symlink_outside(KMEM_ATTR)),
    # --sysroot itself
    Case("sysroot-missing", ["show", "--sysroot", "{parent}/nope"], 2, "nope does not exist"),
    Case(
        "sysroot-file",
        ["show", "--sysroot", "{root}/sys/devices/system/memory/block_size_bytes"],
        2,
        "block_size_bytes is not a directory",
    ),
    Case("sysroot-empty-string", ["check", "--sysroot", ""], 2, "--sysroot is empty"),
    Case("sysroot-loop", ["check", "--sysroot", "{parent}/loop"], 2, "loop: symlink loop"),
    Case("sysroot-empty-dir", ["check", "--sysroot", "{parent}/empty"], 2, "has no sys/"),
    # a kernel without the series is told where the series is, not a make target
    Case(
        "stock-kernel",
        ["check"],
        3,
        "kernel-patch/ in the pyshim sources",
        tree="stock",
        absent=["make kernel"],
    ),
    # corrupt values name the file and the value
    Case("size", ["check"], 1, f"{DEV_LINK}/size holds 'lots'", put(f"{DEV}/size", "lots\n")),
    Case(
        "target-node",
        ["show"],
        1,
        f"{DEV_LINK}/target_node holds 'one'",
        put(f"{DEV}/target_node", "one\n"),
    ),
    Case("align", ["show"], 1, f"{DEV_LINK}/align holds '2M'", put(f"{DEV}/align", "2M\n")),
    Case(
        "mapping-start",
        ["check"],
        1,
        f"{DEV_LINK}/mapping0/start holds 'start'",
        put(f"{DEV}/mapping0/start", "start\n"),
    ),
    Case(
        "mapping-reversed",
        ["check"],
        1,
        "mapping0: end 0xfffff lies before start 0x100000000",
        put(f"{DEV}/mapping0/end", "0xfffff\n"),
    ),
    # mappingN/end is inclusive: end == start is a one-byte mapping, not a reversed one
    Case(
        "mapping-one-byte",
        ["check"],
        1,
        "its mappings cover 1 bytes but size says 536870912",
        put(f"{DEV}/mapping0/end", "0x100000000\n"),
    ),
    Case(
        "mapping-short",
        ["check"],
        1,
        "its mappings cover 536870912 bytes but size says 1073741824",
        put(f"{DEV}/size", "1073741824\n"),
    ),
    Case(
        "device-attribute-2",
        ["show"],
        1,
        f"{DEV_LINK}/memmap_on_memory holds '2'",
        put(f"{DEV}/memmap_on_memory", "2\n"),
    ),
    Case(
        "block-attribute-2",
        ["check"],
        1,
        f"{MEM}/memory33/memmap_on_memory holds '2'",
        put(f"{MEM}/memory33/memmap_on_memory", "2\n"),
    ),
    Case(
        "block-without-state",
        ["check"],
        1,
        f"{MEM}/memory33/ has no state file",
        remove(f"{MEM}/memory33/state"),
    ),
    Case("kmem-attribute", ["check"], 1, f"{KMEM_ATTR} holds 'maybe'", put(KMEM_ATTR, "maybe\n")),
    Case(
        "global-parameter",
        ["show"],
        1,
        "parameters/memmap_on_memory holds 'sometimes'",
        put("sys/module/memory_hotplug/parameters/memmap_on_memory", "sometimes\n"),
    ),
    # daxX.Y/state (Linux 7.3): only the words state_show() prints
    Case(
        "dax-state-unknown-word",
        ["show"],
        1,
        f"{DEV_LINK}/state holds 'plugged'",
        put(f"{DEV}/state", "plugged\n"),
        tree="v73_states",
    ),
    Case(
        "dax-state-empty",
        ["show", "--json"],
        1,
        f"{DEV_LINK}/state read empty, which the kernel never shows",
        put(f"{DEV}/state", ""),
        tree="v73_states",
    ),
    Case(
        "dax-state-going-offline",
        ["check"],
        1,
        "known: unplugged, offline, online, online_kernel, online_movable",
        put(f"{DEV}/state", "going-offline\n"),
        tree="v73_states",
    ),
    Case(
        "dax-state-directory",
        ["show"],
        1,
        f"{DEV_LINK}/state is not a regular file",
        replace_with(f"{DEV}/state", lambda p: p.mkdir()),
        tree="v73_states",
    ),
    Case(
        "dax-state-fifo",
        ["show"],
        1,
        f"{DEV_LINK}/state is not a regular file",
        replace_with(f"{DEV}/state", lambda p: os.mkfifo(p)),
        tree="v73_states",
    ),
    # block_size_bytes: bounded, non-blocking, sane
    Case(
        "block-size-dev-zero",
        ["check"],
        1,
        "block_size_bytes is not a regular file",
        replace_with(f"{MEM}/block_size_bytes", lambda p: p.symlink_to("/dev/zero")),
    ),
    Case(
        "block-size-fifo",
        ["check"],
        1,
        "block_size_bytes is not a regular file",
        replace_with(f"{MEM}/block_size_bytes", lambda p: os.mkfifo(p)),
    ),
    Case(
        "block-size-huge-file",
        ["show"],
        1,
        "block_size_bytes holds more than 4096 bytes",
        put(f"{MEM}/block_size_bytes", "8" * 5000),
    ),
    Case(
        "block-size-1",
        ["check"],
        1,
        "block_size_bytes says 1 bytes, outside the 16 MiB",
        put(f"{MEM}/block_size_bytes", "1\n"),
    ),
    Case(
        "device-spans-too-many-blocks",
        ["check"],
        1,
        "is not a size x86-64 can address",
        device_size(1 << 60),
    ),
    Case(
        "distance-short",
        ["check"],
        1,
        "node1/distance lists 1 distances for 2 online nodes",
        put("sys/devices/system/node/node1/distance", "10\n"),
    ),
    # arguments
    Case("device-empty", ["check", ""], 2, "invalid device name ''"),
    Case("capacity-5000-digits", ["plan", "--capacity", "9" * 5000], 2, "not a size"),
    Case("report-into-a-directory", ["report", "--html", "{parent}"], 2, "is a directory"),
    # --- issue 19 ----------------------------------------------------------------------------
    # 1. output that cannot be written: one line, exit 1, on every path that writes stdout
    *(
        Case(
            f"stdout-{name}-{'-'.join(argv)}",
            argv,
            1,
            f"cannot write the output: {why}",
            stdout_errno=err,
        )
        for argv in (
            ["show"],
            ["check", "--json"],
            ["plan", "--capacity", "1T"],
            ["check", "-h"],
            ["--version"],
        )
        for name, err, why in (
            ("enospc", errno.ENOSPC, "No space left on device"),
            ("eio", errno.EIO, "Input/output error"),
        )
    ),
    Case(
        "stdout-enospc-after-set",
        ["set", "off"],
        1,
        "(the change was made: dax_kmem memmap_on_memory: off (was on))",
        stdout_errno=errno.ENOSPC,
        verify=attribute_is("off"),
    ),
    # 2. special files where a regular file is expected
    Case(
        "kcore-fifo",
        ["check", "--witness"],
        1,
        "proc/kcore is not a regular file",
        lambda root: os.mkfifo(root / "proc/kcore"),
    ),
    Case(
        "kcore-directory",
        ["check", "--witness"],
        1,
        "proc/kcore is not a regular file",
        lambda root: (root / "proc/kcore").mkdir(parents=True),
    ),
    Case(
        "kcore-dev-zero",
        ["check", "--witness"],
        1,
        "proc/kcore is not a regular file",
        lambda root: (root / "proc/kcore").symlink_to("/dev/zero"),
    ),
    Case(
        "zoneinfo-fifo",
        ["check"],
        1,
        "proc/zoneinfo is not a regular file",
        replace_with("proc/zoneinfo", lambda p: os.mkfifo(p)),
    ),
    Case(
        "report-over-a-character-device",
        ["report", "--html", "{parent}/null"],
        2,
        "null is a character device, which a report would replace",
        lambda root: (root.parent / "null").symlink_to("/dev/null"),
    ),
    Case(
        "report-over-a-fifo",
        ["report", "--html", "{parent}/fifo"],
        2,
        "fifo is a FIFO",
        lambda root: os.mkfifo(root.parent / "fifo"),
    ),
    Case(
        "metrics-over-a-fifo",
        ["metrics", "--textfile", "{parent}/prom"],
        2,
        "pyshim.prom is a FIFO",
        lambda root: ((root.parent / "prom").mkdir(), os.mkfifo(root.parent / "prom/pyshim.prom")),
    ),
    Case(
        "persist-over-a-fifo",
        ["set", "off", "--persist"],
        1,
        "dax-kmem-memmap.conf is not a regular file: refusing to replace it; "
        f"{{root}}/{KMEM_ATTR} is back at on",
        lambda root: (
            (root / "etc/modprobe.d").mkdir(parents=True),
            os.mkfifo(root / "etc/modprobe.d/dax-kmem-memmap.conf"),
        ),
        verify=attribute_is("on"),
    ),
    # 3. links out of the sysroot: what is opened counts, not its name
    Case(
        "set-hard-link-outside",
        ["set", "off"],
        1,
        "has 2 hard links, so the same file may be outside",
        hard_link_outside(KMEM_ATTR),
        verify=outside_untouched,
    ),
    Case(
        "set-directory-symlink-outside",
        ["set", "off"],
        1,
        "refusing to write outside",
        directory_outside(
            "sys/bus/dax/drivers/kmem", lambda root: str(root.parent / "outside/moved")
        ),
        verify=outside_untouched,
    ),
    Case(
        "set-relative-symlink-climbing-out",
        ["set", "off"],
        1,
        "refusing to write outside",
        directory_outside("sys/bus/dax/drivers/kmem", lambda root: "../../../../../outside/moved"),
        verify=outside_untouched,
    ),
    Case(
        "persist-etc-symlink-outside",
        ["set", "off", "--persist"],
        1,
        f"refusing to write outside {{root}}: etc leads out of it; {{root}}/{KMEM_ATTR} is "
        "back at on",
        lambda root: (
            (root.parent / "outside").mkdir(),
            (root / "etc").symlink_to(root.parent / "outside"),
        ),
        verify=attribute_is("on"),
    ),
    # 4. values far outside what a kernel writes
    Case(
        "block-size-4000-digits",
        ["check"],
        1,
        "not a 64-bit hex number",
        put(f"{MEM}/block_size_bytes", "8" * 4000),
    ),
    Case(
        "size-4000-digits",
        ["check"],
        1,
        f"{DEV_LINK}/size holds '9999",
        put(f"{DEV}/size", "9" * 4000 + "\n"),
    ),
    Case(
        "target-node-4000-digits",
        ["show"],
        1,
        "not a 64-bit decimal number",
        put(f"{DEV}/target_node", "1" * 4000 + "\n"),
    ),
    Case(
        "mapping-end-beyond-4-pib",
        ["check"],
        1,
        "is beyond the 4 PiB x86-64 can address",
        put(f"{DEV}/mapping0/end", f"{1 << 60:#x}\n"),
    ),
    Case(
        "device-spans-2-to-24-blocks",
        ["check"],
        1,
        "spans 16777216 memory blocks of 134217728 bytes, but",
        device_size((1 << 24) * (128 << 20)),
    ),
    Case(
        "node-online-millions",
        ["check"],
        1,
        "not a node list the kernel prints",
        put("sys/devices/system/node/online", ",".join(["0-1023"] * 580) + "\n"),
    ),
    Case(
        "node-online-above-max-numnodes",
        ["check"],
        1,
        "not a node list the kernel prints",
        put("sys/devices/system/node/online", "0-9999\n"),
    ),
    # 5. half-done writes: roll back, or say exactly what stayed changed
    Case(
        "persist-modprobe-d-is-a-file",
        ["set", "off", "--persist"],
        1,
        f"{{root}}/{KMEM_ATTR} is back at on: nothing changed",
        lambda root: ((root / "etc").mkdir(), (root / "etc/modprobe.d").write_text("")),
        verify=attribute_is("on"),
    ),
    Case(
        "attribute-read-empty",
        ["check"],
        1,
        "read empty, which the kernel never shows: a read torn by a concurrent write",
        put(KMEM_ATTR, ""),
    ),
    # 6. the command line
    *(
        Case(
            f"plan-block-size-{size}",
            ["plan", "--capacity", "1T", "--block-size", size],
            2,
            f"block size {size} is outside the 16 MiB to 1 TiB",
        )
        for size in ("1", "4K", "1P")
    ),
    Case(
        "plan-block-size-3M",
        ["plan", "--capacity", "1T", "--block-size", "3M"],
        2,
        "not a power of two",
    ),
    Case("plan-capacity-8P", ["plan", "--capacity", "8P"], 2, "more than x86-64 can address"),
    Case("report-html-empty", ["report", "--html", ""], 2, "--html is empty"),
    Case("metrics-textfile-empty", ["metrics", "--textfile", ""], 2, "--textfile is empty"),
    Case(
        "newline-in-a-path",
        ["show", "--sysroot", "{parent}/two\nlines"],
        2,
        "two\\nlines does not exist",
    ),
    Case(
        "newline-in-a-report-path",
        ["report", "--html", "{parent}/no\ndir/r.html"],
        2,
        "no\\ndir does not exist",
    ),
]


@dataclass
class Spied:
    active: bool = False  # off while the test builds its tree
    written: list[str] = field(default_factory=list)

    def saw(self, *paths: Any) -> None:
        if self.active:
            self.written.extend(os.fspath(p) for p in paths)


def at(path: Any, dir_fd: int | None) -> str:
    """The path a call relative to dir_fd names."""
    if dir_fd is None:
        return os.fspath(path)
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(path))


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spied]:
    """Record every path that a call able to create or change a file is given."""
    spy = Spied()
    real_open, real_replace, real_mkstemp = os.open, os.replace, tempfile.mkstemp
    real_makedirs, real_chmod = os.makedirs, os.chmod
    real_rename, real_mkdir = os.rename, os.mkdir
    real_io_open = io.open

    def spy_open(
        path: Any, flags: int, *args: Any, dir_fd: int | None = None, **kwargs: Any
    ) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            spy.saw(at(path, dir_fd))
        return real_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    def spy_rename(
        src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None
    ) -> None:
        spy.saw(at(src, src_dir_fd), at(dst, dst_dir_fd))
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def spy_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        spy.saw(at(path, dir_fd))
        real_mkdir(path, mode, dir_fd=dir_fd)

    def spy_io_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        # open(), Path.write_text and the like; an int is a descriptor opened above
        if not isinstance(file, int) and set(mode) & set("wax+"):
            spy.saw(file)
        return real_io_open(file, mode, *args, **kwargs)

    def spy_replace(src: Any, dst: Any) -> None:
        spy.saw(src, dst)
        real_replace(src, dst)

    def spy_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = real_mkstemp(*args, **kwargs)
        spy.saw(path)
        return fd, path

    def spy_makedirs(path: Any, *args: Any, **kwargs: Any) -> None:
        spy.saw(path)
        real_makedirs(path, *args, **kwargs)

    def spy_chmod(path: Any, *args: Any, **kwargs: Any) -> None:
        spy.saw(path)
        real_chmod(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "rename", spy_rename)
    monkeypatch.setattr(os, "mkdir", spy_mkdir)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(tempfile, "mkstemp", spy_mkstemp)
    monkeypatch.setattr(os, "makedirs", spy_makedirs)
    monkeypatch.setattr(os, "chmod", spy_chmod)
    monkeypatch.setattr(io, "open", spy_io_open)
    monkeypatch.setattr(builtins, "open", spy_io_open)
    yield spy


class Hang(BaseException):
    """Not an Exception, so that no handler in pyshim can turn a hang into a verdict
    (a TimeoutError is an OSError, which pyshim reports as a read failure)."""


def _timeout(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no answer within {SECONDS} s")


class FailingOutput(io.StringIO):
    """A stdout on a full disk (ENOSPC) or a failing device (EIO)."""

    def __init__(self, err: int) -> None:
        super().__init__()
        self.err = err

    def write(self, text: str) -> int:
        raise OSError(self.err, os.strerror(self.err))

    def flush(self) -> None:
        raise OSError(self.err, os.strerror(self.err))


def run_bounded(argv: list[str], stdout_errno: int | None = None) -> tuple[Result, float]:
    """The result and the seconds it took; Hang when it takes SECONDS."""
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(SECONDS)
    start = time.monotonic()
    out = io.StringIO() if stdout_errno is None else FailingOutput(stdout_errno)
    err = io.StringIO()
    try:
        env = Environment(stdout=out, stderr=err, euid=lambda: 0, prog="pyshim")
        code = main(argv, env)
        shown = "" if stdout_errno is not None else out.getvalue()
        return Result(code, shown, err.getvalue()), time.monotonic() - start
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, spied: Spied) -> None:
    root = tmp_path / "root"
    shutil.copytree(tree_path(case.tree), root, symlinks=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    case.damage(root)
    argv = [a.format(root=root, parent=tmp_path) for a in case.argv]
    if "--sysroot" not in argv:
        argv += ["--sysroot", str(root)]
    before = sorted(p.name for p in tmp_path.iterdir())

    spied.active = True
    try:
        r, seconds = run_bounded(argv, case.stdout_errno)
    finally:
        spied.active = False

    assert seconds < SECONDS
    assert r.code == case.code, r.err
    assert r.err.count("\n") == 1 and r.err.endswith("\n"), r.err
    assert r.err.startswith("pyshim: error: "), r.err
    assert case.needle.format(root=root, parent=tmp_path) in r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    for word in case.absent:
        assert word not in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    base = os.path.realpath(root)
    for path in spied.written:
        assert os.path.realpath(path).startswith(base + os.sep), path
    case.verify(root)
