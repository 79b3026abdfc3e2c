package main

import (
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// histogram counts non-negative durations (nanoseconds) in log-linear
// buckets: exact below 128 ns, then 128 buckets per power of two, so a
// reported percentile is within 1/128 (< 0.8 %) of the true value. It keeps
// the exact minimum and maximum. It is not safe for concurrent use.
type histogram struct {
	counts []uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

const (
	histSubBits    = 7
	histSubBuckets = 1 << histSubBits
	histBuckets    = histSubBuckets + (64-histSubBits)*histSubBuckets
)

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, histBuckets)}
}

// histIndex returns the bucket of v (v >= 0).
func histIndex(v int64) int {
	u := uint64(v)
	if u < histSubBuckets {
		return int(u)
	}
	shift := bits.Len64(u) - histSubBits - 1 // u>>shift is in [128, 255]
	return histSubBuckets + shift*histSubBuckets + int(u>>shift) - histSubBuckets
}

// histUpper returns the largest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < histSubBuckets {
		return int64(i)
	}
	shift := (i - histSubBuckets) / histSubBuckets
	mant := uint64(i-histSubBuckets)%histSubBuckets + histSubBuckets
	upper := (mant+1)<<shift - 1
	if upper > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(upper)
}

// record adds one value; negative values (clock skew) count as 0.
func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[histIndex(v)]++
}

// merge adds every value of o into h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100): the
// smallest recorded value such that at least p % of values are <= it, to
// bucket precision and never above the exact maximum. It returns 0 when empty.
func (h *histogram) percentile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			v := histUpper(i)
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return v
		}
	}
	return h.max
}

// LatencySummary is the latency part of a Result, in milliseconds.
type LatencySummary struct {
	Count  uint64  `json:"count"`
	MinMs  float64 `json:"min_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func nsToMs(ns int64) float64 { return float64(ns) / 1e6 }

func (h *histogram) summary() LatencySummary {
	if h.n == 0 {
		return LatencySummary{}
	}
	return LatencySummary{
		Count:  h.n,
		MinMs:  nsToMs(h.min),
		MeanMs: h.sum / float64(h.n) / 1e6,
		P50Ms:  nsToMs(h.percentile(50)),
		P90Ms:  nsToMs(h.percentile(90)),
		P99Ms:  nsToMs(h.percentile(99)),
		P999Ms: nsToMs(h.percentile(99.9)),
		MaxMs:  nsToMs(h.max),
	}
}

// tracker accounts for what one subscriber received: each (publisher, seq)
// it should see is marked in a bitmap, so a second copy is a duplicate and a
// missing one is a loss.
type tracker struct {
	acct *accounting

	mu      sync.Mutex
	seen    map[uint32][]uint64 // publisher -> bitmap over seq; only publishers on this topic
	unique  uint64
	dups    uint64
	invalid uint64 // not our payload, or a previous run's
	foreign uint64 // our run, but a publisher or seq this subscriber should not see
	hist    *histogram
}

// accounting holds the expectations of a run and one tracker per subscriber.
type accounting struct {
	run      uint32
	perPub   []uint64 // messages each publisher is to send
	pubTopic []string
	subTopic []string
	trackers []*tracker

	unique     atomic.Uint64 // over all trackers, for the drain wait
	lastRecvNs atomic.Int64
}

// newAccounting prepares trackers for subscribers subTopic[j] given that
// publisher i sends perPub[i] messages to pubTopic[i].
func newAccounting(run uint32, perPub []uint64, pubTopic, subTopic []string) *accounting {
	a := &accounting{run: run, perPub: perPub, pubTopic: pubTopic, subTopic: subTopic}
	for _, st := range subTopic {
		t := &tracker{acct: a, seen: make(map[uint32][]uint64), hist: newHistogram()}
		for i, pt := range pubTopic {
			if pt == st {
				t.seen[uint32(i)] = make([]uint64, (perPub[i]+63)/64)
			}
		}
		a.trackers = append(a.trackers, t)
	}
	return a
}

// receive accounts for one message delivered to subscriber sub at time now.
func (a *accounting) receive(sub int, payload []byte, now time.Time) {
	t := a.trackers[sub]
	h, err := decodeHeader(payload)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil || h.Run != a.run {
		t.invalid++
		return
	}
	bm, ok := t.seen[h.Pub]
	if !ok || h.Seq >= a.perPub[h.Pub] {
		t.foreign++
		return
	}
	w, bit := h.Seq/64, uint64(1)<<(h.Seq%64)
	if bm[w]&bit != 0 {
		t.dups++
		return
	}
	bm[w] |= bit
	t.unique++
	nowNs := now.UnixNano()
	t.hist.record(nowNs - h.SentNs)
	a.unique.Add(1)
	for {
		last := a.lastRecvNs.Load()
		if nowNs <= last || a.lastRecvNs.CompareAndSwap(last, nowNs) {
			break
		}
	}
}

// expected returns how many deliveries the subscribers should see, given
// that publisher i actually sent sent[i] messages.
func (a *accounting) expected(sent []uint64) uint64 {
	subs := make(map[string]uint64)
	for _, st := range a.subTopic {
		subs[st]++
	}
	var e uint64
	for i, n := range sent {
		e += n * subs[a.pubTopic[i]]
	}
	return e
}

// totals is the sum over all subscribers.
type totals struct {
	unique, dups, invalid, foreign uint64
	hist                           *histogram
}

func (a *accounting) totals() totals {
	tot := totals{hist: newHistogram()}
	for _, t := range a.trackers {
		t.mu.Lock()
		tot.unique += t.unique
		tot.dups += t.dups
		tot.invalid += t.invalid
		tot.foreign += t.foreign
		tot.hist.merge(t.hist)
		t.mu.Unlock()
	}
	return tot
}
