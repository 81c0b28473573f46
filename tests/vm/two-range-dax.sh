#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Guest side of test_vm_selftests.py: turn the soft-reserved (hmem) region of dax0.0 into
# one dax device, dax0.1, with two ranges, and bind it to device_dax. kmem bound dax0.0 at
# boot; its memory is offlined and removed first. The region is dynamic, so sizes can be
# written: dax0.0 takes the first quarter, dax0.1 the second, dax0.0 gives its quarter
# back and dax0.1 grows into it, which the dax bus allocates as a second range (the free
# space at the start of the region comes first). Prints the device's mappings.
set -eu
DAX=/sys/bus/dax/devices
MEM=/sys/devices/system/memory
region="$(dirname "$(readlink -f "$DAX/dax0.0")")/dax_region"
block=$((16#$(cat "$MEM/block_size_bytes")))

if [ "$(basename "$(readlink -f "$DAX/dax0.0/driver")")" = kmem ]; then
	start=$(($(cat "$DAX/dax0.0/mapping0/start")))
	end=$(($(cat "$DAX/dax0.0/mapping0/end") + 1))
	for ((b = (start + block - 1) / block; b < end / block; b++)); do
		if [ "$(cat "$MEM/memory$b/state")" != offline ]; then
			echo offline > "$MEM/memory$b/state"
		fi
	done
	echo dax0.0 > /sys/bus/dax/drivers/kmem/unbind
fi
piece=$(($(cat "$region/size") / 4 / block * block))
echo 0 > "$DAX/dax0.0/size"
echo "$piece" > "$DAX/dax0.0/size"
echo 1 > "$region/create"
[ "$(cat "$region/seed")" = dax0.1 ] || { echo "seed is $(cat "$region/seed"), not dax0.1"; exit 1; }
echo "$piece" > "$DAX/dax0.1/size"
echo 0 > "$DAX/dax0.0/size"
echo $((2 * piece)) > "$DAX/dax0.1/size"
echo dax0.1 > /sys/bus/dax/drivers/device_dax/new_id
driver=$(basename "$(readlink -f "$DAX/dax0.1/driver")")
ranges=0
for map in "$DAX"/dax0.1/mapping[0-9]*; do
	echo "$(basename "$map") $(cat "$map/start")-$(cat "$map/end")"
	ranges=$((ranges + 1))
done
echo "dax0.1: $ranges ranges, driver $driver"
[ "$ranges" -eq 2 ] && [ "$driver" = device_dax ]
