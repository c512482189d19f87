#!/usr/bin/env bash
# make bench-fio: Debian's fio in one guest run on riofs (protection on and off), tmpfs,
# ext4 on a Rio block device and ext4 on a virtio disk (default options): 4 KiB random
# writes and 64 KiB sequential writes, each with fsync=1 and without, and 4 KiB random
# reads, over a file laid out beforehand (every write an overwrite; reads hit whatever
# cache the file system has). IOPS and p50/p99 completion latency, medians of RUNS runs
# of RUNTIME seconds each, IOPS against tmpfs and against ext4 on the disk; and the
# pmem-dax peer (ext4 -o dax on legacy persistent memory, riovm --pmem). Table to
# stdout and build/bench-fio.md; progress on stderr.
# Variables: RUNS (3), RUNTIME (seconds, 3), SIZE (the file, 16M).
# shellcheck source=scripts/bench-common.sh
. "$(dirname "$0")/bench-common.sh"
overlay="$here/build/initramfs-fio.cpio.gz"
if [ ! -f "$overlay" ]; then
    echo "[bench-fio] $overlay is missing: install fio (make setup) and rebuild the initramfs (make initramfs)" >&2
    exit 1
fi
# fio's libraries are in an overlay archive, appended here (the kernel unpacks both).
cat "$here/build/initramfs.cpio" "$overlay" > "$work/initramfs.cpio"
export RIO_INITRAMFS="$work/initramfs.cpio"
truncate -s 256M "$work/disk.img"
mkdir -p "$work/vm"
cd "$here/userlib"
RUNS=${RUNS:-3}
RUNTIME=${RUNTIME:-3}
SIZE=${SIZE:-16M}
guest=$(cat <<SCRIPT
set -e
command -v fio >/dev/null || { echo "fio is not in the guest (the fio overlay archive)" >&2; exit 1; }
R=/tmp/fio.tsv
P() { fs-bench log /dev/ttyS2 "[bench-fio] \$*"; }
COMMON="--ioengine=psync --size=$SIZE --runtime=$RUNTIME --time_based --randrepeat=1 --output-format=json"
one() { # label dir workload fio-options...
    label=\$1; dir=\$2; w=\$3; shift 3
    for r in \$(seq $RUNS); do
        fio --name=b --filename=\$dir/fio.dat \$COMMON "\$@" --output=/tmp/fio.json >/dev/null
        fs-bench fio-record --label "\$label" --workload "\$w" --json /tmp/fio.json --out \$R 2>>/dev/ttyS2
    done
}
all() { # label dir
    P "\$1: laying out the $SIZE file"
    fio --name=b --filename=\$2/fio.dat --ioengine=psync --size=$SIZE --rw=write --bs=1M --output=/tmp/fio.json >/dev/null
    one "\$1" "\$2" "4k randwrite" --rw=randwrite --bs=4k
    one "\$1" "\$2" "4k randwrite fsync=1" --rw=randwrite --bs=4k --fsync=1
    one "\$1" "\$2" "64k seqwrite" --rw=write --bs=64k
    one "\$1" "\$2" "64k seqwrite fsync=1" --rw=write --bs=64k --fsync=1
    one "\$1" "\$2" "4k randread" --rw=randread --bs=4k
    rm -f \$2/fio.dat
}
mkdir -p /mnt/b
P "riofs, protection off"
rio-load protect=0 >/dev/null && rio format >/dev/null
mount -t riofs -o size=40M data /mnt/b
all 'riofs (protection off)' /mnt/b
umount /mnt/b && rio rm data && rmmod rio
P "riofs"
rio-load >/dev/null
mount -t riofs -o size=40M data /mnt/b
all 'riofs' /mnt/b
umount /mnt/b && rio rm data
P "ext4 on Rio"
rio create fs 40M && rio blkdev add fs >/dev/null
mkfs.ext4 -q /dev/riob0 && mount /dev/riob0 /mnt/b
all 'ext4 on Rio' /mnt/b
umount /mnt/b
P "tmpfs"
mkdir -p /tmp/b && all 'tmpfs' /tmp/b
P "ext4 on disk"
mkfs.ext4 -q /dev/vda && mount /dev/vda /mnt/b
all 'ext4 on disk' /mnt/b
umount /mnt/b
P "pmem-dax (ext4 -o dax)"
pmem-dax setup /mnt/pmem >/dev/null
all 'pmem-dax (ext4 -o dax)' /mnt/pmem
umount /mnt/pmem
fs-bench fio-report \$R --base tmpfs --base2 'ext4 on disk'
SCRIPT
)
echo "[bench-fio] booting the guest; 6 file systems x 5 workloads x $RUNS runs of ${RUNTIME}s under TCG" >&2
touch "$work/vm/workload.log"
tail -n +1 -F "$work/vm/workload.log" >&2 2>/dev/null &
tailpid=$!
# One vCPU, as in bench-fs.sh: a cross-vCPU wakeup under TCG costs milliseconds.
{
    echo "fio $(fio --version 2>/dev/null || echo '(host)'), psync, one job, file $SIZE, median of $RUNS runs of ${RUNTIME}s; one vCPU under TCG"
    echo
    ./target/release/riovm --cpus 1 --pmem --disk "$work/disk.img" --workdir "$work/vm" run --timeout 1500 -- "$guest"
} | tee "$here/build/bench-fio.md"
