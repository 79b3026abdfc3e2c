package bridge

import (
	"hash/maphash"
	"sync"
	"time"
)

// echoTTL is how long the bridge waits for the upstream to send back a
// message it published, and maxEchoes bounds what it remembers.
const (
	echoTTL   = 30 * time.Second
	maxEchoes = 10000
)

// echoFilter remembers messages the bridge published upstream on topics its
// in rules subscribe to. MQTT 3.1.1 has no "no local" subscription option,
// so the upstream sends such a message back; the filter drops that copy
// instead of publishing it on the bus a second time. A genuine upstream
// message with the same topic and payload arriving within echoTTL is
// dropped as well: the price of working with any 3.1.1 broker.
type echoFilter struct {
	seed maphash.Seed
	mu   sync.Mutex
	m    map[echoKey]*echoEntry
}

type echoKey struct {
	topic string
	sum   uint64
}

type echoEntry struct {
	n     int
	until time.Time
}

func newEchoFilter() *echoFilter {
	return &echoFilter{seed: maphash.MakeSeed(), m: map[echoKey]*echoEntry{}}
}

func (f *echoFilter) key(topic string, payload []byte) echoKey {
	return echoKey{topic: topic, sum: maphash.Bytes(f.seed, payload)}
}

// add records one expected echo.
func (f *echoFilter) add(topic string, payload []byte) {
	now := time.Now()
	k := f.key(topic, payload)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) >= maxEchoes {
		for k, e := range f.m {
			if now.After(e.until) {
				delete(f.m, k)
			}
		}
		if len(f.m) >= maxEchoes {
			return
		}
	}
	e := f.m[k]
	if e == nil {
		e = &echoEntry{}
		f.m[k] = e
	}
	e.n++
	e.until = now.Add(echoTTL)
}

// take consumes one expected echo of (topic, payload) and reports whether
// there was one.
func (f *echoFilter) take(topic string, payload []byte) bool {
	k := f.key(topic, payload)
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.m[k]
	if e == nil {
		return false
	}
	live := time.Now().Before(e.until)
	e.n--
	if e.n <= 0 || !live {
		delete(f.m, k)
	}
	return live
}
