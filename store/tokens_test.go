package store

import (
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hubsmith/hub/adapters"
)

var aclRules = []adapters.ACLRule{
	{Action: "publish", Filter: "devices/%u/#", Allow: true},
	{Action: "subscribe", Filter: "secret/#", Allow: false},
	{Action: "all", Filter: "+/status", Allow: true},
}

func TestACL(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if rules, err := s.ACL(ctx, "alice"); err != nil || len(rules) != 0 {
		t.Errorf("ACL with no rules = %+v, %v", rules, err)
	}
	if err := s.SetACL(ctx, "alice", aclRules); err != nil {
		t.Fatal(err)
	}
	if err := s.SetACL(ctx, "bob", aclRules[:1]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ACL(ctx, "alice"); err != nil || !reflect.DeepEqual(got, aclRules) {
		t.Errorf("ACL = %+v, %v; want %+v", got, err, aclRules)
	}
	// SetACL replaces.
	repl := []adapters.ACLRule{aclRules[2], aclRules[0]}
	if err := s.SetACL(ctx, "alice", repl); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ACL(ctx, "alice"); !reflect.DeepEqual(got, repl) {
		t.Errorf("ACL after replace = %+v", got)
	}
	for _, bad := range [][]adapters.ACLRule{
		{{Action: "read", Filter: "a", Allow: true}},
		{{Action: "publish", Filter: "a/#/b", Allow: true}},
		{{Action: "publish", Filter: "", Allow: true}},
	} {
		if err := s.SetACL(ctx, "alice", bad); !errors.Is(err, ErrInvalidACL) {
			t.Errorf("SetACL(%+v) = %v, want ErrInvalidACL", bad, err)
		}
	}
	if got, _ := s.ACL(ctx, "alice"); !reflect.DeepEqual(got, repl) {
		t.Errorf("rejected SetACL changed the rules: %+v", got)
	}
	if err := s.SetACL(ctx, "", aclRules); !errors.Is(err, ErrInvalidName) {
		t.Errorf("SetACL for empty name = %v", err)
	}
	// DeleteUser drops the user's rules.
	if err := s.AddUser(ctx, "alice", "pw", adapters.RoleUser); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ACL(ctx, "alice"); len(got) != 0 {
		t.Errorf("rules survive DeleteUser: %+v", got)
	}
	if got, _ := s.ACL(ctx, "bob"); len(got) != 1 {
		t.Errorf("DeleteUser(alice) touched bob's rules: %+v", got)
	}
	// Clearing.
	if err := s.SetACL(ctx, "bob", nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ACL(ctx, "bob"); len(got) != 0 {
		t.Errorf("SetACL(nil) left %+v", got)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.AddUser(ctx, "alice", "pw", adapters.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	tok, err := s.CreateToken(ctx, "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(raw) != tokenLen {
		t.Errorf("token %q: %d bytes, %v", tok, len(raw), err)
	}
	forever, err := s.CreateToken(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok == forever {
		t.Error("two tokens are equal")
	}
	// Only the hash is stored.
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens WHERE hash = ? OR hash = ?`, tok, []byte(tok)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("token stored in the clear")
	}
	for _, tc := range []struct {
		token string
		user  string
		err   error
	}{
		{tok, "alice", nil},
		{forever, "alice", nil},
		{"", "", adapters.ErrBadCredentials},
		{tok + "x", "", adapters.ErrBadCredentials},
	} {
		u, err := s.VerifyToken(ctx, tc.token)
		if !errors.Is(err, tc.err) || u.Name != tc.user {
			t.Errorf("VerifyToken(%q) = %+v, %v; want %q, %v", tc.token, u, err, tc.user, tc.err)
		}
		if err == nil && u.Role != adapters.RoleAdmin {
			t.Errorf("VerifyToken role = %q", u.Role)
		}
	}
	short, err := s.CreateToken(ctx, "alice", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := s.VerifyToken(ctx, short); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("expired token: %v, want ErrBadCredentials", err)
	}
	if _, err := s.CreateToken(ctx, "nobody", time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateToken(nobody) = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateToken(ctx, "alice", -time.Second); err == nil {
		t.Error("negative ttl accepted")
	}
	if err := s.DeleteToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyToken(ctx, tok); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("revoked token: %v", err)
	}
	if err := s.DeleteToken(ctx, tok); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteToken = %v, want ErrNotFound", err)
	}
	// Deleting the user revokes its tokens.
	if err := s.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyToken(ctx, forever); !errors.Is(err, adapters.ErrBadCredentials) {
		t.Errorf("token of a deleted user: %v", err)
	}
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d token rows left after DeleteUser", n)
	}
}
