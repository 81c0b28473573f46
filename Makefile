# Entry points. `make demo` shows the feature in a VM, `make test` runs every test.
# Kernel trees and images live in a cache outside the repository
# ($MEMMAP_KMEM_CACHE, default ~/.cache/memmap-kmem); see kbuild/layout.py.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# 1: a VM test whose prerequisite is missing fails instead of skipping (CI).
MEMMAP_KMEM_VM ?= 1
export MEMMAP_KMEM_VM

# The kernel bases and their pinned versions: kernel-patch/bases.lock, whose first line is
# the default base. Every kernel, series and VM target works on BASE (make kernel BASE=7.3);
# make test runs them on every base.
BASES := $(shell awk '!/^\#/ && NF {print $$1}' kernel-patch/bases.lock)
DEFAULT_BASE := $(firstword $(BASES))
BASE ?= $(DEFAULT_BASE)
MEMMAP_KMEM_BASE := $(BASE)
export MEMMAP_KMEM_BASE
KBUILD := $(PYTHON) -m kbuild --base $(BASE)
# The deeper checks run on the default base, the LTS kernel distributions ship with kmem as
# a module: Debian's own config, and the modular KASAN/lockdep/kmemleak kernel.
DEEP := $(filter $(DEFAULT_BASE),$(BASE))

.PHONY: all deps venv kernel kernel-stock kernel-debug kernel-wrong vm-test-wrong kernel-broken \
	vm-test-broken prepare-series \
	export-series check-series check-config check-distro kunit kunit-run lint unit man \
	vm-deps vm-test vm-test-long vm-test-debug vm-test-scale range-diff check-range-diff \
	update-bases post post-test test test-base demo bench bench-trace bench-costs vm-test-costs \
	vm-test-costs-mutant kernel-hwpoison vm-test-hwpoison kernel-contig vm-test-contig vm-test-contig-unfixed \
	bench-p2 clean-venv help

all: help

help:
	@echo "make demo           boot the patched kernel in QEMU and show the DRAM saved"
	@echo "make test           lint, unit tests, then test-base on every base ($(BASES))"
	@echo "make test-base      one base (BASE=$(BASE)): series check, KUnit, VM tests"
	@echo "Every target below works on BASE (default $(DEFAULT_BASE); make kernel BASE=7.3):"
	@echo "make kernel         build the patched kernel (prints the bzImage path)"
	@echo "make kernel-stock   build the unpatched base with the same config"
	@echo "make kernel-debug   patched, kmem a module, KASAN, lockdep, kmemleak, faults"
	@echo "make kernel-wrong   the series + a deliberately wrong test-only patch"
	@echo "make vm-test-wrong  the witness must catch the wrong kernel (not in make test)"
	@echo "make kernel-broken  the series + a test-only patch: kmem ignores \"on\""
	@echo "make vm-test-broken the series' kselftest must fail on it (not in make test)"
	@echo "make prepare-series check out the series in the cache tree to edit it"
	@echo "make export-series  write the edited branch back to kernel-patch/"
	@echo "make check-series   checkpatch, git am, build after each patch, newest base"
	@echo "make check-config   fail if olddefconfig drops a Kconfig.snippet line"
	@echo "make check-distro   W=1 build of the touched files under Debian's config"
	@echo "make kunit          KUnit through kunit.py: config, exec on the patched build"
	@echo "make kunit-run      kunit.py run with its own kernel (not in make test)"
	@echo "make vm-test        the VM scenario matrix (pytest -m vm)"
	@echo "make vm-test-debug  scenario 7 on the KASAN/lockdep/kmemleak kernel"
	@echo "make vm-test-long   the setting race, 100 pressure and 20 hot-remove cycles (not in make test)"
	@echo "make range-diff     kernel-patch/range-diff.txt: the series of the bases compared"
	@echo "make post IDENTITY=\"Name <mail>\" [TREE=path]  the 7.3 series as mails in post/"
	@echo "make update-bases   move kernel-patch/bases.lock to the newest versions served"
	@echo "make bench          benchmarks P1-P3, P2 by phase, the 256 GiB scale run"
	@echo "make bench-trace    P2 with the ftrace function profiler (builds a tracing kernel)"
	@echo "make bench-costs    struct-page traffic of the memmap on CXL memory (TCG plugin)"
	@echo "make vm-test-costs  the traffic meter's self-check (and vm-test-costs-mutant)"
	@echo "make vm-test-hwpoison  memory errors in the memmap vs a data page (hwpoison kernel)"
	@echo "make vm-test-scale  256 GiB in 2 GiB blocks, two boots (~5 min; not in make test)"
	@echo "make man            regenerate man/pyshim.1 and completion/ from pyshim's parser"

deps:
	bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

kernel: deps
	$(KBUILD) build --flavour patched

kernel-stock: deps
	$(KBUILD) build --flavour stock

kernel-debug: deps
	$(KBUILD) build --flavour debug

# The series plus tests/vm/wrong-kernel/6.12/*.patch (memmap from DRAM despite the altmap), in a
# tree and build directory of its own; never on branch memmap-kmem.
kernel-wrong: deps
	$(KBUILD) build --flavour wrong

# The series + tests/vm/broken-kmem/6.12/*.patch (kmem "on" ignored), like kernel-wrong.
kernel-broken: deps
	$(KBUILD) build --flavour broken

# One boot: the series' kselftest must fail on the broken kernel. Not part of make test.
vm-test-broken: venv kernel-broken vm-deps
	MEMMAP_KMEM_BROKEN_KERNEL=$$($(KBUILD) build --flavour broken) \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_selftests.py -k broken_kernel

prepare-series: deps
	$(KBUILD) prepare

export-series:
	$(KBUILD) export

check-series: deps
	$(KBUILD) check

check-config: deps
	$(KBUILD) check-config

check-distro: deps
	$(KBUILD) check-distro

kunit: kernel
	$(KBUILD) kunit

kunit-run: deps
	$(KBUILD) kunit --run

# The CXL RAM scenarios need QEMU >= 8.0 (volatile-memdev): bookworm-backports.
vm-deps: deps
	sh tests/vm/setup-backports-qemu.sh

lint: venv
	$(VENV)/bin/ruff check pyshim tests bench kbuild vmtest userspace
	$(VENV)/bin/ruff format --check pyshim tests bench kbuild vmtest userspace
	$(VENV)/bin/mypy pyshim kbuild vmtest userspace/build.py --exclude 'vmtest/guest/'

unit: venv
	$(VPY) -m pytest -q -m 'not vm' tests/unit tests/kbuild tests/vm

# man/pyshim.1 and completion/ from the argparse parser; the unit tests fail when stale.
man: venv
	$(VPY) scripts/from_parser.py

# Guests at a time (pytest-xdist): a TCG guest keeps about one core busy.
VM_JOBS ?= $(shell nproc)

# The module scenarios (test_vm_module.py) boot the modular debug flavour (default base).
vm-test: venv kernel kernel-stock $(if $(DEEP),kernel-debug) vm-deps
	$(VPY) -m pytest -q -m 'vm and not long' -n $(VM_JOBS) tests/vm

# The long runs (not in make test): the 1000-write race of the setting against binds, the
# pressure cycles (100 on the built-in kernel, 5 on the KASAN one) and 20 hot-remove cycles
# (make test runs 5), on the default base.
vm-test-long: venv kernel kernel-debug vm-deps
	MEMMAP_KMEM_PRESSURE_CYCLES=100 $(VPY) -m pytest -q -m 'vm and long' -n $(VM_JOBS) tests/vm

# Scenario 7 (bad input) on the modular kernel with KASAN, lockdep and kmemleak; it fails
# on any report in the kernel log. vm-test already runs the module, race, fault and
# pressure scenarios on this kernel, which cover onlining and removal there.
vm-test-debug: venv kernel-debug kernel-stock vm-deps
	MEMMAP_KMEM_KERNEL=$$($(KBUILD) build --flavour debug) \
	MEMMAP_KMEM_VM_TIMEOUT_SCALE=4 \
	$(VPY) -m pytest -q -m vm tests/vm -k 's7_'

# One boot: the witness must catch what the altmap bookkeeping misses. Not part of make test.
vm-test-wrong: venv kernel-wrong kernel-stock vm-deps
	MEMMAP_KMEM_WRONG_KERNEL=$$($(KBUILD) build --flavour wrong) \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_witness.py -k wrong_kernel

# The series as mails from IDENTITY ("Name <mail>") on the HEAD of TREE (a kernel git tree:
# mm-new or linux-next for a real posting; default: the 7.3 base), checked there, with To/Cc
# from its get_maintainer.pl and the real base-commit, written to POST_DIR. Nothing is sent.
# The downstream 6.12 backport is never posted.
POST_BASE := 7.3
POST_DIR ?= $(CURDIR)/post
post: deps
	@test -n "$(IDENTITY)" || { echo 'make post IDENTITY="Name <mail>" [TREE=path]'; exit 2; }
	$(PYTHON) -m kbuild --base $(POST_BASE) post --identity "$(IDENTITY)" \
		$(if $(TREE),--tree "$(TREE)") --out "$(POST_DIR)"

# make post with a throwaway identity on the 7.3 base, and the mails checked: the lists,
# base-commit, From and Signed-off-by, no placeholder (cheap after check-series BASE=7.3).
post-test: deps
	$(MAKE) --no-print-directory post IDENTITY="CI Throwaway <ci-throwaway@example.invalid>" \
		POST_DIR=$(CURDIR)/.post-test
	$(PYTHON) scripts/check-post.py $(CURDIR)/.post-test "CI Throwaway <ci-throwaway@example.invalid>"

range-diff: deps
	$(PYTHON) -m kbuild range-diff --output kernel-patch/range-diff.txt

check-range-diff: deps
	$(PYTHON) -m kbuild range-diff --output $(CURDIR)/.range-diff.new
	@if cmp -s .range-diff.new kernel-patch/range-diff.txt; then rm -f .range-diff.new; \
	else echo "kernel-patch/range-diff.txt is stale: run make range-diff"; \
	diff -u kernel-patch/range-diff.txt .range-diff.new | head -40; rm -f .range-diff.new; exit 1; fi

update-bases: deps
	$(PYTHON) -m kbuild update-bases

# One base: the stock kernel first; check-series then builds the series' objects after each
# patch on top of it and the whole patched kernel at the tip, which the VM tests boot.
test-base: kernel-stock check-series check-config kunit vm-test \
	$(if $(DEEP),check-distro vm-test-debug)

test: lint unit userspace-test
	set -e; for base in $(BASES); do $(MAKE) --no-print-directory test-base BASE=$$base; done
	$(MAKE) --no-print-directory check-range-diff
	$(MAKE) --no-print-directory post-test

demo: venv kernel vm-deps
	$(VPY) tests/vm/demo.py

bench: venv kernel kernel-stock
	$(VPY) bench/p1_p2.py
	set -e; for base in $(BASES); do $(MAKE) --no-print-directory bench-p2 BASE=$$base; done
	$(VPY) bench/p3_check_vs_lsmem.py
	$(VPY) bench/scale.py
	$(MAKE) --no-print-directory bench-costs

# What the memmap on CXL memory costs (issue 16): struct-page accesses per page handled, the
# LLC model and the modelled extra time; one instrumented TCG boot (bench/costs.py).
# The traffic on the second base too (costs_7.3.json, a table of its own in costs.md).
bench-costs: venv kernel kernel-hwpoison vm-deps
	$(VPY) bench/costs.py
	MEMMAP_KMEM_BASE=7.3 $(VPY) bench/costs.py --out bench/results/costs_7.3.json \
	--kernel $$($(PYTHON) -m kbuild --base 7.3 build --flavour patched)
	$(VPY) bench/hwpoison.py --kernel $$($(KBUILD) build --flavour hwpoison)
	$(VPY) bench/costs_plot.py

# The series with memory-failure handling and the hwpoison injector (kbuild/hwpoison.config).
kernel-hwpoison: deps
	$(KBUILD) build --flavour hwpoison

# zone->contiguous after hot-plug with kernel-patch/<base>-extra/ (issue 16, item 5).
kernel-contig: deps
	$(KBUILD) build --flavour contig

vm-test-contig: venv kernel-contig vm-deps
	MEMMAP_KMEM_VM_CONTIG=1 MEMMAP_KMEM_CONTIG_KERNEL=$$($(KBUILD) build --flavour contig) \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_contig.py

# The same test on the series without the zone->contiguous patch: it must fail (the zone
# never says contiguous again after a hot-plug). Not part of make test.
# The failure must be the zone saying 0 where 1 is due, not a boot or build failure.
vm-test-contig-unfixed: venv vm-deps
	kernel=$$($(KBUILD) build --flavour contig-unfixed) || exit 1; \
	! MEMMAP_KMEM_VM_CONTIG=1 MEMMAP_KMEM_CONTIG_KERNEL=$$kernel \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_contig.py -p no:cacheprovider \
	> .contig-unfixed.log 2>&1; status=$$?; cat .contig-unfixed.log; \
	grep -q "assert 0 == 1" .contig-unfixed.log && rm -f .contig-unfixed.log && exit $$status

# P2 by phase on BASE, before and after the zone->contiguous patch: the series and the
# series + kernel-patch/<base>-extra/, P2_ROUNDS interleaved rounds each, the two boots
# side by side (one host core each) so that both see the same host.
P2_ROUNDS ?= 16
bench-p2: venv kernel kernel-contig vm-deps
	series=$$($(KBUILD) build --flavour patched) && contig=$$($(KBUILD) build --flavour contig) && \
	{ $(VPY) bench/p2_phases.py --rounds $(P2_ROUNDS) --kernel $$series \
	  --workdir /tmp/memmap-kmem-bench/$(BASE) --out bench/results/p2_phases_$(BASE).json & \
	  before=$$!; \
	  $(VPY) bench/p2_phases.py --rounds $(P2_ROUNDS) --kernel $$contig \
	  --workdir /tmp/memmap-kmem-bench/$(BASE)-contig \
	  --out bench/results/p2_phases_$(BASE)_contig.json & \
	  after=$$!; wait $$before; b=$$?; wait $$after; a=$$?; test $$b = 0 && test $$a = 0; }

# Memory errors (issue 16, item 4): poison a memmap pfn and a data pfn on the kmem `on` node.
vm-test-hwpoison: venv kernel-hwpoison vm-deps
	MEMMAP_KMEM_VM_HWPOISON=1 MEMMAP_KMEM_HWPOISON_KERNEL=$$($(KBUILD) build --flavour hwpoison) \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_hwpoison.py

# The meter's self-check (not in make test): the plugin must see exactly the struct pages
# that /proc/kpageflags reads; the mutant (range bound off by one line) must fail it.
vm-test-costs: venv kernel vm-deps
	MEMMAP_KMEM_VM_COSTS=1 $(VPY) -m pytest -q -m vm tests/vm/test_vm_costs.py

vm-test-costs-mutant: venv kernel vm-deps
	! MEMMAP_KMEM_VM_COSTS=1 MEMMAP_KMEM_COSTS_MUTANT=1 \
	$(VPY) -m pytest -q -m vm tests/vm/test_vm_costs.py -p no:cacheprovider

# P2 explained: the same rounds on a tracing build of the series, with the function
# profiler on the hot-plug path; keeps the untraced ratio already in p2_phases.json.
bench-trace: venv
	$(VPY) bench/p2_phases.py --skip-untraced --trace-kernel $$(sh bench/trace-kernel.sh)

# The seed's own scale (issue 9, item 4): two boots of about 2.5 min under TCG.
vm-test-scale: venv kernel kernel-stock vm-deps
	MEMMAP_KMEM_VM_SCALE=1 $(VPY) -m pytest -q -m vm tests/vm/test_vm_scale.py

clean-venv:
	rm -rf $(VENV)

# The companion patches for daxctl (ndctl) and lsmem (util-linux), userspace-patch/: build
# them (userspace/build.py, cached by content) and run them on the recorded sysfs trees, with
# util-linux's own lsmem test.
userspace-build: deps
	$(PYTHON) -m userspace.build build

userspace-test: venv
	MEMMAP_KMEM_USERSPACE=1 $(VPY) -m pytest -q tests/userspace

# A test of the tests (not in userspace-test): lsmem with tests/userspace/broken/ must fail.
userspace-test-broken: venv
	! MEMMAP_KMEM_USERSPACE_EXTRA_PATCH=$(CURDIR)/tests/userspace/broken/lsmem-inverted.patch \
	$(VPY) -m pytest -q tests/userspace -k lsmem -p no:cacheprovider

.PHONY: userspace-build userspace-test userspace-test-broken
