package coap

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/hubsmith/hub/broker"
)

// connState is what the adapter keeps per CoAP endpoint (a UDP remote
// address or a DTLS session).
type connState struct {
	cc     *udpClient.Conn
	secure bool
	device string // PSK identity of a DTLS session
	remote string

	requests atomic.Uint64 // requests served, for recycling (see handle)
	recycle  atomic.Bool   // drop this endpoint's state at the next check
	// verified is set once the endpoint has shown that it receives what
	// is sent to its address (see routability.go).
	verified atomic.Bool
	// pingMu serialises the routability check of an unverified endpoint
	// (checkRoutability); unreachable records that it failed.
	pingMu      sync.Mutex
	unreachable bool

	sendMu sync.Mutex // notifications go out one at a time (NSTART = 1)

	mu  sync.Mutex
	obs map[string]*observation // by token
	// uploads are the block-wise uploads to /ps in reassembly, by path.
	uploads map[string]*upload
	closed  bool
}

func (a *Adapter) newConn(cc *udpClient.Conn, secure bool) {
	cs := &connState{cc: cc, secure: secure, remote: cc.RemoteAddr().String(), obs: make(map[string]*observation), uploads: make(map[string]*upload)}
	if secure {
		if dc, ok := cc.NetConn().(*piondtls.Conn); ok {
			if st, ok := dc.ConnectionState(); ok {
				cs.device = string(st.IdentityHint)
			}
		}
	}
	cs.verified.Store(a.trusted(secure, cs.remote))
	a.mu.Lock()
	a.conns[cc] = cs
	sink := a.presence
	online := false
	if cs.device != "" {
		a.online[cs.device]++
		online = a.online[cs.device] == 1
	}
	a.mu.Unlock()
	a.metrics.conns.Inc()
	cc.AddOnClose(func() { a.connClosed(cs) })
	if online && sink != nil {
		sink.DevicePresence(a.ctx, cs.device, broker.ProtoCoAP, true, time.Now())
	}
}

// connClosed forgets a connection and ends its observations; it runs
// once per connection.
func (a *Adapter) connClosed(cs *connState) {
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return
	}
	cs.closed = true
	obs := make([]*observation, 0, len(cs.obs))
	for _, o := range cs.obs {
		obs = append(obs, o)
	}
	cs.mu.Unlock()
	for _, o := range obs {
		o.end("connection closed", true)
	}
	a.dropUploads(cs)
	a.mu.Lock()
	delete(a.conns, cs.cc)
	sink := a.presence
	offline := false
	if cs.device != "" {
		a.online[cs.device]--
		if a.online[cs.device] <= 0 {
			delete(a.online, cs.device)
			offline = true
		}
	}
	a.mu.Unlock()
	a.metrics.conns.Dec()
	if offline && sink != nil {
		sink.DevicePresence(context.Background(), cs.device, broker.ProtoCoAP, false, time.Now())
	}
}

func (a *Adapter) state(cc *udpClient.Conn) *connState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns[cc]
}

// idleMonitor closes an endpoint's state after IdleTimeout without traffic,
// unless it observes something (an observer is silent by design).
type idleMonitor struct {
	a    *Adapter
	mu   sync.Mutex
	last time.Time
}

func (a *Adapter) inactivityMonitor() udpClient.InactivityMonitor {
	return &idleMonitor{a: a, last: time.Now()}
}

func (m *idleMonitor) Notify() {
	m.mu.Lock()
	m.last = time.Now()
	m.mu.Unlock()
}

// CheckInactivity runs periodically and, for plain UDP, before each
// datagram of the endpoint is routed: closing here makes go-coap route
// the datagram to a fresh endpoint state.
func (m *idleMonitor) CheckInactivity(now time.Time, cc *udpClient.Conn) {
	cs := m.a.state(cc)
	if cs != nil && cs.recycle.Load() && !cs.observing() {
		_ = cc.Close()
		return
	}
	timeout := m.a.cfg.IdleTimeout
	if cs != nil && !cs.secure {
		timeout = m.a.cfg.EndpointIdleTimeout
	}
	m.mu.Lock()
	idle := now.Sub(m.last) > timeout
	m.mu.Unlock()
	if !idle {
		return
	}
	if cs != nil && cs.observing() {
		return
	}
	_ = cc.Close()
}

func (cs *connState) observing() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.obs) > 0
}
