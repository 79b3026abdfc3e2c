package xmpp

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// TestSlowTopicSubscriber: a topic JID subscriber that stops reading
// holds at most its output bound (half of limits.max_pending_bytes here)
// in its session, the rest waiting in its subscription's bus queue
// (bounded: topicQueueLen); the publisher goes on, a reading subscriber of
// another topic the stalled one also has gets every message in order, and
// what the stalled one held no longer counts once its connection is gone.
// (Its connection would go after writeTimeout, 10 s, too long to wait for
// here; past the bus queue QoS 0 is dropped, as the bus's own tests check.)
func TestSlowTopicSubscriber(t *testing.T) {
	var lim *adapters.Limits
	h := startHub(t, func(c *Config) {
		lim = adapters.NewLimits(adapters.LimitsConfig{MaxPendingBytes: 256 << 10, MaxPendingBytesTotal: -1})
		c.Auth.SetLimits(lim)
	})
	const bigJID, topicJID = "slow.big@topics.localhost", "slow.values@topics.localhost"
	stalled := dialStalled(t, h) // alice: reads nothing after "subscribed"
	stalled.write(t, `<presence/><presence to='`+bigJID+`' type='subscribe'/><presence to='`+topicJID+`' type='subscribe'/>`)
	for _, jid := range []string{bigJID, topicJID} {
		stalled.until(t, "subscribed", func(el *element) bool { return el.AttrValue("type") == "subscribed" && el.AttrValue("from") == jid })
	}
	bob := newRawClient(t, h, "bob", "bobpw", true)
	bob.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
	bob.until(t, "subscribed", func(el *element) bool { return el.AttrValue("type") == "subscribed" })

	// 1,000 values of 20 kB (20 MB) for alice alone: more than the socket
	// buffers (megabytes) and her session's bound hold; the rest waits in her bus
	// queue for the topic. Then 300 small values for both, which bob
	// reads, in order, while alice's session is full (the kernel may take
	// more of hers meanwhile: it grows its socket buffers).
	ctx := context.Background()
	big := []byte(strings.Repeat("v", 20_000))
	for i := range 1000 {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "slow/big", Payload: big}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	alice := aliceSession(h)
	queued := func() int {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return len(alice.out.buf) + alice.out.inFlight
	}
	deadline := time.Now().Add(10 * time.Second)
	for queued() < 128<<10-21_000 {
		if time.Now().After(deadline) {
			t.Fatalf("alice's session never filled: %d bytes queued", queued())
		}
		time.Sleep(10 * time.Millisecond)
	}
	const n, round = 300, 100
	seen := 0
	maxPending := lim.Stats().PendingBytes
	for i := range n {
		if err := h.bus.Publish(ctx, &broker.Envelope{Topic: "slow/values", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%round != round-1 {
			continue
		}
		for seen <= i { // (bob.next fails the test after 5 s without a stanza)
			if el := bob.next(t); el.Name.Local == "message" && el.AttrValue("from") == topicJID {
				if body := el.Child("", "body").Text(); body != strconv.Itoa(seen) {
					t.Fatalf("bob got %q, want %d", body, seen)
				}
				seen++
			}
		}
		maxPending = max(maxPending, lim.Stats().PendingBytes)
	}
	// Alice's bound (128 KiB, a stanza past it) and a little for bob.
	if bound := int64(128<<10 + 21_000 + 8192); maxPending > bound {
		t.Errorf("%d bytes pending at most, bound %d", maxPending, bound)
	}
	_ = stalled.conn.Close()
	deadline = time.Now().Add(10 * time.Second)
	for lim.Stats().PendingBytes != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still pending after the stalled client left", lim.Stats().PendingBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialStalled logs alice in on a connection whose receive buffer is 32
// KiB: the kernel's autotuning would otherwise take megabytes for a
// client that does not read.
func dialStalled(t *testing.T, h *testHub) *smClient {
	t.Helper()
	conn, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := loginOn(ctx, conn, "alice", "alicepw", sasl.ScramSha256, true)
	if err != nil {
		_ = conn.Close()
		t.Fatalf("login: %v", err)
	}
	c := &smClient{conn: s.Conn()}
	c.r = newStanzaReader(c.conn, DefaultMaxStanza, DefaultMaxDepth, nil)
	c.r.started = true
	t.Cleanup(func() { _ = c.conn.Close() })
	return c
}
