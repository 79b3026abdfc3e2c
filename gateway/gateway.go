package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/bridge"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/coap"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/history"
	"github.com/hubsmith/hub/mqtt"
	"github.com/hubsmith/hub/rest"
	"github.com/hubsmith/hub/store"
	"github.com/hubsmith/hub/xmpp"
)

// Hub is a running (or ready to run) hub: the store, the bus, the device
// registry and the enabled adapters.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	Store    *store.Store
	Bus      broker.Bus
	Devices  *devices.Registry
	Auth     *adapters.Auth
	Registry *prometheus.Registry
	// Files is the file store (nil with files.dir off).
	Files *files.Store

	adapters []adapters.Adapter
	certs    certStore
	// source reads the configuration again, for Reload (SetConfigSource).
	source func() (Config, error)
	// reloadMu serialises reloads.
	reloadMu sync.Mutex
	nats     *natsHub // the NATS the bus runs over (nil: in-process bus)

	mu         sync.Mutex
	started    []adapters.Adapter
	coreClosed bool

	ov overviewState // overview.go
}

// New opens the store, builds the bus and every enabled adapter. Nothing
// listens until Start.
func New(cfg Config, log *slog.Logger) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Node == "" {
		cfg.Node = broker.NodeID()
	}
	h := &Hub{cfg: cfg, log: log, Registry: prometheus.NewRegistry()}
	h.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			h.closeCore()
		}
	}()
	syncEvery, err := store.ParseSyncInterval(cfg.SyncInterval)
	if err != nil {
		return nil, fmt.Errorf("config: sync_interval %w", err)
	}
	st, err := store.OpenWith(context.Background(), cfg.DataDir, store.Options{SyncInterval: syncEvery})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	h.Store = st
	if n := cfg.Security.SCRAMIterations; n != 0 {
		if err := st.SetSCRAMIterations(n); err != nil {
			return nil, fmt.Errorf("config: security.scram_iterations: %w", err)
		}
	}
	st.SetLogger(log.With("component", "store"))
	h.Registry.MustRegister(st.Collector())
	var bus broker.Bus
	nb, nh, err := openNATS(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	if nb != nil {
		bus, h.nats = nb, nh
	} else if bus, err = broker.NewMemory(broker.MemoryConfig{Spool: st, Node: cfg.Node, Logger: log, WriteThrough: cfg.WriteThrough,
		MaxQueued: cfg.MaxQueued, MaxQueuedBytes: cfg.MaxQueuedBytes, QueuePolicy: cfg.QueuePolicy,
		Quotas: cfg.Limits.Storage.quotas(cfg.DataDir), ColdRetainedAbove: pick(cfg.Limits.Storage.RetainedColdAbove, DefaultRetainedColdAbove)}); err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	h.Bus = bus
	h.Registry.MustRegister(busCollector{bus}, quotaCollector{h})
	h.Auth = adapters.NewAuth(st, cfg.ACL)
	if err := h.Auth.SetPeerPolicy(cfg.XMPP.ComponentPeers); err != nil {
		return nil, fmt.Errorf("config: xmpp.component_peers: %w", err)
	}
	h.setupLoginGuard()
	h.setupLimits()
	h.warnClearText()
	h.Devices, err = devices.New(devices.Config{Store: st, Bus: bus, Logger: log, Node: cfg.Node})
	if err != nil {
		return nil, err
	}
	if h.nats != nil {
		if _, err := h.Devices.FollowPresence(context.Background()); err != nil {
			return nil, err
		}
	}
	if err := h.openFiles(); err != nil {
		return nil, err
	}
	if err := h.buildAdapters(); err != nil {
		return nil, err
	}
	if err := h.forgetFeeds(context.Background()); err != nil {
		return nil, err
	}
	ok = true
	return h, nil
}

func (h *Hub) tlsConfig(files TLSFiles) (*tls.Config, error) {
	if files.CertFile == "" {
		files = h.cfg.TLS
	}
	if files.CertFile == "" {
		return nil, nil
	}
	kp, err := h.certs.get(files)
	if err != nil {
		return nil, err
	}
	// GetCertificate, not Certificates: a reload swaps the pair under
	// the listeners without restarting them.
	return &tls.Config{GetCertificate: kp.getCertificate, MinVersion: tls.VersionTLS12}, nil
}

func (h *Hub) buildAdapters() error {
	c := h.cfg
	// The history recorder starts first and stops last, so it sees what
	// the protocol adapters publish until they are gone.
	rec, err := history.New(history.Options{Config: c.History, Bus: h.Bus, Store: h.Store, Logger: h.log, Registerer: h.Registry})
	if err != nil {
		return err
	}
	h.adapters = append(h.adapters, rec)
	if Enabled(c.MQTT.Addr) || Enabled(c.MQTT.TLSAddr) || Enabled(c.MQTT.WSAddr) {
		tc, err := h.tlsConfig(TLSFiles{})
		if err != nil {
			return err
		}
		if Enabled(c.MQTT.TLSAddr) && tc == nil {
			return errors.New("mqtt.tls_addr needs tls.cert_file and tls.key_file")
		}
		a, err := mqtt.New(mqtt.Config{
			Addr: c.MQTT.Addr, TLSAddr: c.MQTT.TLSAddr, WSAddr: c.MQTT.WSAddr, TLSConfig: tc,
			Bus: h.Bus, Auth: h.Auth, AllowAnonymous: c.AllowAnonymous, RequireTLS: c.RequireTLS, Sessions: h.sessionStore(),
			Node: c.Node, Logger: h.log.With("adapter", "mqtt"), Registerer: h.Registry,
			MaxPacketSize: uint32(c.MQTT.MaxPacketSize),
			MaxQueued:     uint16(c.MQTT.MaxQueued), MaxQueuedBytes: c.MQTT.MaxQueuedBytes, QueuePolicy: c.QueuePolicy,
			MaxInflight: uint16(c.MQTT.MaxInflight), ParkAfter: c.MQTT.ParkAfter,
		})
		if err != nil {
			return err
		}
		h.adapters = append(h.adapters, a)
	}
	if Enabled(c.CoAP.Addr) || Enabled(c.CoAP.DTLSAddr) {
		a, err := coap.New(coap.Config{
			Addr: offToEmpty(c.CoAP.Addr), DTLSAddr: offToEmpty(c.CoAP.DTLSAddr), PSK: h.Store.DevicePSK,
			Bus: h.Bus, Auth: h.Auth, AllowAnonymous: c.AllowAnonymous, RequireTLS: c.RequireTLS, Node: c.Node,
			Logger: h.log, Registerer: h.Registry, MaxPayload: c.CoAP.MaxPayload,
			MaxObservations: c.CoAP.MaxObservations, MaxObservationsPerUser: c.CoAP.MaxObservationsPerUser, MaxObservationsTotal: c.CoAP.MaxObservationsTotal,
			MaxUploadBytesPerEndpoint: c.CoAP.MaxUploadBytesPerEndpoint, MaxUploadBytesTotal: c.CoAP.MaxUploadBytesTotal, BlockwiseTimeout: c.CoAP.BlockwiseTimeout, VerifyLoopback: c.CoAP.VerifyLoopback,
			AckTimeout: c.CoAP.AckTimeout, MaxRetransmit: c.CoAP.MaxRetransmit, EndpointIdleTimeout: c.CoAP.EndpointIdleTimeout,
			Durables: h.durableIDs,
			Files:    h.Files, MaxFileUploads: c.Files.MaxCoAPUploads, FileUploadTimeout: c.Files.CoAPUploadTimeout,
		})
		if err != nil {
			return err
		}
		h.adapters = append(h.adapters, a)
	}
	if Enabled(c.XMPP.Addr) || Enabled(c.XMPP.ComponentAddr) {
		tc, err := h.tlsConfig(c.XMPP.TLS)
		if err != nil {
			return err
		}
		a, err := xmpp.New(xmpp.Config{
			Addr: offToEmpty(c.XMPP.Addr), Domain: c.XMPP.Domain, Bus: h.Bus, Auth: h.Auth, Store: h.xmppStore(), Cluster: h.xmppCluster(),
			AllowAnonymous: c.AllowAnonymous, DataDir: c.DataDir, TLSConfig: tc, MaxStanza: int64(c.XMPP.MaxStanza),
			ComponentAddr: offToEmpty(c.XMPP.ComponentAddr), ComponentDomain: c.XMPP.ComponentDomain,
			ComponentSecret: c.XMPP.ComponentSecret, JIDRules: c.XMPP.JIDRules,
			ProxyAddr: proxyAddr(c.XMPP), ProxyHost: c.XMPP.ProxyHost, Files: h.xmppFiles(),
			Archive: h.Store, OfflineMaxBytes: c.Limits.Storage.offlineMaxBytes(),
			DeviceCommand: func(ctx context.Context, cmd adapters.Command) (json.RawMessage, error) {
				return h.Devices.SendCommand(ctx, cmd.DeviceID, cmd.Name, cmd.Params)
			},
			DeviceCommands: h.Devices.Commands,
			Logger:         h.log, Registerer: h.Registry,
		})
		if err != nil {
			return err
		}
		h.adapters = append(h.adapters, a)
	}
	for _, bc := range c.Bridges {
		b, err := bridge.New(bridge.Options{Config: bc, Bus: h.Bus, Node: c.Node, Logger: h.log, Registerer: h.Registry,
			Lease: h.bridgeLease()})
		if err != nil {
			return err
		}
		h.adapters = append(h.adapters, b)
	}
	if Enabled(c.PprofAddr) {
		h.adapters = append(h.adapters, &pprofServer{addr: c.PprofAddr, log: h.log.With("adapter", "pprof")})
	}
	if Enabled(c.HTTP.Addr) || Enabled(c.HTTP.TLSAddr) {
		tc, err := h.tlsConfig(TLSFiles{})
		if err != nil {
			return err
		}
		if Enabled(c.HTTP.TLSAddr) && tc == nil {
			return errors.New("http.tls_addr (--https-addr) needs tls.cert_file and tls.key_file")
		}
		a, err := rest.New(rest.Config{
			Addr: offToEmpty(c.HTTP.Addr), TLSAddr: offToEmpty(c.HTTP.TLSAddr), TLSConfig: tc, RequireTLS: c.RequireTLS,
			Bus: h.Bus, Store: h.Store, Auth: h.Auth, Devices: h.Devices,
			AllowAnonymous: c.AllowAnonymous, MaxBody: c.HTTP.MaxBody, Health: h.Healthy, HealthReport: h.HealthReport,
			ReadHeaderTimeout: c.HTTP.ReadHeaderTimeout, ReadTimeout: c.HTTP.ReadTimeout,
			IdleTimeout: c.HTTP.IdleTimeout, MaxHeaderBytes: c.HTTP.MaxHeaderBytes,
			Metrics: promhttp.HandlerFor(h.Registry, promhttp.HandlerOpts{}), PublicMetrics: c.HTTP.PublicMetrics,
			MaxTokenTTL: c.HTTP.MaxTokenTTL, StreamWriteTimeout: c.HTTP.StreamWriteTimeout,
			Registerer: h.Registry, Logger: h.log.With("adapter", "rest"), Node: c.Node,
			Revoke: h.Revoke, Files: h.Files, Dashboard: h.dashboardFS(), Overview: h.Overview,
			Reload: h.ReloadFromSource,
		})
		if err != nil {
			return err
		}
		h.adapters = append(h.adapters, a)
	}
	return nil
}

// forgetFeeds drops the durable bus queues of feeds that are no longer
// configured (a removed bridge, MQTT turned off), which would otherwise
// keep collecting every QoS >= 1 envelope.
func (h *Hub) forgetFeeds(ctx context.Context) error {
	subs, err := h.Store.LoadSubscriptions(ctx)
	if err != nil {
		return fmt.Errorf("durable subscriptions: %w", err)
	}
	bridges := map[string]bool{}
	for _, b := range h.cfg.Bridges {
		bridges[b.Name] = true
	}
	mqttOn := Enabled(h.cfg.MQTT.Addr) || Enabled(h.cfg.MQTT.TLSAddr) || Enabled(h.cfg.MQTT.WSAddr)
	for _, d := range subs {
		var err error
		switch name, isBridge := strings.CutPrefix(d.ID, "bridge:"); {
		case isBridge && !bridges[name]:
			h.log.Info("hub: dropping the queue of a bridge no longer configured", "bridge", name)
			err = bridge.Forget(ctx, h.Bus, name)
		case d.ID == mqtt.DefaultSubscriberID && !mqttOn:
			h.log.Info("hub: dropping the MQTT feed queue, MQTT is off")
			err = broker.Forget(ctx, h.Bus, d.ID)
		}
		if err != nil {
			return fmt.Errorf("forget %q: %w", d.ID, err)
		}
	}
	return nil
}

func offToEmpty(addr string) string {
	if addr == Off {
		return ""
	}
	return addr
}

// Start starts the adapters in order; if one fails, those started are
// stopped again.
func (h *Hub) Start(ctx context.Context) error {
	if err := h.startShared(ctx); err != nil { // cluster_principals.go
		return err
	}
	// Presence recorded before a crash is stale: every device is offline
	// until its adapter reports it again.
	if err := h.Devices.ResetPresence(ctx); err != nil {
		return fmt.Errorf("reset presence: %w", err)
	}
	for _, a := range h.adapters {
		if ps, ok := a.(adapters.PresenceSource); ok {
			ps.SetPresenceSink(h.Devices)
		}
		if cm, ok := a.(adapters.Commander); ok {
			h.Devices.RegisterCommander(cm)
		}
		if err := a.Start(ctx); err != nil {
			_ = h.Stop(context.WithoutCancel(ctx))
			return adapterErr("start", a.Name(), err)
		}
		h.mu.Lock()
		h.started = append(h.started, a)
		h.mu.Unlock()
	}
	h.revokePending(ctx)
	return nil
}

// revokePending carries out the deletions the store marked but no running
// hub revoked yet (hub user delete while the hub was stopped, or a crash
// between a deletion and its revocation).
func (h *Hub) revokePending(ctx context.Context) {
	kvs, err := h.Store.KVList(ctx, store.RevokedBucket)
	if err != nil {
		h.log.Warn("hub: pending revocations", "err", err)
		return
	}
	for _, kv := range kvs {
		h.Revoke(ctx, kv.Key)
	}
}

// Revoke ends what principal has open in every started adapter that is an
// adapters.Revoker (connections, streams, persistent sessions,
// subscriptions and queues), all at once, and returns how many connections
// and streams were closed. The REST handlers call it after a user's or
// device's deletion or a role change: the bus already stops deliveries to
// the principal, Revoke stops its connections. ctx bounds the wait.
func (h *Hub) Revoke(ctx context.Context, principal string) int {
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for _, a := range started {
		r, ok := a.(adapters.Revoker)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := r.Revoke(ctx, principal)
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := h.Store.KVDelete(ctx, store.RevokedBucket, principal); err != nil && !errors.Is(err, store.ErrNotFound) {
		h.log.Warn("hub: clear revocation mark", "principal", principal, "err", err)
	}
	h.log.Info("hub: principal revoked", "principal", principal, "closed", total)
	return total
}

// durableIDs lists the ids of the bus's durable subscriptions.
func (h *Hub) durableIDs(ctx context.Context) ([]string, error) {
	subs, err := h.Store.LoadSubscriptions(ctx)
	if err != nil {
		return nil, fmt.Errorf("durable subscriptions: %w", err)
	}
	ids := make([]string, 0, len(subs))
	for _, s := range subs {
		ids = append(ids, s.ID)
	}
	return ids, nil
}

// Stop stops the adapters in reverse order, then closes the bus and the
// store. It returns the first error.
func (h *Hub) Stop(ctx context.Context) error {
	h.mu.Lock()
	started := h.started
	h.started = nil
	h.mu.Unlock()
	var errs []error
	for _, a := range slices.Backward(started) {
		if err := a.Stop(ctx); err != nil {
			errs = append(errs, adapterErr("stop", a.Name(), err))
		}
	}
	errs = append(errs, h.closeCore())
	return errors.Join(errs...)
}

// adapterErr says which adapter failed at what: "start mqtt: listen ...".
// Adapters already begin their errors with their name ("mqtt: listen
// ..."); that prefix is dropped so the name is said once.
func adapterErr(verb, name string, err error) error {
	if rest, ok := strings.CutPrefix(err.Error(), name+": "); ok {
		return &namedErr{msg: verb + " " + name + ": " + rest, err: err}
	}
	return fmt.Errorf("%s %s: %w", verb, name, err)
}

// namedErr is an error with a reworded message that still unwraps to the
// adapter's error.
type namedErr struct {
	msg string
	err error
}

func (e *namedErr) Error() string { return e.msg }
func (e *namedErr) Unwrap() error { return e.err }

func (h *Hub) closeCore() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.coreClosed {
		return nil
	}
	h.coreClosed = true
	var errs []error
	if h.Files != nil {
		errs = append(errs, h.Files.Close())
	}
	if h.Bus != nil {
		errs = append(errs, h.Bus.Close())
	}
	h.nats.close()
	if h.Store != nil {
		errs = append(errs, h.Store.Close())
	}
	return errors.Join(errs...)
}

// Healthy is nil when every started adapter reports healthy.
func (h *Hub) Healthy() error {
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	if len(started) < h.adapterCount() {
		return errors.New("starting")
	}
	for _, a := range started {
		if _, ok := a.(*bridge.Bridge); ok {
			continue // an upstream being away is not the hub's health
		}
		if hc, ok := a.(adapters.HealthChecker); ok {
			if err := hc.Healthy(); err != nil {
				return fmt.Errorf("%s: %w", a.Name(), err)
			}
		}
	}
	return nil
}

// HealthReport is the body of GET /healthz: every listener of every
// adapter with its state, the store's integrity, and what is unhealthy.
// Its status is "unavailable" while the hub starts, when an adapter is
// unhealthy, when a listener does not accept (out of descriptors, say) and
// when the store's writes fail; "degraded" under disk pressure (quota.go).
func (h *Hub) HealthReport() adapters.HealthReport {
	r := adapters.HealthReport{Status: adapters.HealthOK, Listeners: []adapters.ListenerStatus{}}
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	if len(started) < h.adapterCount() {
		r.Errors = append(r.Errors, "starting")
	}
	for _, a := range started {
		if lr, ok := a.(adapters.ListenerReporter); ok {
			r.Listeners = append(r.Listeners, lr.Listeners()...)
		}
		if _, ok := a.(*bridge.Bridge); ok {
			continue // an upstream being away is not the hub's health
		}
		if hc, ok := a.(adapters.HealthChecker); ok {
			if err := hc.Healthy(); err != nil {
				r.Errors = append(r.Errors, adapterErr("check", a.Name(), err).Error())
			}
		}
	}
	for _, l := range r.Listeners {
		if l.State != adapters.ListenerAccepting && !slices.ContainsFunc(r.Errors, func(e string) bool { return strings.Contains(e, l.Addr) }) {
			r.Errors = append(r.Errors, fmt.Sprintf("%s listener %s (%s) %s", l.Adapter, l.Name, l.Addr, l.State))
		}
	}
	if h.Store != nil {
		c := h.Store.Check()
		r.Store = &adapters.StoreHealth{IntegrityOK: c.OK, Problems: c.Problems}
	}
	h.storageHealth(&r)
	switch {
	case len(r.Errors) > 0:
		r.Status = adapters.HealthUnavailable
	case len(r.Warnings) > 0:
		r.Status = adapters.HealthDegraded
	}
	return r
}

// adapterList is a copy of the adapters (a reload adds and removes
// bridges).
func (h *Hub) adapterList() []adapters.Adapter {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.adapters)
}

func (h *Hub) adapterCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.adapters)
}

// BridgeHealthy reports whether the named bridge is connected upstream.
func (h *Hub) BridgeHealthy(name string) error {
	for _, a := range h.adapterList() {
		if b, ok := a.(*bridge.Bridge); ok && a.Name() == "bridge:"+name {
			return b.Healthy()
		}
	}
	return fmt.Errorf("no bridge %q", name)
}

// Addrs returns every listener's bound address keyed "adapter.listener".
func (h *Hub) Addrs() map[string]string {
	out := map[string]string{}
	for _, a := range h.adapterList() {
		if ad, ok := a.(adapters.Addresser); ok {
			for k, v := range ad.Addrs() {
				out[a.Name()+"."+k] = v
			}
		}
	}
	return out
}

// busCollector exports the in-process bus's counters.
type busCollector struct{ bus broker.Bus }

var (
	busPublished     = prometheus.NewDesc("hub_bus_published_total", "Envelopes published on the bus.", nil, nil)
	busSubscriptions = prometheus.NewDesc("hub_bus_subscriptions", "Subscriptions on the bus, attached or durable.", nil, nil)
	busRetained      = prometheus.NewDesc("hub_bus_retained", "Retained values held by the bus.", nil, nil)
	busDropped       = prometheus.NewDesc("hub_bus_dropped_total", "Envelopes subscribers lost: full queues, expiry, refused by a handler.", nil, nil)
	busDenied        = prometheus.NewDesc("hub_bus_denied_total", "Envelopes not delivered because the subscriber may not read them.", nil, nil)
	busRedelivered   = prometheus.NewDesc("hub_bus_redelivered_total", "Deliveries made again after a nack or a subscriber's return.", nil, nil)
	busDowngraded    = prometheus.NewDesc("hub_bus_downgraded_total", "Envelopes delivered below their publish QoS, by route.",
		[]string{"from", "to", "publish_qos", "delivery_qos"}, nil)
)

func (busCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- busPublished
	ch <- busSubscriptions
	ch <- busRetained
	ch <- busDropped
	ch <- busDenied
	ch <- busRedelivered
	ch <- busDowngraded
}

func (c busCollector) Collect(ch chan<- prometheus.Metric) {
	m, ok := c.bus.(*broker.Memory)
	if nb, isNATS := c.bus.(interface{ Memory() *broker.Memory }); isNATS {
		m, ok = nb.Memory(), true // this hub's live routing
	}
	if !ok {
		return
	}
	s := m.Stats()
	ch <- prometheus.MustNewConstMetric(busPublished, prometheus.CounterValue, float64(s.Published))
	ch <- prometheus.MustNewConstMetric(busSubscriptions, prometheus.GaugeValue, float64(s.Subscriptions))
	ch <- prometheus.MustNewConstMetric(busRetained, prometheus.GaugeValue, float64(s.Retained))
	ch <- prometheus.MustNewConstMetric(busDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(busDenied, prometheus.CounterValue, float64(s.Denied))
	ch <- prometheus.MustNewConstMetric(busRedelivered, prometheus.CounterValue, float64(s.Redelivered))
	for k, n := range m.Downgrades() {
		ch <- prometheus.MustNewConstMetric(busDowngraded, prometheus.CounterValue, float64(n),
			k.From, k.To, strconv.Itoa(int(k.Publish)), strconv.Itoa(int(k.Sent)))
	}
}

// proxyAddr is the SOCKS5 proxy's listener: none without the c2s
// listener, whose users are the only ones who can activate it.
func proxyAddr(c XMPPConfig) string {
	if !Enabled(c.Addr) {
		return ""
	}
	return offToEmpty(c.ProxyAddr)
}
