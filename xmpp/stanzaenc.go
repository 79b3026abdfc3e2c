package xmpp

import (
	"encoding/base64"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// The delivery path's stanzas, written straight into a byte buffer: a
// topic JID's chat message (envelopeMessage) and a PubSub event
// (eventMessage), each with its XEP-0203 stamp when delayed. The bytes
// are those of the element builder's Bytes(nsClient) for the same
// message, byte for byte (stanzaenc_test.go compares them over many
// envelopes); building the element tree first cost 20 to 26 allocations
// a delivery, this costs none once the buffer has grown.

// stanzaBufs holds the scratch buffers deliveries are encoded into.
var stanzaBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledStanza bounds the buffers put back in stanzaBufs: one huge
// payload must not stay pinned in the pool.
const maxPooledStanza = 64 << 10

func getStanzaBuf() *[]byte { return stanzaBufs.Get().(*[]byte) }

func putStanzaBuf(b *[]byte) {
	if cap(*b) > maxPooledStanza {
		return
	}
	*b = (*b)[:0]
	stanzaBufs.Put(b)
}

// appendEnvelopeMessage appends the chat message from the topic JID from
// to to for e: envelopeMessage(from, to, e), and with delayed its
// delayElement(from, e.Time).
func appendEnvelopeMessage(b []byte, from, to string, e *broker.Envelope, delayed bool) []byte {
	b = append(b, "<message"...)
	b = appendAttr(b, "type", "chat")
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	b = appendAttr(b, "id", e.ID)
	b = append(b, '>')
	if adapters.IsText(e.ContentType, e.Payload) {
		b = append(b, "<body>"...)
		b = appendText(b, e.Payload)
		b = append(b, "</body>"...)
		if isJSON(e) {
			b = append(b, "<json xmlns='"+nsJSON+"'>"...)
			b = appendText(b, e.Payload)
			b = append(b, "</json>"...)
		}
	} else {
		ct := e.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		// The body is fmt's "[%d bytes of %s on %s]", escaped.
		b = append(b, "<body>["...)
		b = strconv.AppendInt(b, int64(len(e.Payload)), 10)
		b = append(b, " bytes of "...)
		b = appendText(b, ct)
		b = append(b, " on "...)
		b = appendText(b, e.Topic)
		b = append(b, "]</body><payload xmlns='"+nsPayload+"'"...)
		b = appendAttr(b, "type", ct)
		b = append(b, '>')
		b = base64.StdEncoding.AppendEncode(b, e.Payload)
		b = append(b, "</payload>"...)
	}
	if delayed {
		b = appendDelay(b, from, e)
	}
	return append(b, "</message>"...)
}

// appendEventMessage appends the PubSub event notification from the
// service from to to of e for a subscription to node: eventMessage(from,
// to, node, e), and with delayed its delayElement(from, e.Time).
func appendEventMessage(b []byte, from, to, node string, e *broker.Envelope, delayed bool) []byte {
	b = append(b, "<message"...)
	b = appendAttr(b, "from", from)
	b = appendAttr(b, "to", to)
	b = appendAttr(b, "id", e.ID)
	b = append(b, "><event xmlns='"+nsPubSubEvt+"'><items"...)
	b = appendAttr(b, "node", node)
	b = append(b, "><item"...)
	b = appendAttr(b, "id", e.ID)
	b = append(b, '>')
	b = appendPayloadElement(b, e)
	b = append(b, "</item></items></event>"...)
	if delayed {
		b = appendDelay(b, from, e)
	}
	return append(b, "</message>"...)
}

// appendPayloadElement appends payloadElement(e) as a child of a
// jabber:client stanza.
func appendPayloadElement(b []byte, e *broker.Envelope) []byte {
	ct := e.ContentType
	switch {
	case isJSON(e):
		b = append(b, "<json xmlns='"+nsJSON+"'"...)
		b = appendAttr(b, "topic", e.Topic)
		b = append(b, '>')
		b = appendText(b, e.Payload)
		return append(b, "</json>"...)
	case adapters.IsText(e.ContentType, e.Payload):
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		b = append(b, "<text xmlns='"+nsPayload+"'"...)
		b = appendAttr(b, "type", ct)
		b = appendAttr(b, "topic", e.Topic)
		b = append(b, '>')
		b = appendText(b, e.Payload)
		return append(b, "</text>"...)
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	b = append(b, "<payload xmlns='"+nsPayload+"'"...)
	b = appendAttr(b, "type", ct)
	b = appendAttr(b, "topic", e.Topic)
	b = append(b, '>')
	b = base64.StdEncoding.AppendEncode(b, e.Payload)
	return append(b, "</payload>"...)
}

// appendDelay appends delayElement(from, e.Time).
func appendDelay(b []byte, from string, e *broker.Envelope) []byte {
	b = append(b, "<delay xmlns='"+nsDelay+"'"...)
	b = appendAttr(b, "from", from)
	b = append(b, " stamp='"...)
	b = e.Time.UTC().AppendFormat(b, stampLayout) // digits, '-', ':', '.', 'Z', '+': nothing to escape
	return append(b, "'/>"...)
}

// attrEsc and textEsc are the replacements of the ASCII bytes that
// escapeAttr and xml.EscapeText replace ("" for the others).
var attrEsc, textEsc [utf8.RuneSelf]string

func init() {
	for c := range utf8.RuneSelf {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			textEsc[c] = "\uFFFD" // not an XML character
		}
	}
	for c, esc := range map[byte]string{'"': "&#34;", '\'': "&#39;", '&': "&amp;", '<': "&lt;", '>': "&gt;", '\t': "&#x9;", '\n': "&#xA;", '\r': "&#xD;"} {
		textEsc[c] = esc
	}
	for c, esc := range map[byte]string{'\'': "&apos;", '"': "&quot;", '&': "&amp;", '<': "&lt;", '>': "&gt;", '\n': "&#xA;", '\r': "&#xD;", '\t': "&#x9;"} {
		attrEsc[c] = esc
	}
}

// appendAttr appends ` name='value'` as element.write does: nothing for
// an empty value (newElement and SetAttr leave those out), the value
// escaped as escapeAttr does (bytes >= 0x80 as they are).
func appendAttr(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, "='"...)
	last := 0
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < utf8.RuneSelf && attrEsc[c] != "" {
			b = append(b, value[last:i]...)
			b = append(b, attrEsc[c]...)
			last = i + 1
		}
	}
	b = append(b, value[last:]...)
	return append(b, '\'')
}

// appendText appends character data escaped as xml.EscapeText does (what
// element.write uses): the five markup characters, tab and line ends as
// references, and what XML cannot carry (invalid UTF-8, control
// characters) as U+FFFD.
func appendText[T string | []byte](b []byte, s T) []byte {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			if esc := textEsc[c]; esc != "" {
				b = append(b, s[last:i-1]...)
				b = append(b, esc...)
				last = i
			}
			continue
		}
		r, width := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		i += width
		if isXMLChar(r) && (r != utf8.RuneError || width != 1) {
			continue
		}
		b = append(b, s[last:i-width]...)
		b = append(b, "\uFFFD"...)
		last = i
	}
	return append(b, s[last:]...)
}

// isXMLChar is encoding/xml's isInCharacterRange, for runes >= 0x80.
func isXMLChar(r rune) bool {
	return r >= 0x80 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// sendEncoded sends e to the session s: its bytes from encode, written
// into a pooled buffer, or, when encode is nil or declines, the element
// from build.
func sendEncoded(s *session, e *broker.Envelope, build func(to string, e *broker.Envelope) *element,
	encode func(dst []byte, to string, e *broker.Envelope) ([]byte, bool)) (<-chan struct{}, error) {
	if encode != nil {
		buf := getStanzaBuf()
		defer putStanzaBuf(buf)
		b, ok := encode((*buf)[:0], s.jid, e)
		*buf = b
		if ok {
			return s.sendBytes(b)
		}
	}
	return s.send(build(s.jid, e))
}
