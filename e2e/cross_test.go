package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/hubsmith/hub/hubtest"
)

// TestCoAPReadingReachesEveryone: a CoAP sensor's POST reaches an MQTT
// subscriber, an SSE stream and a chat window.
func TestCoAPReadingReachesEveryone(t *testing.T) {
	h := hubtest.Start(t)
	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "dash", "", "", true)
	mq.subscribe(t, "sensors/#", 1)
	sse := openSSE(t, "http://"+h.Addr(t, "rest")+"/api/v1/subscribe?filter=sensors/%2B/temp")
	chat := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	chat.subscribeTopic(t, "sensors.room1.temp@topics.localhost")
	time.Sleep(100 * time.Millisecond)

	cc := dialCoAP(t, h.Addr(t, "coap"))
	resp, err := cc.Post(ctx(t), "/ps/sensors/room1/temp", message.TextPlain, strings.NewReader("21.5"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Changed {
		t.Fatalf("CoAP POST = %v, want 2.04 Changed", resp.Code())
	}
	if m := mq.next(t); m.Topic != "sensors/room1/temp" || m.Payload != "21.5" || m.QoS != 1 {
		t.Fatalf("MQTT got %+v, want the reading at QoS 1 (CON)", m)
	}
	if ev := sse.next(t); !strings.Contains(ev, `"sensors/room1/temp"`) || !strings.Contains(ev, `"coap"`) {
		t.Fatalf("SSE event %s", ev)
	}
	if msg := chat.expect(t, "reading in chat", messageFrom("sensors.room1.temp@topics.localhost")); msg.Body != "21.5" {
		t.Fatalf("chat body %q", msg.Body)
	}
}

// TestMQTTPublishReachesCoAPObserverAndChat: an MQTT publish becomes a CoAP
// notification on a wildcard observation and a chat message.
func TestMQTTPublishReachesCoAPObserverAndChat(t *testing.T) {
	h := hubtest.Start(t)
	cc := dialCoAP(t, h.Addr(t, "coap"))
	notes := make(chan string, 16)
	obs, err := cc.Observe(ctx(t), "/ps/house/+/hum", observeInto(notes))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = obs.Cancel(ctx(t)) }()
	chat := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	chat.subscribeTopic(t, "house.attic.hum@topics.localhost")
	time.Sleep(100 * time.Millisecond)

	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "sensor", "", "", true)
	mq.publish(t, "house/attic/hum", 1, false, "55")
	deadline := time.After(wait)
	for got := false; !got; {
		select {
		case n := <-notes:
			got = n == "55"
		case <-deadline:
			t.Fatal("CoAP observer got no notification")
		}
	}
	if msg := chat.expect(t, "MQTT reading in chat", messageFrom("house.attic.hum@topics.localhost")); msg.Body != "55" {
		t.Fatalf("chat body %q", msg.Body)
	}
}

// TestChatMessagePublishes: a chat message to a topic JID reaches MQTT and
// REST readers.
func TestChatMessagePublishes(t *testing.T) {
	h := hubtest.Start(t)
	mq := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "lamp", "", "", true)
	mq.subscribe(t, "home/lamp/set", 1)
	chat := dialXMPP(t, h.Addr(t, "xmpp"), "alice", "alicepw")
	chat.send(t, `<message type='chat' to='home.lamp.set@topics.localhost'><body>on</body></message>`)
	if m := mq.next(t); m.Topic != "home/lamp/set" || m.Payload != "on" {
		t.Fatalf("MQTT got %+v", m)
	}
}

// TestDeviceCommandOverMQTT: a REST command reaches a paho device and its
// reply comes back as the HTTP answer; an unknown device is 404.
func TestDeviceCommandOverMQTT(t *testing.T) {
	h := hubtest.Start(t)
	base := "http://" + h.Addr(t, "rest")
	code, body, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"lamp1","name":"Lamp","protocol":"mqtt","password":"lamppw"}`)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create device = %d %s", code, body)
	}
	dev := dialMQTT(t, h.Addr(t, "mqtt.mqtt"), "lamp1", "lamp1", "lamppw", true)
	dev.Client.Subscribe("devices/lamp1/commands/+", 1, func(_ pahoClient, m pahoMessage) {
		req := string(m.Payload())
		i := strings.Index(req, `"id":"`)
		if i < 0 {
			return
		}
		id := req[i+6:]
		id = id[:strings.IndexByte(id, '"')]
		dev.Client.Publish("devices/lamp1/responses/"+id, 1, false, `{"state":"on"}`)
	}).WaitTimeout(wait)
	eventually(t, "device online", func() bool {
		_, body, _ := httpDo(t, http.MethodGet, base+"/api/v1/devices/lamp1", "", "")
		return strings.Contains(body, `"online":true`)
	})
	code, body, _ = httpDo(t, http.MethodPost, base+"/api/v1/devices/lamp1/commands/toggle?timeout=3s", "application/json", `{"on":true}`)
	if code != http.StatusOK || !strings.Contains(body, `"state":"on"`) {
		t.Fatalf("command = %d %s", code, body)
	}
	code, _, _ = httpDo(t, http.MethodPost, base+"/api/v1/devices/nope/commands/toggle", "application/json", `{}`)
	if code != http.StatusNotFound {
		t.Fatalf("command to unknown device = %d, want 404", code)
	}
}
