//! Model-checked crash consistency of riofs: a guest program (`riofs-torture run`) performs
//! random POSIX operations and logs each one before it starts and after it returns (to the
//! guest's third serial port, which the host reads as `workload.log`); the kernel is
//! panicked at a random point; after the warm reboot and recovery the tree
//! (`riofs-torture dump`) must be exactly what an independent in-memory model of the tree
//! says after the last acknowledged operation, or after the one in flight.
//!
//! The model below knows POSIX (Linux) semantics, including the errno of each failure
//! the workload provokes on purpose, and nothing of riofs or of the torture program's
//! state: it only replays the logged operations. Data is `data(seed, len)`, the splitmix64
//! stream the log names; every write is at most 8 KiB (riofs makes a write atomic up to a
//! quarter of its log, which is far larger), so a write in flight is all or nothing.
//!
//! Negative control: `RIOFS_CRASH_BREAK_MODEL=1` makes the model drop the last acknowledged
//! operation that changed the tree; the comparison must then fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rio_qemu_tests::*;

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOTEMPTY: i32 = 39;
const ELOOP: i32 = 40;

// ---- a tiny JSON reader (flat objects of strings, integers, booleans, null) -------------

#[derive(Clone, Debug, PartialEq)]
enum J {
    S(String),
    N(i128),
    B(bool),
    Null,
}

fn parse_obj(s: &str) -> Result<BTreeMap<String, J>, String> {
    let b = s.trim().as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        if b.get(*i) != Some(&b'"') {
            return Err(format!("expected a string at {i} in {s}"));
        }
        *i += 1;
        let mut out = Vec::new();
        loop {
            match b.get(*i) {
                None => return Err(format!("unterminated string in {s}")),
                Some(b'"') => {
                    *i += 1;
                    return String::from_utf8(out).map_err(|e| e.to_string());
                }
                Some(b'\\') => {
                    let c = *b.get(*i + 1).ok_or("bad escape")?;
                    *i += 2;
                    match c {
                        b'"' | b'\\' | b'/' => out.push(c),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'u' => {
                            let h = std::str::from_utf8(b.get(*i..*i + 4).ok_or("bad \\u")?)
                                .map_err(|e| e.to_string())?;
                            let cp = u32::from_str_radix(h, 16).map_err(|e| e.to_string())?;
                            let ch = char::from_u32(cp).ok_or("bad code point")?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            *i += 4;
                        }
                        _ => return Err(format!("bad escape in {s}")),
                    }
                }
                Some(&c) => {
                    out.push(c);
                    *i += 1;
                }
            }
        }
    };
    let mut m = BTreeMap::new();
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err(format!("not an object: {s}"));
    }
    i += 1;
    loop {
        ws(&mut i);
        if b.get(i) == Some(&b'}') {
            break;
        }
        let k = string(&mut i)?;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return Err(format!("expected ':' in {s}"));
        }
        i += 1;
        ws(&mut i);
        let v = match b.get(i) {
            Some(b'"') => J::S(string(&mut i)?),
            Some(b't') if b[i..].starts_with(b"true") => {
                i += 4;
                J::B(true)
            }
            Some(b'f') if b[i..].starts_with(b"false") => {
                i += 5;
                J::B(false)
            }
            Some(b'n') if b[i..].starts_with(b"null") => {
                i += 4;
                J::Null
            }
            _ => {
                let st = i;
                while i < b.len() && (b[i] == b'-' || b[i].is_ascii_digit()) {
                    i += 1;
                }
                let t = std::str::from_utf8(&b[st..i]).map_err(|e| e.to_string())?;
                J::N(t.parse().map_err(|_| format!("bad number {t:?} in {s}"))?)
            }
        };
        m.insert(k, v);
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return Err(format!("expected ',' or '}}' in {s}")),
        }
    }
    Ok(m)
}

/// One logged operation's arguments.
#[derive(Clone, Debug)]
struct Args(BTreeMap<String, J>);

impl Args {
    fn s(&self, k: &str) -> String {
        match self.0.get(k) {
            Some(J::S(s)) => s.clone(),
            v => panic!("op {:?}: {k} is {v:?}, not a string", self.0),
        }
    }
    fn n(&self, k: &str) -> i128 {
        match self.0.get(k) {
            Some(J::N(n)) => *n,
            v => panic!("op {:?}: {k} is {v:?}, not a number", self.0),
        }
    }
    fn u(&self, k: &str) -> u64 {
        u64::try_from(self.n(k)).expect("a u64")
    }
    fn op(&self) -> String {
        self.s("op")
    }
}

// ---- the specification of the data and the hash (as the torture program documents) ----

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- the model -----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        /// Known only after utimes and until the next data change.
        mtime: Option<String>,
    },
    Dir {
        mode: u32,
        kids: BTreeMap<String, u64>,
    },
    Sym {
        target: String,
    },
}

#[derive(Clone, Debug)]
struct Model {
    nodes: BTreeMap<u64, Node>,
    next: u64,
    /// The torture program's open descriptors (of unlinked files): id -> node.
    fds: BTreeMap<u64, u64>,
    /// The directory the log's paths are relative to (absolute symlinks start with it).
    prefix: String,
}

const ROOT: u64 = 1;

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Model {
    fn new(root_mode: u32, prefix: &str) -> Model {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                mode: root_mode,
                kids: BTreeMap::new(),
            },
        );
        Model {
            nodes,
            next: 2,
            fds: BTreeMap::new(),
            prefix: prefix.to_string(),
        }
    }

    fn kids(&self, dir: u64) -> Option<&BTreeMap<String, u64>> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { kids, .. }) => Some(kids),
            _ => None,
        }
    }

    fn kids_mut(&mut self, dir: u64) -> &mut BTreeMap<String, u64> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { kids, .. }) => kids,
            _ => panic!("node {dir} is not a directory"),
        }
    }

    /// Path resolution from `start`: symlinks in the middle of the path are followed
    /// (absolute ones are under `prefix`), the last component only if `follow_last`;
    /// more than 40 symlinks in one resolution is ELOOP.
    fn resolve(
        &self,
        start: u64,
        path: &str,
        follow_last: bool,
        links: &mut u32,
    ) -> Result<u64, i32> {
        let (mut cur, rest) = match path.strip_prefix('/') {
            Some(_) => match path.strip_prefix(self.prefix.as_str()) {
                Some(r) if r.is_empty() || r.starts_with('/') => (ROOT, r.trim_start_matches('/')),
                _ => return Err(ENOENT),
            },
            None => (start, path),
        };
        if rest.is_empty() {
            return Ok(cur);
        }
        let comps: Vec<&str> = rest.split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            let kids = self.kids(cur).ok_or(ENOTDIR)?;
            let next = *kids.get(*c).ok_or(ENOENT)?;
            cur = match self.nodes.get(&next) {
                Some(Node::Sym { target }) if i + 1 < comps.len() || follow_last => {
                    *links += 1;
                    if *links > 40 {
                        return Err(ELOOP);
                    }
                    self.resolve(cur, target, true, links)?
                }
                _ => next,
            };
        }
        Ok(cur)
    }

    /// The node at `path` (its last component not followed).
    fn lookup(&self, path: &str) -> Result<u64, i32> {
        self.resolve(ROOT, path, false, &mut 0)
    }

    /// The directory a new or removed name `path` is in, and the name.
    fn parent<'a>(&self, path: &'a str) -> Result<(u64, &'a str), i32> {
        let (d, n) = split(path);
        let dir = self.resolve(ROOT, d, true, &mut 0)?;
        self.kids(dir).ok_or(ENOTDIR)?;
        Ok((dir, n))
    }

    /// Whether `x` is `top` or inside the directory `top`.
    fn in_subtree(&self, top: u64, x: u64) -> bool {
        if top == x {
            return true;
        }
        self.kids(top)
            .into_iter()
            .flatten()
            .any(|(_, &k)| self.is_dir(k) && self.in_subtree(k, x))
    }

    /// The file an `O_NOFOLLOW` open of `path` reaches: a directory is EISDIR when opened
    /// for writing, a symlink ELOOP.
    fn open_file(&self, path: &str) -> Result<u64, i32> {
        let n = self.lookup(path)?;
        match self.nodes.get(&n) {
            Some(Node::File { .. }) => Ok(n),
            Some(Node::Dir { .. }) => Err(EISDIR),
            _ => Err(ELOOP),
        }
    }

    fn is_dir(&self, n: u64) -> bool {
        matches!(self.nodes.get(&n), Some(Node::Dir { .. }))
    }

    fn add(&mut self, node: Node) -> u64 {
        let id = self.next;
        self.next += 1;
        self.nodes.insert(id, node);
        id
    }

    fn file_mut(&mut self, n: u64) -> Result<(&mut Vec<u8>, &mut Option<String>), i32> {
        match self.nodes.get_mut(&n) {
            Some(Node::File { data, mtime, .. }) => Ok((data, mtime)),
            Some(Node::Dir { .. }) => Err(EISDIR),
            _ => Err(ELOOP),
        }
    }

    fn write(&mut self, n: u64, off: u64, bytes: &[u8]) -> Result<(), i32> {
        let (d, mtime) = self.file_mut(n)?;
        let off = off as usize;
        if d.len() < off + bytes.len() {
            d.resize(off + bytes.len(), 0);
        }
        d[off..off + bytes.len()].copy_from_slice(bytes);
        *mtime = None;
        Ok(())
    }

    /// Applies one operation as Linux would: `Ok` and the change, or the errno and no change.
    fn apply(&mut self, a: &Args) -> Result<(), i32> {
        let op = a.op();
        match op.as_str() {
            "create" | "mkdir" | "symlink" => {
                let path = a.s("path");
                let (dir, name) = self.parent(&path)?;
                if self.kids(dir).is_some_and(|k| k.contains_key(name)) {
                    return Err(EEXIST);
                }
                let node = match op.as_str() {
                    "create" => Node::File {
                        data: Vec::new(),
                        mode: a.n("mode") as u32,
                        mtime: None,
                    },
                    "mkdir" => Node::Dir {
                        mode: a.n("mode") as u32,
                        kids: BTreeMap::new(),
                    },
                    _ => Node::Sym {
                        target: a.s("target"),
                    },
                };
                let id = self.add(node);
                self.kids_mut(dir).insert(name.to_string(), id);
                Ok(())
            }
            "write" => {
                let n = self.open_file(&a.s("path"))?;
                self.write(n, a.u("off"), &data(a.u("seed"), a.u("len") as usize))
            }
            "fdwrite" => {
                let n = *self
                    .fds
                    .get(&a.u("fd"))
                    .expect("a descriptor the log opened");
                self.write(n, a.u("off"), &data(a.u("seed"), a.u("len") as usize))
            }
            "mmap" => {
                let n = self.open_file(&a.s("path"))?;
                self.write(n, a.u("off"), &data(a.u("seed"), 8))
            }
            "truncate" => {
                let n = self.open_file(&a.s("path"))?;
                let (d, mtime) = self.file_mut(n)?;
                d.resize(a.u("size") as usize, 0);
                *mtime = None;
                Ok(())
            }
            "utimes" => {
                // AT_SYMLINK_NOFOLLOW: a symlink's or directory's own times, which the
                // dump does not show.
                let n = self.lookup(&a.s("path"))?;
                if let Some(Node::File { mtime, .. }) = self.nodes.get_mut(&n) {
                    *mtime = Some(format!("{}.{:09}", a.n("mtime"), a.n("mns")));
                }
                Ok(())
            }
            "chmod" => {
                let n = self.lookup(&a.s("path"))?;
                // An O_NOFOLLOW open (read-only: directories too), then fchmod.
                match self.nodes.get_mut(&n) {
                    Some(Node::File { mode, .. }) | Some(Node::Dir { mode, .. }) => {
                        *mode = a.n("mode") as u32 & 0o7777;
                        Ok(())
                    }
                    _ => Err(ELOOP),
                }
            }
            "fsync" => self.open_file(&a.s("path")).map(drop),
            "unlink" | "unlink_open" => {
                let path = a.s("path");
                let n = if op == "unlink_open" {
                    self.open_file(&path)?
                } else {
                    self.lookup(&path)?
                };
                if self.is_dir(n) {
                    return Err(EISDIR);
                }
                let (dir, name) = self.parent(&path)?;
                self.kids_mut(dir).remove(name);
                if op == "unlink_open" {
                    self.fds.insert(a.u("fd"), n);
                }
                Ok(())
            }
            "fdclose" => {
                self.fds.remove(&a.u("fd"));
                Ok(())
            }
            "rmdir" => {
                let path = a.s("path");
                let n = self.lookup(&path)?;
                match self.kids(n) {
                    None => return Err(ENOTDIR),
                    Some(k) if !k.is_empty() => return Err(ENOTEMPTY),
                    Some(_) => {}
                }
                let (dir, name) = self.parent(&path)?;
                self.kids_mut(dir).remove(name);
                Ok(())
            }
            "link" => {
                let (from, to) = (a.s("path"), a.s("to"));
                let n = self.lookup(&from)?;
                let (dir, name) = self.parent(&to)?;
                if self.kids(dir).is_some_and(|k| k.contains_key(name)) {
                    return Err(EEXIST);
                }
                if self.is_dir(n) {
                    return Err(EPERM);
                }
                self.kids_mut(dir).insert(name.to_string(), n);
                Ok(())
            }
            "rename" => {
                let (from, to) = (a.s("path"), a.s("to"));
                // Both parents first, then the names (do_renameat2).
                let (odir, oname) = self.parent(&from)?;
                let (ndir, nname) = self.parent(&to)?;
                let n = *self.kids(odir).and_then(|k| k.get(oname)).ok_or(ENOENT)?;
                let target = self.kids(ndir).and_then(|k| k.get(nname)).copied();
                // lock_rename's traps: the source an ancestor of the target's directory
                // (EINVAL), or the target an ancestor of the source (ENOTEMPTY).
                if odir != ndir {
                    if self.is_dir(n) && self.in_subtree(n, ndir) {
                        return Err(EINVAL);
                    }
                    if let Some(t) = target.filter(|&t| self.is_dir(t)) {
                        if self.in_subtree(t, odir) {
                            return Err(ENOTEMPTY);
                        }
                    }
                }
                if let Some(t) = target {
                    if t == n {
                        return Ok(()); // links of one inode: rename does nothing
                    }
                    match (self.is_dir(n), self.is_dir(t)) {
                        (true, false) => return Err(ENOTDIR),
                        (false, true) => return Err(EISDIR),
                        (true, true) if !self.kids(t).is_some_and(|k| k.is_empty()) => {
                            return Err(ENOTEMPTY)
                        }
                        _ => {}
                    }
                }
                self.kids_mut(odir).remove(oname);
                self.kids_mut(ndir).insert(nname.to_string(), n);
                Ok(())
            }
            other => panic!("unknown op {other}"),
        }
    }

    /// Every reachable (path, node), sorted by path; the root is ".".
    fn paths(&self) -> Vec<(String, u64)> {
        let mut out = vec![(".".to_string(), ROOT)];
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, d)) = stack.pop() {
            for (name, &k) in self.kids(d).into_iter().flatten() {
                let path = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                out.push((path.clone(), k));
                if self.is_dir(k) {
                    stack.push((path, k));
                }
            }
        }
        out.sort();
        out
    }

    /// Inodes the file system holds after recovery (reachable ones; orphans are freed).
    fn inodes(&self) -> usize {
        let mut ids: Vec<u64> = self.paths().into_iter().map(|(_, n)| n).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// Descriptors' files that no name reaches: recovery frees them.
    fn orphans(&self) -> usize {
        let reach: std::collections::BTreeSet<u64> =
            self.paths().into_iter().map(|(_, n)| n).collect();
        let mut o: Vec<u64> = self
            .fds
            .values()
            .copied()
            .filter(|n| !reach.contains(n))
            .collect();
        o.sort_unstable();
        o.dedup();
        o.len()
    }

    /// The tree as the dump shows it: one canonical line per entry; `mtime` only where the
    /// model knows it (`known_mtime` lists those paths).
    fn render(&self) -> (Vec<String>, Vec<String>) {
        let paths = self.paths();
        let mut links: BTreeMap<u64, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut group: BTreeMap<u64, String> = BTreeMap::new();
        for (p, n) in &paths {
            *links.entry(*n).or_default() += 1;
            group.entry(*n).or_insert_with(|| p.clone());
            if let Some(k) = self.kids(*n) {
                let c = k.values().filter(|&&c| self.is_dir(c)).count() as u32;
                subdirs.insert(*n, c);
            }
        }
        let mut lines = Vec::new();
        let mut known = Vec::new();
        for (p, n) in &paths {
            let mut m: BTreeMap<&str, String> = BTreeMap::new();
            m.insert("path", p.clone());
            match &self.nodes[n] {
                Node::Dir { mode, .. } => {
                    m.insert("type", "dir".into());
                    m.insert("mode", mode.to_string());
                    m.insert("nlink", (2 + subdirs[n]).to_string());
                }
                Node::File { data, mode, mtime } => {
                    m.insert("type", "file".into());
                    m.insert("mode", mode.to_string());
                    m.insert("nlink", links[n].to_string());
                    m.insert("size", data.len().to_string());
                    m.insert("hash", format!("{:016x}", fnv(data)));
                    m.insert("group", group[n].clone());
                    if let Some(t) = mtime {
                        m.insert("mtime", t.clone());
                        known.push(p.clone());
                    }
                }
                Node::Sym { target } => {
                    m.insert("type", "symlink".into());
                    m.insert("mode", "511".into());
                    m.insert("nlink", links[n].to_string());
                    m.insert("size", target.len().to_string());
                    m.insert("target", target.clone());
                    m.insert("group", group[n].clone());
                }
            }
            lines.push(canon(&m));
        }
        (lines, known)
    }
}

fn canon(m: &BTreeMap<&str, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The dump's lines in the model's canonical form; `mtime` kept only for `known` paths.
fn render_dump(dump: &str, known: &[String]) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in dump.lines().filter(|l| !l.trim().is_empty()) {
        let o = parse_obj(l).unwrap_or_else(|e| panic!("bad dump line {l:?}: {e}"));
        let mut m: BTreeMap<&str, String> = BTreeMap::new();
        let mut path = String::new();
        for (k, v) in &o {
            let v = match v {
                J::S(s) => s.clone(),
                J::N(n) => n.to_string(),
                J::B(b) => b.to_string(),
                J::Null => "null".into(),
            };
            let k: &str = match k.as_str() {
                "path" => {
                    path = v.clone();
                    "path"
                }
                "type" => "type",
                "mode" => "mode",
                "nlink" => "nlink",
                "size" => "size",
                "hash" => "hash",
                "group" => "group",
                "target" => "target",
                "mtime" => "mtime",
                other => panic!("unknown dump field {other}"),
            };
            m.insert(k, v);
        }
        if !known.contains(&path) {
            m.remove("mtime");
        }
        out.push((path, canon(&m)));
    }
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}

// ---- the log ---------------------------------------------------------------------------

/// One logged operation: its number, arguments and acknowledged result.
type Logged = (u64, Args, Option<Result<(), i32>>);

/// A parsed workload log: operations in order with their acknowledged results
/// (`Some(Ok)`, `Some(Err(errno))`, or `None` for the one in flight).
struct Log {
    ops: Vec<Logged>,
    done: bool,
}

fn parse_log(text: &str) -> Log {
    let mut ops: Vec<Logged> = Vec::new();
    let mut done = false;
    // Only whole lines: the last one may have been cut by the crash.
    let whole = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    for l in whole.lines() {
        let l = l.trim_end_matches('\r');
        if let Some(r) = l.strip_prefix("OP ") {
            let (n, j) = r.split_once(' ').expect("OP n json");
            let n: u64 = n.parse().expect("op number");
            assert_eq!(n, ops.len() as u64, "ops are numbered in order");
            let a = Args(parse_obj(j).unwrap_or_else(|e| panic!("bad op line {l:?}: {e}")));
            ops.push((n, a, None));
        } else if let Some(r) = l.strip_prefix("ACK ") {
            let mut w = r.split(' ');
            let n: u64 = w.next().and_then(|x| x.parse().ok()).expect("ACK n");
            let res = match w.next() {
                Some("ok") => Ok(()),
                Some("err") => Err(w.next().and_then(|x| x.parse().ok()).expect("errno")),
                x => panic!("bad ack {x:?} in {l:?}"),
            };
            let last = ops.last_mut().expect("an ACK after its OP");
            assert_eq!(last.0, n, "ACK {n} after OP {}", last.0);
            assert!(last.2.is_none(), "ACK {n} twice");
            last.2 = Some(res);
        } else if l.starts_with("DONE") {
            done = true;
        }
    }
    Log { ops, done }
}

fn is_change(a: &Args) -> bool {
    a.op() != "fsync"
}

/// Replays the acknowledged operations (checking each result against the model's), and
/// returns the models before and after the one in flight (`None` after: there is none,
/// or the model says it fails).
fn replay(
    root_mode: u32,
    prefix: &str,
    log: &Log,
    break_model: bool,
) -> (Model, Option<Model>, usize) {
    let mut m = Model::new(root_mode, prefix);
    let acked: Vec<_> = log.ops.iter().filter(|o| o.2.is_some()).collect();
    let skip = if break_model {
        acked
            .iter()
            .rev()
            .find(|o| is_change(&o.1) && o.2 == Some(Ok(())))
            .map(|o| o.0)
    } else {
        None
    };
    for (n, a, res) in &log.ops {
        let Some(res) = res else { break };
        if Some(*n) == skip {
            eprintln!("negative control: the model drops acked op {n}: {:?}", a.0);
            continue;
        }
        let mut trial = m.clone();
        let got = trial.apply(a);
        assert_eq!(
            got, *res,
            "op {n} {:?}: the guest got {res:?}, the model says {got:?}",
            a.0
        );
        m = trial;
    }
    let after = log
        .ops
        .last()
        .filter(|o| o.2.is_none())
        .and_then(|(_, a, _)| {
            let mut t = m.clone();
            t.apply(a).ok().map(|()| t)
        });
    (m, after, acked.len())
}

// ---- the guest -------------------------------------------------------------------------

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// The numbers of the newest `riofs: mounted:` console line after `from`: inodes in use,
/// records undone, orphans freed, leaked blocks.
fn mount_report(vm: &Vm, from: usize) -> (u64, u64, u64, u64) {
    // The console can lag the command's exit: wait (bounded) for the whole line.
    let t = Instant::now();
    let l = loop {
        let c = vm.console();
        let l = c
            .get(from..)
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.contains("riofs: mounted:"))
            .map(String::from);
        match l {
            Some(l) if l.contains("leaked blocks") => break l,
            _ if t.elapsed() > Duration::from_secs(10) => {
                panic!("no mount report on the console:\n{}", vm.console_tail(20))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let num = |after: &str| -> u64 {
        let i = l.find(after).unwrap_or_else(|| panic!("{after:?} in {l}"));
        l[..i]
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("a number before {after:?} in {l}"))
    };
    let after_word = |w: &str| -> u64 {
        let i = l.find(w).unwrap_or_else(|| panic!("{w:?} in {l}")) + w.len();
        l[i..]
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("a number after {w:?} in {l}"))
    };
    (
        num(" inodes in use"),
        after_word("recovery undid "),
        after_word("freed "),
        num(" leaked blocks"),
    )
}

fn dump(vm: &mut Vm) -> String {
    let out = vm
        .run_timeout("riofs-torture dump --dir /mnt", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("dump: {e}"));
    assert_eq!(
        out.status,
        0,
        "dump failed: {}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str()
}

fn root_mode(dump: &str) -> u32 {
    let first = dump.lines().next().expect("the dump lists the root");
    let o = parse_obj(first).expect("a dump line");
    assert_eq!(o.get("path"), Some(&J::S(".".into())));
    match o.get("mode") {
        Some(J::N(n)) => *n as u32,
        v => panic!("root mode {v:?}"),
    }
}

/// Where a failing round's evidence goes (kept after the test).
fn evidence_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/riofs-crash");
    let _ = std::fs::create_dir_all(&d);
    d
}

struct Round {
    seed: u64,
    /// Acknowledged operations to wait for before the panic.
    acks: usize,
    /// `Some(us)`: the workload panics the kernel itself, `us` microseconds into operation
    /// `acks` (lands inside an operation far more often than the host's trigger, which
    /// lands mostly while the workload walks the tree or writes its log).
    self_panic: Option<u64>,
}

/// One round: a fresh file system, the workload, a panic, recovery, the comparison.
fn round(
    vm: &mut Vm,
    workdir: &Path,
    k: usize,
    r: &Round,
    break_model: bool,
) -> Result<String, String> {
    let name = format!("tort{k}");
    sh(vm, &format!("mount -t riofs -o size=16M {name} /mnt"));
    let initial = dump(vm);
    let mode = root_mode(&initial);
    let logf = riovm::workload_log_path(workdir);
    let log0 = std::fs::metadata(&logf).map_or(0, |m| m.len() as usize);
    let trigger = match r.self_panic {
        Some(us) => format!("--panic-at {} --panic-delay-us {us}", r.acks),
        None => String::new(),
    };
    vm.spawn(&format!(
        "riofs-torture run --dir /mnt --seed {} --ops 1000000 --log /dev/ttyS2 {trigger} > /tmp/torture.out 2>&1",
        r.seed
    ))
    .unwrap_or_else(|e| panic!("spawn: {e}"));
    let read_log = || {
        let all = std::fs::read(&logf).unwrap_or_default();
        String::from_utf8_lossy(all.get(log0..).unwrap_or_default()).into_owned()
    };
    let t = Instant::now();
    while r.self_panic.is_none() {
        let text = read_log();
        if text.matches("\nACK ").count() >= r.acks {
            break;
        }
        if text.contains("DONE") || t.elapsed() > Duration::from_secs(60) {
            let out = vm
                .run("cat /tmp/torture.out")
                .map(|o| o.stdout_str())
                .unwrap_or_default();
            panic!("the workload did not reach {} acks: {out}\n{text}", r.acks);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if r.self_panic.is_none() {
        vm.panic().unwrap_or_else(|e| panic!("panic: {e}"));
    }
    vm.wait_reboot(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("reboot: {e}"));
    let text = read_log();
    let log = parse_log(&text);
    assert!(!log.done, "the workload finished before the panic");
    load(vm);
    let con = vm.console().len();
    sh(vm, &format!("mount -t riofs {name} /mnt"));
    let rep1 = mount_report(vm, con);
    let after_crash = dump(vm);
    sh(vm, "umount /mnt");
    let con = vm.console().len();
    sh(vm, &format!("mount -t riofs {name} /mnt"));
    let rep2 = mount_report(vm, con);
    let again = dump(vm);
    sh(vm, "umount /mnt");
    sh(vm, &format!("rio rm {name}"));

    let (before, after, acked) = replay(mode, "/mnt", &log, break_model);
    let in_flight = log
        .ops
        .last()
        .filter(|o| o.2.is_none())
        .map(|o| o.1 .0.clone());
    let mut report = format!(
        "seed {} (panic by {}): {} ops logged, {acked} acked, in flight: {in_flight:?}; mount after the crash: \
         {} inodes, undid {} records, freed {} orphans, {} leaked blocks",
        r.seed,
        r.self_panic
            .map_or("the host".to_string(), |us| format!("the workload {us} us into op {}", r.acks)),
        log.ops.len(),
        rep1.0,
        rep1.1,
        rep1.2,
        rep1.3
    );
    let mut matched = None;
    let mut diffs = String::new();
    for (which, m) in [
        ("after the last acked op", Some(&before)),
        ("after the op in flight", after.as_ref()),
    ] {
        let Some(m) = m else { continue };
        let (want, known) = m.render();
        let got = render_dump(&after_crash, &known);
        if got == want {
            matched = Some((which, m));
            break;
        }
        diffs.push_str(&format!(
            "--- against the model {which}:\n{}",
            diff(&want, &got)
        ));
    }
    let fail = |why: String| -> Result<String, String> {
        let d = evidence_dir().join(format!("seed-{}", r.seed));
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::write(d.join("workload.log"), &text);
        let _ = std::fs::write(d.join("dump-after-crash.jsonl"), &after_crash);
        let _ = std::fs::write(d.join("dump-remount.jsonl"), &again);
        let _ = std::fs::write(d.join("why.txt"), &why);
        Err(format!("{why}\n(evidence in {})", d.display()))
    };
    let Some((which, m)) = matched else {
        return fail(format!(
            "{report}\nthe tree after recovery is no model state:\n{diffs}"
        ));
    };
    report.push_str(&format!("; the tree is the model {which}"));
    if again != after_crash {
        return fail(format!(
            "{report}\nrecovery is not idempotent: remounting changed the tree:\n{}",
            diff(
                &after_crash.lines().map(String::from).collect::<Vec<_>>(),
                &again.lines().map(String::from).collect::<Vec<_>>()
            )
        ));
    }
    if rep2.1 != 0 || rep2.2 != 0 || rep2.3 != 0 {
        return fail(format!(
            "{report}\nthe second mount still recovered something: {rep2:?}"
        ));
    }
    if rep1.0 != m.inodes() as u64 || rep2.0 != rep1.0 {
        return fail(format!(
            "{report}\nthe model has {} inodes (open orphans are freed at mount), the file system {} then {}",
            m.inodes(),
            rep1.0,
            rep2.0
        ));
    }
    // Unlinked-while-open files are freed; one more may be the in-flight unlink's inode
    // (unlinked, not yet evicted).
    let orphans = m.orphans() as u64;
    if rep1.2 < orphans || rep1.2 > orphans + u64::from(in_flight.is_some()) {
        return fail(format!(
            "{report}\nthe model had {orphans} open unlinked files at the crash; recovery freed {}",
            rep1.2
        ));
    }
    Ok(report)
}

fn diff(want: &[String], got: &[String]) -> String {
    let mut out = String::new();
    for w in want.iter().filter(|w| !got.contains(w)) {
        out.push_str(&format!("  model only: {w}\n"));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        out.push_str(&format!("  fs only:    {g}\n"));
    }
    out
}

#[test]
fn riofs_recovers_exactly_the_acknowledged_operations() {
    let break_model = std::env::var_os("RIOFS_CRASH_BREAK_MODEL").is_some();
    let rounds: usize = std::env::var("RIOFS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let base: u64 = std::env::var("RIOFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7057_0000);
    let mut t = boot("riofs-crash");
    t.allow_crash();
    let workdir = t.dir.path().to_path_buf();
    let vm = t.vm();
    load(vm);
    let started = Instant::now();
    let mut failures = Vec::new();
    for k in 0..rounds {
        let seed = base + k as u64;
        // A seeded spread of crash points: early (few files) to later (a full tree).
        let acks = 20 + (seed.wrapping_mul(0x9e37_79b9) >> 7) as usize % 400;
        // Every other round the workload panics the kernel itself, 0 to 0.8 ms into an op.
        let self_panic = (k % 2 == 1).then_some((seed.wrapping_mul(0x2545_f491) >> 9) % 800);
        let r = Round {
            seed,
            acks,
            self_panic,
        };
        match round(vm, &workdir, k, &r, break_model) {
            Ok(rep) => eprintln!("round {k}: {rep} ({:?} so far)", started.elapsed()),
            Err(e) => {
                eprintln!("round {k} FAILED: {e}");
                failures.push(e);
            }
        }
    }
    if break_model {
        assert!(
            failures.len() == rounds,
            "negative control: the broken model passed {} of {rounds} rounds",
            rounds - failures.len()
        );
        eprintln!("negative control: every round failed, as it must");
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The model against a real file system (the host's, no VM): the whole log of a run that
/// is not interrupted must replay to exactly the dump. Needs the guest build of
/// riofs-torture (a static binary, `make guest`); skipped without it.
#[test]
fn the_model_agrees_with_the_host_file_system() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../userlib/target/x86_64-unknown-linux-gnu/release/riofs-torture");
    if !bin.exists() {
        eprintln!("skipped: {} is not built (make guest)", bin.display());
        return;
    }
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let logf = dir.path().join("log");
        std::fs::write(&logf, b"").expect("log file");
        let st = std::process::Command::new(&bin)
            .args(["run", "--dir"])
            .arg(&root)
            .args(["--seed", &seed.to_string(), "--ops", "3000", "--log"])
            .arg(&logf)
            .status()
            .expect("run riofs-torture");
        assert!(st.success());
        let out = std::process::Command::new(&bin)
            .args(["dump", "--dir"])
            .arg(&root)
            .output()
            .expect("dump");
        assert!(out.status.success());
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = std::fs::read_to_string(&logf).expect("the log");
        let log = parse_log(&text);
        assert!(log.done);
        let (m, after, acked) = replay(root_mode(&dump), &root.display().to_string(), &log, false);
        assert_eq!(acked, 3000);
        assert!(after.is_none());
        let (want, known) = m.render();
        let got = render_dump(&dump, &known);
        assert_eq!(got, want, "seed {seed}:\n{}", diff(&want, &got));
        assert!(!known.is_empty(), "some mtimes are checked");
    }
}
