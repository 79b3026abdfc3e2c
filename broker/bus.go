package broker

import (
	"context"
	"errors"
)

// Errors returned by a Bus.
var (
	// ErrClosed is returned once the bus has been closed.
	ErrClosed = errors.New("bus closed")
	// ErrStorage marks a publish at QoS >= 1 that could not be made durable
	// (disk full, read-only store); QoS 0 traffic goes on.
	ErrStorage = errors.New("storage unavailable")
	// ErrDuplicateSubscriber is returned when a subscriber id is attached twice.
	ErrDuplicateSubscriber = errors.New("subscriber id already attached")
)

// Handler receives envelopes for one subscription, one at a time and in
// order. The envelope is shared with other subscribers: treat it as
// read-only (Clone it to change it). A non-nil error for an envelope at QoS
// >= 1 on a durable subscription leaves it queued for another attempt.
type Handler func(ctx context.Context, e *Envelope) error

// SubscribeOptions describe a subscription.
type SubscribeOptions struct {
	// ID names the subscriber. It must be unique among attached subscribers;
	// a durable subscription is found again under the same ID. When empty
	// the bus makes one up (and Durable must be false).
	ID string
	// Filters are the topic filters; at least one.
	Filters []string
	// QoS is the subscription's maximum QoS; delivery QoS is
	// min(publish QoS, QoS).
	QoS byte
	// Durable keeps envelopes at delivery QoS >= 1 that the subscriber could
	// not take yet (queue full, or detached) in its durable queue, across
	// restarts, until it takes them.
	Durable bool
	// QueueLen bounds the in-memory queue (0: DefaultQueueLen). When it is
	// full, QoS 0 envelopes are dropped and counted; QoS >= 1 envelopes go
	// to the durable queue, or are dropped and counted for a non-durable
	// subscriber. The publisher is never blocked by a subscriber.
	QueueLen int
	// NoLocal skips envelopes whose Origin.Protocol and Origin.Node equal
	// these (an adapter that routes its own protocol natively sets them).
	NoLocalProtocol string
	NoLocalNode     string
	// Sync, when set, runs before the bus removes envelopes the handler
	// took from the durable queue. A handler that hands envelopes on to a
	// store of its own (an adapter's session store, written behind the
	// delivery) makes them durable there, so that a crash between the two
	// loses nothing. An error keeps them queued: they are delivered again
	// (a handler that sees an envelope id twice must tolerate it).
	Sync func(ctx context.Context) error
}

// DefaultQueueLen is the in-memory queue length of a subscription when
// SubscribeOptions.QueueLen is 0.
const DefaultQueueLen = 1024

// SubscriptionStats are a subscription's counters.
type SubscriptionStats struct {
	Delivered uint64 // envelopes the handler took
	Dropped   uint64 // envelopes lost to a full queue (QoS 0, or non-durable)
	Spooled   uint64 // envelopes written to the durable queue
	Queued    int    // envelopes waiting in memory now
}

// Subscription is a live subscription returned by Bus.Subscribe.
type Subscription interface {
	// ID is the subscriber id.
	ID() string
	// Stats returns the counters.
	Stats() SubscriptionStats
	// Unsubscribe ends the subscription and discards its durable queue.
	Unsubscribe() error
	// Detach stops delivery; a durable subscription keeps collecting
	// QoS >= 1 envelopes in its durable queue until a Subscribe with the
	// same ID attaches again. For a non-durable one it is Unsubscribe.
	Detach() error
}

// Bus routes envelopes from publishers to subscriptions. The in-process
// implementation is the default; a clustered one shares topics between
// hubs. Both pass the conformance suite in broker/bustest.
type Bus interface {
	// Publish validates e, fills its ID and Time when empty, stores or
	// clears the retained value when e.Retain, and queues it for every
	// matching subscription. For QoS >= 1 it returns only once the
	// envelope is durable (ErrStorage when it cannot be made so).
	Publish(ctx context.Context, e *Envelope) error
	// Subscribe attaches a subscription whose envelopes go to h. Retained
	// values are not replayed: call Retained for that.
	Subscribe(ctx context.Context, opts SubscribeOptions, h Handler) (Subscription, error)
	// Retained returns the retained envelopes whose topics match filter,
	// sorted by topic.
	Retained(ctx context.Context, filter string) ([]*Envelope, error)
	// Close stops delivery and waits for the handlers to return.
	Close() error
}

// Forget ends the durable subscription id and drops its queue, for a
// subscriber that will not come back (a removed bridge, a disabled feed).
func Forget(ctx context.Context, bus Bus, id string) error {
	sub, err := bus.Subscribe(ctx, SubscribeOptions{ID: id, Filters: []string{"#"}, Durable: true},
		func(context.Context, *Envelope) error { return nil })
	if err != nil {
		return err
	}
	return sub.Unsubscribe()
}

// Spool is what a Bus needs from durable storage: retained values, the
// durable subscriptions and their queues. The store implements it; the
// bus never imports the store.
type Spool interface {
	// SaveRetained stores e as its topic's retained value.
	SaveRetained(ctx context.Context, e *Envelope) error
	// DeleteRetained clears the retained value of topic.
	DeleteRetained(ctx context.Context, topic string) error
	// LoadRetained returns every retained envelope.
	LoadRetained(ctx context.Context) ([]*Envelope, error)

	// SaveSubscription records a durable subscription.
	SaveSubscription(ctx context.Context, s DurableSubscription) error
	// DeleteSubscription forgets a durable subscription and drops its queue.
	DeleteSubscription(ctx context.Context, id string) error
	// LoadSubscriptions returns every durable subscription.
	LoadSubscriptions(ctx context.Context) ([]DurableSubscription, error)

	// Enqueue appends e to each named subscriber's queue in one transaction.
	Enqueue(ctx context.Context, e *Envelope, subscriberIDs []string) error
	// Dequeue returns up to max queued envelopes of a subscriber, oldest
	// first, with their sequence numbers.
	Dequeue(ctx context.Context, subscriberID string, max int) ([]Queued, error)
	// Ack removes queued envelopes up to and including seq.
	Ack(ctx context.Context, subscriberID string, seq int64) error
}

// QueueTrimmer is implemented by a Spool that can bound a durable queue;
// the in-process bus uses it to apply MemoryConfig.MaxQueued,
// MaxQueuedBytes and QueuePolicy.
type QueueTrimmer interface {
	// QueueSize returns the number of envelopes queued for a subscriber
	// and the total of their Size.
	QueueSize(ctx context.Context, subscriberID string) (n int, bytes int64, err error)
	// TrimQueue deletes envelopes from one end of a subscriber's queue,
	// the oldest or (newest) the newest, until it has deleted at least n
	// of them and at least bytes of Size, or the queue is empty. It
	// returns how many it deleted and their Size total.
	TrimQueue(ctx context.Context, subscriberID string, n int, bytes int64, newest bool) (int, int64, error)
}

// Queue policies: what a full durable queue drops.
const (
	// DropOldest drops the oldest envelopes to make room (EMQX's way): a
	// subscriber that comes back gets the latest readings.
	DropOldest = "drop_oldest"
	// DropNewest keeps the queue and drops what no longer fits
	// (Mosquitto's way): a subscriber gets an unbroken run of the oldest.
	DropNewest = "drop_newest"
)

// DroppedEvent is the JSON payload published on DroppedTopic(id) when a
// durable queue overflowed and envelopes were dropped.
type DroppedEvent struct {
	Subscriber string `json:"subscriber"`
	Dropped    int    `json:"dropped"`
	Total      uint64 `json:"total"`
	Limit      int    `json:"limit"`
	// LimitBytes is the byte bound (0: none); Policy says which
	// envelopes went (DropOldest or DropNewest).
	LimitBytes int64  `json:"limit_bytes,omitempty"`
	Policy     string `json:"policy"`
}

// DroppedTopic is where the bus reports a durable queue overflow.
func DroppedTopic(subscriberID string) string { return "$hub/subscribers/" + subscriberID + "/dropped" }

// DurableSubscription is the stored form of a durable subscription.
type DurableSubscription struct {
	ID      string
	Filters []string
	QoS     byte
}

// Queued is an envelope in a durable queue.
type Queued struct {
	Seq      int64
	Envelope *Envelope
}
