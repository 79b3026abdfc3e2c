// Package adapters holds the contract every protocol adapter implements and
// what they share: authentication and authorization of principals, the
// anonymous-access rule, and payload/content-type helpers.
package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Adapter is a protocol adapter: it translates one protocol to and from
// broker envelopes. cmd/hub starts every enabled adapter and stops them in
// reverse order. Extra abilities are optional interfaces (HealthChecker,
// PresenceSource, Commander, Revoker) discovered with a type assertion.
type Adapter interface {
	// Name is the protocol name ("mqtt", "coap", "xmpp", "rest").
	Name() string
	// Start binds the adapter's listeners and returns once they accept;
	// the adapter runs until Stop. ctx bounds start-up only.
	Start(ctx context.Context) error
	// Stop closes listeners and connections and returns when every
	// goroutine of the adapter has ended, or when ctx is done.
	Stop(ctx context.Context) error
}

// HealthChecker is implemented by an adapter that can say whether its
// listeners accept; /healthz is 200 only when every one returns nil.
type HealthChecker interface {
	Healthy() error
}

// Addresser is implemented by an adapter that reports the addresses it
// actually listens on (useful with port 0 in tests).
type Addresser interface {
	Addrs() map[string]string
}

// PresenceSink is told when a device comes online or goes offline; the
// devices registry implements it.
type PresenceSink interface {
	DevicePresence(ctx context.Context, deviceID, protocol string, online bool, at time.Time)
}

// PresenceSource is implemented by an adapter that can report device
// presence from its protocol's own signals.
type PresenceSource interface {
	SetPresenceSink(PresenceSink)
}

// Command is a device command on its way to a device.
type Command struct {
	// ID correlates the reply ("REQ" in DESIGN.md).
	ID string
	// DeviceID is the target device.
	DeviceID string
	// Name is the command name.
	Name string
	// Params is the JSON parameters (may be null).
	Params json.RawMessage
}

// Commander is implemented by an adapter that can deliver a device command
// over its protocol and bring back the reply.
type Commander interface {
	// Protocol is the device protocol this commander serves.
	Protocol() string
	// SendCommand delivers cmd and waits for the device's reply until ctx
	// is done (context.DeadlineExceeded then). It returns ErrDeviceOffline
	// at once when the device is not connected.
	SendCommand(ctx context.Context, cmd Command) (json.RawMessage, error)
}

// ErrDeviceOffline is returned by a Commander for a device that is known to
// be offline.
var ErrDeviceOffline = errors.New("device offline")

// Revoker is implemented by an adapter that can end the connections,
// streams and sessions of one principal: a deleted user or device, or one
// whose role changed (its clients reconnect under the new role). The
// gateway calls every Revoker after such a change; the bus's access check
// already stops deliveries, Revoke stops the connections themselves.
type Revoker interface {
	// Revoke closes every connection and stream of principal and forgets
	// what the adapter keeps for it (persistent sessions, subscriptions,
	// rosters, offline messages). It returns how many connections and
	// streams it closed, and returns by the time they are closed or ctx
	// is done.
	Revoke(ctx context.Context, principal string) int
}
