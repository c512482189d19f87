//! The full-screen tests' terminal: [`dc_drive::run_once`] runs each run on a fresh
//! pseudo-terminal (as a user who runs the same command again in a new window would) and
//! types the session as the program's Discount Checking trace paces it; here its output
//! is fed to one emulated screen (`vt100`) that persists across runs like the user's
//! terminal window, and the program is SIGKILLed as planned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dc_drive::{Command, Crash, End, Plan, Seen, Session as Script};
use discount::oracle::Event;

use super::{preload, trace_since, Run};

pub use dc_drive::{Pacing, COLS, ROWS};

/// What to run (each run on a new terminal).
pub struct Target<'a> {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    /// The event trace (None: the failure-free run, paced by counting).
    pub trace: Option<PathBuf>,
}

/// The terminal reads in the history the trace leaves ([`dc_drive::reads_in_history`]).
pub fn reads_in_history(trace: &[Event]) -> Result<usize> {
    Ok(dc_drive::reads_in_history(trace)?)
}

/// What a session of runs produced.
pub struct Session {
    pub runs: Vec<Run>,
    /// The emulated screen after the last run.
    pub screen: vt100::Parser,
    /// The screen's contents just before the last input was typed.
    pub before_last: String,
}

/// Text and cursor of a screen, for comparisons and messages.
pub fn show(s: &vt100::Screen) -> String {
    format!(
        "{}\n[cursor {:?}, alternate screen {}]",
        s.contents(),
        s.cursor_position(),
        s.alternate_screen()
    )
}

/// Runs `t` through `inputs` (each sent as one write, or with [`Pacing::Bytes`] its part
/// the program has not read yet). `kills`: sorted input indices with delays (ms): once the
/// input of that index (or a later one) has been typed, wait the delay and SIGKILL the
/// program, then run the same command again on a new terminal.
pub fn drive(
    t: &Target<'_>,
    inputs: &[String],
    pacing: Pacing,
    kills: &[(usize, u64)],
    deadline: Duration,
) -> Result<Session> {
    let end = Instant::now() + deadline;
    let script = Script::new(
        inputs.iter().map(|s| s.as_bytes().to_vec()).collect(),
        pacing,
    );
    let mut env = t.env.clone();
    env.push(("DC_PRELOAD".into(), preload().display().to_string()));
    let c = Command {
        argv: t.argv.clone(),
        env,
        cwd: t.cwd.to_path_buf(),
        trace: t.trace.clone(),
    };
    let mut screen = vt100::Parser::new(ROWS, COLS, 0);
    let mut before_last = String::new();
    let mut runs = Vec::new();
    let (_, mut traced) = trace_since(t.trace.as_deref(), u64::MAX)?;
    let mut typed = 0usize;
    for k in 0..=kills.len() {
        let plan = kills.get(k).map(|&(after, delay_ms)| Plan {
            after,
            delay_ms,
            how: Crash::Kill,
        });
        let mut on = |s: Seen<'_>| match s {
            Seen::Output(b) => screen.process(b),
            Seen::BeforeLast => before_last = show(screen.screen()),
            Seen::Stopped => {}
        };
        let r = dc_drive::run_once(&c, &script, plan, typed, end, &mut on)
            .map_err(|e| anyhow::anyhow!("{e}; screen:\n{}", show(screen.screen())))?;
        typed = r.typed;
        let (trace, n) = trace_since(t.trace.as_deref(), traced)?;
        traced = n;
        let code = match r.end {
            End::Exited(code) => Some(code),
            End::Killed => None,
        };
        runs.push(Run {
            out: r.out,
            code,
            trace,
        });
        match code {
            Some(0) if k < kills.len() => {
                bail!(
                    "the run ended before the planned kills {:?} landed",
                    &kills[k..]
                )
            }
            Some(0) => {}
            Some(c) => bail!("run ended with {c}; screen:\n{}", show(screen.screen())),
            None => {}
        }
    }
    Ok(Session {
        runs,
        screen,
        before_last,
    })
}
