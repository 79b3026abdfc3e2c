package crashtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Bounds of the slow-consumer test.
const (
	slowQoS0Msgs   = 3000
	slowQoS1Msgs   = 600 // MQTT; with the REST ones below the persistent queue bound (1000)
	slowRESTMsgs   = 200
	slowPayload    = 4096
	slowMaxPublish = 2 * time.Second // one acknowledged publish may take at most this
	slowMaxRSSKB   = 300 << 10
)

// latencies records the slowest publish of each publisher.
type latencies struct {
	mu  sync.Mutex
	max map[string]time.Duration
}

func (l *latencies) add(who string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d > l.max[who] {
		l.max[who] = d
	}
}

// TestSlowConsumer: an MQTT subscriber with a persistent session stops
// reading (raw TCP, CONNECT and SUBSCRIBE, then nothing) while MQTT QoS 0,
// MQTT QoS 1 and REST QoS 1 publishers publish. Publishers must never wait
// long, a fast subscriber must get everything, the hub's memory must stay
// bounded, and once the stalled subscriber reads again it must get every
// QoS 1 message (fewer than its queue bound were published).
func TestSlowConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes several thousand messages")
	}
	h := newHub(t, "")
	h.start()
	stalled, err := dialRawMQTT(h.mqtt, "stalled", false, "slow/#", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.close()
	fast := dialMQTTSub(t, h, "fast", true)
	fast.subscribe(t, "slow/#", 1)

	pad := strings.Repeat("x", slowPayload)
	lat := &latencies{max: map[string]time.Duration{}}
	acked := map[string]time.Time{}
	var amu sync.Mutex
	ack := func(p string) { amu.Lock(); acked[p] = time.Now(); amu.Unlock() }
	// The fast subscriber's arrivals, timed.
	arrived := map[string]time.Time{}
	var arrMu sync.Mutex
	stopFast := make(chan struct{})
	var fastWG sync.WaitGroup
	fastWG.Add(1)
	go func() {
		defer fastWG.Done()
		for {
			select {
			case m := <-fast.msgs:
				id, _, _ := strings.Cut(m, " ")
				arrMu.Lock()
				if _, ok := arrived[id]; !ok {
					arrived[id] = time.Now()
				}
				arrMu.Unlock()
			case <-stopFast:
				return
			}
		}
	}()
	var failures atomic.Int64
	var maxRSS atomic.Int64
	stopRSS := make(chan struct{})
	var rssWG sync.WaitGroup
	rssWG.Add(1)
	go func() {
		defer rssWG.Done()
		for {
			if kb := int64(h.rssKB()); kb > maxRSS.Load() {
				maxRSS.Store(kb)
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	t0 := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // MQTT QoS 0
		defer wg.Done()
		p, err := dialMQTTPub(h, "pub-q0", "slow/q0", 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer p.close()
		for i := range slowQoS0Msgs {
			ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			s := time.Now()
			err := p.send(ctx, fmt.Sprintf("q0-%d %s", i, pad))
			cancel()
			lat.add("mqtt qos0", time.Since(s))
			if err != nil {
				failures.Add(1)
				return
			}
		}
	}()
	go func() { // MQTT QoS 1, acknowledged one by one
		defer wg.Done()
		p, err := dialMQTTPub(h, "pub-q1", "slow/q1", 1)
		if err != nil {
			t.Error(err)
			return
		}
		defer p.close()
		for i := range slowQoS1Msgs {
			ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
			s := time.Now()
			payload := fmt.Sprintf("q1-%d %s", i, pad)
			err := p.send(ctx, payload)
			cancel()
			lat.add("mqtt qos1", time.Since(s))
			if err != nil {
				failures.Add(1)
				return
			}
			ack(payload[:strings.IndexByte(payload, ' ')])
		}
	}()
	wg.Wait()
	// The stalled subscriber's socket is full by now. REST publishes
	// (QoS 1, durable before 200) must still reach the fast subscriber
	// promptly.
	wg.Add(1)
	go func() { // REST QoS 1, four at a time
		defer wg.Done()
		p := newRESTPub(h, "slow/rest")
		defer p.close()
		var next atomic.Int64
		var rw sync.WaitGroup
		for range 4 {
			rw.Add(1)
			go func() {
				defer rw.Done()
				for {
					i := next.Add(1) - 1
					if i >= slowRESTMsgs {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
					s := time.Now()
					payload := fmt.Sprintf("rest-%d %s", i, pad)
					err := p.send(ctx, payload)
					cancel()
					lat.add("rest qos1", time.Since(s))
					if err != nil {
						failures.Add(1)
						return
					}
					ack(payload[:strings.IndexByte(payload, ' ')])
				}
			}()
		}
		rw.Wait()
	}()
	wg.Wait()
	pubTime := time.Since(t0)

	// The fast subscriber gets everything.
	want := slowQoS0Msgs + len(acked)
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		arrMu.Lock()
		n := len(arrived)
		arrMu.Unlock()
		if n >= want {
			break
		}
	}
	close(stopFast)
	fastWG.Wait()
	var restLag time.Duration
	for p, at := range acked {
		if got, ok := arrived[p]; ok && strings.HasPrefix(p, "rest-") && got.Sub(at) > restLag {
			restLag = got.Sub(at)
		}
	}
	t.Logf("REST QoS 1 → fast MQTT subscriber, worst lag after the 200: %v", restLag)
	if restLag > slowMaxPublish {
		t.Errorf("REST → fast MQTT subscriber took up to %v (bound %v) while another subscriber was stalled", restLag, slowMaxPublish)
	}
	close(stopRSS)
	rssWG.Wait()
	t.Logf("published in %v; slowest publish per publisher %v; publish failures %d; hub max RSS %d MiB",
		pubTime, lat.max, failures.Load(), maxRSS.Load()>>10)
	if failures.Load() > 0 {
		t.Errorf("%d publishers failed", failures.Load())
	}
	for who, d := range lat.max {
		if strings.Contains(who, "qos1") && d > slowMaxPublish {
			t.Errorf("%s: a publish took %v (bound %v): the stalled subscriber held up a publisher", who, d, slowMaxPublish)
		}
	}
	if maxRSS.Load() > slowMaxRSSKB {
		t.Errorf("hub RSS reached %d MiB (bound %d MiB)", maxRSS.Load()>>10, slowMaxRSSKB>>20)
	}
	var lostQ1, lostQ0 int
	var lostEx []string
	for p := range acked {
		if _, ok := arrived[p]; !ok {
			lostQ1++
			lostEx = append(lostEx, p)
		}
	}
	for i := range slowQoS0Msgs {
		if _, ok := arrived[fmt.Sprintf("q0-%d", i)]; !ok {
			lostQ0++
		}
	}
	t.Logf("fast subscriber: %d of %d QoS 1 and %d of %d QoS 0", len(acked)-lostQ1, len(acked), slowQoS0Msgs-lostQ0, slowQoS0Msgs)
	if lostQ1 > 0 || lostQ0 > 0 {
		slices.SortFunc(lostEx, comparePayloads)
		t.Errorf("fast subscriber missed %d QoS 1 and %d QoS 0 messages within 20 s, e.g. %v", lostQ1, lostQ0, lostEx[:min(len(lostEx), 8)])
	}

	// The stalled subscriber reads again: its persistent QoS 1 session is
	// owed every acknowledged message (fewer than its queue bound).
	msgs, err := stalled.drain(10*time.Second, 30*time.Second)
	q1 := 0
	for _, m := range msgs {
		if m.qos > 0 {
			q1++
		}
	}
	if err == nil && q1 < len(acked) {
		// Quiet for 10 s with QoS 1 messages owed: the hub has given the
		// connection up (it closes a client that does not read for its
		// write timeout) though this end has not seen it yet, as a
		// client whose keepalive has not fired yet would not. A client
		// reconnects then; the session must have kept the rest.
		err = fmt.Errorf("quiet for 10 s after %d QoS 1 messages", q1)
		stalled.close()
	}
	if err != nil {
		// The hub closed the stalled connection: the session is
		// persistent, so the rest comes on reconnect.
		t.Logf("stalled connection ended after %d messages: %v; reconnecting", len(msgs), err)
		// The session and its subscription persist: the hub resends
		// the queue right after CONNACK, so subscribing again (and
		// waiting for a SUBACK first) would misread it.
		again, err := rawConnect(h.mqtt, "stalled", 4, false)
		if err != nil {
			t.Fatal(err)
		}
		defer again.close()
		more, _ := again.drain(3*time.Second, 30*time.Second)
		msgs = append(msgs, more...)
	}
	sgot := map[string]int{}
	q0 := 0
	for _, m := range msgs {
		id, _, _ := strings.Cut(m.payload, " ")
		if m.qos == 0 {
			q0++
			continue
		}
		sgot[id]++
	}
	var lost []string
	for p := range acked {
		if sgot[p] == 0 {
			lost = append(lost, p)
		}
	}
	t.Logf("stalled subscriber, once reading: %d QoS 1 distinct of %d acknowledged, %d QoS 0", len(sgot), len(acked), q0)
	if len(lost) > 0 {
		t.Errorf("stalled persistent QoS 1 subscriber lost %d acknowledged messages, e.g. %v", len(lost), lost[:min(len(lost), 8)])
	}
	if t.Failed() {
		t.Logf("hub log:\n%s", h.logTail())
	}
}
