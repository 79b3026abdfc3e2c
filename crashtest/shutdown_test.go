package crashtest

import (
	"syscall"
	"testing"
	"time"
)

// shutdownBound is gateway.Defaults().ShutdownTimeout plus a margin.
const shutdownBound = 12 * time.Second

// TestGracefulShutdown: SIGTERM while publishers are busy; the hub exits
// within its shutdown bound, and after a restart the away subscribers get
// every message acknowledged before or during the shutdown.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the hub")
	}
	for _, k := range publisherKinds[:3] {
		t.Run("from-"+k.name, func(t *testing.T) {
			h := newHub(t, "")
			h.start()
			topic := "term/" + k.name
			ms := dialMQTTSub(t, h, "term-sub", false)
			ms.subscribe(t, topic, 1)
			ms.c.Disconnect(100)
			xs := dialXMPPSub(t, h, "alice", "alicepw")
			xs.subscribeTopic(t, topic)
			xs.close()
			time.Sleep(200 * time.Millisecond)

			pub, err := k.dial(h, topic)
			if err != nil {
				t.Fatal(err)
			}
			res := &crashResult{acked: map[string]bool{}, errs: map[string]int{}}
			h.mu.Lock()
			done := h.done
			h.mu.Unlock()
			t0 := time.Now()
			exitc := make(chan time.Duration, 1)
			go func() { <-done; exitc <- time.Since(t0) }()
			publishUntilSignal(h, pub, 0, 60, false, syscall.SIGTERM, res)
			var exited time.Duration
			select {
			case exited = <-exitc:
			case <-time.After(shutdownBound):
				t.Errorf("hub still running %v after SIGTERM; log:\n%s", shutdownBound, h.logTail())
			}
			h.kill9() // reaps; a no-op when it has exited
			pub.close()
			t.Logf("%d acknowledged, %d refused during shutdown (%v); exit %v after the first publish",
				len(res.acked), res.failed, res.errs, exited)
			h.start()
			checkDelivery(t, "mqtt persistent session", dialMQTTSub(t, h, "term-sub", false).msgs, res)
			checkDelivery(t, "xmpp topic subscriber", dialXMPPSub(t, h, "alice", "alicepw").msgs, res)
		})
	}
}
