//! The 2PC coordinator (thesis 6.2.2: "a separate 2PC server process to coordinate their
//! distributed checkpoints"; Gray 1978 for the protocol), as a state machine: messages in,
//! messages out, and its durable state saved through [`Stable`] before any message that
//! depends on it leaves. The I/O loop around it is `dc coord` (crate `dc`).
//!
//! The computation has `n` members, numbered 0 to n-1, each a process under Discount
//! Checking with a CPV-2PC or CBNDV-2PC protocol. Rules:
//!
//! * **Start**: every member joins from its first checkpoint (epoch 0); when all have,
//!   each is told to run ([`Kind::Resume`]). Until then nobody runs, so no message of the
//!   computation is sent before every member exists.
//! * **Commit** (the two phases): a member that wants to do a visible event asks for a
//!   commit ([`Kind::Request`]); the coordinator opens a round with a new epoch number
//!   (never reused, saved before it is sent) and asks every member to prepare; a member
//!   prepares its checkpoint (a Vista prepared transaction tagged with the epoch) and votes
//!   yes; when all have voted the coordinator saves the epoch as committed and only then
//!   sends the decision. No member commits or aborts a prepared checkpoint on its own.
//! * **Quiesce** (issue 16, stream sockets): when some member has stream sockets (it
//!   said so with [`Kind::Streams`] before making the first, or joined with the flag
//!   set), a round starts with [`Kind::Quiesce`] instead of [`Kind::Prepare`]: each member
//!   stops (sends nothing more), drains what it can read and waits until its stream
//!   sockets' send queues are empty, and answers [`Kind::Quiesced`]; only when every
//!   member has answered does the coordinator send the prepares. Then no byte is in
//!   transit when the members drain their sockets for the checkpoint (`intercept::net`).
//!   [`Kind::Streams`] is answered ([`Kind::StreamsOk`]) only while no round is open that
//!   skipped the quiesce step, so no connection starts inside such a round.
//! * **Failure**: a member process that comes back with a new boot id (it crashed and
//!   recovered from its last committed checkpoint, resolving a prepared one by asking
//!   [`Kind::Ask`]) is a failure. The open round, if any, is aborted (saved before the
//!   answer), the incarnation goes up, and every other member is told to roll back to its
//!   last committed checkpoint ([`Kind::Rollback`]) and join again. All members are then
//!   at the last committed epoch: the recovery line is the last distributed checkpoint,
//!   consistent because every member took it in the same round. The computation runs
//!   again when all have joined.
//! * **Exit**: a member that exits has committed first (its exit is visible) and leaves;
//!   later rounds do not wait for it.
//!
//! A member's messages carry its boot id, so a stale message from a process that no
//! longer exists is recognised, and a rollback order names the process it is for, so a
//! late copy never rolls back the process that replaced it.

use super::wire::{Kind, Msg};

/// What the coordinator must not forget across its own crash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Durable {
    /// Incarnation of the computation: raised by every failure.
    pub inc: u64,
    /// The last committed epoch (0: the members' first checkpoints).
    pub committed: u64,
    /// The next epoch number a round gets (epochs are never reused).
    pub next_epoch: u64,
    /// Epochs that were aborted, most recent last (at most [`KEEP_ABORTED`]).
    pub aborted: Vec<u64>,
}

/// How many aborted epochs [`Durable`] remembers.
pub const KEEP_ABORTED: usize = 64;

impl Durable {
    /// The state of a new computation.
    pub fn new() -> Durable {
        Durable {
            inc: 1,
            committed: 0,
            next_epoch: 1,
            aborted: Vec::new(),
        }
    }

    /// Whether `epoch` committed.
    pub fn is_committed(&self, epoch: u64) -> bool {
        epoch <= self.committed && !self.aborted.contains(&epoch)
    }

    /// The text form (one `key value` per line), for the coordinator's state file.
    pub fn encode(&self) -> String {
        let ab: Vec<String> = self.aborted.iter().map(|e| e.to_string()).collect();
        format!(
            "dc-coord 1\ninc {}\ncommitted {}\nnext_epoch {}\naborted {}\n",
            self.inc,
            self.committed,
            self.next_epoch,
            ab.join(",")
        )
    }

    /// Parses [`Durable::encode`]'s text; an error names what is wrong.
    pub fn decode(s: &str) -> Result<Durable, String> {
        let mut lines = s.lines();
        if lines.next() != Some("dc-coord 1") {
            return Err("not a dc-coord state file (first line is not \"dc-coord 1\")".into());
        }
        let mut d = Durable::default();
        let mut seen = 0;
        for l in lines {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}: {v:?} is not a number"))
            };
            match k {
                "inc" => d.inc = num(v)?,
                "committed" => d.committed = num(v)?,
                "next_epoch" => d.next_epoch = num(v)?,
                "aborted" => {
                    d.aborted = v
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(num)
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown line {l:?}")),
            }
            seen += 1;
        }
        if seen != 4 || d.inc == 0 || d.next_epoch <= d.committed {
            return Err(format!("incomplete or inconsistent state: {d:?}"));
        }
        Ok(d)
    }
}

/// Where the coordinator saves [`Durable`] (a file written and synced before the
/// messages that depend on it are sent).
pub trait Stable {
    /// Saves `d` durably.
    fn save(&mut self, d: &Durable) -> std::io::Result<()>;
}

#[derive(Debug, Clone, Default)]
struct Member {
    /// The member's current process (0: not seen yet).
    boot: u64,
    /// Joined the current incarnation.
    joined: bool,
    /// Exited after committing.
    left: bool,
    /// Voted in the open round.
    voted: bool,
    /// Answered the open round's quiesce.
    quiesced: bool,
    /// Has (or had) stream sockets: rounds quiesce first.
    streams: bool,
    /// Told to roll back: the process told (0: whichever process it has, after the
    /// coordinator's restart), until a new process joins.
    rolling: Option<u64>,
}

/// Counters, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordStats {
    /// Rounds opened.
    pub rounds: u64,
    /// Rounds committed.
    pub commits: u64,
    /// Rounds aborted (by a failure).
    pub aborts: u64,
    /// Failures seen (each rolls the computation back).
    pub failures: u64,
    /// Members that joined from another epoch than the last committed one (must stay
    /// 0: every member is at the recovery line).
    pub inconsistent_joins: u64,
    /// Datagrams dropped (not a message, not a member's, member out of range).
    pub dropped: u64,
}

/// The coordinator of a computation of `n` members.
pub struct Coordinator {
    d: Durable,
    members: Vec<Member>,
    running: bool,
    round: Option<u64>,
    /// The open round is in its quiesce step (no prepare sent yet).
    quiescing: bool,
    stats: CoordStats,
    log: Vec<String>,
    /// Test hook for negative controls only: after a failure the other members are not
    /// rolled back (recovery is not coordinated). Never set by `dc coord` unless
    /// `DC_COORD_TEST_NO_ROLLBACK=1` is in its environment.
    pub no_rollback_for_tests: bool,
}

/// Messages to send: (member index, message).
pub type Out = Vec<(u16, Msg)>;

impl Coordinator {
    /// A coordinator for `n` members (1 to 65535) starting from `d` (a new computation's
    /// [`Durable::new`], or the state saved before a crash: then every member's next
    /// message counts as a new process, and the computation gathers again).
    pub fn new(n: u16, d: Durable) -> Coordinator {
        Coordinator {
            d,
            members: vec![Member::default(); n as usize],
            running: false,
            round: None,
            quiescing: false,
            stats: CoordStats::default(),
            log: Vec::new(),
            no_rollback_for_tests: false,
        }
    }

    /// A coordinator restarted after its own crash from the state it saved. A round that
    /// was open then is aborted (its commit was never saved, so no member was told to
    /// commit it: presumed abort), and since the votes are lost with the crash every
    /// member is rolled back to the last committed epoch and must join again: [`tick`]
    /// sends the order (to any process of each member, `boot` 0) to where the members were
    /// last seen, and a member's first message that is not a join is answered with it.
    /// Members obey a rollback only for an incarnation above the one they joined, so a
    /// late copy does not roll back the process that already obeyed.
    ///
    /// [`tick`]: Coordinator::tick
    pub fn restart(n: u16, mut d: Durable) -> Coordinator {
        for e in d.committed + 1..d.next_epoch {
            if !d.aborted.contains(&e) {
                d.aborted.push(e);
            }
        }
        while d.aborted.len() > KEEP_ABORTED {
            d.aborted.remove(0);
        }
        d.inc += 1;
        let mut c = Coordinator::new(n, d);
        for m in c.members.iter_mut() {
            m.rolling = Some(0);
        }
        c
    }

    /// The durable state to save at once after [`Coordinator::restart`] (its aborted
    /// epochs and new incarnation).
    pub fn save_now(&self, st: &mut dyn Stable) -> std::io::Result<()> {
        st.save(&self.d)
    }

    /// The durable state.
    pub fn durable(&self) -> &Durable {
        &self.d
    }

    /// The counters.
    pub fn stats(&self) -> CoordStats {
        self.stats
    }

    /// Whether every member has joined the current incarnation and runs.
    pub fn running(&self) -> bool {
        self.running
    }

    /// The open round's epoch.
    pub fn round(&self) -> Option<u64> {
        self.round
    }

    /// Whether the open round is in its quiesce step.
    pub fn quiescing(&self) -> bool {
        self.quiescing
    }

    /// Whether every member has left.
    pub fn all_left(&self) -> bool {
        self.members.iter().all(|m| m.left)
    }

    /// Takes the log lines written since the last call (what happened, for `--verbose`).
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn msg(&self, kind: Kind, epoch: u64) -> Msg {
        Msg {
            inc: self.d.inc,
            ..Msg::new(kind, epoch)
        }
    }

    fn present(&self) -> impl Iterator<Item = u16> + '_ {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.left)
            .map(|(i, _)| i as u16)
    }

    /// Handles one datagram from a member; returns what to send. An error means the state
    /// could not be saved: nothing was sent that depends on it, and the coordinator must
    /// stop (its caller reports it).
    pub fn on_datagram(&mut self, b: &[u8], st: &mut dyn Stable) -> std::io::Result<Out> {
        match Msg::decode(b) {
            Some(m) if m.kind.from_member() && (m.member as usize) < self.members.len() => {
                self.on_msg(m, st)
            }
            _ => {
                self.stats.dropped += 1;
                Ok(Vec::new())
            }
        }
    }

    fn on_msg(&mut self, m: Msg, st: &mut dyn Stable) -> std::io::Result<Out> {
        let i = m.member as usize;
        let mut out = Vec::new();
        let known = self.members[i].boot;
        if m.boot == 0 {
            self.stats.dropped += 1;
            return Ok(out);
        }
        if self.members[i].rolling == Some(0) && m.kind != Kind::Join {
            // First word from a member since the coordinator restarted: whatever it was
            // doing, it rolls back and joins.
            self.members[i].boot = m.boot;
            self.members[i].rolling = Some(m.boot);
            out.push((
                m.member,
                Msg {
                    boot: m.boot,
                    ..self.msg(Kind::Rollback, self.d.committed)
                },
            ));
            return Ok(out);
        }
        if known != m.boot {
            if self.members[i].rolling.is_some() || known == 0 {
                // The process that replaced the one told to roll back (or the first).
                self.members[i].rolling = None;
            } else {
                self.log.push(format!(
                    "member {i}: process {:016x} replaces {known:016x} ({:?})",
                    m.boot, m.kind
                ));
                self.failure(m.member, st, &mut out)?;
            }
            self.members[i].boot = m.boot;
            self.members[i].left = false;
        }
        match m.kind {
            Kind::Join => {
                if m.flag {
                    self.members[i].streams = true;
                }
                if m.epoch != self.d.committed {
                    self.stats.inconsistent_joins += 1;
                    self.log.push(format!(
                        "member {i} joined from epoch {} but the last committed epoch is {}",
                        m.epoch, self.d.committed
                    ));
                }
                let again = self.members[i].joined;
                self.members[i].joined = true;
                if !again {
                    // One line per process that joins: a computation that never starts
                    // shows which member is missing.
                    let n = self.members.iter().filter(|m| m.joined).count();
                    self.log.push(format!(
                        "member {i} (process {:016x}) joined from epoch {} ({n} of {} joined)",
                        m.boot,
                        m.epoch,
                        self.members.len()
                    ));
                }
                if self.running {
                    out.push((m.member, self.msg(Kind::Resume, self.d.committed)));
                } else {
                    self.maybe_run(&mut out);
                }
            }
            Kind::Request => {
                // (A request from behind the last commit is stale, but under the negative
                // control a member that failed alone is behind for good.)
                if self.running
                    && self.round.is_none()
                    && (m.epoch >= self.d.committed || self.no_rollback_for_tests)
                {
                    let e = self.d.next_epoch;
                    self.d.next_epoch += 1;
                    st.save(&self.d)?;
                    self.round = Some(e);
                    self.stats.rounds += 1;
                    self.log.push(format!("round {e} opened by member {i}"));
                    for mb in self.members.iter_mut() {
                        mb.voted = false;
                        mb.quiesced = false;
                    }
                    self.quiescing = self.members.iter().any(|m| !m.left && m.streams);
                    let first = if self.quiescing {
                        Kind::Quiesce
                    } else {
                        Kind::Prepare
                    };
                    for j in self.present().collect::<Vec<_>>() {
                        out.push((j, self.msg(first, e)));
                    }
                }
            }
            Kind::Quiesced => {
                if self.round == Some(m.epoch) && self.quiescing {
                    self.members[i].quiesced = true;
                    self.maybe_prepare(&mut out);
                }
            }
            Kind::Streams => {
                self.members[i].streams = true;
                if self.round.is_none() || self.quiescing {
                    out.push((m.member, self.msg(Kind::StreamsOk, m.epoch)));
                }
            }
            Kind::Vote => {
                if self.round == Some(m.epoch) && !self.quiescing {
                    self.members[i].voted = true;
                    self.maybe_commit(st, &mut out)?;
                } else if m.epoch <= self.d.committed || self.d.aborted.contains(&m.epoch) {
                    let c = self.d.is_committed(m.epoch);
                    out.push((m.member, self.decision(m.epoch, c)));
                }
            }
            Kind::Ask => {
                let c = self.d.is_committed(m.epoch);
                out.push((
                    m.member,
                    Msg {
                        flag: c,
                        ..self.msg(Kind::Outcome, m.epoch)
                    },
                ));
            }
            Kind::Leave => {
                if !self.members[i].left {
                    self.members[i].left = true;
                    self.members[i].joined = false;
                    self.log
                        .push(format!("member {i} left after epoch {}", m.epoch));
                }
                out.push((m.member, self.msg(Kind::Resume, self.d.committed)));
                self.maybe_prepare(&mut out);
                self.maybe_commit(st, &mut out)?;
                if !self.running {
                    self.maybe_run(&mut out);
                }
            }
            _ => self.stats.dropped += 1,
        }
        Ok(out)
    }

    fn decision(&self, epoch: u64, commit: bool) -> Msg {
        Msg {
            flag: commit,
            ..self.msg(Kind::Decide, epoch)
        }
    }

    fn maybe_run(&mut self, out: &mut Out) {
        let all = self.members.iter().all(|m| m.left || m.joined);
        if all && self.members.iter().any(|m| !m.left) {
            self.running = true;
            self.log.push(format!(
                "incarnation {} runs from epoch {}",
                self.d.inc, self.d.committed
            ));
            for j in self.present().collect::<Vec<_>>() {
                out.push((j, self.msg(Kind::Resume, self.d.committed)));
            }
        }
    }

    /// The quiesce step is over when every present member has quiesced: the prepares go.
    fn maybe_prepare(&mut self, out: &mut Out) {
        let Some(e) = self.round else {
            return;
        };
        if !self.quiescing || !self.members.iter().all(|m| m.left || m.quiesced) {
            return;
        }
        self.quiescing = false;
        self.log.push(format!("round {e} quiesced"));
        for j in self.present().collect::<Vec<_>>() {
            out.push((j, self.msg(Kind::Prepare, e)));
        }
    }

    fn maybe_commit(&mut self, st: &mut dyn Stable, out: &mut Out) -> std::io::Result<()> {
        let Some(e) = self.round else {
            return Ok(());
        };
        if self.quiescing {
            return Ok(());
        }
        if !self.members.iter().all(|m| m.left || m.voted) {
            return Ok(());
        }
        self.d.committed = e;
        st.save(&self.d)?;
        self.round = None;
        self.stats.commits += 1;
        self.log.push(format!("round {e} committed"));
        for j in self.present().collect::<Vec<_>>() {
            out.push((j, self.decision(e, true)));
        }
        Ok(())
    }

    /// Member `f`'s process was replaced: abort the open round, raise the incarnation and
    /// roll every other member back.
    fn failure(&mut self, f: u16, st: &mut dyn Stable, out: &mut Out) -> std::io::Result<()> {
        self.stats.failures += 1;
        if self.no_rollback_for_tests {
            // Only the failed member recovers; the others run on as they are. An open
            // round is not aborted either (an abort rolls back every member that voted,
            // which would be coordination after all): it commits for the others, the
            // failed member counted as having voted, so that the survivors keep their
            // later state while the failed member resumes from an older epoch.
            self.log.push(format!(
                "member {f} failed: recovery not coordinated (negative control)"
            ));
            if self.round.is_some() {
                self.members[f as usize].voted = true;
                self.members[f as usize].quiesced = true;
                self.maybe_prepare(out);
                self.maybe_commit(st, out)?;
            }
            return Ok(());
        }
        let aborted = self.round.take();
        self.quiescing = false;
        if let Some(e) = aborted {
            self.d.aborted.push(e);
            if self.d.aborted.len() > KEEP_ABORTED {
                self.d.aborted.remove(0);
            }
            self.stats.aborts += 1;
        }
        self.d.inc += 1;
        st.save(&self.d)?;
        self.running = false;
        self.log.push(format!(
            "member {f} failed: {}incarnation {} rolls back to epoch {}",
            aborted
                .map(|e| format!("round {e} aborted, "))
                .unwrap_or_default(),
            self.d.inc,
            self.d.committed
        ));
        for (j, m) in self.members.iter_mut().enumerate() {
            m.joined = false;
            m.voted = false;
            m.quiesced = false;
            if j == f as usize || m.left {
                continue;
            }
            if m.rolling.is_none() && m.boot != 0 {
                m.rolling = Some(m.boot);
            }
        }
        for (j, m) in self.members.iter().enumerate() {
            if let Some(b) = m.rolling {
                if let Some(e) = aborted {
                    out.push((
                        j as u16,
                        Msg {
                            boot: b,
                            ..self.decision(e, false)
                        },
                    ));
                }
                out.push((
                    j as u16,
                    Msg {
                        boot: b,
                        ..self.msg(Kind::Rollback, self.d.committed)
                    },
                ));
            }
        }
        Ok(())
    }

    /// What to send again now (every few tens of milliseconds): the open round's
    /// prepare to members that have not voted, rollback orders not yet obeyed.
    pub fn tick(&self) -> Out {
        let mut out = Vec::new();
        for (j, m) in self.members.iter().enumerate() {
            if m.left {
                continue;
            }
            if let Some(b) = m.rolling {
                out.push((
                    j as u16,
                    Msg {
                        boot: b,
                        ..self.msg(Kind::Rollback, self.d.committed)
                    },
                ));
            } else if let (Some(e), true, false) = (self.round, self.quiescing, m.quiesced) {
                out.push((j as u16, self.msg(Kind::Quiesce, e)));
            } else if let (Some(e), false, false) = (self.round, self.quiescing, m.voted) {
                out.push((j as u16, self.msg(Kind::Prepare, e)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Mem {
        saves: Vec<Durable>,
        fail: bool,
    }

    impl Stable for Mem {
        fn save(&mut self, d: &Durable) -> std::io::Result<()> {
            if self.fail {
                return Err(std::io::Error::other("disk full"));
            }
            self.saves.push(d.clone());
            Ok(())
        }
    }

    fn from(member: u16, boot: u64, kind: Kind, epoch: u64) -> Vec<u8> {
        Msg {
            member,
            boot,
            ..Msg::new(kind, epoch)
        }
        .encode()
        .to_vec()
    }

    fn kinds(out: &Out) -> Vec<(u16, Kind, u64)> {
        out.iter().map(|(j, m)| (*j, m.kind, m.epoch)).collect()
    }

    fn started(n: u16, st: &mut Mem) -> Coordinator {
        let mut c = Coordinator::new(n, Durable::new());
        for j in 0..n {
            let out = c
                .on_datagram(&from(j, 100 + j as u64, Kind::Join, 0), st)
                .unwrap();
            if j + 1 < n {
                assert!(out.is_empty(), "nobody runs before all joined");
            } else {
                assert_eq!(out.len(), n as usize);
                assert!(out.iter().all(|(_, m)| m.kind == Kind::Resume));
            }
        }
        assert!(c.running());
        c
    }

    #[test]
    fn the_negative_control_hook_rolls_nobody_back() {
        // DC_COORD_TEST_NO_ROLLBACK: a failure in an open round neither aborts it (an
        // abort would roll the voters back) nor orders a rollback: the round commits for
        // the survivors and the failed member's new process joins from behind.
        let mut st = Mem::default();
        let mut c = started(3, &mut st);
        c.no_rollback_for_tests = true;
        c.on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        c.on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        c.on_datagram(&from(1, 101, Kind::Vote, 1), &mut st)
            .unwrap();
        let out = c
            .on_datagram(&from(2, 202, Kind::Join, 0), &mut st)
            .unwrap();
        assert!(
            out.iter().all(|(_, m)| m.kind != Kind::Rollback),
            "{:?}",
            kinds(&out)
        );
        assert!(out
            .iter()
            .any(|(j, m)| *j == 0 && m.kind == Kind::Decide && m.flag && m.epoch == 1));
        assert_eq!(st.saves.last().unwrap().committed, 1);
        assert_eq!(c.stats().failures, 1);
        assert_eq!(c.stats().inconsistent_joins, 1);
        // The member that is behind can still open rounds.
        let out = c
            .on_datagram(&from(2, 202, Kind::Request, 0), &mut st)
            .unwrap();
        assert_eq!(out.len(), 3, "{:?}", kinds(&out));
    }

    #[test]
    fn a_round_commits_when_all_voted_and_saves_before_deciding() {
        let mut st = Mem::default();
        let mut c = started(3, &mut st);
        let out = c
            .on_datagram(&from(1, 101, Kind::Request, 0), &mut st)
            .unwrap();
        assert_eq!(
            kinds(&out),
            vec![
                (0, Kind::Prepare, 1),
                (1, Kind::Prepare, 1),
                (2, Kind::Prepare, 1)
            ]
        );
        assert_eq!(
            st.saves.last().unwrap().next_epoch,
            2,
            "epoch saved before use"
        );
        // A second request while the round is open opens nothing.
        assert!(c
            .on_datagram(&from(2, 102, Kind::Request, 0), &mut st)
            .unwrap()
            .is_empty());
        assert!(c
            .on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap()
            .is_empty());
        assert!(c
            .on_datagram(&from(1, 101, Kind::Vote, 1), &mut st)
            .unwrap()
            .is_empty());
        assert_eq!(
            kinds(&c.tick()),
            vec![(2, Kind::Prepare, 1)],
            "resend to who did not vote"
        );
        let saves = st.saves.len();
        let out = c
            .on_datagram(&from(2, 102, Kind::Vote, 1), &mut st)
            .unwrap();
        assert_eq!(out.len(), 3);
        assert!(out
            .iter()
            .all(|(_, m)| m.kind == Kind::Decide && m.flag && m.epoch == 1));
        assert_eq!(st.saves.len(), saves + 1);
        assert_eq!(st.saves.last().unwrap().committed, 1);
        // A repeated vote gets the decision again; a stale request is ignored.
        let out = c
            .on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(0, Kind::Decide, 1)]);
        assert!(out[0].1.flag);
        assert!(c
            .on_datagram(&from(1, 101, Kind::Request, 0), &mut st)
            .unwrap()
            .is_empty());
        assert_eq!(c.stats().commits, 1);
    }

    #[test]
    fn a_failure_aborts_the_round_and_rolls_the_others_back() {
        let mut st = Mem::default();
        let mut c = started(3, &mut st);
        c.on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        c.on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        // Member 2 crashed while prepared: its new process asks about epoch 1.
        let out = c.on_datagram(&from(2, 902, Kind::Ask, 1), &mut st).unwrap();
        let d = st.saves.last().unwrap().clone();
        assert_eq!((d.inc, d.committed, d.aborted.clone()), (2, 0, vec![1]));
        let outcome = out
            .iter()
            .find(|(j, m)| *j == 2 && m.kind == Kind::Outcome)
            .unwrap();
        assert!(!outcome.1.flag, "an aborted round's outcome is abort");
        let rb: Vec<_> = out
            .iter()
            .filter(|(_, m)| m.kind == Kind::Rollback)
            .map(|(j, m)| (*j, m.boot))
            .collect();
        assert_eq!(
            rb,
            vec![(0, 100), (1, 101)],
            "each rollback names the old process"
        );
        assert!(!c.running());
        // The prepared member 0 is told the abort too.
        assert!(out
            .iter()
            .any(|(j, m)| *j == 0 && m.kind == Kind::Decide && !m.flag));
        // A late vote of the old process changes nothing.
        let out = c
            .on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        assert!(out.iter().all(|(_, m)| m.kind == Kind::Decide && !m.flag));
        // The others come back as new processes (no new failure), and all run again.
        assert!(c
            .on_datagram(&from(2, 902, Kind::Join, 0), &mut st)
            .unwrap()
            .is_empty());
        assert_eq!(
            kinds(&c.tick()),
            vec![(0, Kind::Rollback, 0), (1, Kind::Rollback, 0)]
        );
        assert!(c
            .on_datagram(&from(0, 200, Kind::Join, 0), &mut st)
            .unwrap()
            .is_empty());
        let out = c
            .on_datagram(&from(1, 201, Kind::Join, 0), &mut st)
            .unwrap();
        assert_eq!(out.len(), 3);
        assert!(c.running());
        assert_eq!(c.stats().failures, 1);
        assert_eq!(c.stats().inconsistent_joins, 0);
        // The next round gets a new epoch number: 1 is never reused.
        let out = c
            .on_datagram(&from(1, 201, Kind::Request, 0), &mut st)
            .unwrap();
        assert!(out
            .iter()
            .all(|(_, m)| m.kind == Kind::Prepare && m.epoch == 2));
        let out = c.on_datagram(&from(0, 200, Kind::Ask, 1), &mut st).unwrap();
        assert!(!out[0].1.flag);
    }

    #[test]
    fn with_streams_a_round_quiesces_every_member_before_any_prepare() {
        let mut st = Mem::default();
        let mut c = started(3, &mut st);
        // Without streams: no quiesce step.
        let out = c
            .on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        assert!(out.iter().all(|(_, m)| m.kind == Kind::Prepare));
        // A member announcing streams inside a round without the quiesce step waits.
        assert!(c
            .on_datagram(&from(1, 101, Kind::Streams, 0), &mut st)
            .unwrap()
            .is_empty());
        for j in 0..3 {
            c.on_datagram(&from(j, 100 + j as u64, Kind::Vote, 1), &mut st)
                .unwrap();
        }
        assert_eq!(c.durable().committed, 1);
        let out = c
            .on_datagram(&from(1, 101, Kind::Streams, 0), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(1, Kind::StreamsOk, 0)]);
        // Now rounds quiesce first.
        let out = c
            .on_datagram(&from(2, 102, Kind::Request, 1), &mut st)
            .unwrap();
        assert_eq!(
            kinds(&out),
            vec![
                (0, Kind::Quiesce, 2),
                (1, Kind::Quiesce, 2),
                (2, Kind::Quiesce, 2)
            ]
        );
        assert!(c.quiescing());
        // Streams announced during a quiescing round: answered at once.
        let out = c
            .on_datagram(&from(0, 100, Kind::Streams, 1), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(0, Kind::StreamsOk, 1)]);
        // A vote before the prepare counts for nothing; a stale quiesced neither.
        assert!(c
            .on_datagram(&from(0, 100, Kind::Vote, 2), &mut st)
            .unwrap()
            .is_empty());
        assert!(c
            .on_datagram(&from(0, 100, Kind::Quiesced, 1), &mut st)
            .unwrap()
            .is_empty());
        assert!(c
            .on_datagram(&from(0, 100, Kind::Quiesced, 2), &mut st)
            .unwrap()
            .is_empty());
        assert!(c
            .on_datagram(&from(1, 101, Kind::Quiesced, 2), &mut st)
            .unwrap()
            .is_empty());
        assert_eq!(
            kinds(&c.tick()),
            vec![(2, Kind::Quiesce, 2)],
            "resend the quiesce to who did not answer"
        );
        let out = c
            .on_datagram(&from(2, 102, Kind::Quiesced, 2), &mut st)
            .unwrap();
        assert_eq!(
            kinds(&out),
            vec![
                (0, Kind::Prepare, 2),
                (1, Kind::Prepare, 2),
                (2, Kind::Prepare, 2)
            ]
        );
        assert!(!c.quiescing());
        assert_eq!(kinds(&c.tick()).len(), 3, "prepares resent until voted");
        for j in 0..3 {
            c.on_datagram(&from(j, 100 + j as u64, Kind::Vote, 2), &mut st)
                .unwrap();
        }
        assert_eq!(c.durable().committed, 2);
        // A failure in the quiesce step aborts the round like any other.
        c.on_datagram(&from(0, 100, Kind::Request, 2), &mut st)
            .unwrap();
        assert!(c.quiescing());
        let out = c
            .on_datagram(&from(1, 901, Kind::Join, 2), &mut st)
            .unwrap();
        assert!(!c.quiescing() && c.round().is_none());
        assert!(out.iter().any(|(j, m)| *j == 0 && m.kind == Kind::Rollback));
        assert_eq!(c.durable().aborted, vec![3]);
        // A member joining with the streams flag after a coordinator restart.
        let mut c2 = Coordinator::new(1, Durable::new());
        let join = Msg {
            member: 0,
            boot: 5,
            flag: true,
            ..Msg::new(Kind::Join, 0)
        };
        c2.on_datagram(&join.encode(), &mut st).unwrap();
        let out = c2
            .on_datagram(&from(0, 5, Kind::Request, 0), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(0, Kind::Quiesce, 1)]);
    }

    #[test]
    fn a_member_that_left_is_not_waited_for_and_bad_datagrams_are_dropped() {
        let mut st = Mem::default();
        let mut c = started(2, &mut st);
        let out = c
            .on_datagram(&from(1, 101, Kind::Leave, 0), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(1, Kind::Resume, 0)]);
        c.on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        let out = c
            .on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(0, Kind::Decide, 1)]);
        for bad in [
            b"hello".to_vec(),
            from(7, 1, Kind::Join, 0),
            from(0, 0, Kind::Join, 0),
            Msg::new(Kind::Prepare, 1).encode().to_vec(),
        ] {
            assert!(c.on_datagram(&bad, &mut st).unwrap().is_empty());
        }
        assert_eq!(c.stats().dropped, 4);
    }

    #[test]
    fn nothing_is_sent_when_the_state_cannot_be_saved() {
        let mut st = Mem::default();
        let mut c = started(2, &mut st);
        c.on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        c.on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        st.fail = true;
        assert!(c
            .on_datagram(&from(1, 101, Kind::Vote, 1), &mut st)
            .is_err());
    }

    #[test]
    fn a_restarted_coordinator_aborts_the_open_round_and_rolls_everyone_back() {
        let mut st = Mem::default();
        let mut c = started(2, &mut st);
        c.on_datagram(&from(0, 100, Kind::Request, 0), &mut st)
            .unwrap();
        c.on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        let saved = st.saves.last().unwrap().clone();
        let mut c = Coordinator::restart(2, saved);
        c.save_now(&mut st).unwrap();
        assert_eq!(st.saves.last().unwrap().aborted, vec![1]);
        // The prepared member retransmits its vote: it is told to roll back.
        let out = c
            .on_datagram(&from(0, 100, Kind::Vote, 1), &mut st)
            .unwrap();
        assert_eq!(kinds(&out), vec![(0, Kind::Rollback, 0)]);
        assert_eq!(out[0].1.boot, 100);
        assert_eq!(
            kinds(&c.tick()),
            vec![(0, Kind::Rollback, 0), (1, Kind::Rollback, 0)]
        );
        // Member 1 happens to join (it was recovering): fine. Member 0's new process
        // joins: all run.
        assert!(c
            .on_datagram(&from(1, 301, Kind::Join, 0), &mut st)
            .unwrap()
            .is_empty());
        let out = c
            .on_datagram(&from(0, 300, Kind::Join, 0), &mut st)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(c.running());
        assert_eq!(c.stats().failures, 0);
    }

    #[test]
    fn durable_state_round_trips_and_bad_files_are_refused() {
        let d = Durable {
            inc: 3,
            committed: 7,
            next_epoch: 9,
            aborted: vec![5, 8],
        };
        assert_eq!(Durable::decode(&d.encode()), Ok(d.clone()));
        assert!(d.is_committed(7) && !d.is_committed(5) && !d.is_committed(8));
        for bad in [
            "",
            "dc-coord 2\n",
            "dc-coord 1\ninc x\n",
            "dc-coord 1\ninc 1\n",
        ] {
            assert!(Durable::decode(bad).is_err(), "{bad:?}");
        }
        let r = Durable::decode("dc-coord 1\ninc 1\ncommitted 5\nnext_epoch 5\naborted \n");
        assert!(r.is_err(), "next_epoch must be past committed");
    }
}
