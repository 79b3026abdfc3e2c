package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// upstream is an in-process mochi broker standing in for the upstream.
type upstream struct {
	srv  *mochi.Server
	addr string
	mu   sync.Mutex
	got  []string // "topic=payload" received by inline subscriptions
	once sync.Once
}

// startUpstream starts a broker on addr ("127.0.0.1:0" for any port) with
// an inline subscription to each of subs, made before it accepts clients.
func startUpstream(t testing.TB, addr string, subs ...string) *upstream {
	t.Helper()
	u := &upstream{srv: mochi.New(&mochi.Options{InlineClient: true, Logger: quiet})}
	if err := u.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	for i, f := range subs {
		if err := u.srv.Subscribe(f, i+1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
			if strings.HasPrefix(pk.TopicName, "$") {
				return // mochi's inline "#" sees $SYS
			}
			u.mu.Lock()
			u.got = append(u.got, pk.TopicName+"="+string(pk.Payload))
			u.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	var l *listeners.TCP
	for try := 0; ; try++ { // a restarted upstream may find its port in TIME_WAIT briefly
		l = listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
		err := u.srv.AddListener(l)
		if err == nil {
			break
		}
		if try == 50 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := u.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	u.addr = l.Address()
	t.Cleanup(u.close)
	return u
}

func (u *upstream) close() { u.once.Do(func() { _ = u.srv.Close() }) }

func (u *upstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.got...)
}

func newBus(t testing.TB) broker.Bus {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st, WriteThrough: true, Node: "n1", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bus.Close()
		_ = st.Close()
	})
	return bus
}

func startBridge(t *testing.T, bus broker.Bus, cfg Config) *Bridge {
	t.Helper()
	b, err := New(Options{Config: cfg, Bus: bus, Node: "n1", Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

// collect subscribes the bus to filter and returns what arrives.
func collect(t *testing.T, bus broker.Bus, filter string) func() []*broker.Envelope {
	t.Helper()
	var mu sync.Mutex
	var got []*broker.Envelope
	sub, err := bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{filter}, QoS: 2},
		func(_ context.Context, e *broker.Envelope) error {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []*broker.Envelope {
		mu.Lock()
		defer mu.Unlock()
		return append([]*broker.Envelope(nil), got...)
	}
}

func eventually(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitHealthy(t *testing.T, b *Bridge) {
	t.Helper()
	eventually(t, "bridge connected", 15*time.Second, func() bool { return b.Healthy() == nil })
}

func sorted(s []string) string {
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(s, ",")
}

func q(v byte) *byte { return &v }

func publish(t *testing.T, bus broker.Bus, topic, payload string, qos byte) {
	t.Helper()
	err := bus.Publish(context.Background(), &broker.Envelope{Topic: topic, Payload: []byte(payload), QoS: qos,
		Origin: broker.Origin{Protocol: broker.ProtoREST, ClientID: "test"}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIn(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0")
	bus := newBus(t)
	got := collect(t, bus, "up/#")
	// A retained upstream value is sent when the bridge subscribes, and
	// arrives retained.
	if err := up.srv.Publish("site1/sensors/r", []byte("kept"), true, 1); err != nil {
		t.Fatal(err)
	}
	b := startBridge(t, bus, Config{Name: "in", URL: "tcp://" + up.addr,
		In: []Rule{{Filter: "sensors/#", RemotePrefix: "site1/", LocalPrefix: "up/"}}})
	waitHealthy(t, b)
	if err := up.srv.Publish("site1/sensors/t", []byte("21.5"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := up.srv.Publish("other/sensors/t", []byte("no"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retained value on the bus", 5*time.Second, func() bool {
		r, _ := bus.Retained(context.Background(), "up/sensors/r")
		return len(r) == 1 && string(r[0].Payload) == "kept"
	})
	eventually(t, "message on the bus", 5*time.Second, func() bool { return len(got()) == 2 })
	e := got()[1]
	if e.Topic != "up/sensors/t" || string(e.Payload) != "21.5" || e.QoS != 1 {
		t.Fatalf("got %q %q qos %d", e.Topic, e.Payload, e.QoS)
	}
	if e.Origin.Protocol != broker.ProtoBridge || e.Origin.ClientID != "in" || e.Origin.Node != "n1" {
		t.Fatalf("origin %+v", e.Origin)
	}
}

func TestOut(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0", "remote/#")
	bus := newBus(t)
	b := startBridge(t, bus, Config{Name: "out", URL: "tcp://" + up.addr,
		Out: []Rule{{Filter: "cmd/#", LocalPrefix: "local/", RemotePrefix: "remote/", QoS: q(1)}}})
	waitHealthy(t, b)
	publish(t, bus, "local/cmd/x", "go", 1)
	publish(t, bus, "local/other", "no", 1)
	publish(t, bus, "local/cmd/y", "zero", 0)
	eventually(t, "messages upstream", 5*time.Second, func() bool { return len(up.received()) == 2 })
	// QoS 0 and QoS 1 take different paths through the bus: compare sorted.
	if got := sorted(up.received()); got != "remote/cmd/x=go,remote/cmd/y=zero" {
		t.Fatalf("upstream got %s", got)
	}
}

func TestNoLoop(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0", "#")
	bus := newBus(t)
	got := collect(t, bus, "#")
	b := startBridge(t, bus, Config{Name: "loop", URL: "tcp://" + up.addr,
		In: []Rule{{Filter: "#"}}, Out: []Rule{{Filter: "#"}}})
	waitHealthy(t, b)
	publish(t, bus, "a/b", "local", 1)
	if err := up.srv.Publish("c/d", []byte("remote"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both messages", 5*time.Second, func() bool { return len(got()) >= 2 && len(up.received()) >= 2 })
	time.Sleep(700 * time.Millisecond) // time for an echo or a loop to show
	var bt []string
	for _, e := range got() {
		bt = append(bt, e.Topic+"="+string(e.Payload))
	}
	if s := sorted(bt); s != "a/b=local,c/d=remote" {
		t.Fatalf("bus got %s", s)
	}
	if s := sorted(up.received()); s != "a/b=local,c/d=remote" {
		t.Fatalf("upstream got %s", s)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestUpstreamDownAtStart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	bus := newBus(t)
	b := startBridge(t, bus, Config{Name: "late", URL: "tcp://" + addr,
		Out: []Rule{{Filter: "#", LocalPrefix: "o/"}}})
	time.Sleep(200 * time.Millisecond) // a first connection attempt fails
	if err := b.Healthy(); err == nil {
		t.Fatal("healthy without an upstream")
	}
	for i := range 5 {
		publish(t, bus, fmt.Sprintf("o/m%d", i), "v", 1)
	}
	publish(t, bus, "o/lost", "qos0", 0)
	time.Sleep(300 * time.Millisecond)
	up := startUpstream(t, addr, "#")
	waitHealthy(t, b)
	qos1 := func() []string {
		// The QoS 0 one waits in memory behind the first QoS 1 one and
		// may be sent or not: only QoS >= 1 is promised.
		return slices.DeleteFunc(up.received(), func(s string) bool { return s == "lost=qos0" })
	}
	eventually(t, "queued messages upstream", 15*time.Second, func() bool { return len(qos1()) >= 5 })
	if s := strings.Join(qos1(), ","); s != "m0=v,m1=v,m2=v,m3=v,m4=v" {
		t.Fatalf("upstream got %s", s)
	}
}

func TestUpstreamRestart(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, "127.0.0.1:0")
	bus := newBus(t)
	got := collect(t, bus, "in/#")
	b := startBridge(t, bus, Config{Name: "restart", URL: "tcp://" + up.addr,
		In: []Rule{{Filter: "#", RemotePrefix: "hub/", LocalPrefix: "in/"}}, Out: []Rule{{Filter: "#", LocalPrefix: "out/", RemotePrefix: "site/"}}})
	waitHealthy(t, b)
	up.close()
	eventually(t, "bridge sees the upstream go", 10*time.Second, func() bool { return b.Healthy() != nil })
	publish(t, bus, "out/a", "1", 1)
	publish(t, bus, "out/b", "2", 2)
	up2 := startUpstream(t, up.addr, "site/#")
	waitHealthy(t, b)
	eventually(t, "messages after restart", 15*time.Second, func() bool { return len(up2.received()) >= 2 })
	if s := strings.Join(up2.received(), ","); s != "site/a=1,site/b=2" {
		t.Fatalf("upstream got %s", s)
	}
	// The bridge subscribed the new upstream again.
	if err := up2.srv.Publish("hub/x", []byte("back"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "in after restart", 5*time.Second, func() bool { return len(got()) == 1 })
}

func TestBridgesChain(t *testing.T) {
	t.Parallel()
	// Bridge a takes upstream A's "x/#" in; bridge b sends it on to B.
	upA := startUpstream(t, "127.0.0.1:0")
	upB := startUpstream(t, "127.0.0.1:0", "#")
	bus := newBus(t)
	a := startBridge(t, bus, Config{Name: "a", URL: "tcp://" + upA.addr, In: []Rule{{Filter: "x/#"}}})
	b := startBridge(t, bus, Config{Name: "b", URL: "tcp://" + upB.addr, Out: []Rule{{Filter: "x/#"}}})
	waitHealthy(t, a)
	waitHealthy(t, b)
	if err := upA.srv.Publish("x/1", []byte("hop"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "message through both bridges", 5*time.Second, func() bool { return len(upB.received()) == 1 })
}
