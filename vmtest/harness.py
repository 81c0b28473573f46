"""One test's boots: kernel lookup with the skip/fail switch, and a record of each boot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .machine import Accel, Source, VMSpec, VMUnavailable
from .runner import VMResult, run
from .settings import Mode, Settings


def unavailable(settings: Settings, reason: str) -> None:
    """Skip, or fail when MEMMAP_KMEM_VM=1 says the VM must run."""
    if settings.mode is Mode.REQUIRED:
        pytest.fail(f"MEMMAP_KMEM_VM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class Harness:
    """Boots for one test; every boot is kept for the failure artifacts."""

    def __init__(
        self,
        settings: Settings,
        accel: Accel,
        workdir: Path,
        boots: list[tuple[str, VMResult]],
        timings: list[tuple[str, str, float]],
        nodeid: str,
    ) -> None:
        self.settings = settings
        self.accel = accel
        self.workdir = workdir
        self.boots = boots
        self.timings = timings
        self.nodeid = nodeid

    def kernel(self, which: str) -> Path:
        """ "patched", "stock" or "modular" (patched, kmem a module, debug options)."""
        path = {
            "patched": self.settings.kernel,
            "stock": self.settings.stock_kernel,
            "modular": self.settings.modular_kernel,
        }[which]
        reason = self.settings.missing(path)
        if reason:
            unavailable(self.settings, f"{which} kernel: {reason}")
        return path

    def boot(
        self,
        steps: Sequence[Mapping[str, Any]],
        *,
        kernel: str = "patched",
        source: Source = Source.NONE,
        append: Sequence[str] = (),
        timeout: float = 180.0,
        name: str | None = None,
        **spec: Any,
    ) -> VMResult:
        name = name or f"boot{len(self.boots)}"
        vmspec = VMSpec(
            kernel=self.kernel(kernel),
            source=source,
            append=tuple(append),
            accel=self.accel,
            timeout=timeout * self.settings.timeout_scale,
            qemu=self.settings.qemu,
            **spec,
        )
        try:
            result = run(vmspec, steps, self.workdir / name)
        except VMUnavailable as exc:
            unavailable(self.settings, str(exc))
            raise
        self.boots.append((name, result))
        self.timings.append((self.nodeid, name, result.seconds))
        return result
