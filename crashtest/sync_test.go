package crashtest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestCrashDeliverySyncInterval: with sync_interval a duration (the
// default, 1s), a commit returns once it is in SQLite's WAL, before any
// fsync; kill -9 of the hub must still lose nothing it acknowledged. With
// 1h the hub's own WAL sync never runs during the test, so what survives
// the kills survives on write(2) alone. The hub is killed at a random
// point of each round, once the moment an acknowledgement arrives; then
// the away MQTT persistent session must get every acknowledged message,
// in order per publisher.
func TestCrashDeliverySyncInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the hub several times")
	}
	seed := crashSeed(t)
	t.Logf("seed %d (set CRASHTEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	for _, c := range []struct {
		name         string
		config       string // "" : none, the defaults
		wantInterval float64
	}{
		{"default", "", 1},
		{"1h", "sync_interval: 1h\n", 3600},
	} {
		t.Run(c.name, func(t *testing.T) {
			var extra []string
			if c.config != "" {
				p := filepath.Join(t.TempDir(), "hub.yaml")
				if err := os.WriteFile(p, []byte(c.config), 0o600); err != nil {
					t.Fatal(err)
				}
				extra = []string{"--config", p}
			}
			h := newHub(t, "", extra...)
			h.start()
			if v, err := h.metricValue("hub_store_sync_interval_seconds"); err != nil || v != c.wantInterval {
				t.Fatalf("hub_store_sync_interval_seconds = %v (%v), want %v", v, err, c.wantInterval)
			}
			topic, subID := "crash/sync-"+c.name, "crash-sync-sub-"+c.name
			ms := dialMQTTSub(t, h, subID, false)
			ms.subscribe(t, topic, 1)
			// Whether or not the hub has seen it go when the publishing
			// starts, what it acknowledges is in the session's durable
			// queue (write_through) until the session acknowledges it.
			ms.c.Disconnect(100)
			pub := publisherKinds[0]
			res := killRounds(t, h, pub.name, topic, pub.dial, crashRounds, rng, nil)
			h.start()
			ms = dialMQTTSub(t, h, subID, false)
			checkDelivery(t, "mqtt persistent session", ms.msgs, res)
		})
	}
}
