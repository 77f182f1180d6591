//! What the legacy analyser makes of a piece of text, as far as it can be known without running it.
//!
//! The legacy tag fields are `text` with the standard analyser: Unicode word segmentation, then lower
//! case. Only two facts are needed, and both are decided conservatively; anything in between is
//! refused by the caller rather than guessed:
//! - a string of ASCII lower-case letters and digits is exactly one indexed word (the tokenizer
//!   never splits a run of ASCII letters and digits, and lower-casing leaves it as it is);
//! - a string of ASCII punctuation, symbols and spaces gives no word at all.

/// Whether the analyser indexes `text` as exactly this one word.
pub fn is_one_indexed_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether the analyser finds no word in `text`.
pub fn has_no_words(text: &str) -> bool {
    // `_` joins words (ExtendNumLet) and may start one; leave it to the "cannot tell" case.
    text.bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_alphanumeric() && b != b'_')
}

/// Whether the analyser surely finds at least one word in `text`: a letter or digit always ends up
/// in a word.
pub fn has_a_word(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_ascii_runs_are_single_words() {
        assert!(is_one_indexed_word("p2"));
        assert!(is_one_indexed_word("john"));
        for not in ["", "John", "john smith", "eu-west-1", "zürich", "a_b"] {
            assert!(!is_one_indexed_word(not), "{not:?}");
        }
    }

    #[test]
    fn punctuation_alone_has_no_words_and_letters_always_do() {
        for none in ["", "!!!", " - ", "/:"] {
            assert!(has_no_words(none) && !has_a_word(none), "{none:?}");
        }
        for some in ["a", "東京", "Ελλάδα", "n/a", "9"] {
            assert!(has_a_word(some) && !has_no_words(some), "{some:?}");
        }
        // Neither provable: the caller refuses these.
        for unsure in ["_", "€", "😀"] {
            assert!(!has_a_word(unsure) && !has_no_words(unsure), "{unsure:?}");
        }
    }
}
