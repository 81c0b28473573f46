"""main() parses a command line with the named command's sub-parser alone (start-up time);
the result must be the whole parser's, for every command line, down to what it prints."""

from __future__ import annotations

import argparse
import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from pyshim import cliparser
from pyshim.commands import COMMANDS
from pyshim.errors import UsageError

WORDS = [*(c.name for c in COMMANDS), "--json", "--sysroot", "/tmp", "-v", "--verbose",
         "--persist", "on", "off", "global", "dax0.0", "all", "--mode", "devdax", "system-ram",
         "--no-movable",
         "--capacity", "1T", "--block-size", "--html", "--textfile", "--witness",
         "--allow-stale", "--driver", "dax_kmem", "-h", "--version", "--", "x"]  # fmt: skip


def whole(argv: list[str]) -> tuple[object, ...]:
    """The namespace the whole parser returns, or how it ended: exit code and what it
    printed (help, version), or the usage message."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return ("args", vars(cliparser.build_parser("pyshim", COMMANDS).parse_args(argv)))
    except SystemExit as exc:
        return ("exit", exc.code, printed.getvalue())
    except UsageError as exc:
        return ("usage", exc.message)


def fast(argv: list[str]) -> tuple[object, ...]:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            parsed = cliparser.parse_command_line("pyshim", COMMANDS, argv)
    except UsageError as exc:
        return ("usage", exc.message)
    assert printed.getvalue() == "", "parse_command_line printed on its own"
    if parsed.args is None:
        return ("exit", parsed.code, parsed.printed)
    return ("args", vars(parsed.args))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=6))
def test_fast_parse_is_the_whole_parsers(argv: list[str]) -> None:
    assert fast(argv) == whole(argv)


def test_a_command_word_as_an_option_value() -> None:
    """--sysroot check show: the command is show, although check comes first."""
    argv = ["--sysroot", "check", "show", "--json"]
    assert fast(argv) == whole(argv)
    parsed = cliparser.parse_command_line("pyshim", COMMANDS, argv)
    assert parsed.args is not None and parsed.args.command == "show"


def test_only_the_named_command_is_built() -> None:
    parser = cliparser.build_parser("pyshim", COMMANDS, "check")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == ["check"]
    whole = cliparser.build_parser("pyshim", COMMANDS)
    every = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    assert list(every.choices) == [c.name for c in COMMANDS]


def test_every_help_is_printed_once() -> None:
    """`check -h` used to print the help twice: once from the command's own parser, again
    from the whole parser it fell back to."""
    for argv in [["-h"], ["--version"]] + [[name, "-h"] for name in (c.name for c in COMMANDS)]:
        parsed = cliparser.parse_command_line("pyshim", COMMANDS, argv)
        assert parsed.args is None and parsed.code == 0
        assert parsed.printed.count("usage:") == (0 if argv == ["--version"] else 1), argv
        assert parsed.printed == whole(argv)[2]
