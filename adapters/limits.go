package adapters

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
)

// Defaults of LimitsConfig: generous for a gateway's own devices and apps,
// small enough that one greedy principal cannot take the hub's memory or
// descriptors from everyone else.
const (
	// DefaultMaxConnections bounds the connections of every listener
	// together (MQTT, MQTT over TLS and WebSocket, XMPP c2s, HTTP
	// streams): well under the descriptor limit Go raises itself to.
	DefaultMaxConnections = 10000
	// DefaultMaxConnectionsPerAddress bounds the connections from one IP
	// address (a NAT of many devices counts as one).
	DefaultMaxConnectionsPerAddress = 1000
	// DefaultMaxConnectionsPerUser bounds one authenticated principal's
	// connections across all protocols.
	DefaultMaxConnectionsPerUser = 100
	// DefaultMaxSubscriptionsPerClient bounds the filters of one MQTT
	// client, one SSE or WebSocket stream, and one XMPP user's topic
	// subscriptions.
	DefaultMaxSubscriptionsPerClient = 1000
	// DefaultMaxPersistentSessionsPerUser bounds one user's MQTT
	// sessions that outlive their connection.
	DefaultMaxPersistentSessionsPerUser = 32
	// DefaultMaxResourcesPerUser bounds one XMPP user's bound resources,
	// as Prosody's max_resources (10).
	DefaultMaxResourcesPerUser = 10
	// DefaultMaxPendingBytes bounds the bytes written to one connection
	// that its client has not taken yet (NATS max_pending).
	DefaultMaxPendingBytes = 16 << 20
	// DefaultMaxPendingBytesTotal bounds those bytes over all
	// connections; past it the connections with the most pending go first.
	DefaultMaxPendingBytesTotal = 256 << 20
	// DefaultMaxTopicLength bounds a topic or filter in bytes (MQTT's own
	// bound, EMQX max_topic_length).
	DefaultMaxTopicLength = 65535
)

// LimitsConfig is the `limits:` section of the configuration. 0 in a
// field means its default; a negative value means no limit.
type LimitsConfig struct {
	// MaxConnections bounds every listener's connections together.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerAddress bounds the connections from one IP.
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address"`
	// MaxConnectionsPerUser bounds a user's connections, all protocols.
	MaxConnectionsPerUser int `yaml:"max_connections_per_user"`
	// MaxSubscriptionsPerClient bounds the filters of an MQTT client or
	// an SSE/WebSocket stream, and an XMPP user's topic subscriptions.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// MaxPersistentSessionsPerUser bounds a user's MQTT sessions that
	// outlive their connection.
	MaxPersistentSessionsPerUser int `yaml:"max_persistent_sessions_per_user"`
	// MaxResourcesPerUser bounds an XMPP user's bound resources.
	MaxResourcesPerUser int `yaml:"max_resources_per_user"`
	// MaxPendingBytes bounds the bytes one connection has not read yet.
	MaxPendingBytes int64 `yaml:"max_pending_bytes"`
	// MaxPendingBytesTotal bounds them over all connections.
	MaxPendingBytesTotal int64 `yaml:"max_pending_bytes_total"`
	// MaxTopicLength bounds a topic or filter in bytes.
	MaxTopicLength int `yaml:"max_topic_length"`
}

// Validate checks the bounds, naming the key at fault.
func (c LimitsConfig) Validate() error {
	if c.MaxTopicLength > DefaultMaxTopicLength {
		return fmt.Errorf("limits.max_topic_length %d: at most %d (MQTT's own bound)", c.MaxTopicLength, DefaultMaxTopicLength)
	}
	if c.MaxPendingBytes > 0 && c.MaxPendingBytes < 64<<10 {
		return fmt.Errorf("limits.max_pending_bytes %d: at least 65536 (one packet must fit)", c.MaxPendingBytes)
	}
	return nil
}

// withDefaults replaces each 0 by its default.
func (c LimitsConfig) withDefaults() LimitsConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxConnections, DefaultMaxConnections)
	def(&c.MaxConnectionsPerAddress, DefaultMaxConnectionsPerAddress)
	def(&c.MaxConnectionsPerUser, DefaultMaxConnectionsPerUser)
	def(&c.MaxSubscriptionsPerClient, DefaultMaxSubscriptionsPerClient)
	def(&c.MaxPersistentSessionsPerUser, DefaultMaxPersistentSessionsPerUser)
	def(&c.MaxResourcesPerUser, DefaultMaxResourcesPerUser)
	def(&c.MaxTopicLength, DefaultMaxTopicLength)
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.MaxPendingBytesTotal == 0 {
		c.MaxPendingBytesTotal = DefaultMaxPendingBytesTotal
	}
	return c
}

// Errors of the limits. ErrLimit is what every one of them is; an adapter
// maps ErrServerBusy to its "server busy" answer (MQTT 5 0x89, HTTP 503,
// XMPP <resource-constraint/>) and the others to "quota exceeded" (MQTT 5
// 0x97, HTTP 429, XMPP <policy-violation/>).
var (
	ErrLimit = errors.New("limit reached")
	// ErrServerBusy: the hub-wide bound of connections or pending bytes.
	ErrServerBusy = fmt.Errorf("%w: the hub is serving as many connections as it may", ErrLimit)
	// ErrAddressLimit: the connections from one IP address.
	ErrAddressLimit = fmt.Errorf("%w: too many connections from this address", ErrLimit)
	// ErrUserLimit: the connections of one principal.
	ErrUserLimit = fmt.Errorf("%w: too many connections of this user", ErrLimit)
	// ErrSubscriptionLimit: the filters of one client or stream.
	ErrSubscriptionLimit = fmt.Errorf("%w: too many subscriptions", ErrLimit)
	// ErrSessionLimit: a user's persistent sessions.
	ErrSessionLimit = fmt.Errorf("%w: too many persistent sessions of this user", ErrLimit)
	// ErrResourceLimit: an XMPP user's bound resources.
	ErrResourceLimit = fmt.Errorf("%w: too many resources bound for this user", ErrLimit)
	// ErrTopicTooLong: a topic or filter over max_topic_length bytes.
	ErrTopicTooLong = fmt.Errorf("%w: topic too long", ErrLimit)
	// ErrSlowConsumer: a connection over its pending bytes bound, or one
	// of the largest when all of them are over the global budget.
	ErrSlowConsumer = fmt.Errorf("%w: client does not read: pending writes over the bound", ErrLimit)
)

// Limits holds the hub's limits and the counters they are checked
// against, shared by every adapter (through Auth.Limits). SetConfig
// replaces the bounds while clients are connected: new bounds apply to
// new connections, subscriptions and sessions; nobody is dropped.
type Limits struct {
	cfg atomic.Pointer[LimitsConfig]

	mu     sync.Mutex
	total  int
	byAddr map[string]int
	byUser map[string]int

	sessions  keyedSets // user -> persistent MQTT client ids
	resources keyedSets // user -> bound XMPP resources

	refused [limitKinds]atomic.Uint64

	pend pendingBudget
}

// Kinds of refusal counted in LimitStats.Refused.
const (
	kindGlobal = iota
	kindAddress
	kindUser
	kindSubscription
	kindSession
	kindResource
	kindTopic
	kindSlow
	limitKinds
)

var kindNames = [limitKinds]string{"connections", "connections_per_address", "connections_per_user",
	"subscriptions", "persistent_sessions", "resources", "topic_length", "slow_consumer"}

// NewLimits returns limits with cfg's bounds (0: the default).
func NewLimits(cfg LimitsConfig) *Limits {
	l := &Limits{byAddr: map[string]int{}, byUser: map[string]int{}}
	l.sessions.m = map[string]map[string]struct{}{}
	l.resources.m = map[string]map[string]struct{}{}
	l.pend.conns = map[*PendingConn]struct{}{}
	l.SetConfig(cfg)
	return l
}

// SetConfig replaces the bounds (0: the default); what is held already is
// kept.
func (l *Limits) SetConfig(cfg LimitsConfig) {
	c := cfg.withDefaults()
	l.cfg.Store(&c)
}

// Config returns the bounds in force, defaults filled in.
func (l *Limits) Config() LimitsConfig { return *l.cfg.Load() }

// over reports whether n already held reach bound (negative: none).
func over(n, bound int) bool { return bound >= 0 && n >= bound }

// AddressOf is the IP address of a "host:port" remote address, the key of
// the per-address bound (the port differs with every connection).
func AddressOf(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// Acquire counts a new connection from remote ("ip:port" or an IP) of
// user ("" for an anonymous client, which only the global and
// per-address bounds count). It returns the release to call once the
// connection has ended (later calls do nothing), or an error that wraps
// ErrServerBusy, ErrAddressLimit or ErrUserLimit.
func (l *Limits) Acquire(remote, user string) (release func(), err error) {
	c, err := l.AcquireAddress(remote)
	if err != nil {
		return nil, err
	}
	if err := c.SetUser(user); err != nil {
		c.Release()
		return nil, err
	}
	return c.Release, nil
}

// Conn is one connection's place among the limited connections, taken
// in two steps: by its address when it is accepted (AcquireAddress), by
// its user once it has authenticated (SetUser).
type Conn struct {
	l    *Limits
	addr string
	mu   sync.Mutex
	user string
	done bool
}

// AcquireAddress counts a new connection from remote against the global
// and per-address bounds (ErrServerBusy, ErrAddressLimit). Loopback
// addresses are not exempt: a hub in public mode is tested, and may be
// attacked, through them as through any other.
func (l *Limits) AcquireAddress(remote string) (*Conn, error) {
	c := l.cfg.Load()
	addr := AddressOf(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case over(l.total, c.MaxConnections):
		l.refused[kindGlobal].Add(1)
		return nil, fmt.Errorf("%w (%d)", ErrServerBusy, c.MaxConnections)
	case over(l.byAddr[addr], c.MaxConnectionsPerAddress):
		l.refused[kindAddress].Add(1)
		return nil, fmt.Errorf("%w (%s: %d)", ErrAddressLimit, addr, c.MaxConnectionsPerAddress)
	}
	l.total++
	l.byAddr[addr]++
	return &Conn{l: l, addr: addr}, nil
}

// SetUser counts the connection against user's bound (ErrUserLimit); ""
// (anonymous) counts nothing. A connection has one user: a second call
// does nothing.
func (c *Conn) SetUser(user string) error {
	if c == nil || user == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.user != "" || c.done {
		return nil
	}
	l := c.l
	bound := l.cfg.Load().MaxConnectionsPerUser
	l.mu.Lock()
	defer l.mu.Unlock()
	if over(l.byUser[user], bound) {
		l.refused[kindUser].Add(1)
		return fmt.Errorf("%w (%s: %d)", ErrUserLimit, user, bound)
	}
	l.byUser[user]++
	c.user = user
	return nil
}

// Release gives the place back; later calls do nothing.
func (c *Conn) Release() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	c.l.release(c.addr, c.user)
}

// CheckSubscriptions says whether a client holding held filters may add
// adding more: nil, or ErrSubscriptionLimit naming the bound.
// AllowedSubscriptions tells how many would fit.
func (l *Limits) CheckSubscriptions(held, adding int) error {
	if n := l.AllowedSubscriptions(held); n < adding {
		l.refused[kindSubscription].Add(1)
		return fmt.Errorf("%w (%d per client)", ErrSubscriptionLimit, l.cfg.Load().MaxSubscriptionsPerClient)
	}
	return nil
}

// AllowedSubscriptions is how many more filters a client holding held may
// add (a large number when there is no bound).
func (l *Limits) AllowedSubscriptions(held int) int {
	m := l.cfg.Load().MaxSubscriptionsPerClient
	if m < 0 {
		return int(^uint(0) >> 1)
	}
	return max(m-held, 0)
}

// CountSubscriptionRefusals adds n refused filters to the metrics (for an
// adapter that grants some filters of a request and refuses the rest).
func (l *Limits) CountSubscriptionRefusals(n int) { l.refused[kindSubscription].Add(uint64(n)) }

// CheckTopic refuses a topic or filter longer than max_topic_length bytes
// with ErrTopicTooLong.
func (l *Limits) CheckTopic(topic string) error {
	if m := l.cfg.Load().MaxTopicLength; m >= 0 && len(topic) > m {
		l.refused[kindTopic].Add(1)
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTopicTooLong, len(topic), m)
	}
	return nil
}

// ClaimSession counts clientID as one of user's persistent sessions: nil
// when it is counted already (a session resumed) or fits, else
// ErrSessionLimit. ReleaseSession forgets it.
func (l *Limits) ClaimSession(user, clientID string) error {
	if err := l.sessions.claim(user, clientID, l.cfg.Load().MaxPersistentSessionsPerUser); err != nil {
		l.refused[kindSession].Add(1)
		return fmt.Errorf("%w (%s: %d)", ErrSessionLimit, user, l.cfg.Load().MaxPersistentSessionsPerUser)
	}
	return nil
}

// ReleaseSession forgets one of user's persistent sessions.
func (l *Limits) ReleaseSession(user, clientID string) { l.sessions.release(user, clientID) }

// ClaimResource counts an XMPP resource bound for user: nil when it fits,
// else ErrResourceLimit. ReleaseResource forgets it.
func (l *Limits) ClaimResource(user, resource string) error {
	if err := l.resources.claim(user, resource, l.cfg.Load().MaxResourcesPerUser); err != nil {
		l.refused[kindResource].Add(1)
		return fmt.Errorf("%w (%s: %d)", ErrResourceLimit, user, l.cfg.Load().MaxResourcesPerUser)
	}
	return nil
}

// ReleaseResource forgets a resource of user.
func (l *Limits) ReleaseResource(user, resource string) { l.resources.release(user, resource) }

// keyedSets counts members per owner: a user's sessions or resources.
type keyedSets struct {
	mu sync.Mutex
	m  map[string]map[string]struct{}
}

var errFull = errors.New("full")

func (k *keyedSets) claim(owner, member string, bound int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	set := k.m[owner]
	if _, ok := set[member]; ok {
		return nil
	}
	if over(len(set), bound) {
		return errFull
	}
	if set == nil {
		set = map[string]struct{}{}
		k.m[owner] = set
	}
	set[member] = struct{}{}
	return nil
}

func (k *keyedSets) release(owner, member string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if set := k.m[owner]; set != nil {
		delete(set, member)
		if len(set) == 0 {
			delete(k.m, owner)
		}
	}
}

func (k *keyedSets) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, s := range k.m {
		n += len(s)
	}
	return n
}

// LimitStats is a snapshot of the counters, for /metrics.
type LimitStats struct {
	// Connections held, by every listener together.
	Connections int
	// Addresses and Users holding at least one connection.
	Addresses, Users int
	// PersistentSessions and Resources counted against their bounds.
	PersistentSessions, Resources int
	// PendingBytes written to connections and not taken yet, over all.
	PendingBytes int64
	// Refused counts refusals by kind ("connections",
	// "connections_per_address", "connections_per_user",
	// "subscriptions", "persistent_sessions", "resources",
	// "topic_length", "slow_consumer").
	Refused map[string]uint64
}

// Stats returns the counters now.
func (l *Limits) Stats() LimitStats {
	l.mu.Lock()
	s := LimitStats{Connections: l.total, Addresses: len(l.byAddr), Users: len(l.byUser)}
	l.mu.Unlock()
	s.PersistentSessions, s.Resources = l.sessions.count(), l.resources.count()
	s.PendingBytes = l.pend.total.Load()
	s.Refused = make(map[string]uint64, limitKinds)
	for i, n := range kindNames {
		s.Refused[n] = l.refused[i].Load()
	}
	return s
}

// RefusalKinds lists the keys of LimitStats.Refused, sorted.
func RefusalKinds() []string {
	k := append([]string(nil), kindNames[:]...)
	sort.Strings(k)
	return k
}

// Limits returns the bounds every adapter checks (the defaults unless
// SetLimits gave others); nil for a nil Auth.
func (a *Auth) Limits() *Limits {
	if a == nil {
		return nil
	}
	return a.limits.Load()
}

// SetLimits replaces the Limits Auth hands the adapters (the hub's, built
// from its configuration).
func (a *Auth) SetLimits(l *Limits) { a.limits.Store(l) }

// KeepSession counts clientID as one of user's persistent sessions
// whatever the bound: a session that exists (resumed, or found in the
// store after a restart) is never refused.
func (l *Limits) KeepSession(user, clientID string) { _ = l.sessions.claim(user, clientID, -1) }

func (l *Limits) release(addr, user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
	if user != "" {
		if l.byUser[user]--; l.byUser[user] <= 0 {
			delete(l.byUser, user)
		}
	}
}
