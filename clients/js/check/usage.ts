// Compiled by `npm run check` (never run): the documented uses type-check.
import { Switchyard, tokenClaims, type Presence, type Status, type SwitchyardEvent } from '../switchyard.js';

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
  onDisconnected: ({ reason, resume_from }) => console.log(reason, resume_from),
  presence: { 'product:p_1': { members: true } },
  onPresence: (p: Presence) => console.log(p.topic, p.counts.users, p.members?.map((m) => m.user)),
});
// Every type to onEvent: no eventTypes.
const all = new Switchyard({ tenant: 'demo', topics: ['global'], presence: ['global'], onEvent: (ev) => shown.push(ev) });
const watching: number | undefined = all.presence('global')?.counts.streams;
all.close();
console.log(watching);
const last: number | null = sub.lastId;
const role: 'solo' | 'leader' | 'follower' = sub.role;
const exp = tokenClaims('a.b.c')?.exp;
sub.close();
console.log(state, last, role, exp);
