package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"strings"
	"sync"
	"testing"

	"github.com/hubsmith/hub/adapters"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeriveSCRAMVectors checks the key derivation against the exchanges
// of RFC 5802 section 5 (SHA-1) and RFC 7677 section 3 (SHA-256): from the
// derived keys, the server must compute the RFC's ServerSignature and
// verify the client's proof.
func TestDeriveSCRAMVectors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mech, salt, clientFirst, serverFirst, clientFinal, proof, serverSig string
		h                                                                   func() hash.Hash
	}{
		{
			mech:        MechSCRAMSHA1,
			h:           sha1.New,
			salt:        "QSXCR+Q6sek8bf92",
			clientFirst: "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
			serverFirst: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
			clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
			proof:       "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
			serverSig:   "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
		},
		{
			mech:        MechSCRAMSHA256,
			h:           sha256.New,
			salt:        "W22ZaJ0SNY7soEsUEjb6gQ==",
			clientFirst: "n=user,r=rOprNGfwEbeRWgbNEkqO",
			serverFirst: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
			clientFinal: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
			proof:       "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			serverSig:   "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		},
	}
	for _, tc := range tests {
		t.Run(tc.mech, func(t *testing.T) {
			t.Parallel()
			c, err := DeriveSCRAM(tc.mech, "pencil", b64(t, tc.salt), 4096)
			if err != nil {
				t.Fatal(err)
			}
			authMsg := []byte(tc.clientFirst + "," + tc.serverFirst + "," + tc.clientFinal)
			m := hmac.New(tc.h, c.ServerKey)
			m.Write(authMsg)
			if got := base64.StdEncoding.EncodeToString(m.Sum(nil)); got != tc.serverSig {
				t.Errorf("ServerSignature = %s, want %s", got, tc.serverSig)
			}
			// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage);
			// H(ClientKey) must equal StoredKey.
			m = hmac.New(tc.h, c.StoredKey)
			m.Write(authMsg)
			sig := m.Sum(nil)
			proof := b64(t, tc.proof)
			clientKey := make([]byte, len(proof))
			for i := range proof {
				clientKey[i] = proof[i] ^ sig[i]
			}
			h := tc.h()
			h.Write(clientKey)
			if !bytes.Equal(h.Sum(nil), c.StoredKey) {
				t.Error("client proof does not verify against StoredKey")
			}
		})
	}
}

func TestDeriveSCRAMErrors(t *testing.T) {
	t.Parallel()
	if _, err := DeriveSCRAM("SCRAM-MD5", "p", []byte("salt"), 4096); err == nil {
		t.Error("unknown mechanism accepted")
	}
	if _, err := DeriveSCRAM(MechSCRAMSHA256, "p", []byte("salt"), 0); err == nil {
		t.Error("0 iterations accepted")
	}
}

func TestAddUserValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	tests := []struct {
		name, pw, role string
		want           error
	}{
		{"", "pw", adapters.RoleUser, ErrInvalidName},
		{"a@b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a/b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a+b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a#b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a\nb", "pw", adapters.RoleUser, ErrInvalidName},
		{"a\x7fb", "pw", adapters.RoleUser, ErrInvalidName},
		{"\xff", "pw", adapters.RoleUser, ErrInvalidName},
		{strings.Repeat("x", MaxNameLen+1), "pw", adapters.RoleUser, ErrInvalidName},
		{strings.Repeat("é", MaxNameLen/2+1), "pw", adapters.RoleUser, ErrInvalidName}, // 66 bytes
		{"a b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a\u00a0b", "pw", adapters.RoleUser, ErrInvalidName}, // no-break space
		{"a\tb", "pw", adapters.RoleUser, ErrInvalidName},
		{`a"b`, "pw", adapters.RoleUser, ErrInvalidName},
		{"a&b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a'b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a:b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a<b", "pw", adapters.RoleUser, ErrInvalidName},
		{"a>b", "pw", adapters.RoleUser, ErrInvalidName},
		{"bob", "", adapters.RoleUser, ErrInvalidPassword},
		{"bob", "pw", "root", ErrInvalidRole},
		{"bob", "pw", "", ErrInvalidRole},
	}
	for _, tc := range tests {
		err := s.AddUser(ctx, tc.name, tc.pw, tc.role)
		if !errors.Is(err, tc.want) {
			t.Errorf("AddUser(%q, %q, %q) = %v, want %v", tc.name, tc.pw, tc.role, err, tc.want)
		}
	}
	// Boundary values that are fine.
	for _, name := range []string{"x", strings.Repeat("x", MaxNameLen), strings.Repeat("é", MaxNameLen/2), "sensor-1.a_b", "Jürgen", "a\\b", "$x"} {
		if err := s.AddUser(ctx, name, "pw", adapters.RoleUser); err != nil {
			t.Errorf("AddUser(%q): %v", name, err)
		}
	}
}

func TestUsersCRUD(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	for _, u := range []struct{ name, pw, role string }{
		{"bob", "bobpw", adapters.RoleUser},
		{"admin", "adminpw", adapters.RoleAdmin},
		{"sensor1", "sensor1pw", adapters.RoleDevice},
	} {
		if err := s.AddUser(ctx, u.name, u.pw, u.role); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddUser(ctx, "bob", "other", adapters.RoleUser); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate AddUser = %v, want ErrExists", err)
	} else if want := `store: add user "bob": already exists`; err.Error() != want {
		t.Errorf("duplicate AddUser says %q, want %q (no SQLite text)", err, want)
	}
	u, err := s.GetUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "bob" || u.Role != adapters.RoleUser || u.Created.IsZero() {
		t.Errorf("GetUser = %+v", u)
	}
	if _, err := s.GetUser(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetUser(nobody) = %v, want ErrNotFound", err)
	}
	list, err := s.ListUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list {
		names = append(names, u.Name)
	}
	if got := strings.Join(names, ","); got != "admin,bob,sensor1" {
		t.Errorf("ListUsers = %s", got)
	}

	for _, tc := range []struct {
		name, pw, role string
		err            error
	}{
		{"bob", "bobpw", adapters.RoleUser, nil},
		{"admin", "adminpw", adapters.RoleAdmin, nil},
		{"sensor1", "sensor1pw", adapters.RoleDevice, nil},
		{"bob", "wrong", "", adapters.ErrBadCredentials},
		{"bob", "", "", adapters.ErrBadCredentials},
		{"nobody", "bobpw", "", adapters.ErrBadCredentials},
	} {
		role, err := s.VerifyPassword(ctx, tc.name, tc.pw)
		if !errors.Is(err, tc.err) || role != tc.role {
			t.Errorf("VerifyPassword(%q, %q) = %q, %v; want %q, %v", tc.name, tc.pw, role, err, tc.role, tc.err)
		}
	}

	if err := s.SetPassword(ctx, "bob", "newpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "bobpw"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("old password after SetPassword: %v, want ErrBadCredentials", err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "newpw"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if err := s.SetPassword(ctx, "nobody", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPassword(nobody) = %v, want ErrNotFound", err)
	}
	if err := s.SetPassword(ctx, "bob", ""); !errors.Is(err, ErrInvalidPassword) {
		t.Errorf("SetPassword(empty) = %v, want ErrInvalidPassword", err)
	}

	if err := s.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteUser = %v, want ErrNotFound", err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "newpw"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("VerifyPassword after DeleteUser = %v, want ErrBadCredentials (cache not invalidated?)", err)
	}
	if _, err := s.SCRAM(ctx, "bob", MechSCRAMSHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("SCRAM after DeleteUser = %v, want ErrNotFound", err)
	}
}

func TestSCRAMStored(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddUser(ctx, "user", "pencil", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	var salts [][]byte
	for _, mech := range []string{MechSCRAMSHA1, MechSCRAMSHA256} {
		c, err := s.SCRAM(ctx, "user", mech)
		if err != nil {
			t.Fatal(err)
		}
		if c.Mechanism != mech || c.Iterations != SCRAMIterations || len(c.Salt) != saltLen {
			t.Errorf("%s: %+v", mech, c)
		}
		want, err := DeriveSCRAM(mech, "pencil", c.Salt, c.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.StoredKey, want.StoredKey) || !bytes.Equal(c.ServerKey, want.ServerKey) {
			t.Errorf("%s: stored keys do not derive from the password", mech)
		}
		salts = append(salts, c.Salt)
	}
	if bytes.Equal(salts[0], salts[1]) {
		t.Error("both mechanisms share a salt")
	}
	if _, err := s.SCRAM(ctx, "user", "SCRAM-SHA-512"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("SCRAM(unsupported) = %v, want an unsupported-mechanism error", err)
	}
	if _, err := s.SCRAM(ctx, "nobody", MechSCRAMSHA1); !errors.Is(err, ErrNotFound) {
		t.Errorf("SCRAM(nobody) = %v, want ErrNotFound", err)
	}
	// A second user with the same password gets different salts and keys.
	if err := s.AddUser(ctx, "user2", "pencil", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	c1, _ := s.SCRAM(ctx, "user", MechSCRAMSHA256)
	c2, _ := s.SCRAM(ctx, "user2", MechSCRAMSHA256)
	if bytes.Equal(c1.Salt, c2.Salt) || bytes.Equal(c1.StoredKey, c2.StoredKey) {
		t.Error("two users with one password share salt or keys")
	}
}

func TestVerifyPasswordCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openDir(t, dir)
	ctx := context.Background()
	if err := s.AddUser(ctx, "bob", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.auth.get("bob", sha256.Sum256([]byte("pw"))); !ok {
		t.Fatal("successful verification not cached")
	}
	if _, err := s.VerifyPassword(ctx, "bob", "bad"); err == nil {
		t.Fatal("wrong password accepted")
	}
	if _, ok := s.auth.get("bob", sha256.Sum256([]byte("bad"))); ok {
		t.Fatal("failed verification cached")
	}
	if err := s.SetPassword(ctx, "bob", "pw2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("old password after SetPassword: %v", err)
	}

	// Another process (hub user add/passwd while serving) changes the
	// password and then deletes the user: a cached success must not
	// outlive either.
	if _, err := s.VerifyPassword(ctx, "bob", "pw2"); err != nil {
		t.Fatal(err)
	}
	other := openDir(t, dir)
	if err := other.SetPassword(ctx, "bob", "pw3"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.auth.get("bob", sha256.Sum256([]byte("pw2"))); !ok {
		t.Fatal("test needs the stale entry to be cached")
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw2"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("password changed by another process still accepted: %v", err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw3"); err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw3"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("user deleted by another process still accepted: %v", err)
	}
}

func TestVerifyPasswordConcurrent(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddUser(ctx, "bob", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				pw := "pw"
				if (i+j)%3 == 0 {
					pw = "bad"
				}
				_, err := s.VerifyPassword(ctx, "bob", pw)
				if (pw == "pw") != (err == nil) {
					t.Errorf("VerifyPassword(%q) = %v", pw, err)
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkVerifyPasswordCached(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	if err := s.AddUser(ctx, "bob", "pw", adapters.RoleUser); err != nil {
		b.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "bob", "pw"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.VerifyPassword(ctx, "bob", "pw"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyPasswordUncached(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	if err := s.AddUser(ctx, "bob", "pw", adapters.RoleUser); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s.auth.invalidate("bob")
		if _, err := s.VerifyPassword(ctx, "bob", "pw"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSCRAMIterationsUpgradeAtLogin(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.SetSCRAMIterations(MinSCRAMIterations - 1); err == nil {
		t.Fatal("SetSCRAMIterations below the minimum accepted")
	}
	if err := s.SetSCRAMIterations(MinSCRAMIterations); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, "old", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	iters := func() []int {
		var out []int
		for _, mech := range []string{MechSCRAMSHA1, MechSCRAMSHA256} {
			c, err := s.SCRAM(ctx, "old", mech)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c.Iterations)
		}
		return out
	}
	if got := iters(); got[0] != MinSCRAMIterations || got[1] != MinSCRAMIterations {
		t.Fatalf("iterations %v, want %d", got, MinSCRAMIterations)
	}
	if err := s.SetSCRAMIterations(20000); err != nil {
		t.Fatal(err)
	}
	if s.SCRAMIterationCount() != 20000 {
		t.Fatalf("SCRAMIterationCount = %d", s.SCRAMIterationCount())
	}
	// A wrong password upgrades nothing.
	if _, err := s.VerifyPassword(ctx, "old", "nope"); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if got := iters(); got[1] != MinSCRAMIterations {
		t.Fatalf("after a failed login: iterations %v", got)
	}
	if _, err := s.VerifyPassword(ctx, "old", "pw"); err != nil {
		t.Fatal(err)
	}
	if got := iters(); got[0] != 20000 || got[1] != 20000 {
		t.Fatalf("after a login: iterations %v, want 20000", got)
	}
	for _, mech := range []string{MechSCRAMSHA1, MechSCRAMSHA256} {
		c, _ := s.SCRAM(ctx, "old", mech)
		want, err := DeriveSCRAM(mech, "pw", c.Salt, c.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.StoredKey, want.StoredKey) {
			t.Errorf("%s: upgraded key does not derive from the password", mech)
		}
	}
	if _, err := s.VerifyPassword(ctx, "old", "pw"); err != nil {
		t.Fatalf("login after the upgrade: %v", err)
	}
}
