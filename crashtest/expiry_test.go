package crashtest

import (
	"encoding/binary"
	"testing"
	"time"
)

// TestMessageExpiryAcrossRestart: MQTT 5 messages with a message expiry
// interval queued for an away persistent session are not delivered once
// expired, also across a kill -9; messages without expiry are.
func TestMessageExpiryAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for messages to expire")
	}
	for _, crash := range []bool{false, true} {
		name := "no-restart"
		if crash {
			name = "kill-9"
		}
		t.Run(name, func(t *testing.T) { testExpiry(t, crash) })
	}
}

func testExpiry(t *testing.T, crash bool) {
	h := newHub(t, "")
	h.start()
	sub := dialMQTTSub(t, h, "expiry-away", false)
	sub.subscribe(t, "expiry/x", 1)
	sub.c.Disconnect(100)
	time.Sleep(100 * time.Millisecond)

	c, err := rawConnect(h.mqtt, "expiry-pub", 5, true)
	if err != nil {
		t.Fatal(err)
	}
	expiry := binary.BigEndian.AppendUint32([]byte{0x02}, 1) // Message Expiry Interval: 1 s
	for i, m := range []struct {
		payload string
		props   []byte
	}{{"short-lived", expiry}, {"forever", nil}, {"short-lived-2", expiry}} {
		code, err := c.publish1Props("expiry/x", m.payload, uint16(i+1), m.props)
		if err != nil || code >= 0x80 {
			t.Fatalf("publish %s: 0x%02x %v", m.payload, code, err)
		}
	}
	c.close()
	if crash {
		h.kill9()
	}
	time.Sleep(2100 * time.Millisecond)
	if crash {
		h.start()
	}
	sub = dialMQTTSub(t, h, "expiry-away", false)
	got := collect(sub.msgs, 2*time.Second)
	t.Logf("after expiry (kill -9: %v): %v", crash, got)
	if got["forever"] == 0 {
		t.Error("the message without expiry was not delivered")
	}
	for _, p := range []string{"short-lived", "short-lived-2"} {
		if got[p] > 0 {
			t.Errorf("%s was delivered after its 1 s expiry", p)
		}
	}
}
