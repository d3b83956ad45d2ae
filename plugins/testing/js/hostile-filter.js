// An event filter that misbehaves on demand, for the host's sandbox tests
// (not an example to follow). The subscription parameter `mode` picks it:
//
// - `loop`: runs forever (the call's deadline must stop it);
// - `oom`: allocates until memory runs out (the memory cap must stop it);
// - `huge`: replaces the data with an 80 KiB object (the host refuses data over 64 KiB; a 1 MB one runs into the memory cap first, and lowering a string this long already takes a JavaScript component milliseconds);
// - `throw`: throws (an uncaught exception fails the call);
// - anything else: passes.

import { pass, replaceWith, subscriptionMap } from '../../js/lib/switchyard.js';

export function filter(_event, subscription) {
  switch (subscriptionMap(subscription).get('mode')) {
    case 'loop': {
      let n = 0;
      for (;;) n = (n + 1) % 1_000_003;
    }
    case 'oom': {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(7));
    }
    case 'huge':
      return replaceWith({ blob: 'x'.repeat(80 << 10) });
    case 'throw':
      throw new Error('hostile filter throws on purpose');
    default:
      return pass();
  }
}
