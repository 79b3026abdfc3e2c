package e2e

import (
	"net/http"
	"testing"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestRoleChangeAppliesAtOnce: an admin connected over MQTT and reading
// another device's command topic (which only admins and the device may)
// is demoted over REST; the very next command published there no longer
// reaches it, and its next REST administration is refused, with no wait
// for a cache to expire.
func TestRoleChangeAppliesAtOnce(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.MQTT.Addr, c.HTTP.Addr = "0.0.0.0:0", "0.0.0.0:0"
	})
	base := "http://" + loopback(t, h.Addr(t, "rest"))
	if s, b := httpAsBody(t, http.MethodPost, base+"/api/v1/users", "admin", "adminpw", `{"name":"ops","password":"opspw","role":"admin"}`); s != http.StatusCreated {
		t.Fatalf("add ops: %d %s", s, b)
	}
	mq := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "ops-console", "ops", "opspw", true)
	mq.subscribe(t, "devices/lamp1/commands/#", 0)
	pub := dialMQTT(t, loopback(t, h.Addr(t, "mqtt.mqtt")), "admin-console", "admin", "adminpw", true)
	pub.publish(t, "devices/lamp1/commands/on", 0, false, "1")
	if m := mq.next(t); m.Payload != "1" {
		t.Fatalf("admin read %+v", m)
	}
	if s, _ := httpAs(t, http.MethodGet, base+"/api/v1/users", "ops", "opspw"); s != http.StatusOK {
		t.Fatalf("ops lists users as admin: %d", s)
	}
	for _, tt := range []struct {
		body   string
		status int
	}{{`{"role":"boss"}`, http.StatusBadRequest}, {`{}`, http.StatusBadRequest}, {`{"role":"user"}`, http.StatusOK}} {
		if s, b := httpAsBody(t, http.MethodPatch, base+"/api/v1/users/ops", "admin", "adminpw", tt.body); s != tt.status {
			t.Fatalf("PATCH %s: %d %s, want %d", tt.body, s, b, tt.status)
		}
	}
	if s, b := httpAsBody(t, http.MethodPatch, base+"/api/v1/users/nobody", "admin", "adminpw", `{"role":"user"}`); s != http.StatusNotFound {
		t.Fatalf("PATCH an unknown user: %d %s", s, b)
	}
	pub.publish(t, "devices/lamp1/commands/on", 0, false, "2")
	pub.publish(t, "public/marker", 0, false, "m")
	if s, _ := httpAs(t, http.MethodGet, base+"/api/v1/users", "ops", "opspw"); s != http.StatusForbidden {
		t.Errorf("demoted ops lists users: %d, want 403", s)
	}
	// The marker, which a user may read, shows the command was skipped.
	mq.subscribe(t, "public/#", 0)
	pub.publish(t, "public/marker", 0, false, "m2")
	if m := mq.next(t); m.Payload != "m2" {
		t.Fatalf("after the demotion ops got %+v, want only the public marker", m)
	}
}
