package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hubsmith/hub/cluster"
	"github.com/hubsmith/hub/store"
	"github.com/hubsmith/hub/xmpp"
)

// xmppBuckets are the cluster's KV buckets of the XMPP adapter's records:
// rosters and offline messages (one group of keys per user), topic,
// PubSub and template-JID subscriptions.
var xmppBuckets = []string{"xmpp-roster", "xmpp-offline", "xmpp-topics", "xmpp-jids", "xmpp-pubsub"}

// xmppShared is the XMPP adapter's store on a hub of a cluster: users and
// credentials from the hub's store, the adapter's buckets in the cluster's
// KV, so that a user logging in on any hub finds the same roster, offline
// messages and topic subscriptions.
type xmppShared struct {
	*store.Store
	kv *cluster.KV
}

var (
	_ xmpp.Store   = xmppShared{}
	_ xmpp.Claimer = xmppShared{}
)

// split maps a store bucket of the adapter to a cluster bucket and group:
// "xmpp-roster:alice" is group "alice" of "xmpp-roster"; the subscription
// buckets are one group ("") each. ok is false for any other bucket.
func (xmppShared) split(bucket string) (kvBucket, group string, ok bool) {
	for _, b := range xmppBuckets {
		if bucket == b {
			return b, "", true
		}
		if g, found := strings.CutPrefix(bucket, b+":"); found {
			return b, g, true
		}
	}
	return "", "", false
}

// KVPut stores in the cluster's KV for the adapter's buckets.
func (x xmppShared) KVPut(ctx context.Context, bucket, key string, value []byte) error {
	if b, g, ok := x.split(bucket); ok {
		return x.kv.KVPutIn(ctx, b, g, key, value)
	}
	return x.Store.KVPut(ctx, bucket, key, value)
}

// KVGet reads from the cluster's KV for the adapter's buckets.
func (x xmppShared) KVGet(ctx context.Context, bucket, key string) ([]byte, error) {
	if b, g, ok := x.split(bucket); ok {
		return x.kv.KVGetIn(ctx, b, g, key)
	}
	return x.Store.KVGet(ctx, bucket, key)
}

// KVDelete removes from the cluster's KV for the adapter's buckets.
func (x xmppShared) KVDelete(ctx context.Context, bucket, key string) error {
	if b, g, ok := x.split(bucket); ok {
		return x.kv.KVDeleteIn(ctx, b, g, key)
	}
	return x.Store.KVDelete(ctx, bucket, key)
}

// KVList lists from the cluster's KV for the adapter's buckets.
func (x xmppShared) KVList(ctx context.Context, bucket string) ([]store.KV, error) {
	if b, g, ok := x.split(bucket); ok {
		return x.kv.KVListIn(ctx, b, g)
	}
	return x.Store.KVList(ctx, bucket)
}

// KVClaim removes key once across the cluster (xmpp.Claimer).
func (x xmppShared) KVClaim(ctx context.Context, bucket, key string) (bool, error) {
	if b, g, ok := x.split(bucket); ok {
		return x.kv.KVClaimIn(ctx, b, g, key)
	}
	if _, err := x.Store.KVGet(ctx, bucket, key); errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, x.Store.KVDelete(ctx, bucket, key)
}

// validateXMPPCluster checks the XMPP adapter's cluster settings.
func (c *Config) validateXMPPCluster() error {
	if c.XMPP.ClusterLiveness < 0 {
		return fmt.Errorf("xmpp.cluster_liveness %v: must not be negative", c.XMPP.ClusterLiveness)
	}
	return nil
}

// xmppStore is the XMPP adapter's store: shared through the cluster's KV
// when the bus runs over NATS, else the hub's store.
func (h *Hub) xmppStore() xmpp.Store {
	if h.nats != nil && h.nats.kv != nil {
		return xmppShared{Store: h.Store, kv: h.nats.kv}
	}
	return h.Store
}

// xmppCluster links the XMPP adapter to the other hubs (zero without NATS).
func (h *Hub) xmppCluster() xmpp.Cluster {
	if h.nats == nil {
		return xmpp.Cluster{}
	}
	return xmpp.Cluster{Conn: h.nats.nc, Prefix: h.nats.prefix, Node: h.cfg.Node, Liveness: h.cfg.XMPP.ClusterLiveness}
}
