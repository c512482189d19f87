//! An interactive key-value shell made recoverable by Discount Checking.
//!
//! Reads one command per line from stdin, answers on stdout, keeps its data in memory
//! (a `BTreeMap` on the persistent heap) and in files in the working directory. Every
//! prompt carries the number of commands done so far (`kv[3]> `), so whoever types can
//! see where the shell is after a restart.
//!
//! Commands: `set K V`, `get K`, `del K`, `list`, `count`, `sum` (of numeric values),
//! `journal TEXT` (append a line to the journal file, kept open), `save FILE`,
//! `load FILE`, `append FILE TEXT`, `cat FILE`, `rm FILE`, `mv A B`, `time` (reads the
//! clock, prints only `tick`), `burn N` (N million steps of busy work), `quit`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};

use anyhow::Result;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Recoverable key-value shell (Discount Checking demo)")]
struct Args {
    /// Journal file (opened once, written with plain writes).
    #[arg(long, default_value = "kv.journal")]
    journal: String,
    /// No prompts (for piped benchmarks).
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    discount::init(discount::Config::from_env()?)?;
    let a = Args::parse();
    let mut journal = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&a.journal)?;
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut clock_reads = 0u64;
    let mut last_time = 0u128;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        if !a.quiet {
            write!(out, "kv[{n}]> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            writeln!(out, "eof")?;
            break;
        }
        n += 1;
        let mut it = line.trim_end().splitn(3, ' ');
        let cmd = it.next().unwrap_or("");
        let a1 = it.next().unwrap_or("");
        let a2 = it.next().unwrap_or("");
        let reply: String = match cmd {
            "set" => {
                kv.insert(a1.to_string(), a2.to_string());
                writeln!(journal, "set {a1} {a2}")?;
                "ok".into()
            }
            "get" => kv.get(a1).cloned().unwrap_or_else(|| "(nil)".into()),
            "del" => {
                let r = kv.remove(a1).is_some();
                writeln!(journal, "del {a1}")?;
                if r { "1" } else { "0" }.into()
            }
            "list" => kv.keys().cloned().collect::<Vec<_>>().join(" "),
            "count" => kv.len().to_string(),
            "sum" => kv
                .values()
                .filter_map(|v| v.parse::<i64>().ok())
                .sum::<i64>()
                .to_string(),
            "journal" => {
                writeln!(journal, "{a1} {a2}")?;
                "noted".into()
            }
            "save" => {
                let mut s = String::new();
                for (k, v) in &kv {
                    s.push_str(&format!("{k}={v}\n"));
                }
                std::fs::write(a1, s)?;
                format!("saved {}", kv.len())
            }
            "load" => match std::fs::read_to_string(a1) {
                Ok(s) => {
                    let mut c = 0;
                    for l in s.lines() {
                        if let Some((k, v)) = l.split_once('=') {
                            kv.insert(k.into(), v.into());
                            c += 1;
                        }
                    }
                    format!("loaded {c}")
                }
                Err(e) => format!("error {}", e.kind()),
            },
            "append" => {
                let mut f = OpenOptions::new().create(true).append(true).open(a1)?;
                writeln!(f, "{a2}")?;
                "appended".into()
            }
            "cat" => match std::fs::read_to_string(a1) {
                Ok(s) => s.replace('\n', "|"),
                Err(e) => format!("error {}", e.kind()),
            },
            "rm" => match std::fs::remove_file(a1) {
                Ok(()) => "removed".into(),
                Err(e) => format!("error {}", e.kind()),
            },
            "mv" => match std::fs::rename(a1, a2) {
                Ok(()) => "moved".into(),
                Err(e) => format!("error {}", e.kind()),
            },
            "time" => {
                clock_reads += 1;
                last_time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos();
                "tick".into()
            }
            "burn" => {
                let m: u64 = a1.parse().unwrap_or(1);
                let mut x = 1u64 | last_time as u64;
                for _ in 0..m * 1_000_000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
                let _ = File::open("/dev/null")?;
                std::hint::black_box(x);
                format!("burned {m}")
            }
            "quit" => {
                writeln!(out, "bye after {n} commands, {clock_reads} clock reads")?;
                break;
            }
            "" => "".into(),
            other => format!("unknown command {other:?}"),
        };
        writeln!(out, "{reply}")?;
    }
    Ok(())
}
