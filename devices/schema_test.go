package devices

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

const lampCommands = `[
 {"name": "set", "description": "switch the lamp",
  "params": {"type": "object", "properties": {
    "on": {"type": "boolean", "description": "on or off"},
    "level": {"type": "integer", "default": 100},
    "mode": {"type": "string", "enum": ["warm", "cold"]},
    "gain": {"type": "number"}},
   "required": ["on"]}},
 {"name": "reboot"}
]`

func TestParseCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, err string
	}{
		{"array", lampCommands, ""},
		{"wrapped", `{"commands": [{"name": "x"}]}`, ""},
		{"empty", `[]`, ""},
		{"not json", `[{`, "must be a JSON array"},
		{"bad name", `[{"name": "a/b"}]`, `command name "a/b"`},
		{"twice", `[{"name": "a"}, {"name": "a"}]`, `declared twice`},
		{"bad type", `[{"name": "a", "params": {"properties": {"x": {"type": "array"}}}}]`, `parameter "x": type "array"`},
		{"not object", `[{"name": "a", "params": {"type": "string"}}]`, `must be "object"`},
		{"bad enum", `[{"name": "a", "params": {"properties": {"x": {"type": "integer", "enum": [1, "b"]}}}}]`, `enum value b: want a number`},
		{"bad default", `[{"name": "a", "params": {"properties": {"x": {"type": "string", "enum": ["a"], "default": "b"}}}}]`, `default: "b" is not one of "a"`},
		{"undeclared required", `[{"name": "a", "params": {"properties": {}, "required": ["y"]}}]`, `required parameter "y" is not declared`},
		{"bad param name", `[{"name": "a", "params": {"properties": {"a b": {"type": "string"}}}}]`, `parameter "a b": name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := ParseCommands([]byte(tt.in))
			if tt.err == "" {
				if err != nil {
					t.Fatalf("ParseCommands: %v", err)
				}
				b, err := json.Marshal(cs)
				if err != nil {
					t.Fatal(err)
				}
				again, err := ParseCommands(b)
				if err != nil || len(again) != len(cs) {
					t.Fatalf("round trip of %s: %v", b, err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParseCommands: %v, want an ErrInvalid saying %q", err, tt.err)
			}
		})
	}
	cs, _ := ParseCommands([]byte(lampCommands))
	var order []string
	for _, p := range cs[0].Params.Properties {
		order = append(order, p.Name)
	}
	if got := strings.Join(order, ","); got != "on,level,mode,gain" {
		t.Errorf("properties in order %s, want declaration order", got)
	}
}

func TestCheckParams(t *testing.T) {
	t.Parallel()
	cs, err := ParseCommands([]byte(lampCommands))
	if err != nil {
		t.Fatal(err)
	}
	set, _ := FindCommand(cs, "set")
	reboot, _ := FindCommand(cs, "reboot")
	tests := []struct {
		name   string
		cmd    Command
		params string
		want   string
		param  string // the parameter the error names
	}{
		{"defaults", set, `{"on": true}`, `{"level":100,"on":true}`, ""},
		{"all", set, `{"on": false, "level": 3, "mode": "warm", "gain": 0.5}`, `{"gain":0.5,"level":3,"mode":"warm","on":false}`, ""},
		{"missing", set, `{}`, "", "on"},
		{"null params", set, ``, "", "on"},
		{"wrong type", set, `{"on": "yes"}`, "", "on"},
		{"fraction", set, `{"on": true, "level": 1.5}`, "", "level"},
		{"enum", set, `{"on": true, "mode": "hot"}`, "", "mode"},
		{"unknown", set, `{"on": true, "colour": "red"}`, "", "colour"},
		{"not object", set, `[1]`, "", "-"},
		{"undeclared params", reboot, `[1, 2]`, `[1,2]`, ""},
	}
	for _, tt := range tests {
		got, err := tt.cmd.CheckParams(json.RawMessage(tt.params))
		if tt.param == "" {
			if err != nil || string(got) != tt.want {
				t.Errorf("%s: %s, %v; want %s", tt.name, got, err, tt.want)
			}
			continue
		}
		var pe *ParamError
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want a ParamError", tt.name, err)
			continue
		}
		if tt.param != "-" && pe.Param != tt.param {
			t.Errorf("%s: error names %q, want %q (%v)", tt.name, pe.Param, tt.param, err)
		}
	}
}

func TestParseValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    Param
		text string
		want any
		ok   bool
	}{
		{Param{Type: TypeBoolean}, "1", true, true},
		{Param{Type: TypeBoolean}, "false", false, true},
		{Param{Type: TypeBoolean}, "yes", nil, false},
		{Param{Type: TypeInteger}, "42", 42.0, true},
		{Param{Type: TypeInteger}, "4.2", nil, false},
		{Param{Type: TypeNumber}, "4.2", 4.2, true},
		{Param{Type: TypeNumber}, "NaN", nil, false},
		{Param{Type: TypeString, Enum: []any{"a"}}, "a", "a", true},
		{Param{Type: TypeString, Enum: []any{"a"}}, "b", nil, false},
	}
	for _, tt := range tests {
		got, err := tt.p.ParseValue(tt.text)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("%s %q: %v, %v", tt.p.Type, tt.text, got, err)
		}
		if tt.ok && FormatValue(got) != strings.TrimSpace(tt.text) && tt.text != "1" {
			t.Errorf("FormatValue(%v) = %q", got, FormatValue(got))
		}
	}
}

func TestParseRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reply  string
		status int // 0: not a refusal
		reason string
	}{
		{`{"ok": true}`, 0, ""},
		{`"error"`, 0, ""},
		{`{"error": null}`, 0, ""},
		{`{"error": ""}`, 0, ""},
		{`{"status": "ok"}`, 0, ""},
		{`{"error": "lamp is broken"}`, 422, "lamp is broken"},
		{`{"error": "busy", "code": 409}`, 409, "busy"},
		{`{"error": "no", "code": 403}`, 403, "no"},
		{`{"error": {"message": "bad level"}, "code": "400"}`, 400, "bad level"},
		{`{"status": "refused", "reason": "door open"}`, 422, "door open"},
		{`{"status": "error", "message": "motor stalled"}`, 502, "motor stalled"},
		{`{"error": "fuse", "code": 500}`, 502, "fuse"},
		{`{"error": "odd", "code": 418}`, 422, "odd"},
	}
	for _, tt := range tests {
		re, ok := ParseRefusal([]byte(tt.reply))
		if tt.status == 0 {
			if ok {
				t.Errorf("%s: refusal %v", tt.reply, re)
			}
			continue
		}
		if !ok || re.HTTPStatus() != tt.status || re.Reason != tt.reason {
			t.Errorf("%s: %+v %v, want %d %q", tt.reply, re, ok, tt.status, tt.reason)
		}
	}
	if got := (&RefusedError{Device: "d", Command: "c", Failed: true}).HTTPStatus(); got != http.StatusBadGateway {
		t.Errorf("failed device: %d", got)
	}
}

// Declared commands are stored, listed, announced by the device itself,
// and checked before a command is sent; refusals come back as errors.
func TestDeclaredCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	for _, id := range []string{"lamp", "self"} {
		if err := e.reg.Add(ctx, store.Device{ID: id}, ""); err != nil {
			t.Fatal(err)
		}
		e.reg.DevicePresence(ctx, id, "mqtt", true, time.Now())
	}
	cs, _ := ParseCommands([]byte(lampCommands))
	if err := e.reg.SetCommands(ctx, "lamp", cs); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.SetCommands(ctx, "ghost", cs); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("SetCommands of an unknown device: %v", err)
	}
	got, err := e.reg.Commands(ctx, "lamp")
	if err != nil || len(got) != 2 || got[0].Params == nil || len(got[0].Params.Properties) != 4 {
		t.Fatalf("Commands: %+v %v", got, err)
	}
	// The device's own retained announcement counts; someone else's does not.
	announce := func(principal, body string) {
		t.Helper()
		if err := e.bus.Publish(ctx, &broker.Envelope{Topic: AnnounceTopic("self"), Payload: []byte(body), Retain: true, QoS: 1,
			Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: principal}}); err != nil {
			t.Fatal(err)
		}
	}
	announce("intruder", `[{"name": "evil"}]`)
	if got, _ := e.reg.Commands(ctx, "self"); len(got) != 0 {
		t.Fatalf("another principal's announcement taken: %+v", got)
	}
	announce("self", `{"commands": [{"name": "beep", "params": {"properties": {"n": {"type": "integer"}}, "required": ["n"]}}]}`)
	if got, _ := e.reg.Commands(ctx, "self"); len(got) != 1 || got[0].Name != "beep" {
		t.Fatalf("announced: %+v", got)
	}
	replies := map[string]string{"refuse": `{"error": "too hot", "code": 409}`, "fail": `{"status": "failed", "reason": "fuse"}`}
	fakeDevice(t, e, "lamp", func(r CommandRequest) []byte {
		var p map[string]any
		_ = json.Unmarshal(r.Params, &p)
		if rep, ok := replies[FormatValue(p["mode"])]; ok {
			return []byte(rep)
		}
		return r.Params
	})
	tests := []struct {
		dev, cmd, params, want string
		status                 int // of a RefusedError
		invalid                bool
	}{
		{"lamp", "set", `{"on": true}`, `{"level":100,"on":true}`, 0, false},
		{"lamp", "set", `{"on": 1}`, "", 0, true},
		{"self", "beep", `{}`, "", 0, true},
		{"lamp", "other", `{"free": "form"}`, `{"free":"form"}`, 0, false},
		{"lamp", "set", `{"on": true, "mode": "warm"}`, `{"level":100,"mode":"warm","on":true}`, 0, false},
	}
	for _, tt := range tests {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		got, err := e.reg.SendCommand(cctx, tt.dev, tt.cmd, json.RawMessage(tt.params))
		cancel()
		if tt.invalid {
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Errorf("%s %s: %v, want a ParamError", tt.cmd, tt.params, err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%s %s: %s %v, want %s", tt.cmd, tt.params, got, err, tt.want)
		}
	}
	// Refusals: mode is a declared enum, so go through an undeclared command.
	cs = append(cs, Command{Name: "raw"})
	if err := e.reg.SetCommands(ctx, "lamp", cs); err != nil {
		t.Fatal(err)
	}
	for mode, status := range map[string]int{"refuse": 409, "fail": 502} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := e.reg.SendCommand(cctx, "lamp", "raw", json.RawMessage(`{"mode": "`+mode+`"}`))
		cancel()
		var re *RefusedError
		if !errors.As(err, &re) || re.HTTPStatus() != status || re.Device != "lamp" || re.Command != "raw" {
			t.Errorf("%s: %v (%+v), want a refusal with %d", mode, err, re, status)
		}
	}
}

func BenchmarkCheckParams(b *testing.B) {
	cs, err := ParseCommands([]byte(lampCommands))
	if err != nil {
		b.Fatal(err)
	}
	params := json.RawMessage(`{"on": true, "mode": "warm", "gain": 0.5}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cs[0].CheckParams(params); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCommands(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCommands([]byte(lampCommands)); err != nil {
			b.Fatal(err)
		}
	}
}
