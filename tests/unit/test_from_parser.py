"""The committed man page and completions are what the parser generates
(scripts/from_parser.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    pytest.importorskip("argparse_manpage")
    pytest.importorskip("shtab")
    spec = importlib.util.spec_from_file_location("from_parser", REPO / "scripts/from_parser.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_page_matches_the_parser() -> None:
    generated = generator().render_manpage().splitlines()
    committed = (REPO / "man" / "pyshim.1").read_text().splitlines()
    # line 1 (.TH) carries the date of generation
    assert generated[1:] == committed[1:], "man/pyshim.1 is stale: make man"
    assert ".SH COMMAND \\fI\\,'pyshim reconfigure'\\/\\fR" in committed


@pytest.mark.parametrize(("shell", "name"), [("bash", "pyshim.bash"), ("zsh", "_pyshim")])
def test_completion_matches_the_parser(shell: str, name: str) -> None:
    committed = (REPO / "completion" / name).read_text()
    assert generator().render_completion(shell) == committed, f"completion/{name} is stale"
    assert "reconfigure" in committed and "--allow-stale" in committed
