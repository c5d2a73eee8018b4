//! A one-hash Bloom filter over pairs of ids, to skip most rows of a scan before a hash-map
//! lookup: the scans over every impression look for a few thousand keys among millions.

/// Bits of the filter per key inserted: about 1.5% of absent keys pass.
const BITS_PER_KEY: usize = 64;

/// A set of `(i64, i64)` keys that may report a false positive, never a false negative.
pub(crate) struct Prefilter {
    words: Vec<u64>,
    shift: u32,
}

impl Prefilter {
    /// A filter sized for `keys` keys: between 2^12 and 2^24 bits (at most 2 MiB, so that it
    /// stays in cache where it matters).
    pub(crate) fn with_capacity(keys: usize) -> Prefilter {
        let bits = keys
            .saturating_mul(BITS_PER_KEY)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        Prefilter {
            words: vec![0; bits / 64],
            shift: 64 - bits.trailing_zeros(),
        }
    }

    fn bit(&self, key: (i64, i64)) -> usize {
        let h = (key.0 as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
            ^ key.1 as u64;
        // Multiply-shift: the top bits of the product are well mixed.
        (h.wrapping_mul(0xd6e8_feb8_6659_fd93) >> self.shift) as usize
    }

    pub(crate) fn insert(&mut self, key: (i64, i64)) {
        let b = self.bit(key);
        self.words[b / 64] |= 1 << (b % 64);
    }

    pub(crate) fn may_contain(&self, key: (i64, i64)) -> bool {
        let b = self.bit(key);
        self.words[b / 64] & (1 << (b % 64)) != 0
    }
}
