package crashtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tornPayload is message i of the torn-write tests: a marker that can be
// found in the database file.
func tornPayload(i int) string { return fmt.Sprintf("torn-%03d-ABCDEFGHIJ", i) }

// tornSetup starts a hub with an XMPP user subscribed to torn/x and away,
// publishes n QoS 1 messages over REST and returns the hub (running).
func tornSetup(t *testing.T, n int) *hubProc {
	t.Helper()
	h := newHub(t, "")
	h.start()
	xs := dialXMPPSub(t, h, "alice", "alicepw")
	xs.subscribeTopic(t, "torn/x")
	xs.close()
	time.Sleep(200 * time.Millisecond)
	p := newRESTPub(h, "torn/x")
	defer p.close()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		err := p.send(ctx, tornPayload(i))
		cancel()
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	return h
}

// tornCollect reconnects alice and returns what she receives.
func tornCollect(t *testing.T, h *hubProc) map[string]int {
	t.Helper()
	return collect(dialXMPPSub(t, h, "alice", "alicepw").msgs, 3*time.Second)
}

// TestTornWALTail: the hub is killed and the last frame of its WAL is cut
// in half (a write torn by a power cut). The hub must start, and serve
// only messages that were published, intact.
func TestTornWALTail(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the hub")
	}
	const n = 50
	h := tornSetup(t, n)
	h.kill9()
	wal := filepath.Join(h.dataDir, "hub.db-wal")
	fi, err := os.Stat(wal)
	if err != nil || fi.Size() < 8192 {
		t.Skipf("no WAL to tear after kill -9 (%v, size %d)", err, sizeOf(fi))
	}
	// WAL frames are a 24-byte header plus a page; cut the last one in
	// the middle of its page.
	if err := os.Truncate(wal, fi.Size()-1500); err != nil {
		t.Fatal(err)
	}
	if err := h.tryStart(15 * time.Second); err != nil {
		t.Fatalf("hub does not start after a torn WAL tail: %v", err)
	}
	got := tornCollect(t, h)
	published := map[string]bool{}
	for i := range n {
		published[tornPayload(i)] = true
	}
	for m := range got {
		if !published[m] {
			t.Errorf("served a payload that was never published: %q", m)
		}
	}
	t.Logf("after the torn WAL tail: %d of %d messages delivered", len(got), n)
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

// TestCorruptedPayloadNotServed: after a clean stop one stored payload is
// altered inside hub.db (a torn sector inside a page: SQLite keeps no page
// checksums). The hub must detect it and not deliver the altered bytes.
func TestCorruptedPayloadNotServed(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the hub")
	}
	const n = 50
	h := tornSetup(t, n)
	if _, ok := h.term(10 * time.Second); !ok {
		t.Fatal("hub did not stop on SIGTERM")
	}
	db := filepath.Join(h.dataDir, "hub.db")
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	victim := []byte(tornPayload(25))
	i := bytes.Index(b, victim)
	if i < 0 {
		t.Skipf("payload %q not found in %s (stored encoded?)", victim, db)
	}
	b[i+len(victim)-1] = 'K' // ...IJ becomes ...IK
	if err := os.WriteFile(db, b, 0o644); err != nil {
		t.Fatal(err)
	}
	altered := strings.TrimSuffix(string(victim), "J") + "K"
	if err := h.tryStart(15 * time.Second); err != nil {
		t.Logf("hub refused to start on the corrupted store: %v", err)
		return
	}
	got := tornCollect(t, h)
	if got[altered] > 0 {
		t.Errorf("served the altered payload %q: stored envelopes carry no checksum (broker/codec.go), so a torn page goes undetected", altered)
	}
	t.Logf("after corruption: %d of %d messages delivered", len(got), n)
}
