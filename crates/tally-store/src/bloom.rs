//! A Bloom filter of 64-bit key hashes, the part of a key filter that both stores share: SQLite
//! keeps one of a stream's key blocks ([`crate::sqlite_keys::KeyFilter`]), PostgreSQL one of a
//! stream's stored keys per tenant connection (`postgres::keys`). A filter holds at most 16 MB
//! of bits, [`BITS_PER_KEY`] a key at capacity. Built for more than [`MAX_KEYS`] keys it gets
//! no bits and holds everything (every hash is looked up, as without a filter), unless it may be
//! thin ([`Bloom::for_keys_or_thin`], SQLite's): then its 16 MB hold up to [`MAX_THIN_KEYS`]
//! keys, 8 bits a key at capacity.

/// Bits per key at capacity (three probes: about 0.4 % false positives there, fewer below).
const BITS_PER_KEY: usize = 16;

/// The most bits a filter keeps: 16 MB (a filter built again larger is made while the old one
/// is still held).
const MAX_BITS: usize = 1 << 27;

/// Keys of the largest set a filter keeps [`BITS_PER_KEY`] a key for, with room for as many
/// again: [`MAX_BITS`] in all.
pub(crate) const MAX_KEYS: usize = MAX_BITS / BITS_PER_KEY / 2;

/// Keys of the largest set a filter keeps bits for: [`MAX_BITS`] at 8 bits a key (three
/// probes: about 3 % false positives at capacity, against every hash looked up without bits).
pub(crate) const MAX_THIN_KEYS: usize = MAX_BITS / 8;

/// A Bloom filter of hashes, with the number of hashes put in.
pub(crate) struct Bloom {
    /// A power of two of bits, [`BITS_PER_KEY`] per key it has room for (8 in a thin filter);
    /// `None` past [`MAX_THIN_KEYS`].
    bits: Option<Vec<u64>>,
    len: usize,
    /// The keys it has room for.
    capacity: usize,
}

impl Bloom {
    /// An empty filter with room for twice `keys` (at least 8,192), or without bits when
    /// `keys` is more than [`MAX_KEYS`].
    pub(crate) fn for_keys(keys: usize) -> Bloom {
        Bloom::sized(keys, false)
    }

    /// [`Bloom::for_keys`], but a thin filter when `keys` is more than [`MAX_KEYS`] and at most
    /// [`MAX_THIN_KEYS`]; a filter of [`MAX_BITS`] has room for [`MAX_THIN_KEYS`] either way
    /// (built again thin, it would have the same bits).
    pub(crate) fn for_keys_or_thin(keys: usize) -> Bloom {
        Bloom::sized(keys, true)
    }

    fn sized(keys: usize, thin: bool) -> Bloom {
        let (bits, capacity) = if keys <= MAX_KEYS {
            let bits = (keys.max(1 << 12) * 2 * BITS_PER_KEY).next_power_of_two();
            let capacity = match thin && bits == MAX_BITS {
                true => MAX_THIN_KEYS,
                false => bits / BITS_PER_KEY,
            };
            (Some(bits), capacity)
        } else if thin && keys <= MAX_THIN_KEYS {
            (Some(MAX_BITS), MAX_THIN_KEYS)
        } else {
            (None, 0)
        };
        Bloom {
            bits: bits.map(|bits| vec![0; bits / 64]),
            len: 0,
            capacity,
        }
    }

    /// An empty filter of exactly enough bits for `keys` (tests: to reach capacity).
    #[cfg(test)]
    pub(crate) fn at_capacity(keys: usize) -> Bloom {
        let bits = (keys * BITS_PER_KEY).next_power_of_two();
        Bloom {
            bits: Some(vec![0; bits / 64]),
            len: 0,
            capacity: bits / BITS_PER_KEY,
        }
    }

    /// The three bit positions of `h` (double hashing; `h` is already a uniform hash).
    fn positions(h: i64, bits: usize) -> [usize; 3] {
        let (a, b) = (h as u64, (h as u64 >> 32) | 1);
        let mask = bits as u64 - 1;
        [0u64, 1, 2].map(|i| (a.wrapping_add(i.wrapping_mul(b)) & mask) as usize)
    }

    pub(crate) fn insert(&mut self, h: i64) {
        self.len += 1;
        if let Some(bits) = &mut self.bits {
            for p in Self::positions(h, bits.len() * 64) {
                bits[p / 64] |= 1 << (p % 64);
            }
        }
    }

    /// Whether `h` may have been put in: false only when it certainly was not.
    pub(crate) fn may_hold(&self, h: i64) -> bool {
        match &self.bits {
            Some(bits) => Self::positions(h, bits.len() * 64)
                .iter()
                .all(|&p| bits[p / 64] & (1 << (p % 64)) != 0),
            None => true,
        }
    }

    /// Whether it has bits: `false` when every hash may be held.
    pub(crate) fn has_bits(&self) -> bool {
        self.bits.is_some()
    }

    /// How many hashes were put in (or counted in with [`Bloom::set_len`]).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Counts `len` hashes in, whether or not they were put in (a filter without bits).
    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// More hashes than it has room for (it is to be built again, larger), or too many to
    /// keep bits for.
    pub(crate) fn over_capacity(&self) -> bool {
        self.bits.is_some() && self.len > self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite_keys::key_hash;
    use tally_views::Value;

    #[test]
    fn a_filter_never_misses_a_key_and_rarely_holds_another() {
        let n = 100_000;
        let mut f = Bloom::at_capacity(n);
        let hash = |i: u64| key_hash(&Value::text(&format!("key-{i}")));
        for i in 0..n as u64 {
            f.insert(hash(i));
        }
        assert!(
            (0..n as u64).all(|i| f.may_hold(hash(i))),
            "a false negative"
        );
        let false_positives = (n as u64..2 * n as u64)
            .filter(|&i| f.may_hold(hash(i)))
            .count();
        // 16 bits a key with three probes: about 0.4 % at capacity (131,072 keys here).
        assert!(
            false_positives < n / 100,
            "{false_positives} false positives in {n}"
        );
        assert!(!f.over_capacity());
        for i in 0..40_000 {
            f.insert(hash(2 * n as u64 + i));
        }
        assert!(f.over_capacity(), "past 131,072 keys");
    }

    /// Past [`MAX_KEYS`] a filter that may be thin is: 16 MB for up to [`MAX_THIN_KEYS`] keys,
    /// still without a false negative, and about 3 % false positives at capacity.
    #[test]
    fn a_thin_filter_never_misses_a_key_and_rules_out_most_others() {
        let mut f = Bloom::for_keys_or_thin(MAX_KEYS + 1);
        assert!(f.has_bits());
        // Uniform hashes (xorshift): SHA-256 of 16 M keys would take minutes in a debug build.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as i64
        };
        let stored: Vec<i64> = (0..MAX_THIN_KEYS).map(|_| next()).collect();
        for &h in &stored {
            f.insert(h);
        }
        assert!(!f.over_capacity());
        assert!(stored.iter().all(|&h| f.may_hold(h)), "a false negative");
        let n = 100_000;
        let false_positives = (0..n).filter(|_| f.may_hold(next())).count();
        assert!(
            (2_000..4_000).contains(&false_positives),
            "{false_positives} false positives in {n}"
        );
        f.insert(next());
        assert!(f.over_capacity(), "past {MAX_THIN_KEYS} keys");
    }

    /// A filter of 16 MB that may be thin has room for [`MAX_THIN_KEYS`] keys, one that may not
    /// for half its bits' worth.
    #[test]
    fn a_full_size_filter_that_may_be_thin_is_not_built_again_to_the_same_size() {
        let mut thin = Bloom::for_keys_or_thin(MAX_KEYS);
        let mut full = Bloom::for_keys(MAX_KEYS);
        thin.set_len(MAX_THIN_KEYS);
        full.set_len(MAX_THIN_KEYS / 2);
        assert!(!thin.over_capacity() && !full.over_capacity());
        thin.set_len(MAX_THIN_KEYS + 1);
        full.set_len(MAX_THIN_KEYS / 2 + 1);
        assert!(thin.over_capacity() && full.over_capacity());
        assert!(!Bloom::for_keys(MAX_KEYS + 1).has_bits());
    }

    #[test]
    fn a_filter_too_large_holds_everything() {
        let mut f = Bloom::for_keys_or_thin(MAX_THIN_KEYS + 1);
        assert!(!f.has_bits());
        f.insert(7);
        assert!(f.may_hold(8) && !f.over_capacity());
        assert_eq!(f.len(), 1);
    }
}
