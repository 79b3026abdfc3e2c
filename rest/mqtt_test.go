package rest

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/mqtt"
	"github.com/hubsmith/hub/store"
)

// startMQTT adds the real MQTT adapter to h, reporting presence to the
// registry, and returns its address.
func startMQTT(t *testing.T, h *testHub) string {
	t.Helper()
	m, err := mqtt.New(mqtt.Config{Addr: "127.0.0.1:0", Bus: h.bus, Auth: h.auth, Sessions: h.st, Node: "test", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	m.SetPresenceSink(h.reg)
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Stop(ctx)
	})
	return m.Addrs()["mqtt"]
}

func waitOnline(t *testing.T, h *testHub, id string, online bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := h.reg.Get(context.Background(), id)
		if err == nil && d.Online == online {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s online=%v never became %v (%v)", id, d.Online, online, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An MQTT 5 device (paho.golang) answers a REST command on the response
// topic with the correlation data it was given; its connection and
// disconnection drive the presence the command path checks.
func TestCommandMQTT5Device(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	addr := startMQTT(t, h)
	ctx := context.Background()
	if err := h.reg.Add(ctx, store.Device{ID: "thermo", Protocol: "mqtt"}, "thermopw"); err != nil {
		t.Fatal(err)
	}
	if s, _, b := h.do("POST", "/api/v1/devices/thermo/commands/set", "", "application/json", `{"t":20}`); s != 503 {
		t.Fatalf("before connecting: %d %s, want 503", s, b)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// The handler only hands commands over; the test goroutine answers.
	cmds := make(chan *paho.Publish, 4)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case cmds <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ca, err := c.Connect(cctx, &paho.Connect{ClientID: "thermo", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "thermo", PasswordFlag: true, Password: []byte("thermopw")}); err != nil {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	if _, err := c.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/thermo/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	waitOnline(t, h, "thermo", true)
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		s, _, b := h.do("POST", "/api/v1/devices/thermo/commands/set?timeout=5s", "", "application/json", `{"t": 20}`)
		done <- result{s, b}
	}()
	p := recv(t, cmds, "the command")
	if p.Properties == nil || p.Properties.ResponseTopic == "" {
		t.Fatalf("command without response topic: %+v", p)
	}
	var req devices.CommandRequest
	if err := json.Unmarshal(p.Payload, &req); err != nil || string(p.Properties.CorrelationData) != req.ID ||
		p.Properties.ResponseTopic != devices.ResponseTopic("thermo", req.ID) {
		t.Fatalf("command %q, correlation %q, response topic %q: %v", p.Payload, p.Properties.CorrelationData, p.Properties.ResponseTopic, err)
	}
	reply := `{"ok":true,"params":` + string(req.Params) + `}`
	if _, err := c.Publish(cctx, &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: []byte(reply),
		Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData, ContentType: "application/json"}}); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if r := recv(t, done, "the command's answer"); r.status != 200 || r.body != `{"ok":true,"params":{"t":20}}` {
		t.Fatalf("command: %d %s", r.status, r.body)
	}
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	waitOnline(t, h, "thermo", false)
	if s, _, b := h.do("POST", "/api/v1/devices/thermo/commands/set", "", "application/json", `{}`); s != 503 {
		t.Fatalf("after disconnect: %d %s, want 503", s, b)
	}
	// The retained presence follows the store (just after it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _, b := h.do("GET", "/api/v1/topics/$hub/devices/thermo/presence", "", "", "")
		if s == 200 && strings.Contains(b, `"online":false`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence: %d %s", s, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An MQTT 3.1.1 device (paho.mqtt.golang) has no response topic property:
// it answers by the topic convention devices/{id}/responses/{REQ}.
func TestCommandMQTT311Device(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	addr := startMQTT(t, h)
	if err := h.reg.Add(context.Background(), store.Device{ID: "relay"}, "relaypw"); err != nil {
		t.Fatal(err)
	}
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("relay").
		SetUsername("relay").SetPassword("relaypw").SetProtocolVersion(4).SetAutoReconnect(false)
	c := paho3.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(250)
	cmds := make(chan []byte, 4)
	tok := c.Subscribe("devices/relay/commands/+", 1, func(_ paho3.Client, m paho3.Message) {
		select {
		case cmds <- m.Payload():
		default:
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	waitOnline(t, h, "relay", true)
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		s, _, b := h.do("POST", "/api/v1/devices/relay/commands/on?timeout=5s", "", "", "")
		done <- result{s, b}
	}()
	payload := recv(t, cmds, "the command")
	var req devices.CommandRequest
	if err := json.Unmarshal(payload, &req); err != nil || req.ID == "" || string(req.Params) != "null" {
		t.Fatalf("command %q: %v", payload, err)
	}
	if tok := c.Publish(devices.ResponseTopic("relay", req.ID), 1, false, "switched"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("reply: %v", tok.Error())
	}
	if r := recv(t, done, "the command's answer"); r.status != 200 || r.body != `"switched"` {
		t.Fatalf("command: %d %s", r.status, r.body)
	}
}
