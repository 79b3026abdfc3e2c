package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

func TestSubjectSubset(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.*", true},
		{"a.b.c", "a.>", true},
		{"a", "a.>", false},
		{"a.*", "a.b", false},
		{"a.>", "a.*", false},
		{"a.*", "a.>", true},
		{"a.*.c", "a.b.*", false},
		{"a.b", "a.b.c", false},
	} {
		if got := subjectSubset(tc.a, tc.b); got != tc.want {
			t.Errorf("subjectSubset(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestSubjectsOf: the consumer's filter subjects leave out what another
// covers (JetStream refuses those) and the filters that deliver at QoS 0.
func TestSubjectsOf(t *testing.T) {
	b := &Bus{durSubj: "hub.q"}
	for _, tc := range []struct {
		specs []broker.Filter
		qos   byte
		want  string
	}{
		{[]broker.Filter{{Topic: "a/+/c", QoS: 1}, {Topic: "a/#", QoS: 1}}, 1, "[hub.q.a hub.q.a.>]"},
		{[]broker.Filter{{Topic: "a/b", QoS: 1}, {Topic: "a/b", QoS: 2}}, 2, "[hub.q.a.b]"},
		{[]broker.Filter{{Topic: "x", QoS: 0}, {Topic: "y", QoS: 1, Group: "g"}}, 1, "[hub.q.~~]"},
		{[]broker.Filter{{Topic: "x", QoS: 1}}, 0, "[hub.q.~~]"},
		{[]broker.Filter{{Topic: "#", QoS: 1}, {Topic: "$hub/+", QoS: 1}}, 1, "[hub.q.>]"},
	} {
		got, err := b.subjectsOf(tc.specs, tc.qos)
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("subjectsOf(%+v, %d) = %v, %v; want %s", tc.specs, tc.qos, got, err, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	nc := connect(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Conn is required"},
		{Config{Conn: nc, Prefix: "a.b"}, `prefix "a.b"`},
		{Config{Conn: nc, Replicas: 7}, "replicas 7"},
		{Config{Conn: nc, MaxBytes: -1}, "max bytes -1"},
	} {
		_, err := New(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// TestStreamFull: once the stream of envelopes is at its byte bound, a
// QoS 1 publish fails with ErrStorage and QoS 0 goes on.
func TestStreamFull(t *testing.T) {
	b := newBus(t, "full", Config{MaxBytes: 4096})
	defer b.Close()
	ctx := context.Background()
	s, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "away", Durable: true, Filters: []string{"f/#"}, QoS: 1},
		bustest.NewCollector().Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Unsubscribe() }()
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 512)
	var perr error
	for range 20 {
		if perr = b.Publish(ctx, &broker.Envelope{Topic: "f/x", Payload: payload, QoS: 1}); perr != nil {
			break
		}
	}
	if !errors.Is(perr, broker.ErrStorage) {
		t.Fatalf("QoS 1 into a full stream: %v, want ErrStorage", perr)
	}
	if err := b.Publish(ctx, &broker.Envelope{Topic: "f/x", Payload: payload}); err != nil {
		t.Fatalf("QoS 0 with the stream full: %v", err)
	}
}

// TestTwoHubs: two buses on one NATS (two hubs) share live envelopes once
// each, retained values, and a durable subscription detached on one is
// resumed on the other with what it missed.
func TestTwoHubs(t *testing.T) {
	a := newBus(t, "two", Config{Node: "a"})
	defer a.Close()
	b := newBus(t, "two", Config{Node: "b"})
	defer b.Close()
	ctx := context.Background()

	onA, onB := bustest.NewCollector(), bustest.NewCollector()
	for bus, c := range map[*Bus]*bustest.Collector{a: onA, b: onB} {
		s, err := bus.Subscribe(ctx, broker.SubscribeOptions{Filters: []string{"live/#"}, QoS: 1}, c.Handle)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Unsubscribe() }()
	}
	if err := a.Publish(ctx, &broker.Envelope{Topic: "live/0", Payload: []byte("q0")}); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, &broker.Envelope{Topic: "live/1", Payload: []byte("q1"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	onA.Wait(t, 2)
	got := onB.Wait(t, 2)
	if fmt.Sprint(topicsOf(got)) != "[live/0 live/1]" {
		t.Fatalf("on B: %v", topicsOf(got))
	}
	waitFor(t, "the retained value on B", func() bool {
		rs, _ := b.Retained(ctx, "live/#")
		return len(rs) == 1 && string(rs[0].Payload) == "q1"
	})
	if err := a.Publish(ctx, &broker.Envelope{Topic: "live/1", QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retained value cleared on B", func() bool {
		rs, _ := b.Retained(ctx, "live/#")
		return len(rs) == 0
	})
	if err := a.Publish(ctx, &broker.Envelope{Topic: "live/1", Payload: []byte("q2"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	onB.Wait(t, 4)
	c := newBus(t, "two", Config{Node: "c"}) // starts later: loads the KV bucket
	defer c.Close()
	if rs, _ := c.Retained(ctx, "live/#"); len(rs) != 1 {
		t.Fatalf("retained on a hub started later: %v", topicsOf(rs))
	}

	opts := broker.SubscribeOptions{ID: "session", Durable: true, Filters: []string{"s/#"}, QoS: 1}
	s, err := a.Subscribe(ctx, opts, bustest.NewCollector().Handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := c.Publish(ctx, &broker.Envelope{Topic: "s/x", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	resumed := bustest.NewCollector()
	opts.KeepFilters = true
	opts.Filters = nil
	s, err = b.Subscribe(ctx, opts, resumed.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Unsubscribe() }()
	if got := resumed.Wait(t, 3); fmt.Sprint(payloadsOf(got)) != "[0 1 2]" {
		t.Fatalf("resumed on B: %v", payloadsOf(got))
	}
	if fs := s.Filters(); len(fs) != 1 || fs[0].Topic != "s/#" {
		t.Fatalf("filters kept on B: %+v", fs)
	}
	if onA.Len() != 4 || onB.Len() != 4 {
		t.Fatalf("live subscribers got %d and %d, want 4 each (no loops)", onA.Len(), onB.Len())
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func topicsOf(es []*broker.Envelope) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Topic)
	}
	return out
}

func payloadsOf(es []*broker.Envelope) []string {
	var out []string
	for _, e := range es {
		out = append(out, string(e.Payload))
	}
	return out
}

// FuzzRetainedKey: a topic's KV key maps back to it, and any key either
// maps to a valid topic or is refused.
func FuzzRetainedKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "$hub/x", "a b/c.d", "/", "~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if key, err := retainedKey(s); err == nil {
			if got, err := topicOfKey(key); err != nil || got != s {
				t.Fatalf("topicOfKey(retainedKey(%q)) = %q, %v", s, got, err)
			}
		}
		if topic, err := topicOfKey(s); err == nil {
			if err := broker.ValidateTopic(topic); err != nil {
				t.Fatalf("topicOfKey(%q) = %q, not a topic: %v", s, topic, err)
			}
		}
	})
}

// TestStartSendsNoStreamUpdate: a hub starting on a NATS where its stream
// and buckets exist with its configuration sends no JetStream update
// request (Debian's nats-server 2.9.10 crashed on one, see
// ensureStream); a changed configuration is still applied.
func TestStartSendsNoStreamUpdate(t *testing.T) {
	watch := connect(t)
	var updates atomic.Int32
	sub, err := watch.Subscribe("$JS.API.STREAM.UPDATE.>", func(*nats.Msg) { updates.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the first makes the stream and buckets, the others find them
		b := newBus(t, "noupdate", Config{Node: fmt.Sprint("n", i)})
		_ = b.Close()
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := updates.Load(); n != 0 {
		t.Fatalf("%d stream update requests for an unchanged configuration, want 0", n)
	}
	b := newBus(t, "noupdate", Config{Node: "n3", MaxBytes: 1 << 20})
	defer b.Close()
	info, err := b.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxBytes != 1<<20 {
		t.Fatalf("stream max bytes %d after a start with 1 MiB, want it updated", info.Config.MaxBytes)
	}
	waitFor(t, "the update request seen", func() bool { return updates.Load() == 1 })
}
