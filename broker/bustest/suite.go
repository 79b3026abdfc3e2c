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
		{"DetachWhilePublishing", testDetachWhilePublishing},
		{"Restart", testRestart},
		{"Expiry", testExpiry},
		{"StorageFull", testStorageFull},
		{"AckOutOfOrder", testAckOutOfOrder},
		{"WindowBound", testWindowBound},
		{"NackRedelivers", testNackRedelivers},
		{"DetachRedelivers", testDetachRedelivers},
		{"LiveFilterChanges", testLiveFilterChanges},
		{"RetainedOnAddFilter", testRetainedOnAddFilter},
		{"ConsumerGroups", testConsumerGroups},
		{"RightsShrink", testRightsShrink},
		{"SubscriptionIdentifiers", testSubscriptionIdentifiers},
		{"PublishAsync", testPublishAsync},
		{"PublishAsyncStorageFull", testPublishAsyncStorageFull},
		{"QuotaRetained", testQuotaRetained},
		{"QuotaQueued", testQuotaQueued},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBus) })
	}
}

// recorder keeps what arrives, in order, for tests to wait on.
type recorder[T any] struct {
	mu   sync.Mutex
	got  []T
	cond chan struct{}
}

func newRecorder[T any]() recorder[T] { return recorder[T]{cond: make(chan struct{}, 1)} }

func (r *recorder[T]) add(v T) {
	r.mu.Lock()
	r.got = append(r.got, v)
	r.mu.Unlock()
	select {
	case r.cond <- struct{}{}:
	default:
	}
}

// wait waits until n items arrived (or fails the test) and returns them.
func (r *recorder[T]) wait(t testing.TB, n int, what string) []T {
	t.Helper()
	deadline := time.After(wait)
	for {
		r.mu.Lock()
		if len(r.got) >= n {
			out := append([]T(nil), r.got...)
			r.mu.Unlock()
			return out
		}
		have := len(r.got)
		r.mu.Unlock()
		select {
		case <-r.cond:
		case <-deadline:
			t.Fatalf("got %d %s, want %d", have, what, n)
		}
	}
}

func (r *recorder[T]) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// Collector records what a handler receives.
type Collector struct{ r recorder[*broker.Envelope] }

// NewCollector returns an empty Collector.
func NewCollector() *Collector { return &Collector{r: newRecorder[*broker.Envelope]()} }

// Handle is a broker.Handler.
func (c *Collector) Handle(_ context.Context, e *broker.Envelope) error {
	c.r.add(e)
	return nil
}

// Wait waits until n envelopes arrived (or fails the test) and returns them.
func (c *Collector) Wait(t testing.TB, n int) []*broker.Envelope {
	t.Helper()
	return c.r.wait(t, n, "envelopes")
}

// Len returns how many envelopes arrived.
func (c *Collector) Len() int { return c.r.len() }

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

// testNoLocal: a NoLocal filter skips the subscriber's own publishes
// (same protocol and client id), and only through that filter.
func testNoLocal(t *testing.T, f Factory) {
	b := open(t, f, nil)
	c := NewCollector()
	self := broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "c1"}
	sub(t, b, broker.SubscribeOptions{QoS: 1, Self: self, Specs: []broker.Filter{{Topic: "t", NoLocal: true}, {Topic: "u"}}}, c.Handle)
	ctx := context.Background()
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("own"), Origin: self})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("other client"), Origin: broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "c2"}})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "t", Payload: []byte("coap"), Origin: broker.Origin{Protocol: broker.ProtoCoAP, ClientID: "c1"}})
	_ = b.Publish(ctx, &broker.Envelope{Topic: "u", Payload: []byte("own elsewhere"), Origin: self})
	got := c.Wait(t, 3)
	time.Sleep(50 * time.Millisecond)
	if c.Len() != 3 || fmt.Sprint(topics(got)) != "[t=other client t=coap u=own elsewhere]" {
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

// testDetachWhilePublishing detaches a durable subscriber while
// envelopes stream to it: whatever was on its way at that moment comes on
// the next attachment, not only after a redelivery timeout.
func testDetachWhilePublishing(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	opts := broker.SubscribeOptions{ID: "dw", Durable: true, Filters: []string{"dw/#"}, QoS: 1}
	const n = 400
	for round := range 3 {
		c := NewCollector()
		s := sub(t, b, opts, c.Handle)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range n {
				e := &broker.Envelope{Topic: "dw/x", Payload: []byte(fmt.Sprint(round, "-", i)), QoS: 1}
				if err := b.Publish(context.Background(), e); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
		c.Wait(t, n/4)
		if err := s.Detach(); err != nil {
			t.Fatal(err)
		}
		<-done
		c2 := NewCollector()
		s = sub(t, b, opts, c2.Handle)
		// At least once: every envelope, in either attachment.
		missing := func() []int {
			seen := map[string]bool{}
			for _, e := range append(c.Wait(t, 0), c2.Wait(t, 0)...) {
				seen[string(e.Payload)] = true
			}
			var miss []int
			for i := range n {
				if !seen[fmt.Sprint(round, "-", i)] {
					miss = append(miss, i)
				}
			}
			return miss
		}
		for deadline := time.Now().Add(wait); len(missing()) > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d envelopes before the detach, %d after; never delivered: %v", round, c.Len(), c2.Len(), missing())
			}
		}
		if err := s.Detach(); err != nil {
			t.Fatal(err)
		}
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

// Deliveries records what a DeliveryHandler receives, without acking.
type Deliveries struct{ r recorder[*broker.Delivery] }

// NewDeliveries returns an empty Deliveries.
func NewDeliveries() *Deliveries { return &Deliveries{r: newRecorder[*broker.Delivery]()} }

// Handle is a broker.DeliveryHandler.
func (c *Deliveries) Handle(d *broker.Delivery) { c.r.add(d) }

// Wait waits until n deliveries arrived (or fails the test) and returns
// them.
func (c *Deliveries) Wait(t testing.TB, n int) []*broker.Delivery {
	t.Helper()
	return c.r.wait(t, n, "deliveries")
}

// Len returns how many deliveries arrived.
func (c *Deliveries) Len() int { return c.r.len() }

// Stays checks that no more than n deliveries arrive within a short
// while: for a bound, the absence of deliveries is the property.
func (c *Deliveries) Stays(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(150 * time.Millisecond)
	for time.Now().Before(deadline) {
		if got := c.Len(); got > n {
			t.Fatalf("got %d deliveries, want at most %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func consume(t *testing.T, b broker.Bus, opts broker.SubscribeOptions, h broker.DeliveryHandler) broker.Subscription {
	t.Helper()
	s, err := b.Consume(context.Background(), opts, h)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func payloads(ds []*broker.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Envelope.Payload)
	}
	return out
}

// testAckOutOfOrder: deliveries may be acknowledged in any order; the
// unacknowledged one alone comes back after a detach.
func testAckOutOfOrder(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	opts := broker.SubscribeOptions{ID: "ooo", Durable: true, Filters: []string{"o/#"}, QoS: 1, MaxAckPending: 10}
	c := NewDeliveries()
	s := consume(t, b, opts, c.Handle)
	for i := range 5 {
		pub(t, b, "o/x", fmt.Sprint(i), 1)
	}
	ds := c.Wait(t, 5)
	for _, i := range []int{4, 0, 3, 1} {
		ds[i].Ack()
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	c2 := NewDeliveries()
	s = consume(t, b, opts, c2.Handle)
	got := c2.Wait(t, 1)
	if payloads(got)[0] != "2" || !got[0].Redelivered {
		t.Errorf("after detach: %v (redelivered %v), want only 2, redelivered", payloads(got), got[0].Redelivered)
	}
	got[0].Ack()
	c2.Stays(t, 1)
	_ = s.Unsubscribe()
}

// bothKinds runs fn for a non-durable and for a durable Consume
// subscription to topic/# with the given window.
func bothKinds(t *testing.T, b broker.Bus, id, topic string, window int, fn func(t *testing.T, s broker.Subscription, c *Deliveries)) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			opts := broker.SubscribeOptions{ID: fmt.Sprint(id, durable), Durable: durable, Filters: []string{topic + "/#"}, QoS: 1, MaxAckPending: window}
			c := NewDeliveries()
			s := consume(t, b, opts, c.Handle)
			defer func() { _ = s.Unsubscribe() }()
			fn(t, s, c)
		})
	}
}

// testWindowBound: no more than MaxAckPending deliveries are out at once;
// each ack lets one more go.
func testWindowBound(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	bothKinds(t, b, "win", "w", 3, func(t *testing.T, s broker.Subscription, c *Deliveries) {
		for i := range 10 {
			pub(t, b, "w/x", fmt.Sprint(i), 1)
		}
		ds := c.Wait(t, 3)
		c.Stays(t, 3)
		ds[1].Ack()
		ds = c.Wait(t, 4)
		c.Stays(t, 4)
		if got := payloads(ds); fmt.Sprint(got) != "[0 1 2 3]" {
			t.Errorf("deliveries %v, want [0 1 2 3]", got)
		}
		if st := s.Stats(); st.Pending != 3 {
			t.Errorf("Stats.Pending = %d, want 3", st.Pending)
		}
		for _, d := range ds {
			d.Ack()
		}
		for i := 4; i < 10; i++ {
			ds = c.Wait(t, i+1)
			ds[i].Ack()
		}
		if got := payloads(c.Wait(t, 10)); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
			t.Errorf("deliveries %v", got)
		}
	})
}

// testNackRedelivers: a nacked delivery comes again before anything newer,
// marked Redelivered.
func testNackRedelivers(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	bothKinds(t, b, "nack", "n", 1, func(t *testing.T, _ broker.Subscription, c *Deliveries) {
		pub(t, b, "n/x", "a", 1)
		pub(t, b, "n/x", "b", 1)
		ds := c.Wait(t, 1)
		ds[0].Nack()
		ds = c.Wait(t, 2)
		if string(ds[1].Envelope.Payload) != "a" || !ds[1].Redelivered || ds[0].Redelivered {
			t.Fatalf("after nack: %v, redelivered %v %v", payloads(ds), ds[0].Redelivered, ds[1].Redelivered)
		}
		ds[1].Ack()
		ds = c.Wait(t, 3)
		if string(ds[2].Envelope.Payload) != "b" || ds[2].Redelivered {
			t.Errorf("next: %s redelivered %v, want b, new", ds[2].Envelope.Payload, ds[2].Redelivered)
		}
		ds[2].Ack()
	})
}

// testDetachRedelivers: what was delivered but not acknowledged when a
// durable subscriber detached comes first, in order, when it attaches
// again, marked Redelivered; what was never delivered is not marked.
func testDetachRedelivers(t *testing.T, f Factory) {
	spool := NewMemSpool()
	b := open(t, f, spool)
	opts := broker.SubscribeOptions{ID: "det", Durable: true, Filters: []string{"d/#"}, QoS: 1, MaxAckPending: 2}
	c := NewDeliveries()
	s := consume(t, b, opts, c.Handle)
	for i := range 4 {
		pub(t, b, "d/x", fmt.Sprint(i), 1)
	}
	ds := c.Wait(t, 2)
	c.Stays(t, 2)
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	ds[0].Ack() // an acknowledgement after the detach still counts
	pub(t, b, "d/x", "4", 1)
	c2 := NewDeliveries()
	opts.MaxAckPending = 10
	s = consume(t, b, opts, c2.Handle)
	got := c2.Wait(t, 4)
	if fmt.Sprint(payloads(got)) != "[1 2 3 4]" {
		t.Fatalf("after attach: %v, want [1 2 3 4]", payloads(got))
	}
	for i, d := range got {
		if want := i == 0; d.Redelivered != want {
			t.Errorf("%s: Redelivered = %v, want %v", d.Envelope.Payload, d.Redelivered, want)
		}
		d.Ack()
	}
	c2.Stays(t, 4)
	_ = s.Unsubscribe()
}

// testLiveFilterChanges: filters added to and removed from a live
// subscription take effect for the next publish.
func testLiveFilterChanges(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	c := NewCollector()
	s := sub(t, b, broker.SubscribeOptions{ID: "live", QoS: 1}, c.Handle)
	defer func() { _ = s.Unsubscribe() }()
	pub(t, b, "l/a", "before", 0)
	existed, err := s.AddFilter(context.Background(), broker.Filter{Topic: "l/+", QoS: 1})
	if err != nil || existed {
		t.Fatalf("AddFilter = %v, %v", existed, err)
	}
	if existed, _ := s.AddFilter(context.Background(), broker.Filter{Topic: "l/+", QoS: 0}); !existed {
		t.Error("AddFilter of the same filter again: existed = false")
	}
	if fs := s.Filters(); len(fs) != 1 || fs[0].QoS != 0 {
		t.Errorf("Filters = %+v, want l/+ at QoS 0", fs)
	}
	pub(t, b, "l/a", "during", 1)
	got := c.Wait(t, 1)
	if string(got[0].Payload) != "during" {
		t.Errorf("got %s, want during", got[0].Payload)
	}
	if existed, err := s.RemoveFilter(context.Background(), "l/+", ""); !existed || err != nil {
		t.Fatalf("RemoveFilter = %v, %v", existed, err)
	}
	if existed, _ := s.RemoveFilter(context.Background(), "l/+", ""); existed {
		t.Error("RemoveFilter twice: existed = true")
	}
	pub(t, b, "l/a", "after", 1)
	pub(t, b, "m", "fence", 1)
	_, _ = s.AddFilter(context.Background(), broker.Filter{Topic: "m", QoS: 1, RetainHandling: 2})
	pub(t, b, "m", "fence", 1)
	got = c.Wait(t, 2)
	if string(got[1].Payload) != "fence" || c.Len() != 2 {
		t.Errorf("after RemoveFilter: %v", topics(got))
	}
}

// testRetainedOnAddFilter: AddFilter replays retained values as its
// RetainHandling says, Retained and with the retain flag; live retained
// publishes carry the flag only through a RetainAsPublished filter.
func testRetainedOnAddFilter(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	ctx := context.Background()
	if err := b.Publish(ctx, &broker.Envelope{Topic: "r/a", Payload: []byte("1"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	c := NewDeliveries()
	s := consume(t, b, broker.SubscribeOptions{ID: "ret", QoS: 2}, c.Handle)
	defer func() { _ = s.Unsubscribe() }()
	_, _ = s.AddFilter(ctx, broker.Filter{Topic: "r/#", QoS: 0, RetainHandling: 1})
	ds := c.Wait(t, 1)
	if !ds[0].Retained || !ds[0].RetainFlag || ds[0].QoS != 0 {
		t.Errorf("replayed retained: %+v", ds[0])
	}
	ds[0].Ack()
	_, _ = s.AddFilter(ctx, broker.Filter{Topic: "r/#", QoS: 1, RetainHandling: 1})
	_, _ = s.AddFilter(ctx, broker.Filter{Topic: "r/+", QoS: 1, RetainHandling: 2, RetainAsPublished: true})
	if err := b.Publish(ctx, &broker.Envelope{Topic: "r/a", Payload: []byte("2"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	ds = c.Wait(t, 2)
	if ds[1].Retained || !ds[1].RetainFlag || string(ds[1].Envelope.Payload) != "2" {
		t.Errorf("live retained through a retain-as-published filter: %+v", ds[1])
	}
	ds[1].Ack()
	c.Stays(t, 2)
	_, _ = s.RemoveFilter(ctx, "r/+", "")
	if err := b.Publish(ctx, &broker.Envelope{Topic: "r/a", Payload: []byte("3"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	ds = c.Wait(t, 3)
	if ds[2].RetainFlag {
		t.Errorf("live retained without retain-as-published carries the flag")
	}
}

// testConsumerGroups: each envelope goes to one member of a group; other
// subscriptions of the same filter still get every one.
func testConsumerGroups(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	var members [3]*Collector
	for i := range members {
		members[i] = NewCollector()
		s := sub(t, b, broker.SubscribeOptions{ID: fmt.Sprint("g", i), QoS: 1,
			Specs: []broker.Filter{{Topic: "g/#", QoS: 1, Group: "workers"}}}, members[i].Handle)
		defer func() { _ = s.Unsubscribe() }()
	}
	all := NewCollector()
	s := sub(t, b, broker.SubscribeOptions{Filters: []string{"g/#"}, QoS: 1}, all.Handle)
	defer func() { _ = s.Unsubscribe() }()
	const n = 30
	for i := range n {
		pub(t, b, "g/x", fmt.Sprint(i), 1)
	}
	all.Wait(t, n)
	deadline := time.Now().Add(wait)
	for {
		total := 0
		for _, m := range members {
			total += m.Len()
		}
		if total == n {
			break
		}
		if total > n || time.Now().After(deadline) {
			t.Fatalf("group members got %d envelopes in all, want %d", total, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, m := range members {
		if m.Len() == 0 {
			t.Errorf("member %d got nothing: the group does not spread", i)
		}
	}
}

// testRightsShrink: Allow is asked before every delivery, so a subscriber
// whose rights shrink stops receiving at once, retained values included.
func testRightsShrink(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	ctx := context.Background()
	if err := b.Publish(ctx, &broker.Envelope{Topic: "secret/r", Payload: []byte("old"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	var denied sync.Map
	denied.Store("secret/r", true)
	c := NewCollector()
	s := sub(t, b, broker.SubscribeOptions{Filters: []string{"#"}, QoS: 1, SendRetained: true,
		Allow: func(e *broker.Envelope) bool { _, no := denied.Load(e.Topic); return !no }}, c.Handle)
	defer func() { _ = s.Unsubscribe() }()
	pub(t, b, "secret/x", "1", 1)
	c.Wait(t, 1)
	denied.Store("secret/x", true)
	pub(t, b, "secret/x", "2", 1)
	pub(t, b, "public", "fence", 1)
	got := c.Wait(t, 2)
	if fmt.Sprint(topics(got)) != "[secret/x=1 public=fence]" {
		t.Errorf("got %v, want secret/x (1) then public", topics(got))
	}
	if st := s.Stats(); st.Denied != 2 {
		t.Errorf("Stats.Denied = %d, want 2 (the retained value and the second publish)", st.Denied)
	}
}

// testSubscriptionIdentifiers: one delivery per subscription however many
// of its filters match, at the highest of their QoS, carrying every
// matching filter's identifier; a delivery below the publish QoS is
// counted.
func testSubscriptionIdentifiers(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	c := NewDeliveries()
	s := consume(t, b, broker.SubscribeOptions{QoS: 2, Specs: []broker.Filter{
		{Topic: "i/#", QoS: 0, ID: 7}, {Topic: "i/+", QoS: 1, ID: 3}, {Topic: "j", QoS: 0}}}, c.Handle)
	defer func() { _ = s.Unsubscribe() }()
	pub(t, b, "i/x", "1", 2)
	pub(t, b, "j", "2", 1)
	ds := c.Wait(t, 2)
	if ds[0].QoS != 1 || fmt.Sprint(ds[0].IDs) != "[3 7]" {
		t.Errorf("delivery: QoS %d, IDs %v; want 1, [3 7]", ds[0].QoS, ds[0].IDs)
	}
	c.Stays(t, 2)
	if st := s.Stats(); st.Downgraded != 2 {
		t.Errorf("Stats.Downgraded = %d, want 2", st.Downgraded)
	}
}

// testPublishAsync: envelopes published without waiting keep their order,
// each done reports durability, and one the store refuses reports
// ErrStorage and is delivered to nobody.
func testPublishAsync(t *testing.T, f Factory) {
	b := open(t, f, NewMemSpool())
	ctx := context.Background()
	away := sub(t, b, broker.SubscribeOptions{ID: "pa", Durable: true, Filters: []string{"pa/#"}, QoS: 1}, NewCollector().Handle)
	if err := away.Detach(); err != nil {
		t.Fatal(err)
	}
	live := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"pa/#"}, QoS: 1}, live.Handle)
	const n = 50
	dones := make(chan error, n+1)
	for i := range n {
		if err := b.PublishAsync(ctx, &broker.Envelope{Topic: "pa/x", Payload: []byte(fmt.Sprint(i)), QoS: 1},
			func(err error) { dones <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		select {
		case err := <-dones:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(wait):
			t.Fatal("a done was not called")
		}
	}
	for i, e := range live.Wait(t, n) {
		if string(e.Payload) != fmt.Sprint(i) {
			t.Fatalf("delivery %d = %s: order lost", i, e.Payload)
		}
	}
	c := NewCollector()
	sub(t, b, broker.SubscribeOptions{ID: "pa", Durable: true, Filters: []string{"pa/#"}, QoS: 1}, c.Handle)
	if got := c.Wait(t, n); string(got[n-1].Payload) != fmt.Sprint(n-1) {
		t.Fatalf("the durable queue: last %s", got[n-1].Payload)
	}
}

// testPublishAsyncStorageFull: an envelope the store refuses reports
// ErrStorage to done and is delivered to nobody.
func testPublishAsyncStorageFull(t *testing.T, f Factory) {
	spool := NewMemSpool()
	b := open(t, f, spool)
	ctx := context.Background()
	away := sub(t, b, broker.SubscribeOptions{ID: "pa", Durable: true, Filters: []string{"pa/#"}, QoS: 1}, NewCollector().Handle)
	if err := away.Detach(); err != nil {
		t.Fatal(err)
	}
	live := NewCollector()
	sub(t, b, broker.SubscribeOptions{Filters: []string{"pa/#"}, QoS: 1}, live.Handle)
	spool.mu.Lock()
	spool.FailEnqueue = errors.New("disk full")
	spool.mu.Unlock()
	dones := make(chan error, 1)
	if err := b.PublishAsync(ctx, &broker.Envelope{Topic: "pa/x", Payload: []byte("refused"), QoS: 1},
		func(err error) { dones <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-dones; !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("done = %v, want ErrStorage", err)
	}
	pub(t, b, "pa/x", "fence", 0)
	if got := live.Wait(t, 1); string(got[0].Payload) != "fence" {
		t.Fatalf("a refused publish was delivered: %s", got[0].Payload)
	}
}
