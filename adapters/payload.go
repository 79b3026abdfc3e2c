package adapters

import (
	"strings"
	"unicode/utf8"
)

// IsText reports whether a payload of the given MIME type is text that a
// text-only protocol (an XMPP body, an SSE data line) can carry as it is:
// text/*, JSON and its +json kinds, XML and its +xml kinds, and, when the
// type is unknown, any valid UTF-8 without control characters other than
// whitespace.
func IsText(contentType string, payload []byte) bool {
	if contentType != "" {
		if mt, ok := MediaType(contentType); ok {
			switch {
			case strings.HasPrefix(mt, "text/"),
				mt == "application/json", strings.HasSuffix(mt, "+json"),
				mt == "application/xml", strings.HasSuffix(mt, "+xml"):
				return utf8.Valid(payload)
			}
			return false
		}
	}
	if !utf8.Valid(payload) {
		return false
	}
	for _, r := range string(payload) {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}
