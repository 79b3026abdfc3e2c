package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// CommandTopic is where a device receives command name over the bus path:
// devices/{id}/commands/{name}.
func CommandTopic(id, name string) string { return "devices/" + id + "/commands/" + name }

// ResponseTopic is where a device answers request req:
// devices/{id}/responses/{req}.
func ResponseTopic(id, req string) string { return "devices/" + id + "/responses/" + req }

// CommandRequest is the JSON payload published on CommandTopic.
type CommandRequest struct {
	ID     string          `json:"id"`
	Params json.RawMessage `json:"params"`
}

// RegisterCommander makes c deliver the commands of devices whose protocol
// is c.Protocol() instead of the bus path (an XMPP adapter sends XEP-0050
// ad-hoc commands, for instance). A later registration for the same
// protocol replaces the earlier one.
func (r *Registry) RegisterCommander(c adapters.Commander) {
	r.cmu.Lock()
	r.commanders[c.Protocol()] = c
	r.cmu.Unlock()
}

func (r *Registry) commander(protocol string) adapters.Commander {
	r.cmu.RLock()
	defer r.cmu.RUnlock()
	return r.commanders[protocol]
}

// NormalizeParams returns params as compact JSON, "null" when empty, or an
// ErrInvalid error saying what is wrong with it.
func NormalizeParams(params []byte) (json.RawMessage, error) {
	params = bytes.TrimSpace(params)
	if len(params) == 0 {
		return json.RawMessage("null"), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, params); err != nil {
		return nil, fmt.Errorf("%w: params are not JSON: %v", ErrInvalid, err)
	}
	return buf.Bytes(), nil
}

// ReplyJSON turns a device's reply payload into JSON: the payload itself
// when it is JSON, else the payload as a JSON string.
func ReplyJSON(payload []byte) json.RawMessage {
	if t := bytes.TrimSpace(payload); len(t) > 0 && json.Valid(t) {
		return json.RawMessage(t)
	}
	b, _ := json.Marshal(string(payload)) // a string always encodes
	return b
}

// SendCommand sends command name with JSON params to a device and waits for
// its reply until ctx is done. It returns ErrUnknownDevice for an unknown
// device, adapters.ErrDeviceOffline at once when the registry knows the
// device is offline, and an error wrapping context.DeadlineExceeded when
// ctx times out. The reply is the device's payload as JSON (see ReplyJSON).
// Params are checked against the command's declaration (Commands) first: a
// *ParamError says which parameter is wrong. A reply that refuses (see
// ParseRefusal) is returned as a *RefusedError.
//
// A device counts as online when the store says so and an adapter reported
// it since this registry was made (see ResetPresence).
//
// A device whose protocol has a registered Commander gets the command from
// it; every other device gets it over the bus: the registry subscribes to
// devices/{id}/responses/{REQ}, then publishes {"id": REQ, "params": ...}
// at QoS 1 to devices/{id}/commands/{name} with that response topic and
// correlation data REQ (MQTT 5 devices see them as properties, MQTT 3.1.1
// and CoAP devices use the topic convention), and the first envelope on the
// response topic published by the device's own principal (its
// Origin.Principal is the device id) is the reply; one from anyone else is
// a forgery, logged and ignored.
func (r *Registry) SendCommand(ctx context.Context, deviceID, name string, params json.RawMessage) (json.RawMessage, error) {
	if err := ValidateID(name); err != nil {
		return nil, fmt.Errorf("%w: command name %q: must be 1..128 letters, digits, '.', '_' or '-'", ErrInvalid, trunc(name))
	}
	params, err := NormalizeParams(params)
	if err != nil {
		return nil, err
	}
	d, err := r.Get(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	if params, err = r.checkCommand(ctx, deviceID, name, params); err != nil {
		return nil, err
	}
	if !d.Online || !r.seen(deviceID) {
		return nil, fmt.Errorf("devices: command %q to %q: %w", name, deviceID, adapters.ErrDeviceOffline)
	}
	req := broker.NewID()
	if c := r.commander(d.Protocol); c != nil {
		reply, err := c.SendCommand(ctx, adapters.Command{ID: req, DeviceID: deviceID, Name: name, Params: params})
		if err != nil {
			var re *RefusedError
			if errors.As(err, &re) {
				re.Device, re.Command = deviceID, name
				return nil, re
			}
			return nil, fmt.Errorf("devices: command %q to %q over %s: %w", name, deviceID, d.Protocol, err)
		}
		return refusal(deviceID, name, ReplyJSON(reply))
	}
	reply, err := r.sendOverBus(ctx, deviceID, name, req, params)
	if err != nil {
		return nil, err
	}
	return refusal(deviceID, name, reply)
}

// refusal returns reply, or the *RefusedError it is (see ParseRefusal).
func refusal(deviceID, name string, reply json.RawMessage) (json.RawMessage, error) {
	if re, ok := ParseRefusal(reply); ok {
		re.Device, re.Command = deviceID, name
		return nil, re
	}
	return reply, nil
}

func (r *Registry) sendOverBus(ctx context.Context, deviceID, name, req string, params json.RawMessage) (json.RawMessage, error) {
	if r.bus == nil {
		return nil, errors.New("devices: no bus to send commands over")
	}
	respTopic := ResponseTopic(deviceID, req)
	replies := make(chan []byte, 1)
	sub, err := r.bus.Subscribe(ctx, broker.SubscribeOptions{Protocol: broker.ProtoHub,
		ID:      "devices-cmd-" + req,
		Filters: []string{respTopic},
		QoS:     1,
	}, func(_ context.Context, e *broker.Envelope) error {
		if e.Origin.Principal != deviceID {
			r.log.Warn("devices: command reply from another principal ignored",
				"device", deviceID, "command", name, "principal", e.Origin.Principal, "protocol", e.Origin.Protocol)
			return nil
		}
		select {
		case replies <- append([]byte(nil), e.Payload...):
		default: // a second reply to the same request is dropped
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("devices: command %q to %q: subscribe to replies: %w", name, deviceID, err)
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil {
			r.log.Warn("devices: unsubscribe reply topic", "topic", respTopic, "err", err)
		}
	}()
	body, err := json.Marshal(CommandRequest{ID: req, Params: params})
	if err != nil {
		return nil, fmt.Errorf("devices: command %q: encode: %w", name, err)
	}
	e := &broker.Envelope{
		ID:              req,
		Topic:           CommandTopic(deviceID, name),
		Payload:         body,
		ContentType:     "application/json",
		QoS:             1,
		Time:            time.Now(),
		ResponseTopic:   respTopic,
		CorrelationData: []byte(req),
		Origin:          broker.Origin{Protocol: broker.ProtoHub, ClientID: "devices", Node: r.node},
	}
	if dl, ok := ctx.Deadline(); ok {
		// A command nobody took before the caller gave up is not worth
		// delivering later.
		e.Expiry = dl
	}
	if err := r.bus.Publish(ctx, e); err != nil {
		return nil, fmt.Errorf("devices: command %q to %q: publish: %w", name, deviceID, err)
	}
	select {
	case p := <-replies:
		return ReplyJSON(p), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("devices: command %q to %q: no reply: %w", name, deviceID, ctx.Err())
	}
}
