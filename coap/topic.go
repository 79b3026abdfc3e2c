package coap

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/hubsmith/hub/broker"
)

// PubSubRoot is the first URI-Path segment of every topic resource:
// topic a/b/c is the resource /ps/a/b/c.
const PubSubRoot = "ps"

// ErrBadPath marks a request path that names no topic; the adapter answers
// 4.00 Bad Request.
var ErrBadPath = errors.New("bad topic path")

// SegmentsToTopic maps the URI-Path options of a request (one option per
// segment, already decoded: a CoAP option carries raw bytes) to a topic or
// filter. The first segment must be "ps"; each further segment is one topic
// level, so a level may be empty but may not hold '/'. The result is not
// checked against the topic or filter rules: the caller knows which it wants.
func SegmentsToTopic(segs []string) (string, error) {
	if len(segs) == 0 || segs[0] != PubSubRoot {
		return "", fmt.Errorf("%w: path must start with /%s/", ErrBadPath, PubSubRoot)
	}
	levels := segs[1:]
	if len(levels) == 0 {
		return "", fmt.Errorf("%w: no topic after /%s", ErrBadPath, PubSubRoot)
	}
	for i, l := range levels {
		if strings.IndexByte(l, '/') >= 0 {
			return "", fmt.Errorf("%w: segment %d %q holds '/': a topic level is one segment", ErrBadPath, i+2, l)
		}
	}
	t := strings.Join(levels, "/")
	if t == "" {
		return "", fmt.Errorf("%w: empty topic", ErrBadPath)
	}
	return t, nil
}

// TopicToSegments is the inverse of SegmentsToTopic: "ps" and then one
// segment per topic level.
func TopicToSegments(topic string) []string {
	return append([]string{PubSubRoot}, strings.Split(topic, "/")...)
}

// PathToTopic maps the path of a coap:// URI ("/ps/a/b", each segment
// percent-encoded as RFC 3986 says) to a topic or filter. A segment that
// decodes to a string holding '/' (written %2F) is refused, since a topic
// level cannot hold one.
func PathToTopic(path string) (string, error) {
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("%w: %q is not an absolute path", ErrBadPath, path)
	}
	raw := strings.Split(path[1:], "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		d, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("%w: segment %d: %v", ErrBadPath, i+1, err)
		}
		segs[i] = d
	}
	return SegmentsToTopic(segs)
}

// TopicToPath is the inverse of PathToTopic: the coap:// URI path of a topic,
// each level percent-encoded so that '#', '%', '?' and the like survive.
func TopicToPath(topic string) string {
	var b strings.Builder
	b.WriteString("/" + PubSubRoot)
	for _, l := range strings.Split(topic, "/") {
		b.WriteByte('/')
		b.WriteString(escapeSegment(l))
	}
	return b.String()
}

// escapeSegment percent-encodes every byte that is not an RFC 3986 pchar
// (unreserved, sub-delims, ':' and '@').
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isPchar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func isPchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0
}

// topicFromSegments maps a request path to a topic name (filter false) or
// a topic filter (filter true) and validates it, so that every refusal is
// ErrBadPath (4.00) with the reason.
func topicFromSegments(segs []string, filter bool) (string, error) {
	t, err := SegmentsToTopic(segs)
	if err != nil {
		return "", err
	}
	if filter {
		err = broker.ValidateFilter(t)
	} else {
		err = broker.ValidateTopic(t)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadPath, err)
	}
	return t, nil
}
