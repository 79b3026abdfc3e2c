package crashtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReload: the hub binary, sent SIGHUP after its configuration
// file changed, applies the new ACL rules to a subscriber that stays
// connected, and refuses a file with a bad rule, keeping the running
// configuration and saying so in its log.
func TestSIGHUPReload(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "hub.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("acl:\n  anonymous:\n    - {action: subscribe, filter: \"secret/#\", allow: false}\n    - {action: all, filter: \"#\", allow: true}\n")
	h := newHub(t, "", "--config", cfgPath, "--log-level", "info")
	h.start()
	sub := dialMQTTSub(t, h, "watcher", true)
	sub.subscribe(t, "#", 0)
	pub, err := dialMQTTPub(h, "pub", "secret/x", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.close()
	send := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		defer cancel()
		if err := pub.send(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	// got waits for payload, or fails after a bound.
	got := func(payload string, within time.Duration) bool {
		end := time.After(within)
		for {
			select {
			case m := <-sub.msgs:
				if m == payload {
					return true
				}
			case <-end:
				return false
			}
		}
	}
	send("before")
	if got("before", 500*time.Millisecond) {
		t.Fatal("secret/x delivered before the reload")
	}
	hangup := func(logLine string) {
		t.Helper()
		if err := syscall.Kill(h.pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(15 * time.Second); !strings.Contains(h.logTail(), logLine); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("no %q in the log after SIGHUP:\n%s", logLine, h.logTail())
			}
		}
	}
	write("acl:\n  anonymous:\n    - {action: all, filter: \"#\", allow: true}\n")
	hangup("reload: acl:")
	send("after")
	if !got("after", 10*time.Second) {
		t.Fatalf("secret/x not delivered after the reload:\n%s", h.logTail())
	}
	write("acl:\n  anonymous:\n    - {action: fly, filter: \"#\", allow: true}\n")
	hangup("running configuration is kept")
	send("still")
	if !got("still", 10*time.Second) {
		t.Fatal("a refused reload changed the running rules")
	}
	if !sub.c.IsConnectionOpen() {
		t.Fatal("the subscriber was dropped by a reload")
	}
}
