//! The online row format (version 1): one compact binary string per entity.
//!
//! ```text
//! u8      format version (1)
//! i64 LE  event time, microseconds since the Unix epoch (UTC)
//! [u8]    NULL bitmap, one bit per value column (bit i of byte i/8; 1 = NULL)
//! ...     the non-NULL values, in declared column order:
//!   BOOLEAN            1 byte (0/1)
//!   INTEGER / DATE     i32 LE (DATE: days since 1970-01-01)
//!   BIGINT             i64 LE
//!   FLOAT / DOUBLE     f32 / f64 LE (bit-exact, NaN and infinities kept)
//!   DECIMAL(p,s)       the unscaled integer: i64 LE when p <= 18, else i128 LE
//!   TIMESTAMP[TZ]      i64 LE microseconds since the epoch, UTC
//!   VARCHAR            LEB128 length, then UTF-8 bytes
//!   T[N]               N packed little-endian elements (the length is the schema's)
//!   T[]                LEB128 element count, then packed little-endian elements
//! ```
//!
//! Join keys live in the Redis key and are not repeated; the timestamp column is
//! the header's event time. The event time sits at a fixed offset so the Redis-side
//! compare of incremental runs can read it without knowing the schema.
//! Array elements are never NULL (the materializer refuses such rows); a whole
//! array may be.

use daeda_catalog::{ColumnType, ElemType, ScalarType, ServiceDef};

pub const FORMAT_VERSION: u8 = 1;
/// Byte offset of the event time in an encoded row.
pub const EVENT_TS_OFFSET: usize = 1;
const HEADER_LEN: usize = 9;

/// The value columns of a service, in encoding order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSchema {
    pub names: Vec<String>,
    pub types: Vec<ColumnType>,
}

impl RowSchema {
    pub fn of(def: &ServiceDef) -> RowSchema {
        let (names, types) = def.value_columns().map(|c| (c.name.clone(), c.ty)).unzip();
        RowSchema { names, types }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    fn bitmap_len(&self) -> usize {
        self.types.len().div_ceil(8)
    }
}

/// A decoded value. Integers keep their width, decimals their exact digits.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    BigInt(i64),
    Float(f32),
    Double(f64),
    Decimal {
        unscaled: i128,
        scale: u8,
    },
    Str(String),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Array(Array),
}

/// Array and list values, as packed as they are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    Int(Vec<i32>),
    BigInt(Vec<i64>),
    Float(Vec<f32>),
    Double(Vec<f64>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::Int(v) => v.len(),
            Array::BigInt(v) => v.len(),
            Array::Float(v) => v.len(),
            Array::Double(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A row read back from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRow {
    pub event_ts_micros: i64,
    /// One per value column of the [`RowSchema`], in its order.
    pub values: Vec<Value>,
}

/// Why bytes could not be decoded as a row of the expected schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The row was written by a format this build does not read.
    #[error("row format version {0} is not supported (expected {FORMAT_VERSION})")]
    Version(u8),
    /// The bytes end before the schema says they should.
    #[error("row is truncated or does not match the schema")]
    Truncated,
    /// Bytes are left over after the last column.
    #[error("row has {0} trailing bytes: it does not match the schema")]
    Trailing(usize),
    /// A VARCHAR value is not UTF-8.
    #[error("row holds a string that is not UTF-8")]
    Utf8,
}

/// Appends one encoded row to a buffer. Call exactly one value method per value
/// column, in schema order; [`RowWriter::finish`] checks the count.
pub struct RowWriter<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    bitmap_at: usize,
    columns: usize,
    next: usize,
}

impl<'a> RowWriter<'a> {
    pub fn begin(buf: &'a mut Vec<u8>, schema: &RowSchema, event_ts_micros: i64) -> RowWriter<'a> {
        let start = buf.len();
        buf.push(FORMAT_VERSION);
        buf.extend_from_slice(&event_ts_micros.to_le_bytes());
        let bitmap_at = buf.len();
        buf.resize(bitmap_at + schema.bitmap_len(), 0);
        RowWriter { buf, start, bitmap_at, columns: schema.len(), next: 0 }
    }

    fn advance(&mut self) {
        debug_assert!(self.next < self.columns, "more values than columns");
        self.next += 1;
    }

    pub fn null(&mut self) {
        let i = self.next;
        self.buf[self.bitmap_at + i / 8] |= 1 << (i % 8);
        self.advance();
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
        self.advance();
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.advance();
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.advance();
    }

    pub fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.advance();
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self.advance();
    }

    /// The unscaled value of a `DECIMAL(precision, _)`.
    pub fn decimal(&mut self, unscaled: i128, precision: u8) {
        if precision <= 18 {
            self.buf.extend_from_slice(&(unscaled as i64).to_le_bytes());
        } else {
            self.buf.extend_from_slice(&unscaled.to_le_bytes());
        }
        self.advance();
    }

    pub fn str(&mut self, v: &str) {
        put_varint(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v.as_bytes());
        self.advance();
    }

    /// Packed little-endian elements; `with_len` for `T[]` lists, not for `T[N]`.
    pub fn elems<T: Elem>(&mut self, values: &[T], with_len: bool) {
        if with_len {
            put_varint(self.buf, values.len() as u64);
        }
        // Little-endian machines store the slice as it is: one memcpy.
        #[cfg(target_endian = "little")]
        self.buf.extend_from_slice(bytemuck::cast_slice(values));
        #[cfg(not(target_endian = "little"))]
        for v in values {
            v.put(self.buf);
        }
        self.advance();
    }

    /// Ends the row; returns its encoded length.
    pub fn finish(self) -> usize {
        assert_eq!(self.next, self.columns, "row encoded {} of {} value columns", self.next, self.columns);
        self.buf.len() - self.start
    }
}

/// A numeric array element.
pub trait Elem: bytemuck::Pod {
    fn put(self, buf: &mut Vec<u8>);
}

macro_rules! elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn put(self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
elem!(i32, i64, f32, f64);

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Encodes decoded values (the inverse of [`decode`]); for tools and tests that
/// rewrite rows. Values must match the schema's types.
pub fn encode(schema: &RowSchema, row: &DecodedRow) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = RowWriter::begin(&mut buf, schema, row.event_ts_micros);
    for (v, ty) in row.values.iter().zip(&schema.types) {
        match v {
            Value::Null => w.null(),
            Value::Bool(b) => w.bool(*b),
            Value::Int(i) | Value::Date(i) => w.i32(*i),
            Value::BigInt(i) | Value::Timestamp(i) => w.i64(*i),
            Value::Float(f) => w.f32(*f),
            Value::Double(f) => w.f64(*f),
            Value::Decimal { unscaled, .. } => {
                let precision = match ty {
                    ColumnType::Scalar(ScalarType::Decimal { precision, .. }) => *precision,
                    _ => 38,
                };
                w.decimal(*unscaled, precision)
            }
            Value::Str(s) => w.str(s),
            Value::Array(a) => {
                let with_len = matches!(ty, ColumnType::List { .. });
                match a {
                    Array::Int(x) => w.elems(x, with_len),
                    Array::BigInt(x) => w.elems(x, with_len),
                    Array::Float(x) => w.elems(x, with_len),
                    Array::Double(x) => w.elems(x, with_len),
                }
            }
        }
    }
    w.finish();
    buf
}

/// Reads the event time of an encoded row without decoding the rest.
pub fn event_ts(row: &[u8]) -> Result<i64, DecodeError> {
    header(row).map(|(ts, _)| ts)
}

fn header(row: &[u8]) -> Result<(i64, &[u8]), DecodeError> {
    let &version = row.first().ok_or(DecodeError::Truncated)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let ts = row.get(EVENT_TS_OFFSET..HEADER_LEN).ok_or(DecodeError::Truncated)?;
    Ok((i64::from_le_bytes(ts.try_into().expect("8 bytes")), &row[HEADER_LEN..]))
}

/// Decodes a whole row.
pub fn decode(row: &[u8], schema: &RowSchema) -> Result<DecodedRow, DecodeError> {
    let (event_ts_micros, rest) = header(row)?;
    let mut r = Reader { bytes: rest, pos: 0 };
    let bitmap = r.take(schema.bitmap_len())?;
    let mut values = Vec::with_capacity(schema.len());
    for (i, ty) in schema.types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            values.push(Value::Null);
            continue;
        }
        values.push(r.value(*ty)?);
    }
    if r.pos != r.bytes.len() {
        return Err(DecodeError::Trailing(r.bytes.len() - r.pos));
    }
    Ok(DecodedRow { event_ts_micros, values })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn value(&mut self, ty: ColumnType) -> Result<Value, DecodeError> {
        Ok(match ty {
            ColumnType::Scalar(s) => match s {
                ScalarType::Boolean => Value::Bool(self.take(1)?[0] != 0),
                ScalarType::Integer => Value::Int(i32::from_le_bytes(self.array()?)),
                ScalarType::BigInt => Value::BigInt(i64::from_le_bytes(self.array()?)),
                ScalarType::Float => Value::Float(f32::from_le_bytes(self.array()?)),
                ScalarType::Double => Value::Double(f64::from_le_bytes(self.array()?)),
                ScalarType::Decimal { precision, scale } => {
                    let unscaled = if precision <= 18 {
                        i128::from(i64::from_le_bytes(self.array()?))
                    } else {
                        i128::from_le_bytes(self.array()?)
                    };
                    Value::Decimal { unscaled, scale }
                }
                ScalarType::Varchar => {
                    let n = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                    let s = std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Utf8)?;
                    Value::Str(s.to_owned())
                }
                ScalarType::Date => Value::Date(i32::from_le_bytes(self.array()?)),
                ScalarType::Timestamp | ScalarType::TimestampTz => Value::Timestamp(i64::from_le_bytes(self.array()?)),
            },
            ColumnType::FixedArray { elem, len } => Value::Array(self.elems(elem, len as usize)?),
            ColumnType::List { elem } => {
                let n = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                Value::Array(self.elems(elem, n)?)
            }
        })
    }

    fn elems(&mut self, elem: ElemType, n: usize) -> Result<Array, DecodeError> {
        let bytes = self.take(n.checked_mul(elem.width()).ok_or(DecodeError::Truncated)?)?;
        Ok(match elem {
            ElemType::Integer => Array::Int(unpack(bytes, i32::from_le_bytes)),
            ElemType::BigInt => Array::BigInt(unpack(bytes, i64::from_le_bytes)),
            ElemType::Float => Array::Float(unpack(bytes, f32::from_le_bytes)),
            ElemType::Double => Array::Double(unpack(bytes, f64::from_le_bytes)),
        })
    }
}

/// Packed little-endian elements to a Vec (bytes may be unaligned).
fn unpack<T: Elem, const N: usize>(bytes: &[u8], from_le: fn([u8; N]) -> T) -> Vec<T> {
    if cfg!(target_endian = "little") {
        bytemuck::pod_collect_to_vec(bytes)
    } else {
        bytes.chunks_exact(N).map(|c| from_le(c.try_into().expect("N bytes"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(types: &[&str]) -> RowSchema {
        RowSchema {
            names: (0..types.len()).map(|i| format!("c{i}")).collect(),
            types: types.iter().map(|t| ColumnType::parse(t, None).unwrap()).collect(),
        }
    }

    #[test]
    fn every_type_round_trips_exactly() {
        let s = schema(&[
            "BOOLEAN",
            "INTEGER",
            "BIGINT",
            "FLOAT",
            "DOUBLE",
            "DECIMAL(10,2)",
            "DECIMAL(38,10)",
            "VARCHAR",
            "DATE",
            "TIMESTAMPTZ",
            "FLOAT[3]",
            "BIGINT[]",
            "DOUBLE",
            "VARCHAR",
        ]);
        let mut buf = vec![0xAA]; // rows append; earlier bytes are untouched
        let mut w = RowWriter::begin(&mut buf, &s, -1_234_567);
        w.bool(true);
        w.i32(-7);
        w.i64(i64::MAX);
        w.f32(f32::NAN);
        w.f64(-0.0);
        w.decimal(-12_345, 10);
        w.decimal(i128::MAX / 3, 38);
        w.str("héllo");
        w.i32(19_000);
        w.i64(1_700_000_000_123_456);
        w.elems(&[1.5f32, -2.0, 3.25], false);
        w.elems(&[1i64, 2, 3, 4], true);
        w.null();
        w.str("");
        let n = w.finish();
        assert_eq!(buf[0], 0xAA);
        assert_eq!(n, buf.len() - 1);
        let row = decode(&buf[1..], &s).unwrap();
        assert_eq!(row.event_ts_micros, -1_234_567);
        assert_eq!(event_ts(&buf[1..]).unwrap(), -1_234_567);
        let v = &row.values;
        assert_eq!(v.len(), s.len(), "one value per column");
        assert_eq!(v[0], Value::Bool(true));
        assert_eq!(v[1], Value::Int(-7));
        assert_eq!(v[2], Value::BigInt(i64::MAX));
        assert!(matches!(v[3], Value::Float(f) if f.is_nan()));
        assert!(matches!(v[4], Value::Double(f) if f == 0.0 && f.is_sign_negative()));
        assert_eq!(v[5], Value::Decimal { unscaled: -12_345, scale: 2 });
        assert_eq!(v[6], Value::Decimal { unscaled: i128::MAX / 3, scale: 10 });
        assert_eq!(v[7], Value::Str("héllo".into()));
        assert_eq!(v[8], Value::Date(19_000));
        assert_eq!(v[9], Value::Timestamp(1_700_000_000_123_456));
        assert_eq!(v[10], Value::Array(Array::Float(vec![1.5, -2.0, 3.25])));
        assert_eq!(v[11], Value::Array(Array::BigInt(vec![1, 2, 3, 4])));
        assert_eq!(v[12], Value::Null);
        assert_eq!(v[13], Value::Str(String::new()));
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let s = schema(&["DECIMAL(10,2)", "VARCHAR", "DOUBLE[]", "FLOAT[2]", "DATE", "TIMESTAMP"]);
        let row = DecodedRow {
            event_ts_micros: 42,
            values: vec![
                Value::Decimal { unscaled: -123, scale: 2 },
                Value::Null,
                Value::Array(Array::Double(vec![1.0, 2.0, 3.0])),
                Value::Array(Array::Float(vec![0.5, 0.25])),
                Value::Date(-1),
                Value::Timestamp(7),
            ],
        };
        assert_eq!(decode(&encode(&s, &row), &s).unwrap(), row);
    }

    #[test]
    fn fixed_arrays_are_packed_without_a_length() {
        let s = schema(&["FLOAT[64]"]);
        let mut buf = Vec::new();
        let mut w = RowWriter::begin(&mut buf, &s, 0);
        w.elems(&[0.5f32; 64], false);
        assert_eq!(w.finish(), 1 + 8 + 1 + 64 * 4);
    }

    #[test]
    fn a_row_of_another_schema_is_an_error_not_garbage() {
        let s = schema(&["BIGINT", "VARCHAR"]);
        let mut buf = Vec::new();
        let mut w = RowWriter::begin(&mut buf, &s, 0);
        w.i64(1);
        w.str("abc");
        w.finish();
        assert_eq!(decode(&buf, &schema(&["BIGINT", "VARCHAR", "DOUBLE"])), Err(DecodeError::Truncated));
        assert_eq!(decode(&buf, &schema(&["BIGINT"])), Err(DecodeError::Trailing(4)));
        assert_eq!(decode(&buf[..5], &s), Err(DecodeError::Truncated));
        let mut v2 = buf.clone();
        v2[0] = 2;
        assert_eq!(decode(&v2, &s), Err(DecodeError::Version(2)));
        assert_eq!(decode(&[], &s), Err(DecodeError::Truncated));
    }
}
