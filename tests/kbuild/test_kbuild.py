"""Tests of the kernel build helper's pure parts, on recorded kernel output."""

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

import kbuild

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
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
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
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_decision_test: FAIL"]


def test_failed_case_is_reported(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_mhp_helpers_test")["status"] = "ERROR"
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_mhp_helpers_test: ERROR"]


def test_skipped_case_is_a_problem(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_name_roundtrip_test")["status"] = "SKIP"
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_name_roundtrip_test: SKIP"]


def test_parameterised_case_without_parameters_is_a_problem(passing: dict[str, Any]) -> None:
    case(passing, "kmem_memmap_parse_test")["test_cases"] = []
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["dax_kmem_memmap.kmem_memmap_parse_test: EMPTY"]


def test_missing_suite_is_reported(passing: dict[str, Any]) -> None:
    passing["sub_groups"][0]["name"] = "other_suite"
    report = kbuild.kunit_json_results(json.dumps(passing), SUITES)
    assert report.problems == ["suite dax_kmem_memmap did not run"]


def test_no_json_from_kunit_tool_is_a_problem() -> None:
    """kunit.py wrote nothing (it crashed, or the kernel did): kunit_tool() reads "{}"."""
    assert kbuild.kunit_json_results("{}", SUITES).problems == ["suite dax_kmem_memmap did not run"]


def test_dropped_fragment_lines(tmp_path: Path) -> None:
    fragment = tmp_path / "frag"
    fragment.write_text("# reason\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n\n")
    config = tmp_path / ".config"
    config.write_text("CONFIG_A=y\n# CONFIG_B is not set\n# CONFIG_C is not set\n")
    assert kbuild.dropped_lines([fragment], config) == ["CONFIG_C=y"]


def test_renamed_symbol_must_hold_under_its_new_name(tmp_path: Path) -> None:
    fragment = tmp_path / "frag"
    fragment.write_text("CONFIG_PROC_SYSCTL=y\n")
    config = tmp_path / ".config"
    renames = {"CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL"}
    config.write_text("CONFIG_SYSCTL=y\n")
    assert kbuild.dropped_lines([fragment], config, renames) == []
    config.write_text("# CONFIG_SYSCTL is not set\n")
    assert kbuild.dropped_lines([fragment], config, renames) == ["CONFIG_SYSCTL=y"]
    assert kbuild.dropped_lines([fragment], config) == ["CONFIG_PROC_SYSCTL=y"]


def test_each_base_has_its_own_trees_images_and_series(tmp_path: Path) -> None:
    layouts = [kbuild.Layout(tmp_path, tmp_path / "cache", base) for base in kbuild.BASES.values()]
    for attribute in ("src", "images", "patch_dir", "base_tag"):
        values = [getattr(layout, attribute) for layout in layouts]
        assert len(set(values)) == len(layouts), (attribute, values)
    assert len({layout.build_dir(False) for layout in layouts}) == len(layouts)
    (tmp_path / "Kconfig.snippet").write_text("CONFIG_A=y\n")
    for layout in layouts:
        layout.patch_dir.mkdir(parents=True)
        (layout.patch_dir / "series").write_text("0001-a.patch\n")
        (layout.patch_dir / "0001-a.patch").write_text("the same patch on every base")
    keys = {kbuild.image_key(layout, "patched", False) for layout in layouts}
    assert len(keys) == len(layouts)


def test_only_the_host_suite_base_installs_its_source() -> None:
    """Only a base from the host's own apt sources may be installed; every other base is
    downloaded into the cache with a private apt configuration."""
    for base in kbuild.BASES.values():
        if base.name == kbuild.DEFAULT_BASE:
            assert base.archive is None
        else:
            assert base.archive is not None and base.archive.name != "bookworm"


def test_private_apt_touches_only_the_cache(tmp_path: Path) -> None:
    layout = kbuild.Layout(tmp_path, tmp_path / "cache", kbuild.BASES["7.3"])
    assert layout.base.archive is not None
    apt = kbuild.private_apt(layout, layout.base.archive)
    root = tmp_path / "cache" / "apt" / "trixie-backports"
    assert f"Dir={root}" in apt and f"Dir::State::status={root}/var/lib/dpkg/status" in apt
    sources = (root / "etc/apt/sources.list").read_text()
    assert sources.split()[-3:] == ["http://deb.debian.org/debian", "trixie-backports", "main"]


def test_wrong_variant_only_on_its_own_base(tmp_path: Path) -> None:
    wrong = tmp_path / "tests" / "vm" / "wrong-kernel"
    wrong.mkdir(parents=True)
    (wrong / "0001-x.patch").write_text("x")
    layout = kbuild.Layout(tmp_path, tmp_path / "cache", kbuild.BASES["7.3"])
    with pytest.raises(kbuild.BuildError, match=r"6\.12 series"):
        kbuild.prepare_wrong_tree(layout)


def test_series_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "kernel-patch" / "6.12").mkdir(parents=True)
    (tmp_path / "kernel-patch" / "6.12" / "series").write_text(
        "# queue\n\n0001-a.patch\n0002-b.patch\n"
    )
    layout = kbuild.Layout(repo=tmp_path, cache=tmp_path / "cache")
    assert [p.name for p in layout.series()] == ["0001-a.patch", "0002-b.patch"]


def test_series_key_follows_patch_content(tmp_path: Path) -> None:
    patches = tmp_path / "kernel-patch" / "6.12"
    patches.mkdir(parents=True)
    (patches / "series").write_text("0001-a.patch\n")
    (patches / "0001-a.patch").write_text("one")
    layout = kbuild.Layout(repo=tmp_path, cache=tmp_path / "cache")
    first = kbuild.series_key(layout)
    assert kbuild.series_key(layout) == first
    (patches / "0001-a.patch").write_text("two")
    assert kbuild.series_key(layout) != first


@pytest.mark.parametrize("base", sorted(kbuild.BASES))
def test_cover_letter_restores_its_description(base: str) -> None:
    cover = (REPO / "kernel-patch" / base / "0000-cover-letter.patch").read_text()
    description = kbuild.cover_description(cover)
    subject = re.search(r"^Subject: \[PATCH 0/\d+\] (.*)$", cover, re.M)
    assert subject is not None
    assert description.splitlines()[0] == subject.group(1)
    assert "Patches:" in description
    assert "(6):" not in description and "base-commit" not in description


@pytest.mark.parametrize("base", sorted(kbuild.BASES))
def test_committed_series_is_complete(base: str) -> None:
    layout = kbuild.Layout(repo=REPO, cache=REPO / "unused", base=kbuild.BASES[base])
    names = [p.name for p in layout.series()]
    assert names[0] == "0000-cover-letter.patch"
    assert all(p.exists() for p in layout.series())
    assert sorted(p.name for p in layout.patch_dir.glob("*.patch")) == names


def test_image_key_ignores_the_cover_letter(tmp_path: Path) -> None:
    patches = tmp_path / "kernel-patch" / "6.12"
    patches.mkdir(parents=True)
    (patches / "series").write_text("0000-cover-letter.patch\n0001-a.patch\n")
    (patches / "0000-cover-letter.patch").write_text("cover")
    (patches / "0001-a.patch").write_text("one")
    (tmp_path / "Kconfig.snippet").write_text("CONFIG_A=y\n")
    layout = kbuild.Layout(repo=tmp_path, cache=tmp_path / "cache")
    image, branch = kbuild.image_key(layout, "patched", False), kbuild.series_key(layout)
    (patches / "0000-cover-letter.patch").write_text("better cover")
    assert kbuild.image_key(layout, "patched", False) == image
    assert kbuild.series_key(layout) != branch
    (patches / "0001-a.patch").write_text("two")
    assert kbuild.image_key(layout, "patched", False) != image


def test_wrong_variant_has_its_own_key_tree_and_build_dir(tmp_path: Path) -> None:
    """The wrong kernel's image follows the series and the wrong patch, and it is built in a
    tree and a build directory of its own, so it never dirties the patched build."""
    patches = tmp_path / "kernel-patch" / "6.12"
    patches.mkdir(parents=True)
    (patches / "series").write_text("0001-a.patch\n")
    (patches / "0001-a.patch").write_text("one")
    (tmp_path / "Kconfig.snippet").write_text("CONFIG_A=y\n")
    wrong_dir = tmp_path / "tests" / "vm" / "wrong-kernel"
    wrong_dir.mkdir(parents=True)
    (wrong_dir / "0001-wrong.patch").write_text("wrong")
    layout = kbuild.Layout(repo=tmp_path, cache=tmp_path / "cache")
    assert [p.name for p in layout.wrong_patches()] == ["0001-wrong.patch"]
    wrong = kbuild.image_key(layout, "wrong", False)
    assert wrong != kbuild.image_key(layout, "patched", False)
    (wrong_dir / "0001-wrong.patch").write_text("wronger")
    assert kbuild.image_key(layout, "wrong", False) != wrong
    wrong = kbuild.image_key(layout, "wrong", False)
    (patches / "0001-a.patch").write_text("two")
    assert kbuild.image_key(layout, "wrong", False) != wrong
    assert layout.build_dir(False, "wrong") != layout.build_dir(False, "patched")
    assert layout.build_dir(False, "patched") == layout.build_dir(False)
    assert layout.wrong_src != layout.src


def test_committed_wrong_patch_touches_only_sparse_vmemmap() -> None:
    layout = kbuild.Layout(repo=REPO, cache=REPO / "unused")
    (patch,) = layout.wrong_patches()
    touched = re.findall(r"^diff --git a/(\S+) ", patch.read_text(), re.M)
    assert touched == ["mm/sparse-vmemmap.c"]
