package bridge

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestRuleYAML(t *testing.T) {
	one := byte(1)
	tests := []struct {
		name, yaml string
		want       []Rule
		err        bool
	}{
		{"plain filter", `["cmd/#"]`, []Rule{{Filter: "cmd/#"}}, false},
		{"with qos", `["cmd/# 1"]`, []Rule{{Filter: "cmd/#", QoS: &one}}, false},
		{"mosquitto style prefixes", `["up/# 1 cloud/ edge1/"]`, []Rule{{Filter: "up/#", QoS: &one, LocalPrefix: "cloud/", RemotePrefix: "edge1/"}}, false},
		{"empty local prefix", `["up/# 1 \"\" edge1/"]`, []Rule{{Filter: "up/#", QoS: &one, RemotePrefix: "edge1/"}}, false},
		{"object and string", "- cmd/#\n- {filter: 'a/+', local_prefix: x/, qos: 1}\n", []Rule{{Filter: "cmd/#"}, {Filter: "a/+", LocalPrefix: "x/", QoS: &one}}, false},
		{"bad qos", `["a/# 3"]`, nil, true},
		{"three fields", `["a/# 1 x/"]`, nil, true},
		{"unknown object key", `[{filter: a, prefix: b}]`, nil, true},
	}
	for _, tt := range tests {
		var got []Rule
		dec := yaml.NewDecoder(stringsReader(tt.yaml))
		dec.KnownFields(true)
		err := dec.Decode(&got)
		if (err != nil) != tt.err {
			t.Errorf("%s: err %v", tt.name, err)
			continue
		}
		if tt.err {
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: %+v", tt.name, got)
			continue
		}
		for i := range got {
			g, w := got[i], tt.want[i]
			if g.Filter != w.Filter || g.LocalPrefix != w.LocalPrefix || g.RemotePrefix != w.RemotePrefix ||
				(g.QoS == nil) != (w.QoS == nil) || g.QoS != nil && *g.QoS != *w.QoS {
				t.Errorf("%s: rule %d = %+v, want %+v", tt.name, i, g, w)
			}
		}
	}
}

// FuzzParseRule: any string is a rule or an error, never a panic, and a
// rule's filter is its first field.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"a/#", "a/# 1", "a/# 2 x/ y/", `a "" "" ""`, " ", "a 9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err == nil && r.Filter == "" {
			t.Fatalf("%q: rule without a filter", s)
		}
	})
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

func TestRedactedURL(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://u:secret@h:1883": "tcp://u:xxxxx@h:1883",
		"tcp://h:1883":          "tcp://h:1883",
		"ssl://h":               "ssl://h",
	} {
		if got := redactedURL(in); got != want || strings.Contains(got, "secret") {
			t.Errorf("redactedURL(%q) = %q, want %q", in, got, want)
		}
	}
}
