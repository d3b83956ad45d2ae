// Example `bid-validator` plugin: increment tiers, a per-tenant maximum and
// anti-sniping; the JavaScript twin of plugins/examples/bid-validator.
//
// Rules, in order:
//
// 1. Maximum. With `max_amount` set, a bid over it is rejected with
//    `over_limit`.
// 2. First bid. With no current bid, a bid under the starting price is
//    rejected with `too_low` (the host checks this too).
// 3. Increments. Otherwise a bid must beat the current bid by the increment
//    of the tier the current bid is in, and by at least the product's own
//    `min_increment` (and by at least 1); if not, it is rejected with
//    `increment_too_small`.
// 4. Anti-sniping. An accepted bid at most the snipe window before `ends_at`
//    moves the end to `now + extend_ms`, when that is later than the current
//    end.
//
// Configuration (all optional; a value that does not parse is ignored with a
// warning): `tiers` (`from:increment` pairs, e.g. `0:100,10000:500,100000:1000`,
// also used when the value does not parse; unset: only the product's
// `min_increment`), `max_amount`, `snipe_window_ms` (default: the product's
// `anti_snipe_ms`; `0`: off), `extend_ms` (default: the window; at most 7 days).
//
// Amounts and times are BigInt, as the host passes every `s64`.

import { accept, config, configInt, formatAmount, log, parseInt64, reject } from '../lib/switchyard.js';

/** Suggested tiers, used when `tiers` is set but does not parse. */
export const DEFAULT_TIERS = '0:100,10000:500,100000:1000';

/** The host refuses an `extend_to` more than 7 days ahead, so longer extensions are capped. */
export const MAX_EXTENSION_MS = 7n * 24n * 3_600_000n;

const I64_MAX = 2n ** 63n - 1n;
const saturatingAdd = (a, b) => (a + b > I64_MAX ? I64_MAX : a + b);
const max = (a, b) => (a > b ? a : b);
const min = (a, b) => (a < b ? a : b);

/**
 * Parses `from:increment` pairs separated by commas (whitespace allowed).
 * `from` at least 0, `increment` at least 1, no `from` twice; sorted by
 * `from`. Throws an Error saying what is wrong.
 */
export function parseTiers(text) {
  const tiers = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    const colon = entry.indexOf(':');
    if (colon < 0) throw new Error(`${JSON.stringify(entry)} is not from:increment`);
    const [fromText, incrementText] = [entry.slice(0, colon), entry.slice(colon + 1)];
    const from = parseInt64(fromText);
    if (from === undefined) throw new Error(`${JSON.stringify(entry)}: ${JSON.stringify(fromText)} is not an integer`);
    const increment = parseInt64(incrementText);
    if (increment === undefined) throw new Error(`${JSON.stringify(entry)}: ${JSON.stringify(incrementText)} is not an integer`);
    if (from < 0n || increment < 1n) throw new Error(`${JSON.stringify(entry)}: from must be at least 0 and increment at least 1`);
    tiers.push({ from, increment });
  }
  tiers.sort((a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
  for (let i = 1; i < tiers.length; i++) {
    if (tiers[i - 1].from === tiers[i].from) throw new Error("a tier's start repeats");
  }
  return tiers;
}

/** The validator's configuration, with a warning for each value that does not parse. */
export function loadSettings() {
  const text = config('tiers');
  let tiers = [];
  if (text !== undefined) {
    try {
      tiers = parseTiers(text);
    } catch (err) {
      log.warn(`config "tiers": ${err.message}; using the suggested ${DEFAULT_TIERS}`);
      tiers = parseTiers(DEFAULT_TIERS);
    }
  }
  return {
    tiers,
    maxAmount: configInt('max_amount'),
    snipeWindowMs: configInt('snipe_window_ms'),
    extendMs: configInt('extend_ms'),
  };
}

/**
 * The smallest raise over `current`: the increment of the last tier starting
 * at or below it, but at least `floor` (the product's own) and at least 1.
 */
export function minIncrement(tiers, current, floor) {
  let tier = 0n;
  for (const t of tiers) {
    if (t.from > current) break;
    tier = t.increment;
  }
  return max(max(tier, floor), 1n);
}

/** Where an accepted bid at `now` moves the auction's end, if anywhere. */
export function extension(settings, product, now) {
  const window = settings.snipeWindowMs ?? product.antiSnipeMs;
  const endsAt = product.endsAt;
  if (endsAt === undefined || endsAt === null) return undefined;
  if (window <= 0n || now > endsAt || endsAt - now > window) return undefined;
  const wanted = settings.extendMs !== undefined && settings.extendMs > 0n ? settings.extendMs : window;
  const extendTo = saturatingAdd(now, min(wanted, MAX_EXTENSION_MS));
  return extendTo > endsAt ? extendTo : undefined;
}

/** The verdict on `bid` for `product` (as it stands before the bid) at `now`. */
export function decide(settings, bid, product, now) {
  const amount = bid.amount;
  const title = product.title;
  if (settings.maxAmount !== undefined && amount > settings.maxAmount) {
    return reject(
      'over_limit',
      `Bids are limited to ${formatAmount(settings.maxAmount)}; ${formatAmount(amount)} is over the limit.`,
    );
  }
  const current = product.currentBid;
  if (current === undefined || current === null) {
    if (amount < product.startingPrice) {
      return reject(
        'too_low',
        `The first bid on “${title}” must be at least the starting price of ${formatAmount(product.startingPrice)}; ${formatAmount(amount)} is too low.`,
      );
    }
  } else {
    const increment = minIncrement(settings.tiers, current, product.minIncrement);
    const required = saturatingAdd(current, increment);
    if (amount < required) {
      return reject(
        'increment_too_small',
        `Bids on “${title}” must rise by at least ${formatAmount(increment)} over the current ${formatAmount(current)}, to ${formatAmount(required)} or more; ${formatAmount(amount)} is too small.`,
      );
    }
  }
  return accept(extension(settings, product, now));
}

/** The slot's export. */
export function validate(bid, product, now) {
  return decide(loadSettings(), bid, product, now);
}
