//! Conversions between UTC epoch milliseconds and what clients write: RFC 3339 text and epoch numbers.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// 0000-01-01T00:00:00.000Z. Times outside `MIN_MS..=MAX_MS` are refused so that every
/// accepted time formats back with a four-digit year and parses again.
pub const MIN_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Epoch numbers below this are seconds, the rest milliseconds: 10^11 s is the year 5138,
/// while 10^11 ms is 1973, long before any event this service will see.
const SECONDS_LIMIT: f64 = 100_000_000_000.0;

const MS_PER_DAY: i64 = 86_400_000;

const RFC3339_HINT: &str = "must be an RFC 3339 date-time with offset, e.g. 2024-01-15T10:30:00Z";

/// Formats UTC epoch milliseconds as e.g. `2024-01-15T10:30:00.123Z`.
///
/// Years outside 0000–9999 (never produced by this module's parsers) get a sign and as many
/// digits as they need rather than a panic.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let secs = ms_of_day / 1000;
    let (hour, minute, second, milli) = (secs / 3600, secs / 60 % 60, secs % 60, ms_of_day % 1000);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:+05}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        );
    }
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut buf[0..4], year);
    put_digits(&mut buf[5..7], month);
    put_digits(&mut buf[8..10], day);
    put_digits(&mut buf[11..13], hour);
    put_digits(&mut buf[14..16], minute);
    put_digits(&mut buf[17..19], second);
    put_digits(&mut buf[20..23], milli);
    buf.iter().map(|&b| char::from(b)).collect()
}

/// Writes `n` (non-negative and small enough) as zero-padded decimal filling `out`.
fn put_digits(out: &mut [u8], mut n: i64) {
    for b in out.iter_mut().rev() {
        // `n % 10` is 0..=9 here, so the narrowing is exact.
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
///
/// Howard Hinnant's `civil_from_days`: shifting the year to start in March puts the leap
/// day last, so month lengths follow a fixed pattern within 400-year eras.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses an RFC 3339 date-time with a mandatory offset to UTC epoch milliseconds.
///
/// Fractions finer than a millisecond are dropped (towards the past, so that
/// `.9999` stays within its millisecond for times before 1970 too).
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("{RFC3339_HINT} ({e})"))?;
    let ms = i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| out_of_range())?;
    if !(MIN_MS..=MAX_MS).contains(&ms) {
        return Err(out_of_range());
    }
    Ok(ms)
}

fn out_of_range() -> String {
    "must be between the years 0000 and 9999 in UTC".to_owned()
}

/// Reads an epoch number: seconds below 10^11 (rounded to the nearest millisecond, since
/// decimal fractions such as `.123` are not exact in binary), milliseconds from there on
/// (any fraction dropped).
pub fn epoch_number_to_ms(n: f64) -> Result<i64, String> {
    if n.is_nan() {
        return Err("must be a number".to_owned());
    }
    // Every number below the limit is seconds, negative ones (before 1970) included, as
    // RFC 3339 times before 1970 are accepted too.
    let ms = if n < SECONDS_LIMIT {
        (n * 1000.0).round()
    } else {
        n.trunc()
    };
    // MAX_MS is below 2^53, so the comparison is exact, and the cast below cannot saturate.
    if ms > MAX_MS as f64 {
        return Err("must not be beyond the year 9999".to_owned());
    }
    if ms < MIN_MS as f64 {
        return Err("must not be before the year 0000".to_owned());
    }
    Ok(ms as i64)
}

/// Reads a `from`/`to` query parameter: epoch seconds or milliseconds when it is a plain
/// number, RFC 3339 otherwise.
pub fn parse_time_param(s: &str) -> Result<i64, String> {
    if is_plain_number(s) {
        let n: f64 = s.parse().map_err(|_| "must be a number".to_owned())?;
        epoch_number_to_ms(n)
    } else {
        parse_rfc3339_ms(s)
    }
}

/// Why a [`number_with_unit`] text was refused; each caller words it for its own input.
#[derive(Debug, PartialEq)]
pub enum UnitError<'a> {
    /// Digits only, or nothing.
    NoUnit,
    /// No digits before the unit.
    NotANumber,
    /// A unit not among those allowed.
    Unknown(&'a str),
    /// The product does not fit in 64 bits.
    TooLarge,
}

/// Reads digits followed by one of `units` (`(name, size)`), as `digits * size`: how durations
/// (`30s`, `24h`) and relative times (`1h` in `-1h`) are written.
pub fn number_with_unit<'a>(text: &'a str, units: &[(&str, u64)]) -> Result<u64, UnitError<'a>> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(UnitError::NoUnit)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| UnitError::NotANumber)?;
    let (_, size) = units
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or(UnitError::Unknown(unit))?;
    number.checked_mul(*size).ok_or(UnitError::TooLarge)
}

/// `-?digits(.digits)?`: negative numbers are epoch seconds before 1970.
fn is_plain_number(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_time(ms: i64) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        dt.format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap()
    }

    #[test]
    fn formats_known_values() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_705_314_600_123, "2024-01-15T10:30:00.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (MIN_MS, "0000-01-01T00:00:00.000Z"),
            (MAX_MS, "9999-12-31T23:59:59.999Z"),
            (MAX_MS + 1, "+10000-01-01T00:00:00.000Z"),
            (MIN_MS - 1, "-0001-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_rfc3339_ms(ms), want, "{ms}");
        }
    }

    #[test]
    fn formats_extremes_without_panicking() {
        for ms in [i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1] {
            let s = format_rfc3339_ms(ms);
            assert!(s.ends_with('Z'), "{s}");
        }
    }

    #[test]
    fn formats_like_time_on_a_dense_sweep() {
        // Every day boundary (and a ms either side) over several 400-year eras.
        let mut day = MIN_MS / MS_PER_DAY;
        while day * MS_PER_DAY <= MAX_MS {
            for ms in [day * MS_PER_DAY - 1, day * MS_PER_DAY, day * MS_PER_DAY + 1] {
                if (MIN_MS..=MAX_MS).contains(&ms) {
                    assert_eq!(format_rfc3339_ms(ms), with_time(ms), "{ms}");
                }
            }
            day += 7;
        }
    }

    proptest! {
        #[test]
        fn formats_like_time(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(format_rfc3339_ms(ms), with_time(ms));
        }

        #[test]
        fn format_then_parse_round_trips(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
        }
    }

    #[test]
    fn parses_rfc3339() {
        let ok = [
            ("2024-01-15T10:30:00Z", 1_705_314_600_000),
            ("2024-01-15T10:30:00.123Z", 1_705_314_600_123),
            ("2024-01-15T10:30:00.1239999Z", 1_705_314_600_123),
            ("2024-01-15T10:30:00.1Z", 1_705_314_600_100),
            ("2024-01-15T10:30:00+02:00", 1_705_307_400_000),
            ("2024-01-15T10:30:00-05:30", 1_705_334_400_000),
            ("2024-01-15T10:30:00-00:00", 1_705_314_600_000),
            ("2024-01-15t10:30:00z", 1_705_314_600_000),
            // RFC 3339 lets applications agree on a space; `time` accepts it.
            ("2024-01-15 10:30:00Z", 1_705_314_600_000),
            ("1969-12-31T23:59:59.9999Z", -1),
            ("0000-01-01T00:00:00Z", MIN_MS),
            ("9999-12-31T23:59:59.999999Z", MAX_MS),
        ];
        for (s, want) in ok {
            assert_eq!(parse_rfc3339_ms(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_rfc3339() {
        let bad = [
            "",
            "2024-01-15",
            "2024-01-15T10:30:00",
            "2024-01-15 10:30:00",
            "2024-01-15T10:30:00+0200",
            "2024-02-30T10:30:00Z",
            "2024-01-15T10:30:00Z trailing",
            "1705314600",
            "now",
        ];
        for s in bad {
            let err = parse_rfc3339_ms(s).unwrap_err();
            assert!(err.starts_with(RFC3339_HINT), "{s}: {err}");
        }
        for s in ["0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"] {
            assert_eq!(parse_rfc3339_ms(s), Err(out_of_range()), "{s}");
        }
    }

    #[test]
    fn reads_epoch_numbers() {
        let ok = [
            (0.0, 0),
            (1_700_000_000.0, 1_700_000_000_000),
            (1_700_000_000.123, 1_700_000_000_123),
            (1_700_000_000.123_5, 1_700_000_000_124),
            (1_700_000_000.999_9, 1_700_000_001_000),
            (99_999_999_999.0, 99_999_999_999_000),
            (100_000_000_000.0, 100_000_000_000),
            (1_700_000_000_123.0, 1_700_000_000_123),
            (1_700_000_000_123.9, 1_700_000_000_123),
            (MAX_MS as f64, MAX_MS),
            (-1.0, -1_000),
            (-1.5, -1_500),
        ];
        for (n, want) in ok {
            assert_eq!(epoch_number_to_ms(n), Ok(want), "{n}");
        }
        let bad = [
            (-1e12, "must not be before the year 0000"),
            (f64::NEG_INFINITY, "must not be before the year 0000"),
            (f64::NAN, "must be a number"),
            (f64::INFINITY, "must not be beyond the year 9999"),
            (MAX_MS as f64 + 1.0, "must not be beyond the year 9999"),
            (1e300, "must not be beyond the year 9999"),
        ];
        for (n, want) in bad {
            assert_eq!(epoch_number_to_ms(n), Err(want.to_owned()), "{n}");
        }
    }

    #[test]
    fn reads_time_params() {
        let ok = [
            ("1700000000", 1_700_000_000_000),
            ("1700000000.5", 1_700_000_000_500),
            ("1700000000123", 1_700_000_000_123),
            ("0", 0),
            ("2024-01-15T10:30:00Z", 1_705_314_600_000),
        ];
        for (s, want) in ok {
            assert_eq!(parse_time_param(s), Ok(want), "{s}");
        }
        assert_eq!(parse_time_param("-5"), Ok(-5_000));
        assert_eq!(
            parse_time_param("99999999999999999999999"),
            Err("must not be beyond the year 9999".to_owned())
        );
        for s in ["", "1.", ".5", "1e5", "+5", "1700000000x", "yesterday"] {
            let err = parse_time_param(s).unwrap_err();
            assert!(err.starts_with(RFC3339_HINT), "{s}: {err}");
        }
    }
}
