package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/hubtest"
)

const lampDecl = `[
 {"name": "set", "description": "Switch the lamp",
  "params": {"type": "object", "properties": {
    "on": {"type": "boolean", "description": "on or off"},
    "level": {"type": "integer", "default": 100, "description": "brightness"},
    "mode": {"type": "string", "enum": ["warm", "cold", "refuse", "deny", "fail", "quiet"]}},
   "required": ["on"]}},
 {"name": "reboot", "description": "Restart"}
]`

// lampDevice is an MQTT device that answers its commands by the "mode"
// parameter: refuse, deny and fail say no in the reply formats
// devices.ParseRefusal reads; quiet never answers; anything else is echoed.
func lampDevice(t *testing.T, h *hubtest.Hub) *mqttClient {
	t.Helper()
	d := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "lamp", "lamp", "lamppw", true)
	tok := d.Subscribe("devices/lamp/commands/+", 1, func(c paho.Client, m paho.Message) {
		var req struct {
			ID     string         `json:"id"`
			Params map[string]any `json:"params"`
		}
		if json.Unmarshal(m.Payload(), &req) != nil {
			return
		}
		mode, _ := req.Params["mode"].(string)
		reply := map[string]string{
			"refuse": `{"error": "too hot", "code": 409}`,
			"deny":   `{"error": "locked by the owner", "code": 403}`,
			"fail":   `{"status": "failed", "reason": "fuse blown"}`,
		}[mode]
		if mode == "quiet" {
			return
		}
		if reply == "" {
			b, _ := json.Marshal(map[string]any{"done": m.Topic(), "params": req.Params})
			reply = string(b)
		}
		c.Publish("devices/lamp/responses/"+req.ID, 1, false, reply)
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	return d
}

// TestDeclaredCommands: commands declared with their parameters over
// REST, validated before they are sent, refusals mapped to 4xx/502,
// and the same commands as XEP-0050 forms for a chat user.
func TestDeclaredCommands(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"lamp","password":"lamppw","commands":`+lampDecl+`}`); code != http.StatusCreated {
		t.Fatalf("add device: %d %s", code, body)
	}
	code, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/lamp/commands", "", "")
	if code != 200 || !strings.Contains(body, `"properties":{"on":{"type":"boolean","description":"on or off"},"level"`) || !strings.Contains(body, `"required":["on"]`) {
		t.Fatalf("GET commands: %d %s", code, body)
	}
	if s, b := httpAsBody(t, http.MethodGet, base+"/api/v1/devices/lamp/commands", "alice", "alicepw", ""); s != http.StatusForbidden {
		t.Errorf("GET commands by a user without the command right: %d %s", s, b)
	}
	if s, b := httpAsBody(t, http.MethodPut, base+"/api/v1/devices/lamp/commands", "alice", "alicepw", "[]"); s != http.StatusForbidden {
		t.Errorf("PUT commands by a user: %d %s", s, b)
	}
	for _, tt := range []struct{ body, msg string }{
		{`[{"name":"x","params":{"properties":{"a":{"type":"list"}}}}]`, `parameter \"a\": type \"list\"`},
		{`[{"name":"x"},{"name":"x"}]`, "declared twice"},
		{`{"commands": 3}`, "commands"},
	} {
		if code, body, _ := httpDo(t, http.MethodPut, base+"/api/v1/devices/lamp/commands", "application/json", tt.body); code != 400 || !strings.Contains(body, tt.msg) {
			t.Errorf("PUT %s: %d %s, want 400 saying %q", tt.body, code, body, tt.msg)
		}
	}
	if code, body, _ := httpDo(t, http.MethodPut, base+"/api/v1/devices/ghost/commands", "application/json", `[]`); code != 404 {
		t.Errorf("PUT commands of an unknown device: %d %s", code, body)
	}
	// Offline: 503 at once, after the params were found good.
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices/lamp/commands/set", "application/json", `{"on":true}`); code != 503 {
		t.Errorf("offline device: %d %s", code, body)
	}
	lampDevice(t, h)
	eventually(t, "lamp online", func() bool {
		_, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/lamp", "", "")
		return strings.Contains(body, `"online":true`)
	})
	for _, tt := range []struct {
		cmd, params string
		status      int
		want        string
	}{
		{"set", `{"on":true}`, 200, `"params":{"level":100,"on":true}`},
		{"set", `{"on":"yes"}`, 400, `parameter \"on\": want true or false, got a string`},
		{"set", `{}`, 400, `parameter \"on\": required`},
		{"set", `{"on":true,"mode":"hot"}`, 400, `parameter \"mode\": \"hot\" is not one of`},
		{"set", `{"on":true,"colour":1}`, 400, `parameter \"colour\": not a parameter`},
		{"set", `{"on":true,"mode":"refuse"}`, 409, `refused command \"set\": too hot`},
		{"set", `{"on":true,"mode":"deny"}`, 403, `locked by the owner`},
		{"set", `{"on":true,"mode":"fail"}`, 502, `failed command \"set\": fuse blown`},
		{"set?timeout=300ms", `{"on":true,"mode":"quiet"}`, 504, `no reply`},
		{"reboot", ``, 200, `"params":null`},
	} {
		code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices/lamp/commands/"+tt.cmd, "application/json", tt.params)
		if code != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("command %s %s: %d %s, want %d with %s", tt.cmd, tt.params, code, body, tt.status, tt.want)
		}
	}

	// The same commands for a chat user, as XEP-0050 with forms.
	const dev = "lamp@devices.localhost"
	// alice (role user, no command rule) sees no commands; admin does.
	alice := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	items := alice.iq(t, `<iq type='get' to='%s'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>`, dev)
	if f := flatten(items.Children); items.Type != "result" || strings.Contains(f, "<item") {
		t.Errorf("command list of a user without the right: %s %s", items.Type, f)
	}
	alice = dialXMPP(t, h.Addr(t, "xmpp"), "admin", "adminpw")
	items = alice.iq(t, `<iq type='get' to='%s'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>`, dev)
	if f := flatten(items.Children); items.Type != "result" || !strings.Contains(f, `node="set" name="Switch the lamp"`) || !strings.Contains(f, `node="reboot"`) {
		t.Fatalf("command list: %s %s", items.Type, f)
	}
	info := alice.iq(t, `<iq type='get' to='%s'><query xmlns='http://jabber.org/protocol/disco#info' node='set'/></iq>`, dev)
	if f := flatten(info.Children); !strings.Contains(f, `category="automation" type="command-node"`) {
		t.Errorf("command node info: %s", f)
	}
	exec := func() (string, string) {
		t.Helper()
		r := alice.iq(t, `<iq type='set' to='%s'><command xmlns='http://jabber.org/protocol/commands' node='set' action='execute'/></iq>`, dev)
		cmd, ok := stanzaChild(r, "command")
		if r.Type != "result" || !ok || attr(cmd, "status") != "executing" || attr(cmd, "sessionid") == "" {
			t.Fatalf("execute set: %s %s", r.Type, flatten(r.Children))
		}
		return attr(cmd, "sessionid"), flatten(r.Children)
	}
	sid, form := exec()
	for _, want := range []string{
		`<x xmlns="jabber:x:data" type="form">`,
		`<field var="FORM_TYPE" type="hidden"><value>urn:hub:command:0</value>`,
		`<field var="on" label="on" type="boolean"><desc>on or off</desc><required></required></field>`,
		`<field var="level" label="level" type="text-single"><desc>brightness</desc><value>100</value><validate xmlns="http://jabber.org/protocol/xdata-validate" datatype="xs:integer">`,
		`<field var="mode" label="mode" type="list-single"><option label="warm"><value>warm</value></option>`,
	} {
		if !strings.Contains(form, want) {
			t.Errorf("form lacks %s:\n%s", want, form)
		}
	}
	submit := func(sid, fields string) stanza {
		t.Helper()
		return alice.iq(t, `<iq type='set' to='%s'><command xmlns='http://jabber.org/protocol/commands' node='set' sessionid='%s' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:hub:command:0</value></field>%s</x></command></iq>`, dev, sid, fields)
	}
	r := submit(sid, `<field var='on'><value>1</value></field><field var='level'><value>7</value></field><field var='mode'><value>warm</value></field>`)
	if f := flatten(r.Children); r.Type != "result" || !strings.Contains(f, `status="completed"`) || !strings.Contains(f, `"params":{"level":7,"mode":"warm","on":true}`) {
		t.Fatalf("submitted form: %s %s", r.Type, f)
	}
	if r := submit(sid, `<field var='on'><value>1</value></field>`); r.Type != "error" || !strings.Contains(flatten(r.Children), "unknown or expired command session") {
		t.Errorf("session used twice: %s %s", r.Type, flatten(r.Children))
	}
	for _, tt := range []struct{ fields, cond, text string }{
		{`<field var='on'><value>maybe</value></field>`, "bad-request", `parameter "on": want true, false, 1 or 0`},
		{`<field var='level'><value>3</value></field>`, "bad-request", `parameter "on": required`},
		{`<field var='on'><value>true</value></field><field var='mode'><value>refuse</value></field>`, "conflict", "too hot"},
		{`<field var='on'><value>true</value></field><field var='mode'><value>deny</value></field>`, "not-allowed", "locked by the owner"},
		{`<field var='on'><value>true</value></field><field var='mode'><value>fail</value></field>`, "undefined-condition", "fuse blown"},
	} {
		sid, _ := exec()
		r := submit(sid, tt.fields)
		e, _ := stanzaChild(r, "error")
		if f := flatten(e.Children); r.Type != "error" || !strings.Contains(f, "<"+tt.cond+" xmlns=") || !strings.Contains(f, tt.text) {
			t.Errorf("submit %s: %s %s, want %s with %q", tt.fields, r.Type, f, tt.cond, tt.text)
		}
	}
	// Without declared parameters a command runs at once.
	r = alice.iq(t, `<iq type='set' to='%s'><command xmlns='http://jabber.org/protocol/commands' node='reboot' action='execute'/></iq>`, dev)
	if f := flatten(r.Children); r.Type != "result" || !strings.Contains(f, `status="completed"`) || !strings.Contains(f, `devices/lamp/commands/reboot`) {
		t.Errorf("reboot: %s %s", r.Type, f)
	}
	// A device that announces its own commands, retained.
	if code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json", `{"id":"fan","password":"fanpw"}`); code != http.StatusCreated {
		t.Fatalf("add fan: %d %s", code, body)
	}
	fan := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "fan", "fan", "fanpw", true)
	fan.publish(t, "devices/fan/commands", 1, true, `[{"name":"spin","params":{"properties":{"rpm":{"type":"integer"}},"required":["rpm"]}}]`)
	eventually(t, "announced commands listed", func() bool {
		_, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/fan/commands", "", "")
		return strings.Contains(body, `"name":"spin"`)
	})
	items = alice.iq(t, `<iq type='get' to='fan@devices.localhost'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>`)
	if f := flatten(items.Children); !strings.Contains(f, `node="spin"`) {
		t.Errorf("announced command list: %s", f)
	}
}
