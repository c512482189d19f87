#!/usr/bin/env bash
# make bench-fs: the Rio paper's file-system comparison, in one guest run: ext4 on a Rio
# block device, riofs (the Rio file system, every write durable when it returns), ext4 on a
# virtio disk mounted `sync` (write-through), ext4 with default options (delayed writes),
# tmpfs, and the pmem-dax peer: ext4 mounted -o dax on legacy persistent memory (riovm
# --pmem; writes bypass the page cache, no protection). Progress on stderr. Table to
# stdout and build/bench-fs.md.
# Variables: FILES, TRANSACTIONS, RUNS.
# shellcheck source=scripts/bench-common.sh
. "$(dirname "$0")/bench-common.sh"
truncate -s 256M "$work/disk.img"
cd "$here/userlib"
args="--files ${FILES:-300} --transactions ${TRANSACTIONS:-300} --runs ${RUNS:-3}"
guest=$(cat <<SCRIPT
set -e
R=/tmp/results.tsv; T=/tmp/tree
fs-bench make-tree \$T
mkdir -p /mnt/rio /mnt/disk
rio-load >/dev/null && rio format >/dev/null && rio create fs 40M && rio blkdev add fs >/dev/null
mkfs.ext4 -q /dev/riob0 && mount /dev/riob0 /mnt/rio
fs-bench run --label 'ext4 on Rio' --dir /mnt/rio --tree \$T --out \$R $args 2>>/dev/ttyS2
umount /mnt/rio && rio blkdev rm fs && rio rm fs
mount -t riofs -o size=40M data /mnt/rio
fs-bench run --label 'riofs' --dir /mnt/rio --tree \$T --out \$R $args 2>>/dev/ttyS2
umount /mnt/rio && rio rm data
mkfs.ext4 -q /dev/vda
mount -o sync /dev/vda /mnt/disk
fs-bench run --label 'ext4 sync (write-through)' --dir /mnt/disk --tree \$T --out \$R $args 2>>/dev/ttyS2
umount /mnt/disk && mount /dev/vda /mnt/disk
fs-bench run --label 'ext4 default (delayed writes)' --dir /mnt/disk --tree \$T --out \$R $args 2>>/dev/ttyS2
mkdir -p /tmp/fs && fs-bench run --label 'tmpfs' --dir /tmp/fs --tree \$T --out \$R $args 2>>/dev/ttyS2
pmem-dax setup /mnt/pmem >/dev/ttyS2
fs-bench run --label 'pmem-dax (ext4 -o dax)' --dir /mnt/pmem --tree \$T --out \$R $args 2>>/dev/ttyS2
fs-bench report \$R
SCRIPT
)
echo "[bench-fs] booting the guest; several minutes under TCG" >&2
# One vCPU: under TCG a wakeup of a thread on the other vCPU (jbd2 commits, completion
# interrupts) costs milliseconds, an emulator effect that would swamp what is measured
# (small files with fsync on Rio: 1.64 s with 2 vCPUs, 0.23 s with 1).
mkdir -p "$work/vm" && touch "$work/vm/workload.log"
tail -n +1 -F "$work/vm/workload.log" >&2 2>/dev/null &
tailpid=$!
./target/release/riovm --cpus 1 --pmem --disk "$work/disk.img" --workdir "$work/vm" run --timeout 3000 -- "$guest" | tee "$here/build/bench-fs.md"
