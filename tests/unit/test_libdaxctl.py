"""The cffi binding: declarations, error mapping, and a real (read-only) libdaxctl call.

Onlining through libdaxctl needs a kernel with dax devices and is tested in the VM tests.
"""

from __future__ import annotations

import errno
import re
from typing import Any

import pytest

from pyshim import libdaxctl
from pyshim.errors import MissingPrerequisite


def _functions() -> list[str]:
    return re.findall(r"\b(daxctl_[a-z_]+)\(", libdaxctl.declarations())


def test_declarations_parse() -> None:
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef(libdaxctl.declarations())
    assert "daxctl_dev_enable_ram" in _functions()


def test_check_raises_one_type_with_errno_path_fix() -> None:
    assert libdaxctl.check(3, "dax0.0", "online") == 3
    with pytest.raises(libdaxctl.DaxctlError) as info:
        libdaxctl.check(-errno.EBUSY, "dax0.0", "disable")
    exc = info.value
    assert isinstance(exc, OSError)
    assert exc.errno == errno.EBUSY
    assert exc.filename == "/sys/bus/dax/devices/dax0.0"
    assert "fuser -v /dev/dax0.0" in exc.fix
    assert "\n" not in str(exc) and str(exc).startswith("disable /sys/bus/dax/devices/dax0.0")


@pytest.mark.parametrize(
    ("err", "needle"),
    [(errno.EPERM, "run as root"), (errno.ENOENT, "modules.builtin"), (errno.EIO, "dmesg")],
)
def test_fixes(err: int, needle: str) -> None:
    with pytest.raises(libdaxctl.DaxctlError, match=needle):
        libdaxctl.check(-err, "dax1.0", "enable")


def test_missing_library_is_a_prerequisite() -> None:
    pytest.importorskip("cffi")
    with pytest.raises(MissingPrerequisite, match="apt-get install libdaxctl1"):
        libdaxctl.Library("libdaxctl-does-not-exist.so.9")


def _library() -> libdaxctl.Library:
    pytest.importorskip("cffi")
    try:
        return libdaxctl.Library()
    except MissingPrerequisite:
        pytest.skip("libdaxctl.so.1 is not installed")


def test_every_declared_function_exists() -> None:
    lib = _library().lib
    for name in _functions():
        assert callable(getattr(lib, name)), name


def test_real_context_lists_devices() -> None:
    """daxctl_new and the region/device walk on this machine (read-only)."""
    with _library().context() as ctx:
        names = [dev.name for dev in ctx.devices()]
        assert all(re.fullmatch(r"dax[0-9]+\.[0-9]+", n) for n in names)
        assert ctx.find("dax999.999") is None


class RecordingLib:
    """libdaxctl's context and memory calls, recorded (the real library cannot show an
    unref, and onlines only on a machine with dax devices)."""

    def __init__(self, ffi: Any) -> None:
        self.ffi = ffi
        self.calls: list[str] = []
        self.priority = 3  # libdaxctl's default, LOG_ERR
        self.devname = ffi.new("char[]", b"dax0.0")

    def daxctl_new(self, holder: object) -> int:
        self.calls.append("new")
        holder[0] = self.ffi.cast("struct daxctl_ctx *", 1)  # type: ignore[index]
        return 0

    def daxctl_set_log_priority(self, ctx: object, priority: int) -> None:
        self.priority = priority

    def daxctl_get_log_priority(self, ctx: object) -> int:
        return self.priority

    def daxctl_unref(self, ctx: object) -> None:
        self.calls.append("unref")

    def daxctl_dev_get_devname(self, dev: object) -> object:
        return self.devname

    def daxctl_memory_online(self, mem: object) -> int:
        self.calls.append("online")
        return 4

    def daxctl_memory_online_no_movable(self, mem: object) -> int:
        self.calls.append("online_no_movable")
        return 4


def _recording_library(verbose: bool = False) -> libdaxctl.Library:
    """A Library whose C functions are RecordingLib's (the cdef is the real one)."""
    cffi = pytest.importorskip("cffi")
    library = libdaxctl.Library.__new__(libdaxctl.Library)
    library.ffi = cffi.FFI()
    library.ffi.cdef(libdaxctl.declarations())
    library.lib = RecordingLib(library.ffi)
    library.log_priority = libdaxctl.LOG_DEBUG if verbose else libdaxctl.LOG_QUIET
    return library


@pytest.mark.parametrize(("verbose", "priority"), [(False, 0), (True, 7)])
def test_context_sets_log_priority_and_unrefs(verbose: bool, priority: int) -> None:
    library = _recording_library(verbose)
    with library.context() as ctx:
        assert ctx.log_priority == priority
    assert library.lib.calls == ["new", "unref"]


def test_context_unrefs_once_when_closed_twice() -> None:
    """A second close must not unref the freed context again."""
    library = _recording_library()
    ctx = library.context()
    with ctx:
        pass
    ctx.__exit__(None, None, None)
    assert library.lib.calls == ["new", "unref"]


@pytest.mark.parametrize(("movable", "call"), [(True, "online"), (False, "online_no_movable")])
def test_memory_online_picks_the_zone_function(movable: bool, call: str) -> None:
    """movable onlines through daxctl_memory_online (ZONE_MOVABLE), --no-movable through
    daxctl_memory_online_no_movable, as daxctl online-memory does."""
    library = _recording_library()
    with library.context() as ctx:
        memory = libdaxctl.Memory(libdaxctl.Device(ctx, ctx.ffi.NULL), ctx.ffi.NULL)
        assert memory.online(movable) == 4
    assert library.lib.calls == ["new", call, "unref"]


def test_real_library_is_quiet_unless_verbose() -> None:
    pytest.importorskip("cffi")
    try:
        quiet, loud = libdaxctl.Library(), libdaxctl.Library(verbose=True)
    except MissingPrerequisite:
        pytest.skip("libdaxctl.so.1 is not installed")
    with quiet.context() as ctx:
        assert ctx.log_priority == libdaxctl.LOG_QUIET
    with loud.context() as ctx:
        assert ctx.log_priority == libdaxctl.LOG_DEBUG
