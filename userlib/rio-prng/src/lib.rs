//! The one small deterministic generator every seeded test, workload and fuzzer of this
//! project draws from (splitmix64): every choice of a run derives from its seed, and a
//! seed printed by a failing run reproduces it.
//!
//! Besides [`Rng`], the pure functions that workloads name their data by: [`mix64`] (one
//! splitmix64 output from its state), [`nth`] (the k-th output of a seed's stream, without
//! the ones before), [`bytes`] (a seed's stream as bytes) and [`xorshift64`] (the memtest
//! workload's write plan). Crash campaigns and the host's checks recompute workloads from
//! these, so their values must never change: the tests pin them.

/// splitmix64's increment (the golden ratio in 64 bits): state `k` of seed `s` is `s + k * GAMMA`.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function (Stafford's mix 13): the output of a step whose state is `z`.
pub fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `k`-th output (`k` from 1) of `Rng::new(seed)`, computed directly: the same as
/// calling `next_u64` `k` times and keeping the last.
pub fn nth(seed: u64, k: u64) -> u64 {
    mix64(seed.wrapping_add(k.wrapping_mul(GAMMA)))
}

/// `len` bytes of `Rng::new(seed)`'s stream: each output as 8 little-endian bytes, the last
/// one cut short (what [`Rng::fill`] writes into a buffer of `len` bytes).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Rng::new(seed).fill(&mut out);
    out
}

/// One step of Marsaglia's xorshift64 (shifts 13, 7, 17): the state after `x`, which is
/// also the step's output. Zero stays zero, so start from a nonzero state.
pub fn xorshift64(x: u64) -> u64 {
    let x = x ^ (x << 13);
    let x = x ^ (x >> 7);
    x ^ (x << 17)
}

/// The seed a test should use: the environment variable `var` if it holds a number (to
/// replay a failing run), else `default`.
pub fn seed_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64 (Steele, Lea, Flood 2014): passes BigCrush, one add and three multiplies.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for sub-stream `stream` of `seed` (independent of the main stream).
    pub fn stream(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xd6e8_feb8_6659_fd93));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix64(self.0)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for a fuzzer, and branch free.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// An index chosen with the given weights (`None` if they are all zero).
    pub fn weighted(&mut self, weights: &[u64]) -> Option<usize> {
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return Some(i);
            }
            x -= w;
        }
        None
    }

    /// A uniformly chosen element of `v` (`None` if it is empty).
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        v.get(self.below(v.len() as u64) as usize)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_values() {
        // Reference outputs of splitmix64 seeded with 0 (from the C reference code).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn the_named_functions_keep_their_values() {
        // nth is the stream; these are the values rio-check's fault seeds were drawn with.
        let mut r = Rng::new(42);
        for k in 1..=64 {
            assert_eq!(nth(42, k), r.next_u64());
        }
        assert_eq!(nth(0, 1), 0xe220_a839_7b1d_cdaf);
        assert_eq!(nth(42, 1), 0xbdd7_3226_2feb_6e95);
        assert_eq!(nth(u64::MAX, 7), 0xf14f_2cf8_0208_3fa5);
        // bytes: what riofs-torture writes.
        assert_eq!(bytes(0, 8), 0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert_eq!(
            bytes(7, 13),
            [0xd7, 0x0d, 0x32, 0x59, 0xe4, 0xe1, 0xcb, 0x63, 0x1c, 0x66, 0x3c, 0xf4, 0xd7]
        );
        assert_eq!(bytes(7, 13), bytes(7, 20)[..13]);
        assert!(bytes(7, 0).is_empty());
        // xorshift64 from Marsaglia's shifts: 1 -> 0x2001 -> 0x2041 -> 0x4082_2041.
        assert_eq!(xorshift64(1), 0x4082_2041);
        assert_eq!(xorshift64(0), 0);
    }

    #[test]
    fn same_seed_same_stream_and_ranges_hold() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..8).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            assert!((3..=5).contains(&r.range(3, 5)));
            assert!(r.pick(&[1, 2, 3]).is_some());
        }
        assert_eq!(r.below(0), 0);
        assert!(r.pick::<u8>(&[]).is_none());
        assert!(!r.chance(0, 5));
        assert!(r.chance(5, 5));
        assert_eq!(r.weighted(&[0, 0]), None);
        assert_eq!(r.weighted(&[0, 3, 0]), Some(1));
    }
}
