"""main() parses a command line with the named command's sub-parser alone (start-up time);
the result must be the whole parser's, for every command line."""

from __future__ import annotations

import argparse

from hypothesis import given, settings
from hypothesis import strategies as st

from pyshim import cli
from pyshim.errors import UsageError

WORDS = [*cli.PARSERS, "--json", "--sysroot", "/tmp", "-v", "--verbose", "--persist", "on",
         "off", "global", "dax0.0", "all", "--mode", "devdax", "system-ram", "--no-movable",
         "--capacity", "1T", "--block-size", "--html", "--textfile", "--witness",
         "--allow-stale", "--driver", "dax_kmem", "-h", "--version", "--", "x"]  # fmt: skip


def outcome(parse: object) -> tuple[str, object]:
    """The namespace a parse returns, or how it ended (exit code, or the usage message)."""
    try:
        return ("args", vars(parse()))  # type: ignore[operator]
    except SystemExit as exc:
        return ("exit", exc.code)
    except UsageError as exc:
        return ("usage", exc.message)


def whole(argv: list[str]) -> tuple[str, object]:
    return outcome(lambda: cli.build_parser("pyshim").parse_args(argv))


def fast(argv: list[str]) -> tuple[str, object]:
    return outcome(lambda: cli._parse("pyshim", argv))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=6))
def test_fast_parse_is_the_whole_parsers(argv: list[str]) -> None:
    assert fast(argv) == whole(argv)


def test_a_command_word_as_an_option_value() -> None:
    """--sysroot check show: the command is show, although check comes first."""
    argv = ["--sysroot", "check", "show", "--json"]
    assert fast(argv) == whole(argv)
    assert vars(cli._parse("pyshim", argv))["command"] == "show"


def test_only_the_named_command_is_built() -> None:
    parser = cli.build_parser("pyshim", "check")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == ["check"]
    assert list(next(
        a for a in cli.build_parser("pyshim")._actions if isinstance(a, argparse._SubParsersAction)
    ).choices) == list(cli.PARSERS)  # fmt: skip
