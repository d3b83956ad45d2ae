// switchyard.js: a dependency-free browser client for Switchyard streams.
//
//   const sub = new Switchyard({
//     nodes: ['https://a.example', 'https://b.example'], // tried in turn
//     tenant: 'demo', topics: ['product:p_1', 'user:alice'],
//     token, getToken,       // getToken: async () => a fresh token
//     eventTypes: ['bid.accepted', 'message'], // optional: every type when omitted
//     onEvent(ev) {},        // {id, tenant, topic, type, data, ts}; never twice
//     presence: { 'product:p_1': { members: true } }, // or ['product:p_1']: counts only
//     onPresence(p) {},      // {topic, counts: {streams, users}, members, truncated}
//     onSnapshot(s) {},      // {topic, data, as_of}: the topic's current state
//     onReset(r) {},         // history no longer covers a gap: refetch state
//     onStatus(status) {},   // connecting | connected | reconnecting | polling | down | disconnected
//     onDisconnected(d) {},  // an operator closed the stream: no reconnect
//   });
//   sub.close();
//
// What it does (README.md in this folder has every option):
// - Keeps the last event id (the whole cursor, even for several topics) and
//   resumes with it, on the next node when one goes away; never delivers an
//   event twice.
// - Treats a stream that delivers nothing (not even a heartbeat) for 2.5
//   heartbeat intervals as dead, and moves on.
// - Renews the token through `getToken` before it expires and on
//   `auth.expired`, resuming by the cursor.
// - On a node's `shutdown`, waits a random time within the announced window.
// - On `switchyard.disconnected` (an operator ended the user's streams), stops
//   for good: status `disconnected`, `onDisconnected`, no reconnect.
// - After 3 failed connections polls the REST log, and returns to the stream
//   when one opens again.
// - Shares one server stream among the tabs of an origin (same tenant and
//   token subject): one tab, elected with the Web Locks API, holds it and
//   hands each event to the others over a BroadcastChannel. Where those APIs
//   are missing (or with `share: false`) each instance has its own stream.
// - Asks the server for event frames without their `event:` line
//   (`frames=message`), so every type reaches `onmessage` and so `onEvent`
//   (an EventSource cannot listen for types it does not know of).
// - Keeps the presence of the topics asked for (`T~occupancy`, `T~members`),
//   folded exactly as the server folds them, across reconnects and tabs.

const DEFAULTS = {
  pollMs: 1000,
  retrySseMs: 3000,
  failuresBeforePolling: 3,
  heartbeatMs: 15000,
  stallIntervals: 2.5,
  leaderTimeoutMs: 4000,
  share: true,
};

/** The JSON payload of a JWT, or null (the signature is the server's to check). */
export function tokenClaims(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const text = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(text);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

const numeric = (id) => {
  if (id === undefined || id === null || id === '') return null;
  const n = Number(id);
  return Number.isFinite(n) ? n : null;
};

const randomId = () => Math.random().toString(36).slice(2) + Date.now().toString(36);

/** The event types of presence topics (`T~occupancy`, `T~members`). */
const PRESENCE_TYPES = ['occupancy', 'member.joined', 'member.left', 'members.truncated', 'presence.reset'];

/** The presence options as a map: topic → whether its members are wanted. */
function presenceTopics(p) {
  const out = new Map();
  if (Array.isArray(p)) {
    for (const t of p) if (typeof t === 'string') out.set(t, false);
  } else if (p && typeof p === 'object') {
    for (const [t, v] of Object.entries(p)) {
      if (v) out.set(t, v === 'members' || (typeof v === 'object' && !!v.members));
    }
  }
  return out;
}

// A topic's presence as the server folds it (`event.rs`, `MemberSet::apply`):
// occupancy replaces the counts; a members event counts only if its `v` is
// above the set's (decisions may commit out of order; `v` is their order);
// `member.joined` adds the user or replaces their claims, `member.left`
// removes them, `members.truncated` empties the set; `presence.reset` (the
// server's repair) carries a whole set and replaces this one, as a snapshot
// does (a snapshot whatever its `v`).
class PresenceState {
  constructor(topic, members) {
    this.topic = topic;
    this.wantMembers = members;
    this.counts = { streams: 0, users: 0 };
    /** @type {{user: string, claims: Record<string, unknown>}[]} */
    this.members = [];
    this.truncated = false;
    this.v = 0;
  }

  occupancy(data) {
    if (!data || typeof data.streams !== 'number' || typeof data.users !== 'number') return false;
    if (data.streams === this.counts.streams && data.users === this.counts.users) return false;
    this.counts = { streams: data.streams, users: data.users };
    return true;
  }

  // A whole set, as the server writes one (`MemberSet`: every field there).
  static isSet(data) {
    return !!data && Array.isArray(data.members) && typeof data.truncated === 'boolean' && typeof data.v === 'number' &&
      data.members.every((m) => m && typeof m.user === 'string');
  }

  snapshot(data) {
    if (!data || typeof data !== 'object') return false;
    const list = Array.isArray(data.members) ? data.members : [];
    this.members = list
      .filter((m) => m && typeof m.user === 'string')
      .map((m) => ({ user: m.user, claims: m.claims && typeof m.claims === 'object' ? m.claims : {} }));
    this.truncated = !!data.truncated;
    this.v = typeof data.v === 'number' ? data.v : 0;
    return true;
  }

  apply(type, data) {
    if (type === 'presence.reset') return PresenceState.isSet(data) && data.v > this.v && this.snapshot(data);
    if (!data || typeof data.v !== 'number' || data.v <= this.v) return false;
    this.v = data.v;
    const user = typeof data.user === 'string' ? data.user : null;
    const claims = data.claims && typeof data.claims === 'object' ? data.claims : {};
    if (type === 'member.joined' && user !== null) {
      this.truncated = false;
      const m = this.members.find((x) => x.user === user);
      if (m) m.claims = claims;
      else this.members.push({ user, claims });
    } else if (type === 'member.left' && user !== null) {
      this.members = this.members.filter((x) => x.user !== user);
    } else if (type === 'members.truncated') {
      this.members = [];
      this.truncated = true;
    } else {
      return false;
    }
    return true;
  }

  view() {
    return {
      topic: this.topic,
      counts: { ...this.counts },
      members: this.wantMembers ? this.members.map((m) => ({ user: m.user, claims: { ...m.claims } })) : null,
      truncated: this.truncated,
    };
  }
}

// One logical server stream over a list of nodes: EventSource with failover,
// stall detection, token renewal, spread reconnects at shutdown, and the
// polling fallback. It reports frames to `sink.frame(kind, id, type, data)`
// (kind: event | snapshot | reset | heartbeat | open) and states to
// `sink.status(status)`; it knows nothing about tabs.
class Connection {
  constructor(cfg, sink) {
    this.cfg = cfg;
    this.sink = sink;
    this.nodes = cfg.nodes && cfg.nodes.length ? cfg.nodes.slice() : [''];
    this.node = 0;
    this.topics = cfg.topics.slice();
    this.listen = new Set(cfg.listen);
    this.token = cfg.token;
    this.cursor = numeric(cfg.cursor);
    this.failures = 0;
    this.mode = 'sse';
    /** @type {EventSource | null} */
    this.es = null;
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.pollTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.sseRetry = undefined;
    /** @type {Set<string>} Event types the current EventSource has listeners for. */
    this.listening = new Set(['message']);
    this.heartbeatMs = cfg.heartbeatMs;
    this.lastFrameAt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.watchdog = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.refreshTimer = undefined;
    /** @type {Promise<boolean> | null} */
    this.refreshing = null;
    this.scheduleRefresh();
  }

  base() {
    return this.nodes[this.node % this.nodes.length];
  }

  see(id) {
    const n = numeric(id);
    if (n !== null && (this.cursor === null || n > this.cursor)) this.cursor = n;
    return n;
  }

  streamUrl() {
    const q = new URLSearchParams();
    q.set('tenant', this.cfg.tenant);
    for (const t of this.topics) q.append('topic', t);
    if (this.cfg.types) q.set('events', this.cfg.types.join(','));
    // Every event as an unnamed frame, which `onmessage` gets whatever its
    // type (the type is in the event JSON); the server's own frames keep
    // their names.
    q.set('frames', 'message');
    if (this.token) q.set('token', this.token);
    if (this.cursor !== null) {
      q.set('lastEventId', String(this.cursor));
      // A shared stream restarts for tabs that join: they get their
      // topics' state even though the stream resumes.
      if (this.cfg.snapshots) for (const t of this.topics) q.append('snapshot', t);
    }
    return `${this.base()}/events?${q}`;
  }

  // --- tokens ---------------------------------------------------------------

  // Renews ahead of `exp`: a fifth of the lifetime before it, at least 1 s
  // and at most 30 s.
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const claims = tokenClaims(this.token);
    if (!this.cfg.getToken || !claims || typeof claims.exp !== 'number') return;
    const expMs = claims.exp * 1000;
    const life = typeof claims.iat === 'number' ? expMs - claims.iat * 1000 : expMs - Date.now();
    const margin = Math.min(30000, Math.max(1000, life / 5));
    const wait = Math.max(0, expMs - margin - Date.now());
    this.refreshTimer = setTimeout(() => this.renew(), wait);
  }

  tokenStale() {
    const claims = tokenClaims(this.token);
    return !!(this.cfg.getToken && claims && typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now() + 1000);
  }

  // Gets a fresh token (one request at a time); true if it changed.
  async fetchToken() {
    if (!this.cfg.getToken) return false;
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const t = await this.cfg.getToken();
          if (typeof t === 'string' && t && t !== this.token) {
            this.token = t;
            this.cfg.onToken && this.cfg.onToken(t);
            return true;
          }
          return false;
        } catch {
          return false;
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  }

  async renew() {
    if (this.stopped) return;
    if (await this.fetchToken()) {
      this.scheduleRefresh();
      // Resume on the new token from the cursor: nothing lost, nothing twice.
      if (this.mode === 'sse' && this.es) this.restart();
    } else if (!this.stopped) {
      this.refreshTimer = setTimeout(() => this.renew(), 1000);
    }
  }

  // --- the stream -----------------------------------------------------------

  start() {
    this.connect();
  }

  // A planned reconnect (new token, other topics): same node, from the
  // cursor, without showing a reconnect.
  restart() {
    // Without a stream (a reconnect is pending) the next connect uses the
    // new settings anyway.
    if (this.stopped || this.mode !== 'sse' || !this.es) return;
    this.drop();
    clearTimeout(this.timer);
    this.connect(true);
  }

  update(topics, listen) {
    this.topics = topics.slice();
    for (const t of listen) this.listen.add(t);
    this.restart();
  }

  drop() {
    if (this.es) this.es.close();
    this.es = null;
    clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  async connect(quiet = false) {
    if (this.stopped) return;
    if (!quiet) this.sink.status(this.failures ? 'reconnecting' : 'connecting');
    if (this.tokenStale()) {
      await this.fetchToken();
      this.scheduleRefresh();
      if (this.stopped || this.es) return;
    }
    const es = new EventSource(this.streamUrl());
    this.es = es;
    let opened = false;
    let first = true;
    this.alive();
    es.onopen = () => {
      if (this.es !== es) return;
      opened = true;
      this.failures = 0;
      this.alive();
      this.leavePolling();
      this.sink.status('connected');
    };
    es.onerror = () => {
      if (this.es !== es) return;
      this.fail(!opened);
    };
    const on = (type, fn) =>
      es.addEventListener(type, (e) => {
        if (this.es !== es) return;
        this.alive();
        fn(e);
      });
    const deliver = (type) => (e) => {
      const id = this.see(e.lastEventId);
      this.sink.frame('event', id, type, e.data);
    };
    es.onmessage = (e) => {
      if (this.es !== es) return;
      this.alive();
      deliver('message')(e);
    };
    this.listening = new Set(['message']);
    const listening = this.listening;
    for (const t of this.listen) {
      if (listening.has(t)) continue;
      listening.add(t);
      on(t, deliver(t));
    }
    on('heartbeat', (e) => {
      const id = this.see(e.lastEventId);
      try {
        const ms = JSON.parse(e.data).interval_ms;
        if (typeof ms === 'number' && ms > 0 && ms !== this.heartbeatMs) {
          // The server's interval: the stall check follows it from now on.
          this.heartbeatMs = ms;
          clearTimeout(this.watchdog);
          this.armWatchdog();
        }
      } catch {
        // an older server: keep the configured interval
      }
      // The opening frame is a heartbeat: a new stream starts at `id`.
      this.sink.frame(first ? 'open' : 'heartbeat', id, 'heartbeat', e.data);
      first = false;
    });
    on('snapshot', (e) => this.sink.frame('snapshot', this.see(e.lastEventId), 'snapshot', e.data));
    on('reset', (e) => this.sink.frame('reset', this.see(e.lastEventId), 'reset', e.data));
    on('shutdown', (e) => {
      this.see(e.lastEventId);
      let windowMs = 0;
      try {
        windowMs = Math.max(0, Number(JSON.parse(e.data).reconnect_window_ms) || 0);
      } catch {
        // no window: reconnect at once
      }
      // The node is going away: resume on the next one, at a random moment
      // within the window the server gave, so its clients arrive spread out.
      this.drop();
      this.node += 1;
      this.sink.status('reconnecting');
      const delay = Math.random() * windowMs;
      this.cfg.onShutdown && this.cfg.onShutdown({ windowMs, delayMs: delay });
      this.timer = setTimeout(() => this.connect(true), delay);
    });
    on('switchyard.disconnected', (e) => {
      this.see(e.lastEventId);
      // An operator ended this user's streams: coming back at once would
      // undo it. Stop for good and let the application decide.
      this.stop();
      this.sink.frame('disconnected', null, 'switchyard.disconnected', e.data);
    });
    on('auth.expired', async () => {
      this.drop();
      if (await this.fetchToken()) {
        this.scheduleRefresh();
        this.connect(true);
      } else {
        this.sink.status('down');
        this.cfg.onExpired && this.cfg.onExpired();
      }
    });
  }

  // A frame arrived: the stream is alive; (re)arm the stall check.
  alive() {
    this.lastFrameAt = Date.now();
    if (!this.watchdog) this.armWatchdog();
  }

  armWatchdog() {
    const limit = this.heartbeatMs * this.cfg.stallIntervals;
    const wait = Math.max(50, this.lastFrameAt + limit - Date.now());
    this.watchdog = setTimeout(() => {
      this.watchdog = undefined;
      if (!this.es || this.stopped) return;
      if (Date.now() - this.lastFrameAt >= this.heartbeatMs * this.cfg.stallIntervals) {
        // Nothing, not even a heartbeat: the node is stalled (frozen,
        // partitioned) though the connection looks open. Move on.
        this.fail(true);
      } else {
        this.armWatchdog();
      }
    }, wait);
  }

  fail(moveOn) {
    this.drop();
    this.failures += 1;
    if (moveOn || this.failures > 1) this.node += 1;
    if (this.failures >= this.cfg.failuresBeforePolling) {
      this.enterPolling();
    } else {
      this.sink.status('reconnecting');
      // Jittered, so clients of a node that died do not return in step.
      const delay = 300 * this.failures * (0.5 + Math.random());
      this.timer = setTimeout(() => this.connect(), delay);
    }
  }

  // --- polling fallback -----------------------------------------------------

  enterPolling() {
    if (this.mode === 'polling' || this.stopped) return;
    this.mode = 'polling';
    this.sink.status('polling');
    this.poll();
    // Keep trying the stream in the background.
    this.sseRetry = setInterval(() => this.probeStream(), this.cfg.retrySseMs);
  }

  leavePolling() {
    if (this.mode !== 'polling') return;
    this.mode = 'sse';
    clearTimeout(this.pollTimer);
    clearInterval(this.sseRetry);
  }

  probeStream() {
    if (this.es || this.stopped) return;
    const es = new EventSource(this.streamUrl());
    es.onopen = () => {
      es.close();
      this.failures = 0;
      this.leavePolling();
      this.connect();
    };
    es.onerror = () => es.close();
  }

  async poll() {
    if (this.mode !== 'polling' || this.stopped) return;
    let ok = false;
    for (let attempt = 0; attempt < this.nodes.length && !ok; attempt++) {
      try {
        if (this.tokenStale()) await this.fetchToken();
        const batches = await Promise.all(this.topics.map((t) => this.fetchTopic(t)));
        const events = batches.flat().sort((a, b) => a.id - b.id);
        const types = this.cfg.types;
        for (const ev of events) {
          // The stream's server-side filter, as `events=` would apply it.
          if (types && !types.includes(ev.type)) continue;
          this.see(ev.id);
          this.sink.frame('event', ev.id, ev.type, JSON.stringify(ev));
        }
        ok = true;
      } catch {
        this.node += 1;
      }
    }
    if (this.mode !== 'polling' || this.stopped) return;
    this.sink.status(ok ? 'polling' : 'down');
    this.pollTimer = setTimeout(() => this.poll(), this.cfg.pollMs);
  }

  async fetchTopic(topic) {
    const q = new URLSearchParams({ tenant: this.cfg.tenant, limit: '1000' });
    if (this.cursor !== null) q.set('after', String(this.cursor));
    if (this.token) q.set('token', this.token);
    const r = await fetch(`${this.base()}/api/topics/${encodeURIComponent(topic)}/events?${q}`);
    if (r.status === 401 && (await this.fetchToken())) throw new Error('token renewed');
    if (!r.ok) throw new Error(`poll ${r.status}`);
    const body = await r.json();
    if (body.reset) this.sink.frame('reset', null, 'reset', JSON.stringify({ topic, reason: 'history_trimmed' }));
    return body.events;
  }

  stop() {
    this.stopped = true;
    this.drop();
    clearTimeout(this.timer);
    clearTimeout(this.pollTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.sseRetry);
  }
}

// The tabs of an origin that read the same tenant as the same subject share
// one stream. Every tab is a member (its topics and types, announced on the
// channel); one holds the Web Lock and with it the stream, whose frames it
// hands to itself and posts to the others; each tab keeps what is its own.
//
// Order and exactness: each message carries the leader's epoch; a tab takes
// frames only from the newest leader it knows, so a leader that was frozen
// and wakes up cannot interleave its stale frames. Every frame carries its
// id, so every tab holds the shared cursor, and whichever tab leads next
// resumes the union stream from it (with its topics' snapshots for the tabs
// that still wait for them). A tab drops ids at or below its own last one.
class Share {
  constructor(sub) {
    this.sub = sub;
    const o = sub.opts;
    const claims = tokenClaims(o.token);
    const subject = claims && typeof claims.sub === 'string' ? claims.sub : '';
    this.name = 'switchyard:' + JSON.stringify([o.tenant, subject, sub.nodes, o.types || null]);
    this.tab = randomId();
    this.members = new Map();
    this.epoch = 0;
    this.leaderTab = null;
    this.leaderClient = null;
    this.lastLeaderAt = Date.now();
    this.leading = false;
    this.conn = null;
    this.closed = false;
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (e) => this.onMessage(e.data);
    this.announce();
    this.candidate(false);
    this.check = setInterval(() => this.watch(), Math.max(100, o.leaderTimeoutMs / 4));
    this.onHide = () => this.post({ kind: 'bye' });
    addEventListener('pagehide', this.onHide);
  }

  me() {
    return { topics: this.sub.topics, listen: this.sub.listen };
  }

  post(msg) {
    if (this.closed) return;
    try {
      this.channel.postMessage({ ...msg, from: this.tab, epoch: this.epoch });
    } catch {
      // the channel is closing with the page
    }
  }

  announce() {
    this.post({ kind: 'member', ...this.me(), cursor: this.sub.shared });
  }

  // Queues for the lock (or steals it from a leader that stopped talking).
  // Resolves once the lock is granted.
  candidate(steal) {
    if (this.queued) this.queued.abort();
    const ctl = new AbortController();
    this.queued = steal ? null : ctl;
    /** @type {() => void} */
    let granted = () => {};
    /** @type {Promise<void>} */
    const grant = new Promise((r) => (granted = r));
    const held = navigator.locks.request(this.name, steal ? { steal: true } : { signal: ctl.signal }, () => {
      if (this.closed) return undefined;
      if (!steal) this.queued = null;
      granted();
      return new Promise((/** @type {(v?: unknown) => void} */ release) => {
        this.release = () => release();
        this.lead();
      });
    });
    held.catch(() => {
      // Aborted while queued, or stolen by a tab that thought this one
      // frozen: give up the stream, follow the new leader, queue again.
      if (this.release && this.heldBy === held) this.stepDown();
    });
    this.heldBy = held;
    return grant;
  }

  async lead() {
    const held = this.heldBy;
    this.leading = true;
    // Learn this tab's lock client id (followers check it before taking
    // over). The round trip also lets frames the previous leader posted
    // before it went away arrive first: until the epoch moves below, they
    // still count.
    let client = null;
    try {
      const q = await navigator.locks.query();
      const mine = (q.held || []).find((l) => l.name === this.name);
      client = mine ? mine.clientId : null;
    } catch {
      // no query: followers take over on silence alone
    }
    if (!this.leading || this.heldBy !== held || this.closed) return;
    this.leaderClient = client;
    this.epoch = Math.max(this.epoch + 1, Date.now());
    this.leaderTab = this.tab;
    this.sub.role = 'leader';
    this.post({ kind: 'leader', client, status: this.sub.status });
    const { topics, listen } = this.union();
    const o = this.sub.opts;
    this.conn = new Connection(
      {
        ...o,
        nodes: this.sub.nodes,
        topics,
        listen,
        token: this.sub.token,
        cursor: this.sub.shared,
        snapshots: true,
        onToken: (t) => (this.sub.token = t),
      },
      {
        frame: (kind, id, type, data) => {
          const msg = { kind: 'frame', frame: kind, id, type, data, topics: kind === 'open' ? this.streamTopics : undefined };
          this.post(msg);
          this.sub.receive(msg);
        },
        status: (s) => {
          this.post({ kind: 'status', status: s });
          this.sub.setStatus(s);
        },
      },
    );
    this.streamTopics = topics;
    this.conn.start();
    this.ping = setInterval(() => this.post({ kind: 'ping', client: this.leaderClient, status: this.sub.status }), Math.max(50, o.leaderTimeoutMs / 4));
  }

  stepDown() {
    this.leading = false;
    clearInterval(this.ping);
    clearTimeout(this.restartTimer);
    if (this.conn) this.conn.stop();
    this.conn = null;
    if (this.release) this.release();
    this.release = null;
    this.sub.role = 'follower';
    if (!this.closed) this.candidate(false);
  }

  union() {
    const topics = new Set(this.sub.topics);
    const listen = new Set(this.sub.listen);
    for (const m of this.members.values()) {
      for (const t of m.topics) topics.add(t);
      for (const t of m.listen) listen.add(t);
    }
    return { topics: [...topics].sort(), listen: [...listen] };
  }

  // A member joined, left or changed: restart the stream with the union
  // (and the joiner's snapshots), once for a burst of changes.
  membersChanged() {
    if (!this.leading || !this.conn) return;
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (!this.leading || !this.conn) return;
      const { topics, listen } = this.union();
      this.streamTopics = topics;
      this.conn.update(topics, listen);
    }, 30);
  }

  onMessage(m) {
    if (!m || typeof m !== 'object' || this.closed) return;
    switch (m.kind) {
      case 'member': {
        if (typeof m.cursor === 'number') this.sub.adopt(m.cursor);
        const known = this.members.get(m.from);
        const next = { topics: Array.isArray(m.topics) ? m.topics : [], listen: Array.isArray(m.listen) ? m.listen : [] };
        this.members.set(m.from, next);
        // A newcomer learns of this tab (and, from the leader, of its leadership).
        if (!known) this.announce();
        if (this.leading) {
          if (!known) this.post({ kind: 'leader', client: this.leaderClient, status: this.sub.status });
          const same = known && known.topics.join() === next.topics.join() && known.listen.join() === next.listen.join();
          // A newcomer needs its snapshots, so the stream restarts even
          // when the union stays the same.
          if (!same) this.membersChanged();
        }
        return;
      }
      case 'bye':
        if (this.members.delete(m.from)) this.membersChanged();
        return;
    }
    // Everything else comes from a leader: only the newest one counts.
    if (m.epoch < this.epoch) return;
    if (m.epoch > this.epoch || this.leaderTab !== m.from) {
      if (this.leading) {
        // Another tab leads now (it took over while this one was frozen).
        this.epoch = m.epoch;
        this.stepDown();
      }
      this.epoch = m.epoch;
      this.leaderTab = m.from;
      this.sub.role = 'follower';
      // The new leader learns this tab's topics and cursor.
      this.announce();
    }
    this.lastLeaderAt = Date.now();
    switch (m.kind) {
      case 'leader':
      case 'ping':
        if (m.client) this.leaderClient = m.client;
        if (m.status) this.sub.setStatus(m.status);
        return;
      case 'status':
        this.sub.setStatus(m.status);
        return;
      case 'frame':
        this.sub.receive(m);
        return;
    }
  }

  // A follower that hears nothing from the leader for leaderTimeoutMs takes
  // over: one at a time (a second lock), and only if the lock is still held
  // by the silent leader's client.
  watch() {
    if (this.leading || this.closed || this.taking) return;
    if (Date.now() - this.lastLeaderAt < this.sub.opts.leaderTimeoutMs) return;
    this.taking = true;
    const silent = this.leaderClient;
    navigator.locks
      .request(this.name + ':takeover', async () => {
        if (this.leading || this.closed) return;
        if (Date.now() - this.lastLeaderAt < this.sub.opts.leaderTimeoutMs) return;
        const q = await navigator.locks.query();
        const holder = (q.held || []).find((l) => l.name === this.name);
        if (!holder) return; // released: a queued tab is about to lead
        if (silent && holder.clientId !== silent) {
          // Someone else has taken over; give them time to speak.
          this.lastLeaderAt = Date.now();
          return;
        }
        this.sub.setStatus('reconnecting');
        await this.candidate(true);
      })
      .catch(() => {})
      .finally(() => {
        this.taking = false;
      });
  }

  close() {
    this.post({ kind: 'bye' });
    this.closed = true;
    removeEventListener('pagehide', this.onHide);
    clearInterval(this.check);
    clearInterval(this.ping);
    clearTimeout(this.restartTimer);
    if (this.conn) this.conn.stop();
    if (this.queued) this.queued.abort();
    if (this.release) this.release();
    this.channel.close();
  }
}

/** @typedef {import('./switchyard.js').SwitchyardOptions} SwitchyardOptions */
/** @typedef {import('./switchyard.js').Status} Status */

export class Switchyard {
  /** @param {SwitchyardOptions} opts */
  constructor(opts) {
    this.opts = Object.assign({}, DEFAULTS, opts);
    this.nodes = opts.nodes && opts.nodes.length ? opts.nodes.slice() : [''];
    // Presence: per topic asked for, its counts (`T~occupancy`) and, when
    // asked, its members (`T~members`), subscribed to beside the topics.
    /** @type {Map<string, PresenceState>} */
    this.presenceOf = new Map();
    /** @type {Map<string, [PresenceState, 'occupancy' | 'members']>} derived topic → its state */
    this.derived = new Map();
    for (const [t, members] of presenceTopics(opts.presence)) {
      const st = new PresenceState(t, members);
      this.presenceOf.set(t, st);
      this.derived.set(`${t}~occupancy`, [st, 'occupancy']);
      if (members) this.derived.set(`${t}~members`, [st, 'members']);
    }
    // The topics whose events and snapshots go to the callbacks.
    this.own = new Set(opts.topics);
    // A server-side type filter (`types`) keeps the presence types too
    // (reserved: no other topic has events of them), whatever this tab
    // watches, so tabs with the same `types` share one stream.
    if (Array.isArray(opts.types)) {
      this.opts.types = [...new Set([...opts.types, ...PRESENCE_TYPES])];
    }
    this.topics = [...new Set([...opts.topics, ...this.derived.keys()])].sort();
    // Every type goes to `onEvent` unless `eventTypes` narrows it (events
    // of type `message` always do, as they always have).
    this.allTypes = !Array.isArray(opts.eventTypes);
    this.listen = [...new Set([...(opts.eventTypes || []), 'message'])];
    this.token = opts.token;
    // This tab's last delivered id (and the floor below which it drops).
    this.lastId = numeric(opts.lastEventId);
    // The highest id of the stream this tab has seen (shared: of the union).
    this.shared = this.lastId;
    this.status = null;
    this.closed = false;
    // Topics still waiting for their first state: their events wait too
    // (shared mode), so that a tab sees a snapshot before the changes after it.
    this.awaiting = new Set(this.lastId === null ? this.topics : []);
    this.snapping = new Set();
    // Per topic: events at or below this id are covered by its snapshot.
    this.floor = new Map();
    const shareable =
      this.opts.share !== false &&
      typeof BroadcastChannel === 'function' &&
      typeof navigator !== 'undefined' &&
      navigator.locks &&
      typeof navigator.locks.request === 'function';
    if (shareable) {
      this.role = 'follower';
      this.setStatus('connecting');
      this.share = new Share(this);
    } else {
      this.role = 'solo';
      this.conn = new Connection(
        { ...this.opts, nodes: this.nodes, topics: this.topics, listen: this.listen, cursor: this.lastId, snapshots: false, onToken: (t) => (this.token = t) },
        { frame: (kind, id, type, data) => this.receive({ frame: kind, id, type, data }), status: (s) => this.setStatus(s) },
      );
      this.awaiting.clear();
      this.conn.start();
    }
  }

  /** The connection, for tests and debugging (null on a tab that follows). */
  get es() {
    const c = this.conn || (this.share && this.share.conn);
    return c ? c.es : null;
  }

  /**
   * A topic's presence: its counts and (when asked for) its members, as of
   * the last event this instance has; null for a topic not asked for.
   * @param {string} topic
   */
  presence(topic) {
    const st = this.presenceOf.get(topic);
    return st ? st.view() : null;
  }

  // A presence topic's snapshot or event: folded, and told.
  fold(topic, type, data, snapshot) {
    const entry = this.derived.get(topic);
    if (!entry) return;
    const [st, what] = entry;
    let changed;
    if (what === 'occupancy') changed = st.occupancy(data) || snapshot;
    else changed = snapshot ? st.snapshot(data) : st.apply(type, data);
    // A snapshot is told even when it changes nothing: the state is known.
    if (changed && this.opts.onPresence) this.opts.onPresence(st.view());
  }

  /** @param {Status} s */
  setStatus(s) {
    if (s && s !== this.status && !this.closed) {
      this.status = s;
      this.opts.onStatus && this.opts.onStatus(s);
    }
  }

  // A cursor another tab reports: frames up to it were posted before.
  adopt(id) {
    if (this.shared === null || id > this.shared) this.shared = id;
  }

  // One frame of the stream (own, or handed over by the leading tab).
  receive(m) {
    if (this.closed) return;
    const id = numeric(m.id);
    if (id !== null) this.adopt(id);
    let body = null;
    if (m.frame !== 'heartbeat' && m.frame !== 'open') {
      try {
        body = JSON.parse(m.data);
      } catch {
        return;
      }
    }
    if (m.frame === 'snapshot') {
      const topic = body && body.topic;
      if (!this.topics.includes(topic)) return;
      if (this.share && !this.awaiting.has(topic) && !this.snapping.has(topic)) return;
      this.awaiting.delete(topic);
      this.snapping.delete(topic);
      if (typeof body.as_of === 'number') this.floor.set(topic, Math.max(this.floor.get(topic) ?? 0, body.as_of));
      this.fold(topic, 'snapshot', body.data, true);
      if (this.own.has(topic)) this.opts.onSnapshot && this.opts.onSnapshot(body);
      return;
    }
    // Snapshots come right after a stream's opening frame; anything else
    // means the topics that got none have no state: they go live.
    this.snapping.clear();
    if (m.frame === 'open') {
      for (const t of m.topics || this.topics) {
        if (!this.awaiting.has(t)) continue;
        this.awaiting.delete(t);
        this.snapping.add(t);
        if (id !== null) this.floor.set(t, Math.max(this.floor.get(t) ?? 0, id));
      }
      return;
    }
    if (m.frame === 'heartbeat') return;
    if (m.frame === 'disconnected') {
      // Every tab of a shared stream is told, then each stops.
      this.setStatus('disconnected');
      this.opts.onDisconnected && this.opts.onDisconnected(body || {});
      this.close();
      return;
    }
    if (m.frame === 'reset') {
      const topic = body && body.topic;
      if (!this.topics.includes(topic)) return;
      // Its snapshot follows: take it, and skip what it covers.
      if (this.share) this.snapping.add(topic);
      if (this.own.has(topic)) this.opts.onReset && this.opts.onReset(body);
      return;
    }
    // An event: its type is in its JSON (unnamed frames), else the frame's name.
    if (!body || id === null) return;
    const type = typeof body.type === 'string' ? body.type : m.type;
    if (!this.topics.includes(body.topic)) return;
    if (this.awaiting.has(body.topic)) return;
    if (id <= (this.floor.get(body.topic) ?? -1)) return;
    if (this.lastId !== null && id <= this.lastId) return;
    const wanted = this.own.has(body.topic) && (this.allTypes || this.listen.includes(type));
    const presence = this.derived.has(body.topic);
    if (!wanted && !presence) return;
    this.lastId = id;
    if (presence) this.fold(body.topic, type, body.data, false);
    if (wanted) this.opts.onEvent && this.opts.onEvent(body);
  }

  close() {
    this.closed = true;
    if (this.conn) this.conn.stop();
    if (this.share) this.share.close();
  }
}
