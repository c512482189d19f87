//! `dc coord`: the two-phase-commit coordinator of a computation whose members run under
//! `dc run --protocol cpv-2pc|cbndv-2pc --coord ADDR --member I` (thesis 6.2.2: "a
//! separate 2PC server process"). The rules are `discount::twopc::coord`; this is its
//! I/O: one UDP socket, the members' addresses as last seen, a state file saved (written,
//! synced, renamed, directory synced) before any message that depends on it is sent, and
//! the retransmission timer. Restarted on an existing state file it aborts the round that
//! was open and rolls every member back (see `Coordinator::restart`).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use discount::twopc::coord::{Coordinator, Durable, Stable};
use discount::twopc::wire::{Msg, LEN};

#[derive(Args, Debug)]
pub struct CoordArgs {
    /// Address to listen on (IPv4 address and port; port 0 picks one, printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Number of members in the computation (they are numbered 0 to N-1).
    #[arg(long, short = 'n')]
    members: u16,
    /// The coordinator's state file (the last committed epoch, the incarnation, aborted
    /// epochs, where the members were). Kept on a durable file system (riofs, or one
    /// mounted -o sync); an existing one means a restart after a crash.
    #[arg(long)]
    state: PathBuf,
    /// Exit once every member has left (the computation is over).
    #[arg(long)]
    exit_when_done: bool,
    /// Print each round, failure and rollback on stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// The state file, with the members' last addresses (so that a restarted coordinator can
/// tell every member to roll back).
struct StateFile {
    path: PathBuf,
    addrs: Vec<Option<SocketAddr>>,
}

impl StateFile {
    fn text(&self, d: &Durable) -> String {
        let mut s = d.encode();
        for (i, a) in self.addrs.iter().enumerate() {
            if let Some(a) = a {
                s.push_str(&format!("member {i} {a}\n"));
            }
        }
        s
    }

    fn load(path: &Path, n: u16) -> Result<Option<(Durable, Vec<Option<SocketAddr>>)>> {
        let s = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let mut addrs = vec![None; n as usize];
        let mut rest = String::new();
        for l in s.lines() {
            if let Some(m) = l.strip_prefix("member ") {
                let (i, a) = m
                    .split_once(' ')
                    .context("member line without an address")?;
                let i: usize = i.parse().context("member index")?;
                if i >= n as usize {
                    bail!(
                        "{}: member {i}, but the computation has {n}",
                        path.display()
                    );
                }
                addrs[i] = Some(
                    a.parse()
                        .with_context(|| format!("member {i}'s address {a:?}"))?,
                );
            } else {
                rest.push_str(l);
                rest.push('\n');
            }
        }
        let d = Durable::decode(&rest).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Some((d, addrs)))
    }
}

impl Stable for StateFile {
    fn save(&mut self, d: &Durable) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.text(d).as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }
}

pub fn coord(a: CoordArgs) -> Result<()> {
    if a.members == 0 {
        bail!("--members must be at least 1");
    }
    let sock = UdpSocket::bind(&a.listen).with_context(|| format!("bind {}", a.listen))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let here = sock.local_addr()?;
    let (mut c, addrs) = match StateFile::load(&a.state, a.members)? {
        Some((d, addrs)) => {
            eprintln!(
                "dc coord: restarting from {} (epoch {} committed): rolling every member back",
                a.state.display(),
                d.committed
            );
            (Coordinator::restart(a.members, d), addrs)
        }
        None => (
            Coordinator::new(a.members, Durable::new()),
            vec![None; a.members as usize],
        ),
    };
    if std::env::var_os("DC_COORD_TEST_NO_ROLLBACK").is_some_and(|v| v == "1") {
        eprintln!("dc coord: DC_COORD_TEST_NO_ROLLBACK=1: failures do not roll the other members back (negative control)");
        c.no_rollback_for_tests = true;
    }
    let mut st = StateFile {
        path: a.state.clone(),
        addrs,
    };
    c.save_now(&mut st)
        .with_context(|| format!("save {}", a.state.display()))?;
    // The address, on stdout, for whoever starts the members.
    println!("{here}");
    std::io::stdout().flush()?;
    eprintln!("dc coord: {} members, listening on {here}", a.members);
    let mut buf = [0u8; LEN + 1];
    let mut last_tick = Instant::now();
    // When every member had left: the coordinator stays a little longer, so that a late
    // vote (of a round a member served just before its goodbye arrived) gets its answer.
    let mut all_left_at: Option<Instant> = None;
    loop {
        let mut out = Vec::new();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(m) = Msg::decode(&buf[..n]) {
                    let i = m.member as usize;
                    if m.kind.from_member() && i < st.addrs.len() && st.addrs[i] != Some(from) {
                        st.addrs[i] = Some(from);
                    }
                }
                out = c
                    .on_datagram(&buf[..n], &mut st)
                    .with_context(|| format!("save {}", a.state.display()))?;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e).context("receive"),
        }
        if last_tick.elapsed() >= Duration::from_millis(20) {
            out.extend(c.tick());
            last_tick = Instant::now();
        }
        for (j, m) in out {
            if let Some(to) = st.addrs.get(j as usize).copied().flatten() {
                let _ = sock.send_to(&m.encode(), to);
            }
        }
        for l in c.take_log() {
            if a.verbose {
                eprintln!("dc coord: {l}");
            }
        }
        if a.exit_when_done && c.all_left() && all_left_at.is_none() {
            all_left_at = Some(Instant::now());
        }
        if all_left_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(300)) {
            let s = c.stats();
            eprintln!(
                "dc coord: every member left: {} rounds, {} committed, {} aborted, {} failures, {} inconsistent joins",
                s.rounds, s.commits, s.aborts, s.failures, s.inconsistent_joins
            );
            if s.inconsistent_joins > 0 {
                bail!(
                    "{} members joined from another epoch than the last committed one",
                    s.inconsistent_joins
                );
            }
            return Ok(());
        }
    }
}
