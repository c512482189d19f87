//! The deterministic pattern rio-check writes, shared with the host-side tests that check
//! disk images, plus the crash campaign's workload (`memtest`) and fault injection.

pub mod fault;
pub mod memtest;

/// The pattern: xorshift64* bytes, a pure function of (seed, offset / 8).
pub fn pattern(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut x = (seed ^ 0x9e37_79b9_7f4a_7c15)
            .wrapping_add((at / 8).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
        *b = (x >> ((at % 8) * 8)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_positional_and_seeded() {
        let mut whole = vec![0u8; 100];
        pattern(7, 0, &mut whole);
        let mut part = vec![0u8; 30];
        pattern(7, 50, &mut part);
        assert_eq!(&whole[50..80], &part[..]);
        let mut other = vec![0u8; 100];
        pattern(8, 0, &mut other);
        assert_ne!(whole, other);
    }
}
