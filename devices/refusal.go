package devices

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// RefusedError is a device's refusal of a command: its reply said no (see
// ParseRefusal), or its XMPP answer was a stanza error. REST answers with
// HTTPStatus and the reason; XMPP with the matching stanza error.
type RefusedError struct {
	Device  string
	Command string
	// Code is the device's own status code (0 when it gave none).
	Code int
	// Failed marks a device that failed (status "error"/"failed", a 5xx
	// code) rather than refused: 502 instead of 4xx.
	Failed bool
	// Reason is the device's text, as it gave it.
	Reason string
}

func (e *RefusedError) Error() string {
	verb := "refused"
	if e.Failed || e.HTTPStatus() == http.StatusBadGateway {
		verb = "failed"
	}
	reason := e.Reason
	if reason == "" {
		reason = "no reason given"
	}
	return fmt.Sprintf("device %q %s command %q: %s", e.Device, verb, e.Command, reason)
}

// HTTPStatus is the status REST answers with: the device's code when it
// is 400, 403, 409 or 422; 502 when the device failed (or gave a 5xx
// code); 422 for any other refusal.
func (e *RefusedError) HTTPStatus() int {
	switch {
	case e.Code == http.StatusBadRequest, e.Code == http.StatusForbidden,
		e.Code == http.StatusConflict, e.Code == http.StatusUnprocessableEntity:
		return e.Code
	case e.Code >= 500 || e.Failed:
		return http.StatusBadGateway
	}
	return http.StatusUnprocessableEntity
}

// refusalStatuses are the values of a reply's "status" that say no; the
// value is whether the device failed (502) rather than refused (4xx).
var refusalStatuses = map[string]bool{
	"refused": false, "rejected": false, "denied": false, "invalid": false,
	"error": true, "failed": true, "failure": true,
}

// ParseRefusal reports whether a device's JSON reply is a refusal, and
// which: an object with a non-empty "error" (a string, or an object with
// "message"/"reason"), or a "status" of refused, rejected, denied,
// invalid (4xx) or error, failed, failure (502), with an optional numeric
// "code" (HTTP-like: 400, 403, 409, 422, 5xx) and the reason in "reason",
// "message" or "error". Any other reply is a result.
func ParseRefusal(reply []byte) (*RefusedError, bool) {
	t := bytes.TrimSpace(reply)
	if len(t) == 0 || t[0] != '{' {
		return nil, false
	}
	var r struct {
		Error   json.RawMessage `json:"error"`
		Status  any             `json:"status"`
		Code    any             `json:"code"`
		Reason  string          `json:"reason"`
		Message string          `json:"message"`
	}
	if err := json.Unmarshal(t, &r); err != nil {
		return nil, false
	}
	e := &RefusedError{Reason: r.Reason}
	if e.Reason == "" {
		e.Reason = r.Message
	}
	refused := false
	if s, ok := r.Status.(string); ok {
		if failed, ok := refusalStatuses[strings.ToLower(s)]; ok {
			refused, e.Failed = true, failed
		}
	}
	if msg, ok := errorText(r.Error); ok {
		refused = true
		if e.Reason == "" {
			e.Reason = msg
		}
	}
	if !refused {
		return nil, false
	}
	switch c := r.Code.(type) {
	case float64:
		if c >= 100 && c < 600 {
			e.Code = int(c)
		}
	case string:
		var n int
		if _, err := fmt.Sscanf(c, "%d", &n); err == nil && n >= 100 && n < 600 {
			e.Code = n
		}
	}
	if s, ok := r.Status.(float64); ok && e.Code == 0 && s >= 400 && s < 600 {
		e.Code = int(s)
	}
	return e, true
}

// errorText reads a reply's "error": a non-empty string, true, or an
// object with message/reason.
func errorText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false
	}
	switch x := v.(type) {
	case string:
		return x, x != ""
	case bool:
		return "", x
	case map[string]any:
		for _, k := range []string{"message", "reason", "text"} {
			if s, ok := x[k].(string); ok && s != "" {
				return s, true
			}
		}
		return string(raw), len(x) > 0
	}
	return "", false
}
