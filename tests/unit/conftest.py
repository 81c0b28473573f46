"""Fixtures for the unit tests (helpers live in unit_helpers.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_helpers import Result, run_cli, tree_path


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of a committed tree (symlinks kept as symlinks)."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(tree_path(name), dst, symlinks=True)
        return dst

    return copy
