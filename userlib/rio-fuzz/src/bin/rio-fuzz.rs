//! rio-fuzz (guest): `run` a seeded, model-checked history of ops against /dev/rio from
//! actors with different identities; `verify` a recovered arena after a crash; `ops` to
//! print the op list of a seed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rio_fuzz::guest::coord::{self, GuestError, RunArgs};
use rio_fuzz::ops::{IndexSet, Selection};

#[derive(Parser)]
#[command(about = "Model-checking fuzzer for /dev/rio (runs as root in the guest)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// The seed: it fixes every op.
    #[arg(long)]
    seed: u64,
    /// Ops to generate.
    #[arg(long, default_value_t = 300)]
    ops: u32,
    /// Run only these op indices (e.g. 1,4-9,12).
    #[arg(long)]
    only: Option<IndexSet>,
    /// Skip these op indices.
    #[arg(long, default_value = "")]
    skip: IndexSet,
    /// Noise threads beside the checked history (their objects are ignored by verify).
    #[arg(long)]
    noise: bool,
    /// A backing disk is attached (SYNC must succeed; without one it fails with ENODEV).
    #[arg(long)]
    backing: bool,
    /// rio.ko's max_user_objects, if loaded with a non-default value.
    #[arg(long)]
    max_user_objects: Option<u64>,
    /// rio.ko's max_user_pages, if loaded with a non-default value.
    #[arg(long)]
    max_user_pages: Option<u64>,
    /// rio.ko was loaded with allow_wild_store=1 (then wild stores are not fuzzed).
    #[arg(long)]
    wild_store_allowed: bool,
    /// The device.
    #[arg(long, default_value = "/dev/rio")]
    dev: PathBuf,
    /// Mount a fresh riofs (object rfz at /mnt/rfz) and fuzz riofs system calls too.
    #[arg(long)]
    riofs: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a history and check every answer.
    Run {
        #[command(flatten)]
        c: Common,
        /// Where acknowledgements go (e.g. /dev/ttyS2); stdout if absent.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Delete every existing object first.
        #[arg(long)]
        fresh: bool,
        /// The whole run must finish within this many seconds.
        #[arg(long, default_value_t = 600)]
        deadline: u64,
        /// Each answer must come within this many seconds.
        #[arg(long, default_value_t = 30)]
        op_timeout: u64,
        /// Print every op and its expected outcome.
        #[arg(short, long)]
        verbose: bool,
        /// With --noise: keep the noise threads running at least this many seconds.
        #[arg(long, default_value_t = 0)]
        min_noise_secs: u64,
    },
    /// After a crash and recovery: compare the arena with the model.
    Verify {
        #[command(flatten)]
        c: Common,
        /// The index of the last acknowledged op (none: nothing was acknowledged).
        #[arg(long)]
        last_acked: Option<u32>,
    },
    /// Print the ops of a seed (and, with --model, what the model expects of each).
    Ops {
        #[command(flatten)]
        c: Common,
        /// Data pages of the arena (for the model's limits).
        #[arg(long, default_value_t = 16000)]
        data_pages: u64,
    },
}

fn args_of(c: &Common) -> RunArgs {
    RunArgs {
        seed: c.seed,
        ops: c.ops,
        sel: Selection {
            only: c.only.clone(),
            skip: c.skip.clone(),
        },
        noise: c.noise,
        log: None,
        backing: c.backing,
        max_user_objects: c.max_user_objects,
        max_user_pages: c.max_user_pages,
        wild_store_allowed: c.wild_store_allowed,
        fresh: false,
        deadline: Duration::from_secs(600),
        op_timeout: Duration::from_secs(30),
        verbose: false,
        dev: c.dev.clone(),
        min_noise: Duration::ZERO,
        riofs: c.riofs,
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rio-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            c,
            log,
            fresh,
            deadline,
            op_timeout,
            verbose,
            min_noise_secs,
        } => {
            let mut a = args_of(&c);
            a.log = log;
            a.fresh = fresh;
            a.deadline = Duration::from_secs(deadline);
            a.op_timeout = Duration::from_secs(op_timeout);
            a.verbose = verbose;
            a.min_noise = Duration::from_secs(min_noise_secs);
            match coord::run(&a) {
                Ok(s) => {
                    println!("ops {}, mismatches {}", s.executed, s.mismatches);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (GuestError::Mismatch(_) | GuestError::Hang(_))) => {
                    println!("{e}");
                    println!(
                        "reproduce: rio-fuzz run --seed {} --ops {}{} --fresh{}",
                        c.seed,
                        c.ops,
                        sel_flags(&c),
                        flag_tail(&c)
                    );
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Verify { c, last_acked } => match coord::verify(&args_of(&c), last_acked) {
            Ok(msg) => {
                println!("{msg}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ GuestError::Verify(_)) => {
                println!("{e}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        },
        Cmd::Ops { c, data_pages } => {
            let a = args_of(&c);
            let mut cfg = rio_fuzz::model::Config::defaults(data_pages);
            cfg.backing = a.backing;
            cfg.wild_store_allowed = a.wild_store_allowed;
            cfg.riofs = a.riofs;
            if let Some(n) = a.max_user_objects {
                cfg.max_user_objects = n;
            }
            if let Some(n) = a.max_user_pages {
                cfg.max_user_pages = n;
            }
            if a.noise {
                cfg.noise = rio_fuzz::guest::noise::NOISE_OBJECTS
                    .iter()
                    .map(|n| (n.to_string(), rio_fuzz::guest::noise::NOISE_SIZE))
                    .collect();
            }
            let ops = rio_fuzz::gen::generate(c.seed, c.ops, &cfg);
            let mut m = rio_fuzz::model::Model::new(cfg, c.seed);
            for (i, op) in ops.iter().enumerate() {
                if !a.sel.runs(i as u32) {
                    continue;
                }
                match m.step(i as u32, op) {
                    Some(p) => println!(
                        "{i}: {op} -> {}",
                        rio_fuzz::model::describe_expect(&p.expect)
                    ),
                    None => println!("{i}: {op} -> (does not apply: skipped)"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sel_flags(c: &Common) -> String {
    let mut s = String::new();
    if let Some(o) = &c.only {
        s.push_str(&format!(" --only {o}"));
    }
    if !c.skip.0.is_empty() {
        s.push_str(&format!(" --skip {}", c.skip));
    }
    s
}

fn flag_tail(c: &Common) -> String {
    let mut s = String::new();
    if c.noise {
        s.push_str(" --noise");
    }
    if c.backing {
        s.push_str(" --backing");
    }
    if c.riofs {
        s.push_str(" --riofs");
    }
    if let Some(n) = c.max_user_objects {
        s.push_str(&format!(" --max-user-objects {n}"));
    }
    if let Some(n) = c.max_user_pages {
        s.push_str(&format!(" --max-user-pages {n}"));
    }
    s
}
