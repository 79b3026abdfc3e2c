// Package bridge connects the hub to upstream MQTT brokers, in the manner of
// mosquitto's bridges: messages on chosen upstream topics enter the bus
// ("in"), and envelopes on chosen bus topics are published upstream ("out").
//
// # Topic mapping
//
// A rule {filter, local_prefix, remote_prefix} is mosquitto's
// "topic <filter> <direction> <qos> <local-prefix> <remote-prefix>":
//
//   - in: the bridge subscribes upstream to remote_prefix+filter; a message
//     on remote topic T is published on the bus as
//     local_prefix + (T without remote_prefix).
//   - out: the bridge subscribes the bus to local_prefix+filter; an envelope
//     on bus topic T is published upstream as
//     remote_prefix + (T without local_prefix).
//
// For example, in {filter: "sensors/#", remote_prefix: "site1/",
// local_prefix: "up/"} takes upstream "site1/sensors/t" to bus
// "up/sensors/t". When several rules of one direction match a topic, the
// first one (in configuration order) maps it.
//
// # Delivery and loops
//
// Upstream messages are acknowledged to the upstream only once the bus has
// them; with clean_session false (the default) the upstream keeps QoS >= 1
// messages for the bridge while it is away. Bus envelopes reach the bridge
// through a durable subscription with id "bridge:"+name: QoS >= 1 envelopes
// published while the upstream is down (or the bridge stopped) stay queued
// in the store and go out once it is back. Delivery is at least once.
//
// The bridge never sends upstream an envelope it published itself (Origin
// protocol "bridge", client id = bridge name, same node); envelopes of
// other bridges do go out, so bridges chain. MQTT 3.1.1 has no "no local"
// option, so when an in rule covers a topic the bridge publishes to, the
// upstream sends that message back: the bridge drops such echoes (same
// topic and payload, within 30 s) instead of publishing them on the bus.
//
// # What crosses
//
// The upstream link is MQTT 3.1.1 (paho.mqtt.golang), so only the topic,
// payload, QoS and retain flag cross it. Content type, expiry, response
// topic, correlation data and user properties of an envelope are not sent
// upstream, and messages from upstream carry none.
package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hubsmith/hub/broker"
)

// Defaults applied to a Config.
const (
	// DefaultQoS is the QoS of rules that set none.
	DefaultQoS byte = 1
	// DefaultKeepAlive is the MQTT keepalive when Config.KeepAlive is 0.
	DefaultKeepAlive = 30 * time.Second
)

// Config is one bridge, as written under `bridges:` in the hub's YAML.
type Config struct {
	// Name identifies the bridge (letters, digits, '-', '_', '.'); the
	// adapter is "bridge:"+Name and the bus subscriber id is the same.
	Name string `yaml:"name"`
	// URL is the upstream broker: tcp://, mqtt://, ssl://, tls:// or
	// mqtts:// host:port, or a ws:// or wss:// URL (port and path optional).
	URL string `yaml:"url"`
	// ClientID is the upstream client id ("hub-bridge-"+Name when empty). It
	// must be stable for the upstream to keep the session across restarts,
	// and unique among the upstream's clients.
	ClientID string `yaml:"client_id"`
	// Username and Password authenticate to the upstream (both optional; a
	// password needs a username).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TLS configures ssl://, tls://, mqtts:// and wss:// connections.
	TLS TLSConfig `yaml:"tls"`
	// CleanSession asks the upstream to forget the session on disconnect.
	// The default (false) keeps it, so upstream messages at QoS >= 1 wait
	// for the bridge while it is away.
	CleanSession bool `yaml:"clean_session"`
	// KeepAlive is the MQTT keepalive (DefaultKeepAlive when 0).
	KeepAlive time.Duration `yaml:"keepalive"`
	// QoS is the default QoS of the rules (DefaultQoS when unset).
	QoS *byte `yaml:"qos"`
	// In are the upstream → hub rules.
	In []Rule `yaml:"in"`
	// Out are the hub → upstream rules.
	Out []Rule `yaml:"out"`
}

// TLSConfig holds the files of an upstream TLS connection.
type TLSConfig struct {
	// CAFile is a PEM bundle of CAs trusted for the upstream (system roots
	// when empty).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate and its key (both or
	// neither).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify disables verification of the upstream's
	// certificate (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Rule maps topics in one direction. See the package documentation.
type Rule struct {
	// Filter is an MQTT topic filter, relative to the prefixes.
	Filter string `yaml:"filter"`
	// LocalPrefix is prepended on the bus side (may be empty).
	LocalPrefix string `yaml:"local_prefix"`
	// RemotePrefix is prepended on the upstream side (may be empty).
	RemotePrefix string `yaml:"remote_prefix"`
	// QoS is the rule's maximum QoS (the bridge's QoS when unset); the
	// delivery QoS is min(message QoS, rule QoS).
	QoS *byte `yaml:"qos"`
}

// LocalFilter is the filter on the bus side.
func (r Rule) LocalFilter() string { return r.LocalPrefix + r.Filter }

// RemoteFilter is the filter on the upstream side.
func (r Rule) RemoteFilter() string { return r.RemotePrefix + r.Filter }

// ToLocal maps an upstream topic to its bus topic; ok is false when the
// topic is not covered by the rule.
func (r Rule) ToLocal(remote string) (local string, ok bool) {
	return rewrite(remote, r.RemotePrefix, r.LocalPrefix, r.Filter)
}

// ToRemote maps a bus topic to its upstream topic; ok is false when the
// topic is not covered by the rule.
func (r Rule) ToRemote(local string) (remote string, ok bool) {
	return rewrite(local, r.LocalPrefix, r.RemotePrefix, r.Filter)
}

func rewrite(topic, from, to, filter string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, from)
	if !ok || rest == "" || !broker.Match(filter, rest) {
		return "", false
	}
	return to + rest, true
}

func qosOr(q *byte, def byte) byte {
	if q == nil {
		return def
	}
	return *q
}

// defaultQoS is the bridge's default rule QoS.
func (c *Config) defaultQoS() byte { return qosOr(c.QoS, DefaultQoS) }

// ruleQoS is a rule's effective QoS.
func (c *Config) ruleQoS(r Rule) byte { return qosOr(r.QoS, c.defaultQoS()) }

// clientID is the effective upstream client id.
func (c *Config) clientID() string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return "hub-bridge-" + c.Name
}

var schemes = map[string]bool{"tcp": false, "mqtt": false, "ws": false, "ssl": true, "tls": true, "mqtts": true, "wss": true}

// Validate checks c; errors name the bridge and the field.
func (c *Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("bridge %q: %w", c.Name, err)
	}
	return nil
}

func (c *Config) validate() error {
	if c.Name == "" {
		return errors.New("name: required")
	}
	for _, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.'", c.Name)
		}
	}
	if c.URL == "" {
		return errors.New("url: required")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url %q: %w", c.URL, err)
	}
	if _, ok := schemes[u.Scheme]; !ok {
		return fmt.Errorf("url %q: scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss", c.URL)
	}
	ws := u.Scheme == "ws" || u.Scheme == "wss"
	if u.Hostname() == "" || (u.Port() == "" && !ws) {
		return fmt.Errorf("url %q: needs host:port", c.URL)
	}
	if len(c.clientID()) > 65535 {
		return errors.New("client_id: too long")
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("password: needs a username")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together")
	}
	if c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second || (c.KeepAlive > 0 && c.KeepAlive < time.Second) {
		return fmt.Errorf("keepalive %s: must be 1s..18h12m15s", c.KeepAlive)
	}
	if c.QoS != nil && *c.QoS > 2 {
		return fmt.Errorf("qos %d: must be 0, 1 or 2", *c.QoS)
	}
	if len(c.In) == 0 && len(c.Out) == 0 {
		return errors.New("in, out: at least one rule")
	}
	for _, d := range []struct {
		dir   string
		rules []Rule
	}{{"in", c.In}, {"out", c.Out}} {
		for i, r := range d.rules {
			if err := r.validate(); err != nil {
				return fmt.Errorf("%s[%d].%w", d.dir, i, err)
			}
		}
	}
	return nil
}

func (r Rule) validate() error {
	if r.Filter == "" {
		return errors.New(`filter "": required`)
	}
	if err := broker.ValidateFilter(r.Filter); err != nil {
		return fmt.Errorf("filter %q: %w", r.Filter, err)
	}
	for _, p := range []struct{ name, v string }{{"local_prefix", r.LocalPrefix}, {"remote_prefix", r.RemotePrefix}} {
		if broker.IsFilter(p.v) {
			return fmt.Errorf("%s %q: no wildcards", p.name, p.v)
		}
	}
	if err := broker.ValidateFilter(r.LocalFilter()); err != nil {
		return fmt.Errorf("local_prefix %q: %w", r.LocalPrefix, err)
	}
	if err := broker.ValidateFilter(r.RemoteFilter()); err != nil {
		return fmt.Errorf("remote_prefix %q: %w", r.RemotePrefix, err)
	}
	if r.QoS != nil && *r.QoS > 2 {
		return fmt.Errorf("qos %d: must be 0, 1 or 2", *r.QoS)
	}
	return nil
}

// tlsConfig builds the client TLS configuration, or nil for a plain URL.
func (c *Config) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", c.URL, err)
	}
	if !schemes[u.Scheme] {
		return nil, nil
	}
	tc := &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: c.TLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in for tests
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %q: no PEM certificate", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file, tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// ValidateAll checks every bridge of a configuration and that no two share
// a name (their bus subscriptions would collide) or an upstream client id
// on the same URL (they would take each other's session).
func ValidateAll(cfgs []Config) error {
	names := map[string]bool{}
	clients := map[string]string{}
	for i := range cfgs {
		c := &cfgs[i]
		if err := c.Validate(); err != nil {
			return fmt.Errorf("bridges[%d]: %w", i, err)
		}
		if names[c.Name] {
			return fmt.Errorf("bridges[%d]: name %q: used twice", i, c.Name)
		}
		names[c.Name] = true
		key := c.URL + " " + c.clientID()
		if other, ok := clients[key]; ok {
			return fmt.Errorf("bridges[%d]: client_id %q: bridge %q uses it on %s too", i, c.clientID(), other, c.URL)
		}
		clients[key] = c.Name
	}
	return nil
}
