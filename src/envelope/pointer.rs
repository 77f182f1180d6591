//! JSON Pointers (RFC 6901): where a part of a command sits in a producer's message.
//!
//! A pointer is parsed once, when the mapping is compiled; the per-message code only compares
//! already unescaped segments with the keys it meets, so no pointer text is walked per message.

use std::fmt;

/// A parsed JSON Pointer: `""` is the whole value, `/a/b` the member `b` of the member `a`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pointer {
    text: String,
    segments: Vec<String>,
}

impl Pointer {
    /// Parses the RFC 6901 text form: empty, or `/`-separated segments where `~1` stands for
    /// `/` and `~0` for `~`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self::root());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON Pointer: it must be empty (the whole value) or start with `/` (RFC 6901)"
            ));
        };
        let segments = rest
            .split('/')
            .map(|segment| unescape(segment).ok_or(()))
            .collect::<Result<Vec<_>, ()>>()
            .map_err(|()| {
                format!(
                    "`{text}` is not a JSON Pointer: `~` must be followed by 0 (for `~`) or 1 (for `/`) (RFC 6901)"
                )
            })?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The pointer to the whole value.
    pub fn root() -> Self {
        Self {
            text: String::new(),
            segments: Vec::new(),
        }
    }

    /// The unescaped segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether `self` names `other` or a value inside it.
    pub fn is_within(&self, other: &Pointer) -> bool {
        self.segments.starts_with(&other.segments)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("\"\" (the whole value)")
        } else {
            f.write_str(&self.text)
        }
    }
}

fn unescape(segment: &str) -> Option<String> {
    if !segment.contains('~') {
        return Some(segment.to_owned());
    }
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_unescaped_as_rfc_6901_says() {
        let p = Pointer::parse("/a~1b/m~0n/0/").unwrap();
        assert_eq!(p.segments(), ["a/b", "m~n", "0", ""]);
        assert_eq!(p.to_string(), "/a~1b/m~0n/0/");
        assert!(Pointer::parse("").unwrap().segments().is_empty());
    }

    #[test]
    fn malformed_pointers_are_refused_with_the_rule() {
        assert!(Pointer::parse("payload/id")
            .unwrap_err()
            .contains("must be empty (the whole value) or start with `/`"));
        assert!(Pointer::parse("/a~2")
            .unwrap_err()
            .contains("`~` must be followed by 0"));
        assert!(Pointer::parse("/a~").is_err());
    }

    #[test]
    fn within_compares_whole_segments() {
        let payload = Pointer::parse("/payload").unwrap();
        assert!(Pointer::parse("/payload/uid").unwrap().is_within(&payload));
        assert!(payload.is_within(&Pointer::root()));
        assert!(!Pointer::parse("/payloads").unwrap().is_within(&payload));
    }
}
