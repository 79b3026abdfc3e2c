package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// tokenLen is the number of random bytes in a bearer token.
const tokenLen = 32

// ErrInvalidACL marks an ACL rule with a bad action or filter.
var ErrInvalidACL = errors.New("invalid ACL rule")

// ACL implements adapters.Credentials.
func (s *Store) ACL(ctx context.Context, name string) ([]adapters.ACLRule, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT action, filter, allow FROM acl WHERE principal = ? ORDER BY pos`, name)
	if err != nil {
		return nil, fmt.Errorf("store: acl of %q: %w", name, err)
	}
	defer rows.Close()
	var out []adapters.ACLRule
	for rows.Next() {
		var r adapters.ACLRule
		if err := rows.Scan(&r.Action, &r.Filter, &r.Allow); err != nil {
			return nil, fmt.Errorf("store: acl of %q: %w", name, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: acl of %q: %w", name, err)
	}
	return out, nil
}

// ValidateACLRule checks an ACL rule as adapters.ValidateRule does (an
// action of publish, subscribe, command or all; a topic filter, or a
// device id for command), marking a bad one ErrInvalidACL.
func ValidateACLRule(r adapters.ACLRule) error {
	if err := adapters.ValidateRule(r); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidACL, err)
	}
	return nil
}

// SetACL replaces a principal's ACL rules. The principal need not exist
// yet (rules may be set before the user or device is created); DeleteUser
// removes them. An empty rules list clears them.
func (s *Store) SetACL(ctx context.Context, name string, rules []adapters.ACLRule) error {
	defer s.principalsChanged() // replica.go
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("store: set acl of %q: %w", name, err)
	}
	for i, r := range rules {
		if err := ValidateACLRule(r); err != nil {
			return fmt.Errorf("store: set acl of %q: rule %d: %w", name, i+1, err)
		}
	}
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM acl WHERE principal = ?`, name); err != nil {
			return err
		}
		for i, r := range rules {
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO acl(principal, pos, action, filter, allow) VALUES (?, ?, ?, ?, ?)`,
				name, i, r.Action, r.Filter, r.Allow); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set acl of %q: %w", name, err)
	}
	return nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateToken issues an opaque bearer token for user valid for ttl (0: no expiry).
func (s *Store) CreateToken(ctx context.Context, user string, ttl time.Duration) (string, error) {
	defer s.principalsChanged() // replica.go
	if ttl < 0 {
		return "", fmt.Errorf("store: create token for %q: negative ttl %v", user, ttl)
	}
	b := make([]byte, tokenLen)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("store: create token for %q: %w", user, err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	var expires int64
	if ttl > 0 {
		expires = now.Add(ttl).UnixNano()
	}
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE name = ?`, user).Scan(&one); err != nil {
			return notFound(err)
		}
		// Expired tokens are swept here, where a write happens anyway.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE expires != 0 AND expires < ?`,
			now.UnixNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens(hash, user, expires, created) VALUES (?, ?, ?, ?)`,
			tokenHash(token), user, expires, now.UnixNano())
		return mapErr(err)
	})
	if err != nil {
		return "", fmt.Errorf("store: create token for %q: %w", user, err)
	}
	return token, nil
}

// VerifyToken returns the user a token belongs to (adapters.ErrBadCredentials
// when unknown or expired).
func (s *Store) VerifyToken(ctx context.Context, token string) (User, error) {
	var (
		u       User
		created int64
		expires int64
	)
	err := s.r.QueryRowContext(ctx,
		`SELECT u.name, u.role, u.created, t.expires FROM tokens t JOIN users u ON u.name = t.user
		 WHERE t.hash = ?`, tokenHash(token)).Scan(&u.Name, &u.Role, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, adapters.ErrBadCredentials
	}
	if err != nil {
		return User{}, fmt.Errorf("store: verify token: %w", err)
	}
	if expires != 0 && time.Now().UnixNano() > expires {
		return User{}, adapters.ErrBadCredentials
	}
	u.Created = fromNano(created)
	return u, nil
}

// DeleteToken revokes a token (ErrNotFound when it is unknown).
func (s *Store) DeleteToken(ctx context.Context, token string) error {
	defer s.principalsChanged() // replica.go
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `DELETE FROM tokens WHERE hash = ?`, tokenHash(token)))
	})
	if err != nil {
		return fmt.Errorf("store: delete token: %w", err)
	}
	return nil
}
