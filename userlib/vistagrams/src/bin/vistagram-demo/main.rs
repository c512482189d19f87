//! Vistagrams example applications: the distributed lock of the thesis's Figure 4.4, and
//! a bank of accounts spread over servers with transfers between them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use vista::{Durability, Segment, SegmentConfig};
use vistagrams::EndpointConfig;

mod bank;
mod lock;

/// Where every demo maps its segment (one segment per process).
pub const SEG_ADDR: usize = 0x3e00_0000_0000;

#[derive(Parser)]
#[command(
    version,
    about = "Vistagrams example applications (Lowell's thesis, chapter 4)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The lock manager of Figure 4.4: grants one lock to one client at a time.
    LockServer(lock::ServerArgs),
    /// A lock client: acquires and releases the lock ROUNDS times, logging each hold.
    LockClient(lock::ClientArgs),
    /// A bank server: accounts in its segment; withdraw, deposit and balance requests.
    BankServer(bank::ServerArgs),
    /// A bank client: TRANSFERS transfers between accounts on the servers, resumable.
    BankClient(bank::ClientArgs),
    /// Prints a bank server's balances and table occupancy (after recovery).
    BankDump(bank::DumpArgs),
}

/// Options every process shares.
#[derive(Args, Clone)]
pub struct Common {
    /// The segment file (created if absent).
    #[arg(long)]
    pub segment: PathBuf,
    /// Fraction of incoming datagrams to drop on purpose (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub drop: f64,
    /// Retransmission interval, milliseconds.
    #[arg(long, default_value_t = 30)]
    pub retransmit_ms: u64,
    /// Seed of the drop decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Common {
    /// The endpoint configuration; the server honours `VISTAGRAMS_TEST_NO_DEDUP=1` (a
    /// negative control for the tests).
    pub fn endpoint_config(&self) -> EndpointConfig {
        EndpointConfig {
            retransmit_interval: Duration::from_millis(self.retransmit_ms.max(1)),
            ack_delay: Duration::from_millis(10),
            drop_incoming: self.drop,
            drop_seed: self.seed ^ std::process::id() as u64,
            test_no_dedup: std::env::var("VISTAGRAMS_TEST_NO_DEDUP").is_ok_and(|v| v == "1"),
            ..EndpointConfig::default()
        }
    }
}

/// Opens the segment at `path`, or creates it.
pub fn open_segment(path: &Path) -> Result<Segment> {
    if path.exists() {
        Segment::open_file(path, SEG_ADDR, Durability::Memory)
            .with_context(|| format!("opening {}", path.display()))
    } else {
        let tmp = path.with_extension("creating");
        let _ = std::fs::remove_file(&tmp);
        let seg = Segment::create_file(
            &tmp,
            SEG_ADDR,
            &SegmentConfig::new(8 << 20),
            Durability::Memory,
        )
        .with_context(|| format!("creating {}", path.display()))?;
        drop(seg);
        // A crash during creation leaves only the temporary file.
        std::fs::rename(&tmp, path)?;
        Segment::open_file(path, SEG_ADDR, Durability::Memory)
            .with_context(|| format!("opening {}", path.display()))
    }
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::LockServer(a) => lock::server(a),
        Cmd::LockClient(a) => lock::client(a),
        Cmd::BankServer(a) => bank::server(a),
        Cmd::BankClient(a) => bank::client(a),
        Cmd::BankDump(a) => bank::dump(a),
    }
}
