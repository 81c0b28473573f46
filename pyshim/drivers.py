"""Registry of drivers that carry a per-driver memmap_on_memory setting.

A second driver is one more entry here: its sysfs attribute and its module parameter, both
relative to the injected root (kernel.Sysfs), never absolute paths.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pyshim.errors import UsageError


class DriverSpec(NamedTuple):
    name: str  # the name the user types: dax_kmem
    bus: str  # sys/bus/<bus>
    driver: str  # sys/bus/<bus>/drivers/<driver>
    attribute: str  # sys/bus/<bus>/drivers/<driver>/<attribute>
    module: str  # module name for modprobe.d and the kernel command line
    parameter: str  # module parameter: the initial value, and the current one since v3

    @property
    def attribute_path(self) -> str:
        return f"sys/bus/{self.bus}/drivers/{self.driver}/{self.attribute}"

    @property
    def driver_path(self) -> str:
        return f"sys/bus/{self.bus}/drivers/{self.driver}"

    @property
    def parameter_path(self) -> str:
        """The module parameter's file: the same current value as the attribute."""
        return f"sys/module/{self.module}/parameters/{self.parameter}"

    @property
    def cmdline_word(self) -> str:
        return f"{self.module}.{self.parameter}"


DRIVERS: dict[str, DriverSpec] = {
    "dax_kmem": DriverSpec(
        name="dax_kmem",
        bus="dax",
        driver="kmem",
        attribute="memmap_on_memory",
        module="kmem",
        parameter="memmap_on_memory",
    ),
}

_NAME_RE = re.compile(r"[a-z0-9_]{1,64}")
_DEVICE_RE = re.compile(r"dax[0-9]+\.[0-9]+")


def lookup_driver(name: str) -> DriverSpec:
    """The registry entry for `name`; exit 2 naming the known drivers otherwise."""
    known = ", ".join(sorted(DRIVERS))
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid driver name {name!r}: known drivers: {known}")
    spec = DRIVERS.get(name)
    if spec is None:
        raise UsageError(f"unknown driver {name!r}: known drivers: {known}")
    return spec


def validate_device(name: str) -> str:
    """Accept only daxX.Y device names (no path components)."""
    if not _DEVICE_RE.fullmatch(name):
        raise UsageError(f"invalid device name {name!r}: expected daxX.Y, e.g. dax0.0")
    return name
