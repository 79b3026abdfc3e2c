package devices

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

type env struct {
	st  *store.Store
	bus *broker.Memory
	reg *Registry
}

func newEnv(t *testing.T, withBus bool) *env {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &env{st: st}
	cfg := Config{Store: st, Logger: log, Node: "n1"}
	if withBus {
		e.bus, err = broker.NewMemory(broker.MemoryConfig{Spool: st, Node: "n1", Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Bus = e.bus
	}
	e.reg, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.bus != nil {
			_ = e.bus.Close()
		}
		_ = st.Close()
	})
	return e
}

func TestNewNeedsStore(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Fatalf("New without store: %v", err)
	}
}

func TestAdd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if err := e.st.AddUser(ctx, "alice", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		d    store.Device
		pw   string
		err  error
	}{
		{"plain", store.Device{ID: "d1"}, "", nil},
		{"with login", store.Device{ID: "d2", Protocol: "coap", PSK: []byte("k")}, "pw2", nil},
		{"duplicate", store.Device{ID: "d1"}, "", store.ErrExists},
		{"user name taken", store.Device{ID: "alice"}, "pw", store.ErrExists},
		{"slash in id", store.Device{ID: "a/b"}, "", ErrInvalid},
		{"wildcard id", store.Device{ID: "+"}, "", ErrInvalid},
		{"empty id", store.Device{}, "", ErrInvalid},
		{"dollar id", store.Device{ID: "$x"}, "", ErrInvalid},
		{"long id", store.Device{ID: strings.Repeat("a", 129)}, "", ErrInvalid},
		{"bad protocol", store.Device{ID: "d3", Protocol: "zigbee"}, "", ErrInvalid},
	}
	for _, tt := range tests {
		err := e.reg.Add(ctx, tt.d, tt.pw)
		if tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
	d, err := e.reg.Get(ctx, "d1")
	if err != nil || d.Name != "d1" || d.Protocol != ProtocolMQTT || d.Online {
		t.Errorf("d1 = %+v, %v", d, err)
	}
	if u, err := e.st.GetUser(ctx, "d2"); err != nil || u.Role != adapters.RoleDevice {
		t.Errorf("d2 user = %+v, %v", u, err)
	}
	if _, err := e.st.GetUser(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("d1 has a user: %v", err)
	}
	if psk, err := e.st.DevicePSK(ctx, "d2"); err != nil || string(psk) != "k" {
		t.Errorf("psk %q %v", psk, err)
	}
	if _, err := e.reg.Get(ctx, "alice"); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("half-made device left behind: %v", err)
	}
	list, err := e.reg.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "d1" || list[1].ID != "d2" {
		t.Errorf("list %+v %v", list, err)
	}
}

func TestUpdateAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	if err := e.reg.Add(ctx, store.Device{ID: "d1", Metadata: map[string]string{"a": "1"}}, ""); err != nil {
		t.Fatal(err)
	}
	name, proto, pw := "Lamp", "xmpp", "pw"
	d, err := e.reg.Update(ctx, "d1", Patch{Name: &name, Protocol: &proto, Password: &pw, Metadata: map[string]string{"b": "2"}})
	if err != nil || d.Name != "Lamp" || d.Protocol != "xmpp" || d.Metadata["b"] != "2" || d.Metadata["a"] != "" {
		t.Fatalf("update = %+v, %v", d, err)
	}
	if role, err := e.st.VerifyPassword(ctx, "d1", "pw"); err != nil || role != adapters.RoleDevice {
		t.Fatalf("password set: %q %v", role, err)
	}
	pw2 := "pw2"
	if _, err := e.reg.Update(ctx, "d1", Patch{Password: &pw2}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.VerifyPassword(ctx, "d1", "pw2"); err != nil {
		t.Fatalf("password changed: %v", err)
	}
	bad := "smoke"
	if _, err := e.reg.Update(ctx, "d1", Patch{Protocol: &bad}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad protocol: %v", err)
	}
	empty := ""
	if _, err := e.reg.Update(ctx, "d1", Patch{Password: &empty}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := e.reg.Update(ctx, "nope", Patch{Name: &name}); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown: %v", err)
	}
	e.reg.DevicePresence(ctx, "d1", "xmpp", true, time.Now())
	if rs, _ := e.bus.Retained(ctx, PresenceTopic("d1")); len(rs) != 1 {
		t.Fatalf("retained presence: %d", len(rs))
	}
	if err := e.reg.Delete(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.GetUser(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("device user kept: %v", err)
	}
	if rs, _ := e.bus.Retained(ctx, PresenceTopic("d1")); len(rs) != 0 {
		t.Errorf("retained presence kept")
	}
	if err := e.reg.Delete(ctx, "d1"); !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("delete twice: %v", err)
	}
}

func TestPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	if err := e.reg.Add(ctx, store.Device{ID: "d1"}, ""); err != nil {
		t.Fatal(err)
	}
	got := make(chan *broker.Envelope, 8)
	sub, err := e.bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"$hub/devices/+/presence"}, QoS: 1},
		func(_ context.Context, en *broker.Envelope) error { got <- en; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e.reg.DevicePresence(ctx, "d1", "mqtt", true, t0)
	en := <-got
	var p Presence
	if err := json.Unmarshal(en.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if en.Topic != "$hub/devices/d1/presence" || !en.Retain || en.QoS != 1 || en.ContentType != "application/json" ||
		en.Origin.Protocol != broker.ProtoHub || p != (Presence{ID: "d1", Online: true, LastSeen: t0, Protocol: "mqtt"}) {
		t.Fatalf("presence envelope %+v %+v", en, p)
	}
	// An older event arriving late changes nothing; a newer one does.
	e.reg.DevicePresence(ctx, "d1", "mqtt", false, t0.Add(-time.Second))
	e.reg.DevicePresence(ctx, "d1", "mqtt", false, t0.Add(time.Second))
	en = <-got
	if err := json.Unmarshal(en.Payload, &p); err != nil || p.Online || !p.LastSeen.Equal(t0.Add(time.Second)) {
		t.Fatalf("second presence %+v %v", p, err)
	}
	d, _ := e.reg.Get(ctx, "d1")
	if d.Online || !d.LastSeen.Equal(t0.Add(time.Second)) {
		t.Errorf("stored presence %+v", d)
	}
	// Unknown devices are not announced.
	e.reg.DevicePresence(ctx, "ghost", "mqtt", true, time.Now())
	select {
	case en := <-got:
		t.Fatalf("presence for unknown device: %+v", en)
	case <-time.After(100 * time.Millisecond):
	}
}

// fakeDevice answers commands for id over the bus with reply (nil: never).
func fakeDevice(t *testing.T, e *env, id string, reply func(CommandRequest) []byte) {
	t.Helper()
	sub, err := e.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"devices/" + id + "/commands/+"}, QoS: 1},
		func(ctx context.Context, en *broker.Envelope) error {
			var req CommandRequest
			if err := json.Unmarshal(en.Payload, &req); err != nil {
				t.Errorf("payload %q: %v", en.Payload, err)
				return nil
			}
			if en.ResponseTopic != ResponseTopic(id, req.ID) || string(en.CorrelationData) != req.ID || en.Expiry.IsZero() {
				t.Errorf("command envelope %+v", en)
			}
			if out := reply(req); out != nil {
				return e.bus.Publish(ctx, &broker.Envelope{Topic: en.ResponseTopic, Payload: out, QoS: 1,
					Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: id}})
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func TestSendCommandOverBus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	for _, id := range []string{"on", "off", "mute"} {
		if err := e.reg.Add(ctx, store.Device{ID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	e.reg.DevicePresence(ctx, "on", "mqtt", true, time.Now())
	e.reg.DevicePresence(ctx, "mute", "mqtt", true, time.Now())
	fakeDevice(t, e, "on", func(r CommandRequest) []byte {
		if string(r.Params) == "null" {
			return []byte("plain text")
		}
		return r.Params
	})
	fakeDevice(t, e, "mute", func(CommandRequest) []byte { return nil })
	tests := []struct {
		name, dev, cmd, params string
		timeout                time.Duration
		want                   string
		err                    error
	}{
		{"json", "on", "set", `{ "a" : [1, 2] }`, time.Second, `{"a":[1,2]}`, nil},
		{"text wrapped", "on", "get", ``, time.Second, `"plain text"`, nil},
		{"unknown", "ghost", "set", `{}`, time.Second, "", ErrUnknownDevice},
		{"offline", "off", "set", `{}`, time.Minute, "", adapters.ErrDeviceOffline},
		{"timeout", "mute", "set", `{}`, 200 * time.Millisecond, "", context.DeadlineExceeded},
		{"bad params", "on", "set", `{"a":`, time.Second, "", ErrInvalid},
		{"bad name", "on", "a/b", `{}`, time.Second, "", ErrInvalid},
	}
	for _, tt := range tests {
		cctx, cancel := context.WithTimeout(ctx, tt.timeout)
		start := time.Now()
		got, err := e.reg.SendCommand(cctx, tt.dev, tt.cmd, json.RawMessage(tt.params))
		cancel()
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
			}
			if tt.err == adapters.ErrDeviceOffline && time.Since(start) > time.Second {
				t.Errorf("%s: took %v", tt.name, time.Since(start))
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}
	if n := e.bus.Stats().Subscriptions; n != 2 {
		t.Errorf("%d subscriptions left, want the 2 fake devices", n)
	}
}

// xmppCommander stands in for the XMPP adapter's Commander.
type xmppCommander struct {
	mu   sync.Mutex
	cmds []adapters.Command
}

func (c *xmppCommander) Protocol() string { return ProtocolXMPP }

func (c *xmppCommander) SendCommand(_ context.Context, cmd adapters.Command) (json.RawMessage, error) {
	c.mu.Lock()
	c.cmds = append(c.cmds, cmd)
	c.mu.Unlock()
	return json.RawMessage(`{"via":"xmpp"}`), nil
}

func TestCommanderSeam(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	if err := e.reg.Add(ctx, store.Device{ID: "bot", Protocol: ProtocolXMPP}, ""); err != nil {
		t.Fatal(err)
	}
	e.reg.DevicePresence(ctx, "bot", "xmpp", true, time.Now())
	c := &xmppCommander{}
	e.reg.RegisterCommander(c)
	got, err := e.reg.SendCommand(ctx, "bot", "ping", json.RawMessage(`{"x":1}`))
	if err != nil || string(got) != `{"via":"xmpp"}` {
		t.Fatalf("reply %s %v", got, err)
	}
	if len(c.cmds) != 1 || c.cmds[0].DeviceID != "bot" || c.cmds[0].Name != "ping" || string(c.cmds[0].Params) != `{"x":1}` || c.cmds[0].ID == "" {
		t.Fatalf("commander got %+v", c.cmds)
	}
}

// Without a bus (the offline CLI) CRUD and presence records work and
// commands say why they cannot.
func TestWithoutBus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if err := e.reg.Add(ctx, store.Device{ID: "d"}, "pw"); err != nil {
		t.Fatal(err)
	}
	e.reg.DevicePresence(ctx, "d", "mqtt", true, time.Now())
	if d, _ := e.reg.Get(ctx, "d"); !d.Online {
		t.Fatal("presence not stored")
	}
	if _, err := e.reg.SendCommand(ctx, "d", "x", nil); err == nil || !strings.Contains(err.Error(), "no bus") {
		t.Fatalf("command without bus: %v", err)
	}
	if err := e.reg.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
}

// A device left online by an earlier run is offline for commands, and
// ResetPresence records and announces that.
func TestResetPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	if err := e.reg.Add(ctx, store.Device{ID: "old"}, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetPresence(ctx, "old", true, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.SendCommand(ctx, "old", "x", nil); !errors.Is(err, adapters.ErrDeviceOffline) {
		t.Fatalf("stale online device: %v", err)
	}
	if err := e.reg.ResetPresence(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.reg.Get(ctx, "old"); d.Online {
		t.Error("still online after reset")
	}
	rs, _ := e.bus.Retained(ctx, PresenceTopic("old"))
	if len(rs) != 1 || !strings.Contains(string(rs[0].Payload), `"online":false`) {
		t.Errorf("presence after reset: %v", rs)
	}
}
