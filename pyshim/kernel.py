"""Every read and write of the kernel's files (sysfs, procfs, modprobe.d), under one root.

`Sysfs(root)` is the only object that knows where files are; every path is relative to the
root given with --sysroot (default "/"), the way util-linux lsmem --sysroot works, so the same
code reads a live machine and a recorded tree. Writes under a tree go through beneath.py,
which refuses whatever leads outside the root (symlinks, hard links, other filesystems) by
looking at what is opened; a kernel attribute on the live machine is written in one write().

Every number and list read is bounded by what a kernel can write there, so that a corrupt or
hostile tree fails in one line instead of converting a 4000-digit number or walking millions
of indices.

Reads use os.open/os.read on plain strings: `check` reads two files for each of up to tens of
thousands of memory blocks, and pathlib costs several times more per file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pyshim import parse
from pyshim.drivers import DriverSpec
from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.snapshot import (
    DaxDevice,
    MemmapSettings,
    MemoryBlock,
    NodeAccounting,
    Snapshot,
)

MEMORY = "sys/devices/system/memory"
NODES = "sys/devices/system/node"
DAX_DEVICES = "sys/bus/dax/devices"
GLOBAL_PARAM = "sys/module/memory_hotplug/parameters/memmap_on_memory"

if TYPE_CHECKING:
    from pathlib import Path

T = TypeVar("T")

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO)

# A sysfs attribute is at most one page; procfs files such as zoneinfo grow with nodes and CPUs.
ATTRIBUTE_LIMIT = 4096
PROCFS_LIMIT = 16 << 20

# Memory block sizes any architecture with memory hotplug uses: at least one memory section
# (16 MiB on powerpc, the smallest), and far below a terabyte. Outside this, the file is wrong.
MIN_BLOCK_SIZE = 16 << 20
MAX_BLOCK_SIZE = 1 << 40
MAX_PHYSICAL = parse.MAX_PHYSICAL  # 4 PiB: no address, size or capacity is larger
# A device may claim this many memory blocks before they are counted against the memoryN
# directories that can exist: more means its size or mappings are wrong, and reading millions
# of absent blocks would take minutes.
TRUSTED_DEVICE_BLOCKS = 4096

PATCHED_KERNEL = (
    "boot a kernel with the kmem memmap_on_memory series (kernel-patch/ in the pyshim "
    'sources; README.md, "The kernel pyshim needs")'
)
# Node ids stay below MAX_NUMNODES (1024 with NODES_SHIFT 10, x86-64's largest); memory
# block ids below MAX_PHYSICAL / MIN_BLOCK_SIZE (2^28, nine digits).
_NODE_RE = re.compile(r"node([0-9]{1,4})")
_MEMORY_RE = re.compile(r"memory([0-9]{1,9})")
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

    def read(self, rel: str, limit: int = ATTRIBUTE_LIMIT) -> str | None:
        """Text of a sysfs attribute, or None when it does not exist (or vanished)."""
        return _read_text(os.path.join(self.root, rel), limit=limit)

    def parsed(self, rel: str, text: str, parser: Callable[[str], T]) -> T:
        """parser(text), or a one-line failure naming the file and the value it held."""
        try:
            return parser(text)
        except ValueError as exc:
            if not text:
                # The kernel never shows an attribute empty: the read met a rewrite half done
                # (a tree rewritten in place by another tool).
                raise OperationFailed(
                    f"{self.path(rel)} read empty, which the kernel never shows: a read torn "
                    "by a concurrent write; retry"
                ) from None
            raise OperationFailed(
                f"{self.path(rel)} holds {text.strip()[:40]!r}, which the kernel never writes "
                f"there ({exc})"
            ) from None

    def read_parsed(self, rel: str, parser: Callable[[str], T]) -> T | None:
        text = self.read(rel)
        return None if text is None else self.parsed(rel, text, parser)

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

    def write_attr(self, rel: str, value: str) -> None:
        """Write an existing sysfs attribute (never creates a file); KernelWriteError on errno.

        On the live machine: one write() without O_TRUNC, which is what a kernel attribute
        takes (kernfs hands the whole buffer to store()); under a tree, the file is replaced
        beneath the root, so that a concurrent reader never sees it empty."""
        path = self.path(rel)
        data = value.encode()
        try:
            if not self.is_live:
                from pyshim import beneath  # lazy: only writes need it

                beneath.replace_beneath(self.root, rel, data, must_exist=True)
                return
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KernelWriteError(
                f"cannot open {path}: {exc.strerror}", exc.errno or 0, path
            ) from None
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise KernelWriteError(f"{path}: {exc.strerror}", exc.errno or 0, path) from None
        finally:
            os.close(fd)
        if written != len(data):
            raise KernelWriteError(
                f"{path}: the kernel took {written} of {len(data)} bytes", errno.EIO, path
            )

    def write_file_atomic(self, rel: str, content: str) -> str:
        """Write a configuration file atomically beneath the root (a new file, renamed over
        the old one), creating its directories."""
        from pyshim import beneath  # lazy: only writes need it

        directory = os.path.dirname(rel)
        beneath.makedirs_beneath(self.root, directory)
        return beneath.replace_beneath(self.root, rel, content.encode(), must_exist=False)

    # --- settings ----------------------------------------------------------------------------

    def block_size(self) -> int:
        rel = f"{MEMORY}/block_size_bytes"
        size = self.read_parsed(rel, parse.parse_block_size)
        if size is None:
            raise MissingPrerequisite(
                f"no {self.path(rel)}: this kernel lacks memory hotplug "
                "(boot one built with CONFIG_MEMORY_HOTPLUG)"
            )
        if not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
            raise OperationFailed(
                f"{self.path(rel)} says {size} bytes, outside the {MIN_BLOCK_SIZE >> 20} MiB "
                f"to {MAX_BLOCK_SIZE >> 40} TiB any kernel uses"
            )
        return size

    def global_mode(self) -> parse.GlobalMode | None:
        return self.read_parsed(GLOBAL_PARAM, parse.parse_global_mode)

    def driver_setting(self, spec: DriverSpec) -> parse.KmemSetting | None:
        """The driver attribute, else the module parameter, which shows the same current
        value on kernels whose parameter is writable (series v3)."""
        value = self.read_parsed(spec.attribute_path, parse.parse_kmem_setting)
        if value is None and self.exists(spec.driver_path):
            value = self.read_parsed(spec.parameter_path, parse.parse_kmem_setting)
        return value

    def require_driver_setting(self, spec: DriverSpec) -> parse.KmemSetting:
        """The per-driver setting, or exit 3 saying what the machine lacks."""
        if not self.exists(f"sys/bus/{spec.bus}"):
            raise MissingPrerequisite(
                f"no {self.path('sys/bus/' + spec.bus)}: this kernel lacks the {spec.bus} bus "
                "(boot one built with CONFIG_DEV_DAX)"
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
                f"{PATCHED_KERNEL}"
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

    def settings(self, spec: DriverSpec) -> MemmapSettings:
        return MemmapSettings(
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
        size = self.parsed(f"{base}/size", size_text, parse.parse_physical)
        ranges: list[tuple[int, int]] = []
        for entry in sorted(self.listdir(base)):
            if not _MAPPING_RE.fullmatch(entry):
                continue
            start = self.read_parsed(f"{base}/{entry}/start", parse.parse_physical_hex)
            end = self.read_parsed(f"{base}/{entry}/end", parse.parse_physical_hex)
            if start is None or end is None:
                continue
            if end < start:
                raise OperationFailed(
                    f"{self.path(base)}/{entry}: end {end:#x} lies before start {start:#x}"
                )
            ranges.append((start, end + 1))
        if not ranges:
            start = self.read_parsed(f"{base}/resource", parse.parse_physical_hex)
            if start is None:
                raise DeviceVanished(name)
            ranges.append((start, start + size))
        covered = sum(end - start for start, end in ranges)
        if covered != size:
            raise OperationFailed(
                f"{self.path(base)}: its mappings cover {covered} bytes but size says {size}"
            )
        driver_link = self.readlink(f"{base}/driver")
        return DaxDevice(
            name=name,
            driver=os.path.basename(driver_link) if driver_link else None,
            target_node=self.parsed(f"{base}/target_node", node_text, parse.parse_int),
            size=size,
            ranges=tuple(ranges),
            align=self.read_parsed(f"{base}/align", parse.parse_int),
            memmap_on_memory=self.read_parsed(f"{base}/memmap_on_memory", parse.parse_bit),
            region=self.region_kind(name),
            state_attribute=self.dax_state(name),
        )

    def dax_state(self, name: str) -> parse.DaxState | None:
        """daxX.Y/state (Linux 7.3+); None where the kernel has no such file: before 7.3,
        and on 7.3 for a device not bound to kmem (it is one of kmem's device attributes)."""
        return self.read_parsed(dax_state_path(name), parse.parse_dax_state)

    def write_dax_state(self, name: str, state: parse.DaxState) -> None:
        """Ask kmem for a whole-device transition; KernelWriteError carries the kernel's errno."""
        self.write_attr(dax_state_path(name), state.value)

    def device_blocks(self, dev: DaxDevice, block_size: int) -> list[int]:
        """The device's memory block indices, refusing more than the memoryN directories
        that exist (a corrupt size or mapping would otherwise have `check` read millions of
        absent blocks)."""
        count = sum(
            max(0, end // block_size - -(-start // block_size)) for start, end in dev.ranges
        )
        if count > TRUSTED_DEVICE_BLOCKS:
            present = self.memory_dirs_at_most()
            if count > present:
                raise OperationFailed(
                    f"{self.path(DAX_DEVICES)}/{dev.name} spans {count} memory blocks of "
                    f"{block_size} bytes, but {self.path(MEMORY)} has {present}: its size or "
                    "mappings are wrong"
                )
        return dev.block_indices(block_size)

    def memory_dirs_at_most(self) -> int:
        """An upper bound of the memoryN directories, in one stat(): a directory's link count
        is 2 + its subdirectories on sysfs (kernfs), tmpfs and ext4; where it is not (btrfs
        says 1), they are counted."""
        try:
            links = os.stat(self.path(MEMORY)).st_nlink
        except OSError:
            return 0
        if links >= 2:
            return links - 2
        return sum(1 for n in self.listdir(MEMORY) if _MEMORY_RE.fullmatch(n))

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

    def memory_block_at(
        self, fd: int | None, index: int, zones: bool = False
    ) -> MemoryBlock | None:
        """memoryN read relative to the memory directory fd; None when the block does not
        exist or vanished, a failure naming the file when it exists but is incomplete."""
        if fd is None:
            return None
        base = f"memory{index}/"
        shown = f"{self.path(MEMORY)}/{base}"
        state = _read_text(base + "state", fd, shown=shown + "state")
        if state is None:
            if os.path.isdir(shown):
                raise OperationFailed(f"{shown} has no state file: not a complete memory block")
            return None
        mom_text = _read_text(base + "memmap_on_memory", fd, shown=shown + "memmap_on_memory")
        mom = None
        if mom_text is not None:
            mom = self.parsed(f"{MEMORY}/{base}memmap_on_memory", mom_text, parse.parse_bit)
        valid_zones = None
        if zones:
            valid_zones = _read_text(base + "valid_zones", fd, shown=shown + "valid_zones")
        return MemoryBlock(
            index, state.strip(), mom, valid_zones.strip() if valid_zones is not None else None
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
        zoneinfo_text = self.read("proc/zoneinfo", limit=PROCFS_LIMIT)
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
            if dev.state_attribute is parse.DaxState.UNPLUGGED:
                # kmem removed the memory (7.3): there are no blocks to read, however many
                # the device's size would hold.
                blocks[name] = []
                continue
            with self.memory_dir() as fd:
                read = self.memory_block_at
                indices = self.device_blocks(dev, settings.block_size)
                found = (read(fd, i, zones) for i in indices)
                blocks[name] = [blk for blk in found if blk is not None]
        node_blocks = self.node_blocks()
        acct = self.accounting(sorted(node_blocks)) if accounting else {}
        return Snapshot(
            settings, devices, blocks, node_blocks, acct, vanished, self.node_distances()
        )

    def node_distances(self) -> dict[int, dict[int, int]]:
        """{node: {other: distance}} from nodeN/distance, whose columns follow the online
        node list; nodes without the file (hand-made trees, !NUMA) are left out."""
        online = self.read_parsed(f"{NODES}/online", parse.parse_node_list) or []
        result: dict[int, dict[int, int]] = {}
        for node in online:
            rel = f"{NODES}/node{node}/distance"
            row = self.read_parsed(rel, parse.parse_distances)
            if row is None:
                continue
            if len(row) != len(online):
                raise OperationFailed(
                    f"{self.path(rel)} lists {len(row)} distances for {len(online)} online nodes"
                )
            result[node] = dict(zip(online, row, strict=True))
        return result


def dax_state_path(name: str) -> str:
    """daxX.Y/state relative to the root, for a name drivers.validate_device accepted."""
    return f"{DAX_DEVICES}/{name}/state"


def _read_text(
    path: str, dir_fd: int | None = None, limit: int = ATTRIBUTE_LIMIT, shown: str | None = None
) -> str | None:
    """Read a kernel file (relative to dir_fd when given; `shown` is its name for messages).

    None when it does not exist or vanished while being read; exit 3 when only root may read
    it. Never blocks and never reads without bound: the open is non-blocking (a FIFO planted
    in a tree would otherwise hang), anything but a regular file is refused, and more than
    `limit` bytes means it is not the kernel file it claims to be.
    """
    name = shown or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise MissingPrerequisite(
                f"cannot read {name}: run as root (the kernel makes it root-only)"
            ) from None
        raise OperationFailed(f"cannot read {name}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OperationFailed(f"{name} is not a regular file, so not the kernel's file")
        chunks = [os.read(fd, limit + 1)]
        size = len(chunks[0])
        # One read is the whole file for a sysfs attribute (kernfs runs show() once into a
        # page), a small sysctl and a regular file of a recorded tree; procfs seq_files such
        # as zoneinfo hand out a page or so per read.
        while limit > ATTRIBUTE_LIMIT and size <= limit and (data := os.read(fd, limit + 1 - size)):
            chunks.append(data)
            size += len(data)
    except OSError as exc:
        if exc.errno in _MISSING:
            return None
        raise OperationFailed(f"cannot read {name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise OperationFailed(f"{name} holds more than {limit} bytes, so not the kernel's file")
    return b"".join(chunks).decode("utf-8", "replace")


def _dax_sort_key(name: str) -> tuple[int, int]:
    region, _, dev = name[3:].partition(".")
    return int(region), int(dev)
