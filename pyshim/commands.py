"""The table of pyshim's sub-commands: name, what runs, help, and arguments.

cliparser.py builds argparse from it (the man page and the shell completions come from the
same parser); cli.main() runs the entry the command line names. "{prog}" in a description
is how the user started pyshim.
"""

from __future__ import annotations

from pyshim.cliparser import Arg, Command, OneOf
from pyshim.daxctl_commands import cmd_offline, cmd_online, cmd_reconfigure
from pyshim.drivers import DRIVERS
from pyshim.reading_commands import cmd_check, cmd_metrics, cmd_plan, cmd_report, cmd_show
from pyshim.setting_commands import cmd_set

DEVICES = Arg(
    "devices", nargs="+", metavar="DEVICE", help="dax devices (daxX.Y), or all, as daxctl takes"
)
MOVABLE = OneOf(
    Arg(
        "--movable",
        dest="movable",
        action="store_true",
        default=True,
        help="online into ZONE_MOVABLE (default, as daxctl)",
    ),
    Arg("--no-movable", dest="movable", action="store_false", help="online into ZONE_NORMAL"),
)
JSON = Arg("--json", action="store_true", help="JSON in bytes")

COMMANDS: tuple[Command, ...] = (
    Command(
        "set",
        cmd_set,
        "write a driver's memmap_on_memory setting",
        "Write /sys/bus/dax/drivers/kmem/memmap_on_memory: global (the default, Linux 6.12's "
        "rule: the device's memmap_on_memory attribute and the boot parameter "
        "memory_hotplug.memmap_on_memory must both allow it), on (the memmap goes on the "
        "hot-plugged memory whenever this kernel can place it there) or off (never). It "
        "applies to every hot-add kmem makes afterwards; memory already added keeps its "
        "memmap until it is re-added. Example: {prog} set on --persist",
        (
            Arg(
                "--driver",
                default="dax_kmem",
                help=f"driver whose setting to write (known: {', '.join(sorted(DRIVERS))})",
            ),
            Arg(
                "value",
                nargs="?",
                default="on",
                help="global, on or off (exactly these words); default on",
            ),
            Arg(
                "--persist",
                action="store_true",
                help="also keep it across reboots: modprobe.d when kmem is a module, else print "
                "the kernel command line word to add",
            ),
        ),
    ),
    Command(
        "show",
        cmd_show,
        "settings and dax devices",
        "The kmem and global settings, then one row per dax device. BLOCKS: memory blocks "
        "online/total; MEMMAP: where the blocks' memmap lives according to "
        "memoryN/memmap_on_memory (memory, dram or mixed); MEMMAP_IN_DRAM: the DRAM those "
        "memmaps take; DAX_ATTR: the device's own memmap_on_memory attribute, which kmem "
        "consults only under the setting `global`; DAX_STATE: the device's state attribute "
        "(Linux 7.3+, devices bound to kmem; - where the file is absent), kmem's record of "
        "the last whole-device change (unplugged, offline, online, online_kernel, "
        "online_movable), which blocks onlined one by one do not change. "
        "Example: {prog} show --json",
        (Arg("--json", action="store_true", help="JSON with daxctl's key names, in bytes"),),
    ),
    Command(
        "check",
        cmd_check,
        "where each block's memmap lives, what the settings choose, node cross-check",
        "For every memory block of every dax device in system-ram mode: where its memmap "
        "lives (memoryN/memmap_on_memory) and where the current settings would put it; for "
        "every node made only of such blocks: whether /proc/zoneinfo and the node's MemTotal "
        "agree with the blocks. Status ok (exit 0), stale: some blocks were onlined under an "
        "earlier setting (exit 4, or 0 with --allow-stale), inconsistent: a device's blocks "
        "disagree or the accounting contradicts them (exit 1). "
        "Example: {prog} check --json dax0.0",
        (
            Arg("device", nargs="?", help="only this device (daxX.Y)"),
            Arg("--json", action="store_true", help="JSON in bytes, with a status key"),
            Arg(
                "--allow-stale",
                action="store_true",
                help="exit 0 when blocks only hold their memmap where an earlier setting put it",
            ),
            Arg(
                "--witness",
                action="store_true",
                help="also find each block's memmap in the kernel page tables (root, "
                "/proc/kcore); fail when they, memoryN/memmap_on_memory and the node "
                "accounting disagree; exit 3 when there is nothing to witness; works on stock "
                "kernels too",
            ),
        ),
    ),
    Command(
        "online",
        cmd_online,
        "online the memory of dax devices (system-ram mode first if needed)",
        "Online every memory block of each device through libdaxctl, as daxctl online-memory "
        "does; a device in devdax mode is first reconfigured to system-ram (the hot-add, where "
        "kmem decides the memmap placement). On Linux 7.3 and later a kmem device whose "
        "daxX.Y/state reads unplugged has no memory blocks for libdaxctl to online: pyshim "
        "writes online_movable (online_kernel with --no-movable) to that file instead, and "
        "kmem hot-adds and onlines the whole device at once. On failure the device returns "
        "to its earlier state. Example: {prog} online dax0.0",
        (DEVICES, MOVABLE),
    ),
    Command(
        "offline",
        cmd_offline,
        "offline the memory of dax devices (they stay in system-ram mode)",
        "Offline every memory block of each device, as daxctl offline-memory does; the "
        "memory stays added (kmem keeps the device), on Linux 7.3 too, where daxX.Y/state is "
        "left alone (it cannot say offline, and unplugged would remove the memory); an "
        "unplugged device has nothing to offline. On failure the blocks offlined on the way "
        "are onlined again. To remove the memory, use reconfigure --mode devdax. "
        "Example: {prog} offline all",
        (DEVICES,),
    ),
    Command(
        "reconfigure",
        cmd_reconfigure,
        "switch dax devices between system-ram and devdax mode",
        "As daxctl reconfigure-device: --mode system-ram hot-adds and onlines the memory (the "
        "same as online), --mode devdax offlines it, removes it and gives the device back to "
        "device_dax. A re-add after a kmem setting change is how memory already onlined gets "
        "its memmap placed anew. On failure the device returns to its earlier state. "
        "Example: {prog} reconfigure --mode devdax dax0.0",
        (
            Arg(
                "--mode",
                required=True,
                choices=["system-ram", "devdax"],
                help="system-ram: memory for the kernel (kmem); devdax: the character device",
            ),
            DEVICES,
            MOVABLE,
        ),
    ),
    Command(
        "report",
        cmd_report,
        "self-contained HTML report",
        "Write one HTML file (no external resources) with the settings, one picture of "
        "memory blocks per node and the check result. "
        "Example: {prog} report --html /tmp/memmap.html",
        (Arg("--html", required=True, metavar="FILE", help="the HTML file to write"),),
    ),
    Command(
        "metrics",
        cmd_metrics,
        "node_exporter textfile-collector metrics",
        "Write DIR/pyshim.prom for node_exporter's textfile collector: memmap bytes and "
        "memory blocks by node and memmap_node, the settings, the check status and the time "
        "of the run. Example: {prog} metrics --textfile /var/lib/node_exporter",
        (
            Arg(
                "--textfile",
                required=True,
                metavar="DIR",
                help="node_exporter's textfile directory",
            ),
        ),
    ),
    Command(
        "plan",
        cmd_plan,
        "DRAM the memmap of a capacity takes with and without the setting",
        "How much DRAM the memmap of CAPACITY of hot-plugged memory takes, and how much of "
        "the memory itself it takes with memmap on memory, for this machine's memory block "
        "size or --block-size. Example: {prog} plan --capacity 1T",
        (
            Arg("--capacity", required=True, help="e.g. 512M, 1G, 1T or bytes"),
            Arg("--block-size", help="memory block size (default: this machine's)"),
            JSON,
        ),
    ),
)
