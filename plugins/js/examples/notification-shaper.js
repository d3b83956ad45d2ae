// Example `notification-shaper` plugin: privacy-preserving previews and
// outbid digests; the JavaScript twin of plugins/examples/notification-shaper.
//
// - `message` (a user's message): one notification of kind `message` to `to`,
//   whose preview is the body with whitespace collapsed, e-mail addresses,
//   card numbers and phone numbers replaced by `[email]`, `[card]` and
//   `[phone]`, cut to 140 chars; data `{"from", "to", "product_id"}`.
// - `outbid` (the host's digest of one user's outbids in one decision round;
//   the body is JSON `{"product_id", "title", "times", "amount", "leader"}`):
//   one `bid.outbid` notification to `to`, previewed as
//   `Outbid 3 times on “Lamp”: the bid is now 12.50`; data
//   `{"product_id", "amount", "times"}`. A body that is not such a digest
//   gives a `bid.outbid` notification previewing the body as a message
//   would, with data `{"product_id"}`, and a warning.
// - any other kind: one notification of that kind, shaped like `message`.
//
// A message without a recipient gives no notification. No configuration.

import { formatAmount, log, notification } from '../lib/switchyard.js';
import { collapse, cut, preview } from './redact.js';

/** The longest preview, in code points. */
export const PREVIEW_CHARS = 140;

const INTEGER_LITERAL = /^-?(0|[1-9][0-9]*)$/;

/**
 * Parses an outbid digest; `undefined` unless `body` is a JSON object with a
 * string `title`, an integer `times` of at least 1 and an integer `amount`
 * (`product_id` and `leader`, if present, strings or null). Integers must be
 * written as integers (`3`, not `3.0`), as the Rust example requires, where the engine
 * gives the reviver a number's source text.
 */
export function parseDigest(body) {
  const literals = new Map();
  let object;
  try {
    object = JSON.parse(body, function (key, value, context) {
      // The top-level fields' source text (numbers only).
      if (this !== undefined && typeof value === 'number' && context?.source !== undefined) {
        literals.set(this, { ...(literals.get(this) ?? {}), [key]: context.source });
      }
      return value;
    });
  } catch {
    return undefined;
  }
  if (typeof object !== 'object' || object === null || Array.isArray(object)) return undefined;
  const source = literals.get(object) ?? {};
  const integer = (key) => {
    const value = object[key];
    if (typeof value !== 'number') return undefined;
    const text = source[key];
    if (text !== undefined) return INTEGER_LITERAL.test(text) ? BigInt(text) : undefined;
    return Number.isSafeInteger(value) ? BigInt(value) : undefined;
  };
  const optionalString = (key) => {
    const value = object[key];
    if (value === undefined || value === null) return { ok: true, value: null };
    return typeof value === 'string' ? { ok: true, value } : { ok: false };
  };
  const productId = optionalString('product_id');
  const leader = optionalString('leader');
  const times = integer('times');
  const amount = integer('amount');
  if (!productId.ok || !leader.ok || typeof object.title !== 'string') return undefined;
  if (times === undefined || times < 1n || amount === undefined) return undefined;
  return { productId: productId.value, title: object.title, times, amount, leader: leader.value };
}

/** `Outbid 3 times on “Lamp”: the bid is now 12.50`, at most PREVIEW_CHARS. */
export function digestPreview(digest) {
  const times = digest.times === 1n ? '' : ` ${digest.times} times`;
  const title = collapse(digest.title);
  const on = title === '' ? '' : ` on “${title}”`;
  return cut(`Outbid${times}${on}: the bid is now ${formatAmount(digest.amount)}`, PREVIEW_CHARS);
}

// A JSON number from a BigInt (the nearest double past 2^53: amounts in
// minor units stay far below).
const jsonInt = (n) => Number(n);

function plain(message, kind) {
  return notification(message.to, kind, preview(message.body, PREVIEW_CHARS), {
    from: message.from,
    product_id: message.productId ?? null,
    to: message.to,
  });
}

function outbid(message) {
  const digest = parseDigest(message.body);
  if (digest === undefined) {
    log.warn(`message ${message.id}: the outbid digest is malformed; sending its text`);
    return notification(message.to, 'bid.outbid', preview(message.body, PREVIEW_CHARS), {
      product_id: message.productId ?? null,
    });
  }
  return notification(message.to, 'bid.outbid', digestPreview(digest), {
    amount: jsonInt(digest.amount),
    product_id: digest.productId ?? message.productId ?? null,
    times: jsonInt(digest.times),
  });
}

/** The notifications for `message`. */
export function shape(message) {
  if (message.to === '') {
    log.debug(`message ${message.id}: no recipient`);
    return [];
  }
  return [message.kind === 'outbid' ? outbid(message) : plain(message, message.kind)];
}
