"""The committed man page is the one the parser generates (scripts/manpage.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_man_page_matches_the_parser() -> None:
    pytest.importorskip("argparse_manpage")
    spec = importlib.util.spec_from_file_location("manpage", REPO / "scripts" / "manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.render().splitlines()
    committed = (REPO / "man" / "pyshim.1").read_text().splitlines()
    # line 1 (.TH) carries the date of generation
    assert generated[1:] == committed[1:], "man/pyshim.1 is stale: python scripts/manpage.py"
    assert ".SH COMMAND \\fI\\,'pyshim reconfigure'\\/\\fR" in committed
