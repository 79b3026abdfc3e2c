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
// order: returning is the acknowledgement (a window of one). The envelope
// is shared with other subscribers: treat it as read-only (Clone it to
// change it). A non-nil error for an envelope at QoS >= 1 on a durable
// subscription leaves it queued for another attempt, after a back-off.
type Handler func(ctx context.Context, e *Envelope) error

// DeliveryHandler receives the deliveries of a subscription made with
// Bus.Consume, in order, on the subscription's delivery goroutine. It must
// not block for long: it hands the delivery on (writes a frame) and acks or
// nacks it later, from any goroutine. Up to MaxAckPending deliveries may be
// unacknowledged at once, and they may be acknowledged in any order.
type DeliveryHandler func(d *Delivery)

// Filter is one topic filter of a subscription, with its options.
type Filter struct {
	// Topic is the topic filter ("+" and "#" wildcards).
	Topic string
	// QoS is the filter's maximum QoS.
	QoS byte
	// NoLocal skips envelopes published by the subscriber itself (its
	// SubscribeOptions.Self).
	NoLocal bool
	// RetainAsPublished keeps the retain flag of live deliveries (MQTT 5);
	// without it only retained values replayed on subscribe carry it.
	RetainAsPublished bool
	// RetainHandling says when AddFilter replays the retained values the
	// filter matches: 0 always, 1 only when the filter is new to the
	// subscription, 2 never (MQTT 5 numbering).
	RetainHandling byte
	// ID is a subscription identifier carried by deliveries through this
	// filter (MQTT 5; 0: none).
	ID int
	// Group makes the filter a member of a consumer group: each envelope
	// the filter matches goes to one member of the group, among all
	// subscriptions with the same Group and Topic (an MQTT shared
	// subscription). No retained values are replayed for it.
	Group string
}

// SubscribeOptions describe a subscription.
type SubscribeOptions struct {
	// ID names the subscriber. It must be unique among attached subscribers;
	// a durable subscription is found again under the same ID. When empty
	// the bus makes one up (and Durable must be false).
	ID string
	// Filters are topic filters taken at QoS (the simple form); Specs are
	// filters with their own options. A subscription may start with none
	// (an MQTT session before its first SUBSCRIBE) and change them with
	// AddFilter and RemoveFilter.
	Filters []string
	Specs   []Filter
	// KeepFilters attaches a durable subscription that exists already with
	// the filters it has, ignoring Filters and Specs (an MQTT session
	// resumed after a restart).
	KeepFilters bool
	// QoS is the subscription's maximum QoS; delivery QoS is
	// min(publish QoS, QoS, the filter's QoS).
	QoS byte
	// Durable keeps envelopes at delivery QoS >= 1 in a durable queue, from
	// which they are removed only once acknowledged: across detaches and
	// restarts, until the subscriber takes them. Each is stored once, before
	// Publish returns.
	Durable bool
	// MaxAckPending bounds the unacknowledged deliveries of a Consume
	// subscription (0: DefaultMaxAckPending). Subscribe always uses 1.
	MaxAckPending int
	// QueueLen bounds the deliveries waiting in memory (0:
	// DefaultQueueLen). When it is full, QoS 0 envelopes are dropped and
	// counted; QoS >= 1 envelopes of a durable subscription wait in its
	// durable queue; others are dropped and counted. The publisher is
	// never blocked by a subscriber.
	QueueLen int
	// MaxQueued and MaxQueuedBytes bound this subscription's durable queue
	// instead of the bus's MemoryConfig bounds (0: the bus's).
	MaxQueued      int
	MaxQueuedBytes int64
	// QueuePolicy is this subscription's DropOldest or DropNewest (""
	// : the bus's).
	QueuePolicy string
	// DroppedTopic is where drops of this subscription are reported (""
	// : DroppedTopic(ID)).
	DroppedTopic string
	// Allow, when set, is asked before every delivery, retained or live,
	// whether the subscriber may still read the envelope; one it may not
	// read is skipped (acknowledged, counted as Denied). It is how a
	// revoked right stops an open subscription.
	Allow func(e *Envelope) bool
	// Principal is the user or device the subscription belongs to: the
	// bytes in its durable queue count against that principal's
	// Quotas.QueuedBytesPerPrincipal ("": charged to nobody).
	Principal string
	// SendRetained replays the retained values matched by the initial
	// filters as the first deliveries (filters with a Group excepted).
	SendRetained bool
	// Self is the subscriber's own origin: filters with NoLocal skip
	// envelopes whose Origin has the same Protocol and ClientID.
	Self Origin
	// Protocol names the subscriber's protocol in the QoS-downgrade
	// counters (Memory.Downgrades).
	Protocol string
	// LiveQoS0Only skips live envelopes whose delivery QoS would be 1 or
	// more; replayed retained values still come. A clustered bus sets it
	// on the in-process part of a durable subscription whose QoS >= 1
	// deliveries come from a JetStream consumer instead, so that each
	// publish is delivered once.
	LiveQoS0Only bool
}

// DefaultQueueLen is the in-memory queue length of a subscription when
// SubscribeOptions.QueueLen is 0.
const DefaultQueueLen = 1024

// DefaultMaxAckPending is the delivery window of a Consume subscription
// when SubscribeOptions.MaxAckPending is 0.
const DefaultMaxAckPending = 1000

// SubscriptionStats are a subscription's counters.
type SubscriptionStats struct {
	Delivered   uint64 // deliveries handed to the handler (redeliveries too)
	Redelivered uint64 // deliveries handed out again after a nack or a detach
	Dropped     uint64 // envelopes lost to a full queue (QoS 0, or non-durable) or expired
	Spooled     uint64 // envelopes written to the durable queue
	Denied      uint64 // envelopes Allow refused
	Downgraded  uint64 // envelopes delivered below their publish QoS
	Queued      int    // deliveries waiting in memory now
	Pending     int    // deliveries not acknowledged yet
	Filters     int    // topic filters now
}

// Subscription is a live subscription returned by Bus.Subscribe or
// Bus.Consume.
type Subscription interface {
	// ID is the subscriber id.
	ID() string
	// Stats returns the counters.
	Stats() SubscriptionStats
	// AddFilter adds f, or replaces the options of a filter with the same
	// Topic and Group (existed is then true), and replays retained values
	// as f.RetainHandling says. A durable subscription stores it.
	AddFilter(ctx context.Context, f Filter) (existed bool, err error)
	// RemoveFilter removes the filter with topic and group; existed says
	// whether there was one.
	RemoveFilter(ctx context.Context, topic, group string) (existed bool, err error)
	// SendRetained replays the retained values f matches as deliveries
	// (Retained set), after what waits already: for a protocol that must
	// acknowledge a subscription before its retained values, it adds the
	// filter with RetainHandling 2 first and calls this after.
	SendRetained(ctx context.Context, f Filter) error
	// Filters returns the current filters.
	Filters() []Filter
	// Unsubscribe ends the subscription and discards its durable queue.
	Unsubscribe() error
	// Detach stops delivery; a durable subscription keeps collecting
	// QoS >= 1 envelopes in its durable queue until a Subscribe with the
	// same ID attaches again, which first redelivers, in order, what was
	// delivered but not acknowledged. For a non-durable one it is
	// Unsubscribe.
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
	// PublishAsync is Publish for a publisher that acknowledges later (an
	// MQTT client's PUBACKs, in order, while its reading goes on): it
	// returns once e has its place in every matching subscriber's order,
	// so one publisher's envelopes keep theirs, and calls done once e is
	// durable (ErrStorage when it cannot be made so), from another
	// goroutine or, when there is nothing to wait for, before it returns.
	// done must not block nor write to the bus's store: it may run on the
	// store's own writer (AsyncSpool). An error it returns means done is
	// not called.
	PublishAsync(ctx context.Context, e *Envelope, done func(error)) error
	// Subscribe attaches a subscription whose envelopes go to h, one at a
	// time. Retained values are replayed only with opts.SendRetained.
	Subscribe(ctx context.Context, opts SubscribeOptions, h Handler) (Subscription, error)
	// Consume attaches a subscription whose deliveries go to h with a
	// window of opts.MaxAckPending, shaped like a JetStream durable
	// consumer (AckExplicit, MaxAckPending): a nack, or a detach, delivers
	// again, in order, what was not acknowledged.
	Consume(ctx context.Context, opts SubscribeOptions, h DeliveryHandler) (Subscription, error)
	// Retained returns the retained envelopes whose topics match filter,
	// sorted by topic.
	Retained(ctx context.Context, filter string) ([]*Envelope, error)
	// Close stops delivery and waits for the handlers to return.
	Close() error
}

// Forget ends the durable subscription id and drops its queue, for a
// subscriber that will not come back (a removed bridge, a disabled feed).
func Forget(ctx context.Context, bus Bus, id string) error {
	sub, err := bus.Subscribe(ctx, SubscribeOptions{ID: id, Durable: true},
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

	// Enqueue stores e once and appends a reference to it, at the given
	// sequence numbers, to each named subscriber's queue, in one
	// transaction.
	Enqueue(ctx context.Context, e *Envelope, refs []QueueRef) error
	// Dequeue returns up to max queued envelopes of a subscriber with
	// sequence numbers above after, oldest first.
	Dequeue(ctx context.Context, subscriberID string, after int64, max int) ([]Queued, error)
	// Remove deletes the named entries of a subscriber's queue (and an
	// envelope no queue refers to any more).
	Remove(ctx context.Context, subscriberID string, seqs []int64) error
}

// Importer is implemented by a bus that can fill a durable queue from
// outside the routing: the migration of queues kept elsewhere by an
// earlier version.
type Importer interface {
	// Import appends e to the durable queue of subscriber id.
	Import(ctx context.Context, id string, e *Envelope) error
	// Queued returns what the durable queue of id holds, oldest first
	// (nil when there is no such subscription).
	Queued(ctx context.Context, id string) ([]*Envelope, error)
}

// QueueRef places an envelope in one subscriber's durable queue.
type QueueRef struct {
	Subscriber string
	Seq        int64
	// Delivered says the entry goes out before it is stored (Memory's
	// early delivery, see AsyncSpool): an AsyncSpool may hold its write
	// back a moment so that the acknowledgement, which withdraws it, can
	// come first.
	Delivered bool
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
	// QuotaBytes is the queued-bytes quota of the subscription's owner
	// (Quotas.QueuedBytesPerPrincipal; 0: none): envelopes past it are
	// dropped for all of the owner's subscriptions.
	QuotaBytes int64 `json:"quota_bytes,omitempty"`
}

// DroppedTopic is where the bus reports a durable queue overflow.
func DroppedTopic(subscriberID string) string { return "$hub/subscribers/" + subscriberID + "/dropped" }

// DurableSubscription is the stored form of a durable subscription.
type DurableSubscription struct {
	ID      string
	Filters []string
	QoS     byte
	// Specs are the filters with options (SubscribeOptions.Specs).
	Specs []Filter
	// LastSeq is the highest sequence number in its queue (set by
	// LoadSubscriptions; 0 when empty).
	LastSeq int64
	// Principal owns the queue: its bytes count against that principal's
	// queued-bytes quota (SubscribeOptions.Principal).
	Principal string
}

// Queued is an envelope in a durable queue.
type Queued struct {
	Seq      int64
	Envelope *Envelope
}
