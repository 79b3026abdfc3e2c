// Package store keeps the hub's state in SQLite (modernc.org/sqlite, pure
// Go, WAL mode): users with SCRAM-style salted credentials, tokens, ACL
// rules, devices, retained values, durable subscriptions with their queues,
// and key/value buckets for the embedded MQTT broker's sessions. It
// implements broker.Spool and adapters.Credentials.
//
// The database is {data-dir}/hub.db. Every write goes through one writer
// goroutine that commits concurrent writes together (group commit); a
// write returns once its transaction is committed, so a QoS >= 1 message
// acknowledged after Enqueue survives kill -9 of the hub. Whether it also
// survives a power loss or a kernel crash is Options.SyncInterval:
// SyncAlways commits with synchronous=FULL (fsynced before the write
// returns); a duration (the default, DefaultSyncInterval) commits with
// synchronous=NORMAL into the WAL, fsynced at most that long later, so a
// power loss takes at most that interval's commits and leaves the
// database consistent (SQLite's WAL checksums every frame).
// Reads use a separate pool of read-only connections beside it (WAL).
// Another process (hub user add) may open the same directory while the
// hub runs.
//
// Passwords are kept only as SCRAM-SHA-1 and SCRAM-SHA-256 credentials
// (RFC 5802: random salt, 4096 iterations); tokens only as their SHA-256.
// A device that logs in with a password is a user of role
// adapters.RoleDevice named like the device (AddDeviceWithLogin makes
// both).
package store

import (
	"context"
	"errors"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Sentinel errors, matched with errors.Is: ErrNotFound for an absent
// user, device, token, key or credential; ErrExists for a taken name or id.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// Store is the hub's SQLite database. It is safe for concurrent use.
type Store struct {
	// implemented in db.go
	impl
}

// Open opens (creating when needed) the database hub.db in dir, applies
// the schema migrations and returns the store, with the default Options.
func Open(ctx context.Context, dir string) (*Store, error) { return open(ctx, dir, Options{}) }

// OpenWith is Open with options.
func OpenWith(ctx context.Context, dir string, opts Options) (*Store, error) {
	return open(ctx, dir, opts)
}

// User is a principal that logs in with a password: a person, an app or a
// device (Role adapters.RoleDevice).
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// SCRAMCredential is what a SCRAM server needs for one user and mechanism
// (RFC 5802): the salt, the iteration count and the two derived keys.
type SCRAMCredential struct {
	Mechanism  string // "SCRAM-SHA-1" or "SCRAM-SHA-256"
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// Device is a registered device.
type Device struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// PSK is the DTLS pre-shared key (CoAP); never serialized.
	PSK      []byte    `json:"-"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Created  time.Time `json:"created"`
}

// KV is one entry of a key/value bucket.
type KV struct {
	Key   string
	Value []byte
}

var (
	_ broker.Spool         = (*Store)(nil)
	_ adapters.Credentials = (*Store)(nil)
)
