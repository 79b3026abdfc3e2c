package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// ErrInvalidDevice marks a device with a bad protocol or metadata.
var ErrInvalidDevice = errors.New("invalid device")

// Protocols a device may name; "" means not known yet.
var deviceProtocols = map[string]bool{
	"":               true,
	broker.ProtoMQTT: true,
	broker.ProtoCoAP: true,
	broker.ProtoXMPP: true,
	broker.ProtoREST: true,
}

func validateDevice(d Device) error {
	if err := ValidateName(d.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if !utf8.ValidString(d.Name) {
		return fmt.Errorf("%w: name %q: not valid UTF-8", ErrInvalidDevice, d.Name)
	}
	for k, v := range d.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata %q: %q: not valid UTF-8", ErrInvalidDevice, k, v)
		}
	}
	if !deviceProtocols[d.Protocol] {
		return fmt.Errorf("%w: protocol %q: want mqtt, coap, xmpp, rest or empty", ErrInvalidDevice, d.Protocol)
	}
	return nil
}

func encodeMetadata(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("%w: metadata: %v", ErrInvalidDevice, err)
	}
	return string(b), nil
}

// AddDevice registers a device (ErrExists). It stores the registry entry
// only: a device that logs in with a password (MQTT, XMPP) also needs a
// user of role adapters.RoleDevice with the same name; create both at once
// with AddDeviceWithLogin. The PSK, when set, is what CoAP over DTLS checks
// with the device id as PSK identity. Created defaults to now.
func (s *Store) AddDevice(ctx context.Context, d Device) error {
	return s.AddDeviceWithLogin(ctx, d, "")
}

// AddDeviceWithLogin registers a device and, when password is not empty,
// the user of the same name and role adapters.RoleDevice it logs in with,
// in one transaction: either both exist afterwards or neither. ErrExists
// when the device or the user name is taken.
func (s *Store) AddDeviceWithLogin(ctx context.Context, d Device, password string) error {
	defer s.principalsChanged() // replica.go
	if err := validateDevice(d); err != nil {
		return fmt.Errorf("store: add device %q: %w", d.ID, err)
	}
	meta, err := encodeMetadata(d.Metadata)
	if err != nil {
		return fmt.Errorf("store: add device %q: %w", d.ID, err)
	}
	var creds []SCRAMCredential
	if password != "" {
		if creds, err = s.newCredentials(password); err != nil {
			return fmt.Errorf("store: add device %q: %w", d.ID, err)
		}
	}
	created := d.Created
	if created.IsZero() {
		created = time.Now()
	}
	var lastSeen int64
	if !d.LastSeen.IsZero() {
		lastSeen = d.LastSeen.UnixNano()
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO devices(id, name, protocol, metadata, psk, online, last_seen, created)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			d.ID, d.Name, d.Protocol, meta, nilIfEmpty(d.PSK), d.Online, lastSeen, created.UnixNano())
		if err != nil {
			return mapErr(err)
		}
		if creds == nil {
			return nil
		}
		if err := insertUser(ctx, tx, d.ID, adapters.RoleDevice, creds); err != nil {
			return fmt.Errorf("login user: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: add device %q: %w", d.ID, err)
	}
	if creds != nil {
		s.auth.invalidate(d.ID)
	}
	return nil
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

const deviceCols = `id, name, protocol, metadata, psk, online, last_seen, created`

type rowScanner interface{ Scan(dest ...any) error }

func scanDevice(r rowScanner) (Device, error) {
	var (
		d                 Device
		meta              string
		lastSeen, created int64
	)
	if err := r.Scan(&d.ID, &d.Name, &d.Protocol, &meta, &d.PSK, &d.Online, &lastSeen, &created); err != nil {
		return Device{}, err
	}
	if meta != "" && meta != "{}" {
		if err := json.Unmarshal([]byte(meta), &d.Metadata); err != nil {
			return Device{}, fmt.Errorf("metadata of %q: %w", d.ID, err)
		}
	}
	d.LastSeen = fromNano(lastSeen)
	d.Created = fromNano(created)
	return d, nil
}

// GetDevice returns a device (ErrNotFound).
func (s *Store) GetDevice(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(s.r.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
	if err != nil {
		return Device{}, fmt.Errorf("store: get device %q: %w", id, notFound(err))
	}
	return d, nil
}

// ListDevices returns every device sorted by id.
func (s *Store) ListDevices(ctx context.Context) ([]Device, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+deviceCols+` FROM devices ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list devices: %w", err)
	}
	return out, nil
}

// UpdateDevice replaces name, protocol, metadata (and PSK when non-nil).
// A non-nil empty PSK removes the key. ErrNotFound when absent.
func (s *Store) UpdateDevice(ctx context.Context, d Device) error {
	defer s.principalsChanged() // replica.go
	if err := validateDevice(d); err != nil {
		return fmt.Errorf("store: update device %q: %w", d.ID, err)
	}
	meta, err := encodeMetadata(d.Metadata)
	if err != nil {
		return fmt.Errorf("store: update device %q: %w", d.ID, err)
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if d.PSK != nil {
			return mustAffect(tx.ExecContext(ctx,
				`UPDATE devices SET name = ?, protocol = ?, metadata = ?, psk = ? WHERE id = ?`,
				d.Name, d.Protocol, meta, nilIfEmpty(d.PSK), d.ID))
		}
		return mustAffect(tx.ExecContext(ctx,
			`UPDATE devices SET name = ?, protocol = ?, metadata = ? WHERE id = ?`,
			d.Name, d.Protocol, meta, d.ID))
	})
	if err != nil {
		return fmt.Errorf("store: update device %q: %w", d.ID, err)
	}
	return nil
}

// DeleteDevice removes a device (ErrNotFound). Its login user, if any, is
// the caller's to delete with DeleteUser.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	defer s.principalsChanged() // replica.go
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := mustAffect(tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, id)); err != nil {
			return err
		}
		return markRevoked(ctx, tx, id)
	})
	if err != nil {
		return fmt.Errorf("store: delete device %q: %w", id, err)
	}
	return nil
}

// SetPresence records a device's presence: online or not, and the time it
// was last seen (at; zero keeps the previous value). ErrNotFound for an
// unregistered device.
func (s *Store) SetPresence(ctx context.Context, id string, online bool, at time.Time) error {
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if at.IsZero() {
			return mustAffect(tx.ExecContext(ctx, `UPDATE devices SET online = ? WHERE id = ?`, online, id))
		}
		return mustAffect(tx.ExecContext(ctx,
			`UPDATE devices SET online = ?, last_seen = ? WHERE id = ?`, online, at.UnixNano(), id))
	})
	if err != nil {
		return fmt.Errorf("store: set presence of %q: %w", id, err)
	}
	return nil
}

// DevicePSK returns a device's DTLS pre-shared key (ErrNotFound, also when
// the device has no key).
func (s *Store) DevicePSK(ctx context.Context, id string) ([]byte, error) {
	var psk []byte
	err := s.r.QueryRowContext(ctx, `SELECT psk FROM devices WHERE id = ?`, id).Scan(&psk)
	if err != nil {
		return nil, fmt.Errorf("store: psk of device %q: %w", id, notFound(err))
	}
	if len(psk) == 0 {
		return nil, fmt.Errorf("store: psk of device %q: no key set: %w", id, ErrNotFound)
	}
	return psk, nil
}
