package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/hubtest"
)

func TestHealthAndMetrics(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	code, body, _ := httpDo(t, http.MethodGet, base+"/healthz", "", "")
	if code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	// The body names every listener and its state, and the store's.
	var report adapters.HealthReport
	if err := json.Unmarshal([]byte(body), &report); err != nil {
		t.Fatalf("/healthz body %q: %v", body, err)
	}
	if report.Status != adapters.HealthOK || report.Store == nil || !report.Store.IntegrityOK {
		t.Errorf("/healthz report %+v", report)
	}
	seen := map[string]string{}
	for _, l := range report.Listeners {
		seen[l.Adapter+"."+l.Name] = l.State
		if l.Addr != h.Addrs()[l.Adapter+"."+l.Name] {
			t.Errorf("listener %s.%s at %s, bound %s", l.Adapter, l.Name, l.Addr, h.Addrs()[l.Adapter+"."+l.Name])
		}
	}
	for _, name := range []string{"mqtt.mqtt", "xmpp.xmpp", "rest.http"} {
		if seen[name] != adapters.ListenerAccepting {
			t.Errorf("/healthz: listener %s is %q; all: %v", name, seen[name], seen)
		}
	}
	c := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "m1", "", "", true)
	c.publish(t, "metrics/x", 1, false, "1")
	code, body, _ = httpDo(t, http.MethodGet, base+"/metrics", "", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, name := range []string{"hub_bus_published_total", "go_goroutines",
		"hub_mqtt_accept_errors_total 0", "hub_xmpp_accept_errors_total 0", "hub_rest_accept_errors_total 0"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestMQTTQoSAcrossClients checks delivery QoS = min(publish, subscription)
// through the hub's embedded broker.
func TestMQTTQoSAcrossClients(t *testing.T) {
	h := hubtest.Start(t)
	addr := h.Addr(t, "mqtt.mqtt")
	sub := dialMQTT(t, addr, "sub", "alice", "alicepw", true)
	sub.subscribe(t, "q/#", 1)
	pub := dialMQTT(t, addr, "pub", "admin", "adminpw", true)
	for _, qos := range []byte{0, 1, 2} {
		pub.publish(t, "q/x", qos, false, "v")
		m := sub.next(t)
		if want := min(qos, 1); m.QoS != want {
			t.Errorf("publish at QoS %d arrived at QoS %d, want %d", qos, m.QoS, want)
		}
	}
}

func TestRESTToMQTTAndBack(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	sub := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "sub", "", "", true)
	sub.subscribe(t, "rooms/+/temp", 2)

	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/topics/rooms/kitchen/temp?qos=1", "application/json", `{"t":21.5}`)
	if code != http.StatusOK {
		t.Fatalf("REST publish QoS 1 = %d %s", code, body)
	}
	m := sub.next(t)
	if m.Topic != "rooms/kitchen/temp" || m.Payload != `{"t":21.5}` || m.QoS != 1 {
		t.Fatalf("MQTT subscriber got %+v", m)
	}

	// MQTT → SSE.
	sse := openSSE(t, base+"/api/v1/subscribe?filter=rooms/%23")
	time.Sleep(100 * time.Millisecond) // let the stream's subscription attach
	sub.publish(t, "rooms/hall/temp", 1, false, "19")
	var ev struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
		QoS     int    `json:"qos"`
		Origin  struct {
			Protocol string `json:"protocol"`
		} `json:"origin"`
	}
	for {
		if err := json.Unmarshal([]byte(sse.next(t)), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Topic == "rooms/hall/temp" {
			break
		}
	}
	if ev.Payload != "19" || ev.Origin.Protocol != "mqtt" || ev.QoS != 1 {
		t.Fatalf("SSE event %+v", ev)
	}
}

func TestRetainedAcrossProtocolsAndRestart(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	pub := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "pub", "", "", true)
	pub.publish(t, "state/door", 1, true, "open")

	eventually(t, "retained value over REST", func() bool {
		code, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/topics/state/door", "", "")
		return code == http.StatusOK && body == "open"
	})
	code, _, _ := httpDo(t, http.MethodPost, base+"/api/v1/topics/state/window?retain=true&qos=1", "text/plain", "shut")
	if code != http.StatusOK && code != http.StatusCreated {
		t.Fatalf("REST retained publish = %d", code)
	}
	cfg := h.Config
	h.Close(t)

	h2 := hubtest.StartConfig(t, cfg)
	late := dialMQTT(t, h2.Addr(t, "mqtt.mqtt"), "late", "", "", true)
	late.subscribe(t, "state/+", 1)
	got := map[string]string{}
	for range 2 {
		m := late.next(t)
		if !m.Retained {
			t.Errorf("%s arrived without the retain flag", m.Topic)
		}
		got[m.Topic] = m.Payload
	}
	if got["state/door"] != "open" || got["state/window"] != "shut" {
		t.Fatalf("retained after restart: %v", got)
	}
}

func TestPersistentSessionAcrossRestart(t *testing.T) {
	h := hubtest.Start(t)
	addr := h.Addr(t, "mqtt.mqtt")
	s := dialMQTT(t, addr, "persist", "alice", "alicepw", false)
	s.subscribe(t, "p/#", 1)
	s.Disconnect(100)

	pub := dialMQTT(t, addr, "pub", "", "", true)
	for _, v := range []string{"1", "2", "3"} {
		pub.publish(t, "p/x", 1, false, v)
	}
	pub.Disconnect(100)
	cfg := h.Config
	cfg.MQTT.Addr = addr // the same port, as a device would reconnect
	h.Close(t)

	h2 := hubtest.StartConfig(t, cfg)
	s2 := dialMQTT(t, h2.Addr(t, "mqtt.mqtt"), "persist", "alice", "alicepw", false)
	for _, want := range []string{"1", "2", "3"} {
		if m := s2.next(t); m.Payload != want {
			t.Fatalf("queued message %q, want %q", m.Payload, want)
		}
	}
}
