// Types of switchyard.js, the browser client for Switchyard event streams.

/** Connection state, as `onStatus` reports it. */
export type Status = 'connecting' | 'connected' | 'reconnecting' | 'polling' | 'down' | 'disconnected';

/** Which part a tab plays: its own stream, the shared stream's holder, or a tab it serves. */
export type Role = 'solo' | 'leader' | 'follower';

/** One event, as the server stored it. */
export interface SwitchyardEvent<T = unknown> {
  /** Per-tenant id: gapless, in commit order, the same on every node. */
  id: number;
  tenant: string;
  topic: string;
  type: string;
  data: T;
  /** Milliseconds since the epoch, when it was stored. */
  ts: number;
}

/** A topic's current (retained) state. */
export interface Snapshot<T = unknown> {
  tenant: string;
  topic: string;
  type: 'snapshot';
  data: T;
  /** The id of the event this state is as of (0: a default state). */
  as_of: number;
  ts: number;
}

/** History no longer covers a gap for this topic: refetch its state. */
export interface Reset {
  tenant?: string;
  topic: string;
  type?: 'reset';
  reason: 'history_trimmed' | 'unknown_id' | string;
  resume_from?: number;
}

/** Users and anonymous readers on a topic, across every node. */
export interface PresenceCounts {
  /** Open streams on the topic (a browser's tabs sharing one stream count once). */
  streams: number;
  /** Distinct signed-in users among them. */
  users: number;
}

/** A member of a topic: a user with a stream on it (or within the linger after their last one). */
export interface Member {
  /** The user id. */
  user: string;
  /** The configured claims of the user's verified token (`SWITCHYARD_PRESENCE_CLAIMS`). */
  claims: Record<string, unknown>;
}

/** A topic's presence as of the last event this instance has, folded as the server folds it. */
export interface Presence {
  /** The topic (not its `~occupancy` or `~members` topic). */
  topic: string;
  /** Its counts (zero until the first `occupancy` event or snapshot). */
  counts: PresenceCounts;
  /** Its members, in the order they joined; null when members were not asked for. */
  members: Member[] | null;
  /** More users came than the server announces members for: the list is empty, the counts go on. */
  truncated: boolean;
}

/** Per topic, what of its presence to keep: `true` or `{}` its counts, `{ members: true }` or `'members'` also its members. */
export type PresenceOptions = string[] | Record<string, boolean | 'members' | { members?: boolean }>;

/** What `onDisconnected` is told: an operator ended the user's streams (`switchyard.disconnected`). */
export interface Disconnected {
  tenant?: string;
  /** Why (`closed by an operator`). */
  reason?: string;
  /** The last event id written before the stream ended. */
  resume_from?: number;
}

/** What `onShutdown` is told when a node announces it is going away. */
export interface ShutdownInfo {
  /** The window the server asked reconnects to be spread over. */
  windowMs: number;
  /** This client's random wait within it. */
  delayMs: number;
}

export interface SwitchyardOptions {
  /** Base URLs of the nodes, tried in turn ('' or omitted: this origin). */
  nodes?: string[];
  /** Tenant slug. */
  tenant: string;
  /** Topics to receive (at most 32). */
  topics: string[];
  /** Client token (JWT), needed for `user:` topics; sent as `?token=`. */
  token?: string;
  /** Returns a fresh token; called before `token` expires (its `exp`) and on `auth.expired`. */
  getToken?: () => Promise<string>;
  /** Event types handed to `onEvent` (events of type `message` always are); omitted: every type. */
  eventTypes?: string[];
  /**
   * Topics whose presence to keep: an array of topics (counts only), or per topic
   * `{ members: true }` for the members too. Subscribes to `T~occupancy` (and `T~members`)
   * beside `topics`; their events go to `onPresence`, not `onEvent`. Each counts towards
   * the 32 topics of a stream. A topic watched but not in `topics` does not count you.
   */
  presence?: PresenceOptions;
  /** A watched topic's presence changed (or arrived: its snapshot). */
  onPresence?: (presence: Presence) => void;
  /** Server-side filter: only these event types are sent (`events=`), and the presence types. */
  types?: string[];
  /** Resume after this id instead of starting with the topics' snapshots. */
  lastEventId?: number | string | null;
  /** Each event once, in id order. */
  onEvent?: (event: SwitchyardEvent) => void;
  /** A topic's state: at the start, and after a reset. */
  onSnapshot?: (snapshot: Snapshot) => void;
  /** A gap history no longer covers; a snapshot of the topic follows. */
  onReset?: (reset: Reset) => void;
  /** Every change of connection state. */
  onStatus?: (status: Status) => void;
  /** The token expired and no fresh one could be had (status is then `down`). */
  onExpired?: () => void;
  /** An operator ended the stream: the client stops for good (status `disconnected`) and does not reconnect. */
  onDisconnected?: (info: Disconnected) => void;
  /** The node announced its shutdown; the client reconnects after `delayMs`. */
  onShutdown?: (info: ShutdownInfo) => void;
  /** Share one stream among this origin's tabs (same tenant and token subject). Default true. */
  share?: boolean;
  /** Heartbeat interval assumed until the server tells its own. Default 15000. */
  heartbeatMs?: number;
  /** A stream silent for this many heartbeat intervals is dead. Default 2.5. */
  stallIntervals?: number;
  /** A tab that hears nothing from the shared stream's holder this long takes over. Default 4000. */
  leaderTimeoutMs?: number;
  /** Polling interval of the REST fallback. Default 1000. */
  pollMs?: number;
  /** While polling, how often the stream is tried again. Default 3000. */
  retrySseMs?: number;
  /** Failed connections in a row before polling. Default 3. */
  failuresBeforePolling?: number;
}

/** A subscription: one stream (or a share of one) delivering events once, in order. */
export class Switchyard {
  constructor(options: SwitchyardOptions);
  /** Current connection state. */
  readonly status: Status | null;
  /** The id of the last event delivered to this instance. */
  readonly lastId: number | null;
  /** Whether this instance holds its own stream, the shared one, or follows it. */
  readonly role: Role;
  /** The underlying EventSource, where this instance holds one. */
  readonly es: EventSource | null;
  /** A watched topic's current presence (counts, members), or null for a topic not in `presence`. */
  presence(topic: string): Presence | null;
  /** Stops: closes the stream (another tab takes the shared one over). */
  close(): void;
}

/** The JSON payload of a JWT (not verified), or null. */
export function tokenClaims(token: string | undefined | null): Record<string, unknown> | null;
