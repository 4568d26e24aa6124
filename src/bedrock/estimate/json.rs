//! A small JSON reader for the estimator: a `serde::Deserializer` over a validated `&str` that
//! accepts the documents `serde_json::Value` accepts, and reads long strings several times faster.
//!
//! Why not `serde_json::Deserializer`? Request bodies are mostly long strings (prompts, chat
//! turns), and serde_json scans a string eight bytes at a time for `"`, `\` and control
//! characters. Here the scan is `memchr2` for `"` and `\` (SIMD), then one branch-free pass over
//! the same bytes, still in cache, for control characters. On a 32 KB Converse body that halves
//! the estimate.
//!
//! What it accepts, exactly as serde_json 1.x (`from_slice::<Value>`) does: RFC 8259 syntax; no
//! control characters inside strings; escapes `\" \\ \/ \b \f \n \r \t \uXXXX`, a high surrogate
//! only when followed by a `\u` low surrogate, never a lone low surrogate; integers as `u64` (or
//! `i64` when negative, except `-0`), everything else as a finite `f64` (a number that overflows
//! is an error); nesting at most 127 arrays/objects deep; only whitespace after the value. The
//! one place the two can differ is a float within a few ulps of `f64::MAX`: this reader rounds
//! correctly, serde_json (without its `float_roundtrip` feature) does not, so one of them may
//! call a number that is barely finite out of range.
//!
//! Strings without escapes are visited borrowed; strings with escapes are decoded into a
//! scratch buffer. Visitors see `visit_borrowed_str`/`visit_str`, `visit_u64`, `visit_i64`,
//! `visit_f64`, `visit_bool`, `visit_unit`, `visit_seq` and `visit_map`; every `deserialize_*`
//! method is `deserialize_any`.

// A parser: its arithmetic is on positions in the input (at most its length, far below
// `usize::MAX`) and on the nesting depth it bounds itself.
#![allow(clippy::arithmetic_side_effects)]

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A syntax error (the reader does not say where: the estimator only needs to know).
#[derive(Debug)]
pub(crate) struct Error;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid JSON")
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Error
    }
}

type Result<T> = std::result::Result<T, Error>;

/// serde_json's recursion limit: a 128th level of nesting is refused.
const DEPTH: u32 = 128;

/// The reader. Build it with [`Reader::new`], deserialize one value, then call [`Reader::end`].
pub(crate) struct Reader<'a> {
    input: &'a str,
    /// Whether the input holds a control character at all. Compact JSON (what the SDKs send)
    /// has none, and then no string needs checking for one.
    controls: bool,
    pos: usize,
    remaining_depth: u32,
    scratch: String,
}

/// A string read from the input: borrowed when it had no escapes, else in the scratch buffer.
enum Str<'a> {
    Borrowed(&'a str),
    Copied,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Self {
            input,
            controls: has_control(input.as_bytes()),
            pos: 0,
            remaining_depth: DEPTH,
            scratch: String::new(),
        }
    }

    /// Succeeds if only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<()> {
        self.skip_whitespace();
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(Error)
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.input.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        let bytes = self.bytes();
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Skips whitespace and consumes `byte`, or fails.
    fn expect(&mut self, byte: u8) -> Result<()> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Error)
        }
    }

    fn literal(&mut self, word: &str) -> Result<()> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Error)
        }
    }

    /// Reads a string whose opening quote has been consumed, up to and including its closing
    /// quote.
    fn string(&mut self) -> Result<Str<'a>> {
        let input = self.input;
        let bytes = self.bytes();
        let start = self.pos;
        let end = self.plain_run(start)?;
        if bytes[end] == b'"' {
            self.pos = end + 1;
            return Ok(Str::Borrowed(&input[start..end]));
        }
        // An escape: decode from here on. The runs between escapes are cut at ASCII bytes, so
        // they are whole UTF-8 sequences.
        self.scratch.clear();
        self.scratch.push_str(&input[start..end]);
        let mut at = end;
        loop {
            // `bytes[at]` is a backslash.
            at = self.escape(at + 1)?;
            let end = self.plain_run(at)?;
            self.scratch.push_str(&input[at..end]);
            if bytes[end] == b'"' {
                self.pos = end + 1;
                return Ok(Str::Copied);
            }
            at = end;
        }
    }

    /// The index of the next `"` or `\` from `from`; an error if a control character comes
    /// first or the input ends.
    fn plain_run(&self, from: usize) -> Result<usize> {
        let rest = &self.bytes()[from..];
        let Some(len) = memchr::memchr2(b'"', b'\\', rest) else {
            return Err(Error);
        };
        if self.controls && has_control(&rest[..len]) {
            Err(Error)
        } else {
            Ok(from + len)
        }
    }

    /// Decodes the escape after a backslash at `at - 1` into the scratch buffer; returns the
    /// index after it.
    fn escape(&mut self, at: usize) -> Result<usize> {
        let bytes = self.bytes();
        let decoded = match bytes.get(at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(at + 1),
            _ => return Err(Error),
        };
        self.scratch.push(decoded);
        Ok(at + 1)
    }

    /// A `\u` escape whose hex digits start at `at`: a code point outside the surrogates, or a
    /// high surrogate immediately followed by `\u` and a low surrogate.
    fn unicode_escape(&mut self, at: usize) -> Result<usize> {
        let n = self.hex4(at)?;
        let (code, next) = match n {
            0xDC00..=0xDFFF => return Err(Error),
            0xD800..=0xDBFF => {
                if self.bytes().get(at + 4..at + 6) != Some(b"\\u") {
                    return Err(Error);
                }
                let low = self.hex4(at + 6)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Error);
                }
                (
                    0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00),
                    at + 10,
                )
            }
            _ => (u32::from(n), at + 4),
        };
        self.scratch.push(char::from_u32(code).ok_or(Error)?);
        Ok(next)
    }

    fn hex4(&self, at: usize) -> Result<u16> {
        let digits = self.bytes().get(at..at + 4).ok_or(Error)?;
        digits.iter().try_fold(0u16, |n, &d| {
            let v = (d as char).to_digit(16).ok_or(Error)?;
            Ok((n << 4) | v as u16)
        })
    }

    /// Reads a number starting at the current position (a `-` or a digit).
    fn number<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut at = start;
        let negative = bytes[at] == b'-';
        if negative {
            at += 1;
        }
        // Integer part: `0`, or a non-zero digit and more digits.
        let int_start = at;
        match bytes.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = bytes.get(at) {
                    at += 1;
                }
            }
            _ => return Err(Error),
        }
        let int_end = at;
        if let Some(b'0'..=b'9') = bytes.get(at) {
            // A leading zero followed by more digits.
            return Err(Error);
        }
        let mut float = false;
        if bytes.get(at) == Some(&b'.') {
            float = true;
            at += 1;
            let digits = at;
            while let Some(b'0'..=b'9') = bytes.get(at) {
                at += 1;
            }
            if at == digits {
                return Err(Error);
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            float = true;
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            let digits = at;
            while let Some(b'0'..=b'9') = bytes.get(at) {
                at += 1;
            }
            if at == digits {
                return Err(Error);
            }
        }
        self.pos = at;
        if !float {
            // serde_json keeps integers that fit: u64, or i64 when negative (but not -0).
            if let Ok(magnitude) = self.input[int_start..int_end].parse::<u64>() {
                if !negative {
                    return visitor.visit_u64(magnitude);
                }
                let negated = (magnitude as i64).wrapping_neg();
                if negated < 0 {
                    return visitor.visit_i64(negated);
                }
            }
        }
        let value: f64 = self.input[start..at].parse().map_err(|_| Error)?;
        if value.is_infinite() {
            return Err(Error);
        }
        visitor.visit_f64(value)
    }

    fn enter(&mut self) -> Result<()> {
        self.remaining_depth -= 1;
        if self.remaining_depth == 0 {
            Err(Error)
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.remaining_depth += 1;
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES * 0x80;

/// Whether `bytes` holds a control character (below 0x20). Eight bytes at a time, without an
/// early exit, so that it vectorizes; the bytes are still in cache from the search.
pub(crate) fn has_control(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut seen = 0u64;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // A byte's high bit is set in `x - 0x20` and clear in `x` exactly when the byte is
        // below 0x20 (or when a lower byte of the word borrowed, which needs such a byte too).
        seen |= x.wrapping_sub(ONES * 0x20) & !x;
    }
    seen & HIGH_BITS != 0 || chunks.remainder().iter().any(|&b| b < 0x20)
}

/// Whether `bytes` holds a byte that JSON must escape: a control character, `"` or `\`.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut seen = 0u64;
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        seen |= (x.wrapping_sub(ONES * 0x20) & !x)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
    }
    seen & HIGH_BITS != 0
        || chunks
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                match self.string()? {
                    Str::Borrowed(s) => visitor.visit_borrowed_str(s),
                    Str::Copied => visitor.visit_str(&self.scratch),
                }
            }
            Some(b'{') => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_map(Entries {
                    reader: &mut *self,
                    first: true,
                })?;
                self.leave();
                self.expect(b'}')?;
                Ok(value)
            }
            Some(b'[') => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_seq(Elements {
                    reader: &mut *self,
                    first: true,
                })?;
                self.leave();
                self.expect(b']')?;
                Ok(value)
            }
            Some(b't') => {
                self.literal("true")?;
                visitor.visit_bool(true)
            }
            Some(b'f') => {
                self.literal("false")?;
                visitor.visit_bool(false)
            }
            Some(b'n') => {
                self.literal("null")?;
                visitor.visit_unit()
            }
            Some(b'-' | b'0'..=b'9') => self.number(visitor),
            _ => Err(Error),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The entries of an object whose `{` has been consumed. Stops (without consuming it) at `}`.
struct Entries<'r, 'a> {
    reader: &'r mut Reader<'a>,
    first: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let reader = &mut *self.reader;
        reader.skip_whitespace();
        match reader.peek() {
            Some(b'}') => return Ok(None),
            Some(b',') if !self.first => {
                reader.pos += 1;
                reader.skip_whitespace();
            }
            Some(b'"') if self.first => {}
            _ => return Err(Error),
        }
        self.first = false;
        // After a comma a key must follow (no trailing comma).
        if reader.peek() != Some(b'"') {
            return Err(Error);
        }
        seed.deserialize(&mut *reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.reader.expect(b':')?;
        seed.deserialize(&mut *self.reader)
    }
}

/// The elements of an array whose `[` has been consumed. Stops (without consuming it) at `]`.
struct Elements<'r, 'a> {
    reader: &'r mut Reader<'a>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let reader = &mut *self.reader;
        reader.skip_whitespace();
        match reader.peek() {
            Some(b']') => return Ok(None),
            Some(b',') if !self.first => {
                reader.pos += 1;
                reader.skip_whitespace();
                // No trailing comma.
                if reader.peek() == Some(b']') {
                    return Err(Error);
                }
            }
            Some(_) if self.first => {}
            _ => return Err(Error),
        }
        self.first = false;
        seed.deserialize(&mut *reader).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Accepts anything, like `serde::de::IgnoredAny`, but through `deserialize_any`.
    struct Any;

    impl<'de> DeserializeSeed<'de> for Any {
        type Value = serde_json::Value;
        fn deserialize<D: de::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_any(AnyVisitor)
        }
    }

    struct AnyVisitor;

    impl<'de> Visitor<'de> for AnyVisitor {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("anything")
        }
        fn visit_bool<E>(self, v: bool) -> std::result::Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E>(self, v: f64) -> std::result::Result<Self::Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
        }
        fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(v.into())
        }
        fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
            Ok(serde_json::Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Any)? {
                out.push(v);
            }
            Ok(out.into())
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(k) = map.next_key_seed(Any)? {
                let v = map.next_value_seed(Any)?;
                out.insert(k.as_str().expect("keys are strings").to_owned(), v);
            }
            Ok(out.into())
        }
    }

    fn ours(text: &str) -> Option<serde_json::Value> {
        let mut reader = Reader::new(text);
        let value = Any.deserialize(&mut reader).ok()?;
        reader.end().ok()?;
        Some(value)
    }

    fn theirs(text: &str) -> Option<serde_json::Value> {
        serde_json::from_str(text).ok()
    }

    /// Equal, floats within a relative 1e-12 (serde_json without `float_roundtrip` does not
    /// always round to the nearest float; this reader does).
    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match (a, b) {
            (Number(x), Number(y)) if x.is_f64() && y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
            (Object(x), Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((kx, x), (ky, y))| kx == ky && close(x, y))
            }
            _ => a == b,
        }
    }

    fn agree(text: &str) -> bool {
        match (ours(text), theirs(text)) {
            (Some(a), Some(b)) => close(&a, &b),
            (None, None) => true,
            _ => false,
        }
    }

    fn same(text: &str) {
        assert!(
            agree(text),
            "{text:?}: ours {:?}, serde_json {:?}",
            ours(text),
            theirs(text)
        );
    }

    #[test]
    fn agrees_with_serde_json_on_edge_cases() {
        let nested_ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let nested_deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        let cases = [
            "",
            " ",
            "{}",
            "[]",
            "[ ]",
            "{ }",
            "null",
            "true",
            "false",
            "nul",
            "tru",
            "fals",
            "0",
            "-0",
            "-",
            "01",
            "-01",
            "1.",
            ".5",
            "1.5",
            "1e5",
            "1E+5",
            "1e-5",
            "1e",
            "1e+",
            "-1.5e-3",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e308",
            "1e309",
            "-1e309",
            "1e-400",
            "0e99999999999",
            "123456789012345678901234567890",
            "1.5e300",
            "-2.5e-300",
            r#""a""#,
            r#""""#,
            r#""a\"b""#,
            r#""\\\/\b\f\n\r\t""#,
            r#""\u00e9""#,
            r#""\u00E9x""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\u12""#,
            r#""\x""#,
            r#""abc"#,
            "\"a\tb\"",
            "\"a\u{1}b\"",
            "\"a\u{7f}b\"",
            "\"é東🙂\"",
            "\"\\u0000\"",
            r#"{"a":1}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{1:2}"#,
            r#"{"a"}"#,
            r#"{"a":}"#,
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1,,2]",
            " [ 1 , 2 ] ",
            "[1] x",
            "[1]]",
            "{\"a\":[{\"b\":null}]}\n",
            "\u{feff}{}",
            "{}\u{0}",
            "[\"a\\u0041\\n\"]",
            &nested_ok,
            &nested_deep,
        ];
        for case in cases {
            same(case);
        }
    }

    #[test]
    fn byte_class_scans_match_the_simple_loops() {
        for len in 0..40 {
            for at in 0..len {
                for byte in 0u8..=255 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(has_control(&bytes), byte < 0x20);
                    assert_eq!(
                        needs_escape(&bytes),
                        byte < 0x20 || byte == b'"' || byte == b'\\'
                    );
                }
            }
        }
    }

    fn json_ish() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\\u".to_owned()),
            Just("d83d".to_owned()),
            Just("de00".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("-".to_owned()),
            Just("0".to_owned()),
            Just("7".to_owned()),
            Just(".".to_owned()),
            Just("e".to_owned()),
            Just("\"k\"".to_owned()),
            Just("é".to_owned()),
            Just("\t".to_owned()),
            "[a-z0-9]{1,4}",
        ];
        proptest::collection::vec(atom, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_serde_json_on_valid_documents(value in any_value()) {
            let compact = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(ours(&compact), Some(value.clone()));
            prop_assert_eq!(ours(&pretty), Some(value));
        }

        #[test]
        fn agrees_with_serde_json_on_garbage(text in json_ish()) {
            prop_assert!(agree(&text), "{:?}: ours {:?}, serde_json {:?}", text, ours(&text), theirs(&text));
        }
    }

    fn any_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(Into::into),
            any::<u64>().prop_map(Into::into),
            any::<i64>().prop_map(Into::into),
            (-1e300f64..1e300).prop_map(Into::into),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Into::into),
                proptest::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
