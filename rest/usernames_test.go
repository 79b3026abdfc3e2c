package rest

import (
	"regexp"
	"strings"
	"testing"
)

// userNameRule is the expression validUserName replaced: its specification.
var userNameRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// userNameCases are names at and around the edges of the rule.
var userNameCases = []string{
	"", "a", "Z", "0", "alice", "alice@example.org", "a.b-c_d", "@a", ".a", "-a", "_a",
	"a:b", "a/b", "a+b", "a#b", "a b", "%u", "é", "aé", "a\x00", "a\n", "a\xff",
	strings.Repeat("u", 127), strings.Repeat("u", 128), strings.Repeat("u", 129),
}

func TestValidUserName(t *testing.T) {
	t.Parallel()
	for _, s := range userNameCases {
		if got, want := validUserName(s), userNameRule.MatchString(s); got != want {
			t.Errorf("validUserName(%q) = %v, the expression says %v", s, got, want)
		}
	}
}

func FuzzValidUserName(f *testing.F) {
	for _, s := range userNameCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validUserName(s), userNameRule.MatchString(s); got != want {
			t.Fatalf("validUserName(%q) = %v, the expression says %v", s, got, want)
		}
	})
}
