//! The state of `approx_count_distinct`: a datasketches HyperLogLog union, with merges of
//! dense sketches deferred.
//!
//! Merging a dense (array mode) sketch into a datasketches `HllUnion` takes the register-wise
//! maximum and then rebuilds the estimator from all 4,096 registers (a floating-point division
//! per register), about 70,000 instructions each time. Re-grouping a view merges many states into
//! one (twelve 5-minute buckets into an hour, a month of days into a month), and that rebuild was
//! four fifths of a computed query. Here dense sketches merged in are kept aside as the
//! register-wise maximum so far, in the sketch's own serialized form (datasketches' portable
//! format, which the state column stores: a 40-byte preamble, one byte per register). When the
//! state is read, the preamble is rewritten to describe the merged registers (exact integer
//! sums, see [`write_header`]), and those bytes are the state: estimated by datasketches as a
//! deserialized sketch, stored as they are. Only a state that also holds values of its own or
//! sparse sketches hands the registers to the union.
//!
//! Sparse (list or set mode) sketches are merged into the union at once; they are cheap.
//! A stored dense sketch is decoded into the deferred form, so decoding costs no rebuild either.
//!
//! Estimates and stored bytes equal those of merging one sketch at a time (tests below): the
//! register-wise maximum is associative and commutative, and the estimator's sums are exact.

use std::borrow::Cow;
use std::hash::Hash;

use datasketches::hll::{HllSketch, HllType, HllUnion};

/// `lg_k` of the HyperLogLog sketches: 4096 registers, relative standard error 1.6 %.
pub const HLL_LG_K: u8 = 12;

const REGISTERS: usize = 1 << HLL_LG_K;
/// The serialized form of a dense Hll8 sketch (datasketches `Array8::serialize`): eight header
/// bytes (the fourth `lg_k`, the sixth flags, the eighth the mode), `hip_accum`, `kxq0` and
/// `kxq1` as little-endian f64 at 8, 16 and 24, the number of zero registers as u32 at 32, an
/// auxiliary count (0) at 36, and the registers from 40.
const PREAMBLE: usize = 40;
const FLAGS: usize = 5;
const MODE: usize = 7;
const OUT_OF_ORDER: u8 = 16;
/// The mode byte of a dense sketch with 8-bit registers: current mode HLL (2), target HLL8 (2).
const MODE_HLL8_ARRAY: u8 = 2 | (2 << 2);

/// A HyperLogLog union with deferred dense merges.
#[derive(Clone, Debug)]
pub struct Hll {
    union: HllUnion,
    /// The register-wise maximum of the dense sketches merged since the last settle, in
    /// serialized form; empty when there are none.
    pending: Vec<u8>,
    /// How many sketches `pending` holds. With one, its header is that sketch's own (its
    /// history-based estimate still holds); with more, it is marked out of order when settling.
    pending_sketches: u32,
}

impl Default for Hll {
    fn default() -> Hll {
        Hll::new()
    }
}

impl Hll {
    pub fn new() -> Hll {
        Hll {
            union: HllUnion::new(HLL_LG_K).expect("HLL_LG_K is inside the valid range [4, 21]"),
            pending: Vec::new(),
            pending_sketches: 0,
        }
    }

    /// A state holding one stored sketch, given in its serialized form. A dense sketch is kept
    /// as it was read, deferred: decoding costs no estimator rebuild, and merging it into
    /// another state costs no copy out of a union.
    pub fn from_serialized(bytes: &[u8]) -> Result<Hll, String> {
        let sketch = HllSketch::deserialize(bytes).map_err(|e| e.to_string())?;
        let mut hll = Hll::new();
        if is_dense(bytes) {
            hll.defer(bytes, 1);
        } else {
            hll.union.update(&sketch);
        }
        Ok(hll)
    }

    pub fn update_value<T: Hash>(&mut self, value: T) {
        self.union.update_value(value);
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Hll) {
        if !other.pending.is_empty() {
            self.defer(&other.pending, other.pending_sketches);
        }
        if other.union.is_empty() {
            return;
        }
        let sketch = other.union.to_sketch(HllType::Hll8);
        let bytes = sketch.serialize();
        if is_dense(&bytes) {
            self.defer(&bytes, 1);
        } else {
            self.union.update(&sketch);
        }
    }

    fn defer(&mut self, dense: &[u8], sketches: u32) {
        if self.pending.is_empty() {
            self.pending.extend_from_slice(dense);
        } else {
            for (mine, theirs) in self.pending[PREAMBLE..].iter_mut().zip(&dense[PREAMBLE..]) {
                *mine = (*mine).max(*theirs);
            }
        }
        self.pending_sketches += sketches;
    }

    /// Makes the deferred registers' header describe them (after merges it still describes
    /// the first sketch), and hands them to the union when the union holds values too.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.union.is_empty() {
            // The registers alone are the state, in its serialized form.
            if self.pending_sketches > 1 {
                write_header(&mut self.pending);
                self.pending_sketches = 1;
            }
            return;
        }
        if self.pending_sketches > 1 {
            // The union rebuilds the sums from the registers itself.
            self.pending[FLAGS] |= OUT_OF_ORDER;
            self.pending[8..16].copy_from_slice(&0f64.to_le_bytes());
        }
        let sketch = HllSketch::deserialize(&self.pending)
            .expect("the deferred registers are a well-formed dense sketch");
        self.union.update(&sketch);
        self.pending.clear();
        self.pending_sketches = 0;
    }

    /// `self`, settled: borrowed when it already is.
    fn settled(&self) -> Cow<'_, Hll> {
        if self.pending.is_empty() || (self.pending_sketches == 1 && self.union.is_empty()) {
            Cow::Borrowed(self)
        } else {
            let mut copy = self.clone();
            copy.settle();
            Cow::Owned(copy)
        }
    }

    /// The estimated number of distinct values.
    pub fn estimate(&self) -> f64 {
        let settled = self.settled();
        if settled.pending.is_empty() {
            settled.union.composite_estimate()
        } else {
            HllSketch::deserialize(&settled.pending)
                .expect("the deferred registers are a well-formed dense sketch")
                .composite_estimate()
        }
    }

    /// The datasketches serialized form (Hll8), as the state column stores it.
    pub fn serialize(&self) -> Vec<u8> {
        let settled = self.settled();
        if settled.pending.is_empty() {
            settled.union.to_sketch(HllType::Hll8).serialize()
        } else {
            settled.pending.clone()
        }
    }

    /// Approximate bytes held.
    pub fn estimated_size(&self) -> usize {
        self.union.estimated_size() + self.pending.capacity()
    }
}

/// Whether `bytes` is the serialized form of a dense Hll8 sketch with Tally's `lg_k`.
fn is_dense(bytes: &[u8]) -> bool {
    bytes.len() == PREAMBLE + REGISTERS && bytes[3] == HLL_LG_K && bytes[MODE] == MODE_HLL8_ARRAY
}

/// The header of merged registers, as datasketches writes it for a union that merged them:
/// out of order (no single history, so the estimate comes from the registers and the
/// history-based accumulator is 0), the sums `kxq0` = Σ 2^-v over registers v < 32 and `kxq1`
/// = Σ 2^-v over v ≥ 32, and the number of zero registers.
///
/// The sums are exact in any order: every term of `kxq0` is a multiple of 2^-31 and the sum
/// is at most 4,096, so it needs 43 bits; `kxq1`'s terms are multiples of 2^-63 summing to at
/// most 2^-20, 43 bits again; an f64 holds 53. So they are computed here as integers, equal to
/// the bit to datasketches' floating-point sums.
fn write_header(dense: &mut [u8]) {
    // A histogram of register values (four interleaved, so that equal neighbours do not wait
    // on each other), then the sums from it.
    let mut counts = [[0u32; 256]; 4];
    for chunk in dense[PREAMBLE..].chunks_exact(4) {
        for (lane, &v) in chunk.iter().enumerate() {
            counts[lane][usize::from(v)] += 1;
        }
    }
    let count = |v: usize| -> u64 { counts.iter().map(|c| u64::from(c[v])).sum() };
    let zeros = count(0) as u32;
    let low: u64 = (0..32).map(|v| count(v) << (31 - v)).sum();
    let high: u64 = (32..64).map(|v| count(v) << (63 - v)).sum();
    let kxq0 = low as f64 / (1u64 << 31) as f64;
    let kxq1 = high as f64 / 2f64.powi(63);
    dense[FLAGS] |= OUT_OF_ORDER;
    dense[8..16].copy_from_slice(&0f64.to_le_bytes());
    dense[16..24].copy_from_slice(&kxq0.to_le_bytes());
    dense[24..32].copy_from_slice(&kxq1.to_le_bytes());
    dense[32..36].copy_from_slice(&zeros.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(range: std::ops::Range<u64>) -> Hll {
        let mut h = Hll::new();
        for i in range {
            h.update_value(i);
        }
        h
    }

    /// One at a time through the union, as before deferral.
    fn eager(parts: &[Hll]) -> HllUnion {
        let mut union = HllUnion::new(HLL_LG_K).unwrap();
        for p in parts {
            union.update(&HllSketch::deserialize(&p.serialize()).unwrap());
        }
        union
    }

    #[test]
    fn deferred_merges_estimate_as_eager_merges_do() {
        // Dense parts (thousands of values each), sparse parts (a few), overlapping ranges, and
        // an empty one, in several orders.
        let parts = [
            sketch_of(0..5_000),
            sketch_of(2_000..9_000),
            sketch_of(100_000..100_010),
            Hll::new(),
            sketch_of(50_000..80_000),
            sketch_of(7..300),
        ];
        for order in [[0, 1, 2, 3, 4, 5], [2, 5, 0, 3, 1, 4], [4, 3, 2, 1, 0, 5]] {
            let ordered: Vec<Hll> = order.iter().map(|&i| parts[i].clone()).collect();
            let mut lazy = Hll::new();
            for p in &ordered {
                lazy.merge(p);
            }
            let want = eager(&ordered).composite_estimate();
            let got = lazy.estimate();
            assert_eq!(want, got, "order {order:?}");
            let true_count = 5_000 + 4_000 + 10 + 30_000;
            assert!((got - true_count as f64).abs() < true_count as f64 * 0.05);
            // The stored form reads back to the same estimate.
            let read = Hll::from_serialized(&lazy.serialize()).unwrap();
            assert_eq!(read.estimate(), got);
        }
    }

    #[test]
    fn merging_states_that_hold_deferred_registers() {
        let mut a = Hll::new();
        a.merge(&sketch_of(0..4_000));
        a.merge(&sketch_of(3_000..8_000));
        let mut b = Hll::new();
        b.merge(&sketch_of(10_000..14_000));
        b.merge(&sketch_of(0..20));
        a.merge(&b);
        let want = eager(&[
            sketch_of(0..4_000),
            sketch_of(3_000..8_000),
            sketch_of(10_000..14_000),
            sketch_of(0..20),
        ])
        .composite_estimate();
        assert_eq!(a.estimate(), want);
        // The stored form is the one eager merging stores, byte for byte (out of order: the
        // estimate comes from the registers, not from one sketch's history).
        let parts = [
            sketch_of(0..4_000),
            sketch_of(3_000..8_000),
            sketch_of(9..12),
        ];
        let mut lazy = Hll::new();
        for p in &parts {
            lazy.merge(p);
        }
        assert_eq!(
            lazy.serialize(),
            eager(&parts).to_sketch(HllType::Hll8).serialize()
        );
        // Dense parts only: the registers alone are the state, their header written here.
        let dense = [
            sketch_of(0..4_000),
            sketch_of(3_000..8_000),
            sketch_of(20_000..26_000),
        ];
        let mut lazy = Hll::new();
        for p in &dense {
            lazy.merge(p);
        }
        let eager_bytes = eager(&dense).to_sketch(HllType::Hll8).serialize();
        assert_eq!(lazy.serialize(), eager_bytes);
        assert_eq!(lazy.estimate(), eager(&dense).composite_estimate());
        lazy.settle();
        assert_eq!(lazy.serialize(), eager_bytes);
        // A single dense part keeps its own estimator (HIP), exactly as the eager union does.
        let mut one = Hll::new();
        one.merge(&sketch_of(0..6_000));
        assert_eq!(
            one.estimate(),
            eager(&[sketch_of(0..6_000)]).composite_estimate()
        );
    }
}
