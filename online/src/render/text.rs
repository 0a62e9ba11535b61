//! Dates, timestamps and decimals as daeda writes them in every JSON body
//! (lookups, SQL results, skew reports): `YYYY-MM-DD`, RFC 3339 UTC with
//! microseconds, exact decimal strings. The `write_*` forms are the hot path's,
//! without an allocation; the `*_text` forms are the reference they must equal.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::json::write_str;

/// (year, month, day) of days since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes `v` as exactly `N` decimal digits (v < 10^N).
fn digits<const N: usize>(out: &mut [u8], v: u32) {
    let mut v = v;
    for b in out[..N].iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `"YYYY-MM-DD"` (quoted) without an allocation; the same text as
/// [`date_text`], which years outside 0..=9999 still go through.
pub(super) fn write_date(out: &mut Vec<u8>, days: i32) {
    match civil(i64::from(days)) {
        (y @ 0..=9999, m, d) => {
            let mut b = *b"\"0000-00-00\"";
            digits::<4>(&mut b[1..], y as u32);
            digits::<2>(&mut b[6..], m);
            digits::<2>(&mut b[9..], d);
            out.extend_from_slice(&b);
        }
        _ => match date_text(days) {
            Some(t) => write_str(out, &t),
            None => out.extend_from_slice(b"null"),
        },
    }
}

/// `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` (quoted) without an allocation; the same
/// text as [`timestamp_text`], which years outside 0..=9999 still go through.
pub(super) fn write_timestamp(out: &mut Vec<u8>, us: i64) {
    let (secs, micros) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) as u32);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    match civil(days) {
        (y @ 0..=9999, m, d) => {
            let mut b = *b"\"0000-00-00T00:00:00.000000Z\"";
            digits::<4>(&mut b[1..], y as u32);
            digits::<2>(&mut b[6..], m);
            digits::<2>(&mut b[9..], d);
            digits::<2>(&mut b[12..], sod / 3600);
            digits::<2>(&mut b[15..], sod / 60 % 60);
            digits::<2>(&mut b[18..], sod % 60);
            digits::<6>(&mut b[21..], micros);
            out.extend_from_slice(&b);
        }
        _ => match timestamp_text(us) {
            Some(t) => write_str(out, &t),
            None => out.extend_from_slice(b"null"),
        },
    }
}

/// [`decimal_text`] quoted, written without an allocation.
pub(super) fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: u8) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(unscaled.unsigned_abs()).as_bytes();
    let scale = scale as usize;
    out.push(b'"');
    if unscaled < 0 {
        out.push(b'-');
    }
    if scale == 0 {
        out.extend_from_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits);
    }
    out.push(b'"');
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn date_text(days: i32) -> Option<String> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?).map(|d| d.format("%Y-%m-%d").to_string())
}

/// RFC 3339 UTC with microseconds, as every timestamp in daeda's JSON.
pub fn timestamp_text(us: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// An exact decimal string: unscaled 12345 at scale 2 is "123.45".
pub fn decimal_text(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_their_exact_digits() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(42, 0), "42");
        assert_eq!(decimal_text(i128::MAX, 10), "17014118346046923173168730371.5884105727");
    }

    #[test]
    fn times_and_decimals_write_what_their_text_functions_say() {
        let quoted = |t: Option<String>| t.map_or("null".to_string(), |t| format!("\"{t}\""));
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let mut us_cases: Vec<i64> = vec![
            0,
            -1,
            1,
            951_782_400_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            i64::MIN,
            i64::MAX,
        ];
        let mut day_cases: Vec<i32> = vec![0, -1, 11_016, 2_932_896, 2_932_897, -719_528, -719_529, i32::MIN, i32::MAX];
        for _ in 0..100_000 {
            let x = rng.u64(..);
            us_cases.push((x as i64) >> (x % 10)); // all magnitudes
            us_cases.push((x as i64) % 400_000_000_000_000_000); // years -10700..14600
            day_cases.push((x as i32) >> (x % 20));
        }
        for us in us_cases {
            let mut out = Vec::new();
            write_timestamp(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), quoted(timestamp_text(us)), "{us}");
        }
        for d in day_cases {
            let mut out = Vec::new();
            write_date(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), quoted(date_text(d)), "{d}");
        }
        for (u, sc) in [
            (12345i128, 2u8),
            (-5, 3),
            (0, 2),
            (42, 0),
            (-42, 0),
            (i128::MAX, 10),
            (i128::MIN, 38),
            (7, 1),
            (-123, 2),
            (99, 2),
        ] {
            let mut out = Vec::new();
            write_decimal(&mut out, u, sc);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{}\"", decimal_text(u, sc)), "{u} {sc}");
        }
    }
}
