// The live tail of the bus, with an MQTT topic filter.
import { useState } from 'preact/hooks';
import { live } from './live';
import { matches } from './numeric';
import { useLive } from './hooks';

const shownMax = 200;

export function Tail() {
  useLive();
  const [filter, setFilter] = useState('#');
  const [paused, setPaused] = useState<number | null>(null);
  const [cleared, setCleared] = useState('');
  const f = filter.trim() || '#';
  let rows = live.tail;
  if (paused !== null) rows = rows.filter((e) => Date.parse(e.time) <= paused);
  rows = rows.filter((e) => e.id > cleared && matches(f, e.topic));
  const shown = rows.slice(-shownMax).reverse();
  return (
    <section id="tail">
      <h2>Live tail</h2>
      <div class="bar">
        <input
          id="tail-filter"
          value={filter}
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
          placeholder="filter, e.g. devices/#"
          aria-label="tail topic filter"
        />
        <button onClick={() => setPaused(paused === null ? Date.now() : null)}>{paused === null ? 'Pause' : 'Resume'}</button>
        <button onClick={() => setCleared(live.tail.length ? live.tail[live.tail.length - 1].id : '')}>Clear</button>
      </div>
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
        {shown.length === 0 && <p class="muted">nothing matches {f} yet</p>}
      </div>
    </section>
  );
}
