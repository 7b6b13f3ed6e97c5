//! Exact fixed-point decimals for `DECIMAL(p,s)`, p ≤ 38.
//!
//! A [`Decimal`] is an `i128` mantissa and a scale: `12.50` is `(1250, 2)`. 38 decimal digits fit
//! in an `i128` (its range is ±1.7·10^38), so every value of every declared column is exact.
//! Intermediate results that can be wider (sums of many values, products, the dividend of a
//! division) are computed in [`I256`], and only the final result has to fit 38 digits again;
//! when it does not, the operation returns [`Overflow`] instead of wrapping or rounding through a
//! float. Rounding, where the result scale is smaller than the exact one, is half away from zero.

use std::cmp::Ordering;
use std::fmt;

/// The largest precision a `DECIMAL` may declare, and the most digits any decimal value holds.
pub const MAX_PRECISION: u8 = 38;

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// An exact decimal number: `mantissa · 10^-scale`.
///
/// The 128-bit mantissa is kept as two 64-bit halves so that the type is aligned to 8 bytes,
/// not 16: a [`Value`](crate::Value) is then 32 bytes instead of 48, and so is every cell of
/// every row the engine reads.
#[derive(Clone, Copy)]
pub struct Decimal {
    low: u64,
    high: i64,
    scale: u8,
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decimal")
            .field("mantissa", &self.mantissa())
            .field("scale", &self.scale)
            .finish()
    }
}

/// A decimal result that does not fit in 38 digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// Why a text is not a decimal number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseDecimalError {
    /// Not a number at all.
    Invalid,
    /// More than 38 significant digits.
    TooManyDigits,
}

impl Decimal {
    /// The decimal `mantissa · 10^-scale`. `scale` must be at most 38.
    pub fn new(mantissa: i128, scale: u8) -> Decimal {
        debug_assert!(scale <= MAX_PRECISION);
        Decimal {
            low: mantissa as u64,
            high: (mantissa >> 64) as i64,
            scale,
        }
    }

    /// The mantissa, the digits without the decimal point.
    pub fn mantissa(self) -> i128 {
        (i128::from(self.high) << 64) | i128::from(self.low)
    }

    /// How many digits follow the decimal point.
    pub fn scale(self) -> u8 {
        self.scale
    }

    /// Parses `[+-]digits[.digits][e[+-]digits]` exactly. Trailing fractional zeros are kept in the
    /// scale (`1.50` has scale 2); use [`Decimal::fit`] to bring a value to a column's type.
    pub fn parse(text: &str) -> Result<Decimal, ParseDecimalError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut mantissa: i128 = 0;
        let mut digits = 0u32; // significant digits kept in the mantissa
        let mut seen_digit = false;
        let mut scale: i64 = 0;
        let mut in_fraction = false;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'0'..=b'9' => {
                    seen_digit = true;
                    if mantissa != 0 || b != b'0' {
                        digits += 1;
                    }
                    if digits > u32::from(MAX_PRECISION) {
                        return Err(ParseDecimalError::TooManyDigits);
                    }
                    mantissa = mantissa * 10 + i128::from(b - b'0');
                    if in_fraction {
                        scale += 1;
                    }
                }
                b'.' if !in_fraction => in_fraction = true,
                b'e' | b'E' => break,
                _ => return Err(ParseDecimalError::Invalid),
            }
            i += 1;
        }
        if !seen_digit {
            return Err(ParseDecimalError::Invalid);
        }
        if i < bytes.len() {
            // Exponent part.
            let exponent: i64 = text[i + 1..]
                .parse()
                .map_err(|_| ParseDecimalError::Invalid)?;
            if !(-100..=100).contains(&exponent) {
                return Err(ParseDecimalError::TooManyDigits);
            }
            scale -= exponent;
        }
        if scale < 0 {
            let shift = usize::try_from(-scale).map_err(|_| ParseDecimalError::TooManyDigits)?;
            if shift > 38 || digits as usize + shift > usize::from(MAX_PRECISION) {
                if mantissa == 0 {
                    scale = 0;
                } else {
                    return Err(ParseDecimalError::TooManyDigits);
                }
            } else {
                mantissa *= POW10[shift];
                scale = 0;
            }
        }
        // Drop trailing zeros that push the scale beyond what can be represented.
        while scale > i64::from(MAX_PRECISION) {
            if mantissa % 10 != 0 {
                return Err(ParseDecimalError::TooManyDigits);
            }
            mantissa /= 10;
            scale -= 1;
        }
        let mantissa = if negative { -mantissa } else { mantissa };
        Ok(Decimal::new(mantissa, scale as u8))
    }

    /// Brings the value to `DECIMAL(precision, scale)` without losing anything: extra fractional
    /// digits must be zeros, and the integer part must have at most `precision - scale` digits.
    pub fn fit(self, precision: u8, scale: u8) -> Result<Decimal, FitError> {
        let mut value = self;
        if value.scale > scale {
            let drop = usize::from(value.scale - scale);
            if value.mantissa() % POW10[drop] != 0 {
                return Err(FitError::TooManyDecimals {
                    decimals: value.trimmed_scale(),
                });
            }
            value = Decimal::new(value.mantissa() / POW10[drop], scale);
        }
        let value = value.rescale(scale).map_err(|_| FitError::Overflow)?;
        if digit_count(value.mantissa()) > u32::from(precision) {
            return Err(FitError::Overflow);
        }
        Ok(value)
    }

    /// The scale without trailing fractional zeros.
    fn trimmed_scale(self) -> u8 {
        let mut m = self.mantissa();
        let mut s = self.scale;
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        s
    }

    /// The same value with `scale` fractional digits, rounding half away from zero when the scale
    /// shrinks.
    pub fn rescale(self, scale: u8) -> Result<Decimal, Overflow> {
        match scale.cmp(&self.scale) {
            Ordering::Equal => Ok(self),
            Ordering::Greater => {
                let factor = POW10[usize::from(scale - self.scale)];
                let mantissa = self.mantissa().checked_mul(factor).ok_or(Overflow)?;
                Decimal::checked(mantissa, scale)
            }
            Ordering::Less => {
                let divisor = POW10[usize::from(self.scale - scale)];
                Ok(Decimal::new(div_round(self.mantissa(), divisor), scale))
            }
        }
    }

    fn checked(mantissa: i128, scale: u8) -> Result<Decimal, Overflow> {
        if digit_count(mantissa) > u32::from(MAX_PRECISION) {
            return Err(Overflow);
        }
        Ok(Decimal::new(mantissa, scale))
    }

    /// `self + other` at scale `max(s1, s2)`.
    pub fn checked_add(self, other: Decimal) -> Result<Decimal, Overflow> {
        let scale = self.scale.max(other.scale);
        let a = I256::from(self.mantissa()).mul_pow10(scale - self.scale);
        let b = I256::from(other.mantissa()).mul_pow10(scale - other.scale);
        Decimal::from_wide(a + b, scale)
    }

    /// `self - other` at scale `max(s1, s2)`.
    pub fn checked_sub(self, other: Decimal) -> Result<Decimal, Overflow> {
        self.checked_add(-other)
    }

    /// `self · other`, rounded to `scale`.
    pub fn checked_mul(self, other: Decimal, scale: u8) -> Result<Decimal, Overflow> {
        let product = I256::from(self.mantissa()).mul_i128(other.mantissa());
        let exact_scale = self.scale + other.scale;
        let wide = if exact_scale >= scale {
            product.div_round_pow10(exact_scale - scale)
        } else {
            product.mul_pow10(scale - exact_scale)
        };
        Decimal::from_wide(wide, scale)
    }

    /// `self / other`, rounded to `scale`; `None` when `other` is zero.
    pub fn checked_div(self, other: Decimal, scale: u8) -> Option<Result<Decimal, Overflow>> {
        if other.mantissa() == 0 {
            return None;
        }
        // self.m·10^-s1 / (other.m·10^-s2) = (self.m · 10^(scale + s2 - s1) / other.m) · 10^-scale
        let shift = i32::from(scale) + i32::from(other.scale) - i32::from(self.scale);
        let numerator = if shift >= 0 {
            I256::from(self.mantissa()).mul_pow10(shift as u8)
        } else {
            I256::from(self.mantissa()).div_round_pow10((-shift) as u8)
        };
        Some(Decimal::from_wide(
            numerator.div_round_i128(other.mantissa()),
            scale,
        ))
    }

    /// The value `wide · 10^-scale`, if it fits 38 digits.
    pub fn from_wide(wide: I256, scale: u8) -> Result<Decimal, Overflow> {
        let mantissa = wide.to_i128().ok_or(Overflow)?;
        Decimal::checked(mantissa, scale)
    }

    /// The nearest `f64`.
    pub fn to_f64(self) -> f64 {
        // Parsing the exact text gives the correctly rounded double.
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// The value truncated toward zero to an integer, if it fits an `i64`.
    pub fn trunc_i64(self) -> Option<i64> {
        i64::try_from(self.mantissa() / POW10[usize::from(self.scale)]).ok()
    }
}

/// Why a value does not fit a `DECIMAL(p,s)` column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitError {
    /// More fractional digits than the column's scale keeps.
    TooManyDecimals { decimals: u8 },
    /// More integer digits than `p - s`.
    Overflow,
}

impl std::ops::Neg for Decimal {
    type Output = Decimal;

    fn neg(self) -> Decimal {
        Decimal::new(-self.mantissa(), self.scale)
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        if self.scale == other.scale {
            return self.mantissa().cmp(&other.mantissa());
        }
        let scale = self.scale.max(other.scale);
        let a = I256::from(self.mantissa()).mul_pow10(scale - self.scale);
        let b = I256::from(other.mantissa()).mul_pow10(scale - other.scale);
        a.cmp(&b)
    }
}

impl std::hash::Hash for Decimal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal values must hash equally whatever their scale: hash the trimmed form.
        let mut m = self.mantissa();
        let mut s = self.scale;
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        m.hash(state);
        s.hash(state);
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa().unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        if self.mantissa() < 0 {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{int}.{frac}")
        } else {
            write!(f, "0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

/// Number of decimal digits of `|m|` (0 has 1 digit).
pub fn digit_count(m: i128) -> u32 {
    let abs = m.unsigned_abs();
    if abs == 0 {
        return 1;
    }
    abs.ilog10() + 1
}

/// `n / d` rounded half away from zero; `d > 0`.
fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if r.unsigned_abs() * 2 >= d.unsigned_abs() {
        if n < 0 { q - 1 } else { q + 1 }
    } else {
        q
    }
}

/// A 256-bit two's complement integer, wide enough that no sum of `i128` values counted by an
/// `i64` can overflow it: it is the accumulator of decimal and integer sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct I256 {
    /// Little-endian 64-bit limbs.
    limbs: [u64; 4],
}

impl From<i128> for I256 {
    fn from(v: i128) -> I256 {
        let lo = v as u128;
        let fill = if v < 0 { u64::MAX } else { 0 };
        I256 {
            limbs: [lo as u64, (lo >> 64) as u64, fill, fill],
        }
    }
}

impl I256 {
    /// Zero.
    pub const ZERO: I256 = I256 { limbs: [0; 4] };

    /// The value as an `i128`, when it fits.
    pub fn to_i128(self) -> Option<i128> {
        let lo = u128::from(self.limbs[0]) | (u128::from(self.limbs[1]) << 64);
        let v = lo as i128;
        let fill = if v < 0 { u64::MAX } else { 0 };
        (self.limbs[2] == fill && self.limbs[3] == fill).then_some(v)
    }

    /// Whether the value is below zero.
    pub fn is_negative(self) -> bool {
        self.limbs[3] >> 63 == 1
    }

    /// `self + other`. Wrapping cannot happen for the sums this type accumulates: each addend is
    /// below 2^127 in magnitude and there are fewer than 2^64 of them.
    fn wrapping_add(self, other: I256) -> I256 {
        let mut out = [0u64; 4];
        let mut carry = 0u64;
        for (i, slot) in out.iter_mut().enumerate() {
            let (s1, c1) = self.limbs[i].overflowing_add(other.limbs[i]);
            let (s2, c2) = s1.overflowing_add(carry);
            *slot = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
        I256 { limbs: out }
    }

    /// `-self`.
    fn negate(self) -> I256 {
        I256 {
            limbs: self.limbs.map(|l| !l),
        }
        .wrapping_add(I256::from(1))
    }

    fn magnitude(self) -> [u64; 4] {
        if self.is_negative() {
            self.negate().limbs
        } else {
            self.limbs
        }
    }

    fn from_magnitude(negative: bool, limbs: [u64; 4]) -> I256 {
        let v = I256 { limbs };
        if negative { v.negate() } else { v }
    }

    /// `self · m` for `m ≥ 0`.
    fn mul_u64(self, m: u64) -> I256 {
        let negative = self.is_negative();
        let mag = self.magnitude();
        let mut out = [0u64; 4];
        let mut carry = 0u128;
        for i in 0..4 {
            let p = u128::from(mag[i]) * u128::from(m) + carry;
            out[i] = p as u64;
            carry = p >> 64;
        }
        I256::from_magnitude(negative, out)
    }

    /// `self · v`.
    pub fn mul_i128(self, v: i128) -> I256 {
        let negative = v < 0;
        let mag = v.unsigned_abs();
        let lo = self.mul_u64(mag as u64);
        let hi = self.mul_u64((mag >> 64) as u64);
        // hi · 2^64: shift limbs up by one.
        let shifted = I256 {
            limbs: [0, hi.limbs[0], hi.limbs[1], hi.limbs[2]],
        };
        let sum = lo + shifted;
        if negative { -sum } else { sum }
    }

    /// `self · 10^k`.
    pub fn mul_pow10(self, mut k: u8) -> I256 {
        let mut v = self;
        while k > 0 {
            let step = k.min(19);
            v = v.mul_u64(10u64.pow(u32::from(step)));
            k -= step;
        }
        v
    }

    /// Divides the magnitude by `d`, returning the quotient magnitude and the remainder.
    fn divrem_mag(mag: [u64; 4], d: u64) -> ([u64; 4], u64) {
        let mut out = [0u64; 4];
        let mut rem = 0u128;
        for i in (0..4).rev() {
            let cur = (rem << 64) | u128::from(mag[i]);
            out[i] = (cur / u128::from(d)) as u64;
            rem = cur % u128::from(d);
        }
        (out, rem as u64)
    }

    /// `self / 10^k`, rounded half away from zero.
    pub fn div_round_pow10(self, k: u8) -> I256 {
        if k == 0 {
            return self;
        }
        if k > 38 {
            return I256::ZERO;
        }
        self.div_round_i128(POW10[usize::from(k)])
    }

    /// `self / d`, rounded half away from zero; `d ≠ 0`.
    pub fn div_round_i128(self, d: i128) -> I256 {
        let negative = self.is_negative() != (d < 0);
        let mag = self.magnitude();
        let dm = d.unsigned_abs();
        let (q, rem_twice_ge) = if let Ok(d64) = u64::try_from(dm) {
            let (q, r) = I256::divrem_mag(mag, d64);
            (q, u128::from(r) * 2 >= u128::from(d64))
        } else {
            // Long division bit by bit for wide divisors; rare (divisors above 2^64).
            let mut q = [0u64; 4];
            let mut r: u128 = 0;
            let mut r_overflow = false;
            for bit in (0..256).rev() {
                let top = r >> 127;
                r = (r << 1) | u128::from((mag[bit / 64] >> (bit % 64)) & 1);
                if top == 1 || r >= dm {
                    r = r.wrapping_sub(dm);
                    q[bit / 64] |= 1 << (bit % 64);
                }
            }
            if r >= dm - r {
                r_overflow = true;
            }
            (q, r_overflow)
        };
        let mut result = I256 { limbs: q };
        if rem_twice_ge {
            result = result + I256::from(1);
        }
        if negative { -result } else { result }
    }

    /// The little-endian limbs, for serialization.
    pub fn to_limbs(self) -> [u64; 4] {
        self.limbs
    }

    /// Rebuilds a value from [`I256::to_limbs`].
    pub fn from_limbs(limbs: [u64; 4]) -> I256 {
        I256 { limbs }
    }
}

impl std::ops::Add for I256 {
    type Output = I256;

    fn add(self, other: I256) -> I256 {
        self.wrapping_add(other)
    }
}

impl std::ops::Neg for I256 {
    type Output = I256;

    fn neg(self) -> I256 {
        self.negate()
    }
}

impl PartialOrd for I256 {
    fn partial_cmp(&self, other: &I256) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for I256 {
    fn cmp(&self, other: &I256) -> Ordering {
        match (self.is_negative(), other.is_negative()) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => {
                for i in (0..4).rev() {
                    match self.limbs[i].cmp(&other.limbs[i]) {
                        Ordering::Equal => continue,
                        ord => return ord,
                    }
                }
                Ordering::Equal
            }
        }
    }
}

impl fmt::Display for I256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut mag = self.magnitude();
        let mut chunks = Vec::new();
        const CHUNK: u64 = 10_000_000_000_000_000_000; // 10^19
        loop {
            let (q, r) = I256::divrem_mag(mag, CHUNK);
            chunks.push(r);
            mag = q;
            if mag == [0; 4] {
                break;
            }
        }
        if self.is_negative() {
            f.write_str("-")?;
        }
        let mut iter = chunks.iter().rev();
        if let Some(first) = iter.next() {
            write!(f, "{first}")?;
        }
        for chunk in iter {
            write!(f, "{chunk:019}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "0",
            "1",
            "-1",
            "12.50",
            "-0.001",
            "999999999999999999.999999999999999999",
            "-99999999999999999999999999999999999999",
        ] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(d("1e3").to_string(), "1000");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        assert_eq!(d("+7").to_string(), "7");
        assert_eq!(
            Decimal::parse("999999999999999999999999999999999999999"),
            Err(ParseDecimalError::TooManyDigits)
        );
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "NaN", "1,5"] {
            assert_eq!(
                Decimal::parse(bad),
                Err(ParseDecimalError::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn fit_checks_precision_and_scale() {
        assert_eq!(d("1.50").fit(10, 2).unwrap().to_string(), "1.50");
        assert_eq!(d("1.500").fit(10, 2).unwrap().to_string(), "1.50");
        assert_eq!(d("7").fit(10, 2).unwrap().to_string(), "7.00");
        assert_eq!(
            d("1.505").fit(10, 2),
            Err(FitError::TooManyDecimals { decimals: 3 })
        );
        assert_eq!(d("123456789").fit(10, 2), Err(FitError::Overflow));
        assert!(d("99999999.99").fit(10, 2).is_ok());
        assert_eq!(
            d("999999999999999999.999999999999999999")
                .fit(36, 18)
                .unwrap()
                .to_string(),
            "999999999999999999.999999999999999999"
        );
        assert_eq!(
            d("1000000000000000000").fit(36, 18),
            Err(FitError::Overflow)
        );
    }

    #[test]
    fn arithmetic_is_exact_and_checked() {
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap().to_string(), "0.3");
        assert_eq!(
            d("1.5").checked_sub(d("2.25")).unwrap().to_string(),
            "-0.75"
        );
        assert_eq!(
            d("1.5").checked_mul(d("2.25"), 3).unwrap().to_string(),
            "3.375"
        );
        assert_eq!(
            d("1.5").checked_mul(d("2.25"), 2).unwrap().to_string(),
            "3.38"
        );
        assert_eq!(
            d("-1.5").checked_mul(d("2.25"), 2).unwrap().to_string(),
            "-3.38"
        );
        assert_eq!(
            d("1").checked_div(d("3"), 6).unwrap().unwrap().to_string(),
            "0.333333"
        );
        assert_eq!(
            d("2").checked_div(d("3"), 2).unwrap().unwrap().to_string(),
            "0.67"
        );
        assert_eq!(
            d("-2").checked_div(d("3"), 2).unwrap().unwrap().to_string(),
            "-0.67"
        );
        assert!(d("1").checked_div(d("0"), 2).is_none());
        let big = d("99999999999999999999999999999999999999");
        assert_eq!(big.checked_add(d("1")), Err(Overflow));
        assert_eq!(big.checked_mul(big, 0), Err(Overflow));
    }

    #[test]
    fn comparison_ignores_scale() {
        assert_eq!(d("1.50"), d("1.5"));
        assert!(d("1.49") < d("1.5"));
        assert!(d("-1") < d("0.001"));
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        assert_eq!(s.hash_one(d("1.50")), s.hash_one(d("1.5")));
    }

    #[test]
    fn wide_sums_do_not_overflow() {
        let max = i128::MAX;
        let mut sum = I256::ZERO;
        for _ in 0..1000 {
            sum = sum + I256::from(max);
        }
        assert_eq!(sum.to_i128(), None);
        let back = sum.div_round_i128(1000);
        assert_eq!(back.to_i128(), Some(max));
        let neg = I256::from(-5) + I256::from(2);
        assert_eq!(neg.to_i128(), Some(-3));
        assert_eq!(I256::from(-7).div_round_i128(2).to_i128(), Some(-4));
        assert_eq!(I256::from(7).div_round_i128(-2).to_i128(), Some(-4));
        assert_eq!(
            I256::from(12345)
                .mul_pow10(40)
                .div_round_pow10(38)
                .to_i128(),
            Some(1234500)
        );
        assert_eq!(
            I256::from(-3)
                .mul_i128(i128::MAX)
                .div_round_i128(i128::MAX)
                .to_i128(),
            Some(-3)
        );
        assert_eq!(
            sum.to_string(),
            (I256::from(max).mul_i128(1000)).to_string()
        );
        assert_eq!(
            I256::from(-1234567890123456789012345i128).to_string(),
            "-1234567890123456789012345"
        );
    }
}
