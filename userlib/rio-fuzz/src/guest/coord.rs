//! The coordinator: generates the ops from the seed, forks the actors, sends each op to its
//! actor, checks the answer against the model before the next op, and logs every
//! acknowledged op (`A <index>`) to the log port so that the host knows, after a crash,
//! which ops returned.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::actor::{self, Actor, Pipes};
use super::noise::{self, NOISE_OBJECTS, NOISE_SIZE};
use super::{fs, sys};
use crate::fsmodel::{self, FS_OBJECT};
use crate::gen::generate;
use crate::model::{self, check, Config, Model, Reply, ACTORS, CHILD_SLOTS};
use crate::ops::{proc_name, Op, ProcId, Selection, BASE_ACTORS};
use crate::verify::{self, Recovered};
use crate::wire;

/// What went wrong in the guest program.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Could not set the run up (device, actors, cleanup).
    #[error("setup: {0}")]
    Setup(String),
    /// The module answered differently from the model (the report says how).
    #[error("{0}")]
    Mismatch(String),
    /// Something did not finish in time.
    #[error("hang: {0}")]
    Hang(String),
    /// The recovered arena differs from the model.
    #[error("verify: {0}")]
    Verify(String),
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// The seed.
    pub seed: u64,
    /// Ops to generate.
    pub ops: u32,
    /// Which of them run.
    pub sel: Selection,
    /// Noise threads.
    pub noise: bool,
    /// The log (acknowledgements); stdout if `None`.
    pub log: Option<PathBuf>,
    /// A backing disk is attached.
    pub backing: bool,
    /// `max_user_objects` if not the default.
    pub max_user_objects: Option<u64>,
    /// `max_user_pages` if not the default.
    pub max_user_pages: Option<u64>,
    /// The module allows wild stores.
    pub wild_store_allowed: bool,
    /// Delete every object first.
    pub fresh: bool,
    /// The whole run must end within this.
    pub deadline: Duration,
    /// Each answer must come within this.
    pub op_timeout: Duration,
    /// Print every op.
    pub verbose: bool,
    /// The device.
    pub dev: PathBuf,
    /// Keep the noise threads running at least this long (after the history ends).
    pub min_noise: Duration,
    /// Mount a fresh riofs and fuzz riofs ops too.
    pub riofs: bool,
}

/// How a run ended.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Ops executed (acknowledged).
    pub executed: u64,
    /// Ops skipped (did not apply).
    pub skipped: u64,
    /// Mismatches (0 or 1: the run stops at the first).
    pub mismatches: u64,
}

struct Log {
    file: Option<std::fs::File>,
}

impl Log {
    fn line(&mut self, s: &str) {
        match &mut self.file {
            Some(f) => {
                let _ = writeln!(f, "{s}");
                sys::drain(f.as_raw_fd());
            }
            None => println!("{s}"),
        }
    }
}

fn cstr(p: &std::path::Path) -> Result<CString, GuestError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| GuestError::Setup("device path has a NUL".into()))
}

/// The model configuration of the loaded module (from INFO and STATS, plus the flags).
pub fn config_for(args: &RunArgs, dev: &CString) -> Result<Config, GuestError> {
    let fd = sys::open_dev(dev, false).map_err(|e| {
        GuestError::Setup(format!(
            "open {:?}: errno {e} (is rio.ko loaded?)",
            args.dev
        ))
    })?;
    let info =
        actor::info(sys::raw(&fd)).map_err(|e| GuestError::Setup(format!("INFO: errno {e}")))?;
    if info.abi_version != model::ABI {
        return Err(GuestError::Setup(format!(
            "rio.ko speaks ABI {}, rio-fuzz {}",
            info.abi_version,
            model::ABI
        )));
    }
    if info.state != model::STATE_READY {
        return Err(GuestError::Setup(
            "the arena is not in service (rio format?)".into(),
        ));
    }
    let st =
        actor::stats(sys::raw(&fd)).map_err(|e| GuestError::Setup(format!("STATS: errno {e}")))?;
    let mut cfg = Config::defaults(st.data_pages);
    cfg.max_objects = u64::from(info.max_objects);
    if let Some(n) = args.max_user_objects {
        cfg.max_user_objects = n;
    }
    if let Some(n) = args.max_user_pages {
        cfg.max_user_pages = n;
    }
    cfg.backing = args.backing;
    cfg.wild_store_allowed = args.wild_store_allowed;
    cfg.riofs = args.riofs;
    if args.noise {
        cfg.noise = NOISE_OBJECTS
            .iter()
            .map(|n| (n.to_string(), NOISE_SIZE))
            .collect();
    }
    Ok(cfg)
}

/// Deletes every object (removing block devices first), retrying while files close.
fn clean(dev: &CString) -> Result<(), GuestError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fd = sys::open_dev(dev, true)
            .map_err(|e| GuestError::Setup(format!("open device: errno {e}")))?;
        let objs = actor::list(sys::raw(&fd))
            .map_err(|e| GuestError::Setup(format!("LIST: errno {e}")))?;
        if objs.is_empty() {
            return Ok(());
        }
        let mut last = String::new();
        for o in &objs {
            if o.blockdev {
                if let Ok(b) = actor::open_object(dev, &o.name, true, false) {
                    let _ = sys::ioctl_none(sys::raw(&b), rio_client::uapi::RIO_IOC_BLKDEV_REMOVE);
                }
            }
            if let Err(e) = actor::delete(sys::raw(&fd), &o.name) {
                last = format!("{}: {}", o.name, model::errno_name(e));
            }
        }
        if Instant::now() >= deadline {
            return Err(GuestError::Setup(format!(
                "cannot delete the old objects ({last})"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process the coordinator talks to.
struct Peer {
    pipes: Pipes,
    pid: libc::pid_t,
}

struct Actors {
    /// Base actors by ProcId; children by ProcId once forked.
    peers: BTreeMap<ProcId, Peer>,
    /// Pipes of base actor `a`'s child slot `s`: `slots[a][s]` (coordinator side).
    slots: Vec<Vec<Pipes>>,
    _keep: Vec<OwnedFd>,
}

/// Forks the four base actors, each with its pipes and its child slots' pipes.
fn spawn_actors(ops: &[Op], seed: u64, dev: &CString) -> Result<Actors, GuestError> {
    let setup = |e: i32| GuestError::Setup(format!("pipe: errno {e}"));
    // For every actor: main pipes, then CHILD_SLOTS slot pipes; (cmd_r, cmd_w, rep_r, rep_w).
    let mut all: Vec<Vec<(OwnedFd, OwnedFd, OwnedFd, OwnedFd)>> = Vec::new();
    for _ in 0..BASE_ACTORS {
        let mut v = Vec::new();
        for _ in 0..=CHILD_SLOTS {
            let (cr, cw) = sys::pipe().map_err(setup)?;
            let (rr, rw) = sys::pipe().map_err(setup)?;
            v.push((cr, cw, rr, rw));
        }
        all.push(v);
    }
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let mut peers = BTreeMap::new();
    for a in 0..BASE_ACTORS as usize {
        match sys::fork().map_err(|e| GuestError::Setup(format!("fork: errno {e}")))? {
            0 => {
                sys::die_with_parent(me);
                // Close the ends that belong to the coordinator and to other actors.
                for (b, v) in all.iter().enumerate() {
                    for (cr, cw, rr, rw) in v {
                        sys::close_raw(cw.as_raw_fd());
                        sys::close_raw(rr.as_raw_fd());
                        if b != a {
                            sys::close_raw(cr.as_raw_fd());
                            sys::close_raw(rw.as_raw_fd());
                        }
                    }
                }
                if let Err(e) = sys::become_identity(&ACTORS[a]) {
                    eprintln!("rio-fuzz: actor {}: {e}", proc_name(a as u32));
                    sys::exit_now(5);
                }
                sys::die_with_parent(me);
                // SAFETY: umask only sets the process's file mode creation mask.
                unsafe { libc::umask(crate::fsmodel::UMASK as libc::mode_t) };
                let mine: Vec<Pipes> = all[a]
                    .iter()
                    .map(|(cr, _, _, rw)| Pipes {
                        cmd: cr.as_raw_fd(),
                        reply: rw.as_raw_fd(),
                    })
                    .collect();
                let actor = Actor::new(
                    ops,
                    seed,
                    dev.clone(),
                    mine[0],
                    mine[1..].to_vec(),
                    ACTORS[a],
                );
                actor.serve();
            }
            pid => {
                let v = &all[a];
                peers.insert(
                    a as u32,
                    Peer {
                        pipes: Pipes {
                            cmd: v[0].1.as_raw_fd(),
                            reply: v[0].2.as_raw_fd(),
                        },
                        pid,
                    },
                );
            }
        }
    }
    let slots = all
        .iter()
        .map(|v| {
            v[1..]
                .iter()
                .map(|(_, cw, rr, _)| Pipes {
                    cmd: cw.as_raw_fd(),
                    reply: rr.as_raw_fd(),
                })
                .collect()
        })
        .collect();
    // Keep only the coordinator's ends open.
    let mut keep = Vec::new();
    for v in all {
        for (cr, cw, rr, rw) in v {
            drop(cr);
            drop(rw);
            keep.push(cw);
            keep.push(rr);
        }
    }
    Ok(Actors {
        peers,
        slots,
        _keep: keep,
    })
}

/// What the kernel stack of a stuck process shows (for hang reports).
fn stacks(pid: libc::pid_t) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            let p = t.path();
            let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
            let stack = std::fs::read_to_string(p.join("stack")).unwrap_or_default();
            out.push_str(&format!(
                "  task {}: wchan {wchan}\n{stack}",
                t.file_name().to_string_lossy()
            ));
        }
    }
    out
}

fn ask(peer: &Peer, index: u32, arg: u32, timeout: Duration) -> Result<Reply, String> {
    sys::send_frame(peer.pipes.cmd, &wire::encode_cmd(index, arg))
        .map_err(|e| format!("send to actor: errno {e}"))?;
    match sys::recv_frame(peer.pipes.reply, Some(timeout)) {
        Ok(f) => wire::decode_reply(&f).ok_or_else(|| "garbled answer".to_string()),
        Err(sys::RecvError::Timeout) => Err(format!(
            "no answer within {timeout:?}; kernel stacks:\n{}",
            stacks(peer.pid)
        )),
        Err(sys::RecvError::Eof) => {
            let st = sys::wait_timeout(peer.pid, Duration::from_secs(2));
            Err(format!(
                "the actor died (wait status {st:?}: signal {})",
                st.map_or(0, |s| s & 0x7f)
            ))
        }
        Err(sys::RecvError::Errno(e)) => Err(format!("read from actor: errno {e}")),
    }
}

/// Runs the fuzzer: returns the summary, or the first mismatch.
pub fn run(args: &RunArgs) -> Result<RunSummary, GuestError> {
    let start = Instant::now();
    let dev = cstr(&args.dev)?;
    let mut log = Log {
        file: match &args.log {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| GuestError::Setup(format!("open log {}: {e}", p.display())))?,
            ),
            None => None,
        },
    };
    if args.riofs || args.fresh {
        // A riofs of an earlier run holds its object open.
        fs::unmount().map_err(GuestError::Setup)?;
    }
    if args.fresh {
        clean(&dev)?;
    } else if args.riofs {
        let fd =
            sys::open_dev(&dev, true).map_err(|e| GuestError::Setup(format!("open: errno {e}")))?;
        match actor::delete(sys::raw(&fd), FS_OBJECT) {
            Ok(()) | Err(libc::ENOENT) => {}
            Err(e) => {
                return Err(GuestError::Setup(format!(
                    "delete {FS_OBJECT}: {}",
                    model::errno_name(e)
                )))
            }
        }
    }
    let cfg = config_for(args, &dev)?;
    if args.riofs {
        fs::mount(true).map_err(GuestError::Setup)?;
        fs::setup().map_err(GuestError::Setup)?;
    }
    if args.noise {
        let fd =
            sys::open_dev(&dev, true).map_err(|e| GuestError::Setup(format!("open: errno {e}")))?;
        for n in NOISE_OBJECTS {
            match actor::create(sys::raw(&fd), n, NOISE_SIZE, 0o600) {
                Ok(()) => {}
                Err(e) => {
                    return Err(GuestError::Setup(format!(
                        "create {n}: {}",
                        model::errno_name(e)
                    )))
                }
            }
        }
    }
    let ops = generate(args.seed, args.ops, &cfg);
    log.line(&format!(
        "M seed {} ops {} noise {} backing {}",
        args.seed, args.ops, args.noise, args.backing
    ));
    let mut actors = spawn_actors(&ops, args.seed, &dev)?;
    // The noise process (forked while this process is still single-threaded).
    let mut noise_proc = None;
    if args.noise {
        let (r, w) = sys::pipe().map_err(|e| GuestError::Setup(format!("pipe: errno {e}")))?;
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        match sys::fork().map_err(|e| GuestError::Setup(format!("fork: errno {e}")))? {
            0 => {
                sys::die_with_parent(me);
                drop(w);
                let code = noise::noise_main(r, dev.clone(), args.seed, args.deadline);
                sys::exit_now(code);
            }
            pid => {
                drop(r);
                noise_proc = Some((pid, w));
            }
        }
    }
    let mut model = Model::new(cfg, args.seed);
    let mut sum = RunSummary::default();
    let mut failure: Option<GuestError> = None;
    for (i, op) in ops.iter().enumerate() {
        let i = i as u32;
        if !args.sel.runs(i) {
            continue;
        }
        if start.elapsed() > args.deadline {
            failure = Some(GuestError::Hang(format!(
                "the run passed its deadline of {:?} at op {i}",
                args.deadline
            )));
            break;
        }
        let Some(plan) = model.step(i, op) else {
            sum.skipped += 1;
            continue;
        };
        if args.verbose {
            println!(
                "op {i}: {op} -> expect {}",
                model::describe_expect(&plan.expect)
            );
        }
        let Some(peer) = actors.peers.get(&plan.target) else {
            failure = Some(GuestError::Setup(format!(
                "op {i}: no process for {}",
                proc_name(plan.target)
            )));
            break;
        };
        let reply = match ask(peer, i, plan.arg, args.op_timeout) {
            Ok(r) => r,
            Err(e) => {
                failure = Some(GuestError::Hang(format!(
                    "seed {} op {i} ({op}): {e}",
                    args.seed
                )));
                break;
            }
        };
        if let Err(diff) = check(&plan.expect, &reply) {
            sum.mismatches += 1;
            let report = format!(
                "MISMATCH seed {} op {i}: {op}\n  expected: {}\n  got:      {}\n  detail:   {diff}\n  signature: {}",
                args.seed,
                model::describe_expect(&plan.expect),
                model::describe_reply(&reply),
                signature(op, &plan.expect, &reply),
            );
            for l in report.lines() {
                log.line(&format!("F {l}"));
            }
            failure = Some(GuestError::Mismatch(report));
            break;
        }
        // Bookkeeping for forks and exits.
        match &op.kind {
            crate::ops::OpKind::Fork => {
                let pid = if let Reply::Ok(p) = reply {
                    p as libc::pid_t
                } else {
                    0
                };
                let pipes = actors.slots[plan.target as usize][plan.arg as usize];
                actors
                    .peers
                    .insert(crate::ops::CHILD_BASE + i, Peer { pipes, pid });
            }
            crate::ops::OpKind::Exit { child } => {
                actors.peers.remove(child);
            }
            _ => {}
        }
        sum.executed += 1;
        log.line(&format!("A {i}"));
    }
    // The whole riofs tree, read back as root, must be the model's.
    if failure.is_none() {
        if let Some(want) = model.fs.as_ref().map(fsmodel::Fs::listing) {
            let problems = match fs::listing() {
                Ok(got) => fsmodel::diff_listings(&want, &got, 20),
                Err(e) => vec![e],
            };
            if !problems.is_empty() {
                sum.mismatches += 1;
                let last = ops.len().saturating_sub(1);
                let report = format!(
                    "MISMATCH seed {} op {last}: the riofs tree after the history differs from the model\n  {}\n  signature: fs-tree:root/base:ok->value",
                    args.seed,
                    problems.join("\n  ")
                );
                for l in report.lines() {
                    log.line(&format!("F {l}"));
                }
                failure = Some(GuestError::Mismatch(report));
            }
        }
    }
    // Stop the noise, then the actors (children first, through their parents).
    if let Some((pid, w)) = noise_proc {
        let mut early = None;
        while early.is_none() && start.elapsed() < args.min_noise {
            early = sys::wait_timeout(pid, Duration::from_millis(100));
        }
        drop(w);
        match early.or_else(|| sys::wait_timeout(pid, Duration::from_secs(30))) {
            Some(0) => {}
            Some(st) => {
                failure.get_or_insert(GuestError::Mismatch(format!(
                    "seed {}: the noise threads failed (status {st}; see stderr)",
                    args.seed
                )));
                sum.mismatches += 1;
            }
            None => {
                let s = stacks(pid);
                sys::kill(pid);
                failure.get_or_insert(GuestError::Hang(format!(
                    "seed {}: the noise threads did not stop in 30 s; kernel stacks:\n{s}",
                    args.seed
                )));
            }
        }
    }
    shutdown(&actors, args.op_timeout);
    if args.riofs {
        if let Err(e) = fs::unmount() {
            failure.get_or_insert(GuestError::Hang(format!("seed {}: {e}", args.seed)));
        }
    }
    let s = format!(
        "S ops {}, skipped {}, mismatches {}",
        sum.executed, sum.skipped, sum.mismatches
    );
    log.line(&s);
    if args.log.is_some() {
        println!("{}", &s[2..]);
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(sum),
    }
}

/// Tells the base actors to quit (each kills and reaps its children first).
fn shutdown(actors: &Actors, timeout: Duration) {
    for p in 0..BASE_ACTORS {
        if let Some(peer) = actors.peers.get(&p) {
            let _ = sys::send_frame(peer.pipes.cmd, &wire::encode_cmd(wire::QUIT, 0));
            if sys::wait_timeout(peer.pid, timeout).is_none() {
                sys::kill(peer.pid);
                let _ = sys::wait_timeout(peer.pid, Duration::from_secs(5));
            }
        }
    }
}

/// A failure's signature: the op's kind and the classes of expected and actual outcome.
/// Shrinking keeps a candidate only if it fails with the same signature.
pub fn signature(op: &Op, e: &model::Expect, r: &Reply) -> String {
    format!(
        "{}:{}/{}:{}->{}",
        op.kind.word(),
        proc_name(op.proc).trim_end_matches(char::is_numeric),
        if op.proc >= crate::ops::CHILD_BASE {
            "child"
        } else {
            "base"
        },
        model::outcome_class_expect(e),
        model::outcome_class_reply(r)
    )
}

/// After a crash and recovery: recomputes the model up to the last acknowledged op and
/// compares every object (read as root) with it.
pub fn verify(args: &RunArgs, last_acked: Option<u32>) -> Result<String, GuestError> {
    let dev = cstr(&args.dev)?;
    let cfg = config_for(args, &dev)?;
    let ops = generate(args.seed, args.ops, &cfg);
    let mut model = Model::new(cfg, args.seed);
    let mut next = None;
    for (i, op) in ops.iter().enumerate() {
        let i = i as u32;
        if !args.sel.runs(i) {
            continue;
        }
        if last_acked.is_some_and(|l| i > l) || last_acked.is_none() {
            // The first op after the last acknowledged one is the one in flight.
            let mut after = model.clone();
            if after.step(i, op).is_some() {
                next = Some((after, op.clone(), i));
                break;
            }
            continue;
        }
        let _ = model.step(i, op);
    }
    let fd =
        sys::open_dev(&dev, false).map_err(|e| GuestError::Setup(format!("open: errno {e}")))?;
    let objs =
        actor::list(sys::raw(&fd)).map_err(|e| GuestError::Setup(format!("LIST: errno {e}")))?;
    let mut got = Vec::new();
    for o in objs {
        if noise::is_noise(&o.name) || o.name == FS_OBJECT {
            continue;
        }
        let mut data = vec![0u8; o.size as usize];
        if !o.damaged {
            let b = actor::open_object(&dev, &o.name, false, false).map_err(|e| {
                GuestError::Verify(format!("open {} as root: {}", o.name, model::errno_name(e)))
            })?;
            let n = sys::pread(sys::raw(&b), &mut data, 0).map_err(|e| {
                GuestError::Verify(format!("pread {}: {}", o.name, model::errno_name(e)))
            })?;
            if n != data.len() {
                return Err(GuestError::Verify(format!(
                    "{}: short read {n} of {}",
                    o.name,
                    data.len()
                )));
            }
        }
        got.push(Recovered {
            name: o.name,
            size: o.size,
            uid: o.uid,
            mode: o.mode,
            damaged: o.damaged,
            data,
        });
    }
    let mut problems =
        verify::compare(&model, next.as_ref().map(|(m, op, _)| (m, op)), &got, |n| {
            noise::is_noise(n) || n == FS_OBJECT
        });
    let mut fs_note = String::new();
    if let Some(before) = model.fs.as_ref().map(fsmodel::Fs::listing) {
        let after = next
            .as_ref()
            .and_then(|(m, _, _)| m.fs.as_ref().map(fsmodel::Fs::listing));
        // Nothing acknowledged: the crash may have come before or during the setup (the
        // riofs not mounted yet, or its tree part made).
        let early = last_acked.is_none();
        let mut got = None;
        if fs::mounted() {
            got = Some(fs::listing());
        } else {
            match fs::mount(false) {
                Ok(()) => {
                    got = Some(fs::listing());
                    let _ = fs::unmount();
                }
                Err(e) if early && e.contains(&format!("errno {}", libc::ENOENT)) => {
                    fs_note = "; riofs: not made yet".into();
                }
                Err(e) => return Err(GuestError::Verify(e)),
            }
        }
        let got = got
            .unwrap_or_else(|| Ok(before.clone()))
            .map_err(GuestError::Verify)?;
        let d0 = fsmodel::diff_listings(&before, &got, 20);
        let d1 = after.as_ref().map(|a| fsmodel::diff_listings(a, &got, 20));
        // A store through a mapping in flight is no transaction: any of its bytes may have
        // landed.
        let torn = next
            .as_ref()
            .is_some_and(|(_, op, _)| matches!(op.kind, crate::ops::OpKind::FStore { .. }))
            && after
                .as_ref()
                .is_some_and(|a| fsmodel::torn_store_fits(&before, a, &got));
        let in_setup = if early {
            fsmodel::Fs::setup_states()
                .iter()
                .position(|s| fsmodel::diff_listings(&s.listing(), &got, 1).is_empty())
        } else {
            None
        };
        match d1 {
            _ if !fs_note.is_empty() => {}
            _ if d0.is_empty() => {
                fs_note = format!("; riofs: {} entries as acknowledged", got.len())
            }
            _ if in_setup.is_some() => {
                fs_note = format!("; riofs: crashed in the setup (step {in_setup:?})")
            }
            Some(d) if d.is_empty() => {
                fs_note = format!("; riofs: {} entries, with the op in flight", got.len())
            }
            _ if torn => {
                fs_note = format!(
                    "; riofs: {} entries, with the store in flight in part",
                    got.len()
                )
            }
            d => {
                problems.push(
                    "riofs tree differs from the model after the last acknowledged op:".into(),
                );
                problems.extend(d0.into_iter().map(|l| format!("  {l}")));
                if let Some(d) = d {
                    problems.push("and from the model after the op in flight:".into());
                    problems.extend(d.into_iter().map(|l| format!("  {l}")));
                }
            }
        }
    }
    let inflight = next
        .as_ref()
        .map_or("none".to_string(), |(_, op, i)| format!("op {i} ({op})"));
    if problems.is_empty() {
        Ok(format!(
            "verify: {} objects match the model after op {last_acked:?}; in flight: {inflight}{fs_note}",
            got.len()
        ))
    } else {
        Err(GuestError::Verify(format!(
            "seed {} after op {last_acked:?} (in flight: {inflight}):\n  {}",
            args.seed,
            problems.join("\n  ")
        )))
    }
}
