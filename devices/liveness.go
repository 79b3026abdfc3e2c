package devices

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"
)

// remoteNodes records, for each device online on another hub of a
// cluster, which hub that is (the Origin.Node of its presence event), so
// that the devices of a hub that died can be marked offline here.
type remoteNodes struct {
	mu sync.Mutex
	on map[string]string // device id → hub
}

// set records that device id is online on node (online) or no longer
// anywhere else (!online).
func (m *remoteNodes) set(id, node string, online bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !online || node == "" {
		delete(m.on, id)
		return
	}
	if m.on == nil {
		m.on = map[string]string{}
	}
	m.on[id] = node
}

// node returns the hub device id is online on ("" : none known).
func (m *remoteNodes) node(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on[id]
}

// RemoteHubs returns the hubs, other than this one, that devices are
// online on as far as this registry knows, sorted, each once.
func (r *Registry) RemoteHubs() []string {
	r.remote.mu.Lock()
	defer r.remote.mu.Unlock()
	var hubs []string
	for _, n := range r.remote.on {
		if !slices.Contains(hubs, n) {
			hubs = append(hubs, n)
		}
	}
	slices.Sort(hubs)
	return hubs
}

// onAnotherHub reports whether the device is online on another hub: as
// its presence events said, or as the retained presence says when no
// event came yet (a hub that starts while the device is connected
// elsewhere). Without FollowPresence there is no other hub.
func (r *Registry) onAnotherHub(ctx context.Context, id string) bool {
	if !r.following.Load() {
		return false
	}
	if r.remote.node(id) != "" {
		return true
	}
	es, err := r.bus.Retained(ctx, PresenceTopic(id))
	if err != nil || len(es) == 0 {
		return false
	}
	e := es[0]
	if e.Origin.Node == r.node {
		return false
	}
	var p Presence
	if json.Unmarshal(e.Payload, &p) != nil || !p.Online {
		return false
	}
	r.remote.set(id, e.Origin.Node, true)
	return true
}

// ExpireHubs marks offline, in this hub's store, every device that is
// online on a hub not in alive: a hub that died (kill -9, power lost) or
// was cut off from the cluster cannot say that its devices left. A
// command to such a device then answers as to any offline device. When
// announce is set (one hub of the cluster does it), the offline presence
// is also published, so that the retained presence topic says it too.
// It returns the devices it marked.
func (r *Registry) ExpireHubs(ctx context.Context, alive map[string]bool, announce bool) []string {
	r.remote.mu.Lock()
	var gone []string
	dead := map[string]string{}
	for id, node := range r.remote.on {
		if !alive[node] {
			gone = append(gone, id)
			dead[id] = node
		}
	}
	r.remote.mu.Unlock()
	slices.Sort(gone)
	now := time.Now().UTC()
	for _, id := range gone {
		r.remote.set(id, "", false)
		if announce {
			d, err := r.st.GetDevice(ctx, id)
			if err != nil {
				continue
			}
			r.DevicePresence(ctx, id, d.Protocol, false, now)
		} else {
			r.pmu.Lock()
			if err := r.st.SetPresence(ctx, id, false, now); err != nil {
				r.log.Debug("devices: expire presence", "device", id, "err", err)
			}
			r.last[id] = now
			r.pmu.Unlock()
		}
		r.log.Info("devices: offline, its hub is gone", "device", id, "hub", dead[id])
	}
	return gone
}

// RepublishLocal publishes again the presence of the devices online on
// this hub: after this hub was cut off from the cluster long enough for
// the others to mark its devices offline, they learn that they are back.
func (r *Registry) RepublishLocal(ctx context.Context) {
	ds, err := r.st.ListDevices(ctx)
	if err != nil {
		r.log.Warn("devices: republish presence", "err", err)
		return
	}
	now := time.Now()
	for _, d := range ds {
		if d.Online && r.remote.node(d.ID) == "" && r.seen(d.ID) {
			r.DevicePresence(ctx, d.ID, d.Protocol, true, now)
		}
	}
}
