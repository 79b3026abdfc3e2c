package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
	"github.com/hubsmith/hub/rest"
)

// TestOverview reads GET /api/v1/admin/overview of a running hub after
// real traffic: a device online over MQTT with a retained reading, QoS 1
// publishes counted in and out, a refused MQTT login raising the
// failed-logins alarm, and a bridge whose upstream is down queueing what
// it should forward, with the age of the oldest.
func TestOverview(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.Bridges = []bridge.Config{{Name: "cloud", URL: "tcp://user:secret@127.0.0.1:1", Out: []bridge.Rule{{Filter: "up/#"}}}}
	})
	base := "http://" + loopback(t, h.Addr(t, "rest.http"))
	mqttAddr := loopback(t, h.Addr(t, "mqtt.mqtt"))
	if s, b, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"meter1","protocol":"mqtt","password":"meterpw"}`); s != http.StatusCreated {
		t.Fatalf("add device: %d %s", s, b)
	}
	dev := dialMQTT(t, mqttAddr, "meter1", "meter1", "meterpw", true)
	dev.publish(t, "devices/meter1/power", 1, true, "230.5")
	dev.publish(t, "devices/meter1/responses/old", 1, true, `{"not":"a reading"}`)
	sub := dialMQTT(t, mqttAddr, "watcher", "admin", "adminpw", true)
	sub.subscribe(t, "up/#", 1)
	before := time.Now().UTC()
	sub.publish(t, "up/energy", 1, false, "1")
	sub.next(t)

	bad := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("intruder").
		SetUsername("admin").SetPassword("wrong").SetAutoReconnect(false).SetConnectTimeout(wait))
	if tok := bad.Connect(); tok.WaitTimeout(wait) && tok.Error() == nil {
		bad.Disconnect(0)
		t.Fatal("a wrong password connected")
	}

	var o rest.Overview
	eventually(t, "the overview to show it all", func() bool {
		s, b, _ := httpDo(t, http.MethodGet, base+"/api/v1/admin/overview", "", "")
		if s != http.StatusOK {
			t.Fatalf("overview: %d %s", s, b)
		}
		o = rest.Overview{}
		if err := json.Unmarshal([]byte(b), &o); err != nil {
			t.Fatalf("overview: %v in %s", err, b)
		}
		return len(o.Bridges) == 1 && o.Bridges[0].Queued == 1 && len(o.Devices) == 1 && o.Devices[0].Online
	})
	if o.Status != "ok" || len(o.Listeners) < 3 || o.Node == "" {
		t.Errorf("status %q, %d listeners, node %q", o.Status, len(o.Listeners), o.Node)
	}
	hh := o.Host
	if hh.MemTotal == 0 || hh.MemAvailable > hh.MemTotal || hh.DiskTotal == 0 || hh.DiskFree > hh.DiskTotal ||
		hh.ProcessRSS == 0 || hh.UptimeSeconds <= 0 || hh.HostUptimeSeconds <= 0 || hh.CPUs < 1 || hh.Goroutines < 1 ||
		hh.CPUPercent < 0 || hh.CPUPercent > 100 {
		t.Errorf("host health: %+v", hh)
	}
	d := o.Devices[0]
	if d.ID != "meter1" || d.Last == nil || d.Last.Topic != "devices/meter1/power" || d.Last.Payload != "230.5" {
		t.Errorf("device: %+v last %+v", d.Device, d.Last)
	}
	br := o.Bridges[0]
	if br.Connected || br.Error == "" || br.URL != "tcp://user@127.0.0.1:1" || br.OldestQueued == nil ||
		br.OldestQueued.Before(before.Add(-time.Second)) || br.OldestQueued.After(time.Now().Add(time.Second)) {
		t.Errorf("bridge: %+v", br)
	}
	clients := map[string]int{}
	for _, c := range o.Clients {
		clients[c.Protocol] = c.Connected
	}
	if clients["mqtt"] != 2 {
		t.Errorf("clients: %v, want mqtt 2", o.Clients)
	}
	flow := func(proto string, qos byte) (in, out uint64) {
		for _, f := range o.Traffic {
			if f.Protocol == proto && f.QoS == qos {
				return f.In, f.Out
			}
		}
		return 0, 0
	}
	if in, out := flow("mqtt", 1); in < 3 || out < 1 {
		t.Errorf("mqtt QoS 1: in %d out %d, want >= 3 and >= 1; traffic %+v", in, out, o.Traffic)
	}
	if !slices.ContainsFunc(o.Alarms, func(a rest.Alarm) bool { return a.ID == "failed_logins" && a.Severity == rest.AlarmWarning }) {
		t.Errorf("no failed-logins alarm: %+v", o.Alarms)
	}

	// Only admins read it.
	if s, b, _ := httpDo(t, http.MethodGet, "http://alice:alicepw@"+loopback(t, h.Addr(t, "rest.http"))+"/api/v1/admin/overview", "", ""); s != http.StatusForbidden {
		t.Errorf("overview as a user: %d %s", s, b)
	}
}
