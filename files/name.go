package files

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Name limits: a whole name and one of its '/'-separated levels, in bytes.
const (
	MaxNameLen  = 1024
	MaxLevelLen = 255
)

// TopicPrefix is the topic level under which descriptors are published:
// file name n is topic TopicPrefix+n.
const TopicPrefix = "files/"

// ValidName checks a file name (ErrInvalidName): 1 to MaxNameLen bytes of
// UTF-8, levels separated by '/' as in a topic, none of them empty, "." or
// "..", or longer than MaxLevelLen, the first not starting with '$'; no
// control characters and none of + # (topic wildcards) or ? % \ " (which
// URLs and shells make ambiguous). Every valid name is a valid topic level
// sequence, a clean URL path and a clean CoAP Uri-Path.
func ValidName(name string) error {
	bad := func(why string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, trunc(name), fmt.Sprintf(why, a...))
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxNameLen:
		return bad("%d bytes, longer than %d", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case name[0] == '$':
		return bad("may not start with '$' (the hub's own topics)")
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return bad("contains the control character %U", r)
		}
		if strings.ContainsRune(`+#?%\"`, r) {
			return bad("contains %q: names may not hold + # ? %% \\ or \"", r)
		}
	}
	for i, l := range strings.Split(name, "/") {
		switch {
		case l == "":
			return bad("level %d is empty (a leading, trailing or doubled '/')", i+1)
		case l == "." || l == "..":
			return bad("level %d is %q", i+1, l)
		case len(l) > MaxLevelLen:
			return bad("level %d is %d bytes, longer than %d", i+1, len(l), MaxLevelLen)
		}
	}
	return nil
}

// Topic returns the topic a file's descriptor is retained on.
func Topic(name string) string { return TopicPrefix + name }

// NameFromTopic is the inverse of Topic: ok is false for a topic outside
// files/ or whose rest is not a valid name.
func NameFromTopic(topic string) (name string, ok bool) {
	name, ok = strings.CutPrefix(topic, TopicPrefix)
	return name, ok && ValidName(name) == nil
}

// EscapePath escapes each '/'-separated level of name for a URL path.
func EscapePath(name string) string {
	levels := strings.Split(name, "/")
	for i, l := range levels {
		levels[i] = url.PathEscape(l)
	}
	return strings.Join(levels, "/")
}

// BaseName is the last level of a name: the file name a client saves.
func BaseName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
