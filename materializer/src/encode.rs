//! Arrow record batches (from DuckDB) to online rows: the Redis key and the
//! encoded value of each entity. This is the only place that reads Arrow, and it
//! refuses what the row format cannot hold faithfully (a NULL in a non-nullable
//! column, a NULL array element) instead of writing something else.

use daeda_catalog::{ColumnType, ElemType, ScalarType, ServiceDef};
use daeda_online::codec::{Elem, RowSchema, RowWriter};
use daeda_online::keys::{self, KeyPart};
use daeda_online::RowBatch;
use duckdb::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, FixedSizeListArray, ListArray, PrimitiveArray,
};
use duckdb::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use duckdb::arrow::record_batch::RecordBatch;

use crate::MaterializeError;

/// Rows ready for Redis plus what the run counts.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    pub rows: RowBatch,
    /// Sum of encoded value sizes.
    pub bytes: u64,
    /// Greatest event time in the batch (microseconds).
    pub max_event_ts: Option<i64>,
}

/// Encodes the rows of one service into one generation.
pub struct Encoder<'a> {
    def: &'a ServiceDef,
    schema: RowSchema,
    key_prefix: String,
}

enum KeyCol<'a> {
    Int(&'a PrimitiveArray<Int32Type>),
    BigInt(&'a PrimitiveArray<Int64Type>),
    Str(&'a duckdb::arrow::array::StringArray),
}

enum ValCol<'a> {
    Bool(&'a BooleanArray),
    Int(&'a PrimitiveArray<Int32Type>),
    BigInt(&'a PrimitiveArray<Int64Type>),
    Float(&'a PrimitiveArray<Float32Type>),
    Double(&'a PrimitiveArray<Float64Type>),
    Decimal(&'a Decimal128Array, u8),
    Str(&'a duckdb::arrow::array::StringArray),
    Date(&'a PrimitiveArray<Date32Type>),
    Ts(&'a PrimitiveArray<TimestampMicrosecondType>),
    Fixed(&'a FixedSizeListArray, ElemType),
    List(&'a ListArray, ElemType),
}

impl<'a> Encoder<'a> {
    /// `key_prefix`: the store's `keys().row_prefix(service, generation)`.
    pub fn new(def: &'a ServiceDef, key_prefix: String) -> Encoder<'a> {
        Encoder { def, schema: RowSchema::of(def), key_prefix }
    }

    pub fn encode(&self, batch: &RecordBatch) -> Result<EncodedBatch, MaterializeError> {
        let def = self.def;
        let column = |name: &str| -> Result<&ArrayRef, MaterializeError> {
            batch.column_by_name(name).ok_or_else(|| self.unexpected(name, "column missing from the query result"))
        };
        let key_cols = def.join_keys.iter().map(|k| self.key_col(k, column(k)?)).collect::<Result<Vec<_>, _>>()?;
        let ts_arr = column(&def.timestamp)?;
        let ts = ts_arr
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| self.unexpected(&def.timestamp, ts_arr.data_type()))?;
        let val_cols = def
            .value_columns()
            .map(|c| self.val_col(&c.name, c.ty, column(&c.name)?))
            .collect::<Result<Vec<_>, _>>()?;
        let nullable: Vec<bool> = def.value_columns().map(|c| c.nullable).collect();
        let names: Vec<&str> = def.value_columns().map(|c| c.name.as_str()).collect();

        let n = batch.num_rows();
        let mut out = EncodedBatch { rows: RowBatch::with_capacity(n, n * 64), ..Default::default() };
        let mut parts: Vec<KeyPart<'_>> = Vec::with_capacity(key_cols.len());
        let mut key = String::with_capacity(self.key_prefix.len() + 32);
        for row in 0..n {
            parts.clear();
            for kc in &key_cols {
                parts.push(match kc {
                    KeyCol::Int(a) => KeyPart::Int(i64::from(a.value(row))),
                    KeyCol::BigInt(a) => KeyPart::Int(a.value(row)),
                    KeyCol::Str(a) => KeyPart::Str(a.value(row)),
                });
            }
            key.clear();
            key.push_str(&self.key_prefix);
            keys::push_entity(&mut key, &parts);

            let event_ts = ts.value(row);
            let mut w = RowWriter::begin(out.rows.start(key.as_bytes()), &self.schema, event_ts);
            for (i, col) in val_cols.iter().enumerate() {
                if is_null(col, row) {
                    if !nullable[i] {
                        return Err(MaterializeError::NullValue {
                            service: def.name.clone(),
                            column: names[i].to_string(),
                            entity: entity_text(&parts),
                        });
                    }
                    w.null();
                    continue;
                }
                self.put(&mut w, col, row).map_err(|what| MaterializeError::BadValue {
                    service: def.name.clone(),
                    column: names[i].to_string(),
                    entity: entity_text(&parts),
                    reason: what,
                })?;
            }
            out.bytes += w.finish() as u64;
            out.rows.seal();
            out.max_event_ts = Some(out.max_event_ts.map_or(event_ts, |m| m.max(event_ts)));
        }
        Ok(out)
    }

    fn unexpected(&self, column: &str, found: impl std::fmt::Display) -> MaterializeError {
        MaterializeError::UnexpectedColumn {
            service: self.def.name.clone(),
            column: column.to_string(),
            found: found.to_string(),
        }
    }

    fn key_col<'b>(&self, name: &str, a: &'b ArrayRef) -> Result<KeyCol<'b>, MaterializeError> {
        Ok(match a.data_type() {
            DataType::Int32 => KeyCol::Int(a.as_primitive()),
            DataType::Int64 => KeyCol::BigInt(a.as_primitive()),
            DataType::Utf8 => KeyCol::Str(a.as_string()),
            other => return Err(self.unexpected(name, other)),
        })
    }

    fn val_col<'b>(&self, name: &str, ty: ColumnType, a: &'b ArrayRef) -> Result<ValCol<'b>, MaterializeError> {
        let col = match (ty, a.data_type()) {
            (ColumnType::Scalar(s), dt) => match (s, dt) {
                (ScalarType::Boolean, DataType::Boolean) => ValCol::Bool(a.as_boolean()),
                (ScalarType::Integer, DataType::Int32) => ValCol::Int(a.as_primitive()),
                (ScalarType::BigInt, DataType::Int64) => ValCol::BigInt(a.as_primitive()),
                (ScalarType::Float, DataType::Float32) => ValCol::Float(a.as_primitive()),
                (ScalarType::Double, DataType::Float64) => ValCol::Double(a.as_primitive()),
                (ScalarType::Decimal { precision, .. }, DataType::Decimal128(..)) => {
                    ValCol::Decimal(a.as_primitive(), precision)
                }
                (ScalarType::Varchar, DataType::Utf8) => ValCol::Str(a.as_string()),
                (ScalarType::Date, DataType::Date32) => ValCol::Date(a.as_primitive()),
                (ScalarType::Timestamp | ScalarType::TimestampTz, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                    ValCol::Ts(a.as_primitive())
                }
                _ => return Err(self.unexpected(name, dt)),
            },
            (ColumnType::FixedArray { elem, len }, DataType::FixedSizeList(_, n)) if *n as u32 == len => {
                ValCol::Fixed(a.as_fixed_size_list(), elem)
            }
            (ColumnType::List { elem }, DataType::List(_)) => ValCol::List(a.as_list(), elem),
            (_, dt) => return Err(self.unexpected(name, dt)),
        };
        Ok(col)
    }

    fn put(&self, w: &mut RowWriter<'_>, col: &ValCol<'_>, row: usize) -> Result<(), String> {
        match col {
            ValCol::Bool(a) => w.bool(a.value(row)),
            ValCol::Int(a) => w.i32(a.value(row)),
            ValCol::BigInt(a) => w.i64(a.value(row)),
            ValCol::Float(a) => w.f32(a.value(row)),
            ValCol::Double(a) => w.f64(a.value(row)),
            ValCol::Decimal(a, p) => w.decimal(a.value(row), *p),
            ValCol::Str(a) => w.str(a.value(row)),
            ValCol::Date(a) => w.i32(a.value(row)),
            ValCol::Ts(a) => w.i64(a.value(row)),
            ValCol::Fixed(a, elem) => {
                let len = a.value_length() as usize;
                put_elems(w, a.values(), *elem, row * len, len, false)?
            }
            ValCol::List(a, elem) => {
                let offsets = a.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                put_elems(w, a.values(), *elem, start, end - start, true)?
            }
        }
        Ok(())
    }
}

fn put_elems(
    w: &mut RowWriter<'_>,
    values: &ArrayRef,
    elem: ElemType,
    start: usize,
    len: usize,
    with_len: bool,
) -> Result<(), String> {
    fn typed<T: ArrowPrimitiveType>(
        w: &mut RowWriter<'_>,
        values: &ArrayRef,
        start: usize,
        len: usize,
        with_len: bool,
    ) -> Result<(), String>
    where
        T::Native: Elem,
    {
        let a = values
            .as_primitive_opt::<T>()
            .ok_or_else(|| format!("array elements came back as {}", values.data_type()))?;
        if a.null_count() > 0 && (start..start + len).any(|i| a.is_null(i)) {
            return Err("an array element is NULL (array elements cannot be NULL online)".into());
        }
        w.elems(&a.values()[start..start + len], with_len);
        Ok(())
    }
    match elem {
        ElemType::Integer => typed::<Int32Type>(w, values, start, len, with_len),
        ElemType::BigInt => typed::<Int64Type>(w, values, start, len, with_len),
        ElemType::Float => typed::<Float32Type>(w, values, start, len, with_len),
        ElemType::Double => typed::<Float64Type>(w, values, start, len, with_len),
    }
}

fn is_null(col: &ValCol<'_>, row: usize) -> bool {
    match col {
        ValCol::Bool(a) => a.is_null(row),
        ValCol::Int(a) => a.is_null(row),
        ValCol::BigInt(a) => a.is_null(row),
        ValCol::Float(a) => a.is_null(row),
        ValCol::Double(a) => a.is_null(row),
        ValCol::Decimal(a, _) => a.is_null(row),
        ValCol::Str(a) => a.is_null(row),
        ValCol::Date(a) => a.is_null(row),
        ValCol::Ts(a) => a.is_null(row),
        ValCol::Fixed(a, _) => a.is_null(row),
        ValCol::List(a, _) => a.is_null(row),
    }
}

/// An entity's key values as a person reads them, for error messages.
fn entity_text(parts: &[KeyPart<'_>]) -> String {
    parts
        .iter()
        .map(|p| match p {
            KeyPart::Int(v) => v.to_string(),
            KeyPart::Str(s) => format!("{s:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
