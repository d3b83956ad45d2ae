// The demo marketplace: the product, the signed-in user's private topic and
// the tenant board, through switchyard.js (which shares one stream among the
// user's tabs and renews the demo token before it expires). Presence comes
// on the same stream: the auction's watchers and the bidders present
// (`product:{id}~occupancy`, `~members`), and who is online, the members
// of the tenant board every signed-in page reads (`tenant:{slug}~members`),
// readable by whoever may read those topics.
import { Switchyard } from '/switchyard.js';

const params = new URLSearchParams(location.search);
const TENANT = params.get('tenant') || 'demo';
const NODES = (params.get('nodes') || location.origin).split(',');
const USERS = ['alice', 'bob', 'carol', 'seller'];
// Demo tokens live an hour; ?token_ttl=5 makes them short to watch renewals.
const TOKEN_TTL = Number(params.get('token_ttl')) || undefined;
const $ = (id) => document.getElementById(id);

let me = sessionStorage.getItem('user');
let token = params.get('token') || sessionStorage.getItem('token');
let productId = sessionStorage.getItem('product') || params.get('product');
let product = null;
let sub = null;
let unread = 0;

const api = async (path, opts = {}) => {
  let lastErr;
  for (const node of NODES) {
    try {
      const r = await fetch(node + path, {
        ...opts,
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw Object.assign(new Error(body.error?.message || r.status), { status: r.status, body });
      return body;
    } catch (e) {
      lastErr = e;
      if (e.status) throw e; // the server answered: do not try another node
    }
  }
  throw lastErr;
};

function toast(text) {
  const t = document.createElement('div');
  t.className = 'toast';
  t.textContent = text;
  $('toasts').append(t);
  setTimeout(() => t.remove(), 6000);
}

function setBadge(n) {
  unread = n;
  $('badge').textContent = String(n);
  $('badge').hidden = n === 0;
}

// Presence: the auction's counts and members, and the board's members (who
// is online), as switchyard.js folds them.
const presence = new Map();
const label = (m) => (typeof m.claims?.name === 'string' ? m.claims.name : m.user);

function renderPresence() {
  const p = productId && presence.get(`product:${productId}`);
  if (p) {
    $('p-watching').dataset.count = String(p.counts.users);
    $('p-watching').textContent = `${p.counts.users} watching`;
    $('p-watching').title = `${p.counts.streams} open streams`;
    $('p-present').replaceChildren(
      ...(p.members || []).map((m) => {
        const s = document.createElement('span');
        s.dataset.user = m.user;
        s.textContent = label(m);
        return s;
      }),
    );
  }
  const board = presence.get(`tenant:${TENANT}`);
  const to = $('msg-to').value.trim();
  const peer = $('peer');
  if (!to || !board || board.truncated) {
    peer.dataset.online = 'unknown';
    peer.textContent = '';
  } else {
    const online = (board.members || []).some((m) => m.user === to);
    peer.dataset.online = String(online);
    peer.textContent = `${to} is ${online ? 'online' : 'offline'}`;
  }
}
$('msg-to').addEventListener('input', renderPresence);

function renderProduct() {
  if (!product) return;
  $('no-product').hidden = true;
  $('product').hidden = false;
  $('p-title').textContent = product.title;
  $('p-current').textContent = product.current_bid ?? '–';
  $('p-leader').textContent = product.leader ?? '–';
  $('p-count').textContent = String(product.bid_count);
  $('p-status').textContent = product.status;
  const min = product.current_bid ? product.current_bid + product.min_increment : product.starting_price;
  if (!$('bid-amount').value || Number($('bid-amount').value) < min) $('bid-amount').value = min;
}

function tick() {
  if (!product || !product.ends_at) {
    $('p-countdown').textContent = product ? 'no end' : '–';
    return;
  }
  const left = Math.max(0, product.ends_at - Date.now());
  $('p-countdown').textContent = left ? `${Math.floor(left / 60000)}m ${Math.floor(left / 1000) % 60}s` : 'ended';
}
setInterval(tick, 1000);

function addHistory(d) {
  if (document.querySelector(`#history li[data-bid="${d.bid_id}"]`)) return;
  const li = document.createElement('li');
  li.dataset.bid = d.bid_id;
  li.textContent = `${d.amount} by ${d.bidder}`;
  $('history').prepend(li);
}

function onEvent(ev) {
  const d = ev.data;
  switch (ev.type) {
    case 'bid.accepted':
    case 'auction.closed':
    case 'product.created':
      product = d.product;
      if (ev.type === 'bid.accepted') addHistory(d);
      if (ev.type === 'auction.closed') toast(d.winner ? `Auction closed: ${d.winner} wins at ${d.amount}` : 'Auction closed');
      renderProduct();
      break;
    case 'bid.outbid':
      toast(d.preview || `Outbid on ${d.title}: ${d.amount}`);
      break;
    case 'bid.rejected':
      break;
    case 'message':
      toast(`New message from ${d.from}: ${d.preview}`);
      loadConversation();
      break;
    case 'unread':
      setBadge(d.unread);
      break;
    case 'announcement': {
      const li = document.createElement('li');
      li.textContent = typeof d === 'string' ? d : d.text || JSON.stringify(d);
      $('announcements').prepend(li);
      break;
    }
  }
}

async function loadHistory() {
  // Reload: the product's accepted bids from the log, oldest first.
  const r = await api(`/api/topics/product:${productId}/events?tenant=${TENANT}&limit=1000`);
  for (const ev of r.events) if (ev.type === 'bid.accepted') addHistory(ev.data);
}

function subscribe() {
  if (sub) sub.close();
  const topics = [`tenant:${TENANT}`];
  if (productId) topics.push(`product:${productId}`);
  if (me) topics.push(`user:${me}`);
  // Counts and members of the auction; members of the board (who is online).
  const watch = { [`tenant:${TENANT}`]: { members: true } };
  if (productId) watch[`product:${productId}`] = { members: true };
  presence.clear();
  sub = new Switchyard({
    nodes: NODES,
    tenant: TENANT,
    topics,
    token,
    // A fresh token before this one expires (demo sign-in mints them); a
    // token given in the URL is used as it is.
    getToken: params.get('token') ? undefined : renewToken,
    // Every event type comes to onEvent (no `eventTypes`): it picks its own.
    onEvent,
    presence: watch,
    onPresence(p) {
      presence.set(p.topic, p);
      renderPresence();
    },
    onSnapshot(s) {
      if (s.topic.startsWith('product:')) {
        product = s.data.product;
        renderProduct();
      } else if (s.topic.startsWith('user:')) {
        setBadge(s.data.unread ?? 0);
      }
    },
    onReset(r) {
      if (r.topic.startsWith('product:')) api(`/api/products/${productId}?tenant=${TENANT}`).then((p) => { product = p; renderProduct(); loadHistory(); });
    },
    onStatus(s) {
      $('conn').dataset.status = s;
      $('conn-text').textContent = s;
      $('banner').hidden = s !== 'polling';
    },
  });
  window.__switchyard = sub;
}

async function mintToken(user) {
  const r = await api('/api/demo/token', { method: 'POST', body: JSON.stringify({ user, ttl_secs: TOKEN_TTL }) });
  token = r.token;
  sessionStorage.setItem('token', token);
  window.__tokensMinted = (window.__tokensMinted || 0) + 1;
  return token;
}

const renewToken = () => mintToken(me);

async function signIn(user) {
  if (!params.get('token')) await mintToken(user);
  me = user;
  sessionStorage.setItem('user', user);
  $('who').textContent = `signed in as ${user}`;
  $('signin').hidden = true;
  route();
  subscribe();
}

async function loadConversation() {
  if (!me) return;
  const r = await api(`/api/users/${me}/messages?after=0&limit=1000`);
  $('conversation').replaceChildren(
    ...r.messages.map((m) => {
      const li = document.createElement('li');
      li.dataset.id = m.id;
      li.textContent = `${m.from} → ${m.to}: ${m.body}`;
      return li;
    }),
  );
  setBadge(r.unread);
  $('conversation').dataset.last = r.last_id;
}

function route() {
  const view = location.hash.replace('#/', '') || 'auction';
  for (const v of ['auction', 'messages', 'board']) $(`view-${v}`).hidden = !me || v !== view;
  if (view === 'messages') loadConversation();
}
window.addEventListener('hashchange', route);

$('users').replaceChildren(
  ...USERS.map((u) => {
    const b = document.createElement('button');
    b.textContent = u;
    b.dataset.user = u;
    b.onclick = () => signIn(u);
    return b;
  }),
);

$('create-auction').onclick = async () => {
  const p = await api('/api/products', {
    method: 'POST',
    body: JSON.stringify({ seller_id: me, title: 'Vintage desk lamp', starting_price: 1000, min_increment: 100, ends_at: Date.now() + 10 * 60 * 1000, anti_snipe_secs: 30 }),
  });
  productId = p.id;
  sessionStorage.setItem('product', productId);
  product = p;
  renderProduct();
  subscribe();
};

$('bid-form').onsubmit = async (e) => {
  e.preventDefault();
  const fb = $('bid-feedback');
  const amount = Number($('bid-amount').value);
  try {
    const r = await api(`/api/products/${productId}/bids`, { method: 'POST', body: JSON.stringify({ bidder_id: me, amount }) });
    fb.dataset.state = 'queued';
    fb.textContent = 'queued…';
    for (let i = 0; i < 100; i++) {
      const b = await api(`/api/bids/${r.bid_id}`);
      if (b.status !== 'queued') {
        fb.dataset.state = b.status;
        fb.textContent = b.status === 'accepted' ? `accepted: ${amount}` : `rejected: ${b.reason}`;
        return;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  } catch (err) {
    fb.dataset.state = 'rejected';
    fb.textContent = `error: ${err.message}`;
  }
};

$('msg-form').onsubmit = async (e) => {
  e.preventDefault();
  await api('/api/messages', { method: 'POST', body: JSON.stringify({ from: me, to: $('msg-to').value, body: $('msg-body').value, product_id: productId || undefined }) });
  $('msg-body').value = '';
  loadConversation();
};

$('mark-read').onclick = async () => {
  const last = Number($('conversation').dataset.last || 0);
  const r = await api(`/api/users/${me}/messages/read`, { method: 'POST', body: JSON.stringify({ up_to: last }) });
  setBadge(r.unread);
};

if (productId) {
  api(`/api/products/${productId}?tenant=${TENANT}`).then((p) => { product = p; renderProduct(); loadHistory(); }).catch(() => {});
}
if (me && token) {
  $('who').textContent = `signed in as ${me}`;
  $('signin').hidden = true;
  route();
  subscribe();
} else if (params.get('user') && params.get('token')) {
  signIn(params.get('user'));
}
