"""bench/p2_phases.py's statistics: the confidence interval of the median it reports beside
the IQR (distribution-free, from order statistics)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def p2_phases() -> ModuleType:
    spec = importlib.util.spec_from_file_location("p2_phases", REPO / "bench" / "p2_phases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("n", "k"), [(16, 4), (48, 17), (64, 24)])
def test_median_ci_takes_the_tabulated_order_statistics(n: int, k: int) -> None:
    """Tables of the sign test: 95 % for the median is x(4)..x(13) at n=16, x(17)..x(32)
    at n=48, x(24)..x(41) at n=64."""
    values = [float(i) for i in range(1, n + 1)][::-1]  # x(i) == i, given unsorted
    assert p2_phases().median_ci(values) == (float(k), float(n + 1 - k))


@pytest.mark.parametrize("n", [6, 16, 17, 64, 200])
def test_median_ci_covers_at_least_the_level(n: int) -> None:
    lo, hi = p2_phases().median_ci([float(i) for i in range(1, n + 1)])
    k = int(lo)
    assert hi == n + 1 - k
    outside = 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
    assert outside <= 0.05 < 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def test_median_ci_of_few_values_is_their_range() -> None:
    assert p2_phases().median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
