package mqtt

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
)

// droppedEventInterval is the least time between two $hub/... events
// about one client's full queue.
const droppedEventInterval = time.Second

// DroppedEvent is the JSON payload published (QoS 0) on
// DroppedTopic(clientID) when a client's queue of QoS 1/2 messages was
// full and its oldest messages were dropped to make room for new ones.
type DroppedEvent struct {
	Client  string `json:"client"`
	Dropped uint64 `json:"dropped"` // since the previous event
	Total   uint64 `json:"total"`   // since the hub started
	Limit   int    `json:"limit"`   // MaxQueued
	// LimitBytes is MaxQueuedBytes when that bound was the one reached.
	LimitBytes int64 `json:"limit_bytes,omitempty"`
	// Policy says which messages went: broker.DropOldest or DropNewest.
	Policy string `json:"policy"`
}

// DroppedTopic is where the adapter reports a client's queue overflow:
// $hub/clients/{clientid}/dropped, the client id escaped as a URL path
// segment (and "+" as %2B) so that it is one topic level.
func DroppedTopic(clientID string) string {
	return "$hub/clients/" + strings.ReplaceAll(url.PathEscape(clientID), "+", "%2B") + "/dropped"
}

// drops counts a client's dropped messages and paces its events.
type drops struct {
	mu    sync.Mutex
	total uint64
	sent  uint64 // total at the last event
	last  time.Time
}

// makeRoom runs before each delivery to cl (OnACLCheck) and reports
// whether it may go ahead. When cl's queue of QoS 1/2 messages is at
// MaxQueued, DropOldest drops the oldest one, so that the new message is
// queued (mochi would refuse the newest, silently); DropNewest refuses the
// delivery, and also one to a persistent session whose queued bytes are
// at MaxQueuedBytes, counting it. A SUBSCRIBE's own checks (retained
// messages) and clients without a QoS 1/2 subscription are never refused
// and never drop anything.
func (a *Adapter) makeRoom(cl *mochi.Client) bool {
	limit := int(a.cfg.MaxQueued)
	full := cl.State.Inflight.Len() >= limit
	newest := a.cfg.QueuePolicy == broker.DropNewest
	overBytes := newest && a.cfg.MaxQueuedBytes > 0 && a.order.bytes(cl.ID) >= a.cfg.MaxQueuedBytes
	if cl.Net.Inline || (!full && !overBytes) {
		return true
	}
	if _, ok := a.subscribing.Load(cl); ok || !hasQoSSubscription(cl) {
		return true
	}
	if newest {
		a.metrics.queueDropped.Add(1)
		var limitBytes int64
		if overBytes {
			limitBytes = a.cfg.MaxQueuedBytes
		}
		a.dropped(cl.ID, limit, limitBytes)
		return false
	}
	if a.dropOldest(cl, 0) {
		a.dropped(cl.ID, limit, 0)
	}
	return true
}

// trimBytes runs once message newest is queued for persistent session cl:
// with DropOldest, while the session's queued bytes are past
// MaxQueuedBytes, it drops the oldest messages (never newest itself).
// (DropNewest refuses deliveries before, in makeRoom.)
func (a *Adapter) trimBytes(cl *mochi.Client, newest uint16) {
	limit := a.cfg.MaxQueuedBytes
	if limit <= 0 || cl.Net.Inline || a.cfg.QueuePolicy == broker.DropNewest {
		return
	}
	for a.order.bytes(cl.ID) > limit {
		if !a.dropOldest(cl, newest) {
			return
		}
		a.dropped(cl.ID, int(a.cfg.MaxQueued), limit)
	}
}

// dropOldest takes the oldest QoS 1/2 message other than packet keep (0:
// none) out of cl's queue and its session; false when there is none.
func (a *Adapter) dropOldest(cl *mochi.Client, keep uint16) bool {
	var oldest packets.Packet
	found := false
	// A persistent session's messages are numbered: the oldest is found
	// without copying the queue.
	if pid, ok := a.order.oldest(cl.ID, keep); ok {
		if pk, ok := cl.State.Inflight.Get(pid); ok && pk.FixedHeader.Type == packets.Publish {
			oldest, found = pk, true
		}
	}
	if !found {
		for _, pk := range cl.State.Inflight.GetAll(false) {
			if pk.FixedHeader.Type != packets.Publish || (keep != 0 && pk.PacketID == keep) {
				continue
			}
			if !found || a.order.before(cl.ID, pk, oldest) {
				oldest, found = pk, true
			}
		}
	}
	if !found || !cl.State.Inflight.Delete(oldest.PacketID) {
		return false
	}
	atomic.AddInt64(&a.srv.Info.Inflight, -1)
	cl.State.Inflight.IncreaseSendQuota()
	a.order.done(cl.ID, oldest.PacketID)
	if a.sessions != nil {
		a.sessions.deleteInflight(cl.ID, oldest.PacketID)
	}
	a.metrics.queueDropped.Add(1)
	return true
}

// hasQoSSubscription reports whether cl has a subscription of QoS 1 or 2.
func hasQoSSubscription(cl *mochi.Client) bool {
	for _, s := range cl.State.Subscriptions.GetAll() {
		if s.Qos > 0 {
			return true
		}
	}
	return false
}

// dropped counts one dropped message of client id and, at most every
// droppedEventInterval, says so on the bus.
func (a *Adapter) dropped(id string, limit int, limitBytes int64) {
	v, _ := a.drops.LoadOrStore(id, &drops{})
	d := v.(*drops)
	d.mu.Lock()
	d.total++
	now := time.Now()
	if now.Sub(d.last) < droppedEventInterval {
		d.mu.Unlock()
		return
	}
	ev := DroppedEvent{Client: id, Dropped: d.total - d.sent, Total: d.total, Limit: limit, LimitBytes: limitBytes, Policy: a.cfg.QueuePolicy}
	d.sent, d.last = d.total, now
	d.mu.Unlock()
	a.log.Warn("mqtt: queue full, dropped messages", "client", id, "dropped", ev.Dropped, "policy", ev.Policy, "limit", limit, "limit_bytes", limitBytes)
	b, _ := json.Marshal(ev)
	e := &broker.Envelope{Topic: DroppedTopic(id), Payload: b, ContentType: "application/json",
		Origin: broker.Origin{Protocol: broker.ProtoHub, Node: a.cfg.Node}}
	ctx, cancel := context.WithTimeout(a.ctx, storeTimeout)
	defer cancel()
	if err := a.cfg.Bus.Publish(ctx, e); err != nil {
		a.log.Warn("mqtt: report dropped messages", "client", id, "err", err)
	}
}
