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
//
// It also knows which bus envelope each queued message carries (see
// busOrigin), so that an envelope the bus delivers a second time (after
// a crash, the bus replays the batch it had not acknowledged) is not
// queued twice for the same session.
type queueOrder struct {
	mu   sync.Mutex
	next int64
	seq  map[string]map[uint16]int64  // client id -> packet id -> sequence
	env  map[string]map[string]uint16 // client id -> envelope id -> packet id
	penv map[string]map[uint16]string // client id -> packet id -> envelope id
	size map[string]map[uint16]int    // client id -> packet id -> queued bytes
	sum  map[string]int64             // client id -> queued bytes
	// fifo holds each client's (seq, pid) in numbering order, with stale
	// entries (done or renumbered) skipped lazily, so that the oldest
	// message is found without scanning the queue (see oldest).
	fifo     map[string][]seqPID
	unsorted map[string]bool // set loaded from the store out of order
}

type seqPID struct {
	seq int64
	pid uint16
}

// queuedSize is what a queued message counts against MaxQueuedBytes: its
// topic and payload.
func queuedSize(pk packets.Packet) int { return len(pk.TopicName) + len(pk.Payload) }

func newQueueOrder() *queueOrder {
	return &queueOrder{
		seq:      make(map[string]map[uint16]int64),
		env:      make(map[string]map[string]uint16),
		penv:     make(map[string]map[uint16]string),
		size:     make(map[string]map[uint16]int),
		sum:      make(map[string]int64),
		fifo:     make(map[string][]seqPID),
		unsorted: make(map[string]bool),
	}
}

// add gives the message a sequence number after every earlier one. env is
// the envelope id it carries ("" if none), size its queuedSize. When the
// client already holds that envelope under another packet id, add numbers
// nothing and returns dup true.
func (o *queueOrder) add(id string, pid uint16, env string, size int) (seq int64, dup bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if env != "" {
		if p, ok := o.env[id][env]; ok && p != pid {
			return 0, true
		}
	}
	o.next++
	o.setLocked(id, pid, o.next, env, size)
	return o.next, false
}

// set records a sequence number loaded from the store.
func (o *queueOrder) set(id string, pid uint16, seq int64, env string, size int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq < o.next {
		o.unsorted[id] = true
	}
	o.next = max(o.next, seq)
	o.setLocked(id, pid, seq, env, size)
}

func (o *queueOrder) setLocked(id string, pid uint16, seq int64, env string, size int) {
	m := o.seq[id]
	if m == nil {
		m = make(map[uint16]int64)
		o.seq[id] = m
	}
	m[pid] = seq
	o.fifo[id] = append(o.fifo[id], seqPID{seq, pid})
	sz := o.size[id]
	if sz == nil {
		sz = make(map[uint16]int)
		o.size[id] = sz
	}
	o.sum[id] += int64(size - sz[pid])
	sz[pid] = size
	o.unlinkLocked(id, pid)
	if env == "" {
		return
	}
	e := o.env[id]
	if e == nil {
		e = make(map[string]uint16)
		o.env[id] = e
		o.penv[id] = make(map[uint16]string)
	}
	e[env] = pid
	o.penv[id][pid] = env
}

// unlinkLocked forgets which envelope packet pid of client id carried.
func (o *queueOrder) unlinkLocked(id string, pid uint16) {
	env, ok := o.penv[id][pid]
	if !ok {
		return
	}
	delete(o.penv[id], pid)
	delete(o.env[id], env)
	if len(o.penv[id]) == 0 {
		delete(o.penv, id)
		delete(o.env, id)
	}
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
	if sz := o.size[id]; sz != nil {
		if n, ok := sz[pid]; ok {
			delete(sz, pid)
			o.sum[id] -= int64(n)
		}
		if len(sz) == 0 {
			delete(o.size, id)
			delete(o.sum, id)
		}
	}
	o.unlinkLocked(id, pid)
	o.trimFIFOLocked(id)
}

// live reports whether a fifo entry still numbers its message.
func (o *queueOrder) liveLocked(id string, e seqPID) bool {
	s, ok := o.seq[id][e.pid]
	return ok && s == e.seq
}

// trimFIFOLocked drops the stale entries at the front of id's fifo, and
// rebuilds it when stale entries behind a message that stays (one never
// acknowledged) make up most of it.
func (o *queueOrder) trimFIFOLocked(id string) {
	q := o.fifo[id]
	for len(q) > 0 && !o.liveLocked(id, q[0]) {
		q = q[1:]
	}
	if len(q) > 2*len(o.seq[id])+64 {
		live := make([]seqPID, 0, len(o.seq[id]))
		for _, e := range q {
			if o.liveLocked(id, e) {
				live = append(live, e)
			}
		}
		q = live
	}
	if len(q) == 0 {
		delete(o.fifo, id)
		return
	}
	o.fifo[id] = q
}

// oldest returns the packet id of client id's oldest numbered message
// other than keep (0: none).
func (o *queueOrder) oldest(id string, keep uint16) (uint16, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.unsorted[id] {
		slices.SortFunc(o.fifo[id], func(a, b seqPID) int { return cmp.Compare(a.seq, b.seq) })
		delete(o.unsorted, id)
	}
	o.trimFIFOLocked(id)
	for _, e := range o.fifo[id] {
		if e.pid != keep && o.liveLocked(id, e) {
			return e.pid, true
		}
	}
	return 0, false
}

// bytes returns the queuedSize total of client id's numbered messages.
func (o *queueOrder) bytes(id string) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sum[id]
}

// before reports whether a was queued for client id before b (by
// sequence number; unnumbered ones by Created, then packet id).
func (o *queueOrder) before(id string, a, b packets.Packet) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := o.seq[id]
	key := func(pk packets.Packet) int64 {
		if s, ok := m[pk.PacketID]; ok {
			return s
		}
		return int64(^uint64(0) >> 1)
	}
	return cmp.Or(cmp.Compare(key(a), key(b)), cmp.Compare(a.Created, b.Created), cmp.Compare(a.PacketID, b.PacketID)) < 0
}

// forget drops a session's numbers.
func (o *queueOrder) forget(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.seq, id)
	delete(o.env, id)
	delete(o.penv, id)
	delete(o.size, id)
	delete(o.sum, id)
	delete(o.fifo, id)
	delete(o.unsorted, id)
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
