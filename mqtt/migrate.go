package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// Buckets of an earlier version of the adapter, which kept sessions
// beside the bus: mochi's client and subscription records and every
// message in flight or queued per client.
const (
	oldBucketClients  = "mqtt.clients"
	oldBucketSubs     = "mqtt.subscriptions"
	oldBucketInflight = "mqtt.inflight"
)

// oldClient is a session record of that version.
type oldClient struct {
	storage.Client
	Role string `json:"role,omitempty"`
}

// oldInflight is an in-flight record of that version; Seq is the order
// the messages were queued in.
type oldInflight struct {
	storage.Message
	Expiry int64 `json:"expiry,omitempty"`
	Seq    int64 `json:"seq,omitempty"`
}

// migrate turns the sessions an earlier version stored beside the bus
// into bus subscriptions, once: each persistent session becomes a durable
// subscription with its filters, its queued messages (in their order)
// and then the envelopes the old feed queue held for it; the old records
// and the feed go.
func (a *Adapter) migrate(ctx context.Context) error {
	st := a.cfg.Sessions
	if st == nil {
		return nil
	}
	imp, ok := a.cfg.Bus.(broker.Importer)
	if !ok {
		return nil
	}
	clients, err := st.KVList(ctx, oldBucketClients)
	if err != nil {
		return fmt.Errorf("mqtt: migrate sessions: %w", err)
	}
	subs, err := st.KVList(ctx, oldBucketSubs)
	if err != nil {
		return fmt.Errorf("mqtt: migrate sessions: %w", err)
	}
	msgs, err := st.KVList(ctx, oldBucketInflight)
	if err != nil {
		return fmt.Errorf("mqtt: migrate sessions: %w", err)
	}
	if len(clients)+len(subs)+len(msgs) == 0 {
		return a.migrateFeed(ctx, imp, nil)
	}
	filters := map[string][]broker.Filter{}
	for _, kv := range subs {
		var recs []storage.Subscription
		if err := json.Unmarshal(kv.Value, &recs); err != nil {
			a.log.Warn("mqtt: migrate: damaged subscriptions, skipped", "client", kv.Key, "err", err)
			continue
		}
		for _, r := range recs {
			f := filterOf(packets.Subscription{Filter: r.Filter, Identifier: r.Identifier, NoLocal: r.NoLocal,
				RetainAsPublished: r.RetainAsPublished, RetainHandling: r.RetainHandling}, min(r.Qos, 2), 5)
			if broker.ValidateFilter(f.Topic) == nil {
				filters[kv.Key] = append(filters[kv.Key], f)
			}
		}
	}
	queued := map[string][]oldInflight{}
	for _, kv := range msgs {
		var r oldInflight
		if err := json.Unmarshal(kv.Value, &r); err != nil || r.Client == "" {
			a.log.Warn("mqtt: migrate: damaged queued message, skipped", "key", kv.Key, "err", err)
			continue
		}
		if r.FixedHeader.Type == packets.Publish {
			queued[r.Client] = append(queued[r.Client], r)
		}
	}
	now := time.Now()
	migrated := map[string][]broker.Filter{}
	for _, kv := range clients {
		var c oldClient
		if err := json.Unmarshal(kv.Value, &c); err != nil || c.ID == "" {
			a.log.Warn("mqtt: migrate: damaged session record, skipped", "client", kv.Key, "err", err)
			continue
		}
		id := subscriberID(c.ID)
		sub, err := a.cfg.Bus.Subscribe(ctx, broker.SubscribeOptions{ID: id, QoS: 2, Durable: true, Specs: filters[c.ID]},
			func(context.Context, *broker.Envelope) error { return errors.New("migrating") })
		if err != nil {
			return fmt.Errorf("mqtt: migrate the session of %q: %w", c.ID, err)
		}
		if err := sub.Detach(); err != nil {
			return fmt.Errorf("mqtt: migrate the session of %q: %w", c.ID, err)
		}
		q := queued[c.ID]
		slices.SortStableFunc(q, func(x, y oldInflight) int { return int(x.Seq - y.Seq) })
		for _, m := range q {
			pk := packets.Packet{FixedHeader: m.FixedHeader, TopicName: m.TopicName, Payload: m.Payload, Properties: packets.Properties{
				CorrelationData: m.Properties.CorrelationData, User: m.Properties.User, ContentType: m.Properties.ContentType,
				ResponseTopic: m.Properties.ResponseTopic}}
			e := envelopeFromPacket(&pk, broker.Origin{Protocol: broker.ProtoMQTT, Node: a.cfg.Node}, time.Unix(m.Created, 0))
			e.ID = broker.NewID()
			e.Expiry = time.Time{}
			if m.Expiry > 0 {
				e.Expiry = time.Unix(m.Expiry, 0)
			}
			if err := imp.Import(ctx, id, e); err != nil {
				return fmt.Errorf("mqtt: migrate the queue of %q: %w", c.ID, err)
			}
		}
		r := sessionRecord{User: string(c.Username), Role: c.Role, Gone: now.Unix()}
		if c.ProtocolVersion == 5 {
			r.Expiry = c.Properties.SessionExpiryInterval
		}
		a.saveRecord(c.ID, r)
		migrated[id] = filters[c.ID]
		a.log.Info("mqtt: migrated a persistent session onto the bus", "client", c.ID, "filters", len(filters[c.ID]), "queued", len(q))
	}
	if err := a.migrateFeed(ctx, imp, migrated); err != nil {
		return err
	}
	for bucket, kvs := range map[string][]store.KV{oldBucketClients: clients, oldBucketSubs: subs, oldBucketInflight: msgs} {
		for _, kv := range kvs {
			if err := st.KVDelete(ctx, bucket, kv.Key); err != nil {
				return fmt.Errorf("mqtt: migrate: drop old record %s %q: %w", bucket, kv.Key, err)
			}
		}
	}
	return nil
}

// migrateFeed hands what the old feed queue held to the migrated sessions
// whose filters match it, in order, and drops the feed.
func (a *Adapter) migrateFeed(ctx context.Context, imp broker.Importer, sessions map[string][]broker.Filter) error {
	es, err := imp.Queued(ctx, DefaultSubscriberID)
	if err != nil || es == nil {
		return err
	}
	for _, e := range es {
		for id, fs := range sessions {
			for _, f := range fs {
				if broker.Match(f.Topic, e.Topic) && min(e.QoS, f.QoS) >= 1 {
					if err := imp.Import(ctx, id, e); err != nil {
						return fmt.Errorf("mqtt: migrate the feed queue: %w", err)
					}
					break
				}
			}
		}
	}
	if err := broker.Forget(ctx, a.cfg.Bus, DefaultSubscriberID); err != nil {
		return fmt.Errorf("mqtt: drop the old feed queue: %w", err)
	}
	a.log.Info("mqtt: the old feed queue was handed to the sessions", "envelopes", len(es))
	return nil
}
