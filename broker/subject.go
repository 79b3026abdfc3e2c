package broker

import (
	"errors"
	"fmt"
	"strings"
)

// Topic ↔ NATS subject, for the clustered bus (issue 14): a topic level is
// one subject token. NATS tokens cannot hold '.', ' ', '*' or '>', must not
// be empty, and a leading '$' names NATS's own subjects ($JS, $SYS), so a
// level is written with the bytes outside [A-Za-z0-9_-] escaped as "~XX"
// (two upper-case hex digits; '~' itself is "~7E") and an empty level as
// "~" alone. Every topic has one subject and every such subject one topic;
// subjects stay readable for the usual ASCII topics.

// ErrInvalidSubject marks a subject that no topic maps to.
var ErrInvalidSubject = errors.New("invalid subject")

const hexDigits = "0123456789ABCDEF"

func plainSubjectByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// levelToken escapes one topic level into a subject token.
func levelToken(b *strings.Builder, level string) {
	if level == "" {
		b.WriteByte('~')
		return
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if plainSubjectByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('~')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// TopicToSubject maps a topic name to its NATS subject under prefix (a
// subject of plain tokens, e.g. "hub.t"; "" for none).
func TopicToSubject(prefix, topic string) (string, error) {
	if err := ValidateTopic(topic); err != nil {
		return "", fmt.Errorf("broker: subject of %q: %w", topic, err)
	}
	var b strings.Builder
	b.Grow(len(prefix) + len(topic) + 8)
	if prefix != "" {
		b.WriteString(prefix)
		b.WriteByte('.')
	}
	for i, level := range strings.Split(topic, "/") {
		if i > 0 {
			b.WriteByte('.')
		}
		levelToken(&b, level)
	}
	return b.String(), nil
}

// FilterToSubjects maps a topic filter to the NATS subjects that together
// match the same topics: '+' is '*', a trailing '#' is '>' and, since
// "a/#" also matches "a" itself while "a.>" does not match "a", the parent
// subject too. NATS wildcards also match an escaped '$' token, so the
// rule that a leading wildcard matches no $-topic stays the bus's to
// apply (Match), as for the in-process bus.
func FilterToSubjects(prefix, filter string) ([]string, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("broker: subjects of %q: %w", filter, err)
	}
	levels := strings.Split(filter, "/")
	var b strings.Builder
	if prefix != "" {
		b.WriteString(prefix)
	}
	var out []string
	for i, level := range levels {
		switch {
		case level == "#":
			if i > 0 {
				out = append(out, b.String()) // the parent itself
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteByte('>')
			return append(out, b.String()), nil
		case b.Len() > 0:
			b.WriteByte('.')
		}
		if level == "+" {
			b.WriteByte('*')
			continue
		}
		levelToken(&b, level)
	}
	return append(out, b.String()), nil
}

// SubjectToTopic maps a subject made by TopicToSubject (under prefix)
// back to its topic.
func SubjectToTopic(prefix, subject string) (string, error) {
	rest := subject
	if prefix != "" {
		var ok bool
		if rest, ok = strings.CutPrefix(subject, prefix+"."); !ok {
			return "", fmt.Errorf("broker: subject %q: %w: not under %q", subject, ErrInvalidSubject, prefix)
		}
	}
	var b strings.Builder
	b.Grow(len(rest))
	for i, tok := range strings.Split(rest, ".") {
		if i > 0 {
			b.WriteByte('/')
		}
		if tok == "~" {
			continue // an empty level
		}
		if tok == "" {
			return "", fmt.Errorf("broker: subject %q: %w: empty token", subject, ErrInvalidSubject)
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			if plainSubjectByte(c) {
				b.WriteByte(c)
				continue
			}
			if c != '~' || j+2 >= len(tok) {
				return "", fmt.Errorf("broker: subject %q: %w: byte %q", subject, ErrInvalidSubject, c)
			}
			hi, lo := unhex(tok[j+1]), unhex(tok[j+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("broker: subject %q: %w: escape %q", subject, ErrInvalidSubject, tok[j:j+3])
			}
			v := byte(hi<<4 | lo)
			if plainSubjectByte(v) {
				return "", fmt.Errorf("broker: subject %q: %w: %q escaped needlessly", subject, ErrInvalidSubject, v)
			}
			b.WriteByte(v)
			j += 2
		}
	}
	t := b.String()
	if err := ValidateTopic(t); err != nil {
		return "", fmt.Errorf("broker: subject %q: %w: %w", subject, ErrInvalidSubject, err)
	}
	return t, nil
}

// unhex is the value of an upper-case hex digit, -1 for anything else
// (lower case is refused so that a subject has one spelling).
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
