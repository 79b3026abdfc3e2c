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

// PresenceTopic is the topic on which a device's presence is published,
// retained: $hub/devices/{id}/presence.
func PresenceTopic(id string) string { return "$hub/devices/" + id + "/presence" }

// Presence is the JSON published on PresenceTopic.
type Presence struct {
	ID       string    `json:"id"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen"`
	Protocol string    `json:"protocol"`
}

// DevicePresence implements adapters.PresenceSink: an adapter reports that
// a device came online or went offline at the given instant (MQTT
// connect/disconnect/will, XMPP presence, CoAP traffic). Unknown devices are
// ignored; an event older than the newest one applied for the device is
// ignored too, so reordered reports cannot leave a stale state. The store
// is updated and a retained JSON Presence is published at QoS 1.
func (r *Registry) DevicePresence(ctx context.Context, deviceID, protocol string, online bool, at time.Time) {
	if at.IsZero() {
		at = time.Now()
	}
	at = at.UTC()
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if prev, ok := r.last[deviceID]; ok && at.Before(prev) {
		r.log.Debug("devices: stale presence ignored", "device", deviceID, "online", online, "at", at, "newest", prev)
		return
	}
	if _, err := r.st.GetDevice(ctx, deviceID); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			r.log.Warn("devices: presence: lookup failed", "device", deviceID, "err", err)
		}
		return
	}
	if err := r.st.SetPresence(ctx, deviceID, online, at); err != nil {
		r.log.Warn("devices: presence: store failed", "device", deviceID, "online", online, "err", err)
		return
	}
	r.last[deviceID] = at
	r.remote.set(deviceID, "", false) // reported here: not on another hub
	if r.bus == nil {
		return
	}
	p := Presence{ID: deviceID, Online: online, LastSeen: at, Protocol: protocol}
	if err := r.publishPresence(ctx, p); err != nil {
		// The other hubs of a cluster would go on showing the device as
		// it was: RetryPresence sends it again.
		r.unsent[deviceID] = p
		r.log.Warn("devices: presence: publish failed", "device", deviceID, "online", online, "err", err)
		return
	}
	delete(r.unsent, deviceID)
}

// publishPresence publishes p, retained at QoS 1, on its PresenceTopic.
func (r *Registry) publishPresence(ctx context.Context, p Presence) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("devices: presence of %s: %w", p.ID, err)
	}
	e := &broker.Envelope{
		Topic:       PresenceTopic(p.ID),
		Payload:     body,
		ContentType: "application/json",
		QoS:         1,
		Retain:      true,
		Time:        time.Now(),
		Origin:      broker.Origin{Protocol: broker.ProtoHub, ClientID: "devices", Node: r.node},
	}
	if err := r.bus.Publish(ctx, e); err != nil {
		return fmt.Errorf("devices: presence of %s: %w", p.ID, err)
	}
	return nil
}

// RetryPresence publishes again the presence events whose publish
// failed (a QoS 1 publish refused while a clustered bus elects a stream
// leader, or while this hub is cut off), unless a newer event for the
// device came meanwhile. It returns how many are still unsent. The
// cluster heartbeat calls it every beat.
func (r *Registry) RetryPresence(ctx context.Context) int {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	for id, p := range r.unsent {
		if last, ok := r.last[id]; ok && last.After(p.LastSeen) {
			delete(r.unsent, id) // superseded
			continue
		}
		if err := r.publishPresence(ctx, p); err != nil {
			r.log.Debug("devices: presence: publish failed again", "device", id, "err", err)
			continue
		}
		delete(r.unsent, id)
		r.log.Info("devices: presence published after a failure", "device", id, "online", p.Online)
	}
	return len(r.unsent)
}

// ResetPresence marks every device that the store still shows online as
// offline, as of now, and publishes that. A hub that starts has no device
// connected yet; without this, devices online when the previous run ended
// (a crash, kill -9) would stay online until they reconnect and leave.
// cmd/hub calls it once before starting the adapters. It assumes this hub
// is the only one reporting presence for the devices of its store; on a
// clustered bus (FollowPresence), a device online on another hub is left
// as it is.
func (r *Registry) ResetPresence(ctx context.Context) error {
	ds, err := r.st.ListDevices(ctx)
	if err != nil {
		return fmt.Errorf("devices: reset presence: %w", err)
	}
	now := time.Now()
	for _, d := range ds {
		if d.Online && !r.onAnotherHub(ctx, d.ID) {
			r.DevicePresence(ctx, d.ID, d.Protocol, false, now)
		}
	}
	return nil
}

// seen reports whether a presence event for the device reached this
// registry since it was made: a device the store shows online without one
// is a leftover of an earlier run.
func (r *Registry) seen(id string) bool {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	_, ok := r.last[id]
	return ok
}
