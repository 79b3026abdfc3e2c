// Package history keeps the numeric readings that cross the bus as time
// series, with retention per topic filter, and an archive of the readings'
// payloads for XEP-0313 Message Archive Management. Its Recorder takes
// every envelope of the bus (never $ topics), decodes the payload with
// Decode and writes points in batches to the store.
package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Content types Decode understands by name; CoAP Content-Format numbers
// 110 and 112 (as an MQTT 5 content type, say) are taken for the SenML ones.
const (
	ContentTypeSenMLJSON = "application/senml+json"
	ContentTypeSenMLCBOR = "application/senml+cbor"
)

// DefaultField is the field name of a bare number, and of a SenML record
// without a name.
const DefaultField = "value"

// maxFields bounds the readings one payload yields, so a huge JSON object
// cannot make thousands of series in one go.
const maxFields = 256

// maxDepth bounds how deep Decode looks into nested JSON objects.
const maxDepth = 8

// ErrNotNumeric is returned by Decode for a payload that holds no number
// it understands (text, an empty object, binary data).
var ErrNotNumeric = errors.New("history: payload holds no numeric reading")

// Reading is one numeric value found in a payload.
type Reading struct {
	// Field names the value inside the payload: DefaultField for a bare
	// number, the path "a.b" of a JSON object's field, the resolved name
	// (base name + name) of a SenML record.
	Field string
	// Time is the reading's own time (SenML), zero when the payload has
	// none and the envelope's time applies.
	Time time.Time
	// Value is the number.
	Value float64
	// Unit is the SenML unit ("" when none).
	Unit string
}

// Decode returns the numeric readings of a payload of the given content
// type: a number as text, a JSON object with numeric fields, or SenML
// (RFC 8428) in JSON or CBOR. When the content type is absent or
// generic the format is sniffed. now resolves SenML relative times.
// Readings come sorted by field (SenML: in record order).
func Decode(contentType string, payload []byte, now time.Time) ([]Reading, error) {
	switch kind(contentType) {
	case kindSenMLJSON:
		return decodeSenMLJSON(payload, now)
	case kindSenMLCBOR:
		return decodeSenMLCBOR(payload, now)
	case kindBinary:
		return nil, ErrNotNumeric
	}
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return nil, ErrNotNumeric
	}
	switch p[0] {
	case '{':
		return decodeObject(p)
	case '[':
		return decodeSenMLJSON(p, now)
	}
	if v, ok := parseNumber(p); ok {
		return []Reading{{Field: DefaultField, Value: v}}, nil
	}
	if contentType == "" && isCBORArray(payload) {
		return decodeSenMLCBOR(payload, now)
	}
	return nil, ErrNotNumeric
}

type payloadKind int

const (
	kindSniff payloadKind = iota
	kindSenMLJSON
	kindSenMLCBOR
	kindBinary
)

// kind classifies a content type; text, JSON and unknown types are sniffed.
func kind(contentType string) payloadKind {
	ct := strings.TrimSpace(contentType)
	switch ct {
	case "":
		return kindSniff
	case "110":
		return kindSenMLJSON
	case "112":
		return kindSenMLCBOR
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return kindSniff
	}
	switch {
	case mt == ContentTypeSenMLJSON:
		return kindSenMLJSON
	case mt == ContentTypeSenMLCBOR:
		return kindSenMLCBOR
	case mt == "application/cbor", strings.HasSuffix(mt, "+cbor"), strings.HasPrefix(mt, "image/"),
		strings.HasPrefix(mt, "audio/"), strings.HasPrefix(mt, "video/"):
		return kindBinary
	}
	return kindSniff
}

// isCBORArray reports whether b starts like a CBOR array (major type 4)
// of maps, as SenML CBOR does.
func isCBORArray(b []byte) bool {
	if len(b) < 2 || b[0]>>5 != 4 {
		return false
	}
	// The first element of a definite array of small size follows at once;
	// it must be a map (major type 5).
	if b[0]&0x1f < 24 || b[0] == 0x9f {
		return b[1]>>5 == 5
	}
	return true
}

// parseNumber parses a number written as text: a decimal or float, not
// NaN or infinite.
func parseNumber(b []byte) (float64, bool) {
	if len(b) > 64 {
		return 0, false
	}
	// ParseFloat takes "inf", "nan" and hex; a reading is a plain number.
	// Checked on the bytes: a payload that is no number (most of them)
	// costs no string.
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return 0, false
		}
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// decodeObject walks a JSON object's numeric fields, nested ones named by
// their path.
func decodeObject(p []byte) ([]Reading, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("history: JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("history: JSON object: unexpected data after the object")
	}
	var out []Reading
	walk(obj, "", 0, &out)
	if len(out) == 0 {
		return nil, ErrNotNumeric
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out, nil
}

func walk(obj map[string]any, prefix string, depth int, out *[]Reading) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(*out) >= maxFields {
			return
		}
		if k == "" {
			continue
		}
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		if len(name) > maxNameLen {
			continue
		}
		switch v := obj[k].(type) {
		case json.Number:
			f, err := v.Float64()
			if err == nil && !math.IsInf(f, 0) {
				*out = append(*out, Reading{Field: name, Value: f})
			}
		case map[string]any:
			if depth+1 < maxDepth {
				walk(v, name, depth+1, out)
			}
		}
	}
}
