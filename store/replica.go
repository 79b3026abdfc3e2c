package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/hubsmith/hub/adapters"
)

// Principal record kinds: the first part of a PrincipalRecords key
// ("user/alice", "device/lamp1", "acl/alice", "token/{sha256 hex}").
const (
	RecordUser   = "user"
	RecordDevice = "device"
	RecordACL    = "acl"
	RecordToken  = "token"
)

// ErrInvalidRecord marks a principal record that cannot be applied: an
// unknown kind, a bad name, a value that does not decode.
var ErrInvalidRecord = errors.New("invalid principal record")

// userRecord is a user as the cluster replicates it: its role and its
// SCRAM credentials (salted and derived, never the password).
type userRecord struct {
	Role    string            `json:"role"`
	Created int64             `json:"created"`
	SCRAM   []SCRAMCredential `json:"scram"`
}

// deviceRecord is a device's registry entry without its presence, which
// each hub follows on its own.
type deviceRecord struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Metadata string `json:"metadata"`
	PSK      []byte `json:"psk,omitempty"`
	Created  int64  `json:"created"`
}

// tokenRecord is a bearer token by its SHA-256 hash (the store never
// holds the token itself).
type tokenRecord struct {
	User    string `json:"user"`
	Expires int64  `json:"expires"`
	Created int64  `json:"created"`
}

// SetPrincipalHook sets fn to be called after every change this store
// makes to users, devices, ACL rules or tokens (nil: none), so that a
// replicator (cluster.Principals) looks at PrincipalRecords again. fn
// must not block.
func (s *Store) SetPrincipalHook(fn func()) {
	if fn == nil {
		s.onPrincipal.Store(nil)
		return
	}
	s.onPrincipal.Store(&fn)
}

// principalsChanged calls the principal hook, if any.
func (s *Store) principalsChanged() {
	if fn := s.onPrincipal.Load(); fn != nil {
		(*fn)()
	}
}

// PrincipalRecords returns every user, device, ACL rule list and token
// as a record keyed "{kind}/{name}", its value a canonical JSON encoding:
// equal rows give equal bytes, so a replicator tells a change by
// comparing them. Users carry their SCRAM credentials, tokens are keyed
// by their hash, devices leave out their presence.
func (s *Store) PrincipalRecords(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	users := map[string]*userRecord{}
	var order []string
	rows, err := s.r.QueryContext(ctx, `SELECT name, role, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: principal records: users: %w", err)
	}
	for rows.Next() {
		var name string
		u := &userRecord{SCRAM: []SCRAMCredential{}}
		if err := rows.Scan(&name, &u.Role, &u.Created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: principal records: users: %w", err)
		}
		users[name] = u
		order = append(order, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: principal records: users: %w", err)
	}
	rows, err = s.r.QueryContext(ctx,
		`SELECT user, mechanism, salt, iterations, stored_key, server_key FROM scram ORDER BY user, mechanism`)
	if err != nil {
		return nil, fmt.Errorf("store: principal records: scram: %w", err)
	}
	for rows.Next() {
		var name string
		var c SCRAMCredential
		if err := rows.Scan(&name, &c.Mechanism, &c.Salt, &c.Iterations, &c.StoredKey, &c.ServerKey); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: principal records: scram: %w", err)
		}
		if u := users[name]; u != nil {
			u.SCRAM = append(u.SCRAM, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: principal records: scram: %w", err)
	}
	for _, name := range order {
		if err := putRecord(out, RecordUser, name, users[name]); err != nil {
			return nil, err
		}
	}

	rows, err = s.r.QueryContext(ctx, `SELECT id, name, protocol, metadata, psk, created FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: principal records: devices: %w", err)
	}
	for rows.Next() {
		var id string
		var d deviceRecord
		if err := rows.Scan(&id, &d.Name, &d.Protocol, &d.Metadata, &d.PSK, &d.Created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: principal records: devices: %w", err)
		}
		if err := putRecord(out, RecordDevice, id, d); err != nil {
			rows.Close()
			return nil, err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: principal records: devices: %w", err)
	}

	acls := map[string][]adapters.ACLRule{}
	rows, err = s.r.QueryContext(ctx, `SELECT principal, action, filter, allow FROM acl ORDER BY principal, pos`)
	if err != nil {
		return nil, fmt.Errorf("store: principal records: acl: %w", err)
	}
	for rows.Next() {
		var name string
		var r adapters.ACLRule
		if err := rows.Scan(&name, &r.Action, &r.Filter, &r.Allow); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: principal records: acl: %w", err)
		}
		acls[name] = append(acls[name], r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: principal records: acl: %w", err)
	}
	for name, rules := range acls {
		if err := putRecord(out, RecordACL, name, rules); err != nil {
			return nil, err
		}
	}

	rows, err = s.r.QueryContext(ctx, `SELECT hash, user, expires, created FROM tokens`)
	if err != nil {
		return nil, fmt.Errorf("store: principal records: tokens: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var hash []byte
		var t tokenRecord
		if err := rows.Scan(&hash, &t.User, &t.Expires, &t.Created); err != nil {
			return nil, fmt.Errorf("store: principal records: tokens: %w", err)
		}
		if err := putRecord(out, RecordToken, hex.EncodeToString(hash), t); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: principal records: tokens: %w", err)
	}
	return out, nil
}

func putRecord(out map[string][]byte, kind, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: principal record %s/%s: %w", kind, name, err)
	}
	out[kind+"/"+name] = b
	return nil
}

// SplitRecordKey splits a PrincipalRecords key into its kind and name,
// checking both.
func SplitRecordKey(key string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: key %q: want kind/name", ErrInvalidRecord, key)
	}
	switch kind {
	case RecordUser, RecordDevice, RecordACL:
		if err := ValidateName(name); err != nil {
			return "", "", fmt.Errorf("%w: key %q: %w", ErrInvalidRecord, key, err)
		}
	case RecordToken:
		if b, err := hex.DecodeString(name); err != nil || len(b) != 32 {
			return "", "", fmt.Errorf("%w: key %q: want a SHA-256 in hex", ErrInvalidRecord, key)
		}
	default:
		return "", "", fmt.Errorf("%w: key %q: unknown kind %q", ErrInvalidRecord, key, kind)
	}
	return kind, name, nil
}

// ApplyPrincipal writes a record another hub made (PrincipalRecords'
// key and value) into this store, replacing what the store holds under
// that key. A token whose user this store does not hold yet is
// ErrNotFound: apply the user first.
func (s *Store) ApplyPrincipal(ctx context.Context, key string, value []byte) error {
	kind, name, err := SplitRecordKey(key)
	if err != nil {
		return fmt.Errorf("store: apply %w", err)
	}
	var fn func(ctx context.Context, tx *sql.Tx) error
	switch kind {
	case RecordUser:
		var u userRecord
		if err := json.Unmarshal(value, &u); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		if err := validateRole(u.Role); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		fn = func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO users(name, role, created) VALUES (?, ?, ?)
				ON CONFLICT(name) DO UPDATE SET role = excluded.role, created = excluded.created`,
				name, u.Role, u.Created); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM scram WHERE user = ?`, name); err != nil {
				return err
			}
			return putCredentials(ctx, tx, name, u.SCRAM)
		}
	case RecordDevice:
		var d deviceRecord
		if err := json.Unmarshal(value, &d); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		if err := validateDevice(Device{ID: name, Name: d.Name, Protocol: d.Protocol}); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		fn = func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO devices(id, name, protocol, metadata, psk, created)
				VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name,
				protocol = excluded.protocol, metadata = excluded.metadata, psk = excluded.psk, created = excluded.created`,
				name, d.Name, d.Protocol, d.Metadata, nilIfEmpty(d.PSK), d.Created)
			return err
		}
	case RecordACL:
		var rules []adapters.ACLRule
		if err := json.Unmarshal(value, &rules); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		if err := s.SetACL(ctx, name, rules); err != nil {
			return fmt.Errorf("store: apply %s: %w", key, err)
		}
		return nil
	case RecordToken:
		var t tokenRecord
		if err := json.Unmarshal(value, &t); err != nil {
			return fmt.Errorf("store: apply %s: %w: %w", key, ErrInvalidRecord, err)
		}
		hash, _ := hex.DecodeString(name)
		fn = func(ctx context.Context, tx *sql.Tx) error {
			var one int
			if err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE name = ?`, t.User).Scan(&one); err != nil {
				return notFound(err)
			}
			_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO tokens(hash, user, expires, created) VALUES (?, ?, ?, ?)`,
				hash, t.User, t.Expires, t.Created)
			return err
		}
	}
	if err := s.tx(ctx, fn); err != nil {
		return fmt.Errorf("store: apply %s: %w", key, err)
	}
	if kind == RecordUser {
		s.auth.invalidate(name)
	}
	s.principalsChanged()
	return nil
}

// RemovePrincipal removes what this store holds under a record key
// because another hub deleted it. A user or device removed is marked for
// revocation as DeleteUser and DeleteDevice mark it, and its name is
// returned (for the hub to revoke); an ACL list or token gives "". A key
// already absent is no error.
func (s *Store) RemovePrincipal(ctx context.Context, key string) (revoke string, err error) {
	kind, name, err := SplitRecordKey(key)
	if err != nil {
		return "", fmt.Errorf("store: remove %w", err)
	}
	switch kind {
	case RecordUser:
		err = s.DeleteUser(ctx, name)
		revoke = name
	case RecordDevice:
		err = s.DeleteDevice(ctx, name)
		revoke = name
	case RecordACL:
		err = s.SetACL(ctx, name, nil)
	case RecordToken:
		hash, _ := hex.DecodeString(name)
		err = s.exec(ctx, `DELETE FROM tokens WHERE hash = ?`, hash)
		s.principalsChanged()
	}
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: remove %s: %w", key, err)
	}
	return revoke, nil
}
