package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWriterBatchIsolation runs a batch whose middle op fails: the other
// ops commit, the failing one leaves nothing behind.
func TestWriterBatchIsolation(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	put := func(key string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO kv(bucket, key, value) VALUES ('b', ?, x'00')`, key)
			return err
		}
	}
	boom := errors.New("boom")
	ops := []*writeOp{
		{ctx: ctx, fn: put("a")},
		{ctx: ctx, fn: func(ctx context.Context, tx *sql.Tx) error {
			if err := put("half")(ctx, tx); err != nil {
				return err
			}
			return boom
		}},
		{ctx: ctx, fn: func(ctx context.Context, tx *sql.Tx) error { panic("bad op") }},
		{ctx: ctx, fn: put("c")},
	}
	for _, op := range ops {
		op.res = make(chan error, 1)
	}
	// The writer goroutine is idle, so committing from here is safe.
	s.wr.commit(ops)
	want := []error{nil, boom, errors.New("panicked"), nil}
	for i, op := range ops {
		err := <-op.res
		switch {
		case want[i] == nil && err != nil:
			t.Errorf("op %d: %v", i, err)
		case want[i] == boom && !errors.Is(err, boom):
			t.Errorf("op %d: %v, want boom", i, err)
		case want[i] != nil && want[i] != boom && (err == nil || !strings.Contains(err.Error(), "panicked")):
			t.Errorf("op %d: %v, want a panic error", i, err)
		}
	}
	list, err := s.KVList(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range list {
		keys = append(keys, kv.Key)
	}
	if got := strings.Join(keys, ","); got != "a,c" {
		t.Errorf("keys after batch = %s, want a,c", got)
	}
}

// TestWriterGroupCommit: concurrent writes share transactions.
func TestWriterGroupCommit(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	before := s.wr.batches.Load()
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.KVPut(ctx, "g", fmt.Sprint(i), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	list, _ := s.KVList(ctx, "g")
	if len(list) != n {
		t.Fatalf("%d keys, want %d", len(list), n)
	}
	batches := s.wr.batches.Load() - before
	t.Logf("%d concurrent writes in %d transactions", n, batches)
	if batches >= n {
		t.Errorf("%d writes took %d transactions: no group commit", n, batches)
	}
}

func TestWriterCanceledContext(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.KVPut(ctx, "b", "k", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Errorf("KVPut with a canceled context = %v", err)
	}
	if _, err := s.KVGet(context.Background(), "b", "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("write with a canceled context was applied: %v", err)
	}
	// A context that ends while the op waits in the queue.
	var hold sync.WaitGroup
	hold.Add(1)
	release := make(chan struct{})
	go func() {
		_ = s.tx(context.Background(), func(context.Context, *sql.Tx) error {
			hold.Done()
			<-release
			return nil
		})
	}()
	hold.Wait()
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.KVPut(ctx, "b", "late", []byte("v"))
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("KVPut timing out in the queue = %v", err)
	}
	// Let the writer pass the abandoned op, then check it was skipped.
	if err := s.KVPut(context.Background(), "b", "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KVGet(context.Background(), "b", "late"); !errors.Is(err, ErrNotFound) {
		t.Errorf("abandoned write was applied: %v", err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.KVPut(context.Background(), "b", "k", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("KVPut after Close = %v, want ErrClosed", err)
	}
}

// TestCloseWhileWriting closes the store under concurrent writers: every
// write either commits or fails with ErrClosed, none hangs.
func TestCloseWhileWriting(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := 0; ; j++ {
				err := s.KVPut(context.Background(), "b", fmt.Sprint(i, "/", j), []byte("v"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func BenchmarkEnqueueParallel(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	e := env("sensors/kitchen/temp", strings.Repeat("x", 1024), 1)
	b.SetBytes(1024)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Enqueue(ctx, e, refs("sub")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestWriterCancelDuringOp: a caller that gives up while its op runs does
// not interrupt the shared transaction; the op and its batch commit.
func TestWriterCancelDuringOp(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ins := func(key string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO kv(bucket, key, value) VALUES ('c', ?, x'00')`, key)
			return err
		}
	}
	ops := []*writeOp{
		{ctx: ctx, fn: func(c context.Context, tx *sql.Tx) error {
			cancel()
			return ins("a")(c, tx)
		}},
		{ctx: context.Background(), fn: ins("b")},
	}
	for _, op := range ops {
		op.res = make(chan error, 1)
	}
	s.wr.commit(ops)
	for i, op := range ops {
		if err := <-op.res; err != nil {
			t.Errorf("op %d: %v", i, err)
		}
	}
	if list, _ := s.KVList(context.Background(), "c"); len(list) != 2 {
		t.Errorf("%d keys committed, want 2", len(list))
	}
}
