#!/bin/sh
# The tracing variant of the patched kernel for `bench/p2_phases.py --trace-kernel`: the
# series (branch memmap-kmem of the cache's 6.12 tree, see `make prepare-series`) in a
# worktree of its own, configured as the test images (tinyconfig + Kconfig.snippet) plus
# bench/trace.config. Prints the bzImage path. One cold build: ~6 min on 2 idle cores.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MEMMAP_KMEM_CACHE:-$HOME/.cache/memmap-kmem}
TREE=$CACHE/src/linux-6.12.117
DIR=$CACHE/bench-trace
SRC=$DIR/linux
OUT=$DIR/out
if [ ! -d "$SRC" ]; then
	git -C "$TREE" worktree add --detach "$SRC" memmap-kmem >&2
fi
mkdir -p "$OUT"
make -s -C "$SRC" O="$OUT" ARCH=x86_64 tinyconfig >&2
"$SRC/scripts/kconfig/merge_config.sh" -m -O "$OUT" "$OUT/.config" \
	"$REPO/Kconfig.snippet" "$REPO/bench/trace.config" >/dev/null
make -s -C "$SRC" O="$OUT" ARCH=x86_64 olddefconfig >&2
for line in $(grep '^CONFIG_' "$REPO/bench/trace.config"); do
	grep -qx "$line" "$OUT/.config" || { echo "trace-kernel.sh: olddefconfig dropped $line" >&2; exit 1; }
done
nice -n 10 make -s -C "$SRC" O="$OUT" ARCH=x86_64 -j"$(nproc)" bzImage >&2
echo "$OUT/arch/x86/boot/bzImage"
