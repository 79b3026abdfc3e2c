// Package store keeps the hub's state in SQLite (modernc.org/sqlite, pure
// Go, WAL mode): users with SCRAM-style salted credentials, tokens, ACL
// rules, devices, retained values, durable subscriptions with their queues,
// and key/value buckets for the embedded MQTT broker's sessions. It
// implements broker.Spool and adapters.Credentials.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// Sentinel errors.
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
// the schema migrations and returns the store.
func Open(ctx context.Context, dir string) (*Store, error) { return open(ctx, dir) }

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
