package e2e

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// TestMQTTOverWebSocket: the listener --mqtt-ws-addr starts takes a paho
// client over ws://, whose publish reaches a TCP subscriber and the other
// way round, under the same login as the TCP listener.
func TestMQTTOverWebSocket(t *testing.T) {
	t.Parallel()
	h := hubtest.Start(t, func(c *gateway.Config) { c.MQTT.WSAddr = "127.0.0.1:0" })
	tcp := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "tcp-side", "alice", "alicepw", true)
	tcp.subscribe(t, "ws/#", 1)

	got := make(chan mqttMessage, 16)
	opts := paho.NewClientOptions().AddBroker("ws://" + h.Addr(t, "mqtt.ws") + "/mqtt").SetClientID("browser").
		SetUsername("alice").SetPassword("alicepw").SetAutoReconnect(false).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			got <- mqttMessage{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
		})
	ws := paho.NewClient(opts)
	if tok := ws.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect over ws: %v", tok.Error())
	}
	t.Cleanup(func() { ws.Disconnect(100) })
	if tok := ws.Subscribe("tcp/#", 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe over ws: %v", tok.Error())
	}
	if tok := ws.Publish("ws/temp", 1, false, "21.5"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish over ws: %v", tok.Error())
	}
	if m := tcp.next(t); m.Topic != "ws/temp" || m.Payload != "21.5" {
		t.Fatalf("tcp subscriber got %+v", m)
	}
	tcp.publish(t, "tcp/cmd", 1, false, "on")
	select {
	case m := <-got:
		if m.Topic != "tcp/cmd" || m.Payload != "on" || m.QoS != 1 {
			t.Fatalf("ws subscriber got %+v", m)
		}
	case <-time.After(wait):
		t.Fatal("ws subscriber: nothing")
	}
	// A wrong password is refused over WebSocket too.
	bad := paho.NewClient(paho.NewClientOptions().AddBroker("ws://" + h.Addr(t, "mqtt.ws") + "/mqtt").SetClientID("intruder").
		SetUsername("alice").SetPassword("nope").SetAutoReconnect(false).SetConnectTimeout(wait))
	tok := bad.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("connect with a wrong password over ws: no answer")
	}
	if tok.Error() == nil {
		bad.Disconnect(0)
		t.Fatal("a wrong password connected over ws")
	}
	// The refusing CONNACK gets out before the WebSocket closes.
	if !strings.Contains(tok.Error().Error(), "bad user name or password") {
		t.Errorf("wrong password over ws: %v, want the CONNACK's bad user name or password", tok.Error())
	}
}
