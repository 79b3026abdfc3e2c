package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/cluster"
)

// clusterShared is what a hub on NATS runs beside the bus to act as one
// with the other hubs: the principal replicator and the liveness
// heartbeat (cluster_liveness.go).
type clusterShared struct {
	principals   *cluster.Principals
	stopLiveness func()
	leases       *cluster.Leases
}

func (c *clusterShared) stop() {
	if c.stopLiveness != nil {
		c.stopLiveness()
	}
	if c.principals != nil {
		c.principals.Stop()
	}
}

// startShared starts, on a NATS bus, the sharing of users, devices, ACL
// rules and tokens with the other hubs (cluster.Principals), and the
// heartbeat that tells the hubs which of them are alive; it returns once
// this hub's store and the cluster agree, before any listener opens.
func (h *Hub) startShared(ctx context.Context) error {
	if h.nats == nil {
		return nil
	}
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, clusterStartTimeout)
	defer cancel()
	// Each new replicated bucket waits for its leader: make them side by
	// side.
	var wg sync.WaitGroup
	var lerr, verr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.nats.shared.leases, lerr = cluster.NewLeases(sctx, cluster.LeasesConfig{JS: h.nats.js, Prefix: h.nats.prefix,
			Replicas: h.nats.replicas, Node: h.cfg.Node, Logger: h.log.With("component", "cluster")})
	}()
	go func() {
		defer wg.Done()
		verr = h.startLiveness(sctx)
	}()
	p, err := cluster.StartPrincipals(sctx, cluster.PrincipalsConfig{
		JS: h.nats.js, Prefix: h.nats.prefix, Replicas: h.nats.replicas, Store: h.Store,
		Applied: h.principalApplied, Logger: h.log.With("component", "cluster"),
	})
	wg.Wait()
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	h.nats.shared.principals = p
	if err := errors.Join(lerr, verr); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	h.log.Info("cluster: principals, leases and liveness shared", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// revokeTimeout bounds the revocation of a principal another hub deleted.
const revokeTimeout = 10 * time.Second

// principalApplied follows a change another hub made to a principal: the
// cached access decisions go, and a removed principal's sessions end here
// as they did on the hub it was deleted on.
func (h *Hub) principalApplied(ctx context.Context, name string, removed bool) {
	h.Auth.Forget(name)
	if removed {
		rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
		defer cancel()
		h.Revoke(rctx, name)
	}
}

// bridgeLease is the lease a bridge runs under on a NATS bus, so that a
// bridge configured on several hubs of a cluster runs on one of them at
// a time (cluster.Leases); nil on the in-process bus.
func (h *Hub) bridgeLease() bridge.LeaseFunc {
	if h.nats == nil {
		return nil
	}
	return func(ctx context.Context, name string, held func(context.Context)) {
		if l := h.nats.shared.leases; l != nil {
			l.Run(ctx, name, held)
		}
	}
}

// NATSNode is the NATS server this hub embeds (cluster:), nil without
// one: for tests and tools that stop the node alone, as if its machine's
// NATS died while the hub's listeners stay up.
func (h *Hub) NATSNode() *cluster.Node {
	if h.nats == nil {
		return nil
	}
	return h.nats.node
}
