//! Built-in rules with the plugin interfaces.

use serde_json::{Map, Value};

use super::NotificationShaper;
use crate::store::{NewMessage, Notification};

/// Longest preview, in characters.
const PREVIEW_CHARS: usize = 140;

/// One `message` notification to the recipient: a preview of at most 140
/// characters with e-mail addresses and phone numbers redacted.
pub struct BuiltinShaper;

impl NotificationShaper for BuiltinShaper {
    fn shape(&self, msg: &NewMessage) -> Vec<Notification> {
        let mut data = Map::new();
        data.insert("from".into(), Value::String(msg.from.clone()));
        data.insert("to".into(), Value::String(msg.to.clone()));
        data.insert(
            "product_id".into(),
            msg.product_id
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        data.insert("preview".into(), Value::String(preview(&msg.body)));
        vec![Notification {
            recipient: msg.to.clone(),
            kind: "message".into(),
            data,
        }]
    }
}

/// Redacts, then shortens to `PREVIEW_CHARS` (redacting first, so a cut can
/// never leave half an address readable).
pub fn preview(body: &str) -> String {
    let clean = redact_phones(&redact_emails(body));
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= PREVIEW_CHARS {
        return clean;
    }
    let mut s: String = clean.chars().take(PREVIEW_CHARS - 1).collect();
    s.push('…');
    s
}

fn is_local(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-')
}

/// Replaces `local@domain.tld` with `[email]`.
fn redact_emails(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            let mut start = i;
            while start > 0 && is_local(chars[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain(chars[end]) {
                end += 1;
            }
            // Trailing dots are punctuation, not domain.
            while end > i + 1 && chars[end - 1] == '.' {
                end -= 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let local_len = i - start;
            if local_len > 0 && domain.contains('.') && !domain.starts_with('.') {
                // Drop the local part already copied to `out`.
                let keep = out.chars().count() - local_len;
                out = out.chars().take(keep).collect();
                out.push_str("[email]");
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Replaces runs of 7 to 15 digits (with spaces, dashes, dots, parentheses
/// and a leading `+` between them) with `[phone]`.
fn redact_phones(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c.is_ascii_digit()
            || ((c == '+' || c == '(') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()));
        let boundary = i == 0 || !chars[i - 1].is_alphanumeric();
        if starts && boundary {
            let mut end = i;
            let mut digits = 0;
            let mut last_digit_end = i;
            while end < chars.len()
                && (chars[end].is_ascii_digit()
                    || matches!(chars[end], ' ' | '-' | '.' | '(' | ')' | '+'))
            {
                if chars[end].is_ascii_digit() {
                    digits += 1;
                    last_digit_end = end + 1;
                }
                end += 1;
            }
            let followed_by_word = chars
                .get(last_digit_end)
                .is_some_and(|c| c.is_alphanumeric());
            if (7..=15).contains(&digits) && !followed_by_word {
                out.push_str("[phone]");
                i = last_digit_end;
                continue;
            }
            // Not a phone number: copy the run as it is.
            for ch in &chars[i..last_digit_end.max(i + 1)] {
                out.push(*ch);
            }
            i = last_digit_end.max(i + 1);
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_redacted() {
        assert_eq!(
            redact_emails("mail me at jo.doe+x@example.co.uk."),
            "mail me at [email]."
        );
        assert_eq!(redact_emails("a@b is not one"), "a@b is not one");
        assert_eq!(redact_emails("@handle stays"), "@handle stays");
    }

    #[test]
    fn phones_are_redacted() {
        assert_eq!(
            redact_phones("call +1 (555) 123-4567 now"),
            "call [phone] now"
        );
        assert_eq!(redact_phones("call 0612345678."), "call [phone].");
        assert_eq!(
            redact_phones("I bid 150 on item 42"),
            "I bid 150 on item 42"
        );
        assert_eq!(redact_phones("year 2024"), "year 2024");
    }

    #[test]
    fn preview_is_short_and_clean() {
        let body = format!(
            "write to me@example.com or 555 123 4567 {}",
            "x".repeat(300)
        );
        let p = preview(&body);
        assert!(p.chars().count() <= PREVIEW_CHARS);
        assert!(p.contains("[email]") && p.contains("[phone]"));
        assert!(!p.contains("example.com"));
    }
}
