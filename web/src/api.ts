// Calls to the hub's REST API with the dashboard's token.
import { clearToken, token } from './auth';

export interface Reply<T = unknown> {
  status: number;
  ok: boolean;
  data: T | null;
  text: string;
  error: string;
}

// signOut forgets the token and goes to the sign-in page.
export function signOut(): void {
  const t = token();
  if (t) {
    void fetch('/api/v1/tokens/' + encodeURIComponent(t), {
      method: 'DELETE',
      headers: { Authorization: 'Bearer ' + t, 'X-Requested-With': 'XMLHttpRequest' },
    }).catch(() => undefined);
  }
  clearToken();
  location.href = '/login';
}

export async function call<T = unknown>(
  method: string,
  path: string,
  body?: BodyInit,
  headers: Record<string, string> = {},
): Promise<Reply<T>> {
  // X-Requested-With: no Basic challenge back, so no browser password
  // dialog over the page when a token has expired.
  const h: Record<string, string> = { 'X-Requested-With': 'XMLHttpRequest', ...headers };
  const t = token();
  if (t) h.Authorization = 'Bearer ' + t;
  let r: Response;
  try {
    r = await fetch(path, { method, headers: h, body });
  } catch (e) {
    return { status: 0, ok: false, data: null, text: '', error: 'the hub does not answer: ' + String(e) };
  }
  const text = await r.text();
  let data: T | null = null;
  try {
    data = text ? (JSON.parse(text) as T) : null;
  } catch {
    data = null;
  }
  const err = !r.ok ? ((data as { error?: string } | null)?.error ?? 'HTTP ' + r.status) : '';
  if (r.status === 401) signOut();
  return { status: r.status, ok: r.ok, data, text, error: err };
}

export function json(v: unknown): [string, Record<string, string>] {
  return [JSON.stringify(v), { 'Content-Type': 'application/json' }];
}

// topicPath escapes each level of a topic for a URL path.
export function topicPath(topic: string): string {
  return topic.split('/').map(encodeURIComponent).join('/');
}

// streamURL is the SSE URL for filters, with the token in the query
// (EventSource cannot send headers).
export function streamURL(filters: string[], retained = true): string {
  const q = new URLSearchParams();
  for (const f of filters) q.append('filter', f);
  if (!retained) q.set('retained', 'false');
  const t = token();
  if (t) q.set('access_token', t);
  return '/api/v1/subscribe?' + q.toString();
}
