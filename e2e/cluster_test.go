package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/hubsmith/hub/broker/natsbus"
	"github.com/hubsmith/hub/cluster"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// freePorts returns n loopback addresses free a moment ago, for the
// cluster's routes, which every node must know before any starts.
func freePorts(t *testing.T, n int) []string {
	var out []string
	for _, p := range hubtest.FreePorts(t, n) {
		out = append(out, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	return out
}

// clusterConfigs are the configurations of three hubs, each embedding a
// NATS node of one JetStream cluster with replicas 3.
func clusterConfigs(t *testing.T) []gateway.Config {
	routes := freePorts(t, 3)
	var cfgs []gateway.Config
	for i, name := range []string{"a", "b", "c"} {
		cfg := gateway.Defaults()
		cfg.DataDir = t.TempDir()
		cfg.Node = name
		cfg.MQTT.Addr, cfg.CoAP.Addr, cfg.XMPP.Addr, cfg.HTTP.Addr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.ShutdownTimeout = 5 * time.Second
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		cfg.Cluster = cluster.Config{Name: "hubs", NodeName: name, Listen: routes[i], Routes: others}
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

// startCluster starts hubs at once: each waits for a JetStream quorum.
func startCluster(t *testing.T, cfgs []gateway.Config) []*hubtest.Hub {
	t.Helper()
	hubs := make([]*hubtest.Hub, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hubs[i] = hubtest.StartConfig(t, cfg)
		}()
	}
	wg.Wait()
	for _, h := range hubs {
		if h == nil {
			t.FailNow()
		}
	}
	return hubs
}

// TestClusterOfThree: three hubs in one JetStream cluster share one bus.
// An MQTT publish on A reaches MQTT and XMPP on B and a CoAP observer on
// C, once each; a retained value set on A is read on B; a persistent MQTT
// session made on A is resumed on B with what was published meanwhile on
// C; with two of three nodes gone QoS 1 is refused with each protocol's
// storage error and QoS 0 goes on, and once they are back QoS 1 is taken
// again.
func TestClusterOfThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	cfgs := clusterConfigs(t)
	hubs := startCluster(t, cfgs)
	a, b, c := hubs[0], hubs[1], hubs[2]

	mqB := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "watcher", "", "", true)
	mqB.subscribe(t, "house/#", 1)
	chat := dialXMPP(t, b.Addr(t, "xmpp"), "alice", "alicepw")
	chat.subscribeTopic(t, "house.attic.hum@topics.localhost")
	cc := dialCoAP(t, c.Addr(t, "coap"))
	notes := make(chan string, 16)
	obs, err := cc.Observe(ctx(t), "/ps/house/+/hum", observeInto(notes))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx(t)) }()
	time.Sleep(200 * time.Millisecond) // the subscriptions reach every node's interest graph

	mqA := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "sensor", "", "", true)
	mqA.publish(t, "house/attic/hum", 1, false, "55")
	if m := mqB.next(t); m.Topic != "house/attic/hum" || m.Payload != "55" || m.QoS != 1 {
		t.Fatalf("MQTT on B got %+v", m)
	}
	if msg := chat.expect(t, "MQTT reading from A in chat on B", messageFrom("house.attic.hum@topics.localhost")); msg.Body != "55" {
		t.Fatalf("chat body %q", msg.Body)
	}
	deadline := time.After(wait)
	for got := false; !got; {
		select {
		case n := <-notes:
			got = n == "55"
		case <-deadline:
			t.Fatal("CoAP observer on C got no notification")
		}
	}
	mqB.none(t, 200*time.Millisecond) // exactly one delivery, no loop

	// Retained on A, read on B.
	mqA.publish(t, "house/attic/state", 1, true, "open")
	eventually(t, "the retained value on B", func() bool {
		code, body, _ := httpDo(t, http.MethodGet, "http://"+b.Addr(t, "rest")+"/api/v1/topics/house/attic/state", "", "")
		return code == http.StatusOK && strings.Contains(body, "open")
	})
	<-mqB.msgs // the retained publish itself

	// A persistent session made on A, resumed on B with its queue.
	sess := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "roamer", "", "", false)
	sess.subscribe(t, "roam/#", 1)
	sess.Disconnect(100)
	eventually(t, "the session detached on A", func() bool { return !a.Bus.(*natsbus.Bus).Attached("mqtt:roamer") })
	for i := range 3 {
		code, body, _ := httpDo(t, http.MethodPost, "http://"+c.Addr(t, "rest")+"/api/v1/topics/roam/x?qos=1", "text/plain", fmt.Sprint(i))
		if code/100 != 2 {
			t.Fatalf("QoS 1 publish on C: %d %s", code, body)
		}
	}
	back := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "roamer", "", "", false)
	for i := range 3 {
		if m := back.next(t); m.Topic != "roam/x" || m.Payload != fmt.Sprint(i) {
			t.Fatalf("resumed session on B, message %d: %+v", i, m)
		}
	}
	back.Disconnect(100)

	// Quorum lost: B and C go.
	b.Close(t)
	c.Close(t)
	restA := "http://" + a.Addr(t, "rest") + "/api/v1/topics/q/x"
	if code, body, _ := httpDo(t, http.MethodPost, restA+"?qos=1", "text/plain", "refused"); code != http.StatusInsufficientStorage {
		t.Fatalf("REST QoS 1 without a quorum: %d %s, want 507", code, body)
	}
	coapA := dialCoAP(t, a.Addr(t, "coap"))
	// The refusal comes once the write has waited PublishTimeout (5 s).
	slow, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := coapA.Post(slow, "/ps/q/x", message.TextPlain, strings.NewReader("refused"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.ServiceUnavailable {
		t.Fatalf("CoAP CON QoS 1 without a quorum: %v, want 5.03", resp.Code())
	}
	local := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "local", "", "", true)
	local.subscribe(t, "q/#", 0)
	if code, body, _ := httpDo(t, http.MethodPost, restA+"?qos=0", "text/plain", "still"); code/100 != 2 {
		t.Fatalf("REST QoS 0 without a quorum: %d %s", code, body)
	}
	if m := local.next(t); m.Payload != "still" {
		t.Fatalf("QoS 0 on A without a quorum: %+v", m)
	}

	// B and C come back: QoS 1 is taken again.
	startCluster(t, cfgs[1:])
	eventually(t, "QoS 1 accepted again", func() bool {
		code, _, _ := httpDo(t, http.MethodPost, restA+"?qos=1", "text/plain", "back")
		return code/100 == 2
	})
}

// TestHubsOnExternalNATS: two hubs given --nats URL of one NATS server
// (JetStream on) share the bus: an MQTT publish on A reaches B once, and
// a persistent session made on A resumes on B.
func TestHubsOnExternalNATS(t *testing.T) {
	srv := natsServer(t)
	var hubs []*hubtest.Hub
	for _, name := range []string{"a", "b"} {
		hubs = append(hubs, hubtest.Start(t, func(c *gateway.Config) { c.Node = name; c.NATS.URL = srv.ClientURL() }))
	}
	a, b := hubs[0], hubs[1]
	mqB := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "watcher", "", "", true)
	mqB.subscribe(t, "ext/#", 1)
	mqA := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "sensor", "", "", true)
	mqA.publish(t, "ext/t", 1, false, "21")
	if m := mqB.next(t); m.Topic != "ext/t" || m.Payload != "21" {
		t.Fatalf("MQTT on B got %+v", m)
	}
	mqB.none(t, 200*time.Millisecond)

	sess := dialMQTT(t, a.Addr(t, "mqtt.mqtt"), "roamer", "", "", false)
	sess.subscribe(t, "roam/#", 1)
	sess.Disconnect(100)
	// A client that moves hubs while its old connection lingers would
	// share its session between the two: wait until A let it go.
	eventually(t, "the session detached on A", func() bool { return !a.Bus.(*natsbus.Bus).Attached("mqtt:roamer") })
	mqA.publish(t, "roam/x", 1, false, "queued")
	back := dialMQTT(t, b.Addr(t, "mqtt.mqtt"), "roamer", "", "", false)
	if m := back.next(t); m.Payload != "queued" {
		t.Fatalf("resumed on B: %+v", m)
	}
}

// waitDeviceOn waits until hub h has the device id added on another hub
// and its login user: two changes, applied one after the other.
func waitDeviceOn(t *testing.T, h *hubtest.Hub, id string) {
	t.Helper()
	eventually(t, id+" and its login registered on the other hub", func() bool {
		_, err := h.Store.GetDevice(t.Context(), id)
		_, uerr := h.Store.GetUser(t.Context(), id)
		return err == nil && uerr == nil
	})
}

// TestDeviceCommandAcrossHubs: a device connected to hub B is online on
// hub A too, and a command sent over REST on A reaches it on B and its
// reply comes back. The device is registered on A only: the cluster
// shares it.
func TestDeviceCommandAcrossHubs(t *testing.T) {
	srv := natsServer(t)
	var hubs []*hubtest.Hub
	for _, name := range []string{"a", "b"} {
		hubs = append(hubs, hubtest.Start(t, func(c *gateway.Config) { c.Node = name; c.NATS.URL = srv.ClientURL() }))
	}
	a, b := hubs[0], hubs[1]
	baseA := "http://" + a.Addr(t, "rest")
	if s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices", "admin", "adminpw",
		`{"id":"lamp1","protocol":"mqtt","password":"lamppw"}`); s != http.StatusCreated {
		t.Fatalf("add device on a: %d %s", s, body)
	}
	waitDeviceOn(t, b, "lamp1")
	if s, _ := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices/lamp1/commands/toggle?timeout=2s", "admin", "adminpw", ""); s != http.StatusServiceUnavailable {
		t.Fatalf("command to a device online nowhere: %d, want 503", s)
	}
	startACLDevice(t, b)
	eventually(t, "lamp1 online on A", func() bool {
		_, body := httpAsBody(t, http.MethodGet, baseA+"/api/v1/devices/lamp1", "admin", "adminpw", "")
		return strings.Contains(body, `"online":true`)
	})
	s, body := httpAsBody(t, http.MethodPost, baseA+"/api/v1/devices/lamp1/commands/toggle?timeout=5s", "admin", "adminpw", `{"on":true}`)
	if s != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("command on A to the device on B: %d %s", s, body)
	}
}
