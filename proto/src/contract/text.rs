//! Untrusted text in messages and logs: escaped, and cut short so a hostile
//! key_id or annotation key cannot flood a log line or an error.

/// `s` with non-printable characters escaped (as Rust's `{:?}` escapes
/// them, without the quotes) and cut to `max` characters; a cut string ends
/// in `… (N bytes)`.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    let mut chars = s.chars();
    for c in chars.by_ref().take(max) {
        out.extend(c.escape_debug());
    }
    if chars.next().is_some() {
        out.push_str(&format!("… ({} bytes)", s.len()));
    }
    out
}

/// An error and its causes, `: `-separated, each cause once (wrapping
/// errors often repeat their source's text).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_cuts() {
        assert_eq!(printable("a\nb", 10), "a\\nb");
        assert_eq!(printable("say \"hi\"", 10), "say \\\"hi\\\"");
        assert_eq!(printable("abcdef", 3), "abc… (6 bytes)");
        assert_eq!(printable("abc", 3), "abc");
        let long = printable(&"x".repeat(1000), 64);
        assert!(long.len() < 100 && long.contains("1000 bytes"), "{long}");
    }

    #[test]
    fn chains_causes_once() {
        let io = std::io::Error::other("disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("writing the ring")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(io)), "writing the ring: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("writing the ring: {0}")]
        struct Repeats(#[source] std::io::Error);
        let io = std::io::Error::other("disk on fire");
        assert_eq!(error_chain(&Repeats(io)), "writing the ring: disk on fire");
    }
}
