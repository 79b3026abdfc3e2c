package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfigPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(file, []byte(`
data_dir: /from/file
mqtt:
  addr: 127.0.0.1:1000
coap:
  addr: 127.0.0.1:2000
xmpp:
  domain: file.example
  jid_rules:
    - {topic: "sensors/{room}/temp", jid: "{room}-temp@sensors.{domain}"}
http:
  addr: 127.0.0.1:3000
acl:
  bob:
    - {action: publish, filter: "bob/#", allow: true}
bridges:
  - name: cloud
    url: tcp://127.0.0.1:1884
    in: [{filter: "cmd/#", local_prefix: "cloud/"}]
    out: [{filter: "sensors/#", remote_prefix: "site1/"}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HUB_COAP_ADDR":       "127.0.0.1:2001",
		"HUB_HTTP_ADDR":       "127.0.0.1:3001",
		"HUB_ALLOW_ANONYMOUS": "true",
	}
	cfg, err := loadConfig([]string{"--config", file, "--http-addr", "127.0.0.1:3002", "--xmpp-addr", "off"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"data dir (file)", cfg.DataDir, "/from/file"},
		{"mqtt (file)", cfg.MQTT.Addr, "127.0.0.1:1000"},
		{"coap (env over file)", cfg.CoAP.Addr, "127.0.0.1:2001"},
		{"http (flag over env)", cfg.HTTP.Addr, "127.0.0.1:3002"},
		{"xmpp addr (flag)", cfg.XMPP.Addr, "off"},
		{"xmpp domain (file)", cfg.XMPP.Domain, "file.example"},
		{"mqtts (default)", cfg.MQTT.TLSAddr, "off"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !cfg.AllowAnonymous {
		t.Error("HUB_ALLOW_ANONYMOUS=true not applied")
	}
	if len(cfg.ACL["bob"]) != 1 || cfg.ACL["bob"][0].Filter != "bob/#" {
		t.Errorf("acl from file = %+v", cfg.ACL)
	}
	if len(cfg.XMPP.JIDRules) != 1 || cfg.XMPP.JIDRules[0].JID != "{room}-temp@sensors.{domain}" {
		t.Errorf("jid rules from file = %+v", cfg.XMPP.JIDRules)
	}
	if len(cfg.Bridges) != 1 || cfg.Bridges[0].Name != "cloud" || len(cfg.Bridges[0].In) != 1 ||
		cfg.Bridges[0].Out[0].RemotePrefix != "site1/" {
		t.Errorf("bridges from file = %+v", cfg.Bridges)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./hub-data" || cfg.MQTT.Addr != "127.0.0.1:1883" || cfg.CoAP.Addr != "127.0.0.1:5683" ||
		cfg.XMPP.Addr != "127.0.0.1:5222" || cfg.HTTP.Addr != "127.0.0.1:8080" || cfg.XMPP.Domain != "localhost" {
		t.Fatalf("defaults = %+v", cfg)
	}
	if cfg.MaxQueued != 100000 || cfg.MaxQueuedBytes != 64<<20 || cfg.QueuePolicy != "drop_oldest" ||
		cfg.MQTT.MaxQueued != 1000 || cfg.MQTT.MaxQueuedBytes != 16<<20 || !cfg.WriteThrough {
		t.Fatalf("queue defaults = %d %d %q, mqtt %d %d, write_through %v",
			cfg.MaxQueued, cfg.MaxQueuedBytes, cfg.QueuePolicy, cfg.MQTT.MaxQueued, cfg.MQTT.MaxQueuedBytes, cfg.WriteThrough)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("mqtt:\n  adr: x\n"), 0o600)
	yamlFile := func(name, body string) string {
		p := filepath.Join(dir, name)
		_ = os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	badBridge := filepath.Join(dir, "bridge.yaml")
	_ = os.WriteFile(badBridge, []byte("bridges:\n  - {name: x, url: tcp://127.0.0.1:1, in: [{filter: \"a/#/b\"}]}\n"), 0o600)
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "unknown flag --nope"},
		{"bad address", []string{"--mqtt-addr", "nonsense"}, nil, "mqtt.addr"},
		{"unknown yaml field", []string{"--config", bad}, nil, "line 2: unknown key adr"},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, nil, "no such file"},
		{"bad bool env", nil, map[string]string{"HUB_ALLOW_ANONYMOUS": "maybe"}, "HUB_ALLOW_ANONYMOUS"},
		{"component without secret", []string{"--xmpp-component-addr", "127.0.0.1:5347"}, nil, "component_secret"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
		{"bad bridge", []string{"--config", badBridge}, nil, "bridges"},
		{"bad queue policy", []string{"--config", yamlFile("p.yaml", "queue_policy: drop_random\n")}, nil, "queue_policy"},
		{"bad sync interval", []string{"--config", yamlFile("s.yaml", "sync_interval: sometimes\n")}, nil,
			`s.yaml: sync_interval "sometimes": want always or a positive duration such as 1s or 250ms`},
		{"zero sync interval", []string{"--config", yamlFile("s0.yaml", "sync_interval: 0s\n")}, nil, `sync_interval "0s"`},
		{"negative byte bound", []string{"--config", yamlFile("b.yaml", "max_queued_bytes: -1\n")}, nil, "max_queued_bytes"},
		{"acl rule with a bad action", []string{"--config", yamlFile("a1.yaml", "acl:\n  alice:\n    - {action: publish, filter: \"home/#\", allow: true}\n    - {action: fly, filter: \"home/#\", allow: true}\n")}, nil,
			`a1.yaml:4: acl.alice rule 2 {action: "fly", filter: "home/#", allow: true}: action "fly": must be publish, subscribe, command or all`},
		{"acl rule with a bad filter", []string{"--config", yamlFile("a2.yaml", "acl:\n  bob:\n    - {action: all, filter: \"home/#/x\"}\n")}, nil,
			`a2.yaml:3: acl.bob rule 1 {action: "all", filter: "home/#/x", allow: false}: filter: invalid topic filter`},
		{"command rule naming a topic", []string{"--config", yamlFile("a3.yaml", "acl:\n  bob:\n    - {action: command, filter: \"devices/lamp1\", allow: true}\n")}, nil,
			"a command rule names a device id"},
		{"anonymous rule on $SYS", []string{"--config", yamlFile("a4.yaml", "acl:\n  anonymous:\n    - {action: subscribe, filter: \"$SYS/#\", allow: true}\n")}, nil,
			"acl.anonymous rule 1"},
		{"mqtt queue too long", []string{"--config", yamlFile("m.yaml", "mqtt:\n  max_queued: 70000\n")}, nil, "mqtt.max_queued"},
		{"mqtt park_after too short", []string{"--config", yamlFile("pa.yaml", "mqtt:\n  park_after: 10ms\n")}, nil, "mqtt.park_after"},
	}
	for _, c := range cases {
		_, err := loadConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

func TestRunCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out strings.Builder
	ctx := t.Context()
	if err := run(ctx, []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "hub ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"user", "add", "alice", "--password", "pw", "--data-dir", dir}, &out, io.Discard); err != nil {
		t.Fatalf("user add: %v", err)
	}
	if err := run(ctx, []string{"user", "add", "alice", "--password", "pw", "--data-dir", dir}, &out, io.Discard); err == nil {
		t.Fatal("adding alice twice succeeded")
	}
	if err := run(ctx, []string{"user", "add", "bob", "--data-dir", dir}, &out, io.Discard); err == nil {
		t.Fatal("user add without --password succeeded")
	}
	if err := run(ctx, []string{"device", "add", "--data-dir", dir, "sensor1", "--protocol", "coap", "--psk", "736563726574"}, &out, io.Discard); err != nil {
		t.Fatalf("device add: %v", err)
	}
	if err := run(ctx, []string{"device", "add", "s2", "--psk", "zz", "--data-dir", dir}, &out, io.Discard); err == nil {
		t.Fatal("bad --psk accepted")
	}
	if err := run(ctx, []string{"frobnicate"}, &out, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
}

func TestLoadConfigQueueBounds(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "q.yaml")
	_ = os.WriteFile(p, []byte("max_queued: 10\nmax_queued_bytes: 1000\nqueue_policy: drop_newest\nmqtt:\n  max_queued: 20\n  max_queued_bytes: 500\n"), 0o600)
	cfg, err := loadConfig([]string{"--config", p}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxQueued != 10 || cfg.MaxQueuedBytes != 1000 || cfg.QueuePolicy != "drop_newest" ||
		cfg.MQTT.MaxQueued != 20 || cfg.MQTT.MaxQueuedBytes != 500 {
		t.Fatalf("queue bounds = %d %d %q, mqtt %d %d", cfg.MaxQueued, cfg.MaxQueuedBytes, cfg.QueuePolicy, cfg.MQTT.MaxQueued, cfg.MQTT.MaxQueuedBytes)
	}
}

func TestLoadConfigSyncInterval(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct{ file, want string }{
		{"", "1s"},
		{"sync_interval: always\n", "always"},
		{"sync_interval: 200ms\n", "200ms"},
	} {
		var args []string
		if c.file != "" {
			p := filepath.Join(dir, fmt.Sprintf("s%d.yaml", len(c.want)))
			_ = os.WriteFile(p, []byte(c.file), 0o600)
			args = []string{"--config", p}
		}
		cfg, err := loadConfig(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", c.file, err)
		}
		if cfg.SyncInterval != c.want {
			t.Errorf("%q: sync_interval %q, want %q", c.file, cfg.SyncInterval, c.want)
		}
	}
}
