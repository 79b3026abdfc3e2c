package crashtest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// publishConcurrently publishes n QoS 1 messages "prefix-w-i" from
// workers MQTT clients at once, each waiting for its PUBACK, and returns
// the acknowledged payloads.
func publishConcurrently(t *testing.T, h *hubProc, topic, prefix string, workers, n int) map[string]bool {
	t.Helper()
	acked := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		p, err := dialMQTTPub(h, fmt.Sprintf("%s-pub-%d", prefix, w), topic, 1)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.close()
			for i := range n / workers {
				payload := fmt.Sprintf("%s%d-%d", prefix, w, i)
				ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
				err := p.send(ctx, payload)
				cancel()
				if err != nil {
					t.Errorf("publish %s: %v", payload, err)
					return
				}
				mu.Lock()
				acked[payload] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked
}

// collect reads payloads until quiet passes without one.
func collect(msgs <-chan string, quiet time.Duration) map[string]int {
	got := map[string]int{}
	for {
		select {
		case m := <-msgs:
			got[m]++
		case <-time.After(quiet):
			return got
		}
	}
}

// TestOnlinePersistentSubscriberGetsAll: a connected, fast MQTT
// subscriber with a persistent session gets every QoS 1 message that 16
// concurrent publishers had acknowledged.
func TestOnlinePersistentSubscriberGetsAll(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 1600 messages")
	}
	h := newHub(t, "")
	h.start()
	sub := dialMQTTSub(t, h, "online-persistent", false)
	sub.subscribe(t, "online/x", 1)
	acked := publishConcurrently(t, h, "online/x", "o", 16, 1600)
	got := collect(sub.msgs, 5*time.Second)
	var lost []string
	for p := range acked {
		if got[p] == 0 {
			lost = append(lost, p)
		}
	}
	t.Logf("acknowledged %d, delivered %d distinct", len(acked), len(got))
	if len(lost) > 0 {
		dropped := strings.Count(h.logTail(), "client store quota reached")
		t.Errorf("online persistent subscriber lost %d of %d acknowledged QoS 1 messages, e.g. %v (hub log: %d+ \"client store quota reached\" warnings)",
			len(lost), len(acked), lost[:min(len(lost), 6)], dropped)
	}
}

// TestQueueBoundDropsOldest: a persistent MQTT session that is away while
// more QoS 1 messages than its queue bound (mqtt.DefaultMaxQueued = 1000)
// are published keeps a bounded queue, drops the oldest (so the newest
// arrive), and the hub says so on a $hub/... topic.
func TestQueueBoundDropsOldest(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 1200 messages")
	}
	const bound, n = 1000, 1200
	h := newHub(t, "")
	h.start()
	events := dialMQTTSub(t, h, "events", true)
	events.subscribe(t, "$hub/#", 0)
	sub := dialMQTTSub(t, h, "away-bounded", false)
	sub.subscribe(t, "bounded/x", 1)
	sub.c.Disconnect(100)
	time.Sleep(100 * time.Millisecond)
	acked := publishConcurrently(t, h, "bounded/x", "q", 1, n)
	sub = dialMQTTSub(t, h, "away-bounded", false)
	got := collect(sub.msgs, 3*time.Second)
	ev := collect(events.msgs, 500*time.Millisecond)
	var evTopics []string
	for e := range ev {
		evTopics = append(evTopics, e[:min(len(e), 60)])
	}
	t.Logf("acknowledged %d, delivered %d distinct after reconnect, %d $hub events (first: %q)", len(acked), len(got), len(ev), evTopics[:min(len(evTopics), 3)])
	if len(got) > bound+10 {
		t.Errorf("queue not bounded: %d delivered, bound %d", len(got), bound)
	}
	newest := fmt.Sprintf("q0-%d", n-1)
	oldest := "q0-0"
	if got[newest] == 0 && got[oldest] > 0 {
		t.Errorf("full queue dropped the newest (%s missing, %s kept): want drop-oldest", newest, oldest)
	}
	if len(got) < len(acked) && len(ev) == 0 {
		t.Errorf("%d acknowledged messages dropped without any $hub/... event", len(acked)-len(got))
	}
}
