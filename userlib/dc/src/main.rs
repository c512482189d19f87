//! `dc`: run an unmodified, dynamically linked program with failure transparency
//! (Discount Checking, Lowell's thesis chapters 5 and 6).
//!
//! `dc run -- PROGRAM ARGS...` preloads `libdc_preload.so` (this crate's library: the
//! discount crate with an ELF constructor that calls `dc_init()`) into PROGRAM and
//! executes it. Kill it at any point; run the same command again: it resumes from its
//! last checkpoint. `dc status`, `dc discard` and `dc check` look at, forget and verify
//! what a state directory holds.

use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use discount::state::{self, ImageState};
use discount::{oracle, Config, StoreKind};

mod coord;

#[derive(Parser, Debug)]
#[command(
    name = "dc",
    version,
    about = "Run an unmodified program with Discount Checking's failure transparency",
    long_about = "Run an unmodified, dynamically linked program with failure transparency \
                  (Discount Checking): kill it at any point, run the same `dc run` command \
                  again, and it resumes from its last checkpoint with its memory, files and \
                  signal handlers; its output is that of a run without the crash, except \
                  for the repetition the commit protocol allows."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run PROGRAM recoverably; after a crash, the same command resumes it.
    Run(RunArgs),
    /// Show the checkpoint a state directory holds (program, age, size).
    Status(DirArgs),
    /// Forget a checkpoint: the next run starts afresh (asks first).
    Discard {
        #[command(flatten)]
        dir: DirArgs,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Check a recorded event trace (`dc run --trace`) against the commit invariant
    /// (Save-work, thesis Theorem 2).
    Check {
        #[command(flatten)]
        dir: DirArgs,
        /// The trace file (default: the state directory's `trace`).
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Coordinate the distributed checkpoints of a computation of several processes
    /// (the 2PC protocols: each member runs `dc run --protocol cpv-2pc --coord ADDR
    /// --member I`).
    Coord(coord::CoordArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Commit protocol: cpvs, cbndvs, cand, cbndvs-log, cand-log, manual; for a process
    /// of a computation whose checkpoints are taken together, cpv-2pc or cbndv-2pc (with
    /// --coord and --member).
    #[arg(long, short = 'p', default_value = "cpvs")]
    protocol: String,
    /// The 2PC coordinator's address (`dc coord` prints it), for cpv-2pc and cbndv-2pc.
    #[arg(long, value_name = "IP:PORT", requires = "member")]
    coord: Option<String>,
    /// This process's index in the computation (0 to N-1), with --coord.
    #[arg(long, value_name = "I", requires = "coord")]
    member: Option<u16>,
    /// A peer outside the computation (repeatable, or separated by commas): IP:PORT,
    /// [IPv6]:PORT (port 0: any port of that host; 0.0.0.0 or [::]: any host),
    /// unix:PATH or unix:@NAME. Under cpv-2pc and cbndv-2pc a connection to or from it
    /// (and a datagram to it) is the outside world: its sends are visible events
    /// (committed first), a round does not wait for it, and after a recovery it is gone
    /// (ECONNRESET/EPIPE) instead of made again. Every other peer is taken to be a member.
    /// Under the single-process protocols every peer is outside already. Also DC_OUTSIDE.
    #[arg(long, value_name = "ADDR")]
    outside: Vec<String>,
    /// Where the checkpoint image lives: `files` (in the state directory) or
    /// `rio:PREFIX` (Rio objects of /dev/rio; the directory must be mounted -o sync).
    #[arg(long, default_value = "files")]
    store: String,
    /// Also checkpoint every MS milliseconds.
    #[arg(long, value_name = "MS")]
    interval: Option<u64>,
    /// State directory (default: ./.dc-<program name>).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Record an event trace in the state directory (for `dc check`).
    #[arg(long)]
    trace: bool,
    /// Write Discount Checking's own messages (refused system calls, recovery problems)
    /// to FILE instead of stderr: for a full-screen program, whose terminal they would
    /// otherwise scribble on.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The shared object to preload (default: $DC_PRELOAD, or libdc_preload.so next to
    /// this binary).
    #[arg(long)]
    preload: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

#[derive(Args, Debug)]
struct DirArgs {
    /// State directory (default: the program's, or the only .dc-* here).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The program whose default state directory (./.dc-<name>) to use.
    #[arg(long)]
    program: Option<PathBuf>,
}

/// What `dc run` records next to the image (`dc.conf`): the `DC_*` settings the program
/// runs with (so that `status` and `discard` open the store the same way) and the
/// preloaded library's identity.
const CONF: &str = "dc.conf";

fn default_dir(program: &Path) -> PathBuf {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".into());
    PathBuf::from(format!(".dc-{name}"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// `PROGRAM` as `execvp` would find it.
fn resolve(program: &Path) -> Result<PathBuf> {
    let found = if program.as_os_str().as_bytes().contains(&b'/') {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    let Some(p) = found else {
        bail!("{}: command not found", program.display());
    };
    std::fs::canonicalize(&p).with_context(|| format!("{}", p.display()))
}

/// Refuses what preloading cannot reach: a file that is not an ELF executable, or one
/// linked statically (no `PT_INTERP`).
fn check_dynamic_elf(exe: &Path) -> Result<()> {
    let mut f = std::fs::File::open(exe).with_context(|| format!("open {}", exe.display()))?;
    let mut b = Vec::new();
    f.by_ref().take(1 << 16).read_to_end(&mut b)?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        bail!(
            "{} is not an ELF executable (a script? run its interpreter under dc)",
            exe.display()
        );
    }
    if b[4] != 2 || b[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", exe.display());
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16at(54), u16at(56));
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) == 3
    });
    if !interp {
        bail!(
            "{} is statically linked: a preloaded library cannot reach it; link it with \
             libdiscount.a and call dc_init() first in main (see discount/README.md)",
            exe.display()
        );
    }
    Ok(())
}

/// Identity of a file: dev, inode, size, mtime.
fn ident(p: &Path) -> Result<String> {
    let m = std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
    Ok(format!(
        "{} {} {} {}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime()
    ))
}

/// `dc.conf`: `KEY=VALUE` lines.
fn read_conf(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(CONF))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn conf_get<'a>(conf: &'a [(String, String)], key: &str) -> Option<&'a str> {
    conf.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The discount configuration the program in `dir` runs with: its recorded `DC_*`
/// settings (for the sizes that decide the image's layout), then `dir`.
fn config_for(dir: &Path, conf: &[(String, String)]) -> Result<Config> {
    for (k, v) in conf {
        if k.starts_with("DC_") {
            std::env::set_var(k, v);
        }
    }
    std::env::set_var("DC_DIR", dir);
    Ok(Config::from_env()?)
}

fn pick_dir(d: &DirArgs) -> Result<PathBuf> {
    if let Some(dir) = &d.dir {
        return absolute(dir);
    }
    if let Some(p) = &d.program {
        return absolute(&default_dir(p));
    }
    let here: Vec<PathBuf> = std::fs::read_dir(".")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".dc-") && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    match here.as_slice() {
        [one] => absolute(one),
        [] => bail!("no state directory here (.dc-*): give --dir or --program"),
        many => bail!(
            "several state directories here ({}): give --dir or --program",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `DC_OUTSIDE` for the program: the caller's own `DC_OUTSIDE` (`env`) and every `--outside`
/// (each may list several, separated by commas), checked, `AF_UNIX` paths made absolute
/// (relative to this directory, the program's), separated by commas. None if there are
/// none.
fn outside_setting(env: Option<&str>, args: &[String]) -> Result<Option<String>> {
    let mut all = Vec::new();
    if let Some(env) = env {
        all.extend(discount::outside::parse_list(env).context("DC_OUTSIDE")?);
    }
    for a in args {
        all.extend(discount::outside::parse_list(a).with_context(|| format!("--outside {a}"))?);
    }
    let v: Vec<String> = all.iter().map(ToString::to_string).collect();
    if let Some(bad) = v.iter().find(|s| s.contains(',')) {
        bail!("--outside {bad}: a path with a comma cannot be passed (DC_OUTSIDE separates addresses with commas)");
    }
    Ok((!v.is_empty()).then(|| v.join(",")))
}

fn run(a: RunArgs) -> Result<()> {
    let Some((program, args)) = a.command.split_first() else {
        bail!("no program given (dc run -- PROGRAM ARGS...)");
    };
    let exe = resolve(Path::new(program))?;
    check_dynamic_elf(&exe)?;
    let preload = match a
        .preload
        .clone()
        .or_else(|| std::env::var_os("DC_PRELOAD").map(PathBuf::from))
    {
        Some(p) => absolute(&p)?,
        None => std::env::current_exe()?
            .parent()
            .context("the dc binary's directory")?
            .join("libdc_preload.so"),
    };
    if !preload.is_file() {
        bail!(
            "{} not found: build the dc crate (cargo build -p dc), or give --preload",
            preload.display()
        );
    }
    let protocol: discount::Protocol = a.protocol.parse()?;
    let store: StoreKind = a.store.parse()?;
    let dir = absolute(&a.dir.clone().unwrap_or_else(|| default_dir(&exe)))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let preload_ident = ident(&preload)?;

    // A checkpoint to resume? It must be of this program, built as it was then.
    let old = read_conf(&dir);
    let mut settings: Vec<(String, String)> = vec![
        ("DC_PROTOCOL".into(), protocol.name().into()),
        ("DC_STORE".into(), a.store.clone()),
    ];
    if let Some(ms) = a.interval {
        settings.push(("DC_INTERVAL_MS".into(), ms.to_string()));
    }
    if let (Some(c), Some(m)) = (&a.coord, a.member) {
        settings.push(("DC_COORD".into(), c.clone()));
        settings.push(("DC_MEMBER".into(), m.to_string()));
    }
    if let Some(v) = outside_setting(std::env::var("DC_OUTSIDE").ok().as_deref(), &a.outside)? {
        settings.push(("DC_OUTSIDE".into(), v));
    }
    if protocol.uses_2pc() != a.coord.is_some() {
        bail!(
            "--coord and --member go with the 2PC protocols (cpv-2pc, cbndv-2pc), and they need them (protocol {protocol})"
        );
    }
    if a.trace {
        settings.push(("DC_TRACE".into(), "1".into()));
    }
    if let Some(l) = &a.log {
        settings.push(("DC_LOG".into(), absolute(l)?.display().to_string()));
    }
    // The caller's own DC_* settings (sizes, tracker) go to the program as well.
    for (k, v) in std::env::vars() {
        let ours = ["DC_DIR", "DC_EXEC_STAGE", "DC_PRELOAD"].contains(&k.as_str());
        if k.starts_with("DC_") && !ours && !settings.iter().any(|(s, _)| *s == k) {
            settings.push((k, v));
        }
    }
    if !settings.iter().any(|(k, _)| k == "DC_SUD") {
        // An unmodified program does its input and output inside glibc: without
        // trapping, nothing of it would be seen.
        settings.push(("DC_SUD".into(), "1".into()));
    }
    let conf_now = if old.is_empty() { &settings } else { &old };
    let cfg = config_for(&dir, conf_now)?;
    if cfg.store != store && !old.is_empty() {
        eprintln!(
            "dc: note: {} was made with --store {}; that is what a resumed run uses",
            dir.display(),
            conf_get(&old, "DC_STORE").unwrap_or("files")
        );
    }
    let info = state::inspect(&cfg)
        .with_context(|| format!("the checkpoint store of {} cannot be used", dir.display()))?;
    match info {
        Some(i) if i.state == ImageState::Valid => {
            let Some(ex) = &i.exec else {
                bail!(
                    "{} holds a checkpoint but no record of its program (exec file): \
                     `dc discard --dir {}` to forget it",
                    dir.display(),
                    dir.display()
                );
            };
            let was = PathBuf::from(std::ffi::OsStr::from_bytes(&ex.exe));
            if was != exe {
                bail!(
                    "{} holds a checkpoint of {}, not of {}: `dc discard --dir {}` to \
                     forget it, or give another --dir",
                    dir.display(),
                    was.display(),
                    exe.display(),
                    dir.display()
                );
            }
            ex.check_same_binary().map_err(|e| {
                anyhow::anyhow!(
                    "{e}: the checkpoint in {} cannot be resumed with a different binary \
                     (`dc discard --dir {}` to start afresh)",
                    dir.display(),
                    dir.display()
                )
            })?;
            if conf_get(&old, "preload_ident") != Some(preload_ident.as_str()) {
                bail!(
                    "{} changed since the checkpoint in {} was taken (rebuilt?): its data \
                     layout is part of the checkpoint; `dc discard --dir {}` to start afresh",
                    preload.display(),
                    dir.display(),
                    dir.display()
                );
            }
            let now: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let then: Vec<&[u8]> = ex.argv.iter().skip(1).map(|a| a.as_slice()).collect();
            if now != then {
                eprintln!("dc: note: resuming with the arguments of the first run, not these");
            }
        }
        _ => {
            // A fresh start: record how.
            let mut s = String::new();
            for (k, v) in &settings {
                s.push_str(&format!("{k}={v}\n"));
            }
            s.push_str(&format!("program={}\n", exe.display()));
            s.push_str(&format!("preload={}\n", preload.display()));
            s.push_str(&format!("preload_ident={preload_ident}\n"));
            std::fs::write(dir.join(CONF), s).context("write dc.conf")?;
        }
    }
    let mut ld = preload.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        if !old.is_empty() {
            ld.push(":");
            ld.push(old);
        }
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg0(program)
        .args(args)
        .env("LD_PRELOAD", ld)
        .env("DC_DIR", &dir);
    for (k, v) in &settings {
        cmd.env(k, v);
    }
    let e = cmd.exec();
    bail!("cannot execute {}: {e}", exe.display())
}

fn status(d: DirArgs) -> Result<()> {
    let dir = pick_dir(&d)?;
    if !dir.is_dir() {
        bail!("{}: no such state directory", dir.display());
    }
    let conf = read_conf(&dir);
    let cfg = config_for(&dir, &conf)?;
    println!("state directory: {}", dir.display());
    let store = conf_get(&conf, "DC_STORE").unwrap_or("files");
    let info = state::inspect(&cfg)?;
    let Some(i) = info else {
        println!("checkpoint: none (store {store})");
        return Ok(());
    };
    let what = match i.state {
        ImageState::Valid => "valid: the next `dc run` resumes it",
        ImageState::Finished => "finished (the program exited): the next run starts afresh",
        ImageState::Empty => "none committed yet: the next run starts afresh",
    };
    match i.prepared {
        Some(tag) => println!(
            "checkpoint: prepared for distributed commit epoch {tag}: the next `dc run` asks \
             the coordinator (DC_COORD {}) whether to finish or roll it back",
            conf_get(&conf, "DC_COORD").unwrap_or("?")
        ),
        None => println!("checkpoint: #{} {what}", i.seq),
    }
    if let Some(ns) = i.age_ns {
        println!("last commit: {:.1} s ago", ns as f64 / 1e9);
    }
    if let Some(ex) = &i.exec {
        let argv: Vec<String> = ex
            .argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        println!(
            "program: {} (started as: {})",
            String::from_utf8_lossy(&ex.exe),
            argv.join(" ")
        );
        if ex.check_same_binary().is_err() {
            println!("warning: the program's binary changed since: it cannot be resumed");
        }
    }
    println!(
        "protocol: {}",
        conf_get(&conf, "DC_PROTOCOL").unwrap_or("manual")
    );
    println!(
        "image: {} ({} on disk), store {store}",
        human(i.image_bytes),
        human(i.disk_bytes)
    );
    Ok(())
}

fn discard(d: DirArgs, yes: bool) -> Result<()> {
    let dir = pick_dir(&d)?;
    if !dir.is_dir() {
        bail!("{}: no such state directory", dir.display());
    }
    let conf = read_conf(&dir);
    let cfg = config_for(&dir, &conf)?;
    if !yes {
        let what = conf_get(&conf, "program").unwrap_or("a program");
        eprint!(
            "dc: forget the checkpoint of {what} in {}? Its next run starts afresh. [y/N] ",
            dir.display()
        );
        let mut line = String::new();
        let n = std::io::stdin().lock().read_line(&mut line).unwrap_or(0);
        if n == 0 {
            bail!("no answer (stdin is closed): not discarded; use --yes to skip the question");
        }
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            bail!("not discarded");
        }
    }
    state::discard(&cfg)?;
    eprintln!("dc: discarded {}", dir.display());
    Ok(())
}

fn check(d: DirArgs, trace: Option<PathBuf>) -> Result<()> {
    let path = match trace {
        Some(t) => t,
        None => pick_dir(&d)?.join("trace"),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read {} (record one with `dc run --trace`)", path.display()))?;
    let events = oracle::parse(&text)?;
    let c = oracle::counts(&events);
    println!(
        "{}: {} events: {} commits, {} non-deterministic, {} logged, {} visible, {} recoveries",
        path.display(),
        events.len(),
        c.commits,
        c.nd,
        c.logged,
        c.visible,
        c.recoveries
    );
    let bad = oracle::check_one(&events);
    if bad.is_empty() {
        println!("commit invariant (Save-work): holds");
        return Ok(());
    }
    for v in bad.iter().take(20) {
        println!("violation at event #{}: {}", v.at, v.what);
    }
    bail!("{} violations of the commit invariant", bad.len())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Status(d) => status(d),
        Cmd::Discard { dir, yes } => discard(dir, yes),
        Cmd::Check { dir, trace } => check(dir, trace),
        Cmd::Coord(a) => coord::coord(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["dc", "run", "--protocol", "cand", "--", "bc", "-q"]).unwrap();
        match c.cmd {
            Cmd::Run(a) => {
                assert_eq!(a.protocol, "cand");
                assert_eq!(a.command, vec![OsString::from("bc"), OsString::from("-q")]);
            }
            _ => panic!("not run"),
        }
        assert!(Cli::try_parse_from(["dc", "run"]).is_err());
        let c = Cli::try_parse_from([
            "dc",
            "run",
            "--outside",
            "127.0.0.1:5432",
            "--outside",
            "unix:/run/x,@y",
            "--",
            "prog",
        ])
        .unwrap();
        let Cmd::Run(a) = c.cmd else {
            panic!("not run")
        };
        assert_eq!(
            outside_setting(Some("[::1]:7"), &a.outside)
                .unwrap()
                .as_deref(),
            Some("[::1]:7,127.0.0.1:5432,unix:/run/x,unix:@y")
        );
        assert!(outside_setting(None, &["nowhere".into()]).is_err());
        assert_eq!(outside_setting(None, &[]).unwrap(), None);
    }

    #[test]
    fn static_and_non_elf_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("s.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let e = check_dynamic_elf(&script).unwrap_err().to_string();
        assert!(e.contains("not an ELF"), "{e}");
        check_dynamic_elf(Path::new("/bin/sh")).unwrap();
        if let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            if check_dynamic_elf(bb).is_err() {
                let e = check_dynamic_elf(bb).unwrap_err().to_string();
                assert!(e.contains("statically linked"), "{e}");
            }
        }
    }
}
