package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// FollowPresence keeps this registry's device presence in step with what
// the other hubs of a cluster publish on PresenceTopic, so that a device
// online on another hub counts as online here (and its commands, sent
// over the shared bus, reach it there). Events this registry published
// itself, and devices this hub does not know, are skipped; the hub a
// device is on is the event's Origin.Node. The
// subscription ends with the bus.
func (r *Registry) FollowPresence(ctx context.Context) (broker.Subscription, error) {
	if r.bus == nil {
		return nil, errors.New("devices: follow presence: no bus")
	}
	sub, err := r.bus.Subscribe(ctx, broker.SubscribeOptions{
		ID:           "devices-presence-" + r.node,
		Filters:      []string{PresenceTopic("+")},
		SendRetained: true,
		Protocol:     broker.ProtoHub,
	}, r.remotePresence)
	if err != nil {
		return nil, fmt.Errorf("devices: follow presence: %w", err)
	}
	r.following.Store(true)
	return sub, nil
}

// remotePresence applies a presence event of another hub.
func (r *Registry) remotePresence(ctx context.Context, e *broker.Envelope) error {
	if e.Origin.Protocol != broker.ProtoHub || e.Origin.Node == r.node {
		return nil
	}
	var p Presence
	if err := json.Unmarshal(e.Payload, &p); err != nil || PresenceTopic(p.ID) != e.Topic {
		r.log.Debug("devices: presence event not understood", "topic", e.Topic, "err", err)
		return nil
	}
	at := p.LastSeen.UTC()
	if at.IsZero() {
		at = time.Now().UTC()
	}
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if prev, ok := r.last[p.ID]; ok && at.Before(prev) {
		return nil
	}
	if _, err := r.st.GetDevice(ctx, p.ID); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			r.log.Warn("devices: remote presence: lookup failed", "device", p.ID, "err", err)
		}
		return nil
	}
	if err := r.st.SetPresence(ctx, p.ID, p.Online, at); err != nil {
		r.log.Warn("devices: remote presence: store failed", "device", p.ID, "err", err)
		return nil
	}
	r.last[p.ID] = at
	r.remote.set(p.ID, e.Origin.Node, p.Online) // liveness.go
	r.log.Debug("devices: presence from another hub", "device", p.ID, "online", p.Online, "hub", e.Origin.Node)
	return nil
}
