"""python -m pyshim: set the per-driver memmap_on_memory, online dax memory, prove placement.

Exit codes: 0 ok, 1 the check or operation failed (also: output that cannot be written), 2
usage, 3 the kernel or machine lacks a prerequisite (including not being root), 4 `check`
found stale blocks only. Errors are one line on stderr naming the fix; no traceback reaches
the user (PYSHIM_DEBUG=1 shows one for internal errors). Output to a closed pipe is dropped
quietly (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, NoReturn

from pyshim import __version__, logic, parse, render
from pyshim.drivers import DRIVERS, DriverSpec, lookup_driver, validate_device
from pyshim.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STALE,
    EXIT_USAGE,
    MissingPrerequisite,
    OperationFailed,
    PyshimError,
    UsageError,
)
from pyshim.kernel import PATCHED_KERNEL, DeviceVanished, KernelWriteError, Sysfs, check_sysroot

if TYPE_CHECKING:
    from pyshim.libdaxctl import Library


def program_name(argv0: str) -> str:
    """How the user started pyshim, for usage lines and for the commands messages suggest."""
    if os.path.basename(argv0) == "__main__.py":
        return f"{os.path.basename(sys.executable) or 'python3'} -m pyshim"
    return os.path.basename(argv0) or "pyshim"


def _default_library(verbose: bool) -> Library:
    from pyshim.libdaxctl import Library  # lazy: cffi and libdaxctl only for online/offline

    return Library(verbose=verbose)


class _ClosedStream(io.TextIOBase):
    """Stands in for a standard stream whose descriptor is closed (`>&-`, where Python sets
    sys.stdout to None): writes fail with EBADF, reported like any unwritable output."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


class Environment:
    """What main() takes from the process; tests inject their own."""

    def __init__(
        self,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        euid: Callable[[], int] = os.geteuid,
        library: Callable[[bool], Library] = _default_library,
        prog: str | None = None,
    ) -> None:
        self.stdout: IO[str] | io.TextIOBase = stdout or sys.stdout or _ClosedStream()
        # With stderr closed there is nowhere to say anything: messages are dropped.
        self.stderr: IO[str] = stderr or sys.stderr or io.StringIO()
        self.euid = euid
        self.library = library
        self.prog = prog or program_name(sys.argv[0])


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized to the terminal without shutil: argparse builds one for
    every argument it adds, and importing shutil (with zlib, bz2 and lzma) for its
    get_terminal_size() was a tenth of pyshim's start-up."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 80
        super().__init__(prog, width=columns - 2)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[_Parser]  # what add_subparsers() returns


def _add_devices(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "devices", nargs="+", metavar="DEVICE", help="dax devices (daxX.Y), or all, as daxctl takes"
    )


def _add_movable(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--movable",
        dest="movable",
        action="store_true",
        default=True,
        help="online into ZONE_MOVABLE (default, as daxctl)",
    )
    group.add_argument(
        "--no-movable", dest="movable", action="store_false", help="online into ZONE_NORMAL"
    )


def _parser_set(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "set",
        parents=[common],
        help="write a driver's memmap_on_memory setting",
        description="Write /sys/bus/dax/drivers/kmem/memmap_on_memory: global (the default, "
        "Linux 6.12's rule: the device's memmap_on_memory attribute and the boot parameter "
        "memory_hotplug.memmap_on_memory must both allow it), on (the memmap goes on the "
        "hot-plugged memory whenever this kernel can place it there) or off (never). It "
        "applies to every hot-add kmem makes afterwards; memory already added keeps its "
        f"memmap until it is re-added. Example: {prog} set on --persist",
    )
    p.add_argument(
        "--driver",
        default="dax_kmem",
        help=f"driver whose setting to write (known: {', '.join(sorted(DRIVERS))})",
    )
    p.add_argument(
        "value",
        nargs="?",
        default="on",
        help="global, on or off (also exactly 1/0, yes/no, true/false); default on",
    )
    p.add_argument(
        "--persist",
        action="store_true",
        help="also keep it across reboots: modprobe.d when kmem is a module, else print the "
        "kernel command line word to add",
    )


def _parser_show(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "show",
        parents=[common],
        help="settings and dax devices",
        description="The kmem and global settings, then one row per dax device. BLOCKS: "
        "memory blocks online/total; MEMMAP: where the blocks' memmap lives according to "
        "memoryN/memmap_on_memory (memory, dram or mixed); MEMMAP_IN_DRAM: the DRAM those "
        "memmaps take; DAX_ATTR: the device's own memmap_on_memory attribute, which kmem "
        "consults only under the setting `global`; DAX_STATE: the device's state attribute "
        "(Linux 7.3+, devices bound to kmem; - where the file is absent), kmem's record of "
        "the last whole-device change (unplugged, offline, online, online_kernel, "
        "online_movable), which blocks onlined one by one do not change. "
        f"Example: {prog} show --json",
    )
    p.add_argument("--json", action="store_true", help="JSON with daxctl's key names, in bytes")


def _parser_check(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="where each block's memmap lives, what the settings choose, node cross-check",
        description="For every memory block of every dax device in system-ram mode: where its "
        "memmap lives (memoryN/memmap_on_memory) and where the current settings would put it; "
        "for every node made only of such blocks: whether /proc/zoneinfo and the node's MemTotal "
        "agree with the blocks. Status ok (exit 0), stale: some blocks were onlined under an "
        "earlier setting (exit 4, or 0 with --allow-stale), inconsistent: a device's blocks "
        "disagree or the accounting contradicts them (exit 1). "
        f"Example: {prog} check --json dax0.0",
    )
    p.add_argument("device", nargs="?", help="only this device (daxX.Y)")
    p.add_argument("--json", action="store_true", help="JSON in bytes, with a status key")
    p.add_argument(
        "--allow-stale",
        action="store_true",
        help="exit 0 when blocks only hold their memmap where an earlier setting put it",
    )
    p.add_argument(
        "--witness",
        action="store_true",
        help="also find each block's memmap in the kernel page tables (root, /proc/kcore); "
        "fail when they, memoryN/memmap_on_memory and the node accounting disagree; "
        "works on stock kernels too",
    )


def _parser_online(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "online",
        parents=[common],
        help="online the memory of dax devices (system-ram mode first if needed)",
        description="Online every memory block of each device through libdaxctl, as daxctl "
        "online-memory does; a device in devdax mode is first reconfigured to system-ram (the "
        "hot-add, where kmem decides the memmap placement). On Linux 7.3 and later a kmem "
        "device whose daxX.Y/state reads unplugged has no memory blocks for libdaxctl to "
        "online: pyshim writes online_movable (online_kernel with --no-movable) to that file "
        "instead, and kmem hot-adds and onlines the whole device at once. On failure the "
        f"device returns to its earlier state. Example: {prog} online dax0.0",
    )
    _add_devices(p)
    _add_movable(p)


def _parser_offline(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "offline",
        parents=[common],
        help="offline the memory of dax devices (they stay in system-ram mode)",
        description="Offline every memory block of each device, as daxctl offline-memory "
        "does; the memory stays added (kmem keeps the device), on Linux 7.3 too, where "
        "daxX.Y/state is left alone (it cannot say offline, and unplugged would remove the "
        "memory); an unplugged device has nothing to offline. On failure the blocks offlined "
        f"on the way are onlined again. To remove the memory, use reconfigure --mode devdax. "
        f"Example: {prog} offline all",
    )
    _add_devices(p)


def _parser_reconfigure(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "reconfigure",
        parents=[common],
        help="switch dax devices between system-ram and devdax mode",
        description="As daxctl reconfigure-device: --mode system-ram hot-adds and onlines the "
        "memory (the same as online), --mode devdax offlines it, removes it and gives the "
        "device back to device_dax. A re-add after a kmem setting change is how memory "
        "already onlined gets its memmap placed anew. On failure the device returns to its "
        f"earlier state. Example: {prog} reconfigure --mode devdax dax0.0",
    )
    p.add_argument(
        "--mode",
        required=True,
        choices=["system-ram", "devdax"],
        help="system-ram: memory for the kernel (kmem); devdax: the character device",
    )
    _add_devices(p)
    _add_movable(p)


def _parser_report(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="self-contained HTML report",
        description="Write one HTML file (no external resources) with the settings, one "
        f"picture of memory blocks per node and the check result. Example: {prog} report "
        "--html /tmp/memmap.html",
    )
    p.add_argument("--html", required=True, metavar="FILE", help="the HTML file to write")


def _parser_metrics(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "metrics",
        parents=[common],
        help="node_exporter textfile-collector metrics",
        description="Write DIR/pyshim.prom for node_exporter's textfile collector: memmap bytes "
        "and memory blocks by node and memmap_node, the settings, the check status and the "
        f"time of the run. Example: {prog} metrics --textfile /var/lib/node_exporter",
    )
    p.add_argument(
        "--textfile", required=True, metavar="DIR", help="node_exporter's textfile directory"
    )


def _parser_plan(sub: Subparsers, common: _Parser, prog: str) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        help="DRAM the memmap of a capacity takes with and without the setting",
        description="How much DRAM the memmap of CAPACITY of hot-plugged memory takes, and "
        "how much of the memory itself it takes with memmap on memory, for this machine's "
        f"memory block size or --block-size. Example: {prog} plan --capacity 1T",
    )
    p.add_argument("--capacity", required=True, help="e.g. 512M, 1G, 1T or bytes")
    p.add_argument("--block-size", help="memory block size (default: this machine's)")
    p.add_argument("--json", action="store_true", help="JSON in bytes")


PARSERS: dict[str, Callable[[Subparsers, _Parser, str], None]] = {
    "set": _parser_set,
    "show": _parser_show,
    "check": _parser_check,
    "online": _parser_online,
    "offline": _parser_offline,
    "reconfigure": _parser_reconfigure,
    "report": _parser_report,
    "metrics": _parser_metrics,
    "plan": _parser_plan,
}


def build_parser(prog: str, command: str | None = None) -> argparse.ArgumentParser:
    """The command line parser; with `command`, only that command's sub-parser.

    argparse builds a help formatter for every argument it adds, which made building all
    the sub-parsers a fifth of pyshim's own start-up. A command line that names a command
    needs only that one: main() parses with it, and falls back to the whole parser for
    anything else (help, --version, errors), so that messages stay the same.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also show libdaxctl's own messages (online, offline, reconfigure)",
    )
    common.add_argument(
        "--sysroot",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="read and write the kernel's files under DIR instead of / (like lsmem --sysroot)",
    )
    parser = _Parser(
        prog=prog,
        parents=[common],
        description=(
            "Set the per-driver memmap_on_memory of dax kmem, bring dax memory online through "
            "libdaxctl, and prove block by block where each memory block's memmap lives."
        ),
        epilog="exit status: 0 ok, 1 check or operation failed (check: inconsistent), 2 usage, "
        "3 missing prerequisite, 4 check found stale blocks (see --allow-stale)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    for name, add in PARSERS.items():
        if command in (None, name):
            add(sub, common, prog)
    return parser


# --- commands ----------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace, env: Environment) -> None:
        self.args = args
        self.env = env
        self.sysfs = Sysfs(check_sysroot(args.sysroot) if "sysroot" in args else "/")
        self.spec: DriverSpec = DRIVERS["dax_kmem"]

    def out(self, text: str) -> None:
        with _output_errors():
            self.env.stdout.write(text)

    def note(self, text: str) -> None:
        self.env.stderr.write(f"pyshim: {text}\n")

    def require_root(self, why: str) -> None:
        if self.sysfs.is_live and self.env.euid() != 0:
            raise MissingPrerequisite(f"{why} needs root: run as root")


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
    ctx.out(f"{spec.name} memmap_on_memory: {value.value} (was {before.value})\n")
    bound = [n for n in sysfs.listdir(spec.driver_path) if n.startswith("dax")]
    for name in sorted(bound):
        ctx.note(
            f"{name} is already bound to {spec.driver}: the setting applies to it after "
            f"{logic.reonline_command(ctx.env.prog, name)}"
        )
    if args.persist:
        _persist(ctx, spec, value)
    return EXIT_OK


def _set_error(
    ctx: Context, spec: DriverSpec, value: parse.KmemSetting, exc: KernelWriteError
) -> PyshimError:
    path = exc.path
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MissingPrerequisite(f"cannot write {path}: run as root")
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


def _persist(ctx: Context, spec: DriverSpec, value: parse.KmemSetting) -> None:
    sysfs = ctx.sysfs
    kind = sysfs.module_kind(spec.module)
    word = f"{spec.cmdline_word}={value.value}"
    if kind == "builtin":
        ctx.out(f"{word}\n")
        ctx.note(
            f"{spec.module} is built into the kernel: add {word} to the kernel command line "
            "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub)"
        )
        return
    rel = f"etc/modprobe.d/{spec.name.replace('_', '-')}-memmap.conf"
    content = (
        f"# written by {ctx.env.prog} set --driver {spec.name} {value.value} --persist\n"
        f"options {spec.module} {spec.parameter}={value.value}\n"
    )
    try:
        path = sysfs.write_file_atomic(rel, content)
    except PermissionError:
        raise MissingPrerequisite(f"cannot write {sysfs.path(rel)}: run as root") from None
    except OSError as exc:
        raise OperationFailed(f"cannot write {sysfs.path(rel)}: {exc.strerror}") from None
    ctx.note(f"wrote {path} ({spec.module} is a loadable module)")


def _snapshot(ctx: Context, zones: bool = False, accounting: bool = True) -> logic.Snapshot:
    snap = ctx.sysfs.snapshot(ctx.spec, zones=zones, accounting=accounting)
    for name in snap.vanished:
        ctx.note(f"{name} vanished during the scan (unbound or destroyed); skipped")
    return snap


def _require_block_attr(ctx: Context, snap: logic.Snapshot) -> None:
    for blocks in snap.blocks.values():
        if any(b.memmap_on_memory is None for b in blocks):
            raise MissingPrerequisite(
                "this kernel lacks /sys/devices/system/memory/memoryN/memmap_on_memory (the "
                f"per-driver setting): {PATCHED_KERNEL}"
            )


def cmd_show(ctx: Context) -> int:
    sysfs = ctx.sysfs
    snap = _snapshot(ctx, zones=True, accounting=False)
    if snap.settings.kmem is None and sysfs.exists(ctx.spec.driver_path):
        ctx.note(
            f"this kernel lacks {sysfs.path(ctx.spec.attribute_path)} (the per-driver "
            f"setting): {PATCHED_KERNEL}"
        )
    data = render.show_json(
        snap,
        {
            "kmem_module": sysfs.module_kind(ctx.spec.module),
            "auto_online_blocks": sysfs.auto_online_blocks(),
        },
    )
    ctx.out(render.to_json(data) if ctx.args.json else render.show_text(data))
    return EXIT_OK


def _checked_snapshot(ctx: Context, device: str | None = None) -> tuple[logic.Snapshot, Any]:
    ctx.sysfs.require_driver_setting(ctx.spec)
    snap = _snapshot(ctx)
    _require_block_attr(ctx, snap)
    if device is not None and device not in {d.name for d in snap.devices}:
        if device in snap.vanished:
            raise OperationFailed(f"{device} vanished during the scan: retry")
        raise OperationFailed(f"no dax device {device}: see {ctx.env.prog} show")
    return snap, logic.check(snap, ctx.env.prog, only=device)


def cmd_check(ctx: Context) -> int:
    device = validate_device(ctx.args.device) if ctx.args.device is not None else None
    if ctx.args.witness:
        return _check_witness(ctx, device)
    _, result = _checked_snapshot(ctx, device)
    ctx.out(render.to_json(result) if ctx.args.json else render.check_text(result, ctx.env.prog))
    status = logic.Status(result["status"])
    if status is logic.Status.INCONSISTENT:
        return EXIT_FAILED
    if status is logic.Status.STALE and not ctx.args.allow_stale:
        return EXIT_STALE
    return EXIT_OK


def _check_witness(ctx: Context, device: str | None) -> int:
    from pyshim import witness_check  # lazy: only this option reads /proc/kcore

    ctx.require_root("check --witness (it reads kernel page tables through /proc/kcore)")
    result = witness_check.check(ctx.sysfs, ctx.spec, device, ctx.env.prog)
    text = (
        render.to_json(result) if ctx.args.json else witness_check.check_text(result, ctx.env.prog)
    )
    ctx.out(text)
    status = logic.Status(result["status"])
    if status is logic.Status.INCONSISTENT:
        return EXIT_FAILED
    if status is logic.Status.STALE and not ctx.args.allow_stale:
        return EXIT_STALE
    return EXIT_OK


def cmd_plan(ctx: Context) -> int:
    args = ctx.args
    try:
        capacity = parse.parse_size(args.capacity)
        block_size = parse.parse_size(args.block_size) if args.block_size else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if block_size is None:
        block_size = ctx.sysfs.block_size()
    elif block_size & (block_size - 1):
        raise UsageError(f"block size {args.block_size} is not a power of two")
    force = ctx.sysfs.global_mode() is parse.GlobalMode.FORCE
    result = logic.plan(capacity, block_size, force)
    ctx.out(render.to_json(result) if args.json else render.plan_text(result))
    return EXIT_OK


def cmd_metrics(ctx: Context) -> int:
    directory = ctx.args.textfile
    if not os.path.isdir(directory):
        raise UsageError(f"textfile directory {directory} does not exist")
    snap, result = _checked_snapshot(ctx)
    path = os.path.join(directory, "pyshim.prom")
    try:
        render.write_metrics(path, snap, result, time.time())
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror}") from None
    ctx.note(f"wrote {path}")
    return EXIT_OK


def cmd_report(ctx: Context) -> int:
    target = ctx.args.html
    parent = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        raise UsageError(f"directory {parent} does not exist")
    if os.path.isdir(target):
        raise UsageError(
            f"{target} is a directory: give the HTML file to write, e.g. {target}/r.html"
        )
    snap, result = _checked_snapshot(ctx)
    from pyshim.kernel import write_atomic

    try:
        write_atomic(target, render.report_html(snap, result))
    except OSError as exc:
        raise OperationFailed(f"cannot write {target}: {exc.strerror}") from None
    ctx.note(f"wrote {target}")
    return EXIT_OK


def _daxctl_prerequisites(ctx: Context, action: str) -> None:
    sysfs = ctx.sysfs
    if not sysfs.is_live:
        raise UsageError(
            f"{action} acts on the running kernel through libdaxctl, which always reads /sys: "
            "drop --sysroot"
        )
    ctx.require_root(action)
    if not sysfs.exists("sys/bus/dax"):
        raise MissingPrerequisite(
            "no /sys/bus/dax: this kernel lacks dax (boot one built with CONFIG_DEV_DAX)"
        )
    release = sysfs.osrelease() or "$(uname -r)"
    builtin = f"lib/modules/{release}/modules.builtin"
    if not sysfs.exists(builtin):
        raise MissingPrerequisite(
            f"libdaxctl finds the kmem and device_dax drivers through /{builtin}, which is "
            f"missing: install the kernel's modules.builtin there and run depmod {release}"
        )


def _device_names(ctx: Context, only_kmem: bool = False) -> list[str]:
    """The DEVICE arguments, with `all` meaning every dax device (those bound to kmem when
    only_kmem: offlining memory means nothing for a devdax device)."""
    names: list[str] = ctx.args.devices
    if names == ["all"]:
        everything = ctx.sysfs.dax_device_names()
        if only_kmem:
            kmem = f"{ctx.spec.driver_path}/"
            everything = [n for n in everything if ctx.sysfs.exists(kmem + n)]
        return everything
    if "all" in names:
        raise UsageError("all stands alone: give either all or device names")
    return [validate_device(name) for name in names]


Action = Callable[[Sysfs, Any, str], dict[str, object]]


def _for_each_device(ctx: Context, verb: str, action: Action, only_kmem: bool = False) -> int:
    """Run action(sysfs, libdaxctl device, name) for each device inside one libdaxctl
    context, then print the devices as daxctl does (a JSON array) and a count on stderr.
    The first failure stops the run; devices done before it stay done, and the message
    says which."""
    from pyshim.libdaxctl import DaxctlError

    names = _device_names(ctx, only_kmem)
    _daxctl_prerequisites(ctx, verb)
    library = ctx.env.library(getattr(ctx.args, "verbose", False))
    done: list[str] = []
    results: list[dict[str, object]] = []
    try:
        with library.context() as daxctx:
            for name in names:
                dev = daxctx.find(name)
                if dev is None:
                    raise OperationFailed(f"no dax device {name}: see {ctx.env.prog} show")
                results.append(action(ctx.sysfs, dev, name))
                done.append(name)
    except (DaxctlError, PyshimError) as exc:
        failure = exc if isinstance(exc, PyshimError) else OperationFailed(str(exc))
        if done:
            failure.message += f" ({verb} done for {', '.join(done)} before)"
        raise failure from None
    ctx.out(
        render.to_json([_device_state(ctx, name, r) for name, r in zip(done, results, strict=True)])
    )
    ctx.note(f"{verb}: {len(done)} device{'s' if len(done) != 1 else ''}")
    return EXIT_OK


def _online(ctx: Context) -> Action:
    from pyshim import ops

    def online(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        return ops.online(
            sysfs,
            dev,
            ctx.args.movable,
            sysfs.auto_online_blocks(),
            lambda: ops.device_block_states(sysfs, name),
        )

    return online


def cmd_online(ctx: Context) -> int:
    return _for_each_device(ctx, "online", _online(ctx))


def cmd_offline(ctx: Context) -> int:
    from pyshim import ops

    def offline(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        result = ops.offline(sysfs, dev, lambda: ops.device_block_states(sysfs, name))
        if result.get("unplugged"):
            ctx.note(f"{name} is unplugged (daxX.Y/state): no memory added, nothing to offline")
        return result

    return _for_each_device(ctx, "offline", offline, only_kmem=True)


def cmd_reconfigure(ctx: Context) -> int:
    from pyshim import ops

    if ctx.args.mode == "system-ram":
        return _for_each_device(ctx, "reconfigure to system-ram", _online(ctx))

    def to_devdax(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        reonline = f"{ctx.env.prog} online {name}"
        result = ops.to_devdax(sysfs, dev, lambda: ops.device_block_states(sysfs, name), reonline)
        if result.get("already"):
            ctx.note(f"{name} was already in devdax mode")
        return result

    return _for_each_device(ctx, "reconfigure to devdax", to_devdax)


def _device_state(ctx: Context, name: str, result: dict[str, object]) -> dict[str, object]:
    """The device as `show --json` describes it after the change (the operation's own
    result when sysfs cannot be read back), with a one-line summary on stderr."""
    sysfs = ctx.sysfs
    try:
        dev = sysfs.dax_device(name)
        block_size = sysfs.block_size()
        blocks = [
            b
            for i in (sysfs.device_blocks(dev, block_size) if dev.driver == "kmem" else [])
            if (b := sysfs.memory_block(i, zones=True)) is not None
        ]
    except (PyshimError, DeviceVanished):
        return result
    data = render.device_json(dev, blocks, block_size)
    if dev.driver == "kmem":
        ctx.note(
            f"{name}: {data['online_memblocks']} of {data['total_memblocks']} memory blocks "
            f"online, memmap on memory for {data['memmap_on_memory_memblocks']}"
        )
    return data


COMMANDS: dict[str, Callable[[Context], int]] = {
    "set": cmd_set,
    "show": cmd_show,
    "check": cmd_check,
    "online": cmd_online,
    "offline": cmd_offline,
    "reconfigure": cmd_reconfigure,
    "report": cmd_report,
    "metrics": cmd_metrics,
    "plan": cmd_plan,
}


def _parse(prog: str, argv: list[str]) -> argparse.Namespace:
    """Parse with the named command's parser alone when that succeeds, else with all (see
    build_parser). A successful parse by the smaller parser is the whole parser's too: it
    is the same top-level parser with a subset of the same sub-parsers."""
    command = next((word for word in argv if word in PARSERS), None)
    if command is not None:
        try:
            return build_parser(prog, command).parse_args(argv)
        except (SystemExit, UsageError):
            pass
    return build_parser(prog).parse_args(argv)


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        try:
            args = _parse(env.prog, sys.argv[1:] if argv is None else argv)
        except SystemExit as exc:  # --help, --version
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        ctx = Context(args, env)
        code = COMMANDS[args.command](ctx)
        with _output_errors():
            env.stdout.flush()
        return code
    except PyshimError as exc:
        env.stderr.write(f"pyshim: error: {exc.message}\n")
        return exc.exit_code
    except BrokenPipeError:
        if env.stdout is sys.stdout:
            _silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("PYSHIM_DEBUG") == "1":
            raise
        env.stderr.write(
            f"pyshim: internal error: {type(exc).__name__}: {exc} "
            "(rerun with PYSHIM_DEBUG=1 and report it)\n"
        )
        return EXIT_FAILED


@contextlib.contextmanager
def _output_errors() -> Iterator[None]:
    """A closed pipe stays a BrokenPipeError (quiet exit 1); any other failure to write the
    output (closed descriptor, full disk or /dev/full) becomes a one-line failure, exit 1."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OperationFailed(f"cannot write the output: {exc.strerror}") from None


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that the interpreter's flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def console_main() -> None:
    code = main()
    if sys.stdout is not None:  # None when started with stdout closed
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            code = code or EXIT_FAILED
    sys.exit(code)
