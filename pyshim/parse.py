"""Parsers for the words and files that the kernel and the user hand to pyshim.

Every function here is pure (text in, value out) and raises ValueError on bad input; the CLI
turns that into a usage error. Each parser has a Hypothesis test in tests/unit/test_parse.py.
"""

from __future__ import annotations

import enum
import re


class KmemSetting(enum.Enum):
    """Value of /sys/bus/dax/drivers/kmem/memmap_on_memory (docs/design.md, "Kernel ABI", 1)."""

    GLOBAL = "global"
    ON = "on"
    OFF = "off"


class GlobalMode(enum.Enum):
    """Value of /sys/module/memory_hotplug/parameters/memmap_on_memory."""

    ON = "Y"
    OFF = "N"
    FORCE = "force"

    @property
    def enabled(self) -> bool:
        return self is not GlobalMode.OFF


class DaxState(enum.Enum):
    """Value of daxX.Y/state (Linux 7.3 and later; the file exists only while kmem is bound).

    The kernel's record of the last whole-device change: the hot-add at probe (with the
    auto_online_blocks policy, hence "offline") or a write to the file. Blocks onlined or
    offlined one by one through memoryN/state do not change it (drivers/dax/kmem.c says so
    in dev_dax_kmem_remove()), so it is reported as the kernel's word, never as the blocks'
    state.
    """

    UNPLUGGED = "unplugged"
    OFFLINE = "offline"
    ONLINE = "online"
    ONLINE_KERNEL = "online_kernel"
    ONLINE_MOVABLE = "online_movable"
    # state_show() falls back to this word when its state has no name; 7.3.4 never gets
    # there, but it is a word the kernel can write, so it is reported rather than refused.
    UNKNOWN = "unknown"


# What `pyshim set` accepts, exactly as typed: the three words the kernel takes
# (sysfs_match_string(); an optional newline aside), and nothing else. "0" or "no" would
# read as "off" where the kernel refuses them.
SETTING_WORDS: dict[str, KmemSetting] = {
    "global": KmemSetting.GLOBAL,
    "on": KmemSetting.ON,
    "off": KmemSetting.OFF,
}


def parse_setting_word(text: str) -> KmemSetting:
    """The setting a word of SETTING_WORDS names; ValueError naming the words otherwise."""
    setting = SETTING_WORDS.get(text)
    if setting is None:
        raise ValueError(f"invalid value {text!r}: use one of {', '.join(SETTING_WORDS)}")
    return setting


def parse_kmem_setting(text: str) -> KmemSetting:
    """Parse what the kmem attribute reads back: exactly one of the three words."""
    word = text.strip()
    try:
        return KmemSetting(word)
    except ValueError:
        raise ValueError(f"unexpected kmem memmap_on_memory value {word!r}") from None


def parse_dax_state(text: str) -> DaxState:
    """Parse daxX.Y/state as the kernel shows it: one of the DaxState words."""
    word = text.strip()
    try:
        return DaxState(word)
    except ValueError:
        known = ", ".join(s.value for s in DaxState)
        raise ValueError(f"unexpected daxX.Y/state value {word!r}; known: {known}") from None


def parse_global_mode(text: str) -> GlobalMode:
    """Parse memory_hotplug.memmap_on_memory as sysfs shows it: Y, N or force."""
    word = text.strip()
    try:
        return GlobalMode(word)
    except ValueError:
        raise ValueError(f"unexpected memory_hotplug.memmap_on_memory value {word!r}") from None


# The kernel prints 64-bit numbers: at most 16 hex or 20 decimal digits (with a sign).
_HEX_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,16})")
_INT_RE = re.compile(r"-?[0-9]{1,20}")
# x86-64's MAX_PHYSMEM_BITS with 5-level paging: no physical address or size is larger.
MAX_PHYSICAL = 1 << 52
# MAX_NUMNODES with NODES_SHIFT 10, x86-64's largest: node ids are below it.
MAX_NODES = 1 << 10


def parse_hex(text: str) -> int:
    """Parse a sysfs hex number with or without 0x (block_size_bytes, phys_index, resource)."""
    match = _HEX_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a 64-bit hex number: {text.strip()[:40]!r}")
    return int(match.group(1), 16)


def parse_physical_hex(text: str) -> int:
    """A physical address in hex (mappingN/start and end, resource): below 4 PiB."""
    value = parse_hex(text)
    if value > MAX_PHYSICAL:
        raise ValueError(f"{value:#x} is beyond the 4 PiB x86-64 can address")
    return value


def parse_physical(text: str) -> int:
    """A size of physical memory in decimal bytes (daxX.Y/size): 0 to 4 PiB."""
    value = parse_int(text)
    if not 0 <= value <= MAX_PHYSICAL:
        raise ValueError(f"{value} bytes is not a size x86-64 can address (0 to 4 PiB)")
    return value


def parse_block_size(text: str) -> int:
    """Parse /sys/devices/system/memory/block_size_bytes (hex without 0x, e.g. 8000000)."""
    value = parse_hex(text)
    if value == 0 or value & (value - 1):
        raise ValueError(f"memory block size {text.strip()!r} is not a power of two")
    return value


def parse_int(text: str) -> int:
    """Parse a decimal sysfs number (size, target_node); negative allowed (-1 = no node)."""
    word = text.strip()
    if not _INT_RE.fullmatch(word):
        raise ValueError(f"not a 64-bit decimal number: {word[:40]!r}")
    return int(word)


def parse_bit(text: str) -> bool:
    """Parse a 0/1 attribute (memoryN/memmap_on_memory, daxX.Y/memmap_on_memory)."""
    word = text.strip()
    if word == "1":
        return True
    if word == "0":
        return False
    raise ValueError(f"expected 0 or 1, got {text!r}")


def parse_node_list(text: str) -> list[int]:
    """Parse a sysfs node list such as /sys/devices/system/node/online: "0-1,3" -> [0, 1, 3].

    The kernel prints each node once, ascending, below MAX_NODES (bitmap_print_to_pagebuf):
    anything else, such as a range repeated a million times, is not its list."""
    nodes: list[int] = []
    for part in text.strip().split(","):
        match = re.fullmatch(r"([0-9]{1,4})(?:-([0-9]{1,4}))?", part)
        if match is None:
            raise ValueError(f"not a node list: {text.strip()[:40]!r}")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first or (nodes and first <= nodes[-1]) or last >= MAX_NODES:
            raise ValueError(
                f"not a node list the kernel prints (ascending, each node once, below "
                f"{MAX_NODES}): {text.strip()[:40]!r}"
            )
        nodes.extend(range(first, last + 1))
    return nodes


def parse_distances(text: str) -> list[int]:
    """Parse nodeN/distance: one decimal distance per online node, space separated."""
    words = text.split()
    if not words or not all(re.fullmatch(r"[0-9]{1,3}", w) for w in words):
        raise ValueError(f"not a distance list: {text!r}")
    return [int(w) for w in words]


_SIZE_RE = re.compile(r"([0-9]{1,19})\s*([kKmMgGtTpP]?)(?:i?[bB])?")
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text: str) -> int:
    """Parse a capacity: bytes, or a number with K, M, G, T or P (binary units, optional iB/B).

    "512M", "1G", "1T", "1GiB", "4096" are accepted; the result is in bytes and must be > 0.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use bytes or a number with K, M, G, T or P)")
    value = int(match.group(1)) << _SIZE_SHIFT[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


_MEMINFO_RE = re.compile(r"(?:Node\s+\d{1,4}\s+)?([A-Za-z0-9_()]+):\s+([0-9]{1,20})(?:\s+kB)?\s*")


def parse_meminfo_line(line: str) -> tuple[str, int]:
    """Parse one /proc/meminfo or nodeK/meminfo line into (key, value); kB values stay in kB."""
    match = _MEMINFO_RE.fullmatch(line.rstrip("\n"))
    if match is None:
        raise ValueError(f"not a meminfo line: {line!r}")
    return match.group(1), int(match.group(2))


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse a whole meminfo file; lines that do not parse are skipped."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        try:
            key, value = parse_meminfo_line(line)
        except ValueError:
            continue
        result[key] = value
    return result


# Numbers as the kernel prints them (a node id below 1024, a 64-bit count): a line with more
# digits is not one of its lines, and is skipped like any other.
_ZONE_HEADER_RE = re.compile(r"Node\s+(\d{1,4}),\s+zone\s+(\S+)\s*")
_ZONE_FIELD_RE = re.compile(r"\s+(present|managed)\s+([0-9]{1,20})\s*")


def parse_zoneinfo(text: str) -> dict[tuple[int, str], dict[str, int]]:
    """Parse /proc/zoneinfo into {(node, zone): {"present": pages, "managed": pages}}."""
    zones: dict[tuple[int, str], dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        header = _ZONE_HEADER_RE.fullmatch(line)
        if header is not None:
            current = zones.setdefault((int(header.group(1)), header.group(2)), {})
            continue
        if current is None:
            continue
        field = _ZONE_FIELD_RE.fullmatch(line)
        if field is not None and field.group(1) not in current:
            current[field.group(1)] = int(field.group(2))
    return zones


def format_size(value: int) -> str:
    """Human size with binary units, as daxctl --human does (1.00 GiB)."""
    if value < 1024:
        return f"{value} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            break
    text = f"{size:.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"
