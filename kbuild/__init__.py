# SPDX-License-Identifier: GPL-2.0
"""Kernel builds of the kmem memmap_on_memory series, by stage (in the manner of kunit_tool):

bases    the kernel bases and flavours, as data (versions pinned in kernel-patch/bases.lock)
layout   every path in the repository and the cache
proc     running tools: run, git, make, scratch worktrees
debian   Debian's archive: versions served, private apt, downloads, Debian's config
source   linux-source tarballs imported as git trees
series   the series as git work: apply, export, range-diff, test-only trees
config   tinyconfig + fragments, and the check that none was dropped
build    a flavour's image, keyed by its inputs
checks   checkpatch, a build after each patch, the newest base, Debian's config
ktest    KUnit through the kernel's kunit.py
cli      python -m kbuild
"""
