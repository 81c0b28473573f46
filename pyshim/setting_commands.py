"""set: write a driver's memmap_on_memory setting, and with --persist keep it across boots."""

from __future__ import annotations

import errno
import os

from pyshim import parse, render
from pyshim.context import Context
from pyshim.drivers import DriverSpec, lookup_driver
from pyshim.errors import (
    EXIT_OK,
    MissingPrerequisite,
    OperationFailed,
    PyshimError,
    UsageError,
)
from pyshim.kernel import KernelWriteError


def cmd_set(ctx: Context) -> int:
    args = ctx.args
    spec = lookup_driver(args.driver)
    try:
        value = parse.parse_setting_word(args.value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sysfs = ctx.sysfs
    before = sysfs.require_driver_setting(spec)
    ctx.require_root(f"writing {sysfs.path(spec.attribute_path)}")
    try:
        sysfs.write_attr(spec.attribute_path, value.value)
    except KernelWriteError as exc:
        raise _set_error(ctx, spec, value, exc) from None
    after = sysfs.driver_setting(spec)
    if after is not value:
        raise OperationFailed(
            f"{sysfs.path(spec.attribute_path)} reads {after.value if after else 'nothing'} "
            f"after writing {value.value}: see dmesg"
        )
    cmdline = ""
    if args.persist:
        try:
            cmdline = _persist(ctx, spec, value)
        except PyshimError as exc:
            exc.message += "; " + _roll_back(ctx, spec, before, value)
            raise
    changed = f"{spec.name} memmap_on_memory: {value.value} (was {before.value})"
    try:
        ctx.out(changed + "\n" + cmdline)
    except OperationFailed as exc:
        exc.message += f" (the change was made: {changed})"
        raise
    bound = [n for n in sysfs.listdir(spec.driver_path) if n.startswith("dax")]
    for name in sorted(bound):
        ctx.note(
            f"{name} is already bound to {spec.driver}: the setting applies to it after "
            f"{render.reonline_command(ctx.env.prog, name)}"
        )
    return EXIT_OK


def _roll_back(
    ctx: Context, spec: DriverSpec, before: parse.KmemSetting, value: parse.KmemSetting
) -> str:
    """Put the attribute back after --persist failed; what the machine is left with."""
    path = ctx.sysfs.path(spec.attribute_path)
    if before is value:
        return f"{path} was already {value.value}: nothing changed"
    try:
        ctx.sysfs.write_attr(spec.attribute_path, before.value)
        restored = ctx.sysfs.driver_setting(spec) is before
    except PyshimError:
        restored = False
    if restored:
        return f"{path} is back at {before.value}: nothing changed"
    return f"{path} STAYS {value.value} (putting back {before.value} failed too)"


def _set_error(
    ctx: Context, spec: DriverSpec, value: parse.KmemSetting, exc: KernelWriteError
) -> PyshimError:
    path = exc.path
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ctx.refused(path, exc.errno)
    if exc.errno == errno.EINVAL:
        return OperationFailed(
            f"the kernel rejected {value.value!r} for {path} (EINVAL): use on, off or global"
        )
    if exc.errno == errno.EOPNOTSUPP:
        sysfs = ctx.sysfs
        try:
            settings = sysfs.settings(spec)
            reason = settings.unsupported_reason
            size = parse.format_size(settings.block_size)
        except PyshimError:
            reason, size = None, "unknown"
        why = reason or "see dmesg for the kernel's reason"
        return MissingPrerequisite(
            f"this kernel cannot place the memmap on hot-plugged memory "
            f"(memory block size {size}): {why}; {spec.attribute} stays unchanged"
        )
    if exc.errno == errno.EBUSY:
        bound = sorted(n for n in ctx.sysfs.listdir(spec.driver_path) if n.startswith("dax"))
        which = ", ".join(bound) or "a device"
        return OperationFailed(
            f"{path}: busy: {which} bound to {spec.driver}; release with "
            + " && ".join(
                f"{ctx.env.prog} reconfigure --mode devdax {n}" for n in bound or ["daxX.Y"]
            )
        )
    return OperationFailed(f"cannot write {path}: {os.strerror(exc.errno)}")


def _persist(ctx: Context, spec: DriverSpec, value: parse.KmemSetting) -> str:
    """Keep the setting across reboots; what to print on stdout (the kernel command line
    word when kmem is built in)."""
    sysfs = ctx.sysfs
    kind = sysfs.module_kind(spec.module)
    word = f"{spec.cmdline_word}={value.value}"
    if kind == "builtin":
        ctx.note(
            f"{spec.module} is built into the kernel: add {word} to the kernel command line "
            "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)"
        )
        return f"{word}\n"
    rel = f"etc/modprobe.d/{spec.name.replace('_', '-')}-memmap.conf"
    content = (
        f"# written by {ctx.env.prog} set --driver {spec.name} {value.value} --persist\n"
        f"options {spec.module} {spec.parameter}={value.value}\n"
    )
    try:
        path = sysfs.write_file_atomic(rel, content)
    except PermissionError as exc:
        raise ctx.refused(sysfs.path(rel), exc.errno or errno.EACCES) from None
    except OSError as exc:
        raise OperationFailed(f"cannot write {sysfs.path(rel)}: {exc.strerror}") from None
    ctx.note(f"wrote {path} ({spec.module} is a loadable module)")
    return ""
