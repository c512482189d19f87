//! The two computations of several processes under Discount Checking (issue 16),
//! `dc/apps/heat.c` and `dc/apps/chat.c`: how they are built, their command lines, the
//! `dc run` command line of a member, and their oracles, defined once for the host tests
//! (`dc/tests/dist_apps.rs`, through `dc/tests/common/dist.rs`), the protocol study
//! (`dc/benches/dist.rs`) and the guest tests (`tests/tests/dist_guests.rs`), where the
//! members run in different guests and addresses are the guests' own.
//!
//! The oracles share no code with what they judge: they read the programs' outputs and
//! Discount Checking's event traces (`discount::oracle`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use discount::oracle::{self, Event};

/// The directory of the applications' sources (`dc/apps`).
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dc/apps")
}

/// Compiles `dc/apps/<name>.c` into `dir/<name>` with `dc/apps/build.sh`, the one
/// definition of the C compiler's command (qemu/mkinitramfs.sh builds the guest's copies
/// with the same script).
pub fn build_app(name: &str, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(name);
    let script = apps_dir().join("build.sh");
    let st = std::process::Command::new("sh")
        .arg(&script)
        .arg(name)
        .arg(&out)
        .status()
        .with_context(|| format!("run {} (needs cc, which setup installs)", script.display()))?;
    ensure!(st.success(), "{} {name} failed", script.display());
    Ok(out)
}

/// Workers of the heat computation.
pub const HEAT_WORKERS: usize = 3;

/// Cells per heat worker.
pub const HEAT_CELLS: usize = 200;

/// Lines worker 0 prints on the host (a "step" line every 1 % of the steps).
pub const HEAT_LINES: usize = 100;

/// Worker `id`'s command line of the heat computation: `steps` steps of
/// [`HEAT_CELLS`] cells, worker 0 printing a "step" line `lines` times (every
/// `steps / lines` steps: few visible events against thousands of messages); `peers` is
/// every worker's `ip:port`, in order (each binds its own).
pub fn heat_argv(
    bin: &str,
    id: usize,
    steps: usize,
    lines: usize,
    peers: &[String],
) -> Vec<String> {
    vec![
        bin.to_string(),
        id.to_string(),
        steps.to_string(),
        HEAT_CELLS.to_string(),
        (steps / lines.max(1)).max(1).to_string(),
        peers.join(","),
    ]
}

/// Clients of the chat computation, and lines each types.
pub const CHAT_CLIENTS: usize = 3;
pub const CHAT_LINES: usize = 40;

/// The chat server's command line (it listens on `port` of every address).
pub fn chat_server_argv(bin: &str, port: u16) -> Vec<String> {
    vec![
        bin.to_string(),
        "server".into(),
        port.to_string(),
        CHAT_CLIENTS.to_string(),
    ]
}

/// Chat client `c`'s command line, for a server at `server` (`ip:port`).
pub fn chat_client_argv(bin: &str, c: usize, server: &str) -> Vec<String> {
    vec![
        bin.to_string(),
        "client".into(),
        c.to_string(),
        format!("c{c}"),
        server.to_string(),
    ]
}

/// The lines client `c` types (its standard input, one a line): [`CHAT_LINES`] of them.
pub fn chat_input(c: usize) -> Vec<String> {
    chat_input_n(c, CHAT_LINES)
}

/// The first `lines` lines client `c` types (a shorter session: the guests' test).
pub fn chat_input_n(c: usize, lines: usize) -> Vec<String> {
    (0..lines)
        .map(|k| format!("message {k} of client {c}"))
        .collect()
}

/// Every input line as the conversation shows it (`c<N>: <text>`).
pub fn chat_conversation_inputs() -> Vec<String> {
    chat_conversation_inputs_n(CHAT_LINES)
}

/// [`chat_conversation_inputs`] for sessions of `lines` lines per client.
pub fn chat_conversation_inputs_n(lines: usize) -> Vec<String> {
    (0..CHAT_CLIENTS)
        .flat_map(|c| {
            chat_input_n(c, lines)
                .into_iter()
                .map(move |l| format!("c{c}: {l}"))
        })
        .collect()
}

/// The arguments of `dc run` for member `member` of a computation under `protocol`, its
/// state in `dir`, before `-- PROGRAM ARGS`: `store` (`files` when `None`), `--trace`, and
/// for a 2PC protocol the coordinator's address.
pub fn dc_run_args(
    protocol: &str,
    dir: &str,
    store: Option<&str>,
    trace: bool,
    coord: Option<&str>,
    member: usize,
) -> Vec<String> {
    let mut v: Vec<String> = vec!["run".into(), "--protocol".into(), protocol.into()];
    if let Some(s) = store {
        v.extend(["--store".into(), s.into()]);
    }
    v.extend(["--dir".into(), dir.into()]);
    if trace {
        v.push("--trace".into());
    }
    if let Some(a) = coord {
        v.extend([
            "--coord".into(),
            a.into(),
            "--member".into(),
            member.to_string(),
        ]);
    }
    v
}

/// Definition 2 for one member's whole output (all its processes, one stream), against
/// its failure-free output `want`: every line is the next expected one, or one printed
/// before from which output then continues (a rollback). Returns the rollbacks seen.
pub fn repetitions_only(who: &str, out: &str, want: &[&str]) -> Result<usize> {
    let mut next = 0usize;
    let mut rollbacks = 0;
    for (n, l) in out.lines().enumerate() {
        if next < want.len() && l == want[next] {
            next += 1;
        } else if let Some(j) = want[..next].iter().rposition(|w| *w == l) {
            next = j + 1;
            rollbacks += 1;
        } else {
            bail!(
                "{who}, line {}: {l:?} is not the expected output (next expected {:?})",
                n + 1,
                want.get(next)
            );
        }
    }
    ensure!(
        next == want.len(),
        "{who} stopped after {next} of {} lines",
        want.len()
    );
    Ok(rollbacks)
}

/// Save-work on the members' merged traces (Lamport causality, a round's commits as one).
pub fn save_work(traces: &[Vec<Event>]) -> Result<()> {
    let merged = oracle::merge(traces)?;
    let bad = oracle::check(&merged);
    ensure!(
        bad.is_empty(),
        "{} violations of the commit invariant on the merged trace, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    Ok(())
}

/// No run started over: every run of a member after a failure began by recovering (its
/// trace part begins with `R`), once a checkpoint had been committed.
pub fn resumed(traces: &[Vec<Event>]) -> Result<()> {
    for (i, t) in traces.iter().enumerate() {
        let mut committed = false;
        let mut prev: Option<&Event> = None;
        for e in t {
            if matches!(e, Event::Start) && committed {
                bail!("member {i} started over after a failure although a checkpoint was committed (after {prev:?})");
            }
            if matches!(e, Event::Commit(_)) {
                committed = true;
            }
            prev = Some(e);
        }
    }
    Ok(())
}

/// chat's own invariants on the server's output `server` and each client's output
/// `clients`, all runs appended: the server's order is consistent (a line number never
/// gets two texts across rollbacks) and complete, every input line of every client
/// ([`chat_conversation_inputs`]) is in it exactly once, and every client shows exactly
/// that conversation with repetitions only.
pub fn chat_consistent(server: &str, clients: &[String]) -> Result<()> {
    chat_consistent_n(server, clients, CHAT_LINES)
}

/// [`chat_consistent`] for sessions of `lines` lines per client ([`chat_input_n`]).
pub fn chat_consistent_n(server: &str, clients: &[String], lines: usize) -> Result<()> {
    let mut order: BTreeMap<usize, String> = BTreeMap::new();
    for l in server.lines() {
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let (g, text) = rest.split_once(' ').context("server line")?;
        let g: usize = g.parse()?;
        if let Some(old) = order.insert(g, text.to_string()) {
            ensure!(
                old == text,
                "the server ordered line {g} as {old:?} and later as {text:?}"
            );
        }
    }
    let total = CHAT_CLIENTS * lines;
    ensure!(
        order.len() == total && order.keys().copied().eq(1..=total),
        "server ordered {:?}",
        order.keys()
    );
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in order.values() {
        *count.entry(t.as_str()).or_default() += 1;
    }
    for l in &chat_conversation_inputs_n(lines) {
        ensure!(
            count.get(l.as_str()) == Some(&1),
            "{l:?} is in the conversation {:?} times",
            count.get(l.as_str())
        );
    }
    let conversation: Vec<String> = order.iter().map(|(g, t)| format!("[{g}] {t}")).collect();
    let want: Vec<&str> = conversation.iter().map(String::as_str).collect();
    ensure!(
        clients.len() == CHAT_CLIENTS,
        "{} client outputs for {CHAT_CLIENTS} clients",
        clients.len()
    );
    for (c, out) in clients.iter().enumerate() {
        let screen: String = out
            .lines()
            .filter(|l| l.starts_with('['))
            .map(|l| format!("{l}\n"))
            .collect();
        repetitions_only(&format!("client {c}"), &screen, &want)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_after_a_rollback_pass_and_a_changed_line_fails() {
        let want = ["a", "b", "c"];
        assert_eq!(repetitions_only("w", "a\nb\nb\nc\n", &want).unwrap(), 1);
        assert!(repetitions_only("w", "a\nx\nc\n", &want).is_err());
        assert!(repetitions_only("w", "a\nb\n", &want).is_err());
    }

    #[test]
    fn a_start_after_a_commit_is_starting_over() {
        let t = vec![vec![Event::Start, Event::Commit(1), Event::Start]];
        assert!(resumed(&t).is_err());
        let t = vec![vec![Event::Start, Event::Commit(1), Event::Recover(1)]];
        assert!(resumed(&t).is_ok());
    }
}
