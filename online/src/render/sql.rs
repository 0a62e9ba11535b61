//! The JSON form of a SQL result (`POST /v1/sql` without `Accept: Arrow`):
//! the worker's Arrow IPC stream decoded and written column by column, with
//! the same date, timestamp and decimal text as a lookup ([`super::text`]).

use std::fmt::Write as _;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType, SchemaRef, TimeUnit};

/// A result decoded from the worker's Arrow IPC stream.
pub struct SqlOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than the limit.
    pub truncated: bool,
}

impl SqlOutput {
    pub fn from_ipc(ipc: &[u8], truncated: bool) -> Result<SqlOutput, ArrowError> {
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(SqlOutput { schema, batches, truncated })
    }
}

/// Why a result did not render as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// JSON is several times larger than Arrow for some types (a BOOLEAN is
    /// one bit in Arrow, five bytes in JSON), so the cap is counted here too.
    #[error("the result is over {0} bytes as JSON; select fewer columns or rows, aggregate, or ask for Arrow")]
    TooLarge(usize),
    #[error("{0}")]
    Render(String),
}

/// `{"columns": {name: [...]}, "row_count": N, "truncated": bool}`, at most
/// `max_bytes` long. CPU-heavy for big results: call it off the async threads.
pub fn to_json(out: &SqlOutput, max_bytes: usize) -> Result<Vec<u8>, JsonError> {
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
                value(&mut body, col, row).map_err(JsonError::Render)?;
                if body.len() > max_bytes {
                    return Err(JsonError::TooLarge(max_bytes));
                }
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
        DataType::Int8 => {
            let _ = write!(body, "{}", col.as_primitive::<Int8Type>().value(row));
        }
        DataType::Int16 => {
            let _ = write!(body, "{}", col.as_primitive::<Int16Type>().value(row));
        }
        DataType::Int32 => {
            let _ = write!(body, "{}", col.as_primitive::<Int32Type>().value(row));
        }
        DataType::Int64 => {
            let _ = write!(body, "{}", col.as_primitive::<Int64Type>().value(row));
        }
        DataType::UInt8 => {
            let _ = write!(body, "{}", col.as_primitive::<UInt8Type>().value(row));
        }
        DataType::UInt16 => {
            let _ = write!(body, "{}", col.as_primitive::<UInt16Type>().value(row));
        }
        DataType::UInt32 => {
            let _ = write!(body, "{}", col.as_primitive::<UInt32Type>().value(row));
        }
        DataType::UInt64 => {
            let _ = write!(body, "{}", col.as_primitive::<UInt64Type>().value(row));
        }
        DataType::Float32 => {
            let v = col.as_primitive::<Float32Type>().value(row);
            float(body, v, v.is_finite())
        }
        DataType::Float64 => {
            let v = col.as_primitive::<Float64Type>().value(row);
            float(body, v, v.is_finite())
        }
        DataType::Utf8 => body.push_str(&serde_json::to_string(col.as_string::<i32>().value(row)).expect("string")),
        DataType::LargeUtf8 => {
            body.push_str(&serde_json::to_string(col.as_string::<i64>().value(row)).expect("string"))
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => col.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1_000_000),
                TimeUnit::Millisecond => col.as_primitive::<TimestampMillisecondType>().value(row).saturating_mul(1000),
                TimeUnit::Microsecond => col.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => col.as_primitive::<TimestampNanosecondType>().value(row) / 1000,
            };
            match super::text::timestamp_text(v) {
                Some(t) => body.push_str(&serde_json::to_string(&t).expect("string")),
                None => body.push_str("null"),
            }
        }
        DataType::Date32 => match super::text::date_text(col.as_primitive::<Date32Type>().value(row)) {
            Some(t) => body.push_str(&serde_json::to_string(&t).expect("string")),
            None => body.push_str("null"),
        },
        DataType::Decimal128(_, scale) => {
            let text =
                super::text::decimal_text(col.as_primitive::<Decimal128Type>().value(row), (*scale).max(0) as u8);
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
