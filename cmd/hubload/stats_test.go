package main

import (
	"math"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values []int64
		p      float64
		want   int64
	}{
		{"empty", nil, 50, 0},
		{"single", []int64{42}, 99, 42},
		{"small exact p50", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 50, 5},
		{"small exact p90", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9},
		{"small exact p100", []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 100, 10},
		{"nearest rank rounds up", []int64{1, 2, 3}, 50, 2},
		{"negative counts as zero", []int64{-5, -5, 7}, 50, 0},
		{"outlier only at max", append(repeat(1000, 99), 1_000_000), 99, 1000},
		{"outlier at p100", append(repeat(1000, 99), 1_000_000), 100, 1_000_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHistogram()
			for _, v := range tc.values {
				h.record(v)
			}
			// Exact below 128 ns, then at most 1/128 above the true value.
			if got := h.percentile(tc.p); got < tc.want || got > tc.want+tc.want/128 {
				t.Errorf("p%g = %d, want %d (+1/128)", tc.p, got, tc.want)
			}
		})
	}
}

func repeat(v int64, n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestHistogramPrecision checks the 1/128 relative error bound on a uniform
// spread of microsecond-to-second latencies.
func TestHistogramPrecision(t *testing.T) {
	t.Parallel()
	h := newHistogram()
	const n = 100000
	for i := int64(1); i <= n; i++ {
		h.record(i * 10_000) // 10 µs .. 1 s
	}
	for _, p := range []float64{1, 50, 90, 99, 99.9} {
		want := float64(int64(math.Ceil(p/100*n)) * 10_000)
		got := float64(h.percentile(p))
		if got < want || got > want*(1+1.0/128) {
			t.Errorf("p%g = %.0f, want %.0f within +1/128", p, got, want)
		}
	}
	if h.min != 10_000 || h.max != n*10_000 {
		t.Errorf("min, max = %d, %d", h.min, h.max)
	}
	s := h.summary()
	if s.Count != n || math.Abs(s.MeanMs-500.005) > 0.001 {
		t.Errorf("summary = %+v", s)
	}
}

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	for _, v := range []int64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of range", v, i)
		}
		if up := histUpper(i); up < v {
			t.Errorf("histUpper(histIndex(%d)) = %d, below the value", v, up)
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Errorf("value %d also fits bucket %d (upper %d)", v, i-1, histUpper(i-1))
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	t.Parallel()
	a, b := newHistogram(), newHistogram()
	for i := int64(1); i <= 50; i++ {
		a.record(i)
		b.record(i + 50)
	}
	a.merge(b)
	a.merge(newHistogram())
	if a.n != 100 || a.min != 1 || a.max != 100 || a.percentile(50) != 50 || a.percentile(99) != 99 {
		t.Errorf("merged: n=%d min=%d max=%d p50=%d p99=%d", a.n, a.min, a.max, a.percentile(50), a.percentile(99))
	}
}

// TestAccounting feeds deliveries to two pairs and a fan-out topic and
// checks unique, duplicate, invalid and unexpected counts and the expected
// total derived from what was sent.
func TestAccounting(t *testing.T) {
	t.Parallel()
	const run = 7
	// publisher 0 -> t/0 (subscribers 0 and 2), publisher 1 -> t/1 (subscriber 1)
	a := newAccounting(run, []uint64{3, 2}, []string{"t/0", "t/1"}, []string{"t/0", "t/1", "t/0"})
	now := time.Unix(100, 0)
	msg := func(r, pub uint32, seq uint64) []byte {
		return encodePayload(header{Run: r, Pub: pub, Seq: seq, SentNs: now.Add(-time.Millisecond).UnixNano()}, 40)
	}
	deliveries := []struct {
		sub     int
		payload []byte
	}{
		{0, msg(run, 0, 0)},
		{0, msg(run, 0, 1)},
		{0, msg(run, 0, 1)},   // duplicate
		{0, msg(run, 0, 3)},   // seq beyond what publisher 0 sends: unexpected
		{0, msg(run, 1, 0)},   // publisher 1 is not on t/0: unexpected
		{0, msg(run+1, 0, 2)}, // another run: invalid
		{0, []byte("hello")},  // not ours: invalid
		{1, msg(run, 1, 0)},
		{1, msg(run, 1, 1)},
		{2, msg(run, 0, 0)},
		{2, msg(run, 0, 1)},
		{2, msg(run, 0, 2)},
		{2, msg(run, 0, 2)}, // duplicate
	}
	for _, d := range deliveries {
		a.receive(d.sub, d.payload, now)
	}
	tot := a.totals()
	if tot.unique != 7 || tot.dups != 2 || tot.invalid != 2 || tot.foreign != 2 {
		t.Errorf("unique=%d dups=%d invalid=%d unexpected=%d, want 7 2 2 2", tot.unique, tot.dups, tot.invalid, tot.foreign)
	}
	if got := a.unique.Load(); got != 7 {
		t.Errorf("live unique counter = %d, want 7", got)
	}
	// All sent: 3 messages × 2 subscribers + 2 × 1 = 8 expected, 7 arrived.
	if e := a.expected([]uint64{3, 2}); e != 8 {
		t.Errorf("expected(all sent) = %d, want 8", e)
	}
	// Publisher 0 only got 2 out: 2×2 + 2 = 6.
	if e := a.expected([]uint64{2, 2}); e != 6 {
		t.Errorf("expected(partial) = %d, want 6", e)
	}
	if tot.hist.n != 7 || tot.hist.percentile(50) != int64(time.Millisecond) {
		// 1 ms is 1_000_000 ns; its bucket upper bound is clamped to the max.
		t.Errorf("latency n=%d p50=%d, want 7 deliveries of 1ms", tot.hist.n, tot.hist.percentile(50))
	}
	if a.lastRecvNs.Load() != now.UnixNano() {
		t.Errorf("last receive time not recorded")
	}
}

func TestMakePlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		pubs, subs, n  int
		fanout         bool
		topic          string
		wantTopics     int
		wantPubTopic1  string
		wantSubTopicLt string
		wantPerPub     []uint64
	}{
		{"pairs", 3, 3, 10, false, "b/%d", 3, "b/1", "b/2", []uint64{4, 3, 3}},
		{"fanout flag", 2, 5, 4, true, "b/%d", 1, "b/0", "b/0", []uint64{2, 2}},
		{"one to many", 1, 4, 5, false, "b/%d", 1, "", "b/0", []uint64{5}},
		{"many to one", 4, 1, 4, false, "b/%d", 1, "b/0", "b/0", []uint64{1, 1, 1, 1}},
		{"no verb", 2, 2, 2, false, "fixed", 1, "fixed", "fixed", []uint64{1, 1}},
		{"more subs", 2, 5, 2, false, "x/%d/y", 2, "x/1/y", "x/0/y", []uint64{1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := makePlan(&config{publishers: tc.pubs, subscribers: tc.subs, messages: tc.n, fanout: tc.fanout, topic: tc.topic})
			if p.topics != tc.wantTopics {
				t.Errorf("topics = %d, want %d", p.topics, tc.wantTopics)
			}
			if tc.pubs > 1 && p.pubTopic[1] != tc.wantPubTopic1 {
				t.Errorf("publisher 1 topic = %q, want %q", p.pubTopic[1], tc.wantPubTopic1)
			}
			if got := p.subTopic[tc.subs-1]; got != tc.wantSubTopicLt {
				t.Errorf("last subscriber topic = %q, want %q", got, tc.wantSubTopicLt)
			}
			var sum uint64
			for i, n := range p.perPub {
				sum += n
				if n != tc.wantPerPub[i] {
					t.Errorf("perPub = %v, want %v", p.perPub, tc.wantPerPub)
					break
				}
			}
			if sum != uint64(tc.n) {
				t.Errorf("perPub sums to %d, want %d", sum, tc.n)
			}
		})
	}
}
