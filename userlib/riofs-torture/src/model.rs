//! An independent in-memory model of the tree riofs-torture works on: it knows POSIX
//! (Linux) semantics, including the errno of each failure the workload provokes on purpose,
//! and nothing of riofs or of the torture program's state; it only replays the logged
//! operations. Data is [`data`]`(seed, len)`, the splitmix64 stream the log names; every
//! write is at most 8 KiB (riofs makes a write atomic up to a quarter of its log, which is
//! far larger), so a write in flight is all or nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::{canon, Dump, Log, Op};
use crate::{Error, Result};

/// `EPERM`.
pub const EPERM: i32 = 1;
/// `ENOENT`.
pub const ENOENT: i32 = 2;
/// `EBADF`: a descriptor the log never opened (the model's own answer to a broken log).
pub const EBADF: i32 = 9;
/// `EEXIST`.
pub const EEXIST: i32 = 17;
/// `ENOTDIR`.
pub const ENOTDIR: i32 = 20;
/// `EISDIR`.
pub const EISDIR: i32 = 21;
/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `ENOTEMPTY`.
pub const ENOTEMPTY: i32 = 39;
/// `ELOOP`.
pub const ELOOP: i32 = 40;

// ---- the specification of the data and the hash (as the torture program documents) ----
//
// Written out here on purpose, not imported from rio-prng (which the torture program draws
// its writes from) or from the program: these are the specification the guest's files are
// checked against, so a change to the generator cannot move the model's expectation with
// it. The test at the bottom pins the same reference values as the program's.

/// The bytes of a splitmix64 stream from `seed`, 8 little-endian bytes per step.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
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

/// FNV-1a, 64 bits: the content hash of the dump.
pub fn fnv(bytes: &[u8]) -> u64 {
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

/// The tree: inodes, names, and the torture program's open descriptors.
#[derive(Clone, Debug)]
pub struct Model {
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
    /// An empty tree whose root has `root_mode`, the log's paths relative to `prefix`.
    pub fn new(root_mode: u32, prefix: &str) -> Model {
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

    /// The entries of directory `dir` (ENOTDIR if it is none: callers checked).
    fn kids_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<String, u64>, i32> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { kids, .. }) => Ok(kids),
            _ => Err(ENOTDIR),
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

    /// Applies one operation as Linux would: `Ok` and the change, or the errno (and, as
    /// the kernel's calls do, no change).
    pub fn apply(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Create { path, .. } | Op::Mkdir { path, .. } | Op::Symlink { path, .. } => {
                let (dir, name) = self.parent(path)?;
                if self.kids(dir).is_some_and(|k| k.contains_key(name)) {
                    return Err(EEXIST);
                }
                let node = match op {
                    Op::Create { mode, .. } => Node::File {
                        data: Vec::new(),
                        mode: *mode,
                        mtime: None,
                    },
                    Op::Mkdir { mode, .. } => Node::Dir {
                        mode: *mode,
                        kids: BTreeMap::new(),
                    },
                    Op::Symlink { target, .. } => Node::Sym {
                        target: target.clone(),
                    },
                    _ => return Err(EINVAL),
                };
                let id = self.add(node);
                self.kids_mut(dir)?.insert(name.to_string(), id);
                Ok(())
            }
            Op::Write {
                path,
                off,
                seed,
                len,
            } => {
                let n = self.open_file(path)?;
                self.write(n, *off, &data(*seed, *len as usize))
            }
            Op::FdWrite { fd, off, seed, len } => {
                let n = *self.fds.get(fd).ok_or(EBADF)?;
                self.write(n, *off, &data(*seed, *len as usize))
            }
            Op::Mmap { path, off, seed } => {
                let n = self.open_file(path)?;
                self.write(n, *off, &data(*seed, 8))
            }
            Op::Truncate { path, size } => {
                let n = self.open_file(path)?;
                let (d, mtime) = self.file_mut(n)?;
                d.resize(*size as usize, 0);
                *mtime = None;
                Ok(())
            }
            Op::Utimes { path, mtime, mns } => {
                // AT_SYMLINK_NOFOLLOW: a symlink's or directory's own times, which the
                // dump does not show.
                let n = self.lookup(path)?;
                if let Some(Node::File { mtime: t, .. }) = self.nodes.get_mut(&n) {
                    *t = Some(format!("{mtime}.{mns:09}"));
                }
                Ok(())
            }
            Op::Chmod { path, mode: m } => {
                let n = self.lookup(path)?;
                // An O_NOFOLLOW open (read-only: directories too), then fchmod.
                match self.nodes.get_mut(&n) {
                    Some(Node::File { mode, .. }) | Some(Node::Dir { mode, .. }) => {
                        *mode = *m & 0o7777;
                        Ok(())
                    }
                    _ => Err(ELOOP),
                }
            }
            Op::Fsync { path } => self.open_file(path).map(drop),
            Op::Unlink { path } | Op::UnlinkOpen { path, .. } => {
                let n = if matches!(op, Op::UnlinkOpen { .. }) {
                    self.open_file(path)?
                } else {
                    self.lookup(path)?
                };
                if self.is_dir(n) {
                    return Err(EISDIR);
                }
                let (dir, name) = self.parent(path)?;
                self.kids_mut(dir)?.remove(name);
                if let Op::UnlinkOpen { fd, .. } = op {
                    self.fds.insert(*fd, n);
                }
                Ok(())
            }
            Op::FdClose { fd } => {
                self.fds.remove(fd);
                Ok(())
            }
            Op::Rmdir { path } => {
                let n = self.lookup(path)?;
                match self.kids(n) {
                    None => return Err(ENOTDIR),
                    Some(k) if !k.is_empty() => return Err(ENOTEMPTY),
                    Some(_) => {}
                }
                let (dir, name) = self.parent(path)?;
                self.kids_mut(dir)?.remove(name);
                Ok(())
            }
            Op::Link { path: from, to } => {
                let n = self.lookup(from)?;
                let (dir, name) = self.parent(to)?;
                if self.kids(dir).is_some_and(|k| k.contains_key(name)) {
                    return Err(EEXIST);
                }
                if self.is_dir(n) {
                    return Err(EPERM);
                }
                self.kids_mut(dir)?.insert(name.to_string(), n);
                Ok(())
            }
            Op::Rename { path: from, to } => {
                // Both parents first, then the names (do_renameat2).
                let (odir, oname) = self.parent(from)?;
                let (ndir, nname) = self.parent(to)?;
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
                self.kids_mut(odir)?.remove(oname);
                self.kids_mut(ndir)?.insert(nname.to_string(), n);
                Ok(())
            }
            Op::Exchange { path: from, to } => {
                // __start_renaming: both names looked up (ENOENT), then lock_rename's
                // traps, each EINVAL under RENAME_EXCHANGE; vfs_rename: one inode, nothing.
                let (odir, oname) = self.parent(from)?;
                let (ndir, nname) = self.parent(to)?;
                let n = *self.kids(odir).and_then(|k| k.get(oname)).ok_or(ENOENT)?;
                let t = *self.kids(ndir).and_then(|k| k.get(nname)).ok_or(ENOENT)?;
                if odir != ndir
                    && ((self.is_dir(n) && self.in_subtree(n, ndir))
                        || (self.is_dir(t) && self.in_subtree(t, odir)))
                {
                    return Err(EINVAL);
                }
                if t == n {
                    return Ok(());
                }
                self.kids_mut(odir)?.insert(oname.to_string(), t);
                self.kids_mut(ndir)?.insert(nname.to_string(), n);
                Ok(())
            }
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
    pub fn inodes(&self) -> usize {
        let ids: BTreeSet<u64> = self.paths().into_iter().map(|(_, n)| n).collect();
        ids.len()
    }

    /// Descriptors' files that no name reaches: recovery frees them.
    pub fn orphans(&self) -> usize {
        let reach: BTreeSet<u64> = self.paths().into_iter().map(|(_, n)| n).collect();
        let o: BTreeSet<u64> = self
            .fds
            .values()
            .copied()
            .filter(|n| !reach.contains(n))
            .collect();
        o.len()
    }

    /// The tree as the dump shows it: one canonical line per entry, sorted by path;
    /// `mtime` only where the model knows it (the second list names those paths).
    pub fn render(&self) -> (Vec<String>, Vec<String>) {
        let entries = self.entries();
        let known = entries
            .iter()
            .filter(|m| m.contains_key("mtime"))
            .filter_map(|m| m.get("path").cloned())
            .collect();
        (entries.iter().map(canon).collect(), known)
    }

    /// The tree as a comparison with a model that knows the mtimes of `known` only sees
    /// it (the other mtimes left out).
    fn render_seen_by(&self, known: &[String]) -> Vec<String> {
        self.entries()
            .into_iter()
            .map(|mut m| {
                if !m.get("path").is_some_and(|p| known.contains(p)) {
                    m.remove("mtime");
                }
                canon(&m)
            })
            .collect()
    }

    /// Every entry's dump fields, sorted by path.
    fn entries(&self) -> Vec<BTreeMap<&'static str, String>> {
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
        for (p, n) in &paths {
            let mut m: BTreeMap<&'static str, String> = BTreeMap::new();
            m.insert("path", p.clone());
            let nlink = links.get(n).copied().unwrap_or_default().to_string();
            let grp = group.get(n).cloned().unwrap_or_default();
            match self.nodes.get(n) {
                Some(Node::Dir { mode, .. }) => {
                    m.insert("type", "dir".into());
                    m.insert("mode", mode.to_string());
                    let sub = subdirs.get(n).copied().unwrap_or_default();
                    m.insert("nlink", (2 + sub).to_string());
                }
                Some(Node::File { data, mode, mtime }) => {
                    m.insert("type", "file".into());
                    m.insert("mode", mode.to_string());
                    m.insert("nlink", nlink);
                    m.insert("size", data.len().to_string());
                    m.insert("hash", format!("{:016x}", fnv(data)));
                    m.insert("group", grp);
                    if let Some(t) = mtime {
                        m.insert("mtime", t.clone());
                    }
                }
                Some(Node::Sym { target }) => {
                    m.insert("type", "symlink".into());
                    m.insert("mode", "511".into());
                    m.insert("nlink", nlink);
                    m.insert("size", target.len().to_string());
                    m.insert("target", target.clone());
                    m.insert("group", grp);
                }
                None => {
                    m.insert("type", "dangling".into());
                }
            }
            lines.push(m);
        }
        lines
    }

    /// Whether the dump shows exactly this tree.
    pub fn matches(&self, dump: &Dump) -> bool {
        let (want, known) = self.render();
        dump.render(&known) == want
    }

    /// What differs between this tree and the dump ([`crate::log::diff`]'s lines).
    pub fn diff(&self, dump: &Dump) -> String {
        let (want, known) = self.render();
        crate::log::diff(&want, &dump.render(&known))
    }
}

/// The states of a replayed log (see [`replay`]).
#[derive(Clone, Debug)]
pub struct Replayed {
    /// After the last acknowledged operation.
    pub before: Model,
    /// After the one in flight (`None`: there is none, or the model says it fails).
    pub after: Option<Model>,
    /// Acknowledged operations.
    pub acked: usize,
    /// The acknowledged operation the broken model (negative control) dropped.
    pub dropped: Option<u64>,
}

/// Replays the acknowledged operations (checking each result against the model's), and
/// returns the models before and after the one in flight. With `break_model` (the
/// negative control) the model drops the last acknowledged operation that changed the tree
/// (a successful one other than `fsync` that changed what the dump shows): a check against
/// it must then fail.
pub fn replay(root_mode: u32, prefix: &str, log: &Log, break_model: bool) -> Result<Replayed> {
    let mut m = Model::new(root_mode, prefix);
    // The last acknowledged operation whose success changed what a comparison with the
    // dump sees (not a truncate of an empty file to 0, nor a utimes of a file whose mtime
    // the model did not know: dropping those would change nothing the check sees).
    let skip = if break_model {
        let mut t = m.clone();
        let mut last = None;
        for o in &log.ops {
            let Some(res) = o.result else { break };
            let (before, known) = t.render();
            let got = t.apply(&o.op);
            if o.op.is_change() && res.is_ok() && got.is_ok() && t.render_seen_by(&known) != before
            {
                last = Some(o.n);
            }
        }
        last
    } else {
        None
    };
    for o in &log.ops {
        let Some(res) = o.result else { break };
        if Some(o.n) == skip {
            continue;
        }
        let got = m.apply(&o.op);
        // The broken model cannot predict what comes after the op it dropped.
        if got != res && skip.is_none_or(|k| o.n < k) {
            return Err(Error::Diverged {
                n: o.n,
                op: o.json.clone(),
                guest: res,
                model: got,
            });
        }
    }
    let after = log.in_flight().and_then(|o| {
        let mut t = m.clone();
        t.apply(&o.op).ok().map(|()| t)
    });
    Ok(Replayed {
        before: m,
        after,
        acked: log.acked(),
        dropped: skip,
    })
}

/// Which prefix of a log a recovered tree is (see [`prefix_states`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The longest prefix the tree is: the number of operations whose effects it shows
    /// (`0`: the initial, empty tree; `acked + 1`: the op in flight too). `None`: no prefix.
    pub matched: Option<usize>,
    /// The closest prefix when none matches, and how many canonical lines differ.
    pub closest: (usize, usize),
    /// Acknowledged operations that changed the tree (succeeded, and are not `fsync`).
    pub acked_changes: usize,
    /// Of them, those after the matched (or, with none, the closest) prefix: lost.
    pub lost: usize,
    /// The lost operations' numbers, oldest first.
    pub lost_ops: Vec<u64>,
    /// What differs from the state after the last acknowledged op (empty if it matched).
    pub diff_last: String,
}

/// Compares a recovered tree with every state of the log's replay, at each acknowledged
/// operation's boundary, and after the one in flight: the state a crash may leave when the
/// file system is exactly the acknowledged operations, and the one a power cut may leave
/// (some older prefix: the operations after it are lost). Results of acknowledged
/// operations are checked against the model, as in [`replay`].
pub fn prefix_states(root_mode: u32, prefix: &str, log: &Log, dump: &Dump) -> Result<Prefix> {
    let mut m = Model::new(root_mode, prefix);
    // How many canonical lines differ between the model's state and the dump.
    let distance = |m: &Model| {
        let (want, known) = m.render();
        let got = dump.render(&known);
        want.iter().filter(|w| !got.contains(w)).count()
            + got.iter().filter(|g| !want.contains(g)).count()
    };
    let d0 = distance(&m);
    let mut matched = (d0 == 0).then_some(0);
    let mut closest = (0usize, d0);
    // The acknowledged changes: the number of ops up to and including each, and its number.
    let mut change_at: Vec<(usize, u64)> = Vec::new();
    let mut applied = 0usize;
    for o in &log.ops {
        let Some(res) = o.result else { break };
        let got = m.apply(&o.op);
        if got != res {
            return Err(Error::Diverged {
                n: o.n,
                op: o.json.clone(),
                guest: res,
                model: got,
            });
        }
        applied += 1;
        if o.op.is_change() && res.is_ok() {
            change_at.push((applied, o.n));
        }
        let d = distance(&m);
        if d == 0 {
            matched = Some(applied);
        }
        if d <= closest.1 {
            closest = (applied, d);
        }
    }
    let mut diff_last = if matched == Some(applied) {
        String::new()
    } else {
        m.diff(dump)
    };
    if let Some(o) = log.in_flight() {
        if m.apply(&o.op).is_ok() && distance(&m) == 0 {
            matched = Some(applied + 1);
            diff_last.clear();
        }
    }
    let at = matched.unwrap_or(closest.0);
    let lost_ops: Vec<u64> = change_at
        .iter()
        .filter(|(k, _)| *k > at)
        .map(|&(_, n)| n)
        .collect();
    Ok(Prefix {
        matched,
        closest,
        acked_changes: change_at.len(),
        lost: lost_ops.len(),
        lost_ops,
        diff_last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::parse_log;

    const LOG: &str = "START 1\n\
        OP 0 {\"op\":\"mkdir\",\"path\":\"d\",\"mode\":493}\nACK 0 ok\n\
        OP 1 {\"op\":\"create\",\"path\":\"d/f\",\"mode\":420}\nACK 1 ok\n\
        OP 2 {\"op\":\"rmdir\",\"path\":\"d\"}\nACK 2 err 39 Directory not empty\n\
        OP 3 {\"op\":\"write\",\"path\":\"d/f\",\"off\":0,\"len\":10,\"seed\":7}\nACK 3 ok\n\
        OP 4 {\"op\":\"rename\",\"path\":\"d/f\",\"to\":\"g\"}\n";

    #[test]
    fn the_data_specification_has_its_reference_values() {
        // The same values the torture program's own test pins for its writes (main.rs).
        assert_eq!(data(0, 8), 0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert_eq!(
            data(7, 13),
            [0xd7, 0x0d, 0x32, 0x59, 0xe4, 0xe1, 0xcb, 0x63, 0x1c, 0x66, 0x3c, 0xf4, 0xd7]
        );
        assert_eq!(
            data(0xdead_beef, 20),
            [
                0x9b, 0xeb, 0xc9, 0x68, 0x0f, 0xb9, 0xdf, 0x4a, 0x22, 0x09, 0xa1, 0x41, 0x31, 0x6a,
                0x58, 0xde, 0x1d, 0xfc, 0x1c, 0x8e
            ]
        );
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
    }

    fn dump_of(m: &Model) -> Dump {
        // The dump's JSON for the model's canonical lines (no mtimes are known here).
        let (lines, _) = m.render();
        let mut text = String::new();
        for l in lines {
            let fields: Vec<String> = l
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| match k {
                    "mode" | "nlink" | "size" => format!("\"{k}\":{v}"),
                    _ => format!("\"{k}\":\"{v}\""),
                })
                .collect();
            text.push_str(&format!("{{{}}}\n", fields.join(",")));
        }
        Dump::parse(&text).expect("a dump")
    }

    fn state_after(ops: usize) -> Model {
        let log = parse_log(LOG).expect("the log");
        let mut m = Model::new(0o755, "/mnt");
        for o in log.ops.iter().take(ops) {
            let _ = m.apply(&o.op);
        }
        m
    }

    #[test]
    fn the_log_parses_with_the_op_in_flight() {
        let log = parse_log(LOG).expect("the log");
        assert_eq!(log.ops.len(), 5);
        assert_eq!(log.acked(), 4);
        assert_eq!(log.ops[2].result, Some(Err(ENOTEMPTY)));
        assert!(log.in_flight().is_some() && !log.done);
        assert!(parse_log("OP 1 {\"op\":\"fsync\",\"path\":\"f\"}\n").is_err());
        // A cut last line does not count.
        assert_eq!(parse_log(&LOG[..LOG.len() - 3]).expect("cut").ops.len(), 4);
    }

    #[test]
    fn replay_checks_results_and_knows_the_op_in_flight() {
        let log = parse_log(LOG).expect("the log");
        let r = replay(0o755, "/mnt", &log, false).expect("a replay");
        assert_eq!(r.acked, 4);
        assert!(r.after.is_some());
        let bad = parse_log(&LOG.replace("ACK 2 err 39 Directory not empty", "ACK 2 ok"))
            .expect("the log");
        assert!(matches!(
            replay(0o755, "/mnt", &bad, false),
            Err(Error::Diverged { n: 2, .. })
        ));
        let broken = replay(0o755, "/mnt", &log, true).expect("a replay");
        assert_eq!(broken.dropped, Some(3));
        // A utimes of a file whose mtime the model did not know, and a truncate that
        // changes nothing, are invisible to the check: the negative control drops op 3.
        let more = LOG.replace(
            "OP 4 {\"op\":\"rename\",\"path\":\"d/f\",\"to\":\"g\"}\n",
            "OP 4 {\"op\":\"truncate\",\"path\":\"d/f\",\"size\":10}\nACK 4 ok\n\
             OP 5 {\"op\":\"utimes\",\"path\":\"d/f\",\"mtime\":5,\"mns\":6}\nACK 5 ok\n",
        );
        let log = parse_log(&more).expect("the log");
        assert_eq!(log.acked(), 6);
        let broken = replay(0o755, "/mnt", &log, true).expect("a replay");
        assert_eq!(broken.dropped, Some(3));
    }

    #[test]
    fn a_tree_is_matched_to_its_prefix_and_later_changes_count_as_lost() {
        let log = parse_log(LOG).expect("the log");
        let at = |k: usize| prefix_states(0o755, "/mnt", &log, &dump_of(&state_after(k)));
        let p = at(4).expect("a match");
        assert_eq!((p.matched, p.lost, p.acked_changes), (Some(4), 0, 3));
        let p = at(5).expect("a match");
        assert_eq!((p.matched, p.lost), (Some(5), 0));
        let p = at(1).expect("a match");
        assert_eq!(
            (p.matched, p.lost, p.lost_ops.clone()),
            (Some(1), 2, vec![1, 3])
        );
        // A tree that is no state of the log.
        let mut other = state_after(4);
        let _ = other.apply(&Op::Mkdir {
            path: "z".into(),
            mode: 0o700,
        });
        let p = prefix_states(0o755, "/mnt", &log, &dump_of(&other)).expect("no match");
        assert_eq!(p.matched, None);
        assert_eq!(p.closest.0, 4);
        assert!(p.diff_last.contains("fs only"), "{}", p.diff_last);
    }

    #[test]
    fn an_exchange_swaps_two_names_and_refuses_what_the_kernel_refuses() {
        let mut m = Model::new(0o755, "/mnt");
        let op = |m: &mut Model, o: Op| m.apply(&o);
        let s = |x: &str| x.to_string();
        op(
            &mut m,
            Op::Mkdir {
                path: s("d"),
                mode: 0o755,
            },
        )
        .expect("mkdir d");
        op(
            &mut m,
            Op::Mkdir {
                path: s("d/e"),
                mode: 0o755,
            },
        )
        .expect("mkdir d/e");
        op(
            &mut m,
            Op::Create {
                path: s("f"),
                mode: 0o644,
            },
        )
        .expect("create f");
        op(
            &mut m,
            Op::Write {
                path: s("f"),
                off: 0,
                seed: 9,
                len: 5,
            },
        )
        .expect("write f");
        let before = m.render().0;
        // A directory and a file in different parents swap: d/e is now the file.
        op(
            &mut m,
            Op::Exchange {
                path: s("f"),
                to: s("d/e"),
            },
        )
        .expect("exchange");
        let after = m.render().0.join("\n");
        assert!(
            after.contains("nlink=1 path=d/e size=5 type=file"),
            "{after}"
        );
        assert!(after.contains("nlink=2 path=d type=dir"), "{after}");
        assert!(after.contains("nlink=2 path=f type=dir"), "{after}");
        // Exchanging back restores the tree exactly.
        op(
            &mut m,
            Op::Exchange {
                path: s("d/e"),
                to: s("f"),
            },
        )
        .expect("back");
        assert_eq!(m.render().0, before);
        // Both names must exist; a directory cannot trade places with its own child.
        assert_eq!(
            op(
                &mut m,
                Op::Exchange {
                    path: s("f"),
                    to: s("nope")
                }
            ),
            Err(ENOENT)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Exchange {
                    path: s("d"),
                    to: s("d/e")
                }
            ),
            Err(EINVAL)
        );
        assert_eq!(
            op(
                &mut m,
                Op::Exchange {
                    path: s("d/e"),
                    to: s("d")
                }
            ),
            Err(EINVAL)
        );
        assert_eq!(m.render().0, before);
    }
}
