"""Hypothesis tests for every parser in pyshim.parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyshim import parse
from pyshim.parse import DaxState, GlobalMode, KmemSetting

# Exactly the kernel's words (series v3: sysfs_match_string()).
ACCEPTED = {
    "global": KmemSetting.GLOBAL,
    "on": KmemSetting.ON,
    "off": KmemSetting.OFF,
}


@pytest.mark.parametrize(("word", "setting"), sorted(ACCEPTED.items()))
def test_setting_word_accepted(word: str, setting: KmemSetting) -> None:
    assert parse.parse_setting_word(word) is setting


# kstrtobool would take each of these (it reads one or two characters): the shim must not.
@pytest.mark.parametrize(
    "word",
    [
        *["force", "nonsense", "yellow", "test", "1234", "On", "YES", "y", "n", "on\n", " on"],
        # the kstrtobool words the kernel took before v3: "0" is not "off" any more
        *["1", "0", "yes", "no", "true", "false"],
    ],
)
def test_setting_word_strict(word: str) -> None:
    with pytest.raises(ValueError, match="use one of global, on, off"):
        parse.parse_setting_word(word)


@given(st.sampled_from(list(KmemSetting)), st.sampled_from(["", "\n", " \n"]))
def test_kmem_setting_readback(setting: KmemSetting, tail: str) -> None:
    assert parse.parse_kmem_setting(setting.value + tail) is setting


@given(st.text(max_size=8).filter(lambda t: t.strip() not in {"global", "on", "off"}))
def test_kmem_setting_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_kmem_setting(text)


# Every word drivers/dax/kmem.c's state_show() can print in Linux 7.3.4: "unplugged", the
# four of mhp_online_type_to_str() and its "unknown" fallback.
KERNEL_STATE_WORDS = [
    "unplugged",
    "offline",
    "online",
    "online_kernel",
    "online_movable",
    "unknown",
]


def test_dax_state_knows_exactly_the_kernel_words() -> None:
    assert sorted(s.value for s in DaxState) == sorted(KERNEL_STATE_WORDS)


@given(st.sampled_from(KERNEL_STATE_WORDS), st.sampled_from(["", "\n", " \n"]))
def test_dax_state_readback(word: str, tail: str) -> None:
    assert parse.parse_dax_state(word + tail).value == word


@given(st.text(max_size=16).filter(lambda t: t.strip() not in KERNEL_STATE_WORDS))
def test_dax_state_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"daxX\.Y/state"):
        parse.parse_dax_state(text)


@pytest.mark.parametrize("word", ["", "\n", "Online", "onl1ne", "going-offline", "online movable"])
def test_dax_state_rejects_near_misses(word: str) -> None:
    """Empty, a capital, the per-block word going-offline (never a device state)."""
    with pytest.raises(ValueError, match="known: unplugged, offline"):
        parse.parse_dax_state(word)


@given(st.sampled_from(list(GlobalMode)))
def test_global_mode(mode: GlobalMode) -> None:
    assert parse.parse_global_mode(mode.value + "\n") is mode
    assert mode.enabled is (mode is not GlobalMode.OFF)


@given(st.integers(min_value=12, max_value=40))
def test_block_size_roundtrip(shift: int) -> None:
    value = 1 << shift
    assert parse.parse_block_size(f"{value:x}\n") == value


@given(st.integers(min_value=0, max_value=1 << 40).filter(lambda v: v & (v - 1) != 0))
def test_block_size_rejects_non_power_of_two(value: int) -> None:
    with pytest.raises(ValueError):
        parse.parse_block_size(f"{value:x}")


@given(st.text(alphabet="ghijklmnopqrstuvwxyz!@ ", min_size=1, max_size=6))
def test_hex_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_hex(text)


@given(st.integers(min_value=0, max_value=1 << 52), st.booleans())
def test_hex_roundtrip(value: int, prefix: bool) -> None:
    text = f"{value:#x}" if prefix else f"{value:x}"
    assert parse.parse_hex(text + "\n") == value


@given(st.integers(min_value=1, max_value=1 << 30), st.sampled_from(["", "K", "M", "G", "T"]))
def test_size_units(number: int, unit: str) -> None:
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
    assert parse.parse_size(f"{number}{unit}") == number << shift
    assert parse.parse_size(f"{number}{unit.lower()}") == number << shift
    if unit:
        assert parse.parse_size(f"{number}{unit}iB") == number << shift


@pytest.mark.parametrize(
    ("text", "value"), [("512M", 512 << 20), ("1G", 1 << 30), ("1T", 1 << 40), ("4096", 4096)]
)
def test_size_examples(text: str, value: int) -> None:
    assert parse.parse_size(text) == value


@given(st.text(max_size=8).filter(lambda t: not t.strip()[:1].isdigit()))
def test_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_size(text)


def test_size_rejects_zero() -> None:
    with pytest.raises(ValueError):
        parse.parse_size("0G")


@given(
    st.integers(min_value=0, max_value=64),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
    st.integers(min_value=0, max_value=1 << 50),
    st.booleans(),
)
def test_meminfo_line(node: int, key: str, value: int, kb: bool) -> None:
    line = f"Node {node} {key}:{' ' * 7}{value}{' kB' if kb else ''}"
    assert parse.parse_meminfo_line(line) == (key, value)
    assert parse.parse_meminfo_line(f"{key}: {value}\n") == (key, value)


@given(st.dictionaries(st.from_regex(r"[A-Z][a-z]{1,10}", fullmatch=True), st.integers(0, 10**9)))
def test_meminfo_file(values: dict[str, int]) -> None:
    text = "".join(f"Node 1 {k}:       {v} kB\n" for k, v in values.items()) + "garbage\n"
    assert parse.parse_meminfo(text) == values


@given(
    st.dictionaries(
        st.tuples(st.integers(0, 8), st.sampled_from(["DMA", "DMA32", "Normal", "Movable"])),
        st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
        max_size=8,
    )
)
def test_zoneinfo(zones: dict[tuple[int, str], tuple[int, int]]) -> None:
    text = ""
    for (node, zone), (present, managed) in zones.items():
        text += (
            f"Node {node}, zone {zone:>8}\n  per-node stats\n      nr_inactive_anon 3\n"
            f"  pages free     1\n        min      2\n        spanned  {present}\n"
            f"        present  {present}\n        managed  {managed}\n"
            "        protection: (0, 0)\n  pagesets\n    cpu: 0\n              count: 0\n"
        )
    parsed = parse.parse_zoneinfo(text)
    assert parsed == {k: {"present": p, "managed": m} for k, (p, m) in zones.items()}


@given(st.integers(min_value=0, max_value=1 << 60))
def test_format_size_total(value: int) -> None:
    text = parse.format_size(value)
    assert text.split()[-1] in {"B", "KiB", "MiB", "GiB", "TiB", "PiB"}


@given(st.integers(min_value=-(1 << 31), max_value=1 << 62))
def test_parse_int(value: int) -> None:
    assert parse.parse_int(f"{value}\n") == value


@given(st.sampled_from(["0", "1", "0\n", "1\n"]))
def test_parse_bit(text: str) -> None:
    assert parse.parse_bit(text) is (text.strip() == "1")


@given(st.text(max_size=4).filter(lambda t: t.strip() not in {"0", "1"}))
def test_parse_bit_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_bit(text)


@pytest.mark.parametrize(("text", "nodes"), [("0\n", [0]), ("0-1\n", [0, 1]), ("0,2-3", [0, 2, 3])])
def test_node_list(text: str, nodes: list[int]) -> None:
    assert parse.parse_node_list(text) == nodes


@pytest.mark.parametrize("text", ["", "a", "3-1", "0-99999", "0,,1"])
def test_node_list_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse.parse_node_list(text)


def test_distances() -> None:
    assert parse.parse_distances("10 20 30\n") == [10, 20, 30]
    with pytest.raises(ValueError):
        parse.parse_distances("10 x")


def test_numbers_past_64_bits_are_not_kernel_lines() -> None:
    """A 4000-digit count would stop Python's int() (its 4300-digit limit is one step away)
    and is no number the kernel prints: the line is skipped, never an internal error."""
    huge = "9" * 4000
    zones = parse.parse_zoneinfo(
        f"Node 0, zone   Normal\n  present {huge}\n  managed 10\nNode {huge}, zone DMA\n"
    )
    assert zones == {(0, "Normal"): {"managed": 10}}
    assert parse.parse_meminfo(f"Node 0 MemTotal: {huge} kB\nNode 0 MemFree: 5 kB\n") == {
        "MemFree": 5
    }
    for parser in (parse.parse_hex, parse.parse_int, parse.parse_block_size):
        with pytest.raises(ValueError, match="64-bit"):
            parser(huge)
