package mqtt

import (
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// maxPendingAcks bounds the PUBACKs a client can have waiting for the
// store; past it the client's reading waits (back-pressure).
const maxPendingAcks = 1024

// ackQueue sends one client's PUBACKs and PUBRECs, in the order of its
// PUBLISHes [MQTT-4.6.0-2, -3], each once the copies its message left in
// flight to connected persistent sessions are stored
// (inflightWriter.syncAsync).
// The client's reading goes on meanwhile, so the store writes of many
// messages share one commit instead of each PUBLISH waiting for its own.
type ackQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	items   []pendingAck
	running bool // a sendAcks goroutine owns the queue
}

// pendingAck is a PUBACK (QoS 1) or PUBREC (QoS 2) to send once wait
// (when set) reports nil.
type pendingAck struct {
	pid  uint16
	qos  byte
	wait <-chan error
}

// deferAck queues the acknowledgement of QoS 1 or 2 message pid from cl
// when it must wait for the store (behind) or for earlier ones; false
// means nothing is pending, and mochi acknowledges the message itself
// right away.
func (a *Adapter) deferAck(cl *mochi.Client, pid uint16, qos byte, behind bool) bool {
	if !a.running.Load() {
		// Stopping: no new goroutines; wait here, and let mochi answer.
		if behind {
			if err := a.sessions.behind.sync(); err != nil {
				a.metrics.notStored.Add(1)
				a.refuse(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: pid},
					errNotStoredBecause(err))
				return true
			}
		}
		return false
	}
	v, ok := a.ackQueues.Load(cl)
	if !ok {
		v, _ = a.ackQueues.LoadOrStore(cl, newAckQueue())
	}
	q := v.(*ackQueue)
	q.mu.Lock()
	defer q.mu.Unlock()
	if !behind && !q.running {
		return false
	}
	for len(q.items) >= maxPendingAcks {
		q.cond.Wait()
	}
	var wait <-chan error
	if behind {
		wait = a.sessions.behind.syncAsync()
	}
	q.items = append(q.items, pendingAck{pid: pid, qos: qos, wait: wait})
	if !q.running {
		q.running = true
		a.ackWG.Add(1)
		go a.sendAcks(cl, q)
	}
	return true
}

func newAckQueue() *ackQueue {
	q := &ackQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// sendAcks sends the queued PUBACKs of cl in order and ends when the queue
// is empty. A message whose copies could not be stored is refused as
// OnPublish refuses one (MQTT 5 reason code, 3.1.1 disconnect).
func (a *Adapter) sendAcks(cl *mochi.Client, q *ackQueue) {
	defer a.ackWG.Done()
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items = q.items[1:]
		q.cond.Broadcast()
		q.mu.Unlock()
		var err error
		if it.wait != nil {
			err = <-it.wait
		}
		if err != nil {
			a.metrics.notStored.Add(1)
			a.refuse(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: it.qos}, PacketID: it.pid},
				errNotStoredBecause(err))
			continue
		}
		// A closed connection fails here; the client sends the message
		// again, as it would have without an acknowledgement.
		if it.qos == 2 {
			a.pubrec(cl, it.pid)
			continue
		}
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: it.pid})
	}
}

// pubrec does what mochi does for a QoS 2 PUBLISH it takes: the PUBREC
// state in the client's in-flight table (stored for a persistent session
// by OnQosPublish, so a resend is recognised), then the PUBREC. mochi's
// PUBREL handling completes the flow.
func (a *Adapter) pubrec(cl *mochi.Client, pid uint16) {
	now := time.Now().Unix()
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pid, Created: now}
	if exp := a.srv.Options.Capabilities.MaximumMessageExpiryInterval; exp > 0 {
		ack.Expiry = now + exp
	}
	cl.State.Inflight.DecreaseReceiveQuota()
	if cl.State.Inflight.Set(ack) {
		atomic.AddInt64(&a.srv.Info.Inflight, 1)
		a.hook.OnQosPublish(cl, ack, ack.Created, 0)
	}
	_ = cl.WritePacket(ack)
}
