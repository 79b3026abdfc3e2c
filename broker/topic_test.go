package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b/c", "a/b/c", true},
		{"a/b/c", "a/b", false},
		{"a/b", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a/b/c", false},
		{"+/+/+", "a/b/c", true},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "ab", false},
		{"#", "a/b/c", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"$hub/+/x", "$hub/a/x", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"+", "", true},
		{"/+", "/a", true},
		{"+", "/a", false},
		{"a/b/#", "a/b/", true},
		{"sport/tennis/#", "sport/tennis/player1/ranking", true},
	}
	for _, c := range cases {
		if got := Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	topics := []struct {
		s    string
		want error
	}{
		{"a/b", nil},
		{"$hub/devices/x/presence", nil},
		{"", ErrInvalidTopic},
		{"a/+", ErrWildcardTopic},
		{"a/#", ErrWildcardTopic},
		{"a\x00b", ErrInvalidTopic},
		{"\xff", ErrInvalidTopic},
		{strings.Repeat("a", MaxTopicLen+1), ErrInvalidTopic},
		{strings.Repeat("a/", MaxTopicLevels-1) + "a", nil},
		{strings.Repeat("a/", MaxTopicLevels) + "a", ErrInvalidTopic},
		{strings.Repeat("/", MaxTopicLen), ErrInvalidTopic},
	}
	for _, c := range topics {
		if err := ValidateTopic(c.s); !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Errorf("ValidateTopic(%q) = %v, want %v", trunc(c.s), err, c.want)
		}
	}
	filters := []struct {
		s  string
		ok bool
	}{
		{"a/b", true}, {"#", true}, {"+", true}, {"a/+/b", true}, {"a/#", true}, {"+/#", true},
		{"a/#/b", false}, {"a+", false}, {"a/b#", false}, {"", false}, {"#/", false}, {"a/++", false},
		{strings.Repeat("+/", MaxTopicLevels-1) + "#", true}, {strings.Repeat("+/", MaxTopicLevels) + "#", false},
	}
	for _, c := range filters {
		err := ValidateFilter(c.s)
		if (err == nil) != c.ok {
			t.Errorf("ValidateFilter(%q) = %v, want ok=%v", c.s, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("ValidateFilter(%q) error %v is not ErrInvalidFilter", c.s, err)
		}
	}
}

// matchSlow is the obvious level-by-level reference used to fuzz Match.
func matchSlow(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if l != "+" && l != tl[i] {
			return false
		}
	}
	return len(f) == len(tl)
}

func FuzzMatch(f *testing.F) {
	f.Add("a/+/c", "a/b/c")
	f.Add("a/#", "a")
	f.Add("#", "$SYS/x")
	f.Add("+/+", "a/")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if ValidateFilter(filter) != nil || ValidateTopic(topic) != nil {
			return
		}
		if got, want := Match(filter, topic), matchSlow(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
		// A topic is a filter that matches itself (unless it is a $ topic vs leading wildcard, impossible here).
		if !Match(topic, topic) {
			t.Fatalf("topic %q does not match itself", topic)
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Add("a/b/#")
	f.Add("a/+/b")
	f.Add("\x00")
	f.Fuzz(func(t *testing.T, s string) {
		terr := ValidateTopic(s)
		ferr := ValidateFilter(s)
		if terr == nil && ferr != nil {
			t.Fatalf("%q is a valid topic but not a valid filter: %v", s, ferr)
		}
		if ferr == nil && !IsFilter(s) && terr != nil {
			t.Fatalf("%q is a valid wildcard-free filter but not a topic: %v", s, terr)
		}
	})
}
