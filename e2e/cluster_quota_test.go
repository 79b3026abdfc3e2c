package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestRetainedQuotaAcrossHubs: on hubs sharing a NATS bus, the retained
// values a user set on hub A count on hub B: past the user's bound, B
// refuses the next one with MQTT 5 PUBACK 0x97 and REST 507, as one hub
// alone does; another user goes on.
func TestRetainedQuotaAcrossHubs(t *testing.T) {
	srv := natsServer(t)
	var hubs []*hubtest.Hub
	for _, name := range []string{"a", "b"} {
		hubs = append(hubs, hubtest.Start(t, func(c *gateway.Config) {
			c.Node = name
			c.NATS.URL = srv.ClientURL()
			c.MQTT.Addr, c.HTTP.Addr = "0.0.0.0:0", "0.0.0.0:0"
			c.Limits.Storage = gateway.StorageLimits{RetainedPerUser: 2}
		}))
	}
	a, b := hubs[0], hubs[1]
	addUserEverywhere(t, "greedy", "greedypw", a, b)
	onA := mqtt5(t, loopback(t, a.Addr(t, "mqtt")), "greedy-a", "greedy", "greedypw")
	for _, topic := range []string{"g/1", "g/2"} {
		if rc := puback(t, onA, topic, true, []byte("v")); rc != 0 {
			t.Fatalf("retained %s on A under the bound: reason 0x%02x", topic, rc)
		}
	}
	onB := mqtt5(t, loopback(t, b.Addr(t, "mqtt")), "greedy-b", "greedy", "greedypw")
	within(t, "B refuses greedy's third retained value", 10*time.Second, func() bool {
		return puback(t, onB, "g/3", true, []byte("v")) == reasonQuotaExceeded
	})
	rest := "http://" + loopback(t, b.Addr(t, "rest"))
	if s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/g/4?qos=1&retain=true", "greedy", "greedypw", "v"); s != http.StatusInsufficientStorage || !strings.Contains(body, "quota") {
		t.Errorf("REST retained publish on B past the bound: %d %s, want 507 naming the quota", s, body)
	}
	if s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/a/1?qos=1&retain=true", "alice", "alicepw", "v"); s != http.StatusOK {
		t.Errorf("alice's retained publish on B: %d %s", s, body)
	}
}
