package xmpp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
)

// PubSub payloads (XEP-0060 items) carry an envelope's bytes in one of
// three elements, each with the topic in a "topic" attribute:
//   - JSON (application/json, +json, or no content type and a JSON object
//     or array): XEP-0335 <json xmlns='urn:xmpp:json:0'>{...}</json>;
//   - other text (text/*, XML, or no type and printable UTF-8):
//     <text xmlns='urn:hub:payload:0' type='MIME'>the text</text>;
//   - anything else: <payload xmlns='urn:hub:payload:0' type='MIME'>,
//     the bytes base64-encoded (the element name says it is base64).
// Publishing takes the same three elements. Chat messages from topic JIDs
// carry text as their body (DESIGN.md); a JSON one has the <json/>
// element beside its body too.

// nsJSON is XEP-0335's JSON container.
const nsJSON = "urn:xmpp:json:0"

// isJSON reports whether e's payload is JSON by its content type, or by
// its bytes when it has none.
func isJSON(e *broker.Envelope) bool {
	if e.ContentType != "" {
		mt, ok := adapters.MediaType(e.ContentType)
		return ok && (mt == "application/json" || strings.HasSuffix(mt, "+json")) && json.Valid(e.Payload)
	}
	t := bytes.TrimSpace(e.Payload)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t)
}

// payloadElement carries an envelope's payload in a PubSub item.
func payloadElement(e *broker.Envelope) *element {
	ct := e.ContentType
	switch {
	case isJSON(e):
		return newElement(nsJSON, "json", "topic", e.Topic).AddText(string(e.Payload))
	case adapters.IsText(e.ContentType, e.Payload):
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		return newElement(nsPayload, "text", "type", ct, "topic", e.Topic).AddText(string(e.Payload))
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return newElement(nsPayload, "payload", "type", ct, "topic", e.Topic).AddText(base64.StdEncoding.EncodeToString(e.Payload))
}

// itemPayload reads what a PubSub publish item carries: a <json/>, <text/>
// or base64 <payload/> element, or any other element as XML.
func itemPayload(item *element) (payload []byte, ctype string, err error) {
	if item == nil {
		return nil, "", nil
	}
	if j := item.Child(nsJSON, "json"); j != nil {
		b := bytes.TrimSpace([]byte(j.Text()))
		if !json.Valid(b) {
			return nil, "", fmt.Errorf("xmpp: <json/> does not hold JSON")
		}
		return b, "application/json", nil
	}
	if t := item.Child(nsPayload, "text"); t != nil {
		ct := t.AttrValue("type")
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		} else if _, _, err := mime.ParseMediaType(ct); err != nil {
			return nil, "", fmt.Errorf("xmpp: text type %q: %w", ct, err)
		}
		return []byte(t.Text()), ct, nil
	}
	if pl := item.Child(nsPayload, "payload"); pl != nil {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(pl.Text()))
		if err != nil {
			return nil, "", fmt.Errorf("xmpp: payload is not base64: %w", err)
		}
		return b, pl.AttrValue("type"), nil
	}
	if els := item.Elements(); len(els) > 0 {
		return []byte(els[0].String()), "application/xml", nil
	}
	return nil, "", nil
}

// delayElement is the XEP-0203 stamp of a delivery delayed since at.
func delayElement(from string, at time.Time) *element {
	return newElement(nsDelay, "delay", "from", from, "stamp", at.UTC().Format(stampLayout))
}
