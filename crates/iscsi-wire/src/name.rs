//! iSCSI names (RFC 7143 §4.2.7, RFC 3722): the one rule the login checks
//! an InitiatorName against and `acls create` checks a node name against.
//! Names end up in logs, in the APTPL file and in configuration paths, so
//! besides the format the rule refuses what could forge or hide text there:
//! control characters, white space, invisible or direction-changing
//! characters, and `/`.

/// Longest iSCSI name in bytes (RFC 7143 §4.2.7.1: 223 bytes, UTF-8).
pub const MAX_NAME_LEN: usize = 223;

/// Characters that change how text around them displays without being
/// visible themselves (zero-width, bidirectional controls, line and
/// paragraph separators, byte order mark, tags): stringprep's tables C.2.2,
/// C.6, C.8 and C.9, which RFC 3722 prohibits in iSCSI names.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Whether `n` is an acceptable iSCSI name: `iqn.YYYY-MM.naming-authority[...]`,
/// `eui.` and 16 hex digits, or `naa.` and 16 or 32 hex digits; at most
/// [`MAX_NAME_LEN`] bytes; no control, white-space or invisible characters
/// and no `/`. Upper case is accepted (initiators in the wild use it).
pub fn valid_name(n: &str) -> bool {
    let format = if let Some(rest) = n.strip_prefix("iqn.") {
        let b = rest.as_bytes();
        b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'.'
    } else if let Some(h) = n.strip_prefix("eui.") {
        h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit())
    } else if let Some(h) = n.strip_prefix("naa.") {
        (h.len() == 16 || h.len() == 32) && h.bytes().all(|c| c.is_ascii_hexdigit())
    } else {
        false
    };
    format
        && n.len() <= MAX_NAME_LEN
        && !n
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || invisible(c) || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let long_ok = format!("iqn.2026-11.org.example:{}", "a".repeat(223 - 24));
        assert_eq!(long_ok.len(), 223);
        let long_bad = format!("{long_ok}a");
        let cases: &[(&str, bool)] = &[
            ("iqn.2026-11.org.example:host1", true),
            ("iqn.1991-05.com.microsoft:WIN-7ABC.corp.example", true),
            ("iqn.2008-11.org.linux-kvm", true),
            ("iqn.2026-11.org.example:h\u{f6}st", true),
            ("eui.02004567A425678D", true),
            ("naa.52004567BA64678D", true),
            ("naa.62004567BA64678D0123456789ABCDEF", true),
            (&long_ok, true),
            (&long_bad, false),
            ("", false),
            ("iqn.x", false),
            ("iqn.2026-11.", false),
            ("iqn.26-11.org.example", false),
            ("eui.0200", false),
            ("naa.52004567BA64678", false),
            ("eui.02004567A425678G", false),
            ("host1", false),
            ("iqn.2026-11.org.example:a\nb", false),
            ("iqn.2026-11.org.example:a\rb", false),
            ("iqn.2026-11.org.example:\u{1b}[31mred", false),
            ("iqn.2026-11.org.example:a\0b", false),
            ("iqn.2026-11.org.example:a b", false),
            ("iqn.2026-11.org.example:a\tb", false),
            ("iqn.2026-11.org.example:a/b", false),
            ("iqn.2026-11.org.example:a\u{85}b", false),
            ("iqn.2026-11.org.example:a\u{2028}b", false),
            ("iqn.2026-11.org.example:evil\u{202e}txt.exe", false),
            ("iqn.2026-11.org.example:a\u{200b}b", false),
            ("iqn.2026-11.org.example:a\u{feff}", false),
        ];
        for (n, want) in cases {
            assert_eq!(valid_name(n), *want, "{n:?}");
        }
    }
}
