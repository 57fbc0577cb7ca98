//! The check the apiserver runs on `.dockercfg` and `.dockerconfigjson`:
//! `json.Unmarshal(bytes, &map[string]interface{}{})`, reproduced with the
//! error texts of Go's `encoding/json` (v1) scanner and decoder.
//!
//! Go first scans the whole input for syntax errors, then decodes: a valid
//! document whose top-level value is not an object (or `null`) fails with
//! `json: cannot unmarshal <kind> into Go value of type map[string]interface {}`.
//! Strings may hold any bytes but control characters (invalid UTF-8 is
//! accepted, as in Go). Deviation: Go quotes an overflowing number in its
//! message (`number 1e999`); this never echoes content and says `number`.

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;
const MAP_TYPE: &str = "map[string]interface {}";

/// Go's `quoteChar`: the offending byte, quoted for a syntax error.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        _ => {
            // Go converts the byte to the rune U+00XX and quotes that.
            let quoted = super::go_quote(&char::from(c).to_string());
            format!("'{}'", &quoted[1..quoted.len() - 1])
        }
    }
}

fn syntax(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

#[derive(Clone, Copy, PartialEq)]
enum Container {
    Object,
    Array,
}

struct Scanner<'a> {
    input: &'a [u8],
    pos: usize,
    overflow: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// Next byte, or the end-of-input error.
    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or("unexpected end of JSON input")?;
        self.pos += 1;
        Ok(c)
    }

    /// Next byte; at the end of input a space, as Go's `scanner.eof` feeds
    /// one to the state that is waiting (so `1.` ends with "invalid
    /// character ' ' after decimal point in numeric literal").
    fn next_or_space(&mut self) -> u8 {
        match self.peek() {
            Some(c) => {
                self.pos += 1;
                c
            }
            None => b' ',
        }
    }

    /// Scans one JSON value without recursion, nesting at most
    /// [`MAX_DEPTH`] containers.
    fn value(&mut self) -> Result<(), String> {
        let mut stack: Vec<Container> = Vec::new();
        'value: loop {
            self.skip_space();
            let c = self.next()?;
            match c {
                b'{' | b'[' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(syntax(c, "exceeded max depth"));
                    }
                    self.skip_space();
                    if c == b'{' {
                        stack.push(Container::Object);
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            stack.pop();
                        } else {
                            self.key()?;
                            continue 'value;
                        }
                    } else {
                        stack.push(Container::Array);
                        if self.peek() == Some(b']') {
                            self.pos += 1;
                            stack.pop();
                        } else {
                            continue 'value;
                        }
                    }
                }
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => self.number(c)?,
                b't' => self.literal(b"rue", "true")?,
                b'f' => self.literal(b"alse", "false")?,
                b'n' => self.literal(b"ull", "null")?,
                _ => return Err(syntax(c, "looking for beginning of value")),
            }
            // A value ended: close the containers it completes.
            loop {
                let Some(&top) = stack.last() else {
                    return Ok(());
                };
                self.skip_space();
                let c = self.next()?;
                match (top, c) {
                    (Container::Object, b',') => {
                        self.key()?;
                        continue 'value;
                    }
                    (Container::Array, b',') => continue 'value,
                    (Container::Object, b'}') | (Container::Array, b']') => {
                        stack.pop();
                    }
                    (Container::Object, c) => {
                        return Err(syntax(c, "after object key:value pair"));
                    }
                    (Container::Array, c) => return Err(syntax(c, "after array element")),
                }
            }
        }
    }

    /// An object key and the colon after it.
    fn key(&mut self) -> Result<(), String> {
        self.skip_space();
        let c = self.next()?;
        if c != b'"' {
            return Err(syntax(c, "looking for beginning of object key string"));
        }
        self.string()?;
        self.skip_space();
        let c = self.next()?;
        if c != b':' {
            return Err(syntax(c, "after object key"));
        }
        Ok(())
    }

    fn string(&mut self) -> Result<(), String> {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next_or_space() {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let h = self.next_or_space();
                            if !h.is_ascii_hexdigit() {
                                return Err(syntax(h, "in \\u hexadecimal character escape"));
                            }
                        }
                    }
                    e => return Err(syntax(e, "in string escape code")),
                },
                c if c < 0x20 => return Err(syntax(c, "in string literal")),
                _ => {}
            }
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A number; the byte after it is left for the caller. A float64
    /// overflow is remembered: it is a decode error, not a syntax error.
    fn number(&mut self, first: u8) -> Result<(), String> {
        let start = self.pos - 1;
        let mut c = first;
        if c == b'-' {
            c = self.next_or_space();
            if !c.is_ascii_digit() {
                return Err(syntax(c, "in numeric literal"));
            }
        }
        if c != b'0' {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let d = self.next_or_space();
            if !d.is_ascii_digit() {
                return Err(syntax(d, "after decimal point in numeric literal"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let mut d = self.next_or_space();
            if d == b'+' || d == b'-' {
                d = self.next_or_space();
            }
            if !d.is_ascii_digit() {
                return Err(syntax(d, "in exponent of numeric literal"));
            }
            self.digits();
        }
        let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("0");
        if text.parse::<f64>().is_ok_and(f64::is_infinite) {
            self.overflow = true;
        }
        Ok(())
    }

    fn literal(&mut self, rest: &[u8], word: &str) -> Result<(), String> {
        for &want in rest {
            let c = self.next_or_space();
            if c != want {
                return Err(syntax(
                    c,
                    &format!("in literal {word} (expecting {})", quote_char(want)),
                ));
            }
        }
        Ok(())
    }
}

/// Runs `json.Unmarshal(input, &map[string]interface{}{})` and returns Go's
/// error message, or `Ok(())`. The message never contains input content.
pub(crate) fn unmarshal_into_map(input: &[u8]) -> Result<(), String> {
    let mut scanner = Scanner {
        input,
        pos: 0,
        overflow: false,
    };
    scanner.value()?;
    scanner.skip_space();
    if let Some(c) = scanner.peek() {
        return Err(syntax(c, "after top-level value"));
    }
    let first = input.iter().copied().find(|&c| !is_space(c));
    let kind = match first {
        Some(b'{') | Some(b'n') => None,
        Some(b'[') => Some("array"),
        Some(b'"') => Some("string"),
        Some(b't' | b'f') => Some("bool"),
        _ => Some("number"),
    };
    if let Some(kind) = kind {
        return Err(format!(
            "json: cannot unmarshal {kind} into Go value of type {MAP_TYPE}"
        ));
    }
    if scanner.overflow {
        return Err("json: cannot unmarshal number into Go value of type float64".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unmarshal_into_map as check;

    #[test]
    fn accepts_objects_and_null() {
        for ok in [
            "{}",
            " {\"auths\":{\"r.io\":{\"auth\":\"eDp5\"}}} \n",
            "null",
            "{\"a\":[1,-2.5e+3,true,false,null,\"\\u00e9\\n\"]}",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
        assert_eq!(check(b"{\"a\":\"\xff\xfe\"}"), Ok(()));
    }

    #[test]
    fn syntax_errors_read_as_in_go() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "unexpected end of JSON input"),
            (b"   ", "unexpected end of JSON input"),
            (b"{", "unexpected end of JSON input"),
            (b"x", "invalid character 'x' looking for beginning of value"),
            (
                b"{x",
                "invalid character 'x' looking for beginning of object key string",
            ),
            (b"{\"a\" 1}", "invalid character '1' after object key"),
            (
                b"{\"a\":1 2}",
                "invalid character '2' after object key:value pair",
            ),
            (b"[1 2]", "invalid character '2' after array element"),
            (b"{} {}", "invalid character '{' after top-level value"),
            (b"\"a\nb\"", "invalid character '\\n' in string literal"),
            (b"\"\\x\"", "invalid character 'x' in string escape code"),
            (
                b"\"\\u12g4\"",
                "invalid character 'g' in \\u hexadecimal character escape",
            ),
            (b"-x", "invalid character 'x' in numeric literal"),
            (
                b"1.x",
                "invalid character 'x' after decimal point in numeric literal",
            ),
            (
                b"1ex",
                "invalid character 'x' in exponent of numeric literal",
            ),
            (
                b"tru",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            (b"-", "invalid character ' ' in numeric literal"),
            (
                b"1.",
                "invalid character ' ' after decimal point in numeric literal",
            ),
            (
                b"1e+",
                "invalid character ' ' in exponent of numeric literal",
            ),
            (b"\"abc", "unexpected end of JSON input"),
            (b"\"\\", "invalid character ' ' in string escape code"),
            (
                b"[1,]",
                "invalid character ']' looking for beginning of value",
            ),
            (
                b"{\"a\":1,}",
                "invalid character '}' looking for beginning of object key string",
            ),
            (b"{\"a\"", "unexpected end of JSON input"),
            (
                b"trux",
                "invalid character 'x' in literal true (expecting 'e')",
            ),
            (
                b"nul!",
                "invalid character '!' in literal null (expecting 'l')",
            ),
            (
                b"fa1se",
                "invalid character '1' in literal false (expecting 'l')",
            ),
            (
                b"{'a':1}",
                "invalid character '\\'' looking for beginning of object key string",
            ),
            (b"01", "invalid character '1' after top-level value"),
            (
                b"\x01",
                "invalid character '\\x01' looking for beginning of value",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(check(input).unwrap_err(), *want, "{input:?}");
        }
    }

    #[test]
    fn non_objects_fail_to_decode() {
        let m = "into Go value of type map[string]interface {}";
        assert_eq!(
            check(b"[]").unwrap_err(),
            format!("json: cannot unmarshal array {m}")
        );
        assert_eq!(
            check(b"\"s\"").unwrap_err(),
            format!("json: cannot unmarshal string {m}")
        );
        assert_eq!(
            check(b"1").unwrap_err(),
            format!("json: cannot unmarshal number {m}")
        );
        assert_eq!(
            check(b" true").unwrap_err(),
            format!("json: cannot unmarshal bool {m}")
        );
        assert!(check(b"{\"a\":1e999}").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion_trouble() {
        let deep = "[".repeat(10_001);
        assert_eq!(
            check(deep.as_bytes()).unwrap_err(),
            "invalid character '[' exceeded max depth"
        );
    }
}
