#!/bin/sh
# build.sh NAME OUT: compiles dc/apps/NAME.c (with libm) into OUT. The one definition of
# the C compiler's command for the applications: the host tests and the benchmark
# (dc_drive::dist::build_app) and the guest's Discount Checking add-on
# (qemu/mkinitramfs.sh) all build them with it.
set -e
exec cc -O1 -o "$2" "$(dirname "$0")/$1.c" -lm
