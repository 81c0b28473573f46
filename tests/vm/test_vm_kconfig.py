"""The kernel images must be able to report what the VM tests look for.

Without CONFIG_BUG, WARN() prints nothing and BUG() hangs, so "no WARN and no 'Altmap not
fully unmapped' in the log" would pass on a broken kernel. The image's config is read from
`config` next to it (the kbuild cache keeps one there), or `.config` of the tree it was built in.
"""

from __future__ import annotations

import pytest

from vmtest import image
from vmtest.settings import Settings

pytestmark = pytest.mark.vm

REQUIRED = {
    "CONFIG_BUG": "WARN()/BUG() print nothing without it (asserted absent from the log)",
    "CONFIG_MHP_MEMMAP_ON_MEMORY": "memmap on hot-plugged memory",
    "CONFIG_DEV_DAX_KMEM": "kmem",
    "CONFIG_DEV_DAX_HMEM": "soft-reserved memory source",
    "CONFIG_DEV_DAX_PMEM": "legacy pmem source",
    "CONFIG_DEV_DAX_CXL": "CXL RAM region source",
    "CONFIG_CXL_REGION_INVALIDATION_TEST": "CXL region commit in a VM",
}
PATCHED_ONLY = {"CONFIG_KUNIT": "scenario 9 KUnit", "CONFIG_DAX_KMEM_MEMMAP_KUNIT_TEST": "suite"}


@pytest.mark.parametrize("which", ["patched", "stock"])
def test_image_config_can_report(which: str, pytestconfig: pytest.Config) -> None:
    settings = Settings.from_env(
        kernel=pytestconfig.getoption("--vm-kernel", None),
        stock_kernel=pytestconfig.getoption("--vm-stock-kernel", None),
    )
    kernel = settings.kernel if which == "patched" else settings.stock_kernel
    config = image.config(kernel)
    if config is None:
        pytest.skip(f"no config next to {kernel}")
    wanted = dict(REQUIRED, **(PATCHED_ONLY if which == "patched" else {}))
    missing = [f"{name}=y  # {why}" for name, why in wanted.items() if config.get(name) != "y"]
    assert not missing, f"{which} kernel {kernel} lacks:\n" + "\n".join(missing)
