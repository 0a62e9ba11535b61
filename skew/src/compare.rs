//! Value comparison by type: exact for integers, strings, booleans, decimals,
//! dates and timestamps; absolute-or-relative tolerance for floats (NaN equals
//! NaN); element-wise for arrays, where a length difference is a mismatch;
//! NULL equals only NULL.

use daeda_online::codec::{Array, Value};

fn close(a: f64, b: f64, tol: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= tol || diff <= tol * a.abs().max(b.abs())
}

fn all_close<T: Copy + Into<f64>>(a: &[T], b: &[T], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close((*x).into(), (*y).into(), tol))
}

/// Whether an offline and an online value agree.
pub fn same(offline: &Value, online: &Value, tol: f64) -> bool {
    match (offline, online) {
        (Value::Float(a), Value::Float(b)) => close(f64::from(*a), f64::from(*b), tol),
        (Value::Double(a), Value::Double(b)) => close(*a, *b, tol),
        (Value::Array(Array::Float(a)), Value::Array(Array::Float(b))) => all_close(a, b, tol),
        (Value::Array(Array::Double(a)), Value::Array(Array::Double(b))) => all_close(a, b, tol),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_within_tolerance_and_nothing_else() {
        assert!(same(&Value::Double(1.0), &Value::Double(1.0), 0.0));
        assert!(!same(&Value::Double(1.0), &Value::Double(1.000_001), 0.0));
        assert!(same(&Value::Double(1.0), &Value::Double(1.000_001), 1e-5));
        assert!(same(&Value::Double(1e9), &Value::Double(1e9 + 1.0), 1e-8), "relative");
        assert!(same(&Value::Float(f32::NAN), &Value::Float(f32::NAN), 0.0));
        assert!(!same(&Value::Null, &Value::Double(0.0), 1.0));
        assert!(same(&Value::Null, &Value::Null, 0.0));
        assert!(!same(&Value::BigInt(1), &Value::BigInt(2), 10.0), "integers are exact");
        let a = Value::Array(Array::Float(vec![1.0, 2.0]));
        assert!(!same(&a, &Value::Array(Array::Float(vec![1.0])), 1.0), "length");
        assert!(same(&a, &Value::Array(Array::Float(vec![1.0, 2.0 + 1e-7])), 1e-6));
        assert!(!same(&Value::Str("a".into()), &Value::Str("b".into()), 1.0));
    }
}
