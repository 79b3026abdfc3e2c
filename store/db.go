package store

import (
	"context"
	"errors"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

var errTODO = errors.New("store: not implemented yet")

type impl struct{}

func open(ctx context.Context, dir string) (*Store, error) { return nil, errTODO }

// Close closes the database.
func (s *Store) Close() error { return errTODO }

// AddUser creates a user with a password and role (ErrExists if taken).
func (s *Store) AddUser(ctx context.Context, name, password, role string) error { return errTODO }

// SetPassword replaces a user's password (ErrNotFound).
func (s *Store) SetPassword(ctx context.Context, name, password string) error { return errTODO }

// DeleteUser removes a user, its tokens and ACL rules (ErrNotFound).
func (s *Store) DeleteUser(ctx context.Context, name string) error { return errTODO }

// GetUser returns a user (ErrNotFound).
func (s *Store) GetUser(ctx context.Context, name string) (User, error) { return User{}, errTODO }

// ListUsers returns every user sorted by name.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) { return nil, errTODO }

// VerifyPassword implements adapters.Credentials.
func (s *Store) VerifyPassword(ctx context.Context, name, password string) (string, error) {
	return "", errTODO
}

// SCRAM returns the SCRAM credential of a user for "SCRAM-SHA-1" or
// "SCRAM-SHA-256" (ErrNotFound).
func (s *Store) SCRAM(ctx context.Context, name, mechanism string) (SCRAMCredential, error) {
	return SCRAMCredential{}, errTODO
}

// ACL implements adapters.Credentials.
func (s *Store) ACL(ctx context.Context, name string) ([]adapters.ACLRule, error) { return nil, errTODO }

// SetACL replaces a principal's ACL rules.
func (s *Store) SetACL(ctx context.Context, name string, rules []adapters.ACLRule) error { return errTODO }

// CreateToken issues an opaque bearer token for user valid for ttl (0: no expiry).
func (s *Store) CreateToken(ctx context.Context, user string, ttl time.Duration) (string, error) {
	return "", errTODO
}

// VerifyToken returns the user a token belongs to (adapters.ErrBadCredentials
// when unknown or expired).
func (s *Store) VerifyToken(ctx context.Context, token string) (User, error) { return User{}, errTODO }

// DeleteToken revokes a token.
func (s *Store) DeleteToken(ctx context.Context, token string) error { return errTODO }

// AddDevice registers a device (ErrExists).
func (s *Store) AddDevice(ctx context.Context, d Device) error { return errTODO }

// GetDevice returns a device (ErrNotFound).
func (s *Store) GetDevice(ctx context.Context, id string) (Device, error) { return Device{}, errTODO }

// ListDevices returns every device sorted by id.
func (s *Store) ListDevices(ctx context.Context) ([]Device, error) { return nil, errTODO }

// UpdateDevice replaces name, protocol, metadata (and PSK when non-nil).
func (s *Store) UpdateDevice(ctx context.Context, d Device) error { return errTODO }

// DeleteDevice removes a device (ErrNotFound).
func (s *Store) DeleteDevice(ctx context.Context, id string) error { return errTODO }

// SetPresence records a device's presence.
func (s *Store) SetPresence(ctx context.Context, id string, online bool, at time.Time) error {
	return errTODO
}

// DevicePSK returns a device's DTLS pre-shared key (ErrNotFound).
func (s *Store) DevicePSK(ctx context.Context, id string) ([]byte, error) { return nil, errTODO }

// KVPut sets key in bucket.
func (s *Store) KVPut(ctx context.Context, bucket, key string, value []byte) error { return errTODO }

// KVGet reads key in bucket (ErrNotFound).
func (s *Store) KVGet(ctx context.Context, bucket, key string) ([]byte, error) { return nil, errTODO }

// KVDelete removes key from bucket (no error when absent).
func (s *Store) KVDelete(ctx context.Context, bucket, key string) error { return errTODO }

// KVList returns a bucket's entries sorted by key.
func (s *Store) KVList(ctx context.Context, bucket string) ([]KV, error) { return nil, errTODO }

// SaveRetained implements broker.Spool.
func (s *Store) SaveRetained(ctx context.Context, e *broker.Envelope) error { return errTODO }

// DeleteRetained implements broker.Spool.
func (s *Store) DeleteRetained(ctx context.Context, topic string) error { return errTODO }

// LoadRetained implements broker.Spool.
func (s *Store) LoadRetained(ctx context.Context) ([]*broker.Envelope, error) { return nil, errTODO }

// SaveSubscription implements broker.Spool.
func (s *Store) SaveSubscription(ctx context.Context, d broker.DurableSubscription) error {
	return errTODO
}

// DeleteSubscription implements broker.Spool.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error { return errTODO }

// LoadSubscriptions implements broker.Spool.
func (s *Store) LoadSubscriptions(ctx context.Context) ([]broker.DurableSubscription, error) {
	return nil, errTODO
}

// Enqueue implements broker.Spool.
func (s *Store) Enqueue(ctx context.Context, e *broker.Envelope, ids []string) error { return errTODO }

// Dequeue implements broker.Spool.
func (s *Store) Dequeue(ctx context.Context, id string, max int) ([]broker.Queued, error) {
	return nil, errTODO
}

// Ack implements broker.Spool.
func (s *Store) Ack(ctx context.Context, id string, seq int64) error { return errTODO }
