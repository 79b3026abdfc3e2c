package coap

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestFilterRead: a GET of a filter answers every retained value under it
// that the client may read, as a JSON array in topic order, bounded by
// ?limit=; 4.04 when there is none.
func TestFilterRead(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	publish(t, e.bus, "fr/a", "21.5", "text/plain", 0, true)
	publish(t, e.bus, "fr/b", "\xff\x00\x01", "application/octet-stream", 1, true)
	publish(t, e.bus, "fr/c/deep", "deep", "", 0, true)
	publish(t, e.bus, "devices/sensor1/state", "mine", "", 0, true)
	publish(t, e.bus, "devices/other/state", "theirs", "", 0, true)
	for i := range 40 {
		publish(t, e.bus, fmt.Sprintf("many/%02d", i), strings.Repeat("m", 100), "", 0, true)
	}
	publish(t, e.bus, "devices/other/commands/blink", "{}", "", 0, true)
	alice := []message.Option{query("u=alice"), query("p=alicepw")}
	cases := []struct {
		name   string
		path   string
		opts   []message.Option
		code   codes.Code
		topics []string // want, in order
	}{
		{"one level", "/ps/fr/+", nil, codes.Content, []string{"fr/a", "fr/b"}},
		{"multi level", "/ps/fr/#", nil, codes.Content, []string{"fr/a", "fr/b", "fr/c/deep"}},
		{"limit", "/ps/fr/#", []message.Option{query("limit=2")}, codes.Content, []string{"fr/a", "fr/b"}},
		{"bad limit", "/ps/fr/#", []message.Option{query("limit=0")}, codes.BadRequest, nil},
		{"limit too large", "/ps/fr/#", []message.Option{query("limit=5000")}, codes.BadRequest, nil},
		{"none", "/ps/nothing/#", nil, codes.NotFound, nil},
		{"only what the reader may read", "/ps/devices/#", alice, codes.Content, []string{"devices/other/state", "devices/sensor1/state"}},
		{"not acceptable", "/ps/fr/#", []message.Option{{ID: message.Accept, Value: []byte{0}}}, codes.NotAcceptable, nil},
		{"block-wise", "/ps/many/+", nil, codes.Content, nil},
	}
	cc := e.dial(t, "")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := cc.Get(ctx5(t), c.path, c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			b := body(t, resp)
			if resp.Code() != c.code {
				t.Fatalf("%v %s, want %v", resp.Code(), b, c.code)
			}
			if c.code != codes.Content {
				return
			}
			if cf, err := resp.ContentFormat(); err != nil || cf != message.AppJSON {
				t.Errorf("content-format %v %v, want application/json", cf, err)
			}
			var got []RetainedJSON
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if c.name == "block-wise" {
				if len(got) != 40 || got[39].Topic != "many/39" || len(b) <= 1024 {
					t.Fatalf("%d values in %d bytes", len(got), len(b))
				}
				return
			}
			var topics []string
			for _, v := range got {
				topics = append(topics, v.Topic)
				switch v.Topic {
				case "fr/a":
					if v.Payload != "21.5" || v.PayloadEncoding != "" || v.ContentType != "text/plain" {
						t.Errorf("fr/a: %+v", v)
					}
				case "fr/b":
					if v.Payload != "/wAB" || v.PayloadEncoding != "base64" || v.QoS != 1 {
						t.Errorf("fr/b: %+v", v)
					}
				}
			}
			if fmt.Sprint(topics) != fmt.Sprint(c.topics) {
				t.Errorf("topics %v, want %v", topics, c.topics)
			}
		})
	}
}
