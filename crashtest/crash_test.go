package crashtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// crashSeed is the seed of the random kill points: CRASHTEST_SEED, or the
// time (logged, so a failing run can be repeated).
func crashSeed(t *testing.T) uint64 {
	if s := os.Getenv("CRASHTEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CRASHTEST_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// publisherKinds are the protocols a crash test publishes with.
var publisherKinds = []struct {
	name string
	dial func(h *hubProc, topic string) (publisher, error)
}{
	{"mqtt", func(h *hubProc, topic string) (publisher, error) { return dialMQTTPub(h, "crash-pub", topic, 1) }},
	{"rest", func(h *hubProc, topic string) (publisher, error) { return newRESTPub(h, topic), nil }},
	{"coap", func(h *hubProc, topic string) (publisher, error) { return dialCoAPPub(h, topic) }},
	{"xmpp", func(h *hubProc, topic string) (publisher, error) { return dialXMPPPub(h, "admin", "adminpw", topic) }},
	// QoS 2 end to end within MQTT: no duplicates allowed.
	{"mqtt-qos2", func(h *hubProc, topic string) (publisher, error) { return dialMQTTPub(h, "crash-pub", topic, 2) }},
}

// Bounds of one crash run.
const (
	crashRounds  = 3
	crashWorkers = 4   // concurrent publishers per round, each waiting for its acks
	crashMaxMsgs = 200 // publishes issued per round at most
	crashMinKill = 20  // the kill comes after at least this many publishes
)

// crashResult is what one run acknowledged.
type crashResult struct {
	mu     sync.Mutex
	acked  map[string]bool
	order  []string // acknowledged payloads in acknowledgement order
	failed int
	errs   map[string]int
}

func (r *crashResult) ack(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acked[p] = true
	r.order = append(r.order, p)
}

func (r *crashResult) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	r.errs[msg]++
}

// TestCrashDelivery: for each publishing protocol, an MQTT persistent
// session and an XMPP user with a topic subscription are away while QoS 1
// messages are published; the hub is killed with SIGKILL at a random point
// of each of three rounds and restarted; then both subscribers come back
// and must get every message the hub acknowledged, in order per publisher.
func TestCrashDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the hub several times")
	}
	seed := crashSeed(t)
	t.Logf("seed %d (set CRASHTEST_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, k := range publisherKinds {
		t.Run("from-"+k.name, func(t *testing.T) {
			runCrash(t, k.name, k.dial, rng.Uint64())
		})
	}
}

func runCrash(t *testing.T, kind string, dial func(*hubProc, string) (publisher, error), seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	h := newHub(t, "")
	h.start()
	topic := "crash/" + kind
	subID := "crash-sub-" + kind

	qos2 := strings.HasSuffix(kind, "qos2")
	ms := dialMQTTSub(t, h, subID, false)
	ms.subscribe(t, topic, map[bool]byte{false: 1, true: 2}[qos2])
	ms.c.Disconnect(100)
	xs := dialXMPPSub(t, h, "alice", "alicepw")
	xs.subscribeTopic(t, topic)
	xs.close()
	time.Sleep(200 * time.Millisecond) // let the hub see both go away

	res := killRounds(t, h, kind, topic, dial, crashRounds, rng, nil)

	h.start()
	ms = dialMQTTSub(t, h, subID, false)
	xs = dialXMPPSub(t, h, "alice", "alicepw")
	dups := checkDelivery(t, "mqtt persistent session", ms.msgs, res)
	if qos2 && dups > 0 {
		t.Errorf("mqtt persistent session at QoS 2: %d duplicates; QoS 2 within MQTT allows none", dups)
	}
	checkDelivery(t, "xmpp topic subscriber", xs.msgs, res)
}

// killRounds publishes into topic in rounds, each ended by SIGKILL at a
// random point, restarting the hub (and calling restarted) before every
// round after the first; it returns what the hub acknowledged.
func killRounds(t *testing.T, h *hubProc, kind, topic string, dial func(*hubProc, string) (publisher, error),
	rounds int, rng *rand.Rand, restarted func()) *crashResult {
	t.Helper()
	res := &crashResult{acked: map[string]bool{}, errs: map[string]int{}}
	for round := range rounds {
		if round > 0 {
			h.start()
			if restarted != nil {
				restarted()
			}
		}
		pub, err := dial(h, topic)
		if err != nil {
			t.Fatalf("round %d: publisher: %v", round, err)
		}
		killAt := int64(crashMinKill + rng.IntN(crashMaxMsgs/2-crashMinKill))
		// Odd rounds kill the moment an acknowledgement arrives: the
		// hub has just sent it, so whatever it does after the
		// acknowledgement is cut short.
		publishUntilKilled(h, pub, round, killAt, round%2 == 1, res)
		h.kill9()
		pub.close()
	}
	t.Logf("%s: %d acknowledged, %d failed publishes (%v)", kind, len(res.acked), res.failed, res.errs)
	if len(res.acked) == 0 {
		t.Fatalf("nothing was acknowledged; hub log:\n%s", h.logTail())
	}
	return res
}

// publishUntilKilled runs crashWorkers publishers; the one that issues
// publish number killAt (or, with afterAck, receives acknowledgement number
// killAt) sends SIGKILL to the hub. Each worker waits for its
// acknowledgement before the next publish and stops at its first failure.
func publishUntilKilled(h *hubProc, pub publisher, round int, killAt int64, afterAck bool, res *crashResult) {
	publishUntilSignal(h, pub, round, killAt, afterAck, syscall.SIGKILL, res)
}

// publishUntilSignal is publishUntilKilled with another signal.
func publishUntilSignal(h *hubProc, pub publisher, round int, killAt int64, afterAck bool, sig syscall.Signal, res *crashResult) {
	var issued, acks atomic.Int64
	pid := h.pid()
	var wg sync.WaitGroup
	for w := range crashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				n := issued.Add(1)
				if n > crashMaxMsgs {
					return
				}
				payload := fmt.Sprintf("r%dw%d-%d", round, w, seq)
				ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
				errc := make(chan error, 1)
				go func() { errc <- pub.send(ctx, payload) }()
				if !afterAck && n == killAt {
					// The publish is on its way: kill while it and the
					// others' are in flight.
					time.Sleep(time.Duration(n%3) * time.Millisecond)
					_ = syscall.Kill(pid, sig)
				}
				err := <-errc
				cancel()
				if err != nil {
					res.fail(err)
					return
				}
				res.ack(payload)
				if afterAck && acks.Add(1) == killAt {
					_ = syscall.Kill(pid, sig)
				}
			}
		}()
	}
	wg.Wait()
}

// parsePayload splits "r0w1-17" into publisher "r0w1" and sequence 17.
func parsePayload(p string) (string, int, bool) {
	pubID, s, ok := strings.Cut(p, "-")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(s)
	return pubID, n, err == nil
}

// checkDelivery reads msgs until every acknowledged payload arrived or
// nothing more comes, then reports what is missing, duplicated or out of
// order per publisher. It returns the number of duplicates.
func checkDelivery(t *testing.T, who string, msgs <-chan string, res *crashResult) int {
	t.Helper()
	seen := map[string]int{}
	var got []string
	missing := func() int {
		n := 0
		for p := range res.acked {
			if seen[p] == 0 {
				n++
			}
		}
		return n
	}
	total := time.After(30 * time.Second)
	quiet := 5 * time.Second
wait:
	for missing() > 0 {
		select {
		case m := <-msgs:
			seen[m]++
			got = append(got, m)
		case <-time.After(quiet):
			break wait
		case <-total:
			break wait
		}
	}
	// Late duplicates and extras: a short look.
	for drain := true; drain; {
		select {
		case m := <-msgs:
			seen[m]++
			got = append(got, m)
		case <-time.After(300 * time.Millisecond):
			drain = false
		}
	}
	var lost []string
	for p := range res.acked {
		if seen[p] == 0 {
			lost = append(lost, p)
		}
	}
	slices.SortFunc(lost, comparePayloads)
	dups, unacked := 0, 0
	for p, n := range seen {
		dups += n - 1
		if !res.acked[p] {
			unacked++
		}
	}
	// Order per publisher, over first arrivals.
	last := map[string]int{}
	first := map[string]bool{}
	var disorder []string
	for _, m := range got {
		if first[m] {
			continue
		}
		first[m] = true
		id, n, ok := parsePayload(m)
		if !ok {
			continue
		}
		if prev, ok := last[id]; ok && n < prev {
			disorder = append(disorder, fmt.Sprintf("%s after %s-%d", m, id, prev))
		}
		last[id] = max(last[id], n)
	}
	t.Logf("%s: received %d (%d distinct, %d duplicates, %d not acknowledged but delivered), acknowledged %d, lost %d, out of order %d",
		who, len(got), len(first), dups, unacked, len(res.acked), len(lost), len(disorder))
	if len(lost) > 0 {
		t.Errorf("%s: %d acknowledged messages lost, e.g. %v", who, len(lost), lost[:min(len(lost), 12)])
	}
	if len(disorder) > 0 {
		t.Errorf("%s: %d out of order per publisher, e.g. %v", who, len(disorder), disorder[:min(len(disorder), 6)])
	}
	return dups
}

func comparePayloads(a, b string) int {
	ai, an, _ := parsePayload(a)
	bi, bn, _ := parsePayload(b)
	if c := strings.Compare(ai, bi); c != 0 {
		return c
	}
	return an - bn
}
