//! RFC 3339 timestamps as `metav1.Time` reads and writes them: parsed with
//! Go's `time.RFC3339` layout (a `Z` or `±hh:mm` offset, an optional
//! fraction), written in UTC with whole seconds (`2024-05-01T10:00:00Z`).

use std::time::{Duration, SystemTime};

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: an unset
/// `metav1.Time`, written as an empty protobuf message and as JSON `null`.
pub(crate) const GO_ZERO_SECONDS: i64 = -62_135_596_800;

/// 0000-01-01T00:00:00Z: the earliest time `metav1.Time` can write as JSON.
pub(crate) const MIN_JSON_SECONDS: i64 = -62_167_219_200;

/// 9999-12-31T23:59:59Z: the latest time `metav1.Time` can write as JSON.
pub(crate) const MAX_JSON_SECONDS: i64 = 253_402_300_799;

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` that is `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn digits(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = bytes.get(at..at + n)?;
    part.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Parses `text` as RFC 3339 into seconds since the Unix epoch and
/// nanoseconds; `None` when it is not a valid timestamp.
pub(crate) fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at) {
        Some(b'Z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() && b[at + 3] == b':' => {
            let oh = digits(b, at + 1, 2)?;
            let om = digits(b, at + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    Some((seconds, nanos))
}

/// `seconds` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Go's `time.Time.String()` of a UTC time: `2024-05-01 10:00:00 +0000 UTC`
/// (what a field error prints for an immutable timestamp).
pub(crate) fn format_go_time_string(seconds: i64) -> String {
    let text = format_rfc3339(seconds);
    format!("{} {} +0000 UTC", &text[..10], &text[11..19])
}

/// Why a text is not a `metav1.Time` the model can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeError {
    /// Not RFC 3339 at all.
    NotRfc3339,
    /// RFC 3339, but its offset moves it out of the years 0000-9999.
    OutOfRange,
}

impl std::fmt::Display for TimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotRfc3339 => "not an RFC 3339 time",
            Self::OutOfRange => "outside the years 0000-9999 a Kubernetes time can hold",
        })
    }
}

/// An RFC 3339 timestamp as the model keeps a `metav1.Time`: the canonical
/// text (UTC, whole seconds, as `metav1.Time` writes it), or `None` for
/// Go's zero time, which is an unset time (JSON `null`, an empty protobuf
/// message) however it was spelled. That holds for the pointer fields too
/// (`deletionTimestamp`, a managedFields entry's `time`): upstream writes a
/// zero one as `null`, which it reads back as absent, so a zero kept as set
/// would not survive one JSON round trip.
pub(crate) fn metav1_time(text: &str) -> Result<Option<String>, TimeError> {
    let (seconds, _) = parse_rfc3339(text).ok_or(TimeError::NotRfc3339)?;
    if !(MIN_JSON_SECONDS..=MAX_JSON_SECONDS).contains(&seconds) {
        return Err(TimeError::OutOfRange);
    }
    Ok((seconds != GO_ZERO_SECONDS).then(|| format_rfc3339(seconds)))
}

/// `when` as `YYYY-MM-DDTHH:MM:SSZ` (times before the epoch are clamped to it).
pub(crate) fn format_system_time(when: SystemTime) -> String {
    let seconds = when
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    format_rfc3339(seconds)
}

/// Seconds and nanoseconds since the epoch as a [`SystemTime`].
pub(crate) fn to_system_time(seconds: i64, nanos: u32) -> Option<SystemTime> {
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds.unsigned_abs(), nanos))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00Z"),
            Some((1_714_557_600, 0))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00+02:00"),
            Some((1_714_557_600, 0))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T10:00:00.5Z"),
            Some((1_714_557_600, 500_000_000))
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some((-1, 0)));
    }

    #[test]
    fn metav1_time_is_canonical_unset_at_go_zero_and_bounded() {
        assert_eq!(
            metav1_time("2024-05-01T12:00:00.25+02:00"),
            Ok(Some("2024-05-01T10:00:00Z".to_owned()))
        );
        // Go's zero time is an unset time, however it is spelled.
        assert_eq!(metav1_time("0001-01-01T00:00:00Z"), Ok(None));
        assert_eq!(metav1_time("0001-01-01T01:00:00+01:00"), Ok(None));
        assert_eq!(
            metav1_time("0000-01-01T00:00:00Z"),
            Ok(Some("0000-01-01T00:00:00Z".to_owned()))
        );
        // An offset that leaves the four-digit years cannot be written back.
        assert_eq!(
            metav1_time("9999-12-31T23:59:59-01:00"),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(
            metav1_time("0000-01-01T00:00:00+00:01"),
            Err(TimeError::OutOfRange)
        );
        assert_eq!(metav1_time("yesterday"), Err(TimeError::NotRfc3339));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01 10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T10:00:00Z").is_some());
    }

    #[test]
    fn formats_in_utc_whole_seconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_714_557_600), "2024-05-01T10:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_go_time_string(1_714_557_600),
            "2024-05-01 10:00:00 +0000 UTC"
        );
    }

    #[test]
    fn json_range_and_go_zero() {
        assert_eq!(format_rfc3339(GO_ZERO_SECONDS), "0001-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(MIN_JSON_SECONDS), "0000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(MAX_JSON_SECONDS), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn civil_round_trip_over_a_wide_range() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
