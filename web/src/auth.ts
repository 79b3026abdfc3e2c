// The dashboard's credentials: a bearer token from POST /api/v1/tokens,
// kept in localStorage for API calls and in the hub_token cookie, which
// is what lets the hub serve the dashboard's code to a browser off
// loopback (the API itself reads only the Authorization header and
// ?access_token=).

const key = 'hub.token';

export function token(): string {
  return localStorage.getItem(key) ?? '';
}

export function setToken(t: string, expires: string | null): void {
  localStorage.setItem(key, t);
  let c = 'hub_token=' + encodeURIComponent(t) + '; Path=/; SameSite=Strict';
  if (expires) c += '; Expires=' + new Date(expires).toUTCString();
  if (location.protocol === 'https:') c += '; Secure';
  document.cookie = c;
}

export function clearToken(): void {
  localStorage.removeItem(key);
  document.cookie = 'hub_token=; Path=/; SameSite=Strict; Max-Age=0';
}

// signIn trades a name and password for a token; it returns an error
// message, or '' on success.
export async function signIn(name: string, password: string): Promise<string> {
  let r: Response;
  try {
    r = await fetch('/api/v1/tokens', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Requested-With': 'XMLHttpRequest' },
      body: JSON.stringify({ name, password }),
    });
  } catch (e) {
    return 'the hub does not answer: ' + String(e);
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) return body.error ?? 'sign-in failed: HTTP ' + r.status;
  setToken(body.token, body.expires ?? null);
  return '';
}
