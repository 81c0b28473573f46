#!/usr/bin/env python3
"""Write man/pyshim.1 from pyshim's own argparse parser (argparse-manpage).

    python scripts/manpage.py           # rewrite man/pyshim.1
    man -l man/pyshim.1                 # read it

tests/unit/test_manpage.py fails when the committed page and the parser drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage

from pyshim import __version__
from pyshim.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def render() -> str:
    data = {
        "project_name": "pyshim",
        "version": __version__,
        "manual_title": "pyshim manual",
        "manual_section": "1",
    }
    return str(Manpage(build_parser("pyshim"), _data=data))


def main() -> int:
    target = REPO / "man" / "pyshim.1"
    target.parent.mkdir(exist_ok=True)
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
