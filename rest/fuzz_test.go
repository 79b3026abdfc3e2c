package rest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hubsmith/hub/broker"
)

// escapeTopic writes a topic into a URL path level by level.
func escapeTopic(topic string) string {
	levels := strings.Split(topic, "/")
	for i, l := range levels {
		levels[i] = url.PathEscape(l)
	}
	return strings.Join(levels, "/")
}

// FuzzTopicPath publishes to arbitrary topics through the router: the hub
// answers 202 with the very topic on the bus, or 400 for what is not a
// publishable topic, and nothing else.
func FuzzTopicPath(f *testing.F) {
	for _, s := range []string{"a/b", "/a", "a//b", "a/", "", "+", "a/#", "$hub/x", "é/ü", "a b/c%2F", ".", "..", "a/../b", "a\x00b", "\xff"} {
		f.Add(s)
	}
	h := startHub(f, hubOpts{})
	got := make(chan string, 1)
	sub, err := h.bus.Subscribe(context.Background(), broker.SubscribeOptions{Filters: []string{"#"}},
		func(_ context.Context, e *broker.Envelope) error { got <- e.Topic; return nil })
	if err != nil {
		f.Fatal(err)
	}
	defer sub.Unsubscribe()
	f.Fuzz(func(t *testing.T, topic string) {
		req, err := http.NewRequest("POST", "/api/v1/topics/"+escapeTopic(topic), strings.NewReader("x"))
		if err != nil {
			t.Skip()
		}
		w := httptest.NewRecorder()
		h.a.Handler().ServeHTTP(w, req)
		valid := broker.ValidateTopic(topic) == nil && !strings.HasPrefix(topic, "$")
		switch w.Code {
		case http.StatusAccepted:
			if !valid {
				t.Fatalf("topic %q accepted", topic)
			}
			select {
			case g := <-got:
				if g != topic {
					t.Fatalf("published %q as %q", topic, g)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("topic %q never reached the bus", topic)
			}
		case http.StatusBadRequest:
			if valid {
				t.Fatalf("valid topic %q refused: %s", topic, w.Body)
			}
		default:
			if valid || w.Code != http.StatusNotFound && w.Code != http.StatusMovedPermanently && w.Code != http.StatusTemporaryRedirect {
				t.Fatalf("topic %q: status %d %s", topic, w.Code, w.Body)
			}
		}
	})
}

// FuzzDecodeJSON: any body either decodes or is an errInvalidJSON (400)
// with a message; it never panics.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{"id":"a"}`, `{"id":1}`, `{"x":1}`, `{`, ``, `{"id":"a"} x`, `[]`, `{"metadata":{"a":"b"}}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d deviceRequest
		err := decodeJSON(bytes.NewReader(b), &d)
		if err != nil && (!errors.Is(err, errInvalidJSON) || httpStatus(err) != http.StatusBadRequest || len(err.Error()) < len("invalid JSON: x")) {
			t.Fatalf("body %q: error %v", b, err)
		}
	})
}

// FuzzParseQuery: query values are accepted in range or refused with 400.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "0", "2", "3", "-1", "1.5", "5s", "1h", "0", "NaN", "1e300", "true"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseTimeout(s); err == nil && (d <= 0 || d > MaxCommandTimeout) {
			t.Fatalf("timeout %q -> %v", s, d)
		} else if err != nil && httpStatus(err) != http.StatusBadRequest {
			t.Fatalf("timeout %q: %v", s, err)
		}
		if q, err := parseQoS(s, 0); err == nil && q > 2 {
			t.Fatalf("qos %q -> %d", s, q)
		} else if err != nil && httpStatus(err) != http.StatusBadRequest {
			t.Fatalf("qos %q: %v", s, err)
		}
	})
}
