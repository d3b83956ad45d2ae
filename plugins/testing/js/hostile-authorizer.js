// A stream authorizer that misbehaves on demand, for the host's sandbox tests
// (not an example to follow). The request's query parameter `mode` picks it:
//
// - `loop`: runs forever (the call's deadline must stop it);
// - `oom`: allocates until memory runs out (the memory cap must stop it);
// - `throw`: throws (an uncaught exception fails the call);
// - `garbage`: refuses with a code the host does not accept;
// - anything else: allows.

import { allow, param, refuse } from '../../js/lib/switchyard.js';

export function authorize(request) {
  switch (param(request, 'mode')) {
    case 'loop': {
      let n = 0;
      for (;;) n = (n + 1) % 1_000_003;
    }
    case 'oom': {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(7));
    }
    case 'throw':
      throw new Error('hostile authorizer throws on purpose');
    case 'garbage':
      return refuse('Not A Code!', 'bad');
    default:
      return allow();
  }
}
