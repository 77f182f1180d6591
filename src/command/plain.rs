//! A one-pass reader for the plain shape of the built-in envelope, in front of the serde decoder.
//!
//! serde's derived decoder reads every member through a general state machine, and reads each tag
//! and field value twice (once to find its raw text, once to judge it). On the hot path in
//! `benches/pipeline.rs` that was two thirds of the time per command. Almost every command on a
//! real topic is plain: members the envelope knows, strings without escape sequences where the
//! decoder would borrow them, whole numbers for `version` and `timestamp`. This reader takes those
//! in one pass over the bytes and gives up, with `None`, on anything else: an escape in a key, the
//! id or a tag, a `null`, an unknown or repeated member, a number it would have to convert, a field
//! nested deeper than [`MAX_FIELD_DEPTH`], an empty tag key, or any JSON error. The serde decoder
//! then reads the payload as it always did, so a rejection, and every unusual command, gets that
//! decoder's answer and message. What this reader accepts, the serde decoder accepts with the same
//! result: the property tests below hold the two to it.

use std::borrow::Cow;

use super::{CommandKind, Entries, Envelope, Text, MAX_FIELD_DEPTH};

/// Reads a plain envelope, or `None` if the serde decoder must judge the payload.
pub(super) fn read(text: &str) -> Option<Envelope<'_>> {
    let mut reader = Reader { text, at: 0 };
    let mut seen = Seen::default();
    let (mut kind, mut id, mut version, mut timestamp, mut tags, mut fields) =
        (None, None, None, None, None, None);
    reader.object(|r, name| {
        match name {
            "type" if seen.first(0) => {
                kind = Some(match r.plain_string()? {
                    "upsert" => CommandKind::Upsert,
                    "delete" => CommandKind::Delete,
                    _ => return None,
                })
            }
            "id" if seen.first(1) => id = Some(Text(Cow::Borrowed(r.plain_string()?))),
            "version" if seen.first(2) => version = Some(r.whole_number()?),
            "timestamp" if seen.first(3) => timestamp = Some(r.whole_number()?),
            "tags" if seen.first(4) => {
                let members = r.members(|r| r.tag_value().map(Cow::Borrowed))?;
                if members.iter().any(|(key, _)| key.is_empty()) {
                    return None;
                }
                tags = Some(Entries(members));
            }
            "fields" if seen.first(5) => fields = Some(Entries(r.members(Reader::field_value)?)),
            _ => return None,
        }
        Some(())
    })?;
    reader.skip_whitespace();
    if reader.at != text.len() {
        return None;
    }
    Some(Envelope {
        kind: kind?,
        id,
        version,
        timestamp,
        tags,
        fields,
    })
}

/// Which envelope members were read, so that a repeated one goes to the serde decoder.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, member: u8) -> bool {
        let bit = 1 << member;
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Takes `byte`, after any whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Reads `{"name": value, …}`: `member` reads each value, after the whitespace before it.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let name = self.plain_string()?;
            self.expect(b':')?;
            self.skip_whitespace();
            member(self, name)?;
            self.skip_whitespace();
            self.at += 1;
            match self.text.as_bytes().get(self.at - 1)? {
                b',' => {}
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Reads an object's members in document order, each value read by `value`. (Generic rather
    /// than a function pointer: inlined, a tag's value stays in registers on its way into the
    /// vector, where a call returned it through memory and stalled the copy that followed.)
    fn members<V>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Option<V>,
    ) -> Option<Vec<(Cow<'a, str>, V)>> {
        let mut members = Vec::with_capacity(12);
        self.object(|r, name| {
            members.push((Cow::Borrowed(name), value(r)?));
            Some(())
        })?;
        Some(members)
    }

    /// A string without escape sequences, as the text between its quotes (after any whitespace).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        self.skip_string_text();
        if self.peek()? != b'"' {
            return None;
        }
        self.at += 1;
        self.text.get(start..self.at - 1)
    }

    /// Moves to the next byte a string cannot hold as it is: `"`, `\\` or a control character.
    /// Eight bytes at a time: tag values, titles and ids are mostly longer than that.
    fn skip_string_text(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let bytes = self.text.as_bytes();
        while let Some(chunk) = bytes.get(self.at..self.at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            // The classic "has a zero byte" test, for `word ^ c` (a byte equal to c) and for
            // `word - 0x20` (a byte below 0x20); the lowest flagged byte is always a true match.
            let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
            let quote = zero(word ^ (ONES * u64::from(b'"')));
            let backslash = zero(word ^ (ONES * u64::from(b'\\')));
            let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
            let found = quote | backslash | control;
            if found != 0 {
                self.at += found.trailing_zeros() as usize / 8;
                return;
            }
            self.at += 8;
        }
        while let Some(b) = self.peek() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.at += 1;
        }
    }

    /// A tag's value as its text: a plain string, a number or a boolean, as the serde decoder's
    /// `tag_value_text` gives it.
    #[inline]
    fn tag_value(&mut self) -> Option<&'a str> {
        let start = self.at;
        match self.peek()? {
            b'"' => return self.plain_string(),
            b't' => self.word("true")?,
            b'f' => self.word("false")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        self.text.get(start..self.at)
    }

    /// A field's value as its raw JSON text, checked to be one JSON value.
    fn field_value(&mut self) -> Option<&'a str> {
        let start = self.at;
        self.value(0)?;
        self.text.get(start..self.at)
    }

    /// Skips one JSON value nested inside `depth` arrays or objects, checking its grammar.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'n' => self.word("null"),
            b'-' | b'0'..=b'9' => self.number(),
            b'{' if depth < MAX_FIELD_DEPTH => self.object(|r, _| r.value(depth + 1)),
            b'[' if depth < MAX_FIELD_DEPTH => self.array(depth + 1),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.at += 1;
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_whitespace();
            self.value(depth)?;
            self.skip_whitespace();
            self.at += 1;
            match self.text.as_bytes().get(self.at - 1)? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Skips a string, checking its escape sequences. (The payload is already valid UTF-8.)
    fn string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            self.skip_string_text();
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => return Some(()),
                0..=0x1f => return None,
                b'\\' => match self.peek()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                    b'u' => {
                        let hex = self.text.as_bytes().get(self.at + 1..self.at + 5)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.at += 5;
                    }
                    _ => return None,
                },
                _ => {}
            }
        }
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// Skips a number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// Skips one or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    /// A whole number that fits in a `u64`. (A fraction or an exponent after it is for the serde
    /// decoder to convert or refuse: the member loop gives up on anything but `,` or `}` there.)
    ///
    /// The digits are found first and summed after, in locals: summing while scanning kept the
    /// running value in memory, a store and a load per digit (a fifth of the decoder's own time
    /// on 13-digit timestamps). Nineteen digits cannot overflow, so only a twentieth is checked.
    fn whole_number(&mut self) -> Option<u64> {
        let rest = self.text.as_bytes().get(self.at..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let run = &rest[..digits];
        if digits == 0 || (digits > 1 && run[0] == b'0') {
            return None;
        }
        let (head, last) = run.split_at(digits.min(19));
        let mut n = head
            .iter()
            .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
        if let [digit] = last {
            n = n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
        } else if !last.is_empty() {
            return None;
        }
        self.at += digits;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, DecodeError};
    use proptest::prelude::*;

    /// The serde decoder alone, as `Command::decode` was before this reader.
    fn by_serde(text: &str) -> Result<Command<'_>, DecodeError> {
        let envelope: Envelope<'_> = serde_json::from_str(text)
            .map_err(|e| DecodeError(format!("not a valid command envelope: {e}")))?;
        envelope.validate()
    }

    /// A command's content, with whether each string is borrowed (a borrowed string is copied
    /// into the bulk body unescaped, so the two decoders must agree on that too).
    fn shape(command: &Command<'_>) -> String {
        let text = |s: &Cow<'_, str>| format!("{:?}{s:?}", matches!(s, Cow::Borrowed(_)));
        format!(
            "{:?} {:?} {:?} {:?} tags {:?} fields {:?}",
            command.kind,
            command.id.as_ref().map(text),
            command.version,
            command.timestamp,
            command
                .tags
                .iter()
                .map(|(k, v)| (text(k), text(v)))
                .collect::<Vec<_>>(),
            command
                .fields
                .iter()
                .map(|(k, v)| (text(k), *v))
                .collect::<Vec<_>>(),
        )
    }

    /// Holds this reader to the serde decoder for one payload: whatever it reads, the serde
    /// decoder reads the same; and `Command::decode` answers as the serde decoder does.
    fn agrees(text: &str) -> Result<bool, TestCaseError> {
        let serde = by_serde(text);
        let decoded = Command::decode(text.as_bytes());
        match (&serde, &decoded) {
            (Ok(a), Ok(b)) => prop_assert_eq!(shape(a), shape(b), "{}", text),
            (Err(a), Err(b)) => prop_assert_eq!(a, b, "{}", text),
            _ => prop_assert!(false, "{text}: serde {serde:?}, decode {decoded:?}"),
        }
        Ok(read(text).is_some())
    }

    #[test]
    fn generated_commands_are_read_here_with_the_serde_decoders_result() {
        let messages = crate::generate::messages(&crate::generate::GeneratorSpec {
            count: 2_000,
            ids: 500,
            tags: 12,
            seed: 5,
            poison_every: 7,
        });
        let mut read_here = 0;
        for message in &messages {
            let Ok(text) = std::str::from_utf8(&message.payload) else {
                continue;
            };
            read_here += usize::from(agrees(text).unwrap());
        }
        // Everything but the poison is plain.
        assert!(read_here > messages.len() * 3 / 4, "{read_here}");
    }

    #[test]
    fn unusual_payloads_go_to_the_serde_decoder() {
        let cases = [
            r#"{"type":"upsert","id":null}"#,
            r#"{"type":"upsert","id":"a\"b"}"#,
            r#"{"type":"upsert","version":1.0}"#,
            r#"{"type":"upsert","version":01}"#,
            r#"{"type":"upsert","version":18446744073709551616}"#,
            r#"{"type":"upsert","version":-1}"#,
            r#"{"type":"upsert","tags":{"":"x"}}"#,
            r#"{"type":"upsert","tags":{"a":null}}"#,
            r#"{"type":"upsert","tags":{"a":"\u00e9"}}"#,
            r#"{"type":"upsert","tags":{"a":01}}"#,
            r#"{"type":"upsert","tags":{"a":1.}}"#,
            r#"{"type":"upsert","tags":{"a":truex}}"#,
            r#"{"type":"upsert","tags":{"a":"x",}}"#,
            r#"{"type":"upsert","fields":{"a":[1,]}}"#,
            r#"{"type":"upsert","fields":{"a":"\x"}}"#,
            r#"{"type":"upsert","fields":{"a":"\xabcd"}}"#,
            r#"{"type":"upsert","fields":{"a":"\u12"}}"#,
            r#"{"type":"upsert","fields":{"a":{"b":}}}"#,
            r#"{"type":"upsert","id":"a","id":"b"}"#,
            r#"{"type":"merge"}"#,
            r#"{"id":"a"}"#,
            r#"{"type":"upsert"} x"#,
            r#"{"type":"upsert","colour":"red"}"#,
            "{\"type\":\"upsert\",\"tags\":{\"a\":\"x\ty\"}}",
            r#"["upsert"]"#,
        ];
        for case in cases {
            assert!(!agrees(case).unwrap(), "read here: {case}");
        }
        let deep = format!(
            r#"{{"type":"upsert","fields":{{"x":{}1{}}}}}"#,
            "[".repeat(33),
            "]".repeat(33)
        );
        assert!(!agrees(&deep).unwrap());
        let deep_objects = format!(
            r#"{{"type":"upsert","fields":{{"x":{}1{}}}}}"#,
            r#"{"a":"#.repeat(33),
            "}".repeat(33)
        );
        assert!(!agrees(&deep_objects).unwrap());
        let limit = format!(
            r#"{{"type":"upsert","fields":{{"x":{}1{}}}}}"#,
            "[".repeat(32),
            "]".repeat(32)
        );
        assert!(agrees(&limit).unwrap());
    }

    #[test]
    fn whitespace_and_every_value_kind_are_read_here() {
        let cases = [
            " {\n \"type\" : \"upsert\" ,\r\n\t\"id\":\"d\", \"version\" : 0 , \"tags\" : { } } \n",
            r#"{"type":"upsert","tags":{"n":-0.5e+3,"z":0,"t":true,"f":false,"s":"é"}}"#,
            r#"{"type":"upsert","fields":{"a":{"b":[null,true,false,1E9,"x\"\\\/\b\f\n\r\t\u00Ef"]},"e":[],"o":{}}}"#,
            r#"{"type":"delete","id":"x","timestamp":18446744073709551615}"#,
            r#"{"type":"upsert","tags":{"a":"1","a":"2"}}"#,
            r#"{"type":"delete","id":"x","tags":{}}"#,
            r#"{"type":"upsert","fields":{"tags":"x"}}"#,
        ];
        for case in cases {
            assert!(agrees(case).unwrap(), "not read here: {case}");
        }
    }

    #[test]
    fn strings_stop_at_the_first_byte_they_cannot_hold_wherever_it_falls_in_a_word() {
        for stop in ["\"", "\\", "\u{0}", "\u{1f}", "\n"] {
            for before in 0..20 {
                for filler in ["a", "é", " ", "~", "\u{7f}"] {
                    let text = format!("{}{stop}{}", filler.repeat(before), "x".repeat(9));
                    let mut reader = Reader { text: &text, at: 0 };
                    reader.skip_string_text();
                    assert_eq!(reader.at, filler.len() * before, "{text:?}");
                }
            }
        }
        let mut reader = Reader {
            text: "é€ plain, to the end ~\u{7f}",
            at: 0,
        };
        reader.skip_string_text();
        assert_eq!(reader.at, reader.text.len());
    }

    /// A JSON value made of the pieces this reader judges, some of them broken.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("fals".to_owned()),
            "-?(0|[1-9][0-9]{0,3}|00)(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
            "\"([a-z :é]|\\\\[\"\\\\/bnux]|\\\\u[0-9a-fA-F]{4}|\\\\u[0-9g]{2}|\t){0,14}\"",
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-c]{0,2}", inner, "[ \n]?"), 0..4).prop_map(|members| {
                    let members: Vec<_> = members
                        .iter()
                        .map(|(k, v, ws)| format!("\"{k}\"{ws}:{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    fn envelope_member() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"(upsert|delete|merge)\"".prop_map(|v| format!("\"type\":{v}")),
            json_value().prop_map(|v| format!("\"type\":{v}")),
            json_value().prop_map(|v| format!("\"id\":{v}")),
            "\"[a-z0-9-]{0,6}\"".prop_map(|v| format!("\"id\":{v}")),
            json_value().prop_map(|v| format!("\"version\":{v}")),
            json_value().prop_map(|v| format!("\"timestamp\":{v}")),
            json_value().prop_map(|v| format!("\"tags\":{v}")),
            json_value().prop_map(|v| format!("\"fields\":{v}")),
            json_value().prop_map(|v| format!("\"other\":{v}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn whatever_this_reader_reads_the_serde_decoder_reads_the_same(
            members in prop::collection::vec(envelope_member(), 0..6),
            space in "[ \n]{0,1}",
        ) {
            let text = format!("{{{space}{}}}", members.join(&format!(",{space}")));
            agrees(&text)?;
        }

        /// Versions and timestamps of every length up to past `u64::MAX`, with leading zeros
        /// and a fraction or exponent after them.
        #[test]
        fn whole_numbers_are_read_as_the_serde_decoder_reads_them(
            digits in "0?[0-9]{0,21}",
            near_max in (u64::MAX - 1_000)..=u64::MAX,
            tail in "(|\\.5|e1)",
        ) {
            for number in [digits.clone(), near_max.to_string(), format!("{near_max}0")] {
                let text = format!(r#"{{"type":"delete","version":{number}{tail}}}"#);
                let plain = agrees(&text)?;
                let whole = tail.is_empty()
                    && !number.is_empty()
                    && !(number.len() > 1 && number.starts_with('0'))
                    && number.parse::<u64>().is_ok();
                prop_assert_eq!(plain, whole, "{}", text);
            }
        }

        #[test]
        fn field_values_are_judged_as_the_serde_decoder_judges_them(value in json_value()) {
            agrees(&format!(r#"{{"type":"upsert","fields":{{"v":{value}}}}}"#))?;
            agrees(&format!(r#"{{"type":"upsert","tags":{{"v":{value}}}}}"#))?;
        }
    }
}
