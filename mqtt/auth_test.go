package mqtt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

func TestConnectRefusals(t *testing.T) {
	t.Parallel()
	loop := newHub(t, nil)
	open := newHub(t, func(c *Config) { c.Addr = "0.0.0.0:0" })
	anon := newHub(t, func(c *Config) { c.Addr = "0.0.0.0:0"; c.AllowAnonymous = true })
	port := func(h *testHub) string { _, p, _ := net.SplitHostPort(h.addr); return "127.0.0.1:" + p }
	for _, tc := range []struct {
		name       string
		addr       string
		user, pass string
		v3, v5     byte // 0 = accepted
	}{
		{"wrong password", loop.addr, "alice", "wrong", 4, 0x86},
		{"unknown user", loop.addr, "mallory", "x", 4, 0x86},
		{"good password", loop.addr, "alice", "alicepw", 0, 0},
		{"anonymous on loopback", loop.addr, "", "", 0, 0},
		{"anonymous on a public listener", port(open), "", "", 5, 0x87},
		{"user on a public listener", port(open), "alice", "alicepw", 0, 0},
		{"anonymous allowed explicitly", port(anon), "", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialV3(t, tc.addr, "v3-"+strings.ReplaceAll(tc.name, " ", "-"), tc.user, tc.pass, true)
			if tc.v3 == 0 && err != nil {
				t.Fatalf("v3: %v", err)
			}
			if tc.v3 != 0 {
				want := pahopackets.ConnErrors[tc.v3]
				if !errors.Is(err, want) {
					t.Fatalf("v3: got %v, want %v", err, want)
				}
			}
			cp := &paho.Connect{ClientID: "v5-" + strings.ReplaceAll(tc.name, " ", "-"), CleanStart: true, KeepAlive: 30}
			if tc.user != "" {
				cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = tc.user, true, []byte(tc.pass), true
			}
			_, ca, err := dialV5(t, tc.addr, cp)
			if tc.v5 == 0 && err != nil {
				t.Fatalf("v5: %v", err)
			}
			if tc.v5 != 0 && (ca == nil || ca.ReasonCode != tc.v5) {
				t.Fatalf("v5: connack %+v err %v, want reason %#x", ca, err, tc.v5)
			}
		})
	}
}

func TestACL(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ch := busSub(t, h.bus, "#")
	hubCh := busSub(t, h.bus, "$hub/#")
	alice := mustV5(t, h.addr, "acl-alice", "alice", "alicepw")
	sensor := mustV5(t, h.addr, "acl-sensor", "sensor1", "sensor1pw")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, tc := range []struct {
		name   string
		c      *v5client
		topic  string
		reason byte
	}{
		{"user on a $hub topic", alice, "$hub/secret", 0x87},
		{"device outside its tree", sensor, "devices/other/temp", 0x87},
		{"device in its tree", sensor, "devices/sensor1/temp", 0},
		{"user on a plain topic", alice, "room/1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, err := tc.c.c.Publish(ctx, &paho.Publish{Topic: tc.topic, QoS: 1, Payload: []byte("x")})
			if tc.reason == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if e := nextEnv(t, ch); e.Topic != tc.topic {
					t.Fatalf("bus got %q", e.Topic)
				}
				return
			}
			if pr == nil || pr.ReasonCode != tc.reason {
				t.Fatalf("publish: %+v %v, want reason %#x", pr, err, tc.reason)
			}
		})
	}
	select {
	case e := <-hubCh:
		t.Fatalf("denied publish reached the bus: %q", e.Topic)
	case <-time.After(50 * time.Millisecond):
	}
	sa, err := alice.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$hub/#", QoS: 1}, {Topic: "$share/g/$hub/x", QoS: 1}, {Topic: "room/#", QoS: 1}}})
	if sa == nil || !bytes.Equal(sa.Reasons, []byte{0x87, 0x87, 1}) {
		t.Fatalf("suback %+v %v", sa, err)
	}
	// A will on a topic the client may not publish to is refused at CONNECT.
	cp := &paho.Connect{ClientID: "acl-will", CleanStart: true, Username: "sensor1", UsernameFlag: true,
		Password: []byte("sensor1pw"), PasswordFlag: true, WillMessage: &paho.WillMessage{Topic: "elsewhere", Payload: []byte("x")}}
	if _, ca, err := dialV5(t, h.addr, cp); ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("will: %+v %v", ca, err)
	}
}

// rawConn is a socket that speaks MQTT by hand.
type rawConn struct {
	net.Conn
	t testing.TB
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	return &rawConn{Conn: c, t: t}
}

func (r *rawConn) send(pk packets.Packet) {
	r.t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.Write(buf.Bytes()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) connect(version byte) {
	r.t.Helper()
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "raw"}})
	b := make([]byte, 2)
	if _, err := io.ReadFull(r, b); err != nil || b[0] != 0x20 {
		r.t.Fatalf("connack: % x %v", b, err)
	}
	rest := make([]byte, b[1])
	if _, err := io.ReadFull(r, rest); err != nil || rest[1] != 0 {
		r.t.Fatalf("connack: % x %v", rest, err)
	}
}

// rest reads until the server closes the connection.
func (r *rawConn) rest() []byte {
	r.t.Helper()
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		r.t.Fatalf("server did not close the connection: %v", err)
	}
	return b
}

func TestWildcardPublishRefused(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ch := busSub(t, h.bus, "#")
	for _, v := range []byte{4, 5} {
		r := dialRaw(t, h.addr)
		r.connect(v)
		r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: v,
			TopicName: "a/#", PacketID: 7, Payload: []byte("x")})
		got := r.rest()
		if v == 5 && (len(got) < 3 || got[0] != 0xe0 || got[2] != 0x82) {
			t.Fatalf("v5: got % x, want DISCONNECT 0x82", got)
		}
		if v == 4 && len(got) != 0 {
			t.Fatalf("v3: got % x, want the connection closed", got)
		}
	}
	select {
	case e := <-ch:
		t.Fatalf("bus got %q", e.Topic)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestGarbageClosesConnection(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h := newHub(t, func(c *Config) { c.Registerer = reg; c.MaxPacketSize = 1024 })
	for _, tc := range []struct {
		name    string
		connect bool
		bytes   []byte
	}{
		{"http request", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"bad remaining length", false, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{"connect with a bad protocol name", false, []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'X', 'X', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00}},
		{"reserved packet type after connect", true, []byte{0x00, 0x00}},
		{"truncated publish after connect", true, []byte{0x30, 0x05, 0x00, 0x09, 'a'}},
		{"oversized publish after connect", true, append([]byte{0x30, 0x80, 0x10}, make([]byte, 2048)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, h.addr)
			if tc.connect {
				r.connect(4)
			}
			if _, err := r.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			if tc.name == "truncated publish after connect" {
				_ = r.Conn.(*net.TCPConn).CloseWrite()
			}
			r.rest()
		})
	}
	// The broker still serves.
	c := mustV3(t, h.addr, "after-garbage", "", "", true)
	c.sub(t, "ok", 0)
	waitFor(t, func() bool { return h.a.metrics.malformed.Load() >= 4 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["hub_mqtt_malformed_total"] < 4 || got["hub_mqtt_clients_connected"] != 1 || got["hub_mqtt_bytes_received_total"] == 0 {
		t.Fatalf("metrics %v", got)
	}
}

func TestBusStorageErrorRefusesPublish(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ctx := context.Background()
	// A detached durable subscriber makes QoS 1 publishes on x/# need the
	// store; closing the store makes them fail with broker.ErrStorage.
	d, err := h.bus.Subscribe(ctx, broker.SubscribeOptions{ID: "offline", Filters: []string{"x/#"}, QoS: 1, Durable: true},
		func(context.Context, *broker.Envelope) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	v5 := mustV5(t, h.addr, "st-v5", "", "")
	v3 := mustV3(t, h.addr, "st-v3", "", "", true)
	local := mustV3(t, h.addr, "st-local", "", "", true)
	local.sub(t, "x/#", 1)
	if err := h.st.Close(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for _, qos := range []byte{1, 2} {
		pr, err := v5.c.Publish(cctx, &paho.Publish{Topic: "x/1", QoS: qos, Payload: []byte("x")})
		if pr == nil || pr.ReasonCode != 0x97 {
			t.Fatalf("v5 qos %d: %+v %v, want reason 0x97", qos, pr, err)
		}
	}
	tok := v3.c.Publish("x/1", 1, false, "x")
	tok.WaitTimeout(wait)
	waitFor(t, func() bool { return !v3.c.IsConnectionOpen() })
	local.none(t, 50*time.Millisecond) // refused means not delivered either
	if h.a.metrics.busErrors.Load() < 3 {
		t.Fatalf("bus errors %d", h.a.metrics.busErrors.Load())
	}
	// Other tests' cleanup closes the store again; reopen it for that.
	h.a.Stop(ctx)
	h.bus.Close()
	h.a = nil
}

type presenceLog struct {
	mu     sync.Mutex
	events []string
}

func (p *presenceLog) DevicePresence(_ context.Context, id, proto string, online bool, _ time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := "off"
	if online {
		s = "on"
	}
	p.events = append(p.events, id+"/"+proto+"/"+s)
}

func (p *presenceLog) get() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.events, " ")
}

func TestDevicePresence(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	log := &presenceLog{}
	h.a.SetPresenceSink(log)
	var _ adapters.PresenceSource = h.a

	c := mustV3(t, h.addr, "dev", "sensor1", "sensor1pw", true)
	waitFor(t, func() bool { return log.get() == "sensor1/mqtt/on" })
	// A user is not a device.
	u := mustV3(t, h.addr, "user", "alice", "alicepw", true)
	u.c.Disconnect(0)
	// The same client id taking over its session is not going offline.
	c2 := mustV3(t, h.addr, "dev", "sensor1", "sensor1pw", true)
	waitFor(t, func() bool { return !c.c.IsConnectionOpen() })
	time.Sleep(50 * time.Millisecond)
	if got := log.get(); got != "sensor1/mqtt/on" && got != "sensor1/mqtt/on sensor1/mqtt/on" {
		t.Fatalf("after takeover: %q", got)
	}
	c2.c.Disconnect(0)
	waitFor(t, func() bool { return strings.HasSuffix(log.get(), "sensor1/mqtt/off") })

	// A device that stops talking is dropped after 1.5 keepalives.
	r := dialRaw(t, h.addr)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 1,
			ClientIdentifier: "silent", UsernameFlag: true, Username: []byte("sensor1"), PasswordFlag: true, Password: []byte("sensor1pw")}})
	start := time.Now()
	waitFor(t, func() bool { return strings.HasSuffix(log.get(), "on") })
	waitFor(t, func() bool { return strings.HasSuffix(log.get(), "off") })
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("keepalive timeout took %v", d)
	}
}

func TestMaxKeepalive(t *testing.T) {
	t.Parallel()
	h := newHub(t, func(c *Config) { c.MaxKeepalive = 20 })
	// MQTT 5: told the server keep alive.
	_, ca, err := dialV5(t, h.addr, &paho.Connect{ClientID: "ka5", CleanStart: true, KeepAlive: 0})
	if err != nil {
		t.Fatal(err)
	}
	if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 20 {
		t.Fatalf("connack properties %+v", ca.Properties)
	}
	// MQTT 3.1.1: refused above the maximum, accepted within it.
	o := pahov3.NewClientOptions().AddBroker("tcp://" + h.addr).SetClientID("ka3").SetKeepAlive(60 * time.Second).SetAutoReconnect(false)
	c := pahov3.NewClient(o)
	tok := c.Connect()
	tok.WaitTimeout(wait)
	if !errors.Is(tok.Error(), pahopackets.ErrorRefusedIDRejected) {
		t.Fatalf("keepalive 60: %v", tok.Error())
	}
	c = pahov3.NewClient(o.SetClientID("ka3ok").SetKeepAlive(10 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("keepalive 10: %v", tok.Error())
	}
	c.Disconnect(0)
}

func TestACLRuleChangeTakesEffect(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	ctx := context.Background()
	if err := h.st.SetACL(ctx, "alice", []adapters.ACLRule{{Action: "publish", Filter: "room/secret", Allow: false}}); err != nil {
		t.Fatal(err)
	}
	alice := mustV5(t, h.addr, "rule-alice", "alice", "alicepw")
	pub := func() byte {
		cctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		pr, err := alice.c.Publish(cctx, &paho.Publish{Topic: "room/secret", QoS: 1, Payload: []byte("x")})
		if pr == nil {
			t.Fatal(err)
		}
		return pr.ReasonCode
	}
	if rc := pub(); rc != 0x87 {
		t.Fatalf("denied by rule: reason %#x", rc)
	}
	// Another principal's decision is its own.
	admin := mustV5(t, h.addr, "rule-admin", "admin", "adminpw")
	if _, err := admin.c.Publish(ctx, &paho.Publish{Topic: "room/secret", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatalf("admin: %v", err)
	}
	// A changed rule takes effect once the cached decision expires.
	if err := h.st.SetACL(ctx, "alice", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return pub() == 0 })
}
