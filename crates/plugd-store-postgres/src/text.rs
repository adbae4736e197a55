//! Free text (errors, logs, the invoking app, URLs, delivery errors) in `TEXT` columns, which
//! PostgreSQL refuses to hold a NUL in: a NUL is written as U+FFFF `0`, and U+FFFF itself as
//! U+FFFF `F`, so any string round-trips; text without either (all text before this rule, and almost
//! all since) is stored unchanged, so equality, `||` and `right()` keep working on the stored form.
//! JSON columns need none of this: serde_json already writes a NUL as `\u0000`.

use std::borrow::Cow;

/// The escape: a noncharacter, which text exchanged between programs does not contain.
const ESCAPE: char = '\u{FFFF}';

/// `text` as stored: `"a\0b"` becomes `"a\u{FFFF}0b"` (the unit test below checks every case).
pub(crate) fn encode(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', ESCAPE]) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '\0' => out.extend([ESCAPE, '0']),
            ESCAPE => out.extend([ESCAPE, 'F']),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Text as stored, read back. An escape not followed by `0` or `F` (text cut by `right()` between
/// the two) is kept as it is.
pub(crate) fn decode(stored: String) -> String {
    if !stored.contains(ESCAPE) {
        return stored;
    }
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            (ESCAPE, Some('0')) => {
                chars.next();
                out.push('\0');
            }
            (ESCAPE, Some('F')) => {
                chars.next();
                out.push(ESCAPE);
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// [`decode`] of a nullable column.
pub(crate) fn decode_opt(stored: Option<String>) -> Option<String> {
    stored.map(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_text_round_trips_and_plain_text_is_unchanged() {
        for text in ["", "plain", "a\0b", "\0", "\u{FFFF}", "\u{FFFF}0", "x\u{FFFF}F\0\0y", "中文\0"] {
            let stored = encode(text);
            assert!(!stored.contains('\0'), "{stored:?}");
            assert_eq!(decode(stored.into_owned()), text);
        }
        assert!(matches!(encode("plain"), Cow::Borrowed("plain")));
        assert_eq!(decode("cut\u{FFFF}".into()), "cut\u{FFFF}");
    }
}
