"""The KTAP reader on recorded shapes of KUnit and kselftest output (no VM needed)."""

from __future__ import annotations

from vmtest import ktap

KUNIT_LOG = """\
[    2.000000] KTAP version 1
[    2.000001] 1..2
[    2.000002]     KTAP version 1
[    2.000003]     # Subtest: dax_kmem_memmap
[    2.000004]     # module: kmem
[    2.000005]     1..3
[    2.000006]     ok 1 decide_written_wins
[    2.000007] random: crng init done
[    2.000008]         KTAP version 1
[    2.000009]         # Subtest: parse_words
[    2.000010]         ok 1 on
[    2.000011]         not ok 2 bogus
[    2.000012]     # parse_words: pass:1 fail:1 skip:0 total:2
[    2.000013]     not ok 2 parse_words
[    2.000014]     ok 3 needs_hw # SKIP no CXL
[    2.000015] # dax_kmem_memmap: pass:1 fail:1 skip:1 total:3
[    2.000016] not ok 1 dax_kmem_memmap
[    2.000017]     # Subtest: other_suite
[    2.000018]     KTAP version 1
[    2.000019]     1..2
[    2.000020]     ok 1 only_one
[    2.000021] ok 2 other_suite
"""

KSELFTEST = """\
TAP version 13
1..3
# driver attribute reads back global
ok 1 kmem_attr_reads_global
not ok 2 kmem_attr_rejects_bogus
ok 3 cxl_only # SKIP no cxl device
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
"""


def test_kunit_nesting_and_statuses() -> None:
    report = ktap.parse(KUNIT_LOG)
    cases = {r.name: r.status for r in report.suite("dax_kmem_memmap")}
    assert cases == {
        "dax_kmem_memmap.decide_written_wins": ktap.Status.PASS,
        "dax_kmem_memmap.parse_words": ktap.Status.FAIL,
        "dax_kmem_memmap.needs_hw": ktap.Status.SKIP,
    }
    params = {r.name: r.status for r in report.suite("parse_words")}
    assert params == {
        "dax_kmem_memmap.parse_words.on": ktap.Status.PASS,
        "dax_kmem_memmap.parse_words.bogus": ktap.Status.FAIL,
    }
    assert [r.name for r in report.results if len(r.path) == 1] == [
        "dax_kmem_memmap",
        "other_suite",
    ]
    assert report.missing() == {"other_suite": (2, 1)}


def test_kselftest_flat() -> None:
    report = ktap.parse(KSELFTEST)
    assert report.counts() == {"pass": 1, "fail": 1, "skip": 1}
    assert [r.name for r in report.failed()] == ["kmem_attr_rejects_bogus"]
    assert report.missing() == {}
