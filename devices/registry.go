// Package devices is the hub's device registry: devices kept in the store
// with their protocol, name, metadata and credentials; their presence, which
// each protocol adapter derives from its own signals and reports here; and
// device commands with their replies, correlated over the bus (or handed to
// a protocol's adapters.Commander).
package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/store"
)

// Errors of the registry; the REST adapter maps them to HTTP statuses.
var (
	// ErrUnknownDevice is returned for a device id that is not registered.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrInvalid marks a device, command name or parameters that cannot be
	// accepted (bad id, unknown protocol, params that are not JSON).
	ErrInvalid = errors.New("invalid device request")
)

// Device protocols a device can be registered with.
const (
	ProtocolMQTT = broker.ProtoMQTT
	ProtocolCoAP = broker.ProtoCoAP
	ProtocolXMPP = broker.ProtoXMPP
)

// Protocols lists the protocols a device can use, in the order the CLI
// documents them.
var Protocols = []string{ProtocolMQTT, ProtocolCoAP, ProtocolXMPP}

// ValidateID checks a device id (also used for command names). The rule
// keeps ids usable everywhere they appear: as one topic level
// (devices/{id}/...), an MQTT username, a DTLS PSK identity and the
// localpart of a JID.
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: id %q: must be 1..128 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, trunc(id))
	}
	return nil
}

// ValidateProtocol checks a device protocol name.
func ValidateProtocol(p string) error {
	if !slices.Contains(Protocols, p) {
		return fmt.Errorf("%w: protocol %q: must be one of %v", ErrInvalid, trunc(p), Protocols)
	}
	return nil
}

// Config configures a Registry.
type Config struct {
	// Store keeps the devices; required.
	Store *store.Store
	// Bus carries presence events and commands. It may be nil for offline
	// use (the `hub device add` command): CRUD works, presence is only
	// recorded in the store, and commands fail.
	Bus broker.Bus
	// Logger receives warnings (nil: slog.Default()).
	Logger *slog.Logger
	// Node is stamped into Origin.Node of what the registry publishes
	// ("" lets the bus fill it).
	Node string
}

// Registry is the device registry. It implements adapters.PresenceSink.
// It is safe for concurrent use.
type Registry struct {
	st   *store.Store
	bus  broker.Bus
	log  *slog.Logger
	node string

	cmu        sync.RWMutex
	commanders map[string]adapters.Commander

	// pmu serializes presence updates so that the store and the retained
	// presence topic agree; last holds the instant of the newest applied
	// event per device, so that a late event cannot undo a newer one.
	pmu  sync.Mutex
	last map[string]time.Time
	// unsent holds, per device, the newest presence whose publish failed
	// (presence.go's RetryPresence sends it again).
	unsent map[string]Presence

	// remote and following are liveness.go's: the hub each device online
	// elsewhere is on, and whether FollowPresence runs.
	remote    remoteNodes
	following atomic.Bool
}

var _ adapters.PresenceSink = (*Registry)(nil)

// New returns a Registry over cfg.Store.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("devices: Store is required")
	}
	r := &Registry{
		st:         cfg.Store,
		bus:        cfg.Bus,
		log:        cfg.Logger,
		node:       cfg.Node,
		commanders: make(map[string]adapters.Commander),
		last:       make(map[string]time.Time),
		unsent:     make(map[string]Presence),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	return r, nil
}

// Add registers a device. The protocol defaults to MQTT. When password is
// not empty it also creates the user d.ID with role device, so the device
// can log in (MQTT username = id); d.PSK is the DTLS pre-shared key of a
// CoAP device. A taken id is store.ErrExists.
func (r *Registry) Add(ctx context.Context, d store.Device, password string) error {
	if err := ValidateID(d.ID); err != nil {
		return err
	}
	if d.Protocol == "" {
		d.Protocol = ProtocolMQTT
	}
	if err := ValidateProtocol(d.Protocol); err != nil {
		return err
	}
	if d.Name == "" {
		d.Name = d.ID
	}
	d.Online, d.LastSeen = false, time.Time{}
	if d.Created.IsZero() {
		d.Created = time.Now().UTC()
	}
	if password != "" {
		if _, err := r.st.GetUser(ctx, d.ID); err == nil {
			return fmt.Errorf("devices: add %q: a user of that name %w", d.ID, store.ErrExists)
		}
	}
	if err := r.st.AddDevice(ctx, d); err != nil {
		return fmt.Errorf("devices: add %q: %w", d.ID, err)
	}
	if password != "" {
		if err := r.st.AddUser(ctx, d.ID, password, adapters.RoleDevice); err != nil {
			// Leave no half-made device behind.
			if derr := r.st.DeleteDevice(ctx, d.ID); derr != nil {
				r.log.Warn("devices: undo add", "device", d.ID, "err", derr)
			}
			return fmt.Errorf("devices: add %q: user: %w", d.ID, err)
		}
	}
	return nil
}

// Get returns a device (ErrUnknownDevice).
func (r *Registry) Get(ctx context.Context, id string) (store.Device, error) {
	d, err := r.st.GetDevice(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, fmt.Errorf("devices: %w %q", ErrUnknownDevice, trunc(id))
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("devices: get %q: %w", id, err)
	}
	return d, nil
}

// List returns every device sorted by id.
func (r *Registry) List(ctx context.Context) ([]store.Device, error) {
	ds, err := r.st.ListDevices(ctx)
	if err != nil {
		return nil, fmt.Errorf("devices: list: %w", err)
	}
	if ds == nil {
		ds = []store.Device{}
	}
	return ds, nil
}

// Patch is a partial update of a device; nil fields are left as they are.
type Patch struct {
	Name     *string
	Protocol *string
	// Metadata, when non-nil, replaces the metadata.
	Metadata map[string]string
	// Password sets the device user's password, creating the user when
	// the device had none.
	Password *string
	// PSK, when non-nil, replaces the DTLS pre-shared key.
	PSK []byte
}

// Update applies p to device id and returns the device as it now is.
func (r *Registry) Update(ctx context.Context, id string, p Patch) (store.Device, error) {
	d, err := r.Get(ctx, id)
	if err != nil {
		return store.Device{}, err
	}
	if p.Name != nil {
		d.Name = *p.Name
	}
	if p.Protocol != nil {
		if err := ValidateProtocol(*p.Protocol); err != nil {
			return store.Device{}, err
		}
		d.Protocol = *p.Protocol
	}
	if p.Metadata != nil {
		d.Metadata = p.Metadata
	}
	d.PSK = p.PSK
	if p.Password != nil {
		if *p.Password == "" {
			return store.Device{}, fmt.Errorf("%w: empty password", ErrInvalid)
		}
		if err := r.setPassword(ctx, id, *p.Password); err != nil {
			return store.Device{}, err
		}
	}
	if err := r.st.UpdateDevice(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Device{}, fmt.Errorf("devices: %w %q", ErrUnknownDevice, trunc(id))
		}
		return store.Device{}, fmt.Errorf("devices: update %q: %w", id, err)
	}
	return r.Get(ctx, id)
}

func (r *Registry) setPassword(ctx context.Context, id, password string) error {
	u, err := r.st.GetUser(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if err := r.st.AddUser(ctx, id, password, adapters.RoleDevice); err != nil {
			return fmt.Errorf("devices: password of %q: %w", id, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("devices: password of %q: %w", id, err)
	case u.Role != adapters.RoleDevice:
		return fmt.Errorf("%w: %q is also the name of a %s user", ErrInvalid, id, u.Role)
	}
	if err := r.st.SetPassword(ctx, id, password); err != nil {
		return fmt.Errorf("devices: password of %q: %w", id, err)
	}
	return nil
}

// Delete removes a device, its device user (if any) and its retained
// presence.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := r.st.DeleteDevice(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("devices: %w %q", ErrUnknownDevice, trunc(id))
		}
		return fmt.Errorf("devices: delete %q: %w", id, err)
	}
	if u, err := r.st.GetUser(ctx, id); err == nil && u.Role == adapters.RoleDevice {
		if err := r.st.DeleteUser(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("devices: delete user of %q: %w", id, err)
		}
	}
	r.pmu.Lock()
	delete(r.last, id)
	r.pmu.Unlock()
	if r.bus != nil {
		// An empty retained payload clears the topic's retained value.
		e := &broker.Envelope{Topic: PresenceTopic(id), Retain: true, QoS: 1,
			Origin: broker.Origin{Protocol: broker.ProtoHub, ClientID: "devices", Node: r.node}}
		if err := r.bus.Publish(ctx, e); err != nil {
			return fmt.Errorf("devices: clear presence of %q: %w", id, err)
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
