"""python -m pyshim: set the per-driver memmap_on_memory, online dax memory, prove placement.

Exit codes: 0 ok, 1 the check or operation failed (also: output that cannot be written), 2
usage, 3 the kernel or machine lacks a prerequisite (including not being root; for `check
--witness` also: nothing to witness), 4 `check` found stale blocks only. Errors are one line
on stderr naming the fix, control characters escaped; no traceback reaches the user
(PYSHIM_DEBUG=1 shows one for internal errors). Output to a closed pipe is dropped quietly
(exit 1); output that cannot be written for any other reason (a full disk, /dev/full, EIO)
is a one-line error, whichever path flushes it.
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
from typing import IO, TYPE_CHECKING, Any

from pyshim import logic, parse, render
from pyshim.cliparser import parse_command_line
from pyshim.daxctl_commands import cmd_offline, cmd_online, cmd_reconfigure
from pyshim.drivers import DRIVERS, DriverSpec, lookup_driver, validate_device
from pyshim.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STALE,
    MissingPrerequisite,
    OperationFailed,
    PyshimError,
    UsageError,
)
from pyshim.kernel import (
    MAX_BLOCK_SIZE,
    MAX_PHYSICAL,
    MIN_BLOCK_SIZE,
    PATCHED_KERNEL,
    KernelWriteError,
    Sysfs,
)
from pyshim.userfiles import check_output_path, check_sysroot, write_atomic

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
        say(self.env.stderr, f"pyshim: {text}")

    def require_root(self, why: str) -> None:
        if self.sysfs.is_live and self.env.euid() != 0:
            raise MissingPrerequisite(f"{why} needs root: run as root")

    def refused(self, path: str, err: int) -> PyshimError:
        """EACCES or EPERM writing path: "run as root" only when we are not root on the live
        machine; as root it is the file itself (immutable, read-only mount, a security
        module), which running as root again would not change."""
        if self.sysfs.is_live and self.env.euid() != 0:
            return MissingPrerequisite(f"cannot write {path}: run as root")
        why = "immutable? see lsattr" if err == errno.EPERM else "check its permissions"
        return OperationFailed(f"cannot write {path}: {os.strerror(err)} ({why})")


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
            f"{logic.reonline_command(ctx.env.prog, name)}"
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
    if capacity > MAX_PHYSICAL:
        raise UsageError(
            f"capacity {args.capacity} is more than x86-64 can address "
            f"({parse.format_size(MAX_PHYSICAL)})"
        )
    if block_size is None:
        block_size = ctx.sysfs.block_size()
    elif block_size & (block_size - 1):
        raise UsageError(f"block size {args.block_size} is not a power of two")
    elif not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise UsageError(
            f"block size {args.block_size} is outside the {parse.format_size(MIN_BLOCK_SIZE)} "
            f"to {parse.format_size(MAX_BLOCK_SIZE)} any kernel uses"
        )
    force = ctx.sysfs.global_mode() is parse.GlobalMode.FORCE
    result = logic.plan(capacity, block_size, force)
    ctx.out(render.to_json(result) if args.json else render.plan_text(result))
    return EXIT_OK


def cmd_metrics(ctx: Context) -> int:
    directory = ctx.args.textfile
    if not directory:
        raise UsageError("--textfile is empty: give node_exporter's textfile directory")
    if not os.path.isdir(directory):
        raise UsageError(f"textfile directory {directory} does not exist")
    path = check_output_path(os.path.join(directory, "pyshim.prom"))
    snap, result = _checked_snapshot(ctx)
    try:
        render.write_metrics(path, snap, result, time.time())
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror}") from None
    ctx.note(f"wrote {path}")
    return EXIT_OK


def cmd_report(ctx: Context) -> int:
    if not ctx.args.html:
        raise UsageError("--html is empty: give the HTML file to write, e.g. /tmp/memmap.html")
    target = check_output_path(ctx.args.html)
    snap, result = _checked_snapshot(ctx)
    try:
        write_atomic(target, render.report_html(snap, result))
    except OSError as exc:
        raise OperationFailed(f"cannot write {target}: {exc.strerror}") from None
    ctx.note(f"wrote {target}")
    return EXIT_OK


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


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        parsed = parse_command_line(env.prog, sys.argv[1:] if argv is None else argv)
        if parsed.args is None:  # --help, --version: argparse's text, written as any output
            with _output_errors():
                env.stdout.write(parsed.printed)
                env.stdout.flush()
            return parsed.code
        ctx = Context(parsed.args, env)
        code = COMMANDS[parsed.args.command](ctx)
        with _output_errors():
            env.stdout.flush()
        return code
    except PyshimError as exc:
        say(env.stderr, f"pyshim: error: {exc.message}")
        return exc.exit_code
    except BrokenPipeError:
        if env.stdout is sys.stdout:
            _silence(sys.stdout)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("PYSHIM_DEBUG") == "1":
            raise
        say(
            env.stderr,
            f"pyshim: internal error: {type(exc).__name__}: {exc} "
            "(rerun with PYSHIM_DEBUG=1 and report it)",
        )
        return EXIT_FAILED


def one_line(text: str) -> str:
    """text with control characters escaped (a newline in a path must not split a message)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def say(stream: IO[str], text: str) -> None:
    """One line on stderr. When stderr itself cannot be written there is nowhere left to say
    anything: the line is dropped, and the stream silenced so that the interpreter's last
    flush does not fail on it (exit 120 and a traceback)."""
    try:
        stream.write(one_line(text) + "\n")
        stream.flush()
    except OSError:
        _silence(stream)


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


def _silence(stream: IO[str] | io.TextIOBase) -> None:
    """Point a standard stream's descriptor at /dev/null, so that what is still buffered for
    it goes nowhere quietly (after EPIPE, ENOSPC or EIO); a no-op for in-memory streams."""
    try:
        fileno = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fileno)
        os.close(devnull)
    except (OSError, ValueError):
        pass


def console_main() -> None:
    code = main()
    stdout = sys.stdout
    if stdout is not None:  # None when started with stdout closed
        try:
            stdout.flush()
        except OSError as exc:
            # main() reported its own failure to write; this is output it thought written.
            if code == EXIT_OK and not isinstance(exc, BrokenPipeError):
                say(sys.stderr, f"pyshim: error: cannot write the output: {exc.strerror}")
            _silence(stdout)
            code = code or EXIT_FAILED
    sys.exit(code)
