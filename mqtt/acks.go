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
type ackQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	items   []*pendingAck
	running bool // a sendAcks goroutine owns the queue
}

// pendingAck is the PUBACK (QoS 1) or PUBREC (QoS 2) of one PUBLISH, to
// send once done reports nil.
type pendingAck struct {
	pk   packets.Packet // the PUBLISH (topic, QoS, packet id)
	done chan error
}

// publishAsync puts a client's QoS 1/2 PUBLISH on the bus and queues its
// acknowledgement behind the earlier ones.
func (a *Adapter) publishAsync(cl *mochi.Client, pk packets.Packet) {
	v, ok := a.ackQueues.Load(cl)
	if !ok {
		q := &ackQueue{}
		q.cond = sync.NewCond(&q.mu)
		v, _ = a.ackQueues.LoadOrStore(cl, q)
	}
	q := v.(*ackQueue)
	pa := &pendingAck{pk: pk, done: make(chan error, 1)}
	q.mu.Lock()
	for len(q.items) >= maxPendingAcks {
		q.cond.Wait()
	}
	q.items = append(q.items, pa)
	if !q.running {
		q.running = true
		a.ackWG.Add(1)
		go a.sendAcks(cl, q)
	}
	q.mu.Unlock()
	// Queued first, published second: the bus orders this message after
	// the earlier ones, and its acknowledgement follows theirs.
	if err := a.publishEnvelope(cl, &pk, func(err error) { pa.done <- err }); err != nil {
		pa.done <- err
	}
}

// sendAcks sends the queued acknowledgements of cl in order and ends when
// the queue is empty. A message the bus could not make durable is refused
// as OnPublish refuses one (MQTT 5 reason code, 3.1.1 disconnect).
func (a *Adapter) sendAcks(cl *mochi.Client, q *ackQueue) {
	defer a.ackWG.Done()
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		pa := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.cond.Broadcast()
		q.mu.Unlock()
		if err := <-pa.done; err != nil {
			a.metrics.busErrors.Add(1)
			a.refuse(cl, pa.pk, err)
			continue
		}
		// A closed connection fails here; the client sends the message
		// again, as it would have without an acknowledgement.
		if pa.pk.FixedHeader.Qos == 2 {
			a.pubrec(cl, pa.pk.PacketID)
			continue
		}
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pa.pk.PacketID})
	}
}

// pubrec does what mochi does for a QoS 2 PUBLISH it takes: the PUBREC
// state in the client's in-flight table (and, for a persistent session,
// in the store, so that a resend after a restart is recognised), then the
// PUBREC; mochi's PUBREL handling completes the flow.
func (a *Adapter) pubrec(cl *mochi.Client, pid uint16) {
	if persistent(cl) && a.cfg.Sessions != nil {
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
