package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hubsmith/hub/adapters"
)

// MaxNameLen is the longest user or device name, in bytes.
const MaxNameLen = 64

// nameForbidden are the characters a name may not contain: those RFC 7622
// forbids in a JID localpart (the name is the localpart of the user's or
// device's JID) and MQTT's wildcards (the name is an MQTT client id and
// one topic level, as in devices/{id}/...).
const nameForbidden = "\"&'/:<>@+#"

// Validation errors; the returned errors wrap them and say what is wrong.
var (
	ErrInvalidName     = errors.New("invalid name")
	ErrInvalidRole     = errors.New("invalid role")
	ErrInvalidPassword = errors.New("invalid password")
)

// ValidateName checks a user or device name, which must work unchanged as
// an XMPP localpart, an MQTT client id and username, and one topic level:
// 1 to MaxNameLen bytes of valid UTF-8 with no spaces, no control
// characters and none of " & ' / : < > @ + #.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: a name may not be empty", ErrInvalidName)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w %q: not valid UTF-8", ErrInvalidName, name)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w %.32q...: %d bytes long, the limit is %d", ErrInvalidName, name, len(name), MaxNameLen)
	}
	for _, r := range name {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("%w %q: spaces are not allowed (a name is also an XMPP address and an MQTT client id)", ErrInvalidName, name)
		case unicode.IsControl(r):
			return fmt.Errorf("%w %q: control character %U is not allowed", ErrInvalidName, name, r)
		case strings.ContainsRune(nameForbidden, r):
			return fmt.Errorf("%w %q: %q is not allowed (a name may not contain any of %s)", ErrInvalidName, name, r, nameForbidden)
		}
	}
	return nil
}

func validateRole(role string) error {
	switch role {
	case adapters.RoleAdmin, adapters.RoleUser, adapters.RoleDevice:
		return nil
	}
	return fmt.Errorf("%w %q: want %s, %s or %s", ErrInvalidRole, role,
		adapters.RoleAdmin, adapters.RoleUser, adapters.RoleDevice)
}

func validatePassword(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPassword)
	}
	return nil
}

// SetSCRAMIterations sets the PBKDF2 iteration count of credentials made
// from now on; a stored credential with fewer is re-derived at its user's
// next successful password login (VerifyPassword). Below
// MinSCRAMIterations is refused.
func (s *Store) SetSCRAMIterations(n int) error {
	if n < MinSCRAMIterations {
		return fmt.Errorf("store: SCRAM iterations %d: must be at least %d", n, MinSCRAMIterations)
	}
	s.iterations.Store(int64(n))
	return nil
}

// SCRAMIterationCount is the PBKDF2 iteration count of new credentials;
// a SASL server offers it for unknown users too, so that the count does
// not tell who exists.
func (s *Store) SCRAMIterationCount() int {
	if n := s.iterations.Load(); n > 0 {
		return int(n)
	}
	return SCRAMIterations
}

// newCredentials derives fresh SCRAM credentials, one per mechanism, each
// with its own random salt.
func (s *Store) newCredentials(password string) ([]SCRAMCredential, error) {
	out := make([]SCRAMCredential, 0, len(mechanisms))
	for _, m := range mechanisms {
		salt := make([]byte, saltLen)
		if _, err := rand.Read(salt); err != nil {
			return nil, fmt.Errorf("salt: %w", err)
		}
		c, err := DeriveSCRAM(m, password, salt, s.SCRAMIterationCount())
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func putCredentials(ctx context.Context, tx *sql.Tx, name string, creds []SCRAMCredential) error {
	for _, c := range creds {
		if _, err := tx.ExecContext(ctx,
			`INSERT OR REPLACE INTO scram(user, mechanism, salt, iterations, stored_key, server_key)
			 VALUES (?, ?, ?, ?, ?, ?)`,
			name, c.Mechanism, c.Salt, c.Iterations, c.StoredKey, c.ServerKey); err != nil {
			return err
		}
	}
	return nil
}

// AddUser creates a user with a password and role (ErrExists if taken).
// A device that logs in with a password (MQTT, XMPP) is a user of role
// adapters.RoleDevice named like the device; AddDevice does not create it.
func (s *Store) AddUser(ctx context.Context, name, password, role string) error {
	defer s.principalsChanged() // replica.go
	if err := errors.Join(ValidateName(name), validatePassword(password), validateRole(role)); err != nil {
		return fmt.Errorf("store: add user %q: %w", name, err)
	}
	creds, err := s.newCredentials(password)
	if err != nil {
		return fmt.Errorf("store: add user %q: %w", name, err)
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error { return insertUser(ctx, tx, name, role, creds) })
	if err != nil {
		return fmt.Errorf("store: add user %q: %w", name, err)
	}
	s.auth.invalidate(name)
	return nil
}

func insertUser(ctx context.Context, tx *sql.Tx, name, role string, creds []SCRAMCredential) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO users(name, role, created) VALUES (?, ?, ?)`,
		name, role, time.Now().UnixNano()); err != nil {
		return mapErr(err)
	}
	return putCredentials(ctx, tx, name, creds)
}

// SetPassword replaces a user's password (ErrNotFound).
func (s *Store) SetPassword(ctx context.Context, name, password string) error {
	defer s.principalsChanged() // replica.go
	if err := validatePassword(password); err != nil {
		return fmt.Errorf("store: set password of %q: %w", name, err)
	}
	creds, err := s.newCredentials(password)
	if err != nil {
		return fmt.Errorf("store: set password of %q: %w", name, err)
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE name = ?`, name).Scan(&one); err != nil {
			return notFound(err)
		}
		return putCredentials(ctx, tx, name, creds)
	})
	s.auth.invalidate(name)
	if err != nil {
		return fmt.Errorf("store: set password of %q: %w", name, err)
	}
	return nil
}

// SetRole changes a user's role (ErrNotFound, ErrInvalidRole).
func (s *Store) SetRole(ctx context.Context, name, role string) error {
	defer s.principalsChanged() // replica.go
	if err := validateRole(role); err != nil {
		return fmt.Errorf("store: set role of %q: %w", name, err)
	}
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET role = ? WHERE name = ?`, role, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	s.auth.invalidate(name)
	if err != nil {
		return fmt.Errorf("store: set role of %q: %w", name, err)
	}
	return nil
}

// DeleteUser removes a user, its tokens and ACL rules (ErrNotFound).
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	defer s.principalsChanged() // replica.go
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// scram and tokens rows go by ON DELETE CASCADE.
		if err := mustAffect(tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM acl WHERE principal = ?`, name); err != nil {
			return err
		}
		return markRevoked(ctx, tx, name)
	})
	s.auth.invalidate(name)
	if err != nil {
		return fmt.Errorf("store: delete user %q: %w", name, err)
	}
	return nil
}

// RevokedBucket is the KV bucket naming the principals deleted whose
// sessions, subscriptions, queues and rosters a hub must still remove:
// a deletion marks the name in the same transaction (so a deletion made
// with the CLI while the hub is stopped is carried out at its next
// start), and the hub clears the mark once it has revoked the principal.
const RevokedBucket = "hub.revoked"

func markRevoked(ctx context.Context, tx *sql.Tx, name string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO kv(bucket, key, value) VALUES (?, ?, ?)
		ON CONFLICT(bucket, key) DO UPDATE SET value = excluded.value`,
		RevokedBucket, name, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	return err
}

// GetUser returns a user (ErrNotFound).
func (s *Store) GetUser(ctx context.Context, name string) (User, error) {
	u := User{Name: name}
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT role, created FROM users WHERE name = ?`, name).Scan(&u.Role, &created)
	if err != nil {
		return User{}, fmt.Errorf("store: get user %q: %w", name, notFound(err))
	}
	u.Created = fromNano(created)
	return u, nil
}

// ListUsers returns every user sorted by name.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name, role, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		var created int64
		if err := rows.Scan(&u.Name, &u.Role, &created); err != nil {
			return nil, fmt.Errorf("store: list users: %w", err)
		}
		u.Created = fromNano(created)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	return out, nil
}

// dummySalt stands in for an unknown user's salt so that a failed lookup
// costs the same PBKDF2 work as a wrong password.
var dummySalt = []byte("hub-no-such-user")

// VerifyPassword implements adapters.Credentials. It recomputes the
// SCRAM-SHA-256 StoredKey from the password and compares it in constant
// time. The result of the slow PBKDF2 step is remembered for (name,
// password); a remembered result counts only while the stored key is
// still the one it was checked against, so a password changed or a user
// deleted by another process (hub user add) takes effect at once.
func (s *Store) VerifyPassword(ctx context.Context, name, password string) (string, error) {
	var (
		role       string
		salt, key  []byte
		iterations int
	)
	err := s.r.QueryRowContext(ctx,
		`SELECT u.role, c.salt, c.iterations, c.stored_key FROM users u
		 JOIN scram c ON c.user = u.name AND c.mechanism = ?
		 WHERE u.name = ?`, MechSCRAMSHA256, name).Scan(&role, &salt, &iterations, &key)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("store: verify password of %q: %w", name, err)
	}
	known := err == nil
	pwSum := sha256.Sum256([]byte(password))
	if known {
		if cached, ok := s.auth.get(name, pwSum); ok && subtle.ConstantTimeCompare(cached, key) == 1 {
			return role, nil
		}
	} else {
		// Same work as for a wrong password.
		salt, iterations, key = dummySalt, s.SCRAMIterationCount(), make([]byte, sha256.Size)
	}
	stored, _, err := deriveKeys(password, salt, iterations, sha256.New)
	if err != nil {
		return "", fmt.Errorf("store: verify password of %q: %w", name, err)
	}
	if subtle.ConstantTimeCompare(stored, key) != 1 || !known {
		return "", adapters.ErrBadCredentials
	}
	if iterations < s.SCRAMIterationCount() {
		// The password is at hand only now: re-derive at today's count.
		// A failure leaves the old credential, which still works.
		if err := s.upgradeCredentials(ctx, name, password, key); err != nil {
			s.log().Warn("store: upgrade SCRAM credentials", "user", name, "err", err)
		} else {
			return role, nil
		}
	}
	s.auth.put(name, pwSum, key)
	return role, nil
}

// upgradeCredentials replaces name's credentials with ones at the current
// iteration count, unless they changed since old was read.
func (s *Store) upgradeCredentials(ctx context.Context, name, password string, old []byte) error {
	defer s.principalsChanged() // replica.go
	creds, err := s.newCredentials(password)
	if err != nil {
		return err
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var key []byte
		if err := tx.QueryRowContext(ctx, `SELECT stored_key FROM scram WHERE user = ? AND mechanism = ?`,
			name, MechSCRAMSHA256).Scan(&key); err != nil {
			return notFound(err)
		}
		if subtle.ConstantTimeCompare(key, old) != 1 {
			return nil // a new password came in meanwhile
		}
		return putCredentials(ctx, tx, name, creds)
	})
	s.auth.invalidate(name)
	return err
}

// SCRAM returns the SCRAM credential of a user for "SCRAM-SHA-1" or
// "SCRAM-SHA-256" (ErrNotFound).
func (s *Store) SCRAM(ctx context.Context, name, mechanism string) (SCRAMCredential, error) {
	if _, err := mechHash(mechanism); err != nil {
		return SCRAMCredential{}, fmt.Errorf("store: scram of %q: %w", name, err)
	}
	c := SCRAMCredential{Mechanism: mechanism}
	err := s.r.QueryRowContext(ctx,
		`SELECT salt, iterations, stored_key, server_key FROM scram WHERE user = ? AND mechanism = ?`,
		name, mechanism).Scan(&c.Salt, &c.Iterations, &c.StoredKey, &c.ServerKey)
	if err != nil {
		return SCRAMCredential{}, fmt.Errorf("store: scram of %q: %w", name, notFound(err))
	}
	return c, nil
}

// authCacheMax bounds the verification cache; it is emptied when full.
const authCacheMax = 4096

// authCache remembers successful password checks, keyed by name and the
// password's SHA-256, because MQTT clients reconnect often and PBKDF2 is
// deliberately slow. The value is the StoredKey the password matched.
type authCache struct {
	mu sync.Mutex
	m  map[authKey][]byte
}

type authKey struct {
	name string
	sum  [sha256.Size]byte
}

func (c *authCache) init() { c.m = make(map[authKey][]byte) }

func (c *authCache) get(name string, sum [sha256.Size]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key, ok := c.m[authKey{name, sum}]
	return key, ok
}

func (c *authCache) put(name string, sum [sha256.Size]byte, storedKey []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= authCacheMax {
		clear(c.m)
	}
	c.m[authKey{name, sum}] = storedKey
}

// invalidate forgets name's entries (they would no longer match anyway;
// this frees them).
func (c *authCache) invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.name == name {
			delete(c.m, k)
		}
	}
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
