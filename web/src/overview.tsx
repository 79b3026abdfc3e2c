// The overview: what an operator looks at first.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { call } from './api';
import { live } from './live';
import { ago, fmtBytes, fmtDuration, fmtTime, useLive } from './hooks';

export interface Device {
  id: string;
  name: string;
  protocol: string;
  online: boolean;
  last_seen?: string;
  last?: { topic: string; payload: string; payload_encoding?: string; time: string };
}

interface Traffic {
  protocol: string;
  qos: number;
  in: number;
  out: number;
  dropped: number;
}

export interface OverviewData {
  time: string;
  node: string;
  status: string;
  errors?: string[];
  host: {
    cpu_percent: number;
    process_cpu_percent: number;
    cpus: number;
    mem_total: number;
    mem_available: number;
    process_rss: number;
    disk_free: number;
    disk_total: number;
    data_dir: string;
    uptime_seconds: number;
    host_uptime_seconds: number;
    goroutines: number;
  };
  listeners: { adapter: string; name: string; addr: string; state: string; error?: string }[];
  clients: { protocol: string; connected: number }[];
  traffic: Traffic[];
  bridges: { name: string; url: string; connected: boolean; error?: string; queued: number; oldest_queued?: string }[];
  alarms: { id: string; severity: string; message: string }[];
  devices: Device[];
}

// The latest overview, for the forms (the device list).
export let latest: OverviewData | null = null;

const pollMs = 3000;

type Rates = Record<string, { in: number; out: number; dropped: number }>;

function key(t: Traffic): string {
  return t.protocol + '/' + t.qos;
}

export function Overview() {
  useLive();
  const [data, setData] = useState<OverviewData | null>(null);
  const [error, setError] = useState('');
  const [rates, setRates] = useState<Rates>({});
  const prev = useRef<{ at: number; traffic: Traffic[] } | null>(null);

  useEffect(() => {
    let stop = false;
    let timer = 0;
    const load = async () => {
      const r = await call<OverviewData>('GET', '/api/v1/admin/overview');
      if (stop) return;
      if (r.ok && r.data) {
        const now = Date.parse(r.data.time) || Date.now();
        const p = prev.current;
        if (p && now > p.at) {
          const dt = (now - p.at) / 1000;
          const old = new Map(p.traffic.map((t) => [key(t), t]));
          const next: Rates = {};
          for (const t of r.data.traffic) {
            const o = old.get(key(t));
            if (o) {
              next[key(t)] = {
                in: Math.max(0, t.in - o.in) / dt,
                out: Math.max(0, t.out - o.out) / dt,
                dropped: Math.max(0, t.dropped - o.dropped) / dt,
              };
            }
          }
          setRates(next);
        }
        prev.current = { at: now, traffic: r.data.traffic };
        latest = r.data;
        setData(r.data);
        setError('');
      } else {
        setError(r.status === 403 ? 'the overview needs an admin: sign in as one' : r.error);
      }
      timer = window.setTimeout(load, pollMs);
    };
    void load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, []);

  if (!data) {
    return (
      <section id="overview">
        <h2>Overview</h2>
        <p class={error ? 'error' : ''}>{error || 'loading…'}</p>
        {error && <a href="/login">Sign in</a>}
      </section>
    );
  }
  const h = data.host;
  const memUsed = h.mem_total - h.mem_available;
  return (
    <section id="overview">
      <h2>
        Overview <small>{data.node}</small>
      </h2>
      {error && <p class="error">{error}</p>}
      <div class="grid">
        <div class="card" id="health">
          <h3>
            Host <span class={'badge ' + (data.status === 'ok' ? 'ok' : 'bad')}>{data.status}</span>
          </h3>
          <dl class="kv">
            <dt>CPU</dt>
            <dd>
              <Meter pct={h.cpu_percent} /> {h.cpu_percent.toFixed(0)}% of {h.cpus} (hub {h.process_cpu_percent.toFixed(1)}%)
            </dd>
            <dt>Memory</dt>
            <dd>
              <Meter pct={h.mem_total ? (100 * memUsed) / h.mem_total : 0} /> {fmtBytes(memUsed)} of {fmtBytes(h.mem_total)} (hub{' '}
              {fmtBytes(h.process_rss)})
            </dd>
            <dt>Store disk</dt>
            <dd>
              <Meter pct={h.disk_total ? 100 - (100 * h.disk_free) / h.disk_total : 0} /> {fmtBytes(h.disk_free)} free of{' '}
              {fmtBytes(h.disk_total)}
            </dd>
            <dt>Uptime</dt>
            <dd>
              hub {fmtDuration(h.uptime_seconds)}, host {fmtDuration(h.host_uptime_seconds)}
            </dd>
          </dl>
        </div>
        <div class="card" id="alarms">
          <h3>Alarms</h3>
          {data.alarms.length === 0 ? (
            <p class="muted">none</p>
          ) : (
            <ul class="alarms">
              {data.alarms.map((a) => (
                <li key={a.id} class={a.severity}>
                  <b>{a.severity}</b> {a.message}
                </li>
              ))}
            </ul>
          )}
        </div>
        <div class="card" id="listeners">
          <h3>Listeners</h3>
          <Table
            head={['listener', 'address', 'state']}
            rows={data.listeners.map((l) => [
              l.adapter + '/' + l.name,
              l.addr,
              <span class={'badge ' + (l.state === 'accepting' ? 'ok' : 'bad')} title={l.error}>
                {l.state}
              </span>,
            ])}
          />
        </div>
        <div class="card" id="clients">
          <h3>Connected clients</h3>
          <Table head={['protocol', 'connected']} rows={data.clients.map((c) => [c.protocol, String(c.connected)])} />
        </div>
      </div>
      <div class="card wide" id="devices">
        <h3>Devices</h3>
        <Table
          head={['device', 'protocol', 'presence', 'last reading']}
          empty="no devices registered"
          rows={data.devices.map((d) => {
            const p = live.presence.get(d.id);
            const online = p ? p.online : d.online;
            const seen = p ? p.last_seen : d.last_seen;
            const l = live.last.get(d.id) ?? d.last;
            return [
              <span title={d.name}>{d.id}</span>,
              d.protocol,
              <span class={'presence ' + (online ? 'online' : 'offline')} data-device={d.id}>
                {online ? 'online' : 'offline'} <small>{ago(seen)}</small>
              </span>,
              l ? (
                <span class="reading" data-device-reading={d.id}>
                  <code>{l.topic.slice(('devices/' + d.id + '/').length)}</code> {l.payload_encoding === 'base64' ? '(binary)' : clip(l.payload, 60)}{' '}
                  <small>{fmtTime(l.time)}</small>
                </span>
              ) : (
                <span class="muted">–</span>
              ),
            ];
          })}
        />
      </div>
      <div class="grid">
        <div class="card" id="traffic">
          <h3>Messages per second</h3>
          <Table
            head={['protocol', 'QoS', 'in', 'out', 'dropped']}
            empty="no traffic yet"
            rows={data.traffic.map((t) => {
              const r = rates[key(t)];
              return [
                t.protocol,
                String(t.qos),
                <Rate v={r?.in} total={t.in} />,
                <Rate v={r?.out} total={t.out} />,
                <Rate v={r?.dropped} total={t.dropped} bad />,
              ];
            })}
          />
        </div>
        <div class="card" id="bridges">
          <h3>Bridges</h3>
          <Table
            head={['bridge', 'state', 'queued', 'oldest']}
            empty="no bridges configured"
            rows={data.bridges.map((b) => [
              <span title={b.url}>{b.name}</span>,
              <span class={'badge ' + (b.connected ? 'ok' : 'bad')} title={b.error}>
                {b.connected ? 'connected' : 'down'}
              </span>,
              String(b.queued),
              b.oldest_queued ? ago(b.oldest_queued) : '–',
            ])}
          />
        </div>
      </div>
    </section>
  );
}

function clip(s: string, n: number): string {
  return s.length > n ? s.slice(0, n) + '…' : s;
}

function Meter({ pct }: { pct: number }) {
  const p = Math.max(0, Math.min(100, pct || 0));
  return (
    <span class={'meter' + (p > 90 ? ' hot' : '')}>
      <span style={{ width: p + '%' }} />
    </span>
  );
}

function Rate({ v, total, bad }: { v?: number; total: number; bad?: boolean }) {
  return (
    <span class={bad && (v ?? 0) > 0 ? 'error' : ''} title={'total ' + total}>
      {v === undefined ? '–' : v < 10 ? v.toFixed(1) : v.toFixed(0)}
    </span>
  );
}

export function Table({ head, rows, empty }: { head: string[]; rows: unknown[][]; empty?: string }) {
  if (rows.length === 0 && empty) return <p class="muted">{empty}</p>;
  return (
    <div class="scroll">
      <table>
        <thead>
          <tr>
            {head.map((h) => (
              <th key={h}>{h}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={i}>
              {r.map((c, j) => (
                <td key={j}>{c as ComponentChildren}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
