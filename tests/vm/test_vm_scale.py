"""The seed's own scale: 256 GiB of dax memory in 2 GiB blocks (vmtest/scale.py).

Two boots of about 2.5 min each under TCG (63 GiB of boot RAM, a 256 GiB sparse-file
nvdimm, 125 blocks onlined): the patched kernel with kmem `on`, and stock 6.12 with nothing
set. Every block's memmap is checked in the page tables, the node shows 2016 of every
2048 MiB with the memmap on memory, and `pyshim plan` for the device's size predicts the
blocks, the memmap and the usable memory the node shows.

Opt-in (MEMMAP_KMEM_VM_SCALE=1, `make vm-test-scale`): the two boots cost about 5 min of
the `make test` budget; bench/scale.py records the same figures for `make bench`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from vmtest import asserts, scale
from vmtest.harness import Harness
from vmtest.runner import VMResult

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("MEMMAP_KMEM_VM_SCALE") != "1",
        reason="MEMMAP_KMEM_VM_SCALE is not 1 (two 2.5-minute boots; make vm-test-scale)",
    ),
]


def scale_boot(vm: Harness, placed: scale.Placed) -> tuple[VMResult, scale.Figures]:
    kernel = "patched" if placed is scale.Placed.MEMORY else "stock"
    result = vm.boot(
        scale.job(placed, sys.executable),
        kernel=kernel,
        timeout=scale.TIMEOUT_S,
        name=f"scale-{placed.value}",
        **scale.SHAPE,
    )
    asserts.booted_ok(result)
    return result, scale.figures(result, placed)


@pytest.mark.parametrize("placed", list(scale.Placed), ids=lambda p: p.value)
def test_scale_256g_in_2g_blocks(
    vm: Harness, figures: Callable[[str, Any], None], placed: scale.Placed
) -> None:
    result, found = scale_boot(vm, placed)
    figures(f"scale_{placed.value}", found.as_dict())
    problems = scale.problems(found)
    assert not problems, "; ".join(problems[:10]) + f"\n{result.describe()}"
    asserts.clean_log(result)
