"""Which kernels, which QEMU, and what to do when something is missing.

The three-way switch MEMMAP_KMEM_VM (after drgn's tests/linux_kernel):
- unset: run the VM tests when QEMU and the kernel image are there, skip them otherwise;
- 1: a missing prerequisite is a test failure (CI sets this);
- 0: skip every VM test.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import image
from .machine import Accel


class Mode(enum.Enum):
    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


@dataclass(frozen=True)
class Settings:
    mode: Mode
    base: str  # the kernel base (kbuild --base) whose images and scenarios these are
    kernel: Path
    stock_kernel: Path
    modular_kernel: Path  # kmem as a module: the debug variant (make kernel-debug)
    qemu: str
    accel: str  # "auto", "tcg" or "kvm"
    kselftest: Path | None
    timeout_scale: float

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        kernel: str | None = None,
        stock_kernel: str | None = None,
    ) -> Settings:
        """Options given to pytest win over the environment, which wins over defaults."""
        env = os.environ if env is None else env
        switch = env.get("MEMMAP_KMEM_VM", "").strip()
        mode = {"": Mode.AUTO, "1": Mode.REQUIRED, "0": Mode.OFF}.get(switch)
        if mode is None:
            raise ValueError(f"MEMMAP_KMEM_VM must be unset, 0 or 1, not {switch!r}")
        kselftest = env.get("MEMMAP_KMEM_KSELFTEST")
        return cls(
            mode=mode,
            base=image.base_of(env),
            kernel=Path(
                kernel or env.get("MEMMAP_KMEM_KERNEL") or image.default_image("patched", env)
            ),
            stock_kernel=Path(
                stock_kernel
                or env.get("MEMMAP_KMEM_STOCK_KERNEL")
                or image.default_image("stock", env)
            ),
            modular_kernel=Path(
                env.get("MEMMAP_KMEM_MODULAR_KERNEL") or image.default_image("debug", env)
            ),
            qemu=env.get("MEMMAP_KMEM_QEMU", "qemu-system-x86_64"),
            accel=env.get("MEMMAP_KMEM_VM_ACCEL", "auto"),
            kselftest=Path(kselftest) if kselftest else None,
            timeout_scale=float(env.get("MEMMAP_KMEM_VM_TIMEOUT_SCALE", "1")),
        )

    def missing(self, kernel: Path) -> str | None:
        """Why a boot of kernel cannot happen here, or None."""
        if shutil.which(self.qemu) is None:
            return f"{self.qemu} not found (apt-get install qemu-system-x86)"
        if not kernel.is_file():
            return f"kernel image {kernel} not found (build it: make kernel, or set the path)"
        return None

    def fixed_accel(self) -> Accel | None:
        return None if self.accel == "auto" else Accel(self.accel)


def bootable(prog: str, kernel: str | None = None) -> Settings | None:
    """Settings whose patched image can boot here (kernel: another image); else None, after
    one line on stderr that says why (a benchmark then exits 3)."""
    settings = Settings.from_env(kernel=kernel)
    missing = settings.missing(settings.kernel)
    if missing:
        print(f"{prog}: {missing}", file=sys.stderr)
        return None
    return settings
