//! The `key:value` encoding behind `tags.keyToValue`.
//!
//! This is the one place that turns a tag key and value into the string a search by key and value
//! is matched against. The indexer, the backfill, the verifier and the query translator all call
//! [`encode`], so the string a document is stored under and the string a query looks for can never
//! drift apart.
//!
//! The rule: `escape(key) + ":" + value`, where `escape` puts a backslash before every `\` and `:`
//! in the key. The value is written as it is. A key without `:` or `\` (the common case, and every
//! example in the BigPanda write-up) encodes as plain `key:value`, so `Alice` → `White` is
//! `Alice:White`. The first unescaped `:` always ends the key, which makes the encoding injective:
//! `"a:b" → "c"` becomes `a\:b:c` while `"a" → "b:c"` stays `a:b:c`.

/// The separator between the (escaped) key and the value.
pub const SEPARATOR: char = ':';

/// Lucene's hard limit for one indexed term, in UTF-8 bytes. A `keyword` longer than this makes
/// Elasticsearch reject the whole document.
pub const MAX_KEYWORD_BYTES: usize = 32_766;

/// Encodes a tag as the `keyToValue` string.
pub fn encode(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(encoded_len(key, value));
    encode_into(key, value, &mut out);
    out
}

/// Appends the `keyToValue` encoding of a tag to `out`.
pub fn encode_into(key: &str, value: &str, out: &mut String) {
    if needs_escape(key) {
        for c in key.chars() {
            if c == '\\' || c == SEPARATOR {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(key);
    }
    out.push(SEPARATOR);
    out.push_str(value);
}

/// Appends `encode(key, value)` to `out` as a quoted JSON string.
pub fn write_json(out: &mut Vec<u8>, key: &str, value: &str) {
    if crate::json_text::is_plain(key) && crate::json_text::is_plain(value) {
        write_json_plain(out, key, value);
    } else {
        crate::json_text::write_str(out, &encode(key, value));
    }
}

/// [`write_json`] for a key and value that contain nothing JSON must escape (no `"`, `\\` or
/// control characters). Then the only escape needed is the key's `:`, written as `\\:` in JSON.
pub fn write_json_plain(out: &mut Vec<u8>, key: &str, value: &str) {
    out.reserve(key.len() + value.len() + 3);
    out.push(b'"');
    // Most keys have no `:`, and a branch-free scan of a short key finds that sooner than a call
    // to `memchr` (3 % of the hot path), which is left for the keys that have one.
    let mut rest = key.as_bytes();
    if rest.iter().fold(false, |found, b| found | (*b == b':')) {
        while let Some(at) = memchr::memchr(b':', rest) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(br"\\:");
            rest = &rest[at + 1..];
        }
    }
    out.extend_from_slice(rest);
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// The length in bytes of `encode(key, value)`, without building it.
pub fn encoded_len(key: &str, value: &str) -> usize {
    let escapes = key.bytes().filter(|b| *b == b'\\' || *b == b':').count();
    key.len() + escapes + 1 + value.len()
}

/// Splits a `keyToValue` string back into its key and value; `None` if it has no unescaped separator.
pub fn decode(encoded: &str) -> Option<(String, String)> {
    let mut key = String::new();
    let mut chars = encoded.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => key.push(chars.next()?.1),
            SEPARATOR => return Some((key, encoded[i + 1..].to_owned())),
            _ => key.push(c),
        }
    }
    None
}

fn needs_escape(key: &str) -> bool {
    key.bytes().any(|b| b == b'\\' || b == b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_keys_encode_as_the_write_up_shows() {
        assert_eq!(encode("Alice", "White"), "Alice:White");
        assert_eq!(encode("lastName", "sever"), "lastName:sever");
    }

    #[test]
    fn a_colon_in_the_key_cannot_collide_with_a_colon_in_the_value() {
        assert_eq!(encode("a:b", "c"), r"a\:b:c");
        assert_eq!(encode("a", "b:c"), "a:b:c");
        assert_ne!(encode("a:b", "c"), encode("a", "b:c"));
    }

    #[test]
    fn backslashes_in_keys_are_escaped_too() {
        assert_eq!(encode(r"a\", ":b"), r"a\\::b");
        assert_ne!(encode(r"a\", ":b"), encode("a", r"\:b"));
    }

    #[test]
    fn empty_values_keep_the_separator() {
        assert_eq!(encode("k", ""), "k:");
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(key in ".*", value in ".*") {
            prop_assert_eq!(decode(&encode(&key, &value)), Some((key, value)));
        }

        #[test]
        fn distinct_tags_never_share_an_encoding(
            a in ("[a-c:\\\\]{0,4}", "[a-c:\\\\]{0,4}"),
            b in ("[a-c:\\\\]{0,4}", "[a-c:\\\\]{0,4}"),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a.0, &a.1), encode(&b.0, &b.1));
        }

        #[test]
        fn write_json_writes_the_encoding_as_a_json_string(key in ".*", value in ".*") {
            let mut out = Vec::new();
            write_json(&mut out, &key, &value);
            prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), encode(&key, &value));
        }

        #[test]
        fn encoded_len_matches_the_encoding(key in ".*", value in ".*") {
            prop_assert_eq!(encoded_len(&key, &value), encode(&key, &value).len());
        }
    }
}
