//! Column types of the Feature Protocol, parsed from their SQL spelling.
//!
//! `FLOAT[1152]` and `FLOAT[]` with `shape: {dimension: 1152}` parse to the same
//! [`ColumnType::FixedArray`], so everything downstream (fingerprint, row codec,
//! DuckDB casts) sees one logical type.

use std::fmt;

/// A scalar column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Boolean,
    Integer,
    BigInt,
    Float,
    Double,
    /// Exact decimal with `precision` total digits (1..=38), `scale` of them fractional.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Varchar,
    Date,
    /// Zone-less timestamp, read as UTC, microsecond precision.
    Timestamp,
    /// Timestamp with time zone, normalised to UTC, microsecond precision.
    TimestampTz,
}

/// The element type of arrays and lists: the numeric scalars only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    Integer,
    BigInt,
    Float,
    Double,
}

impl ElemType {
    /// Bytes per element in the packed little-endian encoding.
    pub fn width(self) -> usize {
        match self {
            ElemType::Integer | ElemType::Float => 4,
            ElemType::BigInt | ElemType::Double => 8,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            ElemType::Integer => "INTEGER",
            ElemType::BigInt => "BIGINT",
            ElemType::Float => "FLOAT",
            ElemType::Double => "DOUBLE",
        }
    }
}

/// The logical type of a served column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Scalar(ScalarType),
    /// `T[N]`: exactly `len` elements in every row.
    FixedArray {
        elem: ElemType,
        len: u32,
    },
    /// `T[]`: any number of elements.
    List {
        elem: ElemType,
    },
}

impl ColumnType {
    /// Parses the SQL spelling used in definitions (case-insensitive, DuckDB aliases
    /// accepted). `dimension` comes from `shape.dimension` and turns a list into a
    /// fixed-size array.
    pub fn parse(text: &str, dimension: Option<u32>) -> Result<ColumnType, String> {
        let t = text.trim().to_ascii_uppercase();
        if let Some(open) = t.find('[') {
            let elem_text = t[..open].trim();
            let elem = parse_elem(elem_text).ok_or_else(|| {
                format!("array element type `{elem_text}` is not a numeric scalar (INTEGER, BIGINT, FLOAT, DOUBLE)")
            })?;
            let inner = t[open..]
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| format!("`{text}` is not `T[N]` or `T[]`"))?
                .trim();
            let declared = if inner.is_empty() {
                None
            } else {
                Some(parse_len(inner).ok_or_else(|| format!("array length `{inner}` is not a positive integer"))?)
            };
            return match (declared, dimension) {
                (Some(len), None) => Ok(ColumnType::FixedArray { elem, len }),
                (None, Some(len)) => Ok(ColumnType::FixedArray { elem, len }),
                (None, None) => Ok(ColumnType::List { elem }),
                (Some(a), Some(b)) if a == b => Ok(ColumnType::FixedArray { elem, len: a }),
                (Some(a), Some(b)) => Err(format!("type says {a} elements but shape.dimension says {b}")),
            };
        }
        if dimension.is_some() {
            return Err(format!("shape.dimension applies to lists (`T[]`), not to `{text}`"));
        }
        parse_scalar(&t).map(ColumnType::Scalar).ok_or_else(|| {
            format!(
                "unknown type `{text}` (expected BOOLEAN, INTEGER, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s), \
                 VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, T[N] or T[])"
            )
        })
    }

    /// The scalar type, when this is one.
    pub fn scalar(self) -> Option<ScalarType> {
        match self {
            ColumnType::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

fn parse_len(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|n| *n > 0)
}

fn parse_elem(s: &str) -> Option<ElemType> {
    Some(match s {
        "INTEGER" | "INT" | "INT4" | "INT32" => ElemType::Integer,
        "BIGINT" | "INT8" | "INT64" | "LONG" => ElemType::BigInt,
        "FLOAT" | "FLOAT4" | "REAL" => ElemType::Float,
        "DOUBLE" | "FLOAT8" => ElemType::Double,
        _ => return None,
    })
}

fn parse_scalar(s: &str) -> Option<ScalarType> {
    if let Some(elem) = parse_elem(s) {
        return Some(match elem {
            ElemType::Integer => ScalarType::Integer,
            ElemType::BigInt => ScalarType::BigInt,
            ElemType::Float => ScalarType::Float,
            ElemType::Double => ScalarType::Double,
        });
    }
    Some(match s {
        "BOOLEAN" | "BOOL" => ScalarType::Boolean,
        "VARCHAR" | "TEXT" | "STRING" => ScalarType::Varchar,
        "DATE" => ScalarType::Date,
        "TIMESTAMP" | "DATETIME" => ScalarType::Timestamp,
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => ScalarType::TimestampTz,
        _ => return parse_decimal(s),
    })
}

fn parse_decimal(s: &str) -> Option<ScalarType> {
    let args =
        s.strip_prefix("DECIMAL").or_else(|| s.strip_prefix("NUMERIC"))?.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (p, sc) = args.split_once(',')?;
    let precision: u8 = p.trim().parse().ok()?;
    let scale: u8 = sc.trim().parse().ok()?;
    ((1..=38).contains(&precision) && scale <= precision).then_some(ScalarType::Decimal { precision, scale })
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalarType::Boolean => f.write_str("BOOLEAN"),
            ScalarType::Integer => f.write_str("INTEGER"),
            ScalarType::BigInt => f.write_str("BIGINT"),
            ScalarType::Float => f.write_str("FLOAT"),
            ScalarType::Double => f.write_str("DOUBLE"),
            ScalarType::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            ScalarType::Varchar => f.write_str("VARCHAR"),
            ScalarType::Date => f.write_str("DATE"),
            ScalarType::Timestamp => f.write_str("TIMESTAMP"),
            ScalarType::TimestampTz => f.write_str("TIMESTAMPTZ"),
        }
    }
}

/// The canonical SQL spelling, which DuckDB also accepts in a `CAST`.
impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Scalar(s) => s.fmt(f),
            ColumnType::FixedArray { elem, len } => write!(f, "{}[{len}]", elem.sql()),
            ColumnType::List { elem } => write!(f, "{}[]", elem.sql()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_dimension_and_fixed_size_spelling_are_one_type() {
        let a = ColumnType::parse("FLOAT[1152]", None).unwrap();
        let b = ColumnType::parse("float[]", Some(1152)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "FLOAT[1152]");
    }

    #[test]
    fn parses_every_scalar() {
        for (text, want) in [
            ("boolean", "BOOLEAN"),
            ("INT", "INTEGER"),
            ("bigint", "BIGINT"),
            ("REAL", "FLOAT"),
            ("double", "DOUBLE"),
            ("decimal(18, 4)", "DECIMAL(18,4)"),
            ("varchar", "VARCHAR"),
            ("date", "DATE"),
            ("timestamp", "TIMESTAMP"),
            ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"),
            ("DOUBLE[]", "DOUBLE[]"),
        ] {
            assert_eq!(ColumnType::parse(text, None).unwrap().to_string(), want, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_type() {
        for bad in ["FLAOT", "VARCHAR[3]", "FLOAT[0]", "FLOAT[x]", "DECIMAL(40,2)", "DECIMAL(4,6)", "MAP"] {
            assert!(ColumnType::parse(bad, None).is_err(), "{bad}");
        }
        assert!(ColumnType::parse("FLOAT[4]", Some(8)).is_err());
        assert!(ColumnType::parse("DOUBLE", Some(8)).is_err());
    }
}
