package rest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

func TestDeviceCRUD(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	body := `{"id":"sensor1","name":"Hall sensor","protocol":"coap","metadata":{"room":"hall"},"password":"sensor1pw","psk":"73656372657431"}`
	s, hdr, b := h.do("POST", "/api/v1/devices", "", "application/json", body)
	var d store.Device
	if s != 201 || json.Unmarshal([]byte(b), &d) != nil || d.ID != "sensor1" || d.Protocol != "coap" || d.Metadata["room"] != "hall" || d.Online {
		t.Fatalf("add: %d %s", s, b)
	}
	if hdr.Get("Location") != "/api/v1/devices/sensor1" {
		t.Errorf("Location %q", hdr.Get("Location"))
	}
	if strings.Contains(b, "psk") || strings.Contains(b, "sensor1pw") {
		t.Errorf("device JSON shows credentials: %s", b)
	}
	ctx := context.Background()
	if psk, err := h.st.DevicePSK(ctx, "sensor1"); err != nil || string(psk) != "secret1" {
		t.Errorf("psk %q %v", psk, err)
	}
	// The password made a device login.
	if p, err := h.auth.Authenticate(ctx, "sensor1", "sensor1pw", adapters.AnonymousRefused); err != nil || p.Role != "device" {
		t.Errorf("device login: %+v %v", p, err)
	}
	if s, _, b := h.do("POST", "/api/v1/devices", "", "application/json", body); s != 409 {
		t.Errorf("add twice: %d %s", s, b)
	}
	for _, tt := range []struct{ body, msg string }{
		{`{"id":"a/b"}`, "id"},
		{`{"id":"x","protocol":"zigbee"}`, "protocol"},
		{`{"id":"x","psk":"zz"}`, "psk"},
		{`{"name":"no id"}`, "id: required"},
		{`{"id":"x","metadata":{"a":1}}`, "field metadata: expected string"},
		{`{"id":"x","colour":"red"}`, `unknown field "colour"`},
		{`{"id":`, "invalid JSON"},
	} {
		s, _, b := h.do("POST", "/api/v1/devices", "", "application/json", tt.body)
		if s != 400 || !strings.Contains(errorOf(t, b), tt.msg) {
			t.Errorf("add %s: %d %s, want 400 saying %q", tt.body, s, b, tt.msg)
		}
	}
	s, _, b = h.do("PATCH", "/api/v1/devices/sensor1", "", "application/json", `{"name":"Porch","metadata":{"room":"porch"},"password":"newpw"}`)
	if s != 200 || json.Unmarshal([]byte(b), &d) != nil || d.Name != "Porch" || d.Metadata["room"] != "porch" || d.Protocol != "coap" {
		t.Fatalf("patch: %d %s", s, b)
	}
	if _, err := h.auth.Authenticate(ctx, "sensor1", "newpw", adapters.AnonymousRefused); err != nil {
		t.Errorf("new password: %v", err)
	}
	if s, _, _ := h.do("PATCH", "/api/v1/devices/nope", "", "application/json", `{"name":"x"}`); s != 404 {
		t.Errorf("patch unknown: %d", s)
	}
	if s, _, _ := h.do("PATCH", "/api/v1/devices/sensor1", "", "application/json", `{"protocol":"smoke"}`); s != 400 {
		t.Errorf("patch bad protocol: %d", s)
	}
	s, _, b = h.do("GET", "/api/v1/devices", "", "", "")
	var list []store.Device
	if s != 200 || json.Unmarshal([]byte(b), &list) != nil || len(list) != 1 || list[0].Name != "Porch" {
		t.Fatalf("list: %d %s", s, b)
	}
	if s, _, _ := h.do("DELETE", "/api/v1/devices/sensor1", "", "", ""); s != 204 {
		t.Fatalf("delete: %d", s)
	}
	if s, _, _ := h.do("GET", "/api/v1/devices/sensor1", "", "", ""); s != 404 {
		t.Fatalf("get after delete: %d", s)
	}
	if _, err := h.auth.Authenticate(ctx, "sensor1", "newpw", adapters.AnonymousRefused); err == nil {
		t.Error("deleted device still logs in")
	}
	if s, _, b := h.do("GET", "/api/v1/devices", "", "", ""); s != 200 || strings.TrimSpace(b) != "[]" {
		t.Errorf("empty list: %d %s", s, b)
	}
}

func TestDevicePresenceShown(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ctx := context.Background()
	if err := h.reg.Add(ctx, store.Device{ID: "lamp"}, ""); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	h.reg.DevicePresence(ctx, "lamp", "mqtt", true, at)
	s, _, b := h.do("GET", "/api/v1/devices/lamp", "", "", "")
	var d store.Device
	if s != 200 || json.Unmarshal([]byte(b), &d) != nil || !d.Online || !d.LastSeen.Equal(at) {
		t.Fatalf("device: %d %s", s, b)
	}
	s, hdr, b := h.do("GET", "/api/v1/topics/$hub/devices/lamp/presence", "", "", "")
	var p devices.Presence
	if s != 200 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(b), &p) != nil ||
		p.ID != "lamp" || !p.Online || p.Protocol != "mqtt" || !p.LastSeen.Equal(at) {
		t.Fatalf("presence topic: %d %s", s, b)
	}
}

// fakeBusDevice answers every command on devices/{id}/commands/+ like a
// device would: on the envelope's response topic, with reply(request).
func fakeBusDevice(t *testing.T, h *testHub, id string, reply func(req devices.CommandRequest, name string) []byte) {
	t.Helper()
	sub, err := h.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"devices/" + id + "/commands/+"}, QoS: 1},
		func(ctx context.Context, e *broker.Envelope) error {
			var req devices.CommandRequest
			if err := json.Unmarshal(e.Payload, &req); err != nil {
				t.Errorf("command payload %q: %v", e.Payload, err)
				return nil
			}
			if e.ResponseTopic != devices.ResponseTopic(id, req.ID) || string(e.CorrelationData) != req.ID || e.ContentType != "application/json" {
				t.Errorf("command envelope %+v", e)
			}
			name := e.Topic[strings.LastIndexByte(e.Topic, '/')+1:]
			out := reply(req, name)
			if out == nil {
				return nil
			}
			return h.bus.Publish(ctx, &broker.Envelope{Topic: e.ResponseTopic, Payload: out, QoS: 1, CorrelationData: e.CorrelationData,
				Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: id}})
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

func TestCommandOverBus(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	ctx := context.Background()
	for _, id := range []string{"online1", "offline1", "silent1"} {
		if err := h.reg.Add(ctx, store.Device{ID: id}, ""); err != nil {
			t.Fatal(err)
		}
	}
	h.reg.DevicePresence(ctx, "online1", "mqtt", true, time.Now())
	h.reg.DevicePresence(ctx, "silent1", "mqtt", true, time.Now())
	fakeBusDevice(t, h, "online1", func(req devices.CommandRequest, name string) []byte {
		switch name {
		case "echo":
			return req.Params
		case "text":
			return []byte("done")
		}
		return []byte(`{"error":"unknown"}`)
	})
	fakeBusDevice(t, h, "silent1", func(devices.CommandRequest, string) []byte { return nil })
	tests := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"json reply", "/api/v1/devices/online1/commands/echo?timeout=5s", `{"level": 3}`, 200, `{"level":3}`},
		{"no params", "/api/v1/devices/online1/commands/echo", ``, 200, `null`},
		{"text reply", "/api/v1/devices/online1/commands/text?timeout=2", `[]`, 200, `"done"`},
		{"unknown device", "/api/v1/devices/ghost/commands/echo", `{}`, 404, "unknown device"},
		{"offline", "/api/v1/devices/offline1/commands/echo?timeout=30s", `{}`, 503, "device offline"},
		{"timeout", "/api/v1/devices/silent1/commands/echo?timeout=300ms", `{}`, 504, "no reply"},
		{"bad params", "/api/v1/devices/online1/commands/echo", `{"level":`, 400, "invalid JSON"},
		{"bad timeout", "/api/v1/devices/online1/commands/echo?timeout=soon", `{}`, 400, "timeout"},
		{"huge timeout", "/api/v1/devices/online1/commands/echo?timeout=1h", `{}`, 400, "at most"},
		{"bad name", "/api/v1/devices/online1/commands/a.b+c", `{}`, 400, "command name"},
	}
	for _, tt := range tests {
		start := time.Now()
		s, hdr, b := h.do("POST", tt.path, "", "application/json", tt.body)
		if s != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, s, b, tt.status)
			continue
		}
		if s == 200 {
			if b != tt.want || hdr.Get("Content-Type") != "application/json" {
				t.Errorf("%s: reply %q (%s), want %q", tt.name, b, hdr.Get("Content-Type"), tt.want)
			}
		} else if msg := errorOf(t, b); !strings.Contains(msg, tt.want) {
			t.Errorf("%s: message %q does not say %q", tt.name, msg, tt.want)
		}
		if tt.status == 503 && time.Since(start) > time.Second {
			t.Errorf("offline answer took %v, want at once", time.Since(start))
		}
	}
	// No reply subscription stays behind.
	waitSubs(t, h, 2)
}

func TestDeviceEdgeCases(t *testing.T) {
	t.Parallel()
	h := startHub(t, hubOpts{})
	if s, _, b := h.do("POST", "/api/v1/devices", "", "application/json", `{"id":"c1","protocol":"coap"}`); s != 201 {
		t.Fatalf("add: %d %s", s, b)
	}
	tests := []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"PATCH", "/api/v1/devices/c1", `{"psk":"0102"}`, 200, ""},
		{"PATCH", "/api/v1/devices/c1", `{"psk":"xyz"}`, 400, "psk"},
		{"PATCH", "/api/v1/devices/c1", `{"name":5}`, 400, "field name: expected string"},
		{"PATCH", "/api/v1/devices/c1", `{"password":""}`, 400, "empty password"},
		{"PATCH", "/api/v1/devices/c1", `nope`, 400, "invalid JSON"},
		{"DELETE", "/api/v1/devices/ghost", ``, 404, "unknown device"},
		{"GET", "/api/v1/devices/ghost", ``, 404, "unknown device"},
		{"POST", "/api/v1/devices/-bad/commands/x", `{}`, 404, "unknown device"},
	}
	for _, tt := range tests {
		s, _, b := h.do(tt.method, tt.path, "", "application/json", tt.body)
		if s != tt.status {
			t.Errorf("%s %s %s: %d %s, want %d", tt.method, tt.path, tt.body, s, b, tt.status)
			continue
		}
		if tt.msg != "" && !strings.Contains(errorOf(t, b), tt.msg) {
			t.Errorf("%s %s: message %s does not say %q", tt.method, tt.path, b, tt.msg)
		}
	}
	if psk, err := h.st.DevicePSK(context.Background(), "c1"); err != nil || string(psk) != "\x01\x02" {
		t.Errorf("psk %q %v", psk, err)
	}
}
