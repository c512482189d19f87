//! The crash campaign, after the Rio paper's: for each configuration and fault class, boot
//! the guest, run a workload that reports every acknowledged write, inject the fault, wait
//! for the crash, reboot (warm, or cold for power loss), recover, and check every file
//! against what the host knows was acknowledged.
//!
//! The `riofs` configuration (module [`riofs`]) runs a POSIX workload on a riofs file
//! system instead, and judges the recovered tree with the riofs crash model.

pub mod riofs;

use std::path::Path;
use std::time::{Duration, Instant};

use riovm::{Disk, Vm, VmConfig, VmError};
use serde::{Deserialize, Serialize};

/// What can stop a run from producing an [`Outcome`] (a harness problem, not a finding:
/// data lost or a failed recovery are part of the outcome).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VM runner failed (start, command, QMP, a wait that ran out).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A host file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The guest workload did not report its first acknowledged writes in time.
    #[error("the workload did not start")]
    WorkloadDidNotStart,
    /// The workload log does not start with the workload's header line.
    #[error("the workload log has no header")]
    NoLogHeader,
    /// A guest command that reads a workload file failed.
    #[error("`{command}` failed (status {status}): {stderr}")]
    Fetch {
        /// The command.
        command: String,
        /// Its exit status.
        status: i32,
        /// Its standard error.
        stderr: String,
    },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The result of this library's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e` and its sources, `: `-separated (as anyhow's `{:#}` prints them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

/// A storage configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Config {
    /// ext4 on a virtio disk mounted `sync`: write-through.
    Ext4Sync,
    /// ext4 with default options: delayed writes.
    Ext4Default,
    /// Rio objects, protection off.
    RioUnprotected,
    /// Rio objects, protection on.
    RioProtected,
    /// riofs in a protected Rio object (backing disk, as rio-protected), under
    /// `riofs-torture`'s random POSIX operations, judged by the riofs crash model (see
    /// [`riofs`]; not in the default campaign: `--configs`).
    Riofs,
    /// Rio objects, protection on, the crash kernel loaded and no background writeback;
    /// after the crash the RAM is discarded, so only what safe sync wrote comes back. It
    /// measures the safe-sync path alone (not in the default campaign: `--configs`).
    RioSafeSync,
    /// The peer a Linux user would pick instead of Rio (issue 18): ext4 mounted `-o dax` on
    /// legacy persistent memory (`memmap=!`, fsdax mode, in the same RAM file as the
    /// arena, so a warm reboot keeps it). The files are written full before the workload,
    /// so that every acknowledged write is an overwrite, which DAX stores into the
    /// persistent memory before `pwrite` returns, as a Rio object's (no block allocation
    /// waiting for the journal). No protection: the `arena` class is stores aimed at the
    /// region through the kernel's direct map of it (riofault.ko's `PMEM`). Not in the
    /// default campaign: `--configs`.
    PmemDax,
    /// pmem-dax with the files sparse, as in the ext4 configurations (memtest without
    /// `--prefill`): a write into a hole allocates its block, and the allocation waits in
    /// the journal's running transaction until the next commit (every 5 s), so a crash
    /// before it loses the write though its data is in the persistent memory. It measures
    /// what the journal costs DAX. Not in the default campaign: `--configs`.
    PmemDaxSparse,
}

impl Config {
    /// ext4 -o dax on the persistent memory (pmem-dax, prefilled or sparse).
    pub fn is_pmem(self) -> bool {
        matches!(self, Config::PmemDax | Config::PmemDaxSparse)
    }
}

impl Config {
    /// The default campaign's, in table order.
    pub const ALL: [Config; 4] = [
        Config::Ext4Sync,
        Config::Ext4Default,
        Config::RioUnprotected,
        Config::RioProtected,
    ];

    /// Every configuration, in table order (the default ones, then the extras).
    pub const EVERY: [Config; 8] = [
        Config::Ext4Sync,
        Config::Ext4Default,
        Config::RioUnprotected,
        Config::RioProtected,
        Config::Riofs,
        Config::RioSafeSync,
        Config::PmemDax,
        Config::PmemDaxSparse,
    ];

    /// Its name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Config::Ext4Sync => "ext4-sync",
            Config::Ext4Default => "ext4-default",
            Config::RioUnprotected => "rio-unprotected",
            Config::RioProtected => "rio-protected",
            Config::Riofs => "riofs",
            Config::RioSafeSync => "rio-safe-sync",
            Config::PmemDax => "pmem-dax",
            Config::PmemDaxSparse => "pmem-dax-sparse",
        }
    }

    /// Rio holds the files (the arena, with a backing disk).
    pub fn is_rio(self) -> bool {
        matches!(
            self,
            Config::RioUnprotected | Config::RioProtected | Config::RioSafeSync | Config::Riofs
        )
    }
}

/// Fault classes: the guest-side ones of riofault.ko / rio.ko, and the host's.
pub const CLASSES: [&str; 9] = [
    "text", "heap", "stack", "wild", "pointer", "panic", "arena", "reset", "power",
];

/// Whether `class` applies to `config` (stores aimed at the arena need an arena, or the
/// persistent memory of pmem-dax). Resets and power cuts never run the crash kernel, so
/// they do not apply to the safe-sync configuration.
pub fn applies(config: Config, class: &str) -> bool {
    match config {
        Config::RioSafeSync => !matches!(class, "reset" | "power"),
        Config::PmemDax | Config::PmemDaxSparse => true,
        c => class != "arena" || c.is_rio(),
    }
}

/// The `rio-check inject` class that carries out campaign class `class` on `config`: the
/// `arena` class of pmem-dax is stores into its persistent memory.
pub fn inject_class(config: Config, class: &str) -> &str {
    match (config, class) {
        (Config::PmemDax | Config::PmemDaxSparse, "arena") => "pmem",
        _ => class,
    }
}

/// Where the pmem-dax configuration mounts its file system.
const PMEM_MNT: &str = "/mnt";

/// What one run found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// Configuration.
    pub config: Config,
    /// Fault class.
    pub class: String,
    /// Run number (also the seed).
    pub index: u64,
    /// The guest crashed (or was reset or lost power).
    pub crashed: bool,
    /// Files whose known bytes differ from what was acknowledged.
    pub corrupted_files: u32,
    /// Acknowledged writes with any byte not found.
    pub lost_writes: u32,
    /// Acknowledged writes in all.
    pub acked_writes: u32,
    /// How the data came back: journal, warm-reboot recovery, crash kernel, disk restore.
    pub recovery: String,
    /// Anything unusual.
    pub note: String,
    /// Faults injected before the crash (or in all, if none crashed the guest), as the
    /// guest's console shows them; 0 for the host's faults.
    #[serde(default)]
    pub faults: u32,
    /// Of the acknowledged writes lost, how long before the workload was last seen the
    /// oldest one returned (guest milliseconds). Power loss may lose only writes newer than
    /// the last writeback, so for Rio this must stay near `writeback_ms`.
    #[serde(default)]
    pub oldest_loss_ms: Option<u64>,
}

/// Most faults one run injects, as in the Rio paper's campaign, which injected faults of
/// one class until the kernel crashed: a single random bit flip or wild store seldom does.
pub const FAULTS_PER_RUN: u32 = 200;
/// Pause between two faults, so the kernel runs on the damage.
const FAULT_INTERVAL_MS: u64 = 25;
/// How long a guest may live on after its last fault and still count as crashed by it.
const CRASH_GRACE: Duration = Duration::from_secs(6);
/// The note of a run whose guest hung (counted as a crash, reset, recovered).
pub const HUNG: &str = "hung: reset";
/// A guest that takes longer than this to answer a trivial command has hung.
pub(crate) const HANG_TIMEOUT: Duration = Duration::from_secs(20);

/// Faults of `class` one run injects: a panic is one fault; the random classes are
/// injected until a crash, at most [`FAULTS_PER_RUN`].
pub fn faults_for(class: &str) -> u32 {
    if class == "panic" {
        1
    } else {
        FAULTS_PER_RUN
    }
}

/// Faults the guest reported injecting on its console (`rio-check: fault N/M` lines).
fn faults_seen(console: &str) -> u32 {
    console
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("rio-check: fault ")? + "rio-check: fault ".len()..];
            rest.split('/').next()?.trim().parse::<u32>().ok()
        })
        .max()
        .unwrap_or(0)
}

const FILES: u64 = 8;
const FILE_SIZE: u64 = 65536;

fn sh(vm: &mut Vm, cmd: &str) -> Result<String> {
    Ok(vm.sh(cmd)?)
}

fn setup(vm: &mut Vm, config: Config) -> Result<String> {
    Ok(match config {
        Config::Ext4Sync => {
            sh(vm, "mkfs.ext4 -q /dev/vda && mount -o sync /dev/vda /mnt")?;
            "--target /mnt".into()
        }
        Config::Ext4Default => {
            sh(vm, "mkfs.ext4 -q /dev/vda && mount /dev/vda /mnt")?;
            "--target /mnt".into()
        }
        Config::RioSafeSync => {
            sh(vm, "rio-load backing=/dev/vda protect=1 allow_wild_store=1 writeback_ms=0 && rio format && rio crashkernel load --backing /dev/vda")?;
            "--target rio".into()
        }
        Config::Riofs => {
            sh(vm, &riofs::setup_command())?;
            String::new()
        }
        Config::PmemDax | Config::PmemDaxSparse => {
            sh(vm, &format!("pmem-dax setup {PMEM_MNT}"))?;
            let prefill = if config == Config::PmemDax {
                " --prefill"
            } else {
                ""
            };
            format!("--target {PMEM_MNT}{prefill}")
        }
        Config::RioUnprotected | Config::RioProtected => {
            let p = if config == Config::RioProtected { 1 } else { 0 };
            sh(vm, &format!("rio-load backing=/dev/vda protect={p} allow_wild_store=1 writeback_ms=1000 && rio format"))?;
            "--target rio".into()
        }
    })
}

/// Every workload file as the guest now sees it.
fn fetch(vm: &mut Vm, config: Config) -> Result<Vec<Vec<u8>>> {
    let mut files = Vec::new();
    for i in 0..FILES {
        let cmd = if config.is_rio() {
            format!("rio cat mt{i}")
        } else {
            format!("cat /mnt/mt{i}")
        };
        let out = vm.run_timeout(&cmd, HANG_TIMEOUT)?;
        // A file that cannot be read is not a file that lost its writes: say which.
        if out.status != 0 {
            return Err(Error::Fetch {
                command: cmd,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        files.push(out.stdout);
    }
    Ok(files)
}

/// Leaves what the guest gave back next to the workload log (`got-mt<i>.img`), so that a
/// run kept for its losses can be compared byte by byte with the log's expectation.
fn save_fetched(log: &Path, files: &[Vec<u8>]) -> Result<()> {
    for (i, f) in files.iter().enumerate() {
        let p = log.with_file_name(format!("got-mt{i}.img"));
        std::fs::write(&p, f).map_err(Error::io(format!("writing {}", p.display())))?;
    }
    Ok(())
}

/// How rio.ko, just loaded, got the data back (its messages say).
fn rio_recovery_path(vm: &mut Vm) -> Result<&'static str> {
    let dmesg = sh(vm, "dmesg | grep 'rio: '")?;
    Ok(if dmesg.contains("restored") {
        "backing disk"
    } else if dmesg.contains("saved by the crash kernel") {
        "crash kernel"
    } else if dmesg.contains("recovered arena after a crash") {
        "warm reboot"
    } else {
        "none needed"
    })
}

fn recover(vm: &mut Vm, config: Config) -> Result<(String, Vec<Vec<u8>>)> {
    let path = if config.is_rio() {
        sh(vm, "rio-load backing=/dev/vda writeback_ms=0")?;
        rio_recovery_path(vm)?
    } else if config.is_pmem() {
        // Fails after a power cut: the region comes back blank (no fsdax info block).
        sh(vm, &format!("pmem-dax mount {PMEM_MNT}"))?;
        "ext4 journal (pmem)"
    } else {
        sh(vm, "mount /dev/vda /mnt")?;
        "ext4 journal"
    };
    Ok((path.into(), fetch(vm, config)?))
}

/// Counts corrupted files and lost acknowledged writes.
fn score(out: &mut Outcome, exp: &rio_check::memtest::Expected, files: &[Vec<u8>]) {
    out.acked_writes = exp.acked.len() as u32;
    // Corrupted files: any known byte differs (a missing or short file counts).
    for (i, got) in files.iter().enumerate() {
        let bad = got.len() != FILE_SIZE as usize
            || got
                .iter()
                .enumerate()
                .any(|(b, &v)| !exp.unknown[i][b] && v != exp.data[i][b]);
        if bad {
            out.corrupted_files += 1;
        }
    }
    // Lost writes: an acknowledged write with a known byte that is neither what it wrote
    // nor what a later acknowledged write put there.
    let lost = exp.lost(files);
    out.lost_writes = lost.len() as u32;
    out.oldest_loss_ms = lost.iter().filter_map(|&i| exp.age_ms(i)).max();
}

/// Runs one crash: boots in `workdir`, which it leaves behind for inspection. A random
/// class gets [`faults_for`] faults (the campaign's budget).
pub fn run_one(
    base: &VmConfig,
    workdir: &Path,
    config: Config,
    class: &str,
    index: u64,
) -> Result<Outcome> {
    run_one_with_budget(base, workdir, config, class, index, faults_for(class))
}

/// [`run_one`] with at most `faults` faults for the injected classes (ignored for the
/// host's `reset` and `power`). The faults are the same seeded sequence: a larger budget
/// only adds faults after the campaign's last one.
pub fn run_one_with_budget(
    base: &VmConfig,
    workdir: &Path,
    config: Config,
    class: &str,
    index: u64,
    faults: u32,
) -> Result<Outcome> {
    let mut cfg = base.clone();
    if config.is_pmem() {
        cfg = cfg.with_pmem();
    }
    cfg.workdir = workdir.to_path_buf();
    cfg.ram_file = workdir.join("guest-ram");
    let disk = workdir.join("disk.img");
    riovm::create_disk(&disk, 96 << 20)?;
    cfg.disks = vec![Disk { path: disk }];
    let log = riovm::workload_log_path(workdir);
    let _ = std::fs::remove_file(&log);
    let mut out = Outcome {
        config,
        class: class.into(),
        index,
        crashed: false,
        corrupted_files: 0,
        lost_writes: 0,
        acked_writes: 0,
        recovery: String::new(),
        note: String::new(),
        faults: 0,
        oldest_loss_ms: None,
    };
    let mut vm = Vm::start(cfg)?;
    let target = setup(&mut vm, config)?;
    let seed = 0x5eed_0000 + index;
    let mut fs = None;
    if config == Config::Riofs {
        let root_mode = riofs::root_mode(&mut vm).map_err(|e| Error::Fetch {
            command: "riofs-torture dump (of the fresh file system)".into(),
            status: -1,
            stderr: e,
        })?;
        vm.spawn(&riofs::workload_command(seed))?;
        fs = Some(Fs {
            root_mode,
            clock: riofs::AckClock::start(log.clone()),
        });
    } else {
        vm.spawn(&format!(
            "rio-check memtest {target} --seed {seed} --files {FILES} --file-size {FILE_SIZE}"
        ))?;
    }
    let acks = |l: &str| match config {
        Config::Riofs => riofs::acks(l),
        _ => l.matches("\nA ").count(),
    };
    // Let the workload get going: wait for a few acknowledged writes.
    let t = Instant::now();
    while std::fs::read_to_string(&log).map(|l| acks(&l)).unwrap_or(0) < 20 {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(Error::WorkloadDidNotStart);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A panic, reset or power cut comes after a seeded 2 to 4 s of workload, so several
    // writebacks (`writeback_ms=1000`) have run and a power loss has something to keep.
    // The injected faults need no wait: they run for seconds themselves.
    if matches!(class, "panic" | "reset" | "power") {
        std::thread::sleep(Duration::from_millis(2000 + seed % 2000));
    }
    let boot = vm.boot_id().to_string();
    let vm = match class {
        "reset" => {
            fs.as_mut().map(Fs::crashed);
            vm.qmp("system_reset", None)?;
            out.crashed = true;
            vm.wait_reboot(Duration::from_secs(120))?;
            vm
        }
        "power" => {
            fs.as_mut().map(Fs::crashed);
            let cfg = vm.kill()?;
            riovm::discard_ram(&cfg)?;
            out.crashed = true;
            Vm::start(cfg)?
        }
        _ => {
            // The delay lets the agent's STARTED reply out before the kernel may die.
            let n = faults;
            let inject = inject_class(config, class);
            vm.spawn(&format!(
                "sleep 0.2; rio-check inject {inject} --seed {seed} --count {n} \
                 --interval-ms {FAULT_INTERVAL_MS} > /dev/console 2>&1"
            ))?;
            let window = Duration::from_millis(u64::from(n) * FAULT_INTERVAL_MS) + CRASH_GRACE;
            let found = wait_for_crash(&mut vm, window);
            fs.as_mut().map(Fs::crashed);
            out.faults = faults_seen(&vm.console());
            match found {
                true => {
                    out.crashed = true;
                    if !reboots(&mut vm)? {
                        out.note = HUNG.into();
                    }
                }
                false => {
                    // No panic. A guest that no longer answers has hung, which the Rio
                    // paper counted as a crash: reset it (RAM kept) and recover as after
                    // a panic.
                    if let Some(f) = &mut fs {
                        let checked = riofs::stop_workload(&mut vm)
                            .and_then(|()| riofs::check(&mut vm, true));
                        let Ok(rec) = checked else {
                            out.crashed = true;
                            out.note = HUNG.into();
                            vm.qmp("system_reset", None)?;
                            vm.wait_reboot(Duration::from_secs(120))?;
                            return finish(vm, out, config, &log, &boot, fs);
                        };
                        out.note = "no crash".into();
                        let times = f.clock.stop();
                        riofs::score(&mut out, &log, f.root_mode, &rec, &times)?;
                        return Ok(out);
                    }
                    let files = match vm
                        .run_timeout("killall rio-check; sleep 0.5", HANG_TIMEOUT)
                        .map_err(Error::from)
                        .and_then(|_| fetch(&mut vm, config))
                    {
                        Ok(files) => files,
                        Err(_) => {
                            // It stopped answering, or part of it (a file system
                            // deadlocked on corrupted code) did.
                            out.crashed = true;
                            out.note = HUNG.into();
                            vm.qmp("system_reset", None)?;
                            vm.wait_reboot(Duration::from_secs(120))?;
                            return finish(vm, out, config, &log, &boot, fs);
                        }
                    };
                    // The guest lives on: check for silent damage (a fault that corrupts
                    // without crashing is the worst kind).
                    out.note = "no crash".into();
                    let text = std::fs::read_to_string(&log)
                        .map_err(Error::io("reading the workload log"))?;
                    let exp = rio_check::memtest::expected(&text).ok_or(Error::NoLogHeader)?;
                    score(&mut out, &exp, &files);
                    save_fetched(&log, &files)?;
                    if config.is_pmem() {
                        remount_check(&mut vm, &mut out, &exp)?;
                    }
                    return Ok(out);
                }
            }
            vm
        }
    };
    finish(vm, out, config, &log, &boot, fs)
}

/// pmem-dax after a run its faults did not crash: ext4 keeps the metadata it uses in the
/// buffer cache, a copy in RAM, so a store into the region's metadata stays latent while
/// the file system is mounted and shows at the next mount. Unmount (which writes back
/// what is dirty), check with `e2fsck -fn` (its exit status goes into the note), mount
/// again and score the files as that mount sees them: the worse of the two views counts.
fn remount_check(vm: &mut Vm, out: &mut Outcome, exp: &rio_check::memtest::Expected) -> Result<()> {
    fsck_note(vm, out)?;
    let mount = vm.run_timeout(&format!("pmem-dax mount {PMEM_MNT}"), HANG_TIMEOUT)?;
    let files = if mount.status == 0 {
        fetch(vm, Config::PmemDax)
    } else {
        Err(Error::Fetch {
            command: format!("pmem-dax mount {PMEM_MNT}"),
            status: mount.status,
            stderr: mount.stderr_str().trim().into(),
        })
    };
    match files {
        Ok(files) => {
            let mut again = out.clone();
            again.corrupted_files = 0;
            score(&mut again, exp, &files);
            if again.corrupted_files > out.corrupted_files {
                out.note += "; worse after the remount";
            }
            out.corrupted_files = out.corrupted_files.max(again.corrupted_files);
            out.lost_writes = out.lost_writes.max(again.lost_writes);
            out.oldest_loss_ms = out.oldest_loss_ms.max(again.oldest_loss_ms);
        }
        Err(Error::Fetch {
            command, stderr, ..
        }) => {
            out.note += &format!("; after the remount `{command}` failed: {stderr}");
            out.corrupted_files = FILES as u32;
            out.lost_writes = out.acked_writes;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Unmounts pmem-dax's file system and notes what `e2fsck -fn` says of it, if not clean.
fn fsck_note(vm: &mut Vm, out: &mut Outcome) -> Result<()> {
    let fsck = vm.run_timeout(
        &format!("umount {PMEM_MNT} && e2fsck -fn /dev/pmem0 >/dev/null 2>&1"),
        HANG_TIMEOUT * 3,
    )?;
    if fsck.status != 0 {
        out.note += &format!("; e2fsck -fn after umount: exit {}", fsck.status);
    }
    Ok(())
}

/// A riofs run's state: the model's initial root mode, and the clock of its ACK lines.
struct Fs {
    root_mode: u32,
    clock: riofs::AckClock,
}

impl Fs {
    /// The guest died (or is about to): no acknowledgement comes after this.
    fn crashed(&mut self) {
        self.clock.stop();
    }
}

/// How long a crashed guest may take to come back by itself: the panic's own reboot
/// (`panic=1`), or the crash kernel's save and reboot, plus a boot on a loaded host.
const REBOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for a crashed guest to boot again. A kernel can also wedge in its own panic path
/// (a text flip in the delay loop the reboot waits in double-faults forever): then the
/// runner resets it, RAM kept, as a watchdog would, and returns false.
fn reboots(vm: &mut Vm) -> Result<bool> {
    if vm.wait_reboot(REBOOT_TIMEOUT).is_ok() {
        return Ok(true);
    }
    vm.qmp("system_reset", None)?;
    vm.wait_reboot(Duration::from_secs(120))?;
    Ok(false)
}

/// Waits until the console shows the kernel died (true): a panic, or a new kernel booting
/// (an oops goes straight to the crash kernel, without a "Kernel panic" line). False: no
/// crash within `timeout`.
fn wait_for_crash(vm: &mut Vm, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let c = vm.console();
        // A second "Linux version": a new kernel (the crash kernel, or a reboot) is up.
        if c.contains("Kernel panic") || c.matches("Linux version").count() > 1 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the crash and reboot: recover, fetch and score.
fn finish(
    mut vm: Vm,
    mut out: Outcome,
    config: Config,
    log: &Path,
    boot: &str,
    fs: Option<Fs>,
) -> Result<Outcome> {
    if vm.boot_id() == boot {
        out.note = "did not reboot".into();
    }
    if let Some(mut f) = fs {
        let times = f.clock.stop();
        // Loaded as before the crash; then the mount recovers the file system.
        let rec = match sh(&mut vm, riofs::LOAD).and_then(|_| rio_recovery_path(&mut vm)) {
            Ok(path) => {
                out.recovery = path.into();
                riofs::check(&mut vm, false)
            }
            Err(e) => Err(e),
        };
        match rec {
            Ok(rec) => riofs::score(&mut out, log, f.root_mode, &rec, &times)?,
            Err(e) => {
                out.recovery = "failed".into();
                out.note = format!("recovery failed: {}", chain(&e));
                out.corrupted_files = 1;
                riofs::score(
                    &mut out,
                    log,
                    f.root_mode,
                    &riofs::Recovered::default(),
                    &times,
                )?;
            }
        }
        return Ok(out);
    }
    // Safe sync alone: the power fails as soon as the machine is back, so only what the
    // crash kernel wrote to the disk survives.
    let mut saved_by = None;
    if config == Config::RioSafeSync {
        saved_by = Some(if vm.console().contains("rio-crash: saved") {
            "crash kernel"
        } else {
            "nothing (no safe sync)"
        });
        let cfg = vm.kill()?;
        riovm::discard_ram(&cfg)?;
        vm = Vm::start(cfg)?;
    }
    let text = std::fs::read_to_string(log).map_err(Error::io("reading the workload log"))?;
    let exp = rio_check::memtest::expected(&text).ok_or(Error::NoLogHeader)?;
    out.acked_writes = exp.acked.len() as u32;
    let (path, files) = match recover(&mut vm, config) {
        Ok(x) => x,
        Err(e) => {
            out.recovery = "failed".into();
            out.note = format!("recovery failed: {}", chain(&e));
            out.corrupted_files = FILES as u32;
            out.lost_writes = out.acked_writes;
            return Ok(out);
        }
    };
    out.recovery = match saved_by {
        Some(by) => format!("{by}, then {path}"),
        None => path,
    };
    score(&mut out, &exp, &files);
    save_fetched(log, &files)?;
    if config.is_pmem() {
        fsck_note(&mut vm, &mut out)?;
    }
    Ok(out)
}

/// One row of the summary table.
#[derive(Default)]
struct Row {
    runs: u32,
    crashes: u32,
    no_crash: u32,
    corrupted: u32,
    silent: u32,
    lost: u32,
    paths: Vec<String>,
    faults: Vec<u32>,
    oldest_loss_ms: Option<u64>,
    hangs: u32,
}

/// The markdown table of `outcomes`.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| configuration | fault | runs | crashes | faults per crash (median) | no crash (of them silently corrupted) | crashes with corrupted files | acknowledged writes lost in crashes | oldest loss (ms before the crash) | recovery paths |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for config in Config::EVERY {
        for class in CLASSES {
            let mut r = Row::default();
            for o in outcomes
                .iter()
                .filter(|o| o.config == config && o.class == class)
            {
                r.runs += 1;
                if o.crashed {
                    r.crashes += 1;
                    if o.note == HUNG {
                        r.hangs += 1;
                    }
                    if o.faults > 0 {
                        r.faults.push(o.faults);
                    }
                    if o.corrupted_files > 0 {
                        r.corrupted += 1;
                    }
                    r.lost += o.lost_writes;
                    r.oldest_loss_ms = r.oldest_loss_ms.max(o.oldest_loss_ms);
                    if !r.paths.contains(&o.recovery) {
                        r.paths.push(o.recovery.clone());
                    }
                } else {
                    r.no_crash += 1;
                    if o.corrupted_files > 0 {
                        r.silent += 1;
                    }
                }
            }
            if r.runs > 0 {
                r.faults.sort_unstable();
                let faults = match r.faults.get(r.faults.len() / 2) {
                    Some(m) => m.to_string(),
                    None => "-".into(),
                };
                let crashes = match r.hangs {
                    0 => r.crashes.to_string(),
                    h => format!("{} ({h} hung)", r.crashes),
                };
                let oldest = match r.oldest_loss_ms {
                    Some(ms) => ms.to_string(),
                    None => "-".into(),
                };
                s += &format!(
                    "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
                    config.name(),
                    class,
                    r.runs,
                    crashes,
                    faults,
                    r.no_crash,
                    r.silent,
                    r.corrupted,
                    r.lost,
                    oldest,
                    r.paths.join(", ")
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_crashes_and_losses_separately_from_survivors() {
        let o = |crashed, lost, corrupted: u32| Outcome {
            config: Config::RioProtected,
            class: "wild".into(),
            index: 0,
            crashed,
            corrupted_files: corrupted,
            lost_writes: lost,
            acked_writes: 10,
            recovery: "warm reboot".into(),
            note: String::new(),
            faults: if crashed { 3 } else { 20 },
            oldest_loss_ms: (lost > 0).then_some(700 + u64::from(lost)),
        };
        let t = table(&[o(true, 0, 0), o(true, 2, 1), o(false, 0, 0), o(false, 0, 3)]);
        assert!(
            t.contains("| rio-protected | wild | 4 | 2 | 3 | 2 (1) | 1 | 2 | 702 | warm reboot |"),
            "{t}"
        );
        assert!(
            !t.contains("ext4-sync"),
            "no rows for configurations without runs"
        );
    }

    #[test]
    fn the_console_tells_how_many_faults_went_in() {
        let c = "boot\nrio-check: fault 1/20\n[ 3.1] riofault: injecting\nrio-check: fault 2/20\nrio-check: fault 3/2";
        assert_eq!(faults_seen(c), 3);
        assert_eq!(faults_seen("nothing here"), 0);
    }

    #[test]
    fn arena_stores_only_apply_to_rio() {
        assert!(!applies(Config::Ext4Sync, "arena"));
        assert!(applies(Config::RioProtected, "arena"));
        assert!(applies(Config::Ext4Sync, "panic"));
        assert!(applies(Config::RioSafeSync, "arena"));
        assert!(!applies(Config::RioSafeSync, "power"));
    }

    #[test]
    fn pmem_dax_takes_every_class_and_its_arena_is_the_pmem() {
        for class in CLASSES {
            assert!(applies(Config::PmemDax, class), "{class}");
        }
        assert_eq!(inject_class(Config::PmemDax, "arena"), "pmem");
        assert_eq!(inject_class(Config::RioProtected, "arena"), "arena");
        assert_eq!(inject_class(Config::PmemDax, "wild"), "wild");
        assert!(
            !Config::ALL.contains(&Config::PmemDax),
            "not in the default campaign"
        );
        assert_eq!(
            Config::EVERY.iter().find(|c| c.name() == "pmem-dax"),
            Some(&Config::PmemDax)
        );
        assert!(!Config::PmemDax.is_rio());
        assert!(Config::PmemDax.is_pmem() && Config::PmemDaxSparse.is_pmem());
        assert_eq!(inject_class(Config::PmemDaxSparse, "arena"), "pmem");
    }
}
