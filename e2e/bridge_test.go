package e2e

import (
	"io"
	"log/slog"
	"net"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// startUpstream runs a plain MQTT broker standing in for a cloud broker.
func startUpstream(t *testing.T) string {
	t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return addr
}

// TestBridgeToUpstream: a bridge from the hub's YAML configuration carries
// hub readings up (with a prefix) and upstream commands down, and a CoAP or
// MQTT client on the hub sees the commands.
func TestBridgeToUpstream(t *testing.T) {
	up := startUpstream(t)
	qos := byte(1)
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.Bridges = []bridge.Config{{
			Name: "cloud", URL: "tcp://" + up, ClientID: "site1", QoS: &qos,
			In:  []bridge.Rule{{Filter: "cmd/#", LocalPrefix: "cloud/"}},
			Out: []bridge.Rule{{Filter: "sensors/#", RemotePrefix: "site1/"}},
		}}
	})
	cloud := dialMQTT(t, up, "cloud-app", "", "", true)
	cloud.subscribe(t, "site1/#", 1)
	local := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "local", "", "", true)
	local.subscribe(t, "cloud/#", 1)
	eventually(t, "bridge connected", func() bool { return bridgeUp(h) })

	local.publish(t, "sensors/t1", 1, false, "20.1")
	if m := cloud.next(t); m.Topic != "site1/sensors/t1" || m.Payload != "20.1" {
		t.Fatalf("upstream got %+v", m)
	}
	cloud.publish(t, "cmd/lamp", 1, false, "on")
	if m := local.next(t); m.Topic != "cloud/cmd/lamp" || m.Payload != "on" {
		t.Fatalf("hub got %+v", m)
	}
	cloud.none(t, 200*1e6) // the command did not echo back up
}

func bridgeUp(h *hubtest.Hub) bool { return h.Healthy() == nil && h.BridgeHealthy("cloud") == nil }

// TestRemovedFeedsForgotten: the durable queue of a bridge taken out of the
// configuration is dropped at start.
func TestRemovedFeedsForgotten(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) {
		c.Bridges = []bridge.Config{{Name: "gone", URL: "tcp://127.0.0.1:1", Out: []bridge.Rule{{Filter: "x/#"}}}}
	})
	has := func(h *hubtest.Hub, id string) bool {
		subs, err := h.Store.LoadSubscriptions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range subs {
			if d.ID == id {
				return true
			}
		}
		return false
	}
	if !has(h, "bridge:gone") {
		t.Fatal("the feeds' durable queues are not there to begin with")
	}
	cfg := h.Config
	h.Close(t)
	cfg.Bridges = nil
	cfg.MQTT.Addr = gateway.Off
	h2 := hubtest.StartConfig(t, cfg)
	if has(h2, "bridge:gone") {
		t.Fatal("durable queues of removed feeds were kept")
	}
}
