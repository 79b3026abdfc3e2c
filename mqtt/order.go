package mqtt

import (
	"cmp"
	"slices"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// queueOrder remembers the order in which QoS 1/2 messages were queued for
// each persistent session. mochi resends a session's in-flight messages on
// reconnect sorted by uint16(Created), Created being in seconds, with an
// unstable sort: messages queued within the same second would come back in
// random order. Before mochi resends, the adapter renumbers Created from
// this order (see reorder), so a returning client gets what it missed in
// the order it was published, across restarts too (the sequence is
// stored with each message).
type queueOrder struct {
	mu   sync.Mutex
	next int64
	seq  map[string]map[uint16]int64 // client id -> packet id -> sequence
}

func newQueueOrder() *queueOrder {
	return &queueOrder{seq: make(map[string]map[uint16]int64)}
}

// add gives the message a sequence number after every earlier one.
func (o *queueOrder) add(id string, pid uint16) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.next++
	o.setLocked(id, pid, o.next)
	return o.next
}

// set records a sequence number loaded from the store.
func (o *queueOrder) set(id string, pid uint16, seq int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.next = max(o.next, seq)
	o.setLocked(id, pid, seq)
}

func (o *queueOrder) setLocked(id string, pid uint16, seq int64) {
	m := o.seq[id]
	if m == nil {
		m = make(map[uint16]int64)
		o.seq[id] = m
	}
	m[pid] = seq
}

// done forgets a completed or dropped message.
func (o *queueOrder) done(id string, pid uint16) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m := o.seq[id]; m != nil {
		delete(m, pid)
		if len(m) == 0 {
			delete(o.seq, id)
		}
	}
}

// forget drops a session's numbers.
func (o *queueOrder) forget(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.seq, id)
}

// reorder renumbers the Created field of cl's outgoing in-flight messages
// 0, 1, 2... in queueing order, so that mochi's resend sort keeps it.
// Messages without a number (mochi's own, or acknowledgements of inbound
// QoS 2) go after, by Created and packet id.
func (o *queueOrder) reorder(cl *mochi.Client) {
	pks := cl.State.Inflight.GetAll(false)
	if len(pks) < 2 {
		return
	}
	o.mu.Lock()
	m := o.seq[cl.ID]
	key := func(pk packets.Packet) int64 {
		if s, ok := m[pk.PacketID]; ok {
			return s
		}
		return int64(^uint64(0) >> 1)
	}
	slices.SortStableFunc(pks, func(a, b packets.Packet) int {
		return cmp.Or(cmp.Compare(key(a), key(b)), cmp.Compare(a.Created, b.Created), cmp.Compare(a.PacketID, b.PacketID))
	})
	o.mu.Unlock()
	for i, pk := range pks {
		pk.Created = int64(i)
		cl.State.Inflight.Set(pk)
	}
}
