package gateway

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hubsmith/hub/cluster"
)

func TestNATSConfigYAML(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NATSConfig
	}{
		{"nats: nats://n1:4222", NATSConfig{URL: "nats://n1:4222"}},
		{"nats: {url: 'nats://n1:4222,nats://n2:4222', credentials: /etc/hub.creds, replicas: 3, tls: {ca_file: ca.pem}}",
			NATSConfig{URL: "nats://n1:4222,nats://n2:4222", Credentials: "/etc/hub.creds", Replicas: 3, TLS: NATSTLS{CAFile: "ca.pem"}}},
		{"nats: {url: 'nats://n1:4222', ack_wait: 5s}", NATSConfig{URL: "nats://n1:4222", AckWait: 5 * time.Second}},
	} {
		var c Config
		if err := yaml.Unmarshal([]byte(tc.in), &c); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if c.NATS != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.in, c.NATS, tc.want)
		}
	}
}

func TestClusterConfigErrors(t *testing.T) {
	ok := cluster.Config{Name: "hubs", Listen: "127.0.0.1:6222", Routes: []string{"10.0.0.2:6222"}}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"both", func(c *Config) { c.NATS.URL = "nats://x:4222"; c.Cluster = ok }, "choose one"},
		{"bad url", func(c *Config) { c.NATS.URL = "x" }, `nats.url "x"`},
		{"cert without key", func(c *Config) { c.NATS.URL = "nats://x:4222"; c.NATS.TLS.CertFile = "c.pem" }, "cert_file and key_file"},
		{"no name", func(c *Config) { c.Cluster = ok; c.Cluster.Name = "" }, "cluster: name is required"},
		{"dotted name", func(c *Config) { c.Cluster = ok; c.Cluster.Name = "a.b" }, `name "a.b"`},
		{"no listen", func(c *Config) { c.Cluster = ok; c.Cluster.Listen = "" }, "listen is required"},
		{"bad route", func(c *Config) { c.Cluster = ok; c.Cluster.Routes = []string{"nohost"} }, `route "nohost"`},
		{"replicas", func(c *Config) { c.Cluster = ok; c.Cluster.Replicas = 9 }, "replicas 9"},
		{"negative ack wait", func(c *Config) { c.NATS.URL = "nats://x:4222"; c.NATS.AckWait = -time.Second }, "nats.ack_wait -1s"},
		{"fine", func(c *Config) { c.Cluster = ok }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.set(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if r := ok.EffectiveReplicas(); r != 1 {
		t.Errorf("two nodes: replicas %d, want 1", r)
	}
	ok.Routes = append(ok.Routes, "10.0.0.3:6222")
	if r := ok.EffectiveReplicas(); r != 3 {
		t.Errorf("three nodes: replicas %d, want 3", r)
	}
}
