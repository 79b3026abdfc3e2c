package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/hubsmith/hub/adapters"
)

// PrincipalRole implements adapters.Credentials: the role of the user name,
// else adapters.RoleDevice when name is a registered device without a
// login (one that authenticates by DTLS PSK). A name that is neither is
// adapters.ErrUnknownPrincipal and ErrNotFound.
func (s *Store) PrincipalRole(ctx context.Context, name string) (string, error) {
	var role sql.NullString
	err := s.r.QueryRowContext(ctx,
		`SELECT COALESCE((SELECT role FROM users WHERE name = ?), (SELECT ? FROM devices WHERE id = ?))`,
		name, adapters.RoleDevice, name).Scan(&role)
	if err != nil {
		return "", fmt.Errorf("store: role of %q: %w", name, err)
	}
	if !role.Valid {
		return "", fmt.Errorf("store: role of %q: %w: %w", name, adapters.ErrUnknownPrincipal, ErrNotFound)
	}
	return role.String, nil
}
