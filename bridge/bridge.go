package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Timing of the upstream link.
const (
	connectTimeout = 10 * time.Second
	publishTimeout = 10 * time.Second
	minBackoff     = 500 * time.Millisecond
	maxBackoff     = 30 * time.Second
)

// errNotConnected is returned to the bus while the upstream is away, so a
// durable QoS >= 1 envelope stays queued.
var errNotConnected = errors.New("upstream not connected")

// Options are what New needs.
type Options struct {
	// Config is the bridge's configuration.
	Config Config
	// Bus is the hub's bus.
	Bus broker.Bus
	// Node is stamped into Origin.Node of envelopes from upstream
	// (broker.NodeID() when empty); it must be the node the bus uses.
	Node string
	// Logger receives the bridge's logs (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the bridge's metrics (nil: no metrics).
	Registerer prometheus.Registerer
	// Lease, when set, runs the bridge only while this hub holds it
	// (lease.go): in a cluster, one hub at a time.
	Lease LeaseFunc
}

// Bridge links the bus to one upstream MQTT broker. It implements
// adapters.Adapter and adapters.HealthChecker.
type Bridge struct {
	cfg     Config
	bus     broker.Bus
	node    string
	log     *slog.Logger
	reg     prometheus.Registerer
	tls     *tls.Config
	remote  string
	in, out []Rule
	echo    *echoFilter
	metrics *metrics

	mu      sync.Mutex
	client  mqtt.Client
	sub     broker.Subscription
	down    chan struct{} // closed when the current connection is lost
	up      bool          // connected and subscribed upstream
	lastErr error
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
	lost    chan struct{}

	leased leaseState // lease.go
}

// New validates the options and returns a bridge; Start connects it.
func New(o Options) (*Bridge, error) {
	if o.Bus == nil {
		return nil, fmt.Errorf("bridge %q: Bus: required", o.Config.Name)
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	tc, err := o.Config.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("bridge %q: %w", o.Config.Name, err)
	}
	u, _ := url.Parse(o.Config.URL) // validated
	b := &Bridge{
		cfg: o.Config, bus: o.Bus, node: o.Node, log: o.Logger, reg: o.Registerer, tls: tc,
		remote: u.Host, in: o.Config.In, out: o.Config.Out, echo: newEchoFilter(),
		lost: make(chan struct{}, 1), leased: leaseState{run: o.Lease},
	}
	if b.node == "" {
		b.node = broker.NodeID()
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("bridge", o.Config.Name)
	b.metrics = newMetrics(b)
	return b, nil
}

// Name is "bridge:" + the bridge's name.
func (b *Bridge) Name() string { return SubscriberID(b.cfg.Name) }

// SubscriberID is the id of the durable bus subscription of the bridge
// named name ("bridge:"+name), which is also its adapter name.
func SubscriberID(name string) string { return "bridge:" + name }

// Forget discards the durable bus subscription, and the envelopes queued
// in it, of a bridge named name that is no longer configured. Without it
// a removed bridge's queue keeps collecting QoS >= 1 envelopes.
func Forget(ctx context.Context, bus broker.Bus, name string) error {
	if err := broker.Forget(ctx, bus, SubscriberID(name)); err != nil {
		return fmt.Errorf("bridge %q: forget: %w", name, err)
	}
	return nil
}

// Healthy returns nil while the bridge is connected and subscribed
// upstream.
func (b *Bridge) Healthy() error {
	if err := b.standby(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.up {
		return nil
	}
	if b.lastErr != nil {
		return fmt.Errorf("bridge %q: not connected to %s: %w", b.cfg.Name, b.cfg.URL, b.lastErr)
	}
	return fmt.Errorf("bridge %q: not connected to %s", b.cfg.Name, b.cfg.URL)
}

// Start subscribes the bus for the out rules and connects to the upstream
// in the background, retrying with back-off: an upstream that is down does
// not fail Start.
func (b *Bridge) Start(ctx context.Context) error {
	if b.leased.run != nil {
		return b.startLeased()
	}
	return b.activate(ctx)
}

// activate is Start without a lease.
func (b *Bridge) activate(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return fmt.Errorf("bridge %q: already started", b.cfg.Name)
	}
	if err := b.metrics.register(b.reg); err != nil {
		return err
	}
	b.client = mqtt.NewClient(b.clientOptions())
	if len(b.out) > 0 {
		var filters []string
		var qos byte
		for _, r := range b.out {
			if f := r.LocalFilter(); !slices.Contains(filters, f) {
				filters = append(filters, f)
			}
			qos = max(qos, b.cfg.ruleQoS(r))
		}
		sub, err := b.bus.Subscribe(ctx, broker.SubscribeOptions{Protocol: broker.ProtoBridge,
			ID: b.Name(), Filters: filters, QoS: qos, Durable: true,
		}, b.onEnvelope)
		if err != nil {
			b.metrics.unregister(b.reg)
			return fmt.Errorf("bridge %q: subscribe the bus: %w", b.cfg.Name, err)
		}
		b.sub = sub
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done, b.started = cancel, make(chan struct{}), true
	go b.run(runCtx)
	return nil
}

// Stop detaches the bus subscription (its durable queue keeps collecting
// for the next start), disconnects from the upstream and waits for the
// bridge's goroutines.
func (b *Bridge) Stop(ctx context.Context) error {
	if b.leased.run != nil {
		return b.stopLeased(ctx)
	}
	return b.deactivate(ctx)
}

// deactivate is Stop without a lease.
func (b *Bridge) deactivate(ctx context.Context) error {
	b.mu.Lock()
	if !b.started {
		b.mu.Unlock()
		return nil
	}
	b.started = false
	sub, cancel, done := b.sub, b.cancel, b.done
	b.sub = nil
	b.mu.Unlock()
	cancel()
	var err error
	if sub != nil {
		if derr := sub.Detach(); derr != nil {
			err = fmt.Errorf("bridge %q: detach: %w", b.cfg.Name, derr)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("bridge %q: stop: %w", b.cfg.Name, ctx.Err()))
	}
	b.metrics.unregister(b.reg)
	return err
}

func (b *Bridge) clientOptions() *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(b.cfg.URL).
		SetClientID(b.cfg.clientID()).
		SetCleanSession(b.cfg.CleanSession).
		SetKeepAlive(cmp(b.cfg.KeepAlive, DefaultKeepAlive)).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(publishTimeout).
		SetProtocolVersion(4).
		// The bridge owns reconnection (run) so that Stop ends every
		// goroutine at once; paho's own retry sleeps cannot be interrupted.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		// An upstream message is acknowledged once the bus has it.
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(b.onMessage).
		SetConnectionLostHandler(b.onLost)
	if b.cfg.Username != "" {
		o.SetUsername(b.cfg.Username).SetPassword(b.cfg.Password)
	}
	if b.tls != nil {
		o.SetTLSConfig(b.tls)
	}
	return o
}

func cmp(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// run connects, subscribes upstream, waits for the connection to be lost
// and starts again with back-off, until ctx is done.
func (b *Bridge) run(ctx context.Context) {
	defer close(b.done)
	defer b.client.Disconnect(250)
	backoff := minBackoff
	for {
		err := b.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.setDown(err)
			b.log.Warn("bridge: upstream connect failed", "url", redactedURL(b.cfg.URL), "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		b.log.Info("bridge: connected upstream", "url", redactedURL(b.cfg.URL))
		select {
		case <-b.lost:
		case <-ctx.Done():
			return
		}
	}
}

// connect opens a connection and subscribes the in rules.
func (b *Bridge) connect(ctx context.Context) error {
	down := make(chan struct{})
	b.mu.Lock()
	b.down = down
	b.mu.Unlock()
	select { // a loss signal from an earlier connection is stale now
	case <-b.lost:
	default:
	}
	tok := b.client.Connect()
	if err := waitToken(ctx, tok, down, connectTimeout+time.Second); err != nil {
		b.client.Disconnect(0)
		return fmt.Errorf("connect: %w", err)
	}
	if len(b.in) > 0 {
		filters := map[string]byte{}
		for _, r := range b.in {
			f := r.RemoteFilter()
			filters[f] = max(filters[f], b.cfg.ruleQoS(r))
		}
		tok := b.client.SubscribeMultiple(filters, nil)
		err := waitToken(ctx, tok, down, publishTimeout)
		if err == nil {
			if st, ok := tok.(*mqtt.SubscribeToken); ok {
				for f, rc := range st.Result() {
					if rc > 2 {
						err = errors.Join(err, fmt.Errorf("upstream refused the subscription to %q (code %#x)", f, rc))
					}
				}
			}
		}
		if err != nil {
			b.client.Disconnect(0)
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	b.mu.Lock()
	b.up, b.lastErr = true, nil
	b.mu.Unlock()
	b.metrics.connected.Set(1)
	return nil
}

func (b *Bridge) setDown(err error) {
	b.mu.Lock()
	b.up, b.lastErr = false, err
	b.mu.Unlock()
	b.metrics.connected.Set(0)
}

// onLost is paho's connection-lost handler.
func (b *Bridge) onLost(_ mqtt.Client, err error) {
	b.mu.Lock()
	if b.down != nil {
		close(b.down)
		b.down = nil
	}
	b.mu.Unlock()
	b.setDown(err)
	b.log.Warn("bridge: upstream connection lost", "url", redactedURL(b.cfg.URL), "err", err)
	select {
	case b.lost <- struct{}{}:
	default:
	}
}

// waitToken waits for tok, the connection's loss, ctx or the timeout.
func waitToken(ctx context.Context, tok mqtt.Token, down <-chan struct{}, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-down:
		return errNotConnected
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("timed out")
	}
}

// isOwn reports whether e was published by this bridge (the loop check).
// Envelopes of other bridges go out, so that bridges can chain.
func (b *Bridge) isOwn(e *broker.Envelope) bool {
	return e.Origin.Protocol == broker.ProtoBridge && e.Origin.ClientID == b.cfg.Name && e.Origin.Node == b.node
}

// onEnvelope publishes a bus envelope upstream. An error leaves a durable
// QoS >= 1 envelope queued on the bus, which tries it again.
func (b *Bridge) onEnvelope(ctx context.Context, e *broker.Envelope) error {
	if b.isOwn(e) {
		return nil
	}
	var remote string
	var rule Rule
	found := false
	for _, r := range b.out {
		if remote, found = r.ToRemote(e.Topic); found {
			rule = r
			break
		}
	}
	if !found {
		return nil
	}
	b.mu.Lock()
	up, down := b.up, b.down
	b.mu.Unlock()
	if !up || down == nil {
		b.metrics.outErrors.Inc()
		return fmt.Errorf("bridge %q: %w", b.cfg.Name, errNotConnected)
	}
	qos := min(e.QoS, b.cfg.ruleQoS(rule))
	echo := b.echoExpected(remote)
	if echo {
		b.echo.add(remote, e.Payload)
	}
	tok := b.client.Publish(remote, qos, e.Retain, e.Payload)
	if err := waitToken(ctx, tok, down, publishTimeout); err != nil {
		if echo {
			b.echo.take(remote, e.Payload)
		}
		b.metrics.outErrors.Inc()
		return fmt.Errorf("bridge %q: publish %q upstream: %w", b.cfg.Name, remote, err)
	}
	b.metrics.out.Inc()
	return nil
}

// echoExpected reports whether the upstream will send a message on remote
// back to the bridge (an in rule covers it).
func (b *Bridge) echoExpected(remote string) bool {
	for _, r := range b.in {
		if broker.Match(r.RemoteFilter(), remote) {
			return true
		}
	}
	return false
}

// onMessage takes a message from upstream onto the bus and acknowledges it
// once the bus has it. A message the bus cannot take for now is left
// unacknowledged: the upstream sends it again on the next connection.
func (b *Bridge) onMessage(_ mqtt.Client, m mqtt.Message) {
	topic, payload := m.Topic(), m.Payload()
	if b.echo.take(topic, payload) {
		b.metrics.echoes.Inc()
		m.Ack()
		return
	}
	var local string
	var rule Rule
	found := false
	for _, r := range b.in {
		if local, found = r.ToLocal(topic); found {
			rule = r
			break
		}
	}
	if !found {
		b.metrics.inDropped.Inc()
		b.log.Debug("bridge: upstream message matches no in rule", "topic", topic)
		m.Ack()
		return
	}
	e := &broker.Envelope{
		Topic:   local,
		Payload: append([]byte(nil), payload...),
		QoS:     min(m.Qos(), b.cfg.ruleQoS(rule)),
		Retain:  m.Retained(),
		Origin:  broker.Origin{Protocol: broker.ProtoBridge, ClientID: b.cfg.Name, Remote: b.remote, Node: b.node},
	}
	wait := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		err := b.bus.Publish(ctx, e)
		cancel()
		switch {
		case err == nil:
			b.metrics.in.Inc()
			m.Ack()
			return
		case errors.Is(err, broker.ErrStorage) && attempt < 4:
			time.Sleep(wait)
			wait *= 2
			continue
		case errors.Is(err, broker.ErrStorage), errors.Is(err, broker.ErrClosed), errors.Is(err, context.DeadlineExceeded):
			b.metrics.inErrors.Inc()
			b.log.Warn("bridge: bus refused an upstream message; left unacknowledged", "topic", topic, "err", err)
			return
		default:
			b.metrics.inDropped.Inc()
			b.log.Warn("bridge: upstream message dropped", "topic", topic, "local", local, "err", err)
			m.Ack()
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var (
	_ adapters.Adapter       = (*Bridge)(nil)
	_ adapters.HealthChecker = (*Bridge)(nil)
)

// redactedURL is u with any password in it replaced by "xxxxx", for logs.
func redactedURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparsable url)"
	}
	return pu.Redacted()
}
