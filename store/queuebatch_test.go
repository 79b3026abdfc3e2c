package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// TestQueueRowBatch commits batches of one-subscriber queue writes, which
// the writer merges into multi-row inserts: every row lands, in order,
// and a row that clashes with one already queued fails alone.
func TestQueueRowBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		n     int
		clash int // index of the op whose seq is already queued; -1: none
	}{
		{"two", 2, -1},
		{"odd", 7, -1},
		{"largest chunk and more", maxRowInsert + 3, -1},
		{"clash first", 5, 0},
		{"clash middle", 9, 4},
		{"clash last", 6, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			ctx := context.Background()
			if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "q", Filters: []string{"t/#"}, QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if tc.clash >= 0 {
				e := &broker.Envelope{ID: "old", Topic: "t/old", Payload: []byte("old")}
				if err := s.Enqueue(ctx, e, []broker.QueueRef{{Subscriber: "q", Seq: int64(tc.clash + 1)}}); err != nil {
					t.Fatal(err)
				}
			}
			ops := make([]*writeOp, tc.n)
			for i := range ops {
				e := &broker.Envelope{ID: fmt.Sprint(i), Topic: fmt.Sprintf("t/%d", i), Payload: []byte{byte(i)}}
				op, err := s.enqueueOp(e, []broker.QueueRef{{Subscriber: "q", Seq: int64(i + 1)}})
				if err != nil {
					t.Fatal(err)
				}
				op.ctx, op.res = ctx, make(chan error, 1)
				ops[i] = op
			}
			// The writer goroutine is idle, so committing from here is safe.
			s.wr.commit(ops)
			for i, op := range ops {
				err := <-op.res
				if i == tc.clash && err == nil {
					t.Errorf("op %d: nil error, want the clash", i)
				}
				if i != tc.clash && err != nil {
					t.Errorf("op %d: %v", i, err)
				}
			}
			got, err := s.Dequeue(ctx, "q", 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.n {
				t.Fatalf("queued %d, want %d", len(got), tc.n)
			}
			for i, q := range got {
				want := fmt.Sprintf("t/%d", i)
				if i == tc.clash {
					want = "t/old"
				}
				if q.Seq != int64(i+1) || q.Envelope.Topic != want {
					t.Errorf("entry %d: seq %d topic %q, want seq %d topic %q", i, q.Seq, q.Envelope.Topic, i+1, want)
				}
			}
		})
	}
}

// TestEnqueueAsync reports each write through done, once, after its
// commit; after Close it reports ErrClosed.
func TestEnqueueAsync(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "q", Filters: []string{"t/#"}, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	res := make(chan error, n)
	for i := range n {
		e := &broker.Envelope{Topic: "t/x", Payload: []byte{byte(i)}}
		s.EnqueueAsync(ctx, e, []broker.QueueRef{{Subscriber: "q", Seq: int64(i + 1)}}, func(err error) { res <- err })
	}
	for range n {
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}
	if l, err := s.QueueLen(ctx, "q"); err != nil || l != n {
		t.Fatalf("queue length %d (%v), want %d", l, err, n)
	}
	s.EnqueueAsync(ctx, &broker.Envelope{Topic: "t/x"}, []broker.QueueRef{{Subscriber: ""}}, func(err error) { res <- err })
	if err := <-res; !errors.Is(err, ErrInvalidSubscription) {
		t.Errorf("empty subscriber: %v, want ErrInvalidSubscription", err)
	}
	_ = s.Close()
	s.EnqueueAsync(ctx, &broker.Envelope{Topic: "t/x"}, []broker.QueueRef{{Subscriber: "q", Seq: n + 1}}, func(err error) { res <- err })
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// TestEnqueueAsyncWithdraw: a queue write withdrawn before the writer
// begins it is neither written nor answered; one already committed cannot
// be withdrawn.
func TestEnqueueAsyncWithdraw(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "q", Filters: []string{"t/#"}, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Hold the writer in a transaction, so the writes below wait for it.
	held, release := make(chan struct{}), make(chan struct{})
	busy := make(chan error, 1)
	go func() {
		busy <- s.tx(ctx, func(context.Context, *sql.Tx) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	const n = 20
	res := make(chan int64, n)
	withdraws := make([]func() bool, n)
	for i := range n {
		seq := int64(i + 1)
		e := &broker.Envelope{Topic: "t/x", Payload: []byte{byte(i)}}
		withdraws[i] = s.EnqueueAsync(ctx, e, []broker.QueueRef{{Subscriber: "q", Seq: seq, Delivered: true}}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			res <- seq
		})
	}
	for i := 0; i < n; i += 2 {
		if !withdraws[i]() {
			t.Fatalf("write %d: not withdrawn while the writer was busy", i+1)
		}
		if withdraws[i]() {
			t.Fatalf("write %d withdrawn twice", i+1)
		}
	}
	close(release)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	for range n / 2 {
		if seq := <-res; seq%2 != 0 {
			t.Fatalf("withdrawn write %d answered", seq)
		}
	}
	if l, err := s.QueueLen(ctx, "q"); err != nil || l != n/2 {
		t.Fatalf("queue length %d (%v), want %d", l, err, n/2)
	}
	if withdraws[1]() {
		t.Fatal("a committed write withdrawn")
	}
	if got := s.wr.withdrawn.Load(); got != n/2 {
		t.Fatalf("withdrawn counter %d, want %d", got, n/2)
	}
	select {
	case seq := <-res:
		t.Fatalf("withdrawn write %d answered", seq)
	default:
	}
}

// BenchmarkQueueRows measures the durable hot path of the store: 64
// one-subscriber envelopes queued together (EnqueueAsync, merged into
// multi-row inserts, one commit), then removed as acknowledged (Remove).
func BenchmarkQueueRows(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "q", Filters: []string{"t/#"}, QoS: 1}); err != nil {
		b.Fatal(err)
	}
	const batch = 64
	payload := make([]byte, 64)
	res := make(chan error, batch)
	seqs := make([]int64, 0, batch)
	var seq int64
	b.ReportAllocs()
	for b.Loop() {
		seqs = seqs[:0]
		for range batch {
			seq++
			seqs = append(seqs, seq)
			e := &broker.Envelope{ID: "id", Topic: "t/x", Payload: payload, QoS: 1}
			s.EnqueueAsync(ctx, e, []broker.QueueRef{{Subscriber: "q", Seq: seq}}, func(err error) { res <- err })
		}
		for range batch {
			if err := <-res; err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Remove(ctx, "q", seqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
}

// TestQueueMsgIndexUsed checks that the queries looking for the queue rows
// of a shared envelope use the partial index of queue.msg (migration 10)
// instead of scanning the queue.
func TestQueueMsgIndexUsed(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	for _, q := range []string{
		`DELETE FROM messages WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM queue WHERE msg = 1 AND msg <> 0)`,
		`DELETE FROM messages WHERE id IN (1, 2) AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.msg = messages.id AND queue.msg <> 0)`,
		`DELETE FROM messages WHERE id NOT IN (SELECT msg FROM queue WHERE msg <> 0)`,
	} {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN ` + q)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		found := false
		for _, d := range plan {
			if strings.Contains(d, "queue") && strings.Contains(d, "queue_msg") {
				found = true
			}
			if strings.Contains(d, "SCAN queue") && !strings.Contains(d, "queue_msg") {
				t.Errorf("%s: scans the queue: %q", q, plan)
			}
		}
		if !found {
			t.Errorf("%s: queue_msg unused: %q", q, plan)
		}
	}
}

// TestRemoveRuns removes sets of queue entries that mix runs of
// consecutive sequence numbers (range deletes), lone ones, repeats and
// disorder: exactly the named entries go, and a shared envelope goes with
// its last entry.
func TestRemoveRuns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		remove []int64
	}{
		{"one run", []int64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"run and singles", []int64{1, 3, 5, 6, 7, 8, 9, 12}},
		{"unsorted with repeats", []int64{9, 2, 4, 3, 3, 5, 20, 1, 9}},
		{"short runs", []int64{1, 2, 4, 5, 7, 8, 10, 11, 12}},
		{"beyond the queue", []int64{18, 19, 20, 21, 22, 23}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			ctx := context.Background()
			for _, id := range []string{"a", "b"} {
				if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: id, Filters: []string{"t/#"}, QoS: 1}); err != nil {
					t.Fatal(err)
				}
			}
			// 1..20 in a; the even ones are shared with b (messages table).
			for i := int64(1); i <= 20; i++ {
				refs := []broker.QueueRef{{Subscriber: "a", Seq: i}}
				if i%2 == 0 {
					refs = append(refs, broker.QueueRef{Subscriber: "b", Seq: i})
				}
				if err := s.Enqueue(ctx, &broker.Envelope{Topic: "t/x", Payload: []byte{byte(i)}}, refs); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Remove(ctx, "a", tc.remove); err != nil {
				t.Fatal(err)
			}
			gone := map[int64]bool{}
			for _, q := range tc.remove {
				gone[q] = true
			}
			got, err := s.Dequeue(ctx, "a", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for i := int64(1); i <= 20; i++ {
				if !gone[i] {
					want = append(want, i)
				}
			}
			var have []int64
			for _, q := range got {
				have = append(have, q.Seq)
			}
			if fmt.Sprint(have) != fmt.Sprint(want) {
				t.Fatalf("left in a: %v, want %v", have, want)
			}
			// b still has every shared envelope; removing them there
			// empties the messages table.
			if l, err := s.QueueLen(ctx, "b"); err != nil || l != 10 {
				t.Fatalf("b holds %d (%v), want 10", l, err)
			}
			if err := s.Remove(ctx, "a", want); err != nil {
				t.Fatal(err)
			}
			if err := s.Remove(ctx, "b", []int64{2, 4, 6, 8, 10, 12, 14, 16, 18, 20}); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := s.r.QueryRow(`SELECT COUNT(*) FROM messages`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("messages left: %d (%v), want 0", n, err)
			}
		})
	}
}
