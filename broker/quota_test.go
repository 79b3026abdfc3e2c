package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

func retainedBy(who, topic string, n int) *broker.Envelope {
	return &broker.Envelope{Topic: topic, Payload: []byte(strings.Repeat("x", n)), Retain: true,
		Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: who}}
}

// TestRetainedQuota checks the retained bounds per principal and in all:
// a publish past one is refused with ErrQuota (an ErrStorage too), another
// principal goes on, overwriting and clearing free a share, the hub's own
// values are never refused, and the accounting survives a restart.
func TestRetainedQuota(t *testing.T) {
	ctx := context.Background()
	// Topic "t/N" (3 bytes) + payload: Size 3+n.
	for _, tc := range []struct {
		name string
		q    broker.Quotas
		// alice publishes t/0..t/(fits-1) with payloads of size n; the
		// next one is refused.
		n, fits int
		// bobRefused: after alice is at her bound, bob is refused too
		// (a global bound).
		bobRefused bool
	}{
		{"count per principal", broker.Quotas{RetainedPerPrincipal: 3}, 10, 3, false},
		{"bytes per principal", broker.Quotas{RetainedBytesPerPrincipal: 40}, 10, 3, false},
		{"count in all", broker.Quotas{RetainedTotal: 3}, 10, 3, true},
		{"bytes in all", broker.Quotas{RetainedBytesTotal: 40}, 10, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spool := bustest.NewMemSpool()
			b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Quotas: tc.q})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			topic := func(i int) string { return "t/" + string(rune('a'+i)) }
			for i := range tc.fits {
				if err := b.Publish(ctx, retainedBy("alice", topic(i), tc.n)); err != nil {
					t.Fatalf("retained value %d of %d: %v", i+1, tc.fits, err)
				}
			}
			err = b.Publish(ctx, retainedBy("alice", topic(tc.fits), tc.n))
			if !errors.Is(err, broker.ErrQuota) || !errors.Is(err, broker.ErrStorage) {
				t.Fatalf("retained value past the bound: err %v, want ErrQuota and ErrStorage", err)
			}
			if rs, _ := b.Retained(ctx, "#"); len(rs) != tc.fits {
				t.Fatalf("%d retained values after a refusal, want %d", len(rs), tc.fits)
			}
			// Overwriting her own value with one of the same size fits.
			if err := b.Publish(ctx, retainedBy("alice", topic(0), tc.n)); err != nil {
				t.Fatalf("overwrite at the bound: %v", err)
			}
			err = b.Publish(ctx, retainedBy("bob", "u/a", tc.n))
			if got := errors.Is(err, broker.ErrQuota); got != tc.bobRefused {
				t.Fatalf("bob's retained value with alice at her bound: err %v, refused %v, want %v", err, got, tc.bobRefused)
			}
			// The hub's own values are never refused.
			hub := retainedBy("", "$hub/x", tc.n)
			hub.Origin.Protocol = broker.ProtoHub
			if err := b.Publish(ctx, hub); err != nil {
				t.Fatalf("the hub's own retained value: %v", err)
			}
			if err := b.Publish(ctx, retainedBy("alice", "$hub/x", 0)); err != nil {
				t.Fatal(err)
			}
			// Clearing one of alice's frees her share.
			if err := b.Publish(ctx, retainedBy("alice", topic(1), 0)); err != nil {
				t.Fatalf("clear: %v", err)
			}
			if !tc.bobRefused {
				if err := b.Publish(ctx, retainedBy("alice", topic(tc.fits), tc.n)); err != nil {
					t.Fatalf("after a clear: %v", err)
				}
			}
			before := b.Usage("alice")
			if st := b.QuotaStats(); st.Refused == 0 {
				t.Errorf("refused counter %d, want > 0", st.Refused)
			}
			b.Close()
			b2, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, Quotas: tc.q})
			if err != nil {
				t.Fatal(err)
			}
			defer b2.Close()
			if after := b2.Usage("alice"); after != before {
				t.Errorf("usage after a restart %+v, before %+v", after, before)
			}
		})
	}
}

// TestRetainedQuotaOverwriteByOther checks that a value overwritten by
// another principal leaves its first owner's share and joins the new
// owner's.
func TestRetainedQuotaOverwriteByOther(t *testing.T) {
	ctx := context.Background()
	b, err := broker.NewMemory(broker.MemoryConfig{Quotas: broker.Quotas{RetainedPerPrincipal: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Publish(ctx, retainedBy("alice", "t/a", 5)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, retainedBy("bob", "t/a", 5)); err != nil {
		t.Fatal(err)
	}
	if u := b.Usage("alice"); u.Retained != 0 || u.RetainedBytes != 0 {
		t.Errorf("alice after bob overwrote her value: %+v, want nothing", u)
	}
	if u := b.Usage("bob"); u.Retained != 1 || u.RetainedBytes != 8 {
		t.Errorf("bob: %+v, want 1 value of 8 bytes", u)
	}
	if err := b.Publish(ctx, retainedBy("alice", "t/b", 5)); err != nil {
		t.Errorf("alice's share was not freed: %v", err)
	}
}

// TestQueuedQuota checks the queued-bytes quota of a principal across its
// durable subscriptions: its own publishes past it are refused with
// ErrQuota, another principal's publish still succeeds and reaches the
// others while the greedy subscriptions drop it (counted, reported), and
// acknowledging frees the share; the accounting is found again after a
// restart.
func TestQueuedQuota(t *testing.T) {
	ctx := context.Background()
	spool := bustest.NewMemSpool()
	q := broker.Quotas{QueuedBytesPerPrincipal: 800}
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: spool, WriteThrough: true, Quotas: q})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nop := func(context.Context, *broker.Envelope) error { return nil }
	// greedy has 4 sessions, away; bob one, away too.
	for i := range 4 {
		s, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "greedy-" + string(rune('0'+i)), Durable: true,
			Filters: []string{"g/#"}, QoS: 1, Principal: "greedy"}, nop)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Detach(); err != nil {
			t.Fatal(err)
		}
	}
	bs, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "bob-0", Durable: true, Filters: []string{"g/#"}, QoS: 1, Principal: "bob"}, nop)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Detach(); err != nil {
		t.Fatal(err)
	}
	// 100 bytes a publish (topic "g/x" + 97), 4 copies for greedy: 2
	// publishes fit in 800 bytes, the third is refused.
	pub := func(who string) error {
		return b.Publish(ctx, &broker.Envelope{Topic: "g/x", Payload: []byte(strings.Repeat("p", 97)), QoS: 1,
			Origin: broker.Origin{Protocol: broker.ProtoMQTT, Principal: who}})
	}
	for i := range 2 {
		if err := pub("greedy"); err != nil {
			t.Fatalf("greedy publish %d: %v", i+1, err)
		}
	}
	if err := pub("greedy"); !errors.Is(err, broker.ErrQuota) || !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("greedy publish past the quota: err %v, want ErrQuota and ErrStorage", err)
	}
	if u := b.Usage("greedy"); u.QueuedBytes != 800 {
		t.Errorf("greedy queues %d bytes, want 800", u.QueuedBytes)
	}
	// Alice's publish goes through: bob's queue takes it, greedy's drop it.
	if err := pub("alice"); err != nil {
		t.Fatalf("alice's publish with greedy over quota: %v", err)
	}
	if n := spool.Len("bob-0"); n != 3 {
		t.Errorf("bob's queue holds %d, want 3", n)
	}
	if n := spool.Len("greedy-0"); n != 2 {
		t.Errorf("greedy-0's queue holds %d, want 2", n)
	}
	if st := b.QuotaStats(); st.Dropped != 4 || st.Refused != 1 || st.Total.QueuedBytes != 1100 {
		t.Errorf("quota stats %+v, want 4 dropped, 1 refused, 1100 bytes queued", st)
	}
	b.Close()

	// After a restart the queues are charged to their owners again.
	b, err = broker.NewMemory(broker.MemoryConfig{Spool: spool, WriteThrough: true, Quotas: q})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if u := b.Usage("greedy"); u.QueuedBytes != 800 {
		t.Fatalf("greedy queues %d bytes after a restart, want 800", u.QueuedBytes)
	}
	if err := pub("greedy"); !errors.Is(err, broker.ErrQuota) {
		t.Fatalf("greedy over quota after a restart: err %v, want ErrQuota", err)
	}
	// Taking one session's queue frees its share.
	c := bustest.NewCollector()
	s, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "greedy-0", Durable: true, KeepFilters: true, QoS: 1, Principal: "greedy"}, c.Handle)
	if err != nil {
		t.Fatal(err)
	}
	c.Wait(t, 2)
	deadline := time.Now().Add(5 * time.Second)
	for b.Usage("greedy").QueuedBytes != 600 || b.QuotaStats().Total.QueuedBytes != 900 {
		if time.Now().After(deadline) {
			t.Fatalf("greedy queues %d bytes after greedy-0 took its 2, want 600", b.Usage("greedy").QueuedBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pub("greedy"); !errors.Is(err, broker.ErrQuota) {
		t.Fatalf("greedy at 600 of 800 bytes publishing 4 copies of 100: err %v, want ErrQuota", err)
	}
	// Two sessions fewer: 400 bytes, room for one more publish (2 copies).
	if err := s.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := broker.Forget(ctx, b, "greedy-1"); err != nil {
		t.Fatal(err)
	}
	if u := b.Usage("greedy"); u.QueuedBytes != 400 {
		t.Errorf("greedy queues %d bytes with 2 sessions left, want 400", u.QueuedBytes)
	}
	if err := pub("greedy"); err != nil {
		t.Errorf("greedy under quota again: %v", err)
	}
}

// TestQuotaValidation checks that a negative quota is refused by name.
func TestQuotaValidation(t *testing.T) {
	_, err := broker.NewMemory(broker.MemoryConfig{Quotas: broker.Quotas{RetainedBytesTotal: -1}})
	if err == nil || !strings.Contains(err.Error(), "RetainedBytesTotal") {
		t.Fatalf("negative quota: err %v, want one naming RetainedBytesTotal", err)
	}
}
