"""Record sysfs/procfs trees from the VM for the unit tests (tests/unit/recorded/).

    .venv/bin/python tests/vm/record.py [--out tests/unit/recorded]

Each recording is one boot: set up a device, online it through the shim, then run
tests/record_tree.py in the guest into the writable share. The unit tests replay the trees
with `pyshim --sysroot`, so what they check is what a real patched (or stock) 6.12.117
kernel shows, not what we believe it shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from vmtest import steps as s
from vmtest.machine import Source, VMSpec, repo_root
from vmtest.runner import run
from vmtest.settings import Settings

GUEST_SHARE = "/run/vmtest"


def recordings() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """name -> (kernel, setup steps before the recording)."""
    return {
        "vm_patched_kmem_on": (
            "patched",
            [
                s.shim("set", "set", "--driver", "dax_kmem", "on"),
                s.pmem_devdax(),
                s.online(method="shim"),
            ],
        ),
        "vm_patched_nothing_set": ("patched", [s.pmem_devdax(), s.online(method="shim")]),
        "vm_patched_devdax": ("patched", [s.pmem_devdax()]),
        "vm_stock": ("stock", [s.pmem_devdax(), s.online(method="daxctl")]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=repo_root() / "tests/unit/recorded")
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    recorder = repo_root() / "tests/record_tree.py"
    for name, (kernel, setup) in recordings().items():
        image = settings.kernel if kernel == "patched" else settings.stock_kernel
        print(f"record: {name} ({kernel} kernel)", flush=True)
        target = f"{GUEST_SHARE}/trees/{name}"
        result = run(
            VMSpec(kernel=image, source=Source.PMEM),
            [*setup, s.run("record", sys.executable, str(recorder), target)],
        )
        out = result.step("record")
        if result.exit_status != 0 or out.get("rc") != 0:
            print(f"record: {name} failed, serial log {result.serial_log}", file=sys.stderr)
            return 1
        dest = args.out / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(result.workdir / "share/trees" / name, dest, symlinks=True)
        print(f"record: {name} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
