package devices

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hubsmith/hub/broker"
)

// A valid id is exactly one topic level, so the command, response and
// presence topics built from it are valid topics with the id where
// expected.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"sensor1", "a.b-c_d", "", "a/b", "+", "#", "$x", "é", strings.Repeat("z", 130), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateID(id) != nil {
			return
		}
		for _, topic := range []string{CommandTopic(id, "x"), ResponseTopic(id, "r"), PresenceTopic(id)} {
			if err := broker.ValidateTopic(topic); err != nil {
				t.Fatalf("id %q gives invalid topic %q: %v", id, topic, err)
			}
			if got := strings.Split(topic, "/"); len(got) != 4 || got[1] != id && got[2] != id {
				t.Fatalf("id %q is not one level of %q", id, topic)
			}
		}
	})
}

// Params and replies always come out as valid JSON; JSON replies are kept.
func FuzzParamsAndReply(f *testing.F) {
	for _, s := range []string{"", "null", `{"a":1}`, " [1, 2] ", "plain", "\xff", `{"a":`, "1e999", `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := NormalizeParams(b)
		if err == nil && !json.Valid(p) {
			t.Fatalf("params %q -> invalid JSON %q", b, p)
		}
		if err != nil && json.Valid(b) {
			t.Fatalf("valid JSON %q refused: %v", b, err)
		}
		r := ReplyJSON(b)
		if !json.Valid(r) {
			t.Fatalf("reply %q -> invalid JSON %q", b, r)
		}
		if tr := strings.TrimSpace(string(b)); tr != "" && json.Valid([]byte(tr)) && string(r) != tr {
			t.Fatalf("JSON reply %q changed to %q", tr, r)
		}
	})
}

// A declaration that parses re-encodes to one that parses the same, and
// checking params against it never panics.
func FuzzParseCommands(f *testing.F) {
	f.Add([]byte(`[{"name":"set","params":{"type":"object","properties":{"on":{"type":"boolean"},"n":{"type":"integer","enum":[1,2],"default":1}},"required":["on"]}}]`), []byte(`{"on":true}`))
	f.Add([]byte(`{"commands":[{"name":"x"}]}`), []byte(`[1]`))
	f.Add([]byte(`[{"name":"a","params":{"properties":{"s":{"type":"string","enum":["a"]}}}}]`), []byte(`{"s":{}}`))
	f.Fuzz(func(t *testing.T, decl, params []byte) {
		cs, err := ParseCommands(decl)
		if err != nil {
			return
		}
		b, err := json.Marshal(cs)
		if err != nil {
			t.Fatalf("encode %s: %v", decl, err)
		}
		again, err := ParseCommands(b)
		if err != nil || len(again) != len(cs) {
			t.Fatalf("re-encoded %s does not parse: %v", b, err)
		}
		for _, c := range cs {
			out, err := c.CheckParams(params)
			if err == nil && !json.Valid(out) {
				t.Fatalf("CheckParams gave invalid JSON %q", out)
			}
			if c.Params != nil {
				for _, p := range c.Params.Properties {
					_, _ = p.ParseValue(string(params))
				}
			}
		}
	})
}

// ParseRefusal never panics and a refusal always maps to 4xx or 502.
func FuzzParseRefusal(f *testing.F) {
	for _, s := range []string{`{"error":"x","code":409}`, `{"status":"failed"}`, `{"error":{"message":"m"}}`, `{}`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, reply []byte) {
		re, ok := ParseRefusal(reply)
		if !ok {
			return
		}
		if s := re.HTTPStatus(); s != 502 && (s < 400 || s > 499) {
			t.Fatalf("%s: status %d", reply, s)
		}
	})
}
