#!/usr/bin/env bash
# make bench-rio: one guest run of rio-bench (see userlib/rio-bench); the table goes to
# standard output and to build/bench-rio.md. Variables: ITERS, DISK_ITERS, RUNS.
# The guest has a persistent-memory region (riovm --pmem) with ext4 -o dax on it: the
# pmem-dax rows.
# shellcheck source=scripts/bench-common.sh
. "$(dirname "$0")/bench-common.sh"
truncate -s 64M "$work/disk.img"
cd "$here/userlib"
echo "[bench-rio] booting the guest; this takes a few minutes under TCG" >&2
# One vCPU, as in bench-fs.sh: cross-vCPU wakeups under TCG cost milliseconds.
./target/release/riovm --cpus 1 --pmem --disk "$work/disk.img" run --timeout 3000 -- \
    "pmem-dax setup /mnt/pmem >&2 && rio-bench --disk /dev/vda --iters ${ITERS:-3000} --disk-iters ${DISK_ITERS:-300} --runs ${RUNS:-3} --pmem /mnt/pmem" \
    | tee "$here/build/bench-rio.md"
