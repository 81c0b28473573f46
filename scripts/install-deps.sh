#!/usr/bin/env bash
# Install the Debian packages that building the kernel, the VM tests and the
# shim need. Does nothing (no apt-get update) when all are present already.
set -euo pipefail

packages=(
	# kernel build
	build-essential flex bison bc libelf-dev libssl-dev cpio kmod xz-utils git
	# scripts/checkpatch.pl --codespell, and its scripts/spdxcheck.py
	codespell python3-ply python3-git
	# the VM: QEMU, and the tools that run inside it from the shared host root
	qemu-system-x86 ndctl daxctl libdaxctl1 util-linux
	# bench/p3_check_vs_lsmem.py: peak memory of a command (GNU time)
	time
	# the shim's virtual environment
	python3-venv
	# pyshim report rendered and checked in a real browser (tests/unit/test_report_browser.py)
	chromium
	# userspace/build.py: the patched daxctl (ndctl) and lsmem (util-linux) with meson
	debian-archive-keyring pkg-config meson ninja-build
	libkmod-dev libudev-dev uuid-dev libjson-c-dev libiniparser-dev asciidoctor
	# util-linux's own lsmem test unpacks .tar.bz2 dumps
	bzip2
	# bench/costs/: the QEMU TCG plugin (qemu-plugin.h includes glib.h)
	libglib2.0-dev
)

missing=()
for pkg in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages ${missing[*]}: run as root or install them" >&2
	exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
