//! Aggregate functions and their mergeable states.
//!
//! Every aggregate keeps a state that can be updated with one value, merged with another state of
//! the same kind, encoded into the view table's `_state` column and decoded again. Merging is
//! what makes a view correct under late events, restarts and re-grouping: the state of a day is
//! the merge of the states of its hours, whatever order they arrive in.
//!
//! The kinds, in Materialize's terms (`reduce.rs`):
//! - accumulable (count, sum, avg, variance moments): a few numbers, merged by adding;
//! - min/max, first/last, bool_and/or: one value, merged by keeping the better one. Views are
//!   append-only, so no retraction ever needs the second-best value;
//! - sets (exact `count(DISTINCT)`): grow with the distinct values (about 40-75 bytes per
//!   distinct value and group, plus text longer than 23 bytes);
//! - sketches (`percentile_*`, `approx_count_distinct`): bounded size, bounded error.
//!
//! The compiler resolves each aggregate to an [`AggKind`] for its input type once, and the hot
//! loop only matches on it.

use std::hash::{Hash, Hasher};

use hashbrown::HashSet;

use crate::codec::{CodecError, Reader, ValueRef, Writer};
use crate::decimal::{Decimal, I256};
use crate::expr::EvalError;
use crate::hll::Hll;
use crate::sketch::QuantileSketch;
use crate::value::{Timestamp, Type, Value};

pub use crate::hll::HLL_LG_K;

/// Variance and standard deviation flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    VarSamp,
    VarPop,
    StddevSamp,
    StddevPop,
}

/// An aggregate resolved for its input type: what the hot loop dispatches on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggKind {
    CountStar,
    Count,
    SumInt,
    /// Sum of decimals of this scale.
    SumDecimal {
        scale: u8,
    },
    SumDouble,
    AvgInt,
    /// Average of decimals of `scale`, reported at `out_scale`.
    AvgDecimal {
        scale: u8,
        out_scale: u8,
    },
    AvgDouble,
    Moment(Moment),
    Min,
    Max,
    CountDistinct,
    ApproxCountDistinct,
    Percentile {
        q: f64,
        continuous: bool,
    },
    First,
    Last,
    BoolAnd,
    BoolOr,
}

impl AggKind {
    /// The class shown in plans.
    pub fn class(self) -> &'static str {
        match self {
            AggKind::CountStar
            | AggKind::Count
            | AggKind::SumInt
            | AggKind::SumDecimal { .. }
            | AggKind::SumDouble
            | AggKind::AvgInt
            | AggKind::AvgDecimal { .. }
            | AggKind::AvgDouble
            | AggKind::Moment(_) => "accumulable",
            AggKind::Min
            | AggKind::Max
            | AggKind::First
            | AggKind::Last
            | AggKind::BoolAnd
            | AggKind::BoolOr => "extremum",
            AggKind::CountDistinct => "exact set",
            AggKind::ApproxCountDistinct => "hll sketch",
            AggKind::Percentile { .. } => "quantile sketch",
        }
    }

    /// Whether results are approximate.
    pub fn is_approximate(self) -> bool {
        matches!(
            self,
            AggKind::ApproxCountDistinct | AggKind::Percentile { .. }
        )
    }

    /// A fresh state.
    pub fn new_state(self) -> AggState {
        match self {
            AggKind::CountStar | AggKind::Count => AggState::Count(0),
            AggKind::SumInt => AggState::SumInt(None),
            AggKind::SumDecimal { .. } => AggState::SumWide(None),
            AggKind::SumDouble => AggState::SumDouble(None),
            AggKind::AvgInt => AggState::AvgInt { sum: 0, n: 0 },
            AggKind::AvgDecimal { .. } => AggState::AvgWide {
                sum: I256::ZERO,
                n: 0,
            },
            AggKind::AvgDouble => AggState::AvgDouble { sum: 0.0, n: 0 },
            AggKind::Moment(_) => AggState::Moments {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggKind::Min | AggKind::Max => AggState::Extreme(None),
            AggKind::CountDistinct => AggState::Distinct(HashSet::default()),
            AggKind::ApproxCountDistinct => AggState::Hll(None),
            AggKind::Percentile { .. } => AggState::Quantiles(Box::default()),
            AggKind::First | AggKind::Last => AggState::Pick(None),
            AggKind::BoolAnd | AggKind::BoolOr => AggState::Bool(None),
        }
    }

    /// The output type for an input of type `input`.
    pub fn output_type(self, input: Type) -> Type {
        match self {
            AggKind::CountStar
            | AggKind::Count
            | AggKind::CountDistinct
            | AggKind::ApproxCountDistinct => Type::BigInt,
            AggKind::SumInt => Type::BigInt,
            AggKind::SumDecimal { scale } => Type::Decimal {
                precision: 38,
                scale,
            },
            AggKind::AvgDecimal { out_scale, .. } => Type::Decimal {
                precision: 38,
                scale: out_scale,
            },
            AggKind::SumDouble
            | AggKind::AvgInt
            | AggKind::AvgDouble
            | AggKind::Moment(_)
            | AggKind::Percentile { .. } => Type::Double,
            AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last => input,
            AggKind::BoolAnd | AggKind::BoolOr => Type::Boolean,
        }
    }
}

/// The state of one aggregate in one group.
#[derive(Clone, Debug)]
pub enum AggState {
    Count(i64),
    SumInt(Option<i128>),
    /// Decimal mantissas at the kind's scale.
    SumWide(Option<I256>),
    SumDouble(Option<f64>),
    AvgInt {
        sum: i128,
        n: i64,
    },
    AvgWide {
        sum: I256,
        n: i64,
    },
    AvgDouble {
        sum: f64,
        n: i64,
    },
    /// Welford's running moments, merged with Chan et al.'s formula.
    Moments {
        n: i64,
        mean: f64,
        m2: f64,
    },
    Extreme(Option<Value>),
    /// Encoded in sorted order, so equal sets give equal bytes.
    Distinct(HashSet<Value, foldhash::fast::RandomState>),
    /// An exact distinct set held as its encoding: what a flush writes after merging its new
    /// values into the stored set without decoding it ([`merge_encoded_states`]). Updating or
    /// merging it decodes it first.
    SortedDistinct(SortedSet),
    /// Created on the first value: an empty group costs nothing.
    Hll(Option<Box<Hll>>),
    Quantiles(Box<QuantileSketch>),
    /// `(time, sequence, value)` of the first or last event; the sequence breaks ties so that the
    /// answer does not depend on batch boundaries.
    Pick(Option<(Timestamp, u64, Value)>),
    Bool(Option<bool>),
}

impl AggState {
    /// Adds one input. `value` is the evaluated argument (ignored by `count(*)`); `time` is the
    /// second argument of `first`/`last`; `seq` is the event's position in its stream.
    #[inline]
    pub fn update(&mut self, kind: AggKind, value: &Value, time: &Value, seq: u64) {
        // The commonest updates inline (what `update_other` does for them); the rest there.
        match (&mut *self, value) {
            (AggState::Count(n), Value::Null) => {
                if matches!(kind, AggKind::CountStar) {
                    *n += 1;
                }
            }
            (AggState::Count(n), _) => *n += 1,
            (AggState::SumDouble(sum), Value::Double(d)) => *sum = Some(sum.unwrap_or(0.0) + d),
            _ => self.update_other(kind, value, time, seq),
        }
    }

    fn update_other(&mut self, kind: AggKind, value: &Value, time: &Value, seq: u64) {
        if value.is_null() && !matches!(kind, AggKind::CountStar | AggKind::First | AggKind::Last) {
            return;
        }
        match (self, value) {
            (AggState::Count(n), _) => *n += 1,
            (AggState::SumInt(sum), Value::Int(i)) => {
                *sum = Some(sum.unwrap_or(0) + i128::from(*i))
            }
            (AggState::SumWide(sum), Value::Decimal(d)) => {
                let m = at_scale(*d, kind);
                *sum = Some(sum.unwrap_or(I256::ZERO) + I256::from(m));
            }
            (AggState::SumDouble(sum), v) => {
                *sum = Some(sum.unwrap_or(0.0) + v.as_f64().unwrap_or(0.0))
            }
            (AggState::AvgInt { sum, n }, Value::Int(i)) => {
                *sum += i128::from(*i);
                *n += 1;
            }
            (AggState::AvgWide { sum, n }, Value::Decimal(d)) => {
                *sum = *sum + I256::from(at_scale(*d, kind));
                *n += 1;
            }
            (AggState::AvgDouble { sum, n }, v) => {
                *sum += v.as_f64().unwrap_or(0.0);
                *n += 1;
            }
            (AggState::Moments { n, mean, m2 }, v) => {
                let x = v.as_f64().unwrap_or(0.0);
                *n += 1;
                let delta = x - *mean;
                *mean += delta / *n as f64;
                *m2 += delta * (x - *mean);
            }
            (AggState::Extreme(best), v) => {
                let better = match best {
                    None => true,
                    Some(b) => match kind {
                        AggKind::Min => v < b,
                        _ => v > b,
                    },
                };
                if better {
                    *best = Some(v.clone());
                }
            }
            (me @ AggState::SortedDistinct(_), v) => {
                me.expand();
                me.update(kind, v, time, seq);
            }
            (AggState::Distinct(set), v) => {
                // One probe: a value already counted is not cloned.
                set.get_or_insert_with(v, Value::clone);
            }
            (AggState::Hll(hll), v) => {
                hll.get_or_insert_default().update_value(HllKey(v));
            }
            (AggState::Quantiles(sketch), v) => {
                if let Some(x) = v.as_f64() {
                    sketch.add(x);
                }
            }
            (AggState::Pick(pick), v) => {
                let Value::Timestamp(t) = time else { return };
                let candidate = (*t, seq);
                let better = match pick {
                    None => true,
                    Some((pt, ps, _)) => match kind {
                        AggKind::First => candidate < (*pt, *ps),
                        _ => candidate > (*pt, *ps),
                    },
                };
                if better {
                    *pick = Some((*t, seq, v.clone()));
                }
            }
            (AggState::Bool(acc), Value::Bool(b)) => {
                *acc = Some(match (kind, *acc) {
                    (_, None) => *b,
                    (AggKind::BoolAnd, Some(a)) => a && *b,
                    (_, Some(a)) => a || *b,
                });
            }
            // Values of other types cannot reach a state: the compiler checked the argument type.
            _ => {}
        }
    }

    /// [`AggState::merge`] of a state the caller gives up: a distinct set is merged into the
    /// larger of the two, its values moved rather than cloned. (Merging a stored set of many
    /// values into a flush's few new ones grew the small set through every size up to the
    /// large one and cloned each value: nearly a third of the flush's time with one such view,
    /// docs/performance.md, twenty-first round.) The union is the same; of two values equal but
    /// spelled differently (decimals of different scales) the larger set's is kept, where
    /// `merge` kept `self`'s. Other states merge as `merge` does.
    pub fn merge_owned(&mut self, kind: AggKind, other: AggState) {
        self.expand();
        match (self, other) {
            (AggState::Distinct(a), AggState::Distinct(mut b)) => {
                if b.len() > a.len() {
                    std::mem::swap(a, &mut b);
                }
                a.extend(b);
            }
            (me, other) => me.merge(kind, &other),
        }
    }

    /// Merges `other`, a state of the same kind, into `self`.
    pub fn merge(&mut self, kind: AggKind, other: &AggState) {
        if let AggState::SortedDistinct(b) = other {
            let mut other = AggState::SortedDistinct(b.clone());
            other.expand();
            return self.merge(kind, &other);
        }
        self.expand();
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::SumInt(a), AggState::SumInt(Some(b))) => *a = Some(a.unwrap_or(0) + b),
            (AggState::SumWide(a), AggState::SumWide(Some(b))) => {
                *a = Some(a.unwrap_or(I256::ZERO) + *b)
            }
            (AggState::SumDouble(a), AggState::SumDouble(Some(b))) => {
                *a = Some(a.unwrap_or(0.0) + b)
            }
            (AggState::SumInt(_), AggState::SumInt(None))
            | (AggState::SumWide(_), AggState::SumWide(None))
            | (AggState::SumDouble(_), AggState::SumDouble(None)) => {}
            (AggState::AvgInt { sum, n }, AggState::AvgInt { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (AggState::AvgWide { sum, n }, AggState::AvgWide { sum: s2, n: n2 }) => {
                *sum = *sum + *s2;
                *n += n2;
            }
            (AggState::AvgDouble { sum, n }, AggState::AvgDouble { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (
                AggState::Moments { n, mean, m2 },
                AggState::Moments {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) => {
                if *nb == 0 {
                    return;
                }
                if *n == 0 {
                    (*n, *mean, *m2) = (*nb, *mb, *m2b);
                    return;
                }
                let total = *n + nb;
                let delta = mb - *mean;
                let new_mean = *mean + delta * (*nb as f64) / total as f64;
                *m2 += m2b + delta * delta * (*n as f64) * (*nb as f64) / total as f64;
                *mean = new_mean;
                *n = total;
            }
            (me @ AggState::Extreme(_), AggState::Extreme(Some(v))) => {
                me.update(kind, v, &Value::Null, 0)
            }
            (AggState::Extreme(_), AggState::Extreme(None)) => {}
            (AggState::Distinct(a), AggState::Distinct(b)) => {
                for v in b {
                    if !a.contains(v) {
                        a.insert(v.clone());
                    }
                }
            }
            (AggState::Hll(a), AggState::Hll(Some(b))) => {
                a.get_or_insert_default().merge(b);
            }
            (AggState::Hll(_), AggState::Hll(None)) => {}
            (AggState::Quantiles(a), AggState::Quantiles(b)) => a.merge(b),
            (me @ AggState::Pick(_), AggState::Pick(Some((t, seq, v)))) => {
                me.update(kind, v, &Value::Timestamp(*t), *seq)
            }
            (AggState::Pick(_), AggState::Pick(None)) => {}
            (me @ AggState::Bool(_), AggState::Bool(Some(b))) => {
                me.update(kind, &Value::Bool(*b), &Value::Null, 0)
            }
            (AggState::Bool(_), AggState::Bool(None)) => {}
            // States of different kinds never meet: both come from the same plan.
            _ => {}
        }
    }

    /// The aggregate's result.
    pub fn finalize(&self, kind: AggKind) -> Result<Value, EvalError> {
        Ok(match self {
            AggState::Count(n) => Value::Int(*n),
            AggState::SumInt(None) | AggState::SumWide(None) | AggState::SumDouble(None) => {
                Value::Null
            }
            AggState::SumInt(Some(s)) => {
                Value::Int(i64::try_from(*s).map_err(|_| EvalError::Overflow(Type::BigInt))?)
            }
            AggState::SumWide(Some(s)) => {
                let scale = match kind {
                    AggKind::SumDecimal { scale } => scale,
                    _ => 0,
                };
                let ty = Type::Decimal {
                    precision: 38,
                    scale,
                };
                Value::Decimal(Decimal::from_wide(*s, scale).map_err(|_| EvalError::Overflow(ty))?)
            }
            AggState::SumDouble(Some(s)) => Value::Double(*s),
            AggState::AvgInt { n: 0, .. }
            | AggState::AvgWide { n: 0, .. }
            | AggState::AvgDouble { n: 0, .. } => Value::Null,
            AggState::AvgInt { sum, n } => Value::Double(*sum as f64 / *n as f64),
            AggState::AvgWide { sum, n } => {
                let (scale, out_scale) = match kind {
                    AggKind::AvgDecimal { scale, out_scale } => (scale, out_scale),
                    _ => (0, 0),
                };
                let avg = sum
                    .mul_pow10(out_scale - scale)
                    .div_round_i128(i128::from(*n));
                let ty = Type::Decimal {
                    precision: 38,
                    scale: out_scale,
                };
                Value::Decimal(
                    Decimal::from_wide(avg, out_scale).map_err(|_| EvalError::Overflow(ty))?,
                )
            }
            AggState::AvgDouble { sum, n } => Value::Double(sum / *n as f64),
            AggState::Moments { n, m2, .. } => {
                let moment = match kind {
                    AggKind::Moment(m) => m,
                    _ => Moment::VarPop,
                };
                let (divisor, root) = match moment {
                    Moment::VarSamp => (*n - 1, false),
                    Moment::VarPop => (*n, false),
                    Moment::StddevSamp => (*n - 1, true),
                    Moment::StddevPop => (*n, true),
                };
                if divisor <= 0 {
                    Value::Null
                } else {
                    let var = (m2 / divisor as f64).max(0.0);
                    Value::Double(if root { var.sqrt() } else { var })
                }
            }
            AggState::Extreme(v) => v.clone().unwrap_or(Value::Null),
            AggState::Distinct(set) => Value::Int(set.len() as i64),
            AggState::SortedDistinct(set) => Value::Int(set.len as i64),
            AggState::Hll(None) => Value::Int(0),
            AggState::Hll(Some(hll)) => Value::Int(hll.estimate().round() as i64),
            AggState::Quantiles(sketch) => {
                let (q, continuous) = match kind {
                    AggKind::Percentile { q, continuous } => (q, continuous),
                    _ => (0.5, true),
                };
                let estimate = if continuous {
                    sketch.percentile_cont(q)
                } else {
                    sketch.percentile_disc(q)
                };
                estimate.map(Value::Double).unwrap_or(Value::Null)
            }
            AggState::Pick(p) => p.as_ref().map(|(_, _, v)| v.clone()).unwrap_or(Value::Null),
            AggState::Bool(b) => b.map(Value::Bool).unwrap_or(Value::Null),
        })
    }

    /// A [`AggState::SortedDistinct`] decoded into a set (to be updated or merged); other
    /// states are left as they are.
    fn expand(&mut self) {
        if let AggState::SortedDistinct(sorted) = self {
            let mut set = HashSet::with_capacity_and_hasher(
                sorted.len,
                foldhash::fast::RandomState::default(),
            );
            let mut r = Reader::new(&sorted.bytes);
            while !r.is_empty() {
                // The bytes are this process's own encoding of values ([`merge_sorted`]).
                match r.value() {
                    Ok(v) => {
                        set.insert(v);
                    }
                    Err(_) => unreachable!("a sorted set holds values this process encoded"),
                }
            }
            *self = AggState::Distinct(set);
        }
    }

    /// Finishes a deferred merge (see [`crate::hll`]); other states have none.
    pub fn settle(&mut self) {
        if let AggState::Hll(Some(hll)) = self {
            hll.settle();
        }
    }

    /// Approximate bytes held in memory, for the memory budget.
    pub fn memory(&self) -> usize {
        let base = std::mem::size_of::<AggState>();
        base + match self {
            AggState::Distinct(set) => set.iter().map(|v| 40 + v.heap_bytes()).sum(),
            AggState::SortedDistinct(set) => set.bytes.capacity(),
            AggState::Hll(Some(u)) => u.estimated_size(),
            AggState::Quantiles(s) => s.memory(),
            AggState::Extreme(Some(v)) | AggState::Pick(Some((_, _, v))) => v.heap_bytes(),
            _ => 0,
        }
    }

    /// Appends the state's bytes.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            AggState::Count(n) => w.zigzag(*n),
            AggState::SumInt(s) => option(w, s.as_ref(), |w, s| w.i128(*s)),
            AggState::SumWide(s) => option(w, s.as_ref(), |w, s| wide(w, *s)),
            AggState::SumDouble(s) => option(w, s.as_ref(), |w, s| w.f64(*s)),
            AggState::AvgInt { sum, n } => {
                w.i128(*sum);
                w.zigzag(*n);
            }
            AggState::AvgWide { sum, n } => {
                wide(w, *sum);
                w.zigzag(*n);
            }
            AggState::AvgDouble { sum, n } => {
                w.f64(*sum);
                w.zigzag(*n);
            }
            AggState::Moments { n, mean, m2 } => {
                w.zigzag(*n);
                w.f64(*mean);
                w.f64(*m2);
            }
            AggState::Extreme(v) => option(w, v.as_ref(), |w, v| w.value(v)),
            AggState::Distinct(set) => {
                w.varint(set.len() as u64);
                for v in sorted_values(set) {
                    w.value(v);
                }
            }
            AggState::SortedDistinct(set) => {
                w.varint(set.len as u64);
                w.raw(&set.bytes);
            }
            AggState::Hll(u) => option(w, u.as_ref(), |w, u| w.bytes(&u.serialize())),
            AggState::Quantiles(s) => s.encode(w),
            AggState::Pick(p) => option(w, p.as_ref(), |w, (t, seq, v)| {
                w.zigzag(t.0);
                w.varint(*seq);
                w.value(v);
            }),
            AggState::Bool(b) => w.u8(match b {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            }),
        }
    }

    /// Reads a state of `kind` written by [`AggState::encode`].
    pub fn decode(kind: AggKind, r: &mut Reader<'_>) -> Result<AggState, CodecError> {
        Ok(match kind.new_state() {
            AggState::Count(_) => AggState::Count(r.zigzag()?),
            AggState::SumInt(_) => AggState::SumInt(read_option(r, |r| r.i128())?),
            AggState::SumWide(_) => AggState::SumWide(read_option(r, read_wide)?),
            AggState::SumDouble(_) => AggState::SumDouble(read_option(r, |r| r.f64())?),
            AggState::AvgInt { .. } => AggState::AvgInt {
                sum: r.i128()?,
                n: r.zigzag()?,
            },
            AggState::AvgWide { .. } => AggState::AvgWide {
                sum: read_wide(r)?,
                n: r.zigzag()?,
            },
            AggState::AvgDouble { .. } => AggState::AvgDouble {
                sum: r.f64()?,
                n: r.zigzag()?,
            },
            AggState::Moments { .. } => AggState::Moments {
                n: r.zigzag()?,
                mean: r.f64()?,
                m2: r.f64()?,
            },
            AggState::Extreme(_) => AggState::Extreme(read_option(r, |r| r.value())?),
            AggState::Distinct(_) | AggState::SortedDistinct(_) => {
                let n = r.len()?;
                let mut set =
                    HashSet::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
                for _ in 0..n {
                    set.insert(r.value()?);
                }
                AggState::Distinct(set)
            }
            AggState::Hll(_) => AggState::Hll(read_option(r, |r| {
                Ok(Box::new(
                    Hll::from_serialized(r.bytes()?).map_err(CodecError::Hll)?,
                ))
            })?),
            AggState::Quantiles(_) => AggState::Quantiles(Box::new(QuantileSketch::decode(r)?)),
            AggState::Pick(_) => AggState::Pick(read_option(r, |r| {
                Ok((Timestamp(r.zigzag()?), r.varint()?, r.value()?))
            })?),
            AggState::Bool(_) => AggState::Bool(match r.u8()? {
                0 => None,
                1 => Some(false),
                2 => Some(true),
                b => {
                    return Err(CodecError::UnknownTag {
                        what: "bool state",
                        tag: b,
                    });
                }
            }),
        })
    }
}

/// A value as hashed into a HyperLogLog: a type tag and the value's bytes, fed to the sketch's
/// own (fixed, portable) MurmurHash3, without allocating. The bytes must never change, or stored
/// sketches would stop matching new values.
struct HllKey<'a>(&'a Value);

impl Hash for HllKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            Value::Null => state.write(&[0]),
            Value::Bool(b) => state.write(&[1, u8::from(*b)]),
            Value::Int(i) => {
                state.write(&[2]);
                state.write(&i.to_le_bytes());
            }
            Value::Double(d) => {
                state.write(&[3]);
                state.write(&(if *d == 0.0 { 0.0f64 } else { *d }).to_le_bytes());
            }
            Value::Decimal(d) => {
                state.write(&[4, d.scale()]);
                state.write(&d.mantissa().to_le_bytes());
            }
            Value::Timestamp(t) => {
                state.write(&[5]);
                state.write(&t.0.to_le_bytes());
            }
            Value::Text(s) => {
                state.write(&[6]);
                state.write(s.as_bytes());
            }
            Value::Json(s) => {
                state.write(&[6]);
                state.write(s.as_bytes());
            }
        }
    }
}

fn at_scale(d: Decimal, kind: AggKind) -> i128 {
    let scale = match kind {
        AggKind::SumDecimal { scale } | AggKind::AvgDecimal { scale, .. } => scale,
        _ => d.scale(),
    };
    // Values arrive at the argument's declared scale; rescaling is a no-op safeguard.
    d.rescale(scale)
        .map(Decimal::mantissa)
        .unwrap_or(d.mantissa())
}

fn option<T>(w: &mut Writer, v: Option<&T>, f: impl FnOnce(&mut Writer, &T)) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            f(w, v);
        }
    }
}

fn read_option<'a, T>(
    r: &mut Reader<'a>,
    f: impl FnOnce(&mut Reader<'a>) -> Result<T, CodecError>,
) -> Result<Option<T>, CodecError> {
    match r.u8()? {
        0 => Ok(None),
        1 => f(r).map(Some),
        b => Err(CodecError::UnknownTag {
            what: "option tag",
            tag: b,
        }),
    }
}

fn wide(w: &mut Writer, v: I256) {
    for limb in v.to_limbs() {
        w.varint(limb);
    }
}

fn read_wide(r: &mut Reader<'_>) -> Result<I256, CodecError> {
    Ok(I256::from_limbs([
        r.varint()?,
        r.varint()?,
        r.varint()?,
        r.varint()?,
    ]))
}

/// A distinct set's values in [`Value`]'s order, the order its encoding keeps. Text values are
/// sorted by their first 16 bytes as one integer (big-endian, padded with zeros), and by the
/// whole text only where those tie: the same order as comparing the texts, without reading
/// every compared text through two pointers (the set's value, then its characters). Sorting
/// the `&Value`s directly was a quarter of a flush's time with one distinct count of user ids
/// (docs/performance.md, twenty-first round).
fn sorted_values(set: &HashSet<Value, foldhash::fast::RandomState>) -> Vec<&Value> {
    if !set.iter().all(|v| matches!(v, Value::Text(_))) {
        let mut sorted: Vec<&Value> = set.iter().collect();
        sorted.sort_unstable();
        return sorted;
    }
    let mut keyed: Vec<(u128, &Value)> = set.iter().map(|v| (text_prefix(v), v)).collect();
    keyed.sort_unstable_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| a.cmp(b)));
    keyed.into_iter().map(|(_, v)| v).collect()
}

/// The first 16 bytes of a text value as a big-endian integer, zeros past its end: if two
/// texts' prefixes differ, they compare as the texts do (a text that ends first has a zero
/// where the other has a byte, or both have zeros and the prefixes tie).
fn text_prefix(v: &Value) -> u128 {
    let Value::Text(t) = v else { return 0 };
    let mut bytes = [0u8; 16];
    let n = t.len().min(16);
    bytes[..n].copy_from_slice(&t.as_bytes()[..n]);
    u128::from_be_bytes(bytes)
}

/// Encodes the states of one group, in plan order, with a format version.
pub fn encode_states(states: &[AggState]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(STATE_FORMAT);
    for s in states {
        s.encode(&mut w);
    }
    w.finish()
}

/// A reader of [`encode_states`] output, past its format byte (refused when it is not
/// [`STATE_FORMAT`]).
fn states_reader(bytes: &[u8]) -> Result<Reader<'_>, CodecError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != STATE_FORMAT {
        return Err(CodecError::Format {
            found: version,
            expected: STATE_FORMAT,
        });
    }
    Ok(r)
}

/// Decodes [`encode_states`] output for aggregates of the given kinds.
pub fn decode_states(
    kinds: impl IntoIterator<Item = AggKind>,
    bytes: &[u8],
) -> Result<Vec<AggState>, CodecError> {
    let mut r = states_reader(bytes)?;
    let states = kinds
        .into_iter()
        .map(|k| AggState::decode(k, &mut r))
        .collect::<Result<Vec<_>, _>>()?;
    if !r.is_empty() {
        return Err(CodecError::TrailingBytes("states"));
    }
    Ok(states)
}

/// An exact distinct set as its encoding: `len` values, encoded one after the other in
/// [`Value`]'s order (the bytes [`AggState::encode`] writes after the count).
#[derive(Clone, Debug)]
pub struct SortedSet {
    len: usize,
    bytes: Vec<u8>,
}

/// Merges a stored row's states, still encoded ([`encode_states`] output for aggregates of the
/// given kinds), into `into`, the flush's new states of the same group, as
/// [`AggState::merge_owned`] would merge the decoded ones. An exact distinct set is merged in
/// its encoded form ([`merge_sorted`]): its stored values are copied as bytes, never decoded
/// into a set, and `into`'s set becomes the [`AggState::SortedDistinct`] of the union. Of two
/// values equal but spelled differently (decimals of different scales) the stored one is kept.
/// A stored set whose values are not in order (written before sets were sorted, or damaged)
/// is decoded and merged as a set instead.
/// (Decoding a stored set of user ids, merging and sorting it again was most of a flush's
/// time with one such view: docs/performance.md, twenty-first and twenty-third rounds.)
/// Other states are decoded and merged as before, in the same order.
pub fn merge_encoded_states(
    kinds: impl IntoIterator<Item = AggKind>,
    into: &mut [AggState],
    bytes: &[u8],
) -> Result<(), CodecError> {
    let mut r = states_reader(bytes)?;
    for (kind, state) in kinds.into_iter().zip(into.iter_mut()) {
        match state {
            AggState::Distinct(new) => {
                let at = r.clone();
                let n = r.len()?;
                match merge_sorted(&mut r, n, new)? {
                    Some(union) => *state = AggState::SortedDistinct(union),
                    None => {
                        r = at;
                        let stored = AggState::decode(kind, &mut r)?;
                        state.merge_owned(kind, stored);
                    }
                }
            }
            _ => {
                let stored = AggState::decode(kind, &mut r)?;
                state.merge_owned(kind, stored);
            }
        }
    }
    if !r.is_empty() {
        return Err(CodecError::TrailingBytes("states"));
    }
    Ok(())
}

/// The union of `n` encoded values read from `r` (in [`Value`]'s order, as a stored set is) and
/// the set `new`, encoded in the same order: the stored values' bytes are copied as they are,
/// a run at a time between the new values, and of two equal values the stored one is kept.
/// `None` if the stored values are not strictly increasing (`r` is then left part way).
fn merge_sorted(
    r: &mut Reader<'_>,
    n: usize,
    new: &HashSet<Value, foldhash::fast::RandomState>,
) -> Result<Option<SortedSet>, CodecError> {
    let new = sorted_values(new);
    // Room for the stored set (at most the rest of the row) and the new values.
    let mut w = Writer::with_capacity(r.remaining() + 16 * new.len());
    let mut len = n;
    let mut next = new.into_iter().peekable();
    // Where the stored values not yet copied begin.
    let mut run = r.position();
    let mut previous = None;
    for _ in 0..n {
        let before = r.position();
        let stored = r.value_ref()?;
        let ordered = match (&previous, &stored) {
            (None, _) => true,
            (Some(ValueRef::Text(p)), ValueRef::Text(c)) => text_lt(p, c),
            (Some(p), c) => p.cmp_ref(c).is_lt(),
        };
        if !ordered {
            return Ok(None);
        }
        while let Some(v) = next.peek() {
            match stored.cmp_value(v) {
                std::cmp::Ordering::Greater => {
                    // A new value goes before this stored one: the run before it first.
                    w.raw(&r.read_since(run)[..before - run]);
                    run = before;
                    w.value(v);
                    len += 1;
                    next.next();
                }
                std::cmp::Ordering::Equal => {
                    next.next();
                    break;
                }
                std::cmp::Ordering::Less => break,
            }
        }
        previous = Some(stored);
    }
    w.raw(r.read_since(run));
    for v in next {
        w.value(v);
        len += 1;
    }
    Ok(Some(SortedSet {
        len,
        bytes: w.finish(),
    }))
}

/// Whether text `a` sorts before text `b`: their first 8 bytes compared as one big-endian
/// integer (zeros past the end, as `text_prefix` does with 16), the whole texts only where
/// those tie. Checking the order of a stored set of 50,000 user ids this way added about
/// 0.45 ms to `flush_states/flush_row_encoded`, comparing them as `str`s about 0.73 ms.
#[inline]
fn text_lt(a: &str, b: &str) -> bool {
    fn prefix(t: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        let n = t.len().min(8);
        bytes[..n].copy_from_slice(&t[..n]);
        u64::from_be_bytes(bytes)
    }
    match prefix(a.as_bytes()).cmp(&prefix(b.as_bytes())) {
        std::cmp::Ordering::Equal => a < b,
        o => o.is_lt(),
    }
}

/// The version byte of the `_state` column's format.
const STATE_FORMAT: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Value {
        Value::Decimal(Decimal::parse(s).unwrap())
    }

    fn run(kind: AggKind, values: &[Value]) -> AggState {
        let mut s = kind.new_state();
        for (i, v) in values.iter().enumerate() {
            s.update(kind, v, &Value::Timestamp(Timestamp(i as i64)), i as u64);
        }
        s
    }

    fn round_trip(kind: AggKind, s: &AggState) -> AggState {
        let bytes = encode_states(std::slice::from_ref(s));
        decode_states([kind], &bytes).unwrap().remove(0)
    }

    #[test]
    fn every_kind_merges_and_round_trips() {
        let ints: Vec<Value> = [3, 1, 4, 1, 5, 9, 2, 6]
            .iter()
            .map(|&i| Value::Int(i))
            .collect();
        let kinds = [
            AggKind::CountStar,
            AggKind::Count,
            AggKind::SumInt,
            AggKind::SumDouble,
            AggKind::AvgInt,
            AggKind::AvgDouble,
            AggKind::Moment(Moment::VarSamp),
            AggKind::Moment(Moment::StddevPop),
            AggKind::Min,
            AggKind::Max,
            AggKind::CountDistinct,
            AggKind::ApproxCountDistinct,
            AggKind::Percentile {
                q: 0.5,
                continuous: true,
            },
            AggKind::Percentile {
                q: 0.9,
                continuous: false,
            },
            AggKind::First,
            AggKind::Last,
        ];
        for kind in kinds {
            let whole = run(kind, &ints);
            let mut left = run(kind, &ints[..3]);
            let mut right = kind.new_state();
            for (i, v) in ints.iter().enumerate().skip(3) {
                right.update(kind, v, &Value::Timestamp(Timestamp(i as i64)), i as u64);
            }
            left.merge(kind, &round_trip(kind, &right));
            let a = whole.finalize(kind).unwrap();
            let b = round_trip(kind, &left).finalize(kind).unwrap();
            match (&a, &b) {
                (Value::Double(x), Value::Double(y)) => {
                    assert!((x - y).abs() < 1e-9, "{kind:?}: {a:?} vs {b:?}")
                }
                _ => assert_eq!(a, b, "{kind:?}"),
            }
        }
    }

    #[test]
    fn decimal_sums_are_exact_and_overflow_is_an_error() {
        let kind = AggKind::SumDecimal { scale: 18 };
        let v = d("999999999999999999.999999999999999999");
        let s = run(kind, &[v.clone(), v.clone()]);
        assert_eq!(
            s.finalize(kind).unwrap().to_string(),
            "1999999999999999999.999999999999999998"
        );
        let many = vec![v; 1000];
        let s = run(kind, &many);
        assert!(matches!(s.finalize(kind), Err(EvalError::Overflow(_))));
        let kind = AggKind::AvgDecimal {
            scale: 2,
            out_scale: 8,
        };
        let s = run(kind, &[d("1.00"), d("2.00"), d("2.00")]);
        assert_eq!(s.finalize(kind).unwrap().to_string(), "1.66666667");
    }

    #[test]
    fn nulls_are_skipped_and_empty_sums_are_null() {
        let kind = AggKind::SumInt;
        let s = run(kind, &[Value::Null, Value::Null]);
        assert_eq!(s.finalize(kind).unwrap(), Value::Null);
        let s = run(AggKind::Count, &[Value::Null, Value::Int(1)]);
        assert_eq!(s.finalize(AggKind::Count).unwrap(), Value::Int(1));
        let s = run(AggKind::CountStar, &[Value::Null, Value::Int(1)]);
        assert_eq!(s.finalize(AggKind::CountStar).unwrap(), Value::Int(2));
    }

    #[test]
    fn first_and_last_break_ties_by_sequence() {
        let mut first = AggKind::First.new_state();
        let mut last = AggKind::Last.new_state();
        let t = Value::Timestamp(Timestamp(100));
        for (seq, v) in [(5, "b"), (3, "a"), (9, "c")] {
            first.update(AggKind::First, &Value::text(v), &t, seq);
            last.update(AggKind::Last, &Value::text(v), &t, seq);
        }
        assert_eq!(first.finalize(AggKind::First).unwrap(), Value::text("a"));
        assert_eq!(last.finalize(AggKind::Last).unwrap(), Value::text("c"));
    }

    /// DESIGN.md's memory budget: a view group with one percentile and one
    /// `approx_count_distinct` state holds at most 8 KB, however many events it absorbed. The
    /// worst realistic case: latencies spread over five decades (0.1 ms to 10 s) and 100,000
    /// distinct users. `docs/performance.md` quotes the figures this prints with `--nocapture`.
    #[test]
    fn a_group_with_a_percentile_and_a_distinct_sketch_fits_8_kb() {
        let percentile = AggKind::Percentile {
            q: 0.99,
            continuous: true,
        };
        let mut p = percentile.new_state();
        let mut h = AggKind::ApproxCountDistinct.new_state();
        let at = Value::Timestamp(Timestamp(0));
        for i in 0..100_000u64 {
            // Log-uniform over [0.1, 10_000): every bin of five decades gets values.
            let ms = 0.1 * 10f64.powf(5.0 * (i as f64) / 100_000.0);
            p.update(percentile, &Value::Double(ms), &at, i);
            h.update(
                AggKind::ApproxCountDistinct,
                &Value::text(&format!("user-{i}")),
                &at,
                i,
            );
        }
        let memory = p.memory() + h.memory();
        println!(
            "percentile {} + approx_count_distinct {} = memory {memory} bytes",
            p.memory(),
            h.memory()
        );
        let stored = encode_states(&[p, h]).len();
        println!("stored {stored} bytes");
        assert!(memory <= 8 * 1024, "memory {memory} bytes");
        assert!(stored <= 8 * 1024, "stored {stored} bytes");
    }

    /// A distinct set of texts encodes in the texts' order, whatever they share: prefixes
    /// longer and shorter than the 16 bytes compared first, NUL bytes (which the prefix pads
    /// with), multi-byte characters; and equal sets encode alike, however they were built.
    #[test]
    fn distinct_texts_encode_in_text_order() {
        let mut texts: Vec<String> = vec![
            "".into(),
            "\0".into(),
            "a".into(),
            "a\0".into(),
            "a\0\0".into(),
            "ab".into(),
            "user-1".into(),
            "user-10".into(),
            "user-100000000000".into(),
            "user-1000000000000".into(),
            "user-10000000000000000".into(),
            "user-10000000000000001".into(),
            "user-1000000000000000\0".into(),
            "user-2".into(),
            "zé".into(),
            "z\u{ff}".into(),
            "日本".into(),
        ];
        texts.extend((0..300).map(|i| format!("user-{}", i * 7919 % 1000)));
        let kind = AggKind::CountDistinct;
        let forward = run(
            kind,
            &texts.iter().map(|t| Value::text(t)).collect::<Vec<_>>(),
        );
        let backward = run(
            kind,
            &texts
                .iter()
                .rev()
                .map(|t| Value::text(t))
                .collect::<Vec<_>>(),
        );
        let bytes = encode_states(std::slice::from_ref(&forward));
        assert_eq!(bytes, encode_states(std::slice::from_ref(&backward)));
        let mut expected: Vec<Value> = texts.iter().map(|t| Value::text(t)).collect();
        expected.sort();
        expected.dedup();
        let mut w = Writer::new();
        w.varint(expected.len() as u64);
        for v in &expected {
            w.value(v);
        }
        assert_eq!(bytes[1..], w.finish()[..]);
    }

    /// Pairs of ranges of values for two sets merged: the larger side first or second,
    /// overlapping or not (new values before, between, after and equal to the others), one
    /// side or both empty.
    const SET_PAIRS: [(std::ops::Range<i64>, std::ops::Range<i64>); 9] = [
        (0..40, 30..45),
        (30..45, 0..40),
        (0..10, 5..100),
        (5..100, 0..10),
        (0..20, 50..60),
        (50..60, 0..20),
        (0..0, 0..5),
        (0..5, 0..0),
        (0..0, 0..0),
    ];

    /// Merging a distinct set given up gives the union, whichever side is the larger and
    /// whatever the two share; each side holds values the other lacks, except where one is
    /// empty.
    #[test]
    fn owned_distinct_merges_are_unions() {
        let kind = AggKind::CountDistinct;
        let ints = |range: std::ops::Range<i64>| range.map(Value::Int).collect::<Vec<_>>();
        for (into, from) in SET_PAIRS {
            let mut owned = run(kind, &ints(into.clone()));
            owned.merge_owned(kind, run(kind, &ints(from.clone())));
            let mut both = ints(into.clone());
            both.extend(ints(from.clone()));
            assert_eq!(
                encode_states(&[owned]),
                encode_states(&[run(kind, &both)]),
                "{into:?} with {from:?}"
            );
        }
    }

    /// A row's states merged the flush's way (`merge_encoded_states`, the stored row left
    /// encoded) and the old way (decoded, then `merge_owned`) give the same bytes and results.
    fn merged_both_ways(kinds: &[AggKind], delta: &[Vec<Value>], stored: &[Vec<Value>]) {
        let states = |rows: &[Vec<Value>]| -> Vec<AggState> {
            kinds.iter().zip(rows).map(|(k, vs)| run(*k, vs)).collect()
        };
        let stored_bytes = encode_states(&states(stored));
        let mut old_way = states(delta);
        for ((s, k), from) in old_way
            .iter_mut()
            .zip(kinds)
            .zip(decode_states(kinds.iter().copied(), &stored_bytes).unwrap())
        {
            s.merge_owned(*k, from);
        }
        let mut new_way = states(delta);
        merge_encoded_states(kinds.iter().copied(), &mut new_way, &stored_bytes).unwrap();
        assert_eq!(
            encode_states(&new_way),
            encode_states(&old_way),
            "{delta:?} into {stored:?}"
        );
        for ((a, b), k) in new_way.iter().zip(&old_way).zip(kinds) {
            assert_eq!(a.finalize(*k).unwrap(), b.finalize(*k).unwrap());
        }
    }

    #[test]
    fn distinct_sets_merge_encoded_as_decoded() {
        let text = |s: &str| Value::Text(s.into());
        let texts = |range: std::ops::Range<i64>| {
            range
                .map(|i| text(&format!("user-{:03}", (i * 37) % 1000)))
                .collect::<Vec<_>>()
        };
        let ints = |range: std::ops::Range<i64>| range.map(|i| Value::Int(i * 3 - 50)).collect();
        let kinds = [
            AggKind::CountStar,
            AggKind::CountDistinct,
            AggKind::Moment(Moment::VarSamp),
            AggKind::CountDistinct,
        ];
        let doubles = |range: std::ops::Range<i64>| {
            range
                .map(|i| Value::Double(i as f64 / 3.0))
                .collect::<Vec<_>>()
        };
        for (delta, stored) in SET_PAIRS {
            let row = |r: std::ops::Range<i64>| {
                vec![
                    ints(r.clone()),
                    texts(r.clone()),
                    doubles(r.clone()),
                    ints(r),
                ]
            };
            merged_both_ways(&kinds, &row(delta.clone()), &row(stored.clone()));
        }
        // Texts that share prefixes, end early, hold NUL bytes and multi-byte characters.
        let odd: Vec<Value> = ["", "a", "a\0", "ab", "é", "€uro", "user", "user-0", "zz"]
            .into_iter()
            .map(text)
            .collect();
        merged_both_ways(
            &[AggKind::CountDistinct],
            &[odd.iter().step_by(2).cloned().collect()],
            &[odd.iter().skip(1).step_by(3).cloned().collect()],
        );
        // Every other type a set holds, and texts longer than the 16 bytes of the sort's prefix.
        let long = |i: i64| {
            text(&format!(
                "a-long-shared-prefix-of-many-bytes-{:04}",
                (i * 7) % 60
            ))
        };
        let time = |i: i64| Value::Timestamp(Timestamp(i * 1_000_000 - 30_000_000));
        let json = |i: i64| Value::Json(format!("{{\"k\":{}}}", (i * 11) % 50).into());
        let dec = |i: i64| Value::Decimal(Decimal::new(i128::from(i * 125 - 2_000), 2));
        let double = |i: i64| match i % 7 {
            0 => Value::Double(-0.0),
            1 => Value::Double(f64::NAN),
            2 => Value::Double(f64::NEG_INFINITY),
            _ => Value::Double((i as f64 - 20.0) / 4.0),
        };
        let row = |r: std::ops::Range<i64>| -> Vec<Vec<Value>> {
            vec![
                r.clone().map(long).collect(),
                r.clone().map(time).collect(),
                r.clone().map(json).collect(),
                r.clone().map(dec).collect(),
                r.map(double).collect(),
            ]
        };
        for (delta, stored) in [
            (0..30, 20..60),
            (20..60, 0..30),
            (0..5, 5..40),
            (0..40, 0..40),
        ] {
            merged_both_ways(&[AggKind::CountDistinct; 5], &row(delta), &row(stored));
        }
    }

    #[test]
    fn a_stored_set_out_of_order_is_merged_as_a_set() {
        // Written in the wrong order (as sets were before they were sorted), with a duplicate.
        let kind = AggKind::CountDistinct;
        let mut w = Writer::new();
        w.u8(STATE_FORMAT);
        w.varint(4);
        for i in [30, 10, 20, 10] {
            w.value(&Value::Int(i));
        }
        let stored = w.finish();
        let mut states = vec![run(kind, &[Value::Int(20), Value::Int(40)])];
        merge_encoded_states([kind], &mut states, &stored).unwrap();
        assert!(matches!(states[0], AggState::Distinct(_)));
        let expected = [10, 20, 30, 40].map(Value::Int);
        assert_eq!(
            encode_states(&states),
            encode_states(&[run(kind, &expected)])
        );
    }

    #[test]
    fn a_merged_encoded_set_keeps_the_stored_spelling_and_can_grow() {
        let kind = AggKind::CountDistinct;
        let dec = |m: i128, scale: u8| Value::Decimal(Decimal::new(m, scale));
        // 1.0 stored, 1.00 new: one value, the stored spelling.
        let stored = encode_states(&[run(kind, &[dec(10, 1), dec(25, 1)])]);
        let mut states = vec![run(kind, &[dec(100, 2), dec(3, 0)])];
        merge_encoded_states([kind], &mut states, &stored).unwrap();
        assert!(matches!(states[0], AggState::SortedDistinct(_)));
        assert_eq!(states[0].finalize(kind).unwrap(), Value::Int(3));
        let expected = encode_states(&[run(kind, &[dec(10, 1), dec(25, 1), dec(3, 0)])]);
        assert_eq!(encode_states(&states), expected);
        // Updated or merged again, it is a set as before.
        let mut grown = states[0].clone();
        grown.update(kind, &dec(4, 0), &Value::Null, 0);
        assert_eq!(grown.finalize(kind).unwrap(), Value::Int(4));
        let mut into = run(kind, &[dec(5, 0)]);
        into.merge(kind, &states[0]);
        assert_eq!(into.finalize(kind).unwrap(), Value::Int(4));
        // A stored set cut short is an error, not a panic.
        let mut states = vec![run(kind, &[dec(1, 0)])];
        assert!(merge_encoded_states([kind], &mut states, &stored[..stored.len() - 3]).is_err());
    }
}
