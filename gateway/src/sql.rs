//! `POST /v1/sql`: the policy decides, an [`SqlEngine`] runs what it approved.
//! The engine is a trait so this crate stays free of DuckDB; the binary plugs
//! in `daeda-sql-plane`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, SchemaRef, TimeUnit};

/// What an engine returns: the batches up to the row limit.
pub struct SqlOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than the limit.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query passed the policy but the engine rejected it (400).
    #[error("{0}")]
    Query(String),
    #[error("{0}")]
    Internal(String),
}

type InterruptFn = Box<dyn Fn() + Send + Sync>;

/// Lets the gateway interrupt a query that ran past its deadline.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<Mutex<Option<InterruptFn>>>);

impl Interrupt {
    pub fn set(&self, f: InterruptFn) {
        *self.0.lock().expect("interrupt lock") = Some(f);
    }

    pub fn fire(&self) {
        if let Some(f) = self.0.lock().expect("interrupt lock").as_ref() {
            f();
        }
    }
}

/// Runs approved SQL (blocking; the gateway calls it off the async threads).
pub trait SqlEngine: Send + Sync + 'static {
    fn run(&self, sql: &str, max_rows: usize, interrupt: &Interrupt) -> Result<SqlOutput, SqlError>;
}

/// `{"columns": {name: [...]}, "row_count": N, "truncated": bool}`.
pub fn to_json(out: &SqlOutput) -> Result<Vec<u8>, String> {
    let mut body = String::from("{\"columns\":{");
    let rows: usize = out.batches.iter().map(|b| b.num_rows()).sum();
    for (i, field) in out.schema.fields().iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::to_string(field.name()).expect("string"));
        body.push_str(":[");
        let mut first = true;
        for batch in &out.batches {
            let col = batch.column(i);
            for row in 0..col.len() {
                if !first {
                    body.push(',');
                }
                first = false;
                value(&mut body, col, row)?;
            }
        }
        body.push(']');
    }
    let _ = write!(body, "}},\"row_count\":{rows},\"truncated\":{}}}", out.truncated);
    Ok(body.into_bytes())
}

/// Shortest round-trip form of the value's own width (FLOAT as float32).
fn float<F: ryu::Float + Copy>(body: &mut String, v: F, finite: bool) {
    if finite {
        body.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        body.push_str("null");
    }
}

/// One cell as JSON (SPEC §5's forms: decimals as exact strings, timestamps
/// RFC 3339 UTC with microseconds, non-finite floats null).
fn value(body: &mut String, col: &ArrayRef, row: usize) -> Result<(), String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    if col.is_null(row) {
        body.push_str("null");
        return Ok(());
    }
    match col.data_type() {
        DataType::Boolean => body.push_str(if col.as_boolean().value(row) { "true" } else { "false" }),
        DataType::Int8 => { let _ = write!(body, "{}", col.as_primitive::<Int8Type>().value(row)); }
        DataType::Int16 => { let _ = write!(body, "{}", col.as_primitive::<Int16Type>().value(row)); }
        DataType::Int32 => { let _ = write!(body, "{}", col.as_primitive::<Int32Type>().value(row)); }
        DataType::Int64 => { let _ = write!(body, "{}", col.as_primitive::<Int64Type>().value(row)); }
        DataType::UInt8 => { let _ = write!(body, "{}", col.as_primitive::<UInt8Type>().value(row)); }
        DataType::UInt16 => { let _ = write!(body, "{}", col.as_primitive::<UInt16Type>().value(row)); }
        DataType::UInt32 => { let _ = write!(body, "{}", col.as_primitive::<UInt32Type>().value(row)); }
        DataType::UInt64 => { let _ = write!(body, "{}", col.as_primitive::<UInt64Type>().value(row)); }
        DataType::Float32 => {
            let v = col.as_primitive::<Float32Type>().value(row);
            float(body, v, v.is_finite())
        }
        DataType::Float64 => {
            let v = col.as_primitive::<Float64Type>().value(row);
            float(body, v, v.is_finite())
        }
        DataType::Utf8 => body.push_str(&serde_json::to_string(col.as_string::<i32>().value(row)).expect("string")),
        DataType::LargeUtf8 => body.push_str(&serde_json::to_string(col.as_string::<i64>().value(row)).expect("string")),
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1_000_000),
                TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(row).saturating_mul(1000),
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(row) / 1000,
            };
            match daeda_online::lookup::timestamp_text(v) {
                Some(t) => body.push_str(&serde_json::to_string(&t).expect("string")),
                None => body.push_str("null"),
            }
        }
        DataType::Date32 => match daeda_online::lookup::date_text(col.as_primitive::<Date32Type>().value(row)) {
            Some(t) => body.push_str(&serde_json::to_string(&t).expect("string")),
            None => body.push_str("null"),
        },
        DataType::Decimal128(_, scale) => {
            let text = daeda_online::lookup::decimal_text(col.as_primitive::<Decimal128Type>().value(row), (*scale).max(0) as u8);
            body.push_str(&serde_json::to_string(&text).expect("string"));
        }
        DataType::List(_) => list(body, &col.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(body, &col.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(..) => list(body, &col.as_fixed_size_list().value(row))?,
        _ => {
            // Anything else (intervals, structs, maps, blobs) as its display text.
            let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).map_err(|e| e.to_string())?;
            body.push_str(&serde_json::to_string(&f.value(row).to_string()).expect("string"));
        }
    }
    Ok(())
}

fn list(body: &mut String, values: &ArrayRef) -> Result<(), String> {
    body.push('[');
    for i in 0..values.len() {
        if i > 0 {
            body.push(',');
        }
        value(body, values, i)?;
    }
    body.push(']');
    Ok(())
}

/// The result as one Arrow IPC stream.
pub fn to_arrow(out: &SqlOutput) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &out.schema).map_err(|e| e.to_string())?;
    for b in &out.batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(buf)
}
