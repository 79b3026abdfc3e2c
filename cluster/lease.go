package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeasesBucket is the KV bucket (after the prefix and "_") that holds
// the cluster's leases: one key per leased task (a bridge), its value the
// holding hub.
const LeasesBucket = "leases"

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal.
const DefaultLeaseTTL = 3 * time.Second

// Leases hands out named leases so that a task configured on several
// hubs (a bridge) runs on one at a time. A lease is a key in a KV bucket
// whose entries expire TTL after their last write: the hub that creates
// the key holds it and renews it every TTL/3 with a revision-checked
// update; the others try to create it every TTL/3. A holder that stops
// deletes the key (another takes over within TTL/3); one that dies or is
// cut off stops renewing, and another takes over once the key expired
// (within TTL and TTL/3). A holder that cannot renew stops its task on
// its own TTL/3 before its last write can expire, so that it has stopped
// before another can create the key: two hubs hold a lease at once only
// when a hub is stalled for longer than that.
type Leases struct {
	kv   jetstream.KeyValue
	node string
	ttl  time.Duration
	log  *slog.Logger
}

// LeasesConfig configures Leases.
type LeasesConfig struct {
	// JS is the JetStream context (required).
	JS jetstream.JetStream
	// Prefix starts the bucket's name ("hub": hub_leases).
	Prefix string
	// Replicas is how many copies JetStream keeps of the bucket.
	Replicas int
	// Node is this hub's name, the value of the leases it holds.
	Node string
	// TTL is how long a lease outlives its last renewal (0: DefaultLeaseTTL).
	TTL time.Duration
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
}

// NewLeases makes (or opens) the bucket.
func NewLeases(ctx context.Context, cfg LeasesConfig) (*Leases, error) {
	if cfg.JS == nil || cfg.Node == "" {
		return nil, errors.New("cluster: leases: JS and Node are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "hub"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var kv jetstream.KeyValue
	var err error
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err = cfg.JS.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{Bucket: cfg.Prefix + "_" + LeasesBucket,
			History: 1, TTL: cfg.TTL, Storage: jetstream.MemoryStorage, Replicas: max(cfg.Replicas, 1),
			Description: "hub leases: which hub runs each bridge"})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: leases bucket: %w", err)
		case <-time.After(wait):
		}
	}
	return &Leases{kv: kv, node: cfg.Node, ttl: cfg.TTL, log: cfg.Logger}, nil
}

// Run calls held each time this hub acquires the lease name, with a
// context that ends when the lease is lost or ctx ends, and gives the
// lease up when held returns. It returns when ctx ends, once held has
// returned and the lease is given up.
func (l *Leases) Run(ctx context.Context, name string, held func(ctx context.Context)) {
	key := kvKey(name)
	every := l.ttl / 3
	for {
		octx, cancel := context.WithTimeout(ctx, every)
		sent := time.Now()
		rev, err := l.kv.Create(octx, key, []byte(l.node))
		cancel()
		if err == nil {
			l.log.Debug("cluster: lease acquired", "lease", name)
			l.hold(ctx, name, key, rev, sent, held)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// hold runs held while the lease is renewed, then gives it up. written
// is when the write that made rev was sent: the entry expires TTL after
// it at the earliest, and hold ends held TTL/3 before that unless a
// renewal succeeded meanwhile.
func (l *Leases) hold(ctx context.Context, name, key string, rev uint64, written time.Time, held func(ctx context.Context)) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		held(hctx)
	}()
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	safe := l.ttl - l.ttl/3 // after the last write, the lease is surely ours this long
	deadline := time.NewTimer(time.Until(written.Add(safe)))
	defer deadline.Stop()
	var lastErr error
renew:
	for {
		select {
		case <-ctx.Done():
			break renew
		case <-done:
			break renew
		case <-deadline.C:
			l.log.Warn("cluster: lease not renewed in time, giving it up", "lease", name, "err", lastErr)
			break renew
		case <-tick.C:
		}
		octx, ocancel := context.WithDeadline(ctx, written.Add(safe))
		sent := time.Now()
		next, err := l.kv.Update(octx, key, []byte(l.node), rev)
		ocancel()
		switch {
		case err == nil:
			rev, written = next, sent
			deadline.Reset(time.Until(written.Add(safe)))
		case isWrongRevision(err):
			l.log.Warn("cluster: lease taken by another hub", "lease", name)
			break renew
		default:
			lastErr = err
		}
	}
	cancel()
	<-done
	// Give the lease up, unless another hub took it meanwhile.
	octx, ocancel := context.WithTimeout(context.WithoutCancel(ctx), l.ttl/3)
	defer ocancel()
	if err := l.kv.Delete(octx, key, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("cluster: lease release", "lease", name, "err", err)
	}
}

func isWrongRevision(err error) bool { return errors.Is(err, jetstream.ErrKeyRevisionMismatch) }
