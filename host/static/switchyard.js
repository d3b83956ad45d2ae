// switchyard.js: a small, dependency-free client for Switchyard streams.
//
//   const sub = new Switchyard({
//     nodes: ['http://127.0.0.1:8080'],      // tried in turn when one goes away
//     tenant: 'demo', topics: ['product:p_1'], token,  // token: for user: topics
//     onEvent(ev) {},        // {id, tenant, topic, type, data, ts}; never twice
//     onSnapshot(s) {},      // {topic, data}: the topic's current state
//     onReset(r) {},         // history no longer covers a gap: refetch state
//     onStatus(status) {},   // 'connecting' | 'connected' | 'reconnecting' | 'polling' | 'down'
//   });
//   sub.close();
//
// It keeps the last event id (the whole cursor, even for several topics) and
// resumes with it. After 3 consecutive stream failures it polls
// GET /api/topics/{topic}/events?after=… instead, and goes back to the stream
// as soon as one opens again.

export class Switchyard {
  constructor(opts) {
    this.opts = Object.assign({ pollMs: 1000, retrySseMs: 3000, failuresBeforePolling: 3 }, opts);
    this.nodes = opts.nodes && opts.nodes.length ? opts.nodes.slice() : [''];
    this.node = 0;
    this.lastId = opts.lastEventId ?? null;
    this.failures = 0;
    this.closed = false;
    this.mode = 'sse';
    this.es = null;
    this.timer = null;
    this.status = null;
    this.connect();
  }

  setStatus(s) {
    if (s !== this.status) {
      this.status = s;
      this.opts.onStatus && this.opts.onStatus(s);
    }
  }

  base() {
    return this.nodes[this.node % this.nodes.length];
  }

  streamUrl() {
    const q = new URLSearchParams();
    q.set('tenant', this.opts.tenant);
    for (const t of this.opts.topics) q.append('topic', t);
    if (this.opts.types) q.set('events', this.opts.types.join(','));
    if (this.opts.token) q.set('token', this.opts.token);
    if (this.lastId !== null) q.set('lastEventId', String(this.lastId));
    return `${this.base()}/events?${q}`;
  }

  connect() {
    if (this.closed) return;
    this.setStatus(this.failures ? 'reconnecting' : 'connecting');
    // EventSource sends Last-Event-ID by itself on its own reconnects; on ours
    // the cursor travels in the URL.
    const es = new EventSource(this.streamUrl());
    this.es = es;
    let opened = false;
    es.onopen = () => {
      opened = true;
      this.failures = 0;
      this.leavePolling();
      this.setStatus('connected');
    };
    es.onerror = () => {
      if (this.es !== es) return;
      es.close();
      this.es = null;
      this.failures += 1;
      // A node that went away: try the next one.
      if (!opened || this.failures > 1) this.node += 1;
      if (this.failures >= this.opts.failuresBeforePolling) {
        this.enterPolling();
      } else {
        this.setStatus('reconnecting');
        this.timer = setTimeout(() => this.connect(), 300 * this.failures);
      }
    };
    const handle = (type) => (e) => {
      if (this.es !== es) return;
      this.take(type, e.data, e.lastEventId);
    };
    es.onmessage = handle('message');
    for (const t of this.opts.eventTypes || []) es.addEventListener(t, handle(t));
    es.addEventListener('snapshot', (e) => {
      this.cursor(e.lastEventId);
      this.opts.onSnapshot && this.opts.onSnapshot(JSON.parse(e.data));
    });
    es.addEventListener('reset', (e) => {
      this.cursor(e.lastEventId);
      this.opts.onReset && this.opts.onReset(JSON.parse(e.data));
    });
    es.addEventListener('shutdown', () => {
      // The node is going away: resume on the next one, now.
      es.close();
      this.es = null;
      this.node += 1;
      this.setStatus('reconnecting');
      this.timer = setTimeout(() => this.connect(), 50);
    });
    es.addEventListener('auth.expired', () => {
      es.close();
      this.es = null;
      this.setStatus('down');
      this.opts.onExpired && this.opts.onExpired();
    });
  }

  cursor(id) {
    if (id !== undefined && id !== null && id !== '') {
      const n = Number(id);
      if (!Number.isNaN(n) && (this.lastId === null || n > this.lastId)) this.lastId = n;
    }
  }

  // Delivers an event unless it was delivered before (ids only grow).
  take(type, data, id) {
    const n = Number(id);
    if (this.lastId !== null && n <= this.lastId) return;
    this.lastId = n;
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    this.opts.onEvent && this.opts.onEvent(ev);
  }

  enterPolling() {
    if (this.mode === 'polling' || this.closed) return;
    this.mode = 'polling';
    this.setStatus('polling');
    this.poll();
    // Keep trying the stream in the background.
    this.sseRetry = setInterval(() => this.probeStream(), this.opts.retrySseMs);
  }

  leavePolling() {
    if (this.mode !== 'polling') return;
    this.mode = 'sse';
    clearTimeout(this.pollTimer);
    clearInterval(this.sseRetry);
  }

  probeStream() {
    if (this.es || this.closed) return;
    this.failures = this.opts.failuresBeforePolling - 1;
    const es = new EventSource(this.streamUrl());
    const give = () => es.close();
    es.onopen = () => {
      es.close();
      this.failures = 0;
      this.leavePolling();
      this.connect();
    };
    es.onerror = give;
  }

  async poll() {
    if (this.mode !== 'polling' || this.closed) return;
    let ok = false;
    for (let attempt = 0; attempt < this.nodes.length && !ok; attempt++) {
      try {
        const batches = await Promise.all(this.opts.topics.map((t) => this.fetchTopic(t)));
        const events = batches.flat().sort((a, b) => a.id - b.id);
        for (const ev of events) this.take(ev.type, JSON.stringify(ev), ev.id);
        ok = true;
      } catch {
        this.node += 1;
      }
    }
    this.setStatus(ok ? 'polling' : 'down');
    this.pollTimer = setTimeout(() => this.poll(), this.opts.pollMs);
  }

  async fetchTopic(topic) {
    const q = new URLSearchParams({ tenant: this.opts.tenant, limit: '1000' });
    if (this.lastId !== null) q.set('after', String(this.lastId));
    if (this.opts.token) q.set('token', this.opts.token);
    const r = await fetch(`${this.base()}/api/topics/${encodeURIComponent(topic)}/events?${q}`);
    if (!r.ok) throw new Error(`poll ${r.status}`);
    const body = await r.json();
    if (body.reset && this.opts.onReset) this.opts.onReset({ topic });
    return body.events;
  }

  close() {
    this.closed = true;
    if (this.es) this.es.close();
    clearTimeout(this.timer);
    clearTimeout(this.pollTimer);
    clearInterval(this.sseRetry);
  }
}
