"""pyshim's command line: the parser of every sub-command, and parsing without printing.

argparse prints help and --version itself; here that output is caught, so that the CLI
writes it like any other output (one-line error when stdout cannot take it) and so that a
fast parse that gives up never leaves a first copy of the help behind.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from pyshim import __version__
from pyshim.drivers import DRIVERS
from pyshim.errors import UsageError


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
        help="global, on or off (exactly these words); default on",
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
        "exit 3 when there is nothing to witness; works on stock kernels too",
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
        "3 missing prerequisite (check --witness: nothing to witness), 4 check found stale "
        "blocks (see --allow-stale)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    for name, add in PARSERS.items():
        if command in (None, name):
            add(sub, common, prog)
    return parser


class ParsedOrPrinted:
    """A parsed command line, or what argparse printed and the code it exits with (--help,
    --version): the caller writes `printed` to its own stdout."""

    def __init__(self, args: argparse.Namespace | None, printed: str = "", code: int = 0):
        self.args = args
        self.printed = printed
        self.code = code


def parse_command_line(prog: str, argv: list[str]) -> ParsedOrPrinted:
    """Parse with the named command's parser alone when that succeeds, else with all (see
    build_parser). A successful parse by the smaller parser is the whole parser's too: it
    is the same top-level parser with a subset of the same sub-parsers. Whatever the smaller
    parser printed on its way to giving up is dropped: the whole parser says it again, once."""
    command = next((word for word in argv if word in PARSERS), None)
    if command is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                return ParsedOrPrinted(build_parser(prog, command).parse_args(argv))
            except (SystemExit, UsageError):
                pass
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            return ParsedOrPrinted(build_parser(prog).parse_args(argv))
        except SystemExit as exc:  # --help, --version
            code = exc.code if isinstance(exc.code, int) else 2
            return ParsedOrPrinted(None, printed.getvalue(), code)
