"""Helpers shared by the unit tests: the committed trees, a CLI runner, golden files.

Set PYSHIM_REGEN_GOLDEN=1 to rewrite tests/unit/golden/* from the current output.
(A module of its own, not conftest.py: tests/conftest.py exists too, and `import conftest`
would be ambiguous.)
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyshim.cli import Environment, main

HERE = Path(__file__).parent
TREES = HERE / "trees"
GOLDEN = HERE / "golden"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(argv: list[str], euid: int = 0, library: Callable[[bool], Any] | None = None) -> Result:
    """main(argv) as root (or euid), with its output caught; library: a stand-in for
    libdaxctl (called with the verbose flag), for online, offline and reconfigure."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, euid=lambda: euid, prog="pyshim")
    if library is not None:
        env.library = library
    code = main(argv, env)
    return Result(code, out.getvalue(), err.getvalue())


def tree_path(name: str) -> Path:
    path = TREES / name
    assert path.is_dir(), f"missing tree {name}: run python tests/unit/treebuilder.py"
    return path


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PYSHIM_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden file {path}: rerun with PYSHIM_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"output differs from {path} (PYSHIM_REGEN_GOLDEN=1 updates)"
