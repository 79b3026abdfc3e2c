// The live side of the dashboard: one Server-Sent Events stream of every
// topic (and device presence), feeding the tail, the charts and the
// devices' last readings.
import { streamURL } from './api';
import { Fields, numericFields } from './numeric';

// Envelope is rest.EnvelopeJSON.
export interface Envelope {
  id: string;
  topic: string;
  payload: string;
  payload_encoding?: string;
  content_type?: string;
  qos: number;
  retain: boolean;
  origin: { protocol: string; client_id?: string; principal?: string };
  time: string;
}

// Series is one topic's numeric history: times in seconds and one
// column per field, aligned (null where a field is missing).
export interface Series {
  topic: string;
  fields: string[];
  times: number[];
  values: Record<string, (number | null)[]>;
  version: number;
}

export const tailMax = 500;

// seconds reads an RFC 3339 time to the nanosecond (Date.parse stops at
// the millisecond, and two readings within one must stay two points).
export function seconds(iso: string): number {
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return NaN;
  const m = /\.(\d+)/.exec(iso);
  return m ? Math.floor(ms / 1000) + Number('0.' + m[1]) : ms / 1000;
}
export const pointsMax = 5000;

type Listener = () => void;

class Live {
  tail: Envelope[] = [];
  series = new Map<string, Series>();
  presence = new Map<string, { online: boolean; last_seen: string }>();
  last = new Map<string, Envelope>();
  state: 'connecting' | 'live' | 'down' = 'connecting';
  private listeners = new Set<Listener>();
  private es: EventSource | null = null;
  private pending = false;

  start(): void {
    if (this.es) return;
    this.es = new EventSource(streamURL(['#', '$hub/devices/+/presence']));
    this.es.onopen = () => this.set('live');
    this.es.onerror = () => this.set(this.es?.readyState === EventSource.CLOSED ? 'down' : 'connecting');
    this.es.addEventListener('message', (ev) => {
      try {
        this.take(JSON.parse((ev as MessageEvent).data) as Envelope);
      } catch {
        /* not an envelope: ignore */
      }
    });
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private set(s: Live['state']): void {
    this.state = s;
    this.notify();
  }

  // notify tells the listeners at most once per animation frame.
  private notify(): void {
    if (this.pending) return;
    this.pending = true;
    const run = () => {
      this.pending = false;
      for (const l of this.listeners) l();
    };
    if (document.hidden) setTimeout(run, 250);
    else requestAnimationFrame(run);
  }

  take(e: Envelope): void {
    const pm = /^\$hub\/devices\/([^/]+)\/presence$/.exec(e.topic);
    if (pm) {
      try {
        const p = JSON.parse(e.payload);
        this.presence.set(pm[1], { online: !!p.online, last_seen: String(p.last_seen ?? e.time) });
      } catch {
        /* malformed presence: ignore */
      }
      this.notify();
      return;
    }
    this.tail.push(e);
    if (this.tail.length > tailMax) this.tail.splice(0, this.tail.length - tailMax);
    const dm = /^devices\/([^/]+)\/(.+)$/.exec(e.topic);
    if (dm && !/^(commands|responses)(\/|$)/.test(dm[2])) this.last.set(dm[1], e);
    if (e.payload_encoding !== 'base64') {
      const f = numericFields(e.payload);
      if (f && Number.isFinite(seconds(e.time))) this.point(e.topic, seconds(e.time), f);
    }
    this.notify();
  }

  // point adds one sample to a topic's series, keeping times in order.
  point(topic: string, t: number, f: Fields): void {
    let s = this.series.get(topic);
    if (!s) {
      s = { topic, fields: [], times: [], values: {}, version: 0 };
      this.series.set(topic, s);
    }
    for (const k of Object.keys(f)) {
      if (!s.values[k]) {
        s.fields.push(k);
        s.values[k] = s.times.map(() => null);
      }
    }
    let i = s.times.length;
    while (i > 0 && s.times[i - 1] > t) i--;
    if (i > 0 && s.times[i - 1] === t) {
      for (const k of s.fields) if (k in f) s.values[k][i - 1] = f[k];
    } else {
      s.times.splice(i, 0, t);
      for (const k of s.fields) s.values[k].splice(i, 0, k in f ? f[k] : null);
    }
    if (s.times.length > pointsMax) {
      const n = s.times.length - pointsMax;
      s.times.splice(0, n);
      for (const k of s.fields) s.values[k].splice(0, n);
    }
    s.version++;
  }

  // history merges points loaded from GET /api/v1/history.
  history(topic: string, field: string, points: { time: string; value: number }[]): void {
    for (const p of points) {
      if (typeof p.value === 'number' && Number.isFinite(seconds(p.time))) this.point(topic, seconds(p.time), { [field]: p.value });
    }
    this.notify();
  }
}

export const live = new Live();
