package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestReloadKeepsClients: POST /api/v1/admin/reload (what SIGHUP does)
// applies a changed ACL rule and a new bridge while an MQTT client stays
// connected through it, refuses an invalid configuration and keeps the
// running one, and a non-admin may not ask for it.
func TestReloadKeepsClients(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	var mu sync.Mutex
	var next func(*gateway.Config) error
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.MQTT.Addr, c.HTTP.Addr = "0.0.0.0:0", "0.0.0.0:0"
		c.ACL = map[string][]adapters.ACLRule{"alice": {
			{Action: "subscribe", Filter: "secret/#", Allow: false},
			{Action: adapters.ActionAll, Filter: "#", Allow: true},
		}}
	})
	base := h.Config
	h.SetConfigSource(func() (gateway.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		c := base
		if next != nil {
			if err := next(&c); err != nil {
				return c, err
			}
		}
		return c, nil
	})
	set := func(f func(*gateway.Config) error) { mu.Lock(); next = f; mu.Unlock() }
	rest := "http://" + loopback(t, h.Addr(t, "rest"))
	reload := func(user, pass string) (int, string) {
		return httpAsBody(t, http.MethodPost, rest+"/api/v1/admin/reload", user, pass, "")
	}

	alice := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "alice-phone", "alice", "alicepw", true)
	alice.subscribe(t, "#", 0)
	pubAdmin := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "admin-console", "admin", "adminpw", true)
	pubAdmin.publish(t, "secret/x", 0, false, "hidden")
	pubAdmin.publish(t, "open/x", 0, false, "seen")
	if m := alice.next(t); m.Topic != "open/x" {
		t.Fatalf("before the reload alice got %+v", m)
	}

	// The new file: alice may read secret/ too (her open subscription to #
	// starts delivering it), and a bridge to the upstream.
	set(func(c *gateway.Config) error {
		c.ACL = map[string][]adapters.ACLRule{"alice": {{Action: adapters.ActionAll, Filter: "#", Allow: true}}}
		c.Bridges = []bridge.Config{{Name: "cloud", URL: "tcp://" + up, ClientID: "site1",
			Out: []bridge.Rule{{Filter: "open/#", RemotePrefix: "site1/"}}}}
		return nil
	})
	if s, b := reload("alice", "alicepw"); s != http.StatusForbidden {
		t.Fatalf("reload by a user: %d %s", s, b)
	}
	s, b := reload("admin", "adminpw")
	var resp struct{ Changes []string }
	if s != http.StatusOK || json.Unmarshal([]byte(b), &resp) != nil || !strings.Contains(b, "acl:") || !strings.Contains(b, "bridge:cloud: added") {
		t.Fatalf("reload: %d %s", s, b)
	}
	eventually(t, "the new bridge connected", func() bool { return h.BridgeHealthy("cloud") == nil })
	cloud := dialMQTT(t, up, "cloud-app", "", "", true)
	cloud.subscribe(t, "site1/#", 0)
	if !alice.IsConnectionOpen() {
		t.Fatal("alice's connection dropped by the reload")
	}
	pubAdmin.publish(t, "secret/x", 0, false, "now-readable")
	if m := alice.next(t); m.Topic != "secret/x" || m.Payload != "now-readable" {
		t.Fatalf("after the reload alice got %+v", m)
	}
	pubAdmin.publish(t, "open/y", 0, false, "up")
	if m := cloud.next(t); m.Topic != "site1/open/y" {
		t.Fatalf("upstream got %+v", m)
	}
	if m := alice.next(t); m.Topic != "open/y" {
		t.Fatalf("alice got %+v", m)
	}

	// An invalid file is refused and the running configuration kept.
	set(func(c *gateway.Config) error {
		return errors.New("config hub.yaml:3: acl.alice rule 1: action \"fly\"")
	})
	if s, b := reload("admin", "adminpw"); s != http.StatusBadRequest || !strings.Contains(b, "running configuration is kept") {
		t.Fatalf("reload of a bad file: %d %s", s, b)
	}
	set(func(c *gateway.Config) error {
		c.ACL = map[string][]adapters.ACLRule{"alice": {{Action: "fly", Filter: "#", Allow: true}}}
		return nil
	})
	if s, b := reload("admin", "adminpw"); s != http.StatusBadRequest || !strings.Contains(b, "running configuration is kept") {
		t.Fatalf("reload of a bad rule: %d %s", s, b)
	}
	pubAdmin.publish(t, "secret/x", 0, false, "still-readable")
	if m := alice.next(t); m.Payload != "still-readable" {
		t.Fatalf("after a refused reload alice got %+v", m)
	}

	// Removing the bridge stops it.
	set(func(c *gateway.Config) error { return nil })
	if s, b := reload("admin", "adminpw"); s != http.StatusOK || !strings.Contains(b, "bridge cloud: removed") {
		t.Fatalf("reload removing the bridge: %d %s", s, b)
	}
	if err := h.BridgeHealthy("cloud"); err == nil {
		t.Error("the removed bridge is still there")
	}
	if !alice.IsConnectionOpen() {
		t.Fatal("alice's connection dropped by the second reload")
	}
}
