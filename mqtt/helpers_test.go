package mqtt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

const wait = 5 * time.Second

// testHub is a store, a bus over it and an MQTT adapter on 127.0.0.1:0.
type testHub struct {
	t     testing.TB
	dir   string
	st    *store.Store
	bus   *broker.Memory
	a     *Adapter
	addr  string
	cfg   Config
	tweak func(*Config)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHub starts a hub with users admin (admin), alice (user) and the
// device sensor1.
func newHub(t testing.TB, tweak func(*Config)) *testHub {
	t.Helper()
	h := &testHub{t: t, dir: t.TempDir(), tweak: tweak}
	ctx := context.Background()
	st, err := store.Open(ctx, h.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, pw, role string }{
		{"admin", "adminpw", adapters.RoleAdmin},
		{"alice", "alicepw", adapters.RoleUser},
		{"sensor1", "sensor1pw", adapters.RoleDevice},
	} {
		if err := st.AddUser(ctx, u.name, u.pw, u.role); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	h.open()
	t.Cleanup(h.close)
	return h
}

// open opens the store and bus and starts the adapter.
func (h *testHub) open() {
	h.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	// As in a hub: every QoS >= 1 envelope for the feed goes through the store.
	bus, err := broker.NewMemory(broker.MemoryConfig{Spool: st, Node: "test-node", Logger: quietLogger(), WriteThrough: true})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := Config{
		Addr:     "127.0.0.1:0",
		Bus:      bus,
		Auth:     adapters.NewAuth(st, nil),
		Sessions: st,
		Node:     "test-node",
		Logger:   quietLogger(),
	}
	if h.tweak != nil {
		h.tweak(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	h.st, h.bus, h.a, h.cfg = st, bus, a, cfg
	h.addr = a.Addrs()["mqtt"]
}

// close stops the adapter, the bus and the store.
func (h *testHub) close() {
	if h.a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.a.Stop(ctx); err != nil {
		h.t.Error(err)
	}
	if err := h.bus.Close(); err != nil {
		h.t.Error(err)
	}
	if err := h.st.Close(); err != nil {
		h.t.Error(err)
	}
	h.a = nil
}

// restart stops everything and starts it again on the same data dir.
func (h *testHub) restart() {
	h.t.Helper()
	h.close()
	h.open()
}

// v3 connects a paho 3.1.1 client; msgs receives what it gets.
type v3client struct {
	c    pahov3.Client
	msgs chan pahov3.Message
}

func dialV3(t testing.TB, addr, id, user, pass string, clean bool) (*v3client, error) {
	t.Helper()
	vc := &v3client{msgs: make(chan pahov3.Message, 1024)}
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetOrderMatters(true).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { vc.msgs <- m })
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	vc.c = pahov3.NewClient(o)
	tok := vc.c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, fmt.Errorf("connect %s: timeout", id)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { vc.c.Disconnect(0) })
	return vc, nil
}

func mustV3(t testing.TB, addr, id, user, pass string, clean bool) *v3client {
	t.Helper()
	c, err := dialV3(t, addr, id, user, pass, clean)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *v3client) sub(t testing.TB, filter string, qos byte) {
	t.Helper()
	tok := c.c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe %q: %v", filter, tok.Error())
	}
}

func (c *v3client) pub(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", topic, tok.Error())
	}
}

func (c *v3client) next(t testing.TB) pahov3.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

func (c *v3client) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.msgs:
		t.Fatalf("unexpected message on %q: %q", m.Topic(), m.Payload())
	case <-time.After(d):
	}
}

// v5client is a paho.golang MQTT 5 client.
type v5client struct {
	c    *paho.Client
	msgs chan *paho.Publish
	disc chan *paho.Disconnect
}

func dialV5(t testing.TB, addr string, cp *paho.Connect) (*v5client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, nil, err
	}
	vc := &v5client{msgs: make(chan *paho.Publish, 1024), disc: make(chan *paho.Disconnect, 1)}
	vc.c = paho.NewClient(paho.ClientConfig{
		ClientID: cp.ClientID,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			vc.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case vc.disc <- d:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := vc.c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			_ = vc.c.Disconnect(&paho.Disconnect{})
			<-vc.c.Done()
		})
	})
	return vc, ca, nil
}

func mustV5(t testing.TB, addr, id, user, pass string) *v5client {
	t.Helper()
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	c, _, err := dialV5(t, addr, cp)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *v5client) sub(t testing.TB, filter string, qos byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		t.Fatalf("subscribe %q: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		t.Fatalf("subscribe %q: reasons %v", filter, sa.Reasons)
	}
}

func (c *v5client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

// busSub subscribes to the bus and returns the channel of envelopes.
func busSub(t testing.TB, bus broker.Bus, filter string) <-chan *broker.Envelope {
	t.Helper()
	ch := make(chan *broker.Envelope, 1024)
	s, err := bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{filter}, QoS: 2},
		func(_ context.Context, e *broker.Envelope) error {
			ch <- e
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Unsubscribe() })
	return ch
}

func nextEnv(t testing.TB, ch <-chan *broker.Envelope) *broker.Envelope {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(wait):
		t.Fatal("no envelope")
		return nil
	}
}

// queued returns the length of a client's durable session queue.
func (h *testHub) queued(clientID string) int {
	n, err := h.st.QueueLen(context.Background(), subscriberID(clientID))
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// durable reports whether the bus stores a session for clientID.
func (h *testHub) durable(clientID string) bool {
	ds, err := h.st.LoadSubscriptions(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == subscriberID(clientID) {
			return true
		}
	}
	return false
}

// detached reports whether a client's session has no connection.
func (h *testHub) detached(clientID string) bool {
	h.a.smu.Lock()
	s := h.a.sessions[clientID]
	h.a.smu.Unlock()
	return s == nil || s.conn() == nil
}
