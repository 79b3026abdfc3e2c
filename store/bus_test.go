package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/broker/bustest"
)

// TestBusConformanceOverStore runs the bus conformance suite with the
// in-process bus on top of the SQLite store: each suite spool stands for
// one data directory, and a second bus over the same spool reopens the
// database there, as a hub restart does.
func TestBusConformanceOverStore(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		dirs   = map[broker.Spool]string{}
		stores = map[broker.Spool]*Store{}
	)
	factory := func(t *testing.T, spool broker.Spool) broker.Bus {
		if strings.HasSuffix(t.Name(), "StorageFull") {
			// It makes the suite's in-memory spool fail; a failing store
			// is covered by TestBusStorageFailure.
			t.Skip("needs the in-memory spool's fault injection")
		}
		mu.Lock()
		dir, ok := dirs[spool]
		if !ok {
			dir = t.TempDir()
			dirs[spool] = dir
		}
		if old := stores[spool]; old != nil {
			// The suite closed the previous bus: restart the store too.
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
		}
		s := openDir(t, dir)
		stores[spool] = s
		mu.Unlock()
		b, err := broker.NewMemory(broker.MemoryConfig{Spool: s, Node: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bustest.Run(t, factory)
}

// TestBusStorageFailure: with the store gone, a QoS 1 publish to an absent
// durable subscriber fails with broker.ErrStorage and QoS 0 goes on.
func TestBusStorageFailure(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	b, err := broker.NewMemory(broker.MemoryConfig{Spool: s, Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, broker.SubscribeOptions{ID: "d", Durable: true, Filters: []string{"f"}, QoS: 1},
		func(context.Context, *broker.Envelope) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, &broker.Envelope{Topic: "f", Payload: []byte("kept"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueLen(ctx, "d"); n != 1 {
		t.Fatalf("durable queue = %d, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err = b.Publish(ctx, &broker.Envelope{Topic: "f", Payload: []byte("x"), QoS: 1})
	if !errors.Is(err, broker.ErrStorage) {
		t.Errorf("QoS 1 publish over a closed store: %v, want ErrStorage", err)
	}
	if err := b.Publish(ctx, &broker.Envelope{Topic: "f", Payload: []byte("x"), QoS: 0}); err != nil {
		t.Errorf("QoS 0 publish over a closed store: %v", err)
	}
}

const crashEnv = "HUB_STORE_CRASH_DIR"

// TestCrashDurability starts a child process that enqueues envelopes and
// reports each acknowledged one, kills it with SIGKILL mid-stream, and
// checks that every envelope acknowledged before the kill is in the
// reopened database, in order.
func TestCrashDurability(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := -1
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "acked "))
		if err != nil {
			continue
		}
		acked = n
		if acked >= 200 {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if acked < 200 {
		t.Fatalf("child acknowledged only %d envelopes", acked+1)
	}
	s := openDir(t, dir)
	ctx := context.Background()
	q, err := s.Dequeue(ctx, "crash", 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) < acked+1 {
		t.Fatalf("%d envelopes after the crash, %d were acknowledged", len(q), acked+1)
	}
	for i, e := range q {
		if string(e.Envelope.Payload) != strconv.Itoa(i) {
			t.Fatalf("envelope %d has payload %q", i, e.Envelope.Payload)
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d found after", acked+1, len(q))
}

// crashChild enqueues until killed, printing "acked N" after each commit.
func crashChild(dir string) {
	ctx := context.Background()
	s, err := Open(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.SaveSubscription(ctx, broker.DurableSubscription{ID: "crash", Filters: []string{"crash"}, QoS: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		e := &broker.Envelope{Topic: "crash", Payload: []byte(strconv.Itoa(i)), QoS: 1, Time: time.Now()}
		if err := s.Enqueue(ctx, e, refs("crash")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintf(w, "acked %d\n", i)
		w.Flush()
	}
}
