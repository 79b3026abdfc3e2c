package broker

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxTopicLen is the longest topic or filter in bytes, as in MQTT.
const MaxTopicLen = 65535

// MaxTopicLevels is the most levels a topic or filter may have (EMQX's
// default): a 64 KiB topic of slashes would otherwise cost the routing
// index and every retained lookup 65,536 levels.
const MaxTopicLevels = 128

// Sentinel errors of topic handling; adapters map them to protocol codes.
var (
	// ErrInvalidTopic marks a topic name that is empty, too long, not UTF-8,
	// or holds a NUL.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrWildcardTopic marks a publish to a name that contains + or #.
	ErrWildcardTopic = errors.New("wildcards are not allowed in a topic name")
	// ErrInvalidFilter marks a malformed subscription filter.
	ErrInvalidFilter = errors.New("invalid topic filter")
)

func checkCommon(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxTopicLen:
		return fmt.Errorf("%d bytes, longer than %d", len(s), MaxTopicLen)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains NUL")
	case strings.Count(s, "/") >= MaxTopicLevels:
		return fmt.Errorf("%d levels, more than %d", strings.Count(s, "/")+1, MaxTopicLevels)
	}
	return nil
}

// ValidateTopic checks a topic name for publishing.
func ValidateTopic(topic string) error {
	if err := checkCommon(topic); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidTopic, trunc(topic), err)
	}
	if strings.ContainsAny(topic, "+#") {
		return fmt.Errorf("%w: %q", ErrWildcardTopic, trunc(topic))
	}
	return nil
}

// ValidateFilter checks a subscription filter: '+' must fill a whole level
// and '#' must fill the last one.
func ValidateFilter(filter string) error {
	if err := checkCommon(filter); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidFilter, trunc(filter), err)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") {
			if l == "+" {
				continue
			}
			if l == "#" && i == len(levels)-1 {
				continue
			}
			return fmt.Errorf("%w %q: level %d %q: a wildcard must fill the whole level (and # the last)", ErrInvalidFilter, trunc(filter), i+1, trunc(l))
		}
	}
	return nil
}

// IsFilter reports whether s contains a wildcard level.
func IsFilter(s string) bool { return strings.ContainsAny(s, "+#") }

// Match reports whether topic matches filter by MQTT rules. A filter whose
// first level is a wildcard does not match a topic starting with '$'.
// Both arguments are assumed valid.
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" (the parent level).
			if fmore && !tmore && frest == "#" {
				return true
			}
			return fmore == tmore
		}
		filter, topic = frest, trest
	}
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
