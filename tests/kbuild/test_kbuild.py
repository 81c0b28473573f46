"""Tests of the kernel build helper's pure parts, on recorded kernel output."""

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

from kbuild import bases, build, checks, debian, ktest, series
from kbuild.bases import BASES, FLAVOURS, Pin
from kbuild.config import dropped_lines
from kbuild.layout import Layout, default_cache
from kbuild.proc import BuildError

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]


SUITES = ("dax_kmem_memmap",)


@pytest.fixture
def passing() -> dict[str, Any]:
    """kunit.py parse --json of a boot of the patched 6.12 build (common fields dropped)."""
    return cast(dict[str, Any], json.loads((DATA / "kunit-pass.json").read_text()))


def case(report: dict[str, Any], name: str) -> dict[str, Any]:
    suite = report["sub_groups"][0]
    found = [c for c in suite["test_cases"] + suite["sub_groups"] if c["name"] == name]
    assert len(found) == 1
    return cast(dict[str, Any], found[0])


def test_recorded_kunit_json_passes(passing: dict[str, Any]) -> None:
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == []
    assert report.cases == {
        "dax_kmem_memmap.kmem_memmap_name_roundtrip_test": "PASS",
        "dax_kmem_memmap.kmem_memmap_mhp_helpers_test": "PASS",
        "dax_kmem_memmap.kmem_memmap_parse_test": "PASS",
        "dax_kmem_memmap.kmem_memmap_decision_test": "PASS",
    }
    assert report.parameters == 57 + 14


def test_failed_parameter_fails_its_case(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_decision_test")["test_cases"][3]["status"] = "FAIL"
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_decision_test: FAIL"]


def test_failed_case_is_reported(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_mhp_helpers_test")["status"] = "ERROR"
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_mhp_helpers_test: ERROR"]


def test_skipped_case_is_a_problem(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_name_roundtrip_test")["status"] = "SKIP"
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_name_roundtrip_test: SKIP"]


def test_parameterised_case_without_parameters_is_a_problem(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_parse_test")["test_cases"] = []
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_parse_test: EMPTY"]


def test_missing_suite_is_reported(passing: dict[str, Any]) -> None:
    passing["sub_groups"][0]["name"] = "other_suite"
    report = ktest.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["suite dax_kmem_memmap did not run"]


def test_no_json_from_kunit_tool_is_a_problem() -> None:
    """kunit.py wrote nothing (it crashed, or the kernel did): kunit_tool() reads "{}"."""
    assert ktest.kunit_json_results("{}", SUITES).problems == ["suite dax_kmem_memmap did not run"]


def test_dropped_fragment_lines(tmp_path: Path) -> None:
    fragment = tmp_path / "frag"
    fragment.write_text("# reason\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n\n")
    config = tmp_path / ".config"
    config.write_text("CONFIG_A=y\n# CONFIG_B is not set\n# CONFIG_C is not set\n")
    assert dropped_lines([fragment], config) == ["CONFIG_C=y"]


def test_renamed_symbol_must_hold_under_its_new_name(tmp_path: Path) -> None:
    fragment = tmp_path / "frag"
    fragment.write_text("CONFIG_PROC_SYSCTL=y\n")
    config = tmp_path / ".config"
    renames = {"CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL"}
    config.write_text("CONFIG_SYSCTL=y\n")
    assert dropped_lines([fragment], config, renames) == []
    config.write_text("# CONFIG_SYSCTL is not set\n")
    assert dropped_lines([fragment], config, renames) == ["CONFIG_SYSCTL=y"]
    assert dropped_lines([fragment], config) == ["CONFIG_PROC_SYSCTL=y"]


def pins(tmp_path: Path) -> list[Pin]:
    return [Pin(base, f"{name}.1-1") for name, base in BASES.items()]


def small_repo(tmp_path: Path, name: str = "6.12") -> Layout:
    """A repository with one patch in kernel-patch/<name>/ and a one-line fragment."""
    patches = tmp_path / "kernel-patch" / name
    patches.mkdir(parents=True)
    (patches / "series").write_text("0000-cover-letter.patch\n0001-a.patch\n")
    (patches / "0000-cover-letter.patch").write_text("cover")
    (patches / "0001-a.patch").write_text("one")
    (tmp_path / "Kconfig.snippet").write_text("CONFIG_A=y\n")
    return Layout(tmp_path, tmp_path / "cache", Pin(BASES[name], "6.12.117-1~deb12u1"))


def test_each_base_has_its_own_trees_images_and_series(tmp_path: Path) -> None:
    layouts = [Layout(tmp_path, tmp_path / "cache", pin) for pin in pins(tmp_path)]
    for attribute in ("src", "images", "patch_dir", "base_tag", "resolved_file"):
        values = [getattr(layout, attribute) for layout in layouts]
        assert len(set(values)) == len(layouts), (attribute, values)
    assert len({layout.build_dir(FLAVOURS["patched"]) for layout in layouts}) == len(layouts)
    (tmp_path / "Kconfig.snippet").write_text("CONFIG_A=y\n")
    for layout in layouts:
        layout.patch_dir.mkdir(parents=True)
        (layout.patch_dir / "series").write_text("0001-a.patch\n")
        (layout.patch_dir / "0001-a.patch").write_text("the same patch on every base")
    keys = {build.image_key(layout, FLAVOURS["patched"]) for layout in layouts}
    assert len(keys) == len(layouts)


def test_flavours_with_their_own_config_have_their_own_build_dir(tmp_path: Path) -> None:
    """Stock and patched share a build directory (the series builds incrementally on the
    base); a flavour with other fragments or test-only patches never dirties it."""
    layout = small_repo(tmp_path)
    shared = layout.build_dir(FLAVOURS["stock"])
    assert layout.build_dir(FLAVOURS["patched"]) == shared
    assert layout.build_dir(FLAVOURS["debug"]) != shared
    assert layout.build_dir(FLAVOURS["wrong"]) != shared
    assert layout.tree(FLAVOURS["wrong"]) != layout.src == layout.tree(FLAVOURS["patched"])


def test_lock_file_names_the_default_base_first(tmp_path: Path) -> None:
    (tmp_path / "kernel-patch").mkdir()
    lock = tmp_path / bases.LOCK_FILE
    lock.write_text("# comment\n7.3 7.3.4-1~bpo13+1\n6.12 6.12.117-1~deb12u1\n")
    assert bases.default_base(tmp_path) == "7.3"
    assert bases.pinned(tmp_path, "6.12").version == "6.12.117"
    bases.write_lock(tmp_path, {"6.12": "6.12.118-1~deb12u1"})
    assert lock.read_text().splitlines()[0] == "# comment"
    assert bases.read_lock(tmp_path) == {"7.3": "7.3.4-1~bpo13+1", "6.12": "6.12.118-1~deb12u1"}


def test_lock_file_pins_the_config_package_on_its_own(tmp_path: Path) -> None:
    """linux-config may be served only in another version than linux-source: its own pin,
    kept when the source pin moves, dropped when both are the same again."""
    (tmp_path / "kernel-patch").mkdir()
    lock = tmp_path / bases.LOCK_FILE
    lock.write_text("6.12 6.12.117-1~deb12u1 config=6.12.118-1~deb12u1\n7.3 7.3.4-1~bpo13+1\n")
    pin = bases.pinned(tmp_path, "6.12")
    assert (pin.debian_version, pin.config_debian_version) == (
        "6.12.117-1~deb12u1",
        "6.12.118-1~deb12u1",
    )
    assert bases.pinned(tmp_path, "7.3").config_debian_version == "7.3.4-1~bpo13+1"
    bases.write_lock(tmp_path, {"7.3": "7.3.5-1~bpo13+1"})
    assert bases.pinned(tmp_path, "6.12").config_version == "6.12.118-1~deb12u1"
    bases.write_lock(tmp_path, {"6.12": "6.12.118-1~deb12u1"}, {"6.12": "6.12.118-1~deb12u1"})
    assert lock.read_text().splitlines()[0] == "6.12 6.12.118-1~deb12u1"


@pytest.mark.parametrize("line", ["6.12", "6.13 6.13.1-1", "6.12 a b", "6.12 a config=b c"])
def test_lock_file_rejects_a_bad_line(tmp_path: Path, line: str) -> None:
    (tmp_path / "kernel-patch").mkdir()
    (tmp_path / bases.LOCK_FILE).write_text(line + "\n")
    with pytest.raises(ValueError, match=r"bases\.lock:1: expected"):
        bases.read_lock(tmp_path)


def test_committed_lock_pins_every_base_and_the_makefile_reads_it() -> None:
    pinned = bases.read_lock(REPO)
    assert sorted(pinned) == sorted(BASES)
    assert next(iter(pinned)) == "6.12"
    makefile = (REPO / "Makefile").read_text()
    assert "kernel-patch/bases.lock" in makefile and "BASE ?=" in makefile


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [("6.12.117-1~deb12u1", "6.12.117"), ("7.3.4-1~bpo13+1", "7.3.4"), ("1:6.1-2", "6.1")],
)
def test_upstream_version(debian: str, upstream: str) -> None:
    assert bases.upstream_version(debian) == upstream


def test_policy_lists_what_the_archive_serves() -> None:
    """A recorded `apt-cache policy`: newest first; the installed 6.12.117 is served too."""
    text = (DATA / "policy-linux-source-6.12.txt").read_text()
    served = debian.policy_versions(text)
    assert served[:2] == ["6.12.118-1~deb12u1", "6.12.117-1~deb12u1"]
    assert len(served) == 6


def test_policy_skips_a_version_that_is_only_installed() -> None:
    text = (DATA / "policy-linux-source-6.12.txt").read_text()
    gone = text.replace(
        " *** 6.12.117-1~deb12u1 500\n"
        "        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n",
        " *** 6.12.117-1~deb12u1 100\n",
    )
    assert gone != text
    assert "6.12.117-1~deb12u1" not in debian.policy_versions(gone)


def test_pin_the_archive_still_serves_is_taken() -> None:
    served = debian.policy_versions((DATA / "policy-linux-source-6.12.txt").read_text())
    choice = debian.choose_version("linux-source-6.12", "6.12.117-1~deb12u1", served)
    assert choice == debian.Choice("6.12.117-1~deb12u1", None)


def test_pin_no_longer_served_falls_back_to_the_newest_and_says_so() -> None:
    """The recorded answer of the day linux-config-6.12 6.12.117 left bookworm-security."""
    served = debian.policy_versions((DATA / "policy-linux-config-6.12.txt").read_text())
    assert "6.12.117-1~deb12u1" not in served
    choice = debian.choose_version("linux-config-6.12", "6.12.117-1~deb12u1", served)
    assert choice.version == "6.12.118-1~deb12u1"
    assert choice.note == (
        "linux-config-6.12 6.12.117-1~deb12u1 no longer served; using 6.12.118-1~deb12u1"
    )


def test_package_no_longer_served_at_all_is_a_clear_error() -> None:
    with pytest.raises(BuildError, match=r"linux-source-7\.3 is no longer served at all"):
        debian.choose_version("linux-source-7.3", "7.3.4-1~bpo13+1", debian.policy_versions(""))


def test_resolution_needs_no_network_once_the_tree_is_there(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    (layout.src / ".git").mkdir(parents=True)
    assert debian.resolve_pin(layout) == layout.pin


def test_a_recorded_fallback_is_reused_without_the_network(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    layout.resolved_file.parent.mkdir(parents=True)
    layout.resolved_file.write_text("6.12.117-1~deb12u1 6.12.118-1~deb12u1\n")
    taken = debian.resolve_pin(layout)
    assert taken.version == "6.12.118" and taken.base is layout.pin.base


def test_private_apt_touches_only_the_cache(tmp_path: Path) -> None:
    suite = BASES["7.3"].suite
    root = tmp_path / "cache" / "apt" / suite.name
    apt = debian.private_apt(root, suite)
    assert f"Dir={root}" in apt and f"Dir::State::status={root}/var/lib/dpkg/status" in apt
    sources = (root / "etc/apt/sources.list").read_text()
    assert sources.split()[-3:] == ["http://deb.debian.org/debian", "trixie-backports", "main"]


def test_every_base_comes_from_a_private_apt_not_the_host() -> None:
    """No base is installed on the host: each is downloaded from its suite into the cache."""
    for base in BASES.values():
        assert base.suite.name.endswith(("-security", "-backports"))


def test_wrong_flavour_only_on_its_own_base(tmp_path: Path) -> None:
    wrong = tmp_path / "tests" / "vm" / "wrong-kernel" / "6.12"
    wrong.mkdir(parents=True)
    (wrong / "0001-x.patch").write_text("x")
    layout = Layout(tmp_path, tmp_path / "cache", Pin(BASES["7.3"], "7.3.4-1~bpo13+1"))
    with pytest.raises(BuildError, match=r"6\.12 series"):
        series.prepare_own_tree(layout, FLAVOURS["wrong"])


def test_series_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    (layout.patch_dir / "series").write_text("# queue\n\n0001-a.patch\n0002-b.patch\n")
    assert [p.name for p in layout.series()] == ["0001-a.patch", "0002-b.patch"]


def test_series_key_follows_patch_content(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    first = series.series_key(layout)
    assert series.series_key(layout) == first
    (layout.patch_dir / "0001-a.patch").write_text("two")
    assert series.series_key(layout) != first


@pytest.mark.parametrize("base", sorted(BASES))
def test_cover_letter_restores_its_description(base: str) -> None:
    cover = (REPO / "kernel-patch" / base / "0000-cover-letter.patch").read_text()
    description = series.cover_description(cover)
    subject = re.search(r"^Subject: \[PATCH 0/\d+\] (.*)$", cover, re.M)
    assert subject is not None
    assert description.splitlines()[0] == subject.group(1)
    assert "Patches:" in description
    assert "(6):" not in description and "base-commit" not in description


@pytest.mark.parametrize("base", sorted(BASES))
def test_committed_series_is_complete(base: str) -> None:
    layout = Layout(REPO, REPO / "unused", bases.pinned(REPO, base))
    names = [p.name for p in layout.series()]
    assert names[0] == "0000-cover-letter.patch"
    assert all(p.exists() for p in layout.series())
    assert sorted(p.name for p in layout.patch_dir.glob("*.patch")) == names


def test_image_key_ignores_the_cover_letter(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    patched = FLAVOURS["patched"]
    image, branch = build.image_key(layout, patched), series.series_key(layout)
    (layout.patch_dir / "0000-cover-letter.patch").write_text("better cover")
    assert build.image_key(layout, patched) == image
    assert series.series_key(layout) != branch
    (layout.patch_dir / "0001-a.patch").write_text("two")
    assert build.image_key(layout, patched) != image


def test_image_key_follows_the_base_version(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    newer = Layout(layout.repo, layout.cache, Pin(layout.pin.base, "6.12.118-1~deb12u1"))
    assert build.image_key(layout, FLAVOURS["stock"]) != build.image_key(newer, FLAVOURS["stock"])
    assert newer.src != layout.src


def test_wrong_flavour_has_its_own_key(tmp_path: Path) -> None:
    """The wrong kernel's image follows the series and the wrong patch."""
    layout = small_repo(tmp_path)
    wrong_dir = tmp_path / "tests" / "vm" / "wrong-kernel" / layout.pin.name
    wrong_dir.mkdir(parents=True)
    (wrong_dir / "0001-wrong.patch").write_text("wrong")
    flavour = FLAVOURS["wrong"]
    assert [p.name for p in layout.extra_patches(flavour)] == ["0001-wrong.patch"]
    wrong = build.image_key(layout, flavour)
    assert wrong != build.image_key(layout, FLAVOURS["patched"])
    (wrong_dir / "0001-wrong.patch").write_text("wronger")
    assert build.image_key(layout, flavour) != wrong
    wrong = build.image_key(layout, flavour)
    (layout.patch_dir / "0001-a.patch").write_text("two")
    assert build.image_key(layout, flavour) != wrong


def test_debug_flavour_key_follows_its_fragment(tmp_path: Path) -> None:
    layout = small_repo(tmp_path)
    (tmp_path / "kbuild").mkdir()
    (tmp_path / "kbuild" / "debug.config").write_text("CONFIG_KASAN=y\n")
    debug = build.image_key(layout, FLAVOURS["debug"])
    assert debug != build.image_key(layout, FLAVOURS["patched"])
    (tmp_path / "kbuild" / "debug.config").write_text("CONFIG_KASAN=n\n")
    assert build.image_key(layout, FLAVOURS["debug"]) != debug


def test_committed_wrong_patch_touches_only_sparse_vmemmap() -> None:
    layout = Layout(REPO, REPO / "unused", bases.pinned(REPO, "6.12"))
    (patch,) = layout.extra_patches(FLAVOURS["wrong"])
    touched = re.findall(r"^diff --git a/(\S+) ", patch.read_text(), re.M)
    assert touched == ["mm/sparse-vmemmap.c"]


def test_each_patch_builds_the_series_objects_the_config_builds(tmp_path: Path) -> None:
    """Objects of touched C files that the base build made, and drivers/dax/ whole."""
    patch = tmp_path / "0001.patch"
    patch.write_text(
        "diff --git a/mm/memory_hotplug.c b/mm/memory_hotplug.c\n"
        "diff --git a/arch/powerpc/platforms/pseries/hotplug-memory.c b/x\n"
        "diff --git a/drivers/dax/kmem.c b/drivers/dax/kmem.c\n"
        "diff --git a/include/linux/memory_hotplug.h b/include/linux/memory_hotplug.h\n"
    )
    built = tmp_path / "out"
    (built / "mm").mkdir(parents=True)
    (built / "mm" / "memory_hotplug.o").write_text("")
    assert checks.series_objects([patch], built) == ["mm/memory_hotplug.o", "drivers/dax/"]


def test_default_cache_follows_the_environment() -> None:
    assert default_cache({"MEMMAP_KMEM_CACHE": "/c"}) == Path("/c")
    assert default_cache({"XDG_CACHE_HOME": "/x"}) == Path("/x/memmap-kmem")
    assert default_cache({"HOME": "/h"}) == Path("/h/.cache/memmap-kmem")


def test_post_identity_is_the_posters() -> None:
    from kbuild.post import parse_identity, sign_as

    assert parse_identity("Jane Doe <jane@example.org>") == ("Jane Doe", "jane@example.org")
    for bad in ("jane@example.org", "Jane <jane>", "", "Memmap Kmem Developers <a@b.org>",
                "X <memmap-kmem@lists.example.org>"):  # fmt: skip
        with pytest.raises(BuildError):
            parse_identity(bad)
    mail = (
        "From: Memmap Kmem Developers <memmap-kmem@lists.example.org>\n\n"
        "Signed-off-by: Memmap Kmem Developers <memmap-kmem@lists.example.org>\n"
    )
    signed = sign_as(mail, "Jane Doe", "jane@example.org")
    assert "memmap-kmem@lists.example.org" not in signed
    assert signed.count("Jane Doe <jane@example.org>") == 2


@pytest.mark.parametrize("name", sorted(f.name for f in FLAVOURS.values() if f.extra_patches))
def test_extra_patches_are_mails_for_each_of_their_bases(name: str) -> None:
    """tests/vm/<flavour>/<base>/: every entry is a mail (symlinks into kernel-patch/
    resolve), for a base of the lock file, from the project's placeholder signer."""
    flavour = FLAVOURS[name]
    some = Layout(REPO, REPO / "unused", bases.pinned(REPO, next(iter(BASES))))
    written = some.extra_patch_bases(flavour)
    assert written and set(written) <= set(BASES)
    for base in written:
        layout = Layout(REPO, REPO / "unused", bases.pinned(REPO, base))
        for patch in layout.extra_patches(flavour):
            text = patch.read_text()
            assert text.startswith("From "), patch
            assert "\nFrom: Memmap Kmem Developers <memmap-kmem@lists.example.org>\n" in text
