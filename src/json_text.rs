//! Writing JSON strings on the hot path.
//!
//! Most tag keys and values need no escaping, so the common case is a scan (or, for a string the
//! decoder borrowed, nothing) and one copy; only strings with quotes, backslashes or control
//! characters go through serde_json's escaper.

/// A message's bytes as text, if they are UTF-8. Every payload is checked whole, once, on the hot
/// path: a SIMD check does it in a third of the time of `std::str::from_utf8` (7 % of the hot path
/// in `benches/pipeline.rs`), which is asked again only to say where invalid bytes start.
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes),
    }
}

/// Whether `s` contains nothing JSON must escape.
pub fn is_plain(s: &str) -> bool {
    // No early exit: a branch-free scan of these short strings vectorizes and beats `any`.
    !s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `s` to `out` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if !is_plain(s) {
        serde_json::to_writer(&mut *out, s).expect("serializing a string into memory cannot fail");
    } else {
        write_plain(out, s);
    }
}

/// Appends `s`, known to contain nothing JSON must escape, as a quoted JSON string.
pub fn write_plain(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends a string decoded from JSON. A borrowed one had no escape sequence in its source, and
/// JSON allows no raw quote, backslash or control character in a string, so it is copied as is.
#[allow(clippy::ptr_arg)] // whether the string is borrowed is exactly what this function reads
pub fn write_decoded(out: &mut Vec<u8>, s: &std::borrow::Cow<'_, str>) {
    match s {
        std::borrow::Cow::Borrowed(plain) => write_plain(out, plain),
        std::borrow::Cow::Owned(escaped) => write_str(out, escaped),
    }
}

/// Appends a raw JSON value on one line. A bulk body is NDJSON: a producer's pretty-printed value
/// copied as it is would end its line early and make Elasticsearch refuse the whole request.
/// JSON strings cannot hold a raw line break, so any `\n` or `\r` is whitespace between tokens;
/// a value without one (the usual case, found by one scan) is copied as is, and only the rare
/// multi-line value is rewritten without the whitespace outside its strings.
pub fn write_single_line(out: &mut Vec<u8>, raw: &str) {
    let bytes = raw.as_bytes();
    // A scalar (a string, a number, a literal) holds no whitespace between its first byte and
    // its last, so only an array, an object or whitespace at either end needs the scan.
    let opens_or_ends_a_line =
        |b: Option<&u8>| matches!(b, Some(b'[' | b'{' | b' ' | b'\t' | b'\n' | b'\r'));
    let scalar = !opens_or_ends_a_line(bytes.first()) && !opens_or_ends_a_line(bytes.last());
    if scalar || memchr::memchr2(b'\n', b'\r', bytes).is_none() {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b' ' | b'\t' | b'\n' | b'\r') => continue,
            _ => {}
        }
        out.push(b);
    }
}

/// Appends the decimal text of `n`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn utf8_agrees_with_std(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in ".{0,80}") {
            prop_assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes));
            prop_assert_eq!(utf8(text.as_bytes()), Ok(text.as_str()));
        }

        #[test]
        fn strings_round_trip_through_a_json_parser(s in ".*") {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }

        #[test]
        fn numbers_match_their_display(n in any::<u64>()) {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            prop_assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn pretty_printed_values_become_one_line_with_their_strings_intact() {
        let raw = "[\n  \"a b\",\r\n  {\"k\" :\t\"x\\\" \\n y\"}\n]";
        let mut out = Vec::new();
        write_single_line(&mut out, raw);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#"["a b",{"k":"x\" \n y"}]"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::from_str::<serde_json::Value>(raw).unwrap()
        );
    }

    #[test]
    fn a_scalar_with_a_line_break_around_it_loses_the_break() {
        for (raw, expected) in [
            ("\"a b\"\n", "\"a b\""),
            ("\r\n12", "12"),
            (" true\n", "true"),
            ("\"x\"", "\"x\""),
            ("-1.5e3", "-1.5e3"),
        ] {
            let mut out = Vec::new();
            write_single_line(&mut out, raw);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{raw:?}");
        }
    }

    #[test]
    fn single_line_values_are_copied_unchanged() {
        let mut out = Vec::new();
        write_single_line(&mut out, r#"{ "a" : [1, 2] }"#);
        assert_eq!(out, br#"{ "a" : [1, 2] }"#);
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001""#);
    }
}
