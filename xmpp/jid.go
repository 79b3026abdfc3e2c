package xmpp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// ErrNotTopicJID marks a localpart that is not the canonical JID form of
// any topic (see TopicToJID).
var ErrNotTopicJID = errors.New("not a topic JID")

// TopicToJID returns the bare JID of a topic: its levels joined by '.', each
// level escaped, at domain (topics.{xmpp-domain}, or the component domain).
//
// The escaping extends XEP-0106 so that the mapping is one-to-one and
// survives the case folding and PRECIS checks of real servers:
//   - the characters XEP-0106 escapes (space " & ' / : < > @) are written
//     \20 \22 \26 \27 \2f \3a \3c \3e \40, and '.' (the level separator)
//     is written \2e;
//   - ASCII capitals are written \41 … \5a, control characters \01 … \1f
//     and \7f, because servers fold or refuse them in a localpart;
//   - a backslash is written \5c only when the characters after it would
//     otherwise read as one of these escapes (as in XEP-0106); any other
//     backslash stays as it is.
//
// Empty levels need no rule of their own: "a//b" is "a..b", "/a" is ".a"
// and "a/" is "a.", and splitting on '.' gives the empty levels back. The
// hub's own "$" topics map like any other ($SYS/x is $SYS.x, with \53…
// for the capitals); the ACL decides who may use them. topic is assumed
// valid (broker.ValidateTopic); a topic longer than 1023 bytes once
// escaped yields a JID that servers refuse.
func TopicToJID(topic, domain string) string {
	return TopicToLocal(topic) + "@" + domain
}

// TopicToLocal returns the localpart of the topic's JID (see TopicToJID).
func TopicToLocal(topic string) string {
	var b strings.Builder
	b.Grow(len(topic) + 8)
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		switch {
		case c == '/':
			b.WriteByte('.')
		case c == '\\':
			if isCode(topic[i+1:]) {
				b.WriteString(`\5c`)
			} else {
				b.WriteByte('\\')
			}
		case mustEscape(c):
			b.WriteByte('\\')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// JIDToTopic returns the topic whose JID has the localpart local. It is
// the inverse of TopicToLocal and refuses (ErrNotTopicJID) a localpart that
// TopicToLocal would not produce, such as a raw capital, so that every topic
// has exactly one JID; it also refuses localparts whose topic is not a
// valid topic name (wildcards, NUL).
func JIDToTopic(local string) (string, error) {
	if local == "" {
		return "", fmt.Errorf("%w: empty localpart", ErrNotTopicJID)
	}
	var b strings.Builder
	b.Grow(len(local))
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c == '.':
			b.WriteByte('/')
		case c == '\\' && isCode(local[i+1:]):
			b.WriteByte(unhex(local[i+1])<<4 | unhex(local[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	topic := b.String()
	if err := broker.ValidateTopic(topic); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrNotTopicJID, local, err)
	}
	if TopicToLocal(topic) != local {
		return "", fmt.Errorf("%w: %q is not in canonical form (want %q)", ErrNotTopicJID, local, TopicToLocal(topic))
	}
	return topic, nil
}

const hexDigits = "0123456789abcdef"

// mustEscape reports whether byte c of a level is written as \xx.
func mustEscape(c byte) bool {
	switch {
	case c <= 0x20, c == 0x7f, c >= 'A' && c <= 'Z':
		return true
	}
	switch c {
	case '"', '&', '\'', '.', ':', '<', '>', '@':
		return true
	}
	return false
}

// isCode reports whether s starts with the two lowercase hex digits of an
// escape: a byte that mustEscape, '/' or the backslash itself.
func isCode(s string) bool {
	if len(s) < 2 || !isLowerHex(s[0]) || !isLowerHex(s[1]) {
		return false
	}
	c := unhex(s[0])<<4 | unhex(s[1])
	return c != 0 && (mustEscape(c) || c == '/' || c == '\\')
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}
