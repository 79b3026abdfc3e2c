package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// SetDeviceCommands stores the JSON command declaration of device id (the
// devices package validates it; nil or empty clears it). ErrNotFound for
// an unregistered device.
func (s *Store) SetDeviceCommands(ctx context.Context, id string, commands json.RawMessage) error {
	if len(commands) > 0 && !json.Valid(commands) {
		return fmt.Errorf("store: commands of device %q: %w: not JSON", id, ErrInvalidDevice)
	}
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return mustAffect(tx.ExecContext(ctx, `UPDATE devices SET commands = ? WHERE id = ?`, string(commands), id))
	})
	if err != nil {
		return fmt.Errorf("store: set commands of device %q: %w", id, err)
	}
	return nil
}

// DeviceCommands returns the JSON command declaration of device id (nil
// when none was stored). ErrNotFound for an unregistered device.
func (s *Store) DeviceCommands(ctx context.Context, id string) (json.RawMessage, error) {
	var c string
	if err := s.r.QueryRowContext(ctx, `SELECT commands FROM devices WHERE id = ?`, id).Scan(&c); err != nil {
		return nil, fmt.Errorf("store: commands of device %q: %w", id, notFound(err))
	}
	if c == "" {
		return nil, nil
	}
	return json.RawMessage(c), nil
}
