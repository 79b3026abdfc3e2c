package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// startQuotaHub starts a hub with listeners on 0.0.0.0 (so every client
// logs in), the given limits, and users greedy and bob besides alice.
func startQuotaHub(t *testing.T, l gateway.StorageLimits) *hubtest.Hub {
	t.Helper()
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.MQTT.Addr, c.CoAP.Addr, c.HTTP.Addr, c.XMPP.Addr = "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"
		c.AllowAnonymous = true // CoAP below publishes anonymously
		c.ACL = map[string][]adapters.ACLRule{adapters.AnonymousName: {{Action: "all", Filter: "anon/#", Allow: true}}}
		c.Limits.Storage = l
	})
	for _, u := range []string{"greedy", "bob"} {
		if err := h.Store.AddUser(t.Context(), u, u+"pw", adapters.RoleUser); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// mqtt5 is an MQTT 5 client (paho.golang) logged in as user.
func mqtt5(t *testing.T, addr, id, user, pass string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("mqtt 5 connect %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// puback publishes at QoS 1 and returns the PUBACK's reason code.
func puback(t *testing.T, c *paho.Client, topic string, retain bool, payload []byte) byte {
	t.Helper()
	pctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	pr, err := c.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: payload})
	if pr == nil {
		t.Fatalf("mqtt 5 publish %s: %v", topic, err)
	}
	return pr.ReasonCode
}

const reasonQuotaExceeded = 0x97

// TestRetainedQuotaE2E: past a user's retained bound a retained publish
// is refused with each protocol's storage error (MQTT 5 PUBACK 0x97, REST
// 507 with a JSON error, CoAP 5.03), another user goes on, and clearing a
// value frees its share.
func TestRetainedQuotaE2E(t *testing.T) {
	h := startQuotaHub(t, gateway.StorageLimits{RetainedPerUser: 3, RetainedBytesPerUser: 64 << 10})
	mq := loopback(t, h.Addr(t, "mqtt"))
	rest := "http://" + loopback(t, h.Addr(t, "rest"))
	g := mqtt5(t, mq, "greedy-pub", "greedy", "greedypw")
	for _, topic := range []string{"g/1", "g/2", "g/3"} {
		if rc := puback(t, g, topic, true, []byte("v")); rc != 0 {
			t.Fatalf("retained %s under the bound: reason 0x%02x", topic, rc)
		}
	}
	if rc := puback(t, g, "g/4", true, []byte("v")); rc != reasonQuotaExceeded {
		t.Errorf("MQTT 5 retained publish past the bound: reason 0x%02x, want 0x97", rc)
	}
	// Bytes: one value of 100 KiB is past 64 KiB whatever the count.
	if rc := puback(t, mqtt5(t, mq, "bob-pub", "bob", "bobpw"), "b/big", true, make([]byte, 100<<10)); rc != reasonQuotaExceeded {
		t.Errorf("MQTT 5 retained publish past the byte bound: reason 0x%02x, want 0x97", rc)
	}
	// REST, as greedy: 507 and a JSON error that says why.
	s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/g/5?qos=1&retain=true", "greedy", "greedypw", "v")
	if s != http.StatusInsufficientStorage || !strings.Contains(body, "quota") {
		t.Errorf("REST retained publish past the bound: %d %s, want 507 naming the quota", s, body)
	}
	// A non-retained publish of the same user still goes.
	if rc := puback(t, g, "g/live", false, []byte("v")); rc != 0 {
		t.Errorf("greedy's live publish: reason 0x%02x", rc)
	}
	// Alice is not greedy.
	if s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/a/1?qos=1&retain=true", "alice", "alicepw", "v"); s != http.StatusOK {
		t.Errorf("alice's retained publish: %d %s", s, body)
	}
	// Clearing one of greedy's values frees its share.
	if s, body := httpAsBody(t, http.MethodDelete, rest+"/api/v1/topics/g/1", "greedy", "greedypw", ""); s != http.StatusNoContent {
		t.Fatalf("clear g/1: %d %s", s, body)
	}
	if rc := puback(t, g, "g/4", true, []byte("v")); rc != 0 {
		t.Errorf("retained publish after a clear: reason 0x%02x", rc)
	}

	// CoAP, anonymous (the anonymous principal has the same bound): PUT
	// sets a retained value, 5.03 past the bound.
	cc := dialCoAP(t, loopback(t, h.Addr(t, "coap")))
	for i, want := range []codes.Code{codes.Changed, codes.Changed, codes.Changed, codes.ServiceUnavailable} {
		cctx, cancel := context.WithTimeout(t.Context(), wait)
		resp, err := cc.Put(cctx, "/ps/anon/"+string(rune('a'+i)), message.TextPlain, strings.NewReader("v"))
		cancel()
		if err != nil {
			t.Fatalf("coap put %d: %v", i, err)
		}
		if resp.Code() != want && !(want == codes.Changed && resp.Code() == codes.Created) {
			t.Errorf("CoAP PUT %d: %v, want %v", i+1, resp.Code(), want)
		}
	}
}

// TestQueuedQuotaE2E: a user with persistent sessions that are away runs
// into its queued-bytes quota: its own QoS 1 publishes get PUBACK 0x97
// and REST 507, while another user's QoS 1 goes through over MQTT and
// REST, to the same topic too (the greedy sessions drop it, counted).
func TestQueuedQuotaE2E(t *testing.T) {
	h := startQuotaHub(t, gateway.StorageLimits{QueuedBytesPerUser: 64 << 10})
	mq := loopback(t, h.Addr(t, "mqtt"))
	rest := "http://" + loopback(t, h.Addr(t, "rest"))
	for _, id := range []string{"g1", "g2", "g3", "g4"} {
		c := dialMQTT(t, mq, id, "greedy", "greedypw", false)
		c.subscribe(t, "share/#", 1)
		c.Disconnect(100)
	}
	a := dialMQTT(t, mq, "alice-away", "alice", "alicepw", false)
	a.subscribe(t, "share/#", 1)
	a.Disconnect(100)

	g := mqtt5(t, mq, "greedy-pub", "greedy", "greedypw")
	payload := make([]byte, 10<<10) // 4 copies a publish: 40 KiB of 64
	refusedAt := 0
	for i := 1; i <= 10 && refusedAt == 0; i++ {
		switch rc := puback(t, g, "share/x", false, payload); rc {
		case 0:
		case reasonQuotaExceeded:
			refusedAt = i
		default:
			t.Fatalf("greedy publish %d: reason 0x%02x", i, rc)
		}
	}
	if refusedAt != 2 {
		t.Fatalf("greedy's publish refused at %d, want 2 (4 × 10 KiB a publish, 64 KiB quota)", refusedAt)
	}
	s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/share/x?qos=1", "greedy", "greedypw", string(payload))
	if s != http.StatusInsufficientStorage {
		t.Errorf("greedy's REST QoS 1: %d %s, want 507", s, body)
	}
	// Alice goes on, to the same topic (queued for her, dropped for
	// greedy's sessions) and to her own.
	al := mqtt5(t, mq, "alice-pub", "alice", "alicepw")
	for _, topic := range []string{"share/x", "alice/x"} {
		if rc := puback(t, al, topic, false, payload); rc != 0 {
			t.Errorf("alice's MQTT QoS 1 to %s with greedy over quota: reason 0x%02x", topic, rc)
		}
		if s, body := httpAsBody(t, http.MethodPost, rest+"/api/v1/topics/"+topic+"?qos=1", "bob", "bobpw", "v"); s != http.StatusOK {
			t.Errorf("bob's REST QoS 1 to %s: %d %s", topic, s, body)
		}
	}
	// Alice's session got all of it: greedy's first and both of hers.
	a = dialMQTT(t, mq, "alice-away", "alice", "alicepw", false)
	got := map[string]int{}
	for range 3 {
		m := a.next(t)
		got[m.Topic]++
	}
	if got["share/x"] != 3 {
		t.Errorf("alice's session received %v, want 3 on share/x (greedy's 1, alice's 1, bob's 1)", got)
	}
	// The figures are in /metrics.
	_, metrics := httpAsBody(t, http.MethodGet, rest+"/metrics", "admin", "adminpw", "")
	// Alice's 10 KiB took two of greedy's sessions past the quota (41 +
	// 10 + 10 KiB fits in 64, a third does not): those two dropped it.
	for _, m := range []string{"hub_quota_refused_total 2", "hub_quota_dropped_total 2", "hub_queued_bytes "} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
}

// TestHealthDiskPressure: /healthz names the store's disk figures; under
// limits.disk_free_min it is "degraded" with a warning and still 200.
func TestHealthDiskPressure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     int64
		status  string
		warning bool
	}{
		{"room", -1, adapters.HealthOK, false},
		{"pressure", 1 << 60, adapters.HealthDegraded, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hubtest.Start(t, func(c *gateway.Config) { c.Limits.Storage.DiskFreeMin = tc.min })
			rest := "http://" + h.Addr(t, "rest")
			var r adapters.HealthReport
			eventually(t, "healthz answers "+tc.status, func() bool {
				code, body, _ := httpDo(t, http.MethodGet, rest+"/healthz", "", "")
				if err := json.Unmarshal([]byte(body), &r); err != nil {
					t.Fatalf("healthz body %q: %v", body, err)
				}
				return code == http.StatusOK && r.Status == tc.status
			})
			if r.Store == nil || r.Store.DiskFree == 0 || r.Store.DiskTotal == 0 || r.Store.WriteFailing || r.Store.DiskPressure != tc.warning {
				t.Errorf("store health %+v", r.Store)
			}
			if got := len(r.Warnings) > 0 && strings.Contains(r.Warnings[0], "disk_free_min"); got != tc.warning {
				t.Errorf("warnings %v, want a disk warning: %v", r.Warnings, tc.warning)
			}
			_, metrics, _ := httpDo(t, http.MethodGet, rest+"/metrics", "", "")
			for _, m := range []string{"hub_disk_free_bytes ", "hub_store_write_failing 0"} {
				if !strings.Contains(metrics, m) {
					t.Errorf("/metrics lacks %q", m)
				}
			}
		})
	}
}
