//! After a crash: does the recovered arena hold what the model says? The last acknowledged
//! op is applied; the one after it (in flight when the kernel died) may be applied wholly
//! or not at all, and a pwrite or store in flight may be applied byte by byte within its
//! own range.

use std::collections::BTreeSet;

use crate::model::Model;
use crate::ops::{Op, OpKind};

/// An object read back after recovery (as root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// Owner (kuid: root reads it).
    pub uid: u32,
    /// Mode.
    pub mode: u32,
    /// Damaged flag.
    pub damaged: bool,
    /// Contents.
    pub data: Vec<u8>,
}

/// Compares the recovered objects with the model before (`acked`) and after (`inflight`)
/// the op in flight. Objects for which `ignore` holds are not compared. Returns the
/// problems found (empty: all is well).
pub fn compare(
    acked: &Model,
    inflight: Option<(&Model, &Op)>,
    got: &[Recovered],
    ignore: impl Fn(&str) -> bool,
) -> Vec<String> {
    let after = inflight.map_or(acked, |(m, _)| m);
    let partial = inflight
        .is_some_and(|(_, op)| matches!(op.kind, OpKind::Pwrite { .. } | OpKind::Store { .. }));
    let mut names: BTreeSet<&str> = acked.objs.keys().map(String::as_str).collect();
    names.extend(after.objs.keys().map(String::as_str));
    names.extend(got.iter().map(|g| g.name.as_str()));
    let mut problems = Vec::new();
    for name in names.into_iter().filter(|n| !ignore(n)) {
        let (a, b) = (acked.objs.get(name), after.objs.get(name));
        let g = got.iter().find(|g| g.name == name);
        let Some(g) = g else {
            if a.is_some() && b.is_some() {
                problems.push(format!("{name}: lost (the model has it)"));
            }
            continue;
        };
        if g.damaged {
            problems.push(format!("{name}: damaged after recovery"));
        }
        let cands: Vec<_> = [a, b].into_iter().flatten().collect();
        if cands.is_empty() {
            problems.push(format!(
                "{name}: exists after recovery ({} bytes) but not in the model",
                g.size
            ));
            continue;
        }
        let meta_ok =
            |c: &&crate::model::Obj| c.size == g.size && c.owner == g.uid && c.mode == g.mode;
        let fits = cands
            .iter()
            .filter(|c| meta_ok(c))
            .any(|c| c.data.as_ref().is_none_or(|d| *d == g.data));
        if fits {
            continue;
        }
        // A write in flight: every byte is old or new.
        if partial {
            if let (Some(a), Some(b)) = (a, b) {
                if let (Some(da), Some(db)) = (&a.data, &b.data) {
                    if meta_ok(&a) && da.len() == g.data.len() && db.len() == g.data.len() {
                        let bad =
                            (0..g.data.len()).find(|&i| g.data[i] != da[i] && g.data[i] != db[i]);
                        match bad {
                            None => continue,
                            Some(i) => {
                                problems.push(format!(
                                    "{name}: byte {i} is {:#04x}, neither before ({:#04x}) nor after ({:#04x}) the write in flight",
                                    g.data[i], da[i], db[i]
                                ));
                                continue;
                            }
                        }
                    }
                }
            }
        }
        let c = cands[0];
        let detail = if !meta_ok(&c) {
            format!(
                "size/uid/mode {}/{}/{:o}, expected {}/{}/{:o}",
                g.size, g.uid, g.mode, c.size, c.owner, c.mode
            )
        } else {
            let first = c
                .data
                .as_ref()
                .and_then(|d| d.iter().zip(&g.data).position(|(x, y)| x != y));
            format!(
                "contents differ (first difference at byte {})",
                first.map_or("?".into(), |i| i.to_string())
            )
        };
        problems.push(format!("{name}: {detail}"));
    }
    problems
}
