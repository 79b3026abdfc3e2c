// The hub's dashboard: overview first (health, listeners, devices,
// clients, traffic, bridges, alarms), then a chart per numeric topic, the
// live tail of the bus, and the forms.
import './style.css';
import 'uplot/dist/uPlot.min.css';
import { render } from 'preact';
import { signOut } from './api';
import { token } from './auth';
import { live } from './live';
import { useLive } from './hooks';
import { Overview } from './overview';
import { Charts } from './charts';
import { Tail } from './tail';
import { Forms } from './forms';

function App() {
  useLive();
  return (
    <>
      <header class="top">
        <strong class="brand">hub</strong>
        <nav>
          <a href="#overview">Overview</a>
          <a href="#charts">Charts</a>
          <a href="#tail">Tail</a>
          <a href="#actions">Actions</a>
        </nav>
        <span class={'live ' + live.state} id="live-state" title="live stream">
          {live.state}
        </span>
        {token() && (
          <button class="link" onClick={signOut}>
            Sign out
          </button>
        )}
      </header>
      <main>
        <Overview />
        <Charts />
        <Tail />
        <Forms />
      </main>
    </>
  );
}

live.start();
render(<App />, document.getElementById('app')!);
