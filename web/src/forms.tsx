// The forms: publish, run a device command, add a device or a user, set
// a user's ACL.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { call, json, topicPath } from './api';
import { latest } from './overview';
import { useLive } from './hooks';

type Result = { ok: boolean; text: string } | null;

function Out({ r }: { r: Result }) {
  if (!r) return null;
  return (
    <pre class={'result ' + (r.ok ? 'ok' : 'error')} role="status">
      {r.text}
    </pre>
  );
}

function Form({ id, title, onSubmit, children }: { id: string; title: string; onSubmit: () => Promise<void>; children: ComponentChildren }) {
  const [busy, setBusy] = useState(false);
  return (
    <form
      id={id}
      class="card"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          await onSubmit();
        } finally {
          setBusy(false);
        }
      }}
    >
      <h3>{title}</h3>
      {children}
      <button type="submit" disabled={busy}>
        {busy ? '…' : title}
      </button>
    </form>
  );
}

function val(e: Event): string {
  return (e.target as HTMLInputElement).value;
}

function pretty(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function Publish() {
  const [topic, setTopic] = useState('');
  const [payload, setPayload] = useState('');
  const [ct, setCT] = useState('text/plain');
  const [qos, setQoS] = useState('0');
  const [retain, setRetain] = useState(false);
  const [r, setR] = useState<Result>(null);
  return (
    <Form
      id="publish"
      title="Publish"
      onSubmit={async () => {
        const res = await call('POST', `/api/v1/topics/${topicPath(topic)}?qos=${qos}&retain=${retain}`, payload, { 'Content-Type': ct });
        setR({ ok: res.ok, text: res.ok ? `published (${res.status}) ${res.text}` : res.error });
      }}
    >
      <label>
        Topic <input name="topic" value={topic} onInput={(e) => setTopic(val(e))} required placeholder="home/kitchen/temp" />
      </label>
      <label>
        Payload <textarea name="payload" value={payload} onInput={(e) => setPayload(val(e))} rows={2} />
      </label>
      <div class="row">
        <label>
          Type
          <select value={ct} onChange={(e) => setCT(val(e))}>
            <option>text/plain</option>
            <option>application/json</option>
            <option>application/senml+json</option>
          </select>
        </label>
        <label>
          QoS
          <select value={qos} onChange={(e) => setQoS(val(e))}>
            <option>0</option>
            <option>1</option>
            <option>2</option>
          </select>
        </label>
        <label class="check">
          <input type="checkbox" checked={retain} onChange={(e) => setRetain((e.target as HTMLInputElement).checked)} /> retain
        </label>
      </div>
      <Out r={r} />
    </Form>
  );
}

function Command() {
  useLive();
  const [device, setDevice] = useState('');
  const [name, setName] = useState('');
  const [params, setParams] = useState('');
  const [timeout, setTimeout_] = useState('10s');
  const [r, setR] = useState<Result>(null);
  const devs = latest?.devices ?? [];
  return (
    <Form
      id="command"
      title="Send command"
      onSubmit={async () => {
        setR({ ok: true, text: 'waiting for the reply…' });
        const res = await call(
          'POST',
          `/api/v1/devices/${encodeURIComponent(device)}/commands/${encodeURIComponent(name)}?timeout=${encodeURIComponent(timeout)}`,
          params.trim() || undefined,
          { 'Content-Type': 'application/json' },
        );
        setR({ ok: res.ok, text: res.ok ? pretty(res.text) : `${res.status}: ${res.error}` });
      }}
    >
      <label>
        Device
        <input name="device" list="device-ids" value={device} onInput={(e) => setDevice(val(e))} required />
        <datalist id="device-ids">
          {devs.map((d) => (
            <option key={d.id} value={d.id}>
              {d.online ? 'online' : 'offline'}
            </option>
          ))}
        </datalist>
      </label>
      <label>
        Command <input name="command" value={name} onInput={(e) => setName(val(e))} required placeholder="reboot" />
      </label>
      <label>
        Params (JSON) <textarea name="params" value={params} onInput={(e) => setParams(val(e))} rows={2} placeholder='{"level": 3}' />
      </label>
      <label>
        Timeout <input name="timeout" value={timeout} onInput={(e) => setTimeout_(val(e))} />
      </label>
      <Out r={r} />
    </Form>
  );
}

function AddDevice() {
  const [id, setID] = useState('');
  const [name, setName] = useState('');
  const [protocol, setProtocol] = useState('mqtt');
  const [password, setPassword] = useState('');
  const [r, setR] = useState<Result>(null);
  return (
    <Form
      id="add-device"
      title="Add device"
      onSubmit={async () => {
        const body: Record<string, string> = { id, name, protocol };
        if (password) body.password = password;
        const res = await call('POST', '/api/v1/devices', ...json(body));
        setR({ ok: res.ok, text: res.ok ? `device ${id} added` : res.error });
      }}
    >
      <label>
        Id <input name="id" value={id} onInput={(e) => setID(val(e))} required />
      </label>
      <label>
        Name <input name="name" value={name} onInput={(e) => setName(val(e))} />
      </label>
      <div class="row">
        <label>
          Protocol
          <select value={protocol} onChange={(e) => setProtocol(val(e))}>
            <option>mqtt</option>
            <option>coap</option>
            <option>xmpp</option>
          </select>
        </label>
        <label>
          Password <input name="password" type="password" autocomplete="new-password" value={password} onInput={(e) => setPassword(val(e))} />
        </label>
      </div>
      <Out r={r} />
    </Form>
  );
}

function AddUser() {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState('user');
  const [r, setR] = useState<Result>(null);
  return (
    <Form
      id="add-user"
      title="Add user"
      onSubmit={async () => {
        const res = await call('POST', '/api/v1/users', ...json({ name, password, role }));
        setR({ ok: res.ok, text: res.ok ? `user ${name} added` : res.error });
      }}
    >
      <label>
        Name <input name="name" value={name} onInput={(e) => setName(val(e))} required />
      </label>
      <div class="row">
        <label>
          Password <input name="password" type="password" autocomplete="new-password" value={password} onInput={(e) => setPassword(val(e))} required />
        </label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole(val(e))}>
            <option>user</option>
            <option>admin</option>
            <option>device</option>
          </select>
        </label>
      </div>
      <Out r={r} />
    </Form>
  );
}

interface Rule {
  action: string;
  filter: string;
  allow: boolean;
  read_only?: boolean;
}

// parseRules reads one rule a line: "allow|deny ACTION FILTER".
export function parseRules(text: string): Rule[] | string {
  const out: Rule[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim();
    if (!l || l.startsWith('#')) continue;
    const [verb, action, filter, ...rest] = l.split(/\s+/);
    if ((verb !== 'allow' && verb !== 'deny') || !action || !filter || rest.length) {
      return `line ${i + 1}: want "allow|deny publish|subscribe|command|all FILTER"`;
    }
    out.push({ allow: verb === 'allow', action, filter });
  }
  return out;
}

function ACL() {
  const [user, setUser] = useState('');
  const [text, setText] = useState('');
  const [fixed, setFixed] = useState<Rule[]>([]);
  const [r, setR] = useState<Result>(null);
  const show = (rules: Rule[]) => {
    setFixed(rules.filter((x) => x.read_only));
    setText(
      rules
        .filter((x) => !x.read_only)
        .map((x) => `${x.allow ? 'allow' : 'deny'} ${x.action} ${x.filter}`)
        .join('\n'),
    );
  };
  return (
    <Form
      id="acl"
      title="Save ACL"
      onSubmit={async () => {
        const rules = parseRules(text);
        if (typeof rules === 'string') {
          setR({ ok: false, text: rules });
          return;
        }
        const res = await call<Rule[]>('PUT', `/api/v1/users/${encodeURIComponent(user)}/acl`, ...json(rules));
        if (res.ok && res.data) show(res.data);
        setR({ ok: res.ok, text: res.ok ? `ACL of ${user} saved: ${rules.length} rules` : res.error });
      }}
    >
      <div class="row">
        <label>
          User <input name="user" value={user} onInput={(e) => setUser(val(e))} required />
        </label>
        <button
          type="button"
          onClick={async () => {
            const res = await call<Rule[]>('GET', `/api/v1/users/${encodeURIComponent(user)}/acl`);
            if (res.ok && res.data) show(res.data);
            setR(res.ok ? null : { ok: false, text: res.error });
          }}
        >
          Load
        </button>
      </div>
      {fixed.length > 0 && (
        <p class="muted">
          from the configuration file, first: {fixed.map((x) => `${x.allow ? 'allow' : 'deny'} ${x.action} ${x.filter}`).join('; ')}
        </p>
      )}
      <label>
        Rules, first match wins (allow|deny publish|subscribe|command|all FILTER)
        <textarea name="rules" value={text} onInput={(e) => setText(val(e))} rows={4} placeholder={'allow subscribe sensors/#\ndeny all #'} />
      </label>
      <Out r={r} />
    </Form>
  );
}

export function Forms() {
  return (
    <section id="actions">
      <h2>Actions</h2>
      <div class="grid">
        <Publish />
        <Command />
        <AddDevice />
        <AddUser />
        <ACL />
      </div>
    </section>
  );
}
