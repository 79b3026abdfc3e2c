// What the dashboard can chart: numbers in payloads, as DESIGN.md lists
// them (a plain number, a JSON object's numeric fields by path "a.b",
// SenML JSON records by name).

export type Fields = Record<string, number>;

const numberRE = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
const maxDepth = 4;
const maxFields = 16;

// numericFields returns the numeric fields of a payload, or null when it
// has none.
export function numericFields(payload: string): Fields | null {
  const s = payload.trim();
  if (s === '') return null;
  if (numberRE.test(s)) return { value: Number(s) };
  if (s[0] !== '{' && s[0] !== '[') return null;
  let v: unknown;
  try {
    v = JSON.parse(s);
  } catch {
    return null;
  }
  const out: Fields = {};
  if (Array.isArray(v)) senml(v, out);
  else flatten(v, '', 0, out);
  return Object.keys(out).length ? out : null;
}

function flatten(v: unknown, path: string, depth: number, out: Fields): void {
  if (Object.keys(out).length >= maxFields) return;
  if (typeof v === 'number' && Number.isFinite(v)) {
    out[path || 'value'] = v;
    return;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || depth >= maxDepth) return;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    flatten(x, path ? path + '.' + k : k, depth + 1, out);
  }
}

// senml reads RFC 8428 records: the base name bn carries over to the
// records after it; v is the numeric value.
function senml(records: unknown[], out: Fields): void {
  let bn = '';
  for (const r of records) {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) return;
    const rec = r as Record<string, unknown>;
    if (typeof rec.bn === 'string') bn = rec.bn;
    const n = typeof rec.n === 'string' ? rec.n : '';
    if (typeof rec.v === 'number' && Number.isFinite(rec.v) && Object.keys(out).length < maxFields) {
      out[bn + n || 'value'] = rec.v;
    }
  }
}

// matches reports whether an MQTT topic filter matches a topic.
export function matches(filter: string, topic: string): boolean {
  if (filter === '' || filter === '#') return !topic.startsWith('$') || filter === '';
  const f = filter.split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

// validFilter checks an MQTT topic filter as the hub does: '+' a whole
// level, '#' only as the whole last level.
export function validFilter(filter: string): boolean {
  if (filter === '') return false;
  const levels = filter.split('/');
  return levels.every((l, i) => (l.includes('+') ? l === '+' : true) && (l.includes('#') ? l === '#' && i === levels.length - 1 : true));
}
