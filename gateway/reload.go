package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/bridge"
)

// keyPair is a certificate and key loaded from files, swapped by a reload.
type keyPair struct {
	files TLSFiles
	cert  atomic.Pointer[tls.Certificate]
}

func (k *keyPair) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cert.Load(), nil
}

func (k *keyPair) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(k.files.CertFile, k.files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &c, nil
}

// certStore holds every certificate the listeners serve, by files.
type certStore struct {
	mu    sync.Mutex
	pairs map[TLSFiles]*keyPair
}

func (s *certStore) get(files TLSFiles) (*keyPair, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kp := s.pairs[files]; kp != nil {
		return kp, nil
	}
	kp := &keyPair{files: files}
	c, err := kp.load()
	if err != nil {
		return nil, err
	}
	kp.cert.Store(c)
	if s.pairs == nil {
		s.pairs = map[TLSFiles]*keyPair{}
	}
	s.pairs[files] = kp
	return kp, nil
}

// reloadAll reads every pair again; all or none are swapped.
func (s *certStore) reloadAll() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := make(map[*keyPair]*tls.Certificate, len(s.pairs))
	for _, kp := range s.pairs {
		c, err := kp.load()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", kp.files.CertFile, err)
		}
		fresh[kp] = c
	}
	for kp, c := range fresh {
		kp.cert.Store(c)
	}
	return len(fresh), nil
}

// SetConfigSource gives the hub what reads its configuration again (the
// YAML file, the environment and the flags it started with), for
// ReloadFromSource: SIGHUP and POST /api/v1/admin/reload.
func (h *Hub) SetConfigSource(f func() (Config, error)) {
	h.mu.Lock()
	h.source = f
	h.mu.Unlock()
}

// ErrNoConfigSource is ReloadFromSource's error for a hub without one.
var ErrNoConfigSource = errors.New("this hub has no configuration to reload from")

// ReloadFromSource reads the configuration again and applies it (Reload).
func (h *Hub) ReloadFromSource(ctx context.Context) ([]string, error) {
	h.mu.Lock()
	src := h.source
	h.mu.Unlock()
	if src == nil {
		return nil, ErrNoConfigSource
	}
	cfg, err := src()
	if err != nil {
		return nil, fmt.Errorf("reload: %w (the running configuration is kept)", err)
	}
	return h.Reload(ctx, cfg)
}

// Reload applies what of cfg can change while clients stay connected:
// the ACL rules (configured and anonymous) and the component peer policy,
// the bridges (added, removed, or restarted when changed), the limits
// (for new connections, subscriptions and sessions), the TLS
// certificates (read again from their files), and the SCRAM iteration
// count. Anything else that differs is reported as needing a restart. An
// invalid cfg, or a certificate that does not load, is refused and
// nothing changes. It returns what changed, one line each.
func (h *Hub) Reload(ctx context.Context, cfg Config) ([]string, error) {
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reload: config: %w (the running configuration is kept)", err)
	}
	h.mu.Lock()
	old := h.cfg
	h.mu.Unlock()
	var changes []string

	// Bridges to build, before anything is applied.
	oldBridges := map[string]bridge.Config{}
	for _, b := range old.Bridges {
		oldBridges[b.Name] = b
	}
	newBridges := map[string]bridge.Config{}
	var build []*bridge.Bridge
	for _, bc := range cfg.Bridges {
		newBridges[bc.Name] = bc
		if ob, ok := oldBridges[bc.Name]; ok && reflect.DeepEqual(ob, bc) {
			continue
		}
		b, err := bridge.New(bridge.Options{Config: bc, Bus: h.Bus, Node: h.cfg.Node, Logger: h.log, Registerer: h.Registry,
			Lease: h.bridgeLease()})
		if err != nil {
			return nil, fmt.Errorf("reload: bridge %s: %w (the running configuration is kept)", bc.Name, err)
		}
		build = append(build, b)
	}
	applyJIDRules, err := h.prepareJIDRules(old, cfg) // jidrules.go
	if err != nil {
		return nil, fmt.Errorf("reload: xmpp.jid_rules: %w (the running configuration is kept)", err)
	}
	if n, err := h.certs.reloadAll(); err != nil {
		return nil, fmt.Errorf("reload: %w (the running configuration is kept)", err)
	} else if n > 0 {
		changes = append(changes, fmt.Sprintf("tls: %d certificate(s) read again", n))
	}

	if !reflect.DeepEqual(old.ACL, cfg.ACL) {
		h.Auth.SetRules(cfg.ACL)
		changes = append(changes, fmt.Sprintf("acl: %d principal(s) with configured rules", len(cfg.ACL)))
	}
	if old.XMPP.ComponentPeers != cfg.XMPP.ComponentPeers {
		_ = h.Auth.SetPeerPolicy(cfg.XMPP.ComponentPeers)
		changes = append(changes, "xmpp.component_peers: "+peerPolicyName(cfg.XMPP.ComponentPeers))
	}
	if old.Limits.LimitsConfig != cfg.Limits.LimitsConfig {
		h.Auth.Limits().SetConfig(cfg.Limits.LimitsConfig)
		changes = append(changes, "limits: applied to new connections and subscriptions")
	}
	if applyJIDRules != nil {
		applyJIDRules()
		changes = append(changes, fmt.Sprintf("xmpp.jid_rules: %d rule(s)", len(cfg.XMPP.JIDRules)))
	}
	if n := cfg.Security.SCRAMIterations; n != old.Security.SCRAMIterations && n != 0 {
		_ = h.Store.SetSCRAMIterations(n)
		changes = append(changes, fmt.Sprintf("security.scram_iterations: %d", n))
	}

	// Bridges: stop the removed and changed ones, start the new ones.
	for name := range oldBridges {
		nb, kept := newBridges[name]
		if kept && reflect.DeepEqual(nb, oldBridges[name]) {
			continue
		}
		if err := h.stopAdapter(ctx, "bridge:"+name); err != nil {
			h.log.Warn("reload: stop bridge", "bridge", name, "err", err)
		}
		if !kept {
			if err := bridge.Forget(ctx, h.Bus, name); err != nil {
				h.log.Warn("reload: forget bridge queue", "bridge", name, "err", err)
			}
			changes = append(changes, "bridge "+name+": removed")
		}
	}
	for _, b := range build {
		if err := b.Start(ctx); err != nil {
			return changes, fmt.Errorf("reload: start %s: %w", b.Name(), err)
		}
		h.mu.Lock()
		h.adapters = append(h.adapters, b)
		h.started = append(h.started, b)
		h.mu.Unlock()
		if _, ok := oldBridges[b.Name()[len("bridge:"):]]; ok {
			changes = append(changes, b.Name()+": restarted with its new configuration")
		} else {
			changes = append(changes, b.Name()+": added")
		}
	}

	for _, key := range restartOnly(old, cfg) {
		changes = append(changes, key+": changed, applies at the next start")
	}
	// Only what was applied changes in the running configuration; the
	// rest stays as the hub runs it.
	h.mu.Lock()
	h.cfg.ACL, h.cfg.Bridges = cfg.ACL, cfg.Bridges
	h.cfg.XMPP.ComponentPeers = cfg.XMPP.ComponentPeers
	h.cfg.XMPP.JIDRules = cfg.XMPP.JIDRules
	h.cfg.Security.SCRAMIterations = cfg.Security.SCRAMIterations
	h.cfg.Limits.LimitsConfig = cfg.Limits.LimitsConfig
	h.mu.Unlock()
	for _, c := range changes {
		h.log.Info("reload: " + c)
	}
	if len(changes) == 0 {
		h.log.Info("reload: nothing changed")
	}
	return changes, nil
}

// stopAdapter stops the started adapter called name and drops it.
func (h *Hub) stopAdapter(ctx context.Context, name string) error {
	h.mu.Lock()
	var a adapters.Adapter
	for _, x := range h.adapters {
		if x.Name() == name {
			a = x
		}
	}
	isA := func(x adapters.Adapter) bool { return x == a }
	h.adapters = slices.DeleteFunc(h.adapters, isA)
	h.started = slices.DeleteFunc(slices.Clone(h.started), isA)
	h.mu.Unlock()
	if a == nil {
		return nil
	}
	return a.Stop(ctx)
}

// restartOnly names the configuration keys that differ but are read only
// at start.
func restartOnly(old, cfg Config) []string {
	var keys []string
	for key, differs := range map[string]bool{
		"mqtt": !reflect.DeepEqual(old.MQTT, cfg.MQTT), "coap": !reflect.DeepEqual(old.CoAP, cfg.CoAP),
		"http": !reflect.DeepEqual(old.HTTP, cfg.HTTP), "data_dir": old.DataDir != cfg.DataDir,
		"xmpp (but component_peers)": !reflect.DeepEqual(withPeers(old.XMPP, ""), withPeers(cfg.XMPP, "")),
		"nats":                       old.NATS != cfg.NATS, "pprof_addr": old.PprofAddr != cfg.PprofAddr,
		"history": !reflect.DeepEqual(old.History, cfg.History), "files": !reflect.DeepEqual(old.Files, cfg.Files),
		"security.login_backoff": old.Security.LoginBackoff != cfg.Security.LoginBackoff,
		"require_tls":            old.RequireTLS != cfg.RequireTLS, "allow_anonymous": old.AllowAnonymous != cfg.AllowAnonymous,
		"max_queued, max_queued_bytes, queue_policy": old.MaxQueued != cfg.MaxQueued || old.MaxQueuedBytes != cfg.MaxQueuedBytes || old.QueuePolicy != cfg.QueuePolicy,
		"log": old.Log != cfg.Log, "sync_interval": old.SyncInterval != cfg.SyncInterval, "limits (storage quotas)": old.Limits.Storage != cfg.Limits.Storage,
	} {
		if differs {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys
}

// withPeers is x with ComponentPeers p and without the JID rules (both
// reloadable).
func withPeers(x XMPPConfig, p string) XMPPConfig { x.ComponentPeers, x.JIDRules = p, nil; return x }

func peerPolicyName(p string) string {
	if p == "" {
		return adapters.PeerDeny
	}
	return p
}
