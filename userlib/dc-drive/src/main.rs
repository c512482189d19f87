//! `dc-drive`: types a scripted session into a program on a fresh pseudo-terminal, like a
//! user who types the next input when the program waits for one, and keeps what the
//! program showed in files that survive a crash of the whole machine. Run it again after
//! a crash (with the same arguments) and it starts the program again and goes on typing
//! where the program's Discount Checking trace says the program stands; it needs to
//! remember nothing itself.
//!
//! In `--out DIR`, run N (one more than the runs already there) leaves:
//! `out.N` (everything the program wrote to its terminal, appended and synced as it
//! arrives), `trace-at.N` (the trace's length when the run started: where its events
//! begin), `before-last.N` (how much of `out.N` there was when the last input was about
//! to be typed) and `exit.N` (the exit code, once it exits).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dc_drive::{append_durably, run_once, Command, Crash, End, Pacing, Plan, Seen, Session};

#[derive(Parser, Debug)]
#[command(
    name = "dc-drive",
    about = "Type a scripted session into a program on a pseudo-terminal; after a crash, run again to go on where the program's trace says it stands"
)]
struct Args {
    /// The session: a JSON array of strings, each typed as one burst.
    #[arg(long)]
    session: PathBuf,
    /// How the program reads its terminal: `bursts` (a whole input per read, as nvi) or
    /// `bytes` (a key per read, as curses programs).
    #[arg(long, default_value = "bursts")]
    pacing: Pacing,
    /// Where the runs' output and bookkeeping go (see the module documentation).
    #[arg(long)]
    out: PathBuf,
    /// The program's Discount Checking trace (`dc run --trace`: STATE/trace), which says
    /// how far the program is. Without it the session is typed from the start (the
    /// failure-free reference run).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Working directory of the program.
    #[arg(long, default_value = ".")]
    cwd: PathBuf,
    /// KEY=VALUE added to the program's environment (which is otherwise only PATH).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Crash the machine (a kernel panic through /proc/sysrq-trigger) once input INPUT
    /// (counted from 0, or a later one) has been typed and DELAY ms more have passed; the
    /// program is stopped first and all it wrote shown (kept in `out.N`).
    #[arg(long, value_name = "INPUT:DELAY")]
    panic_after: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let text = std::fs::read_to_string(&a.session)
        .with_context(|| format!("read the session {}", a.session.display()))?;
    let session = Session::from_json(&text, a.pacing)
        .map_err(|e| anyhow::anyhow!("the session {}: {e}", a.session.display()))?;
    let mut env = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected KEY=VALUE");
        };
        env.push((k.to_string(), v.to_string()));
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let n = (1..)
        .find(|n| !a.out.join(format!("out.{n}")).exists())
        .context("count the runs")?;
    let trace_len = match &a.trace {
        Some(t) => std::fs::metadata(t).map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    let file = |what: &str| a.out.join(format!("{what}.{n}"));
    append_durably(&file("trace-at"), format!("{trace_len}\n").as_bytes())
        .context("record where the run's trace begins")?;
    append_durably(&file("out"), b"").context("create the output file")?;
    let c = Command {
        argv: a.command.clone(),
        env,
        cwd: a.cwd.clone(),
        trace: a.trace.clone(),
    };
    let plan = match &a.panic_after {
        None => None,
        Some(p) => {
            let (i, d) = p
                .split_once(':')
                .and_then(|(i, d)| Some((i.parse().ok()?, d.parse().ok()?)))
                .with_context(|| format!("--panic-after {p:?}: expected INPUT:DELAY"))?;
            Some(Plan {
                after: i,
                delay_ms: d,
                how: Crash::Stop,
            })
        }
    };
    let mut shown = 0usize;
    let mut failed: Option<std::io::Error> = None;
    let mut on = |s: Seen<'_>| {
        let r = match s {
            Seen::Output(b) => {
                shown += b.len();
                append_durably(&file("out"), b)
            }
            Seen::BeforeLast => {
                append_durably(&file("before-last"), format!("{shown}\n").as_bytes())
            }
            Seen::Stopped => {
                eprintln!("dc-drive: run {n}: kernel panic now, after {shown} bytes of output");
                std::fs::write("/proc/sysrq-trigger", b"c")
            }
        };
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let run = run_once(&c, &session, plan, 0, deadline, &mut on)
        .with_context(|| format!("run {n} of {:?}", a.command))?;
    if let Some(e) = failed {
        return Err(e).context("keep the program's output");
    }
    let code = match run.end {
        End::Exited(code) => code,
        End::Killed => bail!("run {n}: the kernel did not panic (is /proc/sysrq-trigger there?)"),
    };
    append_durably(&file("exit"), format!("{code}\n").as_bytes()).context("record the exit")?;
    eprintln!(
        "dc-drive: run {n} of {:?} exited with {code} after {} bytes of output",
        a.command,
        run.out.len()
    );
    std::process::exit(code);
}
