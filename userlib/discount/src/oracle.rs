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
//! * [`check_resumed`] adds what Definition 2 cannot see: that each crash happened (every
//!   run but the last was killed before it finished) and that every run after one
//!   *resumed*: its trace begins with a recovery of the last committed checkpoint and its
//!   output begins exactly where that checkpoint left the output, never at byte 0 unless
//!   that is where it was (a run that starts over only repeats output, which Definition 2
//!   allows).

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
    /// The commit just before was this process's part of distributed checkpoint `epoch`
    /// (two-phase commit: every member committed it in one round).
    Round(u64),
    /// The process joined its computation from the checkpoint of distributed checkpoint
    /// `epoch` (two-phase commit; after start-up, recovery or a rollback).
    Joined(u64),
    /// Normal exit.
    Exit,
}

/// The events appended to the trace file `path` since byte `from` (the part one run
/// wrote), and the file's length now; a missing file has none. Crash tests read each run's
/// part of a shared trace this way.
pub fn trace_since(path: &std::path::Path, from: u64) -> Result<(Vec<Event>, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                what: "reading the trace",
                source,
            })
        }
    };
    let tail = bytes.get(from as usize..).unwrap_or(&[]);
    Ok((parse(&String::from_utf8_lossy(tail))?, bytes.len() as u64))
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
            // A message's identity is its length and content hash (a retransmission of
            // the same bytes is the same message).
            "M" | "G" => {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let bad = || Error::Corrupt(format!("trace line {}: {line:?}", n + 1));
                if f.len() != 2 {
                    return Err(bad());
                }
                let len: u64 = f[0].parse().map_err(|_| bad())?;
                let hash = u64::from_str_radix(f[1], 16).map_err(|_| bad())?;
                let id = hash ^ len.rotate_left(48);
                if kind == "M" {
                    Event::Send(id)
                } else {
                    Event::Recv(id)
                }
            }
            "D" => Event::Round(num()?),
            "J" => Event::Joined(num()?),
            // Two-phase commit's own steps (request, rollback, a prepared checkpoint
            // resolved): the commits and recoveries they lead to have their own lines.
            "" | "Q" | "B" | "PC" | "PA" => continue,
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
    // The processes' commits of each distributed checkpoint (a `Commit` followed by its
    // process's `Round`): all of them are one atomic commit, so none depends on another
    // member's uncommitted event of the same round.
    let mut rounds: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for w in trace.windows(2) {
        if let [(p, Event::Commit(_)), (q, Event::Round(e))] = w {
            if p == q {
                rounds.entry(*e).or_default();
            }
        }
    }
    for (i, w) in trace.iter().enumerate() {
        if let (p, Event::Commit(_)) = w {
            if let Some((q, Event::Round(e))) = trace.get(i + 1) {
                if p == q {
                    if let Some(v) = rounds.get_mut(e) {
                        v.push((*p, i));
                    }
                }
            }
        }
    }
    for (i, (p, e)) in trace.iter().enumerate() {
        let p = *p;
        if let (Event::Commit(_), Some((q, Event::Round(r)))) = (e, trace.get(i + 1)) {
            if *q == p {
                // Every member of the round knows that all of them committed.
                if let Some(members) = rounds.get(r) {
                    let k = know.entry(p).or_default();
                    for &(m, at) in members {
                        if m != p {
                            let c = k.commit.entry(m).or_insert(at);
                            *c = (*c).max(at);
                        }
                    }
                }
            }
        }
        let k = know.entry(p).or_default();
        match e {
            Event::Start => {
                *k = Know::default();
            }
            Event::Nd(_) => {
                k.nd.insert(p, i);
            }
            Event::Logged(_) | Event::Exit | Event::Round(_) | Event::Joined(_) => {}
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

/// Orders the traces of a computation's processes into one trace consistent with
/// causality, for [`check`]: a receive comes after a send of the same message (a message
/// no process sent, e.g. from outside the computation, may come any time), and the
/// members' commits of one distributed checkpoint (`Commit` then `Round(e)`) come
/// together, when every process whose trace holds that round has reached it. Among the
/// events that may come next, the lowest-numbered process's goes first. Fails if the
/// traces cannot be ordered (a receive whose message is sent only later, a round some
/// member never reaches).
pub fn merge(traces: &[Vec<Event>]) -> Result<Vec<(usize, Event)>> {
    use std::collections::HashSet;
    let filled: Vec<Vec<Event>> = traces.iter().map(|t| lost_commits(t)).collect();
    let traces = &filled[..];
    // What each process sends: a receive waits only for other processes' sends (a process
    // that forwards what it received, as a relay on a stream does, sends the same bytes
    // after its receive; a message to itself it sends before it receives it).
    let sends_of: Vec<HashSet<u64>> = traces
        .iter()
        .map(|t| {
            t.iter()
                .filter_map(|e| match e {
                    Event::Send(m) => Some(*m),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let sent_by_others =
        |p: usize, m: &u64| (0..traces.len()).any(|q| q != p && sends_of[q].contains(m));
    let round_members: HashMap<u64, Vec<usize>> = {
        let mut m: HashMap<u64, Vec<usize>> = HashMap::new();
        for (p, t) in traces.iter().enumerate() {
            for e in t {
                if let Event::Round(r) = e {
                    let v = m.entry(*r).or_default();
                    if !v.contains(&p) {
                        v.push(p);
                    }
                }
            }
        }
        m
    };
    let mut pos = vec![0usize; traces.len()];
    let mut sent: HashSet<u64> = HashSet::new();
    let mut out = Vec::with_capacity(traces.iter().map(|t| t.len()).sum());
    // The round process `p` stands before (its next events are `Commit`, `Round(r)`).
    let at_round = |p: usize, pos: &[usize]| -> Option<u64> {
        match (traces[p].get(pos[p]), traces[p].get(pos[p] + 1)) {
            (Some(Event::Commit(_)), Some(Event::Round(r))) => Some(*r),
            _ => None,
        }
    };
    loop {
        let mut progressed = false;
        for p in 0..traces.len() {
            let Some(e) = traces[p].get(pos[p]) else {
                continue;
            };
            if let Some(r) = at_round(p, &pos) {
                let members = &round_members[&r];
                if members.iter().all(|&q| at_round(q, &pos) == Some(r)) {
                    for &q in members {
                        out.push((q, traces[q][pos[q]].clone()));
                        out.push((q, traces[q][pos[q] + 1].clone()));
                        pos[q] += 2;
                    }
                    progressed = true;
                    break;
                }
                continue;
            }
            let ready = match e {
                Event::Recv(m) => sent.contains(m) || !sent_by_others(p, m),
                _ => true,
            };
            if ready {
                if let Event::Send(m) = e {
                    sent.insert(*m);
                }
                out.push((p, e.clone()));
                pos[p] += 1;
                progressed = true;
                break;
            }
        }
        if !progressed {
            if pos.iter().zip(traces).all(|(&i, t)| i >= t.len()) {
                return Ok(out);
            }
            let stuck: Vec<String> = (0..traces.len())
                .filter_map(|p| {
                    traces[p]
                        .get(pos[p])
                        .map(|e| format!("process {p} at #{}: {e:?}", pos[p]))
                })
                .collect();
            return Err(Error::Corrupt(format!(
                "the traces cannot be ordered by causality: {}",
                stuck.join("; ")
            )));
        }
    }
}

/// A process killed after the commit point of a checkpoint but before its `C` line (in
/// a round: before or after its vote, its prepared checkpoint then committed at recovery)
/// leaves a trace whose next run recovers a checkpoint it never saw committed. The
/// commit happened where the killed run's events end: put it there, and if the process
/// then joined its computation from a distributed checkpoint newer than any round it
/// recorded, that commit was its part of that round (`Round`).
fn lost_commits(t: &[Event]) -> Vec<Event> {
    let mut out = Vec::with_capacity(t.len() + 4);
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut last_round = 0u64;
    for (i, e) in t.iter().enumerate() {
        match e {
            Event::Commit(c) => {
                seen.insert(*c);
            }
            Event::Round(r) => last_round = last_round.max(*r),
            Event::Recover(seq) if !seen.contains(seq) => {
                out.push(Event::Commit(*seq));
                seen.insert(*seq);
                let joined = t[i + 1..]
                    .iter()
                    .take_while(|x| !matches!(x, Event::Recover(_) | Event::Start))
                    .find_map(|x| match x {
                        Event::Joined(e) => Some(*e),
                        _ => None,
                    });
                if let Some(e) = joined.filter(|&e| e > last_round) {
                    out.push(Event::Round(e));
                    last_round = e;
                }
            }
            _ => {}
        }
        out.push(e.clone());
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

/// One run of a program under test, as the harness saw it: what it wrote, the trace
/// lines it appended, and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct RunRecord<'a> {
    /// What the run wrote to the descriptor whose output is compared (its stdout).
    pub out: &'a [u8],
    /// The events this run appended to the trace (empty when it was killed before it
    /// traced anything, e.g. during the re-execution that precedes `init`).
    pub trace: &'a [Event],
    /// The run was killed (ended by a signal) rather than exiting.
    pub killed: bool,
}

/// How a sequence of runs with crashes resumed ([`check_resumed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumption {
    /// Definition 2's alignment of the outputs ([`check_output`]), with `starts` the
    /// bytes of the failure-free output each run began at (as computed from the trace).
    pub output: OutputMatch,
    /// For each run, the checkpoint it resumed (`None`: a fresh start, or a run that was
    /// killed before it traced anything).
    pub resumed: Vec<Option<u64>>,
    /// Recoveries (runs that began with a recovery event).
    pub recoveries: usize,
}

/// Why a sequence of runs with crashes is not "resumed, not restarted".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No runs.
    #[error("no runs")]
    NoRuns,
    /// The outputs together are not the failure-free output with repetitions only
    /// (Definition 2, [`check_output`]).
    #[error("output: {0}")]
    Output(String),
    /// A run before the last was not killed: the crash it was meant to suffer did not
    /// happen.
    #[error("run {run} was not killed (it exited by itself): the planned crash did not happen")]
    NotKilled {
        /// The run.
        run: usize,
    },
    /// A killed run had already finished (its trace shows the normal exit): the kill
    /// landed too late to test anything.
    #[error("run {run} was killed after it had finished (exit event in its trace)")]
    KilledAfterExit {
        /// The run.
        run: usize,
    },
    /// The last run was killed, or did not trace its normal exit.
    #[error("the last run (run {run}) did not finish normally")]
    LastNotFinished {
        /// The run.
        run: usize,
    },
    /// A run with no trace wrote output (it bypassed the wrappers, or its trace was lost).
    #[error("run {run} wrote {bytes} bytes but traced nothing")]
    UntracedOutput {
        /// The run.
        run: usize,
        /// Bytes it wrote.
        bytes: usize,
    },
    /// A run's trace does not begin with a start or a recovery event, or holds a second
    /// one.
    #[error("run {run}: trace event #{at} is {what}, which a run's trace cannot hold there")]
    BadTrace {
        /// The run.
        run: usize,
        /// Index of the event in the run's trace.
        at: usize,
        /// The event.
        what: String,
    },
    /// A run after a crash started over instead of recovering, although the run before
    /// had committed a checkpoint.
    #[error(
        "run {run} started over (a fresh start, at byte 0) although checkpoint {last_commit} \
         had been committed before the crash: it did not resume"
    )]
    Restarted {
        /// The run.
        run: usize,
        /// The last checkpoint committed before it.
        last_commit: u64,
    },
    /// The first run recovered: the state directory held an old image.
    #[error("run 0 recovered checkpoint {seq}: the state was not fresh")]
    RecoveredFirst {
        /// The checkpoint.
        seq: u64,
    },
    /// A run recovered a checkpoint that no earlier run committed (or not the last one).
    #[error(
        "run {run} recovered checkpoint {seq}, which is not the last one committed ({last:?})"
    )]
    UnknownCheckpoint {
        /// The run.
        run: usize,
        /// The checkpoint it recovered.
        seq: u64,
        /// The last one committed before it.
        last: Option<u64>,
    },
    /// A run's output does not begin where the checkpoint it resumed left the output.
    #[error(
        "run {run} resumed checkpoint {seq:?}, which left the output at byte {expected}, but \
         its output is not the failure-free output from there ({found})"
    )]
    NotAtCheckpoint {
        /// The run.
        run: usize,
        /// The checkpoint (None: a fresh start).
        seq: Option<u64>,
        /// Where its output should begin in the failure-free output.
        expected: usize,
        /// What was found instead.
        found: String,
    },
    /// A run wrote more or less than its trace says (beyond a last write that a kill
    /// interrupted).
    #[error("run {run} wrote {bytes} bytes, its trace says {traced} (last write {last})")]
    TraceMismatch {
        /// The run.
        run: usize,
        /// Bytes it wrote.
        bytes: usize,
        /// Bytes of visible events in its trace.
        traced: usize,
        /// Bytes of its last visible event.
        last: usize,
    },
}

/// Checks that a sequence of runs with crashes *resumed* rather than restarted, on the
/// runs' outputs (to descriptor `fd`) and the trace each appended, against the output of a
/// failure-free run:
///
/// * Definition 2 ([`check_output`]);
/// * every run but the last was killed before it finished, and the last exited normally;
/// * a run that traced nothing wrote nothing (it was killed before `init`);
/// * every run after the first begins with a recovery event of the last checkpoint
///   committed before it, unless no checkpoint had been committed yet (then it starts
///   fresh, at byte 0);
/// * its output begins exactly where that checkpoint left the output (the bytes of
///   visible events before the commit, counted from where its run began), never at byte
///   0 of the failure-free output unless that is where the checkpoint was;
/// * what each run wrote is what its trace says it wrote (a killed run may lack its last
///   write, which the kill interrupted).
///
/// A run whose image was lost between runs starts over (a start event, output from byte
/// 0) and fails with [`ResumeError::Restarted`], although Definition 2 alone accepts it
/// (starting over only repeats output).
pub fn check_resumed(
    runs: &[RunRecord<'_>],
    reference: &[u8],
    fd: i32,
) -> std::result::Result<Resumption, ResumeError> {
    let Some(last_run) = runs.len().checked_sub(1) else {
        return Err(ResumeError::NoRuns);
    };
    let outs: Vec<&[u8]> = runs.iter().map(|r| r.out).collect();
    let mut output = check_output(&outs, reference, true).map_err(ResumeError::Output)?;
    // Output offset (in the failure-free output) at each commit, and the last commit.
    let mut at_commit: HashMap<u64, usize> = HashMap::new();
    let mut last_commit: Option<u64> = None;
    // Where the output stood after the last traced run's visible events.
    let mut traced_end = 0usize;
    let mut starts = Vec::with_capacity(runs.len());
    let mut resumed = Vec::with_capacity(runs.len());
    let mut recoveries = 0;
    for (k, run) in runs.iter().enumerate() {
        let last = k == last_run;
        if !last && !run.killed {
            return Err(ResumeError::NotKilled { run: k });
        }
        let exited = run.trace.contains(&Event::Exit);
        if last && (run.killed || !exited) {
            return Err(ResumeError::LastNotFinished { run: k });
        }
        if !last && exited {
            return Err(ResumeError::KilledAfterExit { run: k });
        }
        let Some(first) = run.trace.first() else {
            if !run.out.is_empty() {
                return Err(ResumeError::UntracedOutput {
                    run: k,
                    bytes: run.out.len(),
                });
            }
            starts.push(traced_end.min(reference.len()));
            resumed.push(None);
            continue;
        };
        let (start, seq) = match first {
            Event::Start => match last_commit {
                Some(c) if k > 0 => {
                    return Err(ResumeError::Restarted {
                        run: k,
                        last_commit: c,
                    })
                }
                _ => (0, None),
            },
            Event::Recover(seq) => {
                if k == 0 {
                    return Err(ResumeError::RecoveredFirst { seq: *seq });
                }
                let off = match at_commit.get(seq) {
                    Some(&off) if last_commit == Some(*seq) => off,
                    // The crash came right after the commit point of the next checkpoint,
                    // before its trace line: everything traced so far was before it.
                    None if last_commit.map_or(1, |c| c + 1) == *seq => traced_end,
                    _ => {
                        return Err(ResumeError::UnknownCheckpoint {
                            run: k,
                            seq: *seq,
                            last: last_commit,
                        })
                    }
                };
                at_commit.insert(*seq, off);
                last_commit = Some(*seq);
                recoveries += 1;
                (off, Some(*seq))
            }
            e => {
                return Err(ResumeError::BadTrace {
                    run: k,
                    at: 0,
                    what: format!("{e:?}"),
                })
            }
        };
        if reference.get(start..start + run.out.len()) != Some(run.out) {
            let common = run
                .out
                .iter()
                .zip(reference.get(start..).unwrap_or(&[]))
                .take_while(|(a, b)| a == b)
                .count();
            return Err(ResumeError::NotAtCheckpoint {
                run: k,
                seq,
                expected: start,
                found: format!(
                    "it diverges after {common} of its {} bytes: {:?}",
                    run.out.len(),
                    String::from_utf8_lossy(&run.out[..run.out.len().min(80)])
                ),
            });
        }
        let mut pos = start;
        let mut last_len = 0;
        for (i, e) in run.trace.iter().enumerate().skip(1) {
            match e {
                Event::Commit(c) => {
                    at_commit.insert(*c, pos);
                    last_commit = Some(*c);
                }
                Event::Visible { fd: f, len, .. } if *f == fd => {
                    pos += len;
                    last_len = *len;
                }
                Event::Start | Event::Recover(_) => {
                    return Err(ResumeError::BadTrace {
                        run: k,
                        at: i,
                        what: format!("{e:?}"),
                    })
                }
                _ => {}
            }
        }
        let traced = pos - start;
        let min = if run.killed {
            traced - last_len
        } else {
            traced
        };
        if run.out.len() < min || run.out.len() > traced {
            return Err(ResumeError::TraceMismatch {
                run: k,
                bytes: run.out.len(),
                traced,
                last: last_len,
            });
        }
        traced_end = pos;
        starts.push(start);
        resumed.push(seq);
    }
    let mut end = 0usize;
    output.repeated.clear();
    for (k, (s, r)) in starts.iter().zip(runs).enumerate() {
        if k > 0 {
            output.repeated.push(end.saturating_sub(*s));
        }
        end = end.max(s + r.out.len());
    }
    output.starts = starts;
    Ok(Resumption {
        output,
        resumed,
        recoveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_traces_of_a_round_pass_and_an_uncoordinated_pair_does_not() {
        use Event::*;
        let nd = || Nd("recv".into());
        let vis = || Visible {
            fd: 1,
            len: 3,
            hash: 9,
        };
        // p0 receives q's message (non-deterministic), then both commit in round 1,
        // then p0 writes: fine. q sends after a receive of its own.
        let p0 = vec![Start, Commit(1), Recv(5), nd(), Commit(2), Round(1), vis()];
        let p1 = vec![Start, Commit(1), nd(), Send(5), Commit(2), Round(1)];
        let m = merge(&[p0.clone(), p1.clone()]).unwrap();
        assert!(check(&m).is_empty(), "{:?}", check(&m));
        // The receive waits for the send.
        let send_at = m.iter().position(|(_, e)| *e == Send(5)).unwrap();
        let recv_at = m.iter().position(|(_, e)| *e == Recv(5)).unwrap();
        assert!(send_at < recv_at);
        // Without the round, p0's commit depends on q's uncommitted receive, and p0's
        // output too: violations.
        let p0 = vec![Start, Commit(1), Recv(5), nd(), Commit(2), vis()];
        let p1 = vec![Start, Commit(1), nd(), Send(5)];
        let m = merge(&[p0, p1]).unwrap();
        let v = check(&m);
        assert!(v.iter().any(|x| x.what.contains("Save-work")), "{v:?}");
        // A receive of something only sent later cannot be ordered.
        let p0 = vec![Start, Recv(7), Send(8)];
        let p1 = vec![Start, Recv(8), Send(7)];
        assert!(merge(&[p0, p1]).is_err());
        // A relay forwards the bytes it received: its own later send of the same message
        // does not hold its receive back (the producer's send does).
        let prod = vec![Start, Send(3)];
        let relay = vec![Start, Recv(3), nd(), Send(3)];
        let cons = vec![Start, Recv(3), nd()];
        let m = merge(&[prod, relay, cons]).unwrap();
        let first_recv = m.iter().position(|(_, e)| *e == Recv(3)).unwrap();
        let send_at = m.iter().position(|e| *e == (0, Send(3))).unwrap();
        assert!(send_at < first_recv);
    }

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

    fn vis(s: &str) -> Event {
        Event::Visible {
            fd: 1,
            len: s.len(),
            hash: crate::trace::fnv(s.as_bytes()),
        }
    }

    fn run<'a>(out: &'a [u8], trace: &'a [Event], killed: bool) -> RunRecord<'a> {
        RunRecord { out, trace, killed }
    }

    #[test]
    fn resumed_runs_pass() {
        let r = b"a\nb\nc\n";
        // Killed after "b\n"; checkpoint 2 was taken after "a\n": the next run resumes
        // there and repeats "b\n".
        let t0 = [
            Event::Start,
            Event::Commit(1),
            vis("a\n"),
            Event::Commit(2),
            vis("b\n"),
        ];
        let t1 = [Event::Recover(2), vis("b\n"), vis("c\n"), Event::Exit];
        let m = check_resumed(
            &[run(b"a\nb\n", &t0, true), run(b"b\nc\n", &t1, false)],
            r,
            1,
        )
        .unwrap();
        assert_eq!(m.output.starts, vec![0, 2]);
        assert_eq!(m.output.repeated, vec![2]);
        assert_eq!(m.resumed, vec![None, Some(2)]);
        assert_eq!(m.recoveries, 1);
        // A kill before anything was traced, then one before the first commit: fresh
        // starts are right; then one between a commit point and its trace line, and one
        // whose last write never happened.
        let t1 = [Event::Start];
        let t2 = [Event::Start, Event::Commit(1), vis("a\n")];
        let t3 = [Event::Recover(2), vis("b\n")];
        let t4 = [Event::Recover(2), vis("b\n"), vis("c\n"), Event::Exit];
        let m = check_resumed(
            &[
                run(b"", &[], true),
                run(b"", &t1, true),
                run(b"a\n", &t2, true),
                run(b"", &t3, true),
                run(b"b\nc\n", &t4, false),
            ],
            r,
            1,
        )
        .unwrap();
        assert_eq!(m.output.starts, vec![0, 0, 0, 2, 2]);
        assert_eq!(m.recoveries, 2);
    }

    #[test]
    fn restarted_runs_fail() {
        let r = b"a\nb\nc\n";
        let t0 = [
            Event::Start,
            Event::Commit(1),
            vis("a\n"),
            Event::Commit(2),
            vis("b\n"),
        ];
        let fresh = [
            Event::Start,
            Event::Commit(1),
            vis("a\n"),
            vis("b\n"),
            vis("c\n"),
            Event::Exit,
        ];
        let first = run(b"a\nb\n", &t0, true);
        // Starting over only repeats output: Definition 2 accepts it, the new check not.
        assert!(check_output(&[b"a\nb\n", r], r, true).is_ok());
        assert_eq!(
            check_resumed(&[first, run(r, &fresh, false)], r, 1),
            Err(ResumeError::Restarted {
                run: 1,
                last_commit: 2
            })
        );
        // A recovery event, but the output starts at byte 0 instead of at checkpoint 2.
        let wrong = [
            Event::Recover(2),
            vis("a\n"),
            vis("b\n"),
            vis("c\n"),
            Event::Exit,
        ];
        assert!(matches!(
            check_resumed(&[first, run(r, &wrong, false)], r, 1),
            Err(ResumeError::NotAtCheckpoint { run: 1, .. })
        ));
        // An older checkpoint than the last.
        let old = [
            Event::Recover(1),
            vis("a\n"),
            vis("b\n"),
            vis("c\n"),
            Event::Exit,
        ];
        assert!(matches!(
            check_resumed(&[first, run(r, &old, false)], r, 1),
            Err(ResumeError::UnknownCheckpoint { seq: 1, .. })
        ));
        // The kill did not happen, or came after the end.
        let good = [Event::Recover(2), vis("b\n"), vis("c\n"), Event::Exit];
        let not_killed = run(b"a\nb\n", &t0, false);
        assert_eq!(
            check_resumed(&[not_killed, run(b"b\nc\n", &good, false)], r, 1),
            Err(ResumeError::NotKilled { run: 0 })
        );
        let late = [
            Event::Start,
            vis("a\n"),
            vis("b\n"),
            vis("c\n"),
            Event::Exit,
        ];
        assert_eq!(
            check_resumed(&[run(r, &late, true), run(b"", &late[..1], false)], r, 1),
            Err(ResumeError::KilledAfterExit { run: 0 })
        );
        // Output the trace does not account for.
        let t1 = [Event::Recover(2), vis("c\n"), Event::Exit];
        assert!(matches!(
            check_resumed(&[first, run(b"b\nc\n", &t1, false)], r, 1),
            Err(ResumeError::TraceMismatch { run: 1, .. })
        ));
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
