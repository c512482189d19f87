//! The oracle: checks recorded event traces against the theory of consistent recovery
//! (thesis chapter 2).
//!
//! * [`check`] checks the commit invariant of **Theorem 2** ("Save-work") on a trace of
//!   one or more processes: for every visible or commit event `e` at process `q` and every
//!   non-deterministic event `n` at process `p` that causally precedes `e`, some commit of
//!   `p` at or after `n` must causally precede `e` (or be `e`). Causality is Lamport's
//!   happened-before (program order plus send/receive). A commit that depends on another
//!   process's uncommitted non-deterministic event violates the liveness half.
//!   Recovery (`R`) truncates the process's history back to the resumed commit, as the
//!   thesis prescribes.
//! * [`check_output`] checks **Definition 2**: the visible output of a run with failures
//!   equals that of a failure-free run except that output already produced may be
//!   repeated (each run after a crash resumes at or before where the previous one
//!   stopped).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fresh start.
    Start,
    /// Checkpoint `seq` committed.
    Commit(u64),
    /// Recovery resumed checkpoint `seq`.
    Recover(u64),
    /// A non-deterministic event.
    Nd(String),
    /// An input event made deterministic by logging.
    Logged(String),
    /// Output.
    Visible {
        /// Descriptor.
        fd: i32,
        /// Bytes.
        len: usize,
        /// Content hash.
        hash: u64,
    },
    /// Message `id` sent (multi-process traces).
    Send(u64),
    /// Message `id` received.
    Recv(u64),
    /// Normal exit.
    Exit,
}

/// Parses a trace file written by [`crate::trace`] (one process).
pub fn parse(text: &str) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut it = line.splitn(2, ' ');
        let kind = it.next().unwrap_or("");
        let rest = it.next().unwrap_or("").trim();
        let num = || {
            rest.split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .ok_or_else(|| Error::Corrupt(format!("trace line {}: {line:?}", n + 1)))
        };
        out.push(match kind {
            "S" => Event::Start,
            "C" => Event::Commit(num()?),
            "R" => Event::Recover(num()?),
            "N" => Event::Nd(rest.to_string()),
            "L" => Event::Logged(rest.to_string()),
            "E" => Event::Exit,
            "V" => {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() != 3 {
                    return Err(Error::Corrupt(format!("trace line {}: {line:?}", n + 1)));
                }
                let bad = || Error::Corrupt(format!("trace line {}: {line:?}", n + 1));
                Event::Visible {
                    fd: f[0].parse().map_err(|_| bad())?,
                    len: f[1].parse().map_err(|_| bad())?,
                    hash: u64::from_str_radix(f[2], 16).map_err(|_| bad())?,
                }
            }
            "" => continue,
            _ => return Err(Error::Corrupt(format!("trace line {}: {line:?}", n + 1))),
        });
    }
    Ok(out)
}

/// A violation of the commit invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the offending event in the trace.
    pub at: usize,
    /// Process.
    pub process: usize,
    /// Explanation.
    pub what: String,
}

/// Per-process knowledge: for every process, the index of the latest non-deterministic
/// event and of the latest commit that causally precede the current state.
#[derive(Debug, Clone, Default)]
struct Know {
    nd: HashMap<usize, usize>,
    commit: HashMap<usize, usize>,
}

impl Know {
    fn merge(&mut self, o: &Know) {
        for (&p, &i) in &o.nd {
            let e = self.nd.entry(p).or_insert(i);
            *e = (*e).max(i);
        }
        for (&p, &i) in &o.commit {
            let e = self.commit.entry(p).or_insert(i);
            *e = (*e).max(i);
        }
    }

    /// Processes with an uncommitted non-deterministic event in our causal past, other
    /// than `except`.
    fn uncommitted(&self, except: Option<usize>) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self
            .nd
            .iter()
            .filter(|(&p, &i)| Some(p) != except && self.commit.get(&p).is_none_or(|&c| c < i))
            .map(|(&p, &i)| (p, i))
            .collect();
        v.sort();
        v
    }
}

/// Checks Theorem 2 on a trace of `(process, event)` pairs in a global order consistent
/// with causality. Logged input events count as deterministic.
pub fn check(trace: &[(usize, Event)]) -> Vec<Violation> {
    let mut know: HashMap<usize, Know> = HashMap::new();
    // Index of each process's commits by sequence number (for recovery).
    let mut commits: HashMap<(usize, u64), (usize, Know)> = HashMap::new();
    let mut last_commit: HashMap<usize, u64> = HashMap::new();
    let mut msgs: HashMap<u64, Know> = HashMap::new();
    let mut out = Vec::new();
    for (i, (p, e)) in trace.iter().enumerate() {
        let p = *p;
        let k = know.entry(p).or_default();
        match e {
            Event::Start => {
                *k = Know::default();
            }
            Event::Nd(_) => {
                k.nd.insert(p, i);
            }
            Event::Logged(_) | Event::Exit => {}
            Event::Commit(seq) => {
                for (q, n) in k.uncommitted(Some(p)) {
                    out.push(Violation {
                        at: i,
                        process: p,
                        what: format!(
                            "commit {seq} depends on process {q}'s uncommitted non-deterministic event #{n} (liveness)"
                        ),
                    });
                }
                k.commit.insert(p, i);
                commits.insert((p, *seq), (i, k.clone()));
                last_commit.insert(p, *seq);
            }
            Event::Recover(seq) => {
                let lc = last_commit.get(&p).copied().unwrap_or(0);
                match commits.get(&(p, *seq)) {
                    Some((_, saved)) => {
                        *k = saved.clone();
                        if lc != *seq {
                            out.push(Violation {
                                at: i,
                                process: p,
                                what: format!(
                                    "recovered checkpoint {seq}, but {lc} was the last committed"
                                ),
                            });
                        }
                    }
                    None if *seq == lc + 1 || !last_commit.contains_key(&p) => {
                        // The crash came right after the commit point of checkpoint `seq`,
                        // before its trace line: the commit was the crashed run's last
                        // event, so everything traced so far is committed.
                        k.nd.remove(&p);
                        k.commit.insert(p, i);
                        commits.insert((p, *seq), (i, k.clone()));
                    }
                    None => out.push(Violation {
                        at: i,
                        process: p,
                        what: format!("recovered checkpoint {seq}, never committed (last {lc})"),
                    }),
                }
                last_commit.insert(p, *seq);
            }
            Event::Visible { fd, len, .. } => {
                for (q, n) in k.uncommitted(None) {
                    out.push(Violation {
                        at: i,
                        process: p,
                        what: format!(
                            "visible event ({len} bytes to fd {fd}) after process {q}'s non-deterministic event #{n} with no commit between (Save-work)"
                        ),
                    });
                }
            }
            Event::Send(m) => {
                msgs.insert(*m, k.clone());
            }
            Event::Recv(m) => {
                if let Some(sent) = msgs.get(m) {
                    let sent = sent.clone();
                    k.merge(&sent);
                }
            }
        }
    }
    out
}

/// [`check`] for a single-process trace.
pub fn check_one(trace: &[Event]) -> Vec<Violation> {
    let t: Vec<(usize, Event)> = trace.iter().cloned().map(|e| (0, e)).collect();
    check(&t)
}

/// Counts of a trace's events (for reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Commits.
    pub commits: usize,
    /// Non-deterministic events.
    pub nd: usize,
    /// Logged input events.
    pub logged: usize,
    /// Visible events.
    pub visible: usize,
    /// Recoveries.
    pub recoveries: usize,
}

/// Counts events by kind.
pub fn counts(trace: &[Event]) -> Counts {
    let mut c = Counts::default();
    for e in trace {
        match e {
            Event::Commit(_) => c.commits += 1,
            Event::Nd(_) => c.nd += 1,
            Event::Logged(_) => c.logged += 1,
            Event::Visible { .. } => c.visible += 1,
            Event::Recover(_) => c.recoveries += 1,
            _ => {}
        }
    }
    c
}

/// How the output of each run lines up with the failure-free output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMatch {
    /// For each run, where its output starts in the failure-free output.
    pub starts: Vec<usize>,
    /// For each run after the first, how many bytes it repeated.
    pub repeated: Vec<usize>,
}

/// Checks Definition 2 on the outputs of successive runs (the first run, then one per
/// recovery) against a failure-free run: each run's output must be a contiguous piece of
/// the reference starting no later than where the previous run's output ended (so
/// earlier output may be repeated, nothing may be skipped or changed), the first run must
/// start at 0, and the last must end at the end of the reference when `complete`.
pub fn check_output(
    runs: &[&[u8]],
    reference: &[u8],
    complete: bool,
) -> std::result::Result<OutputMatch, String> {
    let mut starts = Vec::new();
    let mut repeated = Vec::new();
    let mut end = 0usize;
    for (k, run) in runs.iter().enumerate() {
        // Candidate starts: latest first (least repetition), never after `end`.
        let start = if k == 0 {
            if reference.starts_with(run) {
                Some(0)
            } else {
                None
            }
        } else {
            (0..=end)
                .rev()
                .find(|&s| reference.len() >= s + run.len() && &reference[s..s + run.len()] == *run)
        };
        let Some(s) = start else {
            // Report where the best-aligned candidate diverges.
            let common = |s: usize| {
                run.iter()
                    .zip(&reference[s.min(reference.len())..])
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            let best = (0..=end.min(reference.len()))
                .max_by_key(|&s| (common(s), s))
                .unwrap_or(0);
            let c = common(best);
            let show = |b: &[u8], at: usize| {
                let lo = at.saturating_sub(60);
                String::from_utf8_lossy(&b[lo..(at + 60).min(b.len())]).into_owned()
            };
            return Err(format!(
                "run {k}: output is not a continuation of the failure-free output at or before byte {end}: \
                 best alignment at reference byte {best} diverges after {c} bytes: run has {:?}, reference has {:?}",
                show(run, c),
                show(reference, best + c)
            ));
        };
        if k > 0 {
            repeated.push(end - s);
        }
        starts.push(s);
        end = end.max(s + run.len());
    }
    if complete && end != reference.len() {
        return Err(format!(
            "output ends at byte {end}, the failure-free output has {}",
            reference.len()
        ));
    }
    Ok(OutputMatch { starts, repeated })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Event {
        Event::Visible {
            fd: 1,
            len: 1,
            hash: 0,
        }
    }
    fn nd() -> Event {
        Event::Nd("read".into())
    }

    #[test]
    fn single_process_protocols() {
        // CAND: commit after each ND.
        assert!(check_one(&[
            Event::Start,
            Event::Commit(1),
            nd(),
            Event::Commit(2),
            v(),
            v()
        ])
        .is_empty());
        // CPVS: commit before each visible.
        assert!(check_one(&[
            Event::Commit(1),
            nd(),
            nd(),
            Event::Commit(2),
            v(),
            Event::Commit(3),
            v()
        ])
        .is_empty());
        // No protocol: violation.
        let bad = check_one(&[Event::Commit(1), nd(), v()]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].at, 2);
        // Logged input is deterministic.
        assert!(check_one(&[Event::Commit(1), Event::Logged("read".into()), v()]).is_empty());
        // Commit after the visible is too late.
        assert_eq!(
            check_one(&[Event::Commit(1), nd(), v(), Event::Commit(2)]).len(),
            1
        );
    }

    #[test]
    fn recovery_truncates_history() {
        // ND after commit 2, crash, recovery to 2: the ND is gone, output is fine.
        let t = [
            Event::Commit(1),
            Event::Commit(2),
            nd(),
            Event::Recover(2),
            v(),
        ];
        assert!(check_one(&t).is_empty());
        // Recovering an older checkpoint than the last is reported.
        let t = [Event::Commit(1), Event::Commit(2), Event::Recover(1)];
        assert_eq!(check_one(&t).len(), 1);
        // A crash between a commit point and its trace line: the next checkpoint.
        let t = [Event::Commit(1), nd(), Event::Recover(2), v()];
        assert!(check_one(&t).is_empty());
        // But not one further.
        let t = [Event::Commit(1), Event::Recover(3)];
        assert_eq!(check_one(&t).len(), 1);
    }

    #[test]
    fn multi_process_causality() {
        // Figure 2.5: P0 flips a coin (ND), sends the result to P1, which prints it.
        let bad = [
            (0, Event::Commit(1)),
            (1, Event::Commit(1)),
            (0, nd()),
            (0, Event::Send(7)),
            (1, Event::Recv(7)),
            (1, v()),
        ];
        let r = check(&bad);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].process, 1);
        // CPVS: P0 commits before the send: fine.
        let good = [
            (0, nd()),
            (0, Event::Commit(2)),
            (0, Event::Send(7)),
            (1, Event::Recv(7)),
            (1, v()),
        ];
        assert!(check(&good).is_empty());
        // Liveness: P1 commits while depending on P0's uncommitted ND.
        let live = [
            (0, nd()),
            (0, Event::Send(1)),
            (1, Event::Recv(1)),
            (1, Event::Commit(1)),
        ];
        assert_eq!(check(&live).len(), 1);
        // Committing after the send does not help P1 (the commit does not precede it).
        let late = [
            (0, nd()),
            (0, Event::Send(1)),
            (0, Event::Commit(2)),
            (1, Event::Recv(1)),
            (1, v()),
        ];
        assert_eq!(check(&late).len(), 1);
    }

    #[test]
    fn parse_roundtrip() {
        let t =
            parse("S start\nC 1\nN read\nL read\nV 1 6 00000000000000ff\nR 1\nE exit\n").unwrap();
        assert_eq!(t.len(), 7);
        assert_eq!(
            t[4],
            Event::Visible {
                fd: 1,
                len: 6,
                hash: 255
            }
        );
        assert!(parse("X what").is_err());
        assert_eq!(counts(&t).nd, 1);
    }

    #[test]
    fn output_equivalence() {
        let r = b"a\nb\nc\nd\n";
        // Crash after "b", recovery re-prints "b".
        let m = check_output(&[b"a\nb\n", b"b\nc\nd\n"], r, true).unwrap();
        assert_eq!(m.repeated, vec![2]);
        // No repetition.
        assert_eq!(
            check_output(&[b"a\n", b"b\nc\nd\n"], r, true)
                .unwrap()
                .repeated,
            vec![0]
        );
        // Skipped output is inconsistent.
        assert!(check_output(&[b"a\n", b"c\nd\n"], r, true).is_err());
        // Different output is inconsistent.
        assert!(check_output(&[b"a\nb\n", b"x\n"], r, false).is_err());
        // Incomplete.
        assert!(check_output(&[b"a\n"], r, true).is_err());
        assert!(check_output(&[b"a\n"], r, false).is_ok());
    }
}
