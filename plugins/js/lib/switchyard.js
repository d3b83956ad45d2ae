// The JavaScript side of Switchyard plugins: what `switchyard-plugin` gives
// Rust authors, for a module built with componentize-js.
//
// A plugin module exports its slot's function (`validate`, `shape`,
// `filter` or `authorize`) and imports what it needs from here:
//
//   import { configInt, formatAmount, reject, accept } from '../lib/switchyard.js';
//   export function validate(bid, product, now) { ... }
//
// Values arrive as componentize-js passes them: records as objects with
// camelCase fields (`bid.productId`, `product.endsAt`), `s64` as BigInt
// (`bid.amount`, `now`), `option<T>` as the value or `undefined`, and
// `data` fields as JSON text. The constructors below build the variants
// the host expects back.

import { log as hostLog, config as hostConfig, configAll as hostConfigAll } from 'switchyard:plugins/host@0.1.0';

/** Writes one log line through the host (`debug`, `info`, `warn`, `error`). */
export const log = {
  debug: (message) => hostLog('debug', String(message)),
  info: (message) => hostLog('info', String(message)),
  warn: (message) => hostLog('warn', String(message)),
  error: (message) => hostLog('error', String(message)),
};

/** One value of the plugin's configuration, `undefined` when it is not set. */
export function config(key) {
  return hostConfig(key) ?? undefined;
}

/** All of the plugin's configuration as a `Map`, sorted by key. */
export function configAll() {
  return new Map(hostConfigAll());
}

const INT = /^[+-]?[0-9]+$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * Parses a decimal integer in the range of `s64` (surrounding whitespace
 * allowed) as a BigInt; `undefined` for anything else.
 */
export function parseInt64(text) {
  const t = String(text).trim();
  if (!INT.test(t)) return undefined;
  const n = BigInt(t);
  return n < I64_MIN || n > I64_MAX ? undefined : n;
}

/**
 * A configuration value read as an integer (a BigInt, like every `s64`).
 * `undefined` when the key is not set, or when its value is not an integer;
 * the latter also logs a warning naming the key.
 */
export function configInt(key) {
  const value = config(key);
  if (value === undefined) return undefined;
  const n = parseInt64(value);
  if (n === undefined) log.warn(`config ${JSON.stringify(key)}: ${JSON.stringify(value)} is not an integer; ignored`);
  return n;
}

/**
 * A configuration value read as a flag: `true`, `yes`, `on`, `1` or
 * `false`, `no`, `off`, `0` (any case). `undefined` when not set or none of
 * those; the latter also logs a warning naming the key.
 */
export function configBool(key) {
  const value = config(key);
  if (value === undefined) return undefined;
  switch (value.trim().toLowerCase()) {
    case 'true': case 'yes': case 'on': case '1': return true;
    case 'false': case 'no': case 'off': case '0': return false;
    default:
      log.warn(`config ${JSON.stringify(key)}: ${JSON.stringify(value)} is not a flag; ignored`);
      return undefined;
  }
}

/**
 * A subscription (the stream's query parameters the host does not own, a
 * list of `[name, value]` pairs sorted by name) as a `Map`. A name given
 * twice keeps its last value; read the list itself to see every one.
 */
export function subscriptionMap(subscription) {
  return new Map(subscription);
}

/** Parses JSON text that should hold one object; `undefined` otherwise. */
export function parseObject(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return isObject(value) ? value : undefined;
}

/**
 * One top-level field of the JSON object in `text`; `undefined` when `text`
 * is not a JSON object or has no such field. (The whole text is parsed:
 * JavaScript's own parser is faster than any scanner written in it.)
 */
export function objectField(text, key) {
  const object = parseObject(text);
  return object !== undefined && Object.hasOwn(object, key) ? object[key] : undefined;
}

/** Whether `value` is a plain JSON object (not an array, not null). */
export function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * JSON text with every object's keys sorted, as the Rust SDK writes it, so
 * a plugin's output is the same whichever language wrote it.
 */
export function toJson(value) {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (!isObject(value)) return value;
  // fromEntries defines own properties, so even a `__proto__` key stays data.
  return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortKeys(value[key])]));
}

/** An amount in minor units (BigInt or integer number) as text: `1250` → `"12.50"`. */
export function formatAmount(minor) {
  const n = BigInt(minor);
  const abs = n < 0n ? -n : n;
  const cents = String(abs % 100n).padStart(2, '0');
  return `${n < 0n ? '-' : ''}${abs / 100n}.${cents}`;
}

/** Accepts the bid; with `extendTo` (ms, BigInt), moves the auction's end there. */
export function accept(extendTo) {
  return { tag: 'accept', val: { extendTo: extendTo === undefined ? undefined : BigInt(extendTo) } };
}

/** Rejects the bid with a machine-readable `code` and a `message` for the bidder. */
export function reject(code, message) {
  return { tag: 'reject', val: { code, message } };
}

/** A notification of type `kind` for `recipient`; `data` is an object (`{}` for none). */
export function notification(recipient, kind, preview, data = {}) {
  return { recipient, kind, preview, data: toJson(data) };
}

/** The event is delivered as it is. */
export function pass() {
  return { tag: 'pass' };
}

/** The event is not delivered on this subscription. */
export function drop() {
  return { tag: 'drop' };
}

/** The event is delivered with `data` (an object) as its data. */
export function replaceWith(data) {
  return { tag: 'replace', val: toJson(data) };
}

/** The stream request goes ahead. */
export function allow() {
  return { tag: 'allow' };
}

/**
 * Refuses the stream request: the caller gets `403` with this
 * machine-readable `code` (`a-z`, `0-9`, `_`) and `message`.
 */
export function refuse(code, message) {
  return { tag: 'refuse', val: { code, message } };
}

/** The caller's verified claims as an object; `undefined` when anonymous. */
export function claimsOf(request) {
  return request.caller === undefined ? undefined : parseObject(request.caller);
}

/** The value of the request's query parameter `name`, or `undefined`. */
export function param(request, name) {
  const found = request.params.find(([key]) => key === name);
  return found === undefined ? undefined : found[1];
}
