package adapters

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestLimitsAcquire(t *testing.T) {
	t.Parallel()
	type conn struct {
		remote, user string
		want         error // nil: admitted
	}
	tests := []struct {
		name  string
		cfg   LimitsConfig
		conns []conn
	}{
		{"global", LimitsConfig{MaxConnections: 2}, []conn{
			{"10.0.0.1:1", "a", nil}, {"10.0.0.2:1", "b", nil}, {"10.0.0.3:1", "c", ErrServerBusy},
		}},
		{"per address counts the IP, not the port", LimitsConfig{MaxConnectionsPerAddress: 2}, []conn{
			{"127.0.0.1:1000", "a", nil}, {"127.0.0.1:1001", "b", nil}, {"127.0.0.1:1002", "c", ErrAddressLimit},
			{"[::1]:1000", "c", nil},
		}},
		{"per user across addresses", LimitsConfig{MaxConnectionsPerUser: 1}, []conn{
			{"10.0.0.1:1", "a", nil}, {"10.0.0.2:1", "a", ErrUserLimit}, {"10.0.0.2:2", "b", nil},
		}},
		{"anonymous has no user bound", LimitsConfig{MaxConnectionsPerUser: 1}, []conn{
			{"10.0.0.1:1", "", nil}, {"10.0.0.1:2", "", nil},
		}},
		{"negative means no limit", LimitsConfig{MaxConnections: -1, MaxConnectionsPerAddress: -1, MaxConnectionsPerUser: -1}, []conn{
			{"10.0.0.1:1", "a", nil}, {"10.0.0.1:2", "a", nil}, {"10.0.0.1:3", "a", nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := NewLimits(tc.cfg)
			var releases []func()
			for i, c := range tc.conns {
				rel, err := l.Acquire(c.remote, c.user)
				if (err == nil) != (c.want == nil) || (c.want != nil && !errors.Is(err, c.want)) {
					t.Fatalf("conn %d %+v: err %v, want %v", i, c, err, c.want)
				}
				if err != nil && !errors.Is(err, ErrLimit) {
					t.Fatalf("conn %d: %v is not ErrLimit", i, err)
				}
				if rel != nil {
					releases = append(releases, rel)
				}
			}
			for _, r := range releases {
				r()
				r() // a second call does nothing
			}
			if s := l.Stats(); s.Connections != 0 || s.Addresses != 0 || s.Users != 0 {
				t.Fatalf("after release: %+v", s)
			}
			// Once released, the refused one is admitted.
			for _, c := range tc.conns {
				rel, err := l.Acquire(c.remote, c.user)
				if err != nil && c.want == nil {
					t.Fatalf("%+v after release: %v", c, err)
				}
				if rel != nil {
					defer rel()
				}
			}
		})
	}
}

func TestLimitsReloadKeepsHeld(t *testing.T) {
	t.Parallel()
	l := NewLimits(LimitsConfig{MaxConnectionsPerUser: 3})
	var rel []func()
	for range 3 {
		r, err := l.Acquire("10.0.0.1:1", "u")
		if err != nil {
			t.Fatal(err)
		}
		rel = append(rel, r)
	}
	l.SetConfig(LimitsConfig{MaxConnectionsPerUser: 1})
	if _, err := l.Acquire("10.0.0.1:1", "u"); !errors.Is(err, ErrUserLimit) {
		t.Fatalf("over the new bound: %v", err)
	}
	if s := l.Stats(); s.Connections != 3 || s.Refused["connections_per_user"] != 1 {
		t.Fatalf("stats %+v", s)
	}
	for _, r := range rel {
		r()
	}
	if _, err := l.Acquire("10.0.0.1:1", "u"); err != nil {
		t.Fatal(err)
	}
}

func TestLimitsKeyedSets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		claim func(l *Limits, owner, m string) error
		rel   func(l *Limits, owner, m string)
		cfg   LimitsConfig
		want  error
	}{
		{"sessions", (*Limits).ClaimSession, (*Limits).ReleaseSession, LimitsConfig{MaxPersistentSessionsPerUser: 2}, ErrSessionLimit},
		{"resources", (*Limits).ClaimResource, (*Limits).ReleaseResource, LimitsConfig{MaxResourcesPerUser: 2}, ErrResourceLimit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := NewLimits(tc.cfg)
			for _, m := range []string{"a", "b", "a", "b"} { // claimed again: resumed
				if err := tc.claim(l, "u", m); err != nil {
					t.Fatalf("%s: %v", m, err)
				}
			}
			if err := tc.claim(l, "u", "c"); !errors.Is(err, tc.want) {
				t.Fatalf("third: %v, want %v", err, tc.want)
			}
			if err := tc.claim(l, "other", "c"); err != nil {
				t.Fatalf("another user: %v", err)
			}
			tc.rel(l, "u", "a")
			if err := tc.claim(l, "u", "c"); err != nil {
				t.Fatalf("after release: %v", err)
			}
		})
	}
}

func TestLimitsSubscriptionsAndTopic(t *testing.T) {
	t.Parallel()
	l := NewLimits(LimitsConfig{MaxSubscriptionsPerClient: 3, MaxTopicLength: 10})
	tests := []struct {
		held, adding int
		ok           bool
	}{{0, 3, true}, {2, 1, true}, {2, 2, false}, {3, 1, false}, {5, 0, true}}
	for _, tc := range tests {
		if err := l.CheckSubscriptions(tc.held, tc.adding); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrSubscriptionLimit)) {
			t.Errorf("held %d adding %d: %v", tc.held, tc.adding, err)
		}
	}
	if n := l.AllowedSubscriptions(5); n != 0 {
		t.Errorf("allowed over the bound: %d", n)
	}
	for topic, ok := range map[string]bool{"a/b": true, strings.Repeat("x", 10): true, strings.Repeat("x", 11): false} {
		if err := l.CheckTopic(topic); (err == nil) != ok || (err != nil && !errors.Is(err, ErrTopicTooLong)) {
			t.Errorf("topic %q: %v", topic, err)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg  LimitsConfig
		want string // "" valid
	}{
		{LimitsConfig{}, ""},
		{LimitsConfig{MaxTopicLength: 65536}, "limits.max_topic_length"},
		{LimitsConfig{MaxPendingBytes: 100}, "limits.max_pending_bytes"},
		{LimitsConfig{MaxPendingBytes: 1 << 30, MaxPendingBytesTotal: -1}, ""},
		{LimitsConfig{MaxPendingBytes: -1, MaxPendingBytesTotal: 1 << 20}, ""},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestPendingBudget(t *testing.T) {
	t.Parallel()
	l := NewLimits(LimitsConfig{MaxPendingBytes: 100 << 10, MaxPendingBytesTotal: 200 << 10})
	var mu sync.Mutex
	killed := map[string]error{}
	open := func(name string) *PendingConn {
		return l.NewPendingConn(func(err error) { mu.Lock(); killed[name] = err; mu.Unlock() })
	}
	big, mid, small := open("big"), open("mid"), open("small")
	for _, step := range []struct {
		p *PendingConn
		n int
	}{{big, 90 << 10}, {mid, 60 << 10}, {small, 10 << 10}} {
		if err := step.p.Add(step.n); err != nil {
			t.Fatal(err)
		}
	}
	// Per connection: over 100 KiB is refused to that connection only.
	if err := mid.Add(50 << 10); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("over the per-connection bound: %v", err)
	}
	if got := l.Stats().PendingBytes; got != 100<<10 {
		t.Fatalf("pending after mid cut off: %d", got)
	}
	// Global: 90 + 10 + 50 + 80 KiB > 200 KiB cuts off the largest (big),
	// not the writer.
	if err := small.Add(50 << 10); err != nil {
		t.Fatalf("small: %v", err)
	}
	other := open("other")
	if err := other.Add(80 << 10); err != nil {
		t.Fatalf("other past the budget: %v", err)
	}
	mu.Lock()
	if !errors.Is(killed["big"], ErrServerBusy) || len(killed) != 1 {
		t.Fatalf("killed %v", killed)
	}
	mu.Unlock()
	if got := l.Stats().PendingBytes; got != 140<<10 {
		t.Fatalf("pending after big cut off: %d", got)
	}
	small.Done(60 << 10)
	other.Close()
	for _, p := range []*PendingConn{big, mid, small} {
		p.Close()
		p.Close()
	}
	if s := l.Stats(); s.PendingBytes != 0 || s.Refused["slow_consumer"] != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func BenchmarkLimitsAcquire(b *testing.B) {
	l := NewLimits(LimitsConfig{})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rel, err := l.Acquire("10.0.0.1:1234", "u")
			if err != nil {
				b.Fatal(err)
			}
			rel()
		}
	})
}

// BenchmarkPendingAddDone is the cost the pending budget adds to every
// MQTT write.
func BenchmarkPendingAddDone(b *testing.B) {
	l := NewLimits(LimitsConfig{})
	b.RunParallel(func(pb *testing.PB) {
		p := l.NewPendingConn(func(error) {})
		defer p.Close()
		for pb.Next() {
			if err := p.Add(512); err != nil {
				b.Fatal(err)
			}
			p.Done(512)
		}
	})
}
