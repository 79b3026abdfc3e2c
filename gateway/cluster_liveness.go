package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Hub liveness in a cluster: every hub puts its name into the KV bucket
// hub_nodes each heartbeat, and the bucket forgets an entry HubTTL
// after its last put. A hub whose entry is gone (killed, cut off from
// NATS) has its devices marked offline by the others, within HubTTL
// plus one heartbeat.
const (
	// Heartbeat is how often a hub says it is alive.
	Heartbeat = time.Second
	// HubTTL is how long a hub counts as alive after its last heartbeat.
	HubTTL = 3 * Heartbeat
)

// nodesBucket is the liveness bucket's name after the prefix.
const nodesBucket = "nodes"

func nodeKey(node string) string { return "n" + base64.RawURLEncoding.EncodeToString([]byte(node)) }

// startLiveness makes the bucket, says this hub is alive and starts the
// heartbeat; it ends with ctx.
func (h *Hub) startLiveness(ctx context.Context) error {
	var kv jetstream.KeyValue
	var err error
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err = h.nats.js.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{Bucket: h.nats.prefix + "_" + nodesBucket,
			History: 1, TTL: HubTTL, Storage: jetstream.MemoryStorage, Replicas: max(h.nats.replicas, 1),
			Description: "hub liveness: one key per live hub"})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: liveness bucket: %w", err)
		case <-time.After(wait):
		}
	}
	if _, err := kv.Put(ctx, nodeKey(h.cfg.Node), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return fmt.Errorf("cluster: liveness: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	h.nats.shared.stopLiveness = func() { cancel(); <-done }
	go func() {
		defer close(done)
		h.heartbeat(runCtx, kv)
	}()
	return nil
}

// heartbeat renews this hub's entry and expires the devices of hubs
// whose entry is gone. When this hub finds its own entry gone (it was
// cut off for longer than HubTTL), it publishes its devices' presence
// again, since the others marked them offline.
func (h *Hub) heartbeat(ctx context.Context, kv jetstream.KeyValue) {
	tick := time.NewTicker(Heartbeat)
	defer tick.Stop()
	me := nodeKey(h.cfg.Node)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		octx, cancel := context.WithTimeout(ctx, Heartbeat)
		_, gerr := kv.Get(octx, me)
		_, perr := kv.Put(octx, me, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
		var keys []string
		var lerr error
		if perr == nil {
			var l jetstream.KeyLister
			if l, lerr = kv.ListKeys(octx); lerr == nil {
				for k := range l.Keys() {
					keys = append(keys, k)
				}
			}
		}
		cancel()
		if perr != nil || lerr != nil {
			// Cut off: nothing can be told about the others.
			h.log.Debug("cluster: heartbeat", "put", perr, "list", lerr)
			continue
		}
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			h.log.Warn("cluster: this hub was taken for gone; publishing its devices' presence again")
			h.Devices.RepublishLocal(ctx)
		}
		alive := map[string]bool{}
		for _, k := range keys {
			rest, ok := strings.CutPrefix(k, "n")
			if b, err := base64.RawURLEncoding.DecodeString(rest); ok && err == nil {
				alive[string(b)] = true
			}
		}
		names := make([]string, 0, len(alive))
		for n := range alive {
			names = append(names, n)
		}
		slices.Sort(names)
		// The first live hub by name announces the expiry once for all.
		announce := len(names) > 0 && names[0] == h.cfg.Node
		confirmAlive(ctx, kv, alive, h.Devices.RemoteHubs())
		h.Devices.ExpireHubs(ctx, alive, announce)
		// Presence events the bus refused (a stream electing its leader
		// after a node died) would leave the others with a stale view.
		rctx, rcancel := context.WithTimeout(ctx, 2*Heartbeat)
		h.Devices.RetryPresence(rctx)
		rcancel()
	}
}

// confirmAlive adds to alive each of hubs whose entry a direct read still
// finds, or whose entry cannot be read now. A key listing is no proof
// that a hub is gone: it is an ordered consumer over the bucket, and
// misses a key whose entry another Put replaces while it runs (with
// three hubs beating once a second, live hubs were taken for gone and
// their devices marked offline). Only a read that finds no entry is.
func confirmAlive(ctx context.Context, kv jetstream.KeyValue, alive map[string]bool, hubs []string) {
	for _, n := range hubs {
		if alive[n] {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, Heartbeat)
		_, err := kv.Get(gctx, nodeKey(n))
		cancel()
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			alive[n] = true // there, or cannot tell now: ask again next beat
		}
	}
}
