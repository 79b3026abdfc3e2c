package xmpp

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// TestSMUsage checks the per-user byte accounting.
func TestSMUsage(t *testing.T) {
	var u smUsage
	for _, tc := range []struct {
		delta, limit int64
		ok           bool
		after        int64
	}{
		{10, 15, true, 10},
		{6, 15, false, 10},
		{5, 15, true, 15},
		{-15, 0, true, 0},
		{-1, 0, true, 0},
	} {
		if ok := u.add("a@x", tc.delta, tc.limit); ok != tc.ok || u.get("a@x") != tc.after {
			t.Errorf("add %d within %d: ok %v total %d, want %v %d", tc.delta, tc.limit, ok, u.get("a@x"), tc.ok, tc.after)
		}
	}
}

// aliceSession returns alice's one session.
func aliceSession(h *testHub) *session {
	h.a.mu.Lock()
	defer h.a.mu.Unlock()
	for _, s := range h.a.sessions["alice@localhost"] {
		return s
	}
	return nil
}

// TestUnackedBytesBound: a detached XEP-0198 session buffering 60 kB
// stanzas stops at maxUnackedBytes, far below maxUnacked stanzas, and its
// user's total stays within maxUnackedUserBytes; the buffer is freed when
// the session ends.
func TestUnackedBytesBound(t *testing.T) {
	h := startHub(t, func(c *Config) { c.ResumeTimeout = time.Minute })
	topicJID := "big.values@topics.localhost"
	c := newSMClient(t, h, true)
	c.write(t, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`)
	c.until(t, "enabled", func(el *element) bool { return el.Name.Local == "enabled" })
	c.write(t, `<presence/><presence to='`+topicJID+`' type='subscribe'/>`)
	c.until(t, "subscribed", func(el *element) bool { return el.AttrValue("type") == "subscribed" })
	_ = c.conn.Close() // detached, waiting for a resumption that never comes
	s := aliceSession(h)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		detached := s.detached
		s.mu.Unlock()
		if detached {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session never detached")
		}
		time.Sleep(10 * time.Millisecond)
	}
	payload := []byte(strings.Repeat("v", 60_000))
	for range 100 { // 6 MB offered
		if err := h.bus.Publish(context.Background(), &broker.Envelope{Topic: "big/values", Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	// The 100 envelopes are handed to the session one at a time; wait
	// until the bus has offered them all: each is buffered or refused
	// (dropped, at QoS 0).
	for {
		s.mu.Lock()
		n := len(s.sm.unacked)
		s.mu.Unlock()
		if uint64(n)+h.bus.Stats().Dropped >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d buffered, %d dropped of 100", n, h.bus.Stats().Dropped)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	n, bytes := len(s.sm.unacked), s.sm.bytes
	s.mu.Unlock()
	t.Logf("detached session holds %d stanzas, %d bytes, of 100 × 60 kB offered", n, bytes)
	if bytes > maxUnackedBytes || n >= 100 || n == 0 {
		t.Errorf("detached session holds %d stanzas, %d bytes; want fewer than 100 within %d bytes", n, bytes, maxUnackedBytes)
	}
	if u := h.a.smUse.get("alice@localhost"); u != bytes {
		t.Errorf("alice's total %d, want the session's %d", u, bytes)
	}
	s.terminate()
	if u := h.a.smUse.get("alice@localhost"); u != 0 {
		t.Errorf("alice's total after the session ended: %d, want 0", u)
	}
}

// TestPresenceBurstPaced: a user with 1,500 topic JIDs in the roster logs
// in with XEP-0198 and gets every topic's presence, paced by its
// acknowledgements, without the stream being cut for too many
// unacknowledged stanzas.
func TestPresenceBurstPaced(t *testing.T) {
	h := startHub(t, nil)
	ctx := context.Background()
	const topics = 1500
	for i := range topics {
		if err := h.a.rosterPut(ctx, "alice", rosterItem{JID: fmt.Sprintf("t%04d@topics.localhost", i), Subscription: "to"}); err != nil {
			t.Fatal(err)
		}
	}
	c := newSMClient(t, h, true)
	c.write(t, `<enable xmlns='urn:xmpp:sm:3'/>`)
	c.until(t, "enabled", func(el *element) bool { return el.Name.Local == "enabled" })
	c.write(t, `<presence/>`)
	got := map[string]bool{}
	maxOut := 0
	for len(got) < topics {
		el := c.next(t)
		switch {
		case el.Name.Space == nsSM && el.Name.Local == "r":
			c.write(t, `<a xmlns='urn:xmpp:sm:3' h='`+strconv.Itoa(c.h)+`'/>`)
		case el.Name.Local == "presence" && strings.HasSuffix(el.AttrValue("from"), "@topics.localhost"):
			got[el.AttrValue("from")] = true
		case el.Name.Local == "error" || el.Name.Space == nsStream:
			t.Fatalf("stream cut after %d topic presences: %s", len(got), el)
		}
		if s := aliceSession(h); s != nil {
			s.mu.Lock()
			maxOut = max(maxOut, s.sm.burst)
			s.mu.Unlock()
		}
	}
	t.Logf("%d topic presences, at most %d unacknowledged at once", len(got), maxOut)
	if maxOut > burstWindow {
		t.Errorf("%d burst stanzas unacknowledged at once, want at most %d", maxOut, burstWindow)
	}
}

// TestOfflineBytes: chat messages for an offline user are kept up to
// OfflineMaxBytes; the one past it is refused with resource-constraint,
// and bob gets the ones kept when he comes online.
func TestOfflineBytes(t *testing.T) {
	h := startHub(t, func(c *Config) { c.OfflineMaxBytes = 64 << 10 })
	alice := connect(t, h, "alice", "alicepw")
	body := strings.Repeat("b", 20_000) // 3 fit in 64 KiB, the fourth does not
	for i := range 4 {
		alice.send(t, `<message to='bob@localhost' type='chat' id='m`+strconv.Itoa(i)+`'><body>`+body+`</body></message>`)
	}
	got := alice.expect(t, "resource-constraint", func(v rx) bool { return v.Type == "error" })
	if got.ID != "m3" || !strings.Contains(got.Inner, "resource-constraint") {
		t.Errorf("error %+v, want m3 refused with resource-constraint", got)
	}
	bob := connect(t, h, "bob", "bobpw")
	for i := range 3 {
		if m := bob.expect(t, "offline message", isMessageFrom(alice.jid)); len(m.Body) != len(body) {
			t.Errorf("offline message %d: %d bytes", i, len(m.Body))
		}
	}
}
