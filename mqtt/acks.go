package mqtt

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// maxPendingAcks bounds the acknowledgements one client can have waiting
// for the store; past it the client's reading waits (back-pressure).
const maxPendingAcks = 1024

// ackQueue sends one client's PUBACKs and PUBRECs in the order of its
// PUBLISHes [MQTT-4.6.0-2, -3], each once the bus has made its message
// durable (Bus.PublishAsync). The client's reading goes on meanwhile, so
// the store writes of many messages share one commit instead of each
// PUBLISH waiting for its own fsync. It holds acknowledgements only: the
// messages themselves are on the bus, in order, before it sees them.
//
// No goroutine waits for the bus: whoever reports a message durable (the
// bus inline when nothing is stored, else the store's writer) sends the
// acknowledgements now due at the head of the queue, one sender at a
// time, so they leave in order.
type ackQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	items   []pendingAck // items[head:] wait, oldest first
	head    int
	first   uint64 // the number of items[head]
	sending bool   // someone is sending what is due
	due     []pendingAck
}

// pendingAck is the PUBACK (QoS 1) or PUBREC (QoS 2) of one PUBLISH, to
// send once the bus has answered (done) without an error.
type pendingAck struct {
	topic string
	pid   uint16
	qos   byte
	done  bool
	err   error
}

// publishAsync puts a client's QoS 1/2 PUBLISH on the bus and queues its
// acknowledgement behind the earlier ones; principal is the envelope's
// Origin.Principal (see envelopeOf).
func (a *Adapter) publishAsync(cl *mochi.Client, pk packets.Packet, principal string) {
	v, ok := a.ackQueues.Load(cl)
	if !ok {
		q := &ackQueue{}
		q.cond = sync.NewCond(&q.mu)
		v, _ = a.ackQueues.LoadOrStore(cl, q)
	}
	q := v.(*ackQueue)
	q.mu.Lock()
	for len(q.items)-q.head >= maxPendingAcks {
		q.cond.Wait()
	}
	if q.head > 0 && q.head >= len(q.items)/2 {
		// What was sent goes, so that a queue that never empties does
		// not grow.
		k := copy(q.items, q.items[q.head:])
		clear(q.items[k:])
		q.items, q.head = q.items[:k], 0
	}
	n := q.first + uint64(len(q.items)-q.head)
	q.items = append(q.items, pendingAck{topic: pk.TopicName, pid: pk.PacketID, qos: pk.FixedHeader.Qos})
	q.mu.Unlock()
	a.ackWG.Add(1) // Stop waits until the bus has answered for it
	// Queued first, published second: the bus orders this message after
	// the earlier ones, and its acknowledgement follows theirs.
	if err := a.publishEnvelope(cl, &pk, principal, func(err error) { a.acked(cl, q, n, err) }); err != nil {
		a.acked(cl, q, n, err)
	}
}

// acked records the bus's answer for the message numbered n and sends
// the acknowledgements now due, unless another caller is sending.
func (a *Adapter) acked(cl *mochi.Client, q *ackQueue, n uint64, err error) {
	q.mu.Lock()
	it := &q.items[q.head+int(n-q.first)]
	it.done, it.err = true, err
	if q.sending {
		q.mu.Unlock()
		return
	}
	q.sending = true
	a.sendDue(cl, q, false)
}

// sendDue sends, in order, the acknowledgements at the head of q whose
// answer came, until none is due; q.mu is held on entry and released on
// return. A QoS 2 acknowledgement of a persistent session writes the
// store, and the caller may be the store's writer: unless own (a
// goroutine of its own already), the sending goes on in a goroutine from
// there.
func (a *Adapter) sendDue(cl *mochi.Client, q *ackQueue, own bool) {
	for {
		q.due = q.due[:0]
		for q.head < len(q.items) && q.items[q.head].done {
			it := q.items[q.head]
			if !own && it.qos == 2 && it.err == nil && a.pubrecStored(cl) {
				if len(q.due) > 0 {
					break // these first
				}
				q.mu.Unlock()
				a.ackWG.Add(1)
				go func() {
					defer a.ackWG.Done()
					q.mu.Lock()
					a.sendDue(cl, q, true)
				}()
				return
			}
			q.due = append(q.due, it)
			q.items[q.head] = pendingAck{}
			q.head++
			q.first++
		}
		if q.head == len(q.items) {
			q.items, q.head = q.items[:0], 0
		}
		if len(q.due) == 0 {
			q.sending = false
			q.mu.Unlock()
			return
		}
		q.cond.Broadcast()
		due := q.due
		q.mu.Unlock()
		for _, it := range due {
			a.sendAck(cl, it)
		}
		clear(due)
		q.mu.Lock()
	}
}

// sendAck sends one acknowledgement, or the refusal of a message the bus
// could not make durable (as OnPublish refuses one: MQTT 5 reason code,
// 3.1.1 disconnect).
func (a *Adapter) sendAck(cl *mochi.Client, it pendingAck) {
	defer a.ackWG.Done()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: it.qos}, TopicName: it.topic, PacketID: it.pid}
	if it.err != nil {
		a.metrics.busErrors.Add(1)
		a.refuse(cl, pk, it.err)
		return
	}
	// A closed connection fails here; the client sends the message
	// again, as it would have without an acknowledgement.
	if it.qos == 2 {
		a.pubrec(cl, it.pid)
		return
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: it.pid})
}

// pubrecStored reports whether cl's PUBRECs are stored (see pubrec).
func (a *Adapter) pubrecStored(cl *mochi.Client) bool {
	return persistent(cl) && a.cfg.Sessions != nil
}

// pubrec does what mochi does for a QoS 2 PUBLISH it takes: the PUBREC
// state in the client's in-flight table (and, for a persistent session,
// in the store, so that a resend after a restart is recognised), then the
// PUBREC; mochi's PUBREL handling completes the flow.
func (a *Adapter) pubrec(cl *mochi.Client, pid uint16) {
	if a.pubrecStored(cl) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), storeTimeout)
		err := a.cfg.Sessions.KVPut(ctx, bucketPubrec, pubrecKey(cl.ID, pid), []byte{1})
		cancel()
		if err != nil {
			a.log.Warn("mqtt: store the PUBREC state", "client", cl.ID, "err", err)
		}
	}
	now := time.Now().Unix()
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pid, Created: now}
	cl.State.Inflight.DecreaseReceiveQuota()
	if cl.State.Inflight.Set(ack) {
		atomic.AddInt64(&a.srv.Info.Inflight, 1)
	}
	_ = cl.WritePacket(ack)
}
