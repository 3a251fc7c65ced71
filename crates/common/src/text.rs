//! Text from peers, made safe to print: control characters become visible escapes, so that no
//! chat line can start another line, move the cursor or send a terminal sequence (an ESC, an
//! OSC that sets the window title, a C1 control). The text itself is stored and relayed as
//! sent; every client that prints it shows it this way.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character shown as an escape: `\n`, `\r`, `\t`, `\e` (ESC),
/// `\xNN` for the other C0 controls and DEL, `\u{NN}` for C1 controls and Unicode's line and
/// paragraph separators and bidirectional overrides (which reorder what follows on the line).
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is shown as an escape.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_escapes_and_the_rest_stays() {
        assert!(matches!(visible("héllo, wörld"), Cow::Borrowed(_)));
        assert_eq!(visible("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(visible("\u{1b}]0;pwned\u{7}"), "\\e]0;pwned\\x07");
        assert_eq!(visible("\u{9b}31m\u{7f}"), "\\u{9b}31m\\x7f");
        assert_eq!(visible("abc\u{202e}def"), "abc\\u{202e}def");
        // Nothing printed raw can be a control.
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        assert!(!visible(&all).chars().any(needs_escape));
    }
}
