package store

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
)

// TestPrincipalRecordsRoundTrip: what PrincipalRecords reads from one
// store, applied to another, reads back the same there, and the second
// store then verifies the first store's password, PSK and token.
func TestPrincipalRecordsRoundTrip(t *testing.T) {
	ctx := context.Background()
	a, b := openTest(t), openTest(t)
	if err := a.AddUser(ctx, "alice", "alicepw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	if err := a.AddDeviceWithLogin(ctx, Device{ID: "lamp1", Name: "Lamp", Protocol: "mqtt",
		Metadata: map[string]string{"room": "hall"}, PSK: []byte("key")}, "lamppw"); err != nil {
		t.Fatal(err)
	}
	if err := a.SetACL(ctx, "alice", []adapters.ACLRule{{Action: "publish", Filter: "a/#", Allow: true}}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := a.PrincipalRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for k := range recs {
		kind, _, err := SplitRecordKey(k)
		if err != nil {
			t.Fatal(err)
		}
		kinds[kind]++
	}
	if want := map[string]int{RecordUser: 2, RecordDevice: 1, RecordACL: 1, RecordToken: 1}; !maps.Equal(kinds, want) {
		t.Fatalf("record kinds %v, want %v", kinds, want)
	}
	// A token before its user waits for it.
	for k, v := range recs {
		if kind, _, _ := SplitRecordKey(k); kind == RecordToken {
			if err := b.ApplyPrincipal(ctx, k, v); !errors.Is(err, ErrNotFound) {
				t.Fatalf("token before its user: %v, want ErrNotFound", err)
			}
		}
	}
	for _, kind := range []string{RecordUser, RecordDevice, RecordACL, RecordToken} {
		for k, v := range recs {
			if kk, _, _ := SplitRecordKey(k); kk == kind {
				if err := b.ApplyPrincipal(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	back, err := b.PrincipalRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(recs, back, func(x, y []byte) bool { return string(x) == string(y) }) {
		t.Fatalf("records differ after the round trip:\n%q\n%q", recs, back)
	}
	if role, err := b.VerifyPassword(ctx, "lamp1", "lamppw"); err != nil || role != adapters.RoleDevice {
		t.Fatalf("password on b: %q %v", role, err)
	}
	if psk, err := b.DevicePSK(ctx, "lamp1"); err != nil || string(psk) != "key" {
		t.Fatalf("psk on b: %q %v", psk, err)
	}
	if u, err := b.VerifyToken(ctx, tok); err != nil || u.Name != "alice" {
		t.Fatalf("token on b: %+v %v", u, err)
	}

	// Removals: the user and device are marked for revocation.
	for _, k := range []string{"user/alice", "device/lamp1", "acl/alice"} {
		if _, err := b.RemovePrincipal(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.RemovePrincipal(ctx, "user/alice"); err != nil {
		t.Fatalf("removing an absent user: %v", err)
	}
	if _, err := b.VerifyToken(ctx, tok); err == nil {
		t.Fatal("token outlives its user")
	}
	marks, err := b.KVList(ctx, RevokedBucket)
	if err != nil || len(marks) != 2 {
		t.Fatalf("revocation marks %v %v, want alice and lamp1", marks, err)
	}
}

// TestPrincipalHook: every principal change calls the hook.
func TestPrincipalHook(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	n := 0
	s.SetPrincipalHook(func() { n++ })
	steps := []struct {
		name string
		do   func() error
	}{
		{"add user", func() error { return s.AddUser(ctx, "bob", "bobpw", adapters.RoleUser) }},
		{"set password", func() error { return s.SetPassword(ctx, "bob", "bobpw2") }},
		{"set role", func() error { return s.SetRole(ctx, "bob", adapters.RoleAdmin) }},
		{"set acl", func() error { return s.SetACL(ctx, "bob", nil) }},
		{"token", func() error { _, err := s.CreateToken(ctx, "bob", 0); return err }},
		{"add device", func() error { return s.AddDevice(ctx, Device{ID: "d1", Protocol: "mqtt"}) }},
		{"update device", func() error { return s.UpdateDevice(ctx, Device{ID: "d1", Name: "x", Protocol: "mqtt"}) }},
		{"delete device", func() error { return s.DeleteDevice(ctx, "d1") }},
		{"delete user", func() error { return s.DeleteUser(ctx, "bob") }},
	}
	for _, st := range steps {
		before := n
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if n == before {
			t.Errorf("%s: hook not called", st.name)
		}
	}
}

// TestApplyPrincipalRefuses: bad keys and values are ErrInvalidRecord.
func TestApplyPrincipalRefuses(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, c := range []struct{ key, value string }{
		{"nokind", `{}`},
		{"group/x", `{}`},
		{"user/bad name", `{"role":"user"}`},
		{"user/x", `not json`},
		{"user/x", `{"role":"emperor"}`},
		{"device/x", `{"protocol":"carrier-pigeon"}`},
		{"token/abc", `{"user":"x"}`},
		{"acl/x", `[{"action":"fly","filter":"a"}]`},
	} {
		if err := s.ApplyPrincipal(ctx, c.key, []byte(c.value)); err == nil {
			t.Errorf("ApplyPrincipal(%q, %q) accepted", c.key, c.value)
		}
	}
}

// FuzzApplyPrincipal: no record, however malformed, makes ApplyPrincipal
// panic, and one it accepts reads back under its key.
func FuzzApplyPrincipal(f *testing.F) {
	f.Add("user/alice", []byte(`{"role":"user","created":1,"scram":[]}`))
	f.Add("device/d1", []byte(`{"name":"","protocol":"mqtt","metadata":"{}","created":2}`))
	f.Add("acl/x", []byte(`[{"action":"publish","filter":"a/#","allow":true}]`))
	f.Add("token/00", []byte(`{"user":"alice"}`))
	s := openTest(f)
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		ctx := context.Background()
		if err := s.ApplyPrincipal(ctx, key, value); err != nil {
			return
		}
		recs, err := s.PrincipalRecords(ctx)
		if err != nil {
			t.Fatal(err)
		}
		kind, _, _ := SplitRecordKey(key)
		if _, ok := recs[key]; !ok && kind != RecordACL {
			t.Fatalf("%q applied but not read back", key)
		}
	})
}

// BenchmarkPrincipalRecords: one replication pass reads every principal;
// here 200 users (each also a device) with a token each.
func BenchmarkPrincipalRecords(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	if err := s.SetSCRAMIterations(MinSCRAMIterations); err != nil {
		b.Fatal(err)
	}
	for i := range 200 {
		id := "d" + string(rune('a'+i%26)) + time.Duration(i).String()
		if err := s.AddDeviceWithLogin(ctx, Device{ID: id, Protocol: "mqtt"}, "pw"); err != nil {
			b.Fatal(err)
		}
		if _, err := s.CreateToken(ctx, id, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.PrincipalRecords(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
