// Example `event-filter` plugin: per-subscription amount floors and field
// redaction; the JavaScript twin of plugins/examples/event-filter.
//
// Subscription parameters (a stream's query parameters the host does not
// own):
//
// - `min_amount=N`: drops events whose data has a numeric `amount` below N.
//   Events without one pass. A non-numeric N is ignored (every event passes
//   it) with a warning.
// - `redact=bidder` or `redact=bidder,leader`: delivers the data without
//   those fields, at the top level and inside a nested `product` object.
//   Each name also removes the same name with `_id` appended. Data that is
//   not a JSON object cannot be redacted, so such an event is dropped, with a
//   warning.
//
// Without either parameter, every event passes untouched. Data is replaced
// only when a field was removed. The plugin reads no configuration.

import { drop, isObject, log, objectField, parseInt64, parseObject, pass, replaceWith } from '../lib/switchyard.js';

// A decimal number as Rust's `f64` parser reads it (no hex, no `_`, no
// empty text, which `Number()` would all take).
const DECIMAL = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;

/** A `min_amount` floor: a BigInt for an integer, a number otherwise; `undefined` if not a number. */
export function parseFloor(text) {
  const t = text.trim();
  const int = parseInt64(t);
  if (int !== undefined) return int;
  if (!DECIMAL.test(t)) return undefined;
  const f = Number(t);
  return Number.isFinite(f) ? f : undefined;
}

/** What a subscription asks for: `floors` (each must be met) and `redact` (field names). */
export function parseParams(subscription) {
  const floors = [];
  const redact = new Set();
  for (const [name, value] of subscription) {
    if (name === 'min_amount') {
      const floor = parseFloor(value);
      if (floor === undefined) {
        log.warn(`min_amount=${JSON.stringify(value)} is not a number; not filtering by amount`);
      } else {
        floors.push(floor);
      }
    } else if (name === 'redact') {
      for (const field of value.split(',').map((f) => f.trim()).filter((f) => f !== '')) {
        redact.add(field);
        redact.add(`${field}_id`);
      }
    }
  }
  return { floors, redact };
}

// JavaScript compares a number with a BigInt exactly, so one test serves
// both kinds of floor.
const excluded = (floors, amount) => typeof amount === 'number' && floors.some((floor) => amount < floor);

/** What happens to `event` on subscriptions asking for `params`. */
export function decide(event, { floors, redact }) {
  if (floors.length === 0 && redact.size === 0) return pass();
  if (redact.size === 0) {
    return excluded(floors, objectField(event.data, 'amount')) ? drop() : pass();
  }
  const data = parseObject(event.data);
  if (data === undefined) {
    log.warn(`event ${event.id}: data is not a JSON object and cannot be redacted; dropped`);
    return drop();
  }
  if (excluded(floors, data.amount)) return drop();
  let changed = remove(data, redact);
  if (isObject(data.product)) changed = remove(data.product, redact) || changed;
  return changed ? replaceWith(data) : pass();
}

function remove(object, fields) {
  let changed = false;
  for (const key of Object.keys(object)) {
    if (fields.has(key)) {
      delete object[key];
      changed = true;
    }
  }
  return changed;
}

/** The slot's export. */
export function filter(event, subscription) {
  return decide(event, parseParams(subscription));
}
