package store

import (
	"context"
	"errors"
	"testing"

	"github.com/hubsmith/hub/adapters"
)

func TestPrincipalRole(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddUser(ctx, "ann", "pw", adapters.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDevice(ctx, Device{ID: "psk1", PSK: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDeviceWithLogin(ctx, Device{ID: "lamp"}, "pw"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		err        error
	}{
		{"ann", adapters.RoleAdmin, nil},
		{"psk1", adapters.RoleDevice, nil},
		{"lamp", adapters.RoleDevice, nil},
		{"nobody", "", adapters.ErrUnknownPrincipal},
	}
	for _, c := range cases {
		got, err := s.PrincipalRole(ctx, c.name)
		if got != c.want || !errors.Is(err, c.err) || c.err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("PrincipalRole(%q) = %q, %v; want %q, %v", c.name, got, err, c.want, c.err)
		}
	}
	if err := s.DeleteUser(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PrincipalRole(ctx, "ann"); !errors.Is(err, adapters.ErrUnknownPrincipal) {
		t.Errorf("after DeleteUser: %v, want ErrUnknownPrincipal", err)
	}
}
