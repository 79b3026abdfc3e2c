package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// countingStore is the real store, counting in-flight writes.
type countingStore struct {
	SessionStore
	puts, dels *atomic.Int64
}

func (c countingStore) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	if bucket == bucketInflight {
		c.puts.Add(1)
	}
	return c.SessionStore.KVPut(ctx, bucket, key, value)
}

func (c countingStore) KVDelete(ctx context.Context, bucket, key string) error {
	if bucket == bucketInflight {
		c.dels.Add(1)
	}
	return c.SessionStore.KVDelete(ctx, bucket, key)
}

// TestOnlineCopiesWrittenBehind: copies in flight to a connected
// persistent subscriber leave no record behind once acknowledged, and cost
// at most a write and a deletion each.
func TestOnlineCopiesWrittenBehind(t *testing.T) {
	t.Parallel()
	var puts, dels atomic.Int64
	h := newHub(t, func(c *Config) { c.Sessions = countingStore{c.Sessions, &puts, &dels} })
	c := mustV3(t, h.addr, "prompt", "alice", "alicepw", false)
	c.sub(t, "wb/fast", 1)
	p := mustV3(t, h.addr, "wb-pub", "", "", true)
	const n = 50
	for i := range n {
		p.pub(t, "wb/fast", 1, false, fmt.Sprint(i))
		if m := c.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Payload())
		}
	}
	ctx := context.Background()
	// The last PUBACK may still be on its way.
	waitFor(t, func() bool {
		_ = h.a.sessions.behind.flush()
		kv, _ := h.st.KVList(ctx, bucketInflight)
		return len(kv) == 0
	})
	// countingStore hides KVApply: every record write is counted.
	if got := puts.Load() + dels.Load(); got > 2*n {
		t.Errorf("%d in-flight store writes for %d deliveries, want at most %d", got, n, 2*n)
	}
}

// TestOnlineCopiesStoredBeforeAck: a copy in flight to a connected
// persistent session that has not acknowledged it is in the store before
// the publisher gets its PUBACK, and before the bus drops the envelope
// from the feed's durable queue: a crash at either moment loses nothing.
func TestOnlineCopiesStoredBeforeAck(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	stalledClient(t, h.addr, "no-ack", "wb/slow/#")
	p := mustV3(t, h.addr, "wb-pub", "", "", true)
	ctx := context.Background()
	stored := func() int {
		kv, err := h.st.KVList(ctx, bucketInflight)
		if err != nil {
			t.Fatal(err)
		}
		return len(kv)
	}
	for i := range 3 {
		p.pub(t, "wb/slow/mqtt", 1, false, fmt.Sprint(i)) // returns on PUBACK
		if got := stored(); got != i+1 {
			t.Fatalf("after PUBACK %d: %d in-flight records stored, want %d", i, got, i+1)
		}
	}
	// From the bus: once the feed's queue no longer holds the envelope,
	// the copy's record must be there (written by the sync: the
	// write-behind alone would take a minute now).
	w := h.a.sessions.behind
	w.mu.Lock()
	w.delay = time.Minute
	w.mu.Unlock()
	for i := range 3 {
		e := &broker.Envelope{Topic: "wb/slow/bus", Payload: []byte(fmt.Sprint(i)), QoS: 1,
			Origin: broker.Origin{Protocol: "rest", Node: "test-node"}}
		if err := h.bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			q, err := h.st.Dequeue(ctx, h.a.cfg.SubscriberID, 1)
			return err == nil && len(q) == 0
		})
		if got := stored(); got != 3+i+1 {
			t.Fatalf("after the bus acknowledged envelope %d: %d in-flight records stored, want %d", i, got, 3+i+1)
		}
	}
}

// rawConnect dials addr and returns the connection (closed when the test
// ends) and a buffer holding an MQTT 3.1.1 CONNECT for client id, to which
// a test appends its packets before writing them all at once.
func rawConnect(t *testing.T, addr, id string, clean bool) (net.Conn, *bytes.Buffer) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	buf := new(bytes.Buffer)
	con := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 60, ClientIdentifier: id}}
	if err := con.ConnectEncode(buf); err != nil {
		t.Fatal(err)
	}
	return c, buf
}

// TestPubacksInOrder: PUBACKs and PUBRECs that wait for the store and
// those that need not go out in the order of the PUBLISHes [MQTT-4.6.0-2,
// -3].
func TestPubacksInOrder(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	stalledClient(t, h.addr, "order-sub", "wb/order/stored")
	c, buf := rawConnect(t, h.addr, "order-pub", true)
	const n = 200
	for i := 1; i <= n; i++ {
		topic := "wb/order/stored"
		if i%3 == 0 {
			topic = "wb/order/nobody" // nothing to store: its PUBACK must still wait its turn
		}
		qos := byte(1)
		if i%4 == 0 {
			qos = 2
		}
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: 4,
			PacketID: uint16(i), TopicName: topic, Payload: []byte(fmt.Sprint(i))}
		if err := pk.PublishEncode(buf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got := make([]byte, 4+4*n) // CONNACK, then n PUBACKs of 4 bytes
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading CONNACK and PUBACKs: %v", err)
	}
	if got[0] != 0x20 || got[3] != 0 {
		t.Fatalf("CONNACK % x", got[:4])
	}
	for i := 1; i <= n; i++ {
		b := got[4*i : 4*i+4]
		want := byte(0x40) // PUBACK
		if i%4 == 0 {
			want = 0x50 // PUBREC
		}
		if b[0] != want || b[1] != 2 {
			t.Fatalf("packet %d: % x, want type %#x", i, b, want)
		}
		if id := int(b[2])<<8 | int(b[3]); id != i {
			t.Fatalf("PUBACK %d acknowledges packet %d", i, id)
		}
	}
}

// TestPubrecStateStoredFirst: a persistent client's QoS 2 PUBLISH whose
// copies wait for the store is answered with PUBREC only once its PUBREC
// state is stored, so a resend after a crash is recognised.
func TestPubrecStateStoredFirst(t *testing.T) {
	t.Parallel()
	h := newHub(t, nil)
	stalledClient(t, h.addr, "q2-sub", "wb/q2")
	c, buf := rawConnect(t, h.addr, "q2-pub", false)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, ProtocolVersion: 4,
		PacketID: 7, TopicName: "wb/q2", Payload: []byte("once")}
	if err := pk.PublishEncode(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got := make([]byte, 8) // CONNACK, PUBREC
	if _, err := io.ReadFull(c, got); err != nil || got[4] != 0x50 || got[7] != 7 {
		t.Fatalf("CONNACK and PUBREC: % x %v", got, err)
	}
	if _, err := h.st.KVGet(context.Background(), bucketInflight, inflightKey("q2-pub", 7)); err != nil {
		t.Fatalf("PUBREC state of q2-pub/7 not stored when the PUBREC came: %v", err)
	}
}

// flakyKV is a session store in memory that fails while failing is set.
type flakyKV struct {
	mu      sync.Mutex
	failing bool
	m       map[string][]byte
}

func (f *flakyKV) op(key string, v []byte, del bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return errors.New("disk full")
	}
	if del {
		delete(f.m, key)
	} else {
		f.m[key] = v
	}
	return nil
}

func (f *flakyKV) KVPut(_ context.Context, b, k string, v []byte) error {
	return f.op(b+"/"+k, v, false)
}
func (f *flakyKV) KVDelete(_ context.Context, b, k string) error { return f.op(b+"/"+k, nil, true) }
func (f *flakyKV) KVGet(context.Context, string, string) ([]byte, error) {
	return nil, errors.New("not used")
}
func (f *flakyKV) KVList(context.Context, string) ([]store.KV, error) { return nil, nil }

func (f *flakyKV) has(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[bucketInflight+"/"+key]
	return ok
}

// TestInflightWriterSync: syncAsync reports a write as stored only once it
// is, reports a failing store and retries, and a stop releases waiters.
func TestInflightWriterSync(t *testing.T) {
	t.Parallel()
	kv := &flakyKV{m: map[string][]byte{}}
	s := newSessions(kv, quietLogger())
	w := s.behind
	go w.run()
	if err := <-w.syncAsync(); err != nil {
		t.Fatalf("idle sync: %v", err)
	}
	w.putLater("a", []byte("1"))
	if err := w.sync(); err != nil || !kv.has("a") {
		t.Fatalf("sync after put: %v, stored %v", err, kv.has("a"))
	}
	// A put cancelled by its deletion before any flush costs nothing.
	w.mu.Lock()
	w.delay = time.Minute
	w.mu.Unlock()
	w.putLater("b", []byte("2"))
	w.deleteLater("b")
	if err := w.sync(); err != nil || kv.has("b") {
		t.Fatalf("cancelled put: %v, stored %v", err, kv.has("b"))
	}
	// A failing store: the waiter is told, the record is kept pending
	// and stored by the next sync once the store works again.
	kv.mu.Lock()
	kv.failing = true
	kv.mu.Unlock()
	w.putLater("c", []byte("3"))
	if err := w.sync(); err == nil {
		t.Fatal("sync on a failing store reported success")
	}
	kv.mu.Lock()
	kv.failing = false
	kv.mu.Unlock()
	if err := w.sync(); err != nil || !kv.has("c") {
		t.Fatalf("sync after the store recovered: %v, stored %v", err, kv.has("c"))
	}
	// Stopping writes what is pending and releases its waiters.
	w.putLater("d", []byte("4"))
	ch := w.syncAsync()
	w.close()
	select {
	case err := <-ch:
		if err != nil || !kv.has("d") {
			t.Fatalf("sync across close: %v, stored %v", err, kv.has("d"))
		}
	case <-time.After(wait):
		t.Fatal("a waiter was not released by close")
	}
	// After close a sync writes by itself.
	w.putLater("e", []byte("5"))
	if err := w.sync(); err != nil || !kv.has("e") {
		t.Fatalf("sync after close: %v, stored %v", err, kv.has("e"))
	}
}
