//! The one hash of the crate: FNV-1a over the bytes, then SplitMix64's finaliser.
//!
//! Stable across builds and hosts (unlike `std`'s `DefaultHasher`, whose algorithm is not
//! promised), so two switches with the same backends build the same Maglev table and send a key
//! to the same backend, as Katran's and Maglev's instances do without sharing state. FNV alone
//! mixes its last bytes poorly; the finaliser spreads every input bit over the output.

/// A stable 64-bit hash of `bytes` under `seed` (different seeds give independent hashes).
pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// SplitMix64's finaliser (Steele, Lea, Flood 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_stable_and_seeded() {
        assert_eq!(hash(0, b"10.0.0.1:80"), hash(0, b"10.0.0.1:80"));
        assert_ne!(hash(0, b"10.0.0.1:80"), hash(1, b"10.0.0.1:80"));
        assert_ne!(hash(0, b"a"), hash(0, b"b"));
    }
}
