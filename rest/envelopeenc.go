package rest

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hubsmith/hub/broker"
)

// appendEnvelopeJSON appends the JSON of an envelope in the subscribe
// streams: json.Marshal(envelopeJSON(e, subQoS, admin)), byte for byte
// (envelopeenc_test.go compares them over many envelopes), written
// straight into b. Marshalling the struct cost 5 to 7 allocations a
// delivery; this costs none once b has grown. As with json.Marshal, a
// time whose year is outside 0..9999 is an error.
func appendEnvelopeJSON(b []byte, e *broker.Envelope, subQoS byte, admin bool) ([]byte, error) {
	t := e.Time.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return b, fmt.Errorf("rest: envelope %s: time %v: year outside of range [0,9999]", e.ID, e.Time)
	}
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"topic":`...)
	b = appendJSONString(b, e.Topic)
	b = append(b, `,"payload":`...)
	if isText(e.ContentType, e.Payload) {
		b = appendJSONString(b, e.Payload)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, e.Payload)
		b = append(b, `","payload_encoding":"base64"`...)
	}
	if e.ContentType != "" {
		b = append(b, `,"content_type":`...)
		b = appendJSONString(b, e.ContentType)
	}
	b = append(b, `,"qos":`...)
	b = strconv.AppendUint(b, uint64(min(e.QoS, subQoS)), 10)
	b = append(b, `,"retain":`...)
	b = strconv.AppendBool(b, e.Retain)
	b = append(b, `,"origin":{"protocol":`...)
	b = appendJSONString(b, e.Origin.Protocol)
	if admin && e.Origin.ClientID != "" {
		b = append(b, `,"client_id":`...)
		b = appendJSONString(b, e.Origin.ClientID)
	}
	if admin && e.Origin.Principal != "" {
		b = append(b, `,"principal":`...)
		b = appendJSONString(b, e.Origin.Principal)
	}
	b = append(b, `},"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano) // digits, '-', ':', '.', 'T', 'Z': nothing to escape
	b = append(b, '"')
	if e.ResponseTopic != "" {
		b = append(b, `,"response_topic":`...)
		b = appendJSONString(b, e.ResponseTopic)
	}
	if len(e.CorrelationData) > 0 {
		b = append(b, `,"correlation_data":"`...)
		b = base64.StdEncoding.AppendEncode(b, e.CorrelationData)
		b = append(b, '"')
	}
	if len(e.Properties) > 0 {
		b = append(b, `,"properties":[`...)
		for i, p := range e.Properties {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"key":`...)
			b = appendJSONString(b, p.Key)
			b = append(b, `,"value":`...)
			b = appendJSONString(b, p.Value)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendSSEEvent appends the SSE event of an envelope whose JSON is data:
// what serveSSE's "event: message\nid: %s\ndata: %s\n\n" wrote.
func appendSSEEvent(b []byte, id string, data []byte) []byte {
	b = append(b, "event: message\nid: "...)
	b = append(b, id...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string escaped as encoding/json
// does by default (HTML characters included): '"' and '\\' with a
// backslash, \b \f \n \r \t, other control characters, '<', '>' and '&'
// as \u00XX, U+2028 and U+2029 as \u202X, invalid UTF-8 as \ufffd.
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// maxScratch bounds the buffer a stream keeps from one envelope to the
// next: one large payload must not stay pinned for the stream's life.
const maxScratch = 64 << 10

// scratch returns b emptied for reuse, or nil when it grew past maxScratch.
func scratch(b []byte) []byte {
	if cap(b) > maxScratch {
		return nil
	}
	return b[:0]
}
