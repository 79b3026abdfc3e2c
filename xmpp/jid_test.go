package xmpp

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hubsmith/hub/broker"
)

func TestTopicToJID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic, local string
	}{
		{"a/b/c", "a.b.c"},
		{"sensors/room1/temp", "sensors.room1.temp"},
		{"a.b/c", `a\2eb.c`},
		{"a b", `a\20b`},
		{`"&'<>:@`, `\22\26\27\3c\3e\3a\40`},
		{"Kitchen/Temp", `\4bitchen.\54emp`},
		{"$SYS/broker", `$\53\59\53.broker`},
		{"a//b", "a..b"},
		{"/a", ".a"},
		{"a/", "a."},
		{"/", "."},
		{"//", ".."},
		{`back\slash`, `back\slash`},
		{`x\20y`, `x\5c20y`},
		{`x\5c`, `x\5c5c`},
		{`x\2E`, `x\2\45`},
		{`x\`, `x\`},
		{`\\20`, `\\5c20`},
		{"tab\there", `tab\09here`},
		{`\61`, `\61`}, // no escape code: a literal backslash
		{"ünïcödé/温度", "ünïcödé.温度"},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			t.Parallel()
			if got := TopicToJID(tt.topic, "topics.example"); got != tt.local+"@topics.example" {
				t.Errorf("TopicToJID(%q) = %q, want %q", tt.topic, got, tt.local+"@topics.example")
			}
			back, err := JIDToTopic(tt.local)
			if err != nil {
				t.Fatalf("JIDToTopic(%q): %v", tt.local, err)
			}
			if back != tt.topic {
				t.Errorf("JIDToTopic(%q) = %q, want %q", tt.local, back, tt.topic)
			}
		})
	}
}

func TestJIDToTopicRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, local string
	}{
		{"empty", ""},
		{"capital", "Kitchen.temp"},
		{"escaped slash", `a\2fb`},
		{"wildcard plus", "a.+.c"},
		{"wildcard hash", "a.#"},
		{"raw space", "a b"},
		{"raw at", "a@b"},
		{"uppercase hex escape", `a\2Eb`}, // literal backslash before a capital
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topic, err := JIDToTopic(tt.local)
			if err == nil {
				t.Fatalf("JIDToTopic(%q) = %q, want an error", tt.local, topic)
			}
			if !errors.Is(err, ErrNotTopicJID) {
				t.Errorf("error %v is not ErrNotTopicJID", err)
			}
		})
	}
}

// FuzzTopicJID checks that every valid topic round-trips through its JID,
// that the localpart holds nothing a server would fold or refuse, and that
// JIDToTopic never panics and only accepts canonical localparts.
func FuzzTopicJID(f *testing.F) {
	for _, s := range []string{"a/b/c", "a.b", `x\20y`, "A//B", "/", `\5c`, "$SYS/x", "ü/温", `\\2e`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if broker.ValidateTopic(s) == nil {
			local := TopicToLocal(s)
			if strings.ContainsAny(local, "/@ \"&'<>:") {
				t.Fatalf("localpart %q of %q holds a forbidden character", local, s)
			}
			for _, r := range local {
				if r < 0x21 || r == 0x7f || (r >= 'A' && r <= 'Z') {
					t.Fatalf("localpart %q of %q holds %q", local, s, r)
				}
			}
			back, err := JIDToTopic(local)
			if err != nil {
				t.Fatalf("JIDToTopic(TopicToLocal(%q) = %q): %v", s, local, err)
			}
			if back != s {
				t.Fatalf("round trip %q -> %q -> %q", s, local, back)
			}
		}
		if topic, err := JIDToTopic(s); err == nil {
			if !utf8.ValidString(topic) {
				t.Fatalf("JIDToTopic(%q) = %q: not UTF-8", s, topic)
			}
			if TopicToLocal(topic) != s {
				t.Fatalf("JIDToTopic accepted non-canonical %q (topic %q)", s, topic)
			}
		}
	})
}
