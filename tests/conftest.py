"""Options shared by the whole test tree (they must be declared at the tests root)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "QEMU VM tests (tests/vm, marker vm)")
    group.addoption(
        "--vm-kernel",
        metavar="BZIMAGE",
        help="patched kernel image (default: $MEMMAP_KMEM_KERNEL, else "
        "the kbuild image <cache>/images/<base>/patched/bzImage)",
    )
    group.addoption(
        "--vm-stock-kernel",
        metavar="BZIMAGE",
        help="stock kernel image of the base (default: $MEMMAP_KMEM_STOCK_KERNEL, else "
        "the kbuild image <cache>/images/<base>/stock/bzImage)",
    )
