package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/hubsmith/hub/broker"
)

// Retained values live in the KV bucket {prefix}_retained, one key per
// topic; every hub follows the bucket with a watch and holds the values
// in its in-process bus for replay.

// retain stores or clears e's retained value in the KV bucket (a clear is
// an empty value, so that it has a revision like any other write), and
// makes it this hub's at once.
func (b *Bus) retain(ctx context.Context, e *broker.Envelope) error {
	if err := b.checkFault(); err != nil {
		return fmt.Errorf("natsbus: retain %q: %w: %w", e.Topic, broker.ErrStorage, err)
	}
	if err := b.mem.CheckRetained(e); err != nil { // the quotas
		return fmt.Errorf("natsbus: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	key, err := retainedKey(e.Topic)
	if err != nil {
		return err
	}
	var data []byte
	if len(e.Payload) > 0 {
		if data, err = e.MarshalBinary(); err != nil {
			return fmt.Errorf("natsbus: retain %q: %w", e.Topic, err)
		}
	}
	rev, err := b.kv.Put(ctx, key, data)
	if err != nil {
		return fmt.Errorf("natsbus: retain %q: %w: %w", e.Topic, broker.ErrStorage, err)
	}
	b.applyRetained(e.Topic, rev, e)
	return nil
}

// applyRetained makes e (nil or empty: none) topic's retained value at
// KV revision rev, unless this hub holds a later one.
func (b *Bus) applyRetained(topic string, rev uint64, e *broker.Envelope) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	if rev <= b.rrev[topic] {
		return
	}
	b.rrev[topic] = rev
	if e == nil || len(e.Payload) == 0 {
		b.mem.ClearRetained(topic)
		return
	}
	b.mem.SetRetained(e)
}

// watchRetained follows the KV bucket of retained values, every hub's
// writes in the bucket's order, from its current values on (which it
// waits for) until Close; after a cut from NATS the watch resumes and this
// hub catches up.
func (b *Bus) watchRetained(ctx context.Context) error {
	w, err := b.kv.WatchAll(b.ctx)
	if err != nil {
		return fmt.Errorf("natsbus: watch retained: %w", err)
	}
	ready := make(chan struct{})
	b.wg.Add(1)
	go func(ready chan struct{}) {
		defer b.wg.Done()
		defer func() {
			// Stopping deletes the watch's consumer, a request that waits
			// its whole timeout when NATS is away: a hub closing while cut
			// off leaves that to the server (it is ephemeral).
			if b.online() {
				_ = w.Stop()
			}
		}()
		for {
			select {
			case <-b.ctx.Done():
				return
			case ent, ok := <-w.Updates():
				if !ok {
					return
				}
				if ent == nil {
					if ready != nil {
						close(ready)
						ready = nil
					}
					continue
				}
				b.onRetained(ent)
			}
		}
	}(ready)
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsbus: load retained: %w", ctx.Err())
	}
}

// onRetained applies one update of the KV bucket.
func (b *Bus) onRetained(ent jetstream.KeyValueEntry) {
	topic, err := topicOfKey(ent.Key())
	if err != nil {
		b.log.Warn("natsbus: retained value under a foreign key", "key", ent.Key(), "err", err)
		return
	}
	if ent.Operation() != jetstream.KeyValuePut || len(ent.Value()) == 0 {
		b.applyRetained(topic, ent.Revision(), nil)
		return
	}
	e, err := broker.UnmarshalEnvelope(ent.Value())
	if err != nil {
		b.log.Warn("natsbus: undecodable retained value", "key", ent.Key(), "err", err)
		return
	}
	b.applyRetained(topic, ent.Revision(), e)
}

// retainedKey is the KV key of a topic: its subject, with '~' (which KV
// keys may not hold) written '=' (which subjects never hold).
func retainedKey(topic string) (string, error) {
	s, err := broker.TopicToSubject("", topic)
	if err != nil {
		return "", fmt.Errorf("natsbus: %w", err)
	}
	return strings.ReplaceAll(s, "~", "="), nil
}

// topicOfKey is the topic of a KV key made by retainedKey.
func topicOfKey(key string) (string, error) {
	return broker.SubjectToTopic("", strings.ReplaceAll(key, "=", "~"))
}

// kvCold reads the payloads of cold retained values back from the KV
// bucket (Config.ColdRetainedAbove): the in-process part holds their
// stubs only.
type kvCold struct{ b *Bus }

// ReadRetained implements broker.ColdSpool.
func (c kvCold) ReadRetained(ctx context.Context, topic string) (*broker.Envelope, error) {
	key, err := retainedKey(topic)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.b.cfg.PublishTimeout)
	defer cancel()
	ent, err := c.b.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("natsbus: read retained %q: %w", topic, err)
	case len(ent.Value()) == 0:
		return nil, nil
	}
	e, err := broker.UnmarshalEnvelope(ent.Value())
	if err != nil {
		return nil, fmt.Errorf("natsbus: read retained %q: %w", topic, err)
	}
	return e, nil
}

// LoadRetainedHeads implements broker.ColdSpool; the KV watch loads the
// values instead.
func (kvCold) LoadRetainedHeads(context.Context, int) ([]broker.RetainedHead, error) {
	return nil, errors.New("natsbus: retained values come from the KV watch")
}
