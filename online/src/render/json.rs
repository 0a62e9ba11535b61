//! The JSON body of a lookup (SPEC §5), written straight into bytes (no value
//! tree: this is the gateway's hot path), and the JSON form of one value, which
//! the skew checker's report uses too. `daeda online get` and the gateway call
//! the same [`body`], so they answer the same bytes.

use daeda_catalog::{ColumnType, ScalarType, ServiceDef};
use serde_json::Value as Json;

use super::text::{write_date, write_decimal, write_timestamp};
use crate::codec::{Array, Value};
use crate::lookup::{EntityStatus, Fetched, LookupRequest};
use crate::GenerationMeta;

/// The JSON body of a fetched batch, in one buffer sized up front (from the
/// wanted columns' types) so a large batch is not copied as it grows.
pub fn body(def: &ServiceDef, meta: &GenerationMeta, req: &LookupRequest, f: &Fetched) -> Vec<u8> {
    let per_row: usize = 48 + f.wanted.iter().map(|&i| json_width(f.schema.types[i])).sum::<usize>();
    let mut out = Vec::with_capacity(256 + f.rows.len() * per_row);
    write_json(def, meta, req, f, &mut out);
    out
}

/// Writes the JSON body of SPEC §5 straight into `out` (no intermediate value
/// tree: this is the gateway's hot path): join keys echoed, the wanted
/// features, `status`, `event_ts`.
pub fn write_json(def: &ServiceDef, meta: &GenerationMeta, req: &LookupRequest, f: &Fetched, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"service\":");
    write_str(out, &def.name);
    out.extend_from_slice(b",\"version\":");
    write_str(out, &meta.version);
    out.extend_from_slice(b",\"generation\":");
    write_str(out, &meta.generation);
    out.extend_from_slice(b",\"columns\":{");
    for (i, k) in def.join_keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        let echoed = req.entities.get(k).unwrap_or(&Json::Null);
        serde_json::to_writer(&mut *out, echoed).expect("writing JSON to a Vec");
    }
    for &idx in &f.wanted {
        out.push(b',');
        write_str(out, &f.schema.names[idx]);
        out.extend_from_slice(b":[");
        for (i, (row, status)) in f.rows.iter().zip(&f.status).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let hide = *status == EntityStatus::Stale && !req.include_stale;
            match row {
                Some(r) if !hide => write_value(out, &r.values[idx]),
                _ => out.extend_from_slice(b"null"),
            }
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"status\":[");
    for (i, s) in f.status.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(s.as_str().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"event_ts\":[");
    for (i, row) in f.rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match row {
            Some(r) => write_timestamp(out, r.event_ts_micros),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"]}");
}

/// About how many bytes a value of `ty` takes in the JSON body (a sizing
/// guess, not a bound).
fn json_width(ty: ColumnType) -> usize {
    match ty {
        ColumnType::Scalar(
            ScalarType::Float | ScalarType::Double | ScalarType::Varchar | ScalarType::Decimal { .. },
        ) => 16,
        ColumnType::Scalar(ScalarType::Date | ScalarType::Timestamp | ScalarType::TimestampTz) => 30,
        ColumnType::Scalar(_) => 8,
        ColumnType::FixedArray { elem, len } => 2 + len as usize * if elem.width() == 8 { 20 } else { 11 },
        ColumnType::List { .. } => 64,
    }
}

pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec");
}

/// The shortest round-trip form of a finite float, as ryu prints it (the
/// bytes daeda has always answered): zmij is 2-3x faster than ryu and differs
/// only in writing a positive exponent as `e+N`, so the `+` is dropped. Only
/// a value of magnitude 1 or more has one, and only in its last 5 bytes
/// (`e+308`): embeddings and ratios are copied without a look (scanning every
/// float's text was a quarter of rendering an embedding).
fn write_float(out: &mut Vec<u8>, text: &str, below_one: bool) {
    let b = text.as_bytes();
    let tail = b.len().saturating_sub(5);
    let plus = if below_one { None } else { b[tail..].iter().position(|&c| c == b'+') };
    match plus {
        None => out.extend_from_slice(b),
        Some(p) => {
            let p = tail + p;
            out.extend_from_slice(&b[..p]);
            out.extend_from_slice(&b[p + 1..]);
        }
    }
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        write_float(out, zmij::Buffer::new().format_finite(v), v.abs() < 1.0);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// FLOAT values print in their shortest float32 form ("0.502", not
/// "0.5019999742507935"): parsed back as float32 they are the stored value.
fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        write_float(out, zmij::Buffer::new().format_finite(v), v.abs() < 1.0);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn write_list<T: Copy>(out: &mut Vec<u8>, xs: &[T], mut each: impl FnMut(&mut Vec<u8>, T)) {
    out.push(b'[');
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, *x);
    }
    out.push(b']');
}

/// The JSON form of a value (SPEC §5): non-finite floats are null, decimals are
/// exact strings, dates `YYYY-MM-DD`, timestamps RFC 3339 with microseconds.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => write_int(out, *i),
        Value::BigInt(i) => write_int(out, *i),
        Value::Float(f) => write_f32(out, *f),
        Value::Double(f) => write_f64(out, *f),
        Value::Decimal { unscaled, scale } => write_decimal(out, *unscaled, *scale),
        Value::Str(s) => write_str(out, s),
        Value::Date(d) => write_date(out, *d),
        Value::Timestamp(us) => write_timestamp(out, *us),
        Value::Array(a) => match a {
            Array::Int(xs) => write_list(out, xs, write_int),
            Array::BigInt(xs) => write_list(out, xs, write_int),
            Array::Float(xs) => write_list(out, xs, write_f32),
            Array::Double(xs) => write_list(out, xs, write_f64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, &v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_print_as_ryu_prints_them() {
        let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
        let check32 = |v: f32| {
            let mut out = Vec::new();
            write_f32(&mut out, v);
            if v.is_finite() {
                assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
            }
        };
        for v in [0.0, -0.0, 1.0, 0.502, 1e-7, 1e7, 1e16, 1e17, 3.4e38, f32::MIN_POSITIVE, 1e-45, 123456790.0] {
            check32(v);
        }
        for _ in 0..200_000 {
            let x = rng.u64(..);
            check32(f32::from_bits(x as u32));
            let v = f64::from_bits(x);
            let mut out = Vec::new();
            write_f64(&mut out, v);
            if v.is_finite() {
                assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
            }
        }
        for v in [0.0, 1.0, 0.1, 1e15, 1e16, 1e17, 1e21, 1e22, 1e300, 5e-324, -2.5e-8, 1.7976931348623157e308] {
            let mut out = Vec::new();
            write_f64(&mut out, v);
            assert_eq!(std::str::from_utf8(&out).unwrap(), ryu::Buffer::new().format_finite(v), "{v:e}");
        }
    }

    #[test]
    fn json_forms() {
        assert_eq!(json(Value::Float(f32::NAN)), "null");
        assert_eq!(json(Value::Double(f64::INFINITY)), "null");
        assert_eq!(json(Value::Float(0.502)), "0.502");
        assert_eq!(json(Value::Double(0.1)), "0.1");
        assert_eq!(json(Value::BigInt(i64::MAX)), "9223372036854775807");
        assert_eq!(json(Value::Date(0)), r#""1970-01-01""#);
        assert_eq!(json(Value::Timestamp(1_782_548_100_000_000)), r#""2026-06-27T08:15:00.000000Z""#);
        assert_eq!(json(Value::Str("a\"b".into())), r#""a\"b""#);
        assert_eq!(json(Value::Decimal { unscaled: -5, scale: 3 }), r#""-0.005""#);
        assert_eq!(json(Value::Array(Array::Float(vec![1.5, f32::NAN]))), "[1.5,null]");
        assert_eq!(json(Value::Bool(true)), "true");
    }
}
