//! Discount Checking (Lowell and Chen 1998; Lowell's thesis, chapters 5 and 6): failure
//! transparency for single-threaded programs with one call at the start of `main`.
//!
//! ```no_run
//! # fn run() -> discount::Result<()> {
//! discount::init(discount::Config::from_env()?)?; // first line of main
//! // ... the program, unchanged: after a crash, running it again resumes it from its
//! // last checkpoint, with its files, descriptors and signal handlers.
//! # Ok(()) }
//! ```
//!
//! From C: `dc_init()` (configured by environment variables, see [`Config::from_env`]),
//! and optionally `dc_checkpoint()`; header `discount/include/dc.h`.
//!
//! How it works, in one paragraph per part:
//!
//! * **Memory** ([`ckpt`], [`image`], [`layout`], [`alloc`]): the writable static data of
//!   every loaded object, a persistent heap (the Rust global allocator and C `malloc`) and
//!   the main stack are checkpointed into a Vista group: a checkpoint is a Vista
//!   transaction that copies the pages written since the last one into the image, and
//!   recovery is Vista's abort plus a copy back.
//! * **Dirty pages** ([`track`]): userfaultfd asynchronous write-protect + `PAGEMAP_SCAN`.
//! * **Registers** ([`sys`]): a setjmp-like save onto the checkpointed stack.
//! * **Same addresses every run** ([`reexec`]): ASLR off and a re-exec with the first
//!   run's arguments and environment.
//! * **Kernel state** ([`kstate`], [`intercept`]): files and offsets (with a file-data
//!   undo log and delayed unlink), signal handlers and mask, interval timers, `mprotect`,
//!   working directory; recorded by wrapping libc calls, redone on recovery.
//! * **Protocols** ([`protocol`]): CAND, CPVS, CBNDVS, CAND-LOG, CBNDVS-LOG, manual.
//! * **Oracle** ([`oracle`], [`trace`]): event traces and a checker for the commit
//!   invariant (Theorem 2 / Save-work) and for consistent output.
//! * **Where the image lives** ([`StoreKind`]): plain files ([`image::FileStore`],
//!   survives process crashes), or Rio objects ([`rio_store::RioStore`], feature `rio`,
//!   survives kernel crashes when rio.ko is loaded).
//!
//! Limits (see the README): single-threaded; thread-local storage, anonymous `mmap`s,
//! `fork`ed children and memory shared with other processes are not checkpointed; libc
//! calls made inside glibc (stdio) are not intercepted; sockets are not reconnected.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
pub mod ckpt;
mod error;
pub mod image;
pub mod intercept;
pub mod kstate;
pub mod layout;
pub mod oracle;
pub mod protocol;
pub mod reexec;
#[cfg(feature = "rio")]
pub mod rio_store;
pub mod signals;
pub mod sys;
pub mod trace;
pub mod track;
pub mod vdso;
pub mod vol;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use error::{Error, Result};
pub use protocol::Protocol;
pub use track::TrackerKind;
pub use vista::Durability;

/// Where the checkpoint image is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// Plain files in [`Config::dir`] ([`image::FileStore`]): durable across process
    /// crashes (with [`Durability::Msync`], across power loss).
    #[default]
    Files,
    /// Rio objects `<prefix>.m<N>.vista` and `<prefix>.log.vista` of `/dev/rio`
    /// ([`rio_store::RioStore`], feature `rio`): durable across kernel crashes. The plain
    /// files (`exec`, `members`, `grave/`, `trace`) stay in [`Config::dir`], which must be
    /// on a file system mounted `-o sync` (ext4 on a Rio block device).
    Rio {
        /// Object name prefix (1 to 53 printable ASCII characters, no `/`).
        prefix: String,
    },
}

impl FromStr for StoreKind {
    type Err = Error;

    /// `files`, or `rio:<prefix>` (the `DC_STORE` syntax).
    fn from_str(s: &str) -> Result<StoreKind> {
        match s.split_once(':') {
            None if s == "files" => Ok(StoreKind::Files),
            Some(("rio", prefix)) => Ok(StoreKind::Rio {
                prefix: prefix.to_string(),
            }),
            _ => Err(Error::Config(format!(
                "DC_STORE={s:?} (files, or rio:<object prefix>)"
            ))),
        }
    }
}

/// How Discount Checking runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (plain files: for [`StoreKind::Files`] the image too).
    pub dir: PathBuf,
    /// Where the image is kept.
    pub store: StoreKind,
    /// Commit protocol.
    pub protocol: Protocol,
    /// Periodic checkpoints (any protocol).
    pub interval: Option<Duration>,
    /// Dirty-page tracking.
    pub tracker: TrackerKind,
    /// Bytes of virtual address space for the persistent heap.
    pub heap_size: usize,
    /// Bytes of stack the image can hold.
    pub stack_size: usize,
    /// Vista undo log capacity: one checkpoint's dirty pages must fit (4 KB + 24 B each).
    pub log_capacity: usize,
    /// File undo log capacity (before-images of overwritten file data).
    pub fundo_capacity: usize,
    /// Input log capacity (-LOG protocols).
    pub input_capacity: usize,
    /// Vista durability of the image files.
    pub durability: Durability,
    /// Event trace file.
    pub trace: Option<PathBuf>,
    /// Real-time signal for the periodic timer.
    pub timer_signal: i32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            dir: PathBuf::from(".dc"),
            store: StoreKind::Files,
            protocol: Protocol::Manual,
            interval: None,
            tracker: TrackerKind::Uffd,
            heap_size: 16 << 30,
            stack_size: 64 << 20,
            log_capacity: 1 << 30,
            fundo_capacity: 64 << 20,
            input_capacity: 16 << 20,
            durability: Durability::Memory,
            trace: None,
            timer_signal: 62,
        }
    }
}

fn env_num(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::Config(format!("{name}={v:?} is not a number"))),
        Err(_) => Ok(None),
    }
}

impl Config {
    /// Defaults for the Rio store ([`StoreKind::Rio`]) with objects `<prefix>.*` and the
    /// plain files in `dir`. Every byte of a Rio object is resident in the arena, so the
    /// image is sized for a small one (about 17 MiB for a small static program): 8 MiB of
    /// heap, 1 MiB of stack, a 4 MiB undo log, 1 MiB each for the file undo and input logs.
    pub fn rio(prefix: impl Into<String>, dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            store: StoreKind::Rio {
                prefix: prefix.into(),
            },
            heap_size: 8 << 20,
            stack_size: 1 << 20,
            log_capacity: 4 << 20,
            fundo_capacity: 1 << 20,
            input_capacity: 1 << 20,
            ..Config::default()
        }
    }

    /// Defaults overridden by environment variables: `DC_STORE` (`files`, the default, or
    /// `rio:<prefix>`: the image in Rio objects, starting from [`Config::rio`]'s sizes),
    /// `DC_DIR` (default `./.dc-<program>`),
    /// `DC_PROTOCOL` (manual, cand, cpvs, cbndvs, cand-log, cbndvs-log), `DC_INTERVAL_MS`,
    /// `DC_TRACKER` (uffd, compare), `DC_HEAP_MB`, `DC_STACK_MB`, `DC_LOG_MB`,
    /// `DC_FUNDO_MB`, `DC_INPUT_MB`, `DC_DURABILITY` (memory, msync), `DC_TRACE` (a path,
    /// or `1` for `<dir>/trace`), `DC_TIMER_SIG`.
    pub fn from_env() -> Result<Config> {
        let dir = match std::env::var_os("DC_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let name = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "program".into());
                PathBuf::from(format!(".dc-{name}"))
            }
        };
        let mut c = match std::env::var("DC_STORE") {
            Ok(s) => match s.parse::<StoreKind>()? {
                StoreKind::Rio { prefix } => Config::rio(prefix, dir),
                StoreKind::Files => Config {
                    dir,
                    ..Config::default()
                },
            },
            Err(_) => Config {
                dir,
                ..Config::default()
            },
        };
        if let Ok(p) = std::env::var("DC_PROTOCOL") {
            c.protocol = p.parse()?;
        }
        if let Some(ms) = env_num("DC_INTERVAL_MS")? {
            c.interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Ok(t) = std::env::var("DC_TRACKER") {
            c.tracker = t.parse()?;
        }
        if let Some(v) = env_num("DC_HEAP_MB")? {
            c.heap_size = (v as usize) << 20;
        }
        if let Some(v) = env_num("DC_STACK_MB")? {
            c.stack_size = (v as usize) << 20;
        }
        if let Some(v) = env_num("DC_LOG_MB")? {
            c.log_capacity = (v as usize) << 20;
        }
        if let Some(v) = env_num("DC_FUNDO_MB")? {
            c.fundo_capacity = (v as usize) << 20;
        }
        if let Some(v) = env_num("DC_INPUT_MB")? {
            c.input_capacity = (v as usize) << 20;
        }
        if let Ok(d) = std::env::var("DC_DURABILITY") {
            c.durability = match d.as_str() {
                "memory" => Durability::Memory,
                "msync" => Durability::Msync,
                _ => {
                    return Err(Error::Config(format!(
                        "DC_DURABILITY={d:?} (memory, msync)"
                    )))
                }
            };
        }
        if let Ok(t) = std::env::var("DC_TRACE") {
            c.trace = Some(if t == "1" {
                c.dir.join("trace")
            } else {
                PathBuf::from(t)
            });
        }
        if let Some(v) = env_num("DC_TIMER_SIG")? {
            c.timer_signal = v as i32;
        }
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if self.heap_size < (1 << 20) || self.heap_size % 4096 != 0 {
            return Err(Error::Config(
                "heap_size must be a multiple of 4096, >= 1 MiB".into(),
            ));
        }
        if self.stack_size < (1 << 20) {
            return Err(Error::Config("stack_size must be >= 1 MiB".into()));
        }
        if self.log_capacity < (1 << 20) {
            return Err(Error::Config("log_capacity must be >= 1 MiB".into()));
        }
        if let StoreKind::Rio { prefix } = &self.store {
            #[cfg(feature = "rio")]
            rio_store::check_prefix(prefix)?;
            #[cfg(not(feature = "rio"))]
            {
                let _ = prefix;
                return Err(Error::Unsupported(
                    "the Rio store",
                    "discount was built without its `rio` feature".into(),
                ));
            }
        }
        Ok(())
    }

    /// Opens the store the configuration names.
    fn open_store(&self) -> Result<Box<dyn image::Store>> {
        match &self.store {
            StoreKind::Files => Ok(Box::new(image::FileStore::new(&self.dir, self.durability)?)),
            #[cfg(feature = "rio")]
            StoreKind::Rio { prefix } => Ok(Box::new(rio_store::RioStore::new(prefix, &self.dir)?)),
            #[cfg(not(feature = "rio"))]
            StoreKind::Rio { .. } => Err(Error::Unsupported(
                "the Rio store",
                "discount was built without its `rio` feature".into(),
            )),
        }
    }
}

extern "C" fn at_exit() {
    ckpt::finish();
}

/// Makes the calling program recoverable. Call it first in `main`.
///
/// * On the first run: re-executes the program with ASLR off (so this call happens twice;
///   the first process never returns from it), creates the image in `cfg.dir`, takes the
///   first checkpoint and returns `Ok(())`.
/// * After a crash (the image holds a checkpoint the program did not finish from):
///   re-executes the program exactly as it was first started and resumes it from its
///   last checkpoint. This call then does not return (unless that checkpoint was the one
///   taken here).
/// * When the program exits normally the image is marked finished, and the next run
///   starts afresh.
///
/// With `DC_DISABLE=1` in the environment it does nothing.
pub fn init(cfg: Config) -> Result<()> {
    if std::env::var_os("DC_DISABLE").is_some() {
        vol::get().disabled.store(true, Ordering::Release);
        return Ok(());
    }
    if !cfg!(feature = "global") {
        return Err(Error::State(
            "the discount crate was built without its `global` feature",
        ));
    }
    cfg.check()?;
    let v = vol::get();
    if v.active.load(Ordering::Acquire) || !v.rt.load(Ordering::Acquire).is_null() {
        return Err(Error::State("init was already called"));
    }
    let n = layout::threads();
    if n != 1 {
        return Err(Error::Threads(n));
    }
    let store = alloc::internal(|| cfg.open_store())?;
    if !reexec::is_stage1() {
        // The process the user started: re-execute with ASLR off, as first started.
        let valid = ckpt::has_valid_checkpoint(store.as_ref(), &cfg)?;
        let info = if valid {
            let i = reexec::ExecInfo::load(store.dir())?;
            i.check_same_binary()?;
            i
        } else {
            let i = reexec::ExecInfo::current()?;
            i.save(store.dir())?;
            i
        };
        return Err(info.exec());
    }
    if !reexec::aslr_off() {
        return Err(Error::Layout(
            "address-space randomization is still on after the re-exec".into(),
        ));
    }
    if ckpt::has_valid_checkpoint(store.as_ref(), &cfg)? {
        return ckpt::recover(cfg, store);
    }
    // SAFETY: registering a plain extern "C" function with atexit.
    unsafe { libc::atexit(at_exit) };
    ckpt::init_fresh(cfg, store)
}

/// Takes a checkpoint now. Returns `Ok(true)` when this call returns a second time, in a
/// new process, after a crash and recovery. A no-op (`Ok(false)`) when `init` was
/// disabled with `DC_DISABLE`.
pub fn checkpoint() -> Result<bool> {
    if vol::get().disabled.load(Ordering::Acquire) {
        return Ok(false);
    }
    ckpt::take(usize::MAX)
}

/// Whether Discount Checking is running in this process.
pub fn is_active() -> bool {
    vol::get().active.load(Ordering::Acquire)
}

/// Checkpoint counters of this process (not of earlier incarnations).
pub fn stats() -> ckpt::Stats {
    ckpt::rt().map(|rt| rt.stats).unwrap_or_default()
}

/// C entry points.
pub mod capi {
    use super::*;

    /// `int dc_init(void)`: [`init`] with [`Config::from_env`]. Returns 0, or -1 after
    /// printing the error to stderr.
    #[no_mangle]
    pub extern "C" fn dc_init() -> libc::c_int {
        match Config::from_env().and_then(init) {
            Ok(()) => 0,
            Err(e) => {
                sys::diag(&format!("dc_init: {e}"));
                -1
            }
        }
    }

    /// `int dc_checkpoint(void)`: 0 after a checkpoint, 1 when resumed after recovery,
    /// -1 on error.
    #[no_mangle]
    pub extern "C" fn dc_checkpoint() -> libc::c_int {
        match checkpoint() {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(e) => {
                sys::diag(&format!("dc_checkpoint: {e}"));
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds_parse() {
        assert_eq!("files".parse::<StoreKind>().unwrap(), StoreKind::Files);
        assert_eq!(
            "rio:kv".parse::<StoreKind>().unwrap(),
            StoreKind::Rio {
                prefix: "kv".into()
            }
        );
        for bad in ["", "rio", "file", "nvme:x"] {
            assert!(
                matches!(bad.parse::<StoreKind>(), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rio_config_is_small_and_checked() {
        let c = Config::rio("kv", "/mnt/dc");
        if cfg!(not(feature = "rio")) {
            assert!(matches!(c.check(), Err(Error::Unsupported(..))));
            return;
        }
        assert!(c.check().is_ok());
        let image = c.heap_size + c.stack_size + c.log_capacity;
        assert!(image <= 16 << 20, "{image}");
        let mut bad = Config::rio("a b", "/mnt/dc");
        assert!(matches!(bad.check(), Err(Error::Config(_))));
        bad.store = StoreKind::Rio {
            prefix: String::new(),
        };
        assert!(matches!(bad.check(), Err(Error::Config(_))));
    }

    #[cfg(feature = "rio")]
    #[test]
    fn opening_the_rio_store_without_rio_ko_is_a_typed_error() {
        if std::path::Path::new(rio_client::DEFAULT_DEVICE).exists() {
            return; // rio.ko is loaded here: nothing to show
        }
        let dir = tempfile::tempdir().unwrap();
        let e = Config::rio("kv", dir.path()).open_store().unwrap_err();
        assert!(matches!(e, Error::NoRio(_)), "{e}");
    }
}
