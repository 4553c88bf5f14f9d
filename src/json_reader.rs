//! A small JSON pull reader for the admission hot path.
//!
//! An AdmissionReview is mostly fields this webhook never reads (managedFields, volumes, env,
//! resources, userInfo, ...). A general deserializer walks all of them value by value; this reader
//! reads the handful of fields the decision needs and skips the rest with a flat loop that scans
//! strings 16 bytes at a time (eight without SSE2) and allocates nothing. Strings without escapes
//! are borrowed.
//!
//! Skipped values are still checked: the grammar (RFC 8259), escapes, numbers, literals and control
//! characters, nested to any depth without recursion. UTF-8 is checked in every string that is read;
//! a skipped string and a value kept as raw text (annotation values) are only checked for their
//! escapes, as serde_json checks the strings it skips. So is a key that matches no field (serde_json
//! would check its UTF-8 too); the API server only sends UTF-8.

use std::borrow::Cow;
use std::fmt;

/// Where and why a body is not what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct JsonError {
    pub kind: ErrorKind,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    UnexpectedEnd,
    Expected(&'static str),
    InvalidType {
        found: &'static str,
        expected: &'static str,
    },
    DuplicateField(&'static str),
    InvalidUtf8,
    InvalidEscape,
    LoneSurrogate,
    ControlCharacter,
    TrailingCharacters,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd => f.write_str("unexpected end of input"),
            Self::Expected(what) => write!(f, "expected {what}"),
            Self::InvalidType { found, expected } => {
                write!(f, "invalid type: {found}, expected {expected}")
            }
            Self::DuplicateField(name) => write!(f, "duplicate field `{name}`"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8 in a string"),
            Self::InvalidEscape => f.write_str("invalid escape in a string"),
            Self::LoneSurrogate => f.write_str("lone surrogate in a \\u escape"),
            Self::ControlCharacter => f.write_str("control character in a string"),
            Self::TrailingCharacters => f.write_str("trailing characters"),
        }
    }
}

pub type Result<T> = std::result::Result<T, JsonError>;

/// An object key as it appears in the text. Most keys have no escapes and are compared as bytes.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
    offset: usize,
}

impl<'a> Key<'a> {
    /// Whether this key is `name` (escapes in the key are decoded first, as JSON requires).
    pub fn is(&self, name: &str) -> bool {
        if self.escaped {
            decode(self.raw, true, self.offset).is_ok_and(|key| key == name)
        } else {
            self.raw == name.as_bytes()
        }
    }

    pub fn decode(&self) -> Result<Cow<'a, str>> {
        decode(self.raw, self.escaped, self.offset)
    }
}

/// Reads one JSON text from a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Where the reader is, to come back to with [`Reader::set_position`].
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn set_position(&mut self, position: usize) {
        self.pos = position.min(self.bytes.len());
    }

    /// Succeeds when only whitespace is left.
    pub fn finish(mut self) -> Result<()> {
        self.skip_whitespace();
        if self.pos < self.bytes.len() {
            return Err(self.error(ErrorKind::TrailingCharacters));
        }
        Ok(())
    }

    fn error(&self, kind: ErrorKind) -> JsonError {
        JsonError {
            kind,
            offset: self.pos,
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline]
    fn peek(&mut self) -> Result<u8> {
        // The API server sends compact JSON: whitespace is the exception.
        match self.bytes.get(self.pos) {
            Some(&b) if b > b' ' => Ok(b),
            _ => self.peek_after_whitespace(),
        }
    }

    #[cold]
    fn peek_after_whitespace(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.error(ErrorKind::UnexpectedEnd))
    }

    fn invalid_type(&mut self, expected: &'static str) -> JsonError {
        let found = match self.peek() {
            Ok(b'{') => "object",
            Ok(b'[') => "array",
            Ok(b'"') => "string",
            Ok(b'-' | b'0'..=b'9') => "number",
            Ok(b't' | b'f') => "boolean",
            Ok(b'n') => "null",
            Ok(_) => return self.error(ErrorKind::Expected("a value")),
            Err(error) => return error,
        };
        self.error(ErrorKind::InvalidType { found, expected })
    }

    /// Consumes a `null` if one is next.
    pub fn take_null(&mut self) -> Result<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn read_str(&mut self, expected: &'static str) -> Result<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return Err(self.invalid_type(expected));
        }
        let offset = self.pos;
        let (raw, escaped) = self.scan_string()?;
        decode(raw, escaped, offset)
    }

    /// A string, or `None` for `null`.
    pub fn read_optional_str(&mut self, expected: &'static str) -> Result<Option<Cow<'a, str>>> {
        if self.take_null()? {
            return Ok(None);
        }
        self.read_str(expected).map(Some)
    }

    /// A boolean, or `None` for `null`.
    pub fn read_optional_bool(&mut self, expected: &'static str) -> Result<Option<bool>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            _ => Err(self.invalid_type(expected)),
        }
    }

    /// Reads an object; `field` is called with each key and must consume its value.
    pub fn read_object(
        &mut self,
        expected: &'static str,
        mut field: impl FnMut(&mut Self, Key<'a>) -> Result<()>,
    ) -> Result<()> {
        if self.peek()? != b'{' {
            return Err(self.invalid_type(expected));
        }
        self.pos += 1;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.key_and_colon()?;
            // An escape in a key of an object that is read must decode (no lone surrogate): the
            // key is compared decoded. A key without escapes is compared byte for byte, so one
            // that is not UTF-8 matches no field and its value is skipped, as a skipped string is.
            if key.escaped {
                key.decode()?;
            }
            field(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error(ErrorKind::Expected("',' or '}'"))),
            }
        }
    }

    /// Reads an array; `item` is called for each element and must consume it.
    pub fn read_array(
        &mut self,
        expected: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if self.peek()? != b'[' {
            return Err(self.invalid_type(expected));
        }
        self.pos += 1;
        if self.peek()? == b']' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error(ErrorKind::Expected("',' or ']'"))),
            }
        }
    }

    /// Skips one value of any kind, checking its grammar, and returns its text.
    pub fn skip_value(&mut self) -> Result<&'a [u8]> {
        self.skip_whitespace();
        let start = self.pos;
        let mut nesting = Nesting::default();
        'value: loop {
            match self.peek()? {
                b'{' => {
                    self.pos += 1;
                    if self.peek()? == b'}' {
                        self.pos += 1;
                    } else {
                        nesting.push(true);
                        self.key_and_colon()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.pos += 1;
                    if self.peek()? == b']' {
                        self.pos += 1;
                    } else {
                        nesting.push(false);
                        continue 'value;
                    }
                }
                b'"' => {
                    self.scan_string()?;
                }
                b'-' | b'0'..=b'9' => self.skip_number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(self.error(ErrorKind::Expected("a value"))),
            }
            // After a value: close containers until one continues with a comma.
            while let Some(in_object) = nesting.top() {
                match (self.peek()?, in_object) {
                    (b',', _) => {
                        self.pos += 1;
                        if in_object {
                            self.key_and_colon()?;
                        }
                        continue 'value;
                    }
                    (b'}', true) | (b']', false) => {
                        self.pos += 1;
                        nesting.pop();
                    }
                    (_, true) => return Err(self.error(ErrorKind::Expected("',' or '}'"))),
                    (_, false) => return Err(self.error(ErrorKind::Expected("',' or ']'"))),
                }
            }
            return Ok(&self.bytes[start..self.pos]);
        }
    }

    fn key_and_colon(&mut self) -> Result<Key<'a>> {
        if self.peek()? != b'"' {
            return Err(self.error(ErrorKind::Expected("a string key")));
        }
        let offset = self.pos;
        let (raw, escaped) = self.scan_string()?;
        if self.peek()? != b':' {
            return Err(self.error(ErrorKind::Expected("':'")));
        }
        self.pos += 1;
        Ok(Key {
            raw,
            escaped,
            offset,
        })
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(())
        } else if end > self.bytes.len()
            && self.bytes[self.pos..].iter().zip(word).all(|(a, b)| a == b)
        {
            self.pos = self.bytes.len();
            Err(self.error(ErrorKind::UnexpectedEnd))
        } else {
            Err(self.error(ErrorKind::Expected("a value")))
        }
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn skip_number(&mut self) -> Result<()> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.skip_digits();
            }
            Some(_) => return Err(self.error(ErrorKind::Expected("a digit"))),
            None => return Err(self.error(ErrorKind::UnexpectedEnd)),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.skip_digits() == 0 {
                return Err(self.digit_error());
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.skip_digits() == 0 {
                return Err(self.digit_error());
            }
        }
        Ok(())
    }

    fn digit_error(&self) -> JsonError {
        if self.pos >= self.bytes.len() {
            self.error(ErrorKind::UnexpectedEnd)
        } else {
            self.error(ErrorKind::Expected("a digit"))
        }
    }

    /// Consumes a string (the reader is at its opening quote) and returns the text between the
    /// quotes and whether it has escapes. Escapes are checked here; UTF-8 is checked on decoding.
    #[inline(always)]
    fn scan_string(&mut self) -> Result<(&'a [u8], bool)> {
        let start = self.pos + 1;
        let end = plain_run_end(self.bytes, start);
        if self.bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok((&self.bytes[start..end], false));
        }
        self.scan_rest_of_string(start, end)
    }

    /// A string with escapes (or a bad one), from its first escape or stop byte on.
    #[cold]
    #[inline(never)]
    fn scan_rest_of_string(&mut self, start: usize, mut at: usize) -> Result<(&'a [u8], bool)> {
        let mut escaped = false;
        loop {
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.pos = at + 1;
                    return Ok((&self.bytes[start..at], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.bytes.get(at + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            at = plain_run_end(self.bytes, at + 2);
                        }
                        Some(b'u') => {
                            for i in at + 2..at + 6 {
                                match self.bytes.get(i) {
                                    Some(b) if b.is_ascii_hexdigit() => {}
                                    Some(_) => {
                                        self.pos = i;
                                        return Err(self.error(ErrorKind::InvalidEscape));
                                    }
                                    None => {
                                        self.pos = i;
                                        return Err(self.error(ErrorKind::UnexpectedEnd));
                                    }
                                }
                            }
                            at = plain_run_end(self.bytes, at + 6);
                        }
                        Some(_) => {
                            self.pos = at + 1;
                            return Err(self.error(ErrorKind::InvalidEscape));
                        }
                        None => {
                            self.pos = at + 1;
                            return Err(self.error(ErrorKind::UnexpectedEnd));
                        }
                    }
                }
                Some(_) => {
                    self.pos = at;
                    return Err(self.error(ErrorKind::ControlCharacter));
                }
                None => {
                    self.pos = at;
                    return Err(self.error(ErrorKind::UnexpectedEnd));
                }
            }
        }
    }
}

/// The index of the first `"`, `\` or control character at or after `at` (or the end).
/// Sixteen bytes at a time with SSE2 (part of every x86-64 CPU); most strings of a review end
/// within the first sixteen bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    while let Some(chunk) = bytes.get(at..at + 16) {
        // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are always available;
        // `chunk` is 16 readable bytes and loadu has no alignment requirement.
        let stops = unsafe {
            let block = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(block, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(block, _mm_set1_epi8(b'\\' as i8));
            // b <= 0x1f exactly when max(b, 0x1f) == 0x1f (unsigned).
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(block, low), low);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        if stops != 0 {
            return at + stops.trailing_zeros() as usize;
        }
        at += 16;
    }
    plain_run_end_portable(bytes, at)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn plain_run_end(bytes: &[u8], at: usize) -> usize {
    plain_run_end_portable(bytes, at)
}

/// Eight bytes at a time: the lowest flagged byte of each word test is always a true match.
fn plain_run_end_portable(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let flagged = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        let flagged = flagged & HIGH;
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at += 1;
    }
    at
}

/// The text of a string (between its quotes, escapes already checked) as `str`.
fn decode(raw: &[u8], escaped: bool, offset: usize) -> Result<Cow<'_, str>> {
    let invalid = |kind| JsonError { kind, offset };
    if !escaped {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| invalid(ErrorKind::InvalidUtf8));
    }
    let mut text = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(slash) = rest.iter().position(|&b| b == b'\\') {
        let plain =
            std::str::from_utf8(&rest[..slash]).map_err(|_| invalid(ErrorKind::InvalidUtf8))?;
        text.push_str(plain);
        let escape = rest.get(slash + 1).copied().unwrap_or(b'?');
        rest = rest.get(slash + 2..).unwrap_or_default();
        let c = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let (unit, after) = hex4(rest).ok_or_else(|| invalid(ErrorKind::InvalidEscape))?;
                rest = after;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = rest
                            .strip_prefix(b"\\u")
                            .and_then(hex4)
                            .filter(|(low, _)| (0xDC00..=0xDFFF).contains(low));
                        let Some((low, after)) = low else {
                            return Err(invalid(ErrorKind::LoneSurrogate));
                        };
                        rest = after;
                        let code = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        char::from_u32(code).ok_or_else(|| invalid(ErrorKind::LoneSurrogate))?
                    }
                    0xDC00..=0xDFFF => return Err(invalid(ErrorKind::LoneSurrogate)),
                    unit => char::from_u32(u32::from(unit))
                        .ok_or_else(|| invalid(ErrorKind::InvalidEscape))?,
                }
            }
            _ => return Err(invalid(ErrorKind::InvalidEscape)),
        };
        text.push(c);
    }
    text.push_str(std::str::from_utf8(rest).map_err(|_| invalid(ErrorKind::InvalidUtf8))?);
    Ok(Cow::Owned(text))
}

fn hex4(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let digits = std::str::from_utf8(bytes.get(..4)?).ok()?;
    let unit = u16::from_str_radix(digits, 16).ok()?;
    Some((unit, &bytes[4..]))
}

/// Which containers are open while skipping (object or array), one bit each; the first 64 levels
/// live in a word, deeper ones spill to the heap.
#[derive(Default)]
struct Nesting {
    bits: u64,
    depth: usize,
    spilled: Vec<u64>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.spilled.push(self.bits);
            self.bits = 0;
        }
        self.bits = (self.bits << 1) | u64::from(object);
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.bits = self.spilled.pop().unwrap_or_default();
        }
    }

    /// Whether the innermost open container is an object; `None` at the top level.
    fn top(&self) -> Option<bool> {
        (self.depth > 0).then_some(self.bits & 1 == 1)
    }
}

/// Which fields of one object were seen, to refuse a field given twice.
#[derive(Debug, Default)]
pub struct Seen(u32);

impl Seen {
    /// Marks field number `bit` (named `name`) as seen; an error if it was already.
    pub fn first(&mut self, bit: u32, name: &'static str, key: &Key<'_>) -> Result<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return Err(JsonError {
                kind: ErrorKind::DuplicateField(name),
                offset: key.offset,
            });
        }
        self.0 |= mask;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip_all(text: &[u8]) -> Result<()> {
        let mut reader = Reader::new(text);
        reader.skip_value()?;
        reader.finish()
    }

    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn skipping_accepts_and_refuses_what_serde_json_does() {
        let cases: &[&[u8]] = &[
            b"{}",
            b"[]",
            b" { } ",
            b"null",
            b"true",
            b"false",
            b"0",
            b"-0",
            b"-0.5e+10",
            b"1E5",
            b"12345678901234567890123",
            b"\"\"",
            b"\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            b"\"\xc3\xa9 plain UTF-8\"",
            b"{\"a\":[1,{\"b\":null},\"x\"],\"c\":{}}",
            b"[[[[[[]]]]]]",
            b"{\"a\":1,\"a\":2}",
            b"",
            b" ",
            b"{",
            b"}",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{\"a\":}",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"01",
            b"1.",
            b".5",
            b"-",
            b"1e",
            b"1e+",
            b"+1",
            b"tru",
            b"nul",
            b"falsy",
            b"True",
            b"\"abc",
            b"\"a\\x\"",
            b"\"a\\u12G4\"",
            b"\"a\\u12\"",
            b"\"tab\there\"",
            b"\"nul\x00byte\"",
            b"\"\\",
            b"[1]x",
            b"{} {}",
            b"NaN",
            b"\xef\xbb\xbf{}",
        ];
        for &case in cases {
            assert_eq!(
                skip_all(case).is_ok(),
                serde_accepts(case),
                "{:?}: {:?}",
                String::from_utf8_lossy(case),
                skip_all(case)
            );
        }
    }

    #[test]
    fn skipping_agrees_with_serde_json_on_every_prefix_and_byte_flip_of_a_review() {
        let review = include_bytes!("../tests/fixtures/admission-reviews/pod-create-direct.json");
        for end in 0..=review.len() {
            let prefix = &review[..end];
            assert_eq!(
                skip_all(prefix).is_ok(),
                serde_accepts(prefix),
                "prefix of {end} bytes"
            );
        }
        // Replace each structural or string byte by each of a set of troublemakers.
        let replacements = [
            b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'e', b' ', b'x', 0x01,
        ];
        for at in 0..review.len() {
            for &with in &replacements {
                let mut changed = review.to_vec();
                changed[at] = with;
                assert_eq!(
                    skip_all(&changed).is_ok(),
                    serde_accepts(&changed),
                    "byte {at} set to {with:?}: {:?}",
                    skip_all(&changed)
                );
            }
        }
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        for depth in [63, 64, 65, 128, 129, 100_000] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert!(skip_all(text.as_bytes()).is_ok(), "depth {depth}");
            let mixed = format!("{}1{}", "{\"a\":[".repeat(depth), "]}".repeat(depth));
            assert!(skip_all(mixed.as_bytes()).is_ok(), "mixed depth {depth}");
            let wrong = format!("{}1{}]", "{\"a\":[".repeat(depth), "]}".repeat(depth - 1));
            assert!(
                skip_all(wrong.as_bytes()).is_err(),
                "mismatched close at depth {depth}"
            );
            let open = "[".repeat(depth);
            assert_eq!(
                skip_all(open.as_bytes()).map_err(|e| e.kind),
                Err(ErrorKind::UnexpectedEnd)
            );
        }
    }

    #[test]
    fn strings_are_decoded_like_serde_json_and_borrowed_without_escapes() {
        let cases: &[&str] = &[
            r#""plain""#,
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u4e2d\ud83d\ude00\u0000""#,
            "\"caf\u{e9} \u{1f680}\"",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
        ];
        for &case in cases {
            let ours = Reader::new(case.as_bytes())
                .read_str("a string")
                .map(|s| s.into_owned());
            let theirs = serde_json::from_str::<String>(case);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{case}: {ours:?} vs {theirs:?}"
            );
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, theirs, "{case}");
            }
        }
        let borrowed = Reader::new(b"\"gcr.io/a/b\"")
            .read_str("a string")
            .expect("str");
        assert!(matches!(borrowed, Cow::Borrowed("gcr.io/a/b")));
        let invalid = Reader::new(b"\"a\xc3\"").read_str("a string");
        assert_eq!(invalid.map_err(|e| e.kind), Err(ErrorKind::InvalidUtf8));
    }

    #[test]
    fn the_eight_byte_scan_finds_the_first_stop_byte_at_every_position() {
        for len in 0..70 {
            for stop_at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f] {
                    let mut text = vec![b'a'; len];
                    // Bytes that look like stop bytes to a careless word test.
                    for (i, b) in text.iter_mut().enumerate() {
                        *b = [b'a', 0x80, 0xff, b'!', b'#', 0x20, 0xa2, 0xdc][i % 8];
                    }
                    text[stop_at] = stop;
                    if stop_at + 1 < len {
                        text[stop_at + 1] = b'"';
                    }
                    assert_eq!(
                        plain_run_end(&text, 0),
                        stop_at,
                        "len {len}, stop {stop:#x} at {stop_at}"
                    );
                    assert_eq!(
                        plain_run_end_portable(&text, 0),
                        stop_at,
                        "portable: len {len}, stop {stop:#x} at {stop_at}"
                    );
                }
            }
            let clean = vec![b'z'; len];
            assert_eq!(plain_run_end(&clean, 0), len);
            assert_eq!(plain_run_end_portable(&clean, 0), len);
        }
    }

    #[test]
    fn objects_report_types_and_duplicates() {
        let mut reader = Reader::new(br#"{"a":"x","b":7}"#);
        let mut seen = Seen::default();
        let error = reader
            .read_object("an object", |r, key| {
                if key.is("a") {
                    seen.first(0, "a", &key)?;
                    r.read_str("a string").map(drop)
                } else {
                    r.read_str("a string for b").map(drop)
                }
            })
            .expect_err("b is a number");
        assert_eq!(
            error.to_string(),
            "invalid type: number, expected a string for b at byte 13"
        );
        let mut reader = Reader::new(br#"{"a":"x","\u0061":"y"}"#);
        let mut seen = Seen::default();
        let error = reader
            .read_object("an object", |r, key| {
                assert!(key.is("a"));
                seen.first(0, "a", &key)?;
                r.read_str("a string").map(drop)
            })
            .expect_err("duplicate");
        assert_eq!(error.kind, ErrorKind::DuplicateField("a"));
        let error = Reader::new(b"[1]")
            .read_object("an object", |_, _| Ok(()))
            .expect_err("array");
        assert_eq!(
            error.to_string(),
            "invalid type: array, expected an object at byte 0"
        );
        // A key with an escape that cannot decode is refused in an object that is read (serde_json
        // refuses it as a key it reads), and skipped in a skipped one (so does serde_json).
        let lone_surrogate: &[u8] = br#"{"\ud800":1}"#;
        let error = Reader::new(lone_surrogate)
            .read_object("an object", |r, _| r.skip_value().map(drop))
            .expect_err("lone surrogate in a key");
        assert_eq!(error.kind, ErrorKind::LoneSurrogate);
        assert!(Reader::new(lone_surrogate).skip_value().is_ok());
        assert!(serde_accepts(lone_surrogate));
        let read_by_serde =
            serde_json::from_slice::<std::collections::HashMap<String, u8>>(lone_surrogate);
        assert!(read_by_serde.is_err());
        // A key that is not UTF-8 matches no field: its value is skipped, unread.
        let mut matched = false;
        Reader::new(b"{\"a\xff\":1}")
            .read_object("an object", |r, key| {
                matched |= key.is("a") || key.is("a\u{ff}");
                r.skip_value().map(drop)
            })
            .expect("skipped like an unknown field");
        assert!(!matched);
    }
}
