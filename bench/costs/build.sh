#!/bin/sh
# Build the struct-page meter (memmeter.so, and memmeter-mutant.so with its range end bound
# off by one line) against qemu-plugin.h of the installed QEMU, and the guest program
# (costs-guest, static), into $CACHE/costs/. Prints that directory. -Wall -Wextra -Werror.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${MEMMAP_KMEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memmap-kmem}
inc=$(sh "$here/qemu-plugin-api.sh")
out=$cache/costs
mkdir -p "$out"
cflags="-O2 -Wall -Wextra -Werror"
glib=$(pkg-config --cflags glib-2.0)
# shellcheck disable=SC2086
gcc $cflags -shared -fPIC -I"$inc" $glib -o "$out/memmeter.so.new" "$here/memmeter.c"
# shellcheck disable=SC2086
gcc $cflags -shared -fPIC -DMEMMETER_MUTANT -I"$inc" $glib -o "$out/memmeter-mutant.so.new" \
    "$here/memmeter.c"
# shellcheck disable=SC2086
gcc $cflags -static -o "$out/costs-guest.new" "$here/costs_guest.c"
for f in memmeter.so memmeter-mutant.so costs-guest; do mv "$out/$f.new" "$out/$f"; done
echo "$out"
