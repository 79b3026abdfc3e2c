package rest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

// refusingCommander answers every command with its error.
type refusingCommander struct{ err error }

func (c refusingCommander) Protocol() string { return devices.ProtocolXMPP }

func (c refusingCommander) SendCommand(context.Context, adapters.Command) (json.RawMessage, error) {
	return nil, c.err
}

// TestCommandRefusalStatus: a device's refusal (here through a protocol's
// Commander, as the XMPP adapter reports stanza errors) is its 4xx or 502
// with the reason, never 500.
func TestCommandRefusalStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err    error
		status int
		want   string
	}{
		{&devices.RefusedError{Code: 409, Reason: "busy"}, 409, `device \"bot\" refused command \"go\": busy`},
		{&devices.RefusedError{Code: 403, Reason: "locked"}, 403, "locked"},
		{&devices.RefusedError{Reason: "no"}, 422, "no"},
		{&devices.RefusedError{Failed: true, Reason: "jammed"}, 502, `failed command \"go\": jammed`},
		{adapters.ErrDeviceOffline, 503, "offline"},
	} {
		h := startHub(t, hubOpts{})
		ctx := context.Background()
		if err := h.reg.Add(ctx, store.Device{ID: "bot", Protocol: devices.ProtocolXMPP}, ""); err != nil {
			t.Fatal(err)
		}
		h.reg.DevicePresence(ctx, "bot", "xmpp", true, time.Now())
		h.reg.RegisterCommander(refusingCommander{tt.err})
		s, _, b := h.do("POST", "/api/v1/devices/bot/commands/go", "", "application/json", `{}`)
		if s != tt.status || !strings.Contains(b, tt.want) {
			t.Errorf("%v: %d %s, want %d with %s", tt.err, s, b, tt.status, tt.want)
		}
	}
	// The declaration over REST: listed to whoever may command the device.
	h := startHub(t, hubOpts{})
	if s, _, b := h.do("POST", "/api/v1/devices", "", "application/json", `{"id":"lamp","commands":[{"name":"x","params":{"properties":{"n":{"type":"integer"}}}}]}`); s != http.StatusCreated {
		t.Fatalf("add: %d %s", s, b)
	}
	if s, _, b := h.do("POST", "/api/v1/devices", "", "application/json", `{"id":"lamp2","commands":[{"name":"x","params":{"properties":{"n":{"type":"int"}}}}]}`); s != 400 || !strings.Contains(b, `type \"int\"`) {
		t.Errorf("add with a bad declaration: %d %s", s, b)
	}
	if s, _, _ := h.do("GET", "/api/v1/devices/lamp2", "", "", ""); s != 404 {
		t.Errorf("a device with a refused declaration was added: %d", s)
	}
	if s, _, b := h.do("GET", "/api/v1/devices/lamp/commands", "", "", ""); s != 200 || b != `[{"name":"x","params":{"type":"object","properties":{"n":{"type":"integer"}}}}]` {
		t.Errorf("GET commands: %d %s", s, b)
	}
	if s, _, b := h.do("PUT", "/api/v1/devices/lamp/commands", "", "application/json", `[]`); s != 200 || b != `[]` {
		t.Errorf("PUT []: %d %s", s, b)
	}
}
