//! The formats riofs-torture writes: the operation log of `run` and the JSON lines of
//! `dump`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One logged operation, as its `OP` line describes it (paths are relative to the run's
/// directory; symlink targets may be absolute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open(O_CREAT | O_EXCL)` of a new file.
    Create { path: String, mode: u32 },
    /// `mkdir`.
    Mkdir { path: String, mode: u32 },
    /// `symlink(target, path)`.
    Symlink { path: String, target: String },
    /// `pwrite` of `data(seed, len)` at `off` through an `O_NOFOLLOW` open.
    Write {
        path: String,
        off: u64,
        seed: u64,
        len: u64,
    },
    /// `pwrite` through descriptor `fd` (of an unlinked file).
    FdWrite {
        fd: u64,
        off: u64,
        seed: u64,
        len: u64,
    },
    /// One aligned 8-byte store of `data(seed, 8)` at `off` through a shared mapping.
    Mmap { path: String, off: u64, seed: u64 },
    /// `ftruncate`.
    Truncate { path: String, size: u64 },
    /// `utimensat(AT_SYMLINK_NOFOLLOW)`: the modification time `mtime.mns`.
    Utimes { path: String, mtime: i64, mns: i64 },
    /// `fchmod` of an `O_NOFOLLOW` open.
    Chmod { path: String, mode: u32 },
    /// `fsync` (changes nothing the model sees).
    Fsync { path: String },
    /// `unlink`.
    Unlink { path: String },
    /// Open, then `unlink`, keeping the descriptor as `fd`.
    UnlinkOpen { path: String, fd: u64 },
    /// `close` of descriptor `fd`.
    FdClose { fd: u64 },
    /// `rmdir`.
    Rmdir { path: String },
    /// `link(path, to)`.
    Link { path: String, to: String },
    /// `rename(path, to)`.
    Rename { path: String, to: String },
    /// `renameat2(path, to, RENAME_EXCHANGE)`.
    Exchange { path: String, to: String },
}

impl Op {
    /// Whether the operation may change the tree (everything but `fsync`).
    pub fn is_change(&self) -> bool {
        !matches!(self, Op::Fsync { .. })
    }

    /// The operation of one `OP` line's JSON object.
    pub fn from_json(j: &str) -> Result<Op, String> {
        let v: Value = serde_json::from_str(j).map_err(|e| e.to_string())?;
        let o = v.as_object().ok_or("not an object")?;
        let s = |k: &str| -> Result<String, String> {
            o.get(k)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or(format!("{k} is not a string"))
        };
        let u = |k: &str| -> Result<u64, String> {
            o.get(k)
                .and_then(Value::as_u64)
                .ok_or(format!("{k} is not an unsigned integer"))
        };
        let i = |k: &str| -> Result<i64, String> {
            o.get(k)
                .and_then(Value::as_i64)
                .ok_or(format!("{k} is not an integer"))
        };
        let mode = || -> Result<u32, String> {
            u32::try_from(u("mode")?).map_err(|_| "mode out of range".to_string())
        };
        Ok(match s("op")?.as_str() {
            "create" => Op::Create {
                path: s("path")?,
                mode: mode()?,
            },
            "mkdir" => Op::Mkdir {
                path: s("path")?,
                mode: mode()?,
            },
            "symlink" => Op::Symlink {
                path: s("path")?,
                target: s("target")?,
            },
            "write" => Op::Write {
                path: s("path")?,
                off: u("off")?,
                seed: u("seed")?,
                len: u("len")?,
            },
            "fdwrite" => Op::FdWrite {
                fd: u("fd")?,
                off: u("off")?,
                seed: u("seed")?,
                len: u("len")?,
            },
            "mmap" => Op::Mmap {
                path: s("path")?,
                off: u("off")?,
                seed: u("seed")?,
            },
            "truncate" => Op::Truncate {
                path: s("path")?,
                size: u("size")?,
            },
            "utimes" => Op::Utimes {
                path: s("path")?,
                mtime: i("mtime")?,
                mns: i("mns")?,
            },
            "chmod" => Op::Chmod {
                path: s("path")?,
                mode: mode()?,
            },
            "fsync" => Op::Fsync { path: s("path")? },
            "unlink" => Op::Unlink { path: s("path")? },
            "unlink_open" => Op::UnlinkOpen {
                path: s("path")?,
                fd: u("fd")?,
            },
            "fdclose" => Op::FdClose { fd: u("fd")? },
            "rmdir" => Op::Rmdir { path: s("path")? },
            "link" => Op::Link {
                path: s("path")?,
                to: s("to")?,
            },
            "rename" => Op::Rename {
                path: s("path")?,
                to: s("to")?,
            },
            "exchange" => Op::Exchange {
                path: s("path")?,
                to: s("to")?,
            },
            other => return Err(format!("unknown op {other:?}")),
        })
    }
}

/// One logged operation: its number, what it is, its `OP` line's JSON, and its
/// acknowledged result (`None`: in flight, no `ACK` line).
#[derive(Clone, Debug)]
pub struct Logged {
    /// The operation's number (its index in the log).
    pub n: u64,
    /// The operation.
    pub op: Op,
    /// The JSON the log describes it with.
    pub json: String,
    /// `Some(Ok)`, `Some(Err(errno))`, or `None` for the one in flight.
    pub result: Option<Result<(), i32>>,
}

/// A parsed workload log: operations in order with their acknowledged results.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Every logged operation, in order; only the last may be unacknowledged.
    pub ops: Vec<Logged>,
    /// The `DONE` line was seen: the run finished.
    pub done: bool,
}

impl Log {
    /// The operation in flight (logged, not acknowledged), if any.
    pub fn in_flight(&self) -> Option<&Logged> {
        self.ops.last().filter(|o| o.result.is_none())
    }

    /// The acknowledged operations.
    pub fn acked(&self) -> usize {
        self.ops.iter().filter(|o| o.result.is_some()).count()
    }
}

/// Parses a workload log. Only whole lines count: the last one may have been cut by the
/// crash (an `ACK` cut short is no acknowledgement). Lines other than `OP`, `ACK` and
/// `DONE` (`START`, or other programs' lines on the port) are ignored.
pub fn parse_log(text: &str) -> Result<Log> {
    let mut ops: Vec<Logged> = Vec::new();
    let mut done = false;
    let whole = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    for l in whole.lines() {
        let l = l.trim_end_matches('\r');
        let bad = |why: String| Error::BadLog {
            line: l.to_string(),
            why,
        };
        if let Some(r) = l.strip_prefix("OP ") {
            let (n, j) = r
                .split_once(' ')
                .ok_or_else(|| bad("not OP n json".into()))?;
            let n: u64 = n.parse().map_err(|_| bad("a bad op number".into()))?;
            if n != ops.len() as u64 {
                return Err(bad(format!("op {n} after {} ops", ops.len())));
            }
            if ops.last().is_some_and(|o| o.result.is_none()) {
                return Err(bad(format!("op {n} before the ACK of op {}", n - 1)));
            }
            let op = Op::from_json(j).map_err(bad)?;
            ops.push(Logged {
                n,
                op,
                json: j.to_string(),
                result: None,
            });
        } else if let Some(r) = l.strip_prefix("ACK ") {
            let mut w = r.split(' ');
            let n: u64 = w
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad("no number".into()))?;
            let res = match w.next() {
                Some("ok") => Ok(()),
                Some("err") => Err(w
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad("no errno".into()))?),
                x => return Err(bad(format!("bad result {x:?}"))),
            };
            let last = ops
                .last_mut()
                .ok_or_else(|| bad("an ACK before any OP".into()))?;
            if last.n != n {
                return Err(bad(format!("ACK {n} after OP {}", last.n)));
            }
            if last.result.is_some() {
                return Err(bad(format!("ACK {n} twice")));
            }
            last.result = Some(res);
        } else if l.starts_with("DONE") {
            done = true;
        }
    }
    Ok(Log { ops, done })
}

/// One line per entry in canonical form: `key=value` pairs sorted by key.
pub(crate) fn canon(m: &BTreeMap<&str, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parsed `riofs-torture dump`: its entries' fields (values as strings), sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    entries: Vec<(String, BTreeMap<&'static str, String>)>,
}

/// The fields a dump line may have.
const FIELDS: [&str; 9] = [
    "path", "type", "mode", "nlink", "size", "hash", "group", "target", "mtime",
];

impl Dump {
    /// Parses the dump's JSON lines (blank lines are ignored).
    pub fn parse(text: &str) -> Result<Dump> {
        let mut entries = Vec::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let bad = |why: String| Error::BadDump {
                line: l.to_string(),
                why,
            };
            let v: Value = serde_json::from_str(l).map_err(|e| bad(e.to_string()))?;
            let o: &Map<String, Value> =
                v.as_object().ok_or_else(|| bad("not an object".into()))?;
            let mut m: BTreeMap<&'static str, String> = BTreeMap::new();
            for (k, v) in o {
                let key = FIELDS
                    .iter()
                    .copied()
                    .find(|f| f == k)
                    .ok_or_else(|| bad(format!("unknown dump field {k}")))?;
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => "null".into(),
                    other => other.to_string(),
                };
                m.insert(key, v);
            }
            let path = m
                .get("path")
                .cloned()
                .ok_or_else(|| bad("no path".into()))?;
            entries.push((path, m));
        }
        entries.sort();
        Ok(Dump { entries })
    }

    /// The mode of the root (`.`, the first line).
    pub fn root_mode(&self) -> Result<u32> {
        let bad = |why: &str| Error::BadDump {
            line: format!("{:?}", self.entries.first()),
            why: why.into(),
        };
        let (p, m) = self
            .entries
            .first()
            .ok_or_else(|| bad("the dump lists no root"))?;
        if p != "." {
            return Err(bad("the first entry is not the root"));
        }
        m.get("mode")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| bad("the root has no mode"))
    }

    /// The entries in the model's canonical form (see [`crate::model::Model::render`]),
    /// sorted by path; `mtime` kept only for the `known` paths.
    pub fn render(&self, known: &[String]) -> Vec<String> {
        self.entries
            .iter()
            .map(|(p, m)| {
                if known.contains(p) {
                    canon(m)
                } else {
                    let mut m = m.clone();
                    m.remove("mtime");
                    canon(&m)
                }
            })
            .collect()
    }
}

/// The lines of `want` missing from `got` ("model only") and those of `got` not in `want`
/// ("fs only"), one indented line each.
pub fn diff(want: &[String], got: &[String]) -> String {
    let mut out = String::new();
    for w in want.iter().filter(|w| !got.contains(w)) {
        out.push_str(&format!("  model only: {w}\n"));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        out.push_str(&format!("  fs only:    {g}\n"));
    }
    out
}
