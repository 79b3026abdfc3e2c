package rest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/hubsmith/hub/broker"
)

func publishOnBus(t *testing.T, h *testHub, e *broker.Envelope) {
	t.Helper()
	if err := h.bus.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// waitSubs waits until the bus holds n subscriptions.
func waitSubs(t *testing.T, h *testHub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.bus.Stats().Subscriptions != n {
		if time.Now().After(deadline) {
			t.Fatalf("bus has %d subscriptions, want %d", h.bus.Stats().Subscriptions, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSSEReceivesBusPublish(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	publishOnBus(t, h, &broker.Envelope{Topic: "sensors/a/temp", Payload: []byte("20"), Retain: true, QoS: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, resp := h.sseStream(ctx, "filter=sensors/%2B/temp&filter=alarms/%23&qos=1", "")
	if events == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The retained value comes first.
	ev := nextMessage(t, events)
	var got EnvelopeJSON
	if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
		t.Fatal(err)
	}
	if got.Topic != "sensors/a/temp" || got.Payload != "20" || !got.Retain || got.ID != ev.id {
		t.Fatalf("retained event %+v", got)
	}
	// Then live envelopes, with their origin, text or base64 payloads and
	// the delivery QoS min(publish, subscription).
	tests := []struct {
		e        broker.Envelope
		payload  string
		encoding string
		qos      byte
	}{
		{broker.Envelope{Topic: "sensors/b/temp", Payload: []byte(`{"v":1}`), ContentType: "application/json", QoS: 2,
			Origin: broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "c1", Principal: "alice"}}, `{"v":1}`, "", 1},
		{broker.Envelope{Topic: "alarms/x/y", Payload: []byte{0, 1, 2, 255}, ContentType: "application/octet-stream"},
			base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255}), "base64", 0},
	}
	for _, tt := range tests {
		e := tt.e
		publishOnBus(t, h, &e)
		ev := nextMessage(t, events)
		var got EnvelopeJSON
		if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != e.ID || ev.id != e.ID || got.Topic != e.Topic || got.Payload != tt.payload ||
			got.PayloadEncoding != tt.encoding || got.QoS != tt.qos || got.ContentType != e.ContentType ||
			got.Origin.Protocol != e.Origin.Protocol || got.Origin.ClientID != e.Origin.ClientID ||
			got.Origin.Principal != e.Origin.Principal || got.Time.IsZero() {
			t.Errorf("event %+v for %+v", got, e)
		}
	}
	// Not matching: nothing arrives (a heartbeat comment does).
	publishOnBus(t, h, &broker.Envelope{Topic: "other"})
	deadline := time.After(600 * time.Millisecond)
	sawHeartbeat := false
wait:
	for {
		select {
		case ev := <-events:
			if ev.event == "message" {
				t.Fatalf("unexpected event %+v", ev)
			}
			sawHeartbeat = true
		case <-deadline:
			break wait
		}
	}
	if !sawHeartbeat {
		t.Error("no heartbeat comment within 600ms at a 200ms interval")
	}
}

// When the client leaves, the bus subscription and the handler goroutine
// go away.
func TestSSEClientLeavesNoLeak(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	// Registered first, so it runs after the hub's own cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	h := startHub(t, hubOpts{})
	base := h.bus.Stats().Subscriptions
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := h.sseStream(ctx, "filter=x/%23", "")
	waitSubs(t, h, base+1)
	cancel()
	for range events {
	}
	waitSubs(t, h, base)
	http.DefaultClient.CloseIdleConnections()
	h.httpc.CloseIdleConnections()
}

func TestSubscribeRefusals(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	tests := []struct{ query, msg string }{
		{"", "filter"},
		{"filter=a/%23/b", "invalid topic filter"},
		{"filter=a&qos=5", "qos"},
		{"filter=a&retained=perhaps", "retained"},
	}
	for _, tt := range tests {
		s, _, b := h.do("GET", "/api/v1/subscribe?"+tt.query, "", "", "")
		if s != 400 || !strings.Contains(errorOf(t, b), tt.msg) {
			t.Errorf("%q: %d %s", tt.query, s, b)
		}
	}
}

func TestWebSocketReceivesBusPublish(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	publishOnBus(t, h, &broker.Envelope{Topic: "ws/retained", Payload: []byte("r"), Retain: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := h.bus.Stats().Subscriptions
	wsURL := "ws" + strings.TrimPrefix(h.base, "http") + "/api/v1/subscribe?filter=ws/%23"
	conn, resp, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer conn.CloseNow()
	read := func() EnvelopeJSON {
		t.Helper()
		typ, data, err := conn.Read(ctx)
		if err != nil || typ != websocket.MessageText {
			t.Fatalf("read: %v %v", typ, err)
		}
		var got EnvelopeJSON
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("message %q: %v", data, err)
		}
		return got
	}
	if got := read(); got.Topic != "ws/retained" || got.Payload != "r" || !got.Retain {
		t.Fatalf("retained message %+v", got)
	}
	e := &broker.Envelope{Topic: "ws/live", Payload: []byte("hello"), ContentType: "text/plain", QoS: 1,
		Origin: broker.Origin{Protocol: broker.ProtoCoAP, ClientID: "dev1"}}
	publishOnBus(t, h, e)
	if got := read(); got.ID != e.ID || got.Topic != "ws/live" || got.Payload != "hello" || got.QoS != 1 || got.Origin.Protocol != "coap" {
		t.Fatalf("live message %+v", got)
	}
	if err := conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Logf("close: %v", err)
	}
	waitSubs(t, h, base)
}

// Stop ends open streams instead of waiting for clients to leave.
func TestStopEndsStreams(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, _ := h.sseStream(ctx, "filter=%23", "")
	wsURL := "ws" + strings.TrimPrefix(h.base, "http") + "/api/v1/subscribe?filter=%23"
	conn, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	go func() {
		for {
			if _, _, err := conn.Read(ctx); err != nil {
				return
			}
		}
	}()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	start := time.Now()
	if err := h.a.Stop(sctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stop took %v", d)
	}
	for range events {
	}
	if err := h.a.Healthy(); err == nil {
		t.Error("healthy after stop")
	}
}
