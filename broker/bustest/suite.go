package bustest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// Factory makes a bus over spool for one test; the suite closes it. Called
// twice with the same spool, it must give a bus that finds the durable
// state of the first (a restart).
type Factory func(t *testing.T, spool broker.Spool) broker.Bus

// wait bounds every wait in the suite.
const wait = 5 * time.Second

// Run runs the conformance suite against the buses newBus makes.
func Run(t *testing.T, newBus Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"PublishSubscribe", testPublishSubscribe},
		{"DollarTopics", testDollarTopics},
		{"InvalidTopics", testInvalidTopics},
		{"Retained", testRetained},
		{"NoLocal", testNoLocal},
		{"DuplicateID", testDuplicateID},
		{"Unsubscribe", testUnsubscribe},
		{"SlowQoS0Drops", testSlowQoS0},
		{"SlowDurableKeepsOrder", testSlowDurable},
		{"DetachAndResume", testDetachResume},
		{"Restart", testRestart},
		{"Expiry", testExpiry},
		{"StorageFull", testStorageFull},
		{"SyncBeforeAck", testSyncBeforeAck},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBus) })
	}
}

// Collector records what a handler receives.
type Collector struct {
	mu   sync.Mutex
	got  []*broker.Envelope
	cond chan struct{}
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector { return &Collector{cond: make(chan struct{}, 1)} }

// Handle is a broker.Handler.
func (c *Collector) Handle(_ context.Context, e *broker.Envelope) error {
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
	select {
	case c.cond <- struct{}{}:
	default:
	}
	return nil
}

// Wait waits until n envelopes arrived (or fails the test) and returns them.
func (c *Collector) Wait(t testing.TB, n int) []*broker.Envelope {
	t.Helper()
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		if len(c.got) >= n {
			out := append([]*broker.Envelope(nil), c.got...)
			c.mu.Unlock()
			return out
		}
		have := len(c.got)
		c.mu.Unlock()
		select {
		case <-c.cond:
		case <-deadline:
			t.Fatalf("got %d envelopes, want %d", have, n)
		}
	}
}

// Len returns how many envelopes arrived.
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func open(t *testing.T, f Factory, spool broker.Spool) broker.Bus {
	b := f(t, spool)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func pub(t *testing.T, b broker.Bus, topic, payload string, qos byte) {
	t.Helper()
	e := &broker.Envelope{Topic: topic, Payload: []byte(payload), QoS: qos, Origin: broker.Origin{Protocol: broker.ProtoREST}}
	if err := b.Publish(context.Background(), e); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func sub(t *testing.T, b broker.Bus, opts broker.SubscribeOptions, h broker.Handler) broker.Subscription {
	t.Helper()
	s, err := b.Subscribe(context.Background(), opts, h)
	if err != nil {
		t.Fatalf("subscribe %v: %v", opts.Filters, err)
	}
	return s
}

func testPublishSubscribe(t *testing.T, f Factory) {
	b := open(t, f, nil)
	c := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"a/+/c", "a/#"}, QoS: 1}, c.Handle)
	other := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"x/y"}}, other.Handle)
	pub(t, b, "a/b/c", "1", 1) // matches both filters: delivered once
	pub(t, b, "z", "2", 0)
	pub(t, b, "a", "3", 0)
	got := c.Wait(t, 2)
	time.Sleep(50 * time.Millisecond)
	if c.Len() != 2 {
		t.Fatalf("got %d envelopes, want 2 (one per matching publish)", c.Len())
	}
	if got[0].Topic != "a/b/c" || string(got[0].Payload) != "1" || got[0].ID == "" || got[0].Time.IsZero() {
		t.Fatalf("first envelope %+v", got[0])
	}
	if got[1].Topic != "a" {
		t.Fatalf("second envelope topic %q, want a", got[1].Topic)
	}
	if other.Len() != 0 {
		t.Fatalf("non-matching subscriber got %d", other.Len())
	}
}

func testDollarTopics(t *testing.T, f Factory) {
	b := open(t, f, nil)
	all, hub := NewCollector(), NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"#"}}, all.Handle)
	sub(t, b, broker.SubscribeOptions{Filters: []string{"$hub/#"}}, hub.Handle)
	pub(t, b, "$hub/devices/d/presence", "x", 0)
	pub(t, b, "plain", "y", 0)
	hub.Wait(t, 1)
	got := all.Wait(t, 1)
	time.Sleep(50 * time.Millisecond)
	if all.Len() != 1 || got[0].Topic != "plain" {
		t.Fatalf("# received a $ topic: %d envelopes", all.Len())
	}
}

func testInvalidTopics(t *testing.T, f Factory) {
	b := open(t, f, nil)
	for topic, want := range map[string]error{"": broker.ErrInvalidTopic, "a/+": broker.ErrWildcardTopic, "#": broker.ErrWildcardTopic} {
		err := b.Publish(context.Background(), &broker.Envelope{Topic: topic})
		if !errors.Is(err, want) {
			t.Errorf("publish %q: %v, want %v", topic, err, want)
		}
	}
	if err := b.Publish(context.Background(), &broker.Envelope{Topic: "a", QoS: 3}); err == nil {
		t.Error("qos 3 accepted")
	}
	if _, err := b.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"a/#/b"}}, NewCollector().Handle); !errors.Is(err, broker.ErrInvalidFilter) {
		t.Errorf("subscribe a/#/b: %v", err)
	}
}

func testRetained(t *testing.T, f Factory) {
	spool := NewMemSpool()
	b := open(t, f, spool)
	ctx := context.Background()
	for _, e := range []*broker.Envelope{
		{Topic: "r/1", Payload: []byte("a"), Retain: true},
		{Topic: "r/2", Payload: []byte("b"), Retain: true},
		{Topic: "r/1", Payload: []byte("c"), Retain: true},
		{Topic: "r/3", Payload: []byte("d")},
	} {
		if err := b.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := b.Retained(ctx, "r/#")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Topic != "r/1" || string(rs[0].Payload) != "c" || rs[1].Topic != "r/2" {
		t.Fatalf("retained = %v", topics(rs))
	}
	if err := b.Publish(ctx, &broker.Envelope{Topic: "r/2", Retain: true}); err != nil {
		t.Fatal(err)
	}
	rs, _ = b.Retained(ctx, "r/#")
	if len(rs) != 1 {
		t.Fatalf("after clearing r/2: %v", topics(rs))
	}
	_ = b.Close()
	b2 := open(t, f, spool)
	rs, _ = b2.Retained(ctx, "#")
	if len(rs) != 1 || string(rs[0].Payload) != "c" {
		t.Fatalf("after restart: %v", topics(rs))
	}
}

func topics(es []*broker.Envelope) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Topic+"="+string(e.Payload))
	}
	return out
}

func testNoLocal(t *testing.T, f Factory) {
	b := open(t, f, nil)
	c := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"t"}, NoLocalProtocol: broker.ProtoMQTT, NoLocalNode: "n1"}, c.Handle)
	ctx := context.Background()
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("own"), Origin: broker.Origin{Protocol: broker.ProtoMQTT, Node: "n1"}})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("other node"), Origin: broker.Origin{Protocol: broker.ProtoMQTT, Node: "n2"}})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("coap"), Origin: broker.Origin{Protocol: broker.ProtoCoAP, Node: "n1"}})
	got := c.Wait(t, 2)
	time.Sleep(50 * time.Millisecond)
	if c.Len() != 2 || string(got[0].Payload) != "other node" || string(got[1].Payload) != "coap" {
		t.Fatalf("got %v", topics(got))
	}
}

func testDuplicateID(t *testing.T, f Factory) {
	b := open(t, f, nil)
	sub(t, b, broker.SubscribeOptions{ID: "x", Filters: []string{"a"}}, NewCollector().Handle)
	if _, err := b.Subscribe(context.Background(), broker.SubscribeOptions{ID: "x", Filters: []string{"a"}}, NewCollector().Handle); !errors.Is(err, broker.ErrDuplicateSubscriber) {
		t.Fatalf("second subscribe with the same id: %v", err)
	}
}

func testUnsubscribe(t *testing.T, f Factory) {
	b := open(t, f, nil)
	c := NewCollector()
	s := sub(t, b, broker.SubscribeOptions{ID: "u", Filters: []string{"a"}}, c.Handle)
	pub(t, b, "a", "1", 0)
	c.Wait(t, 1)
	if err := s.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	pub(t, b, "a", "2", 0)
	time.Sleep(50 * time.Millisecond)
	if c.Len() != 1 {
		t.Fatalf("delivered after unsubscribe: %d", c.Len())
	}
	// The id is free again.
	sub(t, b, broker.SubscribeOptions{ID: "u", Filters: []string{"a"}}, c.Handle)
}

// blocker is a handler that waits until released.
type blocker struct {
	release chan struct{}
	c       *Collector
}

func (bl *blocker) Handle(ctx context.Context, e *broker.Envelope) error {
	select {
	case <-bl.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return bl.c.Handle(ctx, e)
}

func testSlowQoS0(t *testing.T, f Factory) {
	b := open(t, f, nil)
	bl := &blocker{release: make(chan struct{}), c: NewCollector()}
	slow := sub(t, b, broker.SubscribeOptions{Filters: []string{"s"}, QueueLen: 4}, bl.Handle)
	fast := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"s"}, QueueLen: 1000}, fast.Handle)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			pub(t, b, "s", fmt.Sprint(i), 0)
		}
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("a stalled subscriber blocked the publisher")
	}
	fast.Wait(t, 100)
	close(bl.release)
	st := slow.Stats()
	if st.Dropped == 0 || st.Dropped > 96 {
		t.Fatalf("slow QoS 0 subscriber stats %+v: want drops counted", st)
	}
}

func testSlowDurable(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	bl := &blocker{release: make(chan struct{}), c: NewCollector()}
	s := sub(t, b, broker.SubscribeOptions{ID: "slow", Durable: true, Filters: []string{"s"}, QoS: 1, QueueLen: 4}, bl.Handle)
	const n = 200
	for i := range n {
		pub(t, b, "s", fmt.Sprint(i), 1)
	}
	close(bl.release)
	got := bl.c.Wait(t, n)
	for i, e := range got {
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("envelope %d has payload %s: order lost", i, e.Payload)
		}
	}
	if st := s.Stats(); st.Dropped != 0 || st.Spooled == 0 {
		t.Fatalf("stats %+v: want spooled > 0 and nothing dropped", st)
	}
}

func testDetachResume(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	c := NewCollector()
	opts := broker.SubscribeOptions{ID: "d", Durable: true, Filters: []string{"d/#"}, QoS: 1}
	s := sub(t, b, opts, c.Handle)
	pub(t, b, "d/x", "0", 1)
	c.Wait(t, 1)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		pub(t, b, "d/x", fmt.Sprint(i), 1)
	}
	pub(t, b, "d/x", "qos0 is not kept", 0)
	c2 := NewCollector()
	sub(t, b, opts, c2.Handle)
	got := c2.Wait(t, 10)
	for i, e := range got {
		if string(e.Payload) != fmt.Sprint(i+1) {
			t.Fatalf("resumed envelope %d = %s", i, e.Payload)
		}
	}
	pub(t, b, "d/x", "live", 1)
	got = c2.Wait(t, 11)
	if string(got[10].Payload) != "live" {
		t.Fatalf("after resume got %s", got[10].Payload)
	}
}

func testRestart(t *testing.T, f Factory) {
	spool := NewMemSpool()
	b := open(t, f, spool)
	opts := broker.SubscribeOptions{ID: "r", Durable: true, Filters: []string{"r"}, QoS: 2}
	s := sub(t, b, opts, NewCollector().Handle)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	b2 := open(t, f, spool)
	for i := range 5 {
		pub(t, b2, "r", fmt.Sprint(i), 1)
	}
	_ = b2.Close()
	b3 := open(t, f, spool)
	c := NewCollector()
	sub(t, b3, opts, c.Handle)
	got := c.Wait(t, 5)
	for i, e := range got {
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("after restart envelope %d = %s", i, e.Payload)
		}
	}
}

func testExpiry(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	opts := broker.SubscribeOptions{ID: "e", Durable: true, Filters: []string{"e"}, QoS: 1}
	s := sub(t, b, opts, NewCollector().Handle)
	_ = s.Detach()
	ctx := context.Background()
	_ = b.Publish(ctx, &broker.Envelope{Topic: "e", Payload: []byte("old"), QoS: 1, Expiry: time.Now().Add(20 * time.Millisecond)})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "e", Payload: []byte("fresh"), QoS: 1})
	time.Sleep(40 * time.Millisecond)
	c := NewCollector()
	sub(t, b, opts, c.Handle)
	got := c.Wait(t, 1)
	time.Sleep(50 * time.Millisecond)
	if c.Len() != 1 || string(got[0].Payload) != "fresh" {
		t.Fatalf("got %v, want only the unexpired envelope", topics(got))
	}
}

func testStorageFull(t *testing.T, f Factory) {
	spool := NewMemSpool()
	b := open(t, f, spool)
	s := sub(t, b, broker.SubscribeOptions{ID: "full", Durable: true, Filters: []string{"f"}, QoS: 1}, NewCollector().Handle)
	_ = s.Detach()
	spool.mu.Lock()
	spool.FailEnqueue = errors.New("disk full")
	spool.mu.Unlock()
	err := b.Publish(context.Background(), &broker.Envelope{Topic: "f", Payload: []byte("x"), QoS: 1})
	if !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("QoS 1 publish with a full spool: %v, want ErrStorage", err)
	}
	if err := b.Publish(context.Background(), &broker.Envelope{Topic: "f", Payload: []byte("x"), QoS: 0}); err != nil {
		t.Fatalf("QoS 0 publish with a full spool: %v", err)
	}
}

// testSyncBeforeAck: envelopes a durable subscriber took from its queue
// stay queued until its Sync succeeds; a failed Sync delivers them again,
// a successful one removes them.
func testSyncBeforeAck(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	opts := broker.SubscribeOptions{ID: "s", Durable: true, Filters: []string{"s/#"}, QoS: 1}
	s := sub(t, b, opts, NewCollector().Handle)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		pub(t, b, "s/x", fmt.Sprint(i), 1)
	}
	var mu sync.Mutex
	fails, syncs := 1, 0
	opts.Sync = func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		syncs++
		if fails > 0 {
			fails--
			return errors.New("session store unavailable")
		}
		return nil
	}
	c := NewCollector()
	s = sub(t, b, opts, c.Handle)
	got := c.Wait(t, 6)
	for i, e := range got {
		if want := fmt.Sprint(i % 3); string(e.Payload) != want {
			t.Fatalf("delivery %d = %s, want %s (the batch again after a failed sync)", i, e.Payload, want)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		n := syncs
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Sync ran %d times, want 2", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	opts.Sync = nil
	c2 := NewCollector()
	s = sub(t, b, opts, c2.Handle)
	time.Sleep(200 * time.Millisecond)
	if n := c2.Len(); n != 0 {
		t.Errorf("%d envelopes delivered again after a successful sync", n)
	}
	_ = s.Detach()
}
