//! Which style go-yaml v2 gives a string, and in which order it sorts
//! mapping keys: the parts of `kubectl get -o yaml` that decide how each
//! scalar looks (`resolve`, `analyze_scalar`, `select_scalar_style` and
//! `keyList.Less` in go-yaml v2).

use std::cmp::Ordering;

/// go-yaml v2's key order (`keyList.Less` for string keys).
pub(crate) fn key_order(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let (mut an, mut bn) = (0i128, 0i128);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .saturating_mul(10)
                .saturating_add(i128::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .saturating_mul(10)
                .saturating_add(i128::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

fn is_resolve_map_word(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "true"
            | "True"
            | "TRUE"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "false"
            | "False"
            | "FALSE"
            | "off"
            | "Off"
            | "OFF"
            | ""
            | "~"
            | "null"
            | "Null"
            | "NULL"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
    )
}

fn all_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax (range not checked).
fn is_go_int(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = s.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        all_digits(hex, 16)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        all_digits(oct, 8)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        all_digits(bin, 2)
    } else if s.len() > 1 && s.starts_with('0') {
        all_digits(s, 8)
    } else {
        all_digits(s, 10)
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => all_digits(frac, 10),
        Some((int, frac)) => all_digits(int, 10) && frac.chars().all(|c| c.is_ascii_digit()),
        None => all_digits(mantissa, 10),
    };
    let exponent_ok =
        exponent.is_none_or(|e| all_digits(e.strip_prefix(['+', '-']).unwrap_or(e), 10));
    mantissa_ok && exponent_ok
}

/// One to `max` digits at the start of `s`, and the rest.
fn take_digits(s: &str, max: usize) -> Option<(u32, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    (n > 0).then(|| (s[..n].parse().unwrap_or(0), &s[n..]))
}

/// go-yaml's `parseTimestamp`: `YYYY-M-D`, optionally followed by
/// `T`/`t` + `H:M:S[.frac]` + `Z`/`±hh:mm`, or by a space + `H:M:S[.frac]`.
fn is_yaml_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let Some((month, rest)) = take_digits(&s[5..], 2) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('-') else {
        return false;
    };
    let Some((day, rest)) = take_digits(rest, 2) else {
        return false;
    };
    let year: i64 = s[..4].parse().unwrap_or(0);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let max_day = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > max_day {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let (zoned, rest) = match rest.as_bytes()[0] {
        b'T' | b't' => (true, &rest[1..]),
        b' ' => (false, &rest[1..]),
        _ => return false,
    };
    let time = |s: &str| -> Option<String> {
        let (h, r) = take_digits(s, 2)?;
        let (m, r) = take_digits(r.strip_prefix(':')?, 2)?;
        let (sec, mut r) = take_digits(r.strip_prefix(':')?, 2)?;
        if h > 23 || m > 59 || sec > 59 {
            return None;
        }
        if let Some(frac) = r.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 || n > 9 {
                return None;
            }
            r = &frac[n..];
        }
        Some(r.to_owned())
    };
    let Some(rest) = time(rest) else {
        return false;
    };
    if !zoned {
        return rest.is_empty();
    }
    if rest == "Z" {
        return true;
    }
    let b = rest.as_bytes();
    b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit())
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn is_base60_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    if frac.is_some_and(|f| !f.chars().all(|c| c.is_ascii_digit() || c == '_')) {
        return false;
    }
    let mut parts = main.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| c.is_ascii_digit())
        || !first.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return false;
    }
    let mut count = 0;
    for part in parts {
        count += 1;
        let ok = match part.as_bytes() {
            [d] => d.is_ascii_digit(),
            [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    count > 0
}

/// Whether go-yaml would read `s`, written plain, as something other than
/// that string (so it must be quoted).
fn resolves_to_non_string(s: &str) -> bool {
    if is_resolve_map_word(s) || is_base60_float(s) {
        return true;
    }
    match s.as_bytes().first() {
        Some(b'.') => s.parse::<f64>().is_ok(),
        Some(b'+' | b'-' | b'0'..=b'9') => {
            let plain = s.replace('_', "");
            is_yaml_timestamp(s) || is_go_int(&plain) || is_yaml_float(&plain)
        }
        _ => false,
    }
}

/// go-yaml's `is_printable` (with unicode output on).
pub(crate) fn is_printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        && c != '\u{feff}'
}

pub(crate) fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Whether go-yaml writes `key` as a simple (implicit) key, `key: value`:
/// on one line and at most 128 bytes (`yaml_emitter_check_simple_key`).
/// Any other key is written as an explicit entry, `? key` then `: value`
/// (a YAML reader refuses an implicit key over 1024 characters).
pub(crate) fn is_simple_key(key: &str) -> bool {
    key.len() <= 128 && !key.chars().any(is_break)
}

/// A scalar style.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Style {
    /// `value`
    Plain,
    /// `'value'`
    Single,
    /// `"value"`, with escapes
    Double,
    /// `|` block
    Literal,
}

/// go-yaml's `analyze_scalar` + `select_scalar_style` for a string.
pub(crate) fn select_style(s: &str, simple_key: bool) -> Style {
    let chars: Vec<char> = s.chars().collect();
    let mut style = if s.contains('\n') {
        Style::Literal
    } else if resolves_to_non_string(s) {
        Style::Double
    } else {
        Style::Plain
    };
    let (mut block_ind, mut special, mut line_breaks) = (false, false, false);
    let (mut leading_space, mut trailing_space, mut leading_break, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break, mut prev_space, mut prev_break) =
        (false, false, false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
    }
    let mut preceded_by_ws = true;
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_ws = chars
            .get(i + 1)
            .is_none_or(|&n| n == ' ' || n == '\t' || is_break(n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_ind = true,
                '?' | ':' | '-' if followed_by_ws => block_ind = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_ind = true,
                '#' if preceded_by_ws => block_ind = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= i + 1 == chars.len();
            break_space |= prev_break;
            (prev_space, prev_break) = (true, false);
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= i + 1 == chars.len();
            space_break |= prev_space;
            (prev_space, prev_break) = (false, true);
        } else {
            (prev_space, prev_break) = (false, false);
        }
        preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
    }
    let mut plain_ok = !(leading_space || leading_break || trailing_space || trailing_break);
    let mut single_ok = true;
    let mut block_ok = !trailing_space;
    if break_space {
        plain_ok = false;
        single_ok = false;
    }
    if space_break || special {
        plain_ok = false;
        single_ok = false;
        block_ok = false;
    }
    if line_breaks || block_ind {
        plain_ok = false;
    }
    if simple_key && line_breaks {
        style = Style::Double;
    }
    if style == Style::Plain && !plain_ok {
        style = Style::Single;
    }
    if style == Style::Single && !single_ok {
        style = Style::Double;
    }
    if style == Style::Literal && (!block_ok || simple_key) {
        style = Style::Double;
    }
    style
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_go_yaml() {
        let mut keys = vec!["b", "a10", "a2", "A", "_x", "a", "1", "a02", "a01"];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(keys, ["_x", "1", "A", "a", "a01", "a2", "a02", "a10", "b"]);
    }

    #[test]
    fn resolution_matches_go_yaml() {
        for s in [
            "",
            "~",
            "null",
            "yes",
            "On",
            "n",
            "12",
            "-3",
            "+4",
            "0x1f",
            "0o17",
            "017",
            "0b101",
            "1_000",
            "1.5",
            ".5",
            "1e3",
            "-.inf",
            ".NaN",
            "1:20",
            "2024-05-01",
            "2024-5-1T1:2:3Z",
            "2024-05-01 10:00:00",
        ] {
            assert!(resolves_to_non_string(s), "{s:?}");
        }
        for s in [
            "a",
            "yess",
            "0b102",
            "1.2.3",
            "0x",
            "2024-05-01T10:00",
            "1:60",
            "UzNjcjN0",
            "-",
            ".",
            "e3",
        ] {
            assert!(!resolves_to_non_string(s), "{s:?}");
        }
    }

    #[test]
    fn styles() {
        assert_eq!(select_style("plain", false), Style::Plain);
        assert_eq!(select_style("123", false), Style::Double);
        assert_eq!(select_style("a: b", false), Style::Single);
        assert_eq!(select_style("a\nb", false), Style::Literal);
        assert_eq!(select_style("a\nb", true), Style::Double);
        assert_eq!(select_style("tab\t", false), Style::Double);
    }
}
