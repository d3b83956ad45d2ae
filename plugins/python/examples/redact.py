"""Previews: whitespace collapsed, contact details and card numbers redacted,
cut to a length. A port of plugins/examples/notification-shaper/src/redact.rs;
like it, it scans characters without regular expressions, so both give the
same previews."""

from alphanumeric import is_alphanumeric

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"

# How many characters of collapsed text are redacted before cutting: far
# more than a preview, and a bound on the work for a huge body.
_SCAN_LIMIT = 2048

# Unicode White_Space, as Rust's ``char::is_whitespace`` (``str.split()``
# also splits on the separators U+001C to U+001F).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _is_ascii_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _is_ascii_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _is_local_char(c: str) -> bool:
    return _is_ascii_alnum(c) or c in "._%+-"


def _is_domain_char(c: str) -> bool:
    return _is_ascii_alnum(c) or c in ".-"


def collapse(text: str) -> str:
    """``text`` with runs of whitespace replaced by one space, trimmed."""
    words, word = [], []
    for c in text:
        if c in _WHITESPACE:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(c)
    if word:
        words.append("".join(word))
    return " ".join(words)


def preview(text: str, limit: int) -> str:
    """The preview of ``text``: whitespace collapsed, e-mail addresses, card
    numbers and phone numbers redacted (in that order), then cut to at most
    ``limit`` characters with a trailing ``…``."""
    chars = list(collapse(text)[:_SCAN_LIMIT])
    return cut("".join(redact_phones(redact_cards(redact_emails(chars)))), limit)


def cut(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters; else its first
    ``limit - 1`` (without trailing whitespace or a partial placeholder) and
    ``…``."""
    if len(text) <= limit:
        return text
    kept = text[: max(limit - 1, 0)]
    start = kept.rfind("[")
    if start >= 0:
        tail = kept[start:]
        if "]" not in tail and any(p.startswith(tail) for p in (EMAIL, PHONE, CARD)):
            kept = kept[:start]
    end = len(kept)
    while end > 0 and kept[end - 1] in _WHITESPACE:
        end -= 1
    return kept[:end] + "…"


def redact_emails(text: list) -> list:
    """Replaces ``local@domain.tld`` addresses with EMAIL."""
    out = []
    copied_from = 0  # an address may not reach back into a replacement
    i = 0
    while i < len(text):
        if text[i] == "@":
            span = _email_around(text, copied_from, i)
            if span is not None:
                start, end = span
                del out[len(out) - (i - start):]
                out.extend(EMAIL)
                i = end
                copied_from = end
                continue
        out.append(text[i])
        i += 1
    return out


def _email_around(text: list, min_start: int, at: int):
    start = at
    while start > min_start and _is_local_char(text[start - 1]):
        start -= 1
    # A local part does not start or end with a dot.
    while start < at and text[start] == ".":
        start += 1
    if start == at or text[at - 1] == ".":
        return None
    end = at + 1
    while end < len(text) and _is_domain_char(text[end]):
        end += 1
    # A full stop or hyphen after the address is punctuation.
    while end > at + 1 and text[end - 1] in ".-":
        end -= 1
    labels = "".join(text[at + 1 : end]).split(".")
    tld = labels[-1]
    valid = (
        len(labels) >= 2
        and all(labels)
        and len(tld) >= 2
        and all(c.isascii() and c.isalpha() for c in tld)
    )
    return (start, end) if valid else None


def _digit_run(text: list, start: int, separators: str, max_gap: int):
    """A run of digits and separators from ``start``: the end of its last
    digit (``start`` when none) and its digits; at most ``max_gap``
    separators in a row."""
    digits = []
    end = i = start
    gap = 0
    while i < len(text):
        c = text[i]
        if _is_ascii_digit(c):
            digits.append(ord(c) - 48)
            i += 1
            end = i
            gap = 0
        elif c in separators and gap < max_gap:
            gap += 1
            i += 1
        else:
            break
    return end, digits


def _at_boundary(text: list, i: int) -> bool:
    return i == 0 or not (is_alphanumeric(text[i - 1]) or text[i - 1] == "_")


def _at_end_boundary(text: list, end: int) -> bool:
    return end == len(text) or not (is_alphanumeric(text[end]) or text[end] == "_")


def luhn(digits: list) -> bool:
    """Whether ``digits`` pass the Luhn checksum."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        v = d * 2 if i % 2 == 1 else d
        total += v - 9 if v > 9 else v
    return total % 10 == 0


def redact_cards(text: list) -> list:
    """Replaces card numbers with CARD: 13 to 19 digits in groups separated by
    single spaces or dashes, passing the Luhn check."""
    out = []
    i = 0
    while i < len(text):
        if _is_ascii_digit(text[i]) and _at_boundary(text, i):
            end, digits = _digit_run(text, i, " -", 1)
            if 13 <= len(digits) <= 19 and luhn(digits) and _at_end_boundary(text, end):
                out.extend(CARD)
            else:
                # The whole run, so that no suffix of it is examined again.
                out.extend(text[i:end])
            i = end
            continue
        out.append(text[i])
        i += 1
    return out


def redact_phones(text: list) -> list:
    """Replaces phone numbers with PHONE: at least 7 digits with spaces,
    dashes, dots or parentheses between them, maybe after ``+`` or ``(``.
    Dates written ``2024-05-17`` or ``17.05.2024`` are left alone."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else None
        starts = _is_ascii_digit(c) or (
            c in "+(" and nxt is not None and (_is_ascii_digit(nxt) or nxt == "(")
        )
        if starts and _at_boundary(text, i):
            first = i if _is_ascii_digit(c) else i + 1
            # Up to two separators in a row: "(555) 123" has ") ".
            end, digits = _digit_run(text, first, " -.()", 2)
            if len(digits) >= 7 and _at_end_boundary(text, end) and not _is_date(text[first:end]):
                out.extend(PHONE)
                i = end
                continue
            if end > i:
                out.extend(text[i:end])
                i = end
                continue
        out.append(c)
        i += 1
    return out


def _is_date(span: list) -> bool:
    shape = "".join("d" if _is_ascii_digit(c) else c for c in span)
    return shape in ("dddd-dd-dd", "dd.dd.dddd")
