package store

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
)

func TestDevices(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	psk := []byte("secret1")
	d := Device{ID: "sensor1", Name: "Kitchen", Protocol: "coap", Metadata: map[string]string{"room": "kitchen"}, PSK: psk}
	if err := s.AddDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, Device{ID: "a-lamp", Protocol: "mqtt"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, d); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate AddDevice = %v, want ErrExists", err)
	} else if want := `store: add device "sensor1": already exists`; err.Error() != want {
		t.Errorf("duplicate AddDevice says %q, want %q (no SQLite text)", err, want)
	}
	got, err := s.GetDevice(ctx, "sensor1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Kitchen" || got.Protocol != "coap" || !reflect.DeepEqual(got.Metadata, d.Metadata) ||
		!bytes.Equal(got.PSK, psk) || got.Online || !got.LastSeen.IsZero() || got.Created.IsZero() {
		t.Errorf("GetDevice = %+v", got)
	}
	if _, err := s.GetDevice(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetDevice(nope) = %v", err)
	}
	list, err := s.ListDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "a-lamp" || list[1].ID != "sensor1" || list[0].Metadata != nil {
		t.Errorf("ListDevices = %+v", list)
	}

	if k, err := s.DevicePSK(ctx, "sensor1"); err != nil || !bytes.Equal(k, psk) {
		t.Errorf("DevicePSK = %q, %v", k, err)
	}
	if _, err := s.DevicePSK(ctx, "a-lamp"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DevicePSK of a device without key = %v, want ErrNotFound", err)
	}
	if _, err := s.DevicePSK(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DevicePSK(nope) = %v", err)
	}

	// Update without PSK keeps the key; with one replaces it.
	if err := s.UpdateDevice(ctx, Device{ID: "sensor1", Name: "Hall", Protocol: "mqtt"}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetDevice(ctx, "sensor1")
	if got.Name != "Hall" || got.Protocol != "mqtt" || got.Metadata != nil || !bytes.Equal(got.PSK, psk) {
		t.Errorf("after UpdateDevice: %+v", got)
	}
	if err := s.UpdateDevice(ctx, Device{ID: "sensor1", Name: "Hall", Protocol: "coap", PSK: []byte("k2")}); err != nil {
		t.Fatal(err)
	}
	if k, _ := s.DevicePSK(ctx, "sensor1"); string(k) != "k2" {
		t.Errorf("PSK after update = %q", k)
	}
	if err := s.UpdateDevice(ctx, Device{ID: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateDevice(nope) = %v", err)
	}

	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := s.SetPresence(ctx, "sensor1", true, at); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetDevice(ctx, "sensor1")
	if !got.Online || !got.LastSeen.Equal(at) {
		t.Errorf("after SetPresence(true): online=%v last_seen=%v", got.Online, got.LastSeen)
	}
	if err := s.SetPresence(ctx, "sensor1", false, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetDevice(ctx, "sensor1")
	if got.Online || !got.LastSeen.Equal(at) {
		t.Errorf("after SetPresence(false, zero): online=%v last_seen=%v", got.Online, got.LastSeen)
	}
	if err := s.SetPresence(ctx, "nope", true, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPresence(nope) = %v", err)
	}

	if err := s.DeleteDevice(ctx, "sensor1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "sensor1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteDevice = %v, want ErrNotFound", err)
	}
}

func TestDeviceValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	for _, tc := range []struct {
		d    Device
		want error
	}{
		{Device{ID: ""}, ErrInvalidName},
		{Device{ID: "a/b"}, ErrInvalidName},
		{Device{ID: "a+"}, ErrInvalidName},
		{Device{ID: "ok", Protocol: "zigbee"}, ErrInvalidDevice},
		{Device{ID: "ok", Name: "\xff"}, ErrInvalidDevice},
		{Device{ID: "ok", Metadata: map[string]string{"k": "\xfe"}}, ErrInvalidDevice},
	} {
		if err := s.AddDevice(ctx, tc.d); !errors.Is(err, tc.want) {
			t.Errorf("AddDevice(%+v) = %v, want %v", tc.d, err, tc.want)
		}
		if err := s.UpdateDevice(ctx, tc.d); !errors.Is(err, tc.want) {
			t.Errorf("UpdateDevice(%+v) = %v, want %v", tc.d, err, tc.want)
		}
	}
}

func TestAddDeviceWithLogin(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddDeviceWithLogin(ctx, Device{ID: "sensor1", Protocol: "mqtt"}, "sensor1pw"); err != nil {
		t.Fatal(err)
	}
	if role, err := s.VerifyPassword(ctx, "sensor1", "sensor1pw"); err != nil || role != adapters.RoleDevice {
		t.Errorf("VerifyPassword = %q, %v; want device", role, err)
	}
	if _, err := s.GetDevice(ctx, "sensor1"); err != nil {
		t.Error(err)
	}
	// The user name is taken: no device is left behind.
	if err := s.AddUser(ctx, "taken", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	err := s.AddDeviceWithLogin(ctx, Device{ID: "taken", Protocol: "mqtt"}, "pw")
	if !errors.Is(err, ErrExists) {
		t.Errorf("AddDeviceWithLogin over a taken user = %v, want ErrExists", err)
	}
	if _, err := s.GetDevice(ctx, "taken"); !errors.Is(err, ErrNotFound) {
		t.Errorf("half-made device left behind: %v", err)
	}
	if role, err := s.VerifyPassword(ctx, "taken", "pw"); err != nil || role != adapters.RoleUser {
		t.Errorf("existing user changed: %q, %v", role, err)
	}
	// No password: no user.
	if err := s.AddDeviceWithLogin(ctx, Device{ID: "coap1", Protocol: "coap", PSK: []byte("k")}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUser(ctx, "coap1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("user created without a password: %v", err)
	}
}
