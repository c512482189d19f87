//! The fuzzer's generator ([`rio_prng::Rng`], shared with every seeded test and workload)
//! and the payload bytes each operation writes.

pub use rio_prng::Rng;

/// The bytes that op `index` of run `seed` writes (pwrite or stores through a mapping).
pub fn payload(seed: u64, index: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::stream(seed, 0x1_0000_0000 + u64::from(index)).fill(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(8);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(payload(5, 3, 100), payload(5, 3, 100));
        assert_ne!(payload(5, 3, 100), payload(5, 4, 100));
        assert_eq!(&payload(5, 3, 100)[..40], &payload(5, 3, 40)[..]);
    }

    #[test]
    fn below_and_range_stay_in_bounds_and_cover_them() {
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let x = r.below(10);
            assert!(x < 10);
            seen[x as usize] = true;
            let y = r.range(3, 5);
            assert!((3..=5).contains(&y));
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
        assert_eq!(r.weighted(&[0, 0]), None);
        for _ in 0..1000 {
            assert_eq!(r.weighted(&[0, 5, 0]), Some(1));
        }
    }
}
