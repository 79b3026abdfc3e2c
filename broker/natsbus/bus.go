// Package natsbus is the clustered broker.Bus: hubs share one bus over
// NATS. Core NATS carries every envelope to the other hubs for their live
// subscribers; JetStream keeps the envelopes at QoS >= 1 in one stream, a
// durable subscriber's queue is a durable JetStream consumer of it
// (AckExplicit, MaxAckPending = the delivery window), and retained values
// live in a JetStream KV bucket. Each hub routes to its own live
// subscribers with an in-process broker.Memory, so filters, windows,
// NoLocal, Allow and the counters mean what they mean there.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/broker"
)

// Defaults of Config.
const (
	DefaultPrefix         = "hub"
	DefaultAckWait        = 30 * time.Second
	DefaultPublishTimeout = 5 * time.Second
)

// Headers of the NATS messages the bus sends.
const (
	// hdrNode names the bus instance that sent an envelope, so that it
	// does not route its own envelopes twice.
	hdrNode = "Hub-Node"
)

// Config configures a NATS bus.
type Config struct {
	// Conn is the connection to NATS (required). The bus does not close
	// it.
	Conn *nats.Conn
	// Prefix names the bus's subjects, stream and KV bucket, so that
	// several hub clusters may share one NATS deployment (letters,
	// digits, '_' and '-'; "" is DefaultPrefix).
	Prefix string
	// Replicas is the number of copies JetStream keeps of the stream and
	// the KV bucket (0: 1). A QoS >= 1 publish is acknowledged once a
	// quorum of them has it.
	Replicas int
	// MaxBytes bounds the stream of envelopes (0: no bound); when it is
	// full a QoS >= 1 publish fails with broker.ErrStorage.
	MaxBytes int64
	// Node is stamped into Origin.Node of envelopes that have none.
	Node string
	// AckWait is how long JetStream waits for the acknowledgement of a
	// delivery before it delivers it again (a hub that died with it out):
	// 0 is DefaultAckWait.
	AckWait time.Duration
	// PublishTimeout bounds the wait for JetStream to acknowledge a write
	// (0: DefaultPublishTimeout); past it the publish fails with
	// broker.ErrStorage.
	PublishTimeout time.Duration
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
	// Quotas bound the retained values and queued bytes per principal
	// and in all, as on the in-process bus (zero: no bounds); quota.go
	// says how they are counted across the cluster.
	Quotas broker.Quotas
	// ColdRetainedAbove keeps the payloads of retained values larger
	// than this many bytes in the KV bucket only, read back when asked
	// for (0: every payload in memory too).
	ColdRetainedAbove int
}

// Bus is the NATS bus. It implements broker.Bus.
type Bus struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	mem    *broker.Memory
	log    *slog.Logger
	self   string // this instance, in hdrNode
	live   *nats.Subscription
	ctx    context.Context // ends with Close
	cancel context.CancelFunc

	streamName, liveSubj, durSubj string
	// multiFilter: the server takes several, changeable filter subjects
	// per consumer (2.10 and later).
	multiFilter bool

	mu       sync.Mutex
	durables map[string]*durable // attached durable subscriptions
	closed   bool
	waiting  bool // Close waits for wg: no more goroutines (background)

	// chain orders the completions of QoS >= 1 publishes: each waits for
	// the one before it, so that envelopes reach live subscribers in the
	// order they were published.
	chainMu sync.Mutex
	last    chan struct{}

	wg sync.WaitGroup
	// rrev is the KV revision of each topic's retained value this hub
	// holds: a value of an older revision (a watch update behind a write
	// of this hub) does not replace it.
	rmu  sync.Mutex
	rrev map[string]uint64

	// fault, when set (tests), is asked before every JetStream write: a
	// non-nil error is that write failing.
	fault func() error

	groups groupSubs // groups.go
	// gkv holds the members of the groups (groups_durable.go).
	gkv    jetstream.KeyValue
	hbOnce sync.Once
	hbOn   atomic.Bool

	queued queuedQuota // quota.go
}

// New connects the bus to NATS: it creates or updates the stream and the
// KV bucket, loads the retained values and subscribes to the envelopes of
// the other hubs.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Conn == nil {
		return nil, errors.New("natsbus: config: Conn is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	for i := 0; i < len(cfg.Prefix); i++ {
		if c := cfg.Prefix[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return nil, fmt.Errorf("natsbus: prefix %q: only letters, digits, '_' and '-'", cfg.Prefix)
		}
	}
	if cfg.Replicas < 0 || cfg.Replicas > 5 {
		return nil, fmt.Errorf("natsbus: replicas %d: want 1..5", cfg.Replicas)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("natsbus: max bytes %d: must not be negative", cfg.MaxBytes)
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Node == "" {
		cfg.Node = broker.NodeID()
	}
	b := &Bus{cfg: cfg, nc: cfg.Conn, log: cfg.Logger, self: broker.NewID(), durables: map[string]*durable{}, rrev: map[string]uint64{},
		streamName: cfg.Prefix + "_envelopes", liveSubj: cfg.Prefix + ".l", durSubj: cfg.Prefix + ".q"}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.multiFilter = b.nc.ConnectedServerVersion() == "" || serverAtLeast(b.nc.ConnectedServerVersion(), 2, 10)
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	b.js = js
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	// A JetStream cluster that is starting has no leader yet: try until
	// ctx ends.
	err = retry(ctx, func(ctx context.Context) (err error) {
		b.stream, err = ensureStream(ctx, js, jetstream.StreamConfig{
			Name:        b.streamName,
			Description: "hub envelopes at QoS >= 1, kept until every durable subscriber has them",
			Subjects:    []string{b.durSubj + ".>"},
			Retention:   jetstream.InterestPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxBytes:    maxBytes,
			Discard:     jetstream.DiscardNew,
			Duplicates:  2 * time.Minute,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: stream %s: %w", b.streamName, err)
	}
	err = retry(ctx, func(ctx context.Context) (err error) {
		b.kv, err = ensureKeyValue(ctx, js, jetstream.KeyValueConfig{
			Bucket:      cfg.Prefix + "_retained",
			Description: "hub retained values by topic",
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: retained bucket: %w", err)
	}
	err = retry(ctx, func(ctx context.Context) (err error) {
		b.gkv, err = ensureKeyValue(ctx, js, jetstream.KeyValueConfig{
			Bucket:      cfg.Prefix + "_groups",
			Description: "hub consumer-group members, and the heartbeats of the hubs with members",
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("natsbus: groups bucket: %w", err)
	}
	b.mem, err = broker.NewMemory(broker.MemoryConfig{Node: cfg.Node, Logger: cfg.Logger, ExternalRetained: true, Quotas: cfg.Quotas})
	if err != nil {
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	b.mem.SetColdReader(kvCold{b}, cfg.ColdRetainedAbove) // retained.go
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wg.Add(1)
	go b.pollQueued() // quota.go
	if err := b.watchRetained(ctx); err != nil {
		_ = b.mem.Close()
		b.cancel()
		b.wg.Wait()
		return nil, err
	}
	b.live, err = b.nc.Subscribe(b.liveSubj+".>", b.onLive)
	if err != nil {
		_ = b.mem.Close()
		b.cancel()
		b.wg.Wait()
		return nil, fmt.Errorf("natsbus: subscribe %s: %w", b.liveSubj, err)
	}
	_ = b.live.SetPendingLimits(1<<20, 256<<20)
	if err := b.nc.FlushWithContext(ctx); err != nil {
		_ = b.live.Unsubscribe()
		_ = b.mem.Close()
		b.cancel()
		b.wg.Wait()
		return nil, fmt.Errorf("natsbus: flush: %w", err)
	}
	return b, nil
}

// serverAtLeast reports whether version ("2.9.10") is major.minor or later.
func serverAtLeast(version string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(version, "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

// retry calls fn until it succeeds or ctx ends, each attempt bounded.
// ensureStream creates the stream, or finds it made already with the
// same configuration (JetStream's create is idempotent then), and updates
// it only when its configuration differs. CreateOrUpdateStream sends an
// update first, on every start, and Debian's nats-server 2.9.10 crashed
// on one (a nil pointer in updateWithAdvisory; the trace matches what
// nats-server PR #4391 fixed in 2023) when two hubs started together on a
// fresh server.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.UpdateStream(ctx, cfg) // made before with another configuration
	}
	return s, err
}

// ensureKeyValue is ensureStream for a key-value bucket.
func ensureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.UpdateKeyValue(ctx, cfg) // made before with another configuration
	}
	return kv, err
}

func retry(ctx context.Context, fn func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// Attached reports whether the durable subscription id is attached on
// this hub (an MQTT session whose client is connected here): wholly, so
// that what is published from then on reaches it.
func (b *Bus) Attached(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.durables[id]
	return ok && d.attached.Load()
}

// Memory returns the in-process bus that routes to this hub's live
// subscribers (for its counters).
func (b *Bus) Memory() *broker.Memory { return b.mem }

// onLive routes an envelope another hub published to this hub's live
// subscribers.
func (b *Bus) onLive(m *nats.Msg) {
	if m.Header.Get(hdrNode) == b.self {
		return
	}
	e, err := broker.UnmarshalEnvelope(m.Data)
	if err != nil {
		b.log.Warn("natsbus: undecodable envelope", "subject", m.Subject, "err", err)
		return
	}
	if err := b.mem.Publish(broker.WithoutGroups(b.ctx), e); err != nil && !errors.Is(err, broker.ErrClosed) {
		b.log.Warn("natsbus: route envelope", "topic", e.Topic, "err", err)
	}
}

// prepare validates e and fills what the bus fills.
func (b *Bus) prepare(e *broker.Envelope) error {
	if err := broker.ValidateTopic(e.Topic); err != nil {
		return fmt.Errorf("natsbus: publish: %w", err)
	}
	if e.QoS > 2 {
		return fmt.Errorf("natsbus: publish %q: qos %d out of range 0..2", e.Topic, e.QoS)
	}
	if e.ID == "" {
		e.ID = broker.NewID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Origin.Node == "" {
		e.Origin.Node = b.cfg.Node
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return broker.ErrClosed
	}
	return nil
}

// msg encodes e as a NATS message on subject prefix.topic.
func (b *Bus) msg(prefix string, e *broker.Envelope) (*nats.Msg, error) {
	subj, err := broker.TopicToSubject(prefix, e.Topic)
	if err != nil {
		return nil, fmt.Errorf("natsbus: %w", err)
	}
	data, err := e.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("natsbus: encode %q: %w", e.Topic, err)
	}
	m := nats.NewMsg(subj)
	m.Data = data
	m.Header.Set(hdrNode, b.self)
	return m, nil
}

func (b *Bus) checkFault() error {
	if b.fault != nil {
		return b.fault()
	}
	return nil
}

// sendLive routes e to this hub's live subscribers and hands it to the
// other hubs for theirs.
func (b *Bus) sendLive(ctx context.Context, e *broker.Envelope) error {
	if err := b.mem.Publish(b.localRoute(ctx, e), e); err != nil {
		return err
	}
	m, err := b.msg(b.liveSubj, e)
	if err != nil {
		return err
	}
	// A hub cut off from NATS keeps routing between its own clients; the
	// others get what the reconnect buffer holds once it is back.
	if err := b.nc.PublishMsg(m); err != nil && !errors.Is(err, nats.ErrReconnectBufExceeded) {
		b.log.Debug("natsbus: send live envelope", "topic", e.Topic, "err", err)
	}
	return nil
}

// Publish implements broker.Bus: a QoS >= 1 envelope returns once the
// JetStream stream (a quorum of its replicas) has it.
func (b *Bus) Publish(ctx context.Context, e *broker.Envelope) error {
	if err := b.prepare(e); err != nil {
		return err
	}
	if e.QoS == 0 {
		if e.Retain {
			if err := b.retain(ctx, e); err != nil {
				return err
			}
		}
		return b.sendLive(ctx, e)
	}
	ch := make(chan error, 1)
	if err := b.publishDurable(ctx, e, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("natsbus: publish %q: %w", e.Topic, ctx.Err())
	}
}

// PublishAsync implements broker.Bus.
func (b *Bus) PublishAsync(ctx context.Context, e *broker.Envelope, done func(error)) error {
	if err := b.prepare(e); err != nil {
		return err
	}
	if e.QoS == 0 {
		if e.Retain {
			if err := b.retain(ctx, e); err != nil {
				return err
			}
		}
		if err := b.sendLive(ctx, e); err != nil {
			return err
		}
		done(nil)
		return nil
	}
	return b.publishDurable(ctx, e, done)
}

// publishDurable writes e to the stream and, once JetStream has it, routes
// it to the live subscribers, in publish order, then calls done.
func (b *Bus) publishDurable(ctx context.Context, e *broker.Envelope, done func(error)) error {
	if err := b.checkQueued(e); err != nil { // quota.go
		return err
	}
	if e.Retain {
		if err := b.retain(ctx, e); err != nil {
			return err
		}
	}
	m, err := b.msg(b.durSubj, e)
	if err != nil {
		return err
	}
	m.Header.Set(jetstream.MsgIDHeader, e.ID)
	var fut jetstream.PubAckFuture
	err = b.checkFault()
	if err == nil && b.nc.Status() != nats.CONNECTED {
		// Written to the reconnect buffer, it would be stored later
		// although refused now.
		err = fmt.Errorf("not connected to NATS (%v)", b.nc.Status())
	}
	if err == nil {
		fut, err = b.js.PublishMsgAsync(m)
	}
	b.chainMu.Lock()
	prev := b.last
	mine := make(chan struct{})
	b.last = mine
	b.chainMu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err == nil {
			select {
			case <-fut.Ok():
			case err = <-fut.Err():
			case <-b.ctx.Done():
				err = broker.ErrClosed
			}
		}
		if prev != nil {
			<-prev
		}
		if err != nil && !errors.Is(err, broker.ErrClosed) {
			err = fmt.Errorf("natsbus: publish %q: %w: %w", e.Topic, broker.ErrStorage, err)
		}
		if err == nil {
			err = b.sendLive(context.WithoutCancel(ctx), e)
		}
		close(mine)
		done(err)
	}()
	return nil
}

// Retained implements broker.Bus: the values this hub holds, those of
// the KV bucket as its watch has brought them (and this hub's own writes
// at once).
func (b *Bus) Retained(ctx context.Context, filter string) ([]*broker.Envelope, error) {
	return b.mem.Retained(ctx, filter)
}

// Subscribe implements broker.Bus.
func (b *Bus) Subscribe(ctx context.Context, opts broker.SubscribeOptions, h broker.Handler) (broker.Subscription, error) {
	if h == nil {
		return nil, errors.New("natsbus: subscribe: nil handler")
	}
	if !opts.Durable {
		// Group deliveries come from a consumer's puller too: one handler
		// call at a time.
		var mu sync.Mutex
		hs := func(ctx context.Context, e *broker.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			return h(ctx, e)
		}
		s, err := b.mem.Subscribe(ctx, opts, hs)
		return b.trackGroups(s, err, memberOf{opts: opts, h: handlerDeliveries(b.log, opts.ID, hs), window: 1})
	}
	opts.MaxAckPending = 1
	return b.attachDurable(ctx, opts, handlerDeliveries(b.log, opts.ID, h))
}

// Consume implements broker.Bus.
func (b *Bus) Consume(ctx context.Context, opts broker.SubscribeOptions, h broker.DeliveryHandler) (broker.Subscription, error) {
	if h == nil {
		return nil, errors.New("natsbus: consume: nil handler")
	}
	if !opts.Durable {
		var mu sync.Mutex
		hs := func(d *broker.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			h(d)
		}
		s, err := b.mem.Consume(ctx, opts, hs)
		return b.trackGroups(s, err, memberOf{opts: opts, h: hs, window: opts.MaxAckPending})
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = broker.DefaultMaxAckPending
	}
	return b.attachDurable(ctx, opts, h)
}

// handlerDeliveries turns a Subscribe handler into a DeliveryHandler the
// way the in-process bus does: returning acknowledges, a failure at QoS
// >= 1 is retried after a back-off, one at QoS 0 is dropped.
func handlerDeliveries(log *slog.Logger, id string, h broker.Handler) broker.DeliveryHandler {
	var mu sync.Mutex
	fails := 0
	return func(d *broker.Delivery) {
		err := h(d.Context(), d.Envelope)
		if err == nil {
			mu.Lock()
			fails = 0
			mu.Unlock()
			d.Ack()
			return
		}
		if d.QoS == 0 || d.Retained {
			log.Debug("natsbus: handler refused an envelope", "subscriber", id, "topic", d.Envelope.Topic, "err", err)
			d.Ack()
			return
		}
		mu.Lock()
		fails++
		wait := min(50*time.Millisecond<<min(fails-1, 7), 5*time.Second)
		mu.Unlock()
		log.Warn("natsbus: handler failed, retrying", "subscriber", id, "topic", d.Envelope.Topic, "err", err, "in", wait)
		d.NackAfter(wait)
	}
}

// Close implements broker.Bus: it stops delivery and waits for the
// handlers; durable subscriptions keep their consumers.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ds := make([]*durable, 0, len(b.durables))
	for _, d := range b.durables {
		ds = append(ds, d)
	}
	b.mu.Unlock()
	for _, d := range ds {
		_ = d.Detach()
	}
	_ = b.live.Unsubscribe()
	b.closeGroups()
	b.cancel()
	b.mu.Lock()
	b.waiting = true
	b.mu.Unlock()
	b.wg.Wait()
	return b.mem.Close()
}

var _ broker.Bus = (*Bus)(nil)
