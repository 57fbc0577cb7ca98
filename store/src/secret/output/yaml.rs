//! A block-style YAML writer that prints what `kubectl get -o yaml` prints:
//! kubectl turns the object's JSON into YAML with go-yaml v2, so keys are
//! sorted with go-yaml's order (other characters before letters, runs of
//! digits compared as numbers), sequences inside mappings are not indented,
//! and each string gets go-yaml's style:
//! - with a line break: a literal block (`|`, `|-` or `|+`);
//! - plain when it would read back as the same string, else double-quoted
//!   (`"2024-05-01T10:00:00Z"`, `"123"`, `"true"`, `""`);
//! - single-quoted when plain is not allowed (`': x'`, leading spaces, …);
//! - double-quoted with escapes when it holds characters YAML cannot show.
//!
//! Long plain and quoted strings are folded at spaces past column 80, as
//! go-yaml does.

use std::borrow::Cow;

use super::yaml_style::{Style, is_break, is_printable, is_simple_key, key_order, select_style};
use crate::wipe::Wiped;

/// A value to print.
pub(crate) enum YamlValue<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A string holding secret material (base64 of a data value), wiped
    /// on drop.
    Secret(Wiped<String>),
    /// `true` / `false`.
    Bool(bool),
    /// A number, as its text (`generation: 3`).
    Number(String),
    /// `null`.
    Null,
    /// A mapping; sorted when printed.
    Map(Vec<(Cow<'a, str>, YamlValue<'a>)>),
    /// A sequence.
    Seq(Vec<YamlValue<'a>>),
}

const BEST_WIDTH: usize = 80;
const INDENT: usize = 2;

/// The writer: text plus the current column, for folding.
pub(crate) struct YamlWriter {
    out: String,
    column: usize,
}

impl YamlWriter {
    /// A writer appending to `out` (whose capacity is kept).
    pub(crate) fn with_buffer(out: String) -> Self {
        let column = out.len() - out.rfind('\n').map_or(0, |i| i + 1);
        Self { out, column }
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }

    fn push(&mut self, c: char) {
        self.out.push(c);
        if c == '\n' {
            self.column = 0;
        } else {
            self.column += 1;
        }
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    fn newline_indent(&mut self, indent: usize) {
        self.push('\n');
        (0..indent).for_each(|_| self.push(' '));
    }

    /// A scalar string; `indent` is where continuation lines start.
    /// Returns the style used.
    fn scalar(&mut self, s: &str, indent: usize, simple_key: bool) -> Style {
        let chars: Vec<char> = s.chars().collect();
        let fold = !simple_key;
        let style = select_style(s, simple_key);
        match style {
            Style::Plain => {
                let mut spaces = false;
                for (i, &c) in chars.iter().enumerate() {
                    if c == ' ' {
                        if fold
                            && !spaces
                            && self.column > BEST_WIDTH
                            && chars.get(i + 1) != Some(&' ')
                        {
                            self.newline_indent(indent);
                        } else {
                            self.push(c);
                        }
                        spaces = true;
                    } else {
                        self.push(c);
                        spaces = false;
                    }
                }
            }
            Style::Single => {
                self.push('\'');
                let mut spaces = false;
                for (i, &c) in chars.iter().enumerate() {
                    if c == ' ' {
                        if fold
                            && !spaces
                            && self.column > BEST_WIDTH
                            && i > 0
                            && i + 1 < chars.len()
                            && chars.get(i + 1) != Some(&' ')
                        {
                            self.newline_indent(indent);
                        } else {
                            self.push(c);
                        }
                        spaces = true;
                    } else {
                        if c == '\'' {
                            self.push('\'');
                        }
                        self.push(c);
                        spaces = false;
                    }
                }
                self.push('\'');
            }
            Style::Double => self.double_quoted(&chars, indent, fold),
            Style::Literal => self.literal(&chars, indent),
        }
        style
    }

    fn double_quoted(&mut self, chars: &[char], indent: usize, fold: bool) {
        self.push('"');
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || c == '\u{feff}' || is_break(c) || c == '"' || c == '\\' {
                self.push('\\');
                match c {
                    '\0' => self.push('0'),
                    '\u{7}' => self.push('a'),
                    '\u{8}' => self.push('b'),
                    '\t' => self.push('t'),
                    '\n' => self.push('n'),
                    '\u{b}' => self.push('v'),
                    '\u{c}' => self.push('f'),
                    '\r' => self.push('r'),
                    '\u{1b}' => self.push('e'),
                    '"' => self.push('"'),
                    '\\' => self.push('\\'),
                    '\u{85}' => self.push('N'),
                    '\u{a0}' => self.push('_'),
                    '\u{2028}' => self.push('L'),
                    '\u{2029}' => self.push('P'),
                    c if (c as u32) <= 0xff => self.push_str(&format!("x{:02X}", c as u32)),
                    c if (c as u32) <= 0xffff => self.push_str(&format!("u{:04X}", c as u32)),
                    c => self.push_str(&format!("U{:08X}", c as u32)),
                }
                spaces = false;
            } else if c == ' ' {
                if fold && !spaces && self.column > BEST_WIDTH && i > 0 && i + 1 < chars.len() {
                    self.newline_indent(indent);
                    if chars.get(i + 1) == Some(&' ') {
                        self.push('\\');
                    }
                } else {
                    self.push(c);
                }
                spaces = true;
            } else {
                self.push(c);
                spaces = false;
            }
        }
        self.push('"');
    }

    fn literal(&mut self, chars: &[char], indent: usize) {
        self.push('|');
        if chars.first().is_some_and(|&c| c == ' ' || is_break(c)) {
            self.push_str(&INDENT.to_string());
        }
        let last_break = chars.last().is_some_and(|&c| is_break(c));
        if !last_break {
            self.push('-');
        } else if chars.len() == 1 || chars.get(chars.len() - 2).is_some_and(|&c| is_break(c)) {
            self.push('+');
        }
        self.push('\n');
        let mut at_line_start = true;
        for &c in chars {
            if is_break(c) {
                self.push('\n');
                at_line_start = true;
            } else {
                if at_line_start {
                    (0..indent).for_each(|_| self.push(' '));
                    at_line_start = false;
                }
                self.push(c);
            }
        }
        if !last_break {
            self.push('\n');
        }
    }

    fn string_value(&mut self, s: &str, indent: usize) {
        self.push(' ');
        // A literal block ends its own last line.
        if self.scalar(s, indent + INDENT, false) != Style::Literal {
            self.push('\n');
        }
    }

    /// A value after `key:` or `-`, up to and including its line end.
    fn value(&mut self, value: &YamlValue<'_>, indent: usize) {
        self.value_after(value, indent, false);
    }

    /// A value after the `:` of an explicit entry (`? key` / `: value`):
    /// go-yaml starts a nested mapping or sequence on the `:` line there.
    fn value_after(&mut self, value: &YamlValue<'_>, indent: usize, explicit: bool) {
        match value {
            YamlValue::Map(entries) if explicit && !entries.is_empty() => {
                self.push(' ');
                self.map(entries, indent + INDENT, true);
                return;
            }
            YamlValue::Seq(items) if explicit && !items.is_empty() => {
                self.push(' ');
                self.seq(items, indent + INDENT, true);
                return;
            }
            _ => {}
        }
        match value {
            YamlValue::Str(s) => self.string_value(s, indent),
            YamlValue::Secret(s) => self.string_value(s, indent),
            YamlValue::Bool(b) => self.push_str(if *b { " true\n" } else { " false\n" }),
            YamlValue::Number(n) => {
                self.push(' ');
                self.push_str(n);
                self.push('\n');
            }
            YamlValue::Null => self.push_str(" null\n"),
            YamlValue::Map(entries) if entries.is_empty() => self.push_str(" {}\n"),
            YamlValue::Seq(items) if items.is_empty() => self.push_str(" []\n"),
            YamlValue::Map(entries) => {
                self.push('\n');
                self.map(entries, indent + INDENT, false);
            }
            YamlValue::Seq(items) => {
                self.push('\n');
                self.seq(items, indent, false);
            }
        }
    }

    /// A block mapping at `indent`; `inline_first` when the first key
    /// follows a `- ` already written.
    pub(crate) fn map(
        &mut self,
        entries: &[(Cow<'_, str>, YamlValue<'_>)],
        indent: usize,
        inline_first: bool,
    ) {
        let mut sorted: Vec<&(Cow<'_, str>, YamlValue<'_>)> = entries.iter().collect();
        sorted.sort_by(|a, b| key_order(&a.0, &b.0));
        for (i, (key, value)) in sorted.into_iter().enumerate() {
            if i > 0 || !inline_first {
                (0..indent).for_each(|_| self.push(' '));
            }
            if is_simple_key(key) {
                let _ = self.scalar(key, indent, true);
                self.push(':');
                self.value(value, indent);
            } else {
                self.push_str("? ");
                if self.scalar(key, indent + INDENT, false) != Style::Literal {
                    self.push('\n');
                }
                (0..indent).for_each(|_| self.push(' '));
                self.push(':');
                self.value_after(value, indent, true);
            }
        }
    }

    /// A block sequence at `indent`; `inline_first` when the first item
    /// follows a `: ` already written.
    fn seq(&mut self, items: &[YamlValue<'_>], indent: usize, inline_first: bool) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || !inline_first {
                (0..indent).for_each(|_| self.push(' '));
            }
            self.push('-');
            match item {
                YamlValue::Map(entries) if !entries.is_empty() => {
                    self.push(' ');
                    self.map(entries, indent + INDENT, true);
                }
                other => self.value(other, indent),
            }
        }
    }
}

/// Prints `root` (a mapping) as a YAML document.
#[cfg(test)]
pub(crate) fn to_yaml(root: &[(Cow<'_, str>, YamlValue<'_>)]) -> String {
    let mut w = YamlWriter::with_buffer(String::new());
    w.map(root, 0, false);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn styled(s: &str) -> String {
        let root = vec![(Cow::Borrowed("k"), YamlValue::Str(Cow::Borrowed(s)))];
        to_yaml(&root)
    }

    #[test]
    fn strings_are_quoted_only_when_go_yaml_would() {
        let cases = [
            ("dg==", "k: dg==\n"),
            ("Opaque", "k: Opaque\n"),
            ("", "k: \"\"\n"),
            ("123", "k: \"123\"\n"),
            ("1.5", "k: \"1.5\"\n"),
            ("0x1F", "k: \"0x1F\"\n"),
            ("1_000", "k: \"1_000\"\n"),
            ("1:20", "k: \"1:20\"\n"),
            ("true", "k: \"true\"\n"),
            ("yes", "k: \"yes\"\n"),
            ("Null", "k: \"Null\"\n"),
            ("~", "k: \"~\"\n"),
            (".inf", "k: \".inf\"\n"),
            ("2024-05-01T10:00:00Z", "k: \"2024-05-01T10:00:00Z\"\n"),
            ("2024-05-01", "k: \"2024-05-01\"\n"),
            ("2024-13-01", "k: 2024-13-01\n"),
            (
                "0b7d3c7e-5a0f-4c59-9d3e-1f4f6a2b8c01",
                "k: 0b7d3c7e-5a0f-4c59-9d3e-1f4f6a2b8c01\n",
            ),
            ("a: b", "k: 'a: b'\n"),
            ("- x", "k: '- x'\n"),
            ("it's", "k: it's\n"),
            ("'q'", "k: '''q'''\n"),
            (" lead", "k: ' lead'\n"),
            ("tab\there", "k: \"tab\\there\"\n"),
            ("a # b", "k: 'a # b'\n"),
            ("a#b", "k: a#b\n"),
            ("é ü", "k: é ü\n"),
            ("😀", "k: \"\\U0001F600\"\n"),
        ];
        for (input, want) in cases {
            assert_eq!(styled(input), want, "{input:?}");
        }
    }

    #[test]
    fn line_breaks_make_literal_blocks() {
        assert_eq!(styled("a\nb"), "k: |-\n  a\n  b\n");
        assert_eq!(styled("a\nb\n"), "k: |\n  a\n  b\n");
        assert_eq!(styled("a\n\n"), "k: |+\n  a\n\n");
        assert_eq!(styled("a\n\nb"), "k: |-\n  a\n\n  b\n");
        assert_eq!(styled(" a\nb"), "k: |2-\n   a\n  b\n");
        assert_eq!(styled("a \nb"), "k: \"a \\nb\"\n");
    }

    #[test]
    fn long_plain_strings_fold_past_column_80() {
        let long = "word ".repeat(30);
        let long = long.trim_end();
        let got = styled(long);
        let lines: Vec<&str> = got.lines().collect();
        assert!(lines.len() > 1, "{got}");
        assert!(lines[1].starts_with("  word"), "{got}");
        assert_eq!(got.replace("\n  ", " ").trim_end(), format!("k: {long}"));
    }

    #[test]
    fn nested_maps_and_indentless_sequences() {
        let root = vec![
            (
                Cow::Borrowed("items"),
                YamlValue::Seq(vec![YamlValue::Map(vec![
                    (Cow::Borrowed("kind"), YamlValue::Str("Secret".into())),
                    (
                        Cow::Borrowed("data"),
                        YamlValue::Map(vec![(Cow::Borrowed("k"), YamlValue::Str("dg==".into()))]),
                    ),
                ])]),
            ),
            (Cow::Borrowed("empty"), YamlValue::Seq(vec![])),
            (Cow::Borrowed("flag"), YamlValue::Bool(true)),
            (Cow::Borrowed("none"), YamlValue::Null),
        ];
        assert_eq!(
            to_yaml(&root),
            "empty: []\nflag: true\nitems:\n- data:\n    k: dg==\n  kind: Secret\nnone: null\n"
        );
    }
    #[test]
    fn long_and_multiline_keys_are_explicit_entries_as_go_yaml_writes_them() {
        let at_limit = "k".repeat(128);
        let long = "k".repeat(129);
        let root = vec![
            (Cow::Borrowed(at_limit.as_str()), YamlValue::Str("v".into())),
            (Cow::Borrowed(long.as_str()), YamlValue::Str("v".into())),
        ];
        assert_eq!(to_yaml(&root), format!("{at_limit}: v\n? {long}\n: v\n"));

        // Nested collections start on the `:` line; a line break makes a
        // literal block key.
        let root = vec![
            (
                Cow::Borrowed(long.as_str()),
                YamlValue::Map(vec![
                    (Cow::Borrowed("b"), YamlValue::Map(vec![])),
                    (Cow::Borrowed("a"), YamlValue::Str("1".into())),
                ]),
            ),
            (
                Cow::Borrowed("a\nb"),
                YamlValue::Seq(vec![YamlValue::Str("p".into()), YamlValue::Str("q".into())]),
            ),
        ];
        assert_eq!(
            to_yaml(&root),
            format!("? |-\n  a\n  b\n: - p\n  - q\n? {long}\n: a: \"1\"\n  b: {{}}\n")
        );
    }
}
