"""The machine a test boots, as data: memory sources, NUMA layout, and the QEMU command line.

Everything here is pure: a VMSpec describes one boot, kernel_cmdline() and qemu_argv() turn
it into the kernel's and QEMU's command lines without starting anything (runner.py boots it).

Memory sources, each with the hot-plug range on NUMA node 1 (kmem refuses a range without a
node):
- hmem: soft-reserved `memmap=<size>%<offset>-1+0xefffffff`; dax_hmem + kmem bind at boot.
- pmem: legacy `memmap=<size>!<offset>`; ndctl turns it into a devdax device at run time.
- cxl-pmem / cxl-ram: a QEMU cxl-type3 device behind a pxb-cxl host bridge with a fixed
  memory window (q35); ram needs QEMU >= 8.0 (`volatile-memdev`).
- nvdimm: a QEMU nvdimm (pc, `nvdimm=on`) on the hot-plug node, in device memory above boot
  RAM, backed by a sparse file that run() creates in a temporary directory and deletes after
  the boot; ndctl turns it into a devdax device at run time. Sized for the server-shaped
  scale run (256 GiB beside 63 GiB of boot RAM), which a RAM backend cannot hold here.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import image

MIB = 1 << 20
GIB = 1 << 30
PMEM_TOP_RESERVE_MIB = 16  # legacy pmem that ends at the top of RAM below 4 GiB


class Source(enum.Enum):
    """Where the hot-pluggable memory comes from."""

    NONE = "none"
    HMEM = "hmem"
    PMEM = "pmem"
    CXL_PMEM = "cxl-pmem"
    CXL_RAM = "cxl-ram"
    NVDIMM = "nvdimm"


class Accel(enum.Enum):
    TCG = "tcg"
    KVM = "kvm"


class VMUnavailable(Exception):
    """A prerequisite (QEMU, a kernel image, a feature of QEMU) is missing."""


def repo_root() -> Path:
    """The checkout vmtest lives in (vmtest/machine.py -> repo)."""
    return Path(__file__).resolve().parents[1]


def guest_dir() -> Path:
    return Path(__file__).resolve().parent / "guest"


@dataclass(frozen=True)
class VMSpec:
    """What to boot. Sizes are MiB."""

    kernel: Path
    source: Source = Source.NONE
    append: tuple[str, ...] = ()
    hotplug_mib: int = 1024
    node0_mib: int = 3072
    smp: int = 2
    accel: Accel = Accel.TCG
    timeout: float = 240.0
    qemu: str = "qemu-system-x86_64"
    extra_qemu_args: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: sys.executable)
    # Shrinks the per-CPU free lists to their minimum (0 leaves the kernel default).
    percpu_pagelist_high_fraction: int = 1 << 30
    # On a modular kernel the guest loads kmem before the steps, unless they do it.
    load_kmem: bool = True
    # hmem only: 2 makes two soft-reserved ranges (3/8 and 1/2 of the hot-plug node, with a
    # reserved 1/8 between them so that e820 does not merge them): two dax devices.
    hotplug_parts: int = 1
    # > 0: a second DRAM node (node 1, boot memory without CPUs, this many MiB, right after
    # node 0's RAM); the hot-plug range becomes node 2, and `-numa dist` makes node 1 its
    # nearest node (CXL memory behind the second socket): its memmap in DRAM goes there.
    dram_node_mib: int = 0
    # False: node 0's RAM backend gets `reserve=off`, so that a guest with more RAM than the
    # host (63 GiB: boot memory up to 64 GiB, 2 GiB memory blocks) only costs what it touches.
    reserve_boot_ram: bool = True
    # nvdimm only: the directory for the temporary sparse backing file (None: the system's
    # temporary directory).
    nvdimm_dir: Path | None = None

    @property
    def hotplug_node(self) -> int:
        return 2 if self.dram_node_mib else 1

    @property
    def numa_distances(self) -> tuple[tuple[int, int, int], ...]:
        """(src, dst, distance) of every node pair when there are two DRAM nodes: the
        hot-plug node is close to node 1 and far from node 0."""
        if not self.dram_node_mib:
            return ()
        return ((0, 1, 21), (0, 2, 31), (1, 2, 14))

    @property
    def hotplug_base(self) -> int:
        """Guest-physical start of the hot-plug node's memory (pc machine)."""
        if self.source in (Source.CXL_PMEM, Source.CXL_RAM):
            raise ValueError("CXL memory sits in the fixed memory window, not in RAM")
        if self.source is Source.NVDIMM:
            raise ValueError("an nvdimm sits in device memory, not in RAM")
        # pc: with >= 3.5 GiB of RAM, 3 GiB stay below 4 GiB and the rest starts at 4 GiB.
        # QEMU gives the nodes their RAM in node order: node 0, the DRAM node, the hot-plug node.
        total = self.node0_mib + self.dram_node_mib + self.hotplug_mib
        if total * MIB < 0xE0000000:
            return (self.node0_mib + self.dram_node_mib) * MIB
        if self.node0_mib != 3072:
            raise ValueError("with >= 3.5 GiB of RAM node 0 must be exactly 3072 MiB (pc split)")
        return 4 * GIB + self.dram_node_mib * MIB


def kernel_cmdline(spec: VMSpec, init_args: Sequence[str]) -> str:
    """The kernel command line: 9p root, our init, the memory source, then spec.append."""
    for arg in init_args:
        if re.search(r"\s", arg):
            raise VMUnavailable(f"path with whitespace cannot go on the kernel command line: {arg}")
    words = [
        "console=ttyS0,115200",
        "root=vmroot",
        "rootfstype=9p",
        "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose",
        "ro",
        "init=/bin/sh",
        "panic=-1",
        "printk.time=1",
    ]
    size = spec.hotplug_mib
    if spec.source is Source.HMEM and spec.hotplug_parts == 2:
        base = spec.hotplug_base
        first, gap = size * 3 // 8, size // 8
        words.append(f"memmap={first}M%{base:#x}-1+0xefffffff")
        words.append(f"memmap={gap}M${base + first * MIB:#x}")
        second = size - first - gap
        words.append(f"memmap={second}M%{base + (first + gap) * MIB:#x}-1+0xefffffff")
    elif spec.source is Source.HMEM:
        words.append(f"memmap={size}M%{spec.hotplug_base:#x}-1+0xefffffff")
    elif spec.source is Source.PMEM:
        if spec.hotplug_base + size * MIB < 4 * GIB:
            # Below 4 GiB the BIOS puts its ACPI tables at the top of RAM, which would make
            # the region 128 KiB short of an aligned size: leave the top 16 MiB out.
            size -= PMEM_TOP_RESERVE_MIB
        words.append(f"memmap={size}M!{spec.hotplug_base:#x}")
    if spec.source not in (Source.CXL_PMEM, Source.CXL_RAM) and image.is_kasan(spec.kernel):
        # Under TCG a KASAN + lockdep kernel runs the pc machine's _PRT AML method past
        # ACPICA's 30 s loop timeout: virtio-pci then has no IRQ and the 9p root never
        # mounts. The BIOS's PIR table routes the same IRQs without AML.
        words.append("pci=noacpi")
    words += list(spec.append)
    words += ["--", *init_args]
    return " ".join(words)


def qemu_argv(
    spec: VMSpec, workdir: Path, serial_log: Path, nvdimm_file: Path | None = None
) -> list[str]:
    """The full QEMU command line for spec (pure: no QEMU needed to compute it);
    nvdimm_file is the nvdimm's backing file (nvdimm source only)."""
    agent = guest_dir() / "agent.py"
    init_args = [str(guest_dir() / "init.sh"), spec.python, str(agent)]
    argv = [spec.qemu, "-nodefaults", "-no-reboot", "-display", "none"]
    if spec.accel is Accel.KVM:
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        # One host thread runs every vCPU in turn. With a thread per vCPU (thread=multi) an
        # idle vCPU's timer interrupt was once never delivered while two guests shared the
        # two host cores: the guest stalled in RCU ("timer wakeup didn't happen ... Possible
        # timer handling issue on cpu=1") until the hard timeout. Round robin cannot lose
        # that wake-up, and a guest then keeps to one host core, as `make vm-test` plans.
        argv += ["-accel", "tcg,thread=single", "-cpu", "max"]
    argv += ["-smp", str(spec.smp)]
    cpus = f"0-{spec.smp - 1}" if spec.smp > 1 else "0"
    bus = ""
    if spec.source in (Source.CXL_PMEM, Source.CXL_RAM):
        if spec.dram_node_mib:
            raise ValueError("a second DRAM node is only built for the pc machine (hmem, pmem)")
        argv += ["-machine", "q35,cxl=on"]
        argv += ["-m", f"{spec.node0_mib}M"]
        argv += ["-object", f"memory-backend-ram,id=m0,size={spec.node0_mib}M"]
        argv += ["-numa", f"node,nodeid=0,memdev=m0,cpus={cpus}"]
        argv += cxl_args(spec)
        bus = ",bus=pcie.0"
    elif spec.source is Source.NVDIMM:
        argv += nvdimm_args(spec, nvdimm_file or workdir / "nvdimm.img")
    else:
        argv += ["-machine", "pc"]
        hotplug = spec.hotplug_mib if spec.source is not Source.NONE else 0
        argv += ["-m", f"{spec.node0_mib + spec.dram_node_mib + hotplug}M"]
        argv += ["-object", boot_ram_backend(spec)]
        argv += ["-numa", f"node,nodeid=0,memdev=m0,cpus={cpus}"]
        if spec.dram_node_mib:
            argv += ["-object", f"memory-backend-ram,id=mdram1,size={spec.dram_node_mib}M"]
            argv += ["-numa", "node,nodeid=1,memdev=mdram1"]
        if hotplug:
            node = spec.hotplug_node
            argv += ["-object", f"memory-backend-ram,id=m{node},size={hotplug}M"]
            argv += ["-numa", f"node,nodeid={node},memdev=m{node}"]
        for src, dst, distance in spec.numa_distances:
            argv += ["-numa", f"dist,src={src},dst={dst},val={distance}"]
    argv += [
        "-fsdev",
        "local,id=vmroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        f"virtio-9p-pci,fsdev=vmroot,mount_tag=vmroot{bus}",
        "-fsdev",
        f"local,id=vmtest,path={workdir / 'share'},security_model=none",
        "-device",
        f"virtio-9p-pci,fsdev=vmtest,mount_tag=vmtest{bus}",
        "-chardev",
        f"file,id=serial0,path={serial_log}",
        "-serial",
        "chardev:serial0",
        "-kernel",
        str(spec.kernel),
        "-append",
        kernel_cmdline(spec, init_args),
    ]
    argv += list(spec.extra_qemu_args)
    return argv


def boot_ram_backend(spec: VMSpec) -> str:
    """Node 0's RAM backend object."""
    reserve = "" if spec.reserve_boot_ram else ",reserve=off"
    return f"memory-backend-ram,id=m0,size={spec.node0_mib}M{reserve}"


def nvdimm_args(spec: VMSpec, backing: Path) -> list[str]:
    """pc with nvdimm=on: boot RAM on node 0 (and the DRAM node), the nvdimm in device
    memory on a memoryless hot-plug node (nfit gives the region that node)."""
    if spec.dram_node_mib:
        raise ValueError("the nvdimm source has no second DRAM node")
    cpus = f"0-{spec.smp - 1}" if spec.smp > 1 else "0"
    node = spec.hotplug_node
    ram = spec.node0_mib
    return [
        "-machine",
        "pc,nvdimm=on",
        "-m",
        f"{ram}M,slots=1,maxmem={ram + spec.hotplug_mib}M",
        "-object",
        boot_ram_backend(spec),
        "-numa",
        f"node,nodeid=0,memdev=m0,cpus={cpus}",
        "-numa",
        f"node,nodeid={node}",
        "-object",
        f"memory-backend-file,id=nv{node},share=on,mem-path={backing},size={spec.hotplug_mib}M",
        "-device",
        f"nvdimm,memdev=nv{node},id=nvdimm{node},node={node}",
    ]


def cxl_args(spec: VMSpec) -> list[str]:
    """One cxl-type3 device behind one root port of one CXL host bridge, one 4 GiB window."""
    size = f"{spec.hotplug_mib}M"
    args = [
        "-device",
        "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1",
        "-device",
        "cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2",
    ]
    if spec.source is Source.CXL_RAM:
        args += [
            "-object",
            f"memory-backend-ram,id=cxl-vmem0,share=on,size={size}",
            "-device",
            "cxl-type3,bus=root_port13,volatile-memdev=cxl-vmem0,id=cxl-vmem0",
        ]
    else:
        args += [
            "-object",
            f"memory-backend-ram,id=cxl-mem0,share=on,size={size}",
            "-object",
            "memory-backend-ram,id=cxl-lsa0,share=on,size=256M",
            "-device",
            # 7.x refuses a pmem region whose memdev has no serial number ("invalid or
            # missing serial number"); 6.12 ignores it.
            "cxl-type3,bus=root_port13,memdev=cxl-mem0,lsa=cxl-lsa0,id=cxl-pmem0,sn=0x1",
        ]
    args += ["-M", "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G"]
    return args
