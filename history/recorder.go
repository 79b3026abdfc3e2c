package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// SubscriberID is the recorder's bus subscriber id.
const SubscriberID = "hub:history"

// queueLen is the recorder's in-memory bus queue: a burst the writer has
// not caught up with waits here; past it, readings are dropped and counted
// (the bus never blocks a publisher for the history).
const queueLen = 8192

// backlogBatches bounds the points waiting for the writer, in batches
// (and at least minBacklog).
const (
	backlogBatches = 4
	minBacklog     = 10000
)

// maxPolicies bounds the cache of per-topic policies.
const maxPolicies = 8192

// Options configure a Recorder.
type Options struct {
	// Config is the history's configuration.
	Config Config
	// Bus is where readings come from; required.
	Bus broker.Bus
	// Store is where they go; required.
	Store *store.Store
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the recorder's metrics (nil: none).
	Registerer prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Recorder subscribes to every topic ("#", which never matches $ topics),
// decodes the numeric readings of the topics whose history is enabled and
// writes them, with their payloads for the archive, in batches: one
// transaction every BatchSize points or FlushInterval. It applies the
// retention limits as it goes. It implements adapters.Adapter.
type Recorder struct {
	cfg Config
	bus broker.Bus
	st  *store.Store
	log *slog.Logger
	now func() time.Time
	m   recorderMetrics

	mu       sync.Mutex
	pending  []store.HistoryRecord
	points   int               // in pending
	added    map[string]int    // points per topic since its last count pruning
	policies map[string]policy // cache of cfg.policyFor
	full     chan struct{}     // a batch is ready
	sub      broker.Subscription
	cancel   context.CancelFunc
	done     chan struct{}
}

type recorderMetrics struct {
	points, records, dropped, skipped, pruned, failed prometheus.Counter
}

// New validates the options and returns a recorder ready to Start.
func New(o Options) (*Recorder, error) {
	if o.Bus == nil || o.Store == nil {
		return nil, errors.New("history: Bus and Store are required")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	r := &Recorder{
		cfg: o.Config.withDefaults(), bus: o.Bus, st: o.Store, log: o.Logger, now: o.Now,
		added: map[string]int{}, policies: map[string]policy{}, full: make(chan struct{}, 1),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "history")
	if r.now == nil {
		r.now = time.Now
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "hub", Subsystem: "history", Name: name, Help: help})
	}
	r.m = recorderMetrics{
		points:  c("points_total", "Numeric points written to the history."),
		records: c("readings_total", "Readings (envelopes with numbers) recorded."),
		dropped: c("dropped_total", "Readings dropped: the writer was behind or failing."),
		skipped: c("skipped_total", "Envelopes on recorded topics whose payload holds no number."),
		pruned:  c("pruned_total", "Points and archived messages removed by retention."),
		failed:  c("write_errors_total", "Batches that failed to be written."),
	}
	if o.Registerer != nil {
		for _, m := range []prometheus.Collector{r.m.points, r.m.records, r.m.dropped, r.m.skipped, r.m.pruned, r.m.failed} {
			if err := o.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("history: metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Name implements adapters.Adapter.
func (r *Recorder) Name() string { return "history" }

// Start subscribes to the bus and starts the writer; its work lasts until
// Stop.
func (r *Recorder) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != nil {
		return errors.New("history: already started")
	}
	if !r.cfg.anyEnabled() {
		r.log.Info("history: off")
		r.done = make(chan struct{})
		close(r.done)
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sub, err := r.bus.Subscribe(ctx, broker.SubscribeOptions{
		ID: SubscriberID, Filters: []string{"#"}, QueueLen: queueLen, Protocol: "history",
	}, r.handle)
	if err != nil {
		cancel()
		return fmt.Errorf("history: subscribe: %w", err)
	}
	r.sub, r.cancel, r.done = sub, cancel, make(chan struct{})
	go r.run(runCtx)
	return nil
}

// Stop ends the subscription, writes what is pending and returns once the
// writer has ended (or ctx is done).
func (r *Recorder) Stop(ctx context.Context) error {
	r.mu.Lock()
	sub, cancel, done := r.sub, r.cancel, r.done
	r.sub = nil
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	if sub != nil {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, broker.ErrClosed) {
			r.log.Warn("history: unsubscribe", "err", err)
		}
	}
	if cancel != nil {
		cancel()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("history: stop: %w", ctx.Err())
	}
}

func (r *Recorder) policy(topic string) policy {
	if p, ok := r.policies[topic]; ok {
		return p
	}
	if len(r.policies) >= maxPolicies {
		clear(r.policies)
	}
	p := r.cfg.policyFor(topic)
	r.policies[topic] = p
	return p
}

// handle takes one envelope from the bus.
func (r *Recorder) handle(_ context.Context, e *broker.Envelope) error {
	if len(e.Payload) == 0 || len(e.Topic) == 0 || e.Topic[0] == '$' {
		return nil
	}
	r.mu.Lock()
	p := r.policy(e.Topic)
	r.mu.Unlock()
	if !p.enabled {
		return nil
	}
	at := e.Time
	if at.IsZero() {
		at = r.now()
	}
	rs, err := Decode(e.ContentType, e.Payload, at)
	if err != nil {
		r.m.skipped.Inc()
		if !errors.Is(err, ErrNotNumeric) {
			r.log.Debug("history: payload not recorded", "topic", e.Topic, "err", err)
		}
		return nil
	}
	rec := store.HistoryRecord{Topic: e.Topic, Points: make([]store.HistoryPoint, len(rs))}
	for i, rd := range rs {
		t := rd.Time
		if t.IsZero() {
			t = at
		}
		rec.Points[i] = store.HistoryPoint{Field: rd.Field, Unit: rd.Unit, Time: t, Value: rd.Value}
	}
	if r.cfg.MaxPayload == 0 || int64(len(e.Payload)) <= int64(r.cfg.MaxPayload) {
		id := e.ID
		if id == "" {
			id = broker.NewID()
		}
		// Microseconds: the precision of XEP-0082 stamps as clients read
		// them, so that a stamp given back as a MAM start or end selects
		// the message it came from.
		rec.Archive = &store.ArchivedMessage{ID: id, Time: at.Truncate(time.Microsecond), ContentType: e.ContentType, Payload: e.Payload}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The writer is behind (or the disk is failing): a bounded backlog.
	if r.points >= max(backlogBatches*r.cfg.BatchSize, minBacklog) {
		r.m.dropped.Inc()
		return nil
	}
	r.pending = append(r.pending, rec)
	r.points += len(rec.Points)
	r.added[e.Topic] += len(rec.Points)
	if r.points >= r.cfg.BatchSize {
		select {
		case r.full <- struct{}{}:
		default:
		}
	}
	return nil
}

// run writes batches and applies retention until ctx ends, then writes
// what is left.
func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	flush := time.NewTicker(r.cfg.FlushInterval)
	defer flush.Stop()
	prune := time.NewTicker(r.cfg.PruneInterval)
	defer prune.Stop()
	r.pruneAll(ctx)
	for {
		select {
		case <-ctx.Done():
			// What the bus handed over before the unsubscribe is written,
			// under a bound of its own.
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r.Flush(fctx)
			cancel()
			return
		case <-r.full:
			r.Flush(ctx)
		case <-flush.C:
			r.Flush(ctx)
		case <-prune.C:
			r.pruneAll(ctx)
		}
	}
}

// Flush writes the pending readings in one transaction and applies the
// count bounds of the topics that grew by a tenth of their bound.
func (r *Recorder) Flush(ctx context.Context) {
	r.mu.Lock()
	batch, n := r.pending, r.points
	r.pending, r.points = nil, 0
	var due []string
	for topic, added := range r.added {
		lim := r.policy(topic).limits
		if lim.MaxPoints > 0 && added >= max(lim.MaxPoints/10, 1) || lim.MaxArchive > 0 && added >= max(lim.MaxArchive/10, 1) {
			due = append(due, topic)
			delete(r.added, topic)
		}
	}
	r.mu.Unlock()
	if len(batch) > 0 {
		if err := r.st.WriteHistory(ctx, batch); err != nil {
			r.m.failed.Inc()
			r.m.dropped.Add(float64(len(batch)))
			r.log.Warn("history: batch not written", "readings", len(batch), "err", err)
			return
		}
		r.m.points.Add(float64(n))
		r.m.records.Add(float64(len(batch)))
	}
	if len(due) > 0 {
		r.prune(ctx, due)
	}
	if len(batch) > 0 {
		r.trim(ctx)
	}
}

func (r *Recorder) limits(topic string) store.HistoryLimits {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.policy(topic).limits
}

func (r *Recorder) prune(ctx context.Context, topics []string) {
	n, err := r.st.ApplyRetention(ctx, topics, r.limits, r.now())
	r.m.pruned.Add(float64(n))
	if err != nil && ctx.Err() == nil {
		r.log.Warn("history: retention", "err", err)
	}
}

func (r *Recorder) trim(ctx context.Context) {
	n, err := r.st.TrimHistory(ctx, int64(r.cfg.MaxBytes), r.now())
	r.m.pruned.Add(float64(n))
	if err != nil && ctx.Err() == nil {
		r.log.Warn("history: size bound", "err", err)
	}
	if n > 0 {
		r.log.Info("history: size bound reached, oldest entries removed", "removed", n, "max_bytes", r.cfg.MaxBytes.String())
	}
}

// pruneAll applies every topic's limits, then the size bound.
func (r *Recorder) pruneAll(ctx context.Context) {
	r.prune(ctx, nil)
	r.trim(ctx)
}
