#!/usr/bin/env python3
"""Record the files pyshim reads from a live system into a replayable tree.

    python3 tests/record_tree.py TARGET [--root /]

TARGET then works as `python -m pyshim check --sysroot TARGET` and `lsmem --sysroot TARGET`.
Recorded: /sys/devices/system/memory (block_size_bytes, auto_online_blocks, every memoryN's
attributes and node links), /sys/devices/system/node (node masks, nodeK/meminfo, nodeK/memoryN
links), /sys/bus/dax (device links, the devices' attributes, 7.3's daxX.Y/state included, and
mappings, driver directories with their attributes and device links),
/sys/module/{memory_hotplug,kmem} parameters and kmem's initstate, /proc/zoneinfo,
/proc/meminfo, /proc/sys/kernel/osrelease, and /lib/modules/<release>/modules.builtin.

Symlinks are recorded as symlinks with relative targets (sysfs links are relative already;
absolute ones are rewritten relative to TARGET). Files that vanish or cannot be read (EACCES,
EIO, write-only attributes) are skipped and counted, never fatal: the recording runs inside a
VM while devices come and go. Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

MEMORY_FILES = (
    "state",
    "online",
    "phys_index",
    "phys_device",
    "removable",
    "valid_zones",
    "memmap_on_memory",
)
DAX_DEVICE_FILES = (
    "size",
    "target_node",
    "numa_node",
    "align",
    "resource",
    "memmap_on_memory",
    "modalias",
    "dev",
    "state",  # Linux 7.3+, devices bound to kmem
)
MAPPING_FILES = ("start", "end", "page_offset")
DRIVER_FILES = ("memmap_on_memory",)
NODE_MASKS = ("online", "possible", "has_memory", "has_normal_memory", "has_cpu")


class Recorder:
    def __init__(self, root: str, target: str) -> None:
        self.root = os.path.abspath(root)
        self.target = os.path.abspath(target)
        self.files = 0
        self.links = 0
        self.skipped = 0

    def src(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def dst(self, rel: str) -> str:
        return os.path.join(self.target, rel)

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.src(rel)))
        except OSError:
            return []

    def copy_file(self, rel: str) -> bool:
        src = self.src(rel)
        try:
            fd = os.open(src, os.O_RDONLY)
            try:
                chunks = []
                while True:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    chunks.append(data)
            finally:
                os.close(fd)
        except OSError:
            if os.path.lexists(src):
                self.skipped += 1
            return False
        dst = self.dst(rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as handle:
            handle.write(b"".join(chunks))
        self.files += 1
        return True

    def copy_link(self, rel: str) -> str | None:
        """Record the symlink at rel; return the target path relative to the root."""
        try:
            text = os.readlink(self.src(rel))
        except OSError:
            return None
        link_dir = os.path.dirname(rel)
        if os.path.isabs(text):
            target_rel = os.path.normpath(os.path.relpath(text, "/"))
            text = os.path.relpath(target_rel, link_dir or ".")
        else:
            target_rel = os.path.normpath(os.path.join(link_dir, text))
        if target_rel.startswith(".."):
            self.skipped += 1
            return None
        dst = self.dst(rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(text, dst)
        self.links += 1
        return target_rel

    def mkdir(self, rel: str) -> None:
        os.makedirs(self.dst(rel), exist_ok=True)

    # --- the parts ---------------------------------------------------------------------------

    def memory(self) -> None:
        base = "sys/devices/system/memory"
        for name in ("block_size_bytes", "auto_online_blocks"):
            self.copy_file(f"{base}/{name}")
        for entry in self.listdir(base):
            if not re.fullmatch(r"memory[0-9]+", entry):
                continue
            block = f"{base}/{entry}"
            for item in self.listdir(block):
                if item in MEMORY_FILES:
                    self.copy_file(f"{block}/{item}")
                elif re.fullmatch(r"node[0-9]+", item):
                    self.copy_link(f"{block}/{item}")

    def nodes(self) -> None:
        base = "sys/devices/system/node"
        for name in NODE_MASKS:
            self.copy_file(f"{base}/{name}")
        for entry in self.listdir(base):
            if not re.fullmatch(r"node[0-9]+", entry):
                continue
            node = f"{base}/{entry}"
            self.mkdir(node)
            self.copy_file(f"{node}/meminfo")
            for item in self.listdir(node):
                if re.fullmatch(r"memory[0-9]+", item):
                    self.copy_link(f"{node}/{item}")

    def dax(self) -> None:
        base = "sys/bus/dax"
        if not os.path.isdir(self.src(base)):
            return
        self.mkdir(f"{base}/devices")
        for entry in self.listdir(f"{base}/devices"):
            device_rel = self.copy_link(f"{base}/devices/{entry}")
            if device_rel is None:
                continue
            self.mkdir(device_rel)
            for item in self.listdir(device_rel):
                path = f"{device_rel}/{item}"
                if item in DAX_DEVICE_FILES:
                    self.copy_file(path)
                elif item == "driver":
                    self.copy_link(path)
                elif re.fullmatch(r"mapping[0-9]+", item):
                    for name in MAPPING_FILES:
                        self.copy_file(f"{path}/{name}")
        for driver in self.listdir(f"{base}/drivers"):
            drv = f"{base}/drivers/{driver}"
            self.mkdir(drv)
            for item in self.listdir(drv):
                if item in DRIVER_FILES:
                    self.copy_file(f"{drv}/{item}")
                elif re.fullmatch(r"dax[0-9]+\.[0-9]+", item):
                    self.copy_link(f"{drv}/{item}")

    def modules(self) -> None:
        for module in ("memory_hotplug", "kmem"):
            base = f"sys/module/{module}"
            if not os.path.isdir(self.src(base)):
                continue
            self.mkdir(base)
            self.copy_file(f"{base}/initstate")
            for item in self.listdir(f"{base}/parameters"):
                self.copy_file(f"{base}/parameters/{item}")

    def proc(self) -> None:
        for rel in ("proc/zoneinfo", "proc/meminfo", "proc/sys/kernel/osrelease"):
            self.copy_file(rel)
        try:
            with open(self.src("proc/sys/kernel/osrelease")) as handle:
                release = handle.read().strip()
        except OSError:
            return
        if re.fullmatch(r"[A-Za-z0-9._+-]+", release):
            self.copy_file(f"lib/modules/{release}/modules.builtin")

    def record(self) -> None:
        os.makedirs(self.target, exist_ok=True)
        self.memory()
        self.nodes()
        self.dax()
        self.modules()
        self.proc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="directory to write the tree into")
    parser.add_argument("--root", default="/", help="system to record (default /)")
    args = parser.parse_args(argv)
    recorder = Recorder(args.root, args.target)
    try:
        recorder.record()
    except OSError as exc:
        print(f"record_tree: error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print(
        f"record_tree: {recorder.files} files, {recorder.links} symlinks, "
        f"{recorder.skipped} skipped -> {recorder.target}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
