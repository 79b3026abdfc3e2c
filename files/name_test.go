package files

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
)

func TestValidName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"fw/esp32/v1.2.bin", true},
		{"photos/My Cat.jpg", true},
		{"ünïcødé/名前.txt", true},
		{"a:b@c=d,e;f&g!h'i(j)k*l~m$", true},
		{strings.Repeat("a", MaxLevelLen), true},
		{strings.Repeat("a/", MaxNameLen/2-1) + "a", true},
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a/./b", false},
		{"../etc/passwd", false},
		{"$SYS/x", false},
		{"a/+/b", false},
		{"a/#", false},
		{"a?b", false},
		{"100%", false},
		{`a\b`, false},
		{`a"b`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"\xff", false},
		{strings.Repeat("a", MaxLevelLen+1), false},
		{strings.Repeat("a/", MaxNameLen/2) + "a", false},
	} {
		err := ValidName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok %v", trunc(tc.name), err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidName(%q) = %v, not ErrInvalidName", trunc(tc.name), err)
		}
	}
}

func TestEscapePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, want string }{
		{"a/b", "a/b"},
		{"photos/My Cat.jpg", "photos/My%20Cat.jpg"},
		{"名前", "%E5%90%8D%E5%89%8D"},
	} {
		if got := EscapePath(tc.name); got != tc.want {
			t.Errorf("EscapePath(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// FuzzValidName checks that ValidName never panics, and that every name it
// accepts is a valid topic suffix (no wildcard, not a $ topic) that
// survives the round trips through Topic and an escaped URL path.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "fw/v1.bin", "a//b", "../x", "$SYS", "a/+", "My Cat.jpg", "名前/x", "a%2Fb", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidName(name) != nil {
			return
		}
		topic := Topic(name)
		if err := broker.ValidateTopic(topic); err != nil {
			t.Fatalf("valid name %q, invalid topic: %v", name, err)
		}
		if got, ok := NameFromTopic(topic); !ok || got != name {
			t.Fatalf("NameFromTopic(Topic(%q)) = %q, %v", name, got, ok)
		}
		p := EscapePath(name)
		if strings.ContainsAny(p, "?#% ") && !strings.Contains(p, "%") {
			t.Fatalf("EscapePath(%q) = %q left a character URLs read otherwise", name, p)
		}
		u, err := url.Parse("http://h" + HTTPPath + p)
		if err != nil {
			t.Fatalf("URL of %q: %v", name, err)
		}
		if got := strings.TrimPrefix(u.Path, HTTPPath); got != name {
			t.Fatalf("URL path of %q decodes to %q", name, got)
		}
	})
}
