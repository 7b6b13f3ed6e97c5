//! The state of `approx_count_distinct`: a datasketches HyperLogLog union, with merges of
//! dense sketches deferred.
//!
//! Merging a dense (array mode) sketch into a datasketches `HllUnion` takes the register-wise
//! maximum and then rebuilds the estimator from all 4,096 registers (a floating-point sum over
//! every register), about 70,000 instructions each time. Re-grouping a view merges many states
//! into one (twelve 5-minute buckets into an hour, a month of days into a month), and that rebuild
//! was four fifths of a computed query. Here the registers of dense sketches merged in are kept
//! aside as the maximum of the registers so far, and handed to the union in one step when the
//! state is read (estimate, encoding): one rebuild per answer group instead of one per merge.
//!
//! The registers aside are kept in the sketch's own serialized form (datasketches' portable
//! format, which the state column already stores): a 40-byte preamble and one byte per register.
//! Sparse (list or set mode) sketches are merged into the union at once; they are cheap.
//!
//! The estimate equals what merging one at a time gives: register-wise maximum is associative and
//! commutative, and the estimator is rebuilt from the final registers either way. (The order in
//! which sparse and dense sketches meet can change the last bits of the floating-point estimator,
//! as the order of a hash map's rows already did.)

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

    /// A state holding one stored sketch.
    pub fn from_sketch(sketch: &HllSketch) -> Hll {
        let mut hll = Hll::new();
        hll.union.update(sketch);
        hll
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

    /// Hands the deferred registers to the union.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.pending_sketches > 1 {
            mark_out_of_order(&mut self.pending);
        }
        let sketch = HllSketch::deserialize(&self.pending)
            .expect("the deferred registers are a well-formed dense sketch");
        self.union.update(&sketch);
        self.pending.clear();
        self.pending_sketches = 0;
    }

    /// The union with nothing deferred: `self` when settled, else a settled copy.
    fn settled(&self) -> std::borrow::Cow<'_, HllUnion> {
        if self.pending.is_empty() {
            std::borrow::Cow::Borrowed(&self.union)
        } else {
            let mut copy = self.clone();
            copy.settle();
            std::borrow::Cow::Owned(copy.union)
        }
    }

    /// The estimated number of distinct values.
    pub fn estimate(&self) -> f64 {
        self.settled().composite_estimate()
    }

    /// The datasketches serialized form (Hll8), as the state column stores it.
    pub fn serialize(&self) -> Vec<u8> {
        self.settled().to_sketch(HllType::Hll8).serialize()
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

/// The header of merged registers: no longer one sketch's history, so out of order (the union
/// estimates from the registers, not from a history-dependent accumulator). The union rebuilds
/// its register sums and zero count from the registers whenever it takes a dense sketch in, so
/// those header fields are left as the first sketch wrote them.
fn mark_out_of_order(dense: &mut [u8]) {
    dense[FLAGS] |= OUT_OF_ORDER;
    dense[8..16].copy_from_slice(&0f64.to_le_bytes());
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
            union.update(&p.settled().to_sketch(HllType::Hll8));
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
            assert!(
                (want - got).abs() <= want * 1e-12,
                "order {order:?}: eager {want}, deferred {got}"
            );
            let true_count = 5_000 + 4_000 + 10 + 30_000;
            assert!((got - true_count as f64).abs() < true_count as f64 * 0.05);
            // The stored form reads back to the same estimate.
            let read = Hll::from_sketch(&HllSketch::deserialize(&lazy.serialize()).unwrap());
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
        assert!((a.estimate() - want).abs() <= want * 1e-12);
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
        // A single dense part keeps its own estimator (HIP), exactly as the eager union does.
        let mut one = Hll::new();
        one.merge(&sketch_of(0..6_000));
        assert_eq!(
            one.estimate(),
            eager(&[sketch_of(0..6_000)]).composite_estimate()
        );
    }
}
