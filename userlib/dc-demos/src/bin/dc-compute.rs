//! A compute loop made recoverable by Discount Checking: it scrambles an array with a
//! pseudo-random walk and prints a checksum every `--print-every` rounds. The output is a
//! pure function of the arguments, so a run that is killed and restarted (any number of
//! times) must print the same lines as one that is not, except that lines printed since
//! the last checkpoint may appear twice.

use anyhow::Result;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Recoverable compute loop (Discount Checking demo)")]
struct Args {
    /// Rounds.
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// Array size in KiB.
    #[arg(long, default_value_t = 1024)]
    kib: usize,
    /// Random updates per round.
    #[arg(long, default_value_t = 20000)]
    updates: usize,
    /// Print a checksum every this many rounds.
    #[arg(long, default_value_t = 10)]
    print_every: u64,
    /// Heap blocks allocated and freed per round (exercises the persistent allocator).
    #[arg(long, default_value_t = 16)]
    allocs: usize,
    /// Take a checkpoint (discount::checkpoint) every this many rounds (0: never).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run each round's updates (and its manual checkpoint) at the bottom of 1 to this many
    /// nested calls of about 2.4 KB of live stack each (0: no nesting), so checkpoints
    /// happen at varying stack depths.
    #[arg(long, default_value_t = 0)]
    max_depth: u32,
}

/// Calls `f` at the bottom of `depth` frames whose contents feed the result, so a
/// checkpoint taken down there must save, and recovery restore, the stack at that depth.
#[inline(never)]
fn nested(depth: u32, seed: u64, f: &mut dyn FnMut() -> Result<u64>) -> Result<u64> {
    let mut frame = [0u64; 300];
    for (i, w) in frame.iter_mut().enumerate() {
        *w = seed.wrapping_mul(i as u64 + 1) ^ u64::from(depth);
    }
    let below = if depth == 0 {
        f()?
    } else {
        nested(depth - 1, seed.rotate_left(7), f)?
    };
    std::hint::black_box(&mut frame);
    Ok(checksum(&frame) ^ below)
}

fn checksum(v: &[u64]) -> u64 {
    v.iter()
        .fold(0u64, |h, &x| (h ^ x).wrapping_mul(0x100_0000_01b3))
}

fn main() -> Result<()> {
    discount::init(discount::Config::from_env()?)?;
    let a = Args::parse();
    let n = (a.kib * 1024 / 8).max(1);
    let mut v = vec![0u64; n];
    let mut x = a.seed | 1;
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for round in 1..=a.rounds {
        let depth = match a.max_depth {
            0 => 0,
            m => 1 + (dc_demos::rng(&mut x) % u64::from(m)) as u32,
        };
        let manual = a.checkpoint_every > 0 && round % a.checkpoint_every == 0;
        let mut updates = || -> Result<u64> {
            for _ in 0..a.updates {
                let r = dc_demos::rng(&mut x);
                let i = (r % n as u64) as usize;
                v[i] = v[i].wrapping_add(r);
            }
            if manual && depth > 0 {
                discount::checkpoint()?;
            }
            Ok(0)
        };
        if depth == 0 {
            updates()?;
        } else {
            let h = nested(depth, round, &mut updates)?;
            v[0] = v[0].wrapping_add(h);
        }
        for k in 0..a.allocs {
            let len = 1 + (dc_demos::rng(&mut x) % 5000) as usize;
            keep.push(vec![(round as u8).wrapping_add(k as u8); len]);
            if keep.len() > 64 {
                let j = (dc_demos::rng(&mut x) % keep.len() as u64) as usize;
                keep.swap_remove(j);
            }
        }
        if manual && depth == 0 {
            discount::checkpoint()?;
        }
        if round % a.print_every == 0 {
            let k: u64 = keep.iter().map(|b| b.len() as u64 + b[0] as u64).sum();
            println!("round {round} sum {:016x} keep {k}", checksum(&v));
        }
    }
    println!("done {:016x}", checksum(&v));
    Ok(())
}
