//! The protobuf wire format, as far as the apiserver's gogo-generated code
//! and etcd's `mvccpb.KeyValue` use it: base-128 varints, tags, length-delimited fields, and skipping
//! the fields a reader does not know (groups included) the way
//! `skipGenerated` does. Writing goes to a [`Sink`], which either counts or
//! appends, so every message is written by one function and measured by
//! the same one.

use std::fmt;

/// Wire type 0: varint.
pub(crate) const VARINT: u8 = 0;
/// Wire type 2: length-delimited.
pub(crate) const LEN: u8 = 2;

/// Where encoded bytes go: a counter (for the lengths nested messages need
/// before their content) or a buffer.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Adds `n` bytes without their content (a counter's shortcut).
    fn skip(&mut self, n: usize) -> bool {
        let _ = n;
        false
    }
}

/// Counts what would be written.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn skip(&mut self, n: usize) -> bool {
        self.0 += n;
        true
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Appends `v` as a varint.
pub(crate) fn varint(out: &mut dyn Sink, mut v: u64) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    out.put(&buf[..=n]);
}

/// Appends the tag of field `number` with wire type `wire`.
pub(crate) fn tag(out: &mut dyn Sink, number: u32, wire: u8) {
    varint(out, (u64::from(number) << 3) | u64::from(wire));
}

/// A length-delimited field holding `bytes`.
pub(crate) fn bytes_field(out: &mut dyn Sink, number: u32, bytes: &[u8]) {
    tag(out, number, LEN);
    varint(out, bytes.len() as u64);
    out.put(bytes);
}

/// A varint field (int64, int32 and bool are all two's complement varints).
pub(crate) fn varint_field(out: &mut dyn Sink, number: u32, v: u64) {
    tag(out, number, VARINT);
    varint(out, v);
}

/// A nested message written by `write` (called twice when writing: once
/// to measure it; once when counting).
pub(crate) fn message_field(out: &mut dyn Sink, number: u32, write: &dyn Fn(&mut dyn Sink)) {
    let mut len = Counter::default();
    write(&mut len);
    tag(out, number, LEN);
    varint(out, len.0 as u64);
    if !out.skip(len.0) {
        write(out);
    }
}

/// What is wrong, at which field (the path is built on the way out, the
/// innermost field first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError {
    path: Vec<String>,
    problem: String,
}

impl WireError {
    pub(crate) fn new(problem: impl Into<String>) -> Self {
        WireError {
            path: Vec::new(),
            problem: problem.into(),
        }
    }

    /// The same error, inside field `name`.
    pub(crate) fn within(mut self, name: impl Into<String>) -> Self {
        self.path.push(name.into());
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for part in self.path.iter().rev() {
            if !first && !part.starts_with('[') {
                f.write_str(".")?;
            }
            f.write_str(part)?;
            first = false;
        }
        if !first {
            f.write_str(": ")?;
        }
        f.write_str(&self.problem)
    }
}

/// One field's value as read.
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width or group: skipped by every message here.
    Other,
}

fn wire_name(wire: u8) -> &'static str {
    match wire {
        0 => "varint",
        1 => "fixed64",
        2 => "length-delimited",
        3 => "start-group",
        4 => "end-group",
        5 => "fixed32",
        _ => "invalid",
    }
}

/// The names of a message's fields, for errors (`(number, name)`).
pub(crate) type Names = &'static [(u32, &'static str)];

/// Reads the fields of one message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    names: Names,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, a message whose fields are called `names`.
    pub(crate) fn new(buf: &'a [u8], names: Names) -> Self {
        Reader { buf, pos: 0, names }
    }

    fn name(&self, number: u32) -> String {
        match self.names.iter().find(|(n, _)| *n == number) {
            Some((_, name)) => (*name).to_owned(),
            None => format!("field {number}"),
        }
    }

    fn read_varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(WireError::new("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError::new("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], WireError> {
        let rest = self.buf.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= rest => {
                let out = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(WireError::new(format!(
                "length {len} runs past the end of its message ({rest} bytes left)"
            ))),
        }
    }

    /// Skips a group whose start tag was just read, nested groups included.
    fn skip_group(&mut self, number: u32) -> Result<(), WireError> {
        let mut open = vec![number];
        while let Some(&inner) = open.last() {
            let key = self.read_varint()?;
            let (n, wire) = ((key >> 3) as u32, (key & 7) as u8);
            match wire {
                0 => drop(self.read_varint()?),
                1 => drop(self.take(8)?),
                2 => {
                    let len = self.read_varint()?;
                    self.take(len)?;
                }
                3 => open.push(n),
                4 if n == inner => drop(open.pop()),
                4 => return Err(WireError::new("end-group tag does not match its group")),
                5 => drop(self.take(4)?),
                w => return Err(WireError::new(format!("illegal wire type {w}"))),
            }
        }
        Ok(())
    }

    /// The next field: its number, wire type and value; `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<(u32, u8, Value<'a>)>, WireError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.read_varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let number = u32::try_from(number)
            .ok()
            .filter(|n| (1..=536_870_911).contains(n))
            .ok_or_else(|| WireError::new(format!("illegal field number {number}")))?;
        let value = self
            .value(number, wire)
            .map_err(|e| e.within(self.name(number)))?;
        Ok(Some((number, wire, value)))
    }

    fn value(&mut self, number: u32, wire: u8) -> Result<Value<'a>, WireError> {
        Ok(match wire {
            0 => Value::Varint(self.read_varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let len = self.read_varint()?;
                Value::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number)?;
                Value::Other
            }
            4 => return Err(WireError::new("unexpected end-group tag")),
            5 => {
                self.take(4)?;
                Value::Other
            }
            w => return Err(WireError::new(format!("illegal wire type {w}"))),
        })
    }
}

/// The error for a known field sent with another wire type.
pub(crate) fn wrong_wire(name: &str, got: u8, want: u8) -> WireError {
    WireError::new(format!(
        "wrong wire type {} ({}), expected {} ({})",
        got,
        wire_name(got),
        want,
        wire_name(want)
    ))
    .within(name)
}

/// A length-delimited field's bytes, or the wrong-wire-type error.
pub(crate) fn expect_bytes<'a>(name: &str, wire: u8, v: Value<'a>) -> Result<&'a [u8], WireError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_wire(name, wire, LEN)),
    }
}

/// A varint field's value, or the wrong-wire-type error.
pub(crate) fn expect_varint(name: &str, wire: u8, v: Value<'_>) -> Result<u64, WireError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(wrong_wire(name, wire, VARINT)),
    }
}

/// A string field (UTF-8 required: the model holds Rust strings).
pub(crate) fn expect_string(name: &str, wire: u8, v: Value<'_>) -> Result<String, WireError> {
    let b = expect_bytes(name, wire, v)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| WireError::new("not valid UTF-8").within(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, u8)>, String> {
        let mut r = Reader::new(buf, &[(1, "one")]);
        let mut out = Vec::new();
        while let Some((n, w, _)) = r.next().map_err(|e| e.to_string())? {
            out.push((n, w));
        }
        Ok(out)
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, v);
            let mut c = Counter::default();
            varint(&mut c, v);
            assert_eq!(c.0, out.len());
            let mut r = Reader::new(&out, &[]);
            assert_eq!(r.read_varint().unwrap(), v);
        }
    }

    #[test]
    fn malformed_input_is_named() {
        assert_eq!(fields(&[0x08]).unwrap_err(), "one: truncated varint");
        assert_eq!(
            fields(&[0x10, 0x80]).unwrap_err(),
            "field 2: truncated varint"
        );
        assert_eq!(fields(&[0x80]).unwrap_err(), "truncated varint");
        assert_eq!(
            fields(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .unwrap_err(),
            "one: varint longer than 10 bytes"
        );
        assert_eq!(
            fields(&[0x0a, 0x05, 1]).unwrap_err(),
            "one: length 5 runs past the end of its message (1 bytes left)"
        );
        assert_eq!(fields(&[0x00]).unwrap_err(), "illegal field number 0");
        assert_eq!(fields(&[0x0e]).unwrap_err(), "one: illegal wire type 6");
        assert_eq!(
            fields(&[0x0c]).unwrap_err(),
            "one: unexpected end-group tag"
        );
        assert_eq!(
            fields(&[0x09, 1, 2]).unwrap_err(),
            "one: length 8 runs past the end of its message (2 bytes left)"
        );
        // Groups, nested, are skipped whole; a mismatched end is an error.
        assert_eq!(
            fields(&[0x0b, 0x13, 0x08, 0x01, 0x14, 0x0c, 0x10, 0x02]).unwrap(),
            [(1, 3), (2, 0)]
        );
        assert!(
            fields(&[0x0b, 0x14])
                .unwrap_err()
                .contains("does not match")
        );
        assert_eq!(fields(&[0x0b]).unwrap_err(), "one: truncated varint");
    }

    #[test]
    fn paths_read_outside_in() {
        let e = WireError::new("truncated varint")
            .within("seconds")
            .within("time")
            .within("[1]")
            .within("managedFields")
            .within("metadata");
        assert_eq!(
            e.to_string(),
            "metadata.managedFields[1].time.seconds: truncated varint"
        );
        assert_eq!(
            wrong_wire("name", 0, LEN).to_string(),
            "name: wrong wire type 0 (varint), expected 2 (length-delimited)"
        );
    }
}
