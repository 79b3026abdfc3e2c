// The sign-in page: the only page the hub serves off loopback to a
// browser that has no token.
import './style.css';
import { signIn } from './auth';

const form = document.getElementById('login') as HTMLFormElement;
const error = document.getElementById('login-error') as HTMLElement;

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const data = new FormData(form);
  error.textContent = '';
  const msg = await signIn(String(data.get('name') ?? ''), String(data.get('password') ?? ''));
  if (msg) {
    error.textContent = msg;
    return;
  }
  const next = new URLSearchParams(location.search).get('next') ?? '/';
  // Only a path of this hub: "//host" and "/\host" would leave it.
  location.href = /^\/(?![/\\])/.test(next) ? next : '/';
});
