package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

func env(topic, payload string, qos byte) *broker.Envelope {
	return &broker.Envelope{
		ID:          broker.NewID(),
		Topic:       topic,
		Payload:     []byte(payload),
		ContentType: "text/plain",
		QoS:         qos,
		Origin:      broker.Origin{Protocol: broker.ProtoMQTT, ClientID: "c1", Principal: "alice", Node: "n1"},
		Time:        time.Unix(0, 1700000000123456789),
		Properties:  []broker.Property{{Key: "k", Value: "v"}},
	}
}

// logBuffer returns a logger writing to a buffer, for checking warnings.
func logBuffer(s *Store) *syncBuffer {
	var b syncBuffer
	s.SetLogger(slog.New(slog.NewTextHandler(&b, nil)))
	return &b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRetained(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	for _, e := range []*broker.Envelope{env("b/1", "x", 1), env("a/1", "y", 0), env("b/1", "z", 2)} {
		e.Retain = true
		if err := s.SaveRetained(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.LoadRetained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Topic != "a/1" || got[1].Topic != "b/1" || string(got[1].Payload) != "z" {
		t.Fatalf("LoadRetained = %+v", got)
	}
	want := env("a/1", "y", 0)
	want.Retain = true
	want.ID = got[0].ID
	if !got[0].Time.Equal(want.Time) {
		t.Errorf("time = %v, want %v", got[0].Time, want.Time)
	}
	got[0].Time = want.Time
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got[0], want)
	}
	if err := s.DeleteRetained(ctx, "b/1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRetained(ctx, "never/set"); err != nil {
		t.Errorf("DeleteRetained of an unset topic: %v", err)
	}
	got, _ = s.LoadRetained(ctx)
	if len(got) != 1 || got[0].Topic != "a/1" {
		t.Errorf("after delete: %+v", got)
	}
	for _, bad := range []*broker.Envelope{nil, env("", "x", 0), env("a/+", "x", 0)} {
		if err := s.SaveRetained(ctx, bad); err == nil {
			t.Errorf("SaveRetained(%+v) succeeded", bad)
		}
	}
}

func TestSubscriptions(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	subs := []broker.DurableSubscription{
		{ID: "mqtt:c2", Filters: []string{"a/#", "b/+/c"}, QoS: 1},
		{ID: "mqtt:c1", Filters: []string{"x"}, QoS: 2},
	}
	for _, d := range subs {
		if err := s.SaveSubscription(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	r := refs("mqtt:c2")
	if err := s.Enqueue(ctx, env("a/b", "1", 1), r); err != nil {
		t.Fatal(err)
	}
	// Saving again replaces filters and QoS and keeps the queue.
	subs[0] = broker.DurableSubscription{ID: "mqtt:c2", Filters: []string{"z"}, QoS: 0}
	if err := s.SaveSubscription(ctx, subs[0]); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadSubscriptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subs[0].LastSeq = r[0].Seq // its queue holds one envelope
	if want := []broker.DurableSubscription{subs[1], subs[0]}; !reflect.DeepEqual(got, want) {
		t.Errorf("LoadSubscriptions = %+v, want %+v", got, want)
	}
	if n, _ := s.QueueLen(ctx, "mqtt:c2"); n != 1 {
		t.Errorf("queue after re-save = %d, want 1", n)
	}
	if err := s.DeleteSubscription(ctx, "mqtt:c2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueLen(ctx, "mqtt:c2"); n != 0 {
		t.Errorf("queue after DeleteSubscription = %d, want 0", n)
	}
	if err := s.DeleteSubscription(ctx, "unknown"); err != nil {
		t.Errorf("DeleteSubscription(unknown) = %v", err)
	}
	got, _ = s.LoadSubscriptions(ctx)
	if len(got) != 1 || got[0].ID != "mqtt:c1" {
		t.Errorf("after delete: %+v", got)
	}
	for _, bad := range []broker.DurableSubscription{
		{Filters: []string{"a"}},
		{ID: "x", Filters: []string{"a/#/b"}},
		{ID: "x", Filters: []string{"a"}, QoS: 3},
	} {
		if err := s.SaveSubscription(ctx, bad); !errors.Is(err, ErrInvalidSubscription) {
			t.Errorf("SaveSubscription(%+v) = %v, want ErrInvalidSubscription", bad, err)
		}
	}
}

func TestQueue(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	for i := range 5 {
		if err := s.Enqueue(ctx, env("t", fmt.Sprint(i), 1), refs("s1", "s2")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Enqueue(ctx, env("t", "only s2", 1), refs("s2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, env("t", "nobody", 1), nil); err != nil {
		t.Errorf("Enqueue to no subscribers: %v", err)
	}
	for id, want := range map[string]int{"s1": 5, "s2": 6, "s3": 0} {
		if n, err := s.QueueLen(ctx, id); err != nil || n != want {
			t.Errorf("QueueLen(%s) = %d, %v; want %d", id, n, err, want)
		}
	}
	q, err := s.Dequeue(ctx, "s1", 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 3 {
		t.Fatalf("Dequeue(3) returned %d", len(q))
	}
	for i, e := range q {
		if string(e.Envelope.Payload) != fmt.Sprint(i) {
			t.Errorf("entry %d payload %q", i, e.Envelope.Payload)
		}
		if i > 0 && e.Seq <= q[i-1].Seq {
			t.Errorf("seqs not increasing: %d after %d", e.Seq, q[i-1].Seq)
		}
	}
	// Dequeue does not remove; Ack does, up to and including seq.
	again, _ := s.Dequeue(ctx, "s1", 0, 3)
	if !reflect.DeepEqual(seqs(again), seqs(q)) {
		t.Errorf("second Dequeue = %v, want %v", seqs(again), seqs(q))
	}
	if err := ackUpTo(ctx, s, "s1", q[1].Seq); err != nil {
		t.Fatal(err)
	}
	rest, _ := s.Dequeue(ctx, "s1", 0, 100)
	if len(rest) != 3 || string(rest[0].Envelope.Payload) != "2" {
		t.Errorf("after Ack: %d entries, first %q", len(rest), rest[0].Envelope.Payload)
	}
	if n, _ := s.QueueLen(ctx, "s2"); n != 6 {
		t.Errorf("Ack of s1 touched s2: %d", n)
	}
	if err := ackUpTo(ctx, s, "s1", rest[len(rest)-1].Seq); err != nil {
		t.Fatal(err)
	}
	if q, _ := s.Dequeue(ctx, "s1", 0, 10); len(q) != 0 {
		t.Errorf("queue not empty after full Ack: %d", len(q))
	}
	if _, err := s.Dequeue(ctx, "s1", 0, 0); err == nil {
		t.Error("Dequeue(max 0) succeeded")
	}
	if err := s.Enqueue(ctx, nil, refs("s1")); err == nil {
		t.Error("Enqueue(nil) succeeded")
	}
	// A bad id fails the whole transaction: nothing is queued.
	if err := s.Enqueue(ctx, env("t", "x", 1), refs("s9", "")); err == nil {
		t.Error("Enqueue with an empty id succeeded")
	}
	if n, _ := s.QueueLen(ctx, "s9"); n != 0 {
		t.Errorf("failed Enqueue left %d rows", n)
	}
}

func seqs(q []broker.Queued) []int64 {
	var out []int64
	for _, e := range q {
		out = append(out, e.Seq)
	}
	return out
}

// TestCorruptRowsSkipped stores torn envelopes in the queue and in the
// retained table: they must never be served, and must be deleted and
// logged.
func TestCorruptRowsSkipped(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	logs := logBuffer(s)
	ctx := context.Background()
	good, _ := env("t", "good", 1).MarshalBinary()
	corrupt := [][]byte{good[:len(good)-3], {}, {9, 9, 9}, append([]byte{99}, good[1:]...)}
	if err := insertRaw(ctx, s, "s", good); err != nil {
		t.Fatal(err)
	}
	for _, b := range corrupt {
		if err := insertRaw(ctx, s, "s", b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Enqueue(ctx, env("t", "good2", 1), refs("s")); err != nil {
		t.Fatal(err)
	}
	q, err := s.Dequeue(ctx, "s", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || string(q[0].Envelope.Payload) != "good" || string(q[1].Envelope.Payload) != "good2" {
		t.Fatalf("Dequeue = %+v", q)
	}
	if n, _ := s.QueueLen(ctx, "s"); n != 2 {
		t.Errorf("QueueLen after skipping corrupt rows = %d, want 2 (corrupt ones deleted)", n)
	}
	if c := strings.Count(logs.String(), "corrupt queued envelope"); c != len(corrupt) {
		t.Errorf("%d warnings logged, want %d:\n%s", c, len(corrupt), logs)
	}

	if err := s.SaveRetained(ctx, env("r/good", "g", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO retained(topic, envelope) VALUES ('r/bad', ?)`, good[:10]); err != nil {
		t.Fatal(err)
	}
	r, err := s.LoadRetained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r) != 1 || r[0].Topic != "r/good" {
		t.Errorf("LoadRetained = %+v", r)
	}
	var n int
	_ = s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM retained`).Scan(&n)
	if n != 1 {
		t.Errorf("corrupt retained row not deleted: %d rows", n)
	}
	if !strings.Contains(logs.String(), "corrupt retained envelope") {
		t.Error("no warning for the corrupt retained row")
	}
}

// TestQueueConcurrent runs producers and a consumer at once (meant for
// -race): every envelope arrives exactly once and in order per producer.
func TestQueueConcurrent(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	const producers, each = 4, 50
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if err := s.Enqueue(ctx, env("t", fmt.Sprintf("%d:%d", p, i), 1), refs("c", "other")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := make([]int, producers)
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	for got < producers*each && time.Now().Before(deadline) {
		q, err := s.Dequeue(ctx, "c", 0, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range q {
			var p, i int
			if _, err := fmt.Sscanf(string(e.Envelope.Payload), "%d:%d", &p, &i); err != nil {
				t.Fatal(err)
			}
			if i != next[p] {
				t.Fatalf("producer %d: got %d, want %d", p, i, next[p])
			}
			next[p]++
			got++
		}
		// Exactly what was read: with sequence numbers assigned before
		// the commit, a lower one may commit after a higher one was read.
		var read []int64
		for _, e := range q {
			read = append(read, e.Seq)
		}
		if err := s.Remove(ctx, "c", read); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got != producers*each {
		t.Fatalf("consumed %d of %d", got, producers*each)
	}
	if n, _ := s.QueueLen(ctx, "other"); n != producers*each {
		t.Errorf("other queue = %d, want %d", n, producers*each)
	}
}

// TestReopenKeepsData closes and reopens the store: everything written
// before is still there.
func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddUser(ctx, "alice", "alicepw", "user"))
	must(s.SetACL(ctx, "alice", aclRules))
	tok, err := s.CreateToken(ctx, "alice", time.Hour)
	must(err)
	must(s.AddDevice(ctx, Device{ID: "sensor1", Protocol: "coap", PSK: []byte("k")}))
	must(s.KVPut(ctx, "b", "k", []byte("v")))
	must(s.SaveRetained(ctx, env("r", "v", 1)))
	must(s.SaveSubscription(ctx, broker.DurableSubscription{ID: "s", Filters: []string{"#"}, QoS: 1}))
	must(s.Enqueue(ctx, env("q", "v", 1), refs("s")))
	must(s.Close())

	s = openDir(t, dir)
	if role, err := s.VerifyPassword(ctx, "alice", "alicepw"); err != nil || role != "user" {
		t.Errorf("VerifyPassword after reopen = %q, %v", role, err)
	}
	if rules, err := s.ACL(ctx, "alice"); err != nil || !reflect.DeepEqual(rules, aclRules) {
		t.Errorf("ACL after reopen = %+v, %v", rules, err)
	}
	if u, err := s.VerifyToken(ctx, tok); err != nil || u.Name != "alice" {
		t.Errorf("VerifyToken after reopen = %+v, %v", u, err)
	}
	if k, err := s.DevicePSK(ctx, "sensor1"); err != nil || string(k) != "k" {
		t.Errorf("DevicePSK after reopen = %q, %v", k, err)
	}
	if v, err := s.KVGet(ctx, "b", "k"); err != nil || string(v) != "v" {
		t.Errorf("KVGet after reopen = %q, %v", v, err)
	}
	if r, err := s.LoadRetained(ctx); err != nil || len(r) != 1 {
		t.Errorf("LoadRetained after reopen = %+v, %v", r, err)
	}
	if subs, err := s.LoadSubscriptions(ctx); err != nil || len(subs) != 1 {
		t.Errorf("LoadSubscriptions after reopen = %+v, %v", subs, err)
	}
	if q, err := s.Dequeue(ctx, "s", 0, 10); err != nil || len(q) != 1 || string(q[0].Envelope.Payload) != "v" {
		t.Errorf("Dequeue after reopen = %+v, %v", q, err)
	}
}

func BenchmarkEnqueue(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	e := env("sensors/kitchen/temp", strings.Repeat("x", 1024), 1)
	ids := []string{"sub"}
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Enqueue(ctx, e, refs(ids...)); err != nil {
			b.Fatal(err)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestTrimQueue: TrimQueue deletes from the oldest or the newest end until
// enough envelopes and bytes are gone, and QueueSize follows.
func TestTrimQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Ten envelopes on topic "t" with payloads "0".."9": Size 2 each.
	for _, tc := range []struct {
		name      string
		n         int
		bytes     int64
		newest    bool
		dropped   int
		left      string // payloads left, in order
		wantBytes int64
	}{
		{"nothing", 0, 0, false, 0, "0123456789", 0},
		{"oldest by count", 6, 0, false, 6, "6789", 12},
		{"newest by count", 6, 0, true, 6, "0123", 12},
		{"oldest by bytes", 0, 5, false, 3, "3456789", 6},
		{"newest by bytes", 0, 4, true, 2, "01234567", 4},
		{"both, bytes win", 1, 7, false, 4, "456789", 8},
		{"more than there is", 50, 0, false, 10, "", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			s.SetLogger(discardLogger())
			for i := range 10 {
				if err := s.Enqueue(ctx, env("t", fmt.Sprint(i), 1), refs("a", "b")); err != nil {
					t.Fatal(err)
				}
			}
			if n, size, err := s.QueueSize(ctx, "a"); err != nil || n != 10 || size != 20 {
				t.Fatalf("QueueSize before = %d, %d, %v; want 10, 20", n, size, err)
			}
			n, size, err := s.TrimQueue(ctx, "a", tc.n, tc.bytes, tc.newest)
			if err != nil || n != tc.dropped || size != tc.wantBytes {
				t.Fatalf("TrimQueue = %d, %d, %v; want %d, %d", n, size, err, tc.dropped, tc.wantBytes)
			}
			q, _ := s.Dequeue(ctx, "a", 0, 100)
			var left string
			for _, e := range q {
				left += string(e.Envelope.Payload)
			}
			if left != tc.left {
				t.Errorf("left %q, want %q", left, tc.left)
			}
			if n, size, _ := s.QueueSize(ctx, "a"); n != len(tc.left) || size != int64(2*len(tc.left)) {
				t.Errorf("QueueSize after = %d, %d", n, size)
			}
			if n, _ := s.QueueLen(ctx, "b"); n != 10 {
				t.Errorf("TrimQueue(a) touched b: %d", n)
			}
		})
	}
	s := openTest(t)
	if _, _, err := s.TrimQueue(ctx, "a", -1, 0, false); err == nil {
		t.Error("negative count accepted")
	}
}

var (
	seqMu    sync.Mutex
	nextSeqs = map[string]int64{}
)

// refs places an envelope at the next sequence number of each subscriber,
// as the bus does.
func refs(ids ...string) []broker.QueueRef {
	seqMu.Lock()
	defer seqMu.Unlock()
	out := make([]broker.QueueRef, len(ids))
	for i, id := range ids {
		nextSeqs[id]++
		out[i] = broker.QueueRef{Subscriber: id, Seq: nextSeqs[id]}
	}
	return out
}

// ackUpTo removes a subscriber's queued entries up to and including seq.
func ackUpTo(ctx context.Context, s *Store, id string, seq int64) error {
	q, err := s.Dequeue(ctx, id, 0, 1<<20)
	if err != nil {
		return err
	}
	var rm []int64
	for _, e := range q {
		if e.Seq <= seq {
			rm = append(rm, e.Seq)
		}
	}
	return s.Remove(ctx, id, rm)
}

// insertRaw queues bytes as they are (a torn or damaged envelope) for
// subscriber id.
func insertRaw(ctx context.Context, s *Store, id string, b []byte) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO messages(envelope) VALUES (?)`, b)
	if err != nil {
		return err
	}
	msg, err := res.LastInsertId()
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO queue(subscriber, seq, msg, size) VALUES (?, ?, ?, ?)`,
		id, refs(id)[0].Seq, msg, len(b))
	return err
}

// TestOrphansSweptAtOpen: queue entries of a subscription that is gone
// (an enqueue that committed after its removal) and envelopes nothing
// refers to are deleted when the store opens.
func TestOrphansSweptAtOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openDir(t, dir)
	ctx := context.Background()
	if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "kept", Filters: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, env("t", "1", 1), refs("kept", "gone")); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, env("t", "2", 1), refs("gone")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDir(t, dir)
	if n, _ := s.QueueLen(ctx, "gone"); n != 0 {
		t.Errorf("%d entries of a removed subscription left", n)
	}
	if n, _ := s.QueueLen(ctx, "kept"); n != 1 {
		t.Errorf("kept subscription has %d entries, want 1", n)
	}
	var msgs int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM messages`).Scan(&msgs); err != nil || msgs != 1 {
		t.Errorf("%d envelopes stored (%v), want the one still referred to", msgs, err)
	}
}
