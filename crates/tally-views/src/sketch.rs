//! The percentile sketch: a DDSketch with 1 % relative accuracy.
//!
//! `percentile_cont` and `percentile_disc` must survive being re-grouped (hour → day → month), so
//! their state is a mergeable sketch, not a list of values. DDSketch (Masson, Rim and Lee, VLDB
//! 2019) maps each value `v > 0` to the bin `⌈log_γ v⌉` with `γ = (1 + α)/(1 − α)`; every value
//! in a bin is within `α` of the bin's representative `2γ^k/(γ + 1)`. Merging adds bin counts, so
//! a merged sketch is exactly the sketch of the union, whatever the order or the batch split.
//!
//! Why by hand and not `sketches-ddsketch`: the state is stored in view tables, so it needs a
//! compact byte encoding that never changes, and the query needs the value at an exact rank
//! (both SQL percentile functions are defined by ranks); the crate offers neither.
//!
//! Guarantee (α = 0.01): the value returned for rank `r` is within 1 % of the exact `r`-th
//! smallest value. Up to [`EXACT_LIMIT`] values are kept as they are, so small groups (a day of
//! one user, an hour of a quiet route) get exact answers; beyond that the values move into bins.
//! Either way the state depends only on the multiset of values, never on the order or batches
//! they came in. Exact minimum and maximum are tracked, so ranks 0 and n−1 are exact. Each
//! sign keeps at most [`MAX_BINS`] bins; data spanning more than γ^2048 ≈ 6·10^17 (e.g. from
//! 10^-9 to 10^8) collapses the bins nearest zero, and only ranks inside collapsed bins lose the
//! guarantee.

use crate::codec::{CodecError, Reader, Writer};

/// The relative accuracy.
pub const ALPHA: f64 = 0.01;
/// The most bins kept per sign.
pub const MAX_BINS: usize = 2048;
/// Up to this many values, the sketch keeps the values themselves and answers exactly.
pub const EXACT_LIMIT: usize = 64;

const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);

fn ln_gamma() -> f64 {
    GAMMA.ln()
}

fn key_of(v: f64) -> i32 {
    // v > 0 and finite; the result is within ±36_000 for every positive double.
    (v.ln() / ln_gamma()).ceil() as i32
}

fn value_of(key: i32) -> f64 {
    2.0 * (f64::from(key) * ln_gamma()).exp() / (GAMMA + 1.0)
}

/// Bin counts, 4 bytes each until one bin passes `u32::MAX`, then 8: a group's sketch stays
/// small (DESIGN.md's 8 KB per group) without ever saturating a count.
#[derive(Clone, Debug)]
enum Counts {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

/// Equal when the counts are, whatever their width.
impl PartialEq for Counts {
    fn eq(&self, other: &Counts) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Default for Counts {
    fn default() -> Counts {
        Counts::Narrow(Vec::new())
    }
}

/// Grows `v` to `len` with zeros, reserving a quarter more rather than doubling.
fn grow_back<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if len > v.capacity() {
        v.reserve_exact(len - v.len() + len / 4);
    }
    v.resize(len, T::default());
}

/// Puts `n` zeros in front of `v`, reserving a quarter more rather than doubling.
fn grow_front<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    let len = v.len() + n;
    let mut grown = Vec::with_capacity(len + len / 4);
    grown.resize(n, T::default());
    grown.extend_from_slice(v);
    *v = grown;
}

impl Counts {
    fn len(&self) -> usize {
        match self {
            Counts::Narrow(v) => v.len(),
            Counts::Wide(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> u64 {
        match self {
            Counts::Narrow(v) => u64::from(v[i]),
            Counts::Wide(v) => v[i],
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    fn bytes(&self) -> usize {
        match self {
            Counts::Narrow(v) => 4 * v.capacity(),
            Counts::Wide(v) => 8 * v.capacity(),
        }
    }

    fn widen(&mut self) {
        if let Counts::Narrow(v) = self {
            *self = Counts::Wide(v.iter().map(|&n| u64::from(n)).collect());
        }
    }

    fn add(&mut self, i: usize, n: u64) {
        if let Counts::Narrow(v) = self {
            match u32::try_from(u64::from(v[i]) + n) {
                Ok(sum) => {
                    v[i] = sum;
                    return;
                }
                Err(_) => self.widen(),
            }
        }
        if let Counts::Wide(v) = self {
            v[i] += n;
        }
    }

    /// Adds `other[range]` to the bins from `start` on.
    fn add_range(&mut self, start: usize, other: &Counts, range: std::ops::Range<usize>) {
        if let (Counts::Narrow(mine), Counts::Narrow(theirs)) = (&mut *self, other) {
            let mut overflow = false;
            for (m, &t) in mine[start..].iter_mut().zip(&theirs[range.clone()]) {
                let (sum, o) = m.overflowing_add(t);
                *m = sum;
                overflow |= o;
            }
            if !overflow {
                return;
            }
            // Undo, widen, and add again below.
            for (m, &t) in mine[start..].iter_mut().zip(&theirs[range.clone()]) {
                *m = m.wrapping_sub(t);
            }
            self.widen();
        }
        for (i, src) in range.enumerate() {
            self.add(start + i, other.get(src));
        }
    }

    fn set(&mut self, i: usize, n: u64) {
        if let Counts::Narrow(v) = self {
            match u32::try_from(n) {
                Ok(n) => {
                    v[i] = n;
                    return;
                }
                Err(_) => self.widen(),
            }
        }
        if let Counts::Wide(v) = self {
            v[i] = n;
        }
    }

    fn grow_back(&mut self, len: usize) {
        match self {
            Counts::Narrow(v) => grow_back(v, len),
            Counts::Wide(v) => grow_back(v, len),
        }
    }

    fn grow_front(&mut self, n: usize) {
        match self {
            Counts::Narrow(v) => grow_front(v, n),
            Counts::Wide(v) => grow_front(v, n),
        }
    }

    fn drain_front(&mut self, n: usize) {
        match self {
            Counts::Narrow(v) => drop(v.drain(..n)),
            Counts::Wide(v) => drop(v.drain(..n)),
        }
    }
}

/// Dense bin counts for keys `offset .. offset + counts.len()`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Bins {
    offset: i32,
    counts: Counts,
    total: u64,
}

impl Bins {
    fn add(&mut self, key: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.grow_back(1);
        }
        if key < self.offset {
            self.counts.grow_front((self.offset - key) as usize);
            self.offset = key;
        } else if key >= self.offset + self.counts.len() as i32 {
            self.counts.grow_back((key - self.offset) as usize + 1);
        }
        self.counts.add((key - self.offset) as usize, n);
        self.total += n;
        if self.counts.len() > MAX_BINS {
            self.collapse_lowest();
        }
    }

    /// Folds the lowest bins into the lowest one kept, so that at most `MAX_BINS` remain.
    fn collapse_lowest(&mut self) {
        let excess = self.counts.len() - MAX_BINS;
        let folded: u64 = self.counts.iter().take(excess + 1).sum();
        self.counts.drain_front(excess);
        self.counts.set(0, folded);
        self.offset += excess as i32;
    }

    /// Adds `other`'s counts: the key range grows once to cover both, the counts add bin by
    /// bin, and the lowest bins fold as [`Bins::add`] folds them. The result is the one adding
    /// `other`'s bins one at a time gives (bins only grow, so the same bins end up folded into
    /// the same lowest bin), without a range check per bin.
    fn merge(&mut self, other: &Bins) {
        let Some(first) = (0..other.counts.len()).find(|&i| other.counts.get(i) > 0) else {
            return;
        };
        let last = (0..other.counts.len())
            .rev()
            .find(|&i| other.counts.get(i) > 0)
            .expect("a bin with a count exists");
        let low = other.offset + first as i32;
        let high = other.offset + last as i32;
        if self.counts.is_empty() {
            self.offset = low;
        }
        if low < self.offset {
            self.counts.grow_front((self.offset - low) as usize);
            self.offset = low;
        }
        if high >= self.offset + self.counts.len() as i32 {
            self.counts.grow_back((high - self.offset) as usize + 1);
        }
        let start = (low - self.offset) as usize;
        self.counts.add_range(start, &other.counts, first..last + 1);
        self.total += other.total;
        if self.counts.len() > MAX_BINS {
            self.collapse_lowest();
        }
    }

    /// The key holding the `rank`-th smallest key (0-based), counting upward.
    fn key_at(&self, rank: u64) -> i32 {
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                return self.offset + i as i32;
            }
        }
        self.offset + self.counts.len() as i32 - 1
    }

    fn encode(&self, w: &mut Writer) {
        w.zigzag(i64::from(self.offset));
        w.varint(self.counts.len() as u64);
        for n in self.counts.iter() {
            w.varint(n);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Bins, CodecError> {
        let offset = i32::try_from(r.zigzag()?).map_err(|_| CodecError::Sketch("bin offset"))?;
        let len = r.len()?;
        if len > MAX_BINS {
            return Err(CodecError::Sketch("too many bins"));
        }
        let mut bins = Bins {
            offset,
            counts: Counts::default(),
            total: 0,
        };
        bins.counts.grow_back(len);
        for i in 0..len {
            let n = r.varint()?;
            bins.counts.set(i, n);
            bins.total += n;
        }
        Ok(bins)
    }
}

/// A mergeable sketch of a multiset of doubles that answers values at ranks within 1 %.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileSketch {
    /// The values themselves, sorted, while there are at most [`EXACT_LIMIT`]; then `None`.
    exact: Option<Vec<f64>>,
    count: u64,
    min: f64,
    max: f64,
    zeros: u64,
    positive: Bins,
    /// Bins of `-v` for the negative values.
    negative: Bins,
}

impl Default for QuantileSketch {
    fn default() -> QuantileSketch {
        QuantileSketch::new()
    }
}

impl QuantileSketch {
    pub fn new() -> QuantileSketch {
        QuantileSketch {
            exact: Some(Vec::new()),
            count: 0,
            min: 0.0,
            max: 0.0,
            zeros: 0,
            positive: Bins::default(),
            negative: Bins::default(),
        }
    }

    /// Moves the exact values into bins.
    fn spill(&mut self) {
        if let Some(values) = self.exact.take() {
            for v in values {
                self.bin(v);
            }
        }
    }

    fn bin(&mut self, v: f64) {
        if v > 0.0 {
            self.positive.add(key_of(v), 1);
        } else if v < 0.0 {
            self.negative.add(key_of(-v), 1);
        } else {
            self.zeros += 1;
        }
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds a finite value.
    pub fn add(&mut self, v: f64) {
        debug_assert!(v.is_finite());
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += 1;
        if let Some(values) = &mut self.exact {
            let at = values.partition_point(|x| x.total_cmp(&v).is_lt());
            values.insert(at, v);
            if values.len() > EXACT_LIMIT {
                self.spill();
            }
            return;
        }
        self.bin(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        if let (Some(mine), Some(theirs)) = (&mut self.exact, &other.exact)
            && mine.len() + theirs.len() <= EXACT_LIMIT
        {
            mine.extend_from_slice(theirs);
            mine.sort_by(f64::total_cmp);
            return;
        }
        self.spill();
        match &other.exact {
            Some(values) => {
                for &v in values {
                    self.bin(v);
                }
            }
            None => {
                self.zeros += other.zeros;
                self.positive.merge(&other.positive);
                self.negative.merge(&other.negative);
            }
        }
    }

    /// The estimate of the `rank`-th smallest value (0-based); `None` when empty.
    pub fn value_at(&self, rank: u64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = rank.min(self.count - 1);
        if let Some(values) = &self.exact {
            return values.get(rank as usize).copied();
        }
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.count - 1 {
            return Some(self.max);
        }
        let estimate = if rank < self.negative.total {
            // Negative values in ascending order are the `-v` bins in descending order.
            -value_of(self.negative.key_at(self.negative.total - 1 - rank))
        } else if rank < self.negative.total + self.zeros {
            0.0
        } else {
            value_of(
                self.positive
                    .key_at(rank - self.negative.total - self.zeros),
            )
        };
        Some(estimate.clamp(self.min, self.max))
    }

    /// `percentile_disc(q)`: the first value whose cumulative share reaches `q`.
    pub fn percentile_disc(&self, q: f64) -> Option<f64> {
        let n = self.count as f64;
        let rank = ((q * n).ceil() as u64).saturating_sub(1);
        self.value_at(rank)
    }

    /// `percentile_cont(q)`: interpolates between the values at ranks ⌊q(n−1)⌋ and ⌈q(n−1)⌉.
    pub fn percentile_cont(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let position = q * (self.count - 1) as f64;
        let lo = position.floor();
        let hi = position.ceil();
        let v_lo = self.value_at(lo as u64)?;
        let v_hi = self.value_at(hi as u64)?;
        Some(v_lo + (position - lo) * (v_hi - v_lo))
    }

    /// Approximate bytes held in memory.
    pub fn memory(&self) -> usize {
        let exact = self.exact.as_ref().map_or(0, Vec::capacity);
        std::mem::size_of::<Self>()
            + 8 * exact
            + self.positive.counts.bytes()
            + self.negative.counts.bytes()
    }

    pub fn encode(&self, w: &mut Writer) {
        w.varint(self.count);
        if self.count == 0 {
            return;
        }
        if let Some(values) = &self.exact {
            w.u8(1);
            for &v in values {
                w.f64(v);
            }
            return;
        }
        w.u8(0);
        w.f64(self.min);
        w.f64(self.max);
        w.varint(self.zeros);
        self.positive.encode(w);
        self.negative.encode(w);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<QuantileSketch, CodecError> {
        let count = r.varint()?;
        if count == 0 {
            return Ok(QuantileSketch::new());
        }
        if r.u8()? == 1 {
            if count > EXACT_LIMIT as u64 {
                return Err(CodecError::Sketch("too many exact values"));
            }
            let values = (0..count).map(|_| r.f64()).collect::<Result<Vec<_>, _>>()?;
            if values.windows(2).any(|w| w[0].total_cmp(&w[1]).is_gt()) {
                return Err(CodecError::Sketch("exact values out of order"));
            }
            return Ok(QuantileSketch {
                min: values[0],
                max: values[values.len() - 1],
                exact: Some(values),
                count,
                ..QuantileSketch::new()
            });
        }
        let min = r.f64()?;
        let max = r.f64()?;
        let zeros = r.varint()?;
        let positive = Bins::decode(r)?;
        let negative = Bins::decode(r)?;
        if zeros + positive.total + negative.total != count {
            return Err(CodecError::Sketch("sketch counts disagree"));
        }
        Ok(QuantileSketch {
            exact: None,
            count,
            min,
            max,
            zeros,
            positive,
            negative,
        })
    }
}

/// The exact `percentile_disc` of sorted values, the oracle the sketch is tested against.
pub fn exact_percentile_disc(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).saturating_sub(1);
    Some(sorted[rank.min(sorted.len() - 1)])
}

/// The exact `percentile_cont` of sorted values.
pub fn exact_percentile_cont(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let lo = position.floor() as usize;
    let hi = position.ceil() as usize;
    Some(sorted[lo] + (position - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Whether `estimate` is an acceptable answer for quantile `q` of `sorted`: within 1 % of the
/// exact order statistics around the requested rank (both neighbours for `percentile_cont`).
pub fn within_guarantee(sorted: &[f64], q: f64, estimate: f64, continuous: bool) -> bool {
    let n = sorted.len();
    let (lo, hi) = if continuous {
        let position = q * (n - 1) as f64;
        (
            sorted[position.floor() as usize],
            sorted[position.ceil() as usize],
        )
    } else {
        let v = exact_percentile_disc(sorted, q).unwrap_or(0.0);
        (v, v)
    };
    let slack = |v: f64| v.abs() * ALPHA * 1.000_001 + 1e-300;
    estimate >= lo - slack(lo) && estimate <= hi + slack(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sketch_of(values: &[f64]) -> QuantileSketch {
        let mut s = QuantileSketch::new();
        for &v in values {
            s.add(v);
        }
        s
    }

    #[test]
    fn a_bin_past_u32_widens_instead_of_saturating() {
        let mut bins = Bins::default();
        bins.add(7, u64::from(u32::MAX));
        bins.add(9, 1);
        assert!(matches!(bins.counts, Counts::Narrow(_)));
        bins.add(7, 2);
        assert!(matches!(bins.counts, Counts::Wide(_)));
        assert_eq!(bins.counts.get(0), u64::from(u32::MAX) + 2);
        assert_eq!(bins.total, u64::from(u32::MAX) + 3);
        assert_eq!(bins.key_at(u64::from(u32::MAX) + 2), 9);
        let mut w = Writer::default();
        bins.encode(&mut w);
        let bytes = w.finish();
        assert_eq!(Bins::decode(&mut Reader::new(&bytes)).unwrap(), bins);
    }

    #[test]
    fn small_sets_are_exact_at_the_ends() {
        let s = sketch_of(&[5.0]);
        assert_eq!(s.percentile_cont(0.5), Some(5.0));
        let s = sketch_of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.percentile_disc(0.0), Some(1.0));
        assert_eq!(s.percentile_disc(1.0), Some(4.0));
        assert!(QuantileSketch::new().percentile_cont(0.5).is_none());
    }

    #[test]
    fn small_groups_are_exact() {
        let values: Vec<f64> = (1..=EXACT_LIMIT).map(|i| i as f64 * 1.5).collect();
        let s = sketch_of(&values);
        assert_eq!(s.percentile_disc(0.5), exact_percentile_disc(&values, 0.5));
        assert_eq!(s.percentile_cont(0.9), exact_percentile_cont(&values, 0.9));
        // One more value spills into bins: still within the guarantee.
        let mut more = values.clone();
        more.push(1000.0);
        let s = sketch_of(&more);
        assert!(s.exact.is_none());
        assert!(within_guarantee(
            &more,
            0.5,
            s.percentile_disc(0.5).unwrap(),
            false
        ));
    }

    #[test]
    fn encoding_round_trips() {
        let small = sketch_of(&[-3.5, 0.0, 0.0, 1e-9, 17.0, 1e12]);
        let large = sketch_of(&(0..500).map(|i| f64::from(i) - 100.0).collect::<Vec<_>>());
        for s in [small, large, QuantileSketch::new()] {
            let mut w = Writer::new();
            s.encode(&mut w);
            let bytes = w.finish();
            let back = QuantileSketch::decode(&mut Reader::new(&bytes)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn lognormal_quantiles_within_one_percent() {
        // A deterministic heavy-tailed sample: exp of a spread of values.
        let mut values: Vec<f64> = (0..20_000)
            .map(|i| ((i as f64 * 0.618_033_988_7).fract() * 8.0 - 2.0).exp() * 50.0)
            .collect();
        let s = sketch_of(&values);
        values.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.9, 0.99, 0.999] {
            let est = s.percentile_disc(q).unwrap();
            assert!(
                within_guarantee(&values, q, est, false),
                "disc q={q} est={est}"
            );
            let est = s.percentile_cont(q).unwrap();
            assert!(
                within_guarantee(&values, q, est, true),
                "cont q={q} est={est}"
            );
        }
        assert!(s.memory() < 8 * 1024, "{}", s.memory());
    }

    fn bins_of(adds: &[(i32, u64)]) -> Bins {
        let mut bins = Bins::default();
        for &(key, n) in adds {
            bins.add(key, n);
        }
        bins
    }

    proptest! {
        /// The bulk merge of bins gives what adding the other's bins one at a time gives:
        /// ranges that grow either way, folds of the lowest bins past `MAX_BINS`, counts past
        /// `u32`.
        #[test]
        fn bins_merge_equals_adding_one_at_a_time(
            a in prop::collection::vec((-3_000i32..3_000, 1u64..1_000), 0..40),
            b in prop::collection::vec((-3_000i32..3_000, 1u64..1_000), 0..40),
            huge in prop::option::of(-3_000i32..3_000),
        ) {
            let (mut a, mut b) = (a, b);
            if let Some(key) = huge {
                // The same bin near u32::MAX on both sides: their sum needs u64.
                a.push((key, u64::from(u32::MAX) - 5));
                b.push((key, u64::from(u32::MAX) - 5));
            }
            let mut merged = bins_of(&a);
            merged.merge(&bins_of(&b));
            let mut one_by_one = bins_of(&a);
            let other = bins_of(&b);
            for (i, n) in other.counts.iter().enumerate() {
                if n > 0 {
                    one_by_one.add(other.offset + i as i32, n);
                }
            }
            prop_assert_eq!(merged.offset, one_by_one.offset);
            prop_assert_eq!(merged.total, one_by_one.total);
            prop_assert_eq!(
                merged.counts.iter().collect::<Vec<_>>(),
                one_by_one.counts.iter().collect::<Vec<_>>()
            );
        }

        #[test]
        fn merge_equals_sketch_of_union(
            a in prop::collection::vec(-1e6f64..1e6, 0..120),
            b in prop::collection::vec(-1e6f64..1e6, 0..120),
            q in 0.0f64..=1.0,
        ) {
            let mut merged = sketch_of(&a);
            merged.merge(&sketch_of(&b));
            let mut all = a.clone();
            all.extend(&b);
            let whole = sketch_of(&all);
            prop_assert_eq!(&merged, &whole);
            if !all.is_empty() {
                all.sort_by(f64::total_cmp);
                let est = whole.percentile_disc(q).unwrap();
                prop_assert!(within_guarantee(&all, q, est, false), "disc {} {}", q, est);
                let est = whole.percentile_cont(q).unwrap();
                prop_assert!(within_guarantee(&all, q, est, true), "cont {} {}", q, est);
            }
        }
    }
}
