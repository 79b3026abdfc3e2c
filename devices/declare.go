package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hubsmith/hub/store"
)

// AnnounceTopic is where a device announces the commands it takes, as a
// retained JSON declaration (see ParseCommands): devices/{id}/commands.
// Only the device's own announcement counts.
func AnnounceTopic(id string) string { return "devices/" + id + "/commands" }

// SetCommands stores the commands declared for device id (an empty list
// clears the declaration, so the device's own announcement applies
// again). ErrUnknownDevice for an unregistered device.
func (r *Registry) SetCommands(ctx context.Context, id string, cs []Command) error {
	if err := ValidateCommands(cs); err != nil {
		return err
	}
	var raw json.RawMessage
	if len(cs) > 0 {
		b, err := json.Marshal(cs)
		if err != nil {
			return fmt.Errorf("devices: commands of %q: encode: %w", id, err)
		}
		raw = b
	}
	if err := r.st.SetDeviceCommands(ctx, id, raw); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("devices: %w %q", ErrUnknownDevice, trunc(id))
		}
		return fmt.Errorf("devices: set commands of %q: %w", id, err)
	}
	return nil
}

// Commands returns the commands device id takes: those declared for it in
// the store (hub device add --commands, REST), else those it announced
// itself, retained on AnnounceTopic, else none. ErrUnknownDevice for an
// unregistered device.
func (r *Registry) Commands(ctx context.Context, id string) ([]Command, error) {
	raw, err := r.st.DeviceCommands(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("devices: %w %q", ErrUnknownDevice, trunc(id))
	}
	if err != nil {
		return nil, fmt.Errorf("devices: commands of %q: %w", id, err)
	}
	if len(raw) > 0 {
		cs, err := ParseCommands(raw)
		if err != nil {
			return nil, fmt.Errorf("devices: stored commands of %q: %w", id, err)
		}
		return cs, nil
	}
	if r.bus == nil {
		return []Command{}, nil
	}
	rs, err := r.bus.Retained(ctx, AnnounceTopic(id))
	if err != nil {
		return nil, fmt.Errorf("devices: announced commands of %q: %w", id, err)
	}
	for _, e := range rs {
		if e.Topic != AnnounceTopic(id) || e.Origin.Principal != id {
			continue
		}
		cs, err := ParseCommands(e.Payload)
		if err != nil {
			r.log.Warn("devices: announced commands not understood", "device", id, "err", err)
			break
		}
		return cs, nil
	}
	return []Command{}, nil
}

// checkCommand validates params against the declaration of command name
// when device id declares it, returning them with defaults filled in.
func (r *Registry) checkCommand(ctx context.Context, id, name string, params json.RawMessage) (json.RawMessage, error) {
	cs, err := r.Commands(ctx, id)
	if err != nil {
		return nil, err
	}
	if c, ok := FindCommand(cs, name); ok {
		return c.CheckParams(params)
	}
	return params, nil
}
