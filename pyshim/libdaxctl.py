"""cffi binding of libdaxctl (Debian libdaxctl1): what `daxctl reconfigure-device` calls.

ABI mode (`ffi.dlopen("libdaxctl.so.1")`) rather than an out-of-line API build: the package
then needs no C compiler or -dev headers at install time, the library's functions take and
return only opaque pointers, ints and strings (no struct layouts or macros to get wrong), and
the soname pins the ABI. The declarations live in decl/libdaxctl.h, passed to cdef() verbatim
(as pygit2's decl/*.h). The module imports cffi and opens the library only when a Library is
made, so that unit tests and the read-only commands run without either.

Every libdaxctl call that returns a negative errno goes through `check()`, which raises the
one exception type `DaxctlError` carrying errno, the device path and the fix.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from importlib import resources
from typing import Any

from pyshim.errors import MissingPrerequisite

SONAME = "libdaxctl.so.1"

# syslog priorities as libdaxctl compares them (it logs a message when priority >= its level).
# Quiet by default so that pyshim's one-line error is all the user sees; --verbose shows
# libdaxctl's own debug lines on stderr as daxctl -v does.
LOG_QUIET = 0
LOG_DEBUG = 7


def _fix_for(err: int, device: str) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return "run as root"
    if err == errno.EBUSY:
        return (
            f"{device} or its memory is in use: stop what holds /dev/{device} "
            f"(fuser -v /dev/{device}) or uses memory on its node, then retry"
        )
    if err == errno.ENOENT:
        return (
            "libdaxctl could not find the kmem driver: provide "
            "/lib/modules/$(uname -r)/modules.builtin (run depmod) or modprobe kmem"
        )
    if err == errno.ENXIO:
        return f"{device} vanished or has no memory: see `python -m pyshim show`"
    if err == errno.EOPNOTSUPP:
        return "this kernel configuration does not support the operation (see dmesg)"
    return "see dmesg for the kernel's reason"


class DaxctlError(OSError):
    """A libdaxctl call failed: errno, path (the device's sysfs directory) and the fix."""

    def __init__(self, err: int, path: str, action: str, fix: str) -> None:
        super().__init__(err, os.strerror(err), path)
        self.action = action
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.action} {self.filename}: {self.strerror}: {self.fix}"


def check(rc: int, device: str, action: str, fix: str | None = None) -> int:
    """Return rc, or raise DaxctlError when libdaxctl returned a negative errno."""
    if rc < 0:
        err = -rc
        raise DaxctlError(
            err, f"/sys/bus/dax/devices/{device}", action, fix or _fix_for(err, device)
        )
    return rc


def declarations() -> str:
    return resources.files("pyshim").joinpath("decl/libdaxctl.h").read_text()


class Library:
    """libdaxctl opened through cffi; MissingPrerequisite when cffi or the library is absent."""

    def __init__(self, soname: str = SONAME, verbose: bool = False) -> None:
        self.log_priority = LOG_DEBUG if verbose else LOG_QUIET
        try:
            from cffi import FFI
        except ImportError:
            raise MissingPrerequisite("python cffi is missing: pip install cffi") from None
        self.ffi: Any = FFI()
        self.ffi.cdef(declarations())
        try:
            self.lib: Any = self.ffi.dlopen(soname)
        except OSError:
            raise MissingPrerequisite(f"cannot load {soname}: apt-get install libdaxctl1") from None

    def context(self) -> Context:
        return Context(self)


class Context:
    """A daxctl_ctx; use as a context manager so that it is always unref'd."""

    def __init__(self, library: Library) -> None:
        self._library = library
        self.ffi = library.ffi
        self.lib = library.lib
        self._ctx: Any = None

    def __enter__(self) -> Context:
        holder = self.ffi.new("struct daxctl_ctx **")
        check(int(self.lib.daxctl_new(holder)), "ctx", "daxctl_new")
        self._ctx = holder[0]
        self.lib.daxctl_set_log_priority(self._ctx, self._library.log_priority)
        return self

    @property
    def log_priority(self) -> int:
        return int(self.lib.daxctl_get_log_priority(self._ctx))

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self.lib.daxctl_unref(self._ctx)
            self._ctx = None

    def devices(self) -> Iterator[Device]:
        region = self.lib.daxctl_region_get_first(self._ctx)
        while region != self.ffi.NULL:
            dev = self.lib.daxctl_dev_get_first(region)
            while dev != self.ffi.NULL:
                yield Device(self, dev)
                dev = self.lib.daxctl_dev_get_next(dev)
            region = self.lib.daxctl_region_get_next(region)

    def find(self, name: str) -> Device | None:
        for dev in self.devices():
            if dev.name == name:
                return dev
        return None


class Device:
    def __init__(self, ctx: Context, handle: Any) -> None:
        self.ffi = ctx.ffi
        self.lib = ctx.lib
        self._dev = handle
        self.name = self.ffi.string(self.lib.daxctl_dev_get_devname(handle)).decode()

    def _check(self, rc: int, action: str, fix: str | None = None) -> int:
        return check(int(rc), self.name, action, fix)

    @property
    def enabled(self) -> bool:
        return bool(self.lib.daxctl_dev_is_enabled(self._dev))

    @property
    def target_node(self) -> int:
        return int(self.lib.daxctl_dev_get_target_node(self._dev))

    @property
    def will_auto_online(self) -> bool:
        return bool(self.lib.daxctl_dev_will_auto_online_memory(self._dev))

    def memory(self) -> Memory | None:
        """The memory object: present only when the device is in system-ram mode (kmem)."""
        mem = self.lib.daxctl_dev_get_memory(self._dev)
        return None if mem == self.ffi.NULL else Memory(self, mem)

    def disable(self) -> None:
        self._check(self.lib.daxctl_dev_disable(self._dev), "disable")

    def enable_ram(self) -> None:
        self._check(self.lib.daxctl_dev_enable_ram(self._dev), "enable system-ram mode of")

    def enable_devdax(self) -> None:
        self._check(self.lib.daxctl_dev_enable_devdax(self._dev), "enable devdax mode of")


class Memory:
    def __init__(self, dev: Device, handle: Any) -> None:
        self._dev = dev
        self._mem = handle
        self.lib = dev.lib

    def _check(self, rc: int, action: str) -> int:
        return check(int(rc), self._dev.name, action)

    @property
    def num_blocks(self) -> int:
        """daxctl_memory_num_sections() counts memory blocks despite its name."""
        return self._check(self.lib.daxctl_memory_num_sections(self._mem), "count blocks of")

    @property
    def online_blocks(self) -> int:
        return self._check(self.lib.daxctl_memory_is_online(self._mem), "read the state of")

    @property
    def movable(self) -> bool | None:
        rc = int(self.lib.daxctl_memory_is_movable(self._mem))
        return None if rc < 0 else bool(rc)

    def online(self, movable: bool) -> int:
        if movable:
            return self._check(self.lib.daxctl_memory_online(self._mem), "online memory of")
        return self._check(self.lib.daxctl_memory_online_no_movable(self._mem), "online memory of")

    def offline(self) -> int:
        return self._check(self.lib.daxctl_memory_offline(self._mem), "offline memory of")
