"""pyshim's command line: argparse built from the table of sub-commands, and parsing
without printing.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from pyshim import __version__
from pyshim.errors import UsageError

if TYPE_CHECKING:
    from pyshim.context import Context


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


class Arg:
    """One add_argument() call: its flags (or name) and keyword options."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


class OneOf:
    """Arguments that exclude each other (a mutually exclusive group)."""

    def __init__(self, *args: Arg) -> None:
        self.args = args


class Command(NamedTuple):
    """One sub-command: commands.py holds the table of them."""

    name: str
    run: Callable[[Context], int]
    help: str
    description: str  # "{prog}" stands for how the user started pyshim
    args: tuple[Arg | OneOf, ...]


def _add_command(sub: Subparsers, common: _Parser, prog: str, command: Command) -> None:
    p = sub.add_parser(
        command.name,
        parents=[common],
        help=command.help,
        description=command.description.replace("{prog}", prog),
    )
    for item in command.args:
        if isinstance(item, OneOf):
            group = p.add_mutually_exclusive_group()
            for arg in item.args:
                group.add_argument(*arg.flags, **arg.options)
        else:
            p.add_argument(*item.flags, **item.options)


def build_parser(
    prog: str, commands: Sequence[Command], command: str | None = None
) -> argparse.ArgumentParser:
    """The command line parser of `commands`; with `command`, only that command's sub-parser.

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

    for entry in commands:
        if command in (None, entry.name):
            _add_command(sub, common, prog, entry)
    return parser


class ParsedOrPrinted:
    """A parsed command line, or what argparse printed and the code it exits with (--help,
    --version): the caller writes `printed` to its own stdout."""

    def __init__(self, args: argparse.Namespace | None, printed: str = "", code: int = 0):
        self.args = args
        self.printed = printed
        self.code = code


def parse_command_line(prog: str, commands: Sequence[Command], argv: list[str]) -> ParsedOrPrinted:
    """Parse with the named command's parser alone when that succeeds, else with all (see
    build_parser). A successful parse by the smaller parser is the whole parser's too: it
    is the same top-level parser with a subset of the same sub-parsers. Whatever the smaller
    parser printed on its way to giving up is dropped: the whole parser says it again, once."""
    names = {entry.name for entry in commands}
    command = next((word for word in argv if word in names), None)
    if command is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                return ParsedOrPrinted(build_parser(prog, commands, command).parse_args(argv))
            except (SystemExit, UsageError):
                pass
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            return ParsedOrPrinted(build_parser(prog, commands).parse_args(argv))
        except SystemExit as exc:  # --help, --version
            code = exc.code if isinstance(exc.code, int) else 2
            return ParsedOrPrinted(None, printed.getvalue(), code)
