# Rio in Rust. `make demo` and `make test` do everything on a fresh machine; both run
# `make setup` first. The kernel build is cached in $(RIO_CACHE) (outside the checkout).
SHELL := /bin/bash
export RIO_CACHE ?= /var/cache/rio-build
export RIO_ROOT := $(CURDIR)
GUEST_TARGET := x86_64-unknown-linux-gnu
CARGO_GUEST := cd userlib && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $(GUEST_TARGET)

.PHONY: test-long all setup kernel kernel-debug module module-debug guest initramfs initramfs-debug test lint demo shell bench-rio bench-vista bench-vistagrams bench-fs bench-fio campaign bench-vista-rio bench-dc bench-dc-apps bench-dc-dist fuzz clean help

all: initramfs

help:
	@echo "make demo       boot the guest, load rio.ko, show it working (runs setup first)"
	@echo "make test       every test: make lint, cargo tests of userlib, then the QEMU tests"
	@echo "make lint       cargo fmt --check and clippy -D warnings (userlib, tests), rustfmt --check of rio_mod, no bare 'as above' SAFETY comments, no import cycle in discount"
	@echo "make setup      install toolchain and sources (Debian packages, crates.io); idempotent"
	@echo "make kernel     build (or reuse) the cached Rust-enabled test kernel"
	@echo "make kernel-debug  the same with lockdep, KASAN and Rust debug checks (qemu/kernel-debug.config)"
	@echo "make module     build rio.ko out of tree"
	@echo "make initramfs  pack busybox, rio.ko and the guest programs"
	@echo "make shell      boot the guest with a shell on this terminal"
	@echo "make bench-rio  durable-write latency: Rio (protection on/off) vs tmpfs vs disk+fdatasync"
	@echo "make bench-vista Vista transactions vs SQLite, redb, LMDB on disk and tmpfs (host)"
	@echo "make bench-vistagrams Vistagrams request/response round trip vs raw UDP, a volatile baseline and TCP+SQLite (host)"
	@echo "make bench-vista-rio Vista on Rio vs SQLite, redb, LMDB on ext4, tmpfs and riofs (guest)"
	@echo "make bench-fs   ext4 on Rio vs ext4 write-through, ext4 default and tmpfs (guest)"
	@echo "make bench-fio  fio IOPS and p50/p99: riofs (protection on/off), tmpfs, ext4 on Rio, ext4 on disk (guest; RUNS, RUNTIME, SIZE)"
	@echo "make bench-dc   Discount Checking: checkpoint latency, cost per page, overheads (host)"
	@echo "make bench-dc-apps the thesis's protocol study (6.2.4) on bc, ed, nvi, sc: commits, run-time ratios, SVG plots (host; DC_APPS_REPS)"
	@echo "make bench-dc-dist computations of several processes (heat, chat) under the seven protocols incl. CPV-2PC/CBNDV-2PC: commits, run-time ratios, SVG plots (host; DC_DIST_REPS)"
	@echo "make fuzz       fuzz /dev/rio (and with RIOFS=1 riofs system calls) from several users against a model, on the debug kernel (DURATION=seconds, SEED, PANIC_EVERY)"
	@echo "make campaign   crash campaign: COUNT runs per fault class and configuration (default 50), JOBS guests at once (default 2)"

setup:
	@bash scripts/setup.sh

kernel: setup
	@bash scripts/kernel.sh fast >/dev/null

kernel-debug: setup
	@bash scripts/kernel.sh debug >/dev/null

module: kernel
	@bash scripts/module.sh fast

module-debug: kernel-debug
	@bash scripts/module.sh debug

guest:
	@$(CARGO_GUEST) -q -p rio-agent -p rio-cli -p rio-check -p rio-bench -p fs-bench -p vista-rio -p dc-demos -p rio-fuzz -p riofs-fsck -p riofs-torture -p vistagrams
	@# dc run and dc-drive for the guest's Discount Checking add-on (dynamically linked).
	@cd userlib && cargo build --release -q -p dc -p dc-drive

initramfs: module guest
	@bash qemu/mkinitramfs.sh $(RIO_CACHE)/kbuild-current

# The debug kernel's initramfs (build/initramfs-debug.cpio): same programs, its own rio.ko.
initramfs-debug: module-debug guest
	@bash qemu/mkinitramfs.sh $(RIO_CACHE)/kbuild-debug-current -debug $(CURDIR)/build/mod-debug

test: setup initramfs initramfs-debug
	@bash scripts/test.sh

# The long QEMU suites (the campaign smoke), kept out of make test's 15 minutes.
test-long: setup initramfs
	@bash scripts/test.sh --long

# Every check runs; the target fails if any found a problem. rio_mod is checked with the
# kernel's own .rustfmt.toml (the kernel source setup unpacked). lint-safety.sh fails on a
# `// SAFETY:` comment that is only a back-reference ("as above") instead of a reason.
lint:
	@fail=0; \
	check() { echo "=== lint: $$*"; "$$@" || { echo "=== lint FAILED: $$*"; fail=1; }; }; \
	check bash -c 'cd userlib && cargo fmt --check'; \
	check bash -c 'cd tests && cargo fmt --check'; \
	check bash -c 'cd userlib && cargo clippy -q --workspace --all-targets -- -D warnings -W clippy::undocumented_unsafe_blocks'; \
	check bash -c 'cd tests && cargo clippy -q --all-targets -- -D warnings'; \
	check bash -c '. scripts/env.sh && rustfmt --edition 2021 --check --config-path "$$KSRC_ORIG/.rustfmt.toml" rio_mod/rio_main.rs rio_mod/riofault.rs'; \
	check bash scripts/lint-safety.sh rio_mod userlib tests; \
	check python3 scripts/modgraph.py userlib/discount/src --check; \
	[ $$fail -eq 0 ] && echo "=== lint: clean"; \
	exit $$fail

demo: setup initramfs
	@cd userlib && cargo run -q --release -p riovm --bin riovm -- demo

shell: setup initramfs
	@cd userlib && cargo run -q --release -p riovm --bin riovm -- shell

bench-rio: setup initramfs
	@bash scripts/bench-rio.sh

bench-fs: setup initramfs
	@bash scripts/bench-fs.sh

bench-fio: setup initramfs
	@bash scripts/bench-fio.sh

COUNT ?= 50
# Guests at once: each takes about one host core under TCG.
JOBS ?= 2
# Configurations (comma-separated; empty: the default four). rio-safe-sync is extra.
CONFIGS ?=
# Runs that lose data they should not keep their evidence here (rio-campaign --explain DIR/RUN).
FAILURES ?= build/campaign-failures
campaign: setup initramfs
	@cd userlib && cargo build -q --release -p rio-campaign
	@userlib/target/release/rio-campaign --count $(COUNT) --jobs $(JOBS) $(if $(CONFIGS),--configs $(CONFIGS)) --results results/campaign.jsonl --table results/campaign.md --keep-failures $(FAILURES)

# Fuzz /dev/rio against the model (rio-fuzz) on the debug kernel (lockdep, KASAN):
# DURATION seconds of seeded runs from SEED; every PANIC_EVERY-th seed ends in a kernel
# panic, a warm reboot, recovery and a check of every object against the model.
DURATION ?= 300
SEED ?= 1
PANIC_EVERY ?= 4
# RIOFS=1: half the operations are riofs system calls on a riofs the run mounts.
RIOFS ?=
fuzz: setup initramfs-debug
	@cd userlib && cargo build -q --release -p rio-fuzz && RIO_KERNEL_FLAVOUR=debug target/release/rio-fuzz-host --duration $(DURATION) --seed-start $(SEED) --panic-every $(PANIC_EVERY) $(if $(RIOFS),--riofs)

bench-dc: setup
	@bash scripts/bench-dc.sh

bench-dc-apps: setup
	@bash scripts/bench-dc-apps.sh

bench-dc-dist: setup
	@bash scripts/bench-dc-dist.sh

bench-vista: setup
	@bash scripts/bench-vista.sh

# Vistagrams round trip, 16 B .. 8 KiB (thesis Figure 4.6); VG_BENCH_RUNS, VG_BENCH_ITERS, VG_BENCH_DIR.
bench-vistagrams: setup
	@cd userlib && cargo bench -q -p vistagrams --bench roundtrip

bench-vista-rio: setup initramfs
	@bash scripts/bench-vista-rio.sh

clean:
	rm -rf build userlib/target tests/target
	@bash -c '[ -f $(RIO_CACHE)/env.mk ] && . scripts/env.sh && make -s -C "$$KSRC_ORIG" O="$$KBUILD" M=$(CURDIR) clean || true'
