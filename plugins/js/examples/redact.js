// Previews: whitespace collapsed, contact details and card numbers redacted,
// cut to a length. A port of plugins/examples/notification-shaper/src/redact.rs;
// like it, it works on code points (not UTF-16 units) and uses no regular
// expressions for the scanning, so both give the same previews.

import { isAlphanumeric } from './alphanumeric.js';

export const EMAIL = '[email]';
export const PHONE = '[phone]';
export const CARD = '[card]';

// How many code points of collapsed text are redacted before cutting: far
// more than a preview, and a bound on the work for a huge body.
const SCAN_LIMIT = 2048;

// Unicode White_Space, as Rust's `char::is_whitespace` (the engine has no
// `\p{...}` escapes).
const WHITESPACE = /[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const TRAILING_WHITESPACE = /[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/;

const isAsciiDigit = (c) => c >= '0' && c <= '9';
const isAsciiAlnum = (c) => isAsciiDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
const isLocalChar = (c) => isAsciiAlnum(c) || '._%+-'.includes(c);
const isDomainChar = (c) => isAsciiAlnum(c) || c === '.' || c === '-';

/** `text` with runs of whitespace replaced by one space, trimmed. */
export function collapse(text) {
  return text.split(WHITESPACE).filter((w) => w !== '').join(' ');
}

/**
 * The preview of `text`: whitespace collapsed, e-mail addresses, card
 * numbers and phone numbers redacted (in that order), then cut to at most
 * `max` code points with a trailing `…`.
 */
export function preview(text, max) {
  const collapsed = Array.from(collapse(text)).slice(0, SCAN_LIMIT);
  return cut(redactPhones(redactCards(redactEmails(collapsed))).join(''), max);
}

/**
 * `text` if it has at most `max` code points; else its first `max - 1`
 * (without trailing whitespace or a partial placeholder) and `…`.
 */
export function cut(text, max) {
  const chars = Array.from(text);
  if (chars.length <= max) return text;
  let kept = chars.slice(0, Math.max(max - 1, 0)).join('');
  const open = kept.lastIndexOf('[');
  if (open >= 0) {
    const tail = kept.slice(open);
    if (!tail.includes(']') && [EMAIL, PHONE, CARD].some((p) => p.startsWith(tail))) kept = kept.slice(0, open);
  }
  return `${kept.replace(TRAILING_WHITESPACE, '')}…`;
}

/** Replaces `local@domain.tld` addresses (in an array of code points) with EMAIL. */
export function redactEmails(text) {
  const out = [];
  // An address may not reach back into a replacement.
  let copiedFrom = 0;
  let i = 0;
  while (i < text.length) {
    if (text[i] === '@') {
      const span = emailAround(text, copiedFrom, i);
      if (span !== undefined) {
        const [start, end] = span;
        out.length -= i - start;
        out.push(...EMAIL);
        i = end;
        copiedFrom = end;
        continue;
      }
    }
    out.push(text[i]);
    i += 1;
  }
  return out;
}

function emailAround(text, minStart, at) {
  let start = at;
  while (start > minStart && isLocalChar(text[start - 1])) start -= 1;
  // A local part does not start or end with a dot.
  while (start < at && text[start] === '.') start += 1;
  if (start === at || text[at - 1] === '.') return undefined;
  let end = at + 1;
  while (end < text.length && isDomainChar(text[end])) end += 1;
  // A full stop or hyphen after the address is punctuation.
  while (end > at + 1 && (text[end - 1] === '.' || text[end - 1] === '-')) end -= 1;
  const labels = text.slice(at + 1, end).join('').split('.');
  const tld = labels[labels.length - 1];
  const valid = labels.length >= 2 && labels.every((l) => l !== '') && tld.length >= 2 && /^[A-Za-z]+$/.test(tld);
  return valid ? [start, end] : undefined;
}

// A run of digits and separators from `start`: the end of its last digit
// (`start` when none) and its digits; at most `maxGap` separators in a row.
function digitRun(text, start, separators, maxGap) {
  const digits = [];
  let end = start;
  let i = start;
  let gap = 0;
  while (i < text.length) {
    const c = text[i];
    if (isAsciiDigit(c)) {
      digits.push(c.charCodeAt(0) - 48);
      i += 1;
      end = i;
      gap = 0;
    } else if (separators.includes(c) && gap < maxGap) {
      gap += 1;
      i += 1;
    } else {
      break;
    }
  }
  return [end, digits];
}

const atBoundary = (text, i) => i === 0 || !(isAlphanumeric(text[i - 1]) || text[i - 1] === '_');
const atEndBoundary = (text, end) => end === text.length || !(isAlphanumeric(text[end]) || text[end] === '_');

/** Whether `digits` pass the Luhn checksum. */
export function luhn(digits) {
  let sum = 0;
  digits
    .slice()
    .reverse()
    .forEach((d, i) => {
      const v = i % 2 === 1 ? d * 2 : d;
      sum += v > 9 ? v - 9 : v;
    });
  return sum % 10 === 0;
}

/**
 * Replaces card numbers with CARD: 13 to 19 digits in groups separated by
 * single spaces or dashes, passing the Luhn check.
 */
export function redactCards(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    if (isAsciiDigit(text[i]) && atBoundary(text, i)) {
      const [end, digits] = digitRun(text, i, [' ', '-'], 1);
      if (digits.length >= 13 && digits.length <= 19 && luhn(digits) && atEndBoundary(text, end)) {
        out.push(...CARD);
      } else {
        // The whole run, so that no suffix of it is examined again.
        out.push(...text.slice(i, end));
      }
      i = end;
      continue;
    }
    out.push(text[i]);
    i += 1;
  }
  return out;
}

const PHONE_SEPARATORS = [' ', '-', '.', '(', ')'];

/**
 * Replaces phone numbers with PHONE: at least 7 digits with spaces, dashes,
 * dots or parentheses between them, maybe after `+` or `(`. Dates written
 * `2024-05-17` or `17.05.2024` are left alone.
 */
export function redactPhones(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    const starts = isAsciiDigit(c) || ((c === '+' || c === '(') && next !== undefined && (isAsciiDigit(next) || next === '('));
    if (starts && atBoundary(text, i)) {
      const first = isAsciiDigit(c) ? i : i + 1;
      // Up to two separators in a row: "(555) 123" has ") ".
      const [end, digits] = digitRun(text, first, PHONE_SEPARATORS, 2);
      if (digits.length >= 7 && atEndBoundary(text, end) && !isDate(text.slice(first, end))) {
        out.push(...PHONE);
        i = end;
        continue;
      }
      if (end > i) {
        out.push(...text.slice(i, end));
        i = end;
        continue;
      }
    }
    out.push(c);
    i += 1;
  }
  return out;
}

function isDate(span) {
  const shape = span.map((c) => (isAsciiDigit(c) ? 'd' : c)).join('');
  return shape === 'dddd-dd-dd' || shape === 'dd.dd.dddd';
}
