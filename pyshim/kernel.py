"""Every read and write of the kernel's files (sysfs, procfs, modprobe.d), under one root.

`Sysfs(root)` is the only object that knows where files are; every path is relative to the
root given with --sysroot (default "/"), the way util-linux lsmem --sysroot works, so the same
code reads a live machine and a recorded tree. Writes refuse any path that resolves outside
the root.

Reads use os.open/os.read on plain strings: `check` reads two files for each of up to tens of
thousands of memory blocks, and pathlib costs several times more per file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyshim import parse
from pyshim.drivers import DriverSpec
from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.logic import (
    DaxDevice,
    MemoryBlock,
    NodeAccounting,
    Settings,
    Snapshot,
)

MEMORY = "sys/devices/system/memory"
NODES = "sys/devices/system/node"
DAX_DEVICES = "sys/bus/dax/devices"
GLOBAL_PARAM = "sys/module/memory_hotplug/parameters/memmap_on_memory"

if TYPE_CHECKING:
    from pathlib import Path

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO)
_NODE_RE = re.compile(r"node([0-9]+)")
_MEMORY_RE = re.compile(r"memory([0-9]+)")
_MAPPING_RE = re.compile(r"mapping[0-9]+")
_CXL_DAX_REGION_RE = re.compile(r"dax_region[0-9]+")


class DeviceVanished(Exception):
    """A dax device listed in sysfs lost its files while we read it (unbound or destroyed)."""


class KernelWriteError(OperationFailed):
    """A write the kernel refused; carries errno and the path."""

    def __init__(self, message: str, err: int, path: str) -> None:
        super().__init__(message)
        self.errno = err
        self.path = path


class Sysfs:
    """The machine as seen from one root directory."""

    def __init__(self, root: Path | str = "/") -> None:
        self.root = os.path.abspath(os.fspath(root))

    @property
    def is_live(self) -> bool:
        return self.root == "/"

    def path(self, rel: str) -> str:
        """Absolute path of `rel` (relative, built only from validated names) under root."""
        return os.path.join(self.root, rel)

    # --- low-level reads ---------------------------------------------------------------------

    def read(self, rel: str) -> str | None:
        """Text of a sysfs attribute, or None when it does not exist (or vanished)."""
        return _read_text(os.path.join(self.root, rel))

    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.root, rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(os.path.join(self.root, rel))
        except OSError:
            return []

    def readlink(self, rel: str) -> str | None:
        try:
            return os.readlink(os.path.join(self.root, rel))
        except OSError:
            return None

    # --- writes ------------------------------------------------------------------------------

    def _checked(self, rel: str) -> str:
        """The absolute path for a write, refusing anything that resolves outside the root."""
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise ValueError(f"refusing to write outside the root: {rel}")
        path = os.path.join(self.root, rel)
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        if root != "/" and not real.startswith(root + os.sep):
            raise ValueError(f"refusing to write outside {self.root}: {path} -> {real}")
        return path

    def write_attr(self, rel: str, value: str) -> None:
        """Write an existing sysfs attribute (never creates a file); KernelWriteError on errno."""
        path = self._checked(rel)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except OSError as exc:
            raise KernelWriteError(
                f"cannot open {path}: {exc.strerror}", exc.errno or 0, path
            ) from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise KernelWriteError(f"{path}: {exc.strerror}", exc.errno or 0, path) from None
        finally:
            os.close(fd)

    def write_file_atomic(self, rel: str, content: str, mode: int = 0o644) -> str:
        """Write a configuration file atomically (tempfile in the same directory + rename)."""
        path = self._checked(rel)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        return write_atomic(path, content, mode)

    # --- settings ----------------------------------------------------------------------------

    def block_size(self) -> int:
        text = self.read(f"{MEMORY}/block_size_bytes")
        if text is None:
            raise MissingPrerequisite(
                f"no {self.path(MEMORY)}/block_size_bytes: this kernel lacks memory hotplug "
                "(CONFIG_MEMORY_HOTPLUG); build and boot the patched kernel (make kernel)"
            )
        try:
            return parse.parse_block_size(text)
        except ValueError as exc:
            raise OperationFailed(f"{self.path(MEMORY)}/block_size_bytes: {exc}") from None

    def global_mode(self) -> parse.GlobalMode | None:
        text = self.read(GLOBAL_PARAM)
        if text is None:
            return None
        try:
            return parse.parse_global_mode(text)
        except ValueError as exc:
            raise OperationFailed(f"{self.path(GLOBAL_PARAM)}: {exc}") from None

    def driver_setting(self, spec: DriverSpec) -> parse.KmemSetting | None:
        text = self.read(spec.attribute_path)
        if text is None:
            return None
        try:
            return parse.parse_kmem_setting(text)
        except ValueError as exc:
            raise OperationFailed(f"{self.path(spec.attribute_path)}: {exc}") from None

    def require_driver_setting(self, spec: DriverSpec) -> parse.KmemSetting:
        """The per-driver setting, or exit 3 saying what the machine lacks."""
        if not self.exists(f"sys/bus/{spec.bus}"):
            raise MissingPrerequisite(
                f"no {self.path('sys/bus/' + spec.bus)}: this kernel lacks the {spec.bus} bus "
                "(CONFIG_DEV_DAX); build and boot the patched kernel (make kernel)"
            )
        if not self.exists(spec.driver_path):
            raise MissingPrerequisite(
                f"the {spec.driver} driver is not loaded (no {self.path(spec.driver_path)}): "
                f"modprobe {spec.module}"
            )
        value = self.driver_setting(spec)
        if value is None:
            raise MissingPrerequisite(
                f"this kernel lacks {self.path(spec.attribute_path)} (the per-driver setting): "
                "build and boot the patched kernel (make kernel)"
            )
        return value

    def module_kind(self, module: str) -> str:
        """'module', 'builtin' or 'not-loaded'.

        Rule (sysfs only, so it works under --sysroot): /sys/module/M/initstate exists only
        for loadable modules; a built-in with parameters (the patched kmem has one) has
        /sys/module/M without initstate; no /sys/module/M at all means a module not loaded.
        """
        if self.exists(f"sys/module/{module}/initstate"):
            return "module"
        if self.exists(f"sys/module/{module}"):
            return "builtin"
        return "not-loaded"

    def osrelease(self) -> str | None:
        text = self.read("proc/sys/kernel/osrelease")
        return text.strip() if text else None

    def auto_online_blocks(self) -> str | None:
        text = self.read(f"{MEMORY}/auto_online_blocks")
        return text.strip() if text else None

    def settings(self, spec: DriverSpec) -> Settings:
        return Settings(
            block_size=self.block_size(),
            kmem=self.driver_setting(spec),
            global_mode=self.global_mode(),
            hotplug_memmap_config=self.exists(GLOBAL_PARAM),
        )

    # --- devices and blocks ------------------------------------------------------------------

    def dax_device_names(self) -> list[str]:
        names = [n for n in self.listdir(DAX_DEVICES) if re.fullmatch(r"dax[0-9]+\.[0-9]+", n)]
        return sorted(names, key=_dax_sort_key)

    def region_kind(self, name: str) -> str:
        """cxl, hmem, pmem or unknown, from where the device sits in the device tree."""
        link = self.readlink(f"{DAX_DEVICES}/{name}") or ""
        parts = link.split("/")
        if any(_CXL_DAX_REGION_RE.fullmatch(p) for p in parts):
            return "cxl"
        if any(p.startswith("hmem") for p in parts):
            return "hmem"
        if any(p.startswith(("ndbus", "pmem", "namespace")) for p in parts):
            return "pmem"
        return "unknown"

    def dax_device(self, name: str) -> DaxDevice:
        base = f"{DAX_DEVICES}/{name}"
        size_text = self.read(f"{base}/size")
        node_text = self.read(f"{base}/target_node")
        if size_text is None or node_text is None:
            raise DeviceVanished(name)
        size = parse.parse_int(size_text)
        ranges: list[tuple[int, int]] = []
        for entry in sorted(self.listdir(base)):
            if not _MAPPING_RE.fullmatch(entry):
                continue
            start_text = self.read(f"{base}/{entry}/start")
            end_text = self.read(f"{base}/{entry}/end")
            if start_text is None or end_text is None:
                continue
            ranges.append((parse.parse_hex(start_text), parse.parse_hex(end_text) + 1))
        if not ranges:
            resource = self.read(f"{base}/resource")
            if resource is None:
                raise DeviceVanished(name)
            start = parse.parse_hex(resource)
            ranges.append((start, start + size))
        driver_link = self.readlink(f"{base}/driver")
        align = self.read(f"{base}/align")
        mom = self.read(f"{base}/memmap_on_memory")
        return DaxDevice(
            name=name,
            driver=os.path.basename(driver_link) if driver_link else None,
            target_node=parse.parse_int(node_text),
            size=size,
            ranges=tuple(ranges),
            align=parse.parse_int(align) if align is not None else None,
            memmap_on_memory=parse.parse_bit(mom) if mom is not None else None,
            region=self.region_kind(name),
        )

    def memory_block(self, index: int, zones: bool = False) -> MemoryBlock | None:
        """One memory block, or None when memoryN does not exist (or vanished)."""
        with self.memory_dir() as fd:
            return self.memory_block_at(fd, index, zones)

    @contextlib.contextmanager
    def memory_dir(self) -> Iterator[int | None]:
        """A directory fd for sys/devices/system/memory (None when it is missing).

        Reading memoryN/state relative to it walks two path components instead of eight,
        which is a tenth of `check`'s time on a 1 TiB machine.
        """
        try:
            fd: int | None = os.open(os.path.join(self.root, MEMORY), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            fd = None
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def memory_block_at(fd: int | None, index: int, zones: bool = False) -> MemoryBlock | None:
        if fd is None:
            return None
        base = f"memory{index}/"
        state = _read_text(base + "state", fd)
        if state is None:
            return None
        mom = _read_text(base + "memmap_on_memory", fd)
        valid_zones = _read_text(base + "valid_zones", fd) if zones else None
        return MemoryBlock(
            index,
            state.strip(),
            (mom.strip() == "1") if mom is not None else None,
            valid_zones.strip() if valid_zones is not None else None,
        )

    def node_blocks(self) -> dict[int, set[int]]:
        result: dict[int, set[int]] = {}
        for entry in self.listdir(NODES):
            match = _NODE_RE.fullmatch(entry)
            if match is None:
                continue
            blocks = set()
            for item in self.listdir(f"{NODES}/{entry}"):
                m = _MEMORY_RE.fullmatch(item)
                if m is not None:
                    blocks.add(int(m.group(1)))
            result[int(match.group(1))] = blocks
        return result

    def accounting(self, nodes: list[int]) -> dict[int, NodeAccounting]:
        zoneinfo_text = self.read("proc/zoneinfo")
        zones = parse.parse_zoneinfo(zoneinfo_text) if zoneinfo_text else {}
        result: dict[int, NodeAccounting] = {}
        for node in nodes:
            meminfo_text = self.read(f"{NODES}/node{node}/meminfo")
            memtotal = parse.parse_meminfo(meminfo_text).get("MemTotal") if meminfo_text else None
            node_zones = [v for (n, _), v in zones.items() if n == node]
            present = managed = None
            if node_zones:
                present = sum(z.get("present", 0) for z in node_zones)
                managed = sum(z.get("managed", 0) for z in node_zones)
            result[node] = NodeAccounting(node, memtotal, present, managed)
        return result

    def snapshot(self, spec: DriverSpec, zones: bool = False, accounting: bool = True) -> Snapshot:
        """Read everything once. Devices that vanish mid-scan are listed, not fatal."""
        settings = self.settings(spec)
        devices: list[DaxDevice] = []
        blocks: dict[str, list[MemoryBlock]] = {}
        vanished: list[str] = []
        for name in self.dax_device_names():
            try:
                dev = self.dax_device(name)
            except DeviceVanished:
                vanished.append(name)
                continue
            devices.append(dev)
            if dev.driver != "kmem":
                continue
            with self.memory_dir() as fd:
                read = self.memory_block_at
                found = (read(fd, i, zones) for i in dev.block_indices(settings.block_size))
                blocks[name] = [blk for blk in found if blk is not None]
        node_blocks = self.node_blocks()
        acct = self.accounting(sorted(node_blocks)) if accounting else {}
        return Snapshot(settings, devices, blocks, node_blocks, acct, vanished)


def _read_text(path: str, dir_fd: int | None = None) -> str | None:
    """Read a kernel file (relative to dir_fd when given); None when it does not exist or
    vanished while being read, exit 3 when only root may read it."""
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise MissingPrerequisite(
                f"cannot read {path}: run as root (the kernel makes it root-only)"
            ) from None
        raise OperationFailed(f"cannot read {path}: {exc.strerror}") from None
    try:
        chunks = []
        while data := os.read(fd, 65536):
            chunks.append(data)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise OperationFailed(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _dax_sort_key(name: str) -> tuple[int, int]:
    region, _, dev = name[3:].partition(".")
    return int(region), int(dev)


def write_atomic(path: str, content: str, mode: int = 0o644) -> str:
    """Write `path` atomically: a tempfile in the same directory, fsync, then os.replace."""
    import tempfile  # lazy: only the writing commands need it

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pyshim-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return path
