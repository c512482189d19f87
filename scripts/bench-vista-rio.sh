#!/usr/bin/env bash
# make bench-vista-rio: one guest run of `vista-rio bench` (see userlib/vista-rio): Vista on
# Rio against SQLite (WAL, synchronous=FULL and NORMAL), redb and LMDB (heed), each on ext4
# on a virtio disk, on tmpfs, on riofs (ordinary files in the arena) and on ext4 -o dax
# over persistent memory (the pmem-dax peer, riovm --pmem), plus Vista on a file as a
# reference. The markdown table
# goes to standard output and to build/bench-vista-rio.md.
#
# The ext4 image is made on the host (Debian's mkfs.ext4) and mounted in the guest.
# Variables: ROUND_MS (length of one timed round in ms, default 150), ONLY (comma-separated
# system-name filter, e.g. "sqlite,lmdb"; Vista on Rio always runs), CPUS (default 1: under
# TCG a wakeup on the other vCPU costs milliseconds, which would swamp every fsync).
# shellcheck source=scripts/bench-common.sh
. "$(dirname "$0")/bench-common.sh"
mkfs=$(command -v mkfs.ext4 || echo /sbin/mkfs.ext4)
truncate -s 2G "$work/disk.img"
"$mkfs" -q -F "$work/disk.img"
cd "$here/userlib"
mkdir -p "$here/build"
args="--round-ms ${ROUND_MS:-150} --disk-dir /mnt/vista-bench --tmpfs-dir /tmp/vista-bench --riofs-dir /mnt/riofs-bench --pmem-dir /mnt/pmem"
[ -n "${ONLY:-}" ] && args="$args --only $ONLY"
guest="rio-load >/dev/null && rio format >/dev/null && mount -t ext4 /dev/vda /mnt && pmem-dax setup /mnt/pmem >&2 && vista-rio bench $args"
echo "[bench-vista-rio] booting the guest; this takes several minutes under TCG" >&2
./target/release/riovm --cpus "${CPUS:-1}" --memory 1024 --pmem --disk "$work/disk.img" \
    run --timeout 3000 -- "$guest" | tee "$here/build/bench-vista-rio.md"
