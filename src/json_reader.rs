//! A small JSON pull reader for the admission hot path.
//!
//! An AdmissionReview is mostly fields this webhook never reads (managedFields, volumes, env,
//! resources, userInfo, ...). A general deserializer walks all of them value by value; this reader
//! reads the handful of fields the decision needs, checking their grammar (RFC 8259) fully, and
//! skips the rest. Strings without escapes are borrowed; nothing is allocated to skip.
//!
//! How much of a skipped value is checked:
//! - a skipped string or scalar: fully (escapes, control characters, numbers, literals);
//! - a skipped object or array: its structure, 64 bytes at a time: brackets balance and pair up,
//!   at any depth and without recursion, and every string inside ends, has only valid escapes and
//!   no raw control character. The commas, colons and scalars between them are not checked, as
//!   simdjson's On-Demand API does not check the values it skips: the API server only sends JSON
//!   it wrote itself, and what this webhook decides never depends on a value it skips. A body
//!   that is cut short is always refused.
//!
//! The keys and strings that are read are found through a window of stop-byte masks over the next
//! 64 bytes, kept from one scan to the next: a key, its value and the next key are usually in the
//! same window.
//!
//! UTF-8 is checked in every string that is read; a skipped string and a value kept as raw text
//! (annotation values) are not, as serde_json does not check the strings it skips.
//!
//! The 64-byte blocks are classified with SSE2 (every x86-64 CPU), or with AVX-512BW and a
//! carry-less multiply where the CPU has them (std's feature detection, cached after the first
//! call); elsewhere byte by byte.
//! All kernels are tested to mark the same bytes and to skip alike.

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
    window: StopWindow,
}

/// The stop bytes of 64 bytes of the text, kept from one scan to the next: the keys and values of
/// the objects that are read are short, and several follow each other within 64 bytes.
#[derive(Clone, Copy)]
struct StopWindow {
    start: usize,
    /// Quotes, backslashes and control characters (bit i: byte `start + i`).
    stops: u64,
    /// Bytes above 0x7f.
    high: u64,
}

impl StopWindow {
    /// The stop bytes of the window; with `NON_ASCII`, the bytes above 0x7f too.
    #[inline(always)]
    fn stops<const NON_ASCII: bool>(&self) -> u64 {
        if NON_ASCII {
            self.stops | self.high
        } else {
            self.stops
        }
    }

    /// Covers no position: a text is at most `isize::MAX` bytes long, so every offset from this
    /// start wraps to 2^63 or more.
    const EMPTY: Self = Self {
        start: usize::MAX / 2 + 1,
        stops: 0,
        high: 0,
    };
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            window: StopWindow::EMPTY,
        }
    }

    /// [`plain_run_end`] through the window: where the window already covers `at`, a shift and a
    /// count of trailing zeros, with no load of the text on the way from one scan to the next.
    #[inline(always)]
    fn run_end<const NON_ASCII: bool>(&mut self, at: usize) -> usize {
        let offset = at.wrapping_sub(self.window.start);
        if offset < 64 {
            let stops = self.window.stops::<NON_ASCII>() >> offset;
            if stops != 0 {
                return at + stops.trailing_zeros() as usize;
            }
            if self.window.start + 64 >= self.bytes.len() {
                return self.bytes.len();
            }
        }
        self.refill_run_end::<NON_ASCII>(at)
    }

    /// [`Reader::run_end`] past the window: the window moves to `at`, then on by 64 bytes until
    /// it holds a stop byte or the text ends.
    #[inline(never)]
    fn refill_run_end<const NON_ASCII: bool>(&mut self, mut at: usize) -> usize {
        loop {
            if at >= self.bytes.len() {
                return self.bytes.len();
            }
            self.window = window_at(self.bytes, at);
            let stops = self.window.stops::<NON_ASCII>();
            if stops != 0 {
                return at + stops.trailing_zeros() as usize;
            }
            at += 64;
        }
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
    #[inline(always)]
    pub fn take_null(&mut self) -> Result<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Inlined where it is read: the plain case is a scan and a borrow, less than a call costs.
    #[inline(always)]
    pub fn read_str(&mut self, expected: &'static str) -> Result<Cow<'a, str>> {
        if self.bytes.get(self.pos) == Some(&b'"') {
            // Nearly every string the API server sends is ASCII without escapes: told by the scan
            // that finds its end, with no second pass to check its UTF-8.
            let start = self.pos + 1;
            let end = self.run_end::<true>(start);
            if self.bytes.get(end) == Some(&b'"') {
                self.pos = end + 1;
                let text = &self.bytes[start..end];
                // SAFETY: the scan stopped at no byte above 0x7f: `text` is ASCII, which is UTF-8.
                return Ok(Cow::Borrowed(unsafe {
                    std::str::from_utf8_unchecked(text)
                }));
            }
            // Past the ASCII run, the rest is scanned as any string is, not from its start again.
            return self.rest_of_str(start, end);
        }
        self.any_str(expected)
    }

    /// [`Reader::read_str`] when the next byte is not a quote: whitespace before a string, or not
    /// a string at all.
    #[inline(never)]
    fn any_str(&mut self, expected: &'static str) -> Result<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return Err(self.invalid_type(expected));
        }
        let start = self.pos + 1;
        self.rest_of_str(start, start)
    }

    /// The string whose text starts at `start`, scanned on from `from`: escapes or bytes above
    /// 0x7f in it.
    #[inline(never)]
    fn rest_of_str(&mut self, start: usize, from: usize) -> Result<Cow<'a, str>> {
        let offset = self.pos;
        let (raw, escaped) = self.scan_string_from(start, from)?;
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

    /// Skips one value of any kind and returns its text; how much of it is checked is in the
    /// module docs.
    #[inline(always)]
    pub fn skip_value(&mut self) -> Result<&'a [u8]> {
        // Most skipped values are short strings without escapes: found here without a call.
        let start = self.pos;
        if self.bytes.get(start) == Some(&b'"') {
            let stop = self.run_end::<false>(start + 1);
            if self.bytes.get(stop) == Some(&b'"') {
                self.pos = stop + 1;
                return Ok(&self.bytes[start..=stop]);
            }
            return self.skip_rest_of_string(start, stop);
        }
        self.skip_any_value()
    }

    /// [`Reader::skip_value`] for the string at `start` whose first escape or control character
    /// is at `stop`: scanned on from there, not from its start again.
    #[inline(never)]
    fn skip_rest_of_string(&mut self, start: usize, stop: usize) -> Result<&'a [u8]> {
        match escaped_string_end(self.bytes, stop) {
            Some(end) => {
                self.pos = end;
                Ok(&self.bytes[start..end])
            }
            None => self.skip_value_explained(),
        }
    }

    #[inline(never)]
    fn skip_any_value(&mut self) -> Result<&'a [u8]> {
        let start = whitespace_end(self.bytes, self.pos);
        self.pos = start;
        match skipped_value_end(self.bytes, start) {
            Some(end) => {
                self.pos = end;
                Ok(&self.bytes[start..end])
            }
            None => self.skip_value_explained(),
        }
    }

    /// Skips one value step by step, checking its whole grammar: run when [`Reader::skip_value`]
    /// refuses a value, to say where and why.
    #[cold]
    #[inline(never)]
    fn skip_value_explained(&mut self) -> Result<&'a [u8]> {
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

    // Inlined into the object loop: called for every key, its call and its result written
    // through memory cost as much as the scan.
    #[inline(always)]
    fn key_and_colon(&mut self) -> Result<Key<'a>> {
        // Compact JSON and a key without escapes, as the API server writes nearly every key.
        let start = self.pos + 1;
        if self.bytes.get(self.pos) == Some(&b'"') {
            let end = self.run_end::<false>(start);
            if self.bytes.get(end..end + 2) == Some(b"\":") {
                let offset = self.pos;
                self.pos = end + 2;
                return Ok(Key {
                    raw: &self.bytes[start..end],
                    escaped: false,
                    offset,
                });
            }
        }
        self.any_key_and_colon()
    }

    /// [`Reader::key_and_colon`] for any key: whitespace around it, escapes in it, or errors.
    #[inline(never)]
    fn any_key_and_colon(&mut self) -> Result<Key<'a>> {
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
        self.scan_string_from(start, start)
    }

    /// [`Reader::scan_string`] for the string whose text starts at `start`, from `from` on: the
    /// bytes between them are already known to be plain (no quote, escape or control character).
    #[inline(always)]
    fn scan_string_from(&mut self, start: usize, from: usize) -> Result<(&'a [u8], bool)> {
        let end = plain_run_end(self.bytes, from);
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

/// Just past the value that starts at `at`, or `None` if it is invalid as far as skipping checks
/// (the module docs say how far).
#[inline(always)]
fn skipped_value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string_end(bytes, at + 1),
        // `{}` and `[]` (resources, securityContext, ...) are common: no block to scan.
        open @ (b'{' | b'[') if bytes.get(at + 1) == Some(&(open + 2)) => Some(at + 2),
        b'{' | b'[' => container_end(bytes, at),
        _ => scalar_end(bytes, at),
    }
}

/// Just past the number or literal at `at`, if it is a valid one.
#[inline(always)]
fn scalar_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'-' | b'0'..=b'9' => number_end(bytes, at),
        b't' => literal_end(bytes, at, b"true"),
        b'f' => literal_end(bytes, at, b"false"),
        b'n' => literal_end(bytes, at, b"null"),
        _ => None,
    }
}

/// Just past the `}` or `]` that closes the object or array opening at `at`, or `None` if its
/// structure is broken (see the module docs for what is checked). Works on 64-byte blocks: one
/// bit per byte for quotes, backslashes, brackets and control characters; which bytes are inside
/// strings follows from the unescaped quotes by a prefix XOR; only the brackets outside strings
/// are then visited one by one.
///
/// The value is not an empty `{}` or `[]` (the caller answers those without a scan): the walk
/// drops every empty pair, and would drop that one too.
fn container_end(bytes: &[u8], at: usize) -> Option<usize> {
    debug_assert!(
        bytes.get(at + 1) != bytes.get(at).map(|open| open + 2).as_ref(),
        "an empty container is not scanned"
    );
    with_widest_kernel::<ContainerEnd>(bytes, at)
}

/// A scan over 64-byte blocks, written once for every mask kernel.
trait BlockScan {
    /// # Safety
    /// The CPU has the features `K` needs.
    unsafe fn scan<K: MaskKernel>(bytes: &[u8], at: usize) -> Option<usize>;
}

/// Runs `S` with the widest mask kernel the CPU has.
#[inline(always)]
fn with_widest_kernel<S: BlockScan>(bytes: &[u8], at: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_available() {
            // SAFETY: the CPU has AVX-512F, AVX-512BW and PCLMULQDQ.
            return unsafe { with_avx512::<S>(bytes, at) };
        }
    }
    // SAFETY: the portable kernel needs no CPU feature beyond the target's baseline.
    unsafe { S::scan::<Baseline>(bytes, at) }
}

/// `S` compiled for AVX-512, so that the kernel's instructions inline into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,pclmulqdq")]
unsafe fn with_avx512<S: BlockScan>(bytes: &[u8], at: usize) -> Option<usize> {
    // SAFETY: the caller checked the CPU has AVX-512F, AVX-512BW and PCLMULQDQ.
    unsafe { S::scan::<Avx512>(bytes, at) }
}

/// [`container_end`].
struct ContainerEnd;

impl BlockScan for ContainerEnd {
    #[inline(always)]
    unsafe fn scan<K: MaskKernel>(bytes: &[u8], at: usize) -> Option<usize> {
        // SAFETY: passed on from the caller.
        unsafe { container_end_with::<K>(bytes, at) }
    }
}

/// [`escaped_string_end`].
struct EscapedStringEnd;

impl BlockScan for EscapedStringEnd {
    #[inline(always)]
    unsafe fn scan<K: MaskKernel>(bytes: &[u8], at: usize) -> Option<usize> {
        // SAFETY: passed on from the caller.
        unsafe { escaped_string_end_with::<K>(bytes, at) }
    }
}

/// [`container_end`] with the masks of `K`.
///
/// # Safety
/// The CPU has the features `K` needs.
#[inline(always)]
unsafe fn container_end_with<K: MaskKernel>(bytes: &[u8], at: usize) -> Option<usize> {
    let mut nesting = Nesting::default();
    // All ones while a string runs on from the previous block.
    let mut string_carry = 0_u64;
    // SAFETY: passed on from the caller.
    for block in unsafe { Blocks::<K>::new(bytes, at) } {
        // SAFETY: passed on from the caller.
        let string = unsafe { K::prefix_xor(block.quotes) } ^ string_carry;
        string_carry = ((string as i64) >> 63) as u64;
        // The bytes of this block that belong to the value: up to its closing bracket, if that is
        // in this block; what follows it is not checked here.
        let mut in_value = u64::MAX;
        let mut end = None;
        let brackets = block.masks.bracket & !string;
        // An empty `{}` or `[]` (a third of the brackets of managedFields) opens and closes
        // nothing: both of its brackets are dropped before the bracket-by-bracket walk. The
        // value itself is never one (see `container_end`), so its opening bracket stays.
        let closes = brackets & !block.masks.open;
        let same_kind_as_next = !(block.masks.curly ^ (block.masks.curly >> 1));
        let empty = brackets & block.masks.open & (closes >> 1) & same_kind_as_next;
        let mut brackets = brackets & !(empty | empty << 1);
        while brackets != 0 {
            let bit = brackets.trailing_zeros();
            brackets &= brackets - 1;
            // Which bracket it is comes from the masks, not from reloading the byte.
            let object = block.masks.curly >> bit & 1 == 1;
            if block.masks.open >> bit & 1 == 1 {
                nesting.push(object);
            } else {
                if nesting.top() != Some(object) {
                    return None;
                }
                nesting.pop();
                if nesting.top().is_none() {
                    in_value = u64::MAX >> (63 - bit);
                    end = Some(block.start + bit as usize + 1);
                    break;
                }
            }
        }
        // No backslash outside strings; the strings themselves as `strings_are_valid` says.
        if block.masks.backslash & !string & in_value != 0
            || !block.strings_are_valid::<K>(bytes, string & in_value)
        {
            return None;
        }
        if end.is_some() {
            return end;
        }
    }
    None
}

/// A text read 64 bytes at a time from a start, carrying backslash escapes across blocks. Made only
/// where the CPU has the features `K` needs.
struct Blocks<'a, K> {
    bytes: &'a [u8],
    start: usize,
    /// The previous block ended with a backslash that escapes this block's first byte.
    escape_carry: bool,
    kernel: std::marker::PhantomData<K>,
}

/// One 64-byte block: its masks, which bytes are escaped, and its quotes that are not.
struct Block {
    start: usize,
    masks: BlockMasks,
    escaped: u64,
    quotes: u64,
}

impl<'a, K: MaskKernel> Blocks<'a, K> {
    /// From `start`, where no backslash before escapes the first byte.
    ///
    /// # Safety
    /// The CPU has the features `K` needs.
    #[inline(always)]
    unsafe fn new(bytes: &'a [u8], start: usize) -> Self {
        Self {
            bytes,
            start,
            escape_carry: false,
            kernel: std::marker::PhantomData,
        }
    }
}

impl<K: MaskKernel> Iterator for Blocks<'_, K> {
    type Item = Block;

    #[inline(always)]
    fn next(&mut self) -> Option<Block> {
        if self.start >= self.bytes.len() {
            return None;
        }
        // SAFETY: a `Blocks<K>` is only made where the CPU has the features `K` needs.
        let masks = unsafe { BlockMasks::at::<K>(self.bytes, self.start) };
        let escaped = escaped_bytes(masks.backslash, &mut self.escape_carry);
        let block = Block {
            start: self.start,
            quotes: masks.quote & !escaped,
            masks,
            escaped,
        };
        self.start += 64;
        Some(block)
    }
}

impl Block {
    /// The bytes of `string` (a mask of this block's string bytes) hold no raw control character
    /// and only valid escapes.
    #[inline(always)]
    fn strings_are_valid<K: MaskKernel>(&self, bytes: &[u8], string: u64) -> bool {
        self.masks.control & string == 0
            && (self.escaped & string == 0
                // SAFETY: a `Block` is only made where the CPU has the features `K` needs.
                || unsafe { K::escapes_are_valid(bytes, self.start, self.escaped & string) })
    }
}

/// One bit per byte of a 64-byte block (bit i: byte `start + i`); past the end of the text the
/// block reads as spaces, which set no bit but `curly` (read only for brackets).
#[derive(Default)]
struct BlockMasks {
    quote: u64,
    backslash: u64,
    /// `{`, `[`, `}` and `]`.
    bracket: u64,
    /// `{` and `[`.
    open: u64,
    /// Bytes with bit 0x20 set: among brackets, `{` and `}`.
    curly: u64,
    /// Bytes up to 0x1f.
    control: u64,
}

impl BlockMasks {
    /// # Safety
    /// The CPU has the features `K` needs.
    #[inline(always)]
    unsafe fn at<K: MaskKernel>(bytes: &[u8], start: usize) -> Self {
        let block = match bytes.get(start..start + 64) {
            Some(block) => block.try_into().ok(),
            None => None,
        };
        match block {
            // SAFETY: passed on from the caller.
            Some(block) => unsafe { K::masks(block) },
            None => {
                let mut padded = [b' '; 64];
                let rest = &bytes[start..];
                padded[..rest.len()].copy_from_slice(rest);
                // SAFETY: passed on from the caller.
                unsafe { K::masks(&padded) }
            }
        }
    }
}

/// Computes a block's masks with one set of vector instructions.
trait MaskKernel {
    /// # Safety
    /// The CPU has the features this kernel needs.
    unsafe fn masks(block: &[u8; 64]) -> BlockMasks;

    /// [`prefix_xor`].
    ///
    /// # Safety
    /// The CPU has the features this kernel needs.
    #[inline(always)]
    unsafe fn prefix_xor(bits: u64) -> u64 {
        prefix_xor(bits)
    }

    /// [`escapes_are_valid`].
    ///
    /// # Safety
    /// The CPU has the features this kernel needs.
    #[inline(always)]
    unsafe fn escapes_are_valid(bytes: &[u8], start: usize, escaped: u64) -> bool {
        escapes_are_valid(bytes, start, escaped)
    }
}

/// The CPU has what the [`Avx512`] kernel needs.
#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    // BW implies F on every real CPU, but a hypervisor may hide one and show the other.
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
}

/// What every CPU of the target has: SSE2 on x86-64 (16 bytes at a time), a byte loop elsewhere.
struct Baseline;

impl MaskKernel for Baseline {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn masks(block: &[u8; 64]) -> BlockMasks {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_slli_epi16,
        };
        let mut masks = BlockMasks::default();
        for (i, chunk) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of the x86-64 baseline; `chunk` is 16 readable bytes and
            // loadu has no alignment requirement.
            let (quote, backslash, bracket, open, curly, control) = unsafe {
                let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                let bit = |m: __m128i| u64::from(_mm_movemask_epi8(m) as u16);
                // '{' | 0x20 == '[' | 0x20 == '{', and '}' | 0x20 == ']' | 0x20 == '}'.
                let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
                let open = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8));
                let close = _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8));
                let low = _mm_set1_epi8(0x1f);
                (
                    bit(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))),
                    bit(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))),
                    bit(_mm_or_si128(open, close)),
                    bit(open),
                    // Bit 0x20 of each byte moved to its top bit.
                    bit(_mm_slli_epi16::<2>(v)),
                    bit(_mm_cmpeq_epi8(_mm_max_epu8(v, low), low)),
                )
            };
            let shift = 16 * i;
            masks.quote |= quote << shift;
            masks.backslash |= backslash << shift;
            masks.bracket |= bracket << shift;
            masks.open |= open << shift;
            masks.curly |= curly << shift;
            masks.control |= control << shift;
        }
        masks
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    unsafe fn masks(block: &[u8; 64]) -> BlockMasks {
        masks_byte_by_byte(block)
    }
}

/// The masks one byte at a time: the portable kernel, and the reference the vector ones are
/// tested against.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn masks_byte_by_byte(block: &[u8; 64]) -> BlockMasks {
    let mut masks = BlockMasks::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1_u64 << i;
        match b {
            b'"' => masks.quote |= bit,
            b'\\' => masks.backslash |= bit,
            b'{' | b'[' | b'}' | b']' => masks.bracket |= bit,
            0..=0x1f => masks.control |= bit,
            _ => {}
        }
        if matches!(b, b'{' | b'[') {
            masks.open |= bit;
        }
        if b & 0x20 != 0 {
            masks.curly |= bit;
        }
    }
    masks
}

/// The whole block at once, into mask registers.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl MaskKernel for Avx512 {
    #[inline(always)]
    unsafe fn masks(block: &[u8; 64]) -> BlockMasks {
        // SAFETY: passed on from the caller.
        unsafe { avx512_masks(block) }
    }

    #[inline(always)]
    unsafe fn prefix_xor(bits: u64) -> u64 {
        // SAFETY: passed on from the caller.
        unsafe { carryless_prefix_xor(bits) }
    }

    #[inline(always)]
    unsafe fn escapes_are_valid(bytes: &[u8], start: usize, escaped: u64) -> bool {
        // SAFETY: passed on from the caller.
        unsafe { avx512_escapes_are_valid(bytes, start, escaped) }
    }
}

/// [`escapes_are_valid`] for a whole block at once: the text that JSON embeds in annotations and
/// managedFields keys has an escaped quote every few bytes, one loop turn each. Only `\u`, which
/// needs its four hex digits looked at, is left to the loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn avx512_escapes_are_valid(bytes: &[u8], start: usize, escaped: u64) -> bool {
    use std::arch::x86_64::{_mm512_cmpeq_epi8_mask, _mm512_maskz_loadu_epi8, _mm512_set1_epi8};
    let rest = bytes.len().saturating_sub(start);
    let present = if rest >= 64 {
        u64::MAX
    } else {
        (1 << rest) - 1
    };
    // SAFETY: only the `present` bytes, all within `bytes`, are read (a masked load touches no
    // other byte).
    let v = unsafe { _mm512_maskz_loadu_epi8(present, bytes.as_ptr().wrapping_add(start).cast()) };
    let is = |byte: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(byte as i8));
    let simple =
        is(b'"') | is(b'\\') | is(b'/') | is(b'b') | is(b'f') | is(b'n') | is(b'r') | is(b't');
    // An escaped byte past the end is left as the loop leaves it: the string is cut short.
    let others = escaped & present & !simple;
    others == 0 || escapes_are_valid(bytes, start, others)
}

/// [`prefix_xor`] in one carry-less multiplication by all ones: bit i of the product is the XOR
/// of bits 0..=i.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq")]
#[inline]
fn carryless_prefix_xor(bits: u64) -> u64 {
    use std::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_set_epi64x};
    let product = _mm_clmulepi64_si128::<0>(_mm_set_epi64x(0, bits as i64), _mm_set_epi64x(0, -1));
    _mm_cvtsi128_si64(product) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
#[inline]
fn avx512_masks(block: &[u8; 64]) -> BlockMasks {
    use std::arch::x86_64::{
        __m512i, _mm512_cmpeq_epi8_mask, _mm512_cmple_epu8_mask, _mm512_loadu_si512,
        _mm512_or_si512, _mm512_set1_epi8, _mm512_test_epi8_mask,
    };
    // SAFETY: `block` is 64 readable bytes and loadu has no alignment requirement.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast::<__m512i>()) };
    let folded = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
    let open = _mm512_cmpeq_epi8_mask(folded, _mm512_set1_epi8(b'{' as i8));
    BlockMasks {
        quote: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'"' as i8)),
        backslash: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8)),
        bracket: open | _mm512_cmpeq_epi8_mask(folded, _mm512_set1_epi8(b'}' as i8)),
        open,
        curly: _mm512_test_epi8_mask(v, _mm512_set1_epi8(0x20)),
        control: _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(0x1f)),
    }
}

/// Bit i set when byte i is escaped by the backslash before it. A backslash that is itself
/// escaped escapes nothing; one in the last byte escapes the next block's first (`carry`).
#[inline(always)]
fn escaped_bytes(backslash: u64, carry: &mut bool) -> u64 {
    if backslash == 0 && !*carry {
        return 0;
    }
    escaped_bytes_of_backslashes(backslash, carry)
}

/// [`escaped_bytes`] for a block with backslashes, without a branch per backslash (simdjson's
/// odd-run rule): in a run of backslashes, every second one escapes the byte after it, counting from
/// the run's start. Adding the odd-position run starts to the backslashes carries each such run past
/// its end, which tells the runs starting on odd bits from those starting on even bits; the carry
/// out of bit 63 says that the block ends in an escaping backslash.
#[inline]
fn escaped_bytes_of_backslashes(backslash: u64, carry: &mut bool) -> u64 {
    const EVEN_BITS: u64 = 0x5555_5555_5555_5555;
    let carried = u64::from(*carry);
    // A backslash escaped by the previous block's last one escapes nothing.
    let backslash = backslash & !carried;
    let follows_backslash = (backslash << 1) | carried;
    let odd_run_starts = backslash & !EVEN_BITS & !follows_backslash;
    let (runs_starting_on_even_bits, overflow) = odd_run_starts.overflowing_add(backslash);
    *carry = overflow;
    (EVEN_BITS ^ (runs_starting_on_even_bits << 1)) & follows_backslash
}

/// Every escaped byte (bits of `escaped`, relative to `start`) is one JSON allows after a
/// backslash, and `\u` has four hex digits.
#[cold]
fn escapes_are_valid(bytes: &[u8], start: usize, mut escaped: u64) -> bool {
    while escaped != 0 {
        let at = start + escaped.trailing_zeros() as usize;
        escaped &= escaped - 1;
        match bytes.get(at) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
            Some(b'u')
                if bytes
                    .get(at + 1..at + 5)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) => {}
            // Past the end: the string is cut short, and no closing bracket will be found.
            None => {}
            Some(_) => return false,
        }
    }
    true
}

/// Bit i of the result is the XOR of bits 0..=i: with quote bits in, the bits inside strings
/// (opening quote included, closing quote not).
#[inline(always)]
fn prefix_xor(mut bits: u64) -> u64 {
    bits ^= bits << 1;
    bits ^= bits << 2;
    bits ^= bits << 4;
    bits ^= bits << 8;
    bits ^= bits << 16;
    bits ^= bits << 32;
    bits
}

/// The first byte at or after `at` that is not JSON whitespace.
#[inline(always)]
fn whitespace_end(bytes: &[u8], at: usize) -> usize {
    // The API server sends compact JSON: whitespace is the exception, and one comparison tells
    // that the next byte is not whitespace.
    match bytes.get(at) {
        Some(&b) if b > b' ' => at,
        _ => whitespace_run_end(bytes, at),
    }
}

#[cold]
fn whitespace_run_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string whose text starts at `start`.
#[inline(always)]
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let end = plain_run_end(bytes, start);
    if bytes.get(end) == Some(&b'"') {
        return Some(end + 1);
    }
    escaped_string_end(bytes, end)
}

/// [`string_end`] from the first escape or stop byte on: the strings with escapes are mostly
/// JSON text kept in annotations and managedFields keys, with an escape every few bytes, so they are
/// read 64 bytes at a time, as skipped containers are.
#[cold]
#[inline(never)]
fn escaped_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    with_widest_kernel::<EscapedStringEnd>(bytes, at)
}

/// [`escaped_string_end`] with the masks of `K`.
///
/// # Safety
/// The CPU has the features `K` needs.
#[inline(always)]
unsafe fn escaped_string_end_with<K: MaskKernel>(bytes: &[u8], at: usize) -> Option<usize> {
    // `at` is the first stop byte, so no backslash before it escapes it.
    // SAFETY: passed on from the caller.
    for block in unsafe { Blocks::<K>::new(bytes, at) } {
        // The bytes before the closing quote, if it is in this block.
        let in_string = match block.quotes {
            0 => u64::MAX,
            quotes => (1 << quotes.trailing_zeros()) - 1,
        };
        if !block.strings_are_valid::<K>(bytes, in_string) {
            return None;
        }
        if block.quotes != 0 {
            return Some(block.start + block.quotes.trailing_zeros() as usize + 1);
        }
    }
    None
}

#[inline(always)]
fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(at) {
        at += 1;
    }
    at
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
#[inline(always)]
fn number_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match *bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits_end(bytes, at + 1),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let end = digits_end(bytes, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        let end = digits_end(bytes, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

#[inline(always)]
fn literal_end(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (bytes.get(at..end)? == word).then_some(end)
}

/// The stop masks of the 64 bytes from `at` (bytes past the end set no bit).
#[inline(always)]
fn window_at(bytes: &[u8], at: usize) -> StopWindow {
    let (stops, high) = match bytes.get(at..at + 64).and_then(|b| b.try_into().ok()) {
        Some(block) => block_stops(block),
        None => {
            let mut padded = [b' '; 64];
            let rest = bytes.get(at..).unwrap_or_default();
            padded[..rest.len()].copy_from_slice(rest);
            block_stops(&padded)
        }
    };
    StopWindow {
        start: at,
        stops,
        high,
    }
}

/// One bit per byte of `block` for its quotes, backslashes and control characters, and one for its
/// bytes above 0x7f. SSE2, as for [`plain_run_end`]: a window is filled every few keys, and a call
/// into an AVX-512 function for it cost more than it saved.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_stops(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8};
    let (mut stops, mut high) = (0, 0);
    for (i, chunk) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86-64 baseline; `chunk` has 16 readable bytes and loadu
        // has no alignment requirement.
        let (chunk_stops, chunk_high) = unsafe {
            (
                sse2_stops(chunk.as_ptr()),
                _mm_movemask_epi8(_mm_loadu_si128(chunk.as_ptr().cast::<__m128i>())) as u16,
            )
        };
        stops |= u64::from(chunk_stops) << (16 * i);
        high |= u64::from(chunk_high) << (16 * i);
    }
    (stops, high)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_stops(block: &[u8; 64]) -> (u64, u64) {
    let masks = masks_byte_by_byte(block);
    let mut high = 0;
    for (i, &b) in block.iter().enumerate() {
        high |= u64::from(b >> 7) << i;
    }
    (masks.quote | masks.backslash | masks.control, high)
}

/// The index of the first `"`, `\` or control character at or after `at`, or the end. Sixteen
/// bytes at a time with SSE2 (part of every x86-64 CPU); most strings of a review end within the
/// first sixteen bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn plain_run_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = bytes.get(at..at + 16) {
        // SAFETY: `chunk` has 16 readable bytes.
        let stops = unsafe { sse2_stops(chunk.as_ptr()) };
        if stops != 0 {
            return at + stops.trailing_zeros() as usize;
        }
        at += 16;
    }
    stop_run_end_portable::<false>(bytes, at)
}

/// One bit per byte of the 16 bytes at `chunk` that is a quote, a backslash or a control
/// character.
///
/// # Safety
/// 16 bytes from `chunk` on are readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sse2_stops(chunk: *const u8) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are always available;
    // the caller gives 16 readable bytes and loadu has no alignment requirement.
    unsafe {
        let block = _mm_loadu_si128(chunk.cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(block, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(block, _mm_set1_epi8(b'\\' as i8));
        // b <= 0x1f exactly when max(b, 0x1f) == 0x1f (unsigned).
        let low = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(block, low), low);
        // movemask sets only the low 16 bits.
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn plain_run_end(bytes: &[u8], at: usize) -> usize {
    stop_run_end_portable::<false>(bytes, at)
}

/// [`plain_run_end`] (with `NON_ASCII`, also stopping at bytes above 0x7f) eight bytes at a time:
/// the lowest flagged byte of each word test is always a true match. The scan elsewhere than on
/// x86-64, and the reference the tests hold the others to.
fn stop_run_end_portable<const NON_ASCII: bool>(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let mut flagged = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        if NON_ASCII {
            // Exact: a byte's own top bit.
            flagged |= word;
        }
        let flagged = flagged & HIGH;
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 || (NON_ASCII && b > 0x7f) {
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
        if raw.is_ascii() {
            // SAFETY: ASCII is UTF-8. Nearly every string the API server sends is ASCII, and this
            // word-at-a-time test costs a fraction of the general UTF-8 check on short strings.
            return Ok(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(raw) }));
        }
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

/// Which containers are open while skipping (object or array), one bit each, the innermost lowest,
/// below a sentinel bit: the word holds 63 levels, deeper ones spill to the heap. The sentinel
/// makes "none open" and "word full" plain tests of the word, with no depth to keep.
struct Nesting {
    bits: u64,
    spilled: Vec<u64>,
}

impl Default for Nesting {
    fn default() -> Self {
        Self {
            bits: 1,
            spilled: Vec::new(),
        }
    }
}

impl Nesting {
    #[inline(always)]
    fn push(&mut self, object: bool) {
        if self.bits >> 63 != 0 {
            self.spilled.push(self.bits);
            self.bits = 1;
        }
        self.bits = (self.bits << 1) | u64::from(object);
    }

    /// Closes the innermost container; only called when one is open.
    #[inline(always)]
    fn pop(&mut self) {
        self.bits >>= 1;
        if self.bits == 1
            && let Some(outer) = self.spilled.pop()
        {
            self.bits = outer;
        }
    }

    /// Whether the innermost open container is an object; `None` at the top level.
    #[inline(always)]
    fn top(&self) -> Option<bool> {
        (self.bits != 1).then_some(self.bits & 1 == 1)
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
    use crate::test_rng::Rng;

    /// One value and nothing after it, skipped as the hot path skips it.
    fn skip_all(text: &[u8]) -> Result<()> {
        let mut reader = Reader::new(text);
        reader.skip_value()?;
        reader.finish()
    }

    /// The same with the whole grammar checked.
    fn explained_all(text: &[u8]) -> Result<()> {
        let mut reader = Reader::new(text);
        reader.skip_whitespace();
        reader.skip_value_explained()?;
        reader.finish()
    }

    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    const CASES: &[&[u8]] = &[
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

    #[test]
    fn skipping_accepts_and_refuses_what_serde_json_does() {
        for &case in CASES {
            let what = String::from_utf8_lossy(case);
            assert_eq!(
                explained_all(case).is_ok(),
                serde_accepts(case),
                "{what:?}: {:?}",
                explained_all(case)
            );
            if serde_accepts(case) {
                assert_eq!(skip_all(case), Ok(()), "{what:?}");
            }
        }
    }

    #[test]
    fn skipping_agrees_with_serde_json_on_every_prefix_and_byte_flip_of_a_review() {
        let review = include_bytes!("../tests/fixtures/admission-reviews/pod-create-direct.json");
        // A body cut short is refused however it is skipped.
        for end in 0..=review.len() {
            let prefix = &review[..end];
            assert_eq!(
                skip_all(prefix).is_ok(),
                serde_accepts(prefix),
                "prefix of {end} bytes"
            );
            assert_eq!(
                explained_all(prefix).is_ok(),
                serde_accepts(prefix),
                "prefix of {end} bytes"
            );
        }
        // Replace each structural or string byte by each of a set of troublemakers: the whole
        // grammar agrees with serde_json; the hot path accepts all that serde_json accepts.
        let replacements = [
            b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'e', b' ', b'x', 0x01,
        ];
        for at in 0..review.len() {
            let mut changed = review.to_vec();
            for &with in &replacements {
                changed[at] = with;
                let serde = serde_accepts(&changed);
                assert_eq!(
                    explained_all(&changed).is_ok(),
                    serde,
                    "byte {at} set to {with:?}"
                );
                if serde {
                    assert_eq!(skip_all(&changed), Ok(()), "byte {at} set to {with:?}");
                }
            }
        }
    }

    /// Where each skipper ends (`None`: refused), after any leading whitespace.
    fn skipper_ends(text: &[u8]) -> (Option<usize>, Option<usize>) {
        let start = whitespace_end(text, 0);
        // Not through `skip_value`, which falls back on the whole grammar when this refuses.
        let fast = skipped_value_end(text, start);
        let mut reader = Reader::new(text);
        reader.set_position(start);
        let explained = reader.skip_value_explained().ok();
        (fast, explained.map(|value| start + value.len()))
    }

    /// The hot path skips every valid value to the same end as the whole grammar, refuses every
    /// value cut short, and may accept only what breaks the grammar between brackets.
    #[test]
    fn the_structural_skip_ends_where_the_whole_grammar_does() {
        let direct = serde_json::to_vec(
            &serde_json::from_slice::<serde_json::Value>(include_bytes!(
                "../tests/fixtures/admission-reviews/pod-create-direct.json"
            ))
            .expect("fixture is JSON"),
        )
        .expect("serializes");
        let pretty = include_bytes!("../tests/fixtures/admission-reviews/configmap-create.json");
        let replacements = [
            b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'0', b'-', b'.', b'e', b' ', b'x',
            0x01,
        ];
        for (number, text) in [direct, pretty.to_vec()].into_iter().enumerate() {
            for end in 0..=text.len() {
                let (fast, explained) = skipper_ends(&text[..end]);
                assert_eq!(fast, explained, "fixture {number}, {end} bytes");
            }
            for at in 0..text.len() {
                let mut changed = text.clone();
                for &with in &replacements {
                    changed[at] = with;
                    let (fast, explained) = skipper_ends(&changed);
                    if explained.is_some() {
                        assert_eq!(fast, explained, "fixture {number}, byte {at} set to {with}");
                    }
                }
                changed.remove(at);
                let (fast, explained) = skipper_ends(&changed);
                if explained.is_some() {
                    assert_eq!(fast, explained, "fixture {number}, byte {at} removed");
                }
            }
        }
        // Escapes and strings across the 64-byte blocks, at every offset.
        let tails: [&str; 8] = [
            r#"\"x"#,
            r#"\\"#,
            r#"\\\"y"#,
            r#"\u00e9"#,
            r#"\n\t"#,
            "\",\"[]{}\",\"",
            r#"\\\\"#,
            r#"\/"#,
        ];
        for pad in 0..140 {
            for tail in tails {
                let text = format!(
                    r#"{{"k":["{}{tail}"],"z":{{"a":[1,{{}}]}}}}"#,
                    "a".repeat(pad)
                );
                let (fast, explained) = skipper_ends(text.as_bytes());
                assert!(explained.is_some(), "{text}");
                assert_eq!(fast, explained, "{text}");
                for end in 0..text.len() {
                    let (fast, explained) = skipper_ends(&text.as_bytes()[..end]);
                    assert_eq!(fast, explained, "{end} bytes of {text}");
                }
                // The same as skipped strings: the first escape at the start or after the pad.
                let pad = "a".repeat(pad);
                for text in [
                    format!(r#""{pad}{tail}""#),
                    format!(r#""\n{pad}{tail}""#),
                    format!("\"\\t{pad}{tail}\u{1}\""),
                    format!("\"\\t{pad}{tail}\\"),
                ] {
                    for end in 0..=text.len() {
                        let (fast, explained) = skipper_ends(&text.as_bytes()[..end]);
                        assert_eq!(fast, explained, "{end} bytes of {text}");
                    }
                }
            }
        }
    }

    #[test]
    fn skipped_containers_have_their_structure_checked() {
        let refused: &[&[u8]] = &[
            b"[",
            b"[[]",
            b"{\"a\":[}",
            b"[1}",
            b"{\"a\":1]",
            b"[\"abc]",
            b"[\"a\\x\"]",
            b"[\"a\\u12G4\"]",
            b"[\"a\\u12\"]",
            b"[\"tab\there\"]",
            b"[\"nul\x00byte\"]",
            b"[1,\\n]",
            b"{\"a\\",
        ];
        for &text in refused {
            assert!(
                skip_all(text).is_err(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        // Not checked between brackets (documented): accepted although not JSON.
        let accepted: &[&[u8]] = &[
            b"[1,]",
            b"[,1]",
            b"{\"a\" 1}",
            b"{a:1}",
            b"[1 2]",
            b"[01]",
            b"[tru]",
        ];
        for &text in accepted {
            assert_eq!(
                skip_all(text),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(text)
            );
            assert!(
                explained_all(text).is_err(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
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

    /// Objects and arrays mixed at every depth across the 63-level boundaries of the nesting word
    /// (and the 64-level ones of its earlier layout): the structural skip ends where the whole grammar does, and one closing
    /// bracket of the wrong kind, at any level, is refused by the structural skip itself.
    #[test]
    fn brackets_pair_up_across_the_nesting_word_boundaries() {
        for depth in (1..=140).chain([189, 190, 191, 192, 193, 252, 253, 256, 257]) {
            let is_object = |level: usize| level.is_multiple_of(3);
            let opens: String = (0..depth)
                .map(|level| if is_object(level) { "{\"k\":" } else { "[" })
                .collect();
            let closes: Vec<&str> = (0..depth)
                .rev()
                .map(|level| if is_object(level) { "}" } else { "]" })
                .collect();
            let text = format!("{opens}0{} ", closes.concat());
            let (fast, explained) = skipper_ends(text.as_bytes());
            assert!(fast.is_some(), "depth {depth}");
            assert_eq!(fast, explained, "depth {depth}");
            for level in 0..depth {
                let mut wrong = closes.clone();
                let at = depth - 1 - level;
                wrong[at] = if wrong[at] == "}" { "]" } else { "}" };
                let text = format!("{opens}0{} ", wrong.concat());
                assert_eq!(
                    skipped_value_end(text.as_bytes(), 0),
                    None,
                    "depth {depth}, wrong close at level {level}"
                );
            }
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
                        stop_run_end_portable::<false>(&text, 0),
                        stop_at,
                        "portable: len {len}, stop {stop:#x} at {stop_at}"
                    );
                }
            }
            let clean = vec![b'z'; len];
            assert_eq!(plain_run_end(&clean, 0), len);
            assert_eq!(stop_run_end_portable::<false>(&clean, 0), len);
        }
    }

    /// The reader's window answers every scan as a fresh scan would, whatever position the
    /// previous scan left it at: forwards, backwards, across 64-byte windows and the text's end.
    #[test]
    fn the_window_finds_what_a_fresh_scan_finds_from_any_previous_position() {
        let alphabet = b"aaaaaaaZ09 -:,{}[]\"\\\x00\x1f\x7f\x80\xc3\xff";
        let mut rng = Rng(0x6c07_8965_0f1a_2b3d);
        let mut next = |bound: usize| rng.below(bound);
        for len in (0..140).chain([255, 256, 257, 1000]) {
            let text: Vec<u8> = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let mut orders: Vec<Vec<usize>> = vec![(0..=len).collect(), (0..=len).rev().collect()];
            orders.push((0..4 * len + 4).map(|_| next(len + 1)).collect());
            for order in orders {
                let mut reader = Reader::new(&text);
                for &at in &order {
                    assert_eq!(
                        reader.run_end::<false>(at),
                        stop_run_end_portable::<false>(&text, at),
                        "plain from {at} in {text:?}"
                    );
                    assert_eq!(
                        reader.run_end::<true>(at),
                        stop_run_end_portable::<true>(&text, at),
                        "ASCII from {at} in {text:?}"
                    );
                }
            }
        }
    }

    /// The AVX-512 check of a block's escapes refuses exactly what the byte loop refuses, for any
    /// set of escaped positions, also past the end of the text.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_vector_escape_check_agrees_with_the_byte_loop() {
        if !avx512_available() {
            return;
        }
        let alphabet = b"\"\\/bfnrtuUaxz019AFfG \x00\xff";
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut next = || rng.next();
        let (mut refused, mut accepted) = (0, 0);
        for round in 0..20_000 {
            let len = (next() % 140) as usize;
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Some `\u` escapes with four hex digits, valid or one digit off.
            if len > 8 && round % 3 == 0 {
                let at = (next() % (len as u64 - 5)) as usize;
                text[at..at + 5].copy_from_slice(if round % 2 == 0 { b"u00e9" } else { b"u0g9a" });
            }
            let start = if len == 0 {
                0
            } else {
                (next() % len as u64) as usize
            };
            // Sparse escaped positions, as in real text, and dense ones; some past the end.
            let escaped = match round % 3 {
                0 => next() & next() & next(),
                1 => next(),
                _ => 1 << (next() % 64),
            };
            let slow = escapes_are_valid(&text, start, escaped);
            // SAFETY: the CPU has AVX-512F and AVX-512BW.
            let fast = unsafe { avx512_escapes_are_valid(&text, start, escaped) };
            assert_eq!(
                fast, slow,
                "escaped {escaped:#066b} from {start} in {text:?}"
            );
            if slow {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both answers were exercised.
        assert!(
            refused > 1_000 && accepted > 1_000,
            "{refused} refused, {accepted} accepted"
        );
    }

    #[test]
    fn the_ascii_scan_also_stops_at_the_first_byte_above_0x7f() {
        for len in 0..100 {
            for stop_at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xc3, 0xff] {
                    // ASCII that looks like stop bytes to a careless test: space, DEL, '!', '#'.
                    let mut text: Vec<u8> = (0..len)
                        .map(|i| [b'a', 0x7f, b'!', b'#', 0x20, b'~', b']', b'{'][i % 8])
                        .collect();
                    text[stop_at] = stop;
                    if stop_at + 1 < len {
                        text[stop_at + 1] = 0xa2;
                    }
                    assert_eq!(
                        Reader::new(&text).run_end::<true>(0),
                        stop_at,
                        "len {len}, stop {stop:#x} at {stop_at}"
                    );
                    assert_eq!(
                        stop_run_end_portable::<true>(&text, 0),
                        stop_at,
                        "portable: len {len}, stop {stop:#x} at {stop_at}"
                    );
                    // The plain scan passes over the bytes above 0x7f.
                    let plain = if stop >= 0x80 { len } else { stop_at };
                    assert_eq!(
                        plain_run_end(&text, 0),
                        plain,
                        "plain: len {len}, stop {stop:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn strings_with_bytes_above_0x7f_are_read_from_the_first_one_on() {
        // The ASCII scan stops at 'é' (or at a bad byte) anywhere in a string, before or after
        // the first 32 bytes; the string is then read and checked as before.
        for prefix in [0, 1, 15, 16, 31, 32, 33, 47, 64] {
            let head = "a".repeat(prefix);
            let text = format!("\"{head}é\\u00e9z\"");
            let read = Reader::new(text.as_bytes())
                .read_str("a string")
                .expect("str");
            assert_eq!(read, format!("{head}ééz"));
            let text = format!("\"{head}é-z\"");
            let read = Reader::new(text.as_bytes())
                .read_str("a string")
                .expect("str");
            assert!(matches!(read, Cow::Borrowed(_)));
            assert_eq!(read, format!("{head}é-z"));
            let mut bad = format!("\"{head}ab\"").into_bytes();
            bad[prefix + 1] = 0xc3;
            let error = Reader::new(&bad)
                .read_str("a string")
                .expect_err("bad UTF-8");
            assert_eq!(error.kind, ErrorKind::InvalidUtf8);
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

    /// The escaped bytes of a block, one backslash at a time: the rule [`escaped_bytes`] computes
    /// without a branch per backslash.
    fn escaped_bytes_one_by_one(backslash: u64, carry: &mut bool) -> u64 {
        let (mut escaped, mut escaping) = if *carry {
            (1, backslash & !1)
        } else {
            (0, backslash)
        };
        *carry = false;
        while escaping != 0 {
            let bit = escaping.trailing_zeros();
            escaping &= escaping - 1;
            if bit == 63 {
                *carry = true;
            } else {
                escaped |= 1 << (bit + 1);
                escaping &= !(1 << (bit + 1));
            }
        }
        escaped
    }

    #[test]
    fn escaped_bytes_follow_the_backslash_runs() {
        // Runs of every length at every position, and blocks chained with both carries in.
        let mut cases = vec![
            0,
            u64::MAX,
            1,
            1 << 63,
            0x5555_5555_5555_5555,
            !0x5555_5555_5555_5555,
        ];
        for start in 0..64 {
            for length in 1..=64 - start {
                cases.push((u64::MAX >> (64 - length)) << start);
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            // AND-ing two draws makes runs of backslashes common, as in escaped JSON.
            let (a, b) = (rng.next(), rng.next());
            cases.push(a & b);
            cases.push(a | b);
        }
        for carry_in in [false, true] {
            let (mut fast_carry, mut slow_carry) = (carry_in, carry_in);
            for &backslash in &cases {
                let fast = escaped_bytes(backslash, &mut fast_carry);
                let slow = escaped_bytes_one_by_one(backslash, &mut slow_carry);
                assert_eq!(fast, slow, "backslashes {backslash:#066b}");
                assert_eq!(fast_carry, slow_carry, "carry after {backslash:#066b}");
            }
        }
    }

    type Skip = fn(&[u8], usize) -> Option<usize>;
    type Kernel = (&'static str, fn(&[u8; 64]) -> BlockMasks, Skip, Skip);

    /// Every mask kernel this CPU can run, by name, with the structural skips built on it.
    fn kernels() -> Vec<Kernel> {
        // SAFETY (all below): each kernel is listed only when the CPU has its features.
        let mut kernels: Vec<Kernel> = vec![(
            "baseline",
            |b| unsafe { Baseline::masks(b) },
            |t, at| unsafe { ContainerEnd::scan::<Baseline>(t, at) },
            |t, at| unsafe { EscapedStringEnd::scan::<Baseline>(t, at) },
        )];
        #[cfg(target_arch = "x86_64")]
        {
            if avx512_available() {
                kernels.push((
                    "avx512",
                    |b| unsafe { Avx512::masks(b) },
                    |t, at| unsafe { ContainerEnd::scan::<Avx512>(t, at) },
                    |t, at| unsafe { EscapedStringEnd::scan::<Avx512>(t, at) },
                ));
            }
        }
        kernels
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_carryless_prefix_xor_is_the_prefix_xor() {
        if !std::arch::is_x86_feature_detected!("pclmulqdq") {
            return;
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cases = vec![0, 1, 1 << 63, u64::MAX, 0x5555_5555_5555_5555];
        for _ in 0..10_000 {
            cases.push(rng.next());
        }
        for bits in cases {
            // SAFETY: the CPU has PCLMULQDQ.
            let fast = unsafe { carryless_prefix_xor(bits) };
            let slow = (0..64).fold(0_u64, |acc, i| {
                let below = if i == 0 { 0 } else { acc >> (i - 1) & 1 };
                acc | ((below ^ (bits >> i & 1)) << i)
            });
            assert_eq!(fast, slow, "{bits:#066b}");
            assert_eq!(prefix_xor(bits), slow, "{bits:#066b}");
        }
    }

    #[test]
    fn every_mask_kernel_marks_the_same_bytes() {
        let masks = |m: BlockMasks| (m.quote, m.backslash, m.bracket, m.open, m.curly, m.control);
        let mut blocks = vec![[b' '; 64], [0; 64], [0xff; 64], [b'"'; 64]];
        // Every byte value at every position, and random blocks of JSON-ish bytes.
        for value in 0..=255u8 {
            let mut block = [b'a'; 64];
            for (i, byte) in block.iter_mut().enumerate() {
                *byte = value.wrapping_add(i as u8);
            }
            blocks.push(block);
        }
        let alphabet = b"\"\\{}[]:,0aZ \x01\x1f\x20\x7f\x80\xff";
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..5_000 {
            let mut block = [0; 64];
            for byte in &mut block {
                *byte = alphabet[rng.below(alphabet.len())];
            }
            blocks.push(block);
        }
        for (name, kernel, _, _) in kernels() {
            for block in &blocks {
                assert_eq!(
                    masks(kernel(block)),
                    masks(masks_byte_by_byte(block)),
                    "{name} on {block:?}"
                );
            }
        }
    }

    /// The structural skips end in the same place (or refuse alike) whatever kernel they run on,
    /// over a review with every byte flipped to a troublemaker, from every bracket and quote.
    #[test]
    fn every_mask_kernel_skips_alike() {
        let review = include_bytes!("../tests/fixtures/admission-reviews/pod-create-direct.json");
        let kernels = kernels();
        let mut texts = vec![review.to_vec()];
        for at in (0..review.len()).step_by(7) {
            for with in [b'"', b'\\', b'{', b']', 0x01] {
                let mut changed = review.to_vec();
                changed[at] = with;
                texts.push(changed);
            }
        }
        for text in &texts {
            for at in 0..text.len() {
                match text[at] {
                    b'{' | b'[' => {
                        let ends: Vec<_> = kernels.iter().map(|k| (k.0, (k.2)(text, at))).collect();
                        assert!(ends.iter().all(|e| e.1 == ends[0].1), "{ends:?} from {at}");
                    }
                    b'"' => {
                        let ends: Vec<_> =
                            kernels.iter().map(|k| (k.0, (k.3)(text, at + 1))).collect();
                        assert!(ends.iter().all(|e| e.1 == ends[0].1), "{ends:?} from {at}");
                    }
                    _ => {}
                }
            }
        }
    }
}
