// A chart per numeric topic: history from GET /api/v1/history when the
// hub has it, then live points from the stream. Drag to zoom, double-click
// to go back to following the live edge.
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { call, topicPath } from './api';
import { live, Series } from './live';
import { matches } from './numeric';
import { useLive } from './hooks';

const maxCharts = 12;
const historyWindow = 3600;

interface History {
  topic: string;
  series: { field: string; points: { time: string; value: number }[] }[];
}

export function Charts() {
  useLive();
  const [filter, setFilter] = useState('');
  const all = [...live.series.values()].filter((s) => chartable(s.topic));
  const shown = all.filter((s) => matches(filter.trim(), s.topic)).sort((a, b) => (a.topic < b.topic ? -1 : 1));
  return (
    <section id="charts">
      <h2>Charts</h2>
      <div class="bar">
        <input
          placeholder="topic filter (e.g. sensors/+/temp)"
          value={filter}
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
          aria-label="chart topic filter"
        />
        <span class="muted">
          {shown.length} of {all.length} numeric topics{shown.length > maxCharts ? `, first ${maxCharts} shown` : ''}
        </span>
      </div>
      {all.length === 0 && <p class="muted">no numeric readings yet: publish a number, a JSON object with numbers, or SenML</p>}
      <div class="charts">
        {shown.slice(0, maxCharts).map((s) => (
          <Chart key={s.topic} series={s} version={s.version} />
        ))}
      </div>
    </section>
  );
}

// chartable leaves out the hub's own topics and device commands and
// replies, whose numbers are parameters, not readings.
function chartable(topic: string): boolean {
  return !topic.startsWith('$') && !/^devices\/[^/]+\/(commands|responses)(\/|$)/.test(topic);
}

const palette = ['#2f7ed8', '#e4572e', '#29a35a', '#a05195', '#f0a202', '#17becf'];

function Chart({ series, version }: { series: Series; version: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const zoomed = useRef(false);
  const fields = useRef('');
  const [hist, setHist] = useState('');

  useEffect(() => {
    let stop = false;
    const since = new Date(Date.now() - historyWindow * 1000).toISOString();
    void call<History>('GET', '/api/v1/history/' + topicPath(series.topic) + '?since=' + encodeURIComponent(since) + '&limit=2000').then(
      (r) => {
        if (stop) return;
        if (r.ok && r.data && Array.isArray(r.data.series)) {
          let n = 0;
          for (const s of r.data.series) {
            if (Array.isArray(s.points)) {
              live.history(series.topic, s.field || 'value', s.points);
              n += s.points.length;
            }
          }
          setHist(n + ' points of history');
        } else if (r.status === 404) {
          setHist('no history yet');
        } else {
          setHist('history: ' + r.error);
        }
      },
    );
    return () => {
      stop = true;
    };
  }, [series.topic]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const data = [series.times, ...series.fields.map((f) => series.values[f])] as uPlot.AlignedData;
    const sig = series.fields.join('\n');
    if (!plot.current || fields.current !== sig) {
      plot.current?.destroy();
      fields.current = sig;
      const width = Math.max(240, el.clientWidth);
      plot.current = new uPlot(
        {
          width,
          height: 180,
          cursor: { drag: { x: true, y: false } },
          scales: { x: { time: true } },
          legend: { live: true },
          series: [
            {},
            ...series.fields.map((f, i) => ({ label: f, stroke: palette[i % palette.length], width: 1.5, spanGaps: true })),
          ],
          axes: [{ stroke: '#888', space: 70 }, { stroke: '#888', size: 50 }],
          hooks: {
            setSelect: [
              (u: uPlot) => {
                if (u.select.width > 0) zoomed.current = true;
              },
            ],
          },
        },
        data,
        el,
      );
      el.ondblclick = () => {
        zoomed.current = false;
      };
    } else {
      plot.current.setData(data, !zoomed.current);
    }
    // One instant is no span: show the two minutes around it.
    if (series.times.length === 1 && !zoomed.current) {
      plot.current.setScale('x', { min: series.times[0] - 60, max: series.times[0] + 60 });
    }
  }, [version, series.fields.length]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const ro = new ResizeObserver(() => {
      if (plot.current) plot.current.setSize({ width: Math.max(240, el.clientWidth), height: 180 });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  const lastI = series.times.length - 1;
  return (
    <div class="card chart" data-topic={series.topic}>
      <h3>
        <code>{series.topic}</code>{' '}
        <small class="last-value">
          {series.fields.map((f) => f + '=' + (series.values[f][lastI] ?? '–')).join(' ')}
        </small>
      </h3>
      <div ref={box} class="plot" />
      <small class="muted">
        {series.times.length} points · {hist || 'history…'} · drag to zoom, double-click to reset
      </small>
    </div>
  );
}
