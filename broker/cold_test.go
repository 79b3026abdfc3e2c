package broker_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// TestColdRetained checks that retained values with payloads above
// ColdRetainedAbove are kept in the store only, before and after a
// restart, and read back whole: by Retained, by a subscription's replay,
// after an overwrite with a small value and after a clear; and that the
// quota accounting counts their full size.
func TestColdRetained(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	open := func() *broker.Memory {
		b, err := broker.NewMemory(broker.MemoryConfig{Spool: st, ColdRetainedAbove: 100})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := bytes.Repeat([]byte("B"), 1000)
	b := open()
	for _, e := range []*broker.Envelope{
		{Topic: "c/big", Payload: big, Retain: true, Origin: broker.Origin{Principal: "p"}},
		{Topic: "c/small", Payload: []byte("s"), Retain: true, Origin: broker.Origin{Principal: "p"}},
		{Topic: "c/gone", Payload: big, Retain: true, Origin: broker.Origin{Principal: "p"}},
	} {
		if err := b.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, &broker.Envelope{Topic: "c/gone", Retain: true, Origin: broker.Origin{Principal: "p"}}); err != nil {
		t.Fatal(err)
	}
	check := func(b *broker.Memory, when string) {
		t.Helper()
		if s := b.Stats(); s.Retained != 2 || s.RetainedCold != 1 {
			t.Errorf("%s: %d retained, %d cold; want 2 and 1", when, s.Retained, s.RetainedCold)
		}
		if u := b.Usage("p"); u.Retained != 2 || u.RetainedBytes != int64(len("c/big")+1000+len("c/small")+1) {
			t.Errorf("%s: usage %+v", when, u)
		}
		rs, err := b.Retained(ctx, "c/#")
		if err != nil || len(rs) != 2 || rs[0].Topic != "c/big" || !bytes.Equal(rs[0].Payload, big) || string(rs[1].Payload) != "s" {
			t.Fatalf("%s: retained %v %v", when, rs, err)
		}
		got := make(chan *broker.Envelope, 4)
		sub, err := b.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"c/big"}, SendRetained: true},
			func(_ context.Context, e *broker.Envelope) error { got <- e; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if e := <-got; !bytes.Equal(e.Payload, big) {
			t.Errorf("%s: replayed %d bytes, want %d", when, len(e.Payload), len(big))
		}
		_ = sub.Unsubscribe()
		for _, pc := range []struct {
			after        string
			limit, bytes int
			want         string
			more         bool
		}{
			{"", 1, 1 << 20, "c/big", true},
			{"", 5, 1 << 20, "c/big c/small", false},
			{"", 5, 10, "c/big", true}, // the first always comes
			{"c/big", 5, 10, "c/small", false},
			{"c/small", 5, 10, "", false},
		} {
			page, more, err := b.RetainedPage(ctx, "c/#", pc.after, pc.limit, pc.bytes)
			var topics []string
			for _, e := range page {
				topics = append(topics, e.Topic)
				if e.Topic == "c/big" && !bytes.Equal(e.Payload, big) {
					t.Errorf("%s: page: c/big with %d bytes", when, len(e.Payload))
				}
			}
			if got := strings.Join(topics, " "); got != pc.want || more != pc.more || err != nil {
				t.Errorf("%s: page after %q limit %d bytes %d: %q more %v %v; want %q more %v", when, pc.after, pc.limit, pc.bytes, got, more, err, pc.want, pc.more)
			}
		}
	}
	check(b, "running")
	b.Close()
	b = open()
	defer b.Close()
	check(b, "after a restart")
	// A small value in its place is hot again.
	if err := b.Publish(ctx, &broker.Envelope{Topic: "c/big", Payload: []byte("now small"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.RetainedCold != 0 {
		t.Errorf("%d cold after the overwrite, want 0", s.RetainedCold)
	}
	rs, _ := b.Retained(ctx, "c/big")
	if len(rs) != 1 || string(rs[0].Payload) != "now small" {
		t.Errorf("after the overwrite: %v", rs)
	}
}
