//! Go durations (`time.ParseDuration`), as a kms provider's `timeout` is
//! written.

use std::time::Duration;

pub(super) fn duration_from_nanos(ns: i128) -> Duration {
    let ns = u128::try_from(ns).unwrap_or(0);
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits.
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

/// Parses a Go duration string (`time.ParseDuration`): an optional sign, then
/// one or more decimal numbers, each with an optional fraction and a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed. Returns
/// nanoseconds.
pub(super) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    const MAX_NS: i128 = i64::MAX as i128;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            other => {
                return Err(format!("time: unknown unit {other:?} in duration {text:?}"));
            }
        };
        let int_value: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 20 {
            return Err(invalid());
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = int_value.checked_mul(scale).ok_or_else(invalid)?;
        // Fraction: keep at most 20 digits, enough for nanosecond precision.
        let frac_digits = &frac_part[..frac_part.len().min(20)];
        if !frac_digits.is_empty() {
            let f: i128 = frac_digits.parse().map_err(|_| invalid())?;
            let denom = 10i128.pow(frac_digits.len() as u32);
            value += f * scale / denom;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > MAX_NS {
            return Err(invalid());
        }
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("3s"), 3_000_000_000);
        assert_eq!(ok("1m30s"), 90_000_000_000);
        assert_eq!(ok("1.5h"), 5_400_000_000_000);
        assert_eq!(ok("500ms"), 500_000_000);
        assert_eq!(ok("10us"), 10_000);
        assert_eq!(ok("10µs"), 10_000);
        assert_eq!(ok(".5s"), 500_000_000);
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("-2s"), -2_000_000_000);
        for bad in [
            "",
            "3",
            "s",
            "3x",
            "-",
            ".s",
            "1.2.3s",
            "99999999999999999999h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn durations_never_panic(s in "[-+0-9.nsuµmh]{0,30}") {
            let _ = parse_go_duration(&s);
        }
    }
}
