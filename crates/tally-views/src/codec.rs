//! The byte encodings that leave the engine: group keys and aggregate states.
//!
//! Both are stored in view tables (the `_key` and `_state` columns) and must decode the same way
//! in every later version, so the format is written out here by hand rather than derived: a
//! leading version byte, then LEB128 varints, zigzag for signed integers and little-endian IEEE
//! bits for doubles. The group key encoding is the primary key of view tables, so equal keys
//! must give equal bytes: `-0.0` is written as `0.0`, and a decimal keeps its scale, which is
//! the same for every value of a column (values always carry their type's scale).

use std::sync::Arc;

use crate::decimal::Decimal;
use crate::value::{SmolStr, Timestamp, Value};

/// A stored state, key or cell that cannot be decoded: the store is damaged or was written by
/// a newer version. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode stored state: truncated")]
    Truncated,
    #[error("cannot decode stored state: varint too long")]
    VarintTooLong,
    /// A length that does not fit in memory.
    #[error("cannot decode stored state: length")]
    Length,
    #[error("cannot decode stored state: length beyond the end")]
    LengthBeyondEnd,
    #[error("cannot decode stored state: invalid utf-8")]
    InvalidUtf8,
    #[error("cannot decode stored state: decimal scale")]
    DecimalScale,
    /// A tag byte (of a value, an option, a boolean state) that no version wrote.
    #[error("cannot decode stored state: unknown {what} {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    /// Bytes left over after the whole key or state was read.
    #[error("cannot decode stored state: trailing bytes after {0}")]
    TrailingBytes(&'static str),
    /// The state format byte is not the one this version writes.
    #[error("cannot decode stored state: state format {found} is not {expected}")]
    Format { found: u8, expected: u8 },
    /// A sketch whose parts contradict each other.
    #[error("cannot decode stored state: {0}")]
    Sketch(&'static str),
    /// A HyperLogLog state the sketch library refuses.
    #[error("cannot decode stored state: hll: {0}")]
    Hll(String),
    /// A view table cell that is not of its column's type.
    #[error("cannot decode stored state: {0}")]
    Cell(String),
}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { buf: Vec::new() }
    }

    /// A writer with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(bytes),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// What has been written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Forgets what was written, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn i128(&mut self, v: i128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// Appends bytes already encoded (values copied from a stored encoding), with no length.
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A value with a type tag, in canonical form.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Bool(b) => {
                self.u8(1);
                self.u8(u8::from(*b));
            }
            Value::Int(i) => {
                self.u8(2);
                self.zigzag(*i);
            }
            Value::Double(d) => {
                self.u8(3);
                self.f64(if *d == 0.0 { 0.0 } else { *d });
            }
            Value::Decimal(d) => {
                self.u8(4);
                self.u8(d.scale());
                self.i128(d.mantissa());
            }
            Value::Timestamp(t) => {
                self.u8(5);
                self.zigzag(t.0);
            }
            Value::Text(s) => {
                self.u8(6);
                self.bytes(s.as_bytes());
            }
            Value::Json(s) => {
                self.u8(7);
                self.bytes(s.as_bytes());
            }
        }
    }
}

/// Reads values written by [`Writer`].
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The bytes from position `from` to where reading is: what was read since then.
    pub fn read_since(&self, from: usize) -> &'a [u8] {
        &self.buf[from.min(self.pos)..self.pos]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(CodecError::Truncated)?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(CodecError::VarintTooLong)
    }

    pub fn zigzag(&mut self) -> Result<i64, CodecError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn i128(&mut self) -> Result<i128, CodecError> {
        let b = self.take(16)?;
        Ok(i128::from_le_bytes(b.try_into().unwrap_or([0; 16])))
    }

    pub fn f64(&mut self) -> Result<f64, CodecError> {
        let b = self.take(8)?;
        Ok(f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError::Length)?;
        self.take(n)
    }

    pub fn len(&mut self) -> Result<usize, CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError::Length)?;
        // A length can never exceed the remaining bytes: each element takes at least one.
        if n > self.buf.len() - self.pos.min(self.buf.len()) {
            return Err(CodecError::LengthBeyondEnd);
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, CodecError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| CodecError::InvalidUtf8)
    }

    /// The next value: a text borrowed from the buffer (checked as UTF-8, as [`Reader::value`]
    /// checks it), any other value decoded.
    pub fn value_ref(&mut self) -> Result<ValueRef<'a>, CodecError> {
        if self.buf.get(self.pos) == Some(&6) {
            self.pos += 1;
            let b = self.bytes()?;
            return Ok(ValueRef::Text(
                std::str::from_utf8(b).map_err(|_| CodecError::InvalidUtf8)?,
            ));
        }
        Ok(ValueRef::Other(self.value()?))
    }

    pub fn value(&mut self) -> Result<Value, CodecError> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Bool(self.u8()? != 0),
            2 => Value::Int(self.zigzag()?),
            3 => Value::Double(self.f64()?),
            4 => {
                let s = self.u8()?;
                if s > crate::decimal::MAX_PRECISION {
                    return Err(CodecError::DecimalScale);
                }
                Value::Decimal(Decimal::new(self.i128()?, s))
            }
            5 => Value::Timestamp(Timestamp(self.zigzag()?)),
            6 => Value::Text(SmolStr::new(self.str()?)),
            7 => Value::Json(Arc::from(self.str()?)),
            tag => {
                return Err(CodecError::UnknownTag {
                    what: "value tag",
                    tag,
                });
            }
        })
    }
}

/// A value read by [`Reader::value_ref`]: a text without a copy, or the decoded value.
#[derive(Debug)]
pub enum ValueRef<'a> {
    Text(&'a str),
    Other(Value),
}

impl ValueRef<'_> {
    /// Compares as [`Value`]'s order compares the value with `other`.
    pub fn cmp_value(&self, other: &Value) -> std::cmp::Ordering {
        match (self, other) {
            (ValueRef::Text(a), Value::Text(b)) => (*a).cmp(&**b),
            (ValueRef::Text(a), b) => Value::text(a).cmp(b),
            (ValueRef::Other(a), b) => a.cmp(b),
        }
    }

    /// Compares as [`Value`]'s order compares the two values.
    pub fn cmp_ref(&self, other: &ValueRef<'_>) -> std::cmp::Ordering {
        match (self, other) {
            (ValueRef::Text(a), ValueRef::Text(b)) => a.cmp(b),
            (a, ValueRef::Other(b)) => a.cmp_value(b),
            (ValueRef::Other(a), b) => b.cmp_value(a).reverse(),
        }
    }
}

/// The canonical bytes of a group key, stored in the `_key` column of view tables.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    let mut w = Writer::new();
    for v in values {
        w.value(v);
    }
    w.finish()
}

/// Decodes [`encode_key`] output of `n` values.
pub fn decode_key(bytes: &[u8], n: usize) -> Result<Vec<Value>, CodecError> {
    let mut r = Reader::new(bytes);
    let values = (0..n).map(|_| r.value()).collect::<Result<Vec<_>, _>>()?;
    if !r.is_empty() {
        return Err(CodecError::TrailingBytes("key"));
    }
    Ok(values)
}

/// Decodes [`encode_key`] output of any number of values (a table row, which may have been
/// written before its table gained columns).
pub fn decode_values(bytes: &[u8]) -> Result<Vec<Value>, CodecError> {
    let mut r = Reader::new(bytes);
    let mut values = Vec::new();
    while !r.is_empty() {
        values.push(r.value()?);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-42),
            Value::Double(-0.0),
            Value::Decimal(Decimal::parse("12.500").unwrap()),
            Value::Timestamp(Timestamp(1_700_000_000_000_000)),
            Value::text("vault-1"),
            Value::Json(Arc::from("{\"a\":1}")),
        ];
        let bytes = encode_key(&key);
        assert_eq!(decode_key(&bytes, key.len()).unwrap(), key);
        // Decimals keep their scale, so they print as they came in.
        let back = decode_key(
            &encode_key(&[Value::Decimal(Decimal::parse("12.50").unwrap())]),
            1,
        )
        .unwrap();
        assert_eq!(back[0].to_string(), "12.50");
        assert_eq!(
            encode_key(&[Value::Double(0.0)]),
            encode_key(&[Value::Double(-0.0)])
        );
        assert!(decode_key(&bytes[..bytes.len() - 1], key.len()).is_err());
        assert!(decode_key(&[99], 1).is_err());
    }
}
