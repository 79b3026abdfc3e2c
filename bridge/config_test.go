package bridge

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/broker"
)

func TestConfigYAML(t *testing.T) {
	t.Parallel()
	const doc = `
name: cloud
url: ssl://mqtt.example.com:8883
client_id: gw-1
username: gw
password: secret
tls: {ca_file: /etc/hub/ca.pem, insecure_skip_verify: false}
clean_session: false
keepalive: 45s
qos: 1
in:
  - {filter: "cmd/#", remote_prefix: "gw-1/", local_prefix: "cloud/"}
out:
  - {filter: "sensors/#", local_prefix: "", remote_prefix: "gw-1/", qos: 0}
`
	var c Config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatal(err)
	}
	if c.Name != "cloud" || c.ClientID != "gw-1" || c.TLS.CAFile != "/etc/hub/ca.pem" || c.KeepAlive.Seconds() != 45 ||
		c.ruleQoS(c.In[0]) != 1 || c.ruleQoS(c.Out[0]) != 0 || c.Out[0].RemotePrefix != "gw-1/" {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigInvalid(t *testing.T) {
	t.Parallel()
	ok := func() Config {
		return Config{Name: "x", URL: "tcp://127.0.0.1:1883", In: []Rule{{Filter: "a/#"}}}
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, `bridge "": name: required`},
		{"bad name", func(c *Config) { c.Name = "a b" }, `name "a b": only letters`},
		{"no url", func(c *Config) { c.URL = "" }, `bridge "x": url: required`},
		{"scheme", func(c *Config) { c.URL = "http://h:1" }, `url "http://h:1": scheme`},
		{"no port", func(c *Config) { c.URL = "tcp://h" }, `needs host:port`},
		{"password alone", func(c *Config) { c.Password = "p" }, `password: needs a username`},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, `tls: cert_file and key_file`},
		{"keepalive", func(c *Config) { c.KeepAlive = 5 }, `keepalive 5ns`},
		{"qos", func(c *Config) { c.QoS = q(3) }, `qos 3: must be`},
		{"no rules", func(c *Config) { c.In = nil }, `in, out: at least one rule`},
		{"empty filter", func(c *Config) { c.In[0].Filter = "" }, `in[0].filter "": required`},
		{"bad filter", func(c *Config) { c.In[0].Filter = "a/#/b" }, `bridge "x": in[0].filter "a/#/b": `},
		{"wild prefix", func(c *Config) { c.Out = []Rule{{Filter: "a", LocalPrefix: "+/"}} }, `out[0].local_prefix "+/": no wildcards`},
		{"rule qos", func(c *Config) { c.Out = []Rule{{Filter: "a", QoS: q(7)}} }, `out[0].qos 7`},
		{"ca file", func(c *Config) { c.URL = "ssl://h:8883"; c.TLS.CAFile = "/nonexistent/ca.pem" }, `tls.ca_file: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok()
			tt.mod(&c)
			_, err := New(Options{Config: c, Bus: nopBus{}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := New(Options{Config: ok()}); err == nil || !strings.Contains(err.Error(), "Bus: required") {
		t.Fatalf("nil bus: %v", err)
	}
	for _, u := range []string{"tcp://127.0.0.1:1883", "mqtts://h:8883", "ws://h/mqtt", "wss://h:443/mqtt"} {
		c := ok()
		c.URL = u
		if _, err := New(Options{Config: c, Bus: nopBus{}}); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// nopBus is only handed to New, which does not use it.
type nopBus struct{ broker.Bus }

func TestRuleMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule          Rule
		local, remote string
		ok            bool
	}{
		{Rule{Filter: "sensors/#", LocalPrefix: "up/", RemotePrefix: "site1/"}, "up/sensors/t", "site1/sensors/t", true},
		{Rule{Filter: "#"}, "a/b", "a/b", true},
		{Rule{Filter: "+/t", RemotePrefix: "r/"}, "x/t", "r/x/t", true},
		{Rule{Filter: "+/t", RemotePrefix: "r/"}, "x/y/t", "", false},
		{Rule{Filter: "#", LocalPrefix: "l/"}, "l", "", false},
		{Rule{Filter: "#", LocalPrefix: "l/"}, "m/x", "", false},
	}
	for _, tt := range tests {
		remote, ok := tt.rule.ToRemote(tt.local)
		if ok != tt.ok || remote != tt.remote {
			t.Errorf("%+v ToRemote(%q) = %q %v", tt.rule, tt.local, remote, ok)
			continue
		}
		if ok {
			if back, ok := tt.rule.ToLocal(remote); !ok || back != tt.local {
				t.Errorf("%+v ToLocal(%q) = %q %v", tt.rule, remote, back, ok)
			}
		}
	}
}

func FuzzRuleRoundTrip(f *testing.F) {
	f.Add("sensors/#", "up/", "site1/", "up/sensors/t")
	f.Add("+/t", "", "r/", "x/t")
	f.Add("#", "l/", "", "l")
	f.Fuzz(func(t *testing.T, filter, lp, rp, topic string) {
		r := Rule{Filter: filter, LocalPrefix: lp, RemotePrefix: rp}
		if r.validate() != nil || broker.ValidateTopic(topic) != nil {
			return
		}
		if remote, ok := r.ToRemote(topic); ok {
			if !broker.Match(r.RemoteFilter(), remote) {
				t.Fatalf("remote %q outside %q", remote, r.RemoteFilter())
			}
			if back, ok := r.ToLocal(remote); !ok || back != topic {
				t.Fatalf("round trip %q -> %q -> %q", topic, remote, back)
			}
		}
		if local, ok := r.ToLocal(topic); ok && !broker.Match(r.LocalFilter(), local) {
			t.Fatalf("local %q outside %q", local, r.LocalFilter())
		}
	})
}

func TestEchoFilter(t *testing.T) {
	t.Parallel()
	f := newEchoFilter()
	if f.take("a", []byte("x")) {
		t.Fatal("echo before add")
	}
	f.add("a", []byte("x"))
	f.add("a", []byte("x"))
	if f.take("a", []byte("y")) || f.take("b", []byte("x")) {
		t.Fatal("echo of another message")
	}
	for i, want := range []bool{true, true, false} {
		if got := f.take("a", []byte("x")); got != want {
			t.Fatalf("take #%d = %v: each add must match exactly one echo", i, got)
		}
	}
}

func TestValidateAll(t *testing.T) {
	t.Parallel()
	a := Config{Name: "a", URL: "tcp://h:1883", In: []Rule{{Filter: "#"}}}
	b := Config{Name: "b", URL: "tcp://h:1883", Out: []Rule{{Filter: "#"}}}
	if err := ValidateAll([]Config{a, b}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfgs []Config
		want string
	}{
		{[]Config{a, a}, `bridges[1]: name "a": used twice`},
		{[]Config{a, {Name: "c", URL: a.URL, ClientID: "hub-bridge-a", In: a.In}}, `bridges[1]: client_id "hub-bridge-a": bridge "a"`},
		{[]Config{a, {Name: "d", URL: a.URL}}, `bridges[1]: bridge "d": in, out`},
	}
	for _, tt := range tests {
		if err := ValidateAll(tt.cfgs); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err %v, want %q", err, tt.want)
		}
	}
}

func FuzzConfigYAML(f *testing.F) {
	f.Add("name: a\nurl: tcp://h:1\nin: [{filter: '#'}]\n")
	f.Add("name: a\nurl: ssl://h:1\nqos: 2\nout: [{filter: 'a/+', local_prefix: x/, qos: 1}]\nkeepalive: 10s\n")
	f.Fuzz(func(t *testing.T, doc string) {
		var c Config
		if yaml.Unmarshal([]byte(doc), &c) != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		for _, r := range append(c.In, c.Out...) {
			if broker.ValidateFilter(r.LocalFilter()) != nil || broker.ValidateFilter(r.RemoteFilter()) != nil {
				t.Fatalf("valid config with an invalid filter: %+v", r)
			}
		}
		if c.ruleQoS(Rule{}) > 2 {
			t.Fatal("qos out of range")
		}
	})
}
