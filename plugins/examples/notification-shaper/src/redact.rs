//! Previews: whitespace collapsed, contact details and card numbers redacted,
//! cut to a length.
//!
//! The scanners work on `char`s and are deliberately simple (no regular
//! expressions: they would make the component several times larger).

/// Replaces an e-mail address.
pub const EMAIL: &str = "[email]";
/// Replaces a phone number.
pub const PHONE: &str = "[phone]";
/// Replaces a card number.
pub const CARD: &str = "[card]";

/// How many chars of collapsed text are redacted before cutting. A
/// replacement is at least `6 / 13` of what it replaces, so this leaves far
/// more than a preview, and bounds the work on a huge body.
const SCAN_LIMIT: usize = 2048;

/// The preview of `text`: whitespace collapsed, e-mail addresses, card
/// numbers and phone numbers redacted (in that order), then cut to at most
/// `max` chars with a trailing `…`.
pub fn preview(text: &str, max: usize) -> String {
    let collapsed: Vec<char> = collapse(text).chars().take(SCAN_LIMIT).collect();
    let redacted = redact_phones(&redact_cards(&redact_emails(&collapsed)));
    cut(&redacted.into_iter().collect::<String>(), max)
}

/// `text` with runs of whitespace replaced by one space, trimmed.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` if it has at most `max` chars; else its first `max - 1` chars
/// (without trailing whitespace or a partial placeholder) and `…`.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    // Do not leave half a placeholder such as "[pho".
    if let Some(open) = kept.rfind('[') {
        let tail = &kept[open..];
        if !tail.contains(']') && [EMAIL, PHONE, CARD].iter().any(|p| p.starts_with(tail)) {
            kept.truncate(open);
        }
    }
    let mut kept = kept.trim_end().to_string();
    kept.push('…');
    kept
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-')
}

/// Replaces `local@domain.tld` addresses with [`EMAIL`].
pub fn redact_emails(text: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    // Where the chars copied verbatim since the last replacement begin: an
    // address may not reach back into a replacement.
    let mut copied_from = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == '@' {
            if let Some((start, end)) = email_around(text, copied_from, i) {
                // text[start..i] was copied to `out` verbatim: take it back.
                out.truncate(out.len() - (i - start));
                out.extend(EMAIL.chars());
                i = end;
                copied_from = end;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// The span `start..end` of an e-mail address whose `@` is at `at`,
/// starting no earlier than `min_start`.
fn email_around(text: &[char], min_start: usize, at: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > min_start && is_local_char(text[start - 1]) {
        start -= 1;
    }
    // A local part does not start or end with a dot.
    while start < at && text[start] == '.' {
        start += 1;
    }
    if start == at || text[at - 1] == '.' {
        return None;
    }
    let mut end = at + 1;
    while end < text.len() && is_domain_char(text[end]) {
        end += 1;
    }
    // A full stop or hyphen after the address is punctuation.
    while end > at + 1 && matches!(text[end - 1], '.' | '-') {
        end -= 1;
    }
    let domain: String = text[at + 1..end].iter().collect();
    let labels: Vec<&str> = domain.split('.').collect();
    let tld = labels.last().copied().unwrap_or_default();
    let valid = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && tld.len() >= 2
        && tld.chars().all(|c| c.is_ascii_alphabetic());
    valid.then_some((start, end))
}

/// A run of digits and separators starting at `start`: the end of its last
/// digit (`start` when it has none) and its digits. At most `max_gap`
/// separators (chars of `separators`) may follow each other.
fn digit_run(text: &[char], start: usize, separators: &[char], max_gap: usize) -> (usize, Vec<u8>) {
    let mut digits = Vec::new();
    let mut end = start;
    let mut i = start;
    let mut gap = 0;
    while i < text.len() {
        let c = text[i];
        if let Some(d) = c.to_digit(10) {
            digits.push(d as u8);
            i += 1;
            end = i;
            gap = 0;
        } else if separators.contains(&c) && gap < max_gap {
            gap += 1;
            i += 1;
        } else {
            break;
        }
    }
    (end, digits)
}

/// Whether a number may start at `i`: not inside a word or another number.
fn at_boundary(text: &[char], i: usize) -> bool {
    i == 0 || !(text[i - 1].is_alphanumeric() || text[i - 1] == '_')
}

/// Whether the number ending at `end` is not glued to a word.
fn at_end_boundary(text: &[char], end: usize) -> bool {
    end == text.len() || !(text[end].is_alphanumeric() || text[end] == '_')
}

/// Whether `digits` pass the Luhn checksum.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Replaces card numbers with [`CARD`]: 13 to 19 digits, in groups separated
/// by single spaces or dashes, passing the Luhn check. (A number that fails
/// it is left for [`redact_phones`], which redacts any 7+ digit run.)
pub fn redact_cards(text: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() && at_boundary(text, i) {
            let (end, digits) = digit_run(text, i, &[' ', '-'], 1);
            if (13..=19).contains(&digits.len()) && luhn(&digits) && at_end_boundary(text, end) {
                out.extend(CARD.chars());
                i = end;
                continue;
            }
            // Copy the whole run so that no suffix of it is re-examined.
            out.extend_from_slice(&text[i..end]);
            i = end;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// Replaces phone numbers with [`PHONE`]: at least 7 digits with spaces,
/// dashes, dots or parentheses between them, maybe after a `+` or `(`. Dates
/// written `2024-05-17` or `17.05.2024` are left alone.
pub fn redact_phones(text: &[char]) -> Vec<char> {
    const SEPARATORS: [char; 5] = [' ', '-', '.', '(', ')'];
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        let starts = c.is_ascii_digit()
            || (matches!(c, '+' | '(')
                && text
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '('));
        if starts && at_boundary(text, i) {
            let first = if c.is_ascii_digit() { i } else { i + 1 };
            // Up to two separators in a row: "(555) 123" has ") ".
            let (end, digits) = digit_run(text, first, &SEPARATORS, 2);
            if digits.len() >= 7 && at_end_boundary(text, end) && !is_date(&text[first..end]) {
                out.extend(PHONE.chars());
                i = end;
                continue;
            }
            if end > i {
                out.extend_from_slice(&text[i..end]);
                i = end;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// `YYYY-MM-DD` or `DD.MM.YYYY`.
fn is_date(span: &[char]) -> bool {
    let shape: String = span
        .iter()
        .map(|c| if c.is_ascii_digit() { 'd' } else { *c })
        .collect();
    shape == "dddd-dd-dd" || shape == "dd.dd.dddd"
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn r(f: fn(&[char]) -> Vec<char>, s: &str) -> String {
        f(&s.chars().collect::<Vec<_>>()).into_iter().collect()
    }

    #[test]
    fn redacts_emails() {
        assert_eq!(
            r(redact_emails, "mail ann.lee+x@example.co.uk."),
            "mail [email]."
        );
        assert_eq!(r(redact_emails, "a@b.io,c@d.org"), "[email],[email]");
        assert_eq!(r(redact_emails, "(bob@mail-1.example.com)"), "([email])");
        // An address glued to the end of another does not reach into it.
        assert_eq!(
            r(redact_emails, "aaaaaaaaaa@bbbbbbb.com@x.org"),
            "[email]@x.org"
        );
        for keep in [
            "@home",
            "me@localhost",
            "x@y.1",
            "a@.com",
            "50 @ 3.00",
            ".@x.com",
        ] {
            assert_eq!(r(redact_emails, keep), keep);
        }
    }

    #[test]
    fn checks_luhn() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("4111111111111112")));
    }

    #[test]
    fn redacts_cards() {
        assert_eq!(
            r(redact_cards, "card 4111 1111 1111 1111 ok"),
            "card [card] ok"
        );
        assert_eq!(r(redact_cards, "4111-1111-1111-1111."), "[card].");
        assert_eq!(r(redact_cards, "378282246310005"), "[card]"); // Amex, 15 digits
                                                                  // Not Luhn-valid, too short, double separators, glued to a word: kept.
        for keep in [
            "4111 1111 1111 1112",
            "411111111111",
            "4111  1111 1111 1111",
            "x4111111111111111",
        ] {
            assert_eq!(r(redact_cards, keep), keep);
        }
    }

    #[test]
    fn redacts_phones() {
        for (input, want) in [
            ("call +1 (555) 123-4567 now", "call [phone] now"),
            ("555.123.4567", "[phone]"),
            ("(030) 1234567", "[phone]"),
            ("+44 20 7946 0958.", "[phone]."),
            ("ring 0171-555 01 02, thanks", "ring [phone], thanks"),
        ] {
            assert_eq!(r(redact_phones, input), want, "{input}");
        }
        for keep in [
            "123456",
            "lot 12 34 56",
            "2024-05-17",
            "17.05.2024",
            "12.50",
            "SKU1234567",
            "4 items",
        ] {
            assert_eq!(r(redact_phones, keep), keep);
        }
    }

    #[test]
    fn cards_before_phones() {
        let text = "pay 4111 1111 1111 1111 or call 555 123 4567";
        assert_eq!(preview(text, 140), "pay [card] or call [phone]");
        // A 16-digit number that is not a card is still not shown.
        assert_eq!(preview("4111 1111 1111 1112", 140), "[phone]");
    }

    #[test]
    fn collapses_and_cuts_by_chars() {
        assert_eq!(collapse("  a \n\t b  "), "a b");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo wörld", 6), "héllo…");
        let long = "ü".repeat(200);
        let cut_long = cut(&long, 140);
        assert_eq!(cut_long.chars().count(), 140);
        assert!(cut_long.ends_with("ü…"));
        // A cut inside a placeholder drops the partial placeholder.
        assert_eq!(cut("call [phone] now", 9), "call…");
    }

    #[test]
    fn redacts_before_cutting() {
        // The phone number straddles char 140 of the body: it must not leak.
        let body = format!("{} 555 123 4567 tail", "a".repeat(133));
        let p = preview(&body, 140);
        assert!(!p.contains("555"), "{p}");
        assert!(p.chars().count() <= 140);
    }
}
