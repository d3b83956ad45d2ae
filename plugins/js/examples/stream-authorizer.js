// Example `stream-authorizer` plugin: a product's bid stream for its
// bidders only; the JavaScript twin of plugins/examples/stream-authorizer.
//
// A request naming a topic `bids:{id}` is allowed only when the caller's
// verified claims list `{id}` under the claim `bid_on` (a JSON array of
// strings, or one comma-separated string), which the identity provider
// fills with the products the user has bid on. Anonymous callers are refused
// with `login_required`; others, and publisher tokens (claims with `svc`),
// with `not_a_bidder`. Every other topic is allowed.
//
// Configuration: `claim` (default `bid_on`), `prefix` (default `bids:`).

import { allow, claimsOf, config, refuse } from '../lib/switchyard.js';

/** The product ids the claims list under `claim`. */
export function products(claims, claim) {
  const value = claims[claim];
  if (Array.isArray(value)) return value.filter((v) => typeof v === 'string');
  if (typeof value === 'string') {
    return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  }
  return [];
}

/** The decision for `request`, with the claim's name and the topic prefix. */
export function decide(request, claim, prefix) {
  const wanted = request.topics.filter((t) => t.startsWith(prefix)).map((t) => t.slice(prefix.length));
  if (wanted.length === 0) return allow();
  const claims = claimsOf(request);
  if (claims === undefined) {
    return refuse('login_required', "a product's bid stream is for its bidders: sign in");
  }
  if (Object.hasOwn(claims, 'svc')) {
    return refuse('not_a_bidder', "a publisher token cannot read a product's bid stream");
  }
  const mine = products(claims, claim);
  const missing = wanted.find((id) => !mine.includes(id));
  if (missing === undefined) return allow();
  return refuse('not_a_bidder', `the bid stream of product ${missing} is for those who have bid on it`);
}

/** The slot's export. */
export function authorize(request) {
  return decide(request, config('claim') || 'bid_on', config('prefix') || 'bids:');
}
