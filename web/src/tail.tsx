// The live tail of the bus, with an MQTT topic filter. With the filter
// '#' it shows the dashboard's own stream; with another it opens a stream
// of that filter at the hub (so a busy hub's other topics do not crowd it
// out), starting from what the dashboard's stream already had of it.
import { useEffect, useState } from 'preact/hooks';
import { streamURL } from './api';
import { Envelope, live, tailMax } from './live';
import { matches, validFilter } from './numeric';
import { useLive } from './hooks';

const shownMax = 200;

// useFiltered is the tail of one filter's own stream ('#': null).
function useFiltered(filter: string): { rows: Envelope[] | null; error: string } {
  const [rows, setRows] = useState<Envelope[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    setError('');
    if (filter === '#') {
      setRows(null);
      return;
    }
    if (!validFilter(filter)) {
      setRows([]);
      setError('not a topic filter: + stands for a whole level, # only for the last');
      return;
    }
    let buf = live.tail.filter((e) => matches(filter, e.topic));
    const seen = new Set(buf.map((e) => e.id));
    setRows(buf);
    const es = new EventSource(streamURL([filter], false));
    es.addEventListener('message', (ev) => {
      try {
        const e = JSON.parse((ev as MessageEvent).data) as Envelope;
        if (seen.has(e.id)) return;
        seen.add(e.id);
        buf = [...buf, e].slice(-tailMax);
        setRows(buf);
      } catch {
        /* not an envelope */
      }
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setError('the hub refused the stream of ' + filter);
    };
    return () => es.close();
  }, [filter]);
  return { rows, error };
}

export function Tail() {
  useLive();
  const [input, setInput] = useState('#');
  const [filter, setFilter] = useState('#');
  const [paused, setPaused] = useState<number | null>(null);
  const [cleared, setCleared] = useState('');
  useEffect(() => {
    const t = setTimeout(() => setFilter(input.trim() || '#'), 300);
    return () => clearTimeout(t);
  }, [input]);
  const own = useFiltered(filter);
  let rows = own.rows ?? live.tail;
  if (paused !== null) rows = rows.filter((e) => Date.parse(e.time) <= paused);
  rows = rows.filter((e) => e.id > cleared);
  const shown = rows.slice(-shownMax).reverse();
  const last = rows.length ? rows[rows.length - 1].id : '';
  return (
    <section id="tail">
      <h2>Live tail</h2>
      <div class="bar">
        <input
          id="tail-filter"
          value={input}
          onInput={(e) => setInput((e.target as HTMLInputElement).value)}
          placeholder="filter, e.g. devices/#"
          aria-label="tail topic filter"
        />
        <button onClick={() => setPaused(paused === null ? Date.now() : null)}>{paused === null ? 'Pause' : 'Resume'}</button>
        <button onClick={() => setCleared(last > cleared ? last : cleared)}>Clear</button>
      </div>
      {own.error && <p class="error">{own.error}</p>}
      <div class="scroll tail">
        <table>
          <thead>
            <tr>
              <th>time</th>
              <th>topic</th>
              <th>QoS</th>
              <th>from</th>
              <th>payload</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.id} data-topic={e.topic}>
                <td class="nowrap">{new Date(e.time).toLocaleTimeString()}</td>
                <td>
                  <code>{e.topic}</code>
                  {e.retain && <small class="badge">retained</small>}
                </td>
                <td>{e.qos}</td>
                <td class="nowrap" title={e.origin.client_id}>
                  {e.origin.protocol}
                  {e.origin.principal ? ' ' + e.origin.principal : ''}
                </td>
                <td class="payload">{e.payload_encoding === 'base64' ? `(${e.content_type || 'binary'}, base64) ` + e.payload.slice(0, 40) : e.payload.slice(0, 300)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {shown.length === 0 && <p class="muted">nothing matches {filter} yet</p>}
      </div>
    </section>
  );
}
