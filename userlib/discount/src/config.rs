//! The configuration: [`Config`] (built by hand or from `DC_*` environment variables) and
//! where the image is kept ([`StoreKind`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::image;
use crate::protocol::Protocol;
#[cfg(feature = "rio")]
use crate::rio_store;
use crate::track::TrackerKind;
use vista::Durability;

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
    /// on riofs or on a file system mounted `-o sync` (ext4 on a Rio block device).
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

/// Whether system calls that bypass the libc wrappers are trapped with Syscall User
/// Dispatch ([`crate::sud`]; `DC_SUD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SudMode {
    /// Never (`DC_SUD=0`): only the wrappers see system calls.
    Off,
    /// If the kernel offers it (the default; a message on stderr otherwise).
    #[default]
    Auto,
    /// Required (`DC_SUD=1`): `init` fails without it.
    On,
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
    /// Diagnostics file (`DC_LOG`): Discount Checking's messages (refused calls, recovery
    /// problems) go there instead of stderr, which a full-screen program owns.
    pub log: Option<PathBuf>,
    /// Real-time signal for the periodic timer.
    pub timer_signal: i32,
    /// Syscall User Dispatch.
    pub sud: SudMode,
    /// Member of a computation whose checkpoints are distributed (the 2PC protocols;
    /// `DC_COORD`, `DC_MEMBER`).
    pub twopc: Option<crate::twopc::Member>,
    /// Negative controls only (`DC_TEST_UNCOORDINATED=1`): treat sends on sockets as not
    /// visible without a coordinator, i.e. a computation without coordination, which the
    /// oracle must reject.
    pub test_uncoordinated: bool,
    /// Negative controls only (`DC_TEST_NO_DRAIN=1`): a distributed checkpoint does not
    /// drain the stream sockets' unread bytes into the checkpoint (`intercept::net`), so
    /// bytes in the kernel at a commit are lost by a rollback; the stream test's
    /// exactly-once oracle must reject it.
    pub test_no_drain: bool,
    /// Peers outside the computation (`DC_OUTSIDE`, `dc run --outside`): under the 2PC
    /// protocols a socket talking to one is the outside world (sends visible, receives
    /// input, no quiesce, gone after a recovery); [`crate::outside`] has the rules.
    pub outside: Vec<crate::outside::Outside>,
    /// Negative controls only (`DC_TEST_OUTSIDE_INTERNAL=1`): [`Config::outside`] (and
    /// the unnamed-`AF_UNIX`-peer rule) is ignored, so outside peers are treated as
    /// members of the computation; the outside test's output oracle must reject it.
    pub test_outside_internal: bool,
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
            log: None,
            timer_signal: 62,
            sud: SudMode::Auto,
            twopc: None,
            test_uncoordinated: false,
            test_no_drain: false,
            outside: Vec::new(),
            test_outside_internal: false,
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
    /// or `1` for `<dir>/trace`), `DC_LOG` (a path for diagnostics), `DC_TIMER_SIG`, `DC_SUD`
    /// (0, 1, auto), `DC_COORD` and `DC_MEMBER` (a member of a computation), `DC_OUTSIDE`
    /// (peers outside the computation, separated by commas: [`crate::outside`]).
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
        if let Some(l) = std::env::var_os("DC_LOG") {
            c.log = (!l.is_empty()).then(|| PathBuf::from(l));
        }
        if let Some(v) = env_num("DC_TIMER_SIG")? {
            c.timer_signal = v as i32;
        }
        match (std::env::var("DC_COORD"), env_num("DC_MEMBER")?) {
            (Ok(a), Some(i)) => {
                let coord = a.parse().map_err(|_| {
                    Error::Config(format!("DC_COORD={a:?} is not an IPv4 address and port"))
                })?;
                let index = u16::try_from(i)
                    .map_err(|_| Error::Config(format!("DC_MEMBER={i} is out of range")))?;
                c.twopc = Some(crate::twopc::Member { coord, index });
            }
            (Err(_), None) => {}
            _ => {
                return Err(Error::Config(
                    "DC_COORD and DC_MEMBER go together (the coordinator's address and this member's index)".into(),
                ))
            }
        }
        c.test_uncoordinated = std::env::var_os("DC_TEST_UNCOORDINATED").is_some_and(|v| v == "1");
        c.test_no_drain = std::env::var_os("DC_TEST_NO_DRAIN").is_some_and(|v| v == "1");
        if let Ok(v) = std::env::var("DC_OUTSIDE") {
            c.outside = crate::outside::parse_list(&v)?;
        }
        c.test_outside_internal =
            std::env::var_os("DC_TEST_OUTSIDE_INTERNAL").is_some_and(|v| v == "1");
        if let Ok(v) = std::env::var("DC_SUD") {
            c.sud = match v.as_str() {
                "0" | "off" => SudMode::Off,
                "1" | "on" => SudMode::On,
                "auto" => SudMode::Auto,
                _ => return Err(Error::Config(format!("DC_SUD={v:?} (0, 1, auto)"))),
            };
        }
        Ok(c)
    }

    pub(crate) fn check(&self) -> Result<()> {
        match (self.protocol.uses_2pc(), self.twopc.is_some()) {
            (true, false) => {
                return Err(Error::Config(format!(
                    "{} needs a coordinator (DC_COORD=ip:port, DC_MEMBER=index; `dc coord`)",
                    self.protocol
                )))
            }
            (false, true) => {
                return Err(Error::Config(format!(
                    "DC_COORD is for the 2PC protocols (cpv-2pc, cbndv-2pc), not {}",
                    self.protocol
                )))
            }
            (true, true) if self.interval.is_some() => {
                return Err(Error::Config(
                    "periodic checkpoints (DC_INTERVAL_MS) cannot be distributed: not with the 2PC protocols".into(),
                ))
            }
            _ => {}
        }
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
    pub(crate) fn open_store(&self) -> Result<Box<dyn image::Store>> {
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
