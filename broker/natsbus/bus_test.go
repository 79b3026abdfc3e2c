package natsbus

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// srv is the JetStream server every test of the package uses; each bus
// gets a prefix of its own, so tests do not see each other's streams.
var srv *server.Server

func TestMain(m *testing.M) {
	quotaPoll = 200 * time.Millisecond // the quota cases wait for a list of the consumers
	dir, err := os.MkdirTemp("", "natsbus")
	if err != nil {
		panic(err)
	}
	srv, err = server.NewServer(&server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		panic("nats server did not start")
	}
	code := m.Run()
	srv.Shutdown()
	srv.WaitForShutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	prefixMu sync.Mutex
	prefixes = map[broker.Spool]string{}
	nPrefix  int
)

// prefixFor gives the buses of one spool (a restart in the suite) the
// same prefix, and every other bus a new one.
func prefixFor(spool broker.Spool) string {
	prefixMu.Lock()
	defer prefixMu.Unlock()
	if p, ok := prefixes[spool]; ok && spool != nil {
		return p
	}
	nPrefix++
	p := fmt.Sprint("t", nPrefix)
	if spool != nil {
		prefixes[spool] = p
	}
	return p
}

func connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newBus(t testing.TB, prefix string, cfg Config) *Bus {
	t.Helper()
	cfg.Conn = connect(t)
	cfg.Prefix = prefix
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// factory makes the suite's buses. The suite breaks storage through its
// MemSpool; this bus's storage is JetStream, so a write fails when the
// spool's Enqueue would.
func factory(t *testing.T, spool broker.Spool) broker.Bus {
	b := newBus(t, prefixFor(spool), Config{Node: "test"})
	if ms, ok := spool.(*bustest.MemSpool); ok {
		b.fault = ms.EnqueueFault
	}
	return b
}

func TestConformance(t *testing.T) { bustest.Run(t, factory) }

// TestConformanceSingleFilter runs the suite the way the bus runs on a
// NATS server before 2.10 (Debian's 2.9): one filter subject per
// consumer, the filters applied by the bus.
func TestConformanceSingleFilter(t *testing.T) {
	bustest.Run(t, func(t *testing.T, spool broker.Spool) broker.Bus {
		b := factory(t, spool).(*Bus)
		b.multiFilter = false
		return b
	})
}

func TestServerAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"2.9.10": false, "2.10.0": true, "2.15.2": true, "3.0.0": true, "1.99": false, "dev": true} {
		if got := serverAtLeast(v, 2, 10); got != want {
			t.Errorf("serverAtLeast(%q, 2, 10) = %v, want %v", v, got, want)
		}
	}
}
