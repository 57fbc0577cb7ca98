//! How an error and its causes read in one line: `: `-separated, each cause
//! once. Messages here often carry their cause's text as well as keeping
//! it as `source()`; this printer drops a cause whose text is already there.

/// An error and its causes, `: `-separated, without repeats.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_listed_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "outer: disk full");
        let e = anyhow::Error::new(std::io::Error::other("gone")).context("reading x");
        assert_eq!(error_chain(&*e), "reading x: gone");
    }
}
