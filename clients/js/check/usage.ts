// Compiled by `npm run check` (never run): the documented uses type-check.
import { Switchyard, tokenClaims, type Status, type SwitchyardEvent } from '../switchyard.js';

const shown: SwitchyardEvent[] = [];
let state: Status | null = null;

const sub = new Switchyard({
  nodes: ['https://a.example', 'https://b.example'],
  tenant: 'demo',
  topics: ['product:p_1', 'user:alice'],
  token: 'header.payload.signature',
  getToken: async () => (await fetch('/api/demo/token', { method: 'POST' }).then((r) => r.json())).token as string,
  eventTypes: ['bid.accepted', 'bid.outbid', 'message', 'unread'],
  onEvent: (ev) => shown.push(ev),
  onSnapshot: (s) => console.log(s.topic, s.data, s.as_of),
  onReset: (r) => console.log('refetch', r.topic),
  onStatus: (s) => (state = s),
  onShutdown: ({ windowMs, delayMs }) => console.log(windowMs, delayMs),
});
const last: number | null = sub.lastId;
const role: 'solo' | 'leader' | 'follower' = sub.role;
const exp = tokenClaims('a.b.c')?.exp;
sub.close();
console.log(state, last, role, exp);
