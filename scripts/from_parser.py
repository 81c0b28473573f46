#!/usr/bin/env python3
"""Write the man page and the shell completions from pyshim's own argparse parser.

    python scripts/from_parser.py       # rewrite man/pyshim.1 and completion/*
    man -l man/pyshim.1                 # read the page
    source completion/pyshim.bash       # bash completion (zsh: completion/_pyshim in fpath)

argparse-manpage writes the page, shtab the completions. tests/unit/test_from_parser.py
fails when the committed files and the parser drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

from pyshim import __version__
from pyshim.cliparser import build_parser
from pyshim.commands import COMMANDS


def render_manpage() -> str:
    data = {
        "project_name": "pyshim",
        "version": __version__,
        "manual_title": "pyshim manual",
        "manual_section": "1",
    }
    return str(Manpage(build_parser("pyshim", COMMANDS), _data=data))


def render_completion(shell: str) -> str:
    return str(shtab.complete(build_parser("pyshim", COMMANDS), shell=shell))


def outputs(repo: Path) -> dict[Path, str]:
    return {
        repo / "man" / "pyshim.1": render_manpage(),
        repo / "completion" / "pyshim.bash": render_completion("bash"),
        repo / "completion" / "_pyshim": render_completion("zsh"),
    }


def main() -> int:
    for path, text in outputs(Path(__file__).resolve().parents[1]).items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
